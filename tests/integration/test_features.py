"""The features service as a real process on the real broker: windowed aggregates per
entity (point-in-time, an out-of-order event included), the offline store written from
the same vectors, and a label that never meets its event dead-lettered as label_expired."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from waiting import wait_for_records

from driftloop.runner import Stack
from driftloop.services.features.offline import read
from driftloop.shared.kafka import produce_all
from driftloop.shared.serde import Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EXAMPLES, FEATURES, LABELS_CLEAN, Topics

pytestmark = pytest.mark.integration

WINDOWS = "x:count:sliding:1h,x:mean:sliding:1h"


def test_windows_offline_store_and_expired_labels(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    env = {
        **service_env,
        "DRIFTLOOP_FEATURES_WINDOWS": WINDOWS,
        "DRIFTLOOP_FEATURES_JOIN_TTL_S": "1",
        # Longer than the test: the offline store must be written at shutdown.
        "DRIFTLOOP_FEATURES_OFFLINE_FLUSH_S": "600",
    }
    monkeypatch.setenv("DRIFTLOOP_FEATURES_WINDOWS", WINDOWS)
    version = CommonSettings().effective_feature_set_version
    t0 = int(time.time() * 1000)
    # Event time order: a0 a5 a1 a2 a3 a4 (a5 arrives last but one); b is another entity.
    # Within the 1 s join TTL of each other, so only the later a6 can expire anything.
    times = {"a0": 0, "a1": 100, "a2": 200, "a3": 300, "a4": 400, "a5": 50, "b0": 0}
    xs = {"a0": 1.0, "a1": 2.0, "a2": 3.0, "a3": 4.0, "a4": 5.0, "a5": 10.0, "b0": 100.0}

    def event(eid: str) -> tuple[str, bytes, bytes]:
        ent = eid[0]
        value = {"event_id": eid, "entity_id": ent, "event_time": t0 + times[eid], "fields": {"x": xs[eid]}}
        return topics.name(EVENTS_CLEAN), ent.encode(), serde.encode("RawEvent", {**value, "ingest_time": t0})

    ghost = {"event_id": "ghost", "entity_id": "a", "label": 1, "label_time": t0 + 10}
    real = {"event_id": "a1", "entity_id": "a", "label": 0, "label_time": t0 + 150}
    with Stack(env=env, log_dir=tmp_path / "logs", services=("features",)) as stack:
        asyncio.run(
            produce_all(
                bootstrap,
                [event(e) for e in ("a0", "a1", "a2", "a3", "a4", "a5", "b0")]
                + [(topics.name(LABELS_CLEAN), b"a", serde.encode("Label", lab)) for lab in (ghost, real)],
            )
        )
        feats = wait_for_records(bootstrap, topics.name(FEATURES), len(times))
        examples = wait_for_records(bootstrap, topics.name(EXAMPLES), 1)
        # An event well past the TTL moves the watermark: the ghost label expires.
        times["a6"], xs["a6"] = 10_000, 0.0
        asyncio.run(produce_all(bootstrap, [event("a6")]))
        dead = wait_for_records(bootstrap, topics.name(DEADLETTER), 1)
        feats = wait_for_records(bootstrap, topics.name(FEATURES), len(times))
        stack.check()
        store = Path(env["DRIFTLOOP_OFFLINE_STORE"])
        assert list(read(store, "features")) == []  # buffered until a flush

    vectors = {v["event_id"]: v for v in (serde.decode("FeatureVector", r.value) for r in feats)}
    assert set(vectors) == set(times)
    assert all(v["feature_set_version"] == version != "fs1" for v in vectors.values())

    arrival = list(times)  # the order produced, which one partition keeps per entity

    def window(eid: str) -> list[float]:
        seen = arrival[: arrival.index(eid) + 1]
        return [xs[o] for o in seen if o[0] == eid[0] and times[o] <= times[eid]]

    # Each vector recomputed by brute force: the entity's events seen so far, at or before its time.
    for eid, v in vectors.items():
        expected = window(eid)
        assert v["features"]["x_count_sliding_1h"] == len(expected), eid
        assert v["features"]["x_mean_sliding_1h"] == pytest.approx(sum(expected) / len(expected)), eid
        assert v["features"]["x"] == xs[eid]
    assert vectors["a5"]["features"]["x_count_sliding_1h"] == 2  # a0 and itself; not a1..a4 that came first
    assert vectors["a2"]["features"]["x_count_sliding_1h"] == 3  # a5 came after it

    letters = [serde.decode("DeadLetter", r.value) for r in dead]
    assert [(d["error_code"], d["event_id"], d["service"]) for d in letters] == [("label_expired", "ghost", "features")]
    assert serde.decode("Label", letters[0]["original_value"]) == ghost
    assert letters[0]["source_topic"] == topics.name(LABELS_CLEAN) and letters[0]["source_offset"] >= 0
    assert [serde.decode("LabeledExample", r.value)["event_id"] for r in examples] == ["a1"]

    stored = {r["event_id"]: r for r in read(store, "features", version)}
    assert stored == vectors
    assert [r["event_id"] for r in read(store, "examples", version)] == ["a1"]
