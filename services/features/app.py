"""Features service shell: clean events -> FeatureVectors; clean labels -> LabeledExamples."""

from __future__ import annotations

from typing import Any

from faust.types import StreamT

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
    )
    features_out = ctx.raw_topic("features")
    examples_out = ctx.raw_topic("examples")
    events_in, labels_in = ctx.topics.name("events.clean"), ctx.topics.name("labels.clean")

    @app.agent(ctx.raw_topic("events.clean"), name=f"{SERVICE}.events")
    async def on_events(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            ctx.metrics.records_in.labels(SERVICE, events_in).inc()
            event_id = None
            try:
                clean = ctx.serde.decode("RawEvent", event.message.value)
                event_id = clean["event_id"]
                vector = spec.vector(clean)
                await ctx.send(features_out, vector["entity_id"], ctx.serde.encode("FeatureVector", vector))
                example = join.on_vector(vector)
                if example is not None:
                    await ctx.send(examples_out, example["entity_id"], ctx.serde.encode("LabeledExample", example))
            except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
                await ctx.dead_letter(event, exc, event_id)

    @app.agent(ctx.raw_topic("labels.clean"), name=f"{SERVICE}.labels")
    async def on_labels(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            ctx.metrics.records_in.labels(SERVICE, labels_in).inc()
            event_id = None
            try:
                label = ctx.serde.decode("Label", event.message.value)
                event_id = label["event_id"]
                example = join.on_label(label)
                if example is not None:
                    await ctx.send(examples_out, example["entity_id"], ctx.serde.encode("LabeledExample", example))
            except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
                await ctx.dead_letter(event, exc, event_id)


def main() -> None:
    ctx = build_context(SERVICE, FeaturesSettings)
    wire(ctx)
    run_worker(ctx)
