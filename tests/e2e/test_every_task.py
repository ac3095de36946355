"""Every task a user brings, end to end: River's shipped ImageSegments (seven string classes)
and TrumpApproval (a regression) through `driftloop demo --dataset CSV --target COL`, the five
services as real processes on the session broker, each figure next to the static first model
and bare River with the same label delay; and a run whose every example is dead-lettered fails
in one line."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from river import datasets

from driftloop.shared.kafka import read_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, MODELS_REGISTRY, OUTCOMES, PREDICTIONS, Topics

pytestmark = pytest.mark.e2e


def write_csv(path: Path, rows: Iterable[tuple[dict[str, Any], Any]]) -> Path:
    rows = list(rows)
    columns = [*rows[0][0], "target"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for x, y in rows:
            w.writerow({**x, "target": y})
    return path


def demo(
    service_env: dict[str, str], dataset: Path, out: Path, rate: int, **env: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftloop.cli",
            "demo",
            "--dataset",
            str(dataset),
            "--target",
            "target",
            "--rate",
            str(rate),
            "--out",
            str(out),
            "--timeout",
            "120",
        ],
        env={**os.environ, **service_env, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )
    path = out / "summary.json"
    return proc, json.loads(path.read_text()) if path.exists() else None


def decoded(service_env: dict[str, str], topic: str, record: str, serde: Serde) -> list[dict[str, Any]]:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    return [serde.decode(record, r.value) for r in asyncio.run(read_topic(bootstrap, topic))]


def test_image_segments_multiclass_end_to_end(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    rows = list(datasets.ImageSegments())
    classes = {str(y) for _, y in rows}
    # A candidate every 25 examples, judged over the next 25: on a 2,310-row stream that is
    # still learning, what is served trails bare River by about the examples it waits for
    # (a cut, its evaluation, the swap), so both are kept short.
    proc, summary = demo(
        service_env,
        write_csv(tmp_path / "image_segments.csv", rows),
        tmp_path / "out",
        rate=50,
        DRIFTLOOP_RETRAINING_VERSION_EVERY="25",
        DRIFTLOOP_RETRAINING_PROMOTION_MIN_EXAMPLES="25",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary is not None and summary["task"] == "multiclass"
    assert summary["events_sent"] == len(rows) == 2310 and summary["events_without_prediction"] == 0
    assert summary["dead_lettered"] == 0, summary["dead_letter_codes"]
    assert summary["bare_river_spec"] == "logreg"
    # Served beats the frozen first model on the events after that model's training window
    # (neither scored on what it learned from), and is within 2 points of bare River on the
    # events from the first one a trained version served (before it, the untrained
    # bootstrap answers nothing while bare River already learns).
    served, static = summary["served_accuracy_same_window"], summary["baseline_static_accuracy"]
    assert served >= static, (served, static)
    served, bare = summary["served_accuracy_trained_window"], summary["bare_river_accuracy_trained_window"]
    assert abs(served - bare) <= 0.02, (served, bare)
    assert summary["served_macro_f1"] is not None and summary["served_macro_f1"] > 0.5

    # Every trained version records its task; predictions score every class.
    registry = decoded(service_env, topics.name(MODELS_REGISTRY), "ModelVersion", serde)
    trained = [r for r in registry if r["params"].get("trained") == "true"]
    assert trained and {r["task"] for r in trained} == {"multiclass"}
    assert all("prequential_accuracy" in r["metrics"] for r in trained if r["trigger"] == "label_volume")
    predictions = decoded(service_env, topics.name(PREDICTIONS), "Prediction", serde)
    by_trained = [
        p for p in predictions if p["role"] == "champion" and p["model_version"] in {r["version"] for r in trained}
    ]
    assert by_trained and all(set(p["scores"]) == classes and p["predicted"] in classes for p in by_trained[-200:])
    outcomes = decoded(service_env, topics.name(OUTCOMES), "Outcome", serde)
    assert any(o["correct"] and o["label"] in classes for o in outcomes)
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 0


def test_trump_approval_regression_end_to_end_with_labels_that_do_not_fit(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    rows: list[tuple[dict[str, Any], Any]] = list(datasets.TrumpApproval())
    # A producer's mistake: a few labels that are no number. Each is dead-lettered with its
    # code and counted; the loop carries on.
    bad = {300, 600, 900}
    rows = [(x, "n/a" if i in bad else y) for i, (x, y) in enumerate(rows)]
    proc, summary = demo(
        service_env,
        write_csv(tmp_path / "trump_approval.csv", rows),
        tmp_path / "out",
        rate=40,
        DRIFTLOOP_RETRAINING_MODEL_SPEC="linreg",
        # The approval rating trends: a model waiting 100 examples to be judged is stale.
        DRIFTLOOP_RETRAINING_VERSION_EVERY="25",
        DRIFTLOOP_RETRAINING_PROMOTION_MIN_EXAMPLES="25",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary is not None and summary["task"] == "regression"
    assert "served_accuracy" not in summary and "baseline_static_accuracy" not in summary
    assert summary["dead_letter_codes"] == {"label_task_mismatch": len(bad)}
    assert summary["examples_dead_lettered"] == len(bad)
    dead = decoded(service_env, topics.name(DEADLETTER), "DeadLetter", serde)
    assert {d["event_id"] for d in dead} == {f"{summary['run_id']}-{i}" for i in bad}
    assert all(d["service"] == "retraining" and "does not fit the regression task" in d["error_message"] for d in dead)

    # Lower is better: served at most the static model's MAE, within 10% of bare River's
    # (on the same windows as for accuracy above).
    served, static = summary["served_mae_same_window"], summary["baseline_static_mae"]
    assert served <= static, (served, static)
    served, bare = summary["served_mae_trained_window"], summary["bare_river_mae_trained_window"]
    assert served <= 1.1 * bare, (served, bare)
    assert summary["served_rmse"] > 0 and summary["bare_river_rmse"] > 0

    registry = decoded(service_env, topics.name(MODELS_REGISTRY), "ModelVersion", serde)
    trained = [r for r in registry if r["params"].get("trained") == "true"]
    assert trained and {r["task"] for r in trained} == {"regression"}
    for r in trained:
        assert "prequential_accuracy" not in r["metrics"] and "log_loss" not in r["metrics"]
        if r["trigger"] == "label_volume":
            assert (
                r["metrics"]["prequential_mae"] > 0
                and r["metrics"]["prequential_rmse"] >= r["metrics"]["prequential_mae"]
            )
    judged = [r for r in trained if "champion_mae" in r["metrics"]]
    # Each judgement says it compared errors (its reason stays in the status history).
    for r in judged:
        reasons = [r["status_reason"], *(h["reason"] for h in r["status_history"])]
        assert any(" MAE " in why and "% of the MAE" in why for why in reasons), reasons
    assert (tmp_path / "out" / "mae.png").stat().st_size > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "served_mae" in report and "bare_river_mae" in report and "served_accuracy" not in report


def test_a_demo_whose_examples_are_all_dead_lettered_fails_in_one_line(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    rows = [({"x": float(i % 7)}, ["low", "high"][i % 2]) for i in range(300)]
    proc, summary = demo(
        service_env,
        write_csv(tmp_path / "classes.csv", rows),
        tmp_path / "out",
        rate=300,
        DRIFTLOOP_RETRAINING_TASK="regression",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert summary is not None and summary["trained_versions"] == 0
    assert summary["dead_letter_codes"].get("label_task_mismatch") == summary["labels_sent"] == 300
    assert "internal_error" not in summary["dead_letter_codes"]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("driftloop demo: retraining trained nothing") and "label_task_mismatch 300" in last
