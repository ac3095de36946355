"""The command line against the real broker: topics, broker port clashes, `up` supervision,
and one-line errors for bad arguments and settings."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftloop.shared.broker import Broker, free_port, java_major, kafka_version, port_is_free, tansu_version
from driftloop.shared.topics import Topics

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "driftloop.cli"]


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


@pytest.mark.parametrize(
    "args",
    [
        ["models", "show", "99"],
        ["models", "list"],
        ["models", "promote", "2"],
        ["topics"],
        ["replay", "CSV", "--target", "y"],
    ],
)
def test_an_unreachable_broker_gets_one_line(args: list[str], tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    csv.write_text("x,y\n1.0,0\n")
    args = [str(csv) if a == "CSV" else a for a in args]
    res = _run(args, {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}, timeout=90)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Kafka" in lines[0], res.stderr


def _no_java_path(tmp_path: Path) -> str:
    """A PATH with Python but neither java nor mvn."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    return str(bin_dir)


def test_broker_auto_without_a_jdk_falls_back_to_tansu_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PATH": _no_java_path(tmp_path), "DRIFTLOOP_LOG_JSON": "false"}
    env.pop("DRIFTLOOP_BROKER_ENGINE", None)
    proc = subprocess.Popen(CLI + ["broker", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "no java on PATH" in first and "Tansu" in first, first
        ready = ""
        while "ready on" not in ready:
            ready = proc.stderr.readline()
            assert ready, "the broker command ended before it was ready"
        assert f"tansu {tansu_version()} ready on 127.0.0.1:{port}" in ready, ready
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert port_is_free(port), "the Tansu process outlived the broker command"


def test_broker_engine_kafka_without_a_jdk_gets_one_line(tmp_path: Path) -> None:
    env = {"PATH": _no_java_path(tmp_path)}
    res = _run(["broker", "--engine", "kafka", "--port", str(free_port())], env, timeout=30)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a JDK 17" in lines[0], res.stderr


def test_maven_failing_to_fetch_gets_one_line(tmp_path: Path) -> None:
    if shutil.which("mvn") is None or (java_major() or 0) < 17:
        pytest.skip("needs java and mvn on PATH")
    # A cache under a file: Maven cannot create its local repository there.
    (tmp_path / "file").write_text("")
    res = _run(["broker", "--engine", "kafka", "--port", str(free_port())], {"XDG_CACHE_HOME": str(tmp_path / "file")})
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert "Maven failed to fetch" in lines[-1] and len(lines) <= 2, res.stderr  # "fetching ..." then the error
    assert "Traceback" not in res.stderr


def test_bad_engine_setting_gets_one_line() -> None:
    res = _run(["broker"], {"DRIFTLOOP_BROKER_ENGINE": "zookeeper"}, timeout=30)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "broker_engine" in lines[0], res.stderr


def test_broker_runs_apache_kafka_on_disk_and_stops_cleanly_by_pid(broker: Broker, tmp_path: Path) -> None:
    if broker.engine != "kafka":
        pytest.skip("the Apache Kafka tier")
    port = free_port()
    env = {**os.environ, "DRIFTLOOP_DATA_DIR": str(tmp_path / "data"), "DRIFTLOOP_LOG_JSON": "false"}
    proc = subprocess.Popen(
        CLI + ["broker", "--engine", "kafka", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        ready = ""
        while "ready on" not in ready:
            ready = proc.stderr.readline()
            assert ready, "the broker command ended before it was ready"
        assert f"kafka {kafka_version()} ready on 127.0.0.1:{port}" in ready, ready
        java_pid = int(ready.rsplit("(pid ", 1)[1].rstrip(")\n"))
        assert _alive(java_pid)
        assert (tmp_path / "data" / "kafka" / "log" / "meta.properties").is_file()

        async def make_topic() -> list[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
            await admin.start()
            try:
                await admin.create_topics([NewTopic("kept", 1, 1)])
                return list(await admin.list_topics())
            finally:
                await admin.close()

        assert "kept" in asyncio.run(make_topic())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not _alive(java_pid), "the JVM outlived the broker command"
    assert port_is_free(port)
    # On disk: the topic is in the log directory the next start reuses.
    assert (tmp_path / "data" / "kafka" / "log" / "kept-0").is_dir()
