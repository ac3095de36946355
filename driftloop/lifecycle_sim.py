"""The loop's served accuracy, simulated in one process through the real lifecycle core (pure).

Replays a dataset as the loop serves it: event i is predicted by the champion inference
holds at that moment (frozen, as registered; an untrained bootstrap until the first trained
version); the label of event i reaches retraining right after event i + ``label_delay``
(``schedule`` in streams.py) and goes to ``Lifecycle.learn``; the actions it returns change
the served model ``lag`` events later (registry topic, inference's swap). Optionally, the
monitoring core's concept detectors watch the champion's outcomes and their alerts reach
``Lifecycle.on_drift`` ``lag`` events later, as retraining's shell passes them on.

Kafka, batching, partition interleaving and timing are not simulated: ``lag`` stands for
all of it. Use it to compare policies over a range of lags, not as the loop's figure (the
README's Command line section compares the two).

    python -m driftloop.lifecycle_sim --dataset elec2 --lag 0 --lag 200
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftloop.services.retraining.lifecycle import Lifecycle, Promote, Register, Reject, Rollback
from driftloop.shared.errors import DriftloopError
from driftloop.shared.modelspec import build_model, predict, same_class
from driftloop.streams import load_dataset, numeric


@dataclass(frozen=True)
class Policy:
    """The retraining settings that shape what is served (RetrainingSettings' names)."""

    version_every: int = 100
    promotion_min_examples: int = 100
    promotion_margin: float = 0.0
    first_version_after: int = 200
    rollback_window: int = 300
    rollback_margin: float = 0.02
    challenger_buffer: int = 200
    evaluation_window: int = 1000
    challenger_takes_over: bool = False
    schedule_s: float = 0.0  # event time carries no meaning in a replay: cuts by count only

    def lifecycle(self, spec: str, seed: int, next_version: Any) -> Lifecycle:
        return Lifecycle.from_policy(
            self, build_model(spec, seed), build=lambda: build_model(spec, seed), next_version=next_version
        )


@dataclass
class SimResult:
    served_accuracy: float
    static_accuracy: float | None  # the first trained version, frozen, after its training window
    served_accuracy_same_window: float | None
    versions: int = 0
    promotions: int = 0
    rejections: int = 0
    rollbacks: int = 0
    alerts: int = 0
    swaps: int = 0
    hits: list[bool] = field(default_factory=list, repr=False)
    served_versions: list[int] = field(default_factory=list, repr=False)  # in serving order
    champions: set[int] = field(default_factory=set, repr=False)  # made champion by an action

    def figures(self) -> dict[str, Any]:
        hidden = ("hits", "served_versions", "champions")
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items() if k not in hidden}


def simulate(
    rows: Sequence[tuple[dict[str, Any], Any]],
    policy: Policy = Policy(),
    *,
    label_delay: int = 50,
    lag: int = 25,
    drift: bool = False,
    spec: str = "logreg",
    seed: int = 42,
) -> SimResult:
    """Served accuracy over every event, as the loop would serve ``rows``."""
    loop = _Loop(policy, spec, seed, lag, drift)
    n = len(rows)
    for i in range(n + label_delay):
        if i < n:
            loop.serve(i, rows[i])
        j = i - label_delay
        if 0 <= j < n and rows[j][1] is not None:
            loop.label(i, j, rows[j][1])
        loop.made.pop(j, None)
    return loop.result(rows)


class _Loop:
    """One simulation's state: the registered versions, the served model, and the swaps and
    alerts on their way (each ``lag`` events from the action that caused it)."""

    def __init__(self, policy: Policy, spec: str, seed: int, lag: int, drift: bool) -> None:
        self.lag = lag
        self.latest = 1  # v1: the untrained bootstrap inference registers
        self.lifecycle = policy.lifecycle(spec, seed, lambda: self.latest + 1)
        self.monitor = None
        if drift:
            from driftloop.services.monitoring.core import Monitor

            self.monitor = Monitor(input_detectors=(), prediction_detectors=())
        self.registered: dict[int, Any] = {}
        self.served, self.served_version = build_model(spec, seed), 1
        self.switches: deque[tuple[int, int, Any]] = deque()  # (from event, version, model)
        self.alerts: deque[tuple[int, str]] = deque()
        self.made: dict[int, tuple[int, Any, dict[str, float]]] = {}  # event -> (version, predicted, scores)
        self.xs: list[dict[str, float]] = []
        self.res = SimResult(0.0, None, None)
        self.static: tuple[Any, int] | None = None

    def serve(self, i: int, row: tuple[dict[str, Any], Any]) -> None:
        """Event i: the swaps and alerts due by now, then the served model's prediction."""
        while self.switches and self.switches[0][0] <= i:
            _, self.served_version, self.served = self.switches.popleft()
            self.res.swaps += 1
            self.res.served_versions.append(self.served_version)
        while self.alerts and self.alerts[0][0] <= i:
            self.apply(self.lifecycle.on_drift(self.alerts.popleft()[1]), i)
        x, y = numeric(row[0]), row[1]
        self.xs.append(x)
        predicted, scores = predict(self.served, x)
        self.made[i] = (self.served_version, predicted, scores)
        self.res.hits.append(same_class(predicted, y))

    def label(self, i: int, j: int, y: Any) -> None:
        """Event j's label, arriving at event i: to the monitor, then to the lifecycle."""
        if self.monitor is not None:
            self.watch(i, j, y)
        example = {
            "event_id": str(j),
            "event_time": j,
            "features": self.xs[j],
            "label": y,
            "feature_set_version": "fs1",
        }
        self.apply(self.lifecycle.learn(example), i)

    def watch(self, i: int, j: int, y: Any) -> None:
        assert self.monitor is not None
        version, predicted, scores = self.made[j]
        loss = 0.0 if same_class(predicted, y) else 1.0
        out = {
            "model_name": "default",
            "model_version": version,
            "role": "champion",
            "predicted": predicted,
            "scores": scores,
            "label": y,
            "correct": loss == 0.0,
            "loss": loss,
        }
        for d in self.monitor.on_outcome(out):
            if d.kind in ("concept", "performance"):
                self.res.alerts += 1
                self.alerts.append((i + self.lag, f"a{self.res.alerts}"))

    def apply(self, actions: list[Any], i: int) -> None:
        res = self.res
        for a in actions:
            if isinstance(a, Register):
                res.versions += 1
                self.latest = max(self.latest, a.version)
                self.registered[a.version] = copy.deepcopy(a.model)  # the artifact
                if a.direct:
                    res.champions.add(a.version)
                    self.switches.append((i + self.lag, a.version, self.registered[a.version]))
                    if self.static is None:
                        self.static = (self.registered[a.version], int(a.window["last_event_id"]) + 1)
            elif isinstance(a, Promote):
                res.promotions += 1
                res.champions.add(a.version)
                self.switches.append((i + self.lag, a.version, self.registered[a.version]))
            elif isinstance(a, Reject):
                res.rejections += 1
            elif isinstance(a, Rollback):
                res.rollbacks += 1
                res.champions.add(a.to)
                self.switches.append((i + self.lag, a.to, self.registered[a.to]))
        # The shell's on_change calls champion_changed only for a champion it did not set
        # itself (an operator): never here. Its on_batch withdraws candidates whose status
        # changed outside the lifecycle: never here either.

    def result(self, rows: Sequence[tuple[dict[str, Any], Any]]) -> SimResult:
        res = self.res
        res.served_accuracy = sum(res.hits) / len(rows)
        if self.static is not None:
            model, start = self.static
            hits = [same_class(predict(model, numeric(f))[0], y) for f, y in rows[start:]]
            res.static_accuracy = sum(hits) / len(hits) if hits else None
            res.served_accuracy_same_window = sum(res.hits[start:]) / len(hits) if hits else None
        return res


def bare_river(
    rows: Sequence[tuple[dict[str, Any], Any]], label_delay: int, spec: str = "logreg", seed: int = 42
) -> float:
    """Prequential accuracy, labels ``label_delay`` events late: the bare-River reference
    (``driftloop bench`` times this same loop)."""
    model = build_model(spec, seed)
    hits = 0
    pending: deque[tuple[dict[str, float], Any]] = deque()
    for fields, label in rows:
        x = numeric(fields)
        hits += same_class(predict(model, x)[0], label)
        pending.append((x, label))
        if len(pending) > label_delay:
            model.learn_one(*pending.popleft())
    return hits / len(rows)


POLICIES: dict[str, Policy] = {
    "demo 100/100": Policy(),
    "50/50": Policy(version_every=50, promotion_min_examples=50),
    "25/25": Policy(version_every=25, promotion_min_examples=25),
    "demo 100/100, a winning challenger takes over": Policy(challenger_takes_over=True),
    "service defaults 1000/200/0.01": Policy(version_every=1000, promotion_min_examples=200, promotion_margin=0.01),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="sea")
    p.add_argument("--target")
    p.add_argument("--events", type=int)
    p.add_argument("--label-delay", type=int, default=50)
    p.add_argument("--lag", type=int, action="append", help="events from an action to the swap (default: 200)")
    p.add_argument("--drift", action="store_true", help="concept alerts from the monitoring core")
    p.add_argument("--policy", action="append", help="names from POLICIES (default: all)")
    args = p.parse_args(argv)
    try:
        rows = load_dataset(args.dataset, args.target, args.events).rows
    except DriftloopError as exc:  # a dataset that is not there: one line, not a traceback
        print(f"lifecycle_sim: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"dataset": Path(args.dataset).stem, "bare_river": round(bare_river(rows, args.label_delay), 4)}))
    for name in args.policy or POLICIES:
        for lag in args.lag or [200]:
            r = simulate(rows, POLICIES[name], label_delay=args.label_delay, lag=lag, drift=args.drift)
            print(json.dumps({"policy": name, "lag": lag, **r.figures()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
