"""Retraining service shell: LabeledExamples and drift alerts in, model versions out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Counter, Gauge

from services.retraining.trainer import ContinuousTrainer
from shared.app import EventT, ServiceContext, StreamT, build_context, run_worker
from shared.modelspec import build_model
from shared.registry import ArtifactStore, version_record, with_status
from shared.registry_client import RegistryClient, code_version
from shared.settings import RetrainingSettings

SERVICE = "retraining"


def wire(ctx: ServiceContext[RetrainingSettings]) -> None:
    app = ctx.app
    name = ctx.common.model_name
    s = ctx.settings
    store = ArtifactStore(ctx.common.artifact_store)
    client = RegistryClient.from_settings(
        ctx.common, ctx.topics.name("models.registry"), ctx.serde, ctx.log, ctx.metrics.registry
    )
    registry_out = ctx.raw_topic("models.registry")
    versions_c = Counter(
        "driftloop_model_versions_registered_total",
        "Model versions registered",
        ["model", "trigger"],
        registry=ctx.metrics.registry,
    )
    examples_g = Gauge(
        "driftloop_training_examples",
        "Examples the continuous learner has learned from",
        ["model"],
        registry=ctx.metrics.registry,
    )
    ready = asyncio.Event()
    state: dict[str, Any] = {}

    async def send_registry(key: bytes, value: bytes) -> None:
        await ctx.send(registry_out, key, value)

    @app.task
    async def registry_follower() -> None:
        await client.load()
        champion = client.registry.champion(name)
        model = None
        if champion is not None:
            try:
                model = store.load(champion["artifact_uri"], champion["artifact_sha256"])
                ctx.log.info("training_resumed_from_champion", model_name=name, model_version=champion["version"])
            except Exception as exc:  # noqa: BLE001 - fall back to a fresh model, loudly
                ctx.log.error("champion_artifact_refused", model_name=name, error=str(exc))
        if model is None:
            model = build_model(s.model_spec, s.seed)
        state["trainer"] = ContinuousTrainer(model, s.version_every, first_version_after=s.first_version_after)
        ready.set()

        async def ignore(_: object) -> None:
            return None

        await client.follow(ignore)  # keeps the registry current: version numbers and parent

    async def register(trainer: ContinuousTrainer, trigger: str) -> None:
        window, metrics, fsv = trainer.cut()
        version = client.registry.latest_version(name) + 1
        parent = client.registry.champion(name)
        now = int(time.time() * 1000)
        record = version_record(
            name=name,
            version=version,
            status="champion",
            reason="promoted on registration: continuous learner (no evaluation gate yet)",
            artifact=store.save(name, version, trainer.model),
            parent=parent["version"] if parent else None,
            trigger=trigger,
            window=window,
            params={"spec": s.model_spec, "seed": str(s.seed), "trained": "true"},
            metrics=metrics,
            feature_set_version=fsv or ctx.common.effective_feature_set_version,
            code_version=code_version(),
            now_ms=now,
        )
        record = await client.publish(send_registry, record)
        client.registry.apply(record)
        if parent is not None:
            archived = with_status(parent, "archived", f"superseded by version {version}", now)
            archived = await client.publish(send_registry, archived)
            client.registry.apply(archived)
        versions_c.labels(name, trigger.split(":")[0]).inc()
        ctx.log.info(
            "model_version_registered",
            model_name=name,
            model_version=version,
            trigger=trigger,
            parent_version=record["parent_version"],
            examples=window.get("examples"),
        )

    @app.agent(ctx.source("examples"), name=f"{SERVICE}.examples")
    async def on_examples(stream: StreamT[Any]) -> None:
        await ready.wait()
        await ctx.each(stream, on_example)

    async def on_example(event: EventT) -> None:
        trainer: ContinuousTrainer = state["trainer"]
        example = ctx.serde.decode("LabeledExample", event.message.value)
        ctx.event_id = example["event_id"]
        trainer.learn(example)
        examples_g.labels(name).set(trainer.examples_seen)
        trigger = trainer.due()
        if trigger is not None:
            await register(trainer, trigger)

    async def on_alert(event: EventT) -> None:
        alert = ctx.serde.decode("DriftAlert", event.message.value)
        if alert["model_name"] == name and alert["kind"] in ("concept", "performance"):
            state["trainer"].on_drift(alert["alert_id"])
            ctx.log.info("drift_alert_received", alert_id=alert["alert_id"], detector=alert["detector"])

    @app.agent(ctx.source("alerts"), name=f"{SERVICE}.alerts")
    async def on_alerts(stream: StreamT[Any]) -> None:
        await ready.wait()
        await ctx.each(stream, on_alert)


def main() -> None:
    ctx = build_context(SERVICE, RetrainingSettings)
    wire(ctx)
    run_worker(ctx)
