"""Checkpointing: a batch's output and changelog records go out together, and its input
offsets are committed only once all of them are delivered (at-least-once).

The next batch is handled while this one's output is on its way; at most MAX_UNSETTLED
batches are in flight, then the loop waits. Offsets are committed at most every
``commit_interval_s`` (and whenever a service stops or gives partitions away): a commit
per batch would be a third of the requests a service sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from driftloop.shared.errors import ProduceFailed
from driftloop.shared.kafka import Partitioner, send_batched
from driftloop.shared.runtime.service import Service

MAX_UNSETTLED = 4  # batches handled but not yet delivered and committed


class Checkpointer:
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
        self._outbox = svc.outbox
        self._partitioner = Partitioner()
        self._partition_counts: dict[str, int] = {}
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

    async def checkpoint(self, offsets: dict[TopicPartition, int], held: int) -> None:
        """Send the batch's output and changelog records; its ``offsets`` (next offset per
        partition) commit once they and every batch before are delivered."""
        self._queue_changelogs()
        deliveries = await self._produce_outbox()
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

    def _queue_changelogs(self) -> None:
        for store in self.svc.stores:
            for partition, key, value in store.drain():
                data = None if value is None else orjson.dumps(value)
                self._outbox.append((store.name, key.encode(), data, partition))

    async def _produce_outbox(self) -> list[asyncio.Future[Any]]:
        """Produce the queued records as one record batch per topic partition; a failed
        delivery stops the service before the batch is committed, so its input is consumed
        again after the restart."""
        if not self._outbox:
            return []
        outbox = self._outbox[:]
        self._outbox.clear()
        deliveries = await send_batched(self.producer, outbox, self._partitions_of, self._partitioner)
        for topic, n in Counter(topic for topic, _, _, _ in outbox).items():
            self.svc.count_out(topic, n)
        return deliveries

    async def _partitions_of(self, topic: str) -> int:
        n = self._partition_counts.get(topic)
        if n is None:
            n = self._partition_counts[topic] = len(await self.producer.partitions_for(topic))
        return n

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
