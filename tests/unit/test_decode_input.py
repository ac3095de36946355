"""Serde.decode_input: what a service refuses on top of Avro decoding (shared/serde.py)."""

from __future__ import annotations

import pytest

from driftloop.shared.errors import NonFiniteNumber, RecordTooLarge
from driftloop.shared.serde import MAX_MAP_ENTRIES, Serde

VECTOR = {
    "event_id": "e",
    "entity_id": "x",
    "event_time": 1,
    "features": {"a": 1.0},
    "feature_set_version": "fs1",
    "ingest_time": None,
}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_double_anywhere_is_refused(serde: Serde, bad: float) -> None:
    data = serde.encode("FeatureVector", {**VECTOR, "features": {"a": 1.0, "b": bad}})
    assert serde.decode("FeatureVector", data)["features"]["a"] == 1.0  # Avro itself takes it
    with pytest.raises(NonFiniteNumber, match=r"FeatureVector\.features\.b"):
        serde.decode_input("FeatureVector", data)
    label = serde.encode("Label", {"event_id": "e", "entity_id": "x", "label": bad, "label_time": 1})
    with pytest.raises(NonFiniteNumber):
        serde.decode_input("Label", label)


def test_a_map_is_refused_above_the_bound_and_taken_at_it(serde: Serde) -> None:
    at = {f"f{i}": 0.0 for i in range(MAX_MAP_ENTRIES)}
    assert (
        len(serde.decode_input("FeatureVector", serde.encode("FeatureVector", {**VECTOR, "features": at}))["features"])
        == MAX_MAP_ENTRIES
    )
    over = serde.encode("FeatureVector", {**VECTOR, "features": {**at, "one_more": 0.0}})
    with pytest.raises(RecordTooLarge):
        serde.decode_input("FeatureVector", over)


def test_a_valid_record_is_what_decode_gives(serde: Serde) -> None:
    data = serde.encode("FeatureVector", VECTOR)
    assert serde.decode_input("FeatureVector", data) == serde.decode("FeatureVector", data) == VECTOR
