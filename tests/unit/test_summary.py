"""The demo and bench figures computed from the records read back (pure)."""

from __future__ import annotations

from typing import Any

from services.summary import detection_delays, prediction_gaps_ms


def pred(at: int, version: int, role: str = "champion") -> dict[str, Any]:
    return {"predicted_at": at, "model_version": version, "role": role}


def test_the_swap_pause_is_the_longest_gap_across_a_version_change() -> None:
    preds = [pred(0, 1), pred(10, 1), pred(200, 1), pred(230, 2), pred(240, 2), pred(300, 3), pred(5, 9, "baseline")]
    # Gaps: 10, 190 (no swap), 30 (1 -> 2), 10, 60 (2 -> 3); shadow predictions do not count.
    assert prediction_gaps_ms(list(reversed(preds))) == (60.0, 190.0)


def test_no_swap_no_pause() -> None:
    assert prediction_gaps_ms([pred(0, 1), pred(7, 1)]) == (None, 7.0)
    assert prediction_gaps_ms([]) == (None, None)


def test_detection_delay_is_counted_from_each_drift_to_the_first_alert_before_the_next() -> None:
    assert detection_delays([100, 200], [50, 150, 170, 260], 300) == [50, 60]
    assert detection_delays([100, 200], [250], 300) == [None, 50]
