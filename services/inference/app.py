"""Inference service shell: FeatureVectors in, Predictions out, champion hot-swapped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from faust.types import StreamT
from prometheus_client import Counter, Gauge

from services.inference.serving import Server
from shared.app import ServiceContext, build_context, run_worker
from shared.modelspec import build_model
from shared.registry import ArtifactStore, ChampionChange, version_record
from shared.registry_client import RegistryClient, code_version
from shared.settings import InferenceSettings

SERVICE = "inference"


def wire(ctx: ServiceContext[InferenceSettings]) -> None:
    app = ctx.app
    name = ctx.common.model_name
    store = ArtifactStore(ctx.common.artifact_store)
    client = RegistryClient(ctx.common.bootstrap_servers, ctx.topics.name("models.registry"), ctx.serde, ctx.log)
    server = Server()
    ready = asyncio.Event()
    registry_out = ctx.raw_topic("models.registry")
    predictions_out = ctx.raw_topic("predictions")
    features_in = ctx.topics.name("features")
    served_g = Gauge(
        "driftloop_served_model_version",
        "Version of the champion being served",
        ["model"],
        registry=ctx.metrics.registry,
    )
    predictions_c = Counter(
        "driftloop_predictions_total", "Predictions made", ["model", "version", "role"], registry=ctx.metrics.registry
    )
    swaps_c = Counter(
        "driftloop_model_swaps_total", "Hot swaps of the served model", ["model"], registry=ctx.metrics.registry
    )

    async def send_registry(key: bytes, value: bytes) -> None:
        await ctx.send(registry_out, key, value)

    def load(change_version: int) -> None:
        record = client.registry.get(name, change_version)
        assert record is not None
        log = ctx.log.bind(model_name=name, model_version=change_version)
        try:
            model = store.load(record["artifact_uri"], record["artifact_sha256"])
        except Exception as exc:  # noqa: BLE001 - a bad artifact must not stop serving the current one
            log.error("model_load_refused", error=str(exc), error_code=getattr(exc, "code", "internal_error"))
            return
        old = server.served.version if server.served else None
        server.swap(model, record)
        served_g.labels(name).set(change_version)
        swaps_c.labels(name).inc()
        log.info("model_swapped", previous_version=old)

    async def bootstrap() -> None:
        """Register version 1, untrained, when the registry has no champion at all."""
        spec, seed = ctx.settings.model_spec, ctx.settings.seed
        model = build_model(spec, seed)
        now = int(time.time() * 1000)
        record = version_record(
            name=name,
            version=1,
            status="champion",
            reason="bootstrap: the registry was empty; untrained, it predicts the prior until retraining "
            "registers a trained version",
            artifact=store.save(name, 1, model),
            parent=None,
            trigger="bootstrap",
            window={"examples": 0},
            params={"spec": spec, "seed": str(seed), "trained": "false"},
            metrics={},
            feature_set_version=ctx.common.feature_set_version,
            code_version=code_version(),
            now_ms=now,
        )
        await client.publish(send_registry, record)
        client.registry.apply(record)
        ctx.log.info("model_bootstrapped", model_name=name, model_version=1)

    @app.task
    async def registry_follower() -> None:
        await client.load()
        champion = client.registry.champion(name)
        if champion is None:
            await bootstrap()
            champion = client.registry.champion(name)
        assert champion is not None
        load(champion["version"])
        ready.set()

        async def on_change(change: ChampionChange) -> None:
            if change.name == name:
                load(change.new)

        await client.follow(on_change)

    @app.agent(ctx.raw_topic("features"), name=f"{SERVICE}.features")
    async def on_features(stream: StreamT[Any]) -> None:
        await ready.wait()
        async for events in stream.take_events(ctx.settings.batch_size, within=ctx.settings.batch_window_s):
            started = time.perf_counter()
            ctx.metrics.records_in.labels(SERVICE, features_in).inc(len(events))
            for event in events:
                event_id = None
                try:
                    vector = ctx.serde.decode("FeatureVector", event.message.value)
                    event_id = vector["event_id"]
                    prediction = server.predict(vector, int(time.time() * 1000))
                    await ctx.send(predictions_out, prediction["entity_id"], ctx.serde.encode("Prediction", prediction))
                    predictions_c.labels(name, str(prediction["model_version"]), prediction["role"]).inc()
                except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
                    await ctx.dead_letter(event, exc, event_id)
            ctx.metrics.batch_seconds.labels(SERVICE).observe(time.perf_counter() - started)


def main() -> None:
    ctx = build_context(SERVICE, InferenceSettings)
    wire(ctx)
    run_worker(ctx)
