"""Monitoring service shell: predictions ⨝ labels -> outcomes, metrics and drift alerts."""

from __future__ import annotations

import time
import uuid
from typing import Any

from faust.types import StreamT
from prometheus_client import Counter, Gauge, Histogram

from services.monitoring.core import ConceptDriftMonitor, OutcomeJoin, RollingAccuracy
from shared.app import ServiceContext, build_context, run_worker
from shared.settings import MonitoringSettings

SERVICE = "monitoring"
LABEL_DELAY_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


def wire(ctx: ServiceContext[MonitoringSettings]) -> None:
    app = ctx.app
    parts = ctx.common.partitions
    reg = ctx.metrics.registry
    accuracy_g = Gauge(
        "driftloop_model_accuracy_ratio",
        "Rolling accuracy of served predictions",
        ["model", "version", "role"],
        registry=reg,
    )
    outcomes_c = Counter(
        "driftloop_outcomes_total",
        "Predictions joined with their label",
        ["model", "version", "role", "correct"],
        registry=reg,
    )
    alerts_c = Counter(
        "driftloop_drift_alerts_total", "Drift alerts raised", ["model", "kind", "detector"], registry=reg
    )
    delay_h = Histogram(
        "driftloop_label_delay_seconds", "Label time minus event time", buckets=LABEL_DELAY_BUCKETS, registry=reg
    )
    join = OutcomeJoin(
        app.Table("predictions-awaiting-label", default=None, partitions=parts),
        app.Table("labels-awaiting-prediction", default=None, partitions=parts),
        app.Table("joined-event-ids", default=None, partitions=parts),
    )
    # Rolling state is per process: it restarts empty, which a rolling window tolerates.
    rolling: dict[tuple[str, int, str], RollingAccuracy] = {}
    detector = ConceptDriftMonitor(ctx.settings.adwin_delta, ctx.settings.alert_cooldown)
    outcomes_out = ctx.raw_topic("outcomes")
    alerts_out = ctx.raw_topic("alerts")
    predictions_in, labels_in = ctx.topics.name("predictions"), ctx.topics.name("labels.clean")

    async def emit(out: dict[str, Any] | None) -> None:
        if out is None:
            return
        await ctx.send(outcomes_out, out["entity_id"], ctx.serde.encode("Outcome", out))
        key = (out["model_name"], out["model_version"], out["role"])
        acc = rolling.setdefault(key, RollingAccuracy(ctx.settings.window))
        acc.update(out["correct"])
        accuracy_g.labels(key[0], str(key[1]), key[2]).set(acc.value or 0.0)
        outcomes_c.labels(key[0], str(key[1]), key[2], str(out["correct"]).lower()).inc()
        delay_h.observe(max(0.0, (out["label_time"] - out["event_time"]) / 1000))
        alert = detector.update(out)
        if alert is not None:
            alert.update(alert_id=str(uuid.uuid4()), created_at=int(time.time() * 1000))
            await ctx.send(alerts_out, alert["model_name"], ctx.serde.encode("DriftAlert", alert))
            alerts_c.labels(alert["model_name"], alert["kind"], alert["detector"]).inc()
            ctx.log.warning(
                "drift_detected",
                model_name=alert["model_name"],
                model_version=alert["model_version"],
                detector=alert["detector"],
                statistic=alert["statistic"],
                event_id=alert["event_id"],
            )

    @app.agent(ctx.raw_topic("predictions"), name=f"{SERVICE}.predictions")
    async def on_predictions(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            ctx.metrics.records_in.labels(SERVICE, predictions_in).inc()
            event_id = None
            try:
                prediction = ctx.serde.decode("Prediction", event.message.value)
                event_id = prediction["event_id"]
                await emit(join.on_prediction(prediction))
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
                await emit(join.on_label(label))
            except Exception as exc:  # noqa: BLE001 - outermost loop: dead-letter (by code), go on
                await ctx.dead_letter(event, exc, event_id)


def main() -> None:
    ctx = build_context(SERVICE, MonitoringSettings)
    wire(ctx)
    run_worker(ctx)
