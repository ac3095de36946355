"""Poison batches: record batches the consumer cannot decode (a corrupt body, a codec it lacks).

aiokafka decodes a fetched batch inside ``getmany()`` and raises from there without naming
the partition (``UnsupportedCodecError``, a decompressor's error, ``BadGzipFile``...). Worse,
the records that call had already drained from other partitions are dropped while their
positions moved past them (the failing partition's position stays put). So on such an error
the runtime calls ``isolate``, which uses the consumer's own fetch path and one raw Fetch:

1. every assigned partition is rewound to the offset after the last record handed to the
   handlers (without one, to its committed offset, else the log start: the runtime resets
   to earliest), which gives back what the failed call dropped;
2. each partition alone is drained, a fetch window at a time, until it raises, stops moving,
   or has drained a window starting at or past where the failed call left it (the window
   that failed starts no later): the first that raises holds the poison batch; what the
   others returned is handed to the handlers as usual;
3. in that partition the records before the batch are taken one at a time (one record per
   call keeps aiokafka from dropping them again), up to the call that raises;
4. the batch's offset range comes from its header, read with a raw Fetch at that offset
   (brokers return whole batches) and decoded as the consumer decodes; if no header can be
   read, offsets are stepped one at a time until a fetch no longer raises, up to the high
   watermark;
5. the consumer is moved past the batch.

Each step is bounded (by windows up to where the failed call was, by one window's records,
by one Fetch or the high watermark). If no partition raises, ``isolate`` returns None and the
caller raises the original error: it did not come from a record batch.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import CorruptRecordException, KafkaError, UnsupportedCodecError
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

# A batch starts with base offset (int64) and length (int32) of what follows.
_LOG_OVERHEAD = struct.calcsize(">qi")
_MAGIC_OFFSET = _LOG_OVERHEAD + 4  # after the partition leader epoch (int32)
_READ_UNCOMMITTED = 0
UNBOUNDED = 1 << 30  # max_records that drains a whole fetch window in one getmany() call

ReadLog = Callable[[TopicPartition, int], Awaitable[bytes]]


@dataclass(frozen=True)
class BadBatch:
    """Offsets ``first``..``last`` (inclusive) of one undecodable batch; ``raw`` is the batch
    as the broker stored it, header included (empty when its header could not be read)."""

    first: int
    last: int
    raw: bytes = b""


@dataclass
class Isolated:
    """What ``isolate`` found: the poison batch of ``tp``, the error decoding it raised, and
    the records fetched meanwhile that still need handling, per partition in offset order."""

    tp: TopicPartition
    batch: BadBatch
    error: BaseException
    records: dict[TopicPartition, list[ConsumerRecord]] = field(default_factory=dict)


def log_fields(skipped: Isolated) -> dict[str, object]:
    """What a ``poison_batch_skipped`` log line says of a skipped batch."""
    tp, batch = skipped.tp, skipped.batch
    return {
        "topic": tp.topic,
        "partition": tp.partition,
        "first_offset": batch.first,
        "last_offset": batch.last,
        "batch_bytes": len(batch.raw),
        "error": repr(skipped.error)[:500],
    }


def may_be_poison(exc: BaseException) -> bool:
    """Whether ``exc``, raised by ``getmany()``, may come from decoding a record batch:
    aiokafka's CRC and codec errors, or anything that is not a Kafka client error (a
    decompressor's, a parser's). ``isolate`` then finds out whether a batch raises it."""
    if isinstance(exc, CorruptRecordException | UnsupportedCodecError):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, KafkaError)


def first_undecodable(data: bytes, from_offset: int) -> BadBatch | None:
    """The first record batch of a Fetch response's ``data`` that ends at or past
    ``from_offset`` and cannot be decoded as aiokafka's consumer decodes it (CRC checked,
    control batches skipped unread, records decompressed and parsed); None if every
    complete batch decodes or no batch header can be read."""
    pos = 0
    while pos + _MAGIC_OFFSET < len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        end = pos + _LOG_OVERHEAD + length
        if length <= 0 or end > len(data):
            return None  # an unreadable length, or the window's last batch cut short
        raw = data[pos:end]
        pos = end
        try:
            batch = MemoryRecords(raw).next_batch()
            if batch is None:
                return None
            next_offset = batch.next_offset
        except Exception:  # noqa: BLE001 - a header aiokafka cannot parse: no range to read
            return None
        if next_offset <= from_offset:
            continue
        try:
            if not batch.validate_crc():
                raise CorruptRecordException("invalid CRC")
            if getattr(batch, "is_control_batch", False):
                continue
            for _ in batch:
                pass
        except Exception:  # noqa: BLE001 - untrusted bytes: any decoding error makes it poison
            return BadBatch(max(base_offset, from_offset), next_offset - 1, raw)
    return None


async def read_log(client: AIOKafkaClient, tp: TopicPartition, offset: int, max_bytes: int, max_wait_ms: int) -> bytes:
    """The raw record batches of ``tp`` from ``offset`` (one Fetch to its leader)."""
    leader = (await client.fetch_all_metadata()).leader_for_partition(tp)
    if leader is None or leader < 0:
        return b""
    # min_bytes 1: the leader answers as soon as it has the batch; Tansu answers a zero
    # max wait with no data at all.
    request = FetchRequest(
        max_wait_ms, 1, max_bytes, _READ_UNCOMMITTED, [(tp.topic, [(tp.partition, offset, max_bytes)])]
    )
    response = await client.send(leader, request)
    for topic, partitions in response.topics:
        for partition, error_code, _highwater, *rest in partitions:
            if (topic, partition) == (tp.topic, tp.partition) and error_code == 0:
                return bytes(rest[-1] or b"")
    return b""


async def isolate(
    consumer: AIOKafkaConsumer, handed: Mapping[TopicPartition, int], read: ReadLog, timeout_ms: int
) -> Isolated | None:
    """Find the batch behind a decoding error of ``consumer.getmany()`` and move past it (see
    the module's docstring). ``handed`` is the next offset after the last record handed to
    the handlers, per partition; ``read`` reads raw batches (``read_log``)."""
    assigned = sorted(consumer.assignment())
    reached = {tp: await consumer.position(tp) for tp in assigned}
    for tp in assigned:
        consumer.seek(tp, await _known_good(consumer, tp, handed))
    records: dict[TopicPartition, list[ConsumerRecord]] = {}
    for tp in assigned:
        drained, raised = await _drain(consumer, tp, reached[tp], timeout_ms)
        if raised:
            found = await _skip_batch(consumer, tp, read, timeout_ms)
            if found is None:
                return None
            batch, error, good = found
            drained += good
        if drained:
            records[tp] = drained
        if raised:
            return Isolated(tp, batch, error, records)
    return None


async def _known_good(consumer: AIOKafkaConsumer, tp: TopicPartition, handed: Mapping[TopicPartition, int]) -> int:
    if tp in handed:
        return handed[tp]
    committed = await consumer.committed(tp)
    if committed is not None:
        return int(committed)
    return int((await consumer.beginning_offsets([tp]))[tp])


async def _drain(
    consumer: AIOKafkaConsumer, tp: TopicPartition, reached: int, timeout_ms: int
) -> tuple[list[ConsumerRecord], bool]:
    """The records of ``tp``'s windows that decode, and whether a window then raised (the
    consumer is then still at that window's start)."""
    out: list[ConsumerRecord] = []
    while True:
        start = await consumer.position(tp)
        highwater = consumer.highwater(tp)
        if highwater is None or start >= highwater:
            return out, False
        try:
            got = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=UNBOUNDED)
        except Exception as exc:
            if not may_be_poison(exc):
                raise
            return out, True
        out.extend(got.get(tp, []))
        if start >= reached or await consumer.position(tp) == start:
            return out, False


async def _skip_batch(
    consumer: AIOKafkaConsumer, tp: TopicPartition, read: ReadLog, timeout_ms: int
) -> tuple[BadBatch, BaseException, list[ConsumerRecord]] | None:
    """In ``tp``, whose current fetch window raises: the records before the poison batch,
    the batch, and its error; the consumer is left past it. None if the batch did not come
    back within the timeout (nothing skipped)."""
    consumer.seek(tp, await consumer.position(tp))  # drops the fetch result that raised
    good: list[ConsumerRecord] = []
    while True:
        try:
            got = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=1)
        except Exception as exc:
            if not may_be_poison(exc):
                raise
            error = exc
            break
        if not got.get(tp):
            return None
        good.extend(got[tp])
    first = await consumer.position(tp)
    try:
        batch = first_undecodable(await read(tp, first), first)
    except (KafkaError, OSError):
        batch = None
    if batch is None:
        last = first
        while last + 1 < (consumer.highwater(tp) or 0) and await _raises_at(consumer, tp, last + 1, timeout_ms):
            last += 1
        batch = BadBatch(first, last)
    consumer.seek(tp, batch.last + 1)
    return batch, error, good


async def _raises_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, timeout_ms: int) -> bool:
    consumer.seek(tp, offset)
    try:
        await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=1)
    except Exception as exc:
        if not may_be_poison(exc):
            raise
        return True
    return False
