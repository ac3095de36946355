"""The command line against the real broker: topics, broker port clashes, `up` supervision,
and one-line errors for bad arguments and settings."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.broker import Broker
from shared.topics import Topics

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "services.cli"]


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + args, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive; its parent has not reaped it yet.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_topics_creates_the_catalogue(broker: Broker) -> None:
    prefix = f"cli{uuid.uuid4().hex[:8]}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "DRIFTLOOP_TOPIC_PREFIX": prefix,
        "DRIFTLOOP_PARTITIONS": "3",
    }
    first = _run(["topics"], env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == len(Topics(prefix, 3).catalogue())
    again = _run(["topics"], env)  # idempotent
    assert again.returncode == 0 and "created" not in again.stdout

    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            meta = await admin.describe_topics([s.name for s in Topics(prefix, 3).catalogue()])
            return {m["topic"]: len(m["partitions"]) for m in meta}
        finally:
            await admin.close()

    parts = asyncio.run(describe())
    assert parts[f"{prefix}models.registry"] == 1
    assert all(n == 3 for t, n in parts.items() if not t.endswith("models.registry"))


def test_broker_refuses_a_port_in_use(broker: Broker) -> None:
    res = _run(["broker", "--port", str(broker.port)], timeout=30)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0], res.stderr


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["run", "nosuch"], {}, "invalid choice"),
        (["replay", "/no/such.csv", "--target", "y"], {}, "no such file"),
        (["demo", "--events", "0"], {}, "must be at least 1"),
        (["demo", "--rate", "fast"], {}, "not a number"),
        (["frobnicate"], {}, "invalid choice"),
        (["topics"], {"DRIFTLOOP_PARTITIONS": "many"}, "partitions"),
    ],
)
def test_bad_arguments_get_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    res = _run(args, env, timeout=30)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def _start_up(service_env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, int], Path]:
    log = tmp_path / "up.log"
    err = open(log, "w")  # noqa: SIM115 - the child writes to it; closed when the test ends
    proc = subprocess.Popen(CLI + ["up"], env={**os.environ, **service_env}, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"stack_up"' in line:
                return proc, json.loads(line)["services"], log
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("driftloop up did not report its services: " + log.read_text())


def test_up_reports_a_dead_service_and_stops_the_rest(service_env: dict[str, str], tmp_path: Path) -> None:
    proc, pids, log = _start_up(service_env, tmp_path)
    assert sorted(pids) == sorted(["ingestion", "features", "inference", "monitoring", "retraining"])
    time.sleep(2)
    os.kill(pids["features"], signal.SIGKILL)
    rc = proc.wait(60)
    assert rc == 1
    assert "service features" in log.read_text() and "exited with code -9" in log.read_text()
    assert not any(_alive(p) for p in pids.values())


def test_up_stops_everything_on_ctrl_c(service_env: dict[str, str], tmp_path: Path) -> None:
    proc, pids, _ = _start_up(service_env, tmp_path)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert not any(_alive(p) for p in pids.values())
