"""The model lifecycle against the real broker, with retraining and inference as processes:
a drift alert spawns a challenger that inference shadows (role challenger), the evaluation
gate promotes it over the champion, and every status change carries its reason."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for_metric

from driftloop.runner import Stack
from driftloop.shared.kafka import produce_all, read_topic
from driftloop.shared.serde import Serde
from driftloop.shared.signing import verify
from driftloop.shared.topics import ALERTS, EXAMPLES, FEATURES, MODELS_REGISTRY, PREDICTIONS, Topics
from driftloop.streams import sea_stream

pytestmark = pytest.mark.integration
KEY = "lifecycle-test-key"
ROWS = sea_stream(900, seed=3).rows[:600]  # one concept: the labels are flipped to make the drift


def _examples(lo: int, hi: int, flipped: bool) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"x-{i}",
            "entity_id": "e1",  # one partition: retraining learns them in this order
            "event_time": now + i,
            "features": ROWS[i][0],
            "feature_set_version": "fs1",
            "label": (not ROWS[i][1]) if flipped else ROWS[i][1],
            "label_time": now + i,
        }
        for i in range(lo, hi)
    ]


def _send(bootstrap: str, topic: str, record: str, values: list[dict[str, Any]], serde: Serde) -> None:
    asyncio.run(produce_all(bootstrap, [(topic, b"e1", serde.encode(record, v)) for v in values]))


def _registry(bootstrap: str, topics: Topics, serde: Serde) -> dict[int, dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for r in asyncio.run(read_topic(bootstrap, topics.name(MODELS_REGISTRY))):
        rec = serde.decode("ModelVersion", r.value)
        latest[rec["version"]] = rec
    return latest


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _predictions(bootstrap: str, topics: Topics, serde: Serde, event_id: str) -> list[dict[str, Any]]:
    out = [serde.decode("Prediction", r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(PREDICTIONS)))]
    return [p for p in out if p["event_id"] == event_id]


def _examples_learned(port: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("driftloop_training_examples{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def _vector(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "entity_id": "e1",
        "event_time": int(time.time() * 1000),
        "features": ROWS[599][0],
        "feature_set_version": "fs1",
        "ingest_time": None,
    }


def test_drift_challenger_is_shadowed_then_promoted_by_the_gate(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    env = {
        **service_env,
        "DRIFTLOOP_FEATURE_SET_VERSION": "fs1",
        "DRIFTLOOP_RETRAINING_FIRST_VERSION_AFTER": "150",
        "DRIFTLOOP_RETRAINING_VERSION_EVERY": "100000",  # no continuous candidates: the challenger alone
        "DRIFTLOOP_RETRAINING_PROMOTION_MIN_EXAMPLES": "100",
        "DRIFTLOOP_RETRAINING_CHALLENGER_BUFFER": "100",
        # Signed registry: every status change the lifecycle makes must carry a valid signature.
        "DRIFTLOOP_REGISTRY_HMAC_KEY": KEY,
    }
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]

    def registry() -> dict[int, dict[str, Any]]:
        return _registry(bootstrap, topics, serde)

    with Stack(env=env, log_dir=tmp_path / "logs", services=("inference", "retraining")) as stack:
        stack.wait_ready()
        # Concept A: the first trained version is promoted directly over the untrained bootstrap.
        _send(bootstrap, topics.name(EXAMPLES), "LabeledExample", _examples(0, 150, flipped=False), serde)
        first = _wait("the first version", lambda: [r for r in registry().values() if r["trigger"] != "bootstrap"])
        assert len(first) == 1 and first[0]["status"] == "champion" and "first trained" in first[0]["status_reason"]
        champion = first[0]["version"]

        # Concept B (labels flipped). Once retraining has learned them all, the challenger's
        # buffer holds post-drift examples only.
        _send(bootstrap, topics.name(EXAMPLES), "LabeledExample", _examples(150, 300, flipped=True), serde)
        port = env["DRIFTLOOP_RETRAINING_METRICS_PORT"]
        _wait("retraining to learn 300 examples", lambda: _examples_learned(port) == 300)
        alert = {
            "alert_id": "alert-1",
            "kind": "concept",
            "detector": "ADWIN",
            "subject": "error_rate",
            "statistic": 0.5,
            "threshold": 0.002,
            "model_name": "default",
            "model_version": champion,
            "window_start_time": 0,
            "window_end_time": 0,
            "window_size": 100,
            "event_id": "x-299",
            "created_at": int(time.time() * 1000),
        }
        _send(bootstrap, topics.name(ALERTS), "DriftAlert", [alert], serde)
        (challenger,) = _wait(
            "the drift challenger", lambda: [r for r in registry().values() if r["trigger"] == "drift:alert-1"]
        )
        assert challenger["status"] == "candidate" and challenger["training_window"]["examples"] == 100
        assert challenger["training_window"]["first_event_id"] == "x-200"

        # Inference predicts with it in shadow, as a challenger, beside the champion.
        _send(bootstrap, topics.name(FEATURES), "FeatureVector", [_vector("v-1")], serde)
        roles = _wait(
            "the challenger's shadow prediction",
            lambda: (
                {(p["role"], p["model_version"]) for p in _predictions(bootstrap, topics, serde, "v-1")}
                if len(_predictions(bootstrap, topics, serde, "v-1")) >= 3
                else None
            ),
        )
        assert ("champion", champion) in roles and ("challenger", challenger["version"]) in roles

        # 100 more post-drift examples: the gate judges it against the champion on the same examples.
        _send(bootstrap, topics.name(EXAMPLES), "LabeledExample", _examples(300, 420, flipped=True), serde)

        def decided() -> dict[int, dict[str, Any]] | None:
            reg = registry()
            return reg if reg[challenger["version"]]["status"] != "candidate" else None

        final = _wait("the challenger's promotion", decided)
        promoted = final[challenger["version"]]
        assert promoted["status"] == "champion", promoted["status_reason"]
        assert promoted["status_reason"].startswith(f"promoted over v{champion}")
        assert promoted["metrics"]["evaluation_examples"] == 100
        assert promoted["metrics"]["prequential_accuracy"] > promoted["metrics"]["champion_accuracy"]
        assert [h["status"] for h in promoted["status_history"]] == ["candidate"]
        assert all(verify(r, KEY) for r in final.values()), "a registry record is not validly signed"
        assert final[champion]["status"] == "archived"
        assert final[champion]["status_reason"] == f"superseded by v{challenger['version']}"

        # Inference swaps to the promoted version and stops shadowing it.
        def after() -> Any:
            preds = _predictions(bootstrap, topics, serde, "v-2")
            return preds if any(p["role"] == "champion" for p in preds) else None

        inference_port = int(env["DRIFTLOOP_INFERENCE_METRICS_PORT"])
        version = challenger["version"]
        wait_for_metric(inference_port, "driftloop_served_model_version", lambda v: v == version, model="default")
        _send(bootstrap, topics.name(FEATURES), "FeatureVector", [_vector("v-2")], serde)
        _wait("a prediction after the promotion", after)
        # A marker behind v-2 on its partition: once it is predicted, every prediction of
        # v-2 (a shadow one included) is on the topic.
        _send(bootstrap, topics.name(FEATURES), "FeatureVector", [_vector("v-3")], serde)
        _wait("the marker's prediction", lambda: _predictions(bootstrap, topics, serde, "v-3"))
        preds = _predictions(bootstrap, topics, serde, "v-2")
        assert len([p for p in preds if p["role"] == "champion"]) == 1, preds
        assert {p["model_version"] for p in preds if p["role"] == "champion"} == {challenger["version"]}
        assert challenger["version"] not in {p["model_version"] for p in preds if p["role"] == "challenger"}
        stack.check()


def test_the_registry_topic_holds_each_version_in_the_order_retraining_decided(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    """Examples of many entities, so every input partition hands retraining some: its
    decisions then come while handling one partition or another. Under exactly-once each
    partition's transactions commit in their own order, and a registry record riding on them
    could reach the topic after a later record of its version (a candidate after its own
    promotion). Each record carries the history before it, so on the topic each version's
    records must come with ever longer histories, and one version alone ends as champion."""
    env = {
        **service_env,
        "DRIFTLOOP_RETRAINING_FIRST_VERSION_AFTER": "40",
        "DRIFTLOOP_RETRAINING_VERSION_EVERY": "20",
        "DRIFTLOOP_RETRAINING_PROMOTION_MIN_EXAMPLES": "10",
        "DRIFTLOOP_RETRAINING_PROMOTION_MARGIN": "0",
    }
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    rows = sea_stream(900, seed=5).rows
    now = int(time.time() * 1000)
    examples = [
        {
            "event_id": f"x-{i}",
            "entity_id": f"e{i % 16}",
            "event_time": now + i,
            "features": x,
            "feature_set_version": "fs1",
            "label": y,
            "label_time": now + i,
        }
        for i, (x, y) in enumerate(rows)
    ]
    with Stack(env=env, log_dir=tmp_path / "logs", services=("retraining",)) as stack:
        stack.wait_ready()
        asyncio.run(
            produce_all(
                bootstrap,
                [(topics.name(EXAMPLES), e["entity_id"].encode(), serde.encode("LabeledExample", e)) for e in examples],
            )
        )
        port = env["DRIFTLOOP_RETRAINING_METRICS_PORT"]
        _wait("retraining to learn every example", lambda: _examples_learned(port) == len(examples), timeout_s=90)

        def settled() -> list[dict[str, Any]] | None:
            # Read until two reads agree: the last transactions may still be committing.
            first = [
                serde.decode("ModelVersion", r.value)
                for r in asyncio.run(read_topic(bootstrap, topics.name(MODELS_REGISTRY)))
            ]
            time.sleep(1.0)
            again = [
                serde.decode("ModelVersion", r.value)
                for r in asyncio.run(read_topic(bootstrap, topics.name(MODELS_REGISTRY)))
            ]
            return first if first == again else None

        records = _wait("the registry topic to settle", settled)
        stack.check()
    by_version: dict[int, list[dict[str, Any]]] = {}
    for rec in records:
        by_version.setdefault(rec["version"], []).append(rec)
    decided = [v for v, recs in by_version.items() if len(recs) > 1]
    assert len(by_version) >= 10 and decided, f"too few versions or decisions to tell: {sorted(by_version)}"
    for version, recs in by_version.items():
        histories = [len(r["status_history"]) for r in recs]
        assert histories == sorted(set(histories)), (
            f"v{version} reached the topic out of order: {[(r['status'], len(r['status_history'])) for r in recs]}"
        )
    champions = [v for v, recs in by_version.items() if recs[-1]["status"] == "champion"]
    assert len(champions) == 1, f"the topic ends with champions {champions}"
