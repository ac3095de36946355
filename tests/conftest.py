"""Shared fixtures: one real broker per test session, a fresh topic prefix per test.

The session broker is Apache Kafka (KRaft, from the jars the repo's pom fetches), or Tansu when
``DRIFTLOOP_TEST_ENGINE=tansu`` (`make test` runs the integration tier a second time so). Without
a JDK 17 and Maven, the Kafka tier is skipped, saying why, except under ``CI=true``, where a
missing Apache Kafka fails the run.

``kafka_cluster`` is a three-broker Apache Kafka cluster of its own, started only for the
modules that ask for it (three JVMs), and skipped or failed the same way.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop.shared.broker import Broker, KafkaCluster, choose_engine, free_port, make_broker
from driftloop.shared.kafka import create_topics, delete_topics_with_prefix
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import Topics

TEST_ENGINE = os.environ.get("DRIFTLOOP_TEST_ENGINE", "kafka")
# Each of the cluster's three JVMs; the machine may have 2 cores and others' tests beside.
CLUSTER_HEAP_MB = 512


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if TEST_ENGINE not in ("kafka", "tansu"):
        pytest.fail(f"DRIFTLOOP_TEST_ENGINE={TEST_ENGINE!r}: expected kafka or tansu")
    if TEST_ENGINE == "kafka" and (why := choose_engine("auto").reason):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Apache Kafka for the integration and e2e tiers: {why}")
        pytest.skip(f"Apache Kafka is not available here: {why}")
    where = tmp_path_factory.mktemp("broker")
    b = make_broker(TEST_ENGINE, free_port(), where, where / "broker.log", heap_mb=1024)  # type: ignore[arg-type]
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three Apache Kafka brokers on 127.0.0.1, one static KRaft quorum, each with its own
    ports and log dir: replication factor 3 and min.insync.replicas 2, internal topics
    included. One per module that asks for it; stopped by pid after it. Apache Kafka's only:
    skipped on a Tansu run (the Kafka run has it), and where Apache Kafka is unavailable
    (failing under CI=true, as the session broker does)."""
    if TEST_ENGINE == "tansu":
        pytest.skip("a three-broker cluster is Apache Kafka's; DRIFTLOOP_TEST_ENGINE=tansu")
    if why := choose_engine("auto").reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Apache Kafka for the three-broker cluster: {why}")
        pytest.skip(f"Apache Kafka is not available here: {why}")
    cluster = KafkaCluster(tmp_path_factory.mktemp("cluster"), size=3, heap_mb=CLUSTER_HEAP_MB)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def topics(broker: Broker) -> Iterator[Topics]:
    """Topics under a prefix no other test uses, created on the session broker and deleted
    after the test (with the changelogs the services made under it)."""
    t = Topics(f"t{uuid.uuid4().hex[:10]}.", 4)
    asyncio.run(create_topics(broker.bootstrap_servers, t.catalogue()))
    yield t
    asyncio.run(delete_topics_with_prefix(broker.bootstrap_servers, t.prefix))


@pytest.fixture(scope="session")
def serde() -> Serde:
    return Serde(FileSchemaRegistry(CommonSettings().schema_dir))


@pytest.fixture
def service_env(broker: Broker, topics: Topics, tmp_path: Path) -> dict[str, str]:
    """The environment for services run as processes against the session broker."""
    from driftloop.runner import demo_env

    return {
        **demo_env(),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "DRIFTLOOP_BROKER_ENGINE": broker.engine,
        "DRIFTLOOP_TOPIC_PREFIX": topics.prefix,
        "DRIFTLOOP_PARTITIONS": str(topics.partitions),
        "DRIFTLOOP_ARTIFACT_STORE": f"file://{tmp_path / 'artifacts'}",
        "DRIFTLOOP_DATA_DIR": str(tmp_path / "state"),
        "DRIFTLOOP_OFFLINE_STORE": str(tmp_path / "offline-store"),
    }
