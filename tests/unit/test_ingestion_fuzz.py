"""Fuzzing ingestion's pure core: whatever bytes arrive, decode + validate either yields a
record that encodes, or raises a named InvalidRecord whose dead letter encodes. Anything
else would be dead-lettered as internal_error (or, failing in the dead letter, stop the
agent), so each such crash is a bug in validate.py."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from fuzzing import CATEGORIES, hostile, hypothesis_objects
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloop.services.ingestion.validate import Limits, decode, validate_event, validate_label
from driftloop.shared.errors import DEAD_LETTER_CODES, InvalidRecord
from driftloop.shared.resources import SCHEMA_DIR
from driftloop.shared.serde import FileSchemaRegistry, Serde

NOW = 1_700_000_000_000
LIMITS = Limits(max_record_bytes=20_000)
SERDE = Serde(FileSchemaRegistry(SCHEMA_DIR))
RECORD = {"events": ("RawEvent", validate_event), "labels": ("Label", validate_label)}


def ingest(kind: str, data: bytes | None) -> str | None:
    """What the ingestion handler does with one value: None if accepted, else the error code."""
    record, validate = RECORD[kind]
    try:
        value = validate(decode(data, record, SERDE, LIMITS), NOW, LIMITS)
    except InvalidRecord as exc:
        # The dead letter must encode, or the service's dead-letter path itself would fail.
        SERDE.encode("DeadLetter", dead_letter(data, exc))
        return exc.code
    SERDE.encode(record, value)
    return None


def dead_letter(data: bytes | None, exc: InvalidRecord) -> dict[str, Any]:
    return {
        "original_key": None,
        "original_value": data,
        "source_topic": "t",
        "source_partition": 0,
        "source_offset": 0,
        "service": "ingestion",
        "error_code": exc.code,
        "error_message": str(exc)[:1000],
        "event_id": None,
        "time": NOW,
    }


@pytest.mark.parametrize("kind", ["events", "labels"])
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_hostile_inputs_are_refused_with_a_dead_letter_code(kind: str, seed: int) -> None:
    category, data = hostile(kind, random.Random(seed), SERDE, NOW, LIMITS.max_record_bytes)
    code = ingest(kind, data)
    # Byte mutations can leave a record valid (a changed digit); every other category is bad.
    if category not in ("mutated_avro", "mutated_json"):
        assert code in DEAD_LETTER_CODES, (category, data[:200] if data else data)


@pytest.mark.parametrize("kind", ["events", "labels"])
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_shaped_objects_never_crash(kind: str, data: st.DataObject) -> None:
    ingest(kind, data.draw(hypothesis_objects(kind, NOW)))


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(blob: bytes) -> None:
    for kind in RECORD:
        ingest(kind, blob)
        ingest(kind, b"\x00" + blob)  # looks framed


def test_every_category_is_generated_for_both_topics() -> None:
    seen = Counter(hostile(k, random.Random(i), SERDE, NOW, 20_000)[0] for k in RECORD for i in range(2000))
    missing = set(CATEGORIES) - set(seen)
    assert not missing, missing
