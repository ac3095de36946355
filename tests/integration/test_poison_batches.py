"""A record batch no consumer can decode, on the session broker (tests/rawbatch.py says which
corruption each broker takes): ingestion as a real process counts it, logs its topic,
partition and offset range, dead-letters it with code ``poison_batch``, commits past it and
keeps running; the valid records around it, in the same fetch, are all forwarded."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from rawbatch import HEADER_BYTES, gzip_with_trailing_garbage, produce_raw, record_batch
from waiting import scrape_metrics, wait_for_records

from driftloop.runner import Stack
from driftloop.shared.broker import Broker
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EVENTS_RAW, Topics

pytestmark = pytest.mark.integration


def events(*ids: str) -> list[bytes]:
    now = int(time.time() * 1000)
    return [json.dumps({"event_id": i, "entity_id": "e1", "event_time": now, "fields": {"x": 1}}).encode() for i in ids]


async def committed(bootstrap: str, group: str, tps: list[TopicPartition]) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


def test_a_poison_batch_is_counted_logged_dead_lettered_and_skipped(
    broker: Broker, service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    p0, p1 = TopicPartition(topics.name(EVENTS_RAW), 0), TopicPartition(topics.name(EVENTS_RAW), 1)
    poison0 = gzip_with_trailing_garbage(events("bad0", "bad1", "bad2"), key=b"e1")
    poison1 = gzip_with_trailing_garbage(events("bad3", "bad4"), key=b"e1")
    # Written before the service starts, so that its first fetch holds valid records before
    # and after the poison batch (partition 0), and a poison batch with nothing after it (1).
    writes = [
        (p0, record_batch(events("before0", "before1"), key=b"e1")),  # offsets 0-1
        (p0, poison0),  # 2-4
        (p0, record_batch(events("after0", "after1"), key=b"e1")),  # 5-6
        (p1, poison1),  # 0-1
    ]
    for tp, batch in writes:
        code = asyncio.run(produce_raw(bootstrap, tp, batch))
        assert code == 0, f"{broker.engine} refused the batch with error code {code}"
    logs = tmp_path / "logs"
    with Stack(env=service_env, log_dir=logs, services=("ingestion",)) as stack:
        clean = wait_for_records(bootstrap, topics.name(EVENTS_CLEAN), 4, check=stack.check)
        dead = wait_for_records(bootstrap, topics.name(DEADLETTER), 2, check=stack.check)
        # Still running, and still consuming the partition past its poison batch.
        asyncio.run(produce_raw(bootstrap, p0, record_batch(events("later"), key=b"e1")))  # 7
        clean = wait_for_records(bootstrap, topics.name(EVENTS_CLEAN), 5, check=stack.check)
        stack.check()
        metrics = scrape_metrics(int(service_env["DRIFTLOOP_INGESTION_METRICS_PORT"]))
    group = f"{topics.prefix}ingestion"
    offsets = asyncio.run(committed(bootstrap, group, [p0, p1]))

    assert sorted(serde.decode("RawEvent", r.value)["event_id"] for r in clean) == [
        "after0",
        "after1",
        "before0",
        "before1",
        "later",
    ]
    letters = sorted((serde.decode("DeadLetter", r.value) for r in dead), key=lambda d: d["source_partition"])
    assert [(d["source_partition"], d["source_offset"], d["error_code"]) for d in letters] == [
        (0, 2, "poison_batch"),
        (1, 0, "poison_batch"),
    ], letters
    for d, batch, (first, last) in ((letters[0], poison0, (2, 4)), (letters[1], poison1, (0, 1))):
        assert d["source_topic"] == topics.name(EVENTS_RAW) and d["service"] == "ingestion"
        assert f"offsets {first}-{last}" in d["error_message"], d["error_message"]
        # The batch as the broker stored it: its records section is what was written.
        assert d["original_value"] is not None and d["original_value"][HEADER_BYTES:] == batch[HEADER_BYTES:]

    assert f'driftloop_poison_batches_total{{service="ingestion",topic="{topics.name(EVENTS_RAW)}"}} 2.0' in metrics
    assert 'driftloop_dead_letters_total{code="poison_batch",service="ingestion"} 2.0' in metrics

    lines = [json.loads(line) for line in (logs / "ingestion.log").read_text().splitlines() if line.startswith("{")]
    skipped = sorted(
        (x["partition"], x["first_offset"], x["last_offset"])
        for x in lines
        if x.get("event") == "poison_batch_skipped" and x.get("topic") == topics.name(EVENTS_RAW)
    )
    assert skipped == [(0, 2, 4), (1, 0, 1)], skipped

    # Committed past each poison batch: a restart does not meet them again.
    assert offsets == {0: 8, 1: 2}, offsets


def test_a_codec_the_service_lacks_is_a_poison_batch_not_a_crash(
    broker: Broker, service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    """The failure of the issue: lz4 input to a service without the codec library. Here
    ingestion runs with an import shim that hides cramjam, so aiokafka raises
    UnsupportedCodecError on the lz4 batch; the batch is skipped and the gzip one after it
    (a codec Python always has) is forwarded."""
    bootstrap = broker.bootstrap_servers
    shim = tmp_path / "no-cramjam"
    shim.mkdir()
    (shim / "cramjam.py").write_text('raise ImportError("hidden by the test")\n')
    tp = TopicPartition(topics.name(EVENTS_RAW), 2)
    lz4 = record_batch(events("lz0", "lz1"), "lz4", key=b"e1")
    for batch in (lz4, record_batch(events("gz0"), "gzip", key=b"e1")):
        assert asyncio.run(produce_raw(bootstrap, tp, batch)) == 0
    logs = tmp_path / "logs"
    env = {**service_env, "PYTHONPATH": str(shim)}
    with Stack(env=env, log_dir=logs, services=("ingestion",)) as stack:
        clean = wait_for_records(bootstrap, topics.name(EVENTS_CLEAN), 1, check=stack.check)
        dead = wait_for_records(bootstrap, topics.name(DEADLETTER), 1, check=stack.check)
        stack.check()
    assert [serde.decode("RawEvent", r.value)["event_id"] for r in clean] == ["gz0"]
    [letter] = [serde.decode("DeadLetter", r.value) for r in dead]
    assert (letter["source_partition"], letter["source_offset"], letter["error_code"]) == (2, 0, "poison_batch")
    assert "offsets 0-1" in letter["error_message"] and "UnsupportedCodecError" in letter["error_message"]
