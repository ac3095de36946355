"""Ingestion as a real process against the real embedded broker: good records are
forwarded, every kind of bad record is dead-lettered with its code and original bytes,
and the service keeps running."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest
from waiting import wait_for_records

from driftloop.runner import Stack
from driftloop.shared.kafka import produce_all
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EVENTS_RAW, Topics

pytestmark = pytest.mark.integration


def test_ingestion_forwards_good_and_dead_letters_bad(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    now = int(time.time() * 1000)
    good_json = [
        (
            f"e{i % 3}".encode(),
            json.dumps(
                {
                    "event_id": f"ok{i}",
                    "entity_id": f"e{i % 3}",
                    "event_time": now,
                    "fields": {"x": i, "s": "a", "b": True, "n": None},
                }
            ).encode(),
        )
        for i in range(20)
    ]
    good_avro = [
        (
            b"e9",
            serde.encode(
                "RawEvent",
                {"event_id": f"av{i}", "entity_id": "e9", "event_time": now, "fields": {"x": 1.5}, "ingest_time": None},
            ),
        )
        for i in range(5)
    ]
    bad = {
        "decode_error": b"\x13\x37 not avro, not json",
        "missing_field": json.dumps({"entity_id": "a", "event_time": now, "fields": {}}).encode(),
        "non_finite_number": b'{"event_id": "nan1", "entity_id": "a", "event_time": %d, "fields": {"x": NaN}}' % now,
        "wrong_type": json.dumps(
            {"event_id": "wt1", "entity_id": "a", "event_time": now, "fields": {"x": [1]}}
        ).encode(),
        "too_old": json.dumps({"event_id": "old1", "entity_id": "a", "event_time": 1000, "fields": {}}).encode(),
        "unknown_schema_id": b"\x00\x00\x00\x03\xe7" + b"\x02",
        "duplicate_event": good_json[0][1],
    }
    records = good_json + [(b"bad", v) for v in bad.values()] + good_avro
    with Stack(env=service_env, log_dir=tmp_path / "logs", services=("ingestion",)) as stack:
        asyncio.run(produce_all(bootstrap, [(topics.name(EVENTS_RAW), k, v) for k, v in records]))
        clean = wait_for_records(bootstrap, topics.name(EVENTS_CLEAN), len(good_json) + len(good_avro))
        dead = wait_for_records(bootstrap, topics.name(DEADLETTER), len(bad))
        # A second round after the bad input proves the service kept running.
        later = [
            (
                b"e1",
                json.dumps({"event_id": "after", "entity_id": "e1", "event_time": now, "fields": {"x": 1}}).encode(),
            )
        ]
        asyncio.run(produce_all(bootstrap, [(topics.name(EVENTS_RAW), k, v) for k, v in later]))
        clean = wait_for_records(bootstrap, topics.name(EVENTS_CLEAN), len(good_json) + len(good_avro) + 1)
        stack.check()
        port = service_env["DRIFTLOOP_INGESTION_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()

    clean_ids = sorted(serde.decode("RawEvent", r.value)["event_id"] for r in clean)
    expected = sorted([f"ok{i}" for i in range(20)] + [f"av{i}" for i in range(5)] + ["after"])
    assert clean_ids == expected
    first = next(serde.decode("RawEvent", r.value) for r in clean if r.key == b"e0")
    assert first["ingest_time"] is not None and first["fields"]["b"] is True and first["fields"]["n"] is None

    letters = [serde.decode("DeadLetter", r.value) for r in dead]
    by_code = {d["error_code"]: d for d in letters}
    assert sorted(by_code) == sorted(bad), letters
    assert len(letters) == len(bad)
    for code, original in bad.items():
        d = by_code[code]
        assert d["original_value"] == original, code
        assert d["source_topic"] == topics.name(EVENTS_RAW) and d["service"] == "ingestion"
        assert d["source_offset"] >= 0 and d["error_message"]
    for code in bad:
        assert f'driftloop_dead_letters_total{{code="{code}",service="ingestion"}} 1.0' in metrics, code
    clean_line = f'driftloop_records_out_total{{service="ingestion",topic="{topics.name(EVENTS_CLEAN)}"}} 26.0'
    assert clean_line in metrics
