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
from driftloop.shared.records import FeatureVector, Label, LabeledExample, RawEvent
from driftloop.shared.runtime import Context, Service, run_service
from driftloop.shared.serde import HEADER_SIZE
from driftloop.shared.settings import FeaturesSettings
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EXAMPLES, FEATURES, LABELS_CLEAN

SERVICE = "features"
OFFLINE_RECORDS = {"features": "FeatureVector", "examples": "LabeledExample"}


class FeaturesMetrics:
    def __init__(self, svc: Service[FeaturesSettings]) -> None:
        reg = svc.metrics.registry
        self.expired = Counter(
            "driftloop_join_expired_total",
            "Join entries that waited past the TTL unmatched",
            ["side", "role"],
            registry=reg,
        )
        self.window_events = Counter(
            "driftloop_features_window_events_total",
            "Events by how they met their entity's windows: in_order, out_of_order (accepted), "
            "too_late (passthrough features only, state untouched), duplicate",
            ["status"],
            registry=reg,
        )
        offline = Counter(
            "driftloop_offline_records_total",
            "Records appended to the offline store (written at the next flush)",
            ["record"],
            registry=reg,
        )
        self.offline = {kind: offline.labels(kind) for kind in OFFLINE_RECORDS}


class Features:
    """Online features per event (windowed per entity when the spec says so), the
    point-in-time label join, and the offline store."""

    def __init__(self, svc: Service[FeaturesSettings]) -> None:
        self.svc = svc
        s = svc.settings
        # ConfigError on a malformed DRIFTLOOP_FEATURES_WINDOWS, before any record is read.
        self.spec = FeatureSpec.parse(
            svc.common.effective_feature_set_version,
            svc.common.features_windows,
            lateness_ms=int(s.windows_lateness_s * 1000),
            max_events=s.windows_max_events,
        )
        # Per-entity window state, keyed by entity_id: events are keyed by entity, so co-partitioned.
        self.windows = svc.store("entity-windows") if self.spec.windowed else None
        if self.spec.windowed:
            svc.log.info(
                "feature_windows",
                feature_set_version=self.spec.version,
                aggregates=[a.name for a in self.spec.aggregates],
                ratios=[r.name for r in self.spec.ratios],
            )
        # The stores are keyed by event_id but written while processing a record keyed by its
        # entity, so each entry lives in the partition of its entity: co-partitioned.
        self.join = LabelJoin(
            svc.store("vectors-awaiting-label"),
            svc.store("labels-awaiting-vector"),
            svc.store("joined-event-ids"),
            ttl_ms=int(s.join_ttl_s * 1000),
        )
        self.metrics = FeaturesMetrics(svc)
        #: The newest event or label time seen: join entries older than the TTL expire.
        self.watermark_ms = 0
        self.offline: OfflineWriter | None = None
        if svc.common.offline_store:
            self.offline = OfflineWriter(
                Path(svc.common.offline_store),
                {kind: svc.serde.registry.latest(record)[1] for kind, record in OFFLINE_RECORDS.items()},
            )
        svc.on(EVENTS_CLEAN, self.on_event)
        svc.on(LABELS_CLEAN, self.on_label)
        svc.every(s.offline_flush_s, self.flush_offline)
        svc.on_shutdown(self.flush_offline)
        svc.on_recovered(self.join.reindex)  # entries recovered from the changelogs must expire too

    async def on_event(self, clean: RawEvent, ctx: Context) -> None:
        if self.windows is None:
            vector = self.spec.vector(clean)
        else:
            vector, outcome = self.spec.update(clean, self.windows.get(clean["entity_id"]))
            if outcome.status != "too_late":
                self.windows[clean["entity_id"]] = outcome.state
            self.metrics.window_events.labels(outcome.status).inc()
        data = await ctx.send(FEATURES, vector)
        await self.to_offline("features", vector, data)
        ctx.observe_latency(vector["ingest_time"])
        await self.emit_example(ctx, self.join.on_vector(vector, vector["event_time"], ctx.partition))
        await self.expire(ctx, vector["event_time"])

    async def on_label(self, label: Label, ctx: Context) -> None:
        waiting = {**label, OFFSET: ctx.message.offset}  # for its dead letter, should it expire
        await self.emit_example(ctx, self.join.on_label(waiting, label["label_time"], ctx.partition))
        await self.expire(ctx, label["label_time"])

    async def emit_example(self, ctx: Context, example: LabeledExample | None) -> None:
        if example is not None:
            data = await ctx.send(EXAMPLES, example)
            await self.to_offline("examples", example, data)

    async def expire(self, ctx: Context, time_ms: int) -> None:
        """Advance the watermark; expire this partition's join entries older than the TTL.
        A label that expired unmatched is dead-lettered (label_expired)."""
        self.watermark_ms = max(self.watermark_ms, time_ms)
        for side, record in self.join.expire(self.watermark_ms, ctx.partition):
            self.metrics.expired.labels("vector" if side == "left" else "label", "features").inc()
            if side == "right":
                await self.dead_letter_label(ctx, dict(record))

    async def dead_letter_label(self, ctx: Context, label: dict[str, Any]) -> None:
        value = self.svc.serde.encode(LABELS_CLEAN, {k: v for k, v in label.items() if k != OFFSET})
        letter = expired_label_letter(
            label,
            value,
            self.svc.topics.name(LABELS_CLEAN),
            ctx.partition,
            self.join.ttl_ms or 0,
            int(time.time() * 1000),
        )
        await ctx.send(DEADLETTER, letter, key=letter["original_key"])
        self.svc.dead_letters.count(letter["error_code"])

    async def to_offline(self, kind: str, value: FeatureVector | LabeledExample, framed: bytes) -> None:
        if self.offline is not None:
            self.offline.append(kind, value, framed[HEADER_SIZE:])  # stored as produced, not encoded again
            self.metrics.offline[kind].inc()
            if self.offline.pending >= self.svc.settings.offline_flush_records:
                await self.flush_offline()

    async def flush_offline(self) -> None:
        offline = self.offline
        if offline is None or not offline.pending:
            return
        n, batch = offline.pending, offline.take()
        # File writes run off the event loop; only the batch taken above is touched there.
        parts = await asyncio.get_running_loop().run_in_executor(None, offline.write, batch, int(time.time() * 1000))
        self.svc.log.debug("offline_flushed", records=n, parts=len(parts))


def main() -> None:
    run_service(SERVICE, FeaturesSettings, Features)
