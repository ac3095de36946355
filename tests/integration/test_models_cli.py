"""`driftloop models` against the real broker, with inference running: an operator's
promote and rollback reach the served predictions without a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_for_metric, wait_until

from driftloop.runner import Stack
from driftloop.shared.kafka import producer, read_topic
from driftloop.shared.modelspec import build_model
from driftloop.shared.registry import ArtifactStore, registry_key, version_record
from driftloop.shared.serde import Serde
from driftloop.shared.topics import FEATURES, MODELS_REGISTRY, PREDICTIONS, Topics

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "driftloop.cli", "models"]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def _register(bootstrap: str, topics: Topics, serde: Serde, store: ArtifactStore) -> None:
    async def go() -> None:
        p = producer(bootstrap)
        await p.start()
        try:
            for v in (1, 2, 3):
                model = build_model("logreg", 1)
                for i in range(50):  # each version learns a different rule, so they differ
                    model.learn_one({"x": float(i % 2)}, bool(i % 2) if v != 2 else not bool(i % 2))
                rec = version_record(
                    name="default",
                    version=v,
                    status="champion",
                    reason="test",
                    artifact=store.save("default", v, model),
                    parent=v - 1 if v > 1 else None,
                    trigger="label_volume",
                    window={"examples": 50},
                    params={"spec": "logreg", "trained": "true"},
                    metrics={"prequential_accuracy": 0.5 + v / 10},
                    feature_set_version="fs1",
                    code_version="test",
                    now_ms=int(time.time() * 1000),
                )
                await p.send_and_wait(
                    topics.name(MODELS_REGISTRY),
                    key=registry_key("default", v),
                    value=serde.encode("ModelVersion", rec),
                )
        finally:
            await p.stop()

    asyncio.run(go())


def _predict_once(bootstrap: str, topics: Topics, serde: Serde, event_id: str, timeout_s: float = 30) -> int:
    vector = {
        "event_id": event_id,
        "entity_id": "e1",
        "event_time": int(time.time() * 1000),
        "features": {"x": 1.0},
        "feature_set_version": "fs1",
        "ingest_time": None,
    }

    async def send() -> None:
        p = producer(bootstrap)
        await p.start()
        await p.send_and_wait(topics.name(FEATURES), key=b"e1", value=serde.encode("FeatureVector", vector))
        await p.stop()

    asyncio.run(send())

    def served() -> list[int]:
        preds = [
            serde.decode("Prediction", r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(PREDICTIONS)))
        ]
        return [int(p["model_version"]) for p in preds if p["event_id"] == event_id and p["role"] == "champion"]

    versions = wait_until(f"the prediction for {event_id}", served, timeout_s, every_s=0.3)
    assert len(versions) == 1, f"{event_id} got {len(versions)} champion predictions"
    return versions[0]


def _wait_served(env: dict[str, str], version: int) -> None:
    """Until inference serves ``version``: the CLI's registry record has reached it."""
    port = int(env["DRIFTLOOP_INFERENCE_METRICS_PORT"])
    wait_for_metric(port, "driftloop_served_model_version", lambda v: v == version, 30, model="default")


def test_promote_and_rollback_reach_inference(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    store = ArtifactStore(service_env["DRIFTLOOP_ARTIFACT_STORE"])
    _register(bootstrap, topics, serde, store)

    listing = _cli(["list"], service_env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["version", "status", "trigger"] and len(lines) == 2 + 3
    assert lines[-1].split()[:2] == ["3", "champion"]

    with Stack(env=service_env, log_dir=tmp_path / "logs", services=("inference",)) as stack:
        stack.wait_ready()
        assert _predict_once(bootstrap, topics, serde, "before") == 3

        promoted = _cli(["promote", "1", "--reason", "v3 misbehaves"], service_env)
        assert promoted.returncode == 0, promoted.stderr
        assert "default v1: champion" in promoted.stdout and "default v3: archived" in promoted.stdout
        _wait_served(service_env, 1)
        assert _predict_once(bootstrap, topics, serde, "after-promote") == 1

        rolled = _cli(["rollback"], service_env)  # v1 has no parent
        assert rolled.returncode == 1 and "no parent version" in rolled.stderr

        assert _cli(["promote", "3"], service_env).returncode == 0
        rolled = _cli(["rollback", "--reason", "worse than v2"], service_env)
        assert rolled.returncode == 0, rolled.stderr
        assert "default v2: champion" in rolled.stdout and "default v3: rejected" in rolled.stdout
        _wait_served(service_env, 2)
        assert _predict_once(bootstrap, topics, serde, "after-rollback") == 2
        stack.check()

    shown = _cli(["show", "3"], service_env)
    assert shown.returncode == 0 and '"status": "rejected"' in shown.stdout and "worse than v2" in shown.stdout
    refused = _cli(["archive", "2"], service_env)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "is the champion" in refused.stderr
    missing = _cli(["show", "99"], service_env)
    assert missing.returncode == 1 and "no version 99" in missing.stderr
    assert _cli(["archive", "1"], service_env).returncode == 0
    final = _cli(["list"], service_env).stdout.splitlines()
    assert [line.split()[1] for line in final[2:]] == ["archived", "champion", "rejected"]
