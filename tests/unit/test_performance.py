"""The rolling classification figures of monitoring against brute-force recomputations over
the last ``window`` outcomes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop.services.monitoring.core import PerformanceTracker, roc_auc

scores = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]) | st.floats(0, 1)


def brute_auc(ys: list[bool], ps: list[float]) -> float | None:
    pos = [p for y, p in zip(ys, ps, strict=True) if y]
    neg = [p for y, p in zip(ys, ps, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@given(st.lists(st.tuples(st.booleans(), scores), max_size=60))
def test_roc_auc_is_the_pairwise_ranking_probability(pairs: list[tuple[bool, float]]) -> None:
    ys, ps = [y for y, _ in pairs], [p for _, p in pairs]
    expected = brute_auc(ys, ps)
    got = roc_auc(ys, ps)
    assert got == pytest.approx(expected) if expected is not None else got is None


@given(st.integers(1, 20), st.lists(st.tuples(st.booleans(), scores), min_size=1, max_size=80))
def test_window_figures_equal_a_recomputation_over_the_last_window(
    window: int, pairs: list[tuple[bool, float]]
) -> None:
    tracker = PerformanceTracker(window)
    for y, p in pairs:
        predicted = p >= 0.5
        tracker.update(
            {"predicted": predicted, "label": y, "correct": predicted == y, "scores": {"True": p, "False": 1 - p}}
        )
    last = pairs[-window:]
    assert tracker.accuracy == pytest.approx(sum((p >= 0.5) == y for y, p in last) / len(last))
    clipped = [(y, min(max(p, 1e-15), 1 - 1e-15)) for y, p in last]
    assert tracker.log_loss == pytest.approx(-sum(math.log(p if y else 1 - p) for y, p in clipped) / len(last))
    expected_auc = brute_auc([y for y, _ in last], [p for _, p in last])
    assert tracker.roc_auc == (pytest.approx(expected_auc) if expected_auc is not None else None)
