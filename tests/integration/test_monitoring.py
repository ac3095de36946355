"""Monitoring as a real process on the real broker: predictions and labels in any order
become one outcome each; a concept drift in the error stream raises a de-bounced alert;
the rolling figures and the drift counters reach /metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from waiting import scrape_metrics, wait_drained, wait_for_records

from driftloop.runner import Stack
from driftloop.shared.kafka import produce_all, read_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import ALERTS, FEATURES, LABELS_CLEAN, OUTCOMES, PREDICTIONS, Topics
from driftloop.streams import monitoring_stream

pytestmark = pytest.mark.integration
N = 1200
DRIFT_AT = 600


def _records(serde: Serde, topics: Topics) -> list[tuple[str, bytes, bytes]]:
    """Features, champion predictions and labels for N events: right 95% of the time before
    DRIFT_AT, 40% after; labels arrive before their prediction for every 7th event."""
    out: list[tuple[str, bytes, bytes]] = []
    # One entity, so one partition: the monitor sees the outcomes in event order and the
    # alert's distance from the drift point means something.
    stream = monitoring_stream(
        N,
        drift_at=DRIFT_AT,
        right_before=0.95,
        right_after=0.4,
        seed=11,
        entities=1,
        base_ms=int(time.time() * 1000),
    )
    for i, (vector, prediction, label) in enumerate(stream):
        key = vector["entity_id"].encode()
        p_rec = (topics.name(PREDICTIONS), key, serde.encode("Prediction", prediction))
        l_rec = (topics.name(LABELS_CLEAN), key, serde.encode("Label", label))
        out.append((topics.name(FEATURES), key, serde.encode("FeatureVector", vector)))
        out += [l_rec, p_rec] if i % 7 == 0 else [p_rec, l_rec]
    return out


def test_monitoring_joins_scores_and_alerts(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    env = {**service_env, "DRIFTLOOP_MONITORING_CONCEPT_DETECTORS": "adwin", "DRIFTLOOP_MONITORING_WINDOW": "200"}
    with Stack(env=env, log_dir=tmp_path / "logs", services=("monitoring",)) as stack:
        asyncio.run(produce_all(bootstrap, _records(serde, topics)))
        wait_for_records(bootstrap, topics.name(OUTCOMES), N, timeout_s=90, check=stack.check)
        # Every input handled and its output delivered, with no input for longer than the
        # 2 s gauge timer: no late outcome can follow, and the gauges include the last one.
        port = int(env["DRIFTLOOP_MONITORING_METRICS_PORT"])
        wait_drained({"monitoring": port}, check=stack.check)
        metrics = scrape_metrics(port)
        outcomes = asyncio.run(read_topic(bootstrap, topics.name(OUTCOMES)))

    decoded = [serde.decode("Outcome", r.value) for r in outcomes]
    assert sorted(o["event_id"] for o in decoded) == sorted(f"m-{i}" for i in range(N))  # one each
    by_id = {o["event_id"]: o for o in decoded}
    assert by_id["m-0"]["role"] == "champion" and by_id["m-0"]["scores"]
    assert all(o["correct"] == (o["predicted"] == o["label"]) for o in decoded)

    alerts = [serde.decode("DriftAlert", r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(ALERTS)))]
    concept = [a for a in alerts if a["kind"] == "concept"]
    assert concept, alerts
    fired_at = sorted(int(a["event_id"].split("-")[1]) for a in concept)
    assert DRIFT_AT <= fired_at[0] < DRIFT_AT + 300
    assert len(concept) <= 2  # de-bounced: one drift, not a storm
    assert all(a["detector"] == "ADWIN" and a["subject"] == "error_rate" and a["model_version"] == 2 for a in concept)
    assert not [a for a in alerts if a["kind"] == "input"]  # the features never changed

    assert 'driftloop_model_accuracy_ratio{model="default",role="champion",version="2"}' in metrics
    acc = float(
        metrics.split('driftloop_model_accuracy_ratio{model="default",role="champion",version="2"} ')[1].split()[0]
    )
    assert 0.25 < acc < 0.6  # the rolling window sits in the post-drift regime
    assert (
        'driftloop_drift_alerts_total{detector="ADWIN",kind="concept",model="default",subject="error_rate"}' in metrics
    )
    assert "driftloop_model_roc_auc{" in metrics and "driftloop_model_log_loss{" in metrics
    assert 'driftloop_feature_mean{feature="f0"}' in metrics
    assert "driftloop_label_delay_seconds_count 1200.0" in metrics
    assert "driftloop_consumer_lag_records{" in metrics
