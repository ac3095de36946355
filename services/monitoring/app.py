"""Monitoring service shell: features, predictions and labels in; outcomes, drift alerts
and Prometheus metrics out."""

from __future__ import annotations

import time
import uuid
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from driftloop.services.monitoring.core import (
    Monitor,
    OutcomeJoin,
    PerformanceTracker,
    is_regression,
    label_fits_prediction,
)
from driftloop.services.monitoring.drift import Detection
from driftloop.shared.app import EventT, ServiceContext, StreamT, build_context, run_worker
from driftloop.shared.settings import MonitoringSettings

SERVICE = "monitoring"
ROLES = ("champion", "baseline")
LABEL_DELAY_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
STATS_EVERY = 200  # records between refreshes of the rolling gauges


def wire(ctx: ServiceContext[MonitoringSettings]) -> None:
    app, s, reg = ctx.app, ctx.settings, ctx.metrics.registry
    name = ctx.common.model_name
    monitor = Monitor.from_settings(s)
    ttl_ms = int(s.join_ttl_s * 1000)
    # One join per role: a label meets the champion's prediction and the baseline's.
    joins = {
        role: OutcomeJoin(
            ctx.store(f"{role}-predictions-awaiting-label"),
            ctx.store(f"{role}-labels-awaiting-prediction"),
            ctx.store(f"{role}-joined-event-ids"),
            ttl_ms,
            s.regression_tolerance,
        )
        for role in ROLES
    }
    skipped = sorted(set(monitor.concept_detectors) - set(monitor.regression_concept_detectors))

    def log_regression_detectors() -> None:
        # Once, at the first regression outcome: the task is not known at start, and a
        # classifier's monitoring skips nothing.
        state["regression_logged"] = True
        if skipped:
            ctx.log.info(
                "regression_concept_detectors",
                used=list(monitor.regression_concept_detectors),
                skipped=skipped,
                reason="these model a 0/1 error stream; a regressor's absolute error is a real value",
            )

    perf = {
        metric: Gauge(f"driftloop_model_{metric}", help_, ["model", "version", "role"], registry=reg)
        for metric, help_ in (
            ("accuracy_ratio", "Rolling accuracy of the predictions joined with their labels"),
            ("log_loss", "Rolling log loss of the predictions joined with their labels"),
            ("roc_auc", "Rolling ROC AUC of the predictions joined with their labels"),
            ("macro_f1", "Rolling macro-averaged F1 over the classes of the predictions joined with their labels"),
            ("mae", "Rolling mean absolute error of a regressor's predictions joined with their labels"),
            ("rmse", "Rolling root mean squared error of a regressor's predictions joined with their labels"),
        )
    }
    served = {
        metric: Gauge(f"driftloop_served_{metric}", help_, ["model", "role"], registry=reg)
        for metric, help_ in (
            ("accuracy_ratio", "Rolling accuracy of a role's predictions across versions"),
            ("log_loss", "Rolling log loss of a role's predictions across versions"),
            ("roc_auc", "Rolling ROC AUC of a role's predictions across versions"),
            ("macro_f1", "Rolling macro-averaged F1 of a role's predictions across versions"),
            ("mae", "Rolling mean absolute error of a role's regression predictions across versions"),
            ("rmse", "Rolling root mean squared error of a role's regression predictions across versions"),
        )
    }
    outcomes_c = Counter(
        "driftloop_outcomes_total",
        "Predictions joined with their label",
        ["model", "version", "role", "correct"],
        registry=reg,
    )
    refused_c = Counter(
        "driftloop_outcomes_refused_total",
        "Predictions joined with a label their task cannot score (a regressor's number against a class)",
        ["model", "role", "reason"],
        registry=reg,
    )
    expired_c = Counter(
        "driftloop_join_expired_total",
        "Join entries that waited past the TTL unmatched",
        ["side", "role"],
        registry=reg,
    )
    alerts_c = Counter(
        "driftloop_drift_alerts_total", "Drift alerts raised", ["model", "kind", "detector", "subject"], registry=reg
    )
    statistic_g = Gauge(
        "driftloop_drift_statistic",
        "Latest statistic of a drift detector that fired",
        ["model", "kind", "detector", "subject"],
        registry=reg,
    )
    feature_mean_g = Gauge(
        "driftloop_feature_mean", "Exponentially weighted mean of a feature", ["feature"], registry=reg
    )
    feature_std_g = Gauge(
        "driftloop_feature_stddev", "Exponentially weighted standard deviation of a feature", ["feature"], registry=reg
    )
    score_g = Gauge(
        "driftloop_prediction_score_mean", "Exponentially weighted mean positive-class score", ["model"], registry=reg
    )
    delay_h = Histogram(
        "driftloop_label_delay_seconds", "Label time minus event time", buckets=LABEL_DELAY_BUCKETS, registry=reg
    )
    outcomes_out = ctx.raw_topic("outcomes")
    alerts_out = ctx.raw_topic("alerts")
    state = {"champion_version": 0, "watermark": 0, "records": 0, "regression_logged": False}

    def figures(tracker: PerformanceTracker) -> tuple[tuple[str, float | None], ...]:
        return (
            ("accuracy_ratio", tracker.accuracy),
            ("log_loss", tracker.log_loss),
            ("roc_auc", tracker.roc_auc),
            ("macro_f1", tracker.macro_f1),
            ("mae", tracker.mae),
            ("rmse", tracker.rmse),
        )

    refreshed_at: dict[int, int] = {}  # id(tracker) -> its updates at the last refresh

    def changed(tracker: PerformanceTracker) -> bool:
        # The figures are computed on read: only trackers with new outcomes are worth it.
        if refreshed_at.get(id(tracker)) == tracker.updates:
            return False
        refreshed_at[id(tracker)] = tracker.updates
        return True

    def refresh_gauges() -> None:
        for (model, version, role), tracker in monitor.trackers.items():
            if not changed(tracker):
                continue
            for metric, value in figures(tracker):
                if value is not None:
                    perf[metric].labels(model, str(version), role).set(value)
        for (model, role), tracker in monitor.served.items():
            if not changed(tracker):
                continue
            for metric, value in figures(tracker):
                if value is not None:
                    served[metric].labels(model, role).set(value)
        for feature, (mean, std) in monitor.feature_stats().items():
            feature_mean_g.labels(feature).set(mean)
            feature_std_g.labels(feature).set(std)
        score_g.labels(name).set(monitor.score_mean)

    async def raise_alerts(detections: list[Detection], record: dict[str, Any], time_ms: int) -> None:
        for d in detections:
            alert = {
                "alert_id": str(uuid.uuid4()),
                "kind": d.kind,
                "detector": d.detector,
                "subject": d.subject,
                "statistic": float(d.statistic),
                "threshold": float(d.threshold),
                "model_name": name,
                "model_version": int(record.get("model_version") or state["champion_version"]),
                # Detectors report their window as a count of observations, not its start:
                # both times are the triggering observation's.
                "window_start_time": time_ms,
                "window_end_time": time_ms,
                "window_size": int(d.window_size),
                "event_id": record.get("event_id"),
                "created_at": int(time.time() * 1000),
            }
            await ctx.send(alerts_out, name, ctx.serde.encode("DriftAlert", alert))
            alerts_c.labels(name, d.kind, d.detector, d.subject).inc()
            statistic_g.labels(name, d.kind, d.detector, d.subject).set(d.statistic)
            ctx.log.warning(
                "drift_detected",
                kind=d.kind,
                detector=d.detector,
                subject=d.subject,
                statistic=d.statistic,
                model_version=alert["model_version"],
                event_id=alert["event_id"],
            )

    async def emit(out: dict[str, Any] | None) -> None:
        if out is None:
            return
        if not label_fits_prediction(out, out["label"]):
            # Retraining dead-letters the example (label_task_mismatch); here nothing is scored.
            refused_c.labels(out["model_name"], out["role"], "label_task_mismatch").inc()
            ctx.log.warning(
                "outcome_refused",
                model_version=out["model_version"],
                role=out["role"],
                event_id=out["event_id"],
                label_type=type(out["label"]).__name__,
                error_code="label_task_mismatch",
            )
            return
        if not state["regression_logged"] and is_regression(out.get("predicted"), out.get("scores"), out["label"]):
            log_regression_detectors()
        await ctx.send(outcomes_out, out["entity_id"], ctx.serde.encode("Outcome", out))
        outcomes_c.labels(out["model_name"], str(out["model_version"]), out["role"], str(out["correct"]).lower()).inc()
        if out["role"] == "champion":
            delay_h.observe(max(0.0, (out["label_time"] - out["event_time"]) / 1000))
        await raise_alerts(monitor.on_outcome(out), out, out["event_time"])

    async def housekeeping(event: EventT, time_ms: int) -> None:
        """Advance the watermark, expire this partition's stale join entries, refresh gauges."""
        state["watermark"] = max(state["watermark"], time_ms)
        state["records"] += 1
        for role, join in joins.items():
            for side, _record in join.expire(state["watermark"], event.message.partition):
                expired_c.labels("prediction" if side == "left" else "label", role).inc()
        if state["records"] % STATS_EVERY == 0:
            refresh_gauges()

    async def on_vector(event: EventT) -> None:
        vector = ctx.serde.decode_input("FeatureVector", event.message.value)
        ctx.event_id = vector["event_id"]
        await raise_alerts(monitor.on_vector(vector), vector, vector["event_time"])
        await housekeeping(event, vector["event_time"])

    async def on_prediction(event: EventT) -> None:
        prediction = ctx.serde.decode_input("Prediction", event.message.value)
        ctx.event_id = prediction["event_id"]
        join = joins.get(prediction["role"])
        if join is not None:  # challengers are evaluated by retraining, not here
            if prediction["role"] == "champion":
                state["champion_version"] = prediction["model_version"]
                await raise_alerts(monitor.on_prediction(prediction), prediction, prediction["event_time"])
            await emit(join.on_prediction(prediction, prediction["event_time"], event.message.partition))
        await housekeeping(event, prediction["event_time"])

    async def on_label(event: EventT) -> None:
        label = ctx.serde.decode_input("Label", event.message.value)
        ctx.event_id = label["event_id"]
        for join in joins.values():
            await emit(join.on_label(label, label["label_time"], event.message.partition))
        await housekeeping(event, label["label_time"])

    @app.agent(ctx.source("features"), name=f"{SERVICE}.features")
    async def on_features(stream: StreamT) -> None:
        await ctx.each(stream, on_vector)

    @app.agent(ctx.source("predictions"), name=f"{SERVICE}.predictions")
    async def on_predictions(stream: StreamT) -> None:
        await ctx.each(stream, on_prediction)

    @app.agent(ctx.source("labels.clean"), name=f"{SERVICE}.labels")
    async def on_labels(stream: StreamT) -> None:
        await ctx.each(stream, on_label)

    @app.timer(2.0)
    async def gauges() -> None:
        # Also on a clock: a version swapped in at the very end of a stream gets its figures.
        refresh_gauges()

    for join in joins.values():
        ctx.recovered_callbacks.append(join.reindex)  # recovered entries must expire too


def main() -> None:
    ctx = build_context(SERVICE, MonitoringSettings)
    wire(ctx)
    run_worker(ctx)
