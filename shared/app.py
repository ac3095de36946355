"""The service runtime every service shell is built on: batched consumption on aiokafka.

A service shell asks for a ``ServiceContext``: settings built once, logging, metrics on
their own registry and HTTP port, the serde, topic names, changelog-backed state stores,
the dead-letter helper, and a small app object on which it declares what it consumes
(``app.agent``), background tasks (``app.task``) and timers (``app.timer``).

Why not Faust's consumer: measured on the embedded broker, a Faust agent moves ~3-4k
records/s however it batches (its consumer thread, per-message channels and sensors cost
more than the work), and a Faust worker took ~25 s to stop on SIGTERM. Here one aiokafka
consumer per service fetches batches of every source topic; each batch is handled record
by record, its output and the state stores' changelog records are handed to one producer,
the producer is flushed, and only then are the batch's offsets committed (at-least-once:
nothing is committed before its output is on the broker). A record batch the consumer cannot
decode (a corrupt batch, a codec the service lacks) is found by shared/poison.py, counted,
logged and dead-lettered by its offset range, and committed past as a handled batch is.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import time
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from driftloop.shared import poison
from driftloop.shared.errors import DriftloopError, InvalidRecord, PoisonBatch, ProduceFailed
from driftloop.shared.kafka import OutRecord, Partitioner, client_options, create_topics, send_batched, tail_topic
from driftloop.shared.log import configure_logging, get_logger
from driftloop.shared.metrics import ServiceMetrics
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings, ServiceSettings
from driftloop.shared.state import StateStore
from driftloop.shared.topics import Topics, TopicSpec

S = TypeVar("S", bound=ServiceSettings)
MAX_UNSETTLED = 4  # batches handled but not yet delivered and committed
# Prefetched input per partition (aiokafka's default is 1 MB): a service behind its input
# holds at most this times its partitions; ~2,500 records of ~100 bytes a fetch still.
MAX_PARTITION_FETCH_BYTES = 256 * 1024
# How long one fetch of the poison-batch isolation may wait for its partition's records.
POISON_FETCH_TIMEOUT_MS = 10_000
# A poison batch's own bytes ride in its dead letter up to this size: the dead letter must fit
# in one produce request; a bigger batch stays readable at its offsets in the source topic.
POISON_RAW_MAX_BYTES = 64 * 1024
# True in the batch loop's task only: tasks and timers run in contexts copied before it is set.
_IN_BATCH: contextvars.ContextVar[bool] = contextvars.ContextVar("driftloop_in_batch", default=False)


@dataclass(frozen=True)
class Topic:
    """A topic a service produces to (or consumes from): records are bytes, the serde is ours."""

    name: str

    def get_topic_name(self) -> str:
        return self.name


class Event:
    """One consumed record, as handlers see it: ``event.message`` is the aiokafka record
    (topic, partition, offset, timestamp in epoch ms, key, value)."""

    __slots__ = ("message",)

    def __init__(self, message: ConsumerRecord) -> None:
        self.message = message


class Stream:
    """What an agent receives: the source topic it is declared on."""

    def __init__(self, topic: Topic) -> None:
        self.topic = topic


Handler = Callable[[Event], Awaitable[None]]
EventT = Event  # the names service shells annotate with
StreamT = Stream


class ServiceApp:
    """Declarations of a service: agents per source topic, tasks and timers, run by
    ``ServiceContext.run``. An agent is ``async def f(stream)`` that (after any wait of its
    own, e.g. for a model) calls ``ctx.each(stream, handle)``; records of its topic wait
    until it has."""

    def __init__(self, app_id: str) -> None:
        self.id = app_id
        self.agents: list[tuple[Topic, Callable[[Stream], Coroutine[Any, Any, None]]]] = []
        self.tasks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.timers: list[tuple[float, Callable[[], Coroutine[Any, Any, None]]]] = []
        self.shutdown_hooks: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def agent(self, topic: Topic, name: str | None = None) -> Callable[[Any], Any]:
        def register(fn: Callable[[Stream], Coroutine[Any, Any, None]]) -> Any:
            self.agents.append((topic, fn))
            return fn

        return register

    def task(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], Coroutine[Any, Any, None]]:
        self.tasks.append(fn)
        return fn

    def on_shutdown(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], Coroutine[Any, Any, None]]:
        """Run ``fn`` once the last batch is handled, before its output settles and the service stops."""
        self.shutdown_hooks.append(fn)
        return fn

    def timer(self, interval_s: float) -> Callable[[Any], Any]:
        def register(fn: Callable[[], Coroutine[Any, Any, None]]) -> Any:
            self.timers.append((interval_s, fn))
            return fn

        return register


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, ctx: ServiceContext[Any]) -> None:
        self.ctx = ctx

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in hand finish (output produced, offsets committed) before the
        # partitions move: the next owner then starts exactly after it.
        async with self.ctx._batch_lock:
            await self.ctx.settle_all()
            self.ctx._state_ready.clear()
            self.ctx._fetched_to.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.ctx._state_ready.clear()
        try:
            await self.ctx.recover_state(assigned)
        finally:
            self.ctx._state_ready.set()


@dataclass
class ServiceContext(Generic[S]):
    service: str
    common: CommonSettings
    settings: S
    app: ServiceApp
    serde: Serde
    topics: Topics
    metrics: ServiceMetrics
    log: Any
    #: Security options of every Kafka client of the service (client_options(common)).
    kafka_options: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Set by handlers once they know the record's event_id (dead letters carry it).
    event_id: str | None = field(default=None, repr=False)
    #: Called after every recovery, e.g. to rebuild in-memory indexes over the stores.
    recovered_callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _sources: list[str] = field(default_factory=list, repr=False)
    _stores: list[StateStore] = field(default_factory=list, repr=False)
    _handlers: dict[str, Handler] = field(default_factory=dict, repr=False)
    _handler_added: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _out_counters: dict[str, Any] = field(default_factory=dict, repr=False)
    _in_counters: dict[str, Any] = field(default_factory=dict, repr=False)
    _processed: dict[TopicPartition, int] = field(default_factory=dict, repr=False)
    #: Next offset after the last record handed to the handlers (or past the last skipped
    #: poison batch), per partition since it was assigned.
    _fetched_to: dict[TopicPartition, int] = field(default_factory=dict, repr=False)
    _recovered: dict[str, set[int]] = field(default_factory=dict, repr=False)
    _state_ready: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _batch_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _producer: AIOKafkaProducer | None = field(default=None, repr=False)
    _consumer: AIOKafkaConsumer | None = field(default=None, repr=False)
    _failure: BaseException | None = field(default=None, repr=False)
    #: (topic, key, value, partition or None) owed by the batch in hand, in order.
    _outbox: list[OutRecord] = field(default_factory=list, repr=False)
    _partitioner: Partitioner = field(default_factory=Partitioner, repr=False)
    _partition_counts: dict[str, int] = field(default_factory=dict, repr=False)
    _unsettled: deque[asyncio.Task[None]] = field(default_factory=deque, repr=False)
    #: Next offsets whose batches are delivered but not yet committed.
    _delivered: dict[TopicPartition, int] = field(default_factory=dict, repr=False)
    _commit_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _last_commit: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._latency = self.metrics.event_latency.labels(self.service)
        self._inflight_batches = self.metrics.inflight_batches.labels(self.service)
        self._inflight_records = self.metrics.inflight_records.labels(self.service)

    # --- declarations -------------------------------------------------------------------------

    def source(self, short: str) -> Topic:
        """A topic this service consumes (in its consumer group); its lag is exported."""
        topic = self.raw_topic(short)
        if topic.name not in self._sources:
            self._sources.append(topic.name)
            self.metrics.poison_batches.labels(self.service, topic.name)  # exported at 0 from the start
        return topic

    def raw_topic(self, short: str) -> Topic:
        return Topic(self.topics.name(short))

    def store(self, name: str) -> StateStore:
        """A changelog-backed key-value store, co-partitioned with this service's input."""
        store = StateStore(f"{self.app.id}-{name}-changelog")
        self._stores.append(store)
        return store

    async def each(self, stream: Stream, handle: Handler) -> None:
        """Handle the records of ``stream``'s topic one at a time from now on: a record whose
        handler raises is dead-lettered with the error's code (handlers set ``self.event_id``
        once they know it) and the batch carries on."""
        self._handlers[stream.topic.name] = handle
        self._handler_added.set()
        await self._stopping.wait()

    # --- the hot path -------------------------------------------------------------------------

    def observe_latency(self, ingest_time_ms: int | None) -> None:
        if ingest_time_ms is not None:
            self._latency.observe(max(0.0, time.time() - ingest_time_ms / 1000))

    async def send(self, topic: Topic, key: str | bytes | None, value: bytes | None) -> None:
        """From a handler: queue one record for the batch's output (the batch loop produces
        the queue in record batches per partition and commits once they are delivered).
        From a task or timer (no batch to ride on): produce it now and wait for delivery."""
        raw_key = key.encode() if isinstance(key, str) else key
        if _IN_BATCH.get():
            self._outbox.append((topic.name, raw_key, value, None))
            return
        assert self._producer is not None, "send() before the service started"
        await self._producer.send_and_wait(topic.name, value, raw_key)
        self._count_out(topic.name, 1)

    def _count_out(self, topic: str, n: int) -> None:
        counter = self._out_counters.get(topic)
        if counter is None:
            counter = self._out_counters[topic] = self.metrics.records_out.labels(self.service, topic)
        counter.inc(n)

    async def _handler_for(self, topic: str) -> Handler:
        while topic not in self._handlers:
            # Its agent is still waiting for something of its own (a model, the registry).
            self._handler_added.clear()
            await self._handler_added.wait()
        return self._handlers[topic]

    async def _process(
        self, batches: dict[TopicPartition, list[ConsumerRecord]], skipped: poison.Isolated | None = None
    ) -> None:
        started = time.perf_counter()
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            handle = await self._handler_for(tp.topic)
            for store in self._stores:
                store.shard = tp.partition  # the store writes of these records go to this partition
            for record in records:
                self.event_id = None
                try:
                    await handle(Event(record))
                except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
                    await self.dead_letter(record, exc, self.event_id)
            counter = self._in_counters.get(tp.topic)
            if counter is None:
                counter = self._in_counters[tp.topic] = self.metrics.records_in.labels(self.service, tp.topic)
            counter.inc(len(records))
            offsets[tp] = records[-1].offset + 1
        if skipped is not None:
            # Its dead letter goes out with the batch's output; its offsets commit with them.
            await self._dead_letter_batch(skipped)
            offsets[skipped.tp] = max(offsets.get(skipped.tp, 0), skipped.batch.last + 1)
        self.flush_state()
        deliveries = await self._produce_outbox()
        # The next batch is handled while this one's output is on its way: its offsets are
        # committed by a task once every record of it (and of the batches before) is
        # delivered. At most MAX_UNSETTLED batches are in flight; then we wait.
        settle = asyncio.create_task(
            self._settle(self._unsettled[-1] if self._unsettled else None, deliveries, offsets)
        )
        held = sum(len(records) for records in batches.values())
        self._inflight_batches.inc()
        self._inflight_records.inc(held)

        def settled(_: asyncio.Task[None], held: int = held) -> None:
            self._inflight_batches.dec()
            self._inflight_records.dec(held)

        settle.add_done_callback(settled)
        self._unsettled.append(settle)
        self.metrics.batch_seconds.labels(self.service).observe(time.perf_counter() - started)
        while len(self._unsettled) > MAX_UNSETTLED or (self._unsettled and self._unsettled[0].done()):
            await self._unsettled.popleft()

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
            self._processed[tp] = nxt - 1
        # Offsets are committed at most every commit_interval_s (and whenever a service stops
        # or gives partitions away): a commit per batch was one request in three a service sent,
        # and every request costs the embedded broker CPU that the loop's latency waits on.
        await self._commit_if_due()

    async def _commit_if_due(self) -> None:
        # Also a timer: what the last batches delivered, once the stream goes quiet between them.
        if self._delivered and time.monotonic() - self._last_commit >= self.settings.commit_interval_s:
            await self.commit_delivered()

    async def commit_delivered(self) -> None:
        """Commit the offsets of every batch delivered so far."""
        async with self._commit_lock:
            offsets, self._delivered = self._delivered, {}
            self._last_commit = time.monotonic()
            if not offsets:
                return
            assert self._consumer is not None
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group rebalanced under these batches: their records are redelivered to
                # their next owner, and every consumer of our output is idempotent on event_id.
                self.log.warning("commit_failed", error=str(exc)[:200], partitions=len(offsets))

    async def settle_all(self) -> None:
        """Wait until every handled batch is delivered and committed (before partitions move
        and before the service stops)."""
        while self._unsettled:
            with contextlib.suppress(ProduceFailed):
                await self._unsettled.popleft()
        await self.commit_delivered()

    def flush_state(self) -> None:
        """Queue the changelog records of the batch: they are produced with its output,
        before its offsets commit."""
        for store in self._stores:
            for partition, key, value in store.drain():
                data = None if value is None else orjson.dumps(value)
                self._outbox.append((store.name, key.encode(), data, partition))

    async def _produce_outbox(self) -> list[asyncio.Future[Any]]:
        """Produce the queued records as one record batch per topic partition (one append
        each instead of a send() call per record); returns the delivery futures. A failed
        delivery stops the service before the batch is committed: its input is consumed
        again after the restart."""
        outbox, self._outbox = self._outbox, []
        if not outbox:
            return []
        assert self._producer is not None
        deliveries = await send_batched(self._producer, outbox, self._partitions_of, self._partitioner)
        for topic, n in Counter(topic for topic, _, _, _ in outbox).items():
            self._count_out(topic, n)
        return deliveries

    async def _partitions_of(self, topic: str) -> int:
        n = self._partition_counts.get(topic)
        if n is None:
            assert self._producer is not None
            n = self._partition_counts[topic] = len(await self._producer.partitions_for(topic))
        return n

    async def recover_state(self, assigned: set[TopicPartition]) -> None:
        """Own exactly the assigned source partitions' state: drop the others, read the new
        ones from their changelogs up to the high watermark."""
        owned = {tp.partition for tp in assigned if tp.topic in self._sources}
        for store in self._stores:
            dropped = store.drop_partitions(store.partitions() - owned)
            todo = sorted(owned - self._recovered.get(store.name, set()))
            applied = 0
            if todo:
                async for batch in tail_topic(
                    self.common.bootstrap_servers,
                    store.name,
                    stop_at_end=True,
                    max_wait_s=300,
                    partitions=todo,
                    options=self.kafka_options,
                    on_poison=self._poison_in_changelog,
                ):
                    applied += store.load(
                        (r.partition, r.key.decode(), None if r.value is None else orjson.loads(r.value)) for r in batch
                    )
            self._recovered[store.name] = owned
            self.log.info(
                "state_recovered", store=store.name, partitions=todo, records=applied, dropped=dropped, keys=len(store)
            )
        for callback in self.recovered_callbacks:
            callback()
        self.metrics.ready.labels(self.service).set(1 if owned else 0)

    async def dead_letter(self, msg: ConsumerRecord, exc: BaseException, event_id: str | None = None) -> None:
        """Send ``msg`` to the dead-letter topic with the original bytes and the error's code."""
        code = exc.code if isinstance(exc, DriftloopError) else "internal_error"
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
        await self.send(self.raw_topic("deadletter"), key, self.serde.encode("DeadLetter", record))
        self.metrics.dead_letters.labels(self.service, code).inc()
        log = self.log.bind(
            topic=msg.topic, partition=msg.partition, offset=msg.offset, event_id=event_id, error_code=code
        )
        if isinstance(exc, InvalidRecord):
            log.info("record_dead_lettered", error=str(exc)[:200])
        else:
            log.error("record_failed", error=repr(exc)[:500], traceback=traceback.format_exc(limit=5))

    async def update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = self._processed.get(tp)
            next_offset = done + 1 if done is not None else (await consumer.position(tp) or 0)
            self.metrics.consumer_lag.labels(self.service, tp.topic, str(tp.partition)).set(
                max(0, highwater - next_offset)
            )

    # --- lifecycle ----------------------------------------------------------------------------

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
                self.log.error("task_failed", task=name, error=repr(exc)[:500], traceback=traceback.format_exc(limit=8))
                self._fail(exc)

        return asyncio.create_task(guarded(), name=name)

    async def _every(self, interval_s: float, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)
            if not self._stopping.is_set():
                await fn()

    async def _lag_timer(self) -> None:
        try:
            await self.update_lag()
        except (KafkaError, OSError, IllegalStateError) as exc:  # a metrics refresh never stops a service
            self.log.warning("consumer_lag_unavailable", error=repr(exc)[:200])

    def _consumer_options(self) -> dict[str, Any]:
        c = self.common
        return {
            "bootstrap_servers": c.bootstrap_servers,
            "group_id": self.app.id,
            "client_id": self.app.id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": self.settings.fetch_max_wait_ms or c.effective_fetch_max_wait_ms,
            "max_poll_records": self.settings.batch_size,
            # What a lagging service holds prefetched: this much per assigned partition at most.
            "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
            "session_timeout_ms": int(c.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(c.heartbeat_interval_s * 1000),
            "rebalance_timeout_ms": int(c.rebalance_timeout_s * 1000),
            **self.kafka_options,
        }

    async def run(self) -> None:
        """Consume, handle, produce, commit, until SIGTERM/SIGINT or a failed task."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if self._stores:
            # Changelogs are compacted: only the last write of each key matters on recovery.
            specs = [TopicSpec(s.name, self.common.partitions, {"cleanup.policy": "compact"}) for s in self._stores]
            await create_topics(
                self.common.bootstrap_servers, specs, self.common.replication_factor, options=self.kafka_options
            )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.common.bootstrap_servers,
            client_id=self.app.id,
            acks="all",
            # The batch loop flushes before it commits; a linger would only add latency.
            linger_ms=0,
            max_batch_size=256 * 1024,
            # Idempotent on Apache Kafka: aiokafka then retries a batch until the broker takes
            # it, with no duplicate, so a broker restart does not fail the service's output.
            enable_idempotence=self.common.idempotent_producers,
            **self.kafka_options,
        )
        self._consumer = AIOKafkaConsumer(**self._consumer_options())
        await self._producer.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            for fn in self.app.tasks:
                tasks.append(self._spawn(fn.__name__, fn()))
            for topic, agent in self.app.agents:
                tasks.append(self._spawn(f"agent:{topic.name}", agent(Stream(topic))))
            timers = [*self.app.timers, (2.0, self._lag_timer), (self.settings.commit_interval_s, self._commit_if_due)]
            for interval, fn in timers:
                tasks.append(self._spawn(f"timer:{fn.__name__}", self._every(interval, fn)))
            if self._sources:
                await self._consumer.start()
                self._consumer.subscribe(self._sources, listener=_Rebalance(self))
                await self._consume()
            else:
                await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()  # leaves the group: its partitions move at once
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()
        if self._failure is not None:
            raise self._failure

    async def _consume(self) -> None:
        assert self._consumer is not None
        _IN_BATCH.set(True)  # this task's sends ride on its batches; tasks spawned before it keep False
        window_ms = int(self.settings.batch_window_s * 1000)
        while not self._stopping.is_set():
            batches, skipped = await self._fetch(window_ms)
            if not batches and skipped is None:
                continue
            await self._state_ready.wait()
            async with self._batch_lock:
                # Records fetched before a rebalance may belong to partitions given away meanwhile.
                assigned = self._consumer.assignment()
                batches = {tp: rs for tp, rs in batches.items() if tp in assigned and rs}
                if skipped is not None and skipped.tp not in assigned:
                    skipped = None  # its new owner meets the batch and skips it
                for tp, rs in batches.items():
                    # Never backwards: past a skipped poison batch stays past it.
                    self._fetched_to[tp] = max(self._fetched_to.get(tp, 0), rs[-1].offset + 1)
                if skipped is not None:
                    self._fetched_to[skipped.tp] = skipped.batch.last + 1
                if batches or skipped is not None:
                    await self._process(batches, skipped)
        for hook in self.app.shutdown_hooks:
            await hook()
        await self.settle_all()
        self.log.info("service_stopping", processed_partitions=len(self._processed))

    async def _fetch(self, window_ms: int) -> tuple[dict[TopicPartition, list[ConsumerRecord]], poison.Isolated | None]:
        """The next records, and the poison batch skipped to get them if there was one."""
        assert self._consumer is not None
        try:
            return await self._consumer.getmany(timeout_ms=window_ms, max_records=self.settings.batch_size), None
        except Exception as exc:
            # aiokafka raises whatever decoding a fetched batch raised; what no batch raises is raised again.
            if not poison.may_be_poison(exc):
                raise
            try:
                found = await self._isolate_poison()
            except IllegalStateError as moved:
                # The group rebalanced meanwhile: positions restart from the committed offsets,
                # and a poison batch still ahead raises again.
                self.log.warning("poison_isolation_interrupted", error=str(moved)[:200])
                return {}, None
            if found is None:
                raise
            return found.records, found

    async def _isolate_poison(self) -> poison.Isolated | None:
        """After ``getmany()`` failed to decode a batch: find the batch and move the consumer
        past it (shared/poison.py); None if no batch raises."""
        assert self._consumer is not None
        client = AIOKafkaClient(
            bootstrap_servers=self.common.bootstrap_servers, client_id=f"{self.app.id}-poison", **self.kafka_options
        )
        max_wait_ms = self.settings.fetch_max_wait_ms or self.common.effective_fetch_max_wait_ms

        async def read(tp: TopicPartition, offset: int) -> bytes:
            return await poison.read_log(client, tp, offset, MAX_PARTITION_FETCH_BYTES, max_wait_ms)

        try:
            await client.bootstrap()
            return await poison.isolate(self._consumer, self._fetched_to, read, POISON_FETCH_TIMEOUT_MS)
        finally:
            await client.close()

    async def _poison_in_changelog(self, skipped: poison.Isolated) -> None:
        """A changelog batch that cannot be decoded: recovery goes on without it (its keys
        keep their older values), counted and logged; it is the service's own record."""
        self.metrics.poison_batches.labels(self.service, skipped.tp.topic).inc()
        self.log.error("poison_batch_skipped", during="state_recovery", **poison.log_fields(skipped))

    async def _dead_letter_batch(self, skipped: poison.Isolated) -> None:
        """Count, log and dead-letter a skipped poison batch by its offset range."""
        tp, batch = skipped.tp, skipped.batch
        self.metrics.poison_batches.labels(self.service, tp.topic).inc()
        self.log.error("poison_batch_skipped", **poison.log_fields(skipped))
        error = PoisonBatch(f"record batch at offsets {batch.first}-{batch.last} cannot be decoded: {skipped.error!r}")
        raw = batch.raw if len(batch.raw) <= POISON_RAW_MAX_BYTES else None
        source = ConsumerRecord(
            topic=tp.topic,
            partition=tp.partition,
            offset=batch.first,
            timestamp=-1,
            timestamp_type=-1,
            key=None,
            value=raw,
            checksum=None,
            serialized_key_size=-1,
            serialized_value_size=len(raw) if raw else -1,
            headers=(),
        )
        await self.dead_letter(source, error)


def build_context(service: str, settings_cls: type[S]) -> ServiceContext[S]:
    common = CommonSettings()
    settings = settings_cls()
    configure_logging(common.log_level, json=common.log_json)
    log = get_logger(service=service)
    topics = Topics(common.topic_prefix, common.partitions)
    return ServiceContext(
        service=service,
        common=common,
        settings=settings,
        app=ServiceApp(f"{common.topic_prefix}{service}"),
        serde=Serde(FileSchemaRegistry(common.schema_dir)),
        topics=topics,
        metrics=ServiceMetrics(service),
        log=log,
        kafka_options=client_options(common),
    )


def run_worker(ctx: ServiceContext[Any]) -> None:
    """Run the service in the foreground until SIGINT/SIGTERM; a failed task exits non-zero."""
    ctx.metrics.serve(ctx.common.metrics_addr, ctx.settings.metrics_port)
    ctx.metrics.up.labels(ctx.service).set(1)
    ctx.log.info(
        "service_starting",
        bootstrap=ctx.common.bootstrap_servers,
        prefix=ctx.common.topic_prefix,
        metrics_port=ctx.settings.metrics_port,
    )
    try:
        asyncio.run(ctx.run())
    except Exception as exc:  # noqa: BLE001 - already logged where it happened; exit non-zero
        ctx.log.error("service_failed", error=repr(exc)[:500])
        raise SystemExit(1) from None
    ctx.log.info("service_stopped")
