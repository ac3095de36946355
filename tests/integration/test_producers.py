"""Every real producer with every codec, end to end: JSON events and labels sent by aiokafka,
librdkafka (confluent-kafka in-process, Debian's kcat as a process) and Kafka's own Java
console producer, each with no compression, gzip, snappy, lz4 and zstd, all reach ingestion,
and every event gets its champion prediction, with no dead letter. On Tansu only the two
in-process producers run: Debian's kcat cannot connect to it.

The record batches on the raw topics are read back raw to check that each pair really sent
its codec: librdkafka quietly sends a batch uncompressed when compressing would not shrink
it, and a pair that never compressed would pass for nothing.

Also: the Java client's default partitioner (murmur2 of the key) against shared code's.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from confluent_kafka import KafkaError, Message, Producer
from tools import require_tool
from waiting import wait_for_records

from driftloop.runner import Stack
from driftloop.shared.broker import Broker, kafka_classpath
from driftloop.shared.kafka import Partitioner, create_topics, delete_topics_with_prefix, read_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_RAW, LABELS_CLEAN, LABELS_RAW, PREDICTIONS, Topics, TopicSpec

pytestmark = pytest.mark.integration

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_OF_ATTRIBUTE = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}  # record batch attributes & 7
# Per pair and topic: enough alike JSON records per batch that every codec shrinks them.
EVENTS_PER_PAIR = 40
ENTITIES = 5  # shared by all pairs: different producers writing the same entities, as in real use
SEP = "|"  # key separator for the line-based producers; in no key or JSON value here
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
KCAT_WHY = "Debian's kcat (librdkafka 2.0.2) cannot be tested as a producer"
JAVA_WHY = "Kafka's Java console producer cannot be tested"
# A short-lived client: C1 JIT only and the serial GC took ~1.1 CPU-s a run here instead of ~1.9.
JVM = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]

Pair = tuple[str, str]  # (producer, codec)
Keyed = list[tuple[bytes, bytes]]


def _event_id(producer: str, codec: str, i: int) -> str:
    return f"{producer}.{codec}.{i}"


def _pair_of(event_id: str) -> Pair:
    producer, codec, _ = event_id.split(".")
    return producer, codec


def _records(pair: Pair) -> tuple[Keyed, Keyed]:
    """JSON events stamped now (ingestion refuses events older than its lateness bound) and their labels."""
    now = int(time.time() * 1000)
    events: Keyed = []
    labels: Keyed = []
    for i in range(EVENTS_PER_PAIR):
        entity = f"ent-{i % ENTITIES}"
        event_id = _event_id(*pair, i)
        fields = {"x": i * 0.25, "n": i, "colour": ("red", "green")[i % 2], "flag": i % 3 == 0}
        event = {"event_id": event_id, "entity_id": entity, "event_time": now, "fields": fields}
        label = {"event_id": event_id, "entity_id": entity, "label": i % 2 == 0, "label_time": now}
        events.append((entity.encode(), json.dumps(event).encode()))
        labels.append((entity.encode(), json.dumps(label).encode()))
    return events, labels


def _lines(records: Keyed) -> bytes:
    return b"".join(k + SEP.encode() + v + b"\n" for k, v in records)


# --- the producers: each sends (topic, records) per codec and returns once they are delivered


def send_aiokafka(bootstrap: str, codec: str, batches: list[tuple[str, Keyed]]) -> None:
    async def run() -> None:
        prod = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec)
        await prod.start()
        try:
            for topic, records in batches:
                for key, value in records:
                    await prod.send(topic, value, key)
            await prod.flush()
        finally:
            await prod.stop()

    asyncio.run(run())


def send_confluent(bootstrap: str, codec: str, batches: list[tuple[str, Keyed]]) -> None:
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    # Default partitioner (CRC32, not murmur2): ingestion must not depend on where raw records
    # land. A linger gathers a pair's records into batches large enough to compress at all.
    prod = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 50})
    for topic, records in batches:
        for key, value in records:
            prod.produce(topic, value, key, on_delivery=delivered)
    left = prod.flush(30)
    assert left == 0 and not errors, f"confluent-kafka {codec}: {left} undelivered, errors {errors[:3]}"


def send_kcat(bootstrap: str, codec: str, batches: list[tuple[str, Keyed]]) -> None:
    kcat = require_tool("kcat", KCAT_WHY)
    for topic, records in batches:
        proc = subprocess.run(
            # As confluent-kafka: a linger, so that librdkafka has batches worth compressing.
            [kcat, "-P", "-b", bootstrap, "-t", topic, "-K", SEP, "-z", codec, "-X", "linger.ms=50"],
            input=_lines(records),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"kcat {codec} to {topic}: rc {proc.returncode}: {proc.stderr[-500:]!r}"


def console_producer(java: str, bootstrap: str, topic: str, *extra: str) -> list[str]:
    return [
        java,
        *JVM,
        "-cp",
        kafka_classpath(),
        CONSOLE_PRODUCER,
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--reader-property",  # Kafka 4.x's name for --property (deprecated)
        "parse.key=true",
        "--reader-property",
        f"key.separator={SEP}",
        *extra,
    ]


def send_console(bootstrap: str, codec: str, batches: list[tuple[str, Keyed]]) -> None:
    """One JVM per codec and topic (a console producer writes one topic), the topics' at once."""
    java = require_tool("java", JAVA_WHY)
    procs = [
        (
            topic,
            subprocess.Popen(
                console_producer(java, bootstrap, topic, "--compression-codec", codec),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            ),
            records,
        )
        for topic, records in batches
    ]
    for topic, proc, records in procs:
        out, _ = proc.communicate(_lines(records), timeout=120)
        assert proc.returncode == 0, f"console producer {codec} to {topic}: rc {proc.returncode}: {out[-800:]!r}"


PRODUCERS: dict[str, Callable[[str, str, list[tuple[str, Keyed]]], None]] = {
    "aiokafka": send_aiokafka,
    "confluent": send_confluent,
    "kcat": send_kcat,
    "console": send_console,
}
# Debian's kcat cannot talk to Tansu (ApiVersionRequest fails); the Java producer, a JVM per
# codec and topic, is the slow part of the run and is checked on the broker of record only.
ON_TANSU = ("aiokafka", "confluent")


async def _batch_codecs(bootstrap: str, topic: str) -> dict[Pair, set[str]]:
    """The codecs of the record batches each pair wrote to ``topic``, read raw (a consumer
    decompresses and does not say): a batch's first record names its pair."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    seen: dict[Pair, set[str]] = defaultdict(set)
    try:
        await client.force_metadata_update()
        for p in sorted(client.cluster.partitions_for_topic(topic) or ()):
            node = client.cluster.leader_for_partition(TopicPartition(topic, p))
            offset = 0
            while True:
                resp = await client.send(node, FetchRequest(100, 1, 4 << 20, 0, [(topic, [(p, offset, 4 << 20)])]))
                ((_, ((_, error, high_watermark, *data),)),) = resp.topics
                assert error == 0, f"fetch {topic}[{p}]@{offset}: error {error}"
                records = MemoryRecords(data[-1])
                start = offset
                while (batch := records.next_batch()) is not None:
                    first = next(iter(batch))
                    seen[_pair_of(json.loads(first.value)["event_id"])].add(CODEC_OF_ATTRIBUTE[batch.compression_type])
                    offset = batch.next_offset
                if offset >= high_watermark or offset == start:
                    break
    finally:
        await client.close()
    return seen


def _decoded(bootstrap: str, topic: str, record: str, serde: Serde) -> list[dict[str, Any]]:
    return [serde.decode(record, r.value) for r in asyncio.run(read_topic(bootstrap, topic))]


def _missing(pairs: list[Pair], have: set[str]) -> dict[str, str]:
    """Per pair (``producer/codec``), the event ids of its that are not in ``have``."""
    out = {}
    for pair in pairs:
        lost = [i for i in range(EVENTS_PER_PAIR) if _event_id(*pair, i) not in have]
        if lost:
            more = ",..." if len(lost) > 10 else ""
            out["/".join(pair)] = f"{len(lost)} of {EVENTS_PER_PAIR}: #" + ",".join(map(str, lost[:10])) + more
    return out


def test_every_producer_and_codec_is_ingested_and_predicted(
    broker: Broker, service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    producers = [p for p in PRODUCERS if broker.engine == "kafka" or p in ON_TANSU]
    if "kcat" in producers:
        require_tool("kcat", KCAT_WHY)
    if "console" in producers:
        require_tool("java", JAVA_WHY)
    pairs = [(p, c) for p in producers for c in CODECS]
    bootstrap = broker.bootstrap_servers
    timings: dict[str, float] = {}
    stack = Stack(env=service_env, log_dir=tmp_path / "logs", services=("ingestion", "features", "inference"))
    try:
        started = time.monotonic()
        stack.start()
        stack.wait_ready()
        timings["stack ready"] = time.monotonic() - started
        for producer in producers:
            started = time.monotonic()
            for codec in CODECS:
                events, labels = _records((producer, codec))
                PRODUCERS[producer](
                    bootstrap, codec, [(topics.name(EVENTS_RAW), events), (topics.name(LABELS_RAW), labels)]
                )
                stack.check()
            timings[producer] = time.monotonic() - started
        started = time.monotonic()
        sent = {_event_id(*pair, i) for pair in pairs for i in range(EVENTS_PER_PAIR)}
        deadline = time.monotonic() + 90
        champion: set[str] = set()
        while not sent <= champion and time.monotonic() < deadline:
            stack.check()
            preds = _decoded(bootstrap, topics.name(PREDICTIONS), "Prediction", serde)
            champion = {p["event_id"] for p in preds if p["role"] == "champion"}
            time.sleep(0.5)
        timings["predicted"] = time.monotonic() - started
        labels_clean = {r["event_id"] for r in _decoded(bootstrap, topics.name(LABELS_CLEAN), "Label", serde)}
        dead = _decoded(bootstrap, topics.name(DEADLETTER), "DeadLetter", serde)
        stack.check()
    finally:
        stack.stop_services()
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))

    letters = [(d["error_code"], d["source_topic"], d["source_partition"], d["error_message"][:160]) for d in dead]
    assert not letters, f"{len(letters)} dead letters, the first: {letters[:5]}"
    assert not (lost := _missing(pairs, champion)), f"events without a champion prediction, per pair: {lost}"
    assert not (lost := _missing(pairs, labels_clean)), f"labels not on labels.clean, per pair: {lost}"
    for topic in (topics.name(EVENTS_RAW), topics.name(LABELS_RAW)):
        codecs = asyncio.run(_batch_codecs(bootstrap, topic))
        # librdkafka may send a batch that would not shrink uncompressed; each pair must
        # still have sent its codec, and nothing else.
        wrong = {
            "/".join(pair): sorted(codecs.get(pair, ()))
            for pair in pairs
            if pair[1] not in codecs.get(pair, ()) or not codecs[pair] <= {pair[1], "none"}
        }
        assert not wrong, f"{topic}: pairs whose record batches do not carry their codec: {wrong}"


def test_the_java_default_partitioner_and_ours_agree(broker: Broker) -> None:
    """Keys produced by the Java console producer (default partitioner) land where
    driftloop.shared.kafka.Partitioner says: records keyed by entity stay co-partitioned whoever wrote them."""
    if broker.engine != "kafka":
        pytest.skip("the partitioner is the client's; checked once, against Apache Kafka")
    java = require_tool("java", "Kafka's Java partitioner cannot be compared with ours")
    topic = f"partitioner-{time.time_ns()}"
    asyncio.run(create_topics(broker.bootstrap_servers, [TopicSpec(topic, 4)]))
    try:
        keys = PARTITIONER_KEYS
        lines = "".join(f"{k}{SEP}{i}\n" for i, k in enumerate(keys)).encode()
        proc = subprocess.run(
            console_producer(java, broker.bootstrap_servers, topic),
            input=lines,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-800:]
        got = {
            keys[int(r.value)]: r.partition
            for r in wait_for_records(broker.bootstrap_servers, topic, len(keys), timeout_s=30)
        }
    finally:
        asyncio.run(delete_topics_with_prefix(broker.bootstrap_servers, topic))
    assert sorted(got) == sorted(keys)
    ours = {k: Partitioner().partition(k.encode(), 4) for k in keys}
    print("java partitions (4): " + json.dumps(got, ensure_ascii=False))
    assert ours == got, {k: (ours[k], got[k]) for k in keys if ours[k] != got[k]}


# Every tail length of murmur2 (0-3 bytes left over), multi-byte UTF-8, entity-style ids and a long key.
PARTITIONER_KEYS = [
    "",
    "a",
    "ab",
    "abc",
    "abcd",
    "abcde",
    "ent-0",
    "ent-1",
    "ent-2",
    "ent-3",
    "ent-4",
    "ent-17",
    "ent-101",
    "customer-42",
    "é",
    "日本語",
    "🙂",
    "x" * 100,
]
