"""Checkpointing: what a batch owes the broker (its output, its changelog records, its input
offsets), with one of two guarantees.

- ``Checkpointer`` (at-least-once): the output and changelog records go out together, and
  the input offsets are committed only once all of them are delivered. The next batch is
  handled while this one's output is on its way; at most MAX_UNSETTLED batches are in
  flight, then the loop waits. Offsets are committed at most every ``commit_interval_s``
  (and whenever a service stops or gives partitions away): a commit per batch would be a
  third of the requests a service sends.
- ``TransactionalCheckpointer`` (exactly-once): each input partition is a task with a
  transactional producer of its own (transactional id ``<group>-<partition>``). A batch's
  records from task p, their changelog records and p's input offsets commit in one Kafka
  transaction (``send_offsets_to_transaction``), so a read_committed reader sees all of it
  or none. Whoever owns partition p next starts its producer under the same transactional
  id, which fences the previous owner (a zombie after a rebalance, or the process before a
  restart) and aborts what it left open. aiokafka commits offsets in a transaction without
  the group's generation (TxnOffsetCommit v0), so a transactional id per instance would
  not fence a zombie across a rebalance; one per partition does.
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


class TransactionalCheckpointer:
    """Exactly-once (see the module docstring): one transaction per task and batch."""

    def __init__(
        self,
        svc: Service[Any],
        make_producer: Callable[[str], AIOKafkaProducer],
        fail: Callable[[BaseException], None],
    ) -> None:
        self.svc = svc
        self._make_producer = make_producer
        self._fail = fail
        self._producers: dict[int, AIOKafkaProducer] = {}
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
        for p in sorted(partitions - set(self._producers)):
            producer = self._make_producer(self.transactional_id(p))
            await producer.start()
            self._producers[p] = producer
            started.append(p)
        if started:
            self.svc.log.info("transactional_producers_started", partitions=started)

    async def disown(self, partitions: set[int]) -> None:
        for p in sorted(partitions & set(self._producers)):
            producer = self._producers.pop(p)
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()

    async def close(self) -> None:
        await self.disown(set(self._producers))

    async def checkpoint(self, by_task: ByTask, offsets: dict[TopicPartition, int], held: int) -> None:
        tasks = sorted({tp.partition for tp in offsets} | set(by_task))
        self._inflight_batches.inc()
        self._inflight_records.inc(held)
        try:
            results = await asyncio.gather(
                *(
                    self._commit(p, by_task.get(p, []), {tp: o for tp, o in offsets.items() if tp.partition == p})
                    for p in tasks
                ),
                return_exceptions=True,
            )
        finally:
            self._inflight_batches.dec()
            self._inflight_records.dec(held)
        failed = [(p, r) for p, r in zip(tasks, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            self._transactions.labels(self.svc.name, "aborted").inc(len(failed))
            p, cause = failed[0]
            exc = TransactionFailed(f"the transaction of partition {p} did not commit: {cause!r}")
            self.svc.log.error("transaction_failed", partitions=[q for q, _ in failed], error=repr(cause)[:300])
            self._fail(exc)
            raise exc from cause
        for tp, nxt in offsets.items():
            self.processed[tp] = nxt - 1
        for records in by_task.values():
            for topic, n in Counter(topic for topic, _, _, _ in records).items():
                self.svc.count_out(topic, n)
        self._transactions.labels(self.svc.name, "committed").inc(len(tasks))

    async def _commit(self, partition: int, records: list[OutRecord], offsets: dict[TopicPartition, int]) -> None:
        producer = self._producers.get(partition)
        if producer is None:
            raise TransactionFailed(f"partition {partition} has no transactional producer: it is not owned here")
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

    async def commit_if_due(self) -> None:
        return None  # every batch commits its own transactions

    async def settle_all(self) -> None:
        return None  # nothing is left pending between batches
