"""The Faust app factory and the context every service shell is built on.

A service shell asks for a ``ServiceContext``: settings built once, logging, metrics on
their own registry and HTTP port, the serde, topic names, a Faust app whose consumer
group timeouts work on the embedded broker, and the dead-letter helper.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import faust
from faust.types import EventT, TopicT

from shared.errors import DriftloopError, InvalidRecord
from shared.log import configure_logging, get_logger
from shared.metrics import ServiceMetrics
from shared.serde import FileSchemaRegistry, Serde
from shared.settings import CommonSettings, ServiceSettings
from shared.topics import Topics

S = TypeVar("S", bound=ServiceSettings)


def make_faust_app(app_id: str, common: CommonSettings, **overrides: Any) -> faust.App:
    brokers = ";".join(f"kafka://{b.strip()}" for b in common.bootstrap_servers.split(",") if b.strip())
    conf: dict[str, Any] = {
        "broker": brokers,
        "store": "memory://",
        "topic_partitions": common.partitions,
        "topic_replication_factor": 1 if common.uses_embedded_broker else 3,
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

    def __post_init__(self) -> None:
        self._latency = self.metrics.event_latency.labels(self.service)

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
