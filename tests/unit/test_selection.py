"""Online model selection: the rule, the CPU budget, failing families, the settings, the lifecycle."""

from __future__ import annotations

import doctest
import math
import pickle
import random
from typing import Any

import pytest

from driftloop.models_cli import list_rows
from driftloop.services.retraining import selection as selection_module
from driftloop.services.retraining.lifecycle import (
    CONTINUOUS,
    Lifecycle,
    Promote,
    PromotionRule,
    Register,
    RollbackRule,
)
from driftloop.services.retraining.selection import DROPPED, SUBSAMPLED, Selection
from driftloop.shared.errors import DEAD_LETTER_CODES, ConfigError, LearnerFailed
from driftloop.shared.modelspec import build_model, fixed_task, parse_specs
from driftloop.shared.registry import Registry, version_record
from driftloop.shared.settings import RetrainingSettings
from driftloop.streams import sea_stream


class Clock:
    """A clock the fake learners move: what each predict and learn costs is known exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Fake:
    """Answers the label leaked in ``x["y"]``, wrong on ``wrong`` of the example indices;
    each predict and learn moves ``clock`` by its cost; raises on the indices in ``raises``."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        predict_s: float = 0.0,
        learn_s: float = 0.0,
        wrong: Any = (),
        raises: Any = (),
        raises_on_learn: Any = (),
    ) -> None:
        self.clock = clock
        self.predict_s, self.learn_s = predict_s, learn_s
        self.wrong, self.raises, self.raises_on_learn = wrong, raises, raises_on_learn
        self.learned: list[int] = []

    def _tick(self, s: float) -> None:
        if self.clock is not None:
            self.clock.now += s

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        self._tick(self.predict_s)
        i = int(x["i"])
        if i in self.raises:
            raise ValueError(f"cannot take {i}")
        y = bool(x["y"]) != (i in self.wrong)
        return {y: 0.9, not y: 0.1}

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        self._tick(self.learn_s)
        if int(x["i"]) in self.raises_on_learn:
            raise ValueError("cannot learn it")
        self.learned.append(int(x["i"]))


def ex(i: int) -> dict[str, Any]:
    y = i % 3 == 0
    return {
        "event_id": f"e{i}",
        "event_time": i,  # one example per ms: 1,000 examples/s
        "features": {"i": float(i), "y": float(y)},
        "label": y,
        "feature_set_version": "fs1",
    }


def feed(sel: Selection, start: int, stop: int, gap_ms: int = 1) -> None:
    """Test then train, as the scoreboard does, one example every ``gap_ms``."""
    for i in range(start, stop):
        e = ex(i)
        sel.observe(i * gap_ms)
        sel.predict_proba_one(e["features"])
        sel.learn_one(e["features"], e["label"])


def every(n: int, of: int = 100) -> set[int]:
    """Indices ``i`` with ``i % of < n``: wrong on n of every ``of`` examples."""
    return {i for i in range(20_000) if i % of < n}


def no_build(spec: str) -> Any:
    raise AssertionError("no fresh model expected")


# --- the selection rule ------------------------------------------------------------------------


def test_the_better_family_leads_and_each_is_scored_on_the_same_examples() -> None:
    sel = Selection({"a": Fake(wrong=every(40)), "b": Fake(wrong=every(10))}, build=no_build, window=200)
    feed(sel, 0, 1000)
    st = sel.status()
    assert sel.leader == "b" and st.leader == "b" and st.family("b").leader and not st.family("a").leader
    assert st.family("a").score == pytest.approx(0.6) and st.family("b").score == pytest.approx(0.9)
    assert st.family("a").scored == st.family("b").scored == 200
    assert st.family("a").examples_learned == st.family("b").examples_learned == 1000
    assert st.metric == "accuracy" and st.examples == 1000


def test_the_leader_follows_the_recent_window() -> None:
    # a is better on the first 1,000 examples, b on the next: over a window of 200, b leads soon after.
    a_wrong = {i for i in range(2000) if (i < 1000 and i % 10 == 0) or (i >= 1000 and i % 10 < 4)}
    b_wrong = {i for i in range(2000) if (i < 1000 and i % 10 < 4) or (i >= 1000 and i % 10 == 0)}
    sel = Selection({"a": Fake(wrong=a_wrong), "b": Fake(wrong=b_wrong)}, build=no_build, window=200)
    feed(sel, 0, 1000)
    assert sel.leader == "a"
    feed(sel, 1000, 1110)
    assert sel.leader == "b"


def test_a_tie_goes_to_the_family_listed_first() -> None:
    sel = Selection({"x": Fake(wrong=every(20)), "y": Fake(wrong=every(20))}, build=no_build, window=100)
    feed(sel, 0, 300)
    assert sel.leader == "x"
    sel = Selection({"y": Fake(wrong=every(20)), "x": Fake(wrong=every(20))}, build=no_build, window=100)
    feed(sel, 0, 300)
    assert sel.leader == "y"


def test_a_regressor_selection_is_scored_by_mae() -> None:
    class Offset:
        def __init__(self, off: float) -> None:
            self.off = off

        def predict_one(self, x: dict[str, float]) -> float:
            return x["v"] + self.off

        def learn_one(self, x: dict[str, float], y: float) -> None:
            pass

    from river import base

    class Reg(Offset, base.Regressor):
        pass

    sel = Selection({"far": Reg(2.0), "near": Reg(-0.5)}, build=no_build, window=50)
    for i in range(100):
        x = {"v": float(i)}
        sel.predict_one(x)
        sel.learn_one(x, float(i))
    assert sel.regression and sel.leader == "near"
    assert sel.score("near") == (50, pytest.approx(0.5), pytest.approx(0.5))
    assert sel.status().metric == "mae"


def test_river_families_a_tree_beats_a_line_where_no_line_fits() -> None:
    rng = random.Random(7)
    sel = Selection({s: build_model(s, 42) for s in ("logreg", "hat")}, build=lambda s: build_model(s, 42), window=500)
    for _ in range(1500):
        x = {"a": rng.random(), "b": rng.random()}
        y = 0.3 < x["a"] < 0.7  # a band: no line does better than the majority class
        sel.predict_proba_one(x)
        sel.learn_one(x, y)
    n, hat, _ = sel.score("hat")
    _, logreg, _ = sel.score("logreg")
    assert n == 500 and hat is not None and logreg is not None and hat > logreg + 0.2
    assert sel.leader == "hat"


def test_the_docstring_example_runs() -> None:
    result = doctest.testmod(selection_module)
    assert result.attempted > 0 and result.failed == 0


# --- the CPU budget ----------------------------------------------------------------------------

# Costs per example in seconds (predict, learn): 10, 100 and 1,000 microseconds in all.
CHEAP, MID, DEAR = (1e-6, 9e-6), (10e-6, 90e-6), (100e-6, 900e-6)


def budgeted(budget: float | None, **kw: Any) -> tuple[Selection, dict[str, Fake]]:
    clock = Clock()
    fakes = {
        name: Fake(clock, predict_s=p, learn_s=lrn)
        for name, (p, lrn) in (("logreg", CHEAP), ("hat", MID), ("arf", DEAR))
    }
    # Listed dearest first: the plan goes by cost, not by list order.
    order = ("arf", "hat", "logreg")
    kw.setdefault("max_stride", 8)
    sel = Selection({k: fakes[k] for k in order}, build=no_build, cpu_budget=budget, clock=clock, **kw)
    return sel, fakes


@pytest.mark.parametrize(
    ("budget", "strides", "states"),
    [
        # 1,000 examples/s: 1 s of one core per 1,000 examples, so budget x 1,000 us per example.
        # 1.0: 1,000 us, less logreg's 10 and hat's 100, leaves 890: arf predicts (100) and
        # learns every 2nd example (450).
        (1.0, {"logreg": 1, "hat": 1, "arf": 2}, {"arf": SUBSAMPLED}),
        # 0.5: 390 left, 290 after arf's predict; 900 / 290 = 3.1: every 4th.
        (0.5, {"logreg": 1, "hat": 1, "arf": 4}, {"arf": SUBSAMPLED}),
        # 0.25: 140 left, 40 after predict; every 23rd would fit, beyond the maximum stride 8.
        (0.25, {"logreg": 1, "hat": 1, "arf": 1}, {"arf": DROPPED}),
        # 0.05: 40 left after logreg, 30 after hat's predict: hat learns every 3rd; nothing is left for arf.
        (0.05, {"logreg": 1, "hat": 3, "arf": 1}, {"hat": SUBSAMPLED, "arf": DROPPED}),
        # 0.001: 1 us, not even logreg's 10: the cheapest always learns every example.
        (0.001, {"logreg": 1, "hat": 1, "arf": 1}, {"hat": DROPPED, "arf": DROPPED}),
    ],
)
def test_the_budget_subsamples_then_drops_the_expensive_families(
    budget: float, strides: dict[str, int], states: dict[str, str]
) -> None:
    sel, fakes = budgeted(budget, rate_window=100, replan_every=100)
    feed(sel, 0, 100)  # the first plan, at 100 examples: costs and rate measured
    st = sel.status()
    assert st.rate == pytest.approx(99 / 0.099)  # 100 examples over 99 ms
    assert {f.spec: f.stride for f in st.families} == strides
    assert {f.spec: f.state for f in st.families if f.state != "active"} == states
    assert st.family("arf").predict_s == pytest.approx(100e-6) and st.family("arf").learn_s == pytest.approx(900e-6)
    before = {k: len(f.learned) for k, f in fakes.items()}
    feed(sel, 100, 200)
    for spec, f in fakes.items():
        learned = len(f.learned) - before[spec]
        if states.get(spec) == DROPPED:
            assert learned == 0
        else:
            assert learned == math.ceil(100 / strides[spec])
    share = sel.status().cpu_share
    assert share is not None
    if budget >= 0.05:
        assert share <= budget * 1.01  # fits, within the rate's 99/100


def test_a_subsampled_family_is_still_scored_on_every_example() -> None:
    sel, fakes = budgeted(0.5, rate_window=100, replan_every=100, window=100)
    feed(sel, 0, 300)
    st = sel.status().family("arf")
    assert st.stride == 4 and st.scored == 100
    assert fakes["arf"].learned[-3:] == [288, 292, 296]  # the plan at 100: from example 100 on, every 4th


def test_one_family_alone_is_never_subsampled_nor_dropped() -> None:
    clock = Clock()
    arf = Fake(clock, predict_s=DEAR[0], learn_s=DEAR[1])
    sel = Selection({"arf": arf}, build=no_build, cpu_budget=0.01, clock=clock, rate_window=100, replan_every=100)
    feed(sel, 0, 500)
    st = sel.status().family("arf")
    assert st.stride == 1 and st.state == "active" and len(arf.learned) == 500


def test_no_budget_until_the_rate_is_measured() -> None:
    sel, fakes = budgeted(0.25, rate_window=1000, replan_every=100)
    feed(sel, 0, 900)
    assert sel.rate is None and all(f.stride == 1 for f in sel.status().families)
    assert len(fakes["arf"].learned) == 900
    feed(sel, 900, 1000)
    assert sel.status().family("arf").state == DROPPED


def test_the_rate_holds_when_a_consumer_takes_each_partitions_examples_in_runs() -> None:
    # 1,000 examples/s over 4 partitions, handled 100 of one partition at a time: the latest
    # 100 examples span 400 ms, which read 250 examples/s; the newest time advances as the stream.
    sel = Selection({"a": Fake(), "b": Fake()}, build=no_build, cpu_budget=0.5, rate_window=100, replan_every=100)
    order = [r * 400 + p + 4 * k for r in range(10) for p in range(4) for k in range(100)]
    for i in order:
        e = ex(i)
        sel.observe(e["event_time"])
        sel.predict_proba_one(e["features"])
        sel.learn_one(e["features"], e["label"])
        if sel.examples % 400 == 0:
            assert sel.rate == pytest.approx(1000, rel=0.01), sel.examples


def test_a_dropped_family_is_readmitted_when_the_rate_falls() -> None:
    sel, fakes = budgeted(0.5, rate_window=100, replan_every=100, max_stride=2)
    feed(sel, 0, 100)
    assert sel.status().family("arf").state == DROPPED  # every 4th would fit; at most every 2nd
    learned = len(fakes["arf"].learned)
    feed(sel, 100, 300, gap_ms=4)  # 250 examples/s: 2,000 us per example
    st = sel.status().family("arf")
    assert st.state == "active" and st.stride == 1 and len(fakes["arf"].learned) > learned


def test_a_dropped_family_is_tried_again_and_dropped_again_if_it_still_does_not_fit() -> None:
    sel, fakes = budgeted(0.25, rate_window=100, replan_every=100)
    feed(sel, 0, 100)
    assert sel.status().family("arf").state == DROPPED
    # Its cost is discounted 5% a plan: after 9 plans, 0.63 of it fits every 8th example.
    feed(sel, 100, 900)
    assert sel.status().family("arf").state == DROPPED
    feed(sel, 900, 1000)
    st = sel.status().family("arf")
    assert st.state == SUBSAMPLED and st.stride == 8 and st.predict_s is None  # measured afresh
    learned = len(fakes["arf"].learned)
    feed(sel, 1000, 1100)
    st = sel.status().family("arf")
    assert st.state == DROPPED and st.predict_s == pytest.approx(100e-6)
    assert len(fakes["arf"].learned) - learned == 13  # every 8th of 100 meanwhile


def test_a_dropped_family_is_not_cut() -> None:
    clock = Clock()
    # arf is the better family but far too dear for the budget: logreg is cut.
    sel = Selection(
        {
            "logreg": Fake(clock, predict_s=CHEAP[0], learn_s=CHEAP[1], wrong=every(30)),
            "arf": Fake(clock, predict_s=DEAR[0], learn_s=DEAR[1]),
        },
        build=no_build,
        cpu_budget=0.1,
        clock=clock,
        rate_window=100,
        replan_every=100,
    )
    feed(sel, 0, 99)
    assert sel.leader == "arf"
    feed(sel, 99, 100)
    assert sel.status().family("arf").state == DROPPED and sel.leader == "logreg"


# --- a family that fails -----------------------------------------------------------------------


def test_a_failing_family_is_counted_and_the_others_carry_on() -> None:
    bad = {5, 17, 18}
    fragile = Fake(raises=bad, raises_on_learn={30})
    steady = Fake(wrong=every(20))
    sel = Selection({"fragile": fragile, "steady": steady}, build=no_build, window=100)
    seen: dict[int, tuple[str, ...]] = {}
    for i in range(60):
        e = ex(i)
        sel.predict_proba_one(e["features"])
        sel.learn_one(e["features"], e["label"])
        if sel.last_failures:
            seen[i] = tuple(f"{f.spec}:{f.stage}" for f in sel.last_failures)
            assert all(isinstance(f.error, LearnerFailed) for f in sel.last_failures)
    assert seen == {5: ("fragile:predict",), 17: ("fragile:predict",), 18: ("fragile:predict",), 30: ("fragile:learn",)}
    assert sel.failures == {"fragile": 4, "steady": 0}
    assert len(steady.learned) == 60 and len(fragile.learned) == 60 - 4
    st = sel.status().family("fragile")
    assert st.failures == 4 and st.failures_in_window == 4 and st.scored == 57  # a learn failure is still scored
    # fragile is right on every example it answered, steady wrong on 20%: failures rank first.
    assert sel.leader == "steady"
    failure = sel.failures and LearnerFailed("x")
    assert failure and failure.code == "learner_failed" and "learner_failed" in DEAD_LETTER_CODES


def test_a_failure_leaves_the_window_and_then_counts_no_more() -> None:
    sel = Selection({"fragile": Fake(raises={3}), "steady": Fake(wrong=every(20))}, build=no_build, window=50)
    feed(sel, 0, 40)
    assert sel.leader == "steady"
    feed(sel, 40, 60)
    assert sel.leader == "fragile" and sel.status().family("fragile").failures_in_window == 0


def test_a_failing_only_family_abstains_and_the_lifecycle_carries_on() -> None:
    sel = Selection({"only": Fake(raises=set(range(10)))}, build=no_build, window=100)
    assert sel.predict_proba_one(ex(1)["features"]) == {}
    sel.learn_one(ex(1)["features"], True)
    assert sel.failures == {"only": 1}


def test_a_non_finite_prediction_of_a_regressor_is_a_failure() -> None:
    from river import base

    class Blows(base.Regressor):
        def predict_one(self, x: dict[str, float]) -> float:
            return math.inf if x["v"] == 3 else x["v"]

        def learn_one(self, x: dict[str, float], y: float) -> None:
            pass

    sel = Selection({"blows": Blows()}, build=no_build, window=10)
    for i in range(5):
        sel.learn_one({"v": float(i)}, float(i))  # learn_one alone predicts first
    assert sel.failures == {"blows": 1} and sel.score("blows")[0] == 4


# --- bad settings and arguments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MODEL_SPECS", "logreg,xgboost", "unknown model spec 'xgboost'"),
        ("MODEL_SPECS", "hat,hatr", "model family hat listed twice"),
        ("MODEL_SPECS", "logreg,,arf", "an empty entry"),
        ("CPU_BUDGET", "0", "a share of one core"),
        ("CPU_BUDGET", "1.5", "a share of one core"),
        ("CPU_BUDGET", "nan", "a share of one core"),
        ("MAX_STRIDE", "0", "MAX_STRIDE=0"),
    ],
)
def test_bad_selection_settings_are_one_line_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(f"DRIFTLOOP_RETRAINING_{name}", value)
    with pytest.raises(ConfigError) as err:
        RetrainingSettings()
    assert says in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"DRIFTLOOP_RETRAINING_{name}=")


def test_selection_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_SPECS", "MODEL_SPEC", "CPU_BUDGET", "MAX_STRIDE"):
        monkeypatch.delenv(f"DRIFTLOOP_RETRAINING_{name}", raising=False)
    s = RetrainingSettings()
    assert s.specs == ["logreg"] and s.cpu_budget == 0.25 and s.max_stride == 3
    monkeypatch.setenv("DRIFTLOOP_RETRAINING_MODEL_SPEC", "hat")
    assert RetrainingSettings().specs == ["hat"]  # unset: model_spec alone, as before
    monkeypatch.setenv("DRIFTLOOP_RETRAINING_MODEL_SPECS", " logreg, hat ,arf ")
    monkeypatch.setenv("DRIFTLOOP_RETRAINING_CPU_BUDGET", "0.25")
    s = RetrainingSettings()
    assert s.specs == ["logreg", "hat", "arf"] and s.cpu_budget == 0.25


def test_spec_lists_and_their_task() -> None:
    assert parse_specs("") == [] and parse_specs("linreg,arf") == ["linreg", "arf"]
    assert fixed_task(["linreg", "arfr"], "auto") == "regression"
    assert fixed_task(["linreg", "arf"], "auto") is None  # a classifier among them: the labels tell
    assert fixed_task(["logreg"], "binary") == "binary"


@pytest.mark.parametrize(
    "kw",
    [{"cpu_budget": 0.0}, {"cpu_budget": 2.0}, {"max_stride": 0}, {"window": 0}, {"smoothing": 0.0}],
)
def test_bad_selection_arguments(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Selection({"a": Fake()}, build=no_build, **kw)


def test_classifiers_and_regressors_do_not_mix() -> None:
    with pytest.raises(ConfigError, match="mix classifiers and regressors"):
        Selection({"logreg": build_model("logreg", 1), "linreg": build_model("linreg", 1)}, build=no_build)
    with pytest.raises(ConfigError):
        Selection({}, build=no_build)


# --- in the lifecycle --------------------------------------------------------------------------


def counter() -> Any:
    state = {"latest": 1}

    def next_version() -> int:
        return state["latest"] + 1

    def seen(actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Register):
                state["latest"] = max(state["latest"], a.version)

    return next_version, seen


def sea(n: int) -> list[dict[str, Any]]:
    return [
        {"event_id": str(i), "event_time": i, "features": x, "label": y, "feature_set_version": "fs1"}
        for i, (x, y) in enumerate(sea_stream(n, seed=3).rows)
    ]


def drive(lc: Lifecycle, seen: Any, examples: list[dict[str, Any]]) -> list[Any]:
    out = []
    for e in examples:
        actions = lc.learn(e)
        seen(actions)
        out += actions
    return out


def test_one_family_in_a_selection_decides_as_the_bare_learner() -> None:
    examples = sea(2500)
    kw: dict[str, Any] = {"version_every": 300, "first_version_after": 200, "window": 300}
    kw |= {"challenger_buffer": 0}
    nv1, seen1 = counter()
    bare = Lifecycle(build_model("logreg", 42), build=lambda: build_model("logreg", 42), next_version=nv1, **kw)
    nv2, seen2 = counter()
    sel = Selection({"logreg": build_model("logreg", 42)}, build=lambda s: build_model(s, 42), window=300)
    one = Lifecycle(sel, build=lambda: build_model("logreg", 42), next_version=nv2, **kw)
    a, b = drive(bare, seen1, examples), drive(one, seen2, examples)

    def view(x: Any) -> tuple[Any, ...]:
        fields = {k: v for k, v in vars(x).items() if k not in ("model", "spec")}
        return (type(x).__name__, sorted(fields.items()))

    assert [view(x) for x in a] == [view(x) for x in b] and len(a) > 5
    assert any(isinstance(x, Promote) for x in a)
    assert all(x.spec == "logreg" for x in b if isinstance(x, Register))
    assert all(x.spec is None for x in a if isinstance(x, Register))
    assert bare.selection_status() is None and one.selection_status() is not None
    assert one.scoreboard.score(CONTINUOUS) == bare.scoreboard.score(CONTINUOUS)


def test_the_cut_takes_the_leading_family_and_names_it() -> None:
    nv, seen = counter()
    sel = Selection({"a": Fake(wrong=every(40)), "b": Fake(wrong=every(10))}, build=no_build, window=200)
    lc = Lifecycle(sel, build=no_build, next_version=nv, version_every=300, first_version_after=200, window=300)
    actions = drive(lc, seen, [ex(i) for i in range(200)])
    (reg,) = actions
    assert isinstance(reg, Register) and reg.direct and reg.spec == "b" and reg.model is not sel.model("b")
    assert reg.metrics["prequential_accuracy"] == pytest.approx(0.9) and reg.metrics["evaluation_examples"] == 200
    assert "family b, the best of 2 (accuracy over the last 200 examples: a 0.600, b 0.900)" in reg.reason
    assert lc.selection_status() == sel.status()


def test_a_drift_challenger_is_of_the_leading_family_and_takes_its_place() -> None:
    built: list[str] = []

    def build(spec: str) -> Fake:
        built.append(spec)
        return Fake()  # always right: it wins its evaluation

    nv, seen = counter()
    sel = Selection({"a": Fake(wrong=every(30)), "b": Fake(wrong=every(20))}, build=build, window=200)
    lc = Lifecycle(
        sel,
        build=no_build,
        next_version=nv,
        version_every=10_000,
        first_version_after=200,
        window=300,
        challenger_takes_over=True,
        promotion=None,
    )
    drive(lc, seen, [ex(i) for i in range(250)])
    (reg,) = lc.on_drift("a1")
    seen([reg])
    assert built == ["b"] and reg.spec == "b" and "challenger of family b" in reg.reason
    challenger = lc.scoreboard.model("challenger:a1")
    promoted = [a for a in drive(lc, seen, [ex(i) for i in range(250, 500)]) if isinstance(a, Promote)]
    assert [p.version for p in promoted] == [reg.version]
    assert sel.model("b") is challenger and "challenger:a1" not in lc.contenders


def test_through_the_lifecycle_a_failing_family_is_listed_for_the_shell() -> None:
    nv, seen = counter()
    sel = Selection({"fragile": Fake(raises={7}), "steady": Fake()}, build=no_build, window=100)
    lc = Lifecycle(sel, build=no_build, next_version=nv, version_every=300, first_version_after=200, window=300)
    for i in range(10):
        seen(lc.learn(ex(i)))
        failed = lc.selection.last_failures if lc.selection is not None else ()
        assert [(f.spec, f.stage, f.error.code) for f in failed] == (
            [("fragile", "predict", "learner_failed")] if i == 7 else []
        )
    assert lc.examples_seen == 10 and sel.failures == {"fragile": 1, "steady": 0}


def test_a_cut_family_that_later_fails_is_scored_a_miss_as_served_and_stops_nothing() -> None:
    # fragile leads and is cut (the champion directly at 200, then a candidate at 220); at 250 it raises, and
    # so do its frozen copies on the scoreboard (the candidate and the champion as registered).
    nv, seen = counter()
    sel = Selection({"fragile": Fake(raises={250}), "steady": Fake(wrong=every(20))}, build=no_build, window=100)
    lc = Lifecycle(
        sel,
        build=no_build,
        next_version=nv,
        version_every=20,
        first_version_after=200,
        window=100,
        promotion=PromotionRule(0.01, 100),
        rollback=RollbackRule(100, 0.02),
    )
    registered = [a for a in drive(lc, seen, [ex(i) for i in range(240)]) if isinstance(a, Register)]
    assert [(r.direct, r.spec) for r in registered] == [(True, "fragile"), (False, "fragile")]
    drive(lc, seen, [ex(i) for i in range(240, 260)])
    assert lc.examples_seen == 260 and sel.failures == {"fragile": 1, "steady": 0}
    v = registered[1].version
    served = lc.scoreboard.score(f"served-v{v}")  # scored from the cut on: 40 examples, one a miss
    assert served.examples == 40 and served.accuracy == pytest.approx(39 / 40)
    assert lc.scoreboard.score(f"champion-for-v{v}") == served
    assert sel.model("steady").learned[-1] == 259 and 250 not in sel.model("fragile").learned


# --- the registry shows each version's family -------------------------------------------------------


def test_models_list_shows_each_versions_family() -> None:
    def rec(version: int, spec: str | None) -> dict[str, Any]:
        return version_record(
            name="m",
            version=version,
            status="champion",
            reason="r",
            artifact=("file:///s/v.pkl", "ab" * 32),
            parent=None,
            trigger="label_volume",
            window={"examples": 5},
            params={} if spec is None else {"spec": spec, "trained": "true"},
            metrics={},
            feature_set_version="fs1",
            code_version="t",
            now_ms=1,
        )

    reg = Registry()
    for version, spec in ((1, "logreg"), (2, "arf"), (3, None)):
        reg.apply(rec(version, spec))
    assert [r[8] for r in list_rows(reg, "m")] == ["logreg", "arf", "-"]


# --- frozen versions share the model as registered ----------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "task"),
    [
        ("logreg", "binary"),
        ("hat", "binary"),
        ("arf", "binary"),
        ("logreg", "multiclass"),
        ("hat", "multiclass"),
        ("linreg", "regression"),
        ("hatr", "regression"),
        ("arfr", "regression"),
    ],
)
def test_predicting_never_changes_a_model_of_any_family(spec: str, task: str) -> None:
    # What lets the lifecycle's frozen entries share one model object instead of copies of it.
    rows = sea_stream(600, seed=5).rows
    model = build_model(spec, 42, task)

    def label(x: dict[str, float], y: bool) -> Any:
        return {"binary": y, "multiclass": str(int(x["x0"]) % 3), "regression": x["x0"] + x["x1"]}[task]

    for x, y in rows[:400]:
        model.learn_one(x, label(x, y))
    before = pickle.dumps(model)
    for x, _ in rows[400:]:
        model.predict_one(x) if task == "regression" else model.predict_proba_one(x)
    assert pickle.dumps(model) == before


def test_a_versions_frozen_entries_share_the_model_registered() -> None:
    nv, seen = counter()
    counted: list[int] = []

    class Counted(Fake):
        def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
            counted.append(int(x["i"]))
            return super().predict_proba_one(x)

    sel = Selection({"a": Counted()}, build=no_build, window=100)
    lc = Lifecycle(sel, build=no_build, next_version=nv, version_every=20, first_version_after=200, window=300)
    registered = [a for a in drive(lc, seen, [ex(i) for i in range(220)]) if isinstance(a, Register)]
    first, second = registered
    assert lc.scoreboard.model(f"served-v{second.version}") is second.model
    assert lc.scoreboard.model(f"champion-for-v{second.version}") is first.model
    assert second.model is not sel.model("a") and first.model is not second.model
    counted.clear()
    drive(lc, seen, [ex(220)])
    # The learner, the candidate and the champion as registered: three models, each predicts once.
    assert counted == [220, 220, 220]
