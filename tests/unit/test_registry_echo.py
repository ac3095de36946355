"""A registry client's own writes, applied when written, and their echoes from the topic.

Under exactly-once a transaction commits a write a while after it was applied locally, so
the follower reads a version's older records after the copy already holds newer ones. Those
must not take the champion back, even for a while: the retraining service judges and
registers against the champion its copy names.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from driftloop.shared.registry import ChampionChange, registry_key, version_record, with_status
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import MODELS_REGISTRY


class Topic:
    """The registry topic's one partition, as the client's sends fill it."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.records.append((key, value))


def _record(version: int, status: str, parent: int | None = None) -> dict[str, Any]:
    return version_record(
        name="m",
        version=version,
        status=status,
        reason="test",
        artifact=("file:///x", "0" * 64),
        parent=parent,
        trigger="label_volume",
        window={"examples": 10},
        params={"spec": "logreg", "trained": "true"},
        metrics={},
        feature_set_version="fs1",
        code_version="test",
        now_ms=1,
        task="binary",
    )


def _consumed(entries: list[tuple[bytes, bytes]], first_offset: int = 0) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(MODELS_REGISTRY, 0, first_offset + i, 0, 0, key, value, None, len(key), len(value), ())
        for i, (key, value) in enumerate(entries)
    ]


def _client() -> tuple[RegistryClient, Serde]:
    serde = Serde(FileSchemaRegistry(CommonSettings().schema_dir))
    return RegistryClient("127.0.0.1:1", "driftloop.models.registry", serde, None), serde


def _promotions(client: RegistryClient, topic: Topic) -> None:
    """v5 promoted over v2, then v6 over v5, each write applied at once."""

    async def run() -> None:
        v2 = _record(2, "champion")
        await client.write(topic.send, v2)
        v5 = _record(5, "champion", parent=2)
        await client.write(topic.send, v5)
        await client.write(topic.send, with_status(v2, "archived", "superseded by v5", 2))
        await client.write(topic.send, _record(6, "champion", parent=5))
        await client.write(topic.send, with_status(v5, "archived", "superseded by v6", 3))

    asyncio.run(run())


def test_echoes_of_own_writes_never_take_the_champion_back() -> None:
    client, _ = _client()
    topic = Topic()
    _promotions(client, topic)
    assert client.registry.champion("m")["version"] == 6  # type: ignore[index]
    # The echoes come back one at a time, as a slow transaction lets them through.
    for i, entry in enumerate(topic.records):
        assert client._apply(_consumed([entry], i)) == []
        assert client.registry.champion("m")["version"] == 6  # type: ignore[index]
    assert client.registry.get("m", 5)["status"] == "archived"  # type: ignore[index]
    assert client.registry.get("m", 2)["status"] == "archived"  # type: ignore[index]


def test_a_foreign_record_after_the_echo_is_applied() -> None:
    client, serde = _client()
    topic = Topic()
    _promotions(client, topic)
    client._apply(_consumed(topic.records))
    # An operator promotes v5 back: a record this client did not write, after its own.
    v5 = client.registry.get("m", 5)
    assert v5 is not None
    back = with_status(v5, "champion", "operator", 9)
    entry = (registry_key("m", 5), serde.encode(MODELS_REGISTRY, back))
    assert client._apply(_consumed([entry], len(topic.records))) == [ChampionChange("m", 6, 5)]
    assert client.registry.champion("m")["version"] == 5  # type: ignore[index]


def test_a_foreign_record_before_our_write_is_superseded_by_it() -> None:
    """Topic order decides: an operator's record of a key that lands before this client's own
    pending write of it is what that write replaces, so the copy keeps the write."""
    client, serde = _client()
    topic = Topic()

    async def run() -> None:
        await client.write(topic.send, _record(3, "candidate"))
        await client.write(topic.send, with_status(_record(3, "candidate"), "champion", "promoted", 2))

    asyncio.run(run())
    rejected = with_status(_record(3, "candidate"), "rejected", "operator", 2)
    foreign = (registry_key("m", 3), serde.encode(MODELS_REGISTRY, rejected))
    entries = [topic.records[0], foreign, topic.records[1]]
    for i, entry in enumerate(entries):
        client._apply(_consumed([entry], i))
        assert client.registry.get("m", 3)["status"] == "champion"  # type: ignore[index]
    # Everything this client wrote is back: from here the copy follows the topic.
    archived = with_status(_record(3, "champion"), "archived", "operator", 4)
    later = (registry_key("m", 3), serde.encode(MODELS_REGISTRY, archived))
    client._apply(_consumed([later], 3))
    assert client.registry.get("m", 3)["status"] == "archived"  # type: ignore[index]


def test_a_send_that_fails_leaves_nothing_expected() -> None:
    client, serde = _client()

    async def refuse(key: bytes, value: bytes) -> None:
        raise OSError("broker gone")

    async def run() -> None:
        with pytest.raises(OSError):
            await client.write(refuse, _record(4, "champion"))

    asyncio.run(run())
    assert client.registry.get("m", 4) is None
    # The next record of that key, from anyone, is applied.
    entry = (registry_key("m", 4), serde.encode(MODELS_REGISTRY, _record(4, "champion")))
    assert client._apply(_consumed([entry])) == [ChampionChange("m", None, 4)]
