"""The feature set: how a clean event's fields become a numeric feature vector (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureSpec:
    """Numbers pass through, booleans become 0/1, strings are one-hot encoded as
    ``name=value``, nulls are left out (River models treat an absent key as missing).

    ``version`` is carried on every FeatureVector, so a model trained on one version is
    never silently served vectors of another.
    """

    version: str = "fs1"

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

    def vector(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The FeatureVector record for a clean RawEvent record."""
        return {
            "event_id": event["event_id"],
            "entity_id": event["entity_id"],
            "event_time": event["event_time"],
            "features": self.transform(event["fields"]),
            "feature_set_version": self.version,
            "ingest_time": event.get("ingest_time"),
        }
