"""A service's handlers in-process, with no broker: for fast unit tests of the shells.

    svc = Service("features", FeaturesSettings(), CommonSettings())
    shell = Features(svc)
    h = Harness(svc)
    await h.feed(EVENTS_CLEAN, event)
    assert h.sent(FEATURES)[0]["event_id"] == event["event_id"]
    assert h.dead_letters() == []

A fed record is encoded with its topic's schema and handed over exactly as the batch loop
hands a consumed record (shared/runtime/dispatch.py), so decoding, dead letters and store
writes behave as they do in the running service. Each ``feed`` is one batch: the stores'
changelog records are drained after it. What tasks and timers send (``svc.publisher``) is
captured as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import ConsumerRecord

from driftloop.shared.errors import SchemaMismatch
from driftloop.shared.kafka import OutRecord
from driftloop.shared.records import DeadLetter
from driftloop.shared.runtime.dispatch import Dispatcher
from driftloop.shared.runtime.service import Service
from driftloop.shared.topics import DEADLETTER, Topic

R = TypeVar("R")


@dataclass(frozen=True)
class StoreWrite:
    store: str  # the store's changelog topic
    partition: int
    key: str
    value: Any  # None: a deletion


class Harness:
    def __init__(self, svc: Service[Any]) -> None:
        self.svc = svc
        self.dispatcher = Dispatcher(svc)
        #: Every record the service produced, in order: (topic, key, value, partition).
        self.produced: list[OutRecord] = []
        self.store_writes: list[StoreWrite] = []
        self._offsets: dict[tuple[str, int], int] = {}

        svc.publisher.bind(self.capture)

    async def capture(self, record: OutRecord) -> None:
        """What ``svc.publisher`` sends lands here (bound at start; bind it again after
        binding a stand-in)."""
        self.produced.append(record)

    def _message(self, topic: Topic[Any], value: bytes | None, key: bytes | None, partition: int) -> ConsumerRecord:
        name = self.svc.topics.name(topic)
        offset = self._offsets.get((name, partition), 0)
        self._offsets[(name, partition)] = offset + 1
        return ConsumerRecord(
            topic=name,
            partition=partition,
            offset=offset,
            timestamp=int(time.time() * 1000),
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key) if key else -1,
            serialized_value_size=len(value) if value else -1,
            headers=(),
        )

    def _encode(self, topic: Topic[R], record: R | bytes) -> bytes:
        if topic.record is None or isinstance(record, bytes):
            if not isinstance(record, bytes):
                raise AssertionError(f"{topic.short} carries raw bytes; feed bytes, not {type(record).__name__}")
            return record
        if not isinstance(record, dict):
            raise AssertionError(
                f"{topic.short} carries {topic.record} records; feed a dict, not {type(record).__name__}"
            )
        try:
            return self.svc.serde.encode(topic.record, record)
        except SchemaMismatch as exc:
            raise AssertionError(f"the record fed to {topic.short} is not a {topic.record}: {exc}") from None

    async def feed(
        self, topic: Topic[R], *records: R | bytes, key: bytes | str | None = None, partition: int = 0
    ) -> None:
        """Hand ``records`` to the service's handler of ``topic`` as one batch of one partition.
        A record may be the typed record (encoded with the topic's schema) or raw bytes (as
        a producer could send them, bad ones included)."""
        name = self.svc.topics.name(topic)
        if name not in self.svc.routes:
            handled = sorted(r.topic.short for r in self.svc.routes.values())
            raise AssertionError(f"{self.svc.name} does not consume {topic.short} (it consumes {handled})")
        route = self.svc.routes[name]
        if route.after is not None and not route.after.is_set():
            raise AssertionError(f"{self.svc.name} holds {topic.short} until its start condition is set")
        raw_key = key.encode() if isinstance(key, str) else key
        messages = [self._message(topic, self._encode(topic, r), raw_key, partition) for r in records]
        await self.dispatcher.handle_all(name, messages)
        self._end_batch()

    def _end_batch(self) -> None:
        self.produced.extend(self.svc.outbox)
        self.svc.outbox.clear()
        for store in self.svc.stores:
            for partition, key, value in store.drain():
                self.store_writes.append(StoreWrite(store.name, partition, key, value))

    async def tick(self) -> None:
        """Run every timer once, as the clock would."""
        for _, fn in self.svc.timers:
            await fn()

    async def shutdown(self) -> None:
        """Run the shutdown hooks, as the service does after its last batch."""
        for fn in self.svc.shutdown_hooks:
            await fn()
        self._end_batch()

    def recovered(self) -> None:
        """Run the after-recovery hooks, as a rebalance does."""
        for fn in self.svc.recovered_hooks:
            fn()

    def raw(self, topic: Topic[Any]) -> list[OutRecord]:
        name = self.svc.topics.name(topic)
        return [r for r in self.produced if r[0] == name]

    def sent(self, topic: Topic[R]) -> list[R]:
        """The records sent to ``topic``, decoded with its schema."""
        if topic.record is None:
            raise AssertionError(f"{topic.short} carries raw bytes: read raw(topic)")
        record = topic.record
        return [self.svc.serde.decode(record, value) for _, _, value, _ in self.raw(topic)]  # type: ignore[misc]

    def keys(self, topic: Topic[Any]) -> list[bytes | None]:
        return [key for _, key, _, _ in self.raw(topic)]

    def dead_letters(self) -> list[DeadLetter]:
        return self.sent(DEADLETTER)

    def codes(self) -> list[str]:
        """The error codes of the dead letters, in order."""
        return [d["error_code"] for d in self.dead_letters()]

    def writes(self, store_suffix: str) -> list[StoreWrite]:
        """The changelog writes of the store whose name ends with ``store_suffix``."""
        return [w for w in self.store_writes if w.store.endswith(f"-{store_suffix}-changelog")]

    def clear(self) -> None:
        self.produced.clear()
        self.store_writes.clear()
