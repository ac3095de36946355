"""A durable local stack on Apache Kafka.

The broker SIGKILLed under a paced replay and restarted on the same log dir: the services
reconnect and every event sent gets its prediction. And `driftloop up` stopped and started
again keeps the registry and the models: the same versions, the same champion served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from driftloop.replay import replay
from driftloop.runner import Stack, _metric_is_one, demo_env
from driftloop.shared.broker import Broker, KafkaBroker, free_port
from driftloop.shared.kafka import create_topics, read_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import PREDICTIONS, Topics
from driftloop.streams import Dataset, sea_stream

pytestmark = pytest.mark.e2e
SERVICES = ("ingestion", "features", "inference", "monitoring", "retraining")
CLI = [sys.executable, "-m", "driftloop.cli"]


def _champion_predictions(bootstrap: str, topics: Topics, serde: Serde) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in asyncio.run(read_topic(bootstrap, topics.name(PREDICTIONS))):
        p = serde.decode("Prediction", r.value)
        if p["role"] == "champion":
            out[p["event_id"]] = int(p["model_version"])
    return out


def _needs_kafka(broker: Broker) -> None:
    if broker.engine != "kafka":
        pytest.skip("a durable broker is Apache Kafka's: Tansu keeps everything in memory")


def test_kafka_sigkilled_under_load_and_restarted_loses_nothing(
    broker: Broker, serde: Serde, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs_kafka(broker)
    own = KafkaBroker(free_port(), tmp_path / "kafka", tmp_path / "kafka.log").start()
    n, rate = 3000, 100.0
    topics = Topics("durable.", 4)
    env = {
        **demo_env(),
        "KAFKA_BOOTSTRAP_SERVERS": own.bootstrap_servers,
        "DRIFTLOOP_TOPIC_PREFIX": topics.prefix,
        "DRIFTLOOP_PARTITIONS": str(topics.partitions),
        "DRIFTLOOP_ARTIFACT_STORE": f"file://{tmp_path / 'artifacts'}",
        "DRIFTLOOP_DATA_DIR": str(tmp_path / "state"),
        "DRIFTLOOP_OFFLINE_STORE": str(tmp_path / "offline-store"),
    }
    stack = Stack(env=env, log_dir=tmp_path / "logs", services=SERVICES)
    dataset = Dataset("sea", sea_stream(n).rows, [], [f"ent-{i % 5}" for i in range(n)])
    result: dict[str, Any] = {}
    progress = {"sent": 0}
    try:
        asyncio.run(create_topics(own.bootstrap_servers, topics.catalogue()))
        stack.start()
        stack.wait_ready()

        def run_replay() -> None:
            result["replay"] = asyncio.run(
                replay(
                    own.bootstrap_servers,
                    topics,
                    serde,
                    dataset,
                    run_id="d",
                    label_delay=50,
                    rate=rate,
                    # As a user's producer on Kafka should be: retried until the broker is back.
                    options={"enable_idempotence": True},
                    on_progress=lambda done, _: progress.update(sent=done),
                )
            )

        thread = threading.Thread(target=run_replay, daemon=True)
        thread.start()
        time.sleep(8.0)
        # Under load: the replay is still sending (a topic read here would last as long as
        # the replay does, since it reads up to a high watermark that keeps moving).
        before, replaying = progress["sent"], thread.is_alive()
        own.kill()
        killed_at = time.monotonic()
        time.sleep(2.0)
        own.start()
        back_after = time.monotonic() - killed_at
        thread.join(timeout=n / rate + 120)
        assert not thread.is_alive(), "the replay did not finish"
        assert result["replay"].events_sent == n
        sent = {f"d-{i}" for i in range(n)}
        deadline = time.monotonic() + 120
        predicted: dict[str, int] = {}
        while time.monotonic() < deadline:
            stack.check()  # the services reconnected: none of them died while the broker was away
            predicted = _champion_predictions(own.bootstrap_servers, topics, serde)
            if sent <= predicted.keys():
                break
            time.sleep(1.0)
        stack.check()
        with capsys.disabled():
            print(
                f"\ndurable broker: {before} events sent before the SIGKILL, broker back after {back_after:.1f} s, "
                f"{len(sent & predicted.keys())}/{n} events predicted",
                file=sys.stderr,
            )
        missing = sent - predicted.keys()
        assert replaying and 0 < before < n, f"the kill was not under load ({before} of {n} events sent)"
        assert not missing, f"{len(missing)} events never got a prediction, e.g. {sorted(missing)[:5]}"
    finally:
        stack.stop_services()
        own.stop()


def _get_metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            body = resp.read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_up(env: dict[str, str], proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    ports = [int(env[f"DRIFTLOOP_{s.upper()}_METRICS_PORT"]) for s in SERVICES]
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"driftloop up exited with {proc.returncode}"
        if all(_metric_is_one(p, "driftloop_service_ready") for p in ports):
            return
        time.sleep(0.3)
    raise AssertionError(f"driftloop up was not ready within {timeout_s:.0f} s")


def _stop_up(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def _models_list(env: dict[str, str]) -> list[str]:
    res = subprocess.run([*CLI, "models", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def _statuses(listing: list[str]) -> dict[int, str]:
    return {int(ln.split()[0]): ln.split()[1] for ln in listing[1:] if ln.split() and ln.split()[0].isdigit()}


def test_registry_and_models_survive_an_up_restart(
    broker: Broker, serde: Serde, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs_kafka(broker)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        demo_env(),
        DRIFTLOOP_BROKER_ENGINE="kafka",
        DRIFTLOOP_BROKER_PORT=str(port),
        DRIFTLOOP_DATA_DIR=str(tmp_path / "data"),
        DRIFTLOOP_ARTIFACT_STORE=f"file://{tmp_path / 'artifacts'}",
        DRIFTLOOP_RETRAINING_VERSION_EVERY="100",
        DRIFTLOOP_RETRAINING_PROMOTION_MIN_EXAMPLES="100",
    )
    bootstrap = f"127.0.0.1:{port}"
    topics = Topics("driftloop.", 4)
    client_env = {**env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    log = open(tmp_path / "up.log", "ab")  # noqa: SIM115 - closed below
    up = subprocess.Popen([*CLI, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_up(env, up)
        n = 1200
        asyncio.run(replay(bootstrap, topics, serde, sea_stream(n), run_id="u", label_delay=50, rate=None))
        deadline = time.monotonic() + 120
        listing: list[str] = []
        while time.monotonic() < deadline:
            listing = _models_list(client_env)
            champions = [ln for ln in listing[1:] if ln.split()[1:2] == ["champion"]]
            trained = champions and int(champions[0].split()[0]) >= 2
            if trained and len(_champion_predictions(bootstrap, topics, serde)) >= n:
                break
            time.sleep(1.0)
        inference_port = int(env["DRIFTLOOP_INFERENCE_METRICS_PORT"])

        def champion_of(lines: list[str]) -> int | None:
            # Only a listing that names exactly one champion is compared (one read in CI named
            # none while retraining was still judging versions); the assertion below prints it.
            found = [int(ln.split()[0]) for ln in lines[1:] if ln.split()[1:2] == ["champion"]]
            return found[0] if len(found) == 1 else None

        # Retraining may still promote the versions it is judging: read the registry and the
        # served version until they agree, then the restart below is checked against that.
        served = None
        while time.monotonic() < deadline:
            listing = _models_list(client_env)
            served = _get_metric(inference_port, "driftloop_served_model_version")
            if served is not None and served == champion_of(listing):
                break
            time.sleep(1.0)
        champion = champion_of(listing)
        assert champion is not None and champion >= 2, f"no trained champion was registered:\n{chr(10).join(listing)}"
        assert served == champion
        assert _stop_up(up) == 0

        up = subprocess.Popen([*CLI, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_up(env, up)
        before_status, after_status = _statuses(listing), _statuses(_models_list(client_env))
        assert before_status.keys() <= after_status.keys(), "versions were lost across the restart"
        changed = {v: (s, after_status[v]) for v, s in before_status.items() if after_status[v] != s}
        # A candidate under evaluation is rejected at a restart (its evaluation state is lost).
        assert all(old == "candidate" and new == "rejected" for old, new in changed.values()), changed
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _get_metric(inference_port, "driftloop_served_model_version") != champion:
            time.sleep(0.3)
        assert _get_metric(inference_port, "driftloop_served_model_version") == champion, (
            "inference serves another version after the restart"
        )
        with capsys.disabled():
            kept = len(before_status)
            print(f"\nup restart: {kept} versions kept, champion v{champion} served again", file=sys.stderr)
        assert _stop_up(up) == 0
    finally:
        if up.poll() is None:
            # SIGINT first: `up` stops its services (their own sessions); a SIGKILL alone
            # would leave them running after a failed assertion.
            with contextlib.suppress(subprocess.TimeoutExpired):
                _stop_up(up)
        log.close()
