"""The runtime consumes record batches in every codec Kafka has: events produced by aiokafka
with no compression, gzip, snappy, lz4 and zstd all come out of ingestion, with no dead
letter and no skipped batch. The raw log is read back to check each codec was really sent."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.record.memory_records import MemoryRecords
from rawbatch import CODEC_IDS
from waiting import scrape_metrics, wait_for_records

from driftloop.runner import Stack
from driftloop.shared.kafka import read_topic
from driftloop.shared.poison import read_log
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EVENTS_RAW, Topics

pytestmark = pytest.mark.integration

PER_CODEC = 20


async def send(bootstrap: str, topic: str, codec: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec, linger_ms=50
    )
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for i in range(PER_CODEC):
            value = {"event_id": f"{codec}-{i}", "entity_id": f"e{i % 4}", "event_time": now, "fields": {"x": i}}
            await producer.send(topic, json.dumps(value).encode(), key=f"e{i % 4}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def codecs_on(bootstrap: str, topic: str, partitions: int) -> set[int]:
    """The codec ids of every record batch in ``topic``."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    found: set[int] = set()
    try:
        for p in range(partitions):
            offset = 0
            while True:
                records = MemoryRecords(await read_log(client, TopicPartition(topic, p), offset, 1 << 20, 500))
                if not records.has_next():
                    break
                while records.has_next():
                    batch = records.next_batch()
                    found.add(batch.compression_type)
                    offset = batch.next_offset
    finally:
        await client.close()
    return found


def test_the_runtime_consumes_every_codec(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    for codec in CODEC_IDS:
        asyncio.run(send(bootstrap, topics.name(EVENTS_RAW), codec))
    assert asyncio.run(codecs_on(bootstrap, topics.name(EVENTS_RAW), topics.partitions)) == set(CODEC_IDS.values())
    with Stack(env=service_env, log_dir=tmp_path / "logs", services=("ingestion",)) as stack:
        clean = wait_for_records(bootstrap, topics.name(EVENTS_CLEAN), PER_CODEC * len(CODEC_IDS), check=stack.check)
        stack.check()
        metrics = scrape_metrics(int(service_env["DRIFTLOOP_INGESTION_METRICS_PORT"]))
    ids = sorted(serde.decode("RawEvent", r.value)["event_id"] for r in clean)
    assert ids == sorted(f"{codec}-{i}" for codec in CODEC_IDS for i in range(PER_CODEC))
    assert asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER))) == []
    assert f'driftloop_poison_batches_total{{service="ingestion",topic="{topics.name(EVENTS_RAW)}"}} 0.0' in metrics
