"""The topic catalogue: every topic driftloop uses, its partitions and its cleanup policy."""

from __future__ import annotations

from dataclasses import dataclass, field

EVENT_TOPICS = (
    "events.raw",
    "events.clean",
    "labels.raw",
    "labels.clean",
    "deadletter",
    "features",
    "examples",
    "predictions",
    "outcomes",
    "alerts",
)
REGISTRY_TOPIC = "models.registry"


@dataclass(frozen=True)
class TopicSpec:
    name: str  # full name, prefix included
    partitions: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"


class Topics:
    """Full topic names for one prefix. Event-level topics share one partition count so
    that joins on entity_id are co-partitioned; the registry is one compacted partition so
    that every reader sees versions in the order they were written."""

    def __init__(self, prefix: str = "driftloop.", partitions: int = 4) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.prefix = prefix
        self.partitions = partitions

    def name(self, short: str) -> str:
        if short not in EVENT_TOPICS and short != REGISTRY_TOPIC:
            raise KeyError(f"unknown topic {short!r}")
        return f"{self.prefix}{short}"

    def catalogue(self) -> list[TopicSpec]:
        specs = [TopicSpec(self.name(t), self.partitions, {"cleanup.policy": "delete"}) for t in EVENT_TOPICS]
        specs.append(TopicSpec(self.name(REGISTRY_TOPIC), 1, {"cleanup.policy": "compact"}))
        return specs

    def __getattr__(self, attr: str) -> str:
        # topics.events_raw -> "driftloop.events.raw"
        short = attr.replace("_", ".")
        if short == "models.registry" or short in EVENT_TOPICS:
            return self.name(short)
        raise AttributeError(attr)
