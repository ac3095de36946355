"""A poison batch where a service reads outside its consumer group: the registry it follows and
the changelogs it recovers from. Reading goes on past the batch (every valid record once, in
order), and inference, started on a registry holding one, serves the champion recorded after
it instead of crash-looping."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from rawbatch import gzip_with_trailing_garbage, produce_raw, record_batch
from waiting import scrape_metrics

from driftloop.runner import Stack
from driftloop.shared.broker import Broker
from driftloop.shared.kafka import create_topics, delete_topics_with_prefix, producer, read_topic
from driftloop.shared.modelspec import build_model
from driftloop.shared.poison import Isolated
from driftloop.shared.registry import ArtifactStore, registry_key, version_record
from driftloop.shared.serde import Serde
from driftloop.shared.topics import MODELS_REGISTRY, Topics, TopicSpec

pytestmark = pytest.mark.integration


def test_read_topic_skips_a_poison_batch_and_says_so(broker: Broker, topics: Topics) -> None:
    bootstrap = broker.bootstrap_servers
    topic = f"{topics.prefix}follow"
    asyncio.run(create_topics(bootstrap, [TopicSpec(topic, 1, {})]))
    tp = TopicPartition(topic, 0)
    for batch in (
        record_batch([b"a", b"b"]),  # offsets 0-1
        gzip_with_trailing_garbage([b"x", b"y", b"z"]),  # 2-4
        record_batch([b"c"]),  # 5
    ):
        assert asyncio.run(produce_raw(bootstrap, tp, batch)) == 0
    with pytest.raises(Exception) as raised:  # whatever the decoder raises
        asyncio.run(read_topic(bootstrap, topic, max_wait_s=20))
    assert "Unclosed" not in str(raised.value)

    told: list[Isolated] = []

    async def on_poison(found: Isolated) -> None:
        told.append(found)

    records = asyncio.run(read_topic(bootstrap, topic, max_wait_s=20, on_poison=on_poison))
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (5, b"c")]
    assert [(f.tp, f.batch.first, f.batch.last) for f in told] == [(tp, 2, 4)]
    asyncio.run(delete_topics_with_prefix(bootstrap, topic))


def _champion(store: ArtifactStore, version: int) -> dict[str, object]:
    model = build_model("logreg", 1)
    for i in range(20):
        model.learn_one({"x": float(i % 2)}, bool(i % 2))
    return version_record(
        name="default",
        version=version,
        status="champion",
        reason="test",
        artifact=store.save("default", version, model),
        parent=None,
        trigger="manual",
        window={"examples": 20},
        params={"spec": "logreg", "trained": "true"},
        metrics={},
        feature_set_version="fs1",
        code_version="test",
        now_ms=int(time.time() * 1000),
    )


def test_inference_started_on_a_poisoned_registry_serves(
    broker: Broker, service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    store = ArtifactStore(service_env["DRIFTLOOP_ARTIFACT_STORE"])
    tp = TopicPartition(topics.name(MODELS_REGISTRY), 0)
    # A compacted topic takes keyed records only.
    poisoned = gzip_with_trailing_garbage([b"not a version"], key=b"default:1")
    assert asyncio.run(produce_raw(bootstrap, tp, poisoned)) == 0

    async def publish() -> None:
        p = producer(bootstrap)
        await p.start()
        try:
            value = serde.encode("ModelVersion", _champion(store, 2))
            await p.send_and_wait(topics.name(MODELS_REGISTRY), key=registry_key("default", 2), value=value)
        finally:
            await p.stop()

    asyncio.run(publish())
    with Stack(env=service_env, log_dir=tmp_path / "logs", services=("inference",)) as stack:
        stack.wait_ready()
        port = int(service_env["DRIFTLOOP_INFERENCE_METRICS_PORT"])
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            stack.check()
            text = scrape_metrics(port)
            if re.search(r'^driftloop_served_model_version\{model="default"\} 2\.0$', text, re.M):
                break
            time.sleep(0.3)
        stack.check()
        assert re.search(r'^driftloop_served_model_version\{model="default"\} 2\.0$', text, re.M), text[-2000:]
        assert re.search(r'^driftloop_registry_records_refused_total\{code="poison_batch"\} 1\.0$', text, re.M)
    log = (tmp_path / "logs" / "inference.log").read_text()
    assert "poison_batch_skipped" in log and topics.name(MODELS_REGISTRY) in log
    assert len(asyncio.run(read_topic(bootstrap, topics.name(MODELS_REGISTRY), on_poison=_ignore))) == 1


async def _ignore(found: Isolated) -> None:
    return None
