"""The records driftloop's topics carry, as the services see them once decoded.

Each TypedDict mirrors the Avro schema of the same name in ``schemas/`` (the latest
version): the schema is what the broker holds, this is what the type checker sees. A
test (tests/unit/test_records.py) keeps the two in step.
"""

from __future__ import annotations

from typing import Literal, TypedDict

#: What a label may be: a class (bool, int or str) or a regression target (float).
LabelValue = bool | int | float | str
Role = Literal["champion", "challenger", "baseline"]
DriftKind = Literal["input", "prediction", "concept", "performance"]
DriftSeverity = Literal["low", "medium", "high"]


class RawEvent(TypedDict):
    event_id: str
    entity_id: str
    event_time: int
    fields: dict[str, bool | int | float | str | None]
    ingest_time: int | None


class Label(TypedDict):
    event_id: str
    entity_id: str
    label: LabelValue
    label_time: int


class FeatureVector(TypedDict):
    event_id: str
    entity_id: str
    event_time: int
    features: dict[str, float]
    feature_set_version: str
    ingest_time: int | None


class LabeledExample(TypedDict):
    event_id: str
    entity_id: str
    event_time: int
    features: dict[str, float]
    feature_set_version: str
    label: LabelValue
    label_time: int


class Prediction(TypedDict):
    event_id: str
    entity_id: str
    event_time: int
    model_name: str
    model_version: int
    role: Role
    predicted: LabelValue | None
    scores: dict[str, float]
    feature_set_version: str
    ingest_time: int | None
    predicted_at: int


class Outcome(TypedDict):
    event_id: str
    entity_id: str
    event_time: int
    model_name: str
    model_version: int
    role: Role
    predicted: LabelValue | None
    label: LabelValue
    label_time: int
    correct: bool
    loss: float
    scores: dict[str, float]


class DriftAlert(TypedDict):
    alert_id: str
    kind: DriftKind
    detector: str
    subject: str
    statistic: float
    threshold: float
    model_name: str
    model_version: int
    window_start_time: int
    window_end_time: int
    window_size: int
    event_id: str | None
    created_at: int
    severity: DriftSeverity
    detectors: list[str]
    subjects: list[str]
    detections: int
    incident_id: str
    escalated: bool


class DeadLetter(TypedDict):
    original_key: bytes | None
    original_value: bytes | None
    source_topic: str
    source_partition: int
    source_offset: int
    service: str
    error_code: str
    error_message: str
    event_id: str | None
    time: int
