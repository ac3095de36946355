"""Keeping a service's copy of the event-sourced registry current, over Kafka."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiokafka import ConsumerRecord

from shared.kafka import follow, load_registry_records
from shared.registry import ChampionChange, Registry, registry_key
from shared.serde import Serde

Send = Callable[[bytes, bytes], Awaitable[None]]


def code_version() -> str:
    try:
        return f"driftloop {version('driftloop')}"
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "driftloop (not installed)"


class RegistryClient:
    def __init__(self, bootstrap: str, topic: str, serde: Serde, log: Any) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.serde = serde
        self.log = log
        self.registry = Registry()
        self._next: dict[int, int] = {}

    def _apply(self, records: list[ConsumerRecord]) -> list[ChampionChange]:
        changes = []
        for rec in records:
            self._next[rec.partition] = rec.offset + 1
            try:
                change = self.registry.apply(self.serde.decode("ModelVersion", rec.value))
            except Exception as exc:  # noqa: BLE001 - a bad registry record must not stop serving
                self.log.error("registry_record_unreadable", offset=rec.offset, error=str(exc)[:200])
                continue
            if change is not None:
                changes.append(change)
        return changes

    async def load(self) -> None:
        self._apply(await load_registry_records(self.bootstrap, self.topic))

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
        await follow(self.bootstrap, self.topic, on_records, start=dict(self._next))

    async def publish(self, send: Send, record: dict[str, Any]) -> None:
        await send(registry_key(record["name"], record["version"]), self.serde.encode("ModelVersion", record))
