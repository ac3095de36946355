"""Avro serde with Confluent framing, and the file schema registry."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloop.shared.errors import DecodeError, InvalidRecord, SchemaMismatch, UnknownSchema
from driftloop.shared.resources import SCHEMA_DIR
from driftloop.shared.serde import HEADER_SIZE as _HEADER_SIZE
from driftloop.shared.serde import MAGIC, RECORDS, FileSchemaRegistry, Serde

REGISTRY_INDEX = json.loads((SCHEMA_DIR / "registry.json").read_text())
# The newest version of each record (what writers use).
_NEWEST = sorted(REGISTRY_INDEX["schemas"], key=lambda e: e["version"])
SCHEMA_IDS = {e["record"]: e["id"] for e in _NEWEST}
AVSC = {e["record"]: json.loads((SCHEMA_DIR / e["file"]).read_text()) for e in _NEWEST}
_NAMED: dict[str, Any] = {}  # named types seen so far, for references such as "ModelStatus"

INT64 = 2**63


@pytest.fixture(scope="module")
def serde() -> Serde:
    return Serde(FileSchemaRegistry(SCHEMA_DIR))


# --- example records built from the .avsc files ---------------------------------------------------


def _example(schema: Any, field: str, branch: int = 0) -> Any:
    """A realistic value for an Avro type; ``branch`` picks which non-null union branch."""
    if isinstance(schema, list):
        options = [s for s in schema if s != "null"]
        return _example(options[branch % len(options)], field, branch)
    if isinstance(schema, dict):
        kind = schema["type"]
        if "name" in schema:
            _NAMED[schema["name"]] = schema
        if kind == "record":
            return {f["name"]: _example(f["type"], f["name"], branch) for f in schema["fields"]}
        if kind == "map":
            return {"x0": _example(schema["values"], field, branch), "x1": _example(schema["values"], field, branch)}
        if kind == "enum":
            return schema["symbols"][-1]
        if kind == "array":
            return [_example(schema["items"], field, branch)]
        return _example(kind, field, branch)
    primitives = {
        "string": f"{field}-\u00e9\u6f22-1",  # non-ASCII on purpose
        "long": 1_700_000_000_123 if "time" in field or field == "created_at" else 123_456_789_012,
        "int": 3,
        "double": 0.625,
        "float": 0.5,
        "boolean": True,
        "bytes": b"\x00\x01raw\xff",
    }
    if schema not in primitives:
        return _example(_NAMED[schema], field, branch)
    return primitives[schema]


def _with_nulls(schema: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """The same record with every nullable top-level field set to null."""
    out = dict(value)
    for f in schema["fields"]:
        if isinstance(f["type"], list) and "null" in f["type"]:
            out[f["name"]] = None
    return out


def _branches(schema: dict[str, Any]) -> int:
    widest = 1
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("type") == "map":
            t = t["values"]
        if isinstance(t, list):
            widest = max(widest, len([s for s in t if s != "null"]))
    return widest


def same_typed(a: Any, b: Any) -> bool:
    """Equality that also tells True from 1 and 1 from 1.0."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_typed(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_typed(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_every_record_has_a_registered_schema() -> None:
    assert set(RECORDS) == set(SCHEMA_IDS)
    ids = [e["id"] for e in REGISTRY_INDEX["schemas"]]
    assert len(ids) == len(set(ids))
    for record, schema in AVSC.items():
        assert schema["name"] == record
        assert schema["namespace"] == "driftloop"


CASES = [
    pytest.param(record, branch, id=f"{record}-branch{branch}")
    for record in RECORDS
    for branch in range(_branches(AVSC[record]))
]


@pytest.mark.parametrize(("record", "branch"), CASES)
def test_round_trip_of_every_record(serde: Serde, record: str, branch: int) -> None:
    value = _example(AVSC[record], record, branch)
    data = serde.encode(record, value)
    assert same_typed(serde.decode(record, data), value)


@pytest.mark.parametrize("record", RECORDS)
def test_round_trip_with_nulls(serde: Serde, record: str) -> None:
    value = _with_nulls(AVSC[record], _example(AVSC[record], record))
    assert same_typed(serde.decode(record, serde.encode(record, value)), value)


@pytest.mark.parametrize("record", RECORDS)
def test_optional_fields_may_be_left_out_when_writing(serde: Serde, record: str) -> None:
    schema = AVSC[record]
    value = _example(schema, record)
    defaulted = [f["name"] for f in schema["fields"] if "default" in f]
    for name in defaulted:
        del value[name]
    decoded = serde.decode(record, serde.encode(record, value))
    for f in schema["fields"]:
        if f["name"] in defaulted:
            assert decoded[f["name"]] == f["default"]
        else:
            assert same_typed(decoded[f["name"]], value[f["name"]])


@pytest.mark.parametrize("record", RECORDS)
def test_confluent_framing(serde: Serde, record: str) -> None:
    data = serde.encode(record, _example(AVSC[record], record))
    assert data[0] == MAGIC == 0
    assert struct.unpack(">I", data[1:5])[0] == SCHEMA_IDS[record]
    assert Serde.is_framed(data)


def test_is_framed() -> None:
    assert not Serde.is_framed(None)
    assert not Serde.is_framed(b"")
    assert not Serde.is_framed(b"\x00\x00\x00\x01")  # shorter than the header
    assert not Serde.is_framed(b'{"event_id": "e1"}')
    assert Serde.is_framed(b"\x00\x00\x00\x00\x01")


# --- decode errors -------------------------------------------------------------------------------


LABEL = {"event_id": "e-1", "entity_id": "u-1", "label": True, "label_time": 1_700_000_000_000}


@pytest.mark.parametrize(
    ("make", "error", "code"),
    [
        pytest.param(lambda s: b"", DecodeError, "decode_error", id="empty"),
        pytest.param(lambda s: None, DecodeError, "decode_error", id="none"),
        pytest.param(lambda s: b"\x00\x00\x00", DecodeError, "decode_error", id="shorter-than-header"),
        pytest.param(lambda s: b"\x01" + s.encode("Label", LABEL)[1:], DecodeError, "decode_error", id="magic-1"),
        pytest.param(lambda s: b"\xff" + s.encode("Label", LABEL)[1:], DecodeError, "decode_error", id="magic-ff"),
        pytest.param(lambda s: b'{"event_id": "e-1"}', DecodeError, "decode_error", id="json-not-avro"),
        pytest.param(
            lambda s: b"\x00" + struct.pack(">I", 4242) + s.encode("Label", LABEL)[5:],
            UnknownSchema,
            "unknown_schema_id",
            id="unknown-id",
        ),
        pytest.param(lambda s: s.encode("Label", LABEL)[:-3], DecodeError, "decode_error", id="truncated"),
        pytest.param(lambda s: s.encode("Label", LABEL)[:5], DecodeError, "decode_error", id="header-only"),
        pytest.param(lambda s: s.encode("Label", LABEL) + b"\x00", DecodeError, "decode_error", id="trailing"),
        pytest.param(
            lambda s: s.encode("RawEvent", {"event_id": "e", "entity_id": "u", "event_time": 1, "fields": {}}),
            SchemaMismatch,
            "schema_mismatch",
            id="another-record",
        ),
        pytest.param(
            # A LabeledExample holds every Label field: only the record name tells them apart.
            lambda s: s.encode("LabeledExample", _example(AVSC["LabeledExample"], "LabeledExample")),
            SchemaMismatch,
            "schema_mismatch",
            id="superset-record",
        ),
    ],
)
def test_decode_errors(serde: Serde, make: Any, error: type[InvalidRecord], code: str) -> None:
    data = make(serde)
    with pytest.raises(error) as info:
        serde.decode("Label", data)
    assert type(info.value) is error
    assert info.value.code == code
    assert isinstance(info.value, InvalidRecord)
    assert info.value.retriable is False


def test_a_label_body_with_a_corrupt_union_index_is_a_decode_error(serde: Serde) -> None:
    data = bytearray(serde.encode("Label", LABEL))
    # body: event_id (len 3 -> zigzag 6, "e-1"), entity_id (6, "u-1"), then the union index.
    union_at = 5 + 4 + 4
    assert data[union_at] == 0  # branch 0: boolean
    data[union_at] = 40  # branch 20 does not exist
    with pytest.raises(DecodeError):
        serde.decode("Label", bytes(data))


@pytest.mark.parametrize(
    ("record", "value"),
    [
        ("Label", {"event_id": "e", "entity_id": "u", "label": True}),  # no label_time
        ("Label", {"event_id": "e", "entity_id": "u", "label_time": 1}),  # no label
        ("Label", {"event_id": "e", "entity_id": "u", "label": None, "label_time": 1}),
        ("RawEvent", {"event_id": "e", "entity_id": "u", "event_time": 1}),  # no fields
        ("RawEvent", {"event_id": "e", "entity_id": "u", "event_time": "yesterday", "fields": {}}),
        ("RawEvent", {"event_id": "e", "entity_id": "u", "event_time": 1, "fields": {"a": [1]}}),
        ("Prediction", {**_example(AVSC["Prediction"], "Prediction"), "role": "oracle"}),  # not an enum symbol
        ("FeatureVector", {**_example(AVSC["FeatureVector"], "FeatureVector"), "features": {"a": "high"}}),
    ],
)
def test_encode_of_a_record_that_does_not_fit_raises_schema_mismatch(
    serde: Serde, record: str, value: dict[str, Any]
) -> None:
    with pytest.raises(SchemaMismatch) as info:
        serde.encode(record, value)
    assert info.value.code == "schema_mismatch"


def test_encode_of_an_unknown_record_name_fails(serde: Serde) -> None:
    with pytest.raises(KeyError):
        serde.encode("Invoice", {})


def test_unknown_record_and_id_in_the_registry() -> None:
    registry = FileSchemaRegistry(SCHEMA_DIR)
    with pytest.raises(UnknownSchema):
        registry.latest("Invoice")
    with pytest.raises(UnknownSchema):
        registry.schema_by_id(0)
    assert registry.ids() == {e["id"]: f"driftloop.{e['record']}" for e in REGISTRY_INDEX["schemas"]}


# --- schema evolution ----------------------------------------------------------------------------


RAW_V2 = json.loads(json.dumps(AVSC["RawEvent"]))
RAW_V2["fields"].append({"name": "source", "type": "string", "default": "unknown"})

V1_EVENT = {
    "event_id": "e-1",
    "entity_id": "u-1",
    "event_time": 1_700_000_000_000,
    "fields": {"x0": 1.5, "x1": 7, "flag": False, "city": "Lyon", "gap": None},
    "ingest_time": None,
}


RAW_V2_ID = 1 + max(e["id"] for e in REGISTRY_INDEX["schemas"])


@pytest.fixture
def evolved_dir(tmp_path: Path) -> Path:
    """The real schemas plus RawEvent v2 (a new id), listed before v1 on purpose."""
    out = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, out)
    (out / "RawEvent.v2.avsc").write_text(json.dumps(RAW_V2))
    index = json.loads((out / "registry.json").read_text())
    index["schemas"].insert(0, {"id": RAW_V2_ID, "record": "RawEvent", "version": 2, "file": "RawEvent.v2.avsc"})
    (out / "registry.json").write_text(json.dumps(index))
    return out


class PinnedRegistry(FileSchemaRegistry):
    """A consumer not upgraded yet: it can look every id up, but reads and writes ``record``
    as the schema ``schema_id``."""

    def __init__(self, schema_dir: Path, record: str, schema_id: int) -> None:
        super().__init__(schema_dir)
        self.record, self.schema_id = record, schema_id

    def latest(self, record: str) -> tuple[int, Any]:
        if record == self.record:
            return self.schema_id, self.schema_by_id(self.schema_id)
        return super().latest(record)


def _entry(record: str, version: int) -> dict[str, Any]:
    """``record``'s ``version`` in the real registry index."""
    return next(e for e in REGISTRY_INDEX["schemas"] if e["record"] == record and e["version"] == version)


def _fields(record: str, version: int) -> list[dict[str, Any]]:
    return json.loads((SCHEMA_DIR / _entry(record, version)["file"]).read_text())["fields"]


def test_newest_version_is_the_writer_whatever_the_order(evolved_dir: Path) -> None:
    registry = FileSchemaRegistry(evolved_dir)
    schema_id, schema = registry.latest("RawEvent")
    assert schema_id == RAW_V2_ID
    assert [f["name"] for f in schema["fields"]][-1] == "source"
    assert registry.latest("Label")[0] == 2


def test_old_record_is_read_by_new_reader_with_the_default(serde: Serde, evolved_dir: Path) -> None:
    old_bytes = serde.encode("RawEvent", V1_EVENT)  # written with the real v1 (id 1)
    assert struct.unpack(">I", old_bytes[1:5])[0] == 1
    new = Serde(FileSchemaRegistry(evolved_dir))
    assert new.decode("RawEvent", old_bytes) == {**V1_EVENT, "source": "unknown"}


def test_new_record_is_read_by_old_reader_without_the_new_field(evolved_dir: Path) -> None:
    new = Serde(FileSchemaRegistry(evolved_dir))
    new_bytes = new.encode("RawEvent", {**V1_EVENT, "source": "sensor-7"})
    assert struct.unpack(">I", new_bytes[1:5])[0] == RAW_V2_ID
    assert new.decode("RawEvent", new_bytes)["source"] == "sensor-7"
    old = Serde(PinnedRegistry(evolved_dir, "RawEvent", 1))
    decoded = old.decode("RawEvent", new_bytes)
    assert "source" not in decoded
    assert same_typed(decoded, V1_EVENT)


def test_a_reader_without_the_new_id_refuses_it(serde: Serde, evolved_dir: Path) -> None:
    new_bytes = Serde(FileSchemaRegistry(evolved_dir)).encode("RawEvent", {**V1_EVENT, "source": "s"})
    with pytest.raises(UnknownSchema):
        serde.decode("RawEvent", new_bytes)


def test_two_versions_of_one_record_parse_independently(evolved_dir: Path) -> None:
    registry = FileSchemaRegistry(evolved_dir)
    v1, v2 = registry.schema_by_id(1), registry.schema_by_id(RAW_V2_ID)
    assert len(v2["fields"]) == len(v1["fields"]) + 1
    assert registry.ids()[1] == registry.ids()[RAW_V2_ID] == "driftloop.RawEvent"


# --- ModelVersion v2 (signature) against v1, both real files in schemas/ ------------------------


SCHEMA_IDS_V1 = {e["record"]: e["id"] for e in REGISTRY_INDEX["schemas"] if e["version"] == 1}


def _model_version_v1_serde() -> Serde:
    """A consumer not upgraded yet: it still reads and writes ModelVersion as v1."""
    return Serde(PinnedRegistry(SCHEMA_DIR, "ModelVersion", SCHEMA_IDS_V1["ModelVersion"]))


# Fields added after v1: status_history and signature (v2), task (v3).
AFTER_V1 = ("status_history", "signature", "task")


def _model_version(serde_schema: dict[str, Any]) -> dict[str, Any]:
    """A ModelVersion with only the fields v1 has."""
    value = _example(serde_schema, "ModelVersion")
    for name in AFTER_V1:
        value.pop(name, None)
    return value


def _model_version_fields(version: int) -> list[dict[str, Any]]:
    return _fields("ModelVersion", version)


def test_model_version_v2_adds_only_optional_fields() -> None:
    v1_fields, v2_fields = _model_version_fields(1), _model_version_fields(2)
    assert v2_fields[: len(v1_fields)] == v1_fields
    history, signature = v2_fields[len(v1_fields) :]
    assert history["name"] == "status_history" and history["default"] == []
    assert signature["name"] == "signature" and signature["default"] is None and signature["type"][0] == "null"


def test_model_version_v3_adds_only_the_optional_task() -> None:
    v2_fields, v3_fields = _model_version_fields(2), _model_version_fields(3)
    assert AVSC["ModelVersion"]["fields"] == v3_fields  # the newest: what writers use
    assert v3_fields[: len(v2_fields)] == v2_fields
    (task,) = v3_fields[len(v2_fields) :]
    # A null default: the signature's canonical form drops nulls, so a record signed before
    # the field existed still verifies once read with it.
    assert task["name"] == "task" and task["default"] is None and task["type"] == ["null", "string"]


def test_old_model_version_is_read_by_new_reader_as_unsigned(serde: Serde) -> None:
    old = _model_version_v1_serde()
    value = _model_version(AVSC["ModelVersion"])
    old_bytes = old.encode("ModelVersion", value)
    assert struct.unpack(">I", old_bytes[1:5])[0] == SCHEMA_IDS_V1["ModelVersion"]
    assert same_typed(
        serde.decode("ModelVersion", old_bytes), {**value, "signature": None, "status_history": [], "task": None}
    )


def test_signed_model_version_is_read_by_old_reader_without_the_signature(serde: Serde) -> None:
    from driftloop.shared.signing import sign, verify

    value = sign(_model_version(AVSC["ModelVersion"]), b"k")
    new_bytes = serde.encode("ModelVersion", value)
    assert struct.unpack(">I", new_bytes[1:5])[0] == SCHEMA_IDS["ModelVersion"] != SCHEMA_IDS_V1["ModelVersion"]
    decoded = _model_version_v1_serde().decode("ModelVersion", new_bytes)
    assert "signature" not in decoded
    assert same_typed(decoded, {k: v for k, v in value.items() if k not in ("signature", "task")})
    # The new reader gets the signature back, still valid after the Avro round trip.
    assert verify(serde.decode("ModelVersion", new_bytes), b"k")


# --- property: RawEvent field maps survive a round trip with their types -------------------------


field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-INT64, max_value=INT64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(st.text(max_size=20), field_values, max_size=12),
    event_id=st.text(min_size=1, max_size=40),
    event_time=st.integers(min_value=-INT64, max_value=INT64 - 1),
    ingest_time=st.none() | st.integers(min_value=0, max_value=2**53),
)
def test_raw_event_round_trip_property(
    serde: Serde, fields: dict[str, Any], event_id: str, event_time: int, ingest_time: int | None
) -> None:
    value = {
        "event_id": event_id,
        "entity_id": event_id[::-1],
        "event_time": event_time,
        "fields": fields,
        "ingest_time": ingest_time,
    }
    decoded = serde.decode("RawEvent", serde.encode("RawEvent", value))
    assert decoded == value
    assert same_typed(decoded, value)  # bools stay bools, ints stay ints, floats stay floats


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(st.text(max_size=20), field_values, max_size=12),
    event_time=st.integers(min_value=-INT64, max_value=INT64 - 1),
    stamp=st.integers(min_value=-INT64, max_value=INT64 - 1),
    had=st.none() | st.integers(min_value=0, max_value=2**53),
)
def test_stamping_ingest_time_in_place_equals_encoding_the_stamped_event(
    serde: Serde, fields: dict[str, Any], event_time: int, stamp: int, had: int | None
) -> None:
    value = {"event_id": "e", "entity_id": "u", "event_time": event_time, "fields": fields, "ingest_time": had}
    data = serde.encode("RawEvent", value)
    stamped = serde.with_ingest_time(data, stamp)
    if had is None:
        assert stamped == serde.encode("RawEvent", {**value, "ingest_time": stamp})
        assert serde.decode("RawEvent", stamped)["ingest_time"] == stamp
    # An event that carries an ingest_time already ends in its long, not in a null; only a
    # value of 0 ends in a 0 byte too, and the caller knows from the decoded record.
    elif had != 0:
        assert stamped is None


def test_stamping_needs_the_current_raw_event_schema(serde: Serde) -> None:
    label = serde.encode("Label", {"event_id": "e", "entity_id": "u", "label": 0, "label_time": 0})
    assert serde.with_ingest_time(label, 5) is None
    assert serde.with_ingest_time(b'{"event_id": "e"}\x00', 5) is None


# --- ModelVersion v2: status_history ---------------------------------------------------------------

V2_ONLY = AFTER_V1


def _model_version_with_history() -> dict[str, Any]:
    value = _example(AVSC["ModelVersion"], "ModelVersion")
    value["status_history"] = [{"status": "candidate", "reason": "registered", "at": 5}]
    return value


def test_model_version_v1_records_read_with_an_empty_status_history(serde: Serde) -> None:
    old = _model_version_v1_serde()
    value = {k: v for k, v in _model_version_with_history().items() if k not in V2_ONLY}
    old_bytes = old.encode("ModelVersion", value)
    assert struct.unpack(">I", old_bytes[1:5])[0] == SCHEMA_IDS_V1["ModelVersion"]
    assert serde.decode("ModelVersion", old_bytes) == {**value, "status_history": [], "signature": None, "task": None}


def test_model_version_v2_records_read_by_a_v1_reader(serde: Serde) -> None:
    value = _model_version_with_history()
    new_bytes = serde.encode("ModelVersion", value)
    assert struct.unpack(">I", new_bytes[1:5])[0] == SCHEMA_IDS["ModelVersion"] != SCHEMA_IDS_V1["ModelVersion"]
    decoded = _model_version_v1_serde().decode("ModelVersion", new_bytes)
    assert not set(V2_ONLY) & set(decoded)
    assert decoded == {k: v for k, v in value.items() if k not in V2_ONLY}


# --- ModelVersion v3: task ----------------------------------------------------------------------------

SCHEMA_ID_V2 = _entry("ModelVersion", 2)["id"]  # pinned: a consumer upgraded to v2 but not to v3


def test_a_signed_v2_record_reads_as_v3_with_no_task_and_still_verifies(serde: Serde) -> None:
    from driftloop.shared.signing import sign, verify

    value = sign({k: v for k, v in _model_version_with_history().items() if k != "task"}, b"k")
    old_bytes = Serde(PinnedRegistry(SCHEMA_DIR, "ModelVersion", SCHEMA_ID_V2)).encode("ModelVersion", value)
    assert struct.unpack(">I", old_bytes[1:5])[0] == SCHEMA_ID_V2
    decoded = serde.decode("ModelVersion", old_bytes)
    assert decoded == {**value, "task": None}
    assert verify(decoded, b"k")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_v3_record_keeps_its_task_and_a_v2_reader_skips_it(serde: Serde, task: str) -> None:
    from driftloop.shared.signing import sign, verify

    value = sign({**_model_version_with_history(), "task": task}, b"k")
    new_bytes = serde.encode("ModelVersion", value)
    assert struct.unpack(">I", new_bytes[1:5])[0] == SCHEMA_IDS["ModelVersion"] != SCHEMA_ID_V2
    assert serde.decode("ModelVersion", new_bytes)["task"] == task
    assert verify(serde.decode("ModelVersion", new_bytes), b"k")
    old = Serde(PinnedRegistry(SCHEMA_DIR, "ModelVersion", SCHEMA_ID_V2)).decode("ModelVersion", new_bytes)
    assert old == {k: v for k, v in value.items() if k != "task"}


LEADING_STRING_RECORDS = [r for r in RECORDS if AVSC[r]["fields"][0]["type"] == "string"]


@pytest.mark.parametrize("record", LEADING_STRING_RECORDS)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event_id=st.text(max_size=300))
def test_leading_string_is_the_first_field(serde: Serde, record: str, event_id: str) -> None:
    """The demo's watchers read event_id this way instead of decoding whole records."""
    value = {**_example(AVSC[record], record), AVSC[record]["fields"][0]["name"]: event_id}
    data = serde.encode(record, value)
    assert serde.leading_string(data) == event_id
    if event_id:
        assert serde.leading_string(data[: _HEADER_SIZE + 1]) is None  # cut inside the string or its length


UNREADABLE = [
    None,
    b"",
    b"\x00\x00\x00\x00",  # shorter than the framing
    b"\x01\x00\x00\x00\x01\x02a",  # not magic byte 0
    b"\x00\x00\x00\x00\x01\x03",  # a negative length
    b"\x00" * 5 + b"\x80",  # a length cut short
]


@pytest.mark.parametrize("data", UNREADABLE)
def test_leading_string_of_unreadable_bytes_is_none(serde: Serde, data: bytes | None) -> None:
    assert serde.leading_string(data) is None


# --- DriftAlert v3 (incident_id, escalated) against v2, both real files in schemas/ -------------


DRIFT_ALERT_V2_ID = _entry("DriftAlert", 2)["id"]


def test_drift_alert_v3_adds_only_the_optional_incident_fields() -> None:
    v2, v3 = _fields("DriftAlert", 2), _fields("DriftAlert", 3)
    assert AVSC["DriftAlert"]["fields"] == v3  # the newest: what monitoring writes
    assert v3[: len(v2)] == v2
    incident_id, escalated = v3[len(v2) :]
    assert (incident_id["name"], incident_id["type"], incident_id["default"]) == ("incident_id", "string", "")
    assert (escalated["name"], escalated["type"], escalated["default"]) == ("escalated", "boolean", False)


def test_a_v2_alert_reads_as_an_unescalated_v3_one_and_a_v2_reader_skips_the_new_fields(serde: Serde) -> None:
    new = _example(AVSC["DriftAlert"], "DriftAlert")
    old_value = {k: v for k, v in new.items() if k not in ("incident_id", "escalated")}
    old_serde = Serde(PinnedRegistry(SCHEMA_DIR, "DriftAlert", DRIFT_ALERT_V2_ID))
    old_bytes = old_serde.encode("DriftAlert", old_value)
    assert struct.unpack(">I", old_bytes[1:5])[0] == DRIFT_ALERT_V2_ID != SCHEMA_IDS["DriftAlert"]
    assert serde.decode("DriftAlert", old_bytes) == {**old_value, "incident_id": "", "escalated": False}
    assert old_serde.decode("DriftAlert", serde.encode("DriftAlert", new)) == old_value
