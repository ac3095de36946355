"""A newly assigned partition is handled from its committed offset as read once its
transactional producer started (shared/runtime/loop.py ``start_at_committed``): records that
aiokafka fetched from an older offset, read beside the rebalance while the previous owner's
last transaction was still completing, are not handled a second time."""

from __future__ import annotations

import asyncio
import gc

from aiokafka import ConsumerRecord, TopicPartition

from driftloop.shared.runtime.checkpoint import ByTask
from driftloop.shared.runtime.context import Context
from driftloop.shared.runtime.loop import BatchLoop
from driftloop.shared.runtime.service import Service
from driftloop.shared.settings import CommonSettings, FeaturesSettings
from driftloop.shared.topics import EVENTS_CLEAN

TOPIC = "driftloop.events.clean"
TP = TopicPartition(TOPIC, 0)


def _records(first: int, last: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(TOPIC, 0, o, 0, 0, None, str(o).encode(), None, 0, len(str(o)), ())
        for o in range(first, last + 1)
    ]


class FakeConsumer:
    """Hands out the given fetches in turn, then stops the loop."""

    def __init__(self, committed: int | None, fetches: list[list[ConsumerRecord]], stopping: asyncio.Event) -> None:
        self._committed = committed
        self.fetches = fetches
        self.stopping = stopping

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def committed(self, tp: TopicPartition) -> int | None:
        assert tp == TP
        return self._committed

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        if self.fetches:
            return {TP: self.fetches.pop(0)}
        self.stopping.set()
        return {}


class RecordingCheckpointer:
    def __init__(self) -> None:
        self.processed: dict[TopicPartition, int] = {}
        self.offsets: list[dict[TopicPartition, int]] = []
        self.held: list[int] = []

    async def own(self, partitions: set[int]) -> None:
        return None

    async def disown(self, partitions: set[int]) -> None:
        return None

    async def checkpoint(self, by_task: ByTask, offsets: dict[TopicPartition, int], held: int) -> None:
        self.offsets.append(dict(offsets))
        self.held.append(held)

    async def commit_if_due(self) -> None:
        return None

    async def settle_all(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _loop(committed: int | None, fetches: list[list[ConsumerRecord]]) -> tuple[BatchLoop, FakeConsumer, list[int]]:
    """A loop over a fake consumer whose handler records each record's offset."""
    svc = Service("features", FeaturesSettings(), CommonSettings())
    handled: list[int] = []

    async def handle(offset: int, ctx: Context) -> None:
        handled.append(offset)

    svc.on(EVENTS_CLEAN, handle, decode=lambda r: int(r.value))
    stopping = asyncio.Event()
    consumer = FakeConsumer(committed, fetches, stopping)
    return BatchLoop(svc, consumer, RecordingCheckpointer(), stopping), consumer, handled  # type: ignore[arg-type]


async def _assigned_and_run(loop: BatchLoop) -> None:
    await loop.start_at_committed({TP})
    ready = asyncio.Event()
    ready.set()
    await loop.run(ready)


async def _run(committed: int | None, fetches: list[list[ConsumerRecord]]) -> tuple[list[int], RecordingCheckpointer]:
    loop, _, handled = _loop(committed, fetches)
    await _assigned_and_run(loop)
    assert isinstance(loop.checkpointer, RecordingCheckpointer)
    return handled, loop.checkpointer


def test_records_fetched_below_the_committed_offset_are_not_handled_again() -> None:
    # Fetched from offset 3 (the older offset) while the partition's offsets were committed up to 7.
    handled, checkpointer = asyncio.run(_run(7, [_records(3, 5), _records(6, 9), _records(10, 11)]))
    assert handled == [7, 8, 9, 10, 11]
    # A fetch wholly below it is no batch at all; the others commit exactly past what they handled.
    assert checkpointer.offsets == [{TP: 10}, {TP: 12}]
    assert checkpointer.held == [3, 2]


def test_a_refetch_of_what_was_handled_is_skipped() -> None:
    handled, _ = asyncio.run(_run(0, [_records(0, 4), _records(2, 6)]))
    assert handled == [0, 1, 2, 3, 4, 5, 6]


def test_a_partition_with_no_committed_offset_starts_at_its_first_record() -> None:
    handled, _ = asyncio.run(_run(None, [_records(0, 2)]))
    assert handled == [0, 1, 2]


def test_after_a_rebalance_the_partition_starts_again_from_its_committed_offset() -> None:
    async def scenario() -> list[int]:
        loop, consumer, handled = _loop(5, [_records(5, 9)])
        await _assigned_and_run(loop)
        # The partition moved away and back: its new start is its committed offset then, lower
        # than what this instance handled before (another owner went on from there).
        loop.forget()
        consumer._committed = 8
        consumer.fetches = [_records(8, 10)]
        loop.stopping.clear()
        await _assigned_and_run(loop)
        return handled

    assert asyncio.run(scenario()) == [5, 6, 7, 8, 9, 8, 9, 10]


def test_start_ups_objects_are_frozen_after_the_first_batch_only() -> None:
    gc.unfreeze()
    try:

        async def scenario() -> tuple[int, int]:
            loop, consumer, _ = _loop(None, [])
            await _assigned_and_run(loop)  # no batch: nothing frozen yet
            before = gc.get_freeze_count()
            consumer.fetches = [_records(0, 2)]
            loop.stopping.clear()
            await _assigned_and_run(loop)
            return before, gc.get_freeze_count()

        before, after = asyncio.run(scenario())
        assert before == 0
        assert after > 1000  # modules, schemas, the service: what start-up built
    finally:
        gc.unfreeze()
