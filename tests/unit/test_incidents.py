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
    assert incident.lead == fired(10) and not incident.escalated
    # Raised, and still open until a window has passed since its latest detection.
    assert m.open and m.due(149) == []
    assert m.due(150) == [] and not m.open  # closed without a second alert
    # The next detection opens the next incident.
    assert m.add([fired(151)]) == []
    assert m.open


def test_a_drift_that_keeps_firing_is_one_incident() -> None:
    m = IncidentMerger(100)
    raised = m.add([fired(0)])
    for at in range(60, 600, 60):  # each within the window of the one before
        raised += m.due(at - 1) + m.add([fired(at, subject=f"x{at}")])
    assert len(raised) == 1 and raised[0].fired == (fired(0), fired(60, subject="x60"))
    assert m.merged == 8
    assert m.due(639) == [] and m.due(640) == [] and not m.open
    assert m.merged == 8


def test_an_incident_is_raised_again_once_it_spans_its_longest() -> None:
    m = IncidentMerger(100, 300)
    raised = m.add([fired(0)])
    for at in range(50, 451, 50):
        raised += m.due(at - 1) + m.add([fired(at)])
    raised += m.due(1000)
    # Opened at 0 and at 300, where the first reached its longest; each raised a window
    # after its first detection, naming what agreed by then.
    assert [[f.at for f in i.fired] for i in raised] == [[0, 50], [300, 350]]


def test_a_concept_detection_raises_the_incident_at_once_and_what_follows_is_merged() -> None:
    m = IncidentMerger(100)
    m.add([fired(10)])
    (incident,) = m.add([fired(40, kind="concept", detector="DDM", subject="error_rate")])
    assert incident.kind == "concept"  # the most actionable kind leads
    assert incident.lead.at == 40 and incident.lead.detection.detector == "DDM"
    assert incident.severity == "high"  # the errors rose and the inputs agreed
    assert incident.detectors == ["ADWIN", "DDM"] and incident.subjects == ["x", "error_rate"]
    assert not incident.escalated
    assert m.add([fired(60, kind="concept")]) == []
    assert m.due(500) == []  # raised already: closed without a second alert
    assert m.merged == 1


def test_a_concept_detection_escalates_an_incident_raised_without_one() -> None:
    m = IncidentMerger(100)
    m.add([fired(0, kind="prediction", subject="score")])
    m.add([fired(60)])
    (first,) = m.due(100)
    assert first.kind == "prediction" and not first.escalated
    assert m.add([fired(150)]) == []  # merged silently
    assert m.merged == 1
    (again,) = m.add([fired(180, kind="concept", subject="error_rate")])
    assert again.escalated and again.kind == "concept" and again.severity == "high"
    assert [f.at for f in again.fired] == [0, 60, 150, 180]
    assert m.merged == 0  # what was merged silently is in the escalated alert
    # Escalated once: a later concept detection is merged.
    assert m.add([fired(200, kind="concept")]) == []
    assert m.merged == 1


def test_errors_rising_again_a_window_after_the_first_rise_are_a_new_incident() -> None:
    m = IncidentMerger(100)
    (first,) = m.add([fired(0, kind="concept", subject="error_rate")])
    assert m.add([fired(60)]) == []  # the inputs keep the incident open
    assert m.add([fired(90, kind="concept", detector="DDM", subject="error_rate")]) == []
    assert m.add([fired(120)]) == []
    (second,) = m.add([fired(150, kind="concept", subject="error_rate")])
    assert [f.at for f in second.fired] == [150] and not second.escalated
    assert m.merged == 3  # 60, 90 and 120 joined the first after it was raised


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


def test_a_longest_span_below_the_window_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"longest span \(99 observations\) must be at least its window \(100\)"):
        IncidentMerger(100, 99)
    assert IncidentMerger(100).max_length == 1000


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


@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=60),
    st.integers(0, 20),
    st.integers(0, 40),
)
def test_every_detection_lands_in_a_raised_incident_or_is_merged(
    steps: list[tuple[int, bool]], window: int, extra: int
) -> None:
    """Whatever the order, the window and the longest span, nothing is lost and nothing is
    counted twice: each detection is in a raised incident (an escalated one repeats what
    its first alert held), or merged into one raised before it."""
    m = IncidentMerger(window, window + extra)
    at, raised, sent = 0, [], 0
    for gap, concept in steps:
        at += gap
        batch = [Fired(Detection("concept" if concept else "input", "ADWIN", "x", 1.0, 0.5, 10), at, f"e{sent}", 3, at)]
        sent += 1
        raised += m.add(batch)
    raised += m.flush()
    in_raised = {f.event_id for i in raised for f in i.fired}
    assert len(in_raised) + m.merged == sent
    for incident in raised:
        ats = [f.at for f in incident.fired]
        assert ats[-1] - ats[0] < max(window + extra, 1)
        # Within one incident, no gap reaches the window.
        assert all(b - a < max(window, 1) for a, b in zip(ats, ats[1:], strict=False))
        assert not incident.escalated or incident.kind == "concept"
        rises = [f.at for f in incident.fired if f.detection.kind == "concept"]
        assert all(r - rises[0] < max(window, 1) for r in rises)
