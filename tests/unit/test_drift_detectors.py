"""The detector wrappers of driftloop.services.monitoring.drift, the Debouncer, parse_detectors and
SubjectDetectors. Detection quality in numbers lives in test_drift_evaluation.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftloop.services.monitoring.drift import (
    BINARY_ONLY,
    DETECTORS,
    Debouncer,
    PSIDetector,
    SubjectDetectors,
    make_detector,
    parse_detectors,
    psi,
)
from driftloop.services.monitoring.evaluation import evaluate
from driftloop.shared.errors import ConfigError

# KSWIN runs a KS test on every update once its 300-value window is full (about 0.7 ms each):
# its streams are kept short.
SLOW = {"kswin"}


def _stream(spec: str, seed: int, n: int, change: int | None = None) -> list[float]:
    """Stationary N(0, 1), or 0/1 errors at rate 0.1 for the binary-only detectors; from
    ``change`` on, the mean moves by 2 standard deviations / the error rate becomes 0.5."""
    rng = np.random.default_rng(seed)
    if spec in BINARY_ONLY:
        rate = np.full(n, 0.1)
        if change is not None:
            rate[change:] = 0.5
        return (rng.random(n) < rate).astype(float).tolist()
    x = rng.standard_normal(n)
    if change is not None:
        x[change:] += 2.0
    return x.tolist()


def _fires(spec: str, values: list[float], seed: int = 0) -> list[int]:
    d = make_detector(spec, seed)
    return [t for t, x in enumerate(values) if d.update(x)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("spec", list(DETECTORS))
def test_fires_soon_after_an_abrupt_change(spec: str, seed: int) -> None:
    change = 400 if spec in SLOW else 1000
    fires = _fires(spec, _stream(spec, seed, change + 300, change), seed)
    assert any(change <= t < change + 300 for t in fires), fires


# False alarms /10k events on stationary streams (no drift point, so every alert is false),
# de-bounced as the service runs them (cooldown 300), measured with the evaluation behind
# `driftloop evaluate-drift` (driftloop.services.monitoring.evaluation.evaluate, drift_points=()):
# 20 seeds x 10,000 events, KSWIN (slow) 6 seeds x 3,000.
STATIONARY_FALSE_ALARMS_PER_10K = {
    ("adwin", "mean_shift"): 0.0,
    ("adwin", "error_rate"): 0.0,
    ("kswin", "mean_shift"): 0.56,
    ("kswin", "error_rate"): 0.0,
    ("page_hinkley", "mean_shift"): 1.15,
    ("page_hinkley", "error_rate"): 0.0,
    ("ddm", "error_rate"): 0.25,
    ("eddm", "error_rate"): 4.40,
    ("psi", "mean_shift"): 0.0,
}


@pytest.mark.parametrize(("spec", "kind"), list(STATIONARY_FALSE_ALARMS_PER_10K))
def test_false_alarms_on_a_stationary_stream_stay_at_the_measured_rate(spec: str, kind: str) -> None:
    # A fresh sample (seeds from 100, not the measurement's) within the measured rate plus a
    # margin for sampling: 1.5 times it, plus one alarm in 50,000 events (KSWIN: 2,000 events
    # of one seed, where no alarm is allowed).
    seeds, n = ([100], 2000) if spec in SLOW else ([100, 101, 102, 103, 104], 10_000)
    score = evaluate(spec, kind, seeds=seeds, n=n, drift_points=())
    assert score.events == len(seeds) * n and score.drifts == 0
    bound = 1.5 * STATIONARY_FALSE_ALARMS_PER_10K[(spec, kind)] + 0.2
    assert score.false_alarms_per_10k <= bound, (score.false_alarms, score.false_alarms_per_10k)


@pytest.mark.parametrize("spec", list(DETECTORS))
def test_statistic_threshold_and_window_size_are_finite(spec: str) -> None:
    d = make_detector(spec, 3)
    values = _stream(spec, 3, 360 if spec in SLOW else 1500, change=300)

    def check() -> None:
        assert isinstance(d.statistic, float) and math.isfinite(d.statistic)
        assert isinstance(d.threshold, float) and math.isfinite(d.threshold) and d.threshold > 0
        assert isinstance(d.window_size, int) and d.window_size >= 0
        assert isinstance(d.name, str) and d.name

    check()
    for i, x in enumerate(values):
        d.update(x)
        if i % 50 == 0:
            check()
    check()


def test_make_detector_rejects_unknown_specs() -> None:
    with pytest.raises(ConfigError, match="unknown drift detector 'nope'"):
        make_detector("nope")


# --- PSI -------------------------------------------------------------------------------------------


def test_psi_function() -> None:
    even = np.full(10, 0.1)
    assert psi(even, even) == 0.0
    skewed = np.array([0.5, 0.5] + [0.0] * 8)
    assert psi(even, skewed) > 1.0
    assert psi(even, skewed) == pytest.approx(psi(skewed, even))


def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shifted_one() -> None:
    rng = np.random.default_rng(5)
    same = PSIDetector()
    assert not any(same.update(x) for x in rng.standard_normal(3000).tolist())
    assert 0.0 <= same.statistic < 0.1
    shifted = PSIDetector(threshold=1e9)  # never re-baselines: the distance itself
    for x in rng.standard_normal(500).tolist() + (rng.standard_normal(500) + 1.0).tolist():
        shifted.update(x)
    assert shifted.statistic > 0.5
    assert shifted.window_size == 500


def _persistent_shift(seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.standard_normal(2000), rng.standard_normal(4000) + 1.0]).tolist()


def test_psi_rebaselines_after_an_alert() -> None:
    d = PSIDetector()
    fires = [t for t, x in enumerate(_persistent_shift(0)) if d.update(x)]
    assert fires and fires[0] >= 2000
    # the shifted distribution became the reference: no alert after one window's length
    assert all(t < fires[0] + d.window for t in fires)
    assert d.statistic < d.threshold


def test_psi_one_persistent_shift_gives_one_alert() -> None:
    d = PSIDetector()
    assert sum(d.update(x) for x in _persistent_shift(0)) == 1


# --- Debouncer ---------------------------------------------------------------------------------------


def test_debouncer_allows_one_alert_per_cooldown_per_subject() -> None:
    deb = Debouncer(3)
    assert [deb.allow("a", True) for _ in range(10)] == [True, False, False] * 3 + [True]
    # another subject is not held back by "a"
    assert deb.allow("b", True)


def test_debouncer_counts_quiet_observations_and_ignores_non_detections() -> None:
    deb = Debouncer(3)
    assert [deb.allow("a", f) for f in (True, False, False, True, True)] == [True, False, False, True, False]
    assert not Debouncer(3).allow("a", False)


@pytest.mark.parametrize("cooldown", [0, 1])
def test_debouncer_without_cooldown_allows_every_detection(cooldown: int) -> None:
    deb = Debouncer(cooldown)
    assert all(deb.allow("a", True) for _ in range(5))


# --- parse_detectors -----------------------------------------------------------------------------------


def test_parse_detectors_normalises() -> None:
    assert parse_detectors(" ADWIN , psi ,,", binary=False) == ("adwin", "psi")
    assert parse_detectors("", binary=False) == ()
    assert parse_detectors("adwin,ddm,eddm", binary=True) == ("adwin", "ddm", "eddm")


def test_parse_detectors_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown drift detector 'nope'; choose from adwin, kswin"):
        parse_detectors("adwin,nope", binary=True)


@pytest.mark.parametrize("spec", sorted(BINARY_ONLY))
def test_parse_detectors_rejects_binary_only_detectors_on_other_subjects(spec: str) -> None:
    with pytest.raises(ConfigError, match="0/1 error stream"):
        parse_detectors(f"adwin,{spec}", binary=False)


# --- SubjectDetectors ------------------------------------------------------------------------------------


def test_subject_detectors_ignore_non_finite_values() -> None:
    sd = SubjectDetectors("input", "x", ["adwin", "page_hinkley", "psi"], 1, Debouncer(0))
    for x in _stream("adwin", 1, 700):
        sd.update(x)
    before = [d.window_size for d in sd.detectors]
    for bad in (math.nan, math.inf, -math.inf):
        assert sd.update(bad) == []
    assert [d.window_size for d in sd.detectors] == before


def test_subject_detectors_report_de_bounced_detections() -> None:
    sd = SubjectDetectors("concept", "error_rate", ["adwin"], 1, Debouncer(10_000))
    found = [d for x in _stream("adwin", 2, 3000, change=1000) for d in sd.update(x)]
    assert len(found) == 1  # ADWIN may fire more than once; the cooldown lets one through
    (det,) = found
    assert (det.kind, det.detector, det.subject) == ("concept", "ADWIN", "error_rate")
    assert det.threshold == 0.002 and det.window_size > 0 and math.isfinite(det.statistic)
