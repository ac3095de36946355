"""Hostile inputs for the raw topics, shared by the unit fuzz test (many examples, pure core)
and the integration fuzz test (a few hundred, through the running ingestion service).

Every generator returns bytes (or None, a null Kafka value) meant to be refused: truncated
or byte-mutated Confluent-framed Avro, unknown schema ids, another record's schema, wrong
types, huge strings, NaN and infinities, odd unicode (lone surrogates as bytes), oversized
payloads, deeply nested JSON, empty values.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

from hypothesis import strategies as st

from driftloop.shared.serde import Serde

RECORDS = {"events": "RawEvent", "labels": "Label"}

# JSON values of any shape, for fields that should hold one thing and get another.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)
odd_text = st.text(
    st.characters(exclude_categories=()),  # lone surrogates (category Cs) included
    max_size=30,
)


def valid_event(rng: random.Random, now_ms: int) -> dict[str, Any]:
    return {
        "event_id": f"fz-{rng.getrandbits(48):x}",
        "entity_id": f"ent-{rng.randrange(8)}",
        "event_time": now_ms,
        "fields": {"x": rng.random(), "n": rng.randrange(100), "s": "a", "b": True, "z": None},
        "ingest_time": None,
    }


def valid_label(rng: random.Random, now_ms: int) -> dict[str, Any]:
    return {
        "event_id": f"fz-{rng.getrandbits(48):x}",
        "entity_id": f"ent-{rng.randrange(8)}",
        "label": rng.choice([0, 1, True, "yes", 0.5]),
        "label_time": now_ms,
    }


def valid(kind: str, rng: random.Random, now_ms: int) -> dict[str, Any]:
    return valid_event(rng, now_ms) if kind == "events" else valid_label(rng, now_ms)


def _dumps(obj: Any) -> bytes:
    # allow_nan: NaN and Infinity literals are part of the attack; surrogatepass: lone surrogates.
    return json.dumps(obj, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf))]
        elif op == 2:
            buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
        else:
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = bytes([rng.choice([0x00, 0xFF, 0x7F, 0x80, 0xC0, 0xED])]) * rng.randint(1, 16)
    return bytes(buf)


def hostile(
    kind: str, rng: random.Random, serde: Serde, now_ms: int, max_record_bytes: int
) -> tuple[str, bytes | None]:
    """(category, value) for one hostile input to ``kind``'s raw topic."""
    record = RECORDS[kind]
    good = valid(kind, rng, now_ms)
    avro = serde.encode(record, good)
    category = rng.choice(CATEGORIES)
    if category == "truncated_avro":
        return category, avro[: rng.randrange(1, len(avro))]
    if category == "mutated_avro":
        return category, _mutate(avro, rng)
    if category == "mutated_json":
        return category, _mutate(_dumps(good), rng)
    if category == "unknown_schema_id":
        return category, b"\x00" + struct.pack(">I", rng.choice([0, 11, 999, 2**31 - 1, 2**32 - 1])) + avro[5:]
    if category == "other_schema":
        other = "Label" if record == "RawEvent" else "RawEvent"
        return category, serde.encode(other, valid("labels" if other == "Label" else "events", rng, now_ms))
    if category == "trailing_bytes":
        return category, avro + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    if category == "wrong_type":
        field = rng.choice([k for k in good if k != "ingest_time"])
        bad: Any = rng.choice([[1], {"a": 1}, "12", 1.5, True, None, -1, 2**64])
        if field in ("event_id", "entity_id") and isinstance(bad, str):
            bad = 12
        if field == "label" and not isinstance(bad, list | dict):
            bad = None
        if field == "fields" and isinstance(bad, dict):
            bad = {"nested": {"a": 1}}
        if field in ("event_time", "label_time") and bad in (1.5, -1):
            bad = -1
        return category, _dumps({**good, field: bad})
    if category == "huge_string":
        n = rng.choice([300, 5000, 50_000])
        where = rng.choice(["event_id", "entity_id", "value"])
        if where == "value" and kind == "events":
            return category, _dumps({**good, "fields": {"s": "x" * max(n, 5000)}})
        if where == "value":
            return category, _dumps({**good, "label": "x" * max(n, 5000)})
        return category, _dumps({**good, where: "x" * n})
    if category == "non_finite":
        bad = rng.choice([float("nan"), float("inf"), float("-inf")])
        if kind == "events":
            target = rng.choice(["fields", "event_time"])
            obj = {**good, "fields": {"x": bad}} if target == "fields" else {**good, "event_time": bad}
        else:
            target = rng.choice(["label", "label_time"])
            obj = {**good, target: bad}
        if rng.random() < 0.5:
            # The same value in framed Avro (a double field, where the schema has one).
            if kind == "events" and target == "fields":
                return category, serde.encode(record, obj)
            if kind == "labels" and target == "label":
                return category, serde.encode(record, obj)
        return category, _dumps(obj)
    if category == "lone_surrogate":
        s = rng.choice(["\ud800", "a\udfffb", "\udc80" * 3])
        where = rng.choice(["event_id", "entity_id", "key", "value"])
        if where in ("event_id", "entity_id"):
            obj = {**good, where: s}
        elif kind == "events":
            obj = {**good, "fields": {s: 1} if where == "key" else {"s": s}}
        else:
            obj = {**good, "label": s}
        if rng.random() < 0.5:
            # Raw surrogate bytes (invalid UTF-8) rather than a \\u escape.
            return category, _dumps(obj)
        return category, json.dumps(obj).encode()
    if category == "invalid_utf8":
        return category, _dumps(good).replace(b'"fz-', b'"\xff\xfefz-', 1)
    if category == "oversized":
        return category, _dumps({**good, "pad": "p" * (max_record_bytes + rng.randint(1, 1000))})
    if category == "json_bomb":
        depth = rng.choice([100, 5_000, 50_000])
        body = "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
        if kind == "events" and rng.random() < 0.5:
            return category, _dumps({**good, "fields": {"x": json.loads("[" * 50 + "]" * 50)}})
        return category, body.encode()[: max_record_bytes - 1]
    if category == "huge_number":
        return category, (b'{"event_id":"a","entity_id":"b","event_time":' + b"9" * rng.choice([25, 5000]) + b"}")
    if category == "not_an_object":
        return category, rng.choice([b"[]", b"1", b'"s"', b"null", b"true", b"  ", b"\x00", b"\x00\x00"])
    if category == "missing_field":
        field = rng.choice([k for k in good if k != "ingest_time"])
        return category, _dumps({k: v for k, v in good.items() if k != field})
    if category == "too_old":
        field = "event_time" if kind == "events" else "label_time"
        return category, _dumps({**good, field: rng.choice([0, 1000, now_ms - 30 * 24 * 3600 * 1000])})
    if category == "too_many_fields" and kind == "events":
        return category, _dumps({**good, "fields": {f"f{i}": i for i in range(1100)}})
    if category == "empty":
        return category, rng.choice([b"", None])
    return "random_bytes", bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))


CATEGORIES = [
    "truncated_avro",
    "mutated_avro",
    "mutated_json",
    "unknown_schema_id",
    "other_schema",
    "trailing_bytes",
    "wrong_type",
    "huge_string",
    "non_finite",
    "lone_surrogate",
    "invalid_utf8",
    "oversized",
    "json_bomb",
    "huge_number",
    "not_an_object",
    "missing_field",
    "too_old",
    "too_many_fields",
    "empty",
    "random_bytes",
]


def hypothesis_objects(kind: str, now_ms: int) -> st.SearchStrategy[bytes]:
    """JSON objects shaped like the record, with any field replaced by any JSON value or odd text."""
    base = {
        "events": {"event_id": "e", "entity_id": "x", "event_time": now_ms, "fields": {"a": 1}},
        "labels": {"event_id": "e", "entity_id": "x", "label": 1, "label_time": now_ms},
    }[kind]
    return st.builds(
        lambda field, value, extra: _dumps({**base, **extra, field: value}),
        st.sampled_from(sorted(base)),
        json_values | odd_text,
        st.dictionaries(odd_text, json_values, max_size=3),
    )


# --- every other input topic: framed Avro only, read by services downstream of ingestion ---

#: The record each internal input topic carries, and the services that consume it.
INTERNAL_TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "events.clean": ("RawEvent", ("features",)),
    "labels.clean": ("Label", ("features", "monitoring")),
    "features": ("FeatureVector", ("inference", "monitoring")),
    "predictions": ("Prediction", ("monitoring",)),
    "examples": ("LabeledExample", ("retraining",)),
    "alerts": ("DriftAlert", ("retraining",)),
    "models.registry": ("ModelVersion", ("inference",)),
}
NAN, INF = float("nan"), float("inf")
HUGE_MAP = 20_000  # entries: above shared/serde.py MAX_MAP_ENTRIES, under the broker's 1 MB record


def non_finite_variants(record: str, good: dict[str, Any]) -> list[dict[str, Any]]:
    """``good`` with NaN or an infinity in each place of ``record`` that holds a double."""
    if record == "RawEvent":
        return [{**good, "fields": {**good["fields"], "x": NAN}}, {**good, "fields": {"x": -INF}}]
    if record == "Label":
        return [{**good, "label": NAN}, {**good, "label": INF}]
    if record == "FeatureVector":
        return [{**good, "features": {**good["features"], "x": NAN}}, {**good, "features": {"x": INF}}]
    if record == "Prediction":
        return [{**good, "predicted": NAN}, {**good, "scores": {"true": NAN, "false": 0.5}}]
    if record == "LabeledExample":
        return [{**good, "features": {"x": -INF}}, {**good, "label": NAN}]
    if record == "DriftAlert":
        return [{**good, "statistic": NAN}, {**good, "threshold": INF}]
    return []


def huge_map(record: str, good: dict[str, Any]) -> dict[str, Any] | None:
    field = {"RawEvent": "fields", "FeatureVector": "features", "LabeledExample": "features"}.get(record)
    if record == "Prediction":
        field = "scores"
    if field is None:
        return None
    return {**good, field: {f"f{i}": float(i) for i in range(HUGE_MAP)}}


def hostile_framed(
    record: str, good: dict[str, Any], serde: Serde, rng: random.Random
) -> list[tuple[str, bytes | None, str]]:
    """(category, value, dead-letter code) for the hostile inputs of a topic carrying
    ``record``, built from ``good``, one valid record of it."""
    avro = serde.encode(record, good)
    other_record, other = ("FeatureVector", _any_vector()) if record != "FeatureVector" else ("Label", _any_label())
    out: list[tuple[str, bytes | None, str]] = [
        ("garbage_bytes", bytes([rng.randrange(1, 256)]) + rng.randbytes(40), "decode_error"),
        ("wrong_magic_byte", b"\x01" + avro[1:], "decode_error"),
        ("unknown_schema_id", b"\x00" + struct.pack(">I", 999) + avro[5:], "unknown_schema_id"),
        ("wrong_record_type", serde.encode(other_record, other), "schema_mismatch"),
        ("truncated_avro", avro[: len(avro) // 2], "decode_error"),
        ("trailing_bytes", avro + b"\x00\x01", "decode_error"),
        ("empty_value", b"", "decode_error"),
        ("tombstone", None, "decode_error"),
    ]
    out += [("non_finite", serde.encode(record, v), "non_finite_number") for v in non_finite_variants(record, good)]
    if (big := huge_map(record, good)) is not None:
        out.append(("huge_map", serde.encode(record, big), "record_too_large"))
    return out


def _any_vector() -> dict[str, Any]:
    return {
        "event_id": "o",
        "entity_id": "o",
        "event_time": 1,
        "features": {},
        "feature_set_version": "v",
        "ingest_time": None,
    }


def _any_label() -> dict[str, Any]:
    return {"event_id": "o", "entity_id": "o", "label": True, "label_time": 1}
