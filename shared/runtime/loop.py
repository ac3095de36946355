"""The batch loop: fetch the next records of every source partition, skip what cannot be
decoded, hand the rest to the dispatcher and the batch to the checkpointer."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import IllegalStateError

from driftloop.shared import poison
from driftloop.shared.runtime.checkpoint import ByTask, Checkpointing, changelog_records
from driftloop.shared.runtime.dispatch import Dispatcher
from driftloop.shared.runtime.service import Service

# Prefetched input per partition (aiokafka's default is 1 MB): a service behind its input
# holds at most this times its partitions.
MAX_PARTITION_FETCH_BYTES = 256 * 1024
# How long one fetch of the poison-batch isolation may wait for its partition's records.
POISON_FETCH_TIMEOUT_MS = 10_000

Batches = dict[TopicPartition, list[ConsumerRecord]]


class BatchLoop:
    def __init__(
        self,
        svc: Service[Any],
        consumer: AIOKafkaConsumer,
        checkpointer: Checkpointing,
        stopping: asyncio.Event,
    ) -> None:
        self.svc = svc
        self.consumer = consumer
        self.checkpointer = checkpointer
        self.dispatcher = Dispatcher(svc)
        self.stopping = stopping
        #: Held while a batch is handled: a rebalance waits for the batch in hand.
        self.batch_lock = asyncio.Lock()
        #: Next offset after the last record handed to the handlers (or past the last skipped
        #: poison batch), per partition since it was assigned.
        self.fetched_to: dict[TopicPartition, int] = {}
        self._frozen = False  # start-up's objects handed to gc.freeze() (after the first batch)
        self._batch_seconds = svc.metrics.batch_seconds.labels(svc.name)

    async def run(self, state_ready: asyncio.Event) -> None:
        window_ms = int(self.svc.settings.batch_window_s * 1000)
        while not self.stopping.is_set():
            batches, skipped = await self._fetch(window_ms)
            if not batches and skipped is None:
                continue
            await state_ready.wait()
            async with self.batch_lock:
                # Records fetched before a rebalance may belong to partitions given away meanwhile.
                assigned = self.consumer.assignment()
                # Never below where a partition starts here (start_at_committed) or what was
                # handed already.
                unseen = {tp: self._unseen(tp, rs) for tp, rs in batches.items() if tp in assigned}
                batches = {tp: rs for tp, rs in unseen.items() if rs}
                if skipped is not None and skipped.tp not in assigned:
                    skipped = None  # its new owner meets the batch and skips it
                for tp, rs in batches.items():
                    # Never backwards: past a skipped poison batch stays past it.
                    self.fetched_to[tp] = max(self.fetched_to.get(tp, 0), rs[-1].offset + 1)
                if skipped is not None:
                    self.fetched_to[skipped.tp] = skipped.batch.last + 1
                if batches or skipped is not None:
                    await self._process(batches, skipped)
                    if not self._frozen:
                        self._frozen = True
                        # What start-up built (modules, schemas, the first model, recovered
                        # state) lives as long as the process: out of the collector's sight,
                        # a full collection no longer walks it and holds up the event loop
                        # (and inference's HTTP requests) for less.
                        gc.freeze()
        for hook in self.svc.shutdown_hooks:
            await hook()
        await self.checkpointer.settle_all()
        self.svc.log.info("service_stopping", processed_partitions=len(self.checkpointer.processed))

    def _unseen(self, tp: TopicPartition, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        start = self.fetched_to.get(tp, 0)
        return records if not records or records[0].offset >= start else [r for r in records if r.offset >= start]

    def forget(self) -> None:
        """Partitions are moving: what was handed here no longer bounds what comes next."""
        self.fetched_to.clear()

    async def start_at_committed(self, partitions: set[TopicPartition]) -> None:
        """Hand nothing of these newly assigned partitions below their committed offsets.

        aiokafka fetches the committed offsets of an assignment at once, beside the rebalance
        listener, and its OffsetFetch (v3) does not wait for a transactional commit still
        being completed: the previous owner's last transaction can be committed while its
        offsets read back older, and its records would be handled again. Read after the
        partitions' transactional producers started (InitProducerId returns only once their
        previous transactions completed), the offsets are the settled ones."""
        offsets = await asyncio.gather(*(self.consumer.committed(tp) for tp in partitions))
        for tp, committed in zip(partitions, offsets, strict=True):
            if committed is not None:
                self.fetched_to[tp] = max(self.fetched_to.get(tp, 0), committed)

    async def _process(self, batches: Batches, skipped: poison.Isolated | None) -> None:
        started = time.perf_counter()
        offsets: dict[TopicPartition, int] = {}
        outbox = self.svc.outbox
        # What each task (input partition) owes: under exactly-once, its own transaction.
        by_task: ByTask = {}
        for tp, records in batches.items():
            await self.dispatcher.handle_all(tp.topic, records)
            owed = by_task.setdefault(tp.partition, [])
            owed.extend(outbox)
            outbox.clear()
            owed.extend(changelog_records(self.svc.stores))
            offsets[tp] = records[-1].offset + 1
        if skipped is not None:
            # Its dead letter goes out with the batch's output; its offsets commit with them.
            by_task.setdefault(skipped.tp.partition, []).append(self.svc.dead_letters.poison_letter(skipped))
            offsets[skipped.tp] = max(offsets.get(skipped.tp, 0), skipped.batch.last + 1)
        held = sum(len(records) for records in batches.values())
        await self.checkpointer.checkpoint(by_task, offsets, held)
        self._batch_seconds.observe(time.perf_counter() - started)

    async def _fetch(self, window_ms: int) -> tuple[Batches, poison.Isolated | None]:
        """The next records, and the poison batch skipped to get them if there was one."""
        try:
            return await self.consumer.getmany(timeout_ms=window_ms, max_records=self.svc.settings.batch_size), None
        except Exception as exc:
            # aiokafka raises whatever decoding a fetched batch raised; what no batch raises is raised again.
            if not poison.may_be_poison(exc):
                raise
            try:
                found = await self._isolate_poison()
            except IllegalStateError as moved:
                # The group rebalanced meanwhile: positions restart from the committed offsets,
                # and a poison batch still ahead raises again.
                self.svc.log.warning("poison_isolation_interrupted", error=str(moved)[:200])
                return {}, None
            if found is None:
                raise
            return found.records, found

    async def _isolate_poison(self) -> poison.Isolated | None:
        """After ``getmany()`` failed to decode a batch: find the batch and move the consumer
        past it (shared/poison.py); None if no batch raises."""
        svc = self.svc
        client = AIOKafkaClient(
            bootstrap_servers=svc.common.bootstrap_servers, client_id=f"{svc.group_id}-poison", **svc.kafka_options
        )
        max_wait_ms = svc.settings.fetch_max_wait_ms or svc.common.effective_fetch_max_wait_ms

        async def read(tp: TopicPartition, offset: int) -> bytes:
            return await poison.read_log(client, tp, offset, MAX_PARTITION_FETCH_BYTES, max_wait_ms)

        try:
            await client.bootstrap()
            return await poison.isolate(self.consumer, self.fetched_to, read, POISON_FETCH_TIMEOUT_MS)
        finally:
            await client.close()
