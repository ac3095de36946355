"""Drift incidents: detections of any detectors and subjects merged, one alert per drift."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop.services.monitoring.drift import Detection, Fired, Incident, IncidentMerger
from driftloop.shared.errors import ConfigError


def fired(at: int, kind: str = "input", detector: str = "ADWIN", subject: str = "x") -> Fired:
    return Fired(Detection(kind, detector, subject, 1.0, 0.5, 10), at, f"e{at}", 3, 1000 + at)


def test_detections_within_the_window_are_one_incident_raised_when_it_has_passed() -> None:
    m = IncidentMerger(100)
    assert m.add([fired(10)]) == []
    assert m.add([fired(50, detector="PSI"), fired(50, subject="y")]) == []
    assert m.due(109) == []
    (incident,) = m.due(110)
    assert incident.detectors == ["ADWIN", "PSI"] and incident.subjects == ["x", "y"]
    assert incident.kind == "input" and incident.severity == "medium"
    assert incident.window == (1010, 1050)
    assert incident.lead == fired(10)
    assert not m.open
    # The next detection opens the next incident.
    assert m.add([fired(111)]) == []
    assert m.open


def test_a_concept_detection_raises_the_incident_at_once_and_what_follows_is_merged() -> None:
    m = IncidentMerger(100)
    m.add([fired(10)])
    (incident,) = m.add([fired(40, kind="concept", detector="DDM", subject="error_rate")])
    assert incident.kind == "concept"  # the most actionable kind leads
    assert incident.lead.at == 40 and incident.lead.detection.detector == "DDM"
    assert incident.severity == "high"  # the errors rose and the inputs agreed
    assert incident.detectors == ["ADWIN", "DDM"] and incident.subjects == ["x", "error_rate"]
    assert m.add([fired(60, kind="concept")]) == []
    assert m.due(500) == []  # raised already: closed without a second alert
    assert m.merged == 1


def test_a_detection_past_the_window_closes_the_old_incident_first() -> None:
    m = IncidentMerger(100)
    m.add([fired(10)])
    old, new = m.add([fired(200, kind="concept")])
    assert (old.lead.at, old.kind) == (10, "input")
    assert (new.lead.at, new.kind) == (200, "concept")  # raised at once
    assert m.flush() == []


def test_window_zero_raises_each_observation_alone() -> None:
    m = IncidentMerger(0)
    (a,) = m.add([fired(1)])
    assert a.severity == "low" and len(a.fired) == 1


def test_flush_raises_an_open_incident_once() -> None:
    m = IncidentMerger(10_000)
    m.add([fired(1)])
    assert len(m.flush()) == 1
    assert m.flush() == []


@pytest.mark.parametrize("window", [-1, -100])
def test_a_negative_window_is_refused(window: int) -> None:
    with pytest.raises(ConfigError, match="at least 0"):
        IncidentMerger(window)


@pytest.mark.parametrize(
    ("detections", "severity"),
    [
        ([("input", "ADWIN", "x")], "low"),
        ([("input", "ADWIN", "x"), ("input", "ADWIN", "y")], "medium"),
        ([("prediction", "ADWIN", "score"), ("input", "PSI", "x")], "medium"),
        ([("concept", "ADWIN", "error_rate")], "medium"),
        ([("concept", "ADWIN", "error_rate"), ("concept", "DDM", "error_rate")], "high"),
        ([("concept", "ADWIN", "error_rate"), ("prediction", "ADWIN", "score")], "high"),
    ],
)
def test_severity(detections: list[tuple[str, str, str]], severity: str) -> None:
    incident = Incident(tuple(fired(i, *d) for i, d in enumerate(detections)))
    assert incident.severity == severity


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=60), st.integers(0, 20))
def test_every_detection_lands_in_exactly_one_raised_incident(steps: list[tuple[int, bool]], window: int) -> None:
    """Whatever the order and the window, nothing is lost and nothing is counted twice: each
    detection is in one raised incident, or merged into one raised before it."""
    m = IncidentMerger(window)
    at, raised, sent = 0, [], 0
    for gap, concept in steps:
        at += gap
        batch = [fired(at, kind="concept" if concept else "input")]
        sent += 1
        raised += m.add(batch)
    raised += m.flush()
    in_raised = sum(len(i.fired) for i in raised)
    # A raised incident is a snapshot: what joined it after it was raised is counted in merged.
    assert in_raised + m.merged == sent
    for incident in raised:
        assert incident.fired[-1].at - incident.fired[0].at < max(window, 1)
