"""Online model selection across model families (pure): several continuous learners in one slot.

A ``Selection`` holds one continuous learner per model family (``logreg``, ``hat``, ``arf``, ...:
each a spec as shared/modelspec.py builds it) and stands in the lifecycle's scoreboard as the
continuous learner. The lifecycle cuts the family that leads when a version is due.

**Scoring.** Every active family predicts every example before any family learns it
(prequential, test-then-train), so all are scored on the same examples: a classifier by
accuracy (and log loss), a regressor by mean absolute error (and RMSE), over the last
``window`` examples. The default window is the lifecycle's evaluation window (1000
examples): versions are cut every ``VERSION_EVERY`` (1000) examples, so the leader is the
family that did best since about the last cut, and a fresh drift challenger, not the window,
answers an abrupt change.

**The selection rule.** The leader is, among the active families, the one with the fewest
failures in the window, then the best score (highest accuracy, lowest MAE), then the earliest
in the list (so list the cheaper family first: it wins ties). A family that scored fewer than
half of the window's examples (re-admitted by the budget, or failing on most of them) leads
only when no other family qualifies. There is always a leader.

**Failures.** A family that raises on an example (a value it cannot take), or a regressor that
predicts a non-finite number, skips that example: it is not scored on it and does not learn
it, the failure is counted (``failures``, by family) and listed in ``last_failures`` for the
shell to dead-letter, and the other families carry on. A model that raises on some records
would raise on them when served, hence failures rank before the score.

**The CPU budget.** Each family's predict time per example and learn time per learned
example are measured on the injected ``clock`` and averaged with exponential weights
(``smoothing`` on each new measurement; bias-corrected, so the first figures are plain
means). The default clock is the thread's CPU time (time.thread_time), not wall time: on a
machine the loop shares, wall time also counts the time other processes held the core, and
it inflated the measured cost of a forest enough to drop it for nothing.
Its cost per example at stride k is
``predict + learn / k``: it predicts every example (scoring stays on the same examples) and
learns every k-th one. The offered rate is measured from the times passed to ``observe``
(the examples' event times): the examples observed per second by which the newest time
advanced, over at least the last ``rate_span_s`` seconds of it (all of it, at first). The
newest time, not the times of the latest examples: a consumer of several partitions takes
each partition's examples in runs, so the latest examples can all be of one partition and
span several times the stream's time (on 4 partitions, their spread read a quarter of the
rate the demo offered). Every ``replan_every`` examples, with ``cpu_budget`` a share of one
core and R the rate, the plan gives the families ``cpu_budget / R`` seconds per example:

1. Families are taken from the cheapest to the most expensive (cost at stride 1; ties by
   list order).
2. The cheapest always learns every example: the floor, so the loop always has one learner
   at full rate, and one family alone is never subsampled nor dropped.
3. Each next family gets stride 1 if it fits in what is left, else the smallest stride k
   (up to ``max_stride``) whose cost fits; if none fits it is **dropped**: it neither predicts
   nor learns, and costs nothing.
4. A dropped family's last measured cost is discounted by ``RETRY_DISCOUNT`` (5%) at each
   plan, so it is re-admitted when it fits again, because the rate fell or, after a while
   (half its cost in 14 plans), to be measured again: its costs are then measured afresh,
   and the next plan drops it again if it still does not fit. It resumes from the model
   it had.

Before ``rate_window`` examples have been observed (or with ``cpu_budget`` None) nothing is
subsampled or dropped. ``status()`` gives all of it as data for logs and metrics, and
``plan_changes`` the families a plan changed, each with why.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from driftloop.shared.errors import ConfigError, LearnerFailed
from driftloop.shared.modelspec import is_regressor, same_class

ACTIVE, SUBSAMPLED, DROPPED = "active", "subsampled", "dropped"
STATES = (ACTIVE, SUBSAMPLED, DROPPED)
RETRY_DISCOUNT = 0.05  # a dropped family's last cost is discounted by this share at each plan
_MIN_P = 1e-15  # log loss of a probability 0 is capped at -log(1e-15), as on the scoreboard


@dataclass(frozen=True)
class LearnerFailure:
    """A family that raised on an example (``stage``: predict or learn), as the shell dead-letters it."""

    spec: str
    stage: str
    error: LearnerFailed


@dataclass(frozen=True)
class FamilyStatus:
    """One family, as ``Selection.status()`` reports it.

    ``score`` is the accuracy (a regressor: the MAE) and ``loss`` the log loss (the RMSE)
    over the ``scored`` examples of the window; the costs are seconds per example, None until
    measured; ``cost_s`` is at the family's stride (predict + learn / stride)."""

    spec: str
    state: str  # active | subsampled | dropped
    leader: bool
    stride: int
    scored: int
    score: float | None
    loss: float | None
    examples_learned: int
    predict_s: float | None
    learn_s: float | None
    cost_s: float | None
    failures: int
    failures_in_window: int


@dataclass(frozen=True)
class SelectionStatus:
    """The selection as a whole: ``metric`` is accuracy or mae; ``rate`` the offered examples
    per second (None until measured); ``cpu_share`` the share of one core the active families
    take at that rate (None until both are known)."""

    leader: str
    metric: str
    window: int
    examples: int
    rate: float | None
    cpu_budget: float | None
    cpu_share: float | None
    max_stride: int
    families: tuple[FamilyStatus, ...]

    def family(self, spec: str) -> FamilyStatus:
        return next(f for f in self.families if f.spec == spec)


@dataclass(frozen=True)
class PlanChange:
    """A family whose state or stride a plan changed, with why, as the shell logs it. ``cost_s``
    is seconds per example at its new stride; a dropped family's is what it would cost at
    ``max_stride`` (as last measured), None until measured."""

    spec: str
    state: str
    stride: int
    cost_s: float | None
    reason: str


def plan_changes(before: SelectionStatus | None, after: SelectionStatus) -> list[PlanChange]:
    """The families whose state or stride differ from ``before`` (None: the start, when every
    family is active at stride 1) to ``after``, each with the reason the budget gives."""
    was = {} if before is None else {f.spec: (f.state, f.stride) for f in before.families}
    changes = []
    for f in after.families:
        old = was.get(f.spec, (ACTIVE, 1))
        if (f.state, f.stride) == old:
            continue
        cost = f.cost_s
        if f.state == DROPPED and f.predict_s is not None and f.learn_s is not None:
            cost = f.predict_s + f.learn_s / after.max_stride
        changes.append(PlanChange(f.spec, f.state, f.stride, cost, _why(f, old[0], after)))
    return changes


def _why(f: FamilyStatus, old_state: str, st: SelectionStatus) -> str:
    budget = "no CPU budget"
    if st.cpu_budget is not None and st.rate is not None:
        per = st.cpu_budget / st.rate
        budget = f"the CPU budget, {st.cpu_budget:g} of a core at {st.rate:.0f} examples/s ({per:.3g} s per example)"
    if f.state == DROPPED:
        return f"dropped: does not fit {budget} even learning 1 example in {st.max_stride}"
    if f.state == SUBSAMPLED:
        return f"subsampled: learns 1 example in {f.stride} to fit {budget}"
    if old_state == DROPPED:
        return f"re-admitted, to be measured afresh: its last cost, discounted while dropped, fits {budget}"
    return f"learns every example: fits {budget}"


class _Mean:
    """An exponentially weighted mean, bias-corrected: the plain mean of the first
    measurements, weighting the recent ones more and more (``weight`` on each new one)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self._sum = 0.0
        self._weights = 0.0

    @property
    def value(self) -> float | None:
        return self._sum / self._weights if self._weights > 0 else None

    def add(self, x: float) -> None:
        self._sum += self.weight * (x - self._sum)
        self._weights += self.weight * (1 - self._weights)

    def discount(self, factor: float) -> None:
        self._sum *= factor

    def reset(self) -> None:
        self._sum = self._weights = 0.0


class _Family:
    """A family's learner, its windowed scores, its costs and its stride (learned state)."""

    def __init__(self, spec: str, index: int, model: Any, smoothing: float) -> None:
        self.spec = spec
        self.index = index
        self.model = model
        self.stride = 1
        self.dropped = False
        self.due = 0  # examples to skip before the next one it learns
        self.scores: deque[tuple[int, float, float]] = deque()  # (seq, hit or |error|, log loss or error²)
        self.sum_first = 0.0
        self.sum_second = 0.0
        self.failed: deque[int] = deque()  # seqs of its failures in the window
        self.failures = 0
        self.learned = 0
        self.predict = _Mean(smoothing)  # seconds per example
        self.learn = _Mean(smoothing)  # seconds per example learned

    @property
    def predict_s(self) -> float | None:
        return self.predict.value

    @property
    def learn_s(self) -> float | None:
        return self.learn.value

    def cost(self, stride: int) -> float | None:
        if self.predict_s is None or self.learn_s is None:
            return None
        return self.predict_s + self.learn_s / stride

    def evict(self, oldest: int) -> None:
        while self.scores and self.scores[0][0] < oldest:
            _, a, b = self.scores.popleft()
            self.sum_first -= a
            self.sum_second -= b
        while self.failed and self.failed[0] < oldest:
            self.failed.popleft()

    def resum(self) -> None:
        """Exact sums again, so that float rounding never builds up over a long stream."""
        self.sum_first = math.fsum(a for _, a, _ in self.scores)
        self.sum_second = math.fsum(b for _, _, b in self.scores)


@dataclass(frozen=True)
class _Tested:
    """The test step on ``x``: each active family's answer, or the error it raised."""

    x: dict[str, float]
    answers: dict[str, Any]
    errors: dict[str, Exception]


class Selection:
    """Continuous learners of several model families, scored on the same examples, with a CPU budget.

    ``learners``: the model of each family, by spec, in order of preference (the first wins
    ties); all classifiers or all regressors. ``build(spec)`` makes a fresh model of a family
    (for drift challengers). ``window``: examples the scores cover. ``cpu_budget``: the share of
    one core the families may take at the offered rate (None: no budget). ``max_stride``: the
    sparsest subsample an expensive family is trained on before it is dropped. ``rate_window``:
    examples observed before the rate is measured; ``rate_span_s``: the event time it is
    measured over, at least. ``clock``: seconds, for the costs (the thread's CPU time; inject
    one for tests).

    Use it as a River model, test then train: ``predict_proba_one(x)`` (a regressor:
    ``predict_one(x)``) answers with the leader and has every family predict; ``learn_one(x, y)``
    then scores those predictions and trains the families due to learn. Pass each example's
    time to ``observe`` for the rate.

    >>> from river import linear_model, preprocessing, tree
    >>> sel = Selection(
    ...     {"logreg": preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    ...      "hat": tree.HoeffdingAdaptiveTreeClassifier(seed=1)},
    ...     build=lambda spec: None, window=100)
    >>> for i in range(300):
    ...     x, y = {"a": float(i % 7), "b": float(i % 5)}, i % 7 in (2, 3)  # no straight line splits it
    ...     sel.observe(i * 1000)
    ...     _ = sel.predict_proba_one(x)
    ...     sel.learn_one(x, y)
    >>> sel.leader
    'hat'
    >>> st = sel.status()
    >>> st.family("hat").score > st.family("logreg").score
    True
    """

    def __init__(
        self,
        learners: Mapping[str, Any],
        *,
        build: Callable[[str], Any],
        window: int = 1000,
        cpu_budget: float | None = None,
        max_stride: int = 3,
        replan_every: int = 100,
        rate_window: int = 100,
        rate_span_s: float = 10.0,
        smoothing: float = 0.01,
        clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if not learners:
            raise ConfigError("model selection needs at least one model family")
        if window < 1 or replan_every < 1 or rate_window < 2 or not rate_span_s > 0:
            raise ConfigError(
                "model selection needs window >= 1, replan_every >= 1, rate_window >= 2 and rate_span_s > 0"
            )
        if cpu_budget is not None and not 0 < cpu_budget <= 1:
            raise ConfigError(f"the CPU budget {cpu_budget} is not a share of one core (above 0, at most 1)")
        if max_stride < 1:
            raise ConfigError(f"the maximum sampling stride {max_stride} must be at least 1")
        if not 0 < smoothing <= 1:
            raise ConfigError(f"the cost smoothing {smoothing} must be above 0 and at most 1")
        kinds = {is_regressor(m) for m in learners.values()}
        if len(kinds) > 1:
            raise ConfigError(f"model families {', '.join(learners)} mix classifiers and regressors")
        self.build = build
        self.window = window
        self.cpu_budget = cpu_budget
        self.max_stride = max_stride
        self.replan_every = replan_every
        self.rate_window = rate_window
        self.rate_span_s = rate_span_s
        self.smoothing = smoothing
        self.clock = clock
        self._regression = kinds.pop()
        self._families = [_Family(spec, i, m, smoothing) for i, (spec, m) in enumerate(learners.items())]
        self._by_spec = {f.spec: f for f in self._families}
        self._seq = 0
        self._observed = 0
        self._newest: int | None = None
        self._marks: deque[tuple[int, int]] = deque()  # (examples observed, newest time) at plans
        self._rate: float | None = None
        self._tested: _Tested | None = None
        self._last_failures: tuple[LearnerFailure, ...] = ()

    # --- read-only views -------------------------------------------------------------------------

    @property
    def regression(self) -> bool:
        """Whether the families are regressors (scored by MAE) rather than classifiers."""
        return self._regression

    @property
    def specs(self) -> list[str]:
        return [f.spec for f in self._families]

    @property
    def examples(self) -> int:
        """How many labelled examples the selection has learned from."""
        return self._seq

    @property
    def leader(self) -> str:
        """The family the lifecycle cuts now (the rule in the module docstring)."""
        active = [f for f in self._families if not f.dropped]
        need = min(self.window, self._seq) / 2
        qualified = [f for f in active if len(f.scores) >= need] or active
        return min(qualified, key=self._rank).spec

    @property
    def failures(self) -> dict[str, int]:
        """Examples each family failed on, since the start."""
        return {f.spec: f.failures for f in self._families}

    @property
    def last_failures(self) -> tuple[LearnerFailure, ...]:
        """The families that failed on the latest example learned, for the shell to dead-letter."""
        return self._last_failures

    @property
    def rate(self) -> float | None:
        """Offered examples per second, as of the latest plan (None until ``rate_window`` observed)."""
        return self._rate

    def model(self, spec: str) -> Any:
        return self._by_spec[spec].model

    def score(self, spec: str) -> tuple[int, float | None, float | None]:
        """(examples scored in the window, accuracy or MAE, log loss or RMSE)."""
        f = self._by_spec[spec]
        n = len(f.scores)
        if n == 0:
            return 0, None, None
        # Summed in order, as the lifecycle's scoreboard does: one family alone gives its figures.
        first, second = sum(a for _, a, _ in f.scores) / n, sum(b for _, _, b in f.scores) / n
        return n, first, math.sqrt(second) if self._regression else second

    def status(self) -> SelectionStatus:
        leader = self.leader
        families = []
        for f in self._families:
            n, first, second = self.score(f.spec)
            cost = None if f.dropped else f.cost(f.stride)
            state = DROPPED if f.dropped else SUBSAMPLED if f.stride > 1 else ACTIVE
            families.append(
                FamilyStatus(
                    spec=f.spec,
                    state=state,
                    leader=f.spec == leader,
                    stride=f.stride,
                    scored=n,
                    score=first,
                    loss=second,
                    examples_learned=f.learned,
                    predict_s=f.predict_s,
                    learn_s=f.learn_s,
                    cost_s=cost,
                    failures=f.failures,
                    failures_in_window=len(f.failed),
                )
            )
        costs = [s.cost_s for s in families if s.state != DROPPED]
        share = None
        if self._rate is not None and all(c is not None for c in costs):
            share = self._rate * sum(c for c in costs if c is not None)
        return SelectionStatus(
            leader=leader,
            metric="mae" if self._regression else "accuracy",
            window=self.window,
            examples=self._seq,
            rate=self._rate,
            cpu_budget=self.cpu_budget,
            cpu_share=share,
            max_stride=self.max_stride,
            families=tuple(families),
        )

    def summary(self) -> str:
        """One line for a registration's reason: each family's score, stride or state."""
        parts = []
        for s in self.status().families:
            figure = "-" if s.score is None else f"{s.score:.4g}" if self._regression else f"{s.score:.3f}"
            extra = " dropped" if s.state == DROPPED else f" 1/{s.stride}" if s.stride > 1 else ""
            parts.append(f"{s.spec} {figure}{extra}")
        metric = "MAE" if self._regression else "accuracy"
        return f"{metric} over the last {self.window} examples: {', '.join(parts)}"

    # --- changes ---------------------------------------------------------------------------------

    def fresh(self, spec: str) -> Any:
        """A new, untrained model of family ``spec``."""
        if spec not in self._by_spec:
            raise KeyError(f"{spec} is not one of the families {', '.join(self._by_spec)}")
        return self.build(spec)

    def replace(self, spec: str, model: Any) -> None:
        """Family ``spec`` carries on from ``model`` (a drift challenger of its family that won),
        its scores kept: one series, as the slot served."""
        self._by_spec[spec].model = model

    def observe(self, t_ms: int) -> None:
        """The time of an example (its event time): the offered rate is measured from these."""
        t = int(t_ms)
        self._observed += 1
        if self._newest is None:
            self._marks.append((1, t))
        self._newest = t if self._newest is None or t > self._newest else self._newest

    # --- test then train ---------------------------------------------------------------------

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        """The leader's class probabilities; every active family predicts ``x`` (the test step)."""
        answer = self._test(x).answers.get(self.leader)
        return dict(answer) if isinstance(answer, Mapping) else {}

    def predict_one(self, x: dict[str, float]) -> Any:
        """The leader's answer: a regressor's value (NaN if it failed), a classifier's class."""
        answer = self._test(x).answers.get(self.leader)
        if self._regression:
            return math.nan if answer is None else answer
        proba = answer if isinstance(answer, Mapping) else {}
        return max(proba, key=proba.__getitem__) if proba else None

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        """Score each active family's prediction of ``x`` against ``y``, then train those due."""
        tested = self._tested if self._tested is not None and self._tested.x is x else self._test(x)
        self._tested = None
        self._seq += 1
        seq, oldest = self._seq, self._seq - self.window + 1
        failures: list[LearnerFailure] = []
        for f in self._families:
            f.evict(oldest)
            if f.dropped:
                continue
            if f.spec in tested.errors:
                failures.append(self._fail(f, "predict", tested.errors[f.spec]))
                continue
            answer = tested.answers[f.spec]
            outcome = self._outcome(answer, y)
            if outcome is None:
                failures.append(self._fail(f, "predict", ValueError(f"no finite prediction ({answer!r})")))
                continue
            f.scores.append((seq, *outcome))
            f.sum_first += outcome[0]
            f.sum_second += outcome[1]
            if f.due > 0:
                f.due -= 1
                continue
            f.due = f.stride - 1
            start = self.clock()
            try:
                f.model.learn_one(x, y)
            except Exception as exc:  # noqa: BLE001 - a family's failure must not stop the others
                failures.append(self._fail(f, "learn", exc))
                continue
            f.learn.add(self.clock() - start)
            f.learned += 1
        self._last_failures = tuple(failures)
        if seq % self.replan_every == 0:
            self._plan()

    # --- internals ---------------------------------------------------------------------------

    def _rank(self, f: _Family) -> tuple[int, float, int]:
        n = len(f.scores)
        if n == 0:
            return len(f.failed), math.inf, f.index
        mean = f.sum_first / n
        return len(f.failed), mean if self._regression else -mean, f.index

    def _test(self, x: dict[str, float]) -> _Tested:
        """Every active family's prediction of ``x``, and the errors of those that raised."""
        answers: dict[str, Any] = {}
        errors: dict[str, Exception] = {}
        for f in self._families:
            if f.dropped:
                continue
            start = self.clock()
            try:
                answers[f.spec] = f.model.predict_one(x) if self._regression else f.model.predict_proba_one(x)
            except Exception as exc:  # noqa: BLE001 - a family's failure must not stop the others
                errors[f.spec] = exc
                continue
            f.predict.add(self.clock() - start)
        tested = _Tested(x, answers, errors)
        self._tested = tested
        return tested

    def _outcome(self, answer: Any, y: Any) -> tuple[float, float] | None:
        if self._regression:
            try:
                error = float(answer) - float(y)
            except (TypeError, ValueError):
                return None
            return (abs(error), error * error) if math.isfinite(error) else None
        proba: Mapping[Any, float] = answer or {}
        predicted = max(proba, key=proba.__getitem__) if proba else None
        p = next((float(v) for k, v in proba.items() if same_class(k, y)), 0.0)
        return float(same_class(predicted, y)), -math.log(max(p, _MIN_P))

    def _fail(self, f: _Family, stage: str, exc: Exception) -> LearnerFailure:
        f.failures += 1
        f.failed.append(self._seq)
        error = LearnerFailed(f"model family {f.spec} failed to {stage} the example: {type(exc).__name__}: {exc}")
        return LearnerFailure(f.spec, stage, error)

    def _plan(self) -> None:
        """Strides and drops for the budget at the offered rate (the rule in the module docstring)."""
        for f in self._families:
            f.resum()
        self._rate = self._measure_rate()
        if self.cpu_budget is None or self._rate is None:
            return
        for f in self._families:
            if f.dropped:  # tried again once its discounted cost fits (then measured afresh)
                f.predict.discount(1 - RETRY_DISCOUNT)
                f.learn.discount(1 - RETRY_DISCOUNT)
        measured = sorted((f for f in self._families if f.cost(1) is not None), key=lambda f: (f.cost(1), f.index))
        for f in self._families:
            if f.cost(1) is None:
                self._set(f, 1)  # not measured yet (it never answered): it costs nothing so far
        left = self.cpu_budget / self._rate  # seconds of one core per example
        for i, f in enumerate(measured):
            assert f.predict_s is not None and f.learn_s is not None
            stride = 1 if i == 0 else self._stride(f.predict_s, f.learn_s, left)  # the cheapest: the floor
            if stride is not None:
                left -= f.predict_s + f.learn_s / stride
            self._set(f, stride)

    def _stride(self, predict_s: float, learn_s: float, left: float) -> int | None:
        """The smallest stride whose cost fits in ``left`` seconds, None if not even ``max_stride``."""
        spare = left - predict_s
        if spare <= 0:
            return None
        stride = max(1, math.ceil(learn_s / spare - 1e-9))
        return stride if stride <= self.max_stride else None

    def _set(self, f: _Family, stride: int | None) -> None:
        if stride is None:
            f.dropped = True
            return
        if f.dropped:  # re-admitted: what it costs now is measured afresh
            f.predict.reset()
            f.learn.reset()
        if f.dropped or stride != f.stride:
            f.due = 0  # learn the next example, then every stride-th
        f.dropped = False
        f.stride = stride

    def _measure_rate(self) -> float | None:
        """Examples observed per second by which the newest time advanced, since the latest mark
        at least ``rate_span_s`` behind it (or the first); marks are taken at each plan."""
        newest, marks = self._newest, self._marks
        if newest is None:
            return None
        while len(marks) >= 2 and newest - marks[1][1] >= self.rate_span_s * 1000:
            marks.popleft()
        n0, t0 = marks[0]
        marks.append((self._observed, newest))
        if self._observed < self.rate_window:
            return None
        return (self._observed - n0) / max((newest - t0) / 1000, 0.001)
