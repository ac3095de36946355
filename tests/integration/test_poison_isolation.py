"""shared/poison.py's ``isolate`` with a plain aiokafka consumer on the session broker: after
``getmany()`` raised on a poison batch, every valid record is handed exactly once (those the
failed call had drained from other partitions included), the batch's offset range is found,
and the consumer moves past it."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from rawbatch import produce_raw, record_batch, with_bad_crc, with_trailing_garbage

from driftloop.shared.broker import Broker
from driftloop.shared.kafka import create_topics, delete_topics_with_prefix
from driftloop.shared.poison import BadBatch, isolate, may_be_poison, read_log
from driftloop.shared.topics import TopicSpec

pytestmark = pytest.mark.integration

PARTITIONS = 8  # seven clean ones: the poison partition is rarely the first the failed call drains
POISON_AT = 5
CORRUPT_MESSAGE = 2
POISONS = {
    "gzip_trailing_garbage": with_trailing_garbage([b"x"] * 4, "gzip"),
    "lz4_trailing_garbage": with_trailing_garbage([b"x"] * 4, "lz4"),
    "bad_crc": with_bad_crc(record_batch([b"x"] * 4)),
}


async def write(bootstrap: str, topic: str, poison: bytes) -> int:
    """The error code of the poison batch's produce (0: taken)."""
    poison_tp = TopicPartition(topic, POISON_AT)
    assert await produce_raw(bootstrap, poison_tp, record_batch([b"p-a", b"p-b"])) == 0
    code = await produce_raw(bootstrap, poison_tp, poison)
    assert await produce_raw(bootstrap, poison_tp, record_batch([b"p-c"])) == 0
    for p in range(PARTITIONS):
        if p != POISON_AT:
            batch = record_batch([f"{p}-{i}".encode() for i in range(3)])
            assert await produce_raw(bootstrap, TopicPartition(topic, p), batch) == 0
    return code


async def scenario(
    bootstrap: str, topic: str, headers: bool = True
) -> tuple[list[bytes], list[tuple[TopicPartition, BadBatch]]]:
    """Consume ``topic`` as the runtime does; ``headers=False`` reads no batch header, so
    that the batch's end is found by stepping offsets."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"g{uuid.uuid4().hex[:8]}", enable_auto_commit=False
    )
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await client.bootstrap()
    consumer.assign(tps)
    await consumer.seek_to_beginning()
    seen: list[bytes] = []
    skipped: list[tuple[TopicPartition, BadBatch]] = []
    handed: dict[TopicPartition, int] = {}

    async def read(tp: TopicPartition, offset: int) -> bytes:
        return await read_log(client, tp, offset, 1 << 20, 500) if headers else b""

    def hand(batches: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        for tp, records in batches.items():
            seen.extend(r.value for r in records)
            if records:
                handed[tp] = max(handed.get(tp, 0), records[-1].offset + 1)

    try:
        deadline = time.monotonic() + 30
        while len(seen) < (PARTITIONS - 1) * 3 + 3 and time.monotonic() < deadline:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except Exception as exc:  # noqa: BLE001 - what the runtime catches, checked just below
                assert may_be_poison(exc), exc
                found = await isolate(consumer, handed, read, 10_000)
                assert found is not None
                skipped.append((found.tp, found.batch))
                handed[found.tp] = found.batch.last + 1
                batches = found.records
            hand(batches)
        # Nothing more: the consumer is past the batch and raises no more.
        hand(await consumer.getmany(timeout_ms=1000))
    finally:
        await client.close()
        await consumer.stop()
    return seen, skipped


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_isolate_hands_every_valid_record_once_and_skips_the_poison_batch(broker: Broker, kind: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    topic = f"{prefix}poison"
    asyncio.run(create_topics(broker.bootstrap_servers, [TopicSpec(topic, PARTITIONS, {})]))
    try:
        code = asyncio.run(write(broker.bootstrap_servers, topic, POISONS[kind]))
        if broker.engine == "kafka" and kind == "bad_crc" and code == CORRUPT_MESSAGE:
            pytest.skip("Apache Kafka refuses a batch with a bad CRC on produce (CORRUPT_MESSAGE): none is ever stored")
        assert code == 0, f"{broker.engine} refused the {kind} batch with error code {code}"
        seen, skipped = asyncio.run(scenario(broker.bootstrap_servers, topic))
    finally:
        asyncio.run(delete_topics_with_prefix(broker.bootstrap_servers, prefix))
    expected = [f"{p}-{i}".encode() for p in range(PARTITIONS) if p != POISON_AT for i in range(3)]
    expected += [b"p-a", b"p-b", b"p-c"]
    assert sorted(seen) == sorted(expected)  # each once: none lost, none repeated
    assert [(tp.partition, b.first, b.last) for tp, b in skipped] == [(POISON_AT, 2, 5)]
    assert skipped[0][1].raw  # its header was read: the range comes from it


def test_without_a_readable_header_the_range_is_found_by_stepping(broker: Broker) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    topic = f"{prefix}poison"
    asyncio.run(create_topics(broker.bootstrap_servers, [TopicSpec(topic, PARTITIONS, {})]))
    try:
        assert asyncio.run(write(broker.bootstrap_servers, topic, POISONS["gzip_trailing_garbage"])) == 0
        seen, skipped = asyncio.run(scenario(broker.bootstrap_servers, topic, headers=False))
    finally:
        asyncio.run(delete_topics_with_prefix(broker.bootstrap_servers, prefix))
    assert len(seen) == len(set(seen)) == (PARTITIONS - 1) * 3 + 3
    assert [(tp.partition, b.first, b.last, b.raw) for tp, b in skipped] == [(POISON_AT, 2, 5, b"")]
