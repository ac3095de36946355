"""The monitoring shell's handlers, in-process through the runtime's testing harness."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from driftloop.services.monitoring.app import Monitoring
from driftloop.services.monitoring.drift import Detection, Fired, IncidentMerger
from driftloop.shared.errors import DriftloopError
from driftloop.shared.records import FeatureVector, Label, LabelValue, Prediction, Role
from driftloop.shared.runtime import Service
from driftloop.shared.runtime.testing import Harness
from driftloop.shared.settings import CommonSettings, MonitoringSettings
from driftloop.shared.topics import ALERTS, FEATURES, LABELS_CLEAN, OUTCOMES, PREDICTIONS

T0 = 1_700_000_000_000
MODEL = "default"


class RecordingLog:
    """A structlog stand-in: keeps (level, event, fields) in order."""

    def __init__(self, events: list[tuple[str, str, dict[str, Any]]] | None = None, **bound: Any) -> None:
        self.events = events if events is not None else []
        self._bound = bound

    def bind(self, **fields: Any) -> RecordingLog:
        return RecordingLog(self.events, **self._bound, **fields)

    def _add(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.events.append((level, event, {**self._bound, **fields}))

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.events if name == event]


def vector(i: int, x: float, entity: str = "u1") -> FeatureVector:
    return {
        "event_id": f"v{i}",
        "entity_id": entity,
        "event_time": T0 + i,
        "features": {"x": x},
        "feature_set_version": "v1",
        "ingest_time": None,
    }


def prediction(
    event_id: str,
    role: Role = "champion",
    version: int = 2,
    predicted: LabelValue | None = True,
    scores: dict[str, float] | None = None,
    event_time: int = T0,
    entity: str = "u1",
) -> Prediction:
    return {
        "event_id": event_id,
        "entity_id": entity,
        "event_time": event_time,
        "model_name": MODEL,
        "model_version": version,
        "role": role,
        "predicted": predicted,
        "scores": {"False": 0.2, "True": 0.8} if scores is None else scores,
        "feature_set_version": "v1",
        "ingest_time": None,
        "predicted_at": event_time + 5,
    }


def label(event_id: str, value: LabelValue = True, label_time: int = T0 + 2_000, entity: str = "u1") -> Label:
    return {"event_id": event_id, "entity_id": entity, "label": value, "label_time": label_time}


def service(**settings: Any) -> tuple[Monitoring, Harness, RecordingLog]:
    log = RecordingLog()
    svc = Service("monitoring", MonitoringSettings(metrics_port=0, **settings), CommonSettings(), log=log)
    return Monitoring(svc), Harness(svc), log


def sample(shell: Monitoring, name: str, **labels: str) -> float | None:
    value = shell.svc.metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_a_prediction_and_its_label_make_an_outcome_per_role() -> None:
    shell, h, _ = service()

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("e1"), prediction("e1", role="baseline", version=1, predicted=False))
        assert h.sent(OUTCOMES) == []
        await h.feed(LABELS_CLEAN, label("e1", True), key="u1")

    asyncio.run(run())
    outcomes = h.sent(OUTCOMES)
    assert [(o["role"], o["model_version"], o["predicted"], o["correct"], o["loss"]) for o in outcomes] == [
        ("champion", 2, True, True, 0.0),
        ("baseline", 1, False, False, 1.0),
    ]
    champion = outcomes[0]
    assert champion["event_id"] == "e1"
    assert champion["label"] is True
    assert champion["event_time"] == T0
    assert champion["label_time"] == T0 + 2_000
    assert champion["scores"] == {"False": 0.2, "True": 0.8}
    assert h.keys(OUTCOMES) == [b"u1", b"u1"]
    outcomes_total = "driftloop_outcomes_total"
    assert sample(shell, outcomes_total, model=MODEL, version="2", role="champion", correct="true") == 1
    assert sample(shell, outcomes_total, model=MODEL, version="1", role="baseline", correct="false") == 1
    # The label delay is the champion's only: one observation of 2 s.
    assert sample(shell, "driftloop_label_delay_seconds_count") == 1
    assert sample(shell, "driftloop_label_delay_seconds_sum") == pytest.approx(2.0)
    assert h.dead_letters() == []


def test_each_event_id_is_joined_once_and_its_store_entries_go() -> None:
    shell, h, _ = service()

    async def run() -> None:
        await h.feed(LABELS_CLEAN, label("e1"), partition=3)
        await h.feed(PREDICTIONS, prediction("e1"), partition=3)
        await h.feed(PREDICTIONS, prediction("e1"), partition=3)  # redelivered
        await h.feed(LABELS_CLEAN, label("e1"), partition=3)  # redelivered

    asyncio.run(run())
    assert [o["role"] for o in h.sent(OUTCOMES)] == ["champion"]
    waiting = h.writes("champion-labels-awaiting-prediction")
    # Written when the label came, deleted when its prediction did: in the input's partition.
    assert [(w.partition, w.key, w.value is None) for w in waiting] == [(3, "e1", False), (3, "e1", True)]
    assert waiting[0].value["label"] is True
    assert [(w.partition, w.key) for w in h.writes("champion-joined-event-ids")] == [(3, "e1")]
    assert shell.joins["champion"].predictions == {}
    assert "e1" in shell.joins["baseline"].labels  # no baseline prediction came: its label waits


def test_a_challengers_prediction_is_not_joined() -> None:
    shell, h, _ = service()

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("e1", role="champion", version=2))
        await h.feed(PREDICTIONS, prediction("e2", role="challenger", version=7, scores={"False": 0.9, "True": 0.1}))
        await h.feed(LABELS_CLEAN, label("e2"))

    asyncio.run(run())
    assert h.sent(OUTCOMES) == []
    assert shell.champion_version == 2  # a challenger's version is not the champion's
    assert shell.monitor.score_mean == pytest.approx(0.8)  # nor is its score the champion's
    # Only the label waits for e2, in both joins; the challenger's prediction is stored nowhere.
    assert sorted(w.store.removeprefix("driftloop.monitoring-") for w in h.store_writes if w.key == "e2") == [
        "baseline-labels-awaiting-prediction-changelog",
        "champion-labels-awaiting-prediction-changelog",
    ]
    assert shell.records == 3
    assert h.dead_letters() == []


def test_an_input_drift_raises_an_alert_keyed_by_model_name() -> None:
    # Uncalibrated: River's ADWIN at its fixed delta.
    shell, h, log = service(alert_cooldown=0, input_detectors="adwin", incident_window=0, false_alarms_per_10k=0)

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("p1", version=4))
        await h.feed(FEATURES, *(vector(i, (i % 2) * 0.1 + (0.0 if i < 200 else 5.0)) for i in range(400)))

    asyncio.run(run())
    alerts = h.sent(ALERTS)
    assert alerts, "a jump of the feature's level from 0 to 5 is an input drift"
    first = alerts[0]
    assert (first["kind"], first["detector"], first["subject"]) == ("input", "ADWIN", "x")
    assert first["model_name"] == MODEL
    assert first["model_version"] == 4  # a vector names no version: the champion's latest
    assert first["event_id"] is not None
    i = int(first["event_id"].removeprefix("v"))
    assert i >= 200  # raised by a record after the jump
    assert first["window_start_time"] == first["window_end_time"] == T0 + i
    assert first["threshold"] == pytest.approx(0.002)
    assert first["statistic"] > 1.0
    assert first["window_size"] > 0
    # With no incident window, each detection is an incident of its own.
    assert (first["severity"], first["detectors"], first["subjects"], first["detections"]) == (
        "low",
        ["ADWIN"],
        ["x"],
        1,
    )
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    assert h.keys(ALERTS) == [MODEL.encode()] * len(alerts)
    labels = {"model": MODEL, "kind": "input", "detector": "ADWIN", "subject": "x"}
    assert sample(shell, "driftloop_drift_alerts_total", **labels) == len(alerts)
    assert sample(shell, "driftloop_drift_statistic", **labels) == pytest.approx(alerts[-1]["statistic"])
    logged = log.named("drift_detected")
    assert logged[0] == {
        "kind": "input",
        "detector": "ADWIN",
        "subject": "x",
        "statistic": first["statistic"],
        "model_version": 4,
        "event_id": first["event_id"],
    }


def _two_features(i: int, jump_at: int) -> FeatureVector:
    level = 0.0 if i < jump_at else 5.0
    return {**vector(i, (i % 2) * 0.1 + level), "features": {"x": (i % 2) * 0.1 + level, "y": (i % 3) * 0.1 + level}}


def test_detections_within_the_incident_window_are_one_alert_naming_them_all() -> None:
    shell, h, log = service(input_detectors="adwin,psi", incident_window=600)

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("p1", version=4))
        await h.feed(FEATURES, *(_two_features(i, 600) for i in range(1500)))

    asyncio.run(run())
    alerts = h.sent(ALERTS)
    detections = log.named("drift_detected")
    assert len(detections) > len(alerts) >= 1, (detections, alerts)
    first = alerts[0]
    # ADWIN fires on both features at once, PSI a little later: one incident.
    assert first["kind"] == "input" and first["subjects"] == ["x", "y"]
    assert set(first["detectors"]) == {"ADWIN", "PSI"} and first["severity"] == "medium"
    in_window = [d for d in detections if int(d["event_id"].removeprefix("v")) - 607 < 600]
    assert first["detections"] == len(in_window)
    assert first["window_start_time"] < first["window_end_time"]
    assert first["event_id"] == detections[0]["event_id"]  # the lead: the first of its kind
    assert sum(a["detections"] for a in alerts) == len(detections)
    counted = sum(
        sample(shell, "driftloop_drift_detections_total", model=MODEL, kind="input", detector=d, subject=f) or 0
        for d in ("ADWIN", "PSI")
        for f in ("x", "y")
    )
    assert counted == len(detections)
    assert log.named("drift_alert_raised")[0]["severity"] == "medium"


def test_an_incident_open_when_the_stream_goes_quiet_is_raised_on_the_clock() -> None:
    shell, h, _ = service(input_detectors="adwin", incident_window=10_000, false_alarms_per_10k=0)

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("p1", version=4))
        await h.feed(FEATURES, *(vector(i, (i % 2) * 0.1 + (0.0 if i < 200 else 5.0)) for i in range(400)))
        await h.tick()  # records came since the last tick: the window may still fill
        assert h.sent(ALERTS) == []
        await h.tick()  # nothing since: raised now
        await h.tick()

    asyncio.run(run())
    alerts = h.sent(ALERTS)
    assert len(alerts) == 1 and alerts[0]["detectors"] == ["ADWIN"] and alerts[0]["subjects"] == ["x"]


def test_an_incident_the_broker_refuses_on_the_clock_is_sent_on_a_later_tick() -> None:
    shell, h, log = service(input_detectors="adwin", incident_window=10_000, false_alarms_per_10k=0)
    refused: list[Any] = []

    async def refuse(record: Any) -> None:
        refused.append(record)
        raise KafkaConnectionError("broker away")

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("p1", version=4))
        await h.feed(FEATURES, *(vector(i, (i % 2) * 0.1 + (0.0 if i < 200 else 5.0)) for i in range(400)))
        await h.tick()
        shell.svc.publisher.bind(refuse)
        await h.tick()  # quiet: raised now, and refused
        await h.tick()  # tried again, refused again
        shell.svc.publisher.bind(h.capture)
        await h.tick()
        await h.tick()

    asyncio.run(run())
    assert len(refused) == 2
    assert [e["waiting"] for e in log.named("drift_alert_unsent")] == [1, 1]
    alerts = h.sent(ALERTS)
    assert len(alerts) == 1 and alerts[0]["detectors"] == ["ADWIN"]


def test_detectors_are_calibrated_on_the_warm_up_and_then_find_a_drift_in_it() -> None:
    shell, h, log = service(alert_cooldown=0, input_detectors="adwin,psi", incident_window=0, false_alarms_per_10k=2)
    warmup = shell.monitor.calibration.warmup if shell.monitor.calibration else 0
    assert warmup == 500

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("p1", version=4))
        # Stationary until 450, then the level jumps: the jump falls inside the warm-up.
        await h.feed(FEATURES, *(vector(i, math.sin(i) + (0.0 if i < 450 else 6.0)) for i in range(499)))
        assert h.sent(ALERTS) == [], "nothing is detected before the detectors are calibrated"
        await h.feed(FEATURES, vector(499, 6.0))

    asyncio.run(run())
    (calibrated,) = [c for c in log.named("detectors_calibrated") if c["subject"] == "x"]
    assert calibrated["kind"] == "input" and calibrated["warmup"] == 500
    assert set(calibrated["tuned"]) == {"adwin", "psi"}
    for detector, value in calibrated["tuned"].items():
        labels = {"model": MODEL, "kind": "input", "detector": detector, "subject": "x"}
        assert sample(shell, "driftloop_drift_calibrated_parameter", **labels) == pytest.approx(value)
    # The detectors ran over the kept warm-up once installed: the jump at 450 is reported at 499.
    alerts = h.sent(ALERTS)
    assert alerts and {a["event_id"] for a in alerts} == {"v499"}
    assert alerts[0]["threshold"] == pytest.approx(calibrated["tuned"]["adwin"])


def test_a_regressors_prediction_against_a_float_label_is_scored_by_its_error() -> None:
    shell, h, log = service(regression_tolerance=0.25)

    async def run() -> None:
        await h.feed(
            PREDICTIONS, prediction("e1", predicted=2.5, scores={}), prediction("e2", predicted=1.0, scores={})
        )
        await h.feed(LABELS_CLEAN, label("e1", 3.0), label("e2", 1.1))
        await h.tick()

    asyncio.run(run())
    outcomes = h.sent(OUTCOMES)
    assert [(o["event_id"], o["correct"]) for o in outcomes] == [("e1", False), ("e2", True)]
    assert outcomes[0]["loss"] == pytest.approx(0.5)
    assert outcomes[1]["loss"] == pytest.approx(0.1)
    assert outcomes[0]["label"] == 3.0
    assert isinstance(outcomes[0]["label"], float)
    perf = {"model": MODEL, "version": "2", "role": "champion"}
    assert sample(shell, "driftloop_model_mae", **perf) == pytest.approx(0.3)
    assert sample(shell, "driftloop_model_rmse", **perf) == pytest.approx(math.sqrt((0.25 + 0.01) / 2))
    assert sample(shell, "driftloop_model_accuracy_ratio", **perf) is None  # no class to be right about
    # Logged once, at the first regression outcome: DDM models a 0/1 stream and is left out.
    assert log.named("regression_concept_detectors") == [
        {
            "used": ["adwin"],
            "skipped": ["ddm"],
            "reason": "these model a 0/1 error stream; a regressor's absolute error is a real value",
        }
    ]


def test_a_class_label_against_a_regressors_prediction_is_refused() -> None:
    shell, h, log = service()

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("e1", predicted=2.5, scores={}))
        await h.feed(LABELS_CLEAN, label("e1", "cat"))

    asyncio.run(run())
    assert h.sent(OUTCOMES) == []
    refused = "driftloop_outcomes_refused_total"
    assert sample(shell, refused, model=MODEL, role="champion", reason="label_task_mismatch") == 1
    assert sample(shell, refused, model=MODEL, role="baseline", reason="label_task_mismatch") is None
    assert sample(shell, "driftloop_outcomes_total", model=MODEL, version="2", role="champion", correct="false") is None
    assert shell.monitor.trackers == {}  # nothing scored
    assert log.named("outcome_refused") == [
        {
            "model_version": 2,
            "role": "champion",
            "event_id": "e1",
            "label_type": "str",
            "error_code": "label_task_mismatch",
        }
    ]
    assert log.named("regression_concept_detectors") == []
    assert h.dead_letters() == []  # refused, not dead-lettered: retraining dead-letters the example


def test_unmatched_entries_expire_behind_the_watermark_in_their_own_partition() -> None:
    shell, h, _ = service(join_ttl_s=1.0)
    expired = "driftloop_join_expired_total"

    async def run() -> None:
        await h.feed(PREDICTIONS, prediction("p1", event_time=T0), partition=0)
        await h.feed(LABELS_CLEAN, label("l1", label_time=T0 + 100), partition=0)
        # Another partition's record moves the watermark but expires only its own entries.
        await h.feed(FEATURES, vector(10_000, 1.0), partition=1)
        assert sample(shell, expired, side="prediction", role="champion") is None
        await h.feed(FEATURES, vector(10_001, 1.0), partition=0)

    asyncio.run(run())
    assert shell.watermark == T0 + 10_001
    assert sample(shell, expired, side="prediction", role="champion") == 1
    assert sample(shell, expired, side="label", role="champion") == 1
    assert sample(shell, expired, side="label", role="baseline") == 1  # the label waited in both joins
    assert sample(shell, expired, side="prediction", role="baseline") is None
    deletions = [(w.partition, w.key) for w in h.writes("champion-predictions-awaiting-label") if w.value is None]
    assert deletions == [(0, "p1")]
    # An expired prediction is forgotten: its late label joins nothing.
    asyncio.run(h.feed(LABELS_CLEAN, label("p1", label_time=T0 + 10_002)))
    assert h.sent(OUTCOMES) == []


def test_recovered_entries_are_reindexed_so_that_they_expire() -> None:
    shell, h, _ = service(join_ttl_s=1.0)
    join = shell.joins["champion"]
    # As a changelog replay leaves it: an entry in the store that the expiry index never saw.
    join.predictions["p1"] = {**prediction("p1"), "_arrived_ms": T0, "_shard": 0}
    h.recovered()
    asyncio.run(h.feed(FEATURES, vector(5_000, 1.0)))
    assert sample(shell, "driftloop_join_expired_total", side="prediction", role="champion") == 1
    assert "p1" not in join.predictions


def test_bad_input_is_dead_lettered_with_its_code_and_the_batch_goes_on() -> None:
    shell, h, _ = service()
    garbage = b"not avro"

    async def run() -> None:
        await h.feed(PREDICTIONS, garbage, prediction("e1"), key=b"u1")
        await h.feed(FEATURES, vector(1, math.nan), vector(2, 1.0))

    # NaN passes Avro's double but not a service's input; the harness encodes it as a producer could.
    asyncio.run(run())
    letters = h.dead_letters()
    assert [d["error_code"] for d in letters] == ["decode_error", "non_finite_number"]
    assert letters[0]["original_value"] == garbage
    assert letters[0]["original_key"] == b"u1"
    assert letters[0]["source_topic"] == "driftloop.predictions"
    assert letters[0]["source_offset"] == 0
    assert letters[0]["service"] == "monitoring"
    assert letters[1]["source_topic"] == "driftloop.features"
    assert "x" in letters[1]["error_message"]
    # Neither decoded, so neither has an event_id to carry.
    assert [d["event_id"] for d in letters] == [None, None]
    # The good records of both batches were handled.
    assert "e1" in shell.joins["champion"].predictions
    assert shell.monitor.feature_stats()["x"][0] == pytest.approx(1.0)
    assert shell.records == 2


def test_a_handler_error_after_decoding_is_dead_lettered_with_the_event_id() -> None:
    shell, h, _ = service()

    def broken(_vector: Any) -> Any:
        raise DriftloopError("detector failed", code="internal_error")

    shell.monitor.on_vector = broken  # type: ignore[method-assign]
    asyncio.run(h.feed(FEATURES, vector(7, 1.0)))
    letters = h.dead_letters()
    assert [(d["error_code"], d["event_id"]) for d in letters] == [("internal_error", "v7")]
    assert shell.records == 0  # the handler stopped where it raised


def test_the_gauges_refresh_on_the_clock() -> None:
    shell, h, _ = service()
    perf = {"model": MODEL, "version": "2", "role": "champion"}
    scores = [0.9, 0.8, 0.3, 0.6]
    truth = [True, True, False, False]

    async def run() -> None:
        await h.feed(
            PREDICTIONS,
            *(prediction(f"e{i}", predicted=s > 0.5, scores={"False": 1 - s, "True": s}) for i, s in enumerate(scores)),
        )
        await h.feed(LABELS_CLEAN, *(label(f"e{i}", y) for i, y in enumerate(truth)))
        await h.feed(FEATURES, vector(1, 2.0))
        assert sample(shell, "driftloop_model_accuracy_ratio", **perf) is None  # 9 records: not yet
        await h.tick()

    asyncio.run(run())
    assert sample(shell, "driftloop_model_accuracy_ratio", **perf) == pytest.approx(0.75)
    assert sample(shell, "driftloop_model_roc_auc", **perf) == pytest.approx(1.0)
    # Predicted True, True, False, True: F1 of True 0.8, of False 2/3.
    assert sample(shell, "driftloop_model_macro_f1", **perf) == pytest.approx((0.8 + 2 / 3) / 2)
    assert sample(shell, "driftloop_served_accuracy_ratio", model=MODEL, role="champion") == pytest.approx(0.75)
    # The label-free estimate: the predicted classes' scores 0.9, 0.8, 0.7 and 0.6, estimated
    # before any label had calibrated them.
    assert sample(shell, "driftloop_model_estimated_accuracy_ratio", **perf) == pytest.approx(0.75)
    assert sample(shell, "driftloop_served_estimated_accuracy_ratio", model=MODEL, role="champion") == pytest.approx(
        0.75
    )
    assert sample(shell, "driftloop_model_mae", **perf) is None  # a classifier has no regression figures
    assert sample(shell, "driftloop_feature_mean", feature="x") == pytest.approx(2.0)
    assert sample(shell, "driftloop_feature_stddev", feature="x") == pytest.approx(0.0)
    assert sample(shell, "driftloop_prediction_score_mean", model=MODEL) == pytest.approx(shell.monitor.score_mean)
    assert 0.3 < shell.monitor.score_mean < 0.9


def test_the_estimate_learns_from_the_champions_outcomes() -> None:
    shell, h, _ = service()
    served = {"model": MODEL, "role": "champion"}

    async def run() -> None:
        # Confident at 0.9 and right half the time; the baseline's outcomes teach nothing.
        for i in range(400):
            await h.feed(PREDICTIONS, prediction(f"e{i}"), prediction(f"e{i}", role="baseline", version=1))
            await h.feed(LABELS_CLEAN, label(f"e{i}", i % 2 == 0))
        await h.tick()

    asyncio.run(run())
    estimate = sample(shell, "driftloop_served_estimated_accuracy_ratio", **served)
    assert estimate is not None and 0.5 < estimate < 0.6
    assert sample(shell, "driftloop_served_accuracy_ratio", **served) == pytest.approx(0.5)
    assert sample(shell, "driftloop_served_estimated_accuracy_ratio", model=MODEL, role="baseline") is None


def test_the_gauges_refresh_every_few_hundred_records_too() -> None:
    shell, h, _ = service()
    asyncio.run(h.feed(FEATURES, *(vector(i, 3.0) for i in range(199))))
    assert sample(shell, "driftloop_feature_mean", feature="x") is None
    asyncio.run(h.feed(FEATURES, vector(199, 3.0)))
    assert sample(shell, "driftloop_feature_mean", feature="x") == pytest.approx(3.0)


def test_feeding_a_record_of_the_wrong_shape_fails_the_test_clearly() -> None:
    _, h, _ = service()
    with pytest.raises(AssertionError, match="is not a Label"):
        asyncio.run(h.feed(LABELS_CLEAN, {"event_id": "e1"}))  # type: ignore[arg-type]


def _fired(at: int, kind: str) -> Fired:
    subject = "x" if kind == "input" else "error_rate"
    return Fired(Detection(kind, "ADWIN", subject, 1.0, 0.5, 10), at, f"v{at}", 4, T0 + at)


def test_an_escalated_alert_repeats_its_incidents_id_and_the_next_incident_has_its_own() -> None:
    shell, _, _ = service()
    merger = IncidentMerger(100)
    assert merger.add([_fired(0, "input")]) == merger.add([_fired(60, "input")]) == []
    (first,) = merger.due(100)
    (escalation,) = merger.add([_fired(150, "concept")])
    (next_one,) = merger.add([_fired(400, "concept")])  # a quiet window after 150 closed the first
    alerts = [shell.alert(i) for i in (first, escalation, next_one)]
    assert [a["escalated"] for a in alerts] == [False, True, False]
    assert alerts[0]["incident_id"] == alerts[1]["incident_id"] != alerts[2]["incident_id"]
    assert len({a["alert_id"] for a in alerts}) == 3
    assert alerts[1]["kind"] == "concept" and alerts[1]["detections"] == 3
