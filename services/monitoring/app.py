"""Monitoring service shell: features, predictions and labels in; outcomes, drift alerts
and Prometheus metrics out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram

from driftloop.services.monitoring.core import (
    Monitor,
    OutcomeJoin,
    PerformanceTracker,
    is_regression,
    label_fits_prediction,
)
from driftloop.services.monitoring.drift import Detection, Fired, Incident, IncidentMerger
from driftloop.services.monitoring.estimate import AccuracyEstimate
from driftloop.shared.records import DriftAlert, DriftKind, DriftSeverity, FeatureVector, Label, Outcome, Prediction
from driftloop.shared.runtime import Context, Service, run_service
from driftloop.shared.settings import MonitoringSettings
from driftloop.shared.topics import ALERTS, FEATURES, LABELS_CLEAN, OUTCOMES, PREDICTIONS, Topic

SERVICE = "monitoring"
SendAlert = Callable[[Topic[DriftAlert], DriftAlert], Awaitable[Any]]
ROLES = ("champion", "baseline")
LABEL_DELAY_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
STATS_EVERY = 200  # records between refreshes of the rolling gauges
GAUGES_EVERY_S = 2.0  # and on a clock: a version swapped in at the very end of a stream gets its figures

#: The rolling figures of a tracker, exported per model version and role, and per role.
PERF_HELP = (
    ("accuracy_ratio", "Rolling accuracy of the predictions joined with their labels"),
    ("log_loss", "Rolling log loss of the predictions joined with their labels"),
    ("roc_auc", "Rolling ROC AUC of the predictions joined with their labels"),
    ("macro_f1", "Rolling macro-averaged F1 over the classes of the predictions joined with their labels"),
    ("mae", "Rolling mean absolute error of a regressor's predictions joined with their labels"),
    ("rmse", "Rolling root mean squared error of a regressor's predictions joined with their labels"),
)
SERVED_HELP = (
    ("accuracy_ratio", "Rolling accuracy of a role's predictions across versions"),
    ("log_loss", "Rolling log loss of a role's predictions across versions"),
    ("roc_auc", "Rolling ROC AUC of a role's predictions across versions"),
    ("macro_f1", "Rolling macro-averaged F1 of a role's predictions across versions"),
    ("mae", "Rolling mean absolute error of a role's regression predictions across versions"),
    ("rmse", "Rolling root mean squared error of a role's regression predictions across versions"),
)


class MonitoringMetrics:
    def __init__(self, svc: Service[MonitoringSettings]) -> None:
        reg = svc.metrics.registry
        self.perf = {
            metric: Gauge(f"driftloop_model_{metric}", help_, ["model", "version", "role"], registry=reg)
            for metric, help_ in PERF_HELP
        }
        self.served = {
            metric: Gauge(f"driftloop_served_{metric}", help_, ["model", "role"], registry=reg)
            for metric, help_ in SERVED_HELP
        }
        self.estimated = Gauge(
            "driftloop_model_estimated_accuracy_ratio",
            "Label-free estimate of a version's accuracy over its latest champion predictions, from their "
            "confidence as calibrated on the version's labelled outcomes",
            ["model", "version", "role"],
            registry=reg,
        )
        self.served_estimated = Gauge(
            "driftloop_served_estimated_accuracy_ratio",
            "Label-free estimate of the accuracy of a role's latest predictions across versions, ahead of their labels",
            ["model", "role"],
            registry=reg,
        )
        self.outcomes = Counter(
            "driftloop_outcomes_total",
            "Predictions joined with their label",
            ["model", "version", "role", "correct"],
            registry=reg,
        )
        self.refused = Counter(
            "driftloop_outcomes_refused_total",
            "Predictions joined with a label their task cannot score (a regressor's number against a class)",
            ["model", "role", "reason"],
            registry=reg,
        )
        self.expired = Counter(
            "driftloop_join_expired_total",
            "Join entries that waited past the TTL unmatched",
            ["side", "role"],
            registry=reg,
        )
        self.alerts = Counter(
            "driftloop_drift_alerts_total",
            "Drift alerts raised (one per incident), by the incident's lead detection",
            ["model", "kind", "detector", "subject"],
            registry=reg,
        )
        self.detections = Counter(
            "driftloop_drift_detections_total",
            "Drift detections, each merged into an incident",
            ["model", "kind", "detector", "subject"],
            registry=reg,
        )
        self.calibrated = Gauge(
            "driftloop_drift_calibrated_parameter",
            "A drift detector's knob (ADWIN delta, DDM and Page-Hinkley thresholds, EDDM beta, PSI threshold) "
            "as calibrated on the subject's warm-up to DRIFTLOOP_MONITORING_FALSE_ALARMS_PER_10K",
            ["model", "kind", "detector", "subject"],
            registry=reg,
        )
        self.statistic = Gauge(
            "driftloop_drift_statistic",
            "Latest statistic of a drift detector that fired",
            ["model", "kind", "detector", "subject"],
            registry=reg,
        )
        self.feature_mean = Gauge(
            "driftloop_feature_mean", "Exponentially weighted mean of a feature", ["feature"], registry=reg
        )
        self.feature_std = Gauge(
            "driftloop_feature_stddev",
            "Exponentially weighted standard deviation of a feature",
            ["feature"],
            registry=reg,
        )
        self.score = Gauge(
            "driftloop_prediction_score_mean",
            "Exponentially weighted mean positive-class score",
            ["model"],
            registry=reg,
        )
        self.label_delay = Histogram(
            "driftloop_label_delay_seconds", "Label time minus event time", buckets=LABEL_DELAY_BUCKETS, registry=reg
        )


def figures(tracker: PerformanceTracker) -> tuple[tuple[str, float | None], ...]:
    return (
        ("accuracy_ratio", tracker.accuracy),
        ("log_loss", tracker.log_loss),
        ("roc_auc", tracker.roc_auc),
        ("macro_f1", tracker.macro_f1),
        ("mae", tracker.mae),
        ("rmse", tracker.rmse),
    )


class Monitoring:
    """Joins predictions with their labels into outcomes, scores them per model version and
    role, and watches the inputs, the champion's scores and its errors for drift."""

    def __init__(self, svc: Service[MonitoringSettings]) -> None:
        self.svc = svc
        s = svc.settings
        self.name = svc.common.model_name
        self.monitor = Monitor.from_settings(s)
        self.estimate = AccuracyEstimate(window=s.window, calibration_window=s.window)
        self._estimated_at = 0  # the estimate's updates at the last refresh
        ttl_ms = int(s.join_ttl_s * 1000)
        # One join per role: a label meets the champion's prediction and the baseline's.
        self.joins = {
            role: OutcomeJoin(
                svc.store(f"{role}-predictions-awaiting-label"),
                svc.store(f"{role}-labels-awaiting-prediction"),
                svc.store(f"{role}-joined-event-ids"),
                ttl_ms,
                s.regression_tolerance,
            )
            for role in ROLES
        }
        self.metrics = MonitoringMetrics(svc)
        #: The version of the champion's latest prediction: what an input drift alert names.
        self.champion_version = 0
        #: The newest record time seen: the join entries expire behind it.
        self.watermark = 0
        self.records = 0
        self.incidents = IncidentMerger(s.incident_window, s.incident_max_records)
        #: The id of the incident raised last: an escalation repeats it (the merger escalates
        #: only the open incident, which is the last raised).
        self._incident_id: str | None = None
        #: Records fed to the detectors: the incident window's clock.
        self.observed = 0
        self._observed_at_tick = 0
        #: Incidents raised on the clock that the broker has not taken yet.
        self._unsent: list[Incident] = []
        self.regression_logged = False
        self._refreshed_at: dict[int, int] = {}  # id(tracker) -> its updates at the last refresh
        svc.on(FEATURES, self.on_vector)
        svc.on(PREDICTIONS, self.on_prediction)
        svc.on(LABELS_CLEAN, self.on_label)
        svc.every(GAUGES_EVERY_S, self.refresh_on_clock)
        for join in self.joins.values():
            svc.on_recovered(join.reindex)  # recovered entries must expire too

    # --- the handlers -------------------------------------------------------------------------

    async def on_vector(self, vector: FeatureVector, ctx: Context) -> None:
        await self.raise_alerts(ctx, self.monitor.on_vector(vector), vector, vector["event_time"])
        self.housekeeping(ctx, vector["event_time"])

    async def on_prediction(self, prediction: Prediction, ctx: Context) -> None:
        join = self.joins.get(prediction["role"])
        if join is not None:  # challengers are evaluated by retraining, not here
            if prediction["role"] == "champion":
                self.champion_version = prediction["model_version"]
                self.estimate.on_prediction(prediction)
                detections = self.monitor.on_prediction(prediction)
                await self.raise_alerts(ctx, detections, prediction, prediction["event_time"])
            await self.emit(ctx, join.on_prediction(prediction, prediction["event_time"], ctx.partition))
        self.housekeeping(ctx, prediction["event_time"])

    async def on_label(self, label: Label, ctx: Context) -> None:
        for join in self.joins.values():
            await self.emit(ctx, join.on_label(label, label["label_time"], ctx.partition))
        self.housekeeping(ctx, label["label_time"])

    async def refresh_on_clock(self) -> None:
        self.refresh_gauges()
        await self.flush_quiet_incident()

    # --- outcomes and alerts ------------------------------------------------------------------

    async def emit(self, ctx: Context, out: Outcome | None) -> None:
        if out is None:
            return
        if not label_fits_prediction(out, out["label"]):
            self.refuse(out)
            return
        if not self.regression_logged and is_regression(out.get("predicted"), out.get("scores"), out["label"]):
            self.log_regression_detectors()
        await ctx.send(OUTCOMES, out)
        m = self.metrics
        m.outcomes.labels(out["model_name"], str(out["model_version"]), out["role"], str(out["correct"]).lower()).inc()
        if out["role"] == "champion":
            m.label_delay.observe(max(0.0, (out["label_time"] - out["event_time"]) / 1000))
            self.estimate.on_outcome(out)
        await self.raise_alerts(ctx, self.monitor.on_outcome(out), out, out["event_time"])

    def refuse(self, out: Outcome) -> None:
        # Retraining dead-letters the example (label_task_mismatch); here nothing is scored.
        self.metrics.refused.labels(out["model_name"], out["role"], "label_task_mismatch").inc()
        self.svc.log.warning(
            "outcome_refused",
            model_version=out["model_version"],
            role=out["role"],
            event_id=out["event_id"],
            label_type=type(out["label"]).__name__,
            error_code="label_task_mismatch",
        )

    def log_regression_detectors(self) -> None:
        # Once, at the first regression outcome: the task is not known at start, and a
        # classifier's monitoring skips nothing.
        self.regression_logged = True
        monitor = self.monitor
        skipped = sorted(set(monitor.concept_detectors) - set(monitor.regression_concept_detectors))
        if skipped:
            self.svc.log.info(
                "regression_concept_detectors",
                used=list(monitor.regression_concept_detectors),
                skipped=skipped,
                reason="these model a 0/1 error stream; a regressor's absolute error is a real value",
            )

    async def raise_alerts(
        self, ctx: Context, detections: list[Detection], record: Mapping[str, Any], time_ms: int
    ) -> None:
        """Feed one record's detections to the incident merger; send the incidents it completes."""
        if self.monitor.has_due:  # rare: once per subject, when its warm-up completes
            detections = detections + await self.calibrate_due()
        self.observed += 1
        at, version = self.observed, int(record.get("model_version") or self.champion_version)
        fired = [Fired(d, at, record.get("event_id"), version, time_ms) for d in detections]
        for d in detections:
            self.metrics.detections.labels(self.name, d.kind, d.detector, d.subject).inc()
            self.metrics.statistic.labels(self.name, d.kind, d.detector, d.subject).set(d.statistic)
            self.svc.log.info(
                "drift_detected",
                kind=d.kind,
                detector=d.detector,
                subject=d.subject,
                statistic=d.statistic,
                model_version=version,
                event_id=record.get("event_id"),
            )
        for incident in self.incidents.add(fired) if fired else self.incidents.due(at):
            await self.send_alert(ctx.send, incident)

    async def calibrate_due(self) -> list[Detection]:
        """Calibrate the subjects whose warm-up just completed; what their detectors find on
        the values kept meanwhile is reported now."""
        found: list[Detection] = []
        for subject in self.monitor.take_due():
            sample = subject.sample()
            started = time.perf_counter()
            # Off the event loop: it simulates a long stationary stream per detector.
            tuned = await asyncio.to_thread(subject.tune, sample)
            found += subject.install(tuned)
            for detector, value in tuned.items():
                self.metrics.calibrated.labels(self.name, subject.kind, detector, subject.subject).set(value)
            self.svc.log.info(
                "detectors_calibrated",
                kind=subject.kind,
                subject=subject.subject,
                tuned=tuned,
                warmup=len(sample),
                false_alarms_per_10k=self.svc.settings.false_alarms_per_10k,
                seconds=round(time.perf_counter() - started, 3),
            )
        return found

    async def flush_quiet_incident(self) -> None:
        """An incident still open when the stream went quiet (nothing observed since the last
        tick) is raised now, outside any batch: its window cannot fill."""
        if self.incidents.open and self.observed == self._observed_at_tick:
            self._unsent += self.incidents.flush()
        self._observed_at_tick = self.observed
        while self._unsent:
            try:
                await self.send_alert(self.svc.publisher.send, self._unsent[0])
            except (KafkaError, OSError) as exc:
                # Outside a batch nothing retries it: it is sent again on the next tick, and
                # a broker that is away for a moment does not stop the service.
                self.svc.log.error("drift_alert_unsent", error=repr(exc)[:300], waiting=len(self._unsent))
                return
            self._unsent.pop(0)

    async def send_alert(self, send: SendAlert, incident: Incident) -> None:
        alert = self.alert(incident)
        await send(ALERTS, alert)
        lead = incident.lead.detection
        self.metrics.alerts.labels(self.name, lead.kind, lead.detector, lead.subject).inc()
        self.svc.log.warning(
            "drift_alert_raised",
            alert_id=alert["alert_id"],
            incident_id=alert["incident_id"],
            kind=alert["kind"],
            severity=alert["severity"],
            detector=lead.detector,
            subject=lead.subject,
            detectors=alert["detectors"],
            subjects=alert["subjects"],
            detections=alert["detections"],
            escalated=incident.escalated,
            model_version=alert["model_version"],
            event_id=alert["event_id"],
        )

    def alert(self, incident: Incident) -> DriftAlert:
        incident_id = self._incident_id if incident.escalated and self._incident_id else str(uuid.uuid4())
        self._incident_id = incident_id
        lead = incident.lead
        d = lead.detection
        start, end = incident.window
        return {
            "alert_id": str(uuid.uuid4()),
            "kind": cast("DriftKind", d.kind),
            "detector": d.detector,
            "subject": d.subject,
            "statistic": float(d.statistic),
            "threshold": float(d.threshold),
            "model_name": self.name,
            "model_version": lead.model_version,
            # The event times of the incident's first and last detection.
            "window_start_time": start,
            "window_end_time": end,
            "window_size": int(d.window_size),
            "event_id": lead.event_id,
            "created_at": int(time.time() * 1000),
            "severity": cast("DriftSeverity", incident.severity),
            "detectors": incident.detectors,
            "subjects": incident.subjects,
            "detections": len(incident.fired),
            "incident_id": incident_id,
            "escalated": incident.escalated,
        }

    # --- housekeeping and gauges --------------------------------------------------------------

    def housekeeping(self, ctx: Context, time_ms: int) -> None:
        """Advance the watermark, expire this partition's stale join entries, refresh gauges."""
        self.watermark = max(self.watermark, time_ms)
        self.records += 1
        for role, join in self.joins.items():
            for side, _record in join.expire(self.watermark, ctx.partition):
                self.metrics.expired.labels("prediction" if side == "left" else "label", role).inc()
        if self.records % STATS_EVERY == 0:
            self.refresh_gauges()

    def changed(self, tracker: PerformanceTracker) -> bool:
        # The figures are computed on read: only trackers with new outcomes are worth it.
        if self._refreshed_at.get(id(tracker)) == tracker.updates:
            return False
        self._refreshed_at[id(tracker)] = tracker.updates
        return True

    def refresh_gauges(self) -> None:
        m, monitor = self.metrics, self.monitor
        for (model, version, role), tracker in monitor.trackers.items():
            if self.changed(tracker):
                for metric, value in figures(tracker):
                    if value is not None:
                        m.perf[metric].labels(model, str(version), role).set(value)
        for (model, role), tracker in monitor.served.items():
            if self.changed(tracker):
                for metric, value in figures(tracker):
                    if value is not None:
                        m.served[metric].labels(model, role).set(value)
        if self._estimated_at != self.estimate.updates:
            self._estimated_at = self.estimate.updates
            for (model, version), value in self.estimate.by_version().items():
                m.estimated.labels(model, str(version), "champion").set(value)
            for model, value in self.estimate.served().items():
                m.served_estimated.labels(model, "champion").set(value)
        for feature, (mean, std) in monitor.feature_stats().items():
            m.feature_mean.labels(feature).set(mean)
            m.feature_std.labels(feature).set(std)
        m.score.labels(self.name).set(monitor.score_mean)


def main() -> None:
    run_service(SERVICE, MonitoringSettings, Monitoring)
