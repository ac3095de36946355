"""Plain aiokafka helpers: topic creation, and reading topics to their end; the security
options every Kafka client is built with.

"The end" is taken from the high watermark that fetch responses carry, never from
ListOffsets: the embedded broker answers ListOffsets with the base offset of the last
batch plus one, not the log end.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from driftloop.shared import poison
from driftloop.shared.errors import BrokerUnavailable, ConfigError
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import TopicSpec

#: Keyword arguments for an aiokafka client: security_protocol, ssl_context, sasl_*.
ClientOptions = Mapping[str, Any]
#: Told of a record batch that was skipped because it cannot be decoded.
OnPoison = Callable[[poison.Isolated], Awaitable[None]]


def _ssl_context(common: CommonSettings) -> ssl.SSLContext:
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=common.ssl_cafile, certfile=common.ssl_certfile, keyfile=common.ssl_keyfile
        )
        return context
    except (ssl.SSLError, OSError) as exc:
        # The reason only (e.g. "PEM lib"), never file contents or key material.
        raise ConfigError(f"cannot build the TLS context from DRIFTLOOP_SSL_*: {type(exc).__name__}") from None


def client_options(common: CommonSettings) -> dict[str, Any]:
    """The security keyword arguments of every aiokafka client (producer, consumer, admin).

    SASL settings are passed only when the protocol asks for SASL, the TLS context only
    for SSL and SASL_SSL; PLAINTEXT gets nothing but the protocol.
    """
    opts: dict[str, Any] = {"security_protocol": common.security_protocol}
    if common.uses_tls:
        opts["ssl_context"] = _ssl_context(common)
    if common.uses_sasl:
        assert common.sasl_password is not None  # the settings validator guarantees it
        # aiokafka takes the SCRAM credentials under the same sasl_plain_* names.
        opts["sasl_mechanism"] = common.sasl_mechanism
        opts["sasl_plain_username"] = common.sasl_username
        opts["sasl_plain_password"] = common.sasl_password.get_secret_value()
    return opts


async def create_topics(
    bootstrap: str, specs: Iterable[TopicSpec], replication_factor: int = 1, *, options: ClientOptions | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="driftloop-topics", **(options or {}))
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}") from exc
    try:
        existing = set(await admin.list_topics())
        todo = [s for s in specs if s.name not in existing]
        if not todo:
            return []
        new = [NewTopic(s.name, s.partitions, replication_factor, topic_configs=dict(s.config)) for s in todo]
        resp = await admin.create_topics(new)
        created = []
        for name, code, *_ in resp.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                raise BrokerUnavailable(f"creating topic {name} failed with Kafka error {code}")
        await _until_visible(admin, {s.name: s.partitions for s in todo})
        return created
    finally:
        await admin.close()


TOPICS_VISIBLE_TIMEOUT_S = 30.0


async def _until_visible(admin: AIOKafkaAdminClient, partitions: dict[str, int]) -> None:
    """Until Metadata names every topic with all its partitions led. A consumer that joins
    its group before then is assigned nothing, and its client looks again only at its next
    metadata refresh, minutes later."""
    deadline = time.monotonic() + TOPICS_VISIBLE_TIMEOUT_S
    while True:
        found = {t["topic"]: t for t in await admin.describe_topics(list(partitions))}
        if all(
            (t := found.get(name)) is not None
            and t["error_code"] == 0
            and len(t["partitions"]) == n
            and all(p["leader"] >= 0 for p in t["partitions"])
            for name, n in partitions.items()
        ):
            return
        if time.monotonic() > deadline:
            missing = sorted(name for name in partitions if name not in found)
            raise BrokerUnavailable(f"topics created but not in the broker's metadata after 30 s: {missing[:5]}")
        await asyncio.sleep(0.1)


async def delete_topics_with_prefix(bootstrap: str, prefix: str, *, options: ClientOptions | None = None) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; return the names deleted."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="driftloop-topics", **(options or {}))
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}") from exc
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


async def start_client(client: AIOKafkaProducer | AIOKafkaConsumer, bootstrap: str) -> None:
    """Start a producer or consumer; an unreachable broker is a BrokerUnavailable, with the
    client closed (no "Unclosed" warning, no traceback for the command line to show)."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        await client.stop()
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}") from exc


def producer(bootstrap: str, *, options: ClientOptions | None = None, **kwargs: object) -> AIOKafkaProducer:
    opts: dict[str, object] = {"linger_ms": 5, "max_batch_size": 256 * 1024, "acks": "all", **(options or {})}
    opts.update(kwargs)
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **opts)


async def produce_all(
    bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]], *, options: ClientOptions | None = None
) -> int:
    """Produce (topic, key, value) records in order and wait until the broker has them all."""
    prod = producer(bootstrap, options=options)
    await start_client(prod, bootstrap)
    n = 0
    try:
        for topic, key, value in records:
            await prod.send(topic, key=key, value=value)
            n += 1
        await prod.flush()
    finally:
        await prod.stop()
    return n


OutRecord = tuple[str, bytes | None, bytes | None, int | None]  # topic, key, value, partition (None: by key)


async def send_batched(
    prod: AIOKafkaProducer,
    records: Iterable[OutRecord],
    partitions_of: Callable[[str], Awaitable[int]],
    partitioner: Partitioner,
) -> list[asyncio.Future[Any]]:
    """Hand ``records`` to ``prod`` as one record batch per topic partition at a time (one
    append each instead of a send() per record), in order within each partition; records
    without a partition go where the Java client would put their key. Returns the delivery
    futures: the caller decides when to wait for them."""
    builders: dict[tuple[str, int], Any] = {}
    deliveries: list[asyncio.Future[Any]] = []
    for topic, key, value, partition in records:
        if partition is None:
            partition = partitioner.partition(key, await partitions_of(topic))
        builder = builders.get((topic, partition))
        if builder is not None and builder.append(key=key, value=value, timestamp=None) is not None:
            continue
        if builder is not None:  # full: ship it, start the next one of this partition
            deliveries.append(await prod.send_batch(builder, topic, partition=partition))
        builder = builders[(topic, partition)] = prod.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            # Larger than a whole batch: the producer sizes a batch of its own for it.
            del builders[(topic, partition)]
            deliveries.append(await prod.send(topic, value, key, partition=partition))
    for (topic, partition), builder in builders.items():
        deliveries.append(await prod.send_batch(builder, topic, partition=partition))
    return deliveries


async def produce_batched(
    bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]], *, options: ClientOptions | None = None
) -> int:
    """Produce (topic, key, value) records with ``send_batched`` and wait until the broker has
    them all: a burst offered faster than with ``produce_all`` (README, Measured choices), in
    order within each partition."""
    prod = producer(bootstrap, options=options)
    await start_client(prod, bootstrap)
    counts: dict[str, int] = {}
    n = 0

    async def partitions_of(topic: str) -> int:
        if topic not in counts:
            counts[topic] = len(await prod.partitions_for(topic))
        return counts[topic]

    def keyed() -> Iterator[OutRecord]:
        nonlocal n
        for topic, key, value in records:
            n += 1
            yield topic, key, value, None

    try:
        await asyncio.gather(*await send_batched(prod, keyed(), partitions_of, Partitioner()))
    finally:
        await prod.stop()
    return n


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    idle_timeout_s: float = 2.0,
    max_wait_s: float = 60.0,
    options: ClientOptions | None = None,
    on_poison: OnPoison | None = None,
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning to its current high watermark."""
    out: list[ConsumerRecord] = []
    async for batch in tail_topic(
        bootstrap, topic, stop_at_end=True, max_wait_s=max_wait_s, options=options, on_poison=on_poison
    ):
        out.extend(batch)
    return out


async def tail_topic(
    bootstrap: str,
    topic: str,
    *,
    stop_at_end: bool = False,
    max_wait_s: float | None = None,
    poll_ms: int = 200,
    start: dict[int, int] | None = None,
    partitions: Iterable[int] | None = None,
    options: ClientOptions | None = None,
    on_poison: OnPoison | None = None,
) -> AsyncIterator[list[ConsumerRecord]]:
    """Batches of ``topic`` from the beginning, without a consumer group.

    With ``stop_at_end`` it stops once every partition's position has reached the end a
    fetch reported: the last stable offset (the high watermark unless a transaction is
    open; read_committed, it reads what is committed now, never waiting for an open one).
    ``start`` maps partitions to the offset to start at.
    With ``on_poison``, a record batch that cannot be decoded is skipped (shared/poison.py)
    and handed to it; without, its error is raised.
    """
    # A short fetch wait: the embedded broker holds a fetch for its whole max wait.
    # read_committed: what an aborted transaction wrote is never read (both brokers take it;
    # without transactions it reads everything).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        isolation_level="read_committed",
        **(options or {}),
    )
    await start_client(consumer, bootstrap)
    try:
        parts = await _partitions(consumer, topic)
        if partitions is not None:
            parts = sorted(set(parts) & set(partitions))
        if not parts:
            return
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            if start and tp.partition in start:
                consumer.seek(tp, start[tp.partition])
        deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
        # Where each partition starts: isolating a poison batch rewinds to these, never before.
        handed = {tp: await consumer.position(tp) for tp in tps}
        while True:
            try:
                got = await consumer.getmany(timeout_ms=poll_ms, max_records=5000)
            except Exception as exc:  # a decoder's error can be of any type
                if on_poison is None or not poison.may_be_poison(exc):
                    raise
                found = await _isolate(consumer, handed, bootstrap, options)
                if found is None:
                    raise
                await on_poison(found)
                handed[found.tp] = found.batch.last + 1
                got = found.records
            for tp, recs in got.items():
                if recs:
                    handed[tp] = recs[-1].offset + 1
            batch = [r for recs in got.values() for r in recs]
            if batch:
                yield batch
            if stop_at_end and not batch and await _at_end(consumer, tps):
                return
            if deadline is not None and time.monotonic() > deadline:
                if stop_at_end:
                    raise TimeoutError(f"did not reach the end of {topic} within {max_wait_s} s")
                return
    finally:
        await consumer.stop()


POISON_FETCH_TIMEOUT_MS = 10_000
POISON_READ_BYTES = 1024 * 1024


async def _isolate(
    consumer: AIOKafkaConsumer, handed: dict[TopicPartition, int], bootstrap: str, options: ClientOptions | None
) -> poison.Isolated | None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id="driftloop-poison", **(options or {}))

    async def read(tp: TopicPartition, offset: int) -> bytes:
        return await poison.read_log(client, tp, offset, POISON_READ_BYTES, 100)

    try:
        await client.bootstrap()
        return await poison.isolate(consumer, handed, read, POISON_FETCH_TIMEOUT_MS)
    finally:
        await client.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        # Looked up once more after the deadline: a process paused meanwhile (SIGSTOP, a
        # suspended laptop) wakes up past it without having asked.
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(f"topic {topic} does not exist")
        await consumer._client.force_metadata_update()  # aiokafka has no public call
        await asyncio.sleep(0.1)


async def _at_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        # What is committed: a read_committed consumer stops at the first open transaction
        # (the last stable offset), which may be short of the high watermark.
        end = consumer.last_stable_offset(tp)
        if end is None or end < 0:
            end = consumer.highwater(tp)
        if end is None or await consumer.position(tp) < end:
            return False
    return True


async def load_registry_records(
    bootstrap: str, topic: str, *, options: ClientOptions | None = None, on_poison: OnPoison | None = None
) -> list[ConsumerRecord]:
    """The registry topic as it stands now, oldest first."""
    return await read_topic(bootstrap, topic, max_wait_s=30.0, options=options, on_poison=on_poison)


async def follow(
    bootstrap: str,
    topic: str,
    on_records: Callable[[list[ConsumerRecord]], Awaitable[None]],
    start: dict[int, int] | None = None,
    *,
    options: ClientOptions | None = None,
    on_poison: OnPoison | None = None,
) -> None:
    """Call ``on_records`` with every batch of ``topic`` from ``start`` (default: the
    beginning), forever.

    Every instance reads the whole topic (no consumer group): this is how each service
    keeps its own copy of the event-sourced registry.
    """
    async for batch in tail_topic(bootstrap, topic, start=start, options=options, on_poison=on_poison):
        await on_records(batch)


class Partitioner:
    """The Java client's default partitioning (murmur2 of the key), so that records keyed by
    entity land where any Kafka producer would put them: joins stay co-partitioned. Keys
    without a key go round-robin. The hash is pure Python; recent keys are remembered."""

    def __init__(self, cache_size: int = 100_000) -> None:
        self.cache_size = cache_size
        self._hashes: dict[bytes, int] = {}
        self._next = 0

    def partition(self, key: bytes | None, partitions: int) -> int:
        if key is None:
            self._next += 1
            return self._next % partitions
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self.cache_size:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return h % partitions
