"""Producing a dataset to events.raw and labels.raw, as a user's producer would."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from driftloop.shared.kafka import ClientOptions, client_options, produce_batched, producer, start_client
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import EVENTS_RAW, LABELS_RAW, Topics
from driftloop.streams import Dataset, read_csv, schedule


@dataclass
class ReplayResult:
    run_id: str
    events_sent: int
    labels_sent: int
    started: float
    finished: float


async def replay(
    bootstrap: str,
    topics: Topics,
    serde: Serde,
    dataset: Dataset,
    *,
    run_id: str,
    label_delay: int,
    rate: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    options: ClientOptions | None = None,
    until: Callable[[], bool] | None = None,
) -> ReplayResult:
    """Send every row as a Confluent-framed Avro RawEvent and its label ``label_delay``
    events later; pace events at ``rate`` per second when given. Returns once every
    record is acknowledged by the broker.

    ``until`` (paced runs only) ends the run early: once it returns True no further event
    is sent, and the labels of the events already sent still go out."""
    if until is not None and not rate:
        raise ValueError("until= needs a paced replay (rate=)")
    if not rate:
        return await _burst(bootstrap, topics, serde, dataset, run_id, label_delay, on_progress, options)
    prod = producer(bootstrap, options=options)
    await start_client(prod, bootstrap)
    events = labels = 0
    started = time.time()
    pending: list[asyncio.Future[object]] = []
    stopped = False
    try:
        for kind, index, rec in schedule(dataset, run_id, label_delay):
            now_ms = int(time.time() * 1000)
            if kind == "event":
                if stopped or (until is not None and until()):
                    stopped = True
                    continue
                if rate:
                    ahead = started + events / rate - time.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                        now_ms = int(time.time() * 1000)
                value = serde.encode("RawEvent", {**rec, "event_time": now_ms, "ingest_time": None})
                pending.append(await prod.send(topics.name(EVENTS_RAW), key=rec["entity_id"].encode(), value=value))
                events += 1
                if on_progress and events % 500 == 0:
                    on_progress(events, len(dataset.rows))
            else:
                if stopped and index >= events:
                    continue
                value = serde.encode("Label", {**rec, "label_time": now_ms})
                pending.append(await prod.send(topics.name(LABELS_RAW), key=rec["entity_id"].encode(), value=value))
                labels += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await prod.stop()
    return ReplayResult(run_id, events, labels, started, time.time())


async def _burst(
    bootstrap: str,
    topics: Topics,
    serde: Serde,
    dataset: Dataset,
    run_id: str,
    label_delay: int,
    on_progress: Callable[[int, int], None] | None,
    options: ClientOptions | None,
) -> ReplayResult:
    """Unpaced: the schedule produced in record batches per partition, encoded as it goes.
    A send() per record was slower and took the CPU the services needed (README, Measured
    choices)."""
    started = time.time()
    counts = {"event": 0, "label": 0}

    def records() -> Iterator[tuple[str, bytes | None, bytes | None]]:
        for kind, _, rec in schedule(dataset, run_id, label_delay):
            counts[kind] += 1
            now_ms = int(time.time() * 1000)
            if kind == "event":
                value = serde.encode("RawEvent", {**rec, "event_time": now_ms, "ingest_time": None})
                yield topics.name(EVENTS_RAW), rec["entity_id"].encode(), value
            else:
                yield (
                    topics.name(LABELS_RAW),
                    rec["entity_id"].encode(),
                    serde.encode("Label", {**rec, "label_time": now_ms}),
                )

    await produce_batched(bootstrap, records(), options=options)
    if on_progress:
        on_progress(counts["event"], len(dataset.rows))
    return ReplayResult(run_id, counts["event"], counts["label"], started, time.time())


def replay_cli(args: argparse.Namespace) -> int:
    common = CommonSettings()
    dataset = read_csv(args.csv, args.target, args.entity, args.limit)
    run_id = uuid.uuid4().hex[:8]

    def progress(done: int, total: int) -> None:
        print(f"\rreplay {run_id}: {done}/{total} events", end="", file=sys.stderr, flush=True)

    result = asyncio.run(
        replay(
            common.bootstrap_servers,
            Topics(common.topic_prefix, common.partitions),
            Serde(FileSchemaRegistry(common.schema_dir)),
            dataset,
            run_id=run_id,
            label_delay=args.label_delay,
            rate=args.rate,
            on_progress=progress,
            options=client_options(common),
        )
    )
    secs = result.finished - result.started
    print(
        f"\rreplay {run_id}: sent {result.events_sent} events and {result.labels_sent} labels "
        f"in {secs:.1f} s ({result.events_sent / max(secs, 1e-9):.0f} events/s)",
        file=sys.stderr,
    )
    return 0
