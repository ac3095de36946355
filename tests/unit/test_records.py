"""The typed contracts: each Topic names a record the schema registry holds and a key field
that record has, and each record's TypedDict mirrors its latest Avro schema field for field."""

from __future__ import annotations

import typing

import pytest

from driftloop.shared import records
from driftloop.shared.serde import FileSchemaRegistry
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import CATALOGUE, Topic

REGISTRY = FileSchemaRegistry(CommonSettings().schema_dir)


def schema_fields(record: str) -> dict[str, object]:
    _, schema = REGISTRY.latest(record)
    assert isinstance(schema, dict)
    return {f["name"]: f["type"] for f in schema["fields"]}


@pytest.mark.parametrize("topic", CATALOGUE, ids=lambda t: t.short)
def test_each_topic_names_a_registered_record_and_a_key_it_has(topic: Topic[object]) -> None:
    if topic.record is None:
        assert topic.short.endswith(".raw") and topic.key is None
        return
    fields = schema_fields(topic.record)
    if topic.key is not None:
        assert topic.key in fields, f"{topic.short} is keyed by {topic.key}, which {topic.record} lacks"
        assert fields[topic.key] == "string"


TYPED = [t.record for t in CATALOGUE if t.record is not None and t.record != "ModelVersion"]


@pytest.mark.parametrize("record", TYPED)
def test_each_typed_record_mirrors_its_schema(record: str) -> None:
    hints = typing.get_type_hints(getattr(records, record))
    fields = schema_fields(record)
    assert list(hints) == list(fields), f"{record}: the TypedDict's fields differ from the schema's"
    for name, avro in fields.items():
        optional = isinstance(avro, list) and "null" in avro
        assert (type(None) in typing.get_args(hints[name])) == optional, f"{record}.{name}: nullability differs"
