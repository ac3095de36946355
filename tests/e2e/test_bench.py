"""`driftloop bench` on a tiny stream: it runs end to end and every figure is present and
positive. (No figure is compared with a target here: the machines are noisy.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftloop.shared.broker import Broker

pytestmark = pytest.mark.e2e

FIGURES = (
    "events_per_second",
    "events_per_second_at_least_once",
    "exactly_once_to_at_least_once",
    "events_per_second_2_replicas",
    "replicas_2_to_1",
    "passthrough_events_per_second",
    "ratio_to_passthrough",
    "bare_river_events_per_second",
    "p50_latency_ms",
    "p99_latency_ms",
    "offered_rate",
    "served_accuracy",
    "static_accuracy",
    "bare_river_accuracy",
    "cpu_seconds_per_1k_events",
    "peak_rss_mb",
    "monitoring_predictions_per_second",
    "bare_monitoring_predictions_per_second",
    "monitoring_ratio_to_bare",
    "inference_p50_latency_ms",
    "inference_p99_latency_ms",
    "inference_swap_pause_ms",
    "inference_swaps",
    "oip_p50_latency_ms",
    "oip_p99_latency_ms",
    "oip_alone_p99_latency_ms",
    "bare_predict_p50_ms",
    "http_ingest_events_per_second",
    "aiokafka_produce_events_per_second",
)


def test_bench_prints_every_figure(broker: Broker, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftloop.cli",
            "bench",
            "--events",
            "900",
            "--rate",
            "300",
            # Longer than the 900 events last at 300/s: the paced run cycles them.
            "--soak-s",
            "5",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "bench.json").read_text())
    missing = [k for k in FIGURES if not (isinstance(res.get(k), int | float) and res[k] > 0)]
    assert not missing, {k: res.get(k) for k in missing}
    assert res["machine"]["cores"] >= 1 and res["machine"]["python"]
    assert res["events_without_prediction"] == 0
    assert res["guarantee"] == "exactly_once"  # the default on Apache Kafka
    assert res["latency_events"] == 1500 and res["soak_s"] == 5
    assert res["p99_latency_by_minute_ms"] and res["p99_latency_first_minute_ms"] > 0
    # Inference alone, its champion swapped while paced vectors stream in: none lost or repeated.
    assert res["inference_events_without_prediction"] == 0
    assert res["inference_duplicate_predictions"] == 0
    for k in FIGURES:
        assert k in proc.stdout
    assert (out / "bench.md").read_text().count("|") > 3 * len(FIGURES)
    assert (out / "bench.png").stat().st_size > 0
