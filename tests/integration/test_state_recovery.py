"""State recovery from the changelogs, with real processes on the real broker: the features
join survives a SIGKILL mid-stream (no example lost, duplicates counted); ingestion's dedup
store survives a clean restart, also for duplicates already waiting when it comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from driftloop.runner import Stack
from driftloop.shared.kafka import produce_all, producer, read_topic, tail_topic
from driftloop.shared.serde import Serde
from driftloop.shared.topics import (
    DEADLETTER,
    EVENTS_CLEAN,
    EVENTS_RAW,
    EXAMPLES,
    FEATURES,
    LABELS_CLEAN,
    LABELS_RAW,
    Topics,
)

pytestmark = pytest.mark.integration
N = 3000
CHUNK = 30  # records per chunk, one chunk every PACE_S: ~600 records/s, so the kill lands mid-stream
PACE_S = 0.05


def _log_lines(path: Path, start: int = 0) -> list[dict[str, Any]]:
    out = []
    with open(path, "rb") as f:
        f.seek(start)
        for raw in f:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue  # not one of our JSON lines (aiokafka output)
    return out


def _wait_recovered(stack: Stack, name: str, log: Path, start: int, n_stores: int, timeout_s: float = 45.0) -> list:
    """The service's state_recovered lines written after byte ``start`` of its log, once
    every store has recovered (the worker got its assignment)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack.check()
        lines = [r for r in _log_lines(log, start) if r.get("event") == "state_recovered"]
        if len({r["store"] for r in lines}) >= n_stores:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"{name} did not recover its state within {timeout_s} s; see {log}")


async def _produce_and_kill(
    bootstrap: str, records: list[tuple[str, bytes, bytes]], watch: str, kill_at: int, proc: subprocess.Popen
) -> int:
    """Produce ``records`` at a steady pace while counting ``watch``; SIGKILL ``proc`` once
    ``kill_at`` records have appeared there. Returns the count seen at the kill."""
    seen = {"n": 0}

    async def count() -> None:
        async for batch in tail_topic(bootstrap, watch, poll_ms=50):
            seen["n"] += len(batch)

    counter = asyncio.create_task(count())
    p = producer(bootstrap)
    await p.start()
    killed_at: int | None = None
    try:
        for i in range(0, len(records), CHUNK):
            for topic, key, value in records[i : i + CHUNK]:
                await p.send(topic, key=key, value=value)
            await asyncio.sleep(PACE_S)
            if killed_at is None and seen["n"] >= kill_at:
                proc.send_signal(signal.SIGKILL)
                killed_at = seen["n"]
        await p.flush()
        deadline = time.monotonic() + 30
        while killed_at is None and time.monotonic() < deadline:
            if seen["n"] >= kill_at:
                proc.send_signal(signal.SIGKILL)
                killed_at = seen["n"]
            await asyncio.sleep(0.02)
    finally:
        await p.stop()
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    assert killed_at is not None, f"features produced only {seen['n']} of the {kill_at} vectors to kill at"
    return killed_at


def test_features_join_survives_sigkill_mid_stream(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    base = int(time.time() * 1000)
    events = [
        {
            "event_id": f"ev-{i}",
            "entity_id": f"ent-{i % 17}",
            "event_time": base + i,
            "fields": {"x": i * 0.5, "flag": i % 2 == 0, "cat": "abc"[i % 3], "n": None},
            "ingest_time": base + i,
        }
        for i in range(N)
    ]
    event_records = [(topics.name(EVENTS_CLEAN), e["entity_id"].encode(), serde.encode("RawEvent", e)) for e in events]
    labels = [
        (
            topics.name(LABELS_CLEAN),
            e["entity_id"].encode(),
            serde.encode(
                "Label",
                {
                    "event_id": e["event_id"],
                    "entity_id": e["entity_id"],
                    "label": i % 5 == 0,
                    "label_time": base + i + 1000,
                },
            ),
        )
        for i, e in enumerate(events)
    ]
    log = tmp_path / "logs" / "features.log"
    changelog = f"{topics.prefix}features-vectors-awaiting-label-changelog"

    with Stack(env=service_env, log_dir=tmp_path / "logs", services=("features",)) as stack:
        _wait_recovered(stack, "features", log, 0, n_stores=3)
        first = stack.procs["features"]
        killed_at = asyncio.run(_produce_and_kill(bootstrap, event_records, topics.name(FEATURES), N // 2, first))
        rc = first.wait(10)
        before_restart = len(asyncio.run(read_topic(bootstrap, changelog)))
        restart_offset = log.stat().st_size
        stack.start_service("features")
        recovered = _wait_recovered(stack, "features", log, restart_offset, n_stores=3)
        asyncio.run(produce_all(bootstrap, labels))

        deadline = time.monotonic() + 60
        examples: list = []
        while time.monotonic() < deadline:
            stack.check()
            examples = asyncio.run(read_topic(bootstrap, topics.name(EXAMPLES)))
            if len({serde.decode("LabeledExample", r.value)["event_id"] for r in examples}) >= N:
                break
            time.sleep(1)
        time.sleep(1)  # let any late duplicate land before the final read
        stack.check()
        examples = asyncio.run(read_topic(bootstrap, topics.name(EXAMPLES)))
        vectors = asyncio.run(read_topic(bootstrap, topics.name(FEATURES)))
        changelog_records = asyncio.run(read_topic(bootstrap, changelog))

    vec_by_id: dict[str, list[dict]] = defaultdict(list)
    for r in vectors:
        v = serde.decode("FeatureVector", r.value)
        vec_by_id[v["event_id"]].append(v["features"])
    ex_by_id: dict[str, list[dict]] = defaultdict(list)
    for r in examples:
        ex = serde.decode("LabeledExample", r.value)
        ex_by_id[ex["event_id"]].append(ex)
    ids = [e["event_id"] for e in events]
    lost = [eid for eid in ids if eid not in ex_by_id]
    no_vector = [eid for eid in ids if eid not in vec_by_id]
    example_dups = sum(len(v) - 1 for v in ex_by_id.values())
    vector_dups = sum(len(v) - 1 for v in vec_by_id.values())
    recovered_vectors = sum(r["records"] for r in recovered if r["store"] == changelog)
    figures = (
        f"events={N} killed_at_vectors={killed_at} (rc={rc}) vectors={len(vectors)} vector_dups={vector_dups} "
        f"examples={len(examples)} example_dups={example_dups} lost={len(lost)} "
        f"changelog_records={len(changelog_records)} changelog_before_restart={before_restart} "
        f"recovered_vector_records={recovered_vectors}"
    )
    print(f"\nfeatures SIGKILL recovery: {figures}")

    assert rc == -signal.SIGKILL, figures
    assert N // 4 <= killed_at < N, f"the kill did not land mid-stream: {figures}"
    assert not lost, f"{len(lost)} events lost, e.g. {lost[:5]}: {figures}"
    assert not no_vector, f"events without a FeatureVector, e.g. {no_vector[:5]}: {figures}"
    assert set(ex_by_id) == set(ids), f"examples for unknown event_ids: {figures}"
    wrong = []
    for i, e in enumerate(events):
        eid = e["event_id"]
        feature_sets = {json.dumps(f, sort_keys=True) for f in vec_by_id[eid]}
        assert len(feature_sets) == 1, f"{eid} has differing FeatureVectors {feature_sets}: {figures}"
        for ex in ex_by_id[eid]:
            if ex["features"] != vec_by_id[eid][0] or ex["label"] != (i % 5 == 0) or ex["entity_id"] != e["entity_id"]:
                wrong.append((eid, ex))
    assert not wrong, f"{len(wrong)} examples do not carry their event's features/label, e.g. {wrong[:2]}: {figures}"
    assert changelog_records, f"changelog topic {changelog} has no records: {figures}"
    assert {r.partition for r in changelog_records} == set(range(topics.partitions)), figures
    # The vectors of the batches committed before the kill exist only in the changelog:
    # the restarted worker must have read them back.
    assert recovered_vectors > 0, f"the restarted worker recovered nothing: {figures}"


def _raw(eid: str, entity: str, now: int) -> bytes:
    return json.dumps({"event_id": eid, "entity_id": entity, "event_time": now, "fields": {"x": 1}}).encode()


def test_ingestion_dedup_survives_a_clean_restart(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    now = int(time.time() * 1000)
    entities = [f"ent-{i}" for i in range(12)]  # spread over every partition
    first = [(topics.name(EVENTS_RAW), ent.encode(), _raw(f"d-{ent}", ent, now)) for ent in entities]
    log = tmp_path / "logs" / "ingestion.log"
    changelog = f"{topics.prefix}ingestion-seen-rawevent-changelog"

    with Stack(env=service_env, log_dir=tmp_path / "logs", services=("ingestion",)) as stack:
        asyncio.run(produce_all(bootstrap, first))
        deadline = time.monotonic() + 45
        clean: list = []
        while time.monotonic() < deadline and len(clean) < len(first):
            stack.check()
            time.sleep(0.5)
            clean = asyncio.run(read_topic(bootstrap, topics.name(EVENTS_CLEAN)))
        assert len(clean) == len(first), f"clean={len(clean)} of {len(first)} before the restart"

        proc = stack.procs["ingestion"]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        restart_offset = log.stat().st_size
        stack.start_service("ingestion")
        recovered = _wait_recovered(stack, "ingestion", log, restart_offset, n_stores=2)
        # The same event_ids again (same keys, so same partitions), and one new event.
        again = [(t, k, v) for t, k, v in first] + [(topics.name(EVENTS_RAW), b"ent-0", _raw("fresh", "ent-0", now))]
        asyncio.run(produce_all(bootstrap, again))
        deadline = time.monotonic() + 45
        dead: list = []
        while time.monotonic() < deadline:
            stack.check()
            time.sleep(0.5)
            dead = asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER)))
            clean = asyncio.run(read_topic(bootstrap, topics.name(EVENTS_CLEAN)))
            if len(dead) >= len(first) and len(clean) >= len(first) + 1:
                break
        time.sleep(1)
        dead = asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER)))
        clean = asyncio.run(read_topic(bootstrap, topics.name(EVENTS_CLEAN)))
        changelog_records = asyncio.run(read_topic(bootstrap, changelog))

    letters = [serde.decode("DeadLetter", r.value) for r in dead]
    codes = Counter(d["error_code"] for d in letters)
    clean_ids = Counter(serde.decode("RawEvent", r.value)["event_id"] for r in clean)
    recovered_keys = sum(r["records"] for r in recovered if r["store"] == changelog)
    figures = (
        f"sent={len(first)} resent={len(first)} sigterm_rc={rc} changelog_records={len(changelog_records)} "
        f"recovered_records={recovered_keys} dead_letters={dict(codes)} clean={sum(clean_ids.values())}"
    )
    print(f"\ningestion dedup across restart: {figures}")

    assert rc == 0, f"ingestion did not stop cleanly on SIGTERM: {figures}"
    assert recovered_keys >= len(first), figures
    assert codes == {"duplicate_event": len(first)}, figures
    assert sorted(d["event_id"] for d in letters) == sorted(f"d-{e}" for e in entities), figures
    assert all(n == 1 for n in clean_ids.values()) and set(clean_ids) == {f"d-{e}" for e in entities} | {"fresh"}, (
        figures
    )


def _raw_label(eid: str, entity: str, now: int) -> bytes:
    return json.dumps({"event_id": eid, "entity_id": entity, "label": True, "label_time": now}).encode()


def test_ingestion_dedup_catches_duplicates_already_waiting_at_restart(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    """Duplicates produced while ingestion is down are consumed as soon as it is back: the
    dedup stores must be recovered before the streams take them."""
    bootstrap = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    now = int(time.time() * 1000)
    n = 300
    ents = [f"ent-{i % 13}" for i in range(n)]
    originals = [(topics.name(EVENTS_RAW), e.encode(), _raw(f"dw-{i}", e, now)) for i, e in enumerate(ents)]
    originals += [(topics.name(LABELS_RAW), e.encode(), _raw_label(f"dw-{i}", e, now)) for i, e in enumerate(ents)]
    log = tmp_path / "logs" / "ingestion.log"
    with Stack(env=service_env, log_dir=tmp_path / "logs", services=("ingestion",)) as stack:
        asyncio.run(produce_all(bootstrap, originals))
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            stack.check()
            time.sleep(0.5)
            forwarded = len(asyncio.run(read_topic(bootstrap, topics.name(EVENTS_CLEAN))))
            forwarded += len(asyncio.run(read_topic(bootstrap, topics.name(LABELS_CLEAN))))
            if forwarded >= 2 * n:
                break
        proc = stack.procs["ingestion"]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        asyncio.run(produce_all(bootstrap, originals))  # every record again, while ingestion is down
        restart_offset = log.stat().st_size
        stack.start_service("ingestion")
        _wait_recovered(stack, "ingestion", log, restart_offset, n_stores=2)
        deadline = time.monotonic() + 30
        dead: list = []
        while time.monotonic() < deadline:
            stack.check()
            dead = asyncio.run(read_topic(bootstrap, topics.name(DEADLETTER)))
            clean_events = asyncio.run(read_topic(bootstrap, topics.name(EVENTS_CLEAN)))
            clean_labels = asyncio.run(read_topic(bootstrap, topics.name(LABELS_CLEAN)))
            if len(dead) + len(clean_events) + len(clean_labels) >= 4 * n:
                break
            time.sleep(0.5)
    codes = Counter(serde.decode("DeadLetter", r.value)["error_code"] for r in dead)
    leaked_events = len(clean_events) - n
    leaked_labels = len(clean_labels) - n
    figures = (
        f"events={n} labels={n} resent={2 * n} sigterm_rc={rc} dead_letters={dict(codes)} "
        f"duplicate_events_forwarded={leaked_events} duplicate_labels_forwarded={leaked_labels}"
    )
    print(f"\ningestion duplicates waiting at restart: {figures}")
    assert rc == 0, figures
    assert leaked_events == 0 and leaked_labels == 0, f"duplicates slipped through the dedup: {figures}"
    assert codes == {"duplicate_event": 2 * n}, figures
