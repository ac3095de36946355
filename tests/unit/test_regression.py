"""Regression through monitoring and retraining: the outcome's absolute error, rolling MAE / RMSE
next to the classification figures, concept drift on the absolute error, prequential MAE."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river.datasets import synth

from driftloop.services.monitoring.core import Monitor, OutcomeJoin, PerformanceTracker, is_regression, outcome
from driftloop.services.retraining.lifecycle import Scoreboard
from driftloop.shared.modelspec import build_model, predict
from driftloop.shared.resources import SCHEMA_DIR
from driftloop.shared.serde import FileSchemaRegistry, Serde


def prediction(eid: str, predicted: Any, scores: dict[str, float] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": eid,
        "entity_id": "u",
        "event_time": 1_000,
        "model_name": "m",
        "model_version": kw.get("version", 3),
        "role": kw.get("role", "champion"),
        "predicted": predicted,
        "scores": scores or {},
        "feature_set_version": "fs1",
        "ingest_time": None,
        "predicted_at": 1_005,
    }


def label(eid: str, value: Any) -> dict[str, Any]:
    return {"event_id": eid, "entity_id": "u", "label": value, "label_time": 2_000}


# --- telling the two apart -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "scores", "truth", "expected"),
    [
        (2.5, {}, 3.0, True),
        (2.5, {}, 3, True),  # a long label
        (0.0, {}, -1.25, True),
        (True, {"True": 0.7, "False": 0.3}, True, False),
        (1, {"0": 0.2, "1": 0.8}, 1, False),  # integer classes come with scores
        (None, {}, 1.0, False),  # an untrained classifier
        (True, {}, 1.0, False),  # a boolean is a class, not a value
        (2.5, {}, "3.0", False),  # a string label is a class
    ],
)
def test_is_regression(predicted: Any, scores: dict[str, float], truth: Any, expected: bool) -> None:
    assert is_regression(predicted, scores, truth) is expected


# --- the outcome ---------------------------------------------------------------------------------


def test_a_regression_outcome_carries_the_absolute_error() -> None:
    out = outcome(prediction("e1", 2.5), label("e1", 4))
    assert out["loss"] == 1.5 and out["correct"] is False
    assert outcome(prediction("e2", 7.0), label("e2", 7))["correct"] is True  # an exact hit
    within = outcome(prediction("e3", 2.5), label("e3", 3.0), tolerance=0.5)
    assert within["loss"] == 0.5 and within["correct"] is True
    assert outcome(prediction("e4", 2.5), label("e4", 3.0), tolerance=0.49)["correct"] is False


def test_a_classification_outcome_is_unchanged() -> None:
    scores = {"True": 0.3, "False": 0.7}
    right = outcome(prediction("e1", False, scores), label("e1", False), tolerance=5.0)
    wrong = outcome(prediction("e2", False, scores), label("e2", 1))
    assert (right["correct"], right["loss"]) == (True, 0.0)
    assert (wrong["correct"], wrong["loss"]) == (False, 1.0)
    assert outcome(prediction("e3", None), label("e3", 2.0))["loss"] == 1.0  # untrained: a miss


def test_a_regression_outcome_fits_the_outcome_schema() -> None:
    serde = Serde(FileSchemaRegistry(SCHEMA_DIR))
    out = outcome(prediction("e1", 2.25), label("e1", 3))
    decoded = serde.decode("Outcome", serde.encode("Outcome", out))
    assert decoded == out and type(decoded["predicted"]) is float and decoded["scores"] == {}


def test_the_join_applies_its_tolerance() -> None:
    join = OutcomeJoin({}, {}, {}, tolerance=0.25)
    assert join.on_prediction(prediction("e1", 10.2)) is None
    out = join.on_label(label("e1", 10.0))
    assert out is not None and out["correct"] is True and out["loss"] == pytest.approx(0.2)


# --- rolling MAE / RMSE --------------------------------------------------------------------------


def _out(i: int, kind: str, value: float, truth: float) -> dict[str, Any]:
    if kind == "regression":
        return outcome(prediction(f"e{i}", value), label(f"e{i}", truth))
    hit = value > 0
    return outcome(prediction(f"e{i}", hit, {"True": 0.8, "False": 0.2}), label(f"e{i}", truth > 0))


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    window=st.integers(min_value=1, max_value=25),
    stream=st.lists(st.tuples(st.sampled_from(["regression", "classification"]), finite, finite), max_size=80),
)
def test_mae_and_rmse_match_brute_force_and_accuracy_ignores_them(
    window: int, stream: list[tuple[str, float, float]]
) -> None:
    tracker = PerformanceTracker(window)
    assert tracker.mae is None and tracker.rmse is None and tracker.accuracy is None
    errors: list[float] = []
    hits: list[bool] = []
    for i, (kind, value, truth) in enumerate(stream):
        out = _out(i, kind, value, truth)
        tracker.update(out)
        if kind == "regression":
            errors.append(abs(value - truth))
        else:
            hits.append(out["correct"])
        last_errors, last_hits = errors[-window:], hits[-window:]
        assert tracker.n == len(last_errors) + len(last_hits)
        if last_errors:
            scale = max(1.0, max(last_errors))
            mae = sum(last_errors) / len(last_errors)
            rmse = math.sqrt(sum(e * e for e in last_errors) / len(last_errors))
            assert tracker.mae == pytest.approx(mae, rel=1e-6, abs=1e-9 * scale)
            assert tracker.rmse == pytest.approx(rmse, rel=1e-6, abs=1e-6 * scale)
        else:
            assert tracker.mae is None and tracker.rmse is None
        if last_hits:
            assert tracker.accuracy == pytest.approx(sum(last_hits) / len(last_hits))
            assert tracker.log_loss is not None
        else:
            assert tracker.accuracy is None and tracker.log_loss is None and tracker.roc_auc is None


def test_rmse_of_exact_hits_after_errors_is_zero_not_complex() -> None:
    tracker = PerformanceTracker(3)
    for i, (value, truth) in enumerate([(0.1, 0.3), (1e-9, 0.7), (5.0, 5.0), (2.0, 2.0), (1.0, 1.0)]):
        tracker.update(_out(i, "regression", value, truth))
    assert tracker.mae == pytest.approx(0.0, abs=1e-12) and type(tracker.rmse) is float
    assert tracker.rmse == pytest.approx(0.0, abs=1e-6)


def test_a_non_finite_prediction_does_not_poison_the_window() -> None:
    tracker = PerformanceTracker(2)
    tracker.update(_out(0, "regression", 1.0, 3.0))
    tracker.update({**_out(1, "regression", 1.0, 3.0), "predicted": math.inf})
    tracker.update(_out(2, "regression", 4.0, 3.0))
    assert tracker.mae == pytest.approx(1.5) and tracker.n_regression == 2


def test_monitor_tracks_regression_per_version_and_role_and_across_versions() -> None:
    monitor = Monitor(window=10)
    for i, (version, role, value, truth) in enumerate(
        [(1, "champion", 1.0, 2.0), (2, "champion", 5.0, 2.0), (2, "baseline", 2.0, 2.5)]
    ):
        monitor.on_outcome(outcome(prediction(f"e{i}", value, version=version, role=role), label(f"e{i}", truth)))
    assert monitor.trackers[("m", 1, "champion")].mae == 1.0
    assert monitor.trackers[("m", 2, "champion")].rmse == 3.0
    assert monitor.trackers[("m", 2, "baseline")].mae == 0.5
    served = monitor.served[("m", "champion")]
    assert served.mae == 2.0 and served.rmse == pytest.approx(math.sqrt(5.0)) and served.accuracy is None


# --- concept drift on the absolute error ---------------------------------------------------------


def regression_alerts(monitor: Monitor, errors: list[float], role: str = "champion") -> list[tuple[int, Any]]:
    fired = []
    for i, err in enumerate(errors):
        out = outcome(prediction(f"e{i}", 10.0 + err, role=role), label(f"e{i}", 10.0))
        fired += [(i, d) for d in monitor.on_outcome(out)]
    return fired


def error_stream(segments: list[tuple[int, float]], seed: int) -> list[float]:
    rng = random.Random(seed)
    return [abs(rng.gauss(0.0, scale)) for n, scale in segments for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concept_drift_on_a_rising_absolute_error(seed: int) -> None:
    monitor = Monitor(concept_detectors=("adwin", "ddm"), cooldown=300)
    assert monitor.regression_concept_detectors == ("adwin",)  # DDM models a 0/1 stream
    fired = regression_alerts(monitor, error_stream([(2000, 1.0), (2000, 3.0)], seed))
    assert fired, "no alert after the error tripled"
    assert all(2000 <= i < 2500 for i, _ in fired[:1])
    assert {(d.kind, d.detector, d.subject) for _, d in fired} == {("concept", "ADWIN", "absolute_error")}


def test_no_regression_concept_alert_when_stable_falling_or_for_the_baseline() -> None:
    assert regression_alerts(Monitor(concept_detectors=("adwin",)), error_stream([(4000, 1.0)], 4)) == []
    falling = error_stream([(2000, 3.0), (2000, 1.0)], 5)
    assert regression_alerts(Monitor(concept_detectors=("adwin",)), falling) == []
    rising = error_stream([(2000, 1.0), (2000, 3.0)], 5)
    assert regression_alerts(Monitor(concept_detectors=("adwin",)), rising, role="baseline") == []


# --- retraining: the lifecycle scores regressors by their errors ---------------------------------


def test_the_scoreboard_scores_a_regressor_by_its_absolute_and_squared_errors() -> None:
    rows = [({f"x{k}": v for k, v in x.items()}, y) for x, y in synth.Friedman(seed=2).take(300)]
    board = Scoreboard(window=100)
    board.add("trained", build_model("linreg", 3))
    board.add("fresh", build_model("linreg", 3))
    shadow = build_model("linreg", 3)
    errors = []
    for i, (x, y) in enumerate(rows):
        value, scores = predict(shadow, x)
        assert scores == {}
        errors.append(value - y)
        shadow.learn_one(x, y)
        if i == 150:
            board.remove("fresh")
            board.add("fresh", build_model("linreg", 3))  # starts over: it has learned nothing
        board.learn_one(x, y)
    trained = board.score("trained")
    assert trained.accuracy is None and trained.log_loss is None  # no accuracy of a number
    assert trained.mae == pytest.approx(sum(abs(e) for e in errors[-100:]) / 100)
    assert trained.rmse == pytest.approx(math.sqrt(sum(e * e for e in errors[-100:]) / 100))
    # On their common examples the model that learned longer has the smaller error: a gain,
    # as the share of the other's MAE it saves.
    c = board.compare("trained", "fresh")
    assert c.regression and c.mae is not None and c.reference_mae is not None
    assert c.mae < c.reference_mae
    assert c.gain == pytest.approx((c.reference_mae - c.mae) / c.reference_mae)
