"""Secrets never reach a log line: ingestion and inference run as processes with a SASL
password, a SASL username and a registry HMAC key set (PLAINTEXT protocol, so they still
reach the embedded broker), at debug level, through their error paths (bad input dead-
lettered, a forged registry record refused); then every log file and the `driftloop
models` output are searched for the secrets."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from services.runner import Stack
from shared.kafka import produce_all, read_topic
from shared.registry import registry_key, version_record
from shared.serde import Serde
from shared.signing import verify
from shared.topics import Topics

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


def test_secrets_never_appear_in_logs(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
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
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
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
    with Stack(env=env, log_dir=logs, services=("ingestion", "inference")) as stack:
        stack.wait_ready(60)
        asyncio.run(
            produce_all(
                bootstrap,
                [
                    (topics.events_raw, b"k", b"\x13\x37 not a record"),
                    (topics.labels_raw, b"k", b'{"event_id": 1}'),
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
        while len(asyncio.run(read_topic(bootstrap, topics.deadletter))) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        stack.check()
        cli = subprocess.run(
            [sys.executable, "-m", "services.cli", "models", "list"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

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
