"""A forged (unsigned) champion record on the real registry topic is ignored by a
RegistryClient configured with an HMAC key, at load and while following the topic."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from driftloop.shared.kafka import produce_all, read_topic
from driftloop.shared.registry import ChampionChange, Registry, registry_key, version_record
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.serde import Serde
from driftloop.shared.signing import sign
from driftloop.shared.topics import Topics

pytestmark = pytest.mark.integration

KEY = b"integration-hmac-key"


class RecordingLog:
    """Collects what the client logs, to check the refusal is reported (and the key is not)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    info = warning = error = _log


def _record(version: int, uri: str = "file:///store/default/v{v}.pkl") -> dict[str, Any]:
    return version_record(
        name="default",
        version=version,
        status="champion",
        reason="test",
        artifact=(uri.format(v=version), "ab" * 32),
        parent=version - 1 or None,
        trigger="label_volume",
        window={"examples": 10},
        params={"spec": "logreg"},
        metrics={},
        feature_set_version="fs1",
        code_version="test",
        now_ms=1_000 + version,
    )


def test_forged_champion_is_refused_at_load_and_while_following(broker: Any, topics: Topics, serde: Serde) -> None:
    bootstrap = broker.bootstrap_servers
    topic = topics.name("models.registry")

    def rec(r: dict[str, Any]) -> tuple[str, bytes, bytes]:
        return topic, registry_key(r["name"], r["version"]), serde.encode("ModelVersion", r)

    async def scenario() -> tuple[RegistryClient, RegistryClient, list[ChampionChange]]:
        await produce_all(
            bootstrap,
            [
                rec(sign(_record(1), KEY)),
                rec(_record(2, "file:///tmp/evil/v{v}.pkl")),  # forged: unsigned
                rec(sign(_record(3), b"not-the-key")),  # forged: wrong key
            ],
        )
        log = RecordingLog()
        keyed = RegistryClient(bootstrap, topic, serde, log, hmac_key=KEY)
        unkeyed = RegistryClient(bootstrap, topic, serde, RecordingLog())
        await keyed.load()
        await unkeyed.load()
        assert keyed.registry.champion("default")["version"] == 1
        assert keyed.refused == 2
        # Without a key the same topic is read as it is: the forgery would win.
        assert unkeyed.registry.champion("default")["version"] == 3

        changes: list[ChampionChange] = []

        async def on_change(change: ChampionChange) -> None:
            changes.append(change)

        follower = asyncio.create_task(keyed.follow(on_change))
        await produce_all(bootstrap, [rec(_record(4)), rec(sign(_record(5), KEY))])
        deadline = asyncio.get_running_loop().time() + 30
        while not changes and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        return keyed, unkeyed, changes

    keyed, _, changes = asyncio.run(scenario())
    assert changes == [ChampionChange("default", 1, 5)]
    assert keyed.refused == 3
    assert keyed.registry.get("default", 4) is None
    refusals = [kw for event, kw in keyed.log.events if event == "registry_record_refused"]
    assert len(refusals) == 3
    assert all(kw["error_code"] == "registry_signature_invalid" for kw in refusals)
    assert KEY.decode() not in repr(keyed.log.events)


def test_models_cli_signs_what_it_publishes(broker: Any, topics: Topics, serde: Serde) -> None:
    bootstrap = broker.bootstrap_servers
    topic = topics.name("models.registry")
    candidate = {**_record(2), "status": "candidate"}
    asyncio.run(
        produce_all(
            bootstrap,
            [
                (topic, registry_key("default", v), serde.encode("ModelVersion", sign(r, KEY)))
                for v, r in ((1, _record(1)), (2, candidate))
            ],
        )
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTLOOP_TOPIC_PREFIX": topics.prefix,
        "DRIFTLOOP_REGISTRY_HMAC_KEY": KEY.decode(),
    }
    subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "models", "promote", "2", "--reason", "test"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    records = [serde.decode("ModelVersion", r.value) for r in asyncio.run(read_topic(bootstrap, topic))]
    assert len(records) == 4
    registry = Registry(KEY)
    for r in records:
        registry.apply(r)  # raises if any record is not signed with KEY
    assert registry.champion("default")["version"] == 2
    assert registry.get("default", 1)["status"] == "archived"
