"""The lifecycle core: prequential scoreboard, promotion and rollback rules, triggers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from driftloop.services.retraining.lifecycle import (
    CONTINUOUS,
    PARENT,
    Comparison,
    Lifecycle,
    Promote,
    PromotionRule,
    Register,
    Reject,
    Rollback,
    RollbackRule,
    ScheduleTrigger,
    Scoreboard,
)
from driftloop.shared.errors import ConfigError
from driftloop.shared.modelspec import build_model, predict, same_class
from driftloop.streams import sea_stream


class Rule:
    """Answers the label leaked in ``x["y"]``, except on the example indices in ``wrong``;
    counts what it learned. Its accuracy on any stretch of examples is known exactly."""

    def __init__(self, wrong: set[int] | None = None) -> None:
        self.wrong = wrong or set()
        self.learned = 0

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        y = bool(x["y"])
        if int(x["i"]) in self.wrong:
            y = not y
        return {y: 0.8, not y: 0.2}

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        self.learned += 1


def ex(i: int, t: int | None = None) -> dict[str, Any]:
    y = i % 3 == 0
    return {
        "event_id": f"e{i}",
        "event_time": 1_000 * i if t is None else t,
        "features": {"i": float(i), "y": float(y)},
        "label": y,
        "feature_set_version": "fs1",
    }


def counter(start: int = 1) -> Any:
    """next_version as the registry would answer it: one past the highest version seen."""
    state = {"latest": start}

    def next_version() -> int:
        return state["latest"] + 1

    def seen(actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Register):
                state["latest"] = max(state["latest"], a.version)

    return next_version, seen


def run(lc: Lifecycle, seen: Any, start: int, stop: int) -> list[tuple[int, Any]]:
    out = []
    for i in range(start, stop):
        actions = lc.learn(ex(i))
        seen(actions)
        out += [(i, a) for a in actions]
    return out


def lifecycle(champion: Any, continuous: Any, **kw: Any) -> tuple[Lifecycle, Any]:
    nv, seen = counter()
    params = {
        "promotion": PromotionRule(margin=0.05, min_examples=20),
        "rollback": RollbackRule(window=20, margin=0.05),
        "version_every": 10,
        "window": 50,
        "build": Rule,
    }
    params.update(kw)
    lc = Lifecycle(continuous, next_version=nv, champion=champion, champion_version=1, **params)
    return lc, seen


def comparison(n: int, acc: float, ref: float) -> Comparison:
    return Comparison(n, acc, ref, 0.3, 0.4)


# --- Scoreboard ----------------------------------------------------------------------------------


def test_scoreboard_scores_before_learning() -> None:
    class Memo:
        """Predicts the last label it learned: right only if it is scored before learning."""

        def __init__(self) -> None:
            self.last: Any = None

        def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
            return {} if self.last is None else {self.last: 1.0}

        def learn_one(self, x: dict[str, float], y: Any) -> None:
            self.last = y

    board = Scoreboard(window=10)
    board.add("m", Memo())
    for y in (True, False, True, False):
        board.learn_one({}, y)
    score = board.score("m")
    assert score.examples == 4 and score.accuracy == 0.0  # always the previous, alternating label
    assert score.log_loss == pytest.approx(-math.log(1e-15))  # probability 0 for the true class, capped


def test_scoreboard_compares_on_the_common_rolling_window() -> None:
    board = Scoreboard(window=5)
    board.add("a", Rule())
    for i in range(3):
        board.learn_one(ex(i)["features"], ex(i)["label"])
    board.add("b", Rule(wrong={3, 4}))
    assert board.common("b", "a") == 0
    assert board.compare("b", "a").examples == 0 and math.isnan(board.compare("b", "a").accuracy)
    for i in range(3, 10):
        board.learn_one(ex(i)["features"], ex(i)["label"])
    assert board.score("a").examples == 5  # the window
    c = board.compare("b", "a")
    assert (c.examples, c.accuracy, c.reference_accuracy) == (5, 1.0, 1.0)  # 3, 4 left the window
    assert board.compare("b", "a", since=8).examples == board.common("b", "a", since=8) == 3  # seqs 8..10
    assert c.log_loss == pytest.approx(-math.log(0.8)) and c.gain == 0.0


def test_scoreboard_fork_and_rename_keep_history() -> None:
    board = Scoreboard(window=10)
    board.add("a", Rule(wrong={0}))
    board.learn_one(ex(0)["features"], ex(0)["label"])
    board.fork("a", "b")
    board.rename("a", "c")
    assert board.keys == ["b", "c"]
    assert board.score("b") == board.score("c") and board.score("b").accuracy == 0.0
    assert board.model("b") is not board.model("c")
    with pytest.raises(KeyError):
        board.add("b", Rule())
    with pytest.raises(ConfigError):
        Scoreboard(0)


def test_scoreboard_swap_serves_another_model_in_the_same_series() -> None:
    board = Scoreboard(window=10)
    board.add("served", Rule(wrong={0, 1}), frozen=True)
    board.add("ref", Rule(), frozen=True)
    for i in range(2):
        board.learn_one(ex(i)["features"], ex(i)["label"])
    replacement = Rule(wrong={2})
    board.swap("served", replacement)
    for i in range(2, 4):
        board.learn_one(ex(i)["features"], ex(i)["label"])
    assert board.model("served") is replacement and replacement.learned == 0  # still frozen
    c = board.compare("served", "ref")
    assert (c.examples, c.accuracy) == (4, 0.25)  # wrong on 0, 1 (the first model) and 2 (the second)


# --- PromotionRule -------------------------------------------------------------------------------


def test_promote_when_better_by_the_margin_with_enough_evidence() -> None:
    rule = PromotionRule(margin=0.02, min_examples=200)
    v = rule.decide(comparison(200, 0.93, 0.90))
    assert v.action == "promote"
    assert "0.930" in v.reason and "0.900" in v.reason and "200 examples" in v.reason


def test_a_gain_of_exactly_the_margin_promotes() -> None:
    assert PromotionRule(margin=0.01, min_examples=100).decide(comparison(100, 0.935, 0.925)).action == "promote"


def test_no_promotion_below_the_margin() -> None:
    rule = PromotionRule(margin=0.02, min_examples=200)
    v = rule.decide(comparison(400, 0.915, 0.90))
    assert v.action == "reject" and "not better" in v.reason
    assert rule.decide(comparison(400, 0.85, 0.90)).action == "reject"


def test_no_promotion_with_too_little_evidence() -> None:
    rule = PromotionRule(margin=0.02, min_examples=200)
    v = rule.decide(comparison(199, 1.0, 0.5))
    assert v.action == "wait" and "199 of 200" in v.reason


@pytest.mark.parametrize("margin", [0.0, 0.01])
def test_a_tie_never_promotes(margin: float) -> None:
    assert PromotionRule(margin=margin, min_examples=10).decide(comparison(10, 0.9, 0.9)).action == "reject"


def test_margin_zero_promotes_any_strict_gain() -> None:
    assert PromotionRule(margin=0.0, min_examples=10).decide(comparison(10, 0.91, 0.9)).action == "promote"


@pytest.mark.parametrize("kw", [{"margin": -0.1}, {"min_examples": 0}])
def test_promotion_rule_parameters_are_checked(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        PromotionRule(**kw)  # type: ignore[arg-type]


# --- RollbackRule --------------------------------------------------------------------------------


def test_rollback_when_worse_than_the_parent_over_the_window() -> None:
    v = RollbackRule(window=300, margin=0.02).decide(comparison(300, 0.85, 0.90))
    assert v.action == "rollback" and "0.850" in v.reason and "0.900" in v.reason


def test_no_rollback_when_not_worse_or_within_the_margin() -> None:
    rule = RollbackRule(window=300, margin=0.02)
    assert rule.decide(comparison(300, 0.95, 0.90)).action == "keep"
    assert rule.decide(comparison(300, 0.885, 0.90)).action == "keep"  # worse, but within the margin
    assert rule.decide(comparison(300, 0.88, 0.90)).action == "keep"  # exactly the margin is not more
    assert rule.decide(comparison(300, 0.90, 0.90)).action == "keep"  # a tie keeps the new champion


def test_rollback_waits_for_the_window() -> None:
    assert RollbackRule(window=300, margin=0.0).decide(comparison(299, 0.1, 0.9)).action == "wait"


def test_rollback_rule_parameters_are_checked() -> None:
    with pytest.raises(ConfigError):
        RollbackRule(window=0)
    with pytest.raises(ConfigError):
        RollbackRule(margin=-1)


# --- ScheduleTrigger -----------------------------------------------------------------------------


def test_schedule_trigger_runs_on_event_time() -> None:
    s = ScheduleTrigger(60)
    assert not s.due(1_000_000)  # starts the clock
    assert not s.due(1_059_999)
    assert s.due(1_060_000)
    s.reset(1_060_000)
    assert not s.due(1_100_000)
    assert s.due(1_120_000)
    off = ScheduleTrigger(0)
    assert not any(off.due(t) for t in (0, 10**12))


# --- Lifecycle -----------------------------------------------------------------------------------


def test_first_trained_version_is_registered_as_champion_directly() -> None:
    nv, seen = counter()
    lc = Lifecycle(Rule(), next_version=nv, build=Rule, first_version_after=5, version_every=10, window=1000)
    assert lc.champion_version is None and lc.contenders == [CONTINUOUS]
    actions = run(lc, seen, 0, 5)
    assert [(i, a.version, a.direct, a.trigger) for i, a in actions] == [(4, 2, True, "label_volume")]
    first = actions[0][1]
    assert first.window["examples"] == 5 and (first.window["first_event_id"], first.window["last_event_id"]) == (
        "e0",
        "e4",
    )
    assert "first trained version" in first.reason
    assert lc.champion_version == 2 and lc.contenders == [CONTINUOUS]  # nothing pending, nothing to compare
    # Drift alerts before a trained champion exists spawn nothing.
    nv2, _ = counter()
    assert Lifecycle(Rule(), next_version=nv2, build=Rule).on_drift("a1") == []


def test_candidate_promoted_when_better_by_the_margin() -> None:
    champion = Rule(wrong=set(range(10, 100, 5)))  # 20% wrong from example 10 on
    lc, seen = lifecycle(champion, Rule())
    actions = run(lc, seen, 0, 30)
    registered = [a for _, a in actions if isinstance(a, Register)]
    assert registered[0].version == 2 and not registered[0].direct and registered[0].trigger == "label_volume"
    assert lc.pending == {CONTINUOUS: 3}  # the next cut came with the decision: 20 examples were waiting
    promoted = [(i, a) for i, a in actions if isinstance(a, Promote)]
    assert [(i, a.version, a.replaces) for i, a in promoted] == [(29, 2, 1)]  # 20 examples after its cut at 9
    assert promoted[0][1].metrics["prequential_accuracy"] == 1.0
    assert promoted[0][1].metrics["champion_accuracy"] == pytest.approx(0.8)
    assert "promoted over v1" in promoted[0][1].reason
    assert lc.champion_version == 2 and lc.watching == (2, 1) and PARENT in lc.contenders


def test_candidate_rejected_below_the_margin_with_its_figures() -> None:
    lc, seen = lifecycle(Rule(wrong={15}), Rule())  # champion 1 wrong in 20: a gain of 0.05 is needed, 0.05 made
    lc2, seen2 = lifecycle(Rule(wrong={15}), Rule(wrong={20}))  # a tie
    assert any(isinstance(a, Promote) for _, a in run(lc, seen, 0, 30))
    rejected = [a for _, a in run(lc2, seen2, 0, 30) if isinstance(a, Reject)]
    assert [r.version for r in rejected] == [2]
    assert "rejected against champion v1" in rejected[0].reason and "+0.000" in rejected[0].reason
    assert lc2.champion_version == 1 and lc2.pending == {CONTINUOUS: 3}


def test_no_decision_before_min_examples() -> None:
    lc, seen = lifecycle(Rule(wrong=set(range(100))), Rule())
    actions = run(lc, seen, 0, 28)
    assert [type(a) for _, a in actions] == [Register]  # the cut due at 19 waits for the pending candidate
    assert lc.pending == {CONTINUOUS: 2} and lc.champion_version == 1


def test_one_continuous_candidate_at_a_time_and_the_count_carries_on() -> None:
    lc, seen = lifecycle(Rule(), Rule())  # ties: every candidate rejected after 20 examples
    cuts = [(i, a.version) for i, a in run(lc, seen, 0, 75) if isinstance(a, Register)]
    # Cut at 9; pending until 29 (rejected), then cut at once: 20 examples were waiting.
    assert cuts == [(9, 2), (29, 3), (49, 4), (69, 5)]


def test_automatic_rollback_when_the_new_champion_does_worse_than_its_parent() -> None:
    # The continuous learner is better until its promotion at 29, then wrong on a third.
    lc, seen = lifecycle(Rule(wrong=set(range(10, 30, 2))), Rule(wrong=set(range(30, 60, 3))))
    actions = run(lc, seen, 0, 60)
    kinds = [(i, type(a).__name__, a.version) for i, a in actions if not isinstance(a, Register)]
    assert (29, "Promote", 2) in kinds
    rollback = [a for _, a in actions if isinstance(a, Rollback)]
    assert len(rollback) == 1 and (rollback[0].version, rollback[0].to) == (2, 1)
    assert [i for i, a in actions if isinstance(a, Rollback)] == [49]  # the window: 20 examples after 29
    assert "rolled back to v1" in rollback[0].reason and "0.650" in rollback[0].reason
    assert rollback[0].metrics["parent_accuracy"] == 1.0
    assert lc.champion_version == 1 and lc.watching is None and PARENT not in lc.contenders


def test_no_rollback_when_the_new_champion_holds_up() -> None:
    lc, seen = lifecycle(Rule(wrong=set(range(10, 30, 2))), Rule())
    actions = run(lc, seen, 0, 60)
    assert not any(isinstance(a, Rollback) for _, a in actions)
    assert lc.champion_version == 2 and lc.watching is None and PARENT not in lc.contenders


class Stale(Rule):
    """Right on the ``fresh`` examples after those it learned, then wrong on every even one:
    each cut looks good while it is judged, then goes stale while it is served."""

    def __init__(self, fresh: int = 20) -> None:
        super().__init__()
        self.fresh = fresh

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        i, y = int(x["i"]), bool(x["y"])
        if i >= self.learned + self.fresh and i % 2 == 0:
            y = not y
        return {y: 0.8, not y: 0.2}


def test_promotions_within_the_rollback_window_are_judged_as_served_against_the_first_parent() -> None:
    # Each cut beats the champion it replaces, so one is promoted every 20 examples, and each
    # is wrong on half the examples it serves; v1, wrong only on 15 and 25, stays right. A
    # watch of 30 restarted at each promotion would never end: served accuracy 0.5 for good.
    lc, seen = lifecycle(Rule(wrong={15, 25}), Stale(), rollback=RollbackRule(window=30, margin=0.05))
    actions = run(lc, seen, 0, 50)
    assert lc.watching == (3, 1)  # v3 watched against v1, the parent of the first promotion
    actions += run(lc, seen, 50, 80)
    kinds = [(i, type(a).__name__, a.version) for i, a in actions if not isinstance(a, Register)]
    assert kinds[:3] == [(29, "Promote", 2), (49, "Promote", 3), (59, "Rollback", 3)]
    rollback = next(a for _, a in actions if isinstance(a, Rollback))
    assert rollback.to == 1 and "rolled back to v1" in rollback.reason and "v2 to v3" in rollback.reason
    # One window from v2's promotion: v2 served 30..49 and v3 50..59, 15 of 30 right.
    assert rollback.metrics["evaluation_examples"] == 30
    assert rollback.metrics["prequential_accuracy"] == 0.5 and rollback.metrics["parent_accuracy"] == 1.0
    assert lc.watching is None and PARENT not in lc.contenders
    assert (79, "Reject", 4) in kinds  # v4, pending since 49, judged afresh against v1
    assert lc.champion_version == 1


class Cuts(Rule):
    """Wrong on ``wrong[n]`` once it has learned ``n`` examples: what each cut gets wrong."""

    def __init__(self, wrong: dict[int, set[int]]) -> None:
        super().__init__()
        self.by_cut = wrong

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        self.wrong = self.by_cut.get(self.learned, set())
        return super().predict_proba_one(x)


def test_a_watch_judged_before_the_next_promotion_is_not_carried_on() -> None:
    # v2 (cut at 9) holds up over its window, 30..49; v3 (cut at 29) is promoted over it at 49
    # and goes wrong from 50: judged on its own against v2, not as a series against v1.
    continuous = Cuts({10: {31}, 30: set(range(50, 70, 3))})
    lc, seen = lifecycle(Rule(wrong={15, 25}), continuous)
    actions = run(lc, seen, 0, 70)
    decided = [(i, type(a).__name__, a.version) for i, a in actions if not isinstance(a, Register)]
    assert decided == [(29, "Promote", 2), (49, "Promote", 3), (69, "Rollback", 3)]
    rollback = next(a for _, a in actions if isinstance(a, Rollback))
    assert rollback.to == 2 and "rolled back to v2 automatically: " in rollback.reason  # no range
    assert rollback.metrics["evaluation_examples"] == 20 and lc.champion_version == 2


def test_drift_spawns_a_fresh_challenger_trained_on_the_recent_examples() -> None:
    built: list[Rule] = []

    def build() -> Rule:
        built.append(Rule())
        return built[-1]

    lc, seen = lifecycle(Rule(wrong=set(range(40, 100, 4))), Rule(wrong=set(range(40, 100, 4))), build=build)
    lc.challenger_buffer = 8  # not the deque's size: the buffer was sized at construction
    run(lc, seen, 0, 40)
    actions = lc.on_drift("a7")
    seen(actions)
    assert len(actions) == 1 and isinstance(actions[0], Register)
    reg = actions[0]
    assert reg.trigger == "drift:a7" and reg.contender == "challenger:a7" and not reg.direct
    assert built[0].learned == reg.window["examples"] == 40  # the default buffer holds 200; 40 seen
    assert reg.window["last_event_id"] == "e39"
    assert reg.model is not built[0]  # a snapshot
    assert lc.on_drift("a7") == []  # the same alert twice spawns one challenger
    promoted = [a for _, a in run(lc, seen, 40, 60) if isinstance(a, Promote)]
    assert [a.version for a in promoted] == [reg.version]
    assert lc.champion_version == reg.version and "challenger:a7" not in lc.contenders


@pytest.mark.parametrize("takes_over", [False, True])
def test_a_winning_challenger_serves_and_the_continuous_learner_keeps_its_history_unless_it_takes_over(
    takes_over: bool,
) -> None:
    built: list[Rule] = []

    def build() -> Rule:
        built.append(Rule())
        return built[-1]

    continuous = Rule(wrong=set(range(40, 100, 4)))
    lc, seen = lifecycle(Rule(wrong=set(range(40, 100, 4))), continuous, build=build, challenger_takes_over=takes_over)
    run(lc, seen, 0, 40)
    (reg,) = lc.on_drift("a1")
    seen([reg])
    promoted = [a for _, a in run(lc, seen, 40, 60) if isinstance(a, Promote)]
    assert [a.version for a in promoted] == [reg.version] and lc.champion_version == reg.version
    assert "challenger:a1" not in lc.contenders
    learner = lc.scoreboard.model(CONTINUOUS)
    assert learner is (built[0] if takes_over else continuous)
    before = learner.learned
    run(lc, seen, 60, 65)
    assert learner.learned == before + 5  # it carries on learning either way


def test_challengers_are_bounded_and_can_be_switched_off() -> None:
    lc, seen = lifecycle(Rule(), Rule(), max_challengers=2)
    run(lc, seen, 0, 5)
    assert len(lc.on_drift("a")) == len(lc.on_drift("b")) == 1
    assert lc.on_drift("c") == []
    off, seen_off = lifecycle(Rule(), Rule(), challenger_buffer=0)
    run(off, seen_off, 0, 5)
    assert off.on_drift("a") == []


def test_challenger_buffer_keeps_only_the_most_recent_examples() -> None:
    lc, seen = lifecycle(Rule(), Rule(), challenger_buffer=7)
    run(lc, seen, 0, 40)
    reg = lc.on_drift("x")[0]
    assert isinstance(reg, Register) and reg.window["examples"] == 7 and reg.window["first_event_id"] == "e33"


def test_schedule_trigger_cuts_the_continuous_learner() -> None:
    lc, seen = lifecycle(Rule(), Rule(), version_every=10_000, schedule_s=5)  # examples 1 s apart
    cuts = [(i, a.trigger) for i, a in run(lc, seen, 0, 12) if isinstance(a, Register)]
    assert cuts == [(5, "schedule")]


def test_out_of_order_event_times_in_the_training_window() -> None:
    nv, seen = counter()
    lc = Lifecycle(Rule(), next_version=nv, build=Rule, first_version_after=4, window=1000)
    actions: list[Any] = []
    for i, t in enumerate([2_000, 3_000, 2_500, 1_500]):
        actions += lc.learn(ex(i, t))
    assert (actions[0].window["start_time"], actions[0].window["end_time"]) == (1_500, 3_000)


def test_versions_never_collide_within_one_step() -> None:
    nv, _ = counter()  # the registry has not seen any of them yet
    lc = Lifecycle(Rule(), next_version=nv, build=Rule, champion=Rule(), champion_version=1, version_every=3)
    versions = [a.version for i in range(3) for a in lc.learn(ex(i))] + [a.version for a in lc.on_drift("d")]
    assert versions == [2, 3]


def test_operator_changes_reset_the_evaluation() -> None:
    lc, seen = lifecycle(Rule(wrong=set(range(10, 30, 2))), Rule())
    run(lc, seen, 0, 30)
    assert lc.watching == (2, 1)
    lc.champion_changed(1, Rule())
    assert lc.watching is None and lc.champion_version == 1 and PARENT not in lc.contenders
    run(lc, seen, 30, 40)
    assert lc.pending == {CONTINUOUS: 3}
    lc.withdraw(3)
    assert lc.pending == {} and CONTINUOUS in lc.contenders


def test_window_must_hold_the_rules() -> None:
    nv, _ = counter()
    with pytest.raises(ConfigError):
        Lifecycle(Rule(), next_version=nv, build=Rule, promotion=PromotionRule(0.01, 500), window=499)
    with pytest.raises(ConfigError):
        Lifecycle(Rule(), next_version=nv, build=Rule, rollback=RollbackRule(600), window=500)


def _sea_run(seed: int) -> tuple[list[tuple[int, str, int, str]], list[bool], dict[int, Any]]:
    """The lifecycle over SEA with a concept alert 150 examples after each drift; also what a
    user got: the registered snapshot of the champion of the moment, frozen, as inference serves."""
    rows = sea_stream(6000, seed=seed).rows
    nv, seen = counter()
    lc = Lifecycle(
        build_model("logreg", 42),
        next_version=nv,
        build=lambda: build_model("logreg", 42),
        version_every=300,
        first_version_after=200,
    )
    out, served_hits = [], []
    registered: dict[int, Any] = {}
    served: Any = None
    champion_at: dict[int, Any] = {}
    for i, (x, y) in enumerate(rows):
        if served is not None:
            served_hits.append(same_class(predict(served, x)[0], y))
        if i in (2000, 4000):
            champion_at[i] = served
        actions = lc.learn(
            {"event_id": f"e{i}", "event_time": i, "features": x, "label": y, "feature_set_version": "fs1"}
        )
        if i in (2150, 4150):
            actions += lc.on_drift(f"a{i}")
        seen(actions)
        for a in actions:
            if isinstance(a, Register):
                registered[a.version] = a.model
            if isinstance(a, Register) and a.direct:
                served = a.model
            elif isinstance(a, Promote):
                served = registered[a.version]
            elif isinstance(a, Rollback):
                served = registered[a.to]
        out.append((i, [(type(a).__name__, a.version, a.reason) for a in actions]))
    flat = [(i, kind, v, reason) for i, acts in out for kind, v, reason in acts]
    return flat, served_hits, champion_at


def test_on_sea_the_served_model_recovers_after_each_drift_deterministically() -> None:
    flat, served_hits, champion_at = _sea_run(7)
    again, _, _ = _sea_run(7)
    assert flat == again
    rows = sea_stream(6000, seed=7).rows
    offset = 6000 - len(served_hits)  # nothing is served before the first trained version
    challengers = {v for _, kind, v, reason in flat if kind == "Register" and "drift alert" in reason}
    assert {v for _, kind, v, _ in flat if kind == "Promote"} & challengers  # a challenger won somewhere
    for drift in (2000, 4000):
        assert [i for i, kind, _, _ in flat if kind == "Promote" and drift < i <= drift + 600], drift
        # After the drift, users got better answers than from the champion the drift caught out.
        lo, hi = drift + 600, drift + 2000
        stale = champion_at[drift]
        stale_acc = sum(same_class(predict(stale, x)[0], y) for x, y in rows[lo:hi]) / (hi - lo)
        served_acc = sum(served_hits[lo - offset : hi - offset]) / (hi - lo)
        assert served_acc > stale_acc + 0.02, (drift, served_acc, stale_acc)


class Slow(Rule):
    """Wrong until it has learned ``need`` examples, then right."""

    def __init__(self, need: int) -> None:
        super().__init__()
        self.need = need

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        y = bool(x["y"]) if self.learned >= self.need else not bool(x["y"])
        return {y: 0.8, not y: 0.2}


def test_a_candidate_is_judged_as_served_against_the_champion_as_served() -> None:
    # Inference serves registered versions frozen, so both are judged frozen: the candidate as
    # cut (10 examples learned: right from then on) against the champion as registered
    # (untaught: always wrong). A copy of the champion that learned during the evaluation
    # would have been right from example 25 on; one of the candidate, from wherever.
    lc, seen = lifecycle(Slow(need=15), Slow(need=5))
    actions = run(lc, seen, 0, 30)
    (promote,) = [a for _, a in actions if isinstance(a, Promote)]
    assert promote.metrics["prequential_accuracy"] == 1.0 and promote.metrics["champion_accuracy"] == 0.0


def test_a_candidate_that_is_not_yet_good_when_cut_is_not_promoted_for_what_it_learns_later() -> None:
    # Cut after 10 examples but right only after 12: served as cut it is always wrong, like the
    # untaught champion: a tie, never a promotion.
    lc, seen = lifecycle(Slow(need=15), Slow(need=12))
    actions = run(lc, seen, 0, 30)
    assert not [a for _, a in actions if isinstance(a, Promote)]
    (reject,) = [a for _, a in actions if isinstance(a, Reject)]
    assert reject.version == 2


def test_pending_candidates_start_over_against_a_new_champion() -> None:
    lc, seen = lifecycle(Rule(wrong=set(range(0, 200, 2))), Rule())
    run(lc, seen, 0, 16)
    (challenger,) = lc.on_drift("a1")
    seen([challenger])
    actions = run(lc, seen, 16, 60)
    decided = [(i, type(a).__name__, a.version) for i, a in actions if isinstance(a, Promote | Reject)]
    # The continuous candidate (cut at 9) wins at 29; the challenger, which would have been
    # judged at 35 against the old champion, is judged against the new one 20 examples later.
    assert (29, "Promote", 2) in decided
    assert (49, "Reject", challenger.version) in decided
    reason = next(a.reason for _, a in actions if isinstance(a, Reject) and a.version == challenger.version)
    assert "against champion v2" in reason
