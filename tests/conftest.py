"""Shared fixtures: one real embedded broker per test session, a fresh topic prefix per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.broker import EmbeddedBroker, free_port
from shared.kafka import create_topics
from shared.serde import FileSchemaRegistry, Serde
from shared.settings import CommonSettings
from shared.topics import Topics


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    b = EmbeddedBroker(free_port(), log).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def topics(broker: EmbeddedBroker) -> Topics:
    """Topics under a prefix no other test uses, created on the session broker."""
    t = Topics(f"t{uuid.uuid4().hex[:10]}.", 4)
    asyncio.run(create_topics(broker.bootstrap_servers, t.catalogue()))
    return t


@pytest.fixture(scope="session")
def serde() -> Serde:
    return Serde(FileSchemaRegistry(CommonSettings().schema_dir))


@pytest.fixture
def service_env(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> dict[str, str]:
    """The environment for services run as processes against the session broker."""
    from services.runner import demo_env

    return {
        **demo_env(),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "DRIFTLOOP_TOPIC_PREFIX": topics.prefix,
        "DRIFTLOOP_PARTITIONS": str(topics.partitions),
        "DRIFTLOOP_ARTIFACT_STORE": f"file://{tmp_path / 'artifacts'}",
        "DRIFTLOOP_DATA_DIR": str(tmp_path / "state"),
        "DRIFTLOOP_OFFLINE_STORE": str(tmp_path / "offline-store"),
    }
