"""The topic catalogue: every topic driftloop uses, the record each carries and its key.

A ``Topic`` is the contract between the services on either side of it: its short name,
the Avro record its values are (None for the raw topics, which take whatever bytes a
producer sends), and the record field that keys it. ``Context.send(FEATURES, vector)``
encodes and keys a record from this alone, so no short name or record name is spelt
twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from driftloop.shared.records import (
    DeadLetter,
    DriftAlert,
    FeatureVector,
    Label,
    LabeledExample,
    Outcome,
    Prediction,
    RawEvent,
)

R = TypeVar("R")


@dataclass(frozen=True)
class Topic(Generic[R]):
    """One topic of the catalogue, typed by the record it carries."""

    short: str
    #: The Avro record name of its values; None for raw input (bytes, decoded by ingestion).
    record: str | None
    #: The record field whose value is the Kafka key; None when the producer sets the key.
    key: str | None = "entity_id"
    #: Compacted (the registry) rather than deleted after the retention time.
    compacted: bool = False


EVENTS_RAW: Topic[bytes] = Topic("events.raw", None, key=None)
LABELS_RAW: Topic[bytes] = Topic("labels.raw", None, key=None)
EVENTS_CLEAN: Topic[RawEvent] = Topic("events.clean", "RawEvent")
LABELS_CLEAN: Topic[Label] = Topic("labels.clean", "Label")
DEADLETTER: Topic[DeadLetter] = Topic("deadletter", "DeadLetter", key=None)
FEATURES: Topic[FeatureVector] = Topic("features", "FeatureVector")
EXAMPLES: Topic[LabeledExample] = Topic("examples", "LabeledExample")
PREDICTIONS: Topic[Prediction] = Topic("predictions", "Prediction")
OUTCOMES: Topic[Outcome] = Topic("outcomes", "Outcome")
ALERTS: Topic[DriftAlert] = Topic("alerts", "DriftAlert", key="model_name")
#: One compacted partition keyed by model name and version (shared/registry.py registry_key),
#: so that every reader sees versions in the order they were written.
MODELS_REGISTRY: Topic[dict[str, Any]] = Topic("models.registry", "ModelVersion", key=None, compacted=True)

EVENT_LEVEL: tuple[Topic[Any], ...] = (
    EVENTS_RAW,
    EVENTS_CLEAN,
    LABELS_RAW,
    LABELS_CLEAN,
    DEADLETTER,
    FEATURES,
    EXAMPLES,
    PREDICTIONS,
    OUTCOMES,
    ALERTS,
)
CATALOGUE: tuple[Topic[Any], ...] = (*EVENT_LEVEL, MODELS_REGISTRY)
EVENT_TOPICS = tuple(t.short for t in EVENT_LEVEL)
REGISTRY_TOPIC = MODELS_REGISTRY.short
_BY_SHORT = {t.short: t for t in CATALOGUE}


@dataclass(frozen=True)
class TopicSpec:
    name: str  # full name, prefix included
    partitions: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"


def topic(short: str) -> Topic[Any]:
    """The catalogue's topic of that short name (KeyError for one it does not hold)."""
    try:
        return _BY_SHORT[short]
    except KeyError:
        raise KeyError(f"unknown topic {short!r}") from None


class Topics:
    """Full topic names for one prefix. Event-level topics share one partition count so
    that joins on entity_id are co-partitioned; the registry is one compacted partition."""

    def __init__(self, prefix: str = "driftloop.", partitions: int = 4) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.prefix = prefix
        self.partitions = partitions

    def name(self, t: Topic[Any] | str) -> str:
        short = topic(t).short if isinstance(t, str) else t.short
        return f"{self.prefix}{short}"

    def catalogue(self) -> list[TopicSpec]:
        return [
            TopicSpec(
                self.name(t),
                1 if t.compacted else self.partitions,
                {"cleanup.policy": "compact" if t.compacted else "delete"},
            )
            for t in CATALOGUE
        ]
