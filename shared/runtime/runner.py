"""Runs a declared service: its Kafka clients, signals, tasks, timers and the batch loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import IllegalStateError, KafkaError

from driftloop.shared.kafka import OutRecord, create_topics
from driftloop.shared.runtime.checkpoint import Checkpointer, Checkpointing, TransactionalCheckpointer
from driftloop.shared.runtime.loop import MAX_PARTITION_FETCH_BYTES, BatchLoop
from driftloop.shared.runtime.recovery import Recovery
from driftloop.shared.runtime.service import Service
from driftloop.shared.settings import ServiceSettings
from driftloop.shared.topics import TopicSpec

S = TypeVar("S", bound=ServiceSettings)
LAG_REFRESH_S = 2.0  # how often driftloop_consumer_lag_records is refreshed


class Runtime:
    def __init__(self, svc: Service[Any]) -> None:
        self.svc = svc
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        self._loop: BatchLoop | None = None
        self._checkpointer: Checkpointing | None = None

    def stop(self) -> None:
        self._stopping.set()

    def _fail(self, exc: BaseException) -> None:
        self._failure = self._failure or exc
        self._stopping.set()

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a dead task takes the service down, loudly
                self.svc.log.error(
                    "task_failed", task=name, error=repr(exc)[:500], traceback=traceback.format_exc(limit=8)
                )
                self._fail(exc)

        return asyncio.create_task(guarded(), name=name)

    async def _every(self, interval_s: float, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)
            if not self._stopping.is_set():
                await fn()

    def _consumer_options(self) -> dict[str, Any]:
        svc, c = self.svc, self.svc.common
        return {
            "bootstrap_servers": c.bootstrap_servers,
            "group_id": svc.group_id,
            "client_id": svc.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": svc.settings.fetch_max_wait_ms or c.effective_fetch_max_wait_ms,
            "max_poll_records": svc.settings.batch_size,
            # What a lagging service holds prefetched: this much per assigned partition at most.
            "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
            "session_timeout_ms": int(c.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(c.heartbeat_interval_s * 1000),
            "rebalance_timeout_ms": int(c.rebalance_timeout_s * 1000),
            # Only what committed transactions wrote: never an aborted batch's output.
            "isolation_level": "read_committed",
            # Static membership: a restarted instance takes its partitions back without a rebalance.
            "group_instance_id": c.instance_id,
            **svc.kafka_options,
        }

    def _producer(self, transactional_id: str | None = None) -> AIOKafkaProducer:
        c = self.svc.common
        return AIOKafkaProducer(
            bootstrap_servers=c.bootstrap_servers,
            client_id=transactional_id or self.svc.group_id,
            acks="all",
            # The batch loop flushes before it commits; a linger would only add latency.
            linger_ms=0,
            max_batch_size=256 * 1024,
            # Idempotent on Apache Kafka: aiokafka then retries a batch until the broker takes
            # it, with no duplicate, so a broker restart does not fail the service's output.
            enable_idempotence=c.idempotent_producers or transactional_id is not None,
            transactional_id=transactional_id,
            **self.svc.kafka_options,
        )

    def _checkpointer_for(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> Checkpointing:
        if self.svc.common.exactly_once:
            return TransactionalCheckpointer(self.svc, self._producer, self._fail)
        return Checkpointer(self.svc, producer, consumer, self._fail)

    async def update_lag(self) -> None:
        if self._loop is None or self._checkpointer is None:
            return
        consumer, processed = self._loop.consumer, self._checkpointer.processed
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = processed.get(tp)
            position = await consumer.position(tp) or 0
            next_offset = position if done is None else done + 1
            if self.svc.common.exactly_once:
                # Each transaction ends with a commit marker, which takes an offset but is no
                # record: the consumer's position passes it, the last record handled does not.
                next_offset = max(next_offset, position)
            self.svc.metrics.consumer_lag.labels(self.svc.name, tp.topic, str(tp.partition)).set(
                max(0, highwater - next_offset)
            )

    async def _lag_timer(self) -> None:
        try:
            await self.update_lag()
        except (KafkaError, OSError, IllegalStateError) as exc:  # a metrics refresh never stops a service
            self.svc.log.warning("consumer_lag_unavailable", error=repr(exc)[:200])

    async def run(self) -> None:
        """Consume, handle, produce, commit, until SIGTERM/SIGINT or a failed task."""
        svc = self.svc
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if svc.stores:
            # Changelogs are compacted: only the last write of each key matters on recovery.
            specs = [TopicSpec(s.name, svc.common.partitions, {"cleanup.policy": "compact"}) for s in svc.stores]
            await create_topics(
                svc.common.bootstrap_servers, specs, svc.common.replication_factor, options=svc.kafka_options
            )
        producer = self._producer()
        consumer = AIOKafkaConsumer(**self._consumer_options())
        checkpointer = self._checkpointer = self._checkpointer_for(producer, consumer)
        batches = self._loop = BatchLoop(svc, consumer, checkpointer, self._stopping)
        recovery = Recovery(svc, checkpointer, batches)

        async def produce_now(record: OutRecord) -> None:
            topic, key, value, partition = record
            await producer.send_and_wait(topic, value, key, partition=partition)

        svc.publisher.bind(produce_now)
        await producer.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            for fn in svc.tasks:
                tasks.append(self._spawn(fn.__name__, fn()))
            timers = [
                *svc.timers,
                (LAG_REFRESH_S, self._lag_timer),
                (svc.settings.commit_interval_s, checkpointer.commit_if_due),
            ]
            for interval, fn in timers:
                tasks.append(self._spawn(f"timer:{fn.__name__}", self._every(interval, fn)))
            if svc.routes:
                await consumer.start()
                consumer.subscribe(list(svc.routes), listener=recovery)
                await batches.run(recovery.state_ready)
            else:
                await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()  # leaves the group: its partitions move at once
            await checkpointer.close()
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
        if self._failure is not None:
            raise self._failure


def run_service(name: str, settings_cls: type[S], shell: Callable[[Service[S]], object]) -> None:
    """Build the service from the environment, let ``shell`` declare it, and run it in the
    foreground until SIGINT/SIGTERM; a failed task exits non-zero."""
    svc = Service.from_env(name, settings_cls)
    shell(svc)
    svc.metrics.serve(svc.common.metrics_addr, svc.settings.metrics_port)
    svc.metrics.up.labels(name).set(1)
    svc.log.info(
        "service_starting",
        bootstrap=svc.common.bootstrap_servers,
        prefix=svc.common.topic_prefix,
        metrics_port=svc.settings.metrics_port,
        guarantee="exactly_once" if svc.common.exactly_once else "at_least_once",
        instance_id=svc.common.instance_id,
    )
    try:
        asyncio.run(Runtime(svc).run())
    except Exception as exc:  # noqa: BLE001 - already logged where it happened; exit non-zero
        svc.log.error("service_failed", error=repr(exc)[:500])
        raise SystemExit(1) from None
    svc.log.info("service_stopped")
