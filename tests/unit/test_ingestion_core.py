"""Ingestion's pure core: decoding JSON or framed Avro, validating events and labels, dedup."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop.services.ingestion.dedup import Deduplicator
from driftloop.services.ingestion.validate import (
    MAX_FIELDS,
    MAX_ID_CHARS,
    MAX_STRING_CHARS,
    Limits,
    decode,
    parse_json_object,
    validate_event,
    validate_label,
)
from driftloop.shared.errors import (
    DecodeError,
    InvalidRecord,
    MissingField,
    NonFiniteNumber,
    RecordTooLarge,
    TooOld,
    UnknownSchema,
    WrongType,
)
from driftloop.shared.resources import SCHEMA_DIR
from driftloop.shared.serde import FileSchemaRegistry, Serde

NOW = 1_700_000_000_000
LIMITS = Limits()


@pytest.fixture(scope="module")
def serde() -> Serde:
    return Serde(FileSchemaRegistry(SCHEMA_DIR))


def event(**overrides: Any) -> dict[str, Any]:
    base = {
        "event_id": "run1-0",
        "entity_id": "meter-7",
        "event_time": NOW - 1_000,
        "fields": {"x0": 3.5, "x1": 2, "on": True, "city": "Oslo", "gap": None},
    }
    base.update(overrides)
    return base


def label(**overrides: Any) -> dict[str, Any]:
    base = {"event_id": "run1-0", "entity_id": "meter-7", "label": True, "label_time": NOW - 500}
    base.update(overrides)
    return base


def as_json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def ingest_event(data: bytes, serde: Serde, limits: Limits = LIMITS) -> dict[str, Any]:
    return validate_event(decode(data, "RawEvent", serde, limits), NOW, limits)


def ingest_label(data: bytes, serde: Serde, limits: Limits = LIMITS) -> dict[str, Any]:
    return validate_label(decode(data, "Label", serde, limits), NOW, limits)


# --- both encodings -------------------------------------------------------------------------------


def test_json_and_avro_events_give_the_same_clean_record(serde: Serde) -> None:
    from_json = ingest_event(as_json(event()), serde)
    from_avro = ingest_event(serde.encode("RawEvent", {**event(), "ingest_time": None}), serde)
    assert from_json == from_avro == {**event(), "ingest_time": None}
    assert from_avro["fields"]["on"] is True
    assert type(from_avro["fields"]["x1"]) is int


def test_json_and_avro_labels_give_the_same_clean_record(serde: Serde) -> None:
    for value in (True, 0, 2.5, "spam"):
        from_json = ingest_label(as_json(label(label=value)), serde)
        from_avro = ingest_label(serde.encode("Label", label(label=value)), serde)
        assert from_json == from_avro == label(label=value)
        assert type(from_avro["label"]) is type(value)


def test_validated_records_encode_as_avro(serde: Serde) -> None:
    clean = ingest_event(as_json(event()), serde)
    assert serde.decode("RawEvent", serde.encode("RawEvent", clean)) == clean
    lab = ingest_label(as_json(label()), serde)
    assert serde.decode("Label", serde.encode("Label", lab)) == lab


def test_float_event_time_is_truncated_to_int_ms(serde: Serde) -> None:
    assert ingest_event(as_json(event(event_time=NOW - 1000 + 0.7)), serde)["event_time"] == NOW - 1000


def test_future_event_is_accepted(serde: Serde) -> None:
    assert ingest_event(as_json(event(event_time=NOW + 3_600_000)), serde)["event_time"] == NOW + 3_600_000


def test_avro_with_unknown_schema_id_is_rejected(serde: Serde) -> None:
    data = b"\x00\x00\x00\x03\xe7" + serde.encode("RawEvent", {**event(), "ingest_time": None})[5:]
    with pytest.raises(UnknownSchema):
        ingest_event(data, serde)


# --- error codes ---------------------------------------------------------------------------------


def _raw(text: str) -> bytes:
    return text.encode()


EVENT_ERRORS = [
    # decode_error
    pytest.param(b"", DecodeError, id="empty"),
    pytest.param(b"not json at all", DecodeError, id="not-json"),
    pytest.param(b"\xff\xfe\xfa\x80", DecodeError, id="not-utf8"),
    pytest.param(b'[{"event_id": "e"}]', DecodeError, id="json-array"),
    pytest.param(b'"a string"', DecodeError, id="json-string"),
    pytest.param(b"42", DecodeError, id="json-number"),
    pytest.param(b"null", DecodeError, id="json-null"),
    pytest.param(b'{"event_id": "e"', DecodeError, id="json-truncated"),
    pytest.param(b"\x00\x00\x00\x00\x01\x02", DecodeError, id="avro-truncated"),
    # missing_field
    pytest.param(as_json({k: v for k, v in event().items() if k != "event_id"}), MissingField, id="no-event-id"),
    pytest.param(as_json(event(event_id=None)), MissingField, id="null-event-id"),
    pytest.param(as_json({k: v for k, v in event().items() if k != "entity_id"}), MissingField, id="no-entity"),
    pytest.param(as_json({k: v for k, v in event().items() if k != "event_time"}), MissingField, id="no-time"),
    pytest.param(as_json({k: v for k, v in event().items() if k != "fields"}), MissingField, id="no-fields"),
    pytest.param(as_json(event(fields=None)), MissingField, id="null-fields"),
    # wrong_type
    pytest.param(as_json(event(event_id=17)), WrongType, id="event-id-number"),
    pytest.param(as_json(event(event_id="")), WrongType, id="event-id-empty"),
    pytest.param(as_json(event(event_id="e" * (MAX_ID_CHARS + 1))), WrongType, id="event-id-too-long"),
    pytest.param(as_json(event(entity_id=["a"])), WrongType, id="entity-list"),
    pytest.param(as_json(event(event_time="2024-01-01")), WrongType, id="time-string"),
    pytest.param(as_json(event(event_time=True)), WrongType, id="time-bool"),
    pytest.param(as_json(event(event_time=-1)), WrongType, id="time-negative"),
    pytest.param(as_json(event(event_time=2**53)), WrongType, id="time-too-big"),
    pytest.param(as_json(event(fields=[1, 2])), WrongType, id="fields-list"),
    pytest.param(as_json(event(fields="x0=1")), WrongType, id="fields-string"),
    pytest.param(as_json(event(fields={"a": [1, 2]})), WrongType, id="field-list"),
    pytest.param(as_json(event(fields={"a": {"b": 1}})), WrongType, id="field-dict"),
    pytest.param(as_json(event(fields={"a": 10**30})), WrongType, id="field-int-too-big"),
    pytest.param(as_json(event(fields={"a": -(2**63) - 1})), WrongType, id="field-int-too-small"),
    pytest.param(as_json(event(fields={"a": "x" * (MAX_STRING_CHARS + 1)})), WrongType, id="field-str-too-long"),
    pytest.param(as_json(event(fields={f"f{i}": i for i in range(MAX_FIELDS + 1)})), WrongType, id="too-many"),
    # non_finite_number
    pytest.param(
        _raw('{"event_id": "e", "entity_id": "u", "event_time": 1699999999000, "fields": {"a": NaN}}'),
        NonFiniteNumber,
        id="json-nan",
    ),
    pytest.param(
        _raw('{"event_id": "e", "entity_id": "u", "event_time": 1699999999000, "fields": {"a": Infinity}}'),
        NonFiniteNumber,
        id="json-inf",
    ),
    pytest.param(
        _raw('{"event_id": "e", "entity_id": "u", "event_time": 1699999999000, "fields": {"a": -Infinity}}'),
        NonFiniteNumber,
        id="json-neg-inf",
    ),
    pytest.param(
        _raw('{"event_id": "e", "entity_id": "u", "event_time": 1699999999000, "fields": {"a": 1e400}}'),
        NonFiniteNumber,
        id="json-overflow",
    ),
    pytest.param(
        _raw('{"event_id": "e", "entity_id": "u", "event_time": NaN, "fields": {}}'),
        NonFiniteNumber,
        id="json-nan-time",
    ),
    # too_old
    pytest.param(as_json(event(event_time=NOW - LIMITS.max_lateness_ms - 1)), TooOld, id="too-old"),
]


@pytest.mark.parametrize(("data", "error"), EVENT_ERRORS)
def test_event_error_codes(serde: Serde, data: bytes, error: type[InvalidRecord]) -> None:
    with pytest.raises(error) as info:
        ingest_event(data, serde)
    assert type(info.value) is error
    assert info.value.code == error.code


def test_error_code_strings() -> None:
    assert DecodeError.code == "decode_error"
    assert MissingField.code == "missing_field"
    assert WrongType.code == "wrong_type"
    assert NonFiniteNumber.code == "non_finite_number"
    assert RecordTooLarge.code == "record_too_large"
    assert TooOld.code == "too_old"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_float_in_an_avro_event(serde: Serde, bad: float) -> None:
    data = serde.encode("RawEvent", {**event(fields={"x0": 1.0, "x1": bad}), "ingest_time": None})
    assert serde.decode("RawEvent", data)["fields"]["x0"] == 1.0  # the bytes themselves are valid Avro
    with pytest.raises(NonFiniteNumber):
        ingest_event(data, serde)


def test_non_finite_label_in_avro(serde: Serde) -> None:
    with pytest.raises(NonFiniteNumber):
        ingest_label(serde.encode("Label", label(label=math.nan)), serde)


LABEL_ERRORS = [
    pytest.param(as_json({k: v for k, v in label().items() if k != "label"}), MissingField, id="no-label"),
    pytest.param(as_json(label(label=None)), MissingField, id="null-label"),
    pytest.param(as_json({k: v for k, v in label().items() if k != "label_time"}), MissingField, id="no-time"),
    pytest.param(as_json({k: v for k, v in label().items() if k != "event_id"}), MissingField, id="no-event-id"),
    pytest.param(as_json(label(label=[1])), WrongType, id="label-list"),
    pytest.param(as_json(label(label={"y": 1})), WrongType, id="label-dict"),
    pytest.param(as_json(label(event_id=3)), WrongType, id="event-id-number"),
    pytest.param(
        _raw('{"event_id": "e", "entity_id": "u", "label": NaN, "label_time": 1699999999000}'),
        NonFiniteNumber,
        id="label-nan",
    ),
    pytest.param(as_json(label(label_time=NOW - LIMITS.max_lateness_ms - 1)), TooOld, id="too-old"),
]


@pytest.mark.parametrize(("data", "error"), LABEL_ERRORS)
def test_label_error_codes(serde: Serde, data: bytes, error: type[InvalidRecord]) -> None:
    with pytest.raises(error):
        ingest_label(data, serde)


def test_label_zero_and_false_are_labels_not_missing(serde: Serde) -> None:
    assert ingest_label(as_json(label(label=0)), serde)["label"] == 0
    assert ingest_label(as_json(label(label=False)), serde)["label"] is False
    assert ingest_label(as_json(label(label="")), serde)["label"] == ""


def test_lateness_bound_is_inclusive(serde: Serde) -> None:
    limits = Limits(max_lateness_ms=60_000)
    assert ingest_event(as_json(event(event_time=NOW - 60_000)), serde, limits)["event_time"] == NOW - 60_000
    with pytest.raises(TooOld):
        ingest_event(as_json(event(event_time=NOW - 60_001)), serde, limits)
    with pytest.raises(TooOld):
        ingest_label(as_json(label(label_time=NOW - 60_001)), serde, limits)


def test_record_too_large_is_checked_before_parsing(serde: Serde) -> None:
    limits = Limits(max_record_bytes=100)
    small = as_json({"event_id": "e", "entity_id": "u", "event_time": NOW, "fields": {}})
    assert len(small) <= 100
    assert ingest_event(small, serde, limits)["event_id"] == "e"
    big = as_json(event(fields={"pad": "x" * 200}))
    with pytest.raises(RecordTooLarge) as info:
        decode(big, "RawEvent", serde, limits)
    assert info.value.code == "record_too_large"
    # Even bytes that are not JSON at all are refused for their size first.
    with pytest.raises(RecordTooLarge):
        decode(b"\x01" * 101, "RawEvent", serde, limits)
    with pytest.raises(RecordTooLarge):
        decode(
            serde.encode("RawEvent", {**event(fields={"pad": "x" * 200}), "ingest_time": None}),
            "RawEvent",
            serde,
            limits,
        )


def test_limits_boundaries_that_are_allowed(serde: Serde) -> None:
    fields = {f"f{i}": i for i in range(MAX_FIELDS)}
    fields["s"] = "y" * MAX_STRING_CHARS
    del fields["f0"]
    clean = ingest_event(as_json(event(event_id="e" * MAX_ID_CHARS, fields=fields)), serde)
    assert len(clean["fields"]) == MAX_FIELDS
    edge = {"lo": -(2**63), "hi": 2**63 - 1}
    assert ingest_event(as_json(event(fields=edge)), serde)["fields"] == edge


@pytest.mark.parametrize("bomb", [b"[" * 500_000, b'{"a":' * 200_000, b"[" * 999_999])
def test_deeply_nested_json_bomb_is_a_decode_error(serde: Serde, bomb: bytes) -> None:
    # The parser gives up at Python's recursion limit, whatever the depth; no wall clock is
    # asserted (a shared machine makes any bound flaky), the size limit bounds the work.
    with pytest.raises(DecodeError, match="RecursionError"):
        decode(bomb, "RawEvent", serde, LIMITS)


def test_nested_fields_are_refused_as_wrong_type(serde: Serde) -> None:
    data = b'{"event_id": "e", "entity_id": "u", "event_time": 1699999999000, "fields": {"a": ' + b"[" * 70
    data += b"]" * 70 + b"}}"
    with pytest.raises(WrongType):
        ingest_event(data, serde)


def test_parse_json_object_accepts_a_flat_object() -> None:
    assert parse_json_object(b'{"a": 1, "b": [2]}') == {"a": 1, "b": [2]}


def test_huge_integer_literal_is_an_invalid_record(serde: Serde) -> None:
    """Over 4300 digits, json.loads raises a plain ValueError (Python's int-string limit)."""
    data = b'{"event_id": "e", "entity_id": "u", "event_time": 1, "fields": {"a": ' + b"9" * 5000 + b"}}"
    with pytest.raises(DecodeError):
        ingest_event(data, serde)


def test_brackets_inside_a_string_are_not_nesting(serde: Serde) -> None:
    fields = {"note": "[" * 40 + "{" * 40}  # a legal 80-character string
    assert ingest_event(as_json(event(fields=fields)), serde)["fields"] == fields


# --- dedup ---------------------------------------------------------------------------------------


def test_duplicate_within_ttl() -> None:
    store: dict[str, int] = {}
    dedup = Deduplicator(store, ttl_ms=1_000)
    assert dedup.seen("e1", now_ms=10_000) is False
    assert store == {"e1": 10_000}
    assert dedup.seen("e1", now_ms=10_500) is True
    assert dedup.seen("e1", now_ms=11_000) is True  # exactly at the TTL is still a duplicate
    assert dedup.seen("e2", now_ms=10_500) is False  # another id is independent
    assert store["e1"] == 10_000  # a duplicate does not extend the first-seen time


def test_not_a_duplicate_after_ttl() -> None:
    store: dict[str, int] = {}
    dedup = Deduplicator(store, ttl_ms=1_000)
    assert dedup.seen("e1", 0) is False
    assert dedup.seen("e1", 1_001) is False
    assert store["e1"] == 1_001  # the window restarts from the re-ingestion
    assert dedup.seen("e1", 1_500) is True
    assert dedup.seen("e1", 2_002) is False


def test_dedup_uses_the_injected_store() -> None:
    store = {"e1": 5_000}  # e.g. restored from a changelog
    assert Deduplicator(store, ttl_ms=100).seen("e1", 5_050) is True
    assert Deduplicator(store, ttl_ms=100).seen("e1", 5_200) is False


@pytest.mark.parametrize(
    "obj",
    [
        {"event_id": "\ud800", "entity_id": "a", "event_time": NOW, "fields": {}},
        {"event_id": "e", "entity_id": "a", "event_time": NOW, "fields": {"s": "a\udfffb"}},
        {"event_id": "e", "entity_id": "a", "event_time": NOW, "fields": {"\udc80": 1}},
        {"event_id": "e", "entity_id": "a", "event_time": NOW, "fields": {"x" * (MAX_ID_CHARS + 1): 1}},
    ],
    ids=["id", "value", "field-name", "long-field-name"],
)
def test_lone_surrogates_and_long_field_names_are_wrong_types(obj: dict[str, Any], serde: Serde) -> None:
    # Found by fuzzing: a JSON \ud800 escape passed validation, then failed to encode as Avro.
    data = json.dumps(obj).encode()
    with pytest.raises(WrongType):
        validate_event(decode(data, "RawEvent", serde, LIMITS), NOW, LIMITS)


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 500)), max_size=200), st.integers(1, 7))
def test_the_sweep_never_changes_an_answer_and_keeps_only_live_ids(
    calls: list[tuple[int, int]], sweep_every: int
) -> None:
    """Against a reference that never forgets: same answers, and after a sweep the store
    holds no id older than the TTL."""
    ttl = 100
    store: dict[str, int] = {}
    dedup = Deduplicator(store, ttl_ms=ttl, sweep_every=sweep_every)
    reference: dict[str, int] = {}
    now = 0
    for i, (eid, step) in enumerate(calls):
        now += step % 60  # time never goes back
        key = f"e{eid}"
        first = reference.get(key)
        expected = first is not None and now - first <= ttl
        if not expected:
            reference[key] = now
        assert dedup.seen(key, now) is expected, (i, key, now)
    dedup.expire(now)
    assert all(now - t <= ttl for t in store.values())
    assert {k: t for k, t in reference.items() if now - t <= ttl} == store
