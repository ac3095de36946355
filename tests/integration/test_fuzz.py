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

from driftloop.runner import Stack
from driftloop.services.ingestion.validate import Limits, decode, validate_event, validate_label
from driftloop.shared.errors import DEAD_LETTER_CODES, InvalidRecord
from driftloop.shared.kafka import producer, read_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EVENTS_RAW, LABELS_CLEAN, LABELS_RAW, Topics

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
    names = {"events": topics.name(EVENTS_RAW), "labels": topics.name(LABELS_RAW)}
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
        if topic in (topics.name(EVENTS_RAW), topics.name(LABELS_RAW)):
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
            dead = asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER)))
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
        clean = asyncio.run(read_topic(bootstrap, topics.name(EVENTS_CLEAN))) + asyncio.run(
            read_topic(bootstrap, topics.name(LABELS_CLEAN))
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


# --- every other input topic, through the four services downstream of ingestion -----------

VALID_AFTER_TIMEOUT_S = 120


def internal_valid(topic: str, now: int, fsv: str, event_id: str) -> dict[str, Any]:
    """A valid record for ``topic``: sent after its hostile ones, it must still be processed."""
    vector = {
        "event_id": event_id,
        "entity_id": "fz-ent",
        "event_time": now,
        "features": {"x": 0.25},
        "feature_set_version": fsv,
        "ingest_time": now,
    }
    if topic == "events.clean":
        return {
            **{k: v for k, v in vector.items() if k not in ("features", "feature_set_version")},
            "fields": {"x": 0.25},
        }
    if topic == "labels.clean":
        # The valid event's label: features joins them into an example.
        return {"event_id": "fz-valid-events.clean", "entity_id": "fz-ent", "label": True, "label_time": now}
    if topic == "features":
        return vector
    if topic == "predictions":
        return {**vector, "model_name": "default", "model_version": 1, "role": "champion", "predicted": True,
                "scores": {"true": 0.75, "false": 0.25}, "predicted_at": now}  # fmt: skip
    if topic == "examples":
        return {**{k: v for k, v in vector.items() if k != "ingest_time"}, "label": True, "label_time": now}
    if topic == "alerts":
        return {"alert_id": event_id, "kind": "concept", "detector": "adwin", "subject": "error", "statistic": 1.0,
                "threshold": 0.5, "model_name": "default", "model_version": 1, "window_start_time": now,
                "window_end_time": now, "window_size": 10, "event_id": None, "created_at": now}  # fmt: skip
    raise AssertionError(topic)


def metric_value(port: str, line_start: str) -> float | None:
    for line in scrape(port).splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_every_input_topic_of_every_service_dead_letters_hostile_records(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fuzzing import INTERNAL_TOPICS, hostile_framed

    from driftloop.shared.modelspec import build_model
    from driftloop.shared.registry import ArtifactStore, registry_key, version_record
    from driftloop.shared.settings import CommonSettings

    env = {**service_env, "DRIFTLOOP_RETRAINING_TASK": "binary"}  # retraining learns from its first example
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fsv = CommonSettings().effective_feature_set_version
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    now = int(time.time() * 1000)
    rng = random.Random(20261202)
    # (topic, category, key, value, code); every record goes to partition 0, the valid ones last.
    inputs: list[tuple[str, str, bytes, bytes | None, str]] = []
    valid: dict[str, tuple[bytes, bytes | None]] = {}
    # Version 50: the drift alert below may make retraining register versions of its own.
    registry_key_v50 = registry_key("default", 50)
    for short, (record, _) in INTERNAL_TOPICS.items():
        if short == "models.registry":
            good = version_record(
                name="default", version=50, status="candidate", reason="fuzz: a valid record after the hostile ones",
                artifact=ArtifactStore(env["DRIFTLOOP_ARTIFACT_STORE"]).save("default", 50, build_model("logreg", 1)),
                parent=1, trigger="manual", window={"examples": 0}, params={"spec": "logreg", "trained": "true"},
                metrics={}, feature_set_version=fsv, code_version="fuzz", now_ms=now,
            )  # fmt: skip
        else:
            good = internal_valid(short, now, fsv, f"fz-valid-{short}")
        for i, (category, value, code) in enumerate(hostile_framed(record, good, serde, rng)):
            # A compacted topic takes no null key; elsewhere, every other hostile record has an empty key.
            key = b"fz-hostile" if short == "models.registry" or i % 2 else b""
            if short == "models.registry" and category == "tombstone":
                continue  # sent on its own below: ignored, not dead-lettered
            inputs.append((topics.name(short), category, key, value, code))
        # The valid record of a topic has an empty key (entity and event are in the body), but the registry's.
        valid[short] = (registry_key_v50 if short == "models.registry" else b"", serde.encode(record, good))
    tombstone = (topics.name("models.registry"), registry_key("default", 1), None)

    async def produce_in_order() -> list[tuple[str, int, int]]:
        prod = producer(bootstrap, max_request_size=2_000_000)
        await prod.start()
        try:
            futs = [await prod.send(t, key=k, value=v, partition=0) for t, _, k, v, _ in inputs]
            futs.append(await prod.send(tombstone[0], key=tombstone[1], value=None, partition=0))
            # The label of the valid prediction, so that monitoring's outcome shows it was processed.
            label = {"event_id": "fz-valid-predictions", "entity_id": "fz-ent", "label": True, "label_time": now}
            futs.append(
                await prod.send(topics.name(LABELS_CLEAN), key=b"", value=serde.encode("Label", label), partition=0)
            )
            for short, (k, v) in valid.items():
                futs.append(await prod.send(topics.name(short), key=k, value=v, partition=0))
            metas = [await f for f in futs]
        finally:
            await prod.stop()
        return [(m.topic, m.partition, m.offset) for m in metas[: len(inputs)]]

    consumers = {topics.name(short): services for short, (_, services) in INTERNAL_TOPICS.items()}
    logs = tmp_path / "logs"
    with Stack(env=env, log_dir=logs, services=("features", "inference", "monitoring", "retraining")) as stack:
        stack.wait_ready(90)
        positions = asyncio.run(produce_in_order())
        expected = {
            (*pos, service): (category, key, value, code)
            for (topic, category, key, value, code), pos in zip(inputs, positions, strict=True)
            for service in consumers[topic]
        }
        deadline = time.monotonic() + VALID_AFTER_TIMEOUT_S
        while True:
            stack.check()
            dead = [
                serde.decode("DeadLetter", r.value) for r in asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER)))
            ]
            letters = {(d["source_topic"], d["source_partition"], d["source_offset"], d["service"]): d for d in dead}
            if expected.keys() <= letters.keys() or time.monotonic() > deadline:
                break

        # Every valid record sent after the hostile ones was processed:
        def seen(short: str, event_id: str) -> bool:
            records = asyncio.run(read_topic(bootstrap, topics.name(short)))
            return any(Serde.leading_string(r.value) == event_id for r in records)

        inference_port = env["DRIFTLOOP_INFERENCE_METRICS_PORT"]
        retraining_port = env["DRIFTLOOP_RETRAINING_METRICS_PORT"]
        checks = {
            "events.clean -> features": lambda: seen("features", "fz-valid-events.clean"),
            "labels.clean -> examples (features' join)": lambda: seen("examples", "fz-valid-events.clean"),
            "features -> predictions (inference)": lambda: seen("predictions", "fz-valid-features"),
            "predictions + labels.clean -> outcomes (monitoring)": lambda: seen("outcomes", "fz-valid-predictions"),
            "examples -> learned (retraining)": lambda: (
                metric_value(retraining_port, 'driftloop_training_examples{model="default"}') or 0
            ) >= 2,  # the valid example sent and the one features joined
            "alerts -> received (retraining)": lambda: "fz-valid-alerts" in (logs / "retraining.log").read_text(),
            "models.registry -> v50 in shadow (inference)": lambda: metric_value(
                inference_port, 'driftloop_model_info{model="default",role="challenger",version="50"}'
            ) == 1.0,
        }  # fmt: skip
        pending = dict(checks)
        # A deadline of its own, and every check made at least once: waiting for the dead
        # letters may have used up the first one (on a broker slowed by a long session).
        deadline = time.monotonic() + VALID_AFTER_TIMEOUT_S
        while pending:
            pending = {what: check for what, check in pending.items() if not check()}
            stack.check()
            if time.monotonic() > deadline:
                break
        stack.check()  # no service stopped
        served = metric_value(inference_port, 'driftloop_served_model_version{model="default"}')
        inference_log = (logs / "inference.log").read_text()
        monitoring_log = (logs / "monitoring.log").read_text()

    codes = Counter((k[0].removeprefix(topics.prefix), code) for k, (_, _, _, code) in expected.items())
    print(f"fuzz: {len(inputs)} hostile inputs, {len(expected)} dead letters expected: {dict(sorted(codes.items()))}")
    assert len(inputs) >= 7 * 9 and len(expected) >= 80
    assert not pending, f"valid records after the hostile ones were not processed: {sorted(pending)}"
    missing = sorted((e[1], k[3]) for k, e in expected.items() if k not in letters)
    assert not missing, f"{len(missing)} hostile inputs not dead-lettered (category, service): {missing}"
    wrong = sorted(
        (k[0].removeprefix(topics.prefix), cat, k[3], letters[k]["error_code"], code)
        for k, (cat, _, _, code) in expected.items()
        if letters[k]["error_code"] != code
    )
    assert not wrong, f"dead-lettered with another code (topic, category, service, got, expected): {wrong}"
    for k, (category, key, value, _) in expected.items():
        d = letters[k]
        assert d["original_value"] == value and d["original_key"] == key and d["error_message"], (k, category)
    # Nothing but the hostile inputs was dead-lettered, each once per consuming service.
    assert len(dead) == len(expected), sorted({(d["source_topic"], d["error_code"]) for d in dead} - set())
    # The registry tombstone (on v1, the served champion) is ignored: v1 keeps serving.
    assert served == 1.0
    assert "registry_tombstone_ignored" in inference_log
    # A classifier's monitoring skips no detector, so it says nothing about regression ones.
    assert "regression_concept_detectors" not in monitoring_log
