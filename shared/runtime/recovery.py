"""Rebalances and state recovery: a worker owns exactly the state of the source partitions
it is assigned, read back from their changelogs up to the high watermark."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition

from driftloop.shared import poison
from driftloop.shared.kafka import tail_topic
from driftloop.shared.runtime.checkpoint import Checkpointing
from driftloop.shared.runtime.loop import BatchLoop
from driftloop.shared.runtime.service import Service
from driftloop.shared.state import StateStore

# How long reading one changelog back may take before recovery gives up (a failed start).
RECOVERY_MAX_WAIT_S = 300


class Recovery(ConsumerRebalanceListener):
    def __init__(self, svc: Service[Any], checkpointer: Checkpointing, batches: BatchLoop) -> None:
        self.svc = svc
        self.checkpointer = checkpointer
        self.batches = batches
        #: Set while the assigned partitions' state is recovered: batches wait for it.
        self.state_ready = asyncio.Event()
        self._recovered: dict[str, set[int]] = {}

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in hand finish (output produced, offsets committed) before the
        # partitions move: the next owner then starts exactly after it.
        async with self.batches.batch_lock:
            await self.checkpointer.settle_all()
            self.state_ready.clear()
            self.batches.forget()
            await self.checkpointer.disown({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.state_ready.clear()
        try:
            sources = {tp for tp in assigned if tp.topic in self.svc.routes}
            await self.checkpointer.own({tp.partition for tp in sources})
            await self.batches.start_at_committed(sources)
            await self.recover(assigned)
        finally:
            self.state_ready.set()

    async def recover(self, assigned: set[TopicPartition]) -> None:
        """Own exactly the assigned source partitions' state: drop the others, read the new
        ones from their changelogs up to the high watermark, every store at once (a restart
        waits for the slowest changelog, not for all of them in turn)."""
        svc = self.svc
        owned = {tp.partition for tp in assigned if tp.topic in svc.routes}
        await asyncio.gather(*(self._recover_store(store, owned) for store in svc.stores))
        for hook in svc.recovered_hooks:
            hook()
        svc.metrics.ready.labels(svc.name).set(1 if owned else 0)

    async def _recover_store(self, store: StateStore, owned: set[int]) -> None:
        svc = self.svc
        dropped = store.drop_partitions(store.partitions() - owned)
        todo = sorted(owned - self._recovered.get(store.name, set()))
        applied = 0
        if todo:
            async for batch in tail_topic(
                svc.common.bootstrap_servers,
                store.name,
                stop_at_end=True,
                max_wait_s=RECOVERY_MAX_WAIT_S,
                partitions=todo,
                options=svc.kafka_options,
                on_poison=self._poison_in_changelog,
            ):
                applied += store.load(
                    (r.partition, r.key.decode(), None if r.value is None else orjson.loads(r.value)) for r in batch
                )
        self._recovered[store.name] = owned
        svc.log.info(
            "state_recovered", store=store.name, partitions=todo, records=applied, dropped=dropped, keys=len(store)
        )

    async def _poison_in_changelog(self, skipped: poison.Isolated) -> None:
        """A changelog batch that cannot be decoded: recovery goes on without it (its keys
        keep their older values), counted and logged; it is the service's own record."""
        self.svc.metrics.poison_batches.labels(self.svc.name, skipped.tp.topic).inc()
        self.svc.log.error("poison_batch_skipped", during="state_recovery", **poison.log_fields(skipped))
