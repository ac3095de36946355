"""The incident merge (services.monitoring.drift.IncidentMerger, severity) and how the
monitoring core feeds it: concept and prediction detectors per champion version, the event
clock, and the flush."""

from __future__ import annotations

import random

import pytest

from services.monitoring.core import Monitor
from services.monitoring.drift import Detection, IncidentMerger, severity


def _d(kind: str = "input", detector: str = "ADWIN", subject: str = "x", statistic: float = 0.5) -> Detection:
    return Detection(kind, detector, subject, statistic, 0.01, 100)


def test_detections_within_the_window_are_one_incident_naming_all_that_agreed() -> None:
    m = IncidentMerger(window=10)
    assert m.update([_d(subject="a")], 100, event_id="e100", time_ms=1000, model_version=3) == []
    assert m.pending
    assert m.update([_d(detector="PSI", subject="b")], 105, event_id="e105", time_ms=1500) == []
    assert m.update([_d(subject="a")], 109, event_id="e109", time_ms=1900) == []
    (incident,) = m.update([], 110)  # the first tick past the window closes it
    assert not m.pending
    assert incident.detectors == ("ADWIN", "PSI") and incident.subjects == ("a", "b")
    assert incident.kinds == ("input",) and incident.detections == 3
    assert (incident.event_id, incident.model_version, incident.subject) == ("e100", 3, "a")
    assert (incident.start_time, incident.end_time) == (1000, 1900)
    assert incident.severity == "medium"


def test_a_detection_after_the_window_opens_the_next_incident() -> None:
    m = IncidentMerger(window=10)
    m.update([_d(subject="a")], 0)
    (first,) = m.update([_d(subject="b")], 10)
    assert first.subjects == ("a",)
    (second,) = m.flush(12)
    assert second.subjects == ("b",) and m.flush(13) == []


def test_the_incident_is_led_by_its_concept_detection_whatever_came_first() -> None:
    m = IncidentMerger(window=50)
    m.update([_d("input", subject="f0")], 1, event_id="e1", model_version=1)
    m.update([_d("prediction", subject="score")], 2, event_id="e2", model_version=1)
    m.update([_d("concept", "DDM", "error_rate", 4.2)], 3, event_id="e3", model_version=2)
    m.update([_d("concept", "ADWIN", "error_rate")], 4, event_id="e4", model_version=2)
    (incident,) = m.flush(5)
    assert (incident.kind, incident.detector, incident.subject, incident.statistic) == (
        "concept",
        "DDM",
        "error_rate",
        4.2,
    )
    assert incident.event_id == "e3" and incident.model_version == 2
    assert incident.kinds == ("input", "prediction", "concept") and incident.severity == "high"


@pytest.mark.parametrize(
    ("kinds", "detectors", "subjects", "expected"),
    [
        (["input"], ["ADWIN"], ["x"], "low"),
        (["input", "input"], ["ADWIN", "ADWIN"], ["x", "x"], "low"),
        (["input", "input"], ["ADWIN", "PSI"], ["x", "x"], "medium"),
        (["input", "input"], ["ADWIN", "ADWIN"], ["x", "y"], "medium"),
        (["input", "concept"], ["ADWIN", "ADWIN"], ["x", "error_rate"], "high"),
    ],
)
def test_severity(kinds: list[str], detectors: list[str], subjects: list[str], expected: str) -> None:
    assert severity(kinds, detectors, subjects) == expected


def test_the_holdoff_holds_the_same_drift_back_but_not_a_first_concept_drift() -> None:
    m = IncidentMerger(window=5, holdoff=100)
    m.update([_d("input")], 0)
    (first,) = m.update([], 5)
    assert first.kind == "input"
    assert m.update([_d("input"), _d("prediction", subject="score")], 50) == []
    assert not m.pending and m.held == 2
    # A concept drift the input incident did not report opens an incident of its own...
    m.update([_d("concept", subject="error_rate")], 60)
    (concept,) = m.update([], 65)
    assert concept.kind == "concept"
    # ...after which concept detections are held too, until the holdoff has passed.
    assert m.update([_d("concept", subject="error_rate")], 164) == [] and not m.pending and m.held == 3
    m.update([_d("input")], 165)
    assert m.pending and len(m.flush(166)) == 1


def test_without_holdoff_nothing_is_held() -> None:
    m = IncidentMerger(window=1)
    for t in range(0, 10, 2):
        m.update([_d()], t)
    assert m.held == 0 and len(m.flush(11)) == 1


# --- through the monitoring core -------------------------------------------------------------


def _outcome(i: int, version: int, wrong: bool) -> dict:
    return {
        "event_id": f"e{i}",
        "event_time": i,
        "loss": 1.0 if wrong else 0.0,
        "correct": not wrong,
        "label": True,
        "predicted": not wrong,
        "scores": {},
        "model_name": "m",
        "model_version": version,
        "role": "champion",
    }


def _errors(monitor: Monitor, segments: list[tuple[int, int, float]], seed: int) -> list[tuple[int, Detection]]:
    """(events, champion version, error rate) segments through on_outcome."""
    rng = random.Random(seed)
    fired, i = [], 0
    for n, version, rate in segments:
        for _ in range(n):
            fired += [(i, d) for d in monitor.on_outcome(_outcome(i, version, rng.random() < rate))]
            i += 1
    return fired


@pytest.mark.parametrize("seed", range(6))
def test_a_promotion_to_a_worse_model_is_no_concept_drift_but_the_same_rise_in_one_version_is(seed: int) -> None:
    # Where a rise of the error rate from 10% to 35% is detected when one version makes it.
    segments = [(2000, 1, 0.1), (2000, 2, 0.35)]
    promoted = _errors(Monitor(concept_detectors=("adwin", "ddm"), false_alarms_per_10k=1.0), segments, seed)
    assert [d for i, d in promoted if 2000 <= i < 2300] == []
    same = [(n, 1, rate) for n, _, rate in segments]
    drifted = _errors(Monitor(concept_detectors=("adwin", "ddm"), false_alarms_per_10k=1.0), same, seed)
    assert any(2000 <= i < 2300 for i, _ in drifted), drifted


def test_late_outcomes_of_the_previous_version_are_judged_against_it() -> None:
    monitor = Monitor(concept_detectors=("adwin",), false_alarms_per_10k=1.0)
    rng = random.Random(4)
    fired = []
    for i in range(4000):
        # Version 2 serves from event 2000 on, but version 1's outcomes keep arriving
        # interleaved (labels late) and its error rate rises: that is its drift.
        fired += monitor.on_outcome(_outcome(i, 1, rng.random() < (0.1 if i < 2000 else 0.5)))
        if i >= 2000:
            fired += monitor.on_outcome(_outcome(i, 2, rng.random() < 0.1))
    assert fired and {d.subject for d in fired} == {"error_rate"}


def test_the_event_clock_runs_on_features_or_outcomes_alone_and_closes_incidents() -> None:
    monitor = Monitor(concept_detectors=("adwin",), incident_window=10, incident_holdoff=0)
    detection = [_d("concept", subject="error_rate")]
    assert monitor.incidents(detection, event_id="e0", time_ms=0, model_version=1) == []
    for i in range(9):
        monitor.on_outcome(_outcome(i, 1, False))
        assert monitor.incidents([], event_id=f"e{i}", time_ms=i, model_version=1) == []
    assert monitor.clock == 9
    for _ in range(5):  # vectors of events already counted by their outcomes do not advance it
        monitor.on_vector({"features": {"f": 1.0}})
    assert monitor.clock == 9
    monitor.on_outcome(_outcome(9, 1, False))
    (incident,) = monitor.incidents([], event_id="e9", time_ms=9, model_version=1)
    assert incident.event_id == "e0" and not monitor.incident_pending


def test_the_flush_closes_an_open_incident_once() -> None:
    monitor = Monitor(concept_detectors=("adwin",))
    assert monitor.flush_incidents() == []
    monitor.incidents([_d("input")], event_id="e0", time_ms=0, model_version=1)
    assert monitor.incident_pending
    assert len(monitor.flush_incidents()) == 1 and monitor.flush_incidents() == []


def test_prediction_drift_is_judged_per_version() -> None:
    rng = random.Random(9)
    monitor = Monitor(prediction_detectors=("adwin",), false_alarms_per_10k=1.0, cooldown=1000)
    fired = []
    for i in range(4000):
        version, centre = (1, 0.2) if i < 2000 else (2, 0.7)  # the new version scores higher
        p = min(1.0, max(0.0, rng.gauss(centre, 0.05)))
        fired += monitor.on_prediction({"role": "champion", "model_version": version, "scores": {"True": p}})
    assert fired == []
    for _ in range(2000):  # within version 2, the same move is a drift
        p = min(1.0, max(0.0, rng.gauss(0.2, 0.05)))
        fired += monitor.on_prediction({"role": "champion", "model_version": 2, "scores": {"True": p}})
    assert fired and all(d.kind == "prediction" for d in fired)
