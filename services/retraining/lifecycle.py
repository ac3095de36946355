"""The model lifecycle (pure): contenders scored side by side, promotion, rollback, triggers.

Every labelled example is scored by every model on the scoreboard before any of them learns
from it (test-then-train), so all comparisons are on the same examples:

- ``continuous``: the continuous learner, which learns from every example and is cut into a
  candidate version on label volume or on schedule;
- ``challenger:<alert_id>``: a fresh model built on a drift alert, trained on the recent
  examples (the post-drift window) and then online, registered as a candidate at once;
- for each candidate, the candidate as registered and a copy of the champion as registered,
  both frozen (scored without learning, as inference serves them): the served accuracy each
  would give from the candidate's registration on;
- after a promotion, frozen copies of the new champion and of its parent, until the
  rollback rule has judged the new champion over its first ``window`` examples (champions
  promoted one after the other within that window are one series, as served, against the
  parent of the first).

A frozen entry holds the model as registered itself, not a copy: a River model does not change
when it predicts, so a cut deep-copies the learner once (what is registered), every frozen
entry of that version shares it, and a model several entries share predicts once an example.
A cut of a forest every 100 examples spent most of retraining's time copying it otherwise.

A candidate is judged once, on the examples after its registration, as soon as there are
``min_examples`` of them: a fixed-size test, so repeated peeking cannot promote a lucky
streak. Classifiers are compared by accuracy (higher is better), regressors by mean absolute
error (lower is better; the margins are then relative: 0.01 is an MAE 1% lower). When the
champion changes, pending candidates start over against the new one. The service shell turns
the returned actions into registry records.

The continuous learner may be a ``Selection`` (services/retraining/selection.py): learners of
several model families scored on the same examples, of which a cut takes the one leading
then, and a drift challenger is a fresh model of that family. Each Register then names its
family (``spec``), with the family's own scores in its metrics and every family's in its reason.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from driftloop.services.retraining.selection import Selection, SelectionStatus
from driftloop.shared.errors import ConfigError
from driftloop.shared.modelspec import is_regressor, same_class

CHAMPION, CONTINUOUS, PARENT = "champion", "continuous", "parent"
_EPS = 1e-12  # a gain equal to the margin counts as reaching it, despite float rounding
_MIN_P = 1e-15  # log loss of a probability 0 is capped at -log(1e-15) ≈ 34.5


# --- scoring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """A classifier's accuracy and log loss, or a regressor's MAE and RMSE (the others None)."""

    examples: int
    accuracy: float | None
    log_loss: float | None
    mae: float | None = None
    rmse: float | None = None


@dataclass(frozen=True)
class Comparison:
    """A model against a reference on the same ``examples`` labelled examples: classifiers by
    accuracy and log loss, regressors by MAE and RMSE (their accuracy and log loss are NaN)."""

    examples: int
    accuracy: float
    reference_accuracy: float
    log_loss: float
    reference_log_loss: float
    mae: float | None = None
    reference_mae: float | None = None
    rmse: float | None = None
    reference_rmse: float | None = None

    @property
    def regression(self) -> bool:
        return self.mae is not None

    @property
    def gain(self) -> float:
        """How much better than the reference: accuracy points for a classifier; for a
        regressor the share of the reference's MAE it saves (0.1: an MAE 10% lower), so that
        one margin means the same whatever the label's units."""
        if self.mae is None or self.reference_mae is None:
            return self.accuracy - self.reference_accuracy
        if self.reference_mae == 0 or not math.isfinite(self.reference_mae):
            return 0.0 if self.mae == self.reference_mae else -math.inf
        return (self.reference_mae - self.mae) / self.reference_mae


def class_probability(proba: Mapping[Any, float], label: Any) -> float:
    return next((float(p) for k, p in proba.items() if same_class(k, label)), 0.0)


@dataclass
class _Entry:
    model: Any
    frozen: bool
    scores: deque[tuple[int, float, float]]  # (example seq, hit or |error|, log loss or error²), the last `window`


class Scoreboard:
    """Prequential scores of several models on the same examples, over a rolling window."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ConfigError("the evaluation window must hold at least one example")
        self.window = window
        self._entries: dict[str, _Entry] = {}
        self._seq = 0

    @property
    def seq(self) -> int:
        """How many examples the scoreboard has seen."""
        return self._seq

    @property
    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def add(self, key: str, model: Any, *, frozen: bool = False) -> None:
        """Score ``model`` from the next example on; a ``frozen`` one is scored without learning
        (a version as inference serves it)."""
        if key in self._entries:
            raise KeyError(f"{key} is already scored")
        self._entries[key] = _Entry(model, frozen, deque(maxlen=self.window))

    def remove(self, key: str) -> Any:
        return self._entries.pop(key).model

    def swap(self, key: str, model: Any) -> None:
        """Another model under ``key`` from the next example on, its history kept (one series:
        what was served)."""
        self._entries[key].model = model

    def rename(self, old: str, new: str) -> None:
        """The same model under a new key, its history kept."""
        if new in self._entries:
            raise KeyError(f"{new} is already scored")
        self._entries[new] = self._entries.pop(old)

    def fork(self, src: str, dst: str) -> None:
        """An independent copy of ``src`` (model and history) under ``dst``."""
        entry = self._entries[src]
        self._entries[dst] = _Entry(copy.deepcopy(entry.model), entry.frozen, deque(entry.scores, maxlen=self.window))

    def model(self, key: str) -> Any:
        return self._entries[key].model

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        """Score every model on ``(x, y)``, then train those not frozen. A model that raises on
        ``x`` (a value its family cannot take) scores a miss, as it would serve none, and one
        that raises learning it skips it: a failing model never stops the others. (A Selection
        counts and lists its families' failures itself.)"""
        self._seq += 1
        frozen: dict[int, tuple[float, float]] = {}  # a model several frozen entries share predicts once
        for entry in self._entries.values():
            if entry.frozen:
                outcome = frozen.get(id(entry.model))
                if outcome is None:
                    outcome = frozen[id(entry.model)] = _outcome(entry.model, x, y)
            else:
                outcome = _outcome(entry.model, x, y)
            entry.scores.append((self._seq, *outcome))
            if not entry.frozen:
                with contextlib.suppress(Exception):  # a failing model must not stop the others
                    entry.model.learn_one(x, y)

    def is_regressor(self, key: str) -> bool:
        return _regression(self._entries[key].model)

    def score(self, key: str) -> Score:
        scores = self._entries[key].scores
        if not scores:
            return Score(0, None, None)
        n = len(scores)
        first, second = sum(h for _, h, _ in scores) / n, sum(loss for _, _, loss in scores) / n
        if self.is_regressor(key):
            return Score(n, None, None, mae=first, rmse=math.sqrt(second))
        return Score(n, first, second)

    def common(self, key: str, reference: str, since: int = 0) -> int:
        """How many of the windowed examples from ``since`` on both scored."""
        return max(0, self._seq - self._start(key, reference, since) + 1)

    def compare(self, key: str, reference: str, since: int = 0) -> Comparison:
        lo = self._start(key, reference, since)
        a = [(h, loss) for s, h, loss in self._entries[key].scores if s >= lo]
        b = [(h, loss) for s, h, loss in self._entries[reference].scores if s >= lo]
        n = len(a)
        regression = self.is_regressor(key)
        if n == 0:
            nan = math.nan if regression else None
            return Comparison(0, math.nan, math.nan, math.nan, math.nan, nan, nan, nan, nan)
        if regression:
            return Comparison(
                n,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                mae=sum(h for h, _ in a) / n,
                reference_mae=sum(h for h, _ in b) / n,
                rmse=math.sqrt(sum(loss for _, loss in a) / n),
                reference_rmse=math.sqrt(sum(loss for _, loss in b) / n),
            )
        return Comparison(
            n,
            sum(h for h, _ in a) / n,
            sum(h for h, _ in b) / n,
            sum(loss for _, loss in a) / n,
            sum(loss for _, loss in b) / n,
        )

    def _start(self, key: str, reference: str, since: int) -> int:
        # Every model scores every example from when it was added, so the common examples
        # are one contiguous run ending now; a model never scored starts after now.
        firsts = [e.scores[0][0] if e.scores else self._seq + 1 for e in (self._entries[key], self._entries[reference])]
        return max(since, *firsts)


def _regression(model: Any) -> bool:
    return model.regression if isinstance(model, Selection) else is_regressor(model)


def _outcome(model: Any, x: dict[str, float], y: Any) -> tuple[float, float]:
    """(hit or |error|, log loss or error²) of ``model`` on ``(x, y)``; a miss (a classifier's
    capped log loss, a regressor's infinite error) if it raises or predicts no finite number."""
    if _regression(model):
        try:
            error = float(model.predict_one(x)) - float(y)
        except Exception:  # noqa: BLE001 - scored as the miss it would serve
            error = math.inf
        error = error if math.isfinite(error) else math.inf
        return abs(error), error * error
    try:
        proba = model.predict_proba_one(x)
    except Exception:  # noqa: BLE001 - scored as the miss it would serve
        proba = {}
    predicted = max(proba, key=proba.__getitem__) if proba else None
    return float(same_class(predicted, y)), -math.log(max(class_probability(proba, y), _MIN_P))


# --- rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    action: str  # wait | promote | reject | rollback | keep
    reason: str


def _figures(c: Comparison, reference: str) -> str:
    if c.regression:
        return (
            f"MAE {c.mae:.4g} vs {reference} {c.reference_mae:.4g} ({-c.gain:+.1%}), "
            f"RMSE {c.rmse:.4g} vs {c.reference_rmse:.4g}, over the same {c.examples} examples"
        )
    return (
        f"accuracy {c.accuracy:.3f} vs {reference} {c.reference_accuracy:.3f} ({c.gain:+.3f}), "
        f"log loss {c.log_loss:.3f} vs {c.reference_log_loss:.3f}, over the same {c.examples} examples"
    )


@dataclass(frozen=True)
class PromotionRule:
    """Promote a contender whose accuracy beats the champion's by at least ``margin`` over
    ``min_examples`` common examples (a regressor: whose MAE is lower by at least that share
    of the champion's); reject it otherwise. A tie never promotes."""

    margin: float = 0.01
    min_examples: int = 200

    def __post_init__(self) -> None:
        if self.margin < 0 or self.min_examples < 1:
            raise ConfigError("promotion needs margin >= 0 and min_examples >= 1")

    def decide(self, c: Comparison) -> Verdict:
        if c.examples < self.min_examples:
            return Verdict("wait", f"{c.examples} of {self.min_examples} examples")
        figures = _figures(c, "champion")
        margin = _margin(c, self.margin)
        if c.gain > 0 and c.gain >= self.margin - _EPS:
            return Verdict("promote", f"{figures}: better by at least the margin {margin}")
        return Verdict("reject", f"{figures}: not better than the champion by the margin {margin}")


@dataclass(frozen=True)
class RollbackRule:
    """Roll back a newly promoted champion whose accuracy over its first ``window`` examples
    is below its parent's by more than ``margin`` (a regressor: whose MAE is above its
    parent's by more than that share of it)."""

    window: int = 300
    margin: float = 0.02

    def __post_init__(self) -> None:
        if self.margin < 0 or self.window < 1:
            raise ConfigError("rollback needs margin >= 0 and window >= 1")

    def decide(self, c: Comparison) -> Verdict:
        if c.examples < self.window:
            return Verdict("wait", f"{c.examples} of {self.window} examples")
        figures = _figures(c, "parent")
        margin = _margin(c, self.margin)
        if -c.gain > self.margin + _EPS:
            return Verdict("rollback", f"{figures}: worse than its parent by more than {margin}")
        return Verdict("keep", f"{figures}: not worse than its parent by more than {margin}")


def _margin(c: Comparison, margin: float) -> str:
    return f"{margin:.1%} of the MAE" if c.regression else f"{margin:.3f}"


class ScheduleTrigger:
    """Due every ``every_s`` seconds of event time (0: never); the first call starts the clock."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: int | None = None

    def due(self, now_ms: int) -> bool:
        if self.every_s <= 0:
            return False
        if self._last is None:
            self._last = now_ms
        return now_ms - self._last >= self.every_s * 1000

    def reset(self, now_ms: int) -> None:
        self._last = now_ms


# --- actions the shell carries out ---------------------------------------------------------------


@dataclass(frozen=True)
class Register:
    """Register ``model`` as ``version``: a candidate, or directly the champion when there is
    no trained champion to compare against (the first trained version)."""

    version: int
    contender: str
    trigger: str
    model: Any
    window: dict[str, Any]
    metrics: dict[str, float]
    feature_set_version: str | None
    direct: bool
    reason: str
    spec: str | None = None  # the model family, when the continuous learner is a Selection


@dataclass(frozen=True)
class Promote:
    version: int
    replaces: int | None
    reason: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class Reject:
    version: int
    reason: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class Rollback:
    version: int
    to: int
    reason: str
    metrics: dict[str, float]


Action = Register | Promote | Reject | Rollback


def _metrics(c: Comparison, reference: str) -> dict[str, float]:
    if c.regression:
        assert c.mae is not None and c.reference_mae is not None and c.rmse is not None and c.reference_rmse is not None
        return {
            "prequential_mae": c.mae,
            "prequential_rmse": c.rmse,
            f"{reference}_mae": c.reference_mae,
            f"{reference}_rmse": c.reference_rmse,
            "evaluation_examples": float(c.examples),
        }
    return {
        "prequential_accuracy": c.accuracy,
        "log_loss": c.log_loss,
        f"{reference}_accuracy": c.reference_accuracy,
        f"{reference}_log_loss": c.reference_log_loss,
        "evaluation_examples": float(c.examples),
    }


@dataclass
class _Window:
    """The data window a contender learned from since its last cut."""

    examples: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    feature_set_version: str | None = None

    def add(self, example: Mapping[str, Any]) -> None:
        t = example["event_time"]
        f = self.fields
        if not f:
            f.update(first_event_id=example["event_id"], start_time=t, end_time=t)
        f.update(last_event_id=example["event_id"], start_time=min(f["start_time"], t), end_time=max(f["end_time"], t))
        self.examples += 1
        self.feature_set_version = example["feature_set_version"]

    def as_dict(self) -> dict[str, Any]:
        return {**self.fields, "examples": self.examples}


@dataclass(frozen=True)
class _Pending:
    version: int
    since: int  # the seq of the first example of its evidence
    snapshot: Any  # the model as registered: what inference would serve


@dataclass(frozen=True)
class _Watch:
    version: int  # the champion of the moment
    parent: int  # the champion before the first promotion of the window: what a rollback restores
    parent_model: Any
    since: int
    first: int  # the first version promoted over the parent in this window


# --- the lifecycle -------------------------------------------------------------------------------


class LifecyclePolicy(Protocol):
    """The settings that shape a lifecycle, by RetrainingSettings' names (the service's settings
    and the simulation's policies both are one); read-only, so a frozen dataclass is one too."""

    @property
    def promotion_margin(self) -> float: ...
    @property
    def promotion_min_examples(self) -> int: ...
    @property
    def rollback_window(self) -> int: ...
    @property
    def rollback_margin(self) -> float: ...
    @property
    def version_every(self) -> int: ...
    @property
    def first_version_after(self) -> int: ...
    @property
    def schedule_s(self) -> float: ...
    @property
    def challenger_buffer(self) -> int: ...
    @property
    def evaluation_window(self) -> int: ...
    @property
    def challenger_takes_over(self) -> bool: ...


class Lifecycle:
    """Continuous learning, drift challengers, promotion and automatic rollback.

    ``continuous`` is the continuous learner; ``champion`` the trained champion's model as
    registered and ``champion_version`` its version (None while the champion is an untrained
    bootstrap: then the first cut is registered as the champion directly). ``build()`` makes
    a fresh challenger; ``next_version()`` says the next free version number in the registry.

    Each candidate is scored against its own copy of the champion's model, added when the
    candidate is registered: both learn from the same examples from then on, so a candidate
    cut from the champion's lineage wins only by what it learned since the champion was
    registered (what users have not got yet), and a fresh challenger only if its fresh start
    is worth more than the champion's history.

    When a fresh challenger wins, it serves. With ``challenger_takes_over`` the continuous
    learner is then replaced by it (a restart from the post-drift window, which suits abrupt
    concept changes); without (the default), the continuous learner carries on with every
    example it learned, which suits streams whose recent past misleads a short evaluation.
    driftloop/lifecycle_sim.py compares the two (the README's figures: The model lifecycle).
    """

    def __init__(
        self,
        continuous: Any,
        *,
        build: Callable[[], Any],
        next_version: Callable[[], int],
        champion: Any = None,
        champion_version: int | None = None,
        promotion: PromotionRule | None = None,
        rollback: RollbackRule | None = None,
        version_every: int = 1000,
        first_version_after: int = 200,
        schedule_s: float = 0.0,
        challenger_buffer: int = 200,
        max_challengers: int = 3,
        window: int = 1000,
        challenger_takes_over: bool = False,
    ) -> None:
        self.build = build
        self.next_version = next_version
        self.promotion = promotion or PromotionRule()
        self.rollback = rollback or RollbackRule()
        self.version_every = version_every
        self.first_version_after = first_version_after
        self.schedule = ScheduleTrigger(schedule_s)
        self.challenger_buffer = challenger_buffer
        self.max_challengers = max_challengers
        self.challenger_takes_over = challenger_takes_over
        if window < max(self.promotion.min_examples, self.rollback.window):
            raise ConfigError(
                f"the evaluation window ({window}) must hold the promotion's min examples "
                f"({self.promotion.min_examples}) and the rollback window ({self.rollback.window})"
            )
        self._board = Scoreboard(window)
        self._board.add(CONTINUOUS, continuous)
        self._selection = continuous if isinstance(continuous, Selection) else None
        self._challenger_specs: dict[str, str] = {}  # the family of each drift challenger
        self._champion_version = champion_version if champion is not None else None
        self._champion_model = copy.deepcopy(champion) if self._champion_version is not None else None
        self._continuous_window = _Window()
        self._pending: dict[str, _Pending] = {}
        self._watch: _Watch | None = None
        self._buffer: deque[Mapping[str, Any]] = deque(maxlen=max(challenger_buffer, 1))
        self._last_version = 0
        self._total = 0
        self._latest_time: int | None = None

    @classmethod
    def from_policy(
        cls,
        policy: LifecyclePolicy,
        continuous: Any,
        *,
        build: Callable[[], Any],
        next_version: Callable[[], int],
        champion: Any = None,
        champion_version: int | None = None,
    ) -> Lifecycle:
        return cls(
            continuous,
            build=build,
            next_version=next_version,
            champion=champion,
            champion_version=champion_version,
            promotion=PromotionRule(policy.promotion_margin, policy.promotion_min_examples),
            rollback=RollbackRule(policy.rollback_window, policy.rollback_margin),
            version_every=policy.version_every,
            first_version_after=policy.first_version_after,
            schedule_s=policy.schedule_s,
            challenger_buffer=policy.challenger_buffer,
            window=policy.evaluation_window,
            challenger_takes_over=policy.challenger_takes_over,
        )

    # read-only views
    @property
    def champion_version(self) -> int | None:
        return self._champion_version

    @property
    def contenders(self) -> list[str]:
        """The models being scored: learners, and copies of the champion and of its parent."""
        return self._board.keys

    @property
    def pending(self) -> dict[str, int]:
        """Candidate version under evaluation, by contender."""
        return {k: p.version for k, p in self._pending.items()}

    @property
    def watching(self) -> tuple[int, int] | None:
        """(champion, parent) while the rollback rule has not judged the champion; the parent is
        that of the first of the promotions the watch carries on over."""
        return None if self._watch is None else (self._watch.version, self._watch.parent)

    @property
    def examples_seen(self) -> int:
        return self._total

    @property
    def scoreboard(self) -> Scoreboard:
        return self._board

    @property
    def selection(self) -> Selection | None:
        """The families of the continuous learner, when it is a Selection (its ``last_failures``
        are the families that failed on the latest example)."""
        return self._selection

    def selection_status(self) -> SelectionStatus | None:
        """Each family's score, stride, cost and state, for logs and metrics (None: one model)."""
        return None if self._selection is None else self._selection.status()

    def learn(self, example: Mapping[str, Any]) -> list[Action]:
        """Score then train every model on ``example``; the actions it leads to."""
        t = int(example["event_time"])
        if self._selection is not None:
            self._selection.observe(t)
        self._board.learn_one(dict(example["features"]), example["label"])
        self._total += 1
        self._latest_time = t if self._latest_time is None else max(self._latest_time, t)
        self._buffer.append(example)
        self._continuous_window.add(example)
        actions: list[Action] = []
        self._judge_rollback(actions)
        self._judge_candidates(actions)
        trigger = self._due(self._latest_time)
        if trigger is not None:
            actions.append(self._cut_continuous(trigger))
        return actions

    def on_drift(self, alert_id: str) -> list[Action]:
        """A fresh challenger trained on the recent examples, registered as a candidate."""
        key = f"challenger:{alert_id}"
        challengers = [k for k in self._pending if k.startswith("challenger:")]
        if (
            self.challenger_buffer == 0
            or self._champion_version is None  # nothing trained to challenge yet
            or not self._buffer
            or key in self._board
            or len(challengers) >= self.max_challengers
        ):
            return []
        spec = None if self._selection is None else self._selection.leader
        model = self.build() if self._selection is None or spec is None else self._selection.fresh(spec)
        window = _Window()
        for ex in self._buffer:
            model.learn_one(dict(ex["features"]), ex["label"])
            window.add(ex)
        self._board.add(key, model)
        if spec is not None:
            self._challenger_specs[key] = spec
        version = self._open(key)
        family = "" if spec is None else f" of family {spec}"
        return [
            Register(
                version=version,
                contender=key,
                trigger=f"drift:{alert_id}",
                model=self._pending[key].snapshot,
                window=window.as_dict(),
                metrics={"buffer_examples": float(window.examples)},
                feature_set_version=window.feature_set_version,
                direct=False,
                reason=f"candidate: fresh challenger{family} trained on the {window.examples} most recent "
                f"examples after drift alert {alert_id}; {self._terms()}",
                spec=spec,
            )
        ]

    def champion_changed(self, version: int | None, model: Any) -> None:
        """The champion was changed outside the lifecycle (an operator): judge against it from now."""
        self._drop_watch()
        self._champion_version = version if model is not None else None
        self._champion_model = copy.deepcopy(model) if self._champion_version is not None else None
        self._rebase()

    def withdraw(self, version: int) -> None:
        """Stop evaluating a candidate whose status was changed outside the lifecycle."""
        for key, p in list(self._pending.items()):
            if p.version == version:
                del self._pending[key]
                self._board.remove(_ref(version))
                self._drop(key)

    # internals
    def _allocate(self) -> int:
        self._last_version = max(self.next_version(), self._last_version + 1)
        return self._last_version

    def _rebase(self) -> None:
        """Pending candidates start over against the new champion: users get that one now."""
        for key, p in list(self._pending.items()):
            self._board.remove(_ref(p.version))
            if self._champion_model is None:
                self._board.remove(_served(p.version))
                del self._pending[key]
                self._drop(key)
                continue
            self._board.remove(_served(p.version))
            self._board.add(_ref(p.version), self._champion_model, frozen=True)
            self._board.add(_served(p.version), p.snapshot, frozen=True)
            self._pending[key] = _Pending(p.version, self._board.seq + 1, p.snapshot)

    def _open(self, key: str, model: Any = None) -> int:
        """A candidate version of ``key``'s model (or of ``model``, a family of the selection) as it
        is now, scored from the next example."""
        version = self._allocate()
        snapshot = copy.deepcopy(self._board.model(key) if model is None else model)
        # Judged as inference would serve both: frozen, the candidate as registered against
        # the champion as registered, on the same examples from now on.
        self._board.add(_ref(version), self._champion_model, frozen=True)
        self._board.add(_served(version), snapshot, frozen=True)
        self._pending[key] = _Pending(version, self._board.seq + 1, snapshot)
        return version

    def _terms(self) -> str:
        if self._board.is_regressor(CONTINUOUS):
            return (
                f"promoted if its MAE is lower than the champion's by {self.promotion.margin:.1%} "
                f"over {self.promotion.min_examples} examples"
            )
        return (
            f"promoted if better than the champion by {self.promotion.margin:.3f} accuracy "
            f"over {self.promotion.min_examples} examples"
        )

    def _due(self, now_ms: int) -> str | None:
        if CONTINUOUS in self._pending:
            return None  # one candidate of the continuous learner at a time; the count carries on
        since = self._continuous_window.examples
        if self._champion_version is None:
            return "label_volume" if since >= self.first_version_after else None
        if since >= self.version_every:
            return "label_volume"
        if since and self.schedule.due(now_ms):
            return "schedule"
        return None

    def _cut_continuous(self, trigger: str) -> Register:
        window = self._continuous_window
        self._continuous_window = _Window()
        if self._latest_time is not None:
            self.schedule.reset(self._latest_time)
        sel = self._selection
        spec = None if sel is None else sel.leader
        model = self._board.model(CONTINUOUS) if sel is None or spec is None else sel.model(spec)
        score = self._board.score(CONTINUOUS) if sel is None or spec is None else _family_score(sel, spec)
        metrics = {"examples_since_last_version": float(window.examples), "examples_total": float(self._total)}
        if score.accuracy is not None and score.log_loss is not None:
            metrics |= {
                "prequential_accuracy": score.accuracy,
                "log_loss": score.log_loss,
                "evaluation_examples": float(score.examples),
            }
        elif score.mae is not None and score.rmse is not None:
            metrics |= {
                "prequential_mae": score.mae,
                "prequential_rmse": score.rmse,
                "evaluation_examples": float(score.examples),
            }
        direct = self._champion_version is None
        chosen = ""
        if sel is not None and spec is not None:
            chosen = f"; family {spec}, the best of {len(sel.specs)} ({sel.summary()})" if len(sel.specs) > 1 else ""
        if direct:
            version = self._allocate()
            snapshot = copy.deepcopy(model)
            self._champion_version, self._champion_model = version, snapshot
            reason = f"champion: first trained version, promoted directly (an untrained model is no yardstick){chosen}"
        else:
            version = self._open(CONTINUOUS, model)
            snapshot = self._pending[CONTINUOUS].snapshot
            reason = f"candidate: continuous learner ({trigger}){chosen}; {self._terms()}"
        return Register(
            version=version,
            contender=CONTINUOUS,
            trigger=trigger,
            model=snapshot,
            window=window.as_dict(),
            metrics=metrics,
            feature_set_version=window.feature_set_version,
            direct=direct,
            reason=reason,
            spec=spec,
        )

    def _judge_candidates(self, actions: list[Action]) -> None:
        for key, p in list(self._pending.items()):
            ref, served = _ref(p.version), _served(p.version)
            if self._board.common(served, ref, p.since) < self.promotion.min_examples:
                continue
            c = self._board.compare(served, ref, p.since)
            verdict = self.promotion.decide(c)
            if verdict.action == "wait":
                continue
            del self._pending[key]
            self._board.remove(ref)
            self._board.remove(served)
            if verdict.action == "promote":
                actions.append(self._promote(key, p, verdict, c))
            else:
                actions.append(
                    Reject(
                        p.version,
                        f"rejected against champion v{self._champion_version}: {verdict.reason}",
                        _metrics(c, CHAMPION),
                    )
                )
                self._drop(key)

    def _promote(self, key: str, p: _Pending, verdict: Verdict, c: Comparison) -> Promote:
        old, old_model = self._champion_version, self._champion_model
        assert old is not None and old_model is not None
        self._champion_version, self._champion_model = p.version, p.snapshot
        spec = self._challenger_specs.pop(key, None)
        if key != CONTINUOUS and self.challenger_takes_over and self._selection is not None and spec is not None:
            # The challenger's family carries on from it; the other families keep what they learned.
            self._selection.replace(spec, self._board.remove(key))
            self._continuous_window = _Window()
        elif key != CONTINUOUS and self.challenger_takes_over:
            # The continuous learner carries on from the new champion's lineage.
            self._board.remove(CONTINUOUS)
            self._board.rename(key, CONTINUOUS)
            self._continuous_window = _Window()
        elif key != CONTINUOUS:
            # The fresh challenger serves; the continuous learner keeps all it has learned and
            # its next cut must beat the challenger. A hundred examples can favour a fresh start
            # that a longer history beats later (Elec2), see ``challenger_takes_over``.
            self._board.remove(key)
        # The new champion and its parent, both as registered and frozen (as inference serves
        # them), are scored side by side from now. A promotion while an earlier one is still
        # watched carries the watch on: the champions served since then, one after the other,
        # against the parent of the first, over one window from its promotion. (Restarting the
        # watch instead would never judge a champion replaced within the window.)
        w = self._watch
        if w is None:
            self._board.add(CHAMPION, p.snapshot, frozen=True)
            self._board.add(PARENT, old_model, frozen=True)
            self._watch = _Watch(p.version, old, old_model, self._board.seq + 1, p.version)
        else:
            self._board.swap(CHAMPION, p.snapshot)
            self._watch = _Watch(p.version, w.parent, w.parent_model, w.since, w.first)
        self._rebase()
        return Promote(p.version, old, f"promoted over v{old}: {verdict.reason}", _metrics(c, CHAMPION))

    def _judge_rollback(self, actions: list[Action]) -> None:
        w = self._watch
        if w is None or self._board.common(CHAMPION, PARENT, w.since) < self.rollback.window:
            return
        c = self._board.compare(CHAMPION, PARENT, w.since)
        verdict = self.rollback.decide(c)
        if verdict.action == "wait":
            return
        self._drop_watch()
        if verdict.action == "keep":
            return
        self._champion_version, self._champion_model = w.parent, w.parent_model
        self._rebase()
        served = ""
        if w.first != w.version:
            served = f" (v{w.first} to v{w.version}, promoted one after the other, as served)"
        actions.append(
            Rollback(
                w.version,
                w.parent,
                f"rolled back to v{w.parent} automatically{served}: {verdict.reason}",
                _metrics(c, PARENT),
            )
        )

    def _drop_watch(self) -> None:
        self._watch = None
        for key in (CHAMPION, PARENT):
            if key in self._board:
                self._board.remove(key)

    def _drop(self, key: str) -> None:
        self._challenger_specs.pop(key, None)
        if key != CONTINUOUS and key in self._board:
            self._board.remove(key)


def _family_score(selection: Selection, spec: str) -> Score:
    n, first, second = selection.score(spec)
    if selection.regression:
        return Score(n, None, None, mae=first, rmse=second)
    return Score(n, first, second)


def _ref(version: int) -> str:
    """The scoreboard key of the champion copy a candidate is judged against."""
    return f"champion-for-v{version}"


def _served(version: int) -> str:
    """The scoreboard key of a candidate version as registered (frozen, as it would be served)."""
    return f"served-v{version}"
