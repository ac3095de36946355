"""Checkpointing: what a batch owes the broker (its output, its changelog records, its input
offsets), with one of two guarantees.

- ``Checkpointer`` (at-least-once): the output and changelog records go out together, and
  the input offsets are committed only once all of them are delivered. The next batch is
  handled while this one's output is on its way; at most MAX_UNSETTLED batches are in
  flight, then the loop waits. Offsets are committed at most every ``commit_interval_s``
  (and whenever a service stops or gives partitions away): a commit per batch would be a
  third of the requests a service sends.
- ``TransactionalCheckpointer`` (exactly-once): each input partition is a task with a
  transactional producer of its own (transactional id ``<group>-<partition>``). The
  records a batch owes from task p, their changelog records and p's input offsets commit in
  one Kafka transaction (``send_offsets_to_transaction``), so a read_committed reader sees
  all of it or none; the batches handled while a task's transaction is in flight share its
  next one, so the loop does not wait on the broker. Whoever owns partition p next starts
  its producer under the same transactional id, which fences the previous owner (a zombie
  after a rebalance, or the process before a restart) and aborts what it left open.
  aiokafka commits offsets in a transaction without the group's generation (TxnOffsetCommit
  v0), so a transactional id per instance would not fence a zombie across a rebalance; one
  per partition does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from driftloop.shared.errors import ProduceFailed, TransactionFailed
from driftloop.shared.kafka import OutRecord, Partitioner, send_batched
from driftloop.shared.runtime.service import Service
from driftloop.shared.state import StateStore

MAX_UNSETTLED = 4  # batches handled but not yet delivered and committed
#: Under exactly-once, batches not yet committed whatever their size (see _held_back).
MAX_UNSETTLED_BATCHES = 64
#: What a batch owes, by task (input partition): its output and changelog records.
ByTask = dict[int, list[OutRecord]]


class PartitionCounts:
    """Partitions per topic, asked of the broker once: where a keyed record goes."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def of(self, producer: AIOKafkaProducer) -> Callable[[str], Awaitable[int]]:
        async def count(topic: str) -> int:
            n = self._counts.get(topic)
            if n is None:
                n = self._counts[topic] = len(await producer.partitions_for(topic))
            return n

        return count


def changelog_records(stores: list[StateStore]) -> list[OutRecord]:
    """The changelog records the stores owe since they were last drained."""
    out: list[OutRecord] = []
    for store in stores:
        for partition, key, value in store.drain():
            out.append((store.name, key.encode(), None if value is None else orjson.dumps(value), partition))
    return out


class Checkpointing(Protocol):
    #: Last offset checkpointed per input partition (the consumer lag is counted from it).
    processed: dict[TopicPartition, int]

    async def own(self, partitions: set[int]) -> None:
        """Before the state of newly assigned partitions is recovered."""

    async def disown(self, partitions: set[int]) -> None:
        """After revoked partitions' batches are settled."""

    async def checkpoint(self, by_task: ByTask, offsets: dict[TopicPartition, int], held: int) -> None: ...

    async def commit_if_due(self) -> None: ...

    async def settle_all(self) -> None: ...

    async def close(self) -> None: ...


class Checkpointer:
    """At-least-once (see the module docstring)."""

    def __init__(
        self,
        svc: Service[Any],
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        fail: Callable[[BaseException], None],
    ) -> None:
        self.svc = svc
        self.producer = producer
        self.consumer = consumer
        self._fail = fail
        self._partitioner = Partitioner()
        self._partition_counts = PartitionCounts()
        self._unsettled: deque[asyncio.Task[None]] = deque()
        #: Next offsets whose batches are delivered but not yet committed.
        self._delivered: dict[TopicPartition, int] = {}
        #: Last offset delivered per partition (the consumer lag is counted from it).
        self.processed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._last_commit = 0.0
        m = svc.metrics
        self._inflight_batches = m.inflight_batches.labels(svc.name)
        self._inflight_records = m.inflight_records.labels(svc.name)

    async def own(self, partitions: set[int]) -> None:
        return None

    async def disown(self, partitions: set[int]) -> None:
        return None

    async def close(self) -> None:
        return None

    async def checkpoint(self, by_task: ByTask, offsets: dict[TopicPartition, int], held: int) -> None:
        """Send the batch's output and changelog records; its ``offsets`` (next offset per
        partition) commit once they and every batch before are delivered."""
        deliveries = await self._produce([r for records in by_task.values() for r in records])
        previous = self._unsettled[-1] if self._unsettled else None
        settle = asyncio.create_task(self._settle(previous, deliveries, offsets))
        self._inflight_batches.inc()
        self._inflight_records.inc(held)

        def settled(_: asyncio.Task[None]) -> None:
            self._inflight_batches.dec()
            self._inflight_records.dec(held)

        settle.add_done_callback(settled)
        self._unsettled.append(settle)
        while len(self._unsettled) > MAX_UNSETTLED or (self._unsettled and self._unsettled[0].done()):
            await self._unsettled.popleft()

    async def _produce(self, outbox: list[OutRecord]) -> list[asyncio.Future[Any]]:
        """Produce the records as one record batch per topic partition; a failed delivery
        stops the service before the batch is committed, so its input is consumed again
        after the restart."""
        if not outbox:
            return []
        deliveries = await send_batched(
            self.producer, outbox, self._partition_counts.of(self.producer), self._partitioner
        )
        for topic, n in Counter(topic for topic, _, _, _ in outbox).items():
            self.svc.count_out(topic, n)
        return deliveries

    async def _settle(
        self,
        previous: asyncio.Task[None] | None,
        deliveries: list[asyncio.Future[Any]],
        offsets: dict[TopicPartition, int],
    ) -> None:
        if previous is not None:
            await previous  # commits go in batch order
        for result in await asyncio.gather(*deliveries, return_exceptions=True):
            if isinstance(result, BaseException):
                exc = ProduceFailed(f"output not delivered: {result!r}")
                self._fail(exc)
                raise exc from result
        self._delivered.update(offsets)
        for tp, nxt in offsets.items():
            self.processed[tp] = nxt - 1
        await self.commit_if_due()

    async def commit_if_due(self) -> None:
        # Also a timer: what the last batches delivered, once the stream goes quiet between them.
        if self._delivered and time.monotonic() - self._last_commit >= self.svc.settings.commit_interval_s:
            await self.commit_delivered()

    async def commit_delivered(self) -> None:
        """Commit the offsets of every batch delivered so far."""
        async with self._commit_lock:
            offsets, self._delivered = self._delivered, {}
            self._last_commit = time.monotonic()
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group rebalanced under these batches: their records are redelivered to
                # their next owner, and every consumer of our output is idempotent on event_id.
                self.svc.log.warning("commit_failed", error=str(exc)[:200], partitions=len(offsets))

    async def settle_all(self) -> None:
        """Wait until every handled batch is delivered and committed (before partitions move
        and before the service stops)."""
        while self._unsettled:
            with contextlib.suppress(ProduceFailed):
                await self._unsettled.popleft()
        await self.commit_delivered()


class _Batch:
    """One batch's share of the in-flight gauges, released once every task it touched committed."""

    def __init__(self, checkpointer: TransactionalCheckpointer, held: int, tasks: int) -> None:
        self._checkpointer, self.held, self.waiting = checkpointer, held, tasks
        checkpointer.unsettled += 1
        checkpointer.unsettled_records += held
        checkpointer._inflight_batches.inc()
        checkpointer._inflight_records.inc(held)
        if tasks == 0:
            self.waiting = 1
            self.committed()

    def committed(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self._checkpointer.unsettled -= 1
            self._checkpointer.unsettled_records -= self.held
            self._checkpointer._inflight_batches.dec()
            self._checkpointer._inflight_records.dec(self.held)


class _Task:
    """One input partition under exactly-once: its transactional producer, what its batches
    owe that no transaction has taken yet, and the transaction in flight."""

    def __init__(self, partition: int, producer: AIOKafkaProducer) -> None:
        self.partition = partition
        self.producer = producer
        self.records: list[OutRecord] = []
        self.offsets: dict[TopicPartition, int] = {}
        self.batches: list[_Batch] = []
        self.flight: asyncio.Task[None] | None = None
        self.began = 0.0  # monotonic time the last transaction began

    def take(self) -> tuple[list[OutRecord], dict[TopicPartition, int], list[_Batch]]:
        owed = self.records, self.offsets, self.batches
        self.records, self.offsets, self.batches = [], {}, []
        return owed


class TransactionalCheckpointer:
    """Exactly-once (see the module docstring). Each task has at most one transaction in
    flight, and the loop goes on to the next batch meanwhile; a task begins a transaction at
    most every ``transaction_interval_s``, and what the batches handled meanwhile owe goes into
    its next one. A busy task commits fewer, larger transactions; a quiet one, one per batch.
    Past MAX_UNSETTLED full batches' worth of input records that some task has not committed
    yet, the loop waits."""

    def __init__(
        self,
        svc: Service[Any],
        make_producer: Callable[[str], AIOKafkaProducer],
        fail: Callable[[BaseException], None],
    ) -> None:
        self.svc = svc
        self._make_producer = make_producer
        self._fail = fail
        self._tasks: dict[int, _Task] = {}
        self._failure: TransactionFailed | None = None
        #: Batches some task has not committed yet, and the input records they hold.
        self.unsettled = 0
        self.unsettled_records = 0
        #: Set whenever a transaction ends (committed or not): a loop held back waits on it.
        self._progress = asyncio.Event()
        self._partitioner = Partitioner()
        self._partition_counts = PartitionCounts()
        self.processed: dict[TopicPartition, int] = {}
        m = svc.metrics
        self._inflight_batches = m.inflight_batches.labels(svc.name)
        self._inflight_records = m.inflight_records.labels(svc.name)
        self._transactions = m.transactions

    def transactional_id(self, partition: int) -> str:
        return f"{self.svc.group_id}-{partition}"

    async def own(self, partitions: set[int]) -> None:
        # Starting the producer (InitProducerId) fences the partition's previous owner and
        # aborts what it left open, so the changelogs read next hold committed records only.
        started = []
        for p in sorted(partitions - set(self._tasks)):
            producer = self._make_producer(self.transactional_id(p))
            await producer.start()
            self._tasks[p] = _Task(p, producer)
            started.append(p)
        if started:
            self.svc.log.info("transactional_producers_started", partitions=started)

    async def disown(self, partitions: set[int]) -> None:
        for p in sorted(partitions & set(self._tasks)):
            task = self._tasks.pop(p)
            if task.flight is not None:
                await asyncio.gather(task.flight, return_exceptions=True)
            with contextlib.suppress(KafkaError, OSError):
                await task.producer.stop()

    async def close(self) -> None:
        await self.disown(set(self._tasks))

    async def checkpoint(self, by_task: ByTask, offsets: dict[TopicPartition, int], held: int) -> None:
        self._raise_if_failed()
        partitions = sorted({tp.partition for tp in offsets} | set(by_task))
        missing = [p for p in partitions if p not in self._tasks]
        if missing:
            cause = TransactionFailed(f"partition {missing[0]} has no transactional producer: it is not owned here")
            self._failed(missing, cause)
            self._raise_if_failed()
        batch = _Batch(self, held, len(partitions))
        for p in partitions:
            task = self._tasks[p]
            task.records.extend(by_task.get(p, []))
            task.offsets.update((tp, o) for tp, o in offsets.items() if tp.partition == p)
            task.batches.append(batch)
            if task.flight is None or task.flight.done():
                task.flight = asyncio.create_task(self._transact(task))
        while self._held_back() and self._failure is None:
            self._progress.clear()
            await self._progress.wait()
        self._raise_if_failed()

    def _held_back(self) -> bool:
        # Bounded by records, as many as MAX_UNSETTLED full batches: a paced stream's batches
        # are small, and a bound by their count would let a task's transaction interval
        # throttle the loop.
        limit = MAX_UNSETTLED * self.svc.settings.batch_size
        return self.unsettled_records > limit or self.unsettled > MAX_UNSETTLED_BATCHES

    async def _transact(self, task: _Task) -> None:
        """Commit what the task owes, a transaction at a time, until it owes nothing. It never
        raises: a failure is recorded, stops the service, and fails the next checkpoint."""
        interval = self.svc.settings.transaction_interval_s
        while task.batches and self._failure is None:
            wait = task.began + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            task.began = time.monotonic()
            records, offsets, batches = task.take()
            try:
                await self._commit(task.producer, records, offsets)
            except BaseException as exc:  # recorded, and raised by the next checkpoint()
                self._failed([task.partition], exc)
                self._progress.set()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            for tp, nxt in offsets.items():
                self.processed[tp] = max(self.processed.get(tp, -1), nxt - 1)
            for topic, n in Counter(topic for topic, _, _, _ in records).items():
                self.svc.count_out(topic, n)
            self._transactions.labels(self.svc.name, "committed").inc()
            for batch in batches:
                batch.committed()
            self._progress.set()

    async def _commit(
        self, producer: AIOKafkaProducer, records: list[OutRecord], offsets: dict[TopicPartition, int]
    ) -> None:
        await producer.begin_transaction()
        try:
            if records:
                deliveries = await send_batched(
                    producer, records, self._partition_counts.of(producer), self._partitioner
                )
                await asyncio.gather(*deliveries)
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.svc.group_id)
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise

    def _failed(self, partitions: list[int], cause: BaseException) -> None:
        self._transactions.labels(self.svc.name, "aborted").inc()
        if self._failure is not None:
            return
        exc = TransactionFailed(f"the transaction of partition {partitions[0]} did not commit: {cause!r}")
        exc.__cause__ = cause
        self._failure = exc
        self.svc.log.error("transaction_failed", partitions=partitions, error=repr(cause)[:300])
        self._fail(exc)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def commit_if_due(self) -> None:
        return None  # a task commits as soon as its previous transaction ends

    async def settle_all(self) -> None:
        """Wait until every task's transactions have ended (before partitions move and
        before the service stops)."""
        flights = [t.flight for t in self._tasks.values() if t.flight is not None]
        await asyncio.gather(*flights, return_exceptions=True)
