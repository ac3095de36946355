"""Threshold calibration to a false-alarm target (services.monitoring.drift.calibrate) and the
standardisation of numeric subjects it relies on."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from services.monitoring.core import Monitor
from services.monitoring.drift import (
    BUILDERS,
    DEFAULT_THRESHOLDS,
    Debouncer,
    SubjectDetectors,
    calibrate,
    calibrated_thresholds,
)
from shared.errors import ConfigError
from shared.settings import MonitoringSettings

TARGET = 1.0


def _rate(spec: str, value: float, streams: list[np.ndarray], *, standardize: bool) -> float:
    """Alarms per 10,000 events of ``spec`` at ``value`` over the streams, as the service runs it."""
    alarms = 0
    for seed, x in enumerate(streams):
        sd = SubjectDetectors(
            "input", "x", [spec], seed, Debouncer(0), thresholds={spec: value}, standardize=standardize
        )
        alarms += sum(len(sd.update(v)) for v in x.tolist())
    return 10_000 * alarms / sum(len(x) for x in streams)


# Fresh stationary streams, none of the calibration's, at scales it never saw.
NUMERIC = {
    "uniform on [0, 10]": lambda rng, n: rng.random(n) * 10,
    "normal, mean 50, sd 7": lambda rng, n: rng.normal(50, 7, n),
}


@pytest.mark.parametrize("spec", ["adwin", "psi", "page_hinkley"])
@pytest.mark.parametrize("stream", list(NUMERIC))
def test_a_calibrated_numeric_detector_meets_the_target_on_fresh_stationary_data(spec: str, stream: str) -> None:
    value = calibrate(spec, TARGET, binary=False)
    rng = np.random.default_rng(2024)
    streams = [NUMERIC[stream](rng, 20_000) for _ in range(8)]
    # 160,000 events: the target allows 16 alarms; sampling leaves some room above it.
    assert _rate(spec, value, streams, standardize=True) <= 1.5 * TARGET


@pytest.mark.parametrize("spec", ["adwin", "ddm", "eddm"])
@pytest.mark.parametrize("error_rate", [0.1, 0.3])
def test_a_calibrated_error_stream_detector_meets_the_target(spec: str, error_rate: float) -> None:
    value = calibrate(spec, TARGET, binary=True)
    rng = np.random.default_rng(77)
    alarms = 0
    for seed in range(8):
        d = BUILDERS[spec](seed, value)
        alarms += sum(d.update(v) for v in (rng.random(20_000) < error_rate).astype(float).tolist())
    assert 10_000 * alarms / 160_000 <= 1.5 * TARGET


@pytest.mark.parametrize(("spec", "binary"), [("adwin", False), ("psi", False), ("adwin", True), ("ddm", True)])
def test_a_higher_target_gives_a_more_sensitive_threshold(spec: str, binary: bool) -> None:
    strict, loose = calibrate(spec, 0.5, binary=binary), calibrate(spec, 20.0, binary=binary)
    more_sensitive = loose > strict if spec == "adwin" else loose < strict
    assert more_sensitive, (strict, loose)


def test_a_calibrated_detector_finds_a_shift_sooner_at_a_higher_target() -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.standard_normal(3000), rng.standard_normal(2000) + 0.5]).tolist()

    def first_alarm(target: float) -> int:
        d = BUILDERS["adwin"](0, calibrate("adwin", target, binary=False))
        return next((t for t, v in enumerate(x) if d.update(v) and t >= 3000), len(x))

    assert first_alarm(20.0) < first_alarm(0.5) <= len(x)


def test_calibration_is_seeded_and_kswin_uses_the_union_bound() -> None:
    calibrate.cache_clear()
    first = calibrate("adwin", TARGET, binary=True, seed=3)
    calibrate.cache_clear()
    assert calibrate("adwin", TARGET, binary=True, seed=3) == first
    assert calibrate("kswin", 2.0, binary=True) == pytest.approx(2.0 / 10_000)


@pytest.mark.parametrize("target", [0.0, 0.05, 100.5, -1.0])
def test_an_out_of_range_target_is_refused(target: float) -> None:
    with pytest.raises(ConfigError, match="false alarms per 10k"):
        calibrate("adwin", target, binary=False)
    with pytest.raises(ValidationError, match="false_alarms_per_10k"):
        MonitoringSettings(false_alarms_per_10k=target)


def test_the_monitor_uses_calibrated_thresholds_only_when_given_a_target() -> None:
    assert calibrated_thresholds(["adwin"], None, binary=False) == {}
    fixed = Monitor()
    assert fixed.thresholds == {"numeric": {}, "binary": {}}
    calibrated = Monitor(false_alarms_per_10k=TARGET)
    assert calibrated.thresholds["numeric"]["adwin"] == calibrate("adwin", TARGET, binary=False)
    assert calibrated.thresholds["binary"]["ddm"] == calibrate("ddm", TARGET, binary=True)
    assert calibrated.thresholds["binary"]["adwin"] != DEFAULT_THRESHOLDS["adwin"]


def test_standardisation_holds_the_values_then_replays_them() -> None:
    sd = SubjectDetectors("input", "x", ["adwin"], 0, Debouncer(0), standardize=True)
    values = (np.random.default_rng(1).random(SubjectDetectors.STANDARDIZE) * 10 + 5).tolist()
    for v in values[:-1]:
        assert sd.update(v) == []
    assert sd.detectors[0].window_size == 0  # nothing reached the detector yet
    sd.update(values[-1])
    assert sd.detectors[0].window_size == SubjectDetectors.STANDARDIZE
    constant = SubjectDetectors("input", "c", ["adwin"], 0, Debouncer(0), standardize=True)
    for _ in range(SubjectDetectors.STANDARDIZE + 10):
        assert constant.update(3.0) == []
