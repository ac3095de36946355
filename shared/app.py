"""The Faust app factory and the context every service shell is built on.

A service shell asks for a ``ServiceContext``: settings built once, logging, metrics on
their own registry and HTTP port, the serde, topic names, a Faust app whose consumer
group timeouts work on the embedded broker, and the dead-letter helper.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import EventT, StreamT, TopicT

from shared.errors import DriftloopError, InvalidRecord
from shared.kafka import create_topics, tail_topic
from shared.log import configure_logging, get_logger
from shared.metrics import ServiceMetrics
from shared.serde import FileSchemaRegistry, Serde
from shared.settings import CommonSettings, ServiceSettings
from shared.state import StateStore
from shared.topics import Topics, TopicSpec

S = TypeVar("S", bound=ServiceSettings)


_faust_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def _use_fetch_max_wait(ms: int) -> None:
    """Faust builds its consumer with a fixed fetch_max_wait_ms of 1500; the embedded broker
    holds every fetch that long, which puts ~0.6 s on every hop. aiokafka reads the value when
    the consumer starts and builds its fetcher, so it is set on the consumer Faust creates."""

    def create(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = _faust_create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = ms  # noqa: SLF001 - no public knob in Faust
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def make_faust_app(app_id: str, common: CommonSettings, **overrides: Any) -> faust.App:
    brokers = ";".join(f"kafka://{b.strip()}" for b in common.bootstrap_servers.split(",") if b.strip())
    conf: dict[str, Any] = {
        "broker": brokers,
        "store": "memory://",
        "topic_partitions": common.partitions,
        "topic_replication_factor": common.replication_factor,
        "broker_session_timeout": common.session_timeout_s,
        "broker_rebalance_timeout": common.rebalance_timeout_s,
        "broker_heartbeat_interval": common.heartbeat_interval_s,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # Let records of a batch share produce requests instead of one request each.
        "producer_linger": 0.005,
        "producer_max_batch_size": 256 * 1024,
        "web_enabled": False,
        "datadir": str(common.data_dir / app_id),
        # Our own structlog logs say what happens; Faust's console banner would not.
        "worker_redirect_stdouts": False,
    }
    conf.update(overrides)
    _use_fetch_max_wait(common.fetch_max_wait_ms)
    common.data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(app_id, **conf)


@dataclass
class ServiceContext(Generic[S]):
    service: str
    common: CommonSettings
    settings: S
    app: faust.App
    serde: Serde
    topics: Topics
    metrics: ServiceMetrics
    log: Any
    _deadletter: TopicT | None = field(default=None, repr=False)
    _out_counters: dict[str, Any] = field(default_factory=dict, repr=False)
    _in_counters: dict[str, Any] = field(default_factory=dict, repr=False)
    _processed: dict[Any, int] = field(default_factory=dict, repr=False)
    _sources: set[str] = field(default_factory=set, repr=False)
    _stores: list[StateStore] = field(default_factory=list, repr=False)
    event_id: str | None = field(default=None, repr=False)
    #: Called after every recovery, e.g. to rebuild in-memory indexes over the stores.
    recovered_callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _recovered: dict[str, set[int]] = field(default_factory=dict, repr=False)
    _state_ready: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self._latency = self.metrics.event_latency.labels(self.service)

        @self.app.on_partitions_assigned.connect
        async def _assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
            # Faust may resume the streams before this returns: each() holds every batch
            # until the state of the new assignment is loaded.
            self._state_ready.clear()
            try:
                await self.recover_state(assigned)
            finally:
                self._state_ready.set()

        @self.app.timer(2.0)
        async def _lag() -> None:
            try:
                await self.update_lag()
            except Exception as exc:  # noqa: BLE001 - a metrics refresh must never stop a service
                self.log.warning("consumer_lag_unavailable", error=repr(exc)[:200])

    def source(self, short: str) -> TopicT:
        """A raw topic an agent consumes; its lag is exported."""
        self._sources.add(self.topics.name(short))
        return self.raw_topic(short)

    def consumed(self, event: EventT) -> None:
        """Count one consumed record and remember its offset for the lag gauge."""
        msg = event.message
        self._processed[msg.tp] = msg.offset
        counter = self._in_counters.get(msg.topic)
        if counter is None:
            counter = self._in_counters[msg.topic] = self.metrics.records_in.labels(self.service, msg.topic)
        counter.inc()

    def observe_latency(self, ingest_time_ms: int | None) -> None:
        if ingest_time_ms is not None:
            self._latency.observe(max(0.0, time.time() - ingest_time_ms / 1000))

    async def update_lag(self) -> None:
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic not in self._sources:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = self._processed.get(tp)
            next_offset = done + 1 if done is not None else (await consumer.position(tp) or 0)
            self.metrics.consumer_lag.labels(self.service, tp.topic, str(tp.partition)).set(
                max(0, highwater - next_offset)
            )

    async def each(self, stream: StreamT[Any], handle: Callable[[EventT], Awaitable[None]]) -> None:
        """The agent loop every service shares: records come in batches from Faust and go
        through ``handle`` one at a time; a record that fails is dead-lettered with its code
        (handlers set ``self.event_id`` once they know it) and the loop carries on; the
        batch's state changes are produced before the next batch is taken, so before Faust
        can commit the batch's offsets."""
        s = self.settings
        batch_seconds = self.metrics.batch_seconds.labels(self.service)
        async for events in stream.take_events(s.batch_size, within=s.batch_window_s):
            await self._state_ready.wait()
            started = time.perf_counter()
            for event in events:
                self.consumed(event)
                self.bind(event)
                self.event_id = None
                try:
                    await handle(event)
                except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
                    await self.dead_letter(event, exc, self.event_id)
            await self.flush_state()
            batch_seconds.observe(time.perf_counter() - started)

    def store(self, name: str) -> StateStore:
        """A changelog-backed key-value store, co-partitioned with this service's input."""
        store = StateStore(f"{self.app.conf.id}-{name}-changelog")
        self._stores.append(store)
        return store

    def bind(self, event: EventT) -> None:
        """Point every store's writes at the partition of the record being processed."""
        partition = event.message.partition
        for store in self._stores:
            store.shard = partition

    async def flush_state(self) -> None:
        """Hand the changelog records of the batch to the producer; Faust flushes the producer
        before it commits the batch's input offsets."""
        send = self.app.producer.send
        for store in self._stores:
            for partition, key, value in store.drain():
                data = None if value is None else json.dumps(value, separators=(",", ":")).encode()
                await send(store.name, key.encode(), data, partition=partition, timestamp=None, headers=None)

    async def recover_state(self, assigned: set[Any]) -> None:
        """Own exactly the assigned source partitions' state: drop the others, read the new
        ones from their changelogs up to the high watermark."""
        owned = {tp.partition for tp in assigned if tp.topic in self._sources}
        for store in self._stores:
            dropped = store.drop_partitions(store.partitions() - owned)
            todo = sorted(owned - self._recovered.get(store.name, set()))
            applied = 0
            if todo:
                async for batch in tail_topic(
                    self.common.bootstrap_servers, store.name, stop_at_end=True, max_wait_s=300, partitions=todo
                ):
                    applied += store.load(
                        (r.partition, r.key.decode(), None if r.value is None else json.loads(r.value)) for r in batch
                    )
            self._recovered[store.name] = owned
            self.log.info(
                "state_recovered", store=store.name, partitions=todo, records=applied, dropped=dropped, keys=len(store)
            )
        for callback in self.recovered_callbacks:
            callback()
        self.metrics.ready.labels(self.service).set(1 if owned else 0)

    def raw_topic(self, short: str) -> TopicT:
        """A Faust topic carrying bytes: decoding is ours, so bad bytes can be dead-lettered."""
        return self.app.topic(
            self.topics.name(short), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    async def send(self, topic: TopicT, key: str | bytes, value: bytes) -> None:
        """Hand one record to the producer without waiting for its delivery.

        Faust flushes the producer before it commits consumer offsets, so an input's
        offset is committed only after its output is produced (at-least-once). Going to
        the producer directly skips Faust's per-message channel machinery on the hot path.
        """
        name = topic.get_topic_name()
        await self.app.producer.send(
            name, key.encode() if isinstance(key, str) else key, value, partition=None, timestamp=None, headers=None
        )
        counter = self._out_counters.get(name)
        if counter is None:
            counter = self._out_counters[name] = self.metrics.records_out.labels(self.service, name)
        counter.inc()

    async def dead_letter(self, event: EventT, exc: BaseException, event_id: str | None = None) -> None:
        """Send the record behind ``event`` to the dead-letter topic with the error's code."""
        msg = event.message
        code = exc.code if isinstance(exc, DriftloopError) else "internal_error"
        if self._deadletter is None:
            self._deadletter = self.raw_topic("deadletter")
        record = {
            "original_key": msg.key,
            "original_value": msg.value,
            "source_topic": msg.topic,
            "source_partition": int(msg.partition),
            "source_offset": int(msg.offset),
            "service": self.service,
            "error_code": code,
            "error_message": str(exc)[:1000],
            "event_id": event_id,
            "time": int(time.time() * 1000),
        }
        key = msg.key if msg.key else (event_id or f"{msg.topic}:{msg.partition}:{msg.offset}").encode()
        await self.send(self._deadletter, key, self.serde.encode("DeadLetter", record))
        self.metrics.dead_letters.labels(self.service, code).inc()
        log = self.log.bind(
            topic=msg.topic, partition=msg.partition, offset=msg.offset, event_id=event_id, error_code=code
        )
        if isinstance(exc, InvalidRecord):
            log.info("record_dead_lettered", error=str(exc)[:200])
        else:
            log.error("record_failed", error=repr(exc)[:500], traceback=traceback.format_exc(limit=5))


def build_context(service: str, settings_cls: type[S]) -> ServiceContext[S]:
    common = CommonSettings()
    settings = settings_cls()
    configure_logging(common.log_level, json=common.log_json)
    log = get_logger(service=service)
    topics = Topics(common.topic_prefix, common.partitions)
    app = make_faust_app(f"{common.topic_prefix}{service}", common)
    metrics = ServiceMetrics(service)
    return ServiceContext(
        service=service,
        common=common,
        settings=settings,
        app=app,
        serde=Serde(FileSchemaRegistry(common.schema_dir)),
        topics=topics,
        metrics=metrics,
        log=log,
    )


class _Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # No console spinner: it sets the root logger to DEBUG (every aiokafka debug call then
        # builds a record; a profile showed ~10% of a worker's CPU there) and writes terminal
        # control codes into the service logs.
        self.spinner = None


def run_worker(ctx: ServiceContext[Any]) -> None:
    """Run the Faust worker in the foreground until SIGINT/SIGTERM."""
    if ctx._stores:
        # Changelogs are compacted: only the last write of each key matters on recovery.
        specs = [TopicSpec(s.name, ctx.common.partitions, {"cleanup.policy": "compact"}) for s in ctx._stores]
        asyncio.run(create_topics(ctx.common.bootstrap_servers, specs, ctx.common.replication_factor))
    ctx.metrics.serve(ctx.common.metrics_addr, ctx.settings.metrics_port)
    ctx.metrics.up.labels(ctx.service).set(1)
    ctx.log.info(
        "service_starting",
        bootstrap=ctx.common.bootstrap_servers,
        prefix=ctx.common.topic_prefix,
        metrics_port=ctx.settings.metrics_port,
    )
    worker = _Worker(ctx.app, loglevel="WARN", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
