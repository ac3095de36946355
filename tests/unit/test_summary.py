"""The demo and bench figures computed from the records read back (pure)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from driftloop.summary import bare_prequential, detection_delays, failure, prediction_gaps_ms, summarize


def pred(at: int, version: int, role: str = "champion") -> dict[str, Any]:
    return {"predicted_at": at, "model_version": version, "role": role}


def test_the_swap_pause_is_the_longest_gap_across_a_version_change() -> None:
    preds = [pred(0, 1), pred(10, 1), pred(200, 1), pred(230, 2), pred(240, 2), pred(300, 3), pred(5, 9, "baseline")]
    # Gaps: 10, 190 (no swap), 30 (1 -> 2), 10, 60 (2 -> 3); shadow predictions do not count.
    assert prediction_gaps_ms(list(reversed(preds))) == (60.0, 190.0)


def test_no_swap_no_pause() -> None:
    assert prediction_gaps_ms([pred(0, 1), pred(7, 1)]) == (None, 7.0)
    assert prediction_gaps_ms([]) == (None, None)


def test_detection_delay_is_counted_from_each_drift_to_the_first_alert_before_the_next() -> None:
    assert detection_delays([100, 200], [50, 150, 170, 260], 300) == [50, 60]
    assert detection_delays([100, 200], [250], 300) == [None, 50]


# --- figures by task ---------------------------------------------------------------------------------

RUN = "r"


def _records(labels: list[Any], served: list[Any], task: str | None, scores: bool) -> dict[str, Any]:
    ids = [f"{RUN}-{i}" for i in range(len(labels))]
    preds = [
        {
            "event_id": eid,
            "model_name": "default",
            "role": "champion",
            "predicted": p,
            "model_version": 2,
            "ingest_time": 10 * i,
            "predicted_at": 10 * i + 3,
            "scores": {str(p): 1.0} if scores and p is not None else {},
        }
        for i, (eid, p) in enumerate(zip(ids, served, strict=True))
    ]
    version = {"version": 2, "name": "default", "status": "champion", "trigger": "label_volume", "task": task}
    version["params"] = {"trained": "true", "spec": "logreg"}
    return {
        "sent_event_ids": ids,
        "labels_sent": len(labels),
        "clean_events": [{"event_id": eid} for eid in ids],
        "dead_letters": [],
        "vectors": [{"event_id": eid, "features": {"x": float(i)}} for i, eid in enumerate(ids)],
        "predictions": preds,
        "clean_labels": [
            {"event_id": eid, "label": y, "label_time": 10 * i + 500}
            for i, (eid, y) in enumerate(zip(ids, labels, strict=True))
        ],
        "outcomes": [],
        "alerts": [],
        "registry": [version],
        "drift_points": [],
        "baseline_version": 2,
        "wall_seconds": 1.0,
    }


class Frozen:
    """A static classifier that answers the constant ``cls``."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        return {self.cls: 1.0}


def test_a_regression_is_reported_by_mae_and_rmse_against_static_and_bare_river() -> None:
    from river import base

    class Static(base.Regressor):
        def learn_one(self, x: dict[str, float], y: Any) -> None:
            pass

        def predict_one(self, x: dict[str, float]) -> float:
            return x["x"] + 2.0  # off by 2 on every event

    labels = [float(i) for i in range(6)]
    served = [None, 1.0, 2.5, 3.0, 4.0, 1.0]  # errors -, 0, 0.5, 0, 0, 4
    bare = [0.0, 0.0, 1.0, 3.0, 5.0, 5.0]  # errors 0, 1, 1, 0, 1, 0
    recs = _records(labels, served, "regression", scores=False)
    summary, series = summarize(
        **recs,
        load_baseline=Static,
        baseline_from=2,
        bare_predictions=lambda task: ("linreg", bare) if task == "regression" else None,
    )
    assert summary["task"] == "regression"
    assert "served_accuracy" not in summary and "baseline_static_accuracy" not in summary
    assert summary["served_mae"] == pytest.approx(4.5 / 5) and summary["served_without_value"] == 1
    assert summary["served_rmse"] == pytest.approx(math.sqrt((0.25 + 16) / 5))
    assert summary["served_mae_same_window"] == pytest.approx(4.5 / 4)
    assert summary["baseline_static_mae"] == summary["baseline_static_rmse"] == pytest.approx(2.0)
    assert summary["bare_river_mae"] == pytest.approx(3 / 6) and summary["bare_river_spec"] == "linreg"
    assert summary["bare_river_mae_same_window"] == pytest.approx(2 / 4)
    assert [e for _, e in series["served_errors"]] == [0.0, 0.5, 0.0, 0.0, 4.0]
    assert failure(summary) is None


def test_multiclass_is_reported_by_accuracy_and_macro_f1_with_string_classes() -> None:
    labels = ["sky", "path", "sky", "grass", "path", "sky"]
    served = [None, "path", "sky", "sky", "path", "sky"]
    bare = ["sky", "sky", "sky", "grass", "path", "path"]
    recs = _records(labels, served, "multiclass", scores=True)
    recs["predictions"][0]["model_version"] = 1  # the untrained bootstrap served the first event
    summary, series = summarize(
        **recs,
        load_baseline=lambda: Frozen(cls="sky"),
        baseline_from=0,
        bare_predictions=lambda task: ("logreg", bare),
    )
    assert summary["task"] == "multiclass" and "served_mae" not in summary
    assert summary["served_accuracy"] == pytest.approx(4 / 6)
    assert summary["baseline_static_accuracy"] == pytest.approx(3 / 6)
    assert summary["bare_river_accuracy"] == pytest.approx(4 / 6)
    # sky: tp 2, fp 1, fn 1 -> 2/3; path: tp 2 -> 1; grass: fn 1 -> 0.
    assert summary["served_macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert series["served_hits"] == [(0, False), (1, True), (2, True), (3, False), (4, True), (5, True)]
    # From the first event a trained version served, both on the same events.
    assert summary["trained_window_start"] == 1
    assert summary["served_accuracy_trained_window"] == pytest.approx(4 / 5)
    assert summary["bare_river_accuracy_trained_window"] == pytest.approx(3 / 5)


def test_without_a_recorded_task_the_labels_tell() -> None:
    recs = _records([True, False, True], [True, True, True], None, scores=True)
    recs["registry"][0]["task"] = None
    summary, _ = summarize(**recs, load_baseline=None)
    assert summary["task"] == "binary" and summary["served_accuracy"] == pytest.approx(2 / 3)
    assert summary["bare_river_accuracy"] is None


def test_a_run_that_trained_nothing_or_dead_lettered_everything_fails_in_one_line() -> None:
    recs = _records(["a", "b"], [None, None], None, scores=True)
    recs["registry"] = []
    recs["dead_letters"] = [
        {"event_id": f"{RUN}-{i}", "source_topic": "driftloop.examples", "error_code": "label_task_mismatch"}
        for i in range(2)
    ]
    summary, _ = summarize(**recs, load_baseline=None)
    why = failure(summary)
    assert why is not None and "\n" not in why
    assert "trained nothing" in why and "2 of the 2" in why and "label_task_mismatch 2" in why
    recs["dead_letters"] = [
        {"event_id": f"{RUN}-{i}", "source_topic": "driftloop.events.raw", "error_code": "decode_error"}
        for i in range(2)
    ]
    summary, _ = summarize(**recs, load_baseline=None)
    assert failure(summary) == "every one of the 2 events was dead-lettered (decode_error 2)"
    recs["dead_letters"] = []
    summary, _ = summarize(**recs, load_baseline=None)
    assert failure(summary) == "retraining trained nothing from the 2 labels sent"


def test_bare_prequential_learns_each_row_the_label_delay_later() -> None:
    from river import base

    class Last(base.Regressor):
        def __init__(self) -> None:
            self.last = 0.0

        def learn_one(self, x: dict[str, float], y: Any) -> None:
            self.last = y

        def predict_one(self, x: dict[str, float]) -> float:
            return self.last

    rows = [({"x": 1}, 1.0), ({"x": 1}, 2.0), ({"x": 1}, None), ({"x": 1}, 4.0), ({"x": 1}, 5.0)]
    # Row i is predicted from the last labelled row at or before i - 2 (a delay of 1 event).
    assert bare_prequential(rows, 1, Last()) == [0.0, 0.0, 1.0, 2.0, 2.0]
    # With a task, a label it cannot learn is never learned, as the loop dead-letters it.
    rows = [({"x": 1}, 1.0), ({"x": 1}, "n/a"), ({"x": 1}, 3.0), ({"x": 1}, 4.0)]
    assert bare_prequential(rows, 0, Last(), "regression") == [0.0, 1.0, 1.0, 3.0]


def test_incidents_count_an_escalation_with_the_alert_it_repeats() -> None:
    recs = _records([True, False, True], [True, True, True], "binary", scores=True)

    def alert(alert_id: str, incident_id: str | None, escalated: bool = False, kind: str = "input") -> dict[str, Any]:
        a: dict[str, Any] = {"alert_id": alert_id, "kind": kind, "event_id": None, "escalated": escalated}
        return a if incident_id is None else {**a, "incident_id": incident_id}

    recs["alerts"] = [
        alert("a1", ""),  # written as v2 and read as v3: an incident of its own
        alert("a2", None),  # a record without the field at all
        alert("a3", "i1"),
        alert("a4", "i1", escalated=True, kind="concept"),
        alert("a5", "i2", kind="concept"),
    ]
    summary, _ = summarize(**recs, load_baseline=None)
    assert summary["drift_alerts"] == 5
    assert summary["drift_incidents"] == 4
    assert summary["drift_alerts_by_kind"] == {"input": 3, "concept": 2}
