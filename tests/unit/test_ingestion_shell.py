"""The ingestion shell's handlers, in-process through the runtime's testing harness: raw
bytes in (JSON or framed Avro, as producers send them), clean records or dead letters out."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from driftloop.services.ingestion.app import Ingestion
from driftloop.shared.runtime import Service
from driftloop.shared.runtime.testing import Harness
from driftloop.shared.settings import CommonSettings, IngestionSettings
from driftloop.shared.topics import EVENTS_CLEAN, EVENTS_RAW, LABELS_CLEAN, LABELS_RAW

NOW = int(time.time() * 1000)


def event(i: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "entity_id": f"u{i % 2}", "event_time": NOW - 1000, "fields": fields or {"x": 1.5}}


def js(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def harness(**settings: Any) -> Harness:
    svc = Service("ingestion", IngestionSettings(metrics_port=0, **settings), CommonSettings())
    Ingestion(svc)
    return Harness(svc)


def test_json_events_become_clean_events_stamped_and_keyed_by_entity() -> None:
    h = harness()
    before = int(time.time() * 1000)
    asyncio.run(h.feed(EVENTS_RAW, js(event(1, x=1.5, kind="a")), js(event(2))))
    clean = h.sent(EVENTS_CLEAN)
    assert [e["event_id"] for e in clean] == ["e1", "e2"]
    assert clean[0]["fields"] == {"x": 1.5, "kind": "a"}
    # Stamped with the consumed record's timestamp (the harness gives it the time it is fed).
    assert all(before <= (e["ingest_time"] or 0) <= int(time.time() * 1000) for e in clean)
    assert h.keys(EVENTS_CLEAN) == [b"u1", b"u0"]
    assert h.dead_letters() == []


def test_framed_avro_goes_on_as_it_came_with_ingest_time_set() -> None:
    h = harness()
    framed = h.svc.serde.encode("RawEvent", {**event(1), "ingest_time": None})
    asyncio.run(h.feed(EVENTS_RAW, framed))
    (out,) = h.raw(EVENTS_CLEAN)
    assert out[2][:-1].startswith(framed[:-1])  # the same body; only the ingest_time union changed
    assert h.sent(EVENTS_CLEAN)[0]["ingest_time"] is not None


def test_bad_records_are_dead_lettered_with_their_code_bytes_and_event_id() -> None:
    h = harness()
    bad = [b"{not json", js({"entity_id": "u", "event_time": NOW, "fields": {}}), js(event(3, x=float("nan")))]
    asyncio.run(h.feed(EVENTS_RAW, *bad, js(event(4))))
    letters = h.dead_letters()
    assert [d["error_code"] for d in letters] == ["decode_error", "missing_field", "non_finite_number"]
    assert [d["original_value"] for d in letters] == bad
    assert {d["source_topic"] for d in letters} == {h.svc.topics.name(EVENTS_RAW)}
    assert [e["event_id"] for e in h.sent(EVENTS_CLEAN)] == ["e4"]


def test_a_duplicate_is_dead_lettered_with_its_event_id_and_the_seen_id_is_in_the_changelog() -> None:
    h = harness()
    asyncio.run(h.feed(EVENTS_RAW, js(event(1)), partition=3))
    asyncio.run(h.feed(EVENTS_RAW, js(event(1)), partition=3))
    assert len(h.sent(EVENTS_CLEAN)) == 1
    (letter,) = h.dead_letters()
    assert (letter["error_code"], letter["event_id"]) == ("duplicate_event", "e1")
    writes = h.writes("seen-rawevent")
    assert [(w.partition, w.key) for w in writes][:1] == [(3, "e1")]


def test_a_contract_violation_names_the_event(tmp_path: Path) -> None:
    path = tmp_path / "contract.yaml"
    path.write_text("fields:\n  x: {type: number, max: 2}\nlabel: {allowed: [UP, DOWN]}\n")
    h = harness(contract=str(path))
    asyncio.run(h.feed(EVENTS_RAW, js(event(1, x=5.0)), js(event(2, x=1.0))))
    label = {"event_id": "e2", "entity_id": "u0", "label": "SIDEWAYS", "label_time": NOW}
    asyncio.run(h.feed(LABELS_RAW, js(label), js({**label, "event_id": "e3", "label": "UP"})))
    assert [(d["error_code"], d["event_id"]) for d in h.dead_letters()] == [
        ("contract_violation", "e1"),
        ("contract_violation", "e2"),
    ]
    assert [e["event_id"] for e in h.sent(EVENTS_CLEAN)] == ["e2"]
    assert [(lab["event_id"], lab["label"]) for lab in h.sent(LABELS_CLEAN)] == [("e3", "UP")]


def test_labels_are_validated_and_keyed_by_entity() -> None:
    h = harness()
    ok = {"event_id": "e1", "entity_id": "u9", "label": True, "label_time": NOW}
    asyncio.run(h.feed(LABELS_RAW, js(ok), js({**ok, "event_id": "e2", "label": None}), js(ok)))
    assert h.sent(LABELS_CLEAN) == [ok]
    assert h.keys(LABELS_CLEAN) == [b"u9"]
    assert h.codes() == ["missing_field", "duplicate_event"]
