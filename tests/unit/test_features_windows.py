"""Windowed aggregates: every statistic against a brute-force recomputation in plain Python
over the entity's events in the window at each event's time, for random (and out-of-order) streams."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.services.features.spec import FeatureSpec
from driftloop.services.features.windows import (
    STATS,
    Aggregate,
    Window,
    WindowedFeatures,
    format_duration,
    parse_duration,
    parse_spec,
)
from driftloop.shared.errors import ConfigError
from driftloop.shared.settings import CommonSettings

WINDOWS = [Window("sliding", 50), Window("tumbling", 40), Window("hopping", 60, 20), Window("sliding", 7)]
AGGS = tuple(Aggregate("x", stat, w, 0.4) for stat in STATS for w in WINDOWS)


def in_window(window: Window, e: int, t: int) -> bool:
    """Whether event time ``e`` lies in the window an event at ``t`` is computed over, from
    the definitions in the module docstring (not ``Window.start``)."""
    if window.kind == "sliding":
        return t - window.size_ms < e <= t
    if window.kind == "tumbling":
        return t // window.size_ms == e // window.size_ms and e <= t
    assert window.step_ms is not None
    # The windows [k*step, k*step + size) holding t (event times here are >= 0); the oldest one's start.
    starts = [k * window.step_ms for k in range(t // window.step_ms + 1) if k * window.step_ms + window.size_ms > t]
    return min(starts) <= e <= t


def brute_force(
    agg: Aggregate, accepted: list[tuple[int, int, str, float | None]], t: int, arrival: int, event_id: str
) -> float | None:
    """The statistic over the accepted events at or before (t, arrival) in the window ending
    at t, computed here from first principles, not by the module's own ``statistic()``."""
    window = sorted(e for e in accepted if in_window(agg.window, e[0], t) and (e[0], e[1]) <= (t, arrival))
    if agg.stat == "since_last":
        prev = [e[0] for e in window if e[3] is not None and e[2] != event_id]
        return (t - prev[-1]) / 1000.0 if prev else None
    values = [e[3] for e in window if e[3] is not None]  # in event-time, then arrival, order
    if agg.stat == "count":
        return float(len(values))
    if not values:
        return None
    if agg.stat == "mean":
        return statistics.fmean(values)
    if agg.stat == "std":
        return statistics.pstdev(values)
    if agg.stat == "min":
        return min(values)
    if agg.stat == "max":
        return max(values)
    if agg.stat == "ewma":
        # Closed form: the oldest value weighs (1 - a)^(n-1), the i-th newer a(1 - a)^(n-1-i).
        a, n = agg.alpha, len(values)
        return (1 - a) ** (n - 1) * values[0] + sum(a * (1 - a) ** (n - 1 - i) * v for i, v in enumerate(values) if i)
    raise AssertionError(f"no oracle for {agg.stat}")


event_st = st.tuples(
    st.integers(0, 300),  # event time
    st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.integers(-5, 5), st.booleans()),
    st.integers(0, 9),  # a redelivery of an earlier event when 0 and there is one
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(event_st, min_size=1, max_size=60), lateness=st.sampled_from([None, 0, 15, 100]))
def test_every_aggregate_equals_brute_force(events: list[tuple[int, Any, int]], lateness: int | None) -> None:
    wf = WindowedFeatures(AGGS, lateness_ms=lateness)
    state: dict[str, Any] | None = None
    accepted: list[tuple[int, int, str, float | None]] = []  # (time, arrival, event_id, value)
    sent: list[tuple[str, int, Any]] = []
    watermark: int | None = None
    for i, (t, value, redeliver) in enumerate(events):
        if redeliver == 0 and sent:
            event_id, t, value = sent[i % len(sent)]
        else:
            event_id = f"e{i}"
            sent.append((event_id, t, value))
        out = wf.update(state, event_id, t, {"x": value, "other": "s"})
        state = json.loads(json.dumps(out.state))  # it must survive the changelog's JSON
        if watermark is not None and t < watermark - wf.lateness:
            assert out.status == "too_late" and out.features == {}
            continue
        original = next((a for a in accepted if a[2] == event_id), None)
        if original is not None:
            assert out.status == "duplicate"
            arrival = original[1]
        else:
            assert out.status == ("in_order" if watermark is None or t >= watermark else "out_of_order")
            v = None if value is None else float(value)
            accepted.append((t, i, event_id, v))
            arrival = i
            watermark = t if watermark is None else max(watermark, t)
        for agg in AGGS:
            expected = brute_force(agg, accepted, t, arrival, event_id)
            got = out.features.get(agg.name)
            if expected is None:
                assert got is None, agg.name
            else:
                assert got is not None and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-6), (agg.name, got)
        assert state is not None
        times = [e[0] for e in state["ev"]]
        assert times == sorted(times)
        assert min(times) > watermark - wf.lateness - wf.largest_window_ms


def test_point_in_time_a_later_event_that_arrived_first_does_not_leak() -> None:
    spec = FeatureSpec.parse("fs1", "x:max:sliding:1h,x:count:sliding:1h")
    _, first = spec.update(event("late-arrival", 10_000, 100.0), None)
    vec, outcome = spec.update(event("early", 5_000, 1.0), first.state)
    assert outcome.status == "out_of_order"
    assert vec["features"] == {"x": 1.0, "x_max_sliding_1h": 1.0, "x_count_sliding_1h": 1.0}
    vec, _ = spec.update(event("after", 11_000, 2.0), outcome.state)
    assert vec["features"]["x_count_sliding_1h"] == 3.0 and vec["features"]["x_max_sliding_1h"] == 100.0


def test_too_late_event_gets_passthrough_only_and_leaves_state_alone() -> None:
    spec = FeatureSpec.parse("fs1", "x:mean:sliding:1m", lateness_ms=10_000)
    _, o = spec.update(event("a", 100_000, 4.0), None)
    vec, late = spec.update(event("b", 89_999, 8.0), o.state)
    assert late.status == "too_late" and late.state == o.state
    assert vec["features"] == {"x": 8.0}
    _, ok = spec.update(event("c", 90_000, 8.0), o.state)
    assert ok.status == "out_of_order" and ok.features == {"x_mean_sliding_1m": 8.0}  # 100_000 is later: not in it


def test_state_is_bounded_by_max_events() -> None:
    wf = WindowedFeatures((Aggregate("x", "count", Window("sliding", 10**9)),), max_events=5)
    state = None
    for i in range(20):
        out = wf.update(state, f"e{i}", i, {"x": 1})
        state = out.state
    assert out.features == {"x_count_sliding_1000000s": 5.0}
    assert len(state["ev"]) == 5


@pytest.mark.parametrize(
    ("kind", "size", "step", "t", "start"),
    [
        ("sliding", 100, None, 250, 151),
        ("tumbling", 100, None, 250, 200),
        ("tumbling", 100, None, 200, 200),
        ("hopping", 100, 25, 250, 175),
        ("hopping", 100, 25, 251, 175),
        ("hopping", 100, 30, 250, 180),
    ],
)
def test_window_start(kind: str, size: int, step: int | None, t: int, start: int) -> None:
    assert Window(kind, size, step).start(t) == start


def test_ratio_and_names() -> None:
    spec = FeatureSpec.parse("fs1", "a:mean:hopping:1h:15m,ratio:a:b")
    vec, _ = spec.update({**event("e", 0, 3.0), "fields": {"a": 3.0, "b": 2}}, None)
    assert vec["features"] == {"a": 3.0, "b": 2.0, "a_mean_hopping_1h_15m": 3.0, "a/b": 1.5}
    vec, _ = spec.update({**event("f", 0, 3.0), "fields": {"a": 3.0, "b": 0}}, None)
    assert "a/b" not in vec["features"]


def test_passthrough_spec_is_not_windowed() -> None:
    spec = FeatureSpec.parse("fs1", "")
    assert not spec.windowed and spec.aggregates == () and spec.ratios == ()
    with pytest.raises(ValueError):
        spec.update(event("e", 0, 1.0), None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x:mean:sliding", "FIELD:STAT:KIND:SIZE"),
        ("x:median:sliding:1h", "median"),
        ("x:mean:rolling:1h", "rolling"),
        ("x:mean:sliding:1 hour", "duration"),
        ("x:mean:sliding:0s", "duration"),
        ("x:mean:hopping:1h", "step"),
        ("x:mean:tumbling:1h:5m", "step"),
        ("x:mean:hopping:1h:2h", "at most"),
        ("x:ewma=1.5:sliding:1h", "alpha"),
        ("x:ewma=abc:sliding:1h", "alpha"),
        ("ratio:a", "ratio:NUMERATOR"),
    ],
)
def test_bad_spec_is_a_config_error_naming_the_item(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(f"y:count:sliding:1h,{text}")
    message = str(err.value)
    assert text.split(":")[0] in message and fragment in message and "\n" not in message


def test_durations() -> None:
    assert parse_duration("1h") == 3_600_000 and parse_duration("250ms") == 250
    assert format_duration(3_600_000) == "1h" and format_duration(90_000) == "90s"
    assert parse_spec("x:mean:sliding:60m") == parse_spec(" x : mean : sliding : 1h ")


def test_feature_set_version_changes_with_the_window_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_FEATURES_WINDOWS", raising=False)
    monkeypatch.setenv("DRIFTLOOP_FEATURE_SET_VERSION", "fs1")
    assert CommonSettings().effective_feature_set_version == "fs1"
    monkeypatch.setenv("DRIFTLOOP_FEATURES_WINDOWS", "x:mean:sliding:1h")
    a = CommonSettings().effective_feature_set_version
    monkeypatch.setenv("DRIFTLOOP_FEATURES_WINDOWS", "x:mean:sliding:2h")
    b = CommonSettings().effective_feature_set_version
    assert a.startswith("fs1-w") and b.startswith("fs1-w") and a != b


def event(event_id: str, t: int, x: float) -> dict[str, Any]:
    return {"event_id": event_id, "entity_id": "u", "event_time": t, "fields": {"x": x}, "ingest_time": None}
