"""A three-broker Apache Kafka cluster (the ``kafka_cluster`` fixture, shared/broker.py
KafkaCluster): driftloop's topics get three replicas and min.insync.replicas 2, a produce
with acks=all survives a broker SIGKILLed under it, and the broker restarted on its log
dir rejoins the cluster and every ISR."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from driftloop.shared.broker import KafkaCluster
from driftloop.shared.kafka import create_topics, read_topic
from driftloop.shared.topics import Topics, TopicSpec

pytestmark = pytest.mark.integration

# What every node is configured with, as the brokers describe it.
BROKER_CONFIG = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
}


async def _describe(bootstrap: str, resources: list[ConfigResource]) -> dict[str, dict[str, str]]:
    """resource name -> {config name: value}, through aiokafka's admin client."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        answers = await admin.describe_configs(resources)
    finally:
        await admin.close()
    out: dict[str, dict[str, str]] = {}
    for answer in answers:
        for res in answer.to_object()["resources"]:
            assert res["error_code"] == 0, res
            out[res["resource_name"]] = {e["config_names"]: e["config_value"] for e in res["config_entries"]}
    return out


async def _replicas(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], tuple[list[int], list[int]]]:
    """(topic, partition) -> (replicas, ISR)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {(t["topic"], p["partition"]): (p["replicas"], p["isr"]) for t in described for p in t["partitions"]}


async def _produce(bootstrap: str, topic: str, values: list[bytes], rate: float, at: dict[int, Any]) -> float:
    """Send ``values`` paced at ``rate``/s with acks=all (idempotent), calling ``at[i]()``
    just before the i-th send; every send must be acknowledged. Returns when the last ack came."""
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await prod.start()
    try:
        started, pending = time.monotonic(), []
        for i, value in enumerate(values):
            if i in at:
                at[i]()
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            pending.append(await prod.send(topic, key=str(i % 8).encode(), value=value))
        await asyncio.gather(*pending)  # raises if any record was not acknowledged
        return time.monotonic()
    finally:
        await prod.stop()


def _new_topic(cluster: KafkaCluster, partitions: int = 4) -> str:
    name = f"c{uuid.uuid4().hex[:10]}.acks"
    asyncio.run(create_topics(cluster.bootstrap_servers, [TopicSpec(name, partitions)], 3))
    return name


def _restore(cluster: KafkaCluster) -> None:
    """Every node running and in sync again, for the next test."""
    for node_id in set(range(1, cluster.size + 1)) - set(cluster.running()):
        cluster.restart(node_id)
    cluster.wait_in_sync(timeout_s=90)


def test_topics_have_three_replicas_and_min_insync_two(kafka_cluster: KafkaCluster) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topics = Topics(f"c{uuid.uuid4().hex[:10]}.", 4)
    names = [s.name for s in topics.catalogue()]
    # As `driftloop topics` and the services do with DRIFTLOOP_REPLICATION_FACTOR=3.
    asyncio.run(create_topics(bootstrap, topics.catalogue(), 3))

    replicas = asyncio.run(_replicas(bootstrap, names))
    assert {t for t, _ in replicas} == set(names)
    wrong = {tp: r for tp, r in replicas.items() if sorted(r[0]) != [1, 2, 3] or sorted(r[1]) != [1, 2, 3]}
    assert not wrong, f"partitions without 3 replicas all in sync: {wrong}"

    configs = asyncio.run(_describe(bootstrap, [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]))
    assert {n: c["min.insync.replicas"] for n, c in configs.items()} == dict.fromkeys(names, "2")
    brokers = [ConfigResource(ConfigResourceType.BROKER, str(n.node_id)) for n in kafka_cluster.nodes]
    described = asyncio.run(_describe(bootstrap, brokers))
    assert set(described) == {"1", "2", "3"}
    for node, config in described.items():
        assert {k: config[k] for k in BROKER_CONFIG} == BROKER_CONFIG, f"node {node}"


def test_acks_all_produce_survives_a_sigkilled_broker(
    kafka_cluster: KafkaCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = _new_topic(kafka_cluster)
    victim = kafka_cluster.busiest_leader([topic])
    n, rate = 3000, 300.0
    values = [str(i).encode() for i in range(n)]
    killed: dict[str, float] = {}

    def kill() -> None:
        kafka_cluster.kill(victim)
        killed["at"] = time.monotonic()

    try:
        last_ack = asyncio.run(_produce(bootstrap, topic, values, rate, {n // 3: kill}))
        got = [r.value for r in asyncio.run(read_topic(bootstrap, topic))]
        with capsys.disabled():
            print(
                f"\ncluster: node {victim} SIGKILLed after {n // 3} of {n} sends (acks=all); "
                f"the last ack came {last_ack - killed['at']:.1f} s after the kill; {len(got)} records read",
                file=sys.stderr,
            )
        assert victim not in kafka_cluster.running()
        assert sorted(got, key=int) == values, f"{len(set(values) - set(got))} records missing, {len(got) - n} extra"
    finally:
        _restore(kafka_cluster)


def test_a_killed_broker_restarted_on_its_log_dir_rejoins(
    kafka_cluster: KafkaCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = _new_topic(kafka_cluster)
    asyncio.run(_produce(bootstrap, topic, [b"before"] * 200, 1000.0, {}))
    victim = kafka_cluster.busiest_leader([topic])
    node = kafka_cluster.node(victim)
    meta = (node.log_dir / "meta.properties").read_text()
    on_disk = {p.name for p in node.log_dir.glob(f"{topic}-*")}
    assert len(on_disk) == 4, on_disk
    try:
        kafka_cluster.kill(victim)
        killed = time.monotonic()
        # Written while it is away: it must catch up on these to be in sync again.
        asyncio.run(_produce(bootstrap, topic, [b"while away"] * 200, 1000.0, {}))
        deadline = time.monotonic() + 60
        while set(kafka_cluster.out_of_sync([topic])) != set(asyncio.run(_replicas(bootstrap, [topic]))):
            assert time.monotonic() < deadline, "the ISR never shrank after the SIGKILL"
            time.sleep(0.5)
        fenced_after = time.monotonic() - killed

        restarted = time.monotonic()
        kafka_cluster.restart(victim)
        ready_after = time.monotonic() - restarted
        in_sync_after = kafka_cluster.wait_in_sync([topic], timeout_s=60)
        replicas = asyncio.run(_replicas(bootstrap, [topic]))
        with capsys.disabled():
            print(
                f"\ncluster: node {victim} out of every ISR {fenced_after:.1f} s after its SIGKILL; restarted, "
                f"Metadata named 3 brokers after {ready_after:.1f} s, in sync {in_sync_after:.1f} s later",
                file=sys.stderr,
            )
        assert all(victim in isr and len(isr) == 3 for _, isr in replicas.values()), replicas
        # The same log dir, not a new one: the same cluster and node, the same partitions.
        assert (node.log_dir / "meta.properties").read_text() == meta
        assert {p.name for p in node.log_dir.glob(f"{topic}-*")} == on_disk
        got = [r.value for r in asyncio.run(read_topic(bootstrap, topic))]
        assert sorted(got) == sorted([b"before"] * 200 + [b"while away"] * 200)
    finally:
        _restore(kafka_cluster)
