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


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingLog:
    """A structlog stand-in: keeps (event, fields) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = _log


def _client(
    clock: Clock | None = None, log: RecordingLog | None = None, echo_timeout_s: float = 120.0
) -> tuple[RegistryClient, Serde]:
    serde = Serde(FileSchemaRegistry(CommonSettings().schema_dir))
    client = RegistryClient(
        "127.0.0.1:1",
        "driftloop.models.registry",
        serde,
        log,
        echo_timeout_s=echo_timeout_s,
        clock=clock if clock is not None else Clock(),
    )
    return client, serde


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


def _aborted_write(client: RegistryClient, serde: Serde) -> tuple[bytes, bytes]:
    """v7 written as champion; the send succeeds but its transaction aborts, so the echo never
    comes. Returns an operator's later record of v7 (rejected) from the topic."""
    asyncio.run(client.write(Topic().send, _record(7, "champion")))
    rejected = with_status(_record(7, "champion"), "rejected", "operator", 2)
    return registry_key("m", 7), serde.encode(MODELS_REGISTRY, rejected)


def test_an_aborted_write_blocks_other_writers_only_until_its_echo_is_given_up() -> None:
    clock, log = Clock(), RecordingLog()
    client, serde = _client(clock, log, echo_timeout_s=120.0)
    foreign = _aborted_write(client, serde)
    # Within the bound the echo may still come: the operator's record is taken as older.
    clock.now += 119.0
    client._apply(_consumed([foreign], 0))
    assert client.registry.get("m", 7)["status"] == "champion"  # type: ignore[index]
    assert log.events == []
    # Past it the write is lost, and the key's records from the topic apply again.
    clock.now += 2.0
    client._apply(_consumed([foreign], 1))
    assert client.registry.get("m", 7)["status"] == "rejected"  # type: ignore[index]
    assert client.registry.champion("m") is None
    assert [event for event, _ in log.events] == ["registry_echo_expired"]
    assert log.events[0][1]["key"] == str(registry_key("m", 7))


def test_an_echo_in_time_is_popped_and_later_records_apply() -> None:
    clock, log = Clock(), RecordingLog()
    client, serde = _client(clock, log, echo_timeout_s=120.0)
    topic = Topic()
    asyncio.run(client.write(topic.send, _record(7, "champion")))
    clock.now += 119.0
    assert client._apply(_consumed(topic.records)) == []
    assert client._unechoed == {}
    rejected = with_status(_record(7, "champion"), "rejected", "operator", 2)
    entry = (registry_key("m", 7), serde.encode(MODELS_REGISTRY, rejected))
    clock.now += 10.0
    client._apply(_consumed([entry], 1))
    assert client.registry.get("m", 7)["status"] == "rejected"  # type: ignore[index]
    assert log.events == []


def test_an_echo_after_the_bound_is_applied_in_topic_order() -> None:
    """A write given up for lost that commits after all: whatever of its key applied meanwhile
    came before it in the topic, so its late echo is the newer record and applies."""
    clock = Clock()
    client, serde = _client(clock, RecordingLog(), echo_timeout_s=120.0)
    topic = Topic()
    asyncio.run(client.write(topic.send, _record(7, "champion")))
    rejected = with_status(_record(7, "champion"), "rejected", "operator", 2)
    foreign = (registry_key("m", 7), serde.encode(MODELS_REGISTRY, rejected))
    clock.now += 121.0
    client._apply(_consumed([foreign, *topic.records]))
    assert client.registry.get("m", 7)["status"] == "champion"  # type: ignore[index]
