"""The single-process simulation of what the loop serves, through the real lifecycle core."""

from __future__ import annotations

from driftloop.lifecycle_sim import Policy, bare_river, simulate
from driftloop.streams import sea_stream


def test_the_served_model_is_always_a_version_the_lifecycle_made_champion() -> None:
    rows = sea_stream(3000, seed=7).rows
    r = simulate(rows, Policy(version_every=50, promotion_min_examples=50), lag=10, drift=True)
    assert r.served_versions and set(r.served_versions) <= r.champions
    assert r.swaps == len(r.served_versions) and len(r.hits) == 3000
    assert r.static_accuracy is not None and r.served_accuracy > r.static_accuracy


def test_served_accuracy_falls_as_the_swap_lags_and_bare_river_as_labels_do() -> None:
    rows = sea_stream(3000, seed=7).rows
    fast, slow = (simulate(rows, Policy(), lag=lag).served_accuracy for lag in (0, 400))
    assert fast > slow
    assert bare_river(rows, 0) > bare_river(rows, 400)
