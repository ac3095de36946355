"""Ingestion with a data contract, as a real process on the real broker: a record that
breaks the contract lands in deadletter with contract_violation and its original bytes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from waiting import wait_for_records

from driftloop.runner import Stack
from driftloop.shared.kafka import produce_all
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EVENTS_RAW, LABELS_RAW, Topics

pytestmark = pytest.mark.integration


def test_contract_violation_is_dead_lettered(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    contract = tmp_path / "contract.yaml"
    contract.write_text("fields:\n  price: {type: number, required: true, min: 0, max: 1}\nlabel: {allowed: [0, 1]}\n")
    env = {**service_env, "DRIFTLOOP_INGESTION_CONTRACT": str(contract)}
    now = int(time.time() * 1000)

    def ev(event_id: str, price: object) -> bytes:
        obj = {"event_id": event_id, "entity_id": "u", "event_time": now, "fields": {"price": price}}
        return json.dumps(obj).encode()

    good = [ev(f"ok{i}", i / 10) for i in range(5)]
    bad_event, bad_label = (
        ev("too-dear", 7.5),
        json.dumps({"event_id": "ok0", "entity_id": "u", "label": 3, "label_time": now}).encode(),
    )
    with Stack(env=env, log_dir=tmp_path / "logs", services=("ingestion",)) as stack:
        asyncio.run(
            produce_all(
                bootstrap,
                [(topics.name(EVENTS_RAW), b"u", v) for v in [*good[:2], bad_event, *good[2:]]]
                + [(topics.name(LABELS_RAW), b"u", bad_label)],
            )
        )
        clean = wait_for_records(bootstrap, topics.name(EVENTS_CLEAN), len(good))
        dead = wait_for_records(bootstrap, topics.name(DEADLETTER), 2)
        stack.check()

    assert sorted(serde.decode("RawEvent", r.value)["event_id"] for r in clean) == [f"ok{i}" for i in range(5)]
    letters = sorted((serde.decode("DeadLetter", r.value) for r in dead), key=lambda d: d["source_topic"])
    assert [d["error_code"] for d in letters] == ["contract_violation", "contract_violation"]
    by_topic = {d["source_topic"]: d for d in letters}
    assert by_topic[topics.name(EVENTS_RAW)]["original_value"] == bad_event
    assert by_topic[topics.name(EVENTS_RAW)]["event_id"] == "too-dear"
    assert "'price': max 1" in by_topic[topics.name(EVENTS_RAW)]["error_message"]
    assert by_topic[topics.name(LABELS_RAW)]["original_value"] == bad_label
    assert "label: allowed" in by_topic[topics.name(LABELS_RAW)]["error_message"]
