"""Drift detection quality, measured on synthetic streams whose drift points are known (pure).

Each detector spec of :mod:`driftloop.services.monitoring.drift` runs exactly as the monitoring service
runs it: built by ``make_detector`` inside a ``SubjectDetectors`` with its own ``Debouncer``,
so de-bouncing is part of what is measured. An *alert* below is a ``Detection`` that
``SubjectDetectors.update`` returned, i.e. a detector firing that the debouncer let through.

Streams (``n`` events, indices ``0 .. n-1``; a drift point ``p`` is the index of the first
event drawn from the new distribution; the points split the stream into segments ``0, 1, ...``)

* ``mean_shift`` (numeric): Gaussian with standard deviation 1 whose mean alternates between
  0 and ``shift`` standard deviations: segment ``k`` has mean ``shift * (k % 2)``.
* ``variance`` (numeric): Gaussian with mean 0 whose standard deviation alternates between 1
  and ``variance_factor``; the mean never moves.
* ``error_rate`` (0/1): Bernoulli errors whose rate rises by ``error_jump`` at every drift
  point: segment ``k`` has rate ``error_base + k * error_jump`` (a model degrading).
* ``sea_errors`` (0/1): the prequential 0/1 errors (predict, then learn) of an online logistic
  regression on River's SEA stream, whose concept switches at every drift point (the SEA
  threshold alternates 7 / 9.5; label noise ``sea_noise``). The model is pre-trained on
  ``SEA_WARMUP`` events of the first concept, so the stream starts stationary; after a
  switch the error rises, then falls again as the model adapts.

Binary-only detectors (``BINARY_ONLY``: DDM, EDDM) run on the 0/1 streams only; every other
detector runs on every stream (as the service would run them on a feature, a score or the
error stream). Detectors are seeded with the run's seed; the stream draws from
``(seed, stream kind)``, so two runs with the same seeds give the same scores.

Definitions, with ``tolerance`` (default ``DEFAULT_TOLERANCE`` = 1000 events)

* The *detection window* of drift point ``p_i`` is ``[p_i, min(p_i + tolerance, p_{i+1}, n))``:
  ``tolerance`` events from the point, cut short by the next drift point and by the end of
  the stream. An alert at ``p_i + tolerance - 1`` is in the window; one at ``p_i + tolerance``
  is not.
* A drift is *detected* when an alert falls in its window; its *delay* is the index of the
  first such alert minus ``p_i`` (0: the alert came on the very first drifted event).
  **Missed** drifts are those with no alert in their window.
* **Mean delay** is the mean over every detected drift of every run (missed drifts do not
  enter it, so read it together with the missed count); ``None`` when nothing was detected.
* A **false alarm** is an alert outside every detection window: before the first drift point,
  or after a window has closed and before the next drift point. **False alarms /10k** is
  ``10000 * false alarms / events``, with ``events = runs * n`` (every event processed,
  inside windows or not).
* Further alerts inside a window after its first are neither detections nor false alarms;
  they are counted as ``repeat_alerts``.
* **Precision**, **recall** and **F1** take the detected drifts as true positives (TP), the
  missed ones as false negatives (FN) and the false alarms as false positives (FP); repeat
  alerts are none of them. Precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their
  harmonic mean; each is 0 when TP is 0. Over a stream's runs TP, FP and FN are summed
  first and the three computed from the sums (not a mean of per-run F1s, which a run
  without any alert would drag to 0 whatever the others did).

Two rows per stream besides the detectors'

* ``always`` (``BASELINE``): a detector that fires on every event, through the service's
  ``Debouncer(cooldown)``, so it alerts on events ``0, cooldown, 2 * cooldown, ...``. It
  misses nothing and knows nothing: the F1 a detector has to beat to be worth its alerts.
  It lives here only; the service cannot be configured with it.
* ``incident`` (``INCIDENT``): every detector that runs on the stream, side by side as the
  service runs them (each in its own ``SubjectDetectors``, one ``Debouncer`` shared by all),
  their detections merged by ``IncidentMerger(incident_window)`` into incidents (an incident
  spans at most ten windows). An incident's alert is the observation at which the merger
  raises it, what an operator sees: at once on a 0/1 error stream (concept detections are
  urgent), ``incident_window`` events after its first detection on a numeric one (input
  detections wait for the window), and at the last event for one still open when the
  stream ends.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from driftloop.services.monitoring.drift import (
    BINARY_ONLY,
    DETECTORS,
    NUMERIC_ONLY,
    Debouncer,
    Fired,
    IncidentMerger,
    SubjectDetectors,
    parse_detectors,
)
from driftloop.shared.errors import ConfigError
from driftloop.shared.settings import MonitoringSettings

#: Events after a drift point within which an alert counts as its detection.
DEFAULT_TOLERANCE = 1000
#: The monitoring service's default alert cooldown (DRIFTLOOP_MONITORING_ALERT_COOLDOWN).
DEFAULT_COOLDOWN: int = MonitoringSettings.model_fields["alert_cooldown"].default
DEFAULT_SEEDS = 20
DEFAULT_EVENTS = 10_000
DEFAULT_DRIFTS = 3
#: Left out unless named: River's KSWIN runs a two-sample KS test on every update, which alone
#: would take minutes at the default sizes (README, Measured choices).
SLOW_DETECTORS = frozenset({"kswin"})
DEFAULT_DETECTORS: tuple[str, ...] = tuple(s for s in DETECTORS if s not in SLOW_DETECTORS)
#: Events of the first SEA concept the online model learns before the measured stream starts.
SEA_WARMUP = 1000
#: The rows that are no detector spec: the always-alarm baseline and the merged incidents.
BASELINE = "always"
INCIDENT = "incident"
#: Events from an incident's first detection during which others join it: the service's
#: DRIFTLOOP_MONITORING_INCIDENT_WINDOW default (1500 records) at about three records per event.
DEFAULT_INCIDENT_WINDOW = 500


@dataclass(frozen=True)
class StreamParams:
    shift: float = 1.0  # mean_shift: standard deviations
    variance_factor: float = 2.0  # variance: the alternate standard deviation
    error_base: float = 0.1  # error_rate: the rate before the first drift point
    error_jump: float = 0.2  # error_rate: the rise at each drift point (0.1 -> 0.3 -> 0.5 ...)
    sea_noise: float = 0.05  # sea_errors: SEA's label noise


# --- streams with known drift points -----------------------------------------------------------


def default_drift_points(n: int, count: int = DEFAULT_DRIFTS) -> tuple[int, ...]:
    """``count`` drift points evenly spaced: n/4, n/2, 3n/4 for the default three."""
    return tuple(n * (k + 1) // (count + 1) for k in range(count))


def check_drift_points(n: int, drift_points: Sequence[int]) -> tuple[int, ...]:
    points = tuple(int(p) for p in drift_points)
    if n < 1:
        raise ConfigError(f"a stream needs at least one event, not {n}")
    if any(not 0 < p < n for p in points) or any(a >= b for a, b in zip(points, points[1:], strict=False)):
        raise ConfigError(f"drift points must increase strictly within (0, {n}): {list(points)}")
    return points


def _segments(n: int, drift_points: Sequence[int]) -> list[tuple[int, int]]:
    bounds = [0, *drift_points, n]
    return list(zip(bounds, bounds[1:], strict=False))


def _rng(seed: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, *kind.encode()])


def mean_shift_stream(n: int, drift_points: Sequence[int], seed: int, shift: float = 1.0) -> np.ndarray:
    """N(shift * (k % 2), 1) in segment k."""
    rng = _rng(seed, "mean_shift")
    out = rng.standard_normal(n)
    for k, (a, b) in enumerate(_segments(n, drift_points)):
        out[a:b] += shift * (k % 2)
    return out


def variance_stream(n: int, drift_points: Sequence[int], seed: int, factor: float = 2.0) -> np.ndarray:
    """N(0, 1) in even segments, N(0, factor**2) in odd ones."""
    rng = _rng(seed, "variance")
    out = rng.standard_normal(n)
    for k, (a, b) in enumerate(_segments(n, drift_points)):
        out[a:b] *= factor ** (k % 2)
    return out


def error_rate_stream(
    n: int, drift_points: Sequence[int], seed: int, base: float = 0.1, jump: float = 0.2
) -> np.ndarray:
    """0/1 errors at rate ``base + k * jump`` in segment k."""
    segments = _segments(n, drift_points)
    rates = [base + k * jump for k in range(len(segments))]
    if any(not 0.0 <= r <= 1.0 for r in rates):
        raise ConfigError(f"error rates {[round(r, 4) for r in rates]} leave [0, 1]; lower error_jump or the drifts")
    rng = _rng(seed, "error_rate")
    u = rng.random(n)
    out = np.empty(n)
    for (a, b), r in zip(segments, rates, strict=True):
        out[a:b] = u[a:b] < r
    return out


def sea_error_stream(n: int, drift_points: Sequence[int], seed: int, noise: float = 0.05) -> np.ndarray:
    """0/1 prequential errors of an online logistic regression on SEA, concept switching at
    every drift point (SEA variants 2 and 3 alternate: threshold 7, then 9.5, then 7 ...)."""
    from river import linear_model, preprocessing
    from river.datasets import synth

    rng = _rng(seed, "sea_errors")
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    variants = (2, 3)
    for x, y in synth.SEA(variant=variants[0], noise=noise, seed=int(rng.integers(2**31))).take(SEA_WARMUP):
        model.learn_one(x, y)
    out = np.empty(n)
    i = 0
    for k, (a, b) in enumerate(_segments(n, drift_points)):
        gen = synth.SEA(variant=variants[k % 2], noise=noise, seed=int(rng.integers(2**31)))
        for x, y in gen.take(b - a):
            out[i] = float(model.predict_one(x) != y)
            model.learn_one(x, y)
            i += 1
    return out


@dataclass(frozen=True)
class StreamKind:
    binary: bool
    make: Callable[[int, Sequence[int], int, StreamParams], np.ndarray]
    describe: Callable[[StreamParams], str]


STREAMS: dict[str, StreamKind] = {
    "mean_shift": StreamKind(
        False,
        lambda n, pts, seed, p: mean_shift_stream(n, pts, seed, p.shift),
        lambda p: f"N(0,1), mean alternating 0 / {p.shift:g} sd at each drift point",
    ),
    "variance": StreamKind(
        False,
        lambda n, pts, seed, p: variance_stream(n, pts, seed, p.variance_factor),
        lambda p: f"N(0,1), standard deviation alternating 1 / {p.variance_factor:g} at each drift point",
    ),
    "error_rate": StreamKind(
        True,
        lambda n, pts, seed, p: error_rate_stream(n, pts, seed, p.error_base, p.error_jump),
        lambda p: f"0/1 errors, rate {p.error_base:g} rising by {p.error_jump:g} at each drift point",
    ),
    "sea_errors": StreamKind(
        True,
        lambda n, pts, seed, p: sea_error_stream(n, pts, seed, p.sea_noise),
        lambda p: f"0/1 errors of online logistic regression on SEA (noise {p.sea_noise:g}), threshold 7 / 9.5",
    ),
}


def make_stream(kind: str, n: int, drift_points: Sequence[int], seed: int, params: StreamParams) -> np.ndarray:
    if kind not in STREAMS:
        raise ConfigError(f"unknown stream kind {kind!r}; choose from {', '.join(STREAMS)}")
    return STREAMS[kind].make(n, check_drift_points(n, drift_points), seed, params)


# --- metrics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunScore:
    """One run's alerts scored against its drift points (definitions in the module docstring)."""

    events: int
    drifts: int
    delays: tuple[int, ...]  # one per detected drift, in drift order
    missed: int
    false_alarms: int
    repeat_alerts: int


def score_run(alerts: Sequence[int], drift_points: Sequence[int], n: int, tolerance: int) -> RunScore:
    """Score the event indices at which alerts came against the known drift points."""
    if tolerance < 1:
        raise ConfigError(f"tolerance must be at least 1 event, not {tolerance}")
    points = check_drift_points(n, drift_points)
    ends = [min(p + tolerance, nxt) for p, nxt in zip(points, (*points[1:], n), strict=False)]
    first: dict[int, int] = {}
    false_alarms = repeats = 0
    for t in alerts:
        if not 0 <= t < n:
            raise ValueError(f"alert at event {t} outside the stream [0, {n})")
        i = bisect.bisect_right(points, t) - 1
        if i < 0 or t >= ends[i]:
            false_alarms += 1
        elif i in first:
            repeats += 1
        else:
            first[i] = t
    delays = tuple(first[i] - points[i] for i in sorted(first))
    return RunScore(n, len(points), delays, len(points) - len(first), false_alarms, repeats)


def f1_score(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from true positives, false positives and false negatives
    (each 0 when ``tp`` is 0)."""
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return precision, recall, 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class DetectorScore:
    detector: str  # the spec, as in DETECTORS, or BASELINE or INCIDENT
    stream: str
    runs: int
    events: int  # over all runs
    drifts: int  # over all runs
    detected: int
    missed: int
    mean_delay: float | None
    median_delay: float | None
    max_delay: int | None
    false_alarms: int
    false_alarms_per_10k: float
    repeat_alerts: int
    precision: float
    recall: float
    f1: float
    tolerance: int
    cooldown: int
    seconds: float = field(default=0.0, compare=False)  # detector time, streams excluded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def aggregate(
    detector: str, stream: str, runs: Sequence[RunScore], tolerance: int, cooldown: int, seconds: float = 0.0
) -> DetectorScore:
    """Pool a detector's runs on one stream: delays over every detected drift, counts summed,
    precision, recall and F1 from the summed counts."""
    delays = [d for r in runs for d in r.delays]
    events = sum(r.events for r in runs)
    false_alarms = sum(r.false_alarms for r in runs)
    missed = sum(r.missed for r in runs)
    precision, recall, f1 = f1_score(len(delays), false_alarms, missed)
    return DetectorScore(
        detector=detector,
        stream=stream,
        runs=len(runs),
        events=events,
        drifts=sum(r.drifts for r in runs),
        detected=len(delays),
        missed=missed,
        mean_delay=statistics.fmean(delays) if delays else None,
        median_delay=float(statistics.median(delays)) if delays else None,
        max_delay=max(delays) if delays else None,
        false_alarms=false_alarms,
        false_alarms_per_10k=10_000 * false_alarms / events if events else 0.0,
        repeat_alerts=sum(r.repeat_alerts for r in runs),
        precision=precision,
        recall=recall,
        f1=f1,
        tolerance=tolerance,
        cooldown=cooldown,
        seconds=seconds,
    )


# --- running the detectors ---------------------------------------------------------------------


def alerts_of(spec: str, values: Sequence[float] | np.ndarray, seed: int, cooldown: int, *, binary: bool) -> list[int]:
    """Event indices at which the detector, de-bounced as in the service, raised an alert."""
    kind, name = _subject(binary)
    subject = SubjectDetectors(kind, name, (spec,), seed, Debouncer(cooldown))
    return [t for t, x in enumerate(np.asarray(values, dtype=float).tolist()) if subject.update(x)]


def always_alerts(n: int, cooldown: int) -> list[int]:
    """The always-alarm baseline's alerts over ``n`` events: it fires on every event, and
    the service's debouncer lets through what it lets through."""
    debouncer = Debouncer(cooldown)
    return [t for t in range(n) if debouncer.allow(BASELINE, True)]


def _subject(binary: bool) -> tuple[str, str]:
    """The (kind, subject) the service would watch such values as: the error stream, or a feature."""
    return ("concept", "error_rate") if binary else ("input", "x")


def incident_alerts(
    specs: Sequence[str],
    values: Sequence[float] | np.ndarray,
    seed: int,
    cooldown: int,
    window: int,
    *,
    binary: bool,
) -> list[int]:
    """Event indices at which incidents of the detectors ``specs``, side by side on the same
    values, were raised: each detector in its own SubjectDetectors, one Debouncer shared by
    all and one IncidentMerger, as in the service. An incident still open after the last
    event is raised at the last event."""
    kind, name = _subject(binary)
    debouncer = Debouncer(cooldown)
    subjects = [SubjectDetectors(kind, name, (spec,), seed, debouncer) for spec in specs]
    merger = IncidentMerger(window)
    alerts: list[int] = []
    xs = np.asarray(values, dtype=float).tolist()
    for t, x in enumerate(xs):
        fired = [Fired(d, t, None, 0, t) for subject in subjects for d in subject.update(x)]
        raised = merger.add(fired) if fired else merger.due(t)
        alerts += [t] * len(raised)
    if xs:
        alerts += [len(xs) - 1] * len(merger.flush())
    return alerts


def _seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    out = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    if not out:
        raise ConfigError("at least one seed is needed")
    return out


def _evaluate_stream(
    specs: Sequence[str],
    kind: str,
    seeds: Sequence[int],
    n: int,
    drift_points: Sequence[int],
    tolerance: int,
    cooldown: int,
    params: StreamParams,
    *,
    baseline: bool = False,
    incident_window: int | None = None,
) -> list[DetectorScore]:
    """The rows of ``specs`` on one stream kind, then the incident row (unless
    ``incident_window`` is None), then the baseline's (with ``baseline``)."""
    binary = STREAMS[kind].binary
    rows = [*specs, *([INCIDENT] if incident_window is not None else []), *([BASELINE] if baseline else [])]

    def alerts_for(row: str, values: np.ndarray, seed: int) -> list[int]:
        if row == INCIDENT:
            assert incident_window is not None
            return incident_alerts(specs, values, seed, cooldown, incident_window, binary=binary)
        if row == BASELINE:
            return always_alerts(len(values), cooldown)
        return alerts_of(row, values, seed, cooldown, binary=binary)

    runs: dict[str, list[RunScore]] = {r: [] for r in rows}
    seconds = dict.fromkeys(rows, 0.0)
    for seed in seeds:
        values = make_stream(kind, n, drift_points, seed, params)
        for row in rows:
            start = time.perf_counter()
            alerts = alerts_for(row, values, seed)
            seconds[row] += time.perf_counter() - start
            runs[row].append(score_run(alerts, drift_points, n, tolerance))
    return [aggregate(r, kind, runs[r], tolerance, cooldown, seconds[r]) for r in rows]


def _check(
    n: int, drift_points: Sequence[int] | None, tolerance: int, cooldown: int, incident_window: int | None = None
) -> tuple[int, ...]:
    points = check_drift_points(n, default_drift_points(n) if drift_points is None else drift_points)
    if tolerance < 1:
        raise ConfigError(f"tolerance must be at least 1 event, not {tolerance}")
    if cooldown < 0:
        raise ConfigError(f"cooldown must not be negative, not {cooldown}")
    if incident_window is not None and incident_window < 0:
        raise ConfigError(f"the incident window must not be negative, not {incident_window}")
    return points


def evaluate(
    spec: str,
    stream_kind: str,
    seeds: int | Sequence[int],
    n: int,
    drift_points: Sequence[int] | None = None,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    cooldown: int = DEFAULT_COOLDOWN,
    params: StreamParams | None = None,
) -> DetectorScore:
    """One detector spec on one stream kind, one run per seed (``seeds``: a count or the seeds).

    ``drift_points`` default to ``default_drift_points(n)``. A binary-only detector on a
    numeric stream, an unknown spec or stream kind raise ``ConfigError``."""
    if stream_kind not in STREAMS:
        raise ConfigError(f"unknown stream kind {stream_kind!r}; choose from {', '.join(STREAMS)}")
    parsed = parse_detectors(spec, binary=STREAMS[stream_kind].binary)
    if len(parsed) != 1:
        raise ConfigError(f"evaluate takes one drift detector, not {spec!r}")
    spec = parsed[0]
    points = _check(n, drift_points, tolerance, cooldown)
    params = params or StreamParams()
    return _evaluate_stream([spec], stream_kind, _seeds(seeds), n, points, tolerance, cooldown, params)[0]


def evaluate_all(
    specs: Sequence[str] | None = None,
    stream_kinds: Sequence[str] | None = None,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    n: int = DEFAULT_EVENTS,
    drift_points: Sequence[int] | None = None,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    cooldown: int = DEFAULT_COOLDOWN,
    params: StreamParams | None = None,
    baseline: bool = True,
    incident_window: int | None = DEFAULT_INCIDENT_WINDOW,
) -> list[DetectorScore]:
    """Every applicable (detector, stream kind) pair over the seeds: binary-only detectors on
    the 0/1 streams only. ``specs`` default to ``DEFAULT_DETECTORS`` (all but the slow
    KSWIN), ``stream_kinds`` to every kind in ``STREAMS``. Each stream is drawn once per seed
    and fed to every detector. Per stream, an ``INCIDENT`` row merges the detectors that ran
    on it (``incident_window`` None: no such row) and a ``BASELINE`` row scores the
    always-alarm baseline (``baseline`` False: none). Scores come in spec order, then
    ``INCIDENT``, then ``BASELINE``, each in stream order."""
    specs = tuple(
        dict.fromkeys(parse_detectors(",".join(specs if specs is not None else DEFAULT_DETECTORS), binary=None))
    )
    if not specs:
        raise ConfigError("no drift detector to evaluate")
    kinds = tuple(stream_kinds) if stream_kinds is not None else tuple(STREAMS)
    for kind in kinds:
        if kind not in STREAMS:
            raise ConfigError(f"unknown stream kind {kind!r}; choose from {', '.join(STREAMS)}")
    points = _check(n, drift_points, tolerance, cooldown, incident_window)
    params = params or StreamParams()
    seed_list = _seeds(seeds)
    scores: list[DetectorScore] = []
    for kind in kinds:
        binary = STREAMS[kind].binary
        applicable = [s for s in specs if (s not in BINARY_ONLY or binary) and (s not in NUMERIC_ONLY or not binary)]
        if applicable:
            scores += _evaluate_stream(
                applicable,
                kind,
                seed_list,
                n,
                points,
                tolerance,
                cooldown,
                params,
                baseline=baseline,
                incident_window=incident_window,
            )
    order = {s: i for i, s in enumerate((*specs, INCIDENT, BASELINE))}
    return sorted(scores, key=lambda sc: (order[sc.detector], kinds.index(sc.stream)))


# --- reporting ---------------------------------------------------------------------------------


def _baseline_f1(scores: Sequence[DetectorScore]) -> dict[str, float]:
    return {s.stream: s.f1 for s in scores if s.detector == BASELINE}


def format_table(scores: Sequence[DetectorScore]) -> str:
    """One row per score: detector, stream, mean delay, false alarms /10k, missed / drifts,
    repeat alerts, F1, F1 minus the always baseline's on the same stream (``-`` without a
    baseline row), and runs."""
    always = _baseline_f1(scores)
    header = (
        "detector",
        "stream",
        "mean delay",
        "false alarms /10k",
        "missed / drifts",
        "repeats",
        "F1",
        "F1 - always",
        "runs",
    )
    rows = [
        (
            s.detector,
            s.stream,
            "-" if s.mean_delay is None else f"{s.mean_delay:.1f}",
            f"{s.false_alarms_per_10k:.2f}",
            f"{s.missed} / {s.drifts}",
            str(s.repeat_alerts),
            f"{s.f1:.3f}",
            "-" if s.stream not in always or s.detector == BASELINE else f"{s.f1 - always[s.stream]:+.3f}",
            str(s.runs),
        )
        for s in scores
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 1}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def compare(scores: Sequence[DetectorScore]) -> dict[str, dict[str, Any]]:
    """Per stream: the detector with the best F1 (the first in score order on a tie), the
    incident row's and the always baseline's F1 (None without such a row), and the rows whose
    F1 beats the baseline's (strictly)."""
    always = _baseline_f1(scores)
    out: dict[str, dict[str, Any]] = {}
    for stream in dict.fromkeys(s.stream for s in scores):
        rows = [s for s in scores if s.stream == stream]
        detectors = [s for s in rows if s.detector not in (BASELINE, INCIDENT)]
        best = max(detectors, key=lambda s: s.f1, default=None)
        incident = next((s.f1 for s in rows if s.detector == INCIDENT), None)
        base = always.get(stream)
        out[stream] = {
            "best_detector": None if best is None else best.detector,
            "best_f1": None if best is None else best.f1,
            "incident_f1": incident,
            "always_f1": base,
            "beat_always": [] if base is None else [s.detector for s in rows if s.detector != BASELINE and s.f1 > base],
        }
    return out


def format_comparison(scores: Sequence[DetectorScore]) -> str:
    """One line per stream with a baseline row: the best detector's, the incident's and the
    always baseline's F1, and which rows beat the baseline."""
    lines = []
    for stream, c in compare(scores).items():
        if c["always_f1"] is None:
            continue
        best = "-" if c["best_detector"] is None else f"{c['best_detector']} {c['best_f1']:.3f}"
        incident = "-" if c["incident_f1"] is None else f"{c['incident_f1']:.3f}"
        beat = ", ".join(c["beat_always"]) or "nothing"
        lines.append(f"{stream}: F1 best {best}, incident {incident}, always {c['always_f1']:.3f}; beat always: {beat}")
    return "\n".join(lines)


def report(
    scores: Sequence[DetectorScore],
    *,
    seeds: Sequence[int],
    n: int,
    drift_points: Sequence[int],
    tolerance: int,
    cooldown: int,
    params: StreamParams,
    incident_window: int | None = DEFAULT_INCIDENT_WINDOW,
) -> dict[str, Any]:
    """The JSON document ``evaluate-drift`` writes."""
    kinds = dict.fromkeys(s.stream for s in scores)
    return {
        "events_per_run": n,
        "seeds": list(seeds),
        "drift_points": list(drift_points),
        "tolerance": tolerance,
        "cooldown": cooldown,
        "incident_window": incident_window,
        "definitions": {
            "detection_window": "[p, min(p + tolerance, next drift point, n))",
            "delay": "first alert in the window minus p; mean over detected drifts only",
            "missed": "drift points with no alert in their window",
            "false_alarm": "an alert outside every detection window (including before the first drift point)",
            "false_alarms_per_10k": "10000 * false_alarms / events, events = runs * events_per_run",
            "repeat_alerts": "alerts in a window after its first (neither detections nor false alarms)",
            "precision": "TP / (TP + FP), TP = detected, FP = false_alarms, summed over runs; 0 when TP = 0",
            "recall": "TP / (TP + FN), FN = missed, summed over runs; 0 when TP = 0",
            "f1": "2 * precision * recall / (precision + recall); 0 when TP = 0",
            BASELINE: "fires on every event, de-bounced by the cooldown: alerts at 0, cooldown, 2 * cooldown, ...",
            INCIDENT: "the stream's detectors side by side, one shared debouncer, detections merged by "
            "IncidentMerger(incident_window); an alert where an incident is raised (at once for concept "
            "detections, incident_window events after the first for input ones, the last event if still open)",
        },
        "streams": {k: {"binary": STREAMS[k].binary, "description": STREAMS[k].describe(params)} for k in kinds},
        "stream_params": asdict(params),
        "scores": [_json_safe(s.to_dict()) for s in scores],
        "comparison": compare(scores),
    }


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def evaluate_drift_cli(args: argparse.Namespace) -> int:
    """`driftloop evaluate-drift`: the table on stdout, drift_evaluation.json in --out."""
    chosen = args.detectors is not None
    specs = parse_detectors(args.detectors, binary=None) if chosen else DEFAULT_DETECTORS
    if not specs:
        raise ConfigError("--detectors names no drift detector")
    points = _check(args.events, default_drift_points(args.events), args.tolerance, args.cooldown, args.incident_window)
    seeds = tuple(range(args.seeds))
    params = StreamParams()
    start = time.perf_counter()
    scores = evaluate_all(
        specs,
        None,
        seeds,
        args.events,
        points,
        tolerance=args.tolerance,
        cooldown=args.cooldown,
        params=params,
        incident_window=args.incident_window,
    )
    wall = time.perf_counter() - start
    doc = report(
        scores,
        seeds=seeds,
        n=args.events,
        drift_points=points,
        tolerance=args.tolerance,
        cooldown=args.cooldown,
        params=params,
        incident_window=args.incident_window,
    )
    doc["wall_seconds"] = round(wall, 3)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "drift_evaluation.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(format_table(scores))
    print("\n" + format_comparison(scores))
    print(
        f"\n{len(seeds)} seeds x {args.events} events, drift points {list(points)}, "
        f"tolerance {args.tolerance}, cooldown {args.cooldown}, incident window {args.incident_window}; {wall:.1f} s"
    )
    if not chosen:
        print(f"left out (slow): {', '.join(sorted(SLOW_DETECTORS))}; name them in --detectors to include them")
    print(f"written: {path}")
    return 0
