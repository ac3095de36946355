"""The demo end to end: the five services as real processes on the real broker, a
synthetic stream with delayed labels, and summary.json checked against the topics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from driftloop.shared.kafka import read_topic
from driftloop.shared.modelspec import same_class
from driftloop.shared.serde import Serde
from driftloop.shared.topics import (
    ALERTS,
    DEADLETTER,
    EVENTS_RAW,
    LABELS_CLEAN,
    MODELS_REGISTRY,
    OUTCOMES,
    PREDICTIONS,
    Topics,
)
from driftloop.streams import index_of, sea_stream

pytestmark = pytest.mark.e2e
EVENTS = 4500


def _decoded(bootstrap: str, topic: str, record: str, serde: Serde) -> list[dict]:
    return [serde.decode(record, r.value) for r in asyncio.run(read_topic(bootstrap, topic))]


def test_demo_closes_the_loop(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, **service_env, "DRIFTLOOP_RETRAINING_VERSION_EVERY": "300"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftloop.cli",
            "demo",
            "--events",
            str(EVENTS),
            "--rate",
            "300",
            "--out",
            str(out),
            "--timeout",
            "300",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    design_keys = {
        "events_sent",
        "events_clean",
        "dead_lettered",
        "predictions",
        "events_without_prediction",
        "labels_joined",
        "served_accuracy",
        "baseline_static_accuracy",
        "drift_alerts",
        "drift_points",
        "detection_delays",
        "model_versions",
        "promotions",
        "p50_latency_ms",
        "p99_latency_ms",
        "events_per_second",
        "wall_seconds",
    }
    assert design_keys <= set(summary), design_keys - set(summary)
    assert summary["topic_prefix"] == topics.prefix
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]

    raw = asyncio.run(read_topic(bootstrap, topics.name(EVENTS_RAW)))
    sent = {serde.decode("RawEvent", r.value)["event_id"] for r in raw}
    all_predictions = _decoded(bootstrap, topics.name(PREDICTIONS), "Prediction", serde)
    predictions = [p for p in all_predictions if p["role"] == "champion"]
    shadow = [p for p in all_predictions if p["role"] == "baseline"]
    dead = _decoded(bootstrap, topics.name(DEADLETTER), "DeadLetter", serde)
    labels = {x["event_id"]: x["label"] for x in _decoded(bootstrap, topics.name(LABELS_CLEAN), "Label", serde)}
    all_outcomes = _decoded(bootstrap, topics.name(OUTCOMES), "Outcome", serde)
    outcomes = [o for o in all_outcomes if o["role"] == "champion"]
    registry = _decoded(bootstrap, topics.name(MODELS_REGISTRY), "ModelVersion", serde)
    alerts = _decoded(bootstrap, topics.name(ALERTS), "DriftAlert", serde)

    # Every event sent has a prediction or a dead letter, and no event two champion predictions.
    assert len(raw) == len(sent) == EVENTS == summary["events_sent"]
    predicted = {p["event_id"] for p in predictions}
    dead_ids = {d["event_id"] for d in dead}
    assert sent <= predicted | dead_ids
    assert summary["events_without_prediction"] == 0
    twice = {e: c for e, c in Counter(p["event_id"] for p in predictions).items() if c > 1}
    assert not twice, f"{len(twice)} events with more than one champion prediction, e.g. {list(twice.items())[:5]}"
    assert len(outcomes) == len({o["event_id"] for o in outcomes}), "an event scored twice as champion"

    # At least two versions registered, and inference served more than one of them.
    versions = {r["version"] for r in registry}
    served_versions = {p["model_version"] for p in predictions}
    assert len(versions) >= 2 and summary["model_versions"] == len(versions)
    assert len(served_versions) >= 2 and summary["versions_served"] == sorted(served_versions)
    assert served_versions <= versions
    # Version 1 is inference's untrained bootstrap, or, when retraining registered first
    # (start-up order is not fixed), a trained version: either way versions start at 1.
    assert min(versions) == 1
    assert all(r["training_window"]["examples"] > 0 for r in registry if r["trigger"] != "bootstrap")

    # summary.json agrees with what this test read from the topics.
    first: dict[str, dict] = {}
    for p in predictions:
        first.setdefault(p["event_id"], p)
    hits = [same_class(p["predicted"], labels[e]) for e, p in first.items() if e in labels]
    assert summary["predictions"] == len(predictions)
    assert summary["dead_lettered"] == len(dead)
    assert summary["labels_joined"] == len({o["event_id"] for o in outcomes}) == EVENTS
    assert summary["served_accuracy"] == pytest.approx(sum(hits) / len(hits))
    # The static baseline predicts in shadow from the first trained version on, always that version.
    assert shadow and {p["model_version"] for p in shadow} == {summary["baseline_model_version"]}
    assert {o["event_id"] for o in all_outcomes if o["role"] == "baseline"} <= {p["event_id"] for p in shadow}
    start = summary["baseline_window_start"]
    window = [same_class(p["predicted"], labels[e]) for e, p in first.items() if e in labels and index_of(e) >= start]
    assert 0 < start < EVENTS and summary["served_accuracy_same_window"] == pytest.approx(sum(window) / len(window))
    assert summary["drift_alerts"] == len(alerts)
    escalations = [a for a in alerts if a["escalated"]]
    assert {a["incident_id"] for a in escalations} <= {a["incident_id"] for a in alerts if not a["escalated"]}
    assert summary["drift_incidents"] == len({a["incident_id"] for a in alerts}) == len(alerts) - len(escalations)
    assert summary["promotions"] == sum(
        1 for r in registry if r["status"] == "champion" and r["trigger"] != "bootstrap"
    )
    assert summary["drift_points"] == [EVENTS // 3, 2 * EVENTS // 3]
    assert len(summary["detection_delays"]) == 2
    latencies = sorted(p["predicted_at"] - p["ingest_time"] for p in first.values())
    assert latencies[0] >= 0 and summary["p50_latency_ms"] <= summary["p99_latency_ms"] <= latencies[-1]
    assert summary["events_per_second"] > 0 and summary["wall_seconds"] > 0
    # The loop learns: what trained versions served is far above chance on SEA. (How many
    # events the untrained bootstrap version serves depends on start-up timing, so the
    # overall figure is not asserted.)
    trained = [
        same_class(p["predicted"], labels[e]) for e, p in first.items() if e in labels and p["model_version"] > 1
    ]
    assert len(trained) > EVENTS // 3 and sum(trained) / len(trained) > 0.8
    assert summary["baseline_static_accuracy"] is not None and summary["baseline_model_version"] >= 1
    # The label-free estimate was replayed over every labelled champion prediction with scores,
    # and judged on stationary stretches and after each drift point.
    assert 0.0 < summary["estimated_accuracy"] < 1.0
    assert summary["estimated_accuracy_windows"] > 0
    assert summary["estimated_accuracy_error_stationary"] is not None
    assert summary["estimated_accuracy_error_drift"] is not None

    # The second drift (SEA's threshold moves from 7 to 9.5) is detected by a concept alert,
    # versions learned on the new concept are promoted and served, and over the last 500
    # events what users got beats the static first model where the concepts disagree.
    second = 2 * EVENTS // 3
    assert summary["detection_delays"][1] is not None
    drift_time = first[f"{summary['run_id']}-{second}"]["event_time"]
    late = [p for e, p in first.items() if index_of(e) >= EVENTS - 500]
    by_version = {r["version"]: r for r in registry}
    late_versions = {p["model_version"] for p in late}
    post_drift = {v for v in late_versions if (by_version[v]["training_window"]["end_time"] or 0) > drift_time}
    assert post_drift, "no version trained after the drift served the last events"
    baseline_first: dict[str, dict] = {}
    for p in shadow:
        baseline_first.setdefault(p["event_id"], p)
    both = [e for e in (p["event_id"] for p in late) if e in baseline_first and e in labels]
    served_late = sum(same_class(first[e]["predicted"], labels[e]) for e in both) / len(both)
    static_late = sum(same_class(baseline_first[e]["predicted"], labels[e]) for e in both) / len(both)
    # Most late points lie far from both boundaries, where both models are right, so over the
    # whole window the gap is a few points either way (it was -0.018 in a CI run of 3,000
    # events, +0.014 to +0.042 in three of 4,500). Between the first concept's boundary (8)
    # and the last one's (9.5) the concepts disagree, and there the served model must win.
    rows = sea_stream(EVENTS).rows
    band = [e for e in both if 8.0 < rows[index_of(e)][0]["x0"] + rows[index_of(e)][0]["x1"] <= 9.5]
    served_band = sum(same_class(first[e]["predicted"], labels[e]) for e in band) / len(band)
    static_band = sum(same_class(baseline_first[e]["predicted"], labels[e]) for e in band) / len(band)
    with capsys.disabled():
        print(
            f"\nlast 500: served {served_late:.3f}, static {static_late:.3f}; "
            f"between the boundaries ({len(band)}): served {served_band:.3f}, static {static_band:.3f}",
            file=sys.stderr,
        )
    assert len(both) > 400 and len(band) > 30, (len(both), len(band))
    assert served_band > static_band, (served_band, static_band)
    assert served_late > static_late - 0.03, (served_late, static_late)
    for outcome in outcomes:
        assert 0 <= index_of(outcome["event_id"]) < EVENTS
    assert (out / "report.md").is_file() and (out / "accuracy.png").stat().st_size > 0
    assert (out / "latency.png").stat().st_size > 0
