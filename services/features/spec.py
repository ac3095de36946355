"""The feature set: how a clean event's fields become a numeric feature vector (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.services.features.windows import Aggregate, Outcome, Ratio, WindowedFeatures, apply_ratios, parse_spec
from driftloop.shared.records import FeatureVector


@dataclass(frozen=True)
class FeatureSpec:
    """Numbers pass through, booleans become 0/1, strings are one-hot encoded as
    ``name=value``, nulls are left out (River models treat an absent key as missing).
    Optional per-entity windowed ``aggregates`` and ``ratios`` come on top (windows.py).

    ``version`` is carried on every FeatureVector, so a model trained on one version is
    never silently served vectors of another.
    """

    version: str = "fs1"
    aggregates: tuple[Aggregate, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    lateness_ms: int | None = None
    max_events: int = 10_000
    _windows: WindowedFeatures | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.aggregates:
            windows = WindowedFeatures(self.aggregates, self.lateness_ms, self.max_events)
            object.__setattr__(self, "_windows", windows)

    @classmethod
    def parse(cls, version: str, windows: str, lateness_ms: int | None = None, max_events: int = 10_000) -> FeatureSpec:
        """A spec from the DRIFTLOOP_FEATURES_WINDOWS syntax; ConfigError when it is malformed."""
        aggregates, ratios = parse_spec(windows)
        return cls(version, aggregates, ratios, lateness_ms, max_events)

    @property
    def windowed(self) -> bool:
        """Whether vectors need per-entity state (``update``) rather than ``vector`` alone."""
        return self._windows is not None

    def transform(self, fields: Mapping[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, value in fields.items():
            if value is None:
                continue
            if isinstance(value, bool):
                out[name] = 1.0 if value else 0.0
            elif isinstance(value, int | float):
                out[name] = float(value)
            else:
                out[f"{name}={value}"] = 1.0
        return out

    def vector(self, event: Mapping[str, Any], features: dict[str, float] | None = None) -> FeatureVector:
        """The FeatureVector record for a clean RawEvent record."""
        if features is None:
            features = self.transform(event["fields"])
            if self.ratios:
                apply_ratios(features, self.ratios)
        return {
            "event_id": event["event_id"],
            "entity_id": event["entity_id"],
            "event_time": event["event_time"],
            "features": features,
            "feature_set_version": self.version,
            "ingest_time": event.get("ingest_time"),
        }

    def update(self, event: Mapping[str, Any], state: Mapping[str, Any] | None) -> tuple[FeatureVector, Outcome]:
        """The FeatureVector of ``event`` given its entity's window state, and the outcome
        (the new state and whether the event was in order, late, too late or a duplicate)."""
        if self._windows is None:
            raise ValueError("this spec has no windowed aggregates; use vector()")
        outcome = self._windows.update(state, event["event_id"], event["event_time"], event["fields"])
        features = self.transform(event["fields"])
        features.update(outcome.features)
        apply_ratios(features, self.ratios)
        return self.vector(event, features), outcome
