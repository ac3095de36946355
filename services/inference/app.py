"""Inference service shell: FeatureVectors in, Predictions out, champion hot-swapped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Counter, Gauge

from driftloop.services.inference.serving import Server
from driftloop.shared.app import EventT, ServiceContext, StreamT, build_context, run_worker
from driftloop.shared.errors import ArtifactError, ArtifactIntegrityError, ArtifactOutsideStore, DriftloopError
from driftloop.shared.modelspec import build_model
from driftloop.shared.registry import ArtifactStore, ChampionChange, version_record
from driftloop.shared.registry_client import RegistryClient, code_version
from driftloop.shared.settings import InferenceSettings

SERVICE = "inference"
#: The codes load_artifact counts a refused artifact under.
LOAD_FAILURE_CODES = (
    ArtifactError.code,
    ArtifactIntegrityError.code,
    ArtifactOutsideStore.code,
    DriftloopError.code,
)


def wire(ctx: ServiceContext[InferenceSettings]) -> None:
    app = ctx.app
    name = ctx.common.model_name
    store = ArtifactStore(ctx.common.artifact_store)
    # Inference dead-letters what on the registry topic is no ModelVersion (retraining only logs it).
    client = RegistryClient.from_settings(
        ctx.common, ctx.topics.name("models.registry"), ctx.serde, ctx.log, ctx.metrics.registry, keep_unreadable=True
    )
    server = Server()
    ready = asyncio.Event()
    registry_out = ctx.raw_topic("models.registry")
    predictions_out = ctx.raw_topic("predictions")
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
    info_g = Gauge(
        "driftloop_model_info",
        "1 for each model version loaded, by role",
        ["model", "version", "role"],
        registry=ctx.metrics.registry,
    )
    load_failures_c = Counter(
        "driftloop_model_load_failures_total", "Artifacts refused", ["model", "code"], registry=ctx.metrics.registry
    )
    # Exported at 0 from the start, so that a rule or panel on it sees a series before the first refusal.
    for code in LOAD_FAILURE_CODES:
        load_failures_c.labels(name, code)

    async def send_registry(key: bytes, value: bytes) -> None:
        await ctx.send(registry_out, key, value)

    async def load_artifact(record: dict[str, Any]) -> Any | None:
        try:
            # Off the event loop: unpickling and hashing an adaptive random forest takes tens of
            # ms (1.9 MB after 5k Elec2 rows: 27 ms), which would stall every prediction meanwhile.
            return await asyncio.to_thread(store.load, record["artifact_uri"], record["artifact_sha256"])
        except Exception as exc:  # noqa: BLE001 - a bad artifact must not stop serving the current one
            code = getattr(exc, "code", "internal_error")
            load_failures_c.labels(name, code).inc()
            ctx.log.error(
                "model_load_refused", model_name=name, model_version=record["version"], error=str(exc), error_code=code
            )
            return None

    async def load(change_version: int) -> None:
        record = client.registry.get(name, change_version)
        assert record is not None
        # A promoted candidate is already here, loaded and checked, predicting in shadow.
        model = server.challenger_model(change_version)
        if model is None:
            model = await load_artifact(record)
        if model is None:
            return
        old = server.served.version if server.served else None
        server.swap(model, record)
        if old is not None:
            info_g.labels(name, str(old), "champion").set(0)
        info_g.labels(name, str(change_version), "champion").set(1)
        served_g.labels(name).set(change_version)
        swaps_c.labels(name).inc()
        ctx.log.info("model_swapped", model_name=name, model_version=change_version, previous_version=old)

    async def ensure_baseline() -> None:
        """Load the first trained version, once, to predict in shadow as the static baseline."""
        if not ctx.settings.shadow_baseline or server.baseline is not None:
            return
        record = client.registry.first_trained(name)
        if record is None:
            return
        model = await load_artifact(record)
        if model is not None:
            server.set_baseline(model, record)
            info_g.labels(name, str(record["version"]), "baseline").set(1)
            ctx.log.info("baseline_loaded", model_name=name, model_version=record["version"])

    refused: set[int] = set()  # candidates whose artifact was refused: not retried on every batch

    async def sync_challengers() -> None:
        """Every candidate version predicts in shadow; one that leaves candidate is unloaded."""
        wanted = {
            r["version"]: r
            for r in client.registry.versions(name)
            if r["status"] == "candidate" and ctx.settings.shadow_challengers
        }
        for version in server.challengers:
            if version not in wanted:
                server.remove_challenger(version)
                info_g.labels(name, str(version), "challenger").set(0)
                ctx.log.info("challenger_unloaded", model_name=name, model_version=version)
        for version, record in wanted.items():
            if version in server.challengers or version in refused:
                continue
            model = await load_artifact(record)
            if model is None:
                refused.add(version)
                continue
            server.add_challenger(model, record)
            info_g.labels(name, str(version), "challenger").set(1)
            ctx.log.info("challenger_loaded", model_name=name, model_version=version, trigger=record["trigger"])

    async def on_batch() -> None:
        for record, exc in client.take_unreadable():
            await ctx.dead_letter(record, exc)
        await ensure_baseline()
        await sync_challengers()

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
            feature_set_version=ctx.common.effective_feature_set_version,
            code_version=code_version(),
            now_ms=now,
        )
        record = await client.publish(send_registry, record)
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
        await load(champion["version"])
        await on_batch()
        ready.set()

        async def on_change(change: ChampionChange) -> None:
            if change.name == name:
                await load(change.new)

        await client.follow(on_change, on_batch)

    async def send_prediction(prediction: dict[str, Any]) -> None:
        await ctx.send(predictions_out, prediction["entity_id"], ctx.serde.encode("Prediction", prediction))
        predictions_c.labels(name, str(prediction["model_version"]), prediction["role"]).inc()

    @app.agent(ctx.source("features"), name=f"{SERVICE}.features")
    async def on_features(stream: StreamT) -> None:
        await ready.wait()
        await ctx.each(stream, on_vector)

    async def on_vector(event: EventT) -> None:
        vector = ctx.serde.decode_input("FeatureVector", event.message.value)
        ctx.event_id = vector["event_id"]
        now = int(time.time() * 1000)
        # A swap can land between any two records (the registry follower runs whenever this
        # agent awaits); each prediction names the version that made it.
        prediction = server.predict(vector, now)
        await send_prediction(prediction)
        ctx.observe_latency(prediction["ingest_time"])
        shadow = server.predict_baseline(vector, now)
        if shadow is not None:
            await send_prediction(shadow)
        for challenger in server.predict_challengers(vector, now):
            await send_prediction(challenger)


def main() -> None:
    ctx = build_context(SERVICE, InferenceSettings)
    wire(ctx)
    run_worker(ctx)
