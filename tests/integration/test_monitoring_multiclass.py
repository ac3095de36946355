"""Monitoring of a multi-class classifier and of labels that do not fit, as a real process on
the real broker: predictions scoring seven string classes joined with their labels become
outcomes whose rolling accuracy, log loss (of the label's class) and macro F1 reach /metrics
with the figures of the last window; a regressor's number joined with a string label is
counted and scores nothing, and the service carries on."""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path

import pytest
from waiting import scrape_metrics, wait_for_records

from driftloop.runner import Stack
from driftloop.services.monitoring.core import macro_f1
from driftloop.shared.kafka import produce_all
from driftloop.shared.serde import Serde
from driftloop.shared.topics import FEATURES, LABELS_CLEAN, OUTCOMES, PREDICTIONS, Topics
from driftloop.streams import monitoring_stream

pytestmark = pytest.mark.integration
N = 600
WINDOW = 200
CLASSES = ["brickface", "cement", "foliage", "grass", "path", "sky", "window"]
MISFITS = 20  # a regressor's predictions (version 3) joined with string labels


def _gauge(metrics: str, series: str) -> float:
    assert series in metrics, series
    return float(metrics.split(series + " ")[1].split()[0])


def test_monitoring_of_a_multiclass_model_and_of_labels_that_do_not_fit(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    rng = random.Random(5)
    stream = monitoring_stream(
        N + MISFITS, drift_at=N, right_before=1.0, right_after=1.0, seed=5, entities=1, base_ms=int(time.time() * 1000)
    )
    records: list[tuple[str, bytes, bytes]] = []
    expected: list[tuple[str, str, float]] = []  # (label, predicted, probability of the label)
    for i, (vector, prediction, label) in enumerate(stream):
        truth = rng.choice(CLASSES)
        if i < N:
            weights = [rng.random() + (2.0 if c == truth else 0.0) for c in CLASSES]
            total = sum(weights)
            scores = {c: w / total for c, w in zip(CLASSES, weights, strict=True)}
            predicted = max(scores, key=scores.__getitem__)
            prediction = {**prediction, "predicted": predicted, "scores": scores}
            expected.append((truth, predicted, scores[truth]))
        else:
            prediction = {**prediction, "model_version": 3, "predicted": 2.5, "scores": {}}
        key = vector["entity_id"].encode()
        records.append((topics.name(FEATURES), key, serde.encode("FeatureVector", vector)))
        records.append((topics.name(PREDICTIONS), key, serde.encode("Prediction", prediction)))
        records.append((topics.name(LABELS_CLEAN), key, serde.encode("Label", {**label, "label": truth})))
    env = {**service_env, "DRIFTLOOP_MONITORING_WINDOW": str(WINDOW)}
    with Stack(env=env, log_dir=tmp_path / "logs", services=("monitoring",)) as stack:
        asyncio.run(produce_all(bootstrap, records))
        outcomes = wait_for_records(bootstrap, topics.name(OUTCOMES), N, timeout_s=90, check=stack.check)
        time.sleep(3)  # one more gauge refresh
        metrics = scrape_metrics(int(env["DRIFTLOOP_MONITORING_METRICS_PORT"]))
        stack.check()  # still running

    decoded = [serde.decode("Outcome", r.value) for r in outcomes]
    assert len(decoded) == N and {o["model_version"] for o in decoded} == {2}  # no outcome of a misfit
    assert all(set(o["scores"]) == set(CLASSES) for o in decoded)
    last = expected[-WINDOW:]
    labels = 'model="default",role="champion",version="2"'
    accuracy = sum(y == p for y, p, _ in last) / WINDOW
    log_loss = sum(-math.log(q) for _, _, q in last) / WINDOW
    f1 = macro_f1([(y, p) for y, p, _ in last])
    assert _gauge(metrics, f"driftloop_model_accuracy_ratio{{{labels}}}") == pytest.approx(accuracy)
    assert _gauge(metrics, f"driftloop_model_log_loss{{{labels}}}") == pytest.approx(log_loss, rel=1e-9)
    assert f1 is not None and _gauge(metrics, f"driftloop_model_macro_f1{{{labels}}}") == pytest.approx(f1, rel=1e-9)
    assert "driftloop_model_roc_auc{" not in metrics  # not binary
    refused = 'model="default",reason="label_task_mismatch",role="champion"'
    assert _gauge(metrics, f"driftloop_outcomes_refused_total{{{refused}}}") == MISFITS
    # The misfits scored nothing: no figure of version 3, no regression figure at all.
    assert not [m for m in metrics.splitlines() if m.startswith("driftloop_model_") and 'version="3"' in m]
    assert "driftloop_model_mae{" not in metrics
