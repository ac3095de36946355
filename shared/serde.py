"""Avro serde with the Confluent wire format, and the local file schema registry.

Wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body. Readers resolve
the writer's schema from the id and read it into their own (reader) schema, so a record
written by an older or newer writer is read as far as Avro's resolution rules allow.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.types import Schema

from driftloop.shared.errors import (
    ConfigError,
    DecodeError,
    NonFiniteNumber,
    RecordTooLarge,
    SchemaMismatch,
    UnknownSchema,
)
from driftloop.shared.topics import Topic

MAGIC = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size  # magic byte + schema id: what precedes the Avro body
#: Entries a map of a record read from a topic may hold: ingestion lets 1024 fields in, and
#: windows multiply them, but a map of tens of thousands would grow every model it reaches.
MAX_MAP_ENTRIES = 16_384
RECORDS = (
    "RawEvent",
    "Label",
    "DeadLetter",
    "FeatureVector",
    "LabeledExample",
    "Prediction",
    "Outcome",
    "DriftAlert",
    "ModelVersion",
)


def zigzag_long(n: int) -> bytes:
    """Avro's encoding of a long: zig-zag, then a little-endian base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


class FileSchemaRegistry:
    """Schema ids from ``registry.json`` in a schema folder.

    The newest version of each record is what writers use; every listed version stays
    readable by id, which is what lets an old record be read after a schema change.
    """

    def __init__(self, schema_dir: Path) -> None:
        self.schema_dir = Path(schema_dir)
        try:
            index = json.loads((self.schema_dir / "registry.json").read_text())
        except (OSError, ValueError) as exc:  # at start, before any connection: one line
            raise ConfigError(
                f"schema dir {self.schema_dir} (DRIFTLOOP_SCHEMA_DIR): no readable registry.json"
            ) from exc
        self._by_id: dict[int, Schema] = {}
        self._latest: dict[str, tuple[int, int]] = {}
        named: dict[str, Any] = {}
        for entry in index["schemas"]:
            raw = json.loads((self.schema_dir / entry["file"]).read_text())
            # Each parse gets its own name table: two versions of one record share a name.
            named = {}
            self._by_id[int(entry["id"])] = fastavro.parse_schema(raw, named_schemas=named)
            record, version = entry["record"], int(entry["version"])
            if record not in self._latest or version > self._latest[record][1]:
                self._latest[record] = (int(entry["id"]), version)

    def schema_by_id(self, schema_id: int) -> Schema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchema(f"schema id {schema_id} is not in the registry") from None

    def latest(self, record: str) -> tuple[int, Schema]:
        try:
            schema_id, _ = self._latest[record]
        except KeyError:
            raise UnknownSchema(f"no schema registered for record {record}") from None
        return schema_id, self._by_id[schema_id]

    def ids(self) -> dict[int, str]:
        return {i: cast("dict[str, Any]", s)["name"] for i, s in self._by_id.items()}


class Serde:
    """Encodes and decodes every driftloop record with the Confluent framing."""

    def __init__(self, registry: FileSchemaRegistry) -> None:
        self.registry = registry
        self._writers = {r: registry.latest(r) for r in RECORDS}

    def encode(self, record: str | Topic[Any], value: Mapping[str, Any]) -> bytes:
        """``value`` as framed Avro of ``record`` (a record name, or a topic: the record it carries)."""
        record = _record_name(record)
        schema_id, schema = self._writers[record]
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC, schema_id))
        try:
            fastavro.schemaless_writer(buf, schema, value)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaMismatch(f"{record} does not fit its schema: {exc}") from exc
        return buf.getvalue()

    def decode(self, record: str | Topic[Any], data: bytes | None) -> dict[str, Any]:
        """Decode framed Avro bytes into ``record``'s current (reader) schema."""
        record = _record_name(record)
        if not data or len(data) < _HEADER.size:
            raise DecodeError("empty or truncated record")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError(f"not Confluent-framed Avro (magic byte {magic})")
        writer = self.registry.schema_by_id(schema_id)
        _, reader = self._writers[record]
        buf = io.BytesIO(data)
        buf.seek(_HEADER.size)
        try:
            value = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # fastavro raises many types on corrupt bytes
            if isinstance(exc, fastavro.read.SchemaResolutionError):
                name = writer.get("name") if isinstance(writer, dict) else "?"
                raise SchemaMismatch(f"schema id {schema_id} ({name}) cannot be read as {record}") from exc
            raise DecodeError(f"corrupt Avro body for {record}: {type(exc).__name__}") from exc
        if buf.tell() != len(data):
            raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the {record} body")
        if not isinstance(value, dict):
            raise DecodeError(f"{record} body is not a record")
        return value

    def decode_input(self, record: str | Topic[Any], data: bytes | None) -> dict[str, Any]:
        """``decode``, then refused as a service's input when a number in it is NaN or infinite
        (Avro's double takes them; no model or metric can) or a map is larger than
        MAX_MAP_ENTRIES."""
        record = _record_name(record)
        value = self.decode(record, data)
        _check_values(record, value)
        return value

    def with_ingest_time(self, data: bytes, ingest_time_ms: int) -> bytes | None:
        """``data``, a framed RawEvent already decoded and found to carry no ingest_time, with
        ``ingest_time_ms`` set, without encoding it again: written with the current RawEvent
        schema, whose last field is ingest_time, its body ends with that union's null (one
        0 byte), which becomes the long branch. None when ``data`` has another schema id.
        Ingestion re-encoded every event; the encode of its field map was a third of its CPU."""
        schema_id, _ = self._writers["RawEvent"]
        if not self.is_framed(data) or _HEADER.unpack_from(data)[1] != schema_id or data[-1] != 0:
            return None
        return data[:-1] + b"\x02" + zigzag_long(ingest_time_ms)

    @staticmethod
    def leading_string(data: bytes | None) -> str | None:
        """The first field of a framed record whose first field is a string (``event_id`` of
        Prediction, Outcome, FeatureVector, LabeledExample, RawEvent, Label), read without
        decoding the rest: for watchers that need only that. None when it cannot be read."""
        if not data or len(data) < _HEADER.size + 1 or data[0] != MAGIC:
            return None
        n = shift = 0
        pos = _HEADER.size
        while True:
            if pos >= len(data) or shift > 63:
                return None  # a truncated or overlong length
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        length = (n >> 1) ^ -(n & 1)
        if length < 0 or pos + length > len(data):
            return None
        try:
            return data[pos : pos + length].decode()
        except UnicodeDecodeError:
            return None

    @staticmethod
    def is_framed(data: bytes | None) -> bool:
        return data is not None and len(data) >= _HEADER.size and data[0] == MAGIC


def _record_name(record: str | Topic[Any]) -> str:
    if isinstance(record, str):
        return record
    if record.record is None:
        raise TypeError(f"{record.short} carries raw bytes, not an Avro record")
    return record.record


def _check_values(record: str, value: Any, where: str = "") -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NonFiniteNumber(f"{record}{where} is {value}")
    elif isinstance(value, dict):
        if len(value) > MAX_MAP_ENTRIES:
            raise RecordTooLarge(f"{record}{where} has {len(value)} entries, the limit is {MAX_MAP_ENTRIES}")
        for k, v in value.items():
            _check_values(record, v, f"{where}.{k}"[:120])
    elif isinstance(value, list):
        for v in value:
            _check_values(record, v, where)
