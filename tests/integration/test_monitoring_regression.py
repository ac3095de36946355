"""Monitoring of a regressor as a real process on the real broker: numeric predictions (no
class scores) joined with numeric labels become outcomes carrying the absolute error; the
rolling MAE and RMSE reach /metrics with the figures of the last window of outcomes; a rise
of the error raises a concept alert on it."""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest
from waiting import scrape_metrics, wait_for_records

from driftloop.runner import Stack
from driftloop.shared.kafka import produce_all, read_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import ALERTS, FEATURES, LABELS_CLEAN, OUTCOMES, PREDICTIONS, Topics
from driftloop.streams import monitoring_stream

pytestmark = pytest.mark.integration
N = 1200
DRIFT_AT = 600
WINDOW = 200
TOLERANCE = 0.5


def _records(serde: Serde, topics: Topics) -> list[tuple[str, bytes, bytes]]:
    """Features, champion predictions and labels for N events of a regressor whose absolute
    error is |N(0, 0.5)| before DRIFT_AT and |N(0, 2)| after; labels arrive before their
    prediction for every 7th event. One entity: one partition, so event order is the monitor's."""
    rng = random.Random(13)
    out: list[tuple[str, bytes, bytes]] = []
    stream = monitoring_stream(
        N, drift_at=DRIFT_AT, right_before=1.0, right_after=1.0, seed=13, entities=1, base_ms=int(time.time() * 1000)
    )
    for i, (vector, prediction, label) in enumerate(stream):
        truth = round(rng.uniform(-50.0, 50.0), 3)
        error = rng.gauss(0.0, 0.5 if i < DRIFT_AT else 2.0)
        prediction = {**prediction, "predicted": truth + error, "scores": {}}
        label = {**label, "label": int(truth) if i % 5 == 0 else truth}  # long labels too
        key = vector["entity_id"].encode()
        p_rec = (topics.name(PREDICTIONS), key, serde.encode("Prediction", prediction))
        l_rec = (topics.name(LABELS_CLEAN), key, serde.encode("Label", label))
        out.append((topics.name(FEATURES), key, serde.encode("FeatureVector", vector)))
        out += [l_rec, p_rec] if i % 7 == 0 else [p_rec, l_rec]
    return out


def _gauge(metrics: str, series: str) -> float:
    assert series in metrics, series
    return float(metrics.split(series + " ")[1].split()[0])


def test_monitoring_of_a_regressor(service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    env = {
        **service_env,
        "DRIFTLOOP_MONITORING_CONCEPT_DETECTORS": "adwin,ddm",  # DDM is left out for a regressor
        "DRIFTLOOP_MONITORING_WINDOW": str(WINDOW),
        "DRIFTLOOP_MONITORING_REGRESSION_TOLERANCE": str(TOLERANCE),
    }
    records = _records(serde, topics)
    sent: dict[str, dict[str, Any]] = {}
    for topic, _, value in records:
        if topic == topics.name(PREDICTIONS):
            p = serde.decode("Prediction", value)
            sent[p["event_id"]] = p
    with Stack(env=env, log_dir=tmp_path / "logs", services=("monitoring",)) as stack:
        asyncio.run(produce_all(bootstrap, records))
        outcomes = wait_for_records(bootstrap, topics.name(OUTCOMES), N, timeout_s=90, check=stack.check)
        time.sleep(3)  # one more gauge refresh
        port = env["DRIFTLOOP_MONITORING_METRICS_PORT"]
        metrics = scrape_metrics(int(port))

    decoded = [serde.decode("Outcome", r.value) for r in outcomes]
    assert sorted(o["event_id"] for o in decoded) == sorted(f"m-{i}" for i in range(N))  # one each
    for o in decoded:
        assert o["scores"] == {} and o["predicted"] == sent[o["event_id"]]["predicted"]
        assert o["loss"] == pytest.approx(abs(o["predicted"] - o["label"]), rel=1e-12)
        assert o["correct"] is (o["loss"] <= TOLERANCE)
    assert {type(o["label"]) for o in decoded} == {int, float}

    # The monitor saw the outcomes in the order they were produced (one partition).
    last = [o["loss"] for o in decoded][-WINDOW:]
    mae, rmse = sum(last) / WINDOW, math.sqrt(sum(e * e for e in last) / WINDOW)
    labels = 'model="default",role="champion",version="2"'
    assert _gauge(metrics, f"driftloop_model_mae{{{labels}}}") == pytest.approx(mae, rel=1e-9)
    assert _gauge(metrics, f"driftloop_model_rmse{{{labels}}}") == pytest.approx(rmse, rel=1e-9)
    served = 'model="default",role="champion"'
    assert _gauge(metrics, f"driftloop_served_mae{{{served}}}") == pytest.approx(mae, rel=1e-9)
    assert _gauge(metrics, f"driftloop_served_rmse{{{served}}}") == pytest.approx(rmse, rel=1e-9)
    assert 1.0 < mae < 2.5  # the window sits in the post-drift regime (E|N(0, 2)| = 1.6)
    assert "driftloop_model_accuracy_ratio{" not in metrics and "driftloop_model_log_loss{" not in metrics
    correct = sum(o["correct"] for o in decoded)
    assert f'driftloop_outcomes_total{{correct="true",{labels}}} {float(correct)}' in metrics

    alerts = [serde.decode("DriftAlert", r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(ALERTS)))]
    concept = [a for a in alerts if a["kind"] == "concept"]
    assert concept, alerts
    assert all(a["detector"] == "ADWIN" and a["subject"] == "absolute_error" for a in concept)
    assert DRIFT_AT <= min(int(a["event_id"].split("-")[1]) for a in concept) < DRIFT_AT + 300
