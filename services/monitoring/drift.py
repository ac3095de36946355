"""Drift detectors (pure): River's streaming detectors and a PSI reference-window distance,
behind one small interface, plus the de-bouncing that turns detections into alerts.

Every detector takes one number per update and reports whether it detected a change.
``statistic`` and ``threshold`` say what the detector measured and against what, for the
DriftAlert record and for Prometheus.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from river import drift

from driftloop.shared.errors import ConfigError


class Detector(Protocol):
    name: str

    def update(self, x: float) -> bool: ...

    @property
    def statistic(self) -> float: ...

    @property
    def threshold(self) -> float: ...

    @property
    def window_size(self) -> int: ...


class _RiverDetector:
    """Wraps one River drift detector."""

    def __init__(self, name: str, detector: drift.base.DriftDetector, threshold: float) -> None:
        self.name = name
        self._d = detector
        self._threshold = threshold
        self._n = 0
        self._last = 0.0

    def update(self, x: float) -> bool:
        self._n += 1
        self._last = x
        self._d.update(x)
        return bool(self._d.drift_detected)

    @property
    def statistic(self) -> float:
        d = self._d
        if isinstance(d, drift.ADWIN):
            return float(d.estimation)
        if isinstance(d, drift.KSWIN):
            return float(d.p_value) if d.p_value is not None and d.n else 1.0
        if isinstance(d, drift.PageHinkley):
            stat = max(d._sum_increase - d._min_increase, d._max_decrease - d._sum_decrease)
            return float(max(stat, 0.0))
        return float(self._last)

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def window_size(self) -> int:
        d = self._d
        if isinstance(d, drift.ADWIN):
            return int(d.width)
        if isinstance(d, drift.KSWIN):
            return int(d.window_size)
        return self._n


class PSIDetector:
    """Population stability index between a reference window and a sliding current window.

    The first ``reference_size`` values form the reference; bins are its deciles. The PSI
    of the latest ``window`` values against it is computed every ``every`` updates and a
    drift is reported when it exceeds ``threshold`` (0.2 is the usual "significant shift").
    """

    name = "PSI"

    def __init__(self, reference_size: int = 500, window: int = 500, threshold: float = 0.2, every: int = 50) -> None:
        self.reference_size = reference_size
        self.window = window
        self._threshold = threshold
        self.every = every
        self._reference: list[float] = []
        self._edges: np.ndarray | None = None
        self._ref_frac: np.ndarray | None = None
        self._current: deque[float] = deque(maxlen=window)
        self._n = 0
        self._psi = 0.0

    def update(self, x: float) -> bool:
        self._n += 1
        if self._edges is None:
            self._reference.append(x)
            if len(self._reference) >= self.reference_size:
                self._fit_reference()
            return False
        self._current.append(x)
        if len(self._current) < self.window or self._n % self.every:
            return False
        current = self._fractions(np.fromiter(self._current, float))
        self._psi = psi(self._ref_frac, current)  # type: ignore[arg-type]
        if self._psi <= self._threshold:
            return False
        # A shift that persists is one drift: the next reference_size values, all after the
        # change, become the new reference (the window at alert time still straddles it).
        self._edges = self._ref_frac = None
        self._current.clear()
        return True

    def _fit_reference(self) -> None:
        ref = np.asarray(self._reference, dtype=float)
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
        self._edges = edges
        self._ref_frac = self._fractions(ref)
        self._reference = []

    def _fractions(self, values: np.ndarray) -> np.ndarray:
        assert self._edges is not None
        counts = np.bincount(np.searchsorted(self._edges, values, side="right"), minlength=len(self._edges) + 1)
        return counts / max(1, len(values))

    @property
    def statistic(self) -> float:
        return self._psi

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def window_size(self) -> int:
        return len(self._current)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    e = np.clip(expected, eps, None)
    a = np.clip(actual, eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


DETECTORS: dict[str, Callable[[int], Detector]] = {
    "adwin": lambda seed: _RiverDetector("ADWIN", drift.ADWIN(delta=0.002), 0.002),
    "kswin": lambda seed: _RiverDetector(
        "KSWIN", drift.KSWIN(alpha=0.0001, window_size=300, stat_size=100, seed=seed), 0.0001
    ),
    # Parameters chosen with `driftloop evaluate-drift`: River's defaults raise more false
    # alarms (Page-Hinkley, EDDM) or miss drifts (DDM); the figures are in the README
    # (Development, Measured choices).
    "page_hinkley": lambda seed: _RiverDetector("PageHinkley", drift.PageHinkley(delta=0.05, threshold=50.0), 50.0),
    "ddm": lambda seed: _RiverDetector("DDM", drift.binary.DDM(warm_start=300), 3.0),
    "eddm": lambda seed: _RiverDetector("EDDM", drift.binary.EDDM(warm_start=100), 0.9),
    "psi": lambda seed: PSIDetector(),
}


@dataclass(frozen=True)
class Tunable:
    """A detector's one sensitivity knob: ``build(value, scale, seed)`` over ``grid``, from the
    least to the most sensitive value. ``scale`` is the standard deviation of the values it
    will watch, for detectors whose threshold is in the values' units."""

    build: Callable[[float, float, int], Detector]
    grid: tuple[float, ...]


def _grid(first: float, last: float, n: int = 16, *, log: bool = True) -> tuple[float, ...]:
    return tuple(float(v) for v in (np.geomspace if log else np.linspace)(first, last, n))


#: What calibration may turn. KSWIN is left at its fixed alpha: it runs a two-sample KS test
#: on every update, far too slow to simulate the long stationary streams calibration needs.
TUNABLE: dict[str, Tunable] = {
    "adwin": Tunable(lambda d, sd, seed: _RiverDetector("ADWIN", drift.ADWIN(delta=d), d), _grid(1e-5, 0.9)),
    "ddm": Tunable(
        lambda t, sd, seed: _RiverDetector(
            "DDM", drift.binary.DDM(warm_start=300, warning_threshold=2 * t / 3, drift_threshold=t), t
        ),
        _grid(6.0, 2.0, log=False),
    ),
    "eddm": Tunable(
        lambda b, sd, seed: _RiverDetector(
            "EDDM", drift.binary.EDDM(warm_start=100, alpha=min(0.99, b + 0.05), beta=b), b
        ),
        _grid(0.5, 0.94, log=False),
    ),
    "page_hinkley": Tunable(
        lambda k, sd, seed: _RiverDetector("PageHinkley", drift.PageHinkley(delta=0.05 * sd, threshold=k * sd), k * sd),
        _grid(2000.0, 5.0),
    ),
    "psi": Tunable(lambda t, sd, seed: PSIDetector(threshold=t), _grid(2.0, 0.02)),
}


@dataclass(frozen=True)
class Calibration:
    """Calibrate the tunable detectors of a subject to a false-alarm rate on stationary data.

    A subject's first ``warmup`` values are its reference. Calibration draws a stationary
    stream from them (blocks of ``block`` consecutive values, drawn with replacement: the
    short-range dependence of a score or a sensor survives, any longer trend or drift
    within the warm-up does not) and picks the most sensitive value of each detector's knob
    that fires at most its share of ``false_alarms_per_10k`` per 10,000 values on it. The
    rate is the subject's: its tunable detectors split it evenly. The simulated stream holds
    about five alarms at a detector's share, enough to tell one grid step from the next.
    Dependence longer than a block (a slowly moving price) still alarms above the target."""

    false_alarms_per_10k: float
    warmup: int = 500
    events: int = 0  # 0: five alarms' worth at a detector's share, within [20k, 200k]
    block: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.false_alarms_per_10k <= 1000:
            raise ConfigError(
                f"a target false-alarm rate is in (0, 1000] alarms per 10,000 values, not {self.false_alarms_per_10k}"
            )
        if self.warmup < 30:
            raise ConfigError(f"calibration needs a warm-up of at least 30 values, not {self.warmup}")
        if self.block < 1:
            raise ConfigError(f"a resampling block is at least 1 value, not {self.block}")

    def simulated(self, rate_per_10k: float) -> int:
        if self.events:
            return self.events
        return int(min(200_000, max(20_000, math.ceil(50_000 / rate_per_10k))))


def alarms(detector: Detector, values: Sequence[float]) -> int:
    """How often ``detector`` fires over ``values``."""
    return sum(detector.update(x) for x in values)


def resample(values: np.ndarray, n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values of consecutive ``block``-long runs of ``values``, drawn with replacement."""
    block = max(1, min(block, values.size))
    starts = rng.integers(0, values.size - block + 1, size=math.ceil(n / block))
    return values[(starts[:, None] + np.arange(block)).ravel()[:n]]


def calibrate(spec: str, sample: Sequence[float], calibration: Calibration, seed: int, share: int = 1) -> float:
    """The most sensitive knob value of ``spec`` within ``1/share`` of ``calibration``'s
    false-alarm rate on a stationary stream resampled from ``sample`` (the least sensitive
    value when none is within it)."""
    tunable = TUNABLE[spec]
    values = np.asarray(sample, dtype=float)
    if values.size == 0:
        raise ValueError("calibration needs at least one value")
    scale = float(values.std()) or 1.0
    rate = calibration.false_alarms_per_10k / max(1, share)
    n = calibration.simulated(rate)
    stream = resample(values, n, calibration.block, np.random.default_rng(seed)).tolist()
    budget = rate * n / 10_000
    # False alarms grow along the grid (the same stream for every value keeps that so):
    # bisect for the last value within the budget.
    lo, hi, best = 0, len(tunable.grid) - 1, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if alarms(tunable.build(tunable.grid[mid], scale, seed), stream) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return tunable.grid[best]


#: Detectors that take a 0/1 error stream only, and those that are blind on one.
BINARY_ONLY = frozenset({"ddm", "eddm"})
NUMERIC_ONLY = frozenset({"psi"})


def make_detector(spec: str, seed: int = 42) -> Detector:
    try:
        return DETECTORS[spec](seed)
    except KeyError:
        raise ConfigError(f"unknown drift detector {spec!r}; choose from {', '.join(DETECTORS)}") from None


def parse_detectors(text: str, *, binary: bool | None) -> tuple[str, ...]:
    """A comma-separated detector list from settings, checked against the subject it will
    watch (a 0/1 error stream when ``binary``; None checks the names only)."""
    specs = tuple(s.strip().lower() for s in text.split(",") if s.strip())
    for s in specs:
        if s not in DETECTORS:
            raise ConfigError(f"unknown drift detector {s!r}; choose from {', '.join(DETECTORS)}")
        if s in NUMERIC_ONLY and binary is True:
            raise ConfigError(f"{s} compares distributions of a numeric value; it cannot watch a 0/1 error stream")
        if s in BINARY_ONLY and binary is False:
            raise ConfigError(f"{s} watches a 0/1 error stream; it cannot watch a feature or a score")
    return specs


class Debouncer:
    """One alert per drift: after an alert on a subject, its detections are swallowed
    for ``cooldown`` observations of that subject."""

    def __init__(self, cooldown: int) -> None:
        self.cooldown = cooldown
        self._seen: dict[str, int] = {}
        self._last: dict[str, int] = {}

    def allow(self, subject: str, fired: bool) -> bool:
        n = self._seen.get(subject, 0) + 1
        self._seen[subject] = n
        if not fired:
            return False
        last = self._last.get(subject)
        if last is not None and n - last < self.cooldown:
            return False
        self._last[subject] = n
        return True


@dataclass(frozen=True)
class Detection:
    kind: str  # input | prediction | concept
    detector: str
    subject: str
    statistic: float
    threshold: float
    window_size: int


class SubjectDetectors:
    """The configured detectors on one subject (a feature, the score, the error stream).

    With ``increase_only`` (the error stream), a detection counts only when the recent
    values run above the long-run level: a model getting better is not a concept drift,
    and a partitioned stream, consumed a batch per partition at a time, otherwise shows
    "drifts" back down whenever it moves from a post-drift to a pre-drift stretch.
    """

    RECENT = 100

    def __init__(
        self,
        kind: str,
        subject: str,
        specs: Sequence[str],
        seed: int,
        debouncer: Debouncer,
        increase_only: bool = False,
        calibration: Calibration | None = None,
    ) -> None:
        self.kind = kind
        self.subject = subject
        self.specs = tuple(specs)
        self.seed = seed
        self.debouncer = debouncer
        self.increase_only = increase_only
        self.calibration = calibration if any(s in TUNABLE for s in self.specs) else None
        #: Each tunable detector's calibrated knob value, once installed.
        self.tuned: dict[str, float] = {}
        #: Until calibrated detectors are installed: every value seen, with whether the
        #: errors were rising. The first ``calibration.warmup`` of them are the reference.
        self._pending: list[tuple[float, bool]] | None = [] if self.calibration else None
        #: Set by whoever took the due calibration on (Monitor.take_due).
        self.claimed = False
        self.detectors = [] if self.calibration else [make_detector(s, seed) for s in self.specs]
        self._recent: deque[float] = deque(maxlen=self.RECENT)
        self._recent_sum = 0.0
        self._long = 0.0
        self._n = 0

    def _rising(self, x: float) -> bool:
        if len(self._recent) == self.RECENT:
            self._recent_sum -= self._recent[0]
        self._recent.append(x)
        self._recent_sum += x
        self._n += 1
        self._long += (x - self._long) / min(self._n, 1000)  # mean of the last ~1000
        return self._recent_sum / len(self._recent) > self._long

    def update(self, x: float) -> list[Detection]:
        if not math.isfinite(x):
            return []
        rising = self._rising(x) if self.increase_only else True
        if self._pending is None:
            return self._step(x, rising)
        self._pending.append((x, rising))
        return []

    @property
    def calibrating(self) -> bool:
        """No detector runs yet: values are kept until calibrated detectors are installed."""
        return self._pending is not None

    @property
    def due(self) -> bool:
        """The warm-up is complete: ``tune`` can run on ``sample()``."""
        cal = self.calibration
        return self._pending is not None and cal is not None and len(self._pending) >= cal.warmup

    def sample(self) -> list[float]:
        """The warm-up values calibration resamples."""
        assert self._pending is not None and self.calibration is not None
        return [x for x, _ in self._pending[: self.calibration.warmup]]

    def tune(self, sample: Sequence[float]) -> dict[str, float]:
        """Each tunable detector's knob, calibrated on ``sample``. It touches no state, so it
        can run off the event loop (it simulates a long stationary stream per detector)."""
        cal = self.calibration
        assert cal is not None
        tunable = [spec for spec in self.specs if spec in TUNABLE]
        return {spec: calibrate(spec, sample, cal, self._seed_of(spec), len(tunable)) for spec in tunable}

    def _seed_of(self, spec: str) -> int:
        return (self.seed * 1_000_003 + zlib.crc32(f"{self.kind}:{self.subject}:{spec}".encode())) % 2**32

    def install(self, tuned: dict[str, float]) -> list[Detection]:
        """Build the detectors with ``tuned`` knobs, then run them over every value kept so
        far, so that they end where detectors running from the start would have: a drift
        within the warm-up or while calibrating is reported now."""
        assert self._pending is not None and self.calibration is not None
        scale = float(np.std(self.sample())) or 1.0
        pending, self._pending = self._pending, None
        self.tuned = dict(tuned)
        for i, spec in enumerate(self.specs):
            if spec in tuned:
                self.detectors.append(TUNABLE[spec].build(tuned[spec], scale, self.seed + i))
            else:
                self.detectors.append(make_detector(spec, self.seed))
        out: list[Detection] = []
        for x, rising in pending:
            out += self._step(x, rising)
        return out

    def calibrate_now(self) -> list[Detection]:
        """``tune`` and ``install`` in one call, on the caller's thread."""
        return self.install(self.tune(self.sample()))

    def _step(self, x: float, rising: bool) -> list[Detection]:
        out = []
        for d in self.detectors:
            fired = d.update(x) and rising
            if self.debouncer.allow(f"{self.kind}:{self.subject}:{d.name}", fired):
                out.append(Detection(self.kind, d.name, self.subject, d.statistic, d.threshold, d.window_size))
        return out


#: Kinds from the most to the least actionable: an incident is of the first kind it holds
#: (a concept drift, the model's errors rising, is what retraining acts on).
KIND_ORDER = ("concept", "performance", "prediction", "input")
SEVERITIES = ("low", "medium", "high")


@dataclass(frozen=True)
class Fired:
    """A detection with the observation that fired it."""

    detection: Detection
    at: int  # the observation's index in what monitoring has seen
    event_id: str | None
    model_version: int
    time_ms: int


@dataclass(frozen=True)
class Incident:
    """Detections from any detectors and subjects merged into one drift (IncidentMerger),
    raised as one alert, and once more if the model's errors rose after that."""

    fired: tuple[Fired, ...]
    #: Raised again: a concept or performance detection joined it after it was raised.
    escalated: bool = False

    @property
    def lead(self) -> Fired:
        """The first detection of the most actionable kind: the alert's kind, detector and subject."""
        return min(self.fired, key=lambda f: (KIND_ORDER.index(f.detection.kind), f.at))

    @property
    def kind(self) -> str:
        return self.lead.detection.kind

    @property
    def detectors(self) -> list[str]:
        return list(dict.fromkeys(f.detection.detector for f in self.fired))

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(f.detection.subject for f in self.fired))

    @property
    def severity(self) -> str:
        """``high``: the model's errors rose and another detector or kind agreed; ``medium``:
        the errors rose, or several detectors or subjects agreed on the inputs or the scores;
        ``low``: one detector on one subject, the model's errors not (yet) affected."""
        kinds = {f.detection.kind for f in self.fired}
        agreed = len({(f.detection.detector, f.detection.subject) for f in self.fired}) > 1
        errors = bool(kinds & {"concept", "performance"})
        if errors and (agreed or len(kinds) > 1):
            return "high"
        return "medium" if errors or agreed else "low"

    @property
    def window(self) -> tuple[int, int]:
        """The event times of its first and last detection."""
        times = [f.time_ms for f in self.fired]
        return min(times), max(times)


class IncidentMerger:
    """Merges detections into incidents: one drift, however long it keeps firing, is one
    incident. The first detection opens one; every detection within ``window`` observations
    of the incident's latest joins it, so a drift whose detections keep coming stays one
    incident. ``window`` observations without a detection close it, and so does reaching
    ``max_length`` observations: a drift that never settles is raised again at that interval,
    as a reminder, rather than never.

    An incident is raised as soon as it holds a concept or performance detection (the
    model's errors rose, and retraining acts at once), or else ``window`` observations after
    its first detection, naming everything that agreed by then. It is raised once more if a
    concept or performance detection joins it after it was raised without one (escalated).
    A concept or performance detection ``window`` observations or more after the incident's
    first one closes it and opens the next: the errors rose again, and retraining acts on
    each rise. Anything else that joins a raised incident is merged into it silently. With
    ``window`` 0 each detection is raised alone. Observations are counted by the caller, one
    per record it feeds the detectors."""

    URGENT = frozenset({"concept", "performance"})

    def __init__(self, window: int, max_length: int | None = None) -> None:
        if window < 0:
            raise ConfigError(f"an incident window is a number of observations, at least 0, not {window}")
        longest = 10 * window if max_length is None else max_length
        if longest < window:
            raise ConfigError(
                f"an incident's longest span ({longest} observations) must be at least its window ({window})"
            )
        self.window = window
        self.max_length = longest
        self._open: list[Fired] = []
        self._raised = False
        self._urgent_at: int | None = None  # its first concept or performance detection
        #: Detections that joined an incident after it was raised, and are in no alert.
        self.merged = 0
        self._unraised = 0  # of those, the ones that joined the open incident

    def add(self, fired: Sequence[Fired]) -> list[Incident]:
        """Take the detections one observation fired; return the incidents to raise now."""
        if not fired:
            return []
        at = fired[0].at
        out = self.due(at)
        urgent = any(f.detection.kind in self.URGENT for f in fired)
        if urgent and self._urgent_at is not None and at - self._urgent_at >= self.window:
            out += self.flush()  # raised already: closed without an alert
        if self._raised:
            self.merged += len(fired)
            self._unraised += len(fired)
        self._open += fired
        if urgent and self._urgent_at is None:
            escalated = self._raised
            if escalated:  # what was merged silently is in this alert
                self.merged -= self._unraised
            self._raised, self._urgent_at, self._unraised = True, at, 0
            out.append(Incident(tuple(self._open), escalated))
        return out + self.due(at)

    def due(self, at: int) -> list[Incident]:
        """What observation ``at`` raises: the open incident once ``window`` observations
        have passed since its first detection, and its close (raising it if it was not)
        once ``window`` have passed since its latest or it spans ``max_length``."""
        if not self._open:
            return []
        if at - self._open[-1].at >= self.window or at - self._open[0].at >= self.max_length:
            return self.flush()
        if not self._raised and at - self._open[0].at >= self.window:
            self._raised = True
            return [Incident(tuple(self._open))]
        return []

    def flush(self) -> list[Incident]:
        """Close the open incident whatever its age (the stream went quiet); raise it unless
        it was raised already."""
        incident, raised = Incident(tuple(self._open)), self._raised
        self._open, self._raised, self._urgent_at, self._unraised = [], False, None, 0
        return [] if raised or not incident.fired else [incident]

    @property
    def open(self) -> bool:
        return bool(self._open)
