"""What handlers see (``Context``) and what tasks send with (``Publisher``).

A handler's sends ride on its batch: they are queued in the outbox, produced with the
batch and committed with its offsets. A task or timer has no batch, so its ``Publisher``
produces each record at once and waits for it. Both encode and key a record from its
``Topic`` alone.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from aiokafka import ConsumerRecord

from driftloop.shared.kafka import OutRecord
from driftloop.shared.topics import Topic

if TYPE_CHECKING:
    from driftloop.shared.runtime.service import Service

R = TypeVar("R")


class Cursor:
    """The record being handled: set by the runtime before each handler call."""

    __slots__ = ("event_id", "message")

    def __init__(self) -> None:
        self.message: ConsumerRecord | None = None
        self.event_id: str | None = None

    @property
    def partition(self) -> int:
        """The input partition in hand (0 outside a handler): where store writes go."""
        return self.message.partition if self.message is not None else 0


def encode(svc: Service[Any], topic: Topic[R], record: R, key: str | bytes | None) -> OutRecord:
    """``record`` as the (topic, key, value, partition) the producer takes."""
    if topic.record is None:
        raise TypeError(f"{topic.short} carries raw bytes: send them with send_bytes")
    fields = cast("Mapping[str, Any]", record)
    if key is None and topic.key is not None:
        key = fields[topic.key]
    raw_key = key.encode() if isinstance(key, str) else key
    return (svc.topics.name(topic), raw_key, svc.serde.encode(topic.record, fields), None)


class Sender(Protocol):
    """Anything shell code can send with: a handler's Context or a task's Publisher."""

    async def send(self, topic: Topic[R], record: R, key: str | bytes | None = None) -> bytes: ...

    async def send_bytes(self, topic: Topic[Any], key: bytes | None, value: bytes) -> None: ...

    async def dead_letter(self, message: ConsumerRecord, exc: BaseException, event_id: str | None = None) -> None: ...


class Context:
    """Handed to every handler call with the decoded record."""

    __slots__ = ("_cursor", "_latency", "_outbox", "_svc")

    def __init__(self, svc: Service[Any], outbox: list[OutRecord], cursor: Cursor) -> None:
        self._svc = svc
        self._outbox = outbox
        self._cursor = cursor
        self._latency = svc.metrics.event_latency.labels(svc.name)

    @property
    def settings(self) -> Any:
        return self._svc.settings

    @property
    def log(self) -> Any:
        return self._svc.log

    @property
    def message(self) -> ConsumerRecord:
        """The Kafka record in hand: topic, partition, offset, timestamp (epoch ms), key, value."""
        assert self._cursor.message is not None, "Context.message outside a handler"
        return self._cursor.message

    @property
    def event_id(self) -> str | None:
        """The event_id of the record in hand, as the runtime decoded it."""
        return self._cursor.event_id

    @property
    def partition(self) -> int:
        return self._cursor.partition

    async def send(self, topic: Topic[R], record: R, key: str | bytes | None = None) -> bytes:
        """Queue ``record`` for the batch's output; returns its encoded value."""
        out = encode(self._svc, topic, record, key)
        self._outbox.append(out)
        return cast("bytes", out[2])

    async def send_bytes(self, topic: Topic[Any], key: bytes | None, value: bytes) -> None:
        """Queue an already encoded value (bytes that came in and go on unchanged)."""
        self._outbox.append((self._svc.topics.name(topic), key, value, None))

    async def dead_letter(self, message: ConsumerRecord, exc: BaseException, event_id: str | None = None) -> None:
        """Dead-letter a record other than the one in hand (one held back, say); the runtime
        dead-letters the record in hand itself when its handler raises."""
        self._outbox.append(self._svc.dead_letters.letter(message, exc, event_id))

    def observe_latency(self, ingest_time_ms: int | None) -> None:
        """Record how long the event in hand took from entering Kafka to this service's output."""
        if ingest_time_ms is not None:
            self._latency.observe(max(0.0, time.time() - ingest_time_ms / 1000))


Produce = Callable[[OutRecord], Awaitable[None]]


class Publisher:
    """Sends for tasks and timers: each record is produced at once and waited for."""

    def __init__(self, svc: Service[Any]) -> None:
        self._svc = svc
        self._produce: Produce | None = None

    def bind(self, produce: Produce) -> None:
        """Set by the runtime once its producer runs (the testing harness binds a list)."""
        self._produce = produce

    async def _out(self, record: OutRecord) -> None:
        assert self._produce is not None, "Publisher used before the service started"
        await self._produce(record)
        self._svc.count_out(record[0], 1)

    async def send(self, topic: Topic[R], record: R, key: str | bytes | None = None) -> bytes:
        out = encode(self._svc, topic, record, key)
        await self._out(out)
        return cast("bytes", out[2])

    async def send_bytes(self, topic: Topic[Any], key: bytes | None, value: bytes) -> None:
        await self._out((self._svc.topics.name(topic), key, value, None))

    async def dead_letter(self, message: ConsumerRecord, exc: BaseException, event_id: str | None = None) -> None:
        await self._out(self._svc.dead_letters.letter(message, exc, event_id))
