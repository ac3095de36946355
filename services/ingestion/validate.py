"""Parsing and validating raw events and labels (pure: no Kafka, no clock, no environment).

Producers may write Confluent-framed Avro or JSON objects. Both become the same dict,
which is then checked field by field; the first problem raises a named InvalidRecord.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftloop.shared.errors import (
    DecodeError,
    MissingField,
    NonFiniteNumber,
    RecordTooLarge,
    TooOld,
    WrongType,
)
from driftloop.shared.serde import Serde

FIELD_TYPES = (type(None), bool, int, float, str)
MAX_ID_CHARS = 256
MAX_STRING_CHARS = 4096
MAX_FIELDS = 1024


@dataclass(frozen=True)
class Limits:
    max_record_bytes: int = 1_000_000
    max_lateness_ms: int = 7 * 24 * 3600 * 1000


def parse_json_object(data: bytes) -> dict[str, Any]:
    try:
        # NaN/Infinity parse, and are refused by the field checks with their own code. The
        # size limit bounds the work; deep nesting ends in RecursionError, a huge integer
        # literal in ValueError (Python's int digit limit).
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError(f"neither Confluent-framed Avro nor JSON: {type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"JSON value is a {type(obj).__name__}, not an object")
    return obj


def decode(data: bytes | None, record: str, serde: Serde, limits: Limits) -> dict[str, Any]:
    if data is None or len(data) == 0:
        raise DecodeError("empty record")
    if len(data) > limits.max_record_bytes:
        raise RecordTooLarge(f"record is {len(data)} bytes, the limit is {limits.max_record_bytes}")
    if Serde.is_framed(data):
        return serde.decode(record, data)
    return parse_json_object(data)


def _check_utf8(what: str, value: str) -> str:
    # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 (and no Avro string)
    # can carry: refused here, or encoding the clean record (or its dead letter) would fail.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise WrongType(f"{what} contains a lone surrogate, which is not valid Unicode text") from None
    return value


def _require_str(obj: dict[str, Any], name: str) -> str:
    if name not in obj or obj[name] is None:
        raise MissingField(f"{name} is missing")
    value = obj[name]
    if not isinstance(value, str):
        raise WrongType(f"{name} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_CHARS:
        raise WrongType(f"{name} must be 1..{MAX_ID_CHARS} characters")
    return _check_utf8(name, value)


def _require_time(obj: dict[str, Any], name: str) -> int:
    if name not in obj or obj[name] is None:
        raise MissingField(f"{name} is missing")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType(f"{name} must be epoch milliseconds, got {type(value).__name__}")
    if not math.isfinite(value):
        raise NonFiniteNumber(f"{name} is not finite")
    if not 0 <= value < 2**53:
        raise WrongType(f"{name} is out of range")
    return int(value)


def _check_value(name: str, value: object) -> object:
    if not isinstance(value, FIELD_TYPES):
        raise WrongType(f"field {name!r} has type {type(value).__name__}; use a number, string, boolean or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise NonFiniteNumber(f"field {name!r} is {value}")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise WrongType(f"field {name!r} does not fit a 64-bit integer")
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise WrongType(f"field {name!r} is longer than {MAX_STRING_CHARS} characters")
    if isinstance(value, str):
        _check_utf8(f"field {name!r}", value)
    return value


def _field_name(name: str) -> str:
    if not name or len(name) > MAX_ID_CHARS:
        raise WrongType(f"field names must be 1..{MAX_ID_CHARS} characters")
    return _check_utf8("a field name", name)


def _check_lateness(event_time: int, now_ms: int, limits: Limits, name: str) -> None:
    if now_ms - event_time > limits.max_lateness_ms:
        raise TooOld(
            f"{name} is {(now_ms - event_time) / 1000:.0f} s old, the bound is {limits.max_lateness_ms / 1000:.0f} s"
        )


def validate_event(obj: dict[str, Any], now_ms: int, limits: Limits) -> dict[str, Any]:
    """A RawEvent dict from a decoded object, or a named InvalidRecord."""
    event_id = _require_str(obj, "event_id")
    entity_id = _require_str(obj, "entity_id")
    event_time = _require_time(obj, "event_time")
    _check_lateness(event_time, now_ms, limits, "event_time")
    fields = obj.get("fields")
    if fields is None:
        raise MissingField("fields is missing")
    if not isinstance(fields, dict):
        raise WrongType(f"fields must be an object, got {type(fields).__name__}")
    if len(fields) > MAX_FIELDS:
        raise WrongType(f"{len(fields)} fields, the limit is {MAX_FIELDS}")
    clean = {_field_name(str(k)): _check_value(str(k), v) for k, v in fields.items()}
    return {
        "event_id": event_id,
        "entity_id": entity_id,
        "event_time": event_time,
        "fields": clean,
        "ingest_time": None,
    }


def validate_label(obj: dict[str, Any], now_ms: int, limits: Limits) -> dict[str, Any]:
    event_id = _require_str(obj, "event_id")
    entity_id = _require_str(obj, "entity_id")
    label_time = _require_time(obj, "label_time")
    _check_lateness(label_time, now_ms, limits, "label_time")
    if "label" not in obj or obj["label"] is None:
        raise MissingField("label is missing")
    label = _check_value("label", obj["label"])
    return {"event_id": event_id, "entity_id": entity_id, "label": label, "label_time": label_time}


Validator = Callable[[dict[str, Any], int, Limits], dict[str, Any]]
