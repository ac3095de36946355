"""The label-free accuracy estimate (services/monitoring/estimate.py): exact for a calibrated
model, recalibrated by the outcomes of one that is not, per version, and replayed by the
demo's summary as monitoring runs it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop.services.monitoring.estimate import (
    INHERITED,
    KEPT_VERSIONS,
    AccuracyEstimate,
    ConfidenceCalibration,
    confidence,
)
from driftloop.summary import Estimated, estimate_figures, estimates

MODEL = "m"


def prediction(c: float, version: int = 1, role: str = "champion", event_id: str = "e") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "model_name": MODEL,
        "model_version": version,
        "role": role,
        "predicted": "a",
        "scores": {"a": c, "b": 1 - c},
    }


def outcome(c: float, correct: bool, version: int = 1) -> dict[str, Any]:
    return {**prediction(c, version), "correct": correct}


groups = st.lists(st.tuples(st.integers(1, 10), st.integers(0, 10)), min_size=1, max_size=12)


@given(groups)
def test_the_estimate_is_exact_for_a_calibrated_model(sizes: list[tuple[int, int]]) -> None:
    # Each group: n predictions of confidence k/n, of which exactly k are right. The model is
    # calibrated on these outcomes, and the estimate of the same predictions made again is
    # their realized accuracy.
    cases = [(n, min(k, n)) for n, k in sizes]
    total = sum(n for n, _ in cases)
    est = AccuracyEstimate(window=total)  # the window then holds the second round only
    for n, k in cases:
        for j in range(n):
            est.on_prediction(prediction(k / n))
            est.on_outcome(outcome(k / n, j < k))
    for n, k in cases:
        for _ in range(n):
            est.on_prediction(prediction(k / n))
    realized = sum(k for _, k in cases) / total
    assert est.served()[MODEL] == pytest.approx(realized, abs=1e-9)
    assert est.by_version()[MODEL, 1] == pytest.approx(realized, abs=1e-9)


def test_an_overconfident_model_is_recalibrated_by_its_outcomes() -> None:
    est = AccuracyEstimate(window=100)
    assert est.on_prediction(prediction(0.9)) == pytest.approx(0.9)  # nothing learned: its own confidence
    for i in range(1000):
        est.on_outcome(outcome(0.9, i % 10 < 6))  # right 60% of the time
    assert est.on_prediction(prediction(0.9)) == pytest.approx(0.6, abs=0.01)
    # A bin that has seen nothing takes the correction of all bins, and the estimate never
    # leaves [0, 1].
    assert est.on_prediction(prediction(0.55)) == pytest.approx(0.25, abs=0.01)
    cal = ConfidenceCalibration()
    for _ in range(100):
        cal.learn_one(0.05, True)
    assert cal.predict_one(0.05) <= 1.0


def test_the_calibration_forgets_outcomes_beyond_its_window() -> None:
    cal = ConfidenceCalibration(window=100, prior=0)
    for _ in range(100):
        cal.learn_one(0.8, False)
    for _ in range(100):
        cal.learn_one(0.8, True)
    assert cal.n == 100
    assert cal.predict_one(0.8) == pytest.approx(1.0)


def test_a_new_version_starts_from_the_calibration_of_the_one_before() -> None:
    est = AccuracyEstimate()
    est.on_prediction(prediction(0.9, version=1))
    for i in range(500):
        est.on_outcome(outcome(0.9, i % 2 == 0, version=1))
    assert est.on_prediction(prediction(0.9, version=2)) == pytest.approx(0.5, abs=0.03)
    # It learns on its own from there: version 1's calibration is untouched.
    for _ in range(2000):
        est.on_outcome(outcome(0.9, True, version=2))
    assert est.on_prediction(prediction(0.9, version=2)) == pytest.approx(1.0, abs=0.02)
    assert est.on_prediction(prediction(0.9, version=1)) == pytest.approx(0.5, abs=0.03)


def test_a_new_version_inherits_only_the_latest_outcomes() -> None:
    est = AccuracyEstimate()
    est.on_prediction(prediction(0.9, version=1))
    for i in range(500):
        est.on_outcome(outcome(0.9, i >= 500 - INHERITED, version=1))  # wrong, then right lately
    assert est.on_prediction(prediction(0.9, version=1)) == pytest.approx(0.2, abs=0.01)
    assert est.on_prediction(prediction(0.9, version=2)) == pytest.approx(1.0)


def test_only_the_latest_versions_are_kept() -> None:
    est = AccuracyEstimate()
    for v in range(1, KEPT_VERSIONS + 4):
        est.on_prediction(prediction(0.7, version=v))
    assert sorted(v for _, v in est.by_version()) == list(range(4, KEPT_VERSIONS + 4))
    est.on_outcome(outcome(0.7, False, version=1))  # forgotten: nothing to learn into, no error


def test_no_estimate_without_scores_or_for_other_roles() -> None:
    est = AccuracyEstimate()
    assert est.on_prediction({**prediction(0.9), "scores": {}}) is None  # a regressor
    assert est.on_prediction(prediction(0.9, role="baseline")) is None
    est.on_outcome({**outcome(0.9, True), "scores": None})
    assert est.served() == {} and est.by_version() == {}


def test_confidence_is_the_score_of_the_predicted_class() -> None:
    assert confidence({"predicted": 1, "scores": {"0": 0.1, "1": 0.7, "2": 0.2}}) == pytest.approx(0.7)
    assert confidence({"predicted": True, "scores": {"False": 0.35, "True": 0.65}}) == pytest.approx(0.65)
    # A predicted class the scores do not name: the top score.
    assert confidence({"predicted": "z", "scores": {"x": 0.3, "y": 0.6}}) == pytest.approx(0.6)
    assert confidence({"predicted": 3.2, "scores": None}) is None


def test_the_summary_replays_the_estimate_in_the_order_monitoring_saw_it() -> None:
    # Labels arrive 50 events late; the model says 0.9 and is right 70% of the time.
    champion = {f"r-{i}": {**prediction(0.9, event_id=f"r-{i}"), "predicted_at": 1000 + 10 * i} for i in range(3000)}
    labels = {f"r-{i}": {"label": "a" if i % 10 < 7 else "b", "label_time": 1000 + 10 * (i + 50)} for i in range(3000)}
    series = estimates(champion, labels)
    assert [e.event for e in series] == list(range(3000))
    assert series[0].estimate == pytest.approx(0.9) and series[0].lagged is None  # before any outcome
    assert series[60].estimate < 0.9  # the labels of events 0-9 arrived by event 60
    assert series[60].lagged == pytest.approx(0.7)  # 7 of those 10 right
    figures = estimate_figures(series, drift_points=[])
    # Windows from the first prediction made once an outcome was known (event 50).
    assert figures["estimated_accuracy_windows"] == (3000 - 51 - 500) // 100 + 1
    assert figures["estimated_accuracy_error_stationary"] == figures["estimated_accuracy_error"]
    assert figures["estimated_accuracy_error_drift"] is None
    later = estimate_figures(series[600:], drift_points=[])
    assert later["estimated_accuracy_error"] < 0.02
    assert later["lagged_accuracy_error"] == pytest.approx(0.0)  # a stream this regular: exact


def est(index: int, estimate: float, correct: bool, lagged: float | None = 0.8) -> Estimated:
    return Estimated(index, estimate, lagged, correct)


def test_windows_reaching_past_a_drift_point_are_judged_apart() -> None:
    # An estimate of 0.8 that is right until event 1500, after which accuracy falls to 0.5.
    series = [est(i, 0.8, (i % 10 < 8) if i < 1500 else (i % 2 == 0)) for i in range(2500)]
    figures = estimate_figures(series, drift_points=[1500])
    assert figures["estimated_accuracy_error_stationary"] == pytest.approx(0.0)
    # The last window, 2000-2499, is all after the drift: off by 0.3.
    assert 0.0 < figures["estimated_accuracy_error_drift"] < 0.3
    assert figures["lagged_accuracy_error_drift"] == pytest.approx(figures["estimated_accuracy_error_drift"])
    assert figures["estimated_accuracy_windows"] == 21
    assert estimate_figures(series[:400], drift_points=[])["estimated_accuracy_error"] is None
    # Nothing is judged before an outcome is known.
    unknown = [est(i, 0.8, True, lagged=None) for i in range(1000)]
    assert estimate_figures(unknown, drift_points=[])["estimated_accuracy_windows"] == 0
