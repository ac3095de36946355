"""A service's declarations and the resources its shell is built with.

A shell declares, once, at start::

    svc.on(FEATURES, self.on_vector, after=self.model_loaded)   # once per record
    svc.every(2.0, self.refresh_gauges)                          # a timer
    svc.task(self.follow_registry)                               # runs for the service's life
    svc.on_shutdown(self.flush)                                  # after the last batch
    store = svc.store("entity-windows")                          # changelog-backed state

and the runtime (runner.py) runs what was declared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from aiokafka import ConsumerRecord

from driftloop.shared.kafka import OutRecord, client_options
from driftloop.shared.log import configure_logging, get_logger
from driftloop.shared.metrics import ServiceMetrics
from driftloop.shared.runtime.context import Context, Cursor, Publisher
from driftloop.shared.runtime.deadletters import DeadLetters
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings, ServiceSettings
from driftloop.shared.state import StateStore
from driftloop.shared.topics import DEADLETTER, Topic, Topics

S = TypeVar("S", bound=ServiceSettings)
R = TypeVar("R")
D = TypeVar("D")  # what a custom decoder makes of a record
Handler = Callable[[R, Context], Awaitable[None]]
Decoder = Callable[[ConsumerRecord], R]
Job = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Route(Generic[R]):
    """A source topic, how its records are decoded, and the handler they go to."""

    topic: Topic[R]
    handler: Handler[R]
    decode: Decoder[R]
    #: Records of this topic wait until this is set (inference waits for its model).
    after: asyncio.Event | None = None


class Service(Generic[S]):
    def __init__(
        self,
        name: str,
        settings: S,
        common: CommonSettings,
        *,
        serde: Serde | None = None,
        metrics: ServiceMetrics | None = None,
        log: Any = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.common = common
        #: The consumer group, client id and prefix of the changelog topics.
        self.group_id = f"{common.topic_prefix}{name}"
        self.topics = Topics(common.topic_prefix, common.partitions)
        self.serde = serde or Serde(FileSchemaRegistry(common.schema_dir))
        self.metrics = metrics or ServiceMetrics(name)
        self.log = log if log is not None else get_logger(service=name)
        #: Security options of every Kafka client of the service.
        self.kafka_options = client_options(common)
        self.dead_letters = DeadLetters(name, self.topics.name(DEADLETTER), self.serde, self.metrics, self.log)
        self.cursor = Cursor()
        #: What the batch in hand owes the broker, in order (drained by the checkpointer).
        self.outbox: list[OutRecord] = []
        self.context = Context(self, self.outbox, self.cursor)
        self.publisher = Publisher(self)
        self.routes: dict[str, Route[Any]] = {}
        self.stores: list[StateStore] = []
        self.timers: list[tuple[float, Job]] = []
        self.tasks: list[Job] = []
        self.shutdown_hooks: list[Job] = []
        self.recovered_hooks: list[Callable[[], None]] = []
        self._out_counters: dict[str, Any] = {}
        self._in_counters: dict[str, Any] = {}

    @classmethod
    def from_env(cls, name: str, settings_cls: type[S]) -> Service[S]:
        """Settings built once, from the environment; logging configured by them."""
        common = CommonSettings()
        settings = settings_cls()
        configure_logging(common.log_level, json=common.log_json)
        return cls(name, settings, common)

    # --- declarations -------------------------------------------------------------------------

    @overload
    def on(self, topic: Topic[R], handler: Handler[R], *, after: asyncio.Event | None = None) -> None: ...

    @overload
    def on(
        self, topic: Topic[Any], handler: Handler[D], *, decode: Decoder[D], after: asyncio.Event | None = None
    ) -> None: ...

    def on(
        self,
        topic: Topic[Any],
        handler: Handler[Any],
        *,
        decode: Decoder[Any] | None = None,
        after: asyncio.Event | None = None,
    ) -> None:
        """Consume ``topic`` in this service's group: ``handler(record, ctx)`` once per record.
        A record is decoded with the topic's schema unless ``decode`` is given (raw topics
        need one); a record whose decoding or handler raises is dead-lettered with the
        error's code, and the batch carries on."""
        name = self.topics.name(topic)
        if name in self.routes:
            raise ValueError(f"{self.name} already has a handler for {topic.short}")
        if decode is None:
            if topic.record is None:
                raise ValueError(f"{topic.short} carries raw bytes: on() needs a decode function for it")
            decode = self._decoder(topic.record)
        self.routes[name] = Route(topic, handler, decode, after)
        self.metrics.poison_batches.labels(self.name, name)  # exported at 0 from the start

    def _decoder(self, record: str) -> Decoder[Any]:
        serde = self.serde

        def decode(message: ConsumerRecord) -> Any:
            return serde.decode_input(record, message.value)

        return decode

    def every(self, seconds: float, fn: Job) -> None:
        """Run ``fn`` every ``seconds`` while the service runs (what it sends goes out at once)."""
        self.timers.append((seconds, fn))

    def task(self, fn: Job) -> None:
        """Run ``fn`` once the service starts, for as long as it runs; if it fails, the service stops."""
        self.tasks.append(fn)

    def on_shutdown(self, fn: Job) -> None:
        """Run ``fn`` once the last batch is handled, before its output settles and the service stops."""
        self.shutdown_hooks.append(fn)

    def on_recovered(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after every state recovery, e.g. to rebuild indexes over the stores."""
        self.recovered_hooks.append(fn)

    def store(self, name: str) -> StateStore:
        """A changelog-backed key-value store, co-partitioned with this service's input: a
        write goes to the changelog partition of the input record in hand."""
        store = StateStore(f"{self.group_id}-{name}-changelog", where=lambda: self.cursor.partition)
        self.stores.append(store)
        return store

    # --- counting -----------------------------------------------------------------------------

    def count_out(self, topic: str, n: int) -> None:
        counter = self._out_counters.get(topic)
        if counter is None:
            counter = self._out_counters[topic] = self.metrics.records_out.labels(self.name, topic)
        counter.inc(n)

    def count_in(self, topic: str, n: int) -> None:
        counter = self._in_counters.get(topic)
        if counter is None:
            counter = self._in_counters[topic] = self.metrics.records_in.labels(self.name, topic)
        counter.inc(n)
