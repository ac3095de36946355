"""Drift detectors (pure): River's streaming detectors and a PSI reference-window distance,
behind one small interface, plus the de-bouncing that turns detections into alerts.

Every detector takes one number per update and reports whether it detected a change.
``statistic`` and ``threshold`` say what the detector measured and against what, for the
DriftAlert record and for Prometheus.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from river import drift

from shared.errors import ConfigError


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
            stat = max(d._sum_increase - d._min_increase, d._max_decrease - d._sum_decrease)  # noqa: SLF001
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


def _adwin(seed: int, delta: float) -> Detector:
    return _RiverDetector("ADWIN", drift.ADWIN(delta=delta), delta)


def _kswin(seed: int, alpha: float) -> Detector:
    return _RiverDetector("KSWIN", drift.KSWIN(alpha=alpha, window_size=300, stat_size=100, seed=seed), alpha)


def _page_hinkley(seed: int, threshold: float) -> Detector:
    return _RiverDetector("PageHinkley", drift.PageHinkley(delta=0.05, threshold=threshold), threshold)


def _ddm(seed: int, threshold: float) -> Detector:
    warning = min(2.0, threshold - 0.5)  # River needs the warning level below the drift level
    return _RiverDetector(
        "DDM", drift.binary.DDM(warm_start=300, warning_threshold=warning, drift_threshold=threshold), threshold
    )


def _eddm(seed: int, beta: float) -> Detector:
    return _RiverDetector("EDDM", drift.binary.EDDM(warm_start=100, alpha=max(0.95, beta + 0.01), beta=beta), beta)


def _psi(seed: int, threshold: float) -> Detector:
    return PSIDetector(threshold=threshold)


#: Each spec's builder, taking the seed and the value of its threshold parameter.
BUILDERS: dict[str, Callable[[int, float], Detector]] = {
    "adwin": _adwin,
    "kswin": _kswin,
    "page_hinkley": _page_hinkley,
    "ddm": _ddm,
    "eddm": _eddm,
    "psi": _psi,
}
# Parameters chosen with `driftloop evaluate-drift` (20 seeds x 10,000 events): River's
# defaults gave Page-Hinkley 3.9 false alarms /10k on unit-variance data (delta 0.05: 0.45),
# DDM 13/60 missed drifts (warm_start 300: 0) and EDDM 7.1 false alarms /10k (warm_start 100: 3.1).
# These fixed thresholds serve when no false-alarm target is given (see ``calibrate``).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "adwin": 0.002,
    "kswin": 0.0001,
    "page_hinkley": 50.0,
    "ddm": 3.0,
    "eddm": 0.9,
    "psi": 0.2,
}
DETECTORS: dict[str, Callable[[int], Detector]] = {
    spec: (lambda seed, _spec=spec: BUILDERS[_spec](seed, DEFAULT_THRESHOLDS[_spec])) for spec in BUILDERS
}
#: Detectors that take a 0/1 error stream only, and those that are blind on one.
BINARY_ONLY = frozenset({"ddm", "eddm"})
NUMERIC_ONLY = frozenset({"psi"})


def make_detector(spec: str, seed: int = 42, threshold: float | None = None) -> Detector:
    """The detector ``spec`` with its fixed threshold, or with ``threshold`` (a calibrated one)."""
    if spec not in DETECTORS:
        raise ConfigError(f"unknown drift detector {spec!r}; choose from {', '.join(DETECTORS)}")
    if threshold is None or spec not in BUILDERS:
        return DETECTORS[spec](seed)
    return BUILDERS[spec](seed, threshold)


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


# --- calibration -------------------------------------------------------------------------------

#: The lowest and highest false-alarm targets (per 10,000 events per subject) calibration takes:
#: below the lowest, the start-up simulation would need millions of events to see an alarm.
MIN_FALSE_ALARMS_PER_10K = 0.1
MAX_FALSE_ALARMS_PER_10K = 100.0


@dataclass(frozen=True)
class Knob:
    """The parameter that sets how readily a detector fires, and its search range."""

    lo: float
    hi: float
    log: bool  # searched on a log scale
    stricter_up: bool  # a larger value raises fewer alarms

    def at(self, u: float) -> float:
        """The value at ``u`` in [0, 1], 0 the most sensitive, 1 the strictest."""
        t = u if self.stricter_up else 1.0 - u
        if self.log:
            return float(math.exp(math.log(self.lo) + t * (math.log(self.hi) - math.log(self.lo))))
        return self.lo + t * (self.hi - self.lo)


KNOBS: dict[str, Knob] = {
    "adwin": Knob(1e-9, 0.5, log=True, stricter_up=False),  # delta
    "page_hinkley": Knob(2.0, 2000.0, log=True, stricter_up=True),  # threshold
    "ddm": Knob(2.0, 12.0, log=False, stricter_up=True),  # drift_threshold, in standard deviations
    "eddm": Knob(0.3, 0.94, log=False, stricter_up=False),  # beta
    "psi": Knob(0.005, 2.0, log=True, stricter_up=True),  # threshold
}
#: Stationary reference streams: the strictest threshold that meets the target on each of them
#: is kept, so that it holds whatever the subject's shape (numeric) or error rate (0/1).
NUMERIC_REFERENCES = ("normal", "exponential", "uniform")
BINARY_REFERENCES = (0.05, 0.2, 0.45)
_STEPS = 8


def _reference(name: str | float, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng([seed, n, *str(name).encode()])
    if isinstance(name, float):
        return (rng.random(n) < name).astype(float).tolist()
    if name == "normal":
        x = rng.standard_normal(n)
    elif name == "exponential":
        x = rng.exponential(size=n)
    else:
        x = rng.random(n)
    head = x[: SubjectDetectors.STANDARDIZE]  # standardised as a subject is
    return ((x - head.mean()) / head.std()).tolist()


def _alarms(spec: str, value: float, values: Sequence[float], seed: int) -> int:
    d = BUILDERS[spec](seed, value)
    return sum(d.update(x) for x in values)


@functools.lru_cache(maxsize=64)
def calibrate(spec: str, false_alarms_per_10k: float, *, binary: bool, seed: int = 42) -> float:
    """The threshold at which detector ``spec`` raises at most ``false_alarms_per_10k`` alarms
    per 10,000 events of a stationary subject: the most sensitive value that meets the target.

    Calibrated by seeded simulation, once per process (cached), not on a warm-up window of
    the stream itself: a warm-up is as long as the detector needs to see several alarms (tens
    of thousands of events per subject), the subject would go unwatched meanwhile, and a
    drift or a trend inside the warm-up would be learnt as the stationary rate, blinding the
    detector to the very drift it should report. The detectors are near distribution-free
    (ADWIN bounds by the window's variance, PSI bins by the reference's quantiles, DDM and
    EDDM standardise the error rate), so the threshold that holds on each reference stream
    (``NUMERIC_REFERENCES``; 0/1 errors at each rate of ``BINARY_REFERENCES`` when ``binary``)
    holds on the stream; Page-Hinkley is scale-dependent and calibrated for unit scale.

    Raw detector alarms are counted: the service's per-subject cooldown only removes alarms,
    so the rate it raises stays under the target. KSWIN runs one KS test per update at level
    ``alpha``, so ``alpha = target / 10,000`` bounds its expected alarms (the union bound)
    without a simulation it could not afford (about 0.7 ms per update).
    """
    if not MIN_FALSE_ALARMS_PER_10K <= false_alarms_per_10k <= MAX_FALSE_ALARMS_PER_10K:
        raise ConfigError(
            f"false alarms per 10k events must be within [{MIN_FALSE_ALARMS_PER_10K:g}, "
            f"{MAX_FALSE_ALARMS_PER_10K:g}], not {false_alarms_per_10k:g}"
        )
    if spec == "kswin":
        return false_alarms_per_10k / 10_000
    if spec == "psi":
        return _psi_threshold(false_alarms_per_10k, seed)
    knob = KNOBS.get(spec)
    if knob is None:
        raise ConfigError(f"drift detector {spec!r} has no threshold to calibrate")
    # Enough events for the target to allow several alarms, so the count is not all chance.
    n = int(min(600_000, max(20_000, 60_000 / false_alarms_per_10k)))
    # Half the target on the simulated sample: the most sensitive threshold that just meets
    # it on one sample exceeds it on the next (chosen on the sample's luck).
    allowed = 0.5 * false_alarms_per_10k * n / 10_000
    streams = [_reference(r, n, seed) for r in (BINARY_REFERENCES if binary else NUMERIC_REFERENCES)]

    def meets(u: float) -> bool:
        return all(_alarms(spec, knob.at(u), values, seed) <= allowed for values in streams)

    lo, hi = 0.0, 1.0  # invariant: hi meets the target (the strictest end is taken to)
    if meets(lo):
        return knob.at(lo)
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return knob.at(hi)


def _psi_threshold(false_alarms_per_10k: float, seed: int) -> float:
    """PSI tests every ``every`` updates, each a fresh window against a reference drawn from
    the same stationary law: the quantile of the null PSI that each test exceeds with
    probability ``target * every / 10,000`` bounds the expected alarms by the union bound.
    Binned at the reference's deciles, the null PSI of continuous values has one law
    whatever the subject's, so it is simulated on uniform values, vectorised."""
    d = PSIDetector()
    q = false_alarms_per_10k * d.every / 10_000
    pairs = int(min(100_000, max(20_000, 50 / q)))
    rng = np.random.default_rng([seed, 0x951])
    levels = np.linspace(0, 1, 11)[1:-1]
    out: list[np.ndarray] = []
    for start in range(0, pairs, 2_000):
        m = min(2_000, pairs - start)
        ref = rng.random((m, d.reference_size))
        cur = rng.random((m, d.window))
        edges = np.quantile(ref, levels, axis=1).T[:, None, :]  # (m, 1, 9)
        bins = len(levels) + 1
        ref_frac = np.stack([np.bincount(r, minlength=bins) for r in (ref[:, :, None] >= edges).sum(2)])
        cur_frac = np.stack([np.bincount(c, minlength=bins) for c in (cur[:, :, None] >= edges).sum(2)])
        e = np.clip(ref_frac / d.reference_size, 1e-4, None)
        a = np.clip(cur_frac / d.window, 1e-4, None)
        out.append(np.sum((a - e) * np.log(a / e), axis=1))
    return float(np.quantile(np.concatenate(out), 1 - q))


def calibrated_thresholds(
    specs: Sequence[str], false_alarms_per_10k: float | None, *, binary: bool, seed: int = 42
) -> dict[str, float]:
    """Each spec's calibrated threshold (none when no target is given: the fixed ones)."""
    if false_alarms_per_10k is None:
        return {}
    return {s: calibrate(s, false_alarms_per_10k, binary=binary, seed=seed) for s in specs if s in BUILDERS}


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

    With ``standardize`` (a numeric subject), the detectors see the values standardised by
    the mean and deviation of the first ``STANDARDIZE`` of them, held until then and then
    replayed: a fixed affine map keeps every drift a drift, and puts every subject on the
    unit scale the thresholds were calibrated at (ADWIN's bound and Page-Hinkley's are not
    scale-free).
    """

    RECENT = 100
    STANDARDIZE = 100

    def __init__(
        self,
        kind: str,
        subject: str,
        specs: Sequence[str],
        seed: int,
        debouncer: Debouncer,
        increase_only: bool = False,
        thresholds: Mapping[str, float] | None = None,
        standardize: bool = False,
    ) -> None:
        self.kind = kind
        self.subject = subject
        self.standardize = standardize
        self._held: list[float] | None = [] if standardize else None
        self._shift, self._scale = 0.0, 1.0
        self.thresholds = dict(thresholds or {})
        self.detectors = [make_detector(s, seed, self.thresholds.get(s)) for s in specs]
        self.debouncer = debouncer
        self.increase_only = increase_only
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
        if self._held is not None:
            self._held.append(x)
            if len(self._held) < self.STANDARDIZE:
                return []
            held, self._held = np.asarray(self._held), None
            self._shift, std = float(held.mean()), float(held.std())
            self._scale = std if std > 1e-12 else 1.0  # a constant so far: no scale to learn
            for v in held[:-1].tolist():
                for d in self.detectors:
                    d.update((v - self._shift) / self._scale)
        z = (x - self._shift) / self._scale
        out = []
        for d in self.detectors:
            fired = d.update(z) and rising
            if self.debouncer.allow(f"{self.kind}:{self.subject}:{d.name}", fired):
                out.append(Detection(self.kind, d.name, self.subject, d.statistic, d.threshold, d.window_size))
        return out


# --- incidents ---------------------------------------------------------------------------------

#: The order in which an incident's kind is chosen among those that agreed: a concept drift
#: is what retraining acts on, so an incident that includes one is a concept incident.
KIND_PRIORITY = ("concept", "performance", "prediction", "input")


@dataclass(frozen=True)
class Incident:
    """Detections merged into one alert. The leading detection (of the highest-priority kind,
    the first of that kind) gives ``kind``, ``detector``, ``subject``, ``statistic``,
    ``threshold``, ``window_size``, ``event_id`` and ``model_version``."""

    kind: str
    detector: str
    subject: str
    statistic: float
    threshold: float
    window_size: int
    event_id: str | None
    model_version: int
    detectors: tuple[str, ...]  # every detector that agreed, in order of arrival
    subjects: tuple[str, ...]
    kinds: tuple[str, ...]
    detections: int
    severity: str  # low | medium | high
    start_time: int  # of the first and the last detection merged
    end_time: int


def severity(kinds: Sequence[str], detectors: Sequence[str], subjects: Sequence[str]) -> str:
    """low: one detector on one subject; medium: several detectors or subjects of one kind;
    high: several kinds (the inputs, the scores or the errors agree)."""
    if len(set(kinds)) > 1:
        return "high"
    if len(set(detectors)) > 1 or len(set(subjects)) > 1:
        return "medium"
    return "low"


class IncidentMerger:
    """Merges detections into incidents: the first detection opens one, every detection in the
    next ``window`` ticks joins it, and it closes (is returned) at the first tick after that.

    After an incident closes, detections during ``holdoff`` ticks are counted in ``held``
    and raise nothing: a drift keeps detectors firing for a while as they re-learn it, and
    the incident already reported it. A concept detection is never held back by an incident
    without one: retraining acts only on concept incidents.

    A tick is whatever clock the caller passes in (the monitoring core: records observed),
    so that the merge is deterministic and replayable.
    """

    def __init__(self, window: int, holdoff: int = 0) -> None:
        self.window = window
        self.holdoff = holdoff
        self._open: list[tuple[Detection, str | None, int, int]] | None = None
        self._opened_at = 0
        self._closed_at: int | None = None
        self._closed_concept = False
        self.held = 0

    @property
    def pending(self) -> bool:
        """Whether an incident is open."""
        return self._open is not None

    def update(
        self,
        detections: Sequence[Detection],
        now: int,
        *,
        event_id: str | None = None,
        time_ms: int = 0,
        model_version: int = 0,
    ) -> list[Incident]:
        """Adds the detections made at tick ``now`` (with the observation's event id, time and
        the model version it was judged against); returns the incidents that closed."""
        out: list[Incident] = []
        if self._open is not None and now - self._opened_at >= self.window:
            out.append(self._close(now))
        for d in detections:
            if self._open is None:
                if self._held(d, now):
                    self.held += 1
                    continue
                self._open, self._opened_at = [], now
            self._open.append((d, event_id, time_ms, model_version))
        return out

    def _held(self, d: Detection, now: int) -> bool:
        if self._closed_at is None or now - self._closed_at >= self.holdoff:
            return False
        return not (d.kind == "concept" and not self._closed_concept)

    def flush(self, now: int) -> list[Incident]:
        """Closes the open incident, if any (the stream went quiet)."""
        return [self._close(now)] if self._open is not None else []

    def _close(self, now: int) -> Incident:
        merged = self._open
        assert merged
        self._open = None
        self._closed_at = now
        rank = {k: i for i, k in enumerate(KIND_PRIORITY)}
        lead, event_id, _, version = min(merged, key=lambda m: rank.get(m[0].kind, len(rank)))
        kinds = tuple(dict.fromkeys(m[0].kind for m in merged))
        detectors = tuple(dict.fromkeys(m[0].detector for m in merged))
        subjects = tuple(dict.fromkeys(m[0].subject for m in merged))
        self._closed_concept = "concept" in kinds
        return Incident(
            kind=lead.kind,
            detector=lead.detector,
            subject=lead.subject,
            statistic=lead.statistic,
            threshold=lead.threshold,
            window_size=lead.window_size,
            event_id=event_id,
            model_version=version,
            detectors=detectors,
            subjects=subjects,
            kinds=kinds,
            detections=len(merged),
            severity=severity(kinds, detectors, subjects),
            start_time=min(m[2] for m in merged),
            end_time=max(m[2] for m in merged),
        )
