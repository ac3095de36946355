"""Features service shell: clean events -> FeatureVectors; clean labels -> LabeledExamples."""

from __future__ import annotations

from typing import Any

from faust.types import EventT, StreamT
from prometheus_client import Counter

from services.features.join import LabelJoin
from services.features.spec import FeatureSpec
from shared.app import ServiceContext, build_context, run_worker
from shared.settings import FeaturesSettings

SERVICE = "features"


def wire(ctx: ServiceContext[FeaturesSettings]) -> None:
    app = ctx.app
    spec = FeatureSpec(ctx.common.feature_set_version)
    parts = ctx.common.partitions
    # Both tables are keyed by event_id but written while processing a record keyed by its
    # entity, so each entry lives in the changelog partition of its entity: co-partitioned.
    join = LabelJoin(
        app.Table("vectors-awaiting-label", default=None, partitions=parts),
        app.Table("labels-awaiting-vector", default=None, partitions=parts),
        app.Table("joined-event-ids", default=None, partitions=parts),
        ttl_ms=int(ctx.settings.join_ttl_s * 1000),
    )
    features_out = ctx.raw_topic("features")
    examples_out = ctx.raw_topic("examples")
    expired_c = Counter(
        "driftloop_join_expired_total",
        "Join entries that waited past the TTL unmatched",
        ["side", "role"],
        registry=ctx.metrics.registry,
    )
    watermark = {"ms": 0}

    def expire(event: EventT, time_ms: int) -> None:
        watermark["ms"] = max(watermark["ms"], time_ms)
        for side, _ in join.expire(watermark["ms"], event.message.partition):
            expired_c.labels("vector" if side == "left" else "label", "features").inc()

    @app.on_rebalance_complete.connect
    async def reindex(app: Any, **_: Any) -> None:  # noqa: ARG001 - signal signature
        join.reindex()  # entries recovered from the changelogs must expire too

    @app.agent(ctx.source("events.clean"), name=f"{SERVICE}.events")
    async def on_events(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            ctx.consumed(event)
            event_id = None
            try:
                clean = ctx.serde.decode("RawEvent", event.message.value)
                event_id = clean["event_id"]
                vector = spec.vector(clean)
                await ctx.send(features_out, vector["entity_id"], ctx.serde.encode("FeatureVector", vector))
                ctx.observe_latency(vector["ingest_time"])
                example = join.on_vector(vector, vector["event_time"], event.message.partition)
                expire(event, vector["event_time"])
                if example is not None:
                    await ctx.send(examples_out, example["entity_id"], ctx.serde.encode("LabeledExample", example))
            except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
                await ctx.dead_letter(event, exc, event_id)

    @app.agent(ctx.source("labels.clean"), name=f"{SERVICE}.labels")
    async def on_labels(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            ctx.consumed(event)
            event_id = None
            try:
                label = ctx.serde.decode("Label", event.message.value)
                event_id = label["event_id"]
                example = join.on_label(label, label["label_time"], event.message.partition)
                expire(event, label["label_time"])
                if example is not None:
                    await ctx.send(examples_out, example["entity_id"], ctx.serde.encode("LabeledExample", example))
            except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
                await ctx.dead_letter(event, exc, event_id)


def main() -> None:
    ctx = build_context(SERVICE, FeaturesSettings)
    wire(ctx)
    run_worker(ctx)
