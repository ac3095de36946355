"""Per-entity windowed aggregates, computed point-in-time (pure: time comes from the event).

A spec is a tuple of ``Aggregate`` (a statistic of one numeric field over a window) and
``Ratio`` (one feature divided by another). The vector of an event at event time ``t``
covers the entity's events seen so far whose event time lies in the window that ends at
``t``, the event itself included: an event with a later event time never leaks in, even
when it arrived first.

Windows, as the time range ``[start, t]`` an event at ``t`` is computed over:

- ``sliding(size)``: ``(t - size, t]``.
- ``tumbling(size)``: from the start of the size-aligned bucket holding ``t``.
- ``hopping(size, step)``: from the start of the oldest step-aligned window of length
  ``size`` that still holds ``t`` (the smallest multiple of ``step`` above ``t - size``).

Statistics: ``count`` (events carrying a number in the field; 0 when none), ``mean``,
``std`` (population), ``min``, ``max``, ``ewma`` (weight ``alpha`` on each newer value,
in event-time order), ``since_last`` (seconds since the entity's previous event carrying
the field, within the window). Booleans count as 0/1; strings and nulls are skipped. A
statistic with no value in its window is left out of the vector (River reads an absent
key as missing), except count.

Late and out-of-order events. Each entity keeps a watermark W, its newest event time.
An event with ``t >= W - lateness`` is accepted: it is inserted at its event-time place
(so later events see it) and its own vector is computed over the events at or before
``t``, exactly as if the stream had been in order up to it. An event with
``t < W - lateness`` is *too late*: the windows it needs may be pruned already, so it
gets no windowed features at all (passthrough features and ratios over them only) and
leaves the state untouched; the shell counts it. ``lateness`` defaults to the largest
window size. An event_id already in the state (an at-least-once redelivery) is not
added twice.

State per entity is a JSON-serialisable dict ``{"w": W, "ev": [[t, event_id, {field:
value}], ...]}`` sorted by event time, bounded in time (events older than
``W - lateness - largest window`` are pruned) and in size (``max_events``, oldest
dropped first; past that cap the windows cover only the newest events).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftloop.shared.errors import ConfigError

KINDS = ("sliding", "tumbling", "hopping")
STATS = ("count", "mean", "std", "min", "max", "ewma", "since_last")
DEFAULT_ALPHA = 0.3
_UNITS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")


def parse_duration(text: str) -> int:
    """``30m`` -> 1_800_000 (milliseconds); units d, h, m, s, ms."""
    m = _DURATION.match(text.strip())
    if m is None or int(m.group(1)) == 0:
        raise ConfigError(f"{text!r} is not a positive duration such as 500ms, 30s, 15m, 1h or 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_duration(ms: int) -> str:
    for unit, size in _UNITS.items():
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise AssertionError("ms divides everything")


@dataclass(frozen=True)
class Window:
    kind: str
    size_ms: int
    step_ms: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"window kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.size_ms < 1:
            raise ConfigError("a window size must be positive")
        if (self.kind == "hopping") != (self.step_ms is not None):
            raise ConfigError("a hopping window needs a step, and only a hopping window has one")
        if self.step_ms is not None and not 0 < self.step_ms <= self.size_ms:
            raise ConfigError("a hopping window's step must be positive and at most its size")

    def start(self, t: int) -> int:
        """The oldest event time (inclusive) in the window that ends at ``t``."""
        if self.kind == "sliding":
            return t - self.size_ms + 1
        step = self.size_ms if self.kind == "tumbling" else self.step_ms
        assert step is not None
        return ((t - self.size_ms) // step + 1) * step

    @property
    def label(self) -> str:
        parts = [self.kind, format_duration(self.size_ms)]
        if self.step_ms is not None:
            parts.append(format_duration(self.step_ms))
        return "_".join(parts)


@dataclass(frozen=True)
class Aggregate:
    field: str
    stat: str
    window: Window
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        if self.stat not in STATS:
            raise ConfigError(f"statistic {self.stat!r} is not one of {', '.join(STATS)}")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"ewma alpha {self.alpha} must be in (0, 1]")

    @property
    def name(self) -> str:
        stat = f"ewma{self.alpha:g}" if self.stat == "ewma" else self.stat
        return f"{self.field}_{stat}_{self.window.label}"


@dataclass(frozen=True)
class Ratio:
    numerator: str
    denominator: str

    @property
    def name(self) -> str:
        return f"{self.numerator}/{self.denominator}"


def parse_spec(text: str) -> tuple[tuple[Aggregate, ...], tuple[Ratio, ...]]:
    """Parse ``field:stat:kind:size[:step]`` and ``ratio:A:B`` items, comma-separated.

    ``stat`` may be ``ewma=ALPHA``. Example: ``nswprice:mean:sliding:1h,nswprice:count:tumbling:30m,
    ratio:nswprice:nswprice_mean_sliding_1h``. Raises ConfigError naming the bad item.
    """
    aggregates: dict[str, Aggregate] = {}
    ratios: dict[str, Ratio] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = [p.strip() for p in item.split(":")]
        try:
            if parts[0] == "ratio":
                if len(parts) != 3 or not all(parts[1:]):
                    raise ConfigError("a ratio is ratio:NUMERATOR:DENOMINATOR")
                r = Ratio(parts[1], parts[2])
                ratios[r.name] = r
                continue
            if len(parts) not in (4, 5) or not parts[0]:
                raise ConfigError("expected FIELD:STAT:KIND:SIZE[:STEP] or ratio:A:B")
            name, stat, kind = parts[0], parts[1], parts[2]
            alpha = DEFAULT_ALPHA
            if stat.startswith("ewma="):
                try:
                    alpha = float(stat[5:])
                except ValueError:
                    raise ConfigError(f"ewma alpha {stat[5:]!r} is not a number") from None
                stat = "ewma"
            step = parse_duration(parts[4]) if len(parts) == 5 else None
            agg = Aggregate(name, stat, Window(kind, parse_duration(parts[3]), step), alpha)
            aggregates[agg.name] = agg
        except ConfigError as exc:
            raise ConfigError(f"DRIFTLOOP_FEATURES_WINDOWS item {item!r}: {exc}") from None
    return tuple(aggregates.values()), tuple(ratios.values())


def numeric(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def statistic(agg: Aggregate, points: Sequence[tuple[int, float]]) -> float | None:
    """``agg``'s statistic over ``points``, (event time, value) in event-time order (the
    current event last among equal times); also the tests' brute-force reference."""
    values = [v for _, v in points]
    if agg.stat == "count":
        return float(len(values))
    if not values:
        return None
    if agg.stat == "mean":
        return math.fsum(values) / len(values)
    if agg.stat == "std":
        mean = math.fsum(values) / len(values)
        return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if agg.stat == "min":
        return min(values)
    if agg.stat == "max":
        return max(values)
    if agg.stat == "ewma":
        ewma = values[0]
        for v in values[1:]:
            ewma = agg.alpha * v + (1 - agg.alpha) * ewma
        return ewma
    raise AssertionError(agg.stat)


def apply_ratios(features: dict[str, float], ratios: Sequence[Ratio]) -> None:
    for r in ratios:
        num, den = features.get(r.numerator), features.get(r.denominator)
        if num is not None and den:
            features[r.name] = num / den


@dataclass(frozen=True)
class Outcome:
    features: dict[str, float]
    state: dict[str, Any]
    status: str  # "in_order", "out_of_order" (accepted), "too_late", "duplicate"


@dataclass(frozen=True)
class WindowedFeatures:
    """Windowed aggregates of one entity's events; the state lives with the caller."""

    aggregates: tuple[Aggregate, ...]
    lateness_ms: int | None = None
    max_events: int = 10_000
    _fields: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fields", frozenset(a.field for a in self.aggregates))
        if self.max_events < 1:
            raise ConfigError("max_events must be positive")

    @property
    def largest_window_ms(self) -> int:
        return max((a.window.size_ms for a in self.aggregates), default=0)

    @property
    def lateness(self) -> int:
        return self.largest_window_ms if self.lateness_ms is None else self.lateness_ms

    def update(self, state: Mapping[str, Any] | None, event_id: str, t: int, fields: Mapping[str, Any]) -> Outcome:
        """The windowed features of the event at ``t`` and the entity's state after it."""
        ev: list[list[Any]] = list(state["ev"]) if state else []
        w: int | None = state["w"] if state else None
        if w is not None and t < w - self.lateness:
            return Outcome({}, dict(state or {}), "too_late")
        lo = bisect.bisect_left(ev, t, key=lambda e: e[0])
        hi = bisect.bisect_right(ev, t, key=lambda e: e[0])
        if any(e[1] == event_id for e in ev[lo:hi]):
            status = "duplicate"
            pos = next(i for i in range(lo, hi) if ev[i][1] == event_id)
            upto = pos + 1
        else:
            status = "in_order" if w is None or t >= w else "out_of_order"
            values = {f: v for f in self._fields if (v := numeric(fields.get(f))) is not None}
            ev.insert(hi, [t, event_id, values])
            upto = hi + 1
            w = t if w is None else max(w, t)
            horizon = w - self.lateness - self.largest_window_ms
            cut = bisect.bisect_right(ev, horizon, key=lambda e: e[0])
            cut = max(cut, len(ev) - self.max_events)
            if cut > 0:
                del ev[:cut]
                upto -= cut
        features = self._compute(ev[:upto], t, event_id)
        return Outcome(features, {"w": w, "ev": ev}, status)

    def _compute(self, ev: Sequence[Sequence[Any]], t: int, event_id: str) -> dict[str, float]:
        """``ev``: the state's events up to and including the current one, in event-time order."""
        out: dict[str, float] = {}
        for agg in self.aggregates:
            start = bisect.bisect_left(ev, agg.window.start(t), key=lambda e: e[0])
            if agg.stat == "since_last":
                prev = [e[0] for e in ev[start:] if agg.field in e[2] and e[1] != event_id]
                if prev:
                    out[agg.name] = (t - prev[-1]) / 1000.0
                continue
            points = [(e[0], e[2][agg.field]) for e in ev[start:] if agg.field in e[2]]
            value = statistic(agg, points)
            if value is not None:
                out[agg.name] = value
        return out
