"""Fuzzing the running ingestion service: a few hundred hostile records (byte-mutated and
truncated Avro, unknown schema ids, wrong types, huge strings, NaN and infinities, lone
surrogates, oversized payloads, JSON bombs, empty and null values, and hypothesis-built
objects) into events.raw and labels.raw. Every one must reach the dead-letter topic with
the error code the pure core gives it (matched by source topic/partition/offset), the
service must stay up, and its consumer lag must return to 0 on every partition."""

from __future__ import annotations

import asyncio
import random
import re
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fuzzing import hostile, hypothesis_objects
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingestion.validate import Limits, decode, validate_event, validate_label
from services.runner import Stack
from shared.errors import DEAD_LETTER_CODES, InvalidRecord
from shared.kafka import producer, read_topic
from shared.serde import Serde
from shared.topics import Topics

pytestmark = pytest.mark.integration

MAX_RECORD_BYTES = 20_000
PER_TOPIC_MUTATED = 150
PER_TOPIC_HYPOTHESIS = 40
VALIDATORS = {"events": ("RawEvent", validate_event), "labels": ("Label", validate_label)}


def expected_code(kind: str, data: bytes | None, serde: Serde, now_ms: int) -> str | None:
    """The dead-letter code the pure core gives ``data``; None when it is a valid record."""
    record, validate = VALIDATORS[kind]
    limits = Limits(max_record_bytes=MAX_RECORD_BYTES)
    try:
        validate(decode(data, record, serde, limits), now_ms, limits)
    except InvalidRecord as exc:
        return exc.code
    return None


def hypothesis_inputs(kind: str, now_ms: int, n: int) -> list[bytes]:
    drawn: list[bytes] = []

    @settings(max_examples=n, database=None, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(hypothesis_objects(kind, now_ms) | st.binary(min_size=1, max_size=300))
    def collect(value: bytes) -> None:
        drawn.append(value)

    collect()
    return drawn


def build_inputs(serde: Serde, now_ms: int) -> list[tuple[str, str, bytes | None, bytes | None, str]]:
    """(kind, category, key, value, expected code) for every input, accidental valid ones left out."""
    rng = random.Random(20261124)
    out = []
    for kind in VALIDATORS:
        candidates = [
            hostile(kind, random.Random(rng.getrandbits(64)), serde, now_ms, MAX_RECORD_BYTES)
            for _ in range(PER_TOPIC_MUTATED)
        ]
        candidates += [("hypothesis", v) for v in hypothesis_inputs(kind, now_ms, PER_TOPIC_HYPOTHESIS)]
        for category, value in candidates:
            code = expected_code(kind, value, serde, now_ms)
            if code is None:
                continue  # a mutation that happened to leave a valid record
            key = rng.choice([None, b"", b"k", bytes(rng.randrange(256) for _ in range(8))])
            if value is None and key is None:
                key = b"null-value"  # Kafka needs a key or a value
            out.append((kind, category, key, value, code))
    return out


async def produce(bootstrap: str, topics: Topics, inputs: list[Any]) -> list[tuple[str, int, int]]:
    """Produce every input; return (topic, partition, offset) of each, in order."""
    names = {"events": topics.events_raw, "labels": topics.labels_raw}
    prod = producer(bootstrap, max_request_size=4 * MAX_RECORD_BYTES)
    await prod.start()
    try:
        futures = [await prod.send(names[kind], key=key, value=value) for kind, _, key, value, _ in inputs]
        metas = [await f for f in futures]
    finally:
        await prod.stop()
    return [(m.topic, m.partition, m.offset) for m in metas]


def scrape(port: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def lags(metrics: str, topics: Topics) -> dict[tuple[str, str], float]:
    found = {}
    pattern = re.compile(
        r'driftloop_consumer_lag_records\{partition="(\d+)",service="ingestion",topic="([^"]+)"\} (\S+)'
    )
    for partition, topic, value in pattern.findall(metrics):
        if topic in (topics.events_raw, topics.labels_raw):
            found[(topic, partition)] = float(value)
    return found


def test_every_hostile_input_is_dead_lettered_and_ingestion_keeps_up(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    env = {**service_env, "DRIFTLOOP_INGESTION_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES)}
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    now = int(time.time() * 1000)
    inputs = build_inputs(serde, now)
    categories = sorted({c for _, c, *_ in inputs})
    codes = Counter(code for *_, code in inputs)
    print(f"fuzz: {len(inputs)} hostile inputs tried ({len(categories)} categories: {', '.join(categories)})")
    print(f"fuzz: expected dead-letter codes {dict(sorted(codes.items()))}")
    assert len(inputs) >= 300

    with Stack(env=env, log_dir=tmp_path / "logs", services=("ingestion",)) as stack:
        positions = asyncio.run(produce(bootstrap, topics, inputs))
        deadline = time.monotonic() + 60
        while True:
            dead = asyncio.run(read_topic(bootstrap, topics.deadletter))
            if len(dead) >= len(inputs) or time.monotonic() > deadline:
                break
            stack.check()
            time.sleep(0.5)
        stack.check()  # still alive after all of it
        port = env["DRIFTLOOP_INGESTION_METRICS_PORT"]
        lag_deadline = time.monotonic() + 20
        while True:
            lag = lags(scrape(port), topics)
            if (len(lag) == 2 * topics.partitions and not any(lag.values())) or time.monotonic() > lag_deadline:
                break
            time.sleep(0.5)
        stack.check()
        clean = asyncio.run(read_topic(bootstrap, topics.events_clean)) + asyncio.run(
            read_topic(bootstrap, topics.labels_clean)
        )

    letters = {}
    for r in dead:
        d = serde.decode("DeadLetter", r.value)
        letters[(d["source_topic"], d["source_partition"], d["source_offset"])] = d
    missing = [(inp[1], pos) for inp, pos in zip(inputs, positions, strict=True) if pos not in letters]
    assert not missing, f"{len(missing)} of {len(inputs)} inputs never reached the dead-letter topic: {missing[:10]}"
    assert len(dead) == len(inputs), "a record was dead-lettered twice"
    for (_, category, _, value, code), pos in zip(inputs, positions, strict=True):
        d = letters[pos]
        assert d["error_code"] == code and code in DEAD_LETTER_CODES, (category, d["error_code"], code)
        assert d["original_value"] == value and d["service"] == "ingestion", category
        assert d["error_message"]
    assert clean == []
    assert len(lag) == 2 * topics.partitions, f"lag not exported for every partition: {lag}"
    assert not any(lag.values()), f"consumer lag did not return to 0: {lag}"
