"""The exactly-once checkpointer against a recording transactional producer: batches handled
while a task's transaction is in flight share its next one, the loop is held back only past
MAX_UNSETTLED owed batches, and a transaction that fails stops the service and is never
followed by another."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from driftloop.shared.errors import TransactionFailed
from driftloop.shared.kafka import OutRecord
from driftloop.shared.runtime.checkpoint import MAX_UNSETTLED, TransactionalCheckpointer
from driftloop.shared.runtime.service import Service
from driftloop.shared.settings import CommonSettings, FeaturesSettings

TOPIC = "driftloop.events.clean"


class _Builder:
    def __init__(self) -> None:
        self.values: list[bytes | None] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: int | None) -> object:
        self.values.append(value)
        return object()


class RecordingProducer:
    """What the checkpointer asks of aiokafka's transactional producer, recorded per
    transaction; ``gate`` holds every commit until it is set."""

    def __init__(self, transactional_id: str, gate: asyncio.Event, fail_commit: bool = False) -> None:
        self.transactional_id = transactional_id
        self.gate = gate
        self.fail_commit = fail_commit
        self.committed: list[tuple[list[bytes | None], dict[TopicPartition, int]]] = []
        self.aborted = 0
        self._open: tuple[list[bytes | None], dict[TopicPartition, int]] | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def begin_transaction(self) -> None:
        assert self._open is None, "a transaction began while another was open"
        self._open = ([], {})

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, builder: _Builder, topic: str, partition: int) -> asyncio.Future[Any]:
        assert self._open is not None, "sent outside a transaction"
        self._open[0].extend(builder.values)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        assert self._open is not None
        self._open[1].update(offsets)

    async def commit_transaction(self) -> None:
        assert self._open is not None
        await self.gate.wait()
        if self.fail_commit:
            raise RuntimeError("ProducerFenced")
        self.committed.append(self._open)
        self._open = None

    async def abort_transaction(self) -> None:
        self.aborted += 1
        self._open = None


def _checkpointer(
    gate: asyncio.Event, failures: list[BaseException], *, fail_commit: bool = False, interval_s: float = 0.0
) -> tuple[TransactionalCheckpointer, dict[str, RecordingProducer]]:
    svc = Service("features", FeaturesSettings(transaction_interval_s=interval_s), CommonSettings())
    producers: dict[str, RecordingProducer] = {}

    def make(transactional_id: str) -> Any:
        producers[transactional_id] = RecordingProducer(transactional_id, gate, fail_commit)
        return producers[transactional_id]

    return TransactionalCheckpointer(svc, make, failures.append), producers


def _batch(partition: int, n: int, offset: int) -> tuple[dict[int, list[OutRecord]], dict[TopicPartition, int]]:
    records: list[OutRecord] = [(TOPIC, b"k", f"{offset}-{i}".encode(), 0) for i in range(n)]
    return {partition: records}, {TopicPartition("driftloop.events.raw", partition): offset}


async def _batches_handled_during_a_transaction_share_the_next_one() -> None:
    gate, failures = asyncio.Event(), []
    cp, producers = _checkpointer(gate, failures)
    await cp.own({0})
    for offset in (10, 20, 30):
        # Each returns at once: the loop does not wait on the broker.
        await asyncio.wait_for(cp.checkpoint(*_batch(0, 2, offset), held=2), timeout=1)
    gate.set()
    await cp.settle_all()
    txns = producers["driftloop.features-0"].committed
    assert [offsets for _, offsets in txns] == [
        {TopicPartition("driftloop.events.raw", 0): 10},
        {TopicPartition("driftloop.events.raw", 0): 30},
    ]
    assert [values for values, _ in txns] == [[b"10-0", b"10-1"], [b"20-0", b"20-1", b"30-0", b"30-1"]]
    assert cp.processed == {TopicPartition("driftloop.events.raw", 0): 29}
    assert failures == []
    assert cp.svc.metrics.inflight_batches.labels("features")._value.get() == 0
    assert cp.svc.metrics.inflight_records.labels("features")._value.get() == 0


async def _each_task_commits_its_own_transactions() -> None:
    gate, failures = asyncio.Event(), []
    gate.set()
    cp, producers = _checkpointer(gate, failures)
    await cp.own({0, 1})
    by_task = {0: _batch(0, 1, 5)[0][0], 1: _batch(1, 1, 7)[0][1]}
    offsets = {TopicPartition("driftloop.events.raw", 0): 5, TopicPartition("driftloop.events.raw", 1): 7}
    await cp.checkpoint(by_task, offsets, held=2)
    await cp.settle_all()
    assert producers["driftloop.features-0"].committed == [([b"5-0"], {TopicPartition("driftloop.events.raw", 0): 5})]
    assert producers["driftloop.features-1"].committed == [([b"7-0"], {TopicPartition("driftloop.events.raw", 1): 7})]


async def _the_loop_is_held_back_past_max_unsettled_owed_batches() -> None:
    gate, failures = asyncio.Event(), []
    cp, _ = _checkpointer(gate, failures)
    await cp.own({0})
    full = cp.svc.settings.batch_size
    # MAX_UNSETTLED full batches not yet committed (the first in flight, the others owed) do
    # not hold the loop back; one more does.
    for offset in range(1, MAX_UNSETTLED + 1):
        await asyncio.wait_for(cp.checkpoint(*_batch(0, 1, offset), held=full), timeout=1)
    held_back = asyncio.create_task(cp.checkpoint(*_batch(0, 1, 99), held=full))
    await asyncio.sleep(0.05)
    assert not held_back.done(), "more than MAX_UNSETTLED full batches in flight did not hold the loop back"
    gate.set()
    await asyncio.wait_for(held_back, timeout=1)
    await cp.settle_all()
    assert cp.processed == {TopicPartition("driftloop.events.raw", 0): 98}


async def _small_batches_do_not_hold_the_loop_back_while_a_transaction_is_in_flight() -> None:
    gate, failures = asyncio.Event(), []
    cp, producers = _checkpointer(gate, failures)
    await cp.own({0})
    for offset in range(1, 41):  # a paced stream: many batches of a few records
        await asyncio.wait_for(cp.checkpoint(*_batch(0, 1, offset), held=3), timeout=1)
    gate.set()
    await cp.settle_all()
    assert len(producers["driftloop.features-0"].committed) == 2
    assert cp.processed == {TopicPartition("driftloop.events.raw", 0): 39}


async def _a_failed_transaction_stops_the_service_and_no_other_follows() -> None:
    gate, failures = asyncio.Event(), []
    gate.set()
    cp, producers = _checkpointer(gate, failures, fail_commit=True)
    await cp.own({0})
    await cp.checkpoint(*_batch(0, 1, 1), held=1)
    await cp.settle_all()
    assert len(failures) == 1 and isinstance(failures[0], TransactionFailed)
    assert producers["driftloop.features-0"].aborted == 1
    with pytest.raises(TransactionFailed):
        await cp.checkpoint(*_batch(0, 1, 2), held=1)
    assert producers["driftloop.features-0"].committed == []
    assert cp.processed == {}


async def _a_partition_not_owned_here_fails_the_batch() -> None:
    gate, failures = asyncio.Event(), []
    cp, _ = _checkpointer(gate, failures)
    await cp.own({0})
    with pytest.raises(TransactionFailed, match="not owned here"):
        await cp.checkpoint(*_batch(3, 1, 1), held=1)
    assert len(failures) == 1


async def _a_task_begins_a_transaction_at_most_every_interval() -> None:
    gate, failures = asyncio.Event(), []
    gate.set()
    cp, producers = _checkpointer(gate, failures, interval_s=0.2)
    await cp.own({0})
    await cp.checkpoint(*_batch(0, 1, 1), held=1)
    await asyncio.sleep(0)  # the first transaction begins at once
    for offset in (2, 3):
        await cp.checkpoint(*_batch(0, 1, offset), held=1)
    await cp.settle_all()
    # Batches 2 and 3 came within the interval: they share one transaction.
    assert [values for values, _ in producers["driftloop.features-0"].committed] == [[b"1-0"], [b"2-0", b"3-0"]]


async def _disown_waits_for_the_transaction_in_flight() -> None:
    gate, failures = asyncio.Event(), []
    cp, producers = _checkpointer(gate, failures)
    await cp.own({0})
    await cp.checkpoint(*_batch(0, 1, 1), held=1)
    disowning = asyncio.create_task(cp.disown({0}))
    await asyncio.sleep(0.05)
    assert not disowning.done()
    gate.set()
    await asyncio.wait_for(disowning, timeout=1)
    assert len(producers["driftloop.features-0"].committed) == 1


def test_batches_handled_during_a_transaction_share_the_next_one() -> None:
    asyncio.run(_batches_handled_during_a_transaction_share_the_next_one())


def test_each_task_commits_its_own_transactions() -> None:
    asyncio.run(_each_task_commits_its_own_transactions())


def test_the_loop_is_held_back_past_max_unsettled_owed_batches() -> None:
    asyncio.run(_the_loop_is_held_back_past_max_unsettled_owed_batches())


def test_a_failed_transaction_stops_the_service_and_no_other_follows() -> None:
    asyncio.run(_a_failed_transaction_stops_the_service_and_no_other_follows())


def test_a_partition_not_owned_here_fails_the_batch() -> None:
    asyncio.run(_a_partition_not_owned_here_fails_the_batch())


def test_a_task_begins_a_transaction_at_most_every_interval() -> None:
    asyncio.run(_a_task_begins_a_transaction_at_most_every_interval())


def test_disown_waits_for_the_transaction_in_flight() -> None:
    asyncio.run(_disown_waits_for_the_transaction_in_flight())


def test_small_batches_do_not_hold_the_loop_back_while_a_transaction_is_in_flight() -> None:
    asyncio.run(_small_batches_do_not_hold_the_loop_back_while_a_transaction_is_in_flight())
