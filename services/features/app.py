"""Features service shell: clean events -> FeatureVectors; clean labels -> LabeledExamples."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from driftloop.services.features.join import OFFSET, LabelJoin, expired_label_letter
from driftloop.services.features.offline import OfflineWriter
from driftloop.services.features.spec import FeatureSpec
from driftloop.shared.app import EventT, ServiceContext, StreamT, build_context, run_worker
from driftloop.shared.serde import HEADER_SIZE
from driftloop.shared.settings import FeaturesSettings

SERVICE = "features"
OFFLINE_RECORDS = {"features": "FeatureVector", "examples": "LabeledExample"}


def wire(ctx: ServiceContext[FeaturesSettings]) -> None:
    app = ctx.app
    s = ctx.settings
    # ConfigError on a malformed DRIFTLOOP_FEATURES_WINDOWS, before any record is read.
    spec = FeatureSpec.parse(
        ctx.common.effective_feature_set_version,
        ctx.common.features_windows,
        lateness_ms=int(s.windows_lateness_s * 1000),
        max_events=s.windows_max_events,
    )
    # Per-entity window state, keyed by entity_id: events are keyed by entity, so co-partitioned.
    windows_state = ctx.store("entity-windows") if spec.windowed else None
    if spec.windowed:
        ctx.log.info(
            "feature_windows",
            feature_set_version=spec.version,
            aggregates=[a.name for a in spec.aggregates],
            ratios=[r.name for r in spec.ratios],
        )
    # The stores are keyed by event_id but written while processing a record keyed by its
    # entity, so each entry lives in the partition of its entity: co-partitioned.
    join = LabelJoin(
        ctx.store("vectors-awaiting-label"),
        ctx.store("labels-awaiting-vector"),
        ctx.store("joined-event-ids"),
        ttl_ms=int(ctx.settings.join_ttl_s * 1000),
    )
    features_out = ctx.raw_topic("features")
    deadletter = ctx.raw_topic("deadletter")
    labels_in = ctx.source("labels.clean")
    examples_out = ctx.raw_topic("examples")
    expired_c = Counter(
        "driftloop_join_expired_total",
        "Join entries that waited past the TTL unmatched",
        ["side", "role"],
        registry=ctx.metrics.registry,
    )
    window_events = Counter(
        "driftloop_features_window_events_total",
        "Events by how they met their entity's windows: in_order, out_of_order (accepted), "
        "too_late (passthrough features only, state untouched), duplicate",
        ["status"],
        registry=ctx.metrics.registry,
    )
    watermark = {"ms": 0}
    offline: OfflineWriter | None = None
    if ctx.common.offline_store:
        offline = OfflineWriter(
            Path(ctx.common.offline_store),
            {kind: ctx.serde.registry.latest(record)[1] for kind, record in OFFLINE_RECORDS.items()},
        )
    offline_c = Counter(
        "driftloop_offline_records_total",
        "Records appended to the offline store (written at the next flush)",
        ["record"],
        registry=ctx.metrics.registry,
    )

    async def flush_offline() -> None:
        if offline is None or not offline.pending:
            return
        n, batch = offline.pending, offline.take()
        # File writes run off the event loop; only the batch taken above is touched there.
        parts = await asyncio.get_running_loop().run_in_executor(None, offline.write, batch, int(time.time() * 1000))
        ctx.log.debug("offline_flushed", records=n, parts=len(parts))

    offline_counts = {kind: offline_c.labels(kind) for kind in OFFLINE_RECORDS}

    async def to_offline(kind: str, value: dict[str, Any], framed: bytes) -> None:
        if offline is not None:
            offline.append(kind, value, framed[HEADER_SIZE:])  # stored as produced, not encoded again
            offline_counts[kind].inc()
            if offline.pending >= s.offline_flush_records:
                await flush_offline()

    @app.timer(ctx.settings.offline_flush_s)
    async def offline_timer() -> None:
        await flush_offline()

    app.on_shutdown(flush_offline)
    ctx.recovered_callbacks.append(join.reindex)  # entries recovered from the changelogs must expire too

    async def emit_example(example: dict[str, Any] | None) -> None:
        if example is not None:
            data = ctx.serde.encode("LabeledExample", example)
            await ctx.send(examples_out, example["entity_id"], data)
            await to_offline("examples", example, data)

    async def dead_letter_label(label: dict[str, Any], partition: int) -> None:
        value = ctx.serde.encode("Label", {k: v for k, v in label.items() if k != OFFSET})
        letter = expired_label_letter(
            label, value, labels_in.get_topic_name(), partition, join.ttl_ms or 0, int(time.time() * 1000)
        )
        await ctx.send(deadletter, letter["original_key"], ctx.serde.encode("DeadLetter", letter))
        ctx.metrics.dead_letters.labels(SERVICE, letter["error_code"]).inc()

    async def expire(event: EventT, time_ms: int) -> None:
        watermark["ms"] = max(watermark["ms"], time_ms)
        for side, record in join.expire(watermark["ms"], event.message.partition):
            expired_c.labels("vector" if side == "left" else "label", "features").inc()
            if side == "right":
                await dead_letter_label(dict(record), event.message.partition)

    async def on_event(event: EventT) -> None:
        clean = ctx.serde.decode_input("RawEvent", event.message.value)
        ctx.event_id = clean["event_id"]
        if windows_state is None:
            vector = spec.vector(clean)
        else:
            vector, outcome = spec.update(clean, windows_state.get(clean["entity_id"]))
            if outcome.status != "too_late":
                windows_state[clean["entity_id"]] = outcome.state
            window_events.labels(outcome.status).inc()
        data = ctx.serde.encode("FeatureVector", vector)
        await ctx.send(features_out, vector["entity_id"], data)
        await to_offline("features", vector, data)
        ctx.observe_latency(vector["ingest_time"])
        await emit_example(join.on_vector(vector, vector["event_time"], event.message.partition))
        await expire(event, vector["event_time"])

    async def on_label(event: EventT) -> None:
        label = ctx.serde.decode_input("Label", event.message.value)
        ctx.event_id = label["event_id"]
        waiting = {**label, OFFSET: event.message.offset}  # for its dead letter, should it expire
        await emit_example(join.on_label(waiting, label["label_time"], event.message.partition))
        await expire(event, label["label_time"])

    @app.agent(ctx.source("events.clean"), name=f"{SERVICE}.events")
    async def on_events(stream: StreamT) -> None:
        await ctx.each(stream, on_event)

    @app.agent(labels_in, name=f"{SERVICE}.labels")
    async def on_labels(stream: StreamT) -> None:
        await ctx.each(stream, on_label)


def main() -> None:
    ctx = build_context(SERVICE, FeaturesSettings)
    wire(ctx)
    run_worker(ctx)
