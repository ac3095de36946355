"""Retraining as a real process on the real broker, for tasks the labels must tell: integral
labels are held until enough of them tell, then learnt in arrival order by a model of that
task (integers 0-6: one scoring each class; 0 and 1: binary); a label the task cannot learn
is dead-lettered as label_task_mismatch and counted, and the service carries on."""

from __future__ import annotations

import asyncio
import pickle
import time
from pathlib import Path
from typing import Any

import pytest
from river import datasets
from waiting import metric_value, scrape_metrics, wait_until

from driftloop.runner import Stack
from driftloop.shared.kafka import produce_all, read_topic
from driftloop.shared.modelspec import predict
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EXAMPLES, MODELS_REGISTRY, Topics

pytestmark = pytest.mark.integration
N = 400
HELD = 60  # DRIFTLOOP_RETRAINING_TASK_EXAMPLES


def _run(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path, rows: list[tuple[dict[str, Any], Any]]
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Send ``rows`` as LabeledExamples to retraining alone; (its /metrics once it learnt
    every one it can, the registry records, the dead letters)."""
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    now = int(time.time() * 1000)
    examples = [
        {
            "event_id": f"x-{i}",
            "entity_id": "e1",  # one partition: retraining learns them in this order
            "event_time": now + i,
            "features": {k: float(v) for k, v in x.items()},
            "feature_set_version": "fs1",
            "label": y,
            "label_time": now + i,
        }
        for i, (x, y) in enumerate(rows)
    ]
    env = {**service_env, "DRIFTLOOP_RETRAINING_TASK_EXAMPLES": str(HELD), "DRIFTLOOP_RETRAINING_VERSION_EVERY": "1000"}
    port = int(env["DRIFTLOOP_RETRAINING_METRICS_PORT"])
    with Stack(env=env, log_dir=tmp_path / "logs", services=("retraining",)) as stack:
        stack.wait_ready()
        records = [(topics.name(EXAMPLES), b"e1", serde.encode("LabeledExample", e)) for e in examples]
        asyncio.run(produce_all(bootstrap, records))

        def done() -> str | None:
            text = scrape_metrics(port)
            learnt = metric_value(text, "driftloop_training_examples", model="default") or 0
            refused = sum(
                metric_value(text, "driftloop_label_task_mismatches_total", model="default", task=t) or 0
                for t in ("binary", "multiclass", "regression")
            )
            return text if learnt + refused >= len(rows) else None

        metrics = wait_until("every example learnt or refused", done, timeout_s=90, check=stack.check)
        stack.check()  # still running
    registry = [
        serde.decode("ModelVersion", r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(MODELS_REGISTRY)))
    ]
    dead = [serde.decode("DeadLetter", r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER)))]
    return metrics, registry, dead


def test_integer_classes_are_held_until_they_tell_then_learnt_in_order(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    image = list(datasets.ImageSegments())[:N]
    classes = sorted({y for _, y in image})
    rows = [(x, classes.index(y)) for x, y in image]  # integer classes 0-6: only their count tells
    metrics, registry, dead = _run(service_env, topics, serde, tmp_path, rows)
    assert metric_value(metrics, "driftloop_model_task_info", model="default", task="multiclass") == 1.0
    assert dead == []
    (first,) = [r for r in registry if r["params"].get("trained") == "true"]
    assert first["task"] == "multiclass" and first["params"]["spec"] == "logreg"
    # The held examples were learnt first, in order: the first cut's window starts at x-0.
    window = first["training_window"]
    assert (window["first_event_id"], window["last_event_id"], window["examples"]) == ("x-0", "x-199", 200)
    path = Path(first["artifact_uri"].removeprefix("file://"))
    model = pickle.loads(path.read_bytes())  # written by the service under test
    predicted, scores = predict(model, {k: float(v) for k, v in image[300][0].items()})
    assert set(scores) == {str(k) for k in range(len(classes))} and predicted in range(len(classes))


def test_a_label_the_decided_task_cannot_learn_is_dead_lettered_and_counted(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    image = list(datasets.ImageSegments())[:N]
    rows: list[tuple[dict[str, Any], Any]] = [(x, int(y == "sky")) for x, y in image]  # 0 and 1: binary
    bad = {150: 2, 320: "sky", 321: 0.5}
    rows = [(x, bad.get(i, y)) for i, (x, y) in enumerate(rows)]
    metrics, registry, dead = _run(service_env, topics, serde, tmp_path, rows)
    assert metric_value(metrics, "driftloop_model_task_info", model="default", task="binary") == 1.0
    assert metric_value(metrics, "driftloop_label_task_mismatches_total", model="default", task="binary") == len(bad)
    assert metric_value(metrics, "driftloop_training_examples", model="default") == N - len(bad)
    got = sorted((d["event_id"], d["error_code"], d["service"]) for d in dead)
    assert got == sorted((f"x-{i}", "label_task_mismatch", "retraining") for i in bad)
    assert all("does not fit the binary task" in d["error_message"] for d in dead)
    trained = [r for r in registry if r["params"].get("trained") == "true"]
    assert trained and {r["task"] for r in trained} == {"binary"}
