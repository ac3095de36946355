"""Datasets and the event/label send schedule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.shared.errors import ConfigError
from driftloop.streams import Dataset, batched, index_of, load_dataset, read_csv, schedule, sea_stream


def tiny(n: int, entities: list[str] | None = None) -> Dataset:
    return Dataset("tiny", [({"x": i}, i % 2 == 0) for i in range(n)], [], entities)


# --- schedule ------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_schedule_small_example(delay: int) -> None:
    sent = [(kind, i) for kind, i, _ in schedule(tiny(4), "r", delay)]
    expected = {
        0: [
            ("event", 0),
            ("label", 0),
            ("event", 1),
            ("label", 1),
            ("event", 2),
            ("label", 2),
            ("event", 3),
            ("label", 3),
        ],
        1: [
            ("event", 0),
            ("event", 1),
            ("label", 0),
            ("event", 2),
            ("label", 1),
            ("event", 3),
            ("label", 2),
            ("label", 3),
        ],
        3: [
            ("event", 0),
            ("event", 1),
            ("event", 2),
            ("event", 3),
            ("label", 0),
            ("label", 1),
            ("label", 2),
            ("label", 3),
        ],
    }
    assert sent == expected[delay]


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=1, max_value=60), delay=st.integers(min_value=0, max_value=80))
def test_schedule_property(n: int, delay: int) -> None:
    sent = list(schedule(tiny(n), "run7", delay))
    kinds = Counter((kind, i) for kind, i, _ in sent)
    assert all(c == 1 for c in kinds.values())
    assert {i for k, i in kinds if k == "event"} == set(range(n))
    assert {i for k, i in kinds if k == "label"} == set(range(n))
    events = [i for kind, i, _ in sent if kind == "event"]
    assert events == list(range(n))  # events in row order
    position = {(kind, i): p for p, (kind, i, _) in enumerate(sent)}
    for i in range(n):
        if i + delay < n:
            # the label of row i goes right after event i + delay
            assert position[("label", i)] == position[("event", i + delay)] + 1
        else:
            # ...or after the last event
            assert position[("label", i)] > position[("event", n - 1)]
        assert position[("label", i)] > position[("event", i)]
    labels = [i for kind, i, _ in sent if kind == "label"]
    assert labels == list(range(n))


def test_schedule_records() -> None:
    ds = tiny(3, entities=["a", "b", "a"])
    sent = list(schedule(ds, "run9", 1))
    assert sent[0] == ("event", 0, {"event_id": "run9-0", "entity_id": "a", "fields": {"x": 0}})
    assert sent[2] == ("label", 0, {"event_id": "run9-0", "entity_id": "a", "label": True})
    label_1 = next(rec for kind, i, rec in sent if kind == "label" and i == 1)
    assert label_1 == {"event_id": "run9-1", "entity_id": "b", "label": False}
    # Without entities, the event id is the entity.
    assert next(schedule(tiny(1), "r", 0))[2]["entity_id"] == "r-0"


def test_index_of() -> None:
    assert index_of("run9-17") == 17
    assert index_of("my-run-with-dashes-4") == 4
    for i, (_, _, rec) in enumerate(schedule(tiny(5), "a-b", 0)):
        assert index_of(rec["event_id"]) == i // 2


def test_batched() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []


# --- sea_stream ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sea() -> Dataset:
    return sea_stream(3000, seed=7)


def test_sea_stream_shape(sea: Dataset) -> None:
    assert len(sea.rows) == 3000
    assert sea.drift_points == [1000, 2000]
    x, y = sea.rows[0]
    assert set(x) == {"x0", "x1", "x2"}
    assert all(type(v) is float for v in x.values())
    assert all(type(label) is bool for _, label in sea.rows)


@pytest.mark.parametrize("n", [10, 11, 100, 301])
def test_sea_stream_sizes(n: int) -> None:
    ds = sea_stream(n)
    assert len(ds.rows) == n
    assert ds.drift_points == [n // 3, 2 * n // 3]


def test_sea_concept_changes_at_the_drift_points(sea: Dataset) -> None:
    """Each segment follows its own threshold (8, then 7, then 9.5) up to the 5% label noise."""

    def agreement(lo: int, hi: int, threshold: float) -> float:
        rows = sea.rows[lo:hi]
        return sum((x["x0"] + x["x1"] > threshold) == y for x, y in rows) / len(rows)

    bounds = [0, *sea.drift_points, len(sea.rows)]
    for (lo, hi), threshold in zip(zip(bounds, bounds[1:], strict=False), (8.0, 7.0, 9.5), strict=True):
        scores = {t: agreement(lo, hi, t) for t in (8.0, 7.0, 9.5)}
        assert scores[threshold] > 0.9
        assert max(scores, key=scores.__getitem__) == threshold


def test_sea_stream_is_deterministic() -> None:
    assert sea_stream(60, seed=3).rows == sea_stream(60, seed=3).rows
    assert sea_stream(60, seed=3).rows != sea_stream(60, seed=4).rows


# --- read_csv ------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_csv_parses_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "n,f,s,e,y\n3,2.5,Oslo,,1\n-7,1e3,x y,,no\n")
    ds = read_csv(path, "y")
    assert ds.name == "data"
    assert ds.rows == [
        ({"n": 3, "f": 2.5, "s": "Oslo", "e": None}, 1),
        ({"n": -7, "f": 1000.0, "s": "x y", "e": None}, "no"),
    ]
    fields, label = ds.rows[0]
    assert type(fields["n"]) is int and type(fields["f"]) is float and type(label) is int
    assert ds.entities is None and ds.drift_points == []


def test_read_csv_entity_and_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "user,a,y\nu1,1,0\nu2,2,1\nu1,3,0\n")
    ds = read_csv(path, "y", entity="user", limit=2)
    assert ds.rows == [({"a": 1}, 0), ({"a": 2}, 1)]
    assert ds.entities == ["u1", "u2"]
    rec = list(schedule(ds, "r", 0))[0][2]
    assert rec["entity_id"] == "u1"


def test_read_csv_missing_target_column(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(ConfigError) as info:
        read_csv(path, "label")
    assert "label" in str(info.value) and info.value.code == "config_error"


def test_read_csv_missing_entity_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_csv(write(tmp_path, "a,y\n1,2\n"), "y", entity="user")


@pytest.mark.parametrize("text", ["a,y\n", ""])
def test_read_csv_without_rows(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        read_csv(write(tmp_path, text), "y")


def test_read_csv_ignores_surplus_cells(tmp_path: Path) -> None:
    ds = read_csv(write(tmp_path, "a,y\n1,0,extra,more\n"), "y")
    assert ds.rows == [({"a": 1}, 0)]


def test_read_csv_short_row_is_missing_values(tmp_path: Path) -> None:
    # As pandas reads it: the cells a short row lacks are missing, as empty cells are, and
    # a row without its target is an event whose label never comes; refusing the whole
    # file for one ragged row would stop a replay that every other row can feed.
    ds = read_csv(write(tmp_path, "a,b,y\n1,2,0\n3\n4,,1\n"), "y")
    assert ds.rows == [({"a": 1, "b": 2}, 0), ({"a": 3, "b": None}, None), ({"a": 4, "b": None}, 1)]
    sent = [(kind, i) for kind, i, _ in schedule(ds, "r", 0)]
    assert sent == [("event", 0), ("label", 0), ("event", 1), ("event", 2), ("label", 2)]


def test_load_dataset(tmp_path: Path) -> None:
    assert len(load_dataset("sea", None, 30).rows) == 30
    path = write(tmp_path, "a,y\n1,0\n2,1\n3,0\n")
    assert len(load_dataset(str(path), "y", 2).rows) == 2
    with pytest.raises(ConfigError):
        load_dataset(str(path), None, None)
    with pytest.raises(ConfigError):
        load_dataset(str(tmp_path / "nope.csv"), "y", None)
