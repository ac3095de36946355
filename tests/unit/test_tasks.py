"""Every task a user brings: the task inferred from the labels, models in each task's form,
labels that do not fit, multi-class figures in monitoring, and regressors promoted and rolled
back by their errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import base, datasets

from driftloop.services.monitoring.core import (
    Monitor,
    PerformanceTracker,
    class_key,
    label_fits_prediction,
    macro_f1,
    outcome,
    positive_score,
)
from driftloop.services.retraining.lifecycle import (
    Comparison,
    Lifecycle,
    Promote,
    PromotionRule,
    Register,
    Reject,
    Rollback,
    RollbackRule,
)
from driftloop.services.retraining.task import TaskGate
from driftloop.shared.errors import ConfigError, LabelTaskMismatch, UnknownModelSpec
from driftloop.shared.modelspec import (
    BINARY,
    MULTICLASS,
    REGRESSION,
    build_model,
    check_label,
    fits_task,
    fixed_task,
    infer_task,
    is_regressor,
    label_fits,
    predict,
    spec_for_task,
)

IMAGE = [({k: float(v) for k, v in x.items()}, y) for x, y in datasets.ImageSegments()]
CLASSES = sorted({y for _, y in IMAGE})


# --- inferring the task --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "final", "task"),
    [
        ([True, False, True], False, BINARY),  # booleans tell at once
        (["path", "sky"], False, MULTICLASS),  # a string is a class
        ([1, 2, "sky"], False, MULTICLASS),
        ([43.75, 44.1], False, REGRESSION),  # a fractional part is a value
        ([1, 0, 2.5], False, REGRESSION),
        ([0, 1, 1, 0], False, None),  # integers wait...
        ([0, 1, 1, 0], True, BINARY),  # ...for enough of them: 0 and 1 alone are binary
        ([0.0, 1.0, True], True, BINARY),  # CSV's 1.0 is 1
        ([3, 1, 4, 1, 5], True, MULTICLASS),  # a few values are classes
        (list(range(21)), False, REGRESSION),  # more than max_classes values are numbers, at once
        ([math.nan], True, None),  # a NaN tells nothing (and is refused on its own)
        ([], True, None),
    ],
)
def test_infer_task(labels: list[Any], final: bool, task: str | None) -> None:
    assert infer_task(labels, final=final) == task


def test_the_shipped_datasets_are_inferred_as_what_they_are() -> None:
    assert infer_task((y for _, y in IMAGE), final=False) == MULTICLASS
    assert infer_task((y for _, y in datasets.TrumpApproval()), final=False) == REGRESSION
    assert infer_task((y for _, y in datasets.Phishing()), final=False) == BINARY


@pytest.mark.parametrize(
    ("task", "label", "fits"),
    [
        (REGRESSION, 2.5, True),
        (REGRESSION, 3, True),
        (REGRESSION, "3.0", False),  # a string is never a value
        (REGRESSION, True, False),
        (REGRESSION, math.inf, False),
        (BINARY, True, True),
        (BINARY, 1, True),
        (BINARY, 0.0, True),
        (BINARY, 2, False),
        (BINARY, "yes", False),
        (MULTICLASS, "path", True),
        (MULTICLASS, 7, True),
        (MULTICLASS, False, True),
        (MULTICLASS, math.nan, False),
    ],
)
def test_label_fits_its_task(task: str, label: Any, fits: bool) -> None:
    assert label_fits(task, label) is fits
    if fits:
        check_label(task, label)
    else:
        with pytest.raises(LabelTaskMismatch) as info:
            check_label(task, label)
        assert info.value.code == "label_task_mismatch" and task in str(info.value)


def test_the_task_setting_and_a_regressor_spec_fix_the_task_before_any_label() -> None:
    assert fixed_task("logreg", "auto") is None  # the default spec: the labels tell
    assert fixed_task("linreg", "auto") == REGRESSION
    assert fixed_task("logreg", "regression") == REGRESSION
    assert fixed_task("hat", "multiclass") == MULTICLASS
    with pytest.raises(ConfigError):
        fixed_task("logreg", "ranking")
    with pytest.raises(UnknownModelSpec):
        fixed_task("xgboost", "auto")


@pytest.mark.parametrize(
    ("spec", "task", "expected"),
    [
        ("logreg", REGRESSION, "linreg"),
        ("hat", REGRESSION, "hatr"),
        ("arfr", MULTICLASS, "arf"),
        ("linreg", BINARY, "logreg"),
        ("arf", BINARY, "arf"),
    ],
)
def test_a_family_in_each_task_form(spec: str, task: str, expected: str) -> None:
    assert spec_for_task(spec, task) == expected
    assert is_regressor(build_model(spec, 1, task)) is (task == REGRESSION)


@pytest.mark.parametrize(
    ("spec", "task", "fits"),
    [
        ("logreg", BINARY, True),
        ("logreg", MULTICLASS, False),  # River's LogisticRegression is binary only
        ("hat", MULTICLASS, True),
        ("arf", MULTICLASS, True),
        ("linreg", REGRESSION, True),
        ("linreg", BINARY, False),
        ("hat", REGRESSION, False),
    ],
)
def test_a_resumed_model_of_another_kind_does_not_fit_the_task(spec: str, task: str, fits: bool) -> None:
    assert fits_task(build_model(spec, 1), task) is fits
    assert fits_task(build_model(spec, 1, task), task)  # built for the task, always


# --- the gate: examples held until the labels tell -----------------------------------------------


def gate(task: str | None = None, examples: int = 5) -> TaskGate[tuple[int, Any]]:
    return TaskGate(task, examples=examples, label=lambda item: item[1])


def test_integral_labels_are_held_until_enough_and_come_out_in_order() -> None:
    g = gate(examples=4)
    for i, y in enumerate([0, 1, 1]):
        assert g.offer((i, y)) == ([], []) and g.task is None
    assert g.held == 3
    ready, refused = g.offer((3, 0))
    assert g.task == BINARY and ready == [(0, 0), (1, 1), (2, 1), (3, 0)] and refused == []
    assert g.offer((4, 1)) == ([(4, 1)], [])


def test_a_string_decides_at_once_and_held_integers_are_classes() -> None:
    g = gate(examples=100)
    g.offer((0, 3))
    ready, refused = g.offer((1, "sky"))
    assert g.task == MULTICLASS and ready == [(0, 3), (1, "sky")] and not refused


def test_held_labels_the_decided_task_cannot_learn_come_out_refused() -> None:
    g = gate(examples=100)
    g.offer((0, 1))
    g.offer((1, True))
    ready, refused = g.offer((2, 2.5))  # a value: regression; the boolean is no number
    assert g.task == REGRESSION and ready == [(0, 1), (2, 2.5)]
    assert [(item, exc.code) for item, exc in refused] == [((1, True), "label_task_mismatch")]


def test_once_decided_a_label_that_does_not_fit_is_refused_and_the_gate_carries_on() -> None:
    g = gate(REGRESSION)
    assert g.offer((0, 4.5)) == ([(0, 4.5)], [])
    with pytest.raises(LabelTaskMismatch):
        g.offer((1, "path"))
    assert g.offer((2, 5.0)) == ([(2, 5.0)], [])
    with pytest.raises(LabelTaskMismatch):
        gate().offer((0, math.nan))  # fits no task: refused before anything is decided


def test_gate_parameters_are_checked() -> None:
    with pytest.raises(ConfigError):
        gate("ranking")
    with pytest.raises(ConfigError):
        gate(examples=0)


# --- models in multi-class form ------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["logreg", "hat", "arf"])
def test_every_classifier_learns_string_classes_and_scores_each(spec: str) -> None:
    model = build_model(spec, 7, MULTICLASS)
    rows = IMAGE[:600]
    hits = 0
    for i, (x, y) in enumerate(rows):
        predicted, scores = predict(model, x)
        if i >= 300:
            hits += predicted == y
            assert set(scores) == set(CLASSES)  # a score for every class seen
            assert sum(scores.values()) == pytest.approx(1.0)
            assert scores[str(predicted)] == max(scores.values())
        model.learn_one(x, y)
    assert hits / 300 > 0.6  # seven classes: a constant would get about 1/7


def test_binary_logreg_is_unchanged() -> None:
    assert type(build_model("logreg", 1, BINARY)[-1]) is type(build_model("logreg", 1)[-1])


# --- monitoring: multi-class figures -------------------------------------------------------------


def mc_out(i: int, label: Any, scores: dict[str, float]) -> dict[str, Any]:
    predicted = max(scores, key=scores.__getitem__) if scores else None
    prediction = {
        "event_id": f"e{i}",
        "entity_id": "u",
        "event_time": i,
        "model_name": "m",
        "model_version": 2,
        "role": "champion",
        "predicted": predicted,
        "scores": scores,
    }
    return outcome(prediction, {"event_id": f"e{i}", "label": label, "label_time": i + 1})


def brute_macro_f1(pairs: list[tuple[str, str | None]]) -> float:
    classes = {y for y, _ in pairs} | {p for _, p in pairs if p is not None}
    f1s = []
    for c in classes:
        tp = sum(y == c and p == c for y, p in pairs)
        fp = sum(y != c and p == c for y, p in pairs)
        fn = sum(y == c and p != c for y, p in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s)


@settings(max_examples=150, deadline=None)
@given(
    window=st.integers(1, 30),
    stream=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3)),
        min_size=1,
        max_size=60,
    ),
)
def test_multiclass_accuracy_log_loss_and_macro_f1_over_the_window(
    window: int, stream: list[tuple[str, list[float]]]
) -> None:
    tracker = PerformanceTracker(window)
    expected = []
    for i, (y, weights) in enumerate(stream):
        total = sum(weights)
        scores = {c: w / total for c, w in zip("abc", weights, strict=True)}  # class "d" is never scored
        out = mc_out(i, y, scores)
        tracker.update(out)
        expected.append((y, out["predicted"], scores.get(y, 0.0)))
    last = expected[-window:]
    assert tracker.accuracy == pytest.approx(sum(y == p for y, p, _ in last) / len(last))
    assert tracker.log_loss == pytest.approx(sum(-math.log(max(q, 1e-15)) for _, _, q in last) / len(last))
    assert tracker.macro_f1 == pytest.approx(brute_macro_f1([(y, p) for y, p, _ in last]))
    assert tracker.roc_auc is None  # not binary


def test_macro_f1_counts_an_unanswered_prediction_as_a_miss_and_spells_classes_alike() -> None:
    assert macro_f1([]) is None
    assert macro_f1([("a", "a"), ("b", None)]) == pytest.approx(0.5)
    assert class_key(True) == class_key(1) == class_key(1.0) == class_key("1") == "1"
    assert class_key("path") == "path" and class_key(2.5) == "2.5"
    tracker = PerformanceTracker(10)
    tracker.update(mc_out(0, 1, {"0": 0.2, "1": 0.8}))
    tracker.update(mc_out(1, True, {"0": 0.4, "1": 0.6}))
    assert tracker.macro_f1 == 1.0 and tracker.accuracy == 1.0


def test_a_multiclass_score_named_1_is_not_a_positive_class() -> None:
    assert positive_score({"0": 0.1, "1": 0.3, "2": 0.6}) is None
    assert positive_score({"0": 0.3, "1": 0.7}) == 0.7
    monitor = Monitor(window=10)
    out = mc_out(0, 2, {"0": 0.1, "1": 0.3, "2": 0.6})
    monitor.on_outcome(out)
    tracker = monitor.trackers[("m", 2, "champion")]
    assert tracker.accuracy == 1.0 and tracker.log_loss == pytest.approx(-math.log(0.6)) and tracker.roc_auc is None


def test_a_regressors_number_against_a_class_label_does_not_fit() -> None:
    number = {"predicted": 2.5, "scores": {}}
    assert not label_fits_prediction(number, "path") and not label_fits_prediction(number, True)
    assert label_fits_prediction(number, 3)
    assert label_fits_prediction({"predicted": "sky", "scores": {"sky": 1.0}}, "path")  # a miss, not a misfit
    assert label_fits_prediction({"predicted": None, "scores": {}}, "path")  # untrained


# --- promotion and rollback compare a regressor's errors ----------------------------------------


def reg_comparison(n: int, mae: float, ref: float) -> Comparison:
    nan = math.nan
    return Comparison(n, nan, nan, nan, nan, mae=mae, reference_mae=ref, rmse=mae * 1.2, reference_rmse=ref * 1.2)


def test_a_regressor_is_promoted_for_a_lower_error_by_a_relative_margin() -> None:
    rule = PromotionRule(margin=0.05, min_examples=10)
    assert reg_comparison(10, 0.9, 1.0).gain == pytest.approx(0.1)
    assert rule.decide(reg_comparison(10, 0.9, 1.0)).action == "promote"  # 10% lower
    assert rule.decide(reg_comparison(10, 0.96, 1.0)).action == "reject"  # 4% lower: below the margin
    assert rule.decide(reg_comparison(10, 1.1, 1.0)).action == "reject"  # a higher error is never a gain
    assert rule.decide(reg_comparison(10, 90.0, 100.0)).action == "promote"  # the label's units do not matter
    assert rule.decide(reg_comparison(9, 0.1, 1.0)).action == "wait"
    verdict = rule.decide(reg_comparison(10, 0.9, 1.0))
    assert "MAE 0.9 vs champion 1" in verdict.reason and "5.0% of the MAE" in verdict.reason
    assert rule.decide(reg_comparison(10, 0.0, 0.0)).action == "reject"  # a tie of perfect models


def test_a_regressor_is_rolled_back_for_a_higher_error() -> None:
    rule = RollbackRule(window=10, margin=0.05)
    assert rule.decide(reg_comparison(10, 1.1, 1.0)).action == "rollback"
    assert rule.decide(reg_comparison(10, 1.04, 1.0)).action == "keep"
    assert rule.decide(reg_comparison(10, 0.5, 1.0)).action == "keep"
    assert rule.decide(reg_comparison(10, math.inf, 1.0)).action == "rollback"  # a diverged model


class Offset(base.Regressor):
    """Answers the value leaked in ``x["y"]`` off by ``error`` from example ``after`` on."""

    def __init__(self, error: float = 0.0, after: int = 0) -> None:
        self.error = error
        self.after = after

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        pass

    def predict_one(self, x: dict[str, float]) -> float:
        return x["y"] + (self.error if x["i"] >= self.after else 0.0)


def reg_ex(i: int) -> dict[str, Any]:
    y = 40.0 + 5 * math.sin(i / 10)
    return {
        "event_id": f"e{i}",
        "event_time": i,
        "features": {"i": float(i), "y": y},
        "label": y,
        "feature_set_version": "fs1",
    }


def test_the_lifecycle_judges_regressors_by_mae_and_records_regression_metrics() -> None:
    latest = {"v": 2}
    champion = Offset(error=2.0)
    lc = Lifecycle(
        Offset(error=1.0),
        build=Offset,
        next_version=lambda: latest["v"] + 1,
        champion=champion,
        champion_version=2,
        promotion=PromotionRule(margin=0.1, min_examples=20),
        rollback=RollbackRule(window=20, margin=0.1),
        version_every=10,
        window=50,
    )
    actions: list[Any] = []
    for i in range(40):
        for a in lc.learn(reg_ex(i)):
            if isinstance(a, Register):
                latest["v"] = max(latest["v"], a.version)
            actions.append(a)
    register = next(a for a in actions if isinstance(a, Register))
    assert register.metrics["prequential_mae"] == pytest.approx(1.0)
    assert register.metrics["prequential_rmse"] == pytest.approx(1.0)
    assert "prequential_accuracy" not in register.metrics and "log_loss" not in register.metrics
    assert "MAE is lower than the champion's by 10.0%" in register.reason
    promote = next(a for a in actions if isinstance(a, Promote))
    assert promote.metrics["prequential_mae"] == pytest.approx(1.0) and promote.metrics[
        "champion_mae"
    ] == pytest.approx(2.0)
    assert not any(isinstance(a, Reject | Rollback) for a in actions)


def test_a_worse_regressor_is_rejected_by_its_error() -> None:
    latest = {"v": 2}
    lc = Lifecycle(
        Offset(error=3.0),
        build=Offset,
        next_version=lambda: latest["v"] + 1,
        champion=Offset(error=2.0),
        champion_version=2,
        promotion=PromotionRule(margin=0.0, min_examples=20),
        rollback=RollbackRule(window=20, margin=0.1),
        version_every=10,
        window=50,
    )
    actions = [a for i in range(40) for a in lc.learn(reg_ex(i))]
    reject = next(a for a in actions if isinstance(a, Reject))
    assert reject.metrics["prequential_mae"] == pytest.approx(3.0) and reject.metrics["champion_mae"] == pytest.approx(
        2.0
    )
    assert "MAE 3 vs champion 2" in reject.reason


def test_a_promoted_regressor_whose_error_grows_is_rolled_back() -> None:
    latest = {"v": 2}
    # Better than the champion on its evaluation, then off by 5 from example 45 on.
    lc = Lifecycle(
        Offset(error=5.0, after=45),
        build=Offset,
        next_version=lambda: latest["v"] + 1,
        champion=Offset(error=1.0),
        champion_version=2,
        promotion=PromotionRule(margin=0.1, min_examples=20),
        rollback=RollbackRule(window=20, margin=0.1),
        version_every=10,
        window=50,
    )
    actions: list[Any] = []
    for i in range(80):
        for a in lc.learn(reg_ex(i)):
            if isinstance(a, Register):
                latest["v"] = max(latest["v"], a.version)
            actions.append(a)
    rollback = next(a for a in actions if isinstance(a, Rollback))
    assert rollback.to == 2 and rollback.metrics["parent_mae"] == pytest.approx(1.0)
    assert rollback.metrics["prequential_mae"] > 1.1


@settings(max_examples=200, deadline=None)
@given(
    examples=st.integers(1, 6),
    labels=st.lists(st.sampled_from([True, False, 0, 1, 2, 2.5, "a", math.nan, -3.0]), max_size=14),
)
def test_every_example_comes_out_once_learnable_by_the_task_or_refused(examples: int, labels: list[Any]) -> None:
    g = gate(examples=examples)
    out: list[int] = []
    for i, y in enumerate(labels):
        try:
            ready, refused = g.offer((i, y))
        except LabelTaskMismatch:
            out.append(i)
            continue
        assert all(label_fits(g.task, item[1]) for item in ready) if g.task else not ready
        out += [item[0] for item in ready] + [item[0] for item, _ in refused]
    # Nothing is lost or repeated: what has not come out is still held.
    assert sorted(out) == sorted(set(out)) and len(out) + g.held == len(labels)


# --- operators and the bench see a regressor's errors ------------------------------------------------


def test_models_list_shows_a_regressors_mae_and_its_task() -> None:
    from driftloop.models_cli import list_rows
    from driftloop.shared.registry import Registry, version_record, with_status

    def rec(version: int, metrics: dict[str, float], task: str | None) -> dict[str, Any]:
        return version_record(
            name="m",
            version=version,
            status="champion",
            reason="r",
            artifact=("file:///s/v.pkl", "ab" * 32),
            parent=None,
            trigger="label_volume",
            window={"examples": 5},
            params={"spec": "linreg"},
            metrics=metrics,
            feature_set_version="fs1",
            code_version="t",
            now_ms=1,
            task=task,
        )

    reg = Registry()
    reg.apply(rec(1, {}, None))
    reg.apply(rec(2, {"prequential_mae": 1.5, "prequential_rmse": 2.0}, "regression"))
    judged = with_status(rec(3, {"prequential_mae": 1.25, "champion_mae": 1.5}, "regression"), "rejected", "x", 2)
    reg.apply(judged)
    reg.apply(rec(4, {"prequential_accuracy": 0.8125, "champion_accuracy": 0.75}, "multiclass"))
    rows = list_rows(reg, "m")
    assert [(r[5], r[6], r[7]) for r in rows] == [
        ("-", "-", "-"),
        ("mae 1.5", "-", "regression"),
        ("mae 1.25", "-0.25", "regression"),  # lower is better: a negative difference is a gain
        ("acc 0.812", "+0.062", "multiclass"),
    ]


def test_the_bench_reports_a_regression_by_its_errors() -> None:
    from driftloop.bench import bare_river, rows_for, task_of
    from driftloop.streams import Dataset

    trump = Dataset("trump", [(dict(x), y) for x, y in datasets.TrumpApproval()])
    assert task_of(trump) == REGRESSION
    figures, rate = bare_river(trump, "logreg", 42, 50)  # the default spec, in its regression form
    assert set(figures) == {"bare_river_mae", "bare_river_rmse"} and rate > 0
    assert figures["bare_river_mae"] is not None and 0 < figures["bare_river_mae"] < 5
    image = Dataset("image", IMAGE)
    figures, _ = bare_river(image, "logreg", 42, 50)
    assert task_of(image) == MULTICLASS and figures["bare_river_accuracy"] > 0.7
    regression_rows = {k for k, _ in rows_for(REGRESSION)}
    assert "served_mae" in regression_rows and "served_accuracy" not in regression_rows
    assert "served_accuracy" in {k for k, _ in rows_for(BINARY)} and "served_mae" not in {
        k for k, _ in rows_for(BINARY)
    }
