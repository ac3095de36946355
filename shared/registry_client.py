"""Keeping a service's copy of the event-sourced registry current, over Kafka."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter

from driftloop.shared import poison
from driftloop.shared.errors import InvalidRecord, PoisonBatch, RegistrySignatureInvalid
from driftloop.shared.kafka import ClientOptions, client_options, follow, load_registry_records
from driftloop.shared.log import get_logger
from driftloop.shared.registry import ChampionChange, Registry, registry_key
from driftloop.shared.serde import Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.signing import sign
from driftloop.shared.topics import MODELS_REGISTRY

Send = Callable[[bytes, bytes], Awaitable[None]]

# How long an own write's echo is awaited before it counts as lost. A writer that sends in a
# transaction (an open one is aborted by the broker after transaction.timeout.ms: 60 s,
# aiokafka's default) sees its echo at the commit; twice that leaves the follower time to
# read a commit that came late in its window. Retraining sends at once, so its echoes come
# back within a fetch unless a send failed after reaching the broker.
ECHO_TIMEOUT_S = 2 * 60.0


def code_version() -> str:
    try:
        return f"driftloop {version('driftloop')}"
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "driftloop (not installed)"


class RegistryClient:
    """A registry copy fed from the topic. With ``hmac_key`` it signs what it publishes and
    refuses (counts, logs, skips) records that are unsigned or wrongly signed."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        serde: Serde,
        log: Any,
        *,
        options: ClientOptions | None = None,
        hmac_key: bytes | None = None,
        metrics: CollectorRegistry | None = None,
        keep_unreadable: bool = False,
        echo_timeout_s: float = ECHO_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.serde = serde
        self.log = log if log is not None else get_logger(topic=topic)
        self.options = options
        self.hmac_key = hmac_key
        self.registry = Registry(hmac_key)
        self.refused = 0
        # Records that are no ModelVersion, for the owner to dead-letter (take_unreadable);
        # kept only when asked, so that one service, not every follower, dead-letters them.
        self.keep_unreadable = keep_unreadable
        self._unreadable: list[tuple[ConsumerRecord, InvalidRecord]] = []
        self._refused_c = Counter(
            "driftloop_registry_records_refused_total",
            "Registry records refused (unsigned or wrongly signed while an HMAC key is set)",
            ["code"],
            registry=metrics,
        )
        # Exported at 0 from the start, so that a rule or panel on it sees a series before the first refusal.
        self._refused_c.labels(RegistrySignatureInvalid.code)
        self._refused_c.labels(PoisonBatch.code)
        self._next: dict[int, int] = {}
        # What this client wrote and applied, per key, that has not come back from the topic
        # yet, each value with the clock's time it was written (see _expire).
        self._unechoed: dict[bytes, list[tuple[bytes, float]]] = {}
        self.echo_timeout_s = echo_timeout_s
        self._clock = clock

    @classmethod
    def from_settings(
        cls,
        common: CommonSettings,
        topic: str,
        serde: Serde,
        log: Any,
        metrics: CollectorRegistry | None = None,
        keep_unreadable: bool = False,
    ) -> RegistryClient:
        return cls(
            common.bootstrap_servers,
            topic,
            serde,
            log,
            options=client_options(common),
            hmac_key=common.hmac_key,
            metrics=metrics,
            keep_unreadable=keep_unreadable,
        )

    def _apply(self, records: list[ConsumerRecord]) -> list[ChampionChange]:
        changes = []
        self._expire()
        for rec in records:
            self._next[rec.partition] = rec.offset + 1
            if self._ahead(rec):
                continue
            if rec.value is None:
                # A tombstone: compaction's way to delete a key. Registry history is never
                # deleted, so the version stays as it was and nothing is dead-lettered.
                self.log.warning("registry_tombstone_ignored", offset=rec.offset, key=str(rec.key)[:200])
                continue
            try:
                change = self.registry.apply(self.serde.decode(MODELS_REGISTRY, rec.value))
            except RegistrySignatureInvalid as exc:
                self.refused += 1
                self._refused_c.labels(exc.code).inc()
                self.log.error("registry_record_refused", offset=rec.offset, error=str(exc), error_code=exc.code)
                continue
            except Exception as exc:  # noqa: BLE001 - a bad registry record must not stop serving
                self.log.error("registry_record_unreadable", offset=rec.offset, error=str(exc)[:200])
                if self.keep_unreadable:
                    bad = exc if isinstance(exc, InvalidRecord) else InvalidRecord(f"not a ModelVersion: {exc!r}")
                    self._unreadable.append((rec, bad))
                continue
            if change is not None:
                changes.append(change)
        return changes

    def _ahead(self, rec: ConsumerRecord) -> bool:
        """Whether this copy already holds a later record of ``rec``'s key: one this client
        wrote and applied at once, still on its way through the topic (under exactly-once a
        transaction commits it a while later). Applying ``rec`` would take the version back to
        an older status for a while, and the champion with it. Topic order still decides:
        whatever comes before our own record is superseded by it, and once our last write has
        come back, or is given up for lost (_expire), this copy follows the topic again."""
        pending = self._unechoed.get(rec.key) if rec.key is not None else None
        if not pending:
            return False
        if rec.value == pending[0][0]:
            pending.pop(0)
            if not pending:
                del self._unechoed[rec.key]
        return True

    def _expire(self) -> None:
        """Forget own writes whose echo is older than ``echo_timeout_s``: under exactly-once a
        write whose transaction aborted never comes back, and waiting for it would skip every
        later record of its key from other writers for good (see _ahead).

        Should such a write commit after all, its late echo is applied like any record, and
        that is safe: topic order is the truth, and this copy then follows it. Records of the
        key after the echo in the topic are read after it; records before it, applied
        meanwhile, are older than the write, which the echo then restores."""
        if not self._unechoed:
            return
        lost_before = self._clock() - self.echo_timeout_s
        for key, pending in list(self._unechoed.items()):
            kept = [entry for entry in pending if entry[1] > lost_before]
            if len(kept) == len(pending):
                continue
            self.log.warning(
                "registry_echo_expired",
                key=str(key)[:200],
                lost=len(pending) - len(kept),
                timeout_s=self.echo_timeout_s,
            )
            pending[:] = kept  # in place: a write still sending holds this list
            if not pending:
                del self._unechoed[key]

    def take_unreadable(self) -> list[tuple[ConsumerRecord, InvalidRecord]]:
        taken, self._unreadable = self._unreadable, []
        return taken

    async def load(self) -> None:
        self._apply(
            await load_registry_records(self.bootstrap, self.topic, options=self.options, on_poison=self._poison)
        )

    async def _poison(self, skipped: poison.Isolated) -> None:
        """A registry batch that cannot be decoded: skipped, counted and logged; the versions
        it held are unknown to this follower (a later record of the same version restores it)."""
        self._refused_c.labels(PoisonBatch.code).inc()
        self.refused += 1
        self.log.error("poison_batch_skipped", **poison.log_fields(skipped))

    async def follow(
        self,
        on_change: Callable[[ChampionChange], Awaitable[None]],
        on_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        async def on_records(records: list[ConsumerRecord]) -> None:
            for change in self._apply(records):
                await on_change(change)
            if on_batch is not None:
                await on_batch()

        # Carry on where load() stopped: replaying history would replay old champion changes.
        await follow(
            self.bootstrap, self.topic, on_records, start=dict(self._next), options=self.options, on_poison=self._poison
        )

    def signed(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record as this client publishes it: signed when a key is configured."""
        return sign(record, self.hmac_key) if self.hmac_key is not None else record

    async def write(self, send: Send, record: dict[str, Any]) -> dict[str, Any]:
        """Send ``record`` (signed when a key is set) and apply it to this copy at once; return
        what was sent. When it comes back from the topic it is not applied a second time."""
        record = self.signed(record)
        key, value = registry_key(record["name"], record["version"]), self.serde.encode(MODELS_REGISTRY, record)
        # Expected back before the send returns: the follower may read it meanwhile.
        pending = self._unechoed.setdefault(key, [])
        entry = (value, self._clock())
        pending.append(entry)
        try:
            await send(key, value)
        except BaseException:
            if entry in pending:
                pending.remove(entry)
            if not pending and self._unechoed.get(key) is pending:
                del self._unechoed[key]
            raise
        self.registry.apply(record)
        return record
