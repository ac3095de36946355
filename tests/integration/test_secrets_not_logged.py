"""Secrets never reach a log line: ingestion and inference run as processes with a SASL
password, a SASL username and a registry HMAC key set, at debug level, through their error
paths (bad input dead-lettered, a forged registry record refused) and a valid event; then
every log file and the `driftloop models` output are searched for the secrets.

On Apache Kafka the services really authenticate: a broker of the test's own with a
SASL_PLAINTEXT listener (PLAIN) that knows the username and password, which a wrong password
does not pass. The test reads and writes through that broker's PLAINTEXT listener. Tansu has
no SASL: there the services run with PLAINTEXT and the SASL settings merely set."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop.runner import Stack
from driftloop.shared.broker import Broker, KafkaBroker, free_port
from driftloop.shared.kafka import produce_all, read_topic
from driftloop.shared.registry import registry_key, version_record
from driftloop.shared.serde import Serde
from driftloop.shared.signing import verify
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EVENTS_RAW, LABELS_RAW, Topics

pytestmark = pytest.mark.integration

PASSWORD = "sasl-pw-7Hq2-must-not-leak"
USERNAME = "sasl-user-Lw9-must-not-leak"
HMAC_KEY = "hmac-key-Vb3x-must-not-leak"


def metric(port: str, line_start: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def sasl_broker(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker | None]:
    """An Apache Kafka with a SASL/PLAIN listener knowing USERNAME, or None on Tansu."""
    if broker.engine != "kafka":
        yield None
        return
    where = tmp_path_factory.mktemp("sasl-broker")
    sasl = KafkaBroker(free_port(), where / "kafka", where / "broker.log", heap_mb=512, sasl_users={USERNAME: PASSWORD})
    sasl.start()
    try:
        yield sasl
    finally:
        sasl.stop()


def test_secrets_never_appear_in_logs(
    service_env: dict[str, str],
    topics: Topics,
    serde: Serde,
    tmp_path: Path,
    sasl_broker: KafkaBroker | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **service_env,
        "DRIFTLOOP_SECURITY_PROTOCOL": "PLAINTEXT",
        "DRIFTLOOP_SASL_MECHANISM": "SCRAM-SHA-512",
        "DRIFTLOOP_SASL_USERNAME": USERNAME,
        "DRIFTLOOP_SASL_PASSWORD": PASSWORD,
        "DRIFTLOOP_REGISTRY_HMAC_KEY": HMAC_KEY,
        "DRIFTLOOP_LOG_LEVEL": "DEBUG",
    }
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]  # where the test itself reads and writes
    if sasl_broker is not None:
        bootstrap = sasl_broker.bootstrap_servers
        env |= {
            "KAFKA_BOOTSTRAP_SERVERS": sasl_broker.sasl_bootstrap_servers,
            "DRIFTLOOP_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "DRIFTLOOP_SASL_MECHANISM": "PLAIN",
        }
        # The Stack creates the topics with the settings of this process: through SASL too.
        for k in ("KAFKA_BOOTSTRAP_SERVERS", "DRIFTLOOP_SECURITY_PROTOCOL", "DRIFTLOOP_SASL_MECHANISM"):
            monkeypatch.setenv(k, env[k])
        monkeypatch.setenv("DRIFTLOOP_SASL_USERNAME", USERNAME)
        monkeypatch.setenv("DRIFTLOOP_SASL_PASSWORD", PASSWORD)
        wrong = subprocess.run(
            [sys.executable, "-m", "driftloop.cli", "topics"],
            env={**os.environ, **env, "DRIFTLOOP_SASL_PASSWORD": "not-the-password"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrong.returncode != 0, wrong.stdout
        lines = wrong.stderr.strip().splitlines()
        # aiokafka reports a refused SASL handshake as a failed bootstrap, so that is the line.
        assert len(lines) == 1 and "cannot reach Kafka" in lines[0], wrong.stderr
        assert "not-the-password" not in wrong.stderr + wrong.stdout
    registry_topic = topics.name("models.registry")
    logs = tmp_path / "logs"
    forged = version_record(
        name="default",
        version=7,
        status="champion",
        reason="forged",
        artifact=("file:///tmp/elsewhere/v7.pkl", "00" * 32),
        parent=None,
        trigger="manual",
        window={"examples": 0},
        params={},
        metrics={},
        feature_set_version="fs1",
        code_version="forged",
        now_ms=int(time.time() * 1000),
    )
    event = {"event_id": "sasl-ok", "entity_id": "e", "event_time": int(time.time() * 1000), "fields": {"x": 1.0}}
    with Stack(env=env, log_dir=logs, services=("ingestion", "inference")) as stack:
        stack.wait_ready(60)
        asyncio.run(
            produce_all(
                bootstrap,
                [
                    (topics.name(EVENTS_RAW), b"k", b"\x13\x37 not a record"),
                    (topics.name(LABELS_RAW), b"k", b'{"event_id": 1}'),
                    (topics.name(EVENTS_RAW), b"e", json.dumps(event).encode()),
                    (registry_topic, registry_key("default", 7), serde.encode("ModelVersion", forged)),
                ],
            )
        )
        port = env["DRIFTLOOP_INFERENCE_METRICS_PORT"]
        refused = 'driftloop_registry_records_refused_total{code="registry_signature_invalid"}'
        deadline = time.monotonic() + 30
        while metric(port, refused) != 1.0 and time.monotonic() < deadline:
            stack.check()
            time.sleep(0.3)
        assert metric(port, refused) == 1.0
        assert metric(port, 'driftloop_served_model_version{model="default"}') == 1.0  # not the forgery
        deadline = time.monotonic() + 30
        while len(asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER)))) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        stack.check()
        cli = subprocess.run(
            [sys.executable, "-m", "driftloop.cli", "models", "list"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        clean = [Serde.leading_string(r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(EVENTS_CLEAN)))]

    assert clean == ["sasl-ok"]  # the services authenticated, and processed a record
    dead = [serde.decode("DeadLetter", r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER)))]
    assert sorted(d["error_code"] for d in dead) == ["decode_error", "wrong_type"]
    registry = [serde.decode("ModelVersion", r.value) for r in asyncio.run(read_topic(bootstrap, registry_topic))]
    bootstrap_record = next(r for r in registry if r["version"] == 1)
    assert verify(bootstrap_record, HMAC_KEY)  # inference signed what it published

    texts = {p.name: p.read_text(errors="replace") for p in sorted(logs.glob("*.log"))}
    texts["models list"] = cli.stdout + cli.stderr
    assert {"ingestion.log", "inference.log"} <= set(texts)
    assert "record_dead_lettered" in texts["ingestion.log"]
    assert "registry_record_refused" in texts["inference.log"] and "model_bootstrapped" in texts["inference.log"]
    assert "ignored record" in texts["models list"]
    listed = [line.split()[0] for line in cli.stdout.splitlines()[2:]]
    assert listed == ["1"], cli.stdout  # the forged v7 is not listed
    for name, text in texts.items():
        for secret in (PASSWORD, USERNAME, HMAC_KEY):
            assert secret not in text, f"{name} contains a secret"
