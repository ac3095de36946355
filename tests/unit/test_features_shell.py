"""The features shell's handlers, in-process through the runtime's testing harness: clean
events in, FeatureVectors out; labels joined with the features the model saw."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from driftloop.services.features.app import Features
from driftloop.shared.records import Label, RawEvent
from driftloop.shared.runtime import Service
from driftloop.shared.runtime.testing import Harness
from driftloop.shared.settings import CommonSettings, FeaturesSettings
from driftloop.shared.topics import EVENTS_CLEAN, EXAMPLES, FEATURES, LABELS_CLEAN

T0 = 1_700_000_000_000


def event(i: int, t: int | None = None, entity: str = "u1", **fields: Any) -> RawEvent:
    return {
        "event_id": f"e{i}",
        "entity_id": entity,
        "event_time": T0 + i * 1000 if t is None else t,
        "fields": fields or {"price": float(i), "region": "NSW"},
        "ingest_time": int(time.time() * 1000),
    }


def label(i: int, value: Any = True, t: int | None = None, entity: str = "u1") -> Label:
    return {"event_id": f"e{i}", "entity_id": entity, "label": value, "label_time": T0 + i * 1000 if t is None else t}


def harness(tmp_path: Path, windows: str = "", **settings: Any) -> tuple[Features, Harness]:
    common = CommonSettings(data_dir=str(tmp_path), features_windows=windows, offline_store=str(tmp_path / "offline"))
    svc = Service("features", FeaturesSettings(metrics_port=0, **settings), common)
    return Features(svc), Harness(svc)


def test_events_become_vectors_with_one_hot_fields_keyed_by_entity(tmp_path: Path) -> None:
    _, h = harness(tmp_path)
    asyncio.run(h.feed(EVENTS_CLEAN, event(1), event(2, entity="u2")))
    vectors = h.sent(FEATURES)
    assert [v["event_id"] for v in vectors] == ["e1", "e2"]
    assert vectors[0]["features"] == {"price": 1.0, "region=NSW": 1.0}
    assert h.keys(FEATURES) == [b"u1", b"u2"]


def test_a_label_meets_the_features_of_its_event_once_whichever_comes_first(tmp_path: Path) -> None:
    _, h = harness(tmp_path)

    async def run() -> None:
        await h.feed(EVENTS_CLEAN, event(1))
        await h.feed(LABELS_CLEAN, label(1, "UP"), label(2, "DOWN"))
        await h.feed(EVENTS_CLEAN, event(2))
        await h.feed(LABELS_CLEAN, label(1, "UP"))  # redelivered: no second example
        await h.feed(EVENTS_CLEAN, event(1))

    asyncio.run(run())
    examples = h.sent(EXAMPLES)
    assert [(x["event_id"], x["label"], x["features"]["price"]) for x in examples] == [
        ("e1", "UP", 1.0),
        ("e2", "DOWN", 2.0),
    ]
    assert h.dead_letters() == []


def test_join_state_goes_to_the_changelog_partition_of_the_input(tmp_path: Path) -> None:
    _, h = harness(tmp_path)
    asyncio.run(h.feed(EVENTS_CLEAN, event(1), partition=2))
    writes = h.writes("vectors-awaiting-label")
    assert [(w.partition, w.key) for w in writes] == [(2, "e1")]
    asyncio.run(h.feed(LABELS_CLEAN, label(1), partition=2))
    assert [(w.partition, w.key, w.value) for w in h.writes("vectors-awaiting-label")][-1] == (2, "e1", None)
    assert [w.key for w in h.writes("joined-event-ids")] == ["e1"]


def test_a_label_that_waits_past_the_ttl_is_dead_lettered_as_label_expired(tmp_path: Path) -> None:
    shell, h = harness(tmp_path, join_ttl_s=10)

    async def run() -> None:
        await h.feed(LABELS_CLEAN, label(1, t=T0))
        await h.feed(EVENTS_CLEAN, event(5, t=T0 + 60_000))  # the watermark moves 60 s on

    asyncio.run(run())
    (letter,) = h.dead_letters()
    assert (letter["error_code"], letter["event_id"], letter["source_partition"]) == ("label_expired", "e1", 0)
    assert h.svc.serde.decode("Label", letter["original_value"])["event_id"] == "e1"
    assert shell.metrics.expired.labels("label", "features")._value.get() == 1


def test_windowed_features_keep_per_entity_state(tmp_path: Path) -> None:
    shell, h = harness(tmp_path, windows="price:mean:sliding:1h")
    asyncio.run(h.feed(EVENTS_CLEAN, event(1, price=2.0), event(2, price=4.0), event(3, entity="u2", price=10.0)))
    means = [v["features"] for v in h.sent(FEATURES)]
    names = [n for n in means[1] if n.startswith("price") and n != "price"]
    assert len(names) == 1
    assert [m[names[0]] for m in means] == [2.0, 3.0, 10.0]
    assert {w.key for w in h.writes("entity-windows")} == {"u1", "u2"}
    assert shell.metrics.window_events.labels("in_order")._value.get() == 3


def test_bad_input_is_dead_lettered_and_the_batch_goes_on(tmp_path: Path) -> None:
    _, h = harness(tmp_path)
    asyncio.run(h.feed(EVENTS_CLEAN, b"\x00\x00\x00\x00\x01garbage", event(2)))
    assert h.codes() == ["decode_error"]
    assert [v["event_id"] for v in h.sent(FEATURES)] == ["e2"]


def test_the_offline_store_is_written_at_shutdown(tmp_path: Path) -> None:
    shell, h = harness(tmp_path)

    async def run() -> None:
        await h.feed(EVENTS_CLEAN, event(1))
        await h.feed(LABELS_CLEAN, label(1))
        await h.shutdown()

    asyncio.run(run())
    assert shell.offline is not None and shell.offline.pending == 0
    assert list((tmp_path / "offline").rglob("*.avro"))
