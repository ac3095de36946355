"""Detector thresholds calibrated to a target false-alarm rate on stationary data
(services/monitoring/drift.py: ``Calibration``, ``calibrate``, ``SubjectDetectors``)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from driftloop.services.monitoring.core import Monitor
from driftloop.services.monitoring.drift import (
    TUNABLE,
    Calibration,
    Debouncer,
    Detector,
    SubjectDetectors,
    alarms,
    calibrate,
    make_detector,
)
from driftloop.shared.errors import ConfigError
from driftloop.shared.settings import MonitoringSettings


def _gauss(n: int, seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=n).tolist()


@pytest.mark.parametrize("target", [0.0, -1.0, 1000.5, float("nan")])
def test_a_target_out_of_range_is_refused(target: float) -> None:
    with pytest.raises(ConfigError, match="false-alarm rate"):
        Calibration(target)


def test_the_setting_is_checked_at_start() -> None:
    with pytest.raises(ValidationError):
        MonitoringSettings(false_alarms_per_10k=-1)
    with pytest.raises(ValidationError):
        MonitoringSettings(false_alarms_per_10k=2000)
    assert Monitor.from_settings(MonitoringSettings()).calibration is None, "off unless asked for"
    assert Monitor.from_settings(MonitoringSettings(false_alarms_per_10k=1)).calibration == Calibration(1.0)


def test_a_looser_budget_never_picks_a_less_sensitive_knob() -> None:
    sample = _gauss(500, 1)
    for spec in ("adwin", "page_hinkley", "psi"):
        grid = TUNABLE[spec].grid
        picked = [grid.index(calibrate(spec, sample, Calibration(t, events=20_000), 3)) for t in (0.5, 5, 50)]
        assert picked == sorted(picked), (spec, picked)
        assert picked[0] < picked[-1], f"{spec}: a budget 100 times looser picked the same knob"


@pytest.mark.parametrize("spec", ["adwin", "psi", "page_hinkley"])
def test_fresh_stationary_data_alarms_about_as_often_as_the_target(spec: str) -> None:
    # Calibrated on 500 values, run on 100,000 new ones from the same distribution.
    target = 5.0
    sample = _gauss(500, 11)
    value = calibrate(spec, sample, Calibration(target), 5)
    detector = TUNABLE[spec].build(value, float(np.std(sample)), 0)
    rate = alarms(detector, _gauss(100_000, 12)) / 10
    # The warm-up is a finite sample of the distribution: within a factor of 3 of the target.
    assert rate <= 3 * target, f"{spec} at {value}: {rate} false alarms per 10k"
    assert value != TUNABLE[spec].grid[0], "the least sensitive knob: the budget was never used"


def test_binary_detectors_are_calibrated_on_an_error_stream() -> None:
    errors = (np.random.default_rng(4).random(500) < 0.2).astype(float).tolist()
    for spec in ("ddm", "eddm"):
        value = calibrate(spec, errors, Calibration(5.0), 9)
        fresh = (np.random.default_rng(8).random(50_000) < 0.2).astype(float).tolist()
        assert alarms(TUNABLE[spec].build(value, 1.0, 0), fresh) / 5 <= 15, spec


def test_calibrated_adwin_finds_a_small_shift_sooner_than_rivers_default() -> None:
    # River's delta is tuned for near-zero false alarms; a budget of one per 10k buys delay.
    def delay(detector: Detector, stream: list[float]) -> int:
        fired = [detector.update(x) for x in stream]
        return next(i for i, f in enumerate(fired) if f and i >= 3000) - 3000

    tuned_delays, default_delays = [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        stream = np.concatenate([rng.normal(size=3000), rng.normal(0.25, 1, size=3000)]).tolist()
        value = calibrate("adwin", stream[:500], Calibration(1.0), 2)
        tuned_delays.append(delay(TUNABLE["adwin"].build(value, 1.0, 0), stream))
        default_delays.append(delay(make_detector("adwin", 0), stream))
    assert sum(tuned_delays) < sum(default_delays), (tuned_delays, default_delays)


def test_a_subject_keeps_its_values_until_installed_and_replays_them() -> None:
    cal = Calibration(2.0, warmup=100, events=20_000)
    subject = SubjectDetectors("input", "x", ("adwin", "kswin"), 7, Debouncer(0), calibration=cal)
    # Due at the 100th value; the level jumps after it, while calibration would run.
    values = [float(i % 2) for i in range(100)] + [8.0] * 40
    found = [d for x in values for d in subject.update(x)]
    assert found == [] and subject.calibrating and subject.due
    assert subject.sample() == values[:100]
    tuned = subject.tune(subject.sample())
    assert set(tuned) == {"adwin"}, "KSWIN is not tunable: it keeps its fixed alpha"
    assert subject.tune(subject.sample()) == tuned, "calibration is seeded per subject and detector"
    replayed = subject.install(tuned)
    assert not subject.calibrating and subject.tuned == tuned
    assert replayed, "the jump at value 100 is found when the values kept meanwhile are replayed"
    assert {d.detector for d in replayed} <= {"ADWIN", "KSWIN"}
    assert subject.update(8.0) == []


def test_a_monitor_hands_each_due_subject_out_once() -> None:
    monitor = Monitor(
        input_detectors=("adwin",),
        prediction_detectors=("adwin",),
        concept_detectors=("adwin",),
        calibration=Calibration(1.0, warmup=50, events=20_000),
    )
    assert not monitor.has_due
    for i in range(60):
        monitor.on_vector({"features": {"a": float(i % 3), "b": 1.0}})
    assert monitor.has_due
    due = monitor.take_due()
    assert sorted(s.subject for s in due) == ["a", "b"]
    assert not monitor.has_due and monitor.take_due() == []
    for subject in due:
        subject.install(subject.tune(subject.sample()))
    assert monitor.calibrate_due() == []
