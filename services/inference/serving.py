"""The serving core (pure): which model answers, and the Prediction it gives.

A swap replaces the (model, record) pair in one assignment between two batches, so every
prediction of a batch comes from one version and names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from driftloop.shared.errors import FeatureSetMismatch
from driftloop.shared.modelspec import predict
from driftloop.shared.records import FeatureVector, Prediction, Role


@dataclass(frozen=True)
class Served:
    model: Any
    name: str
    version: int
    feature_set_version: str


class Server:
    """The champion, and in shadow a frozen baseline and the candidate versions (challengers)."""

    def __init__(self) -> None:
        self._served: Served | None = None
        self._baseline: Served | None = None
        self._challengers: dict[int, Served] = {}
        self.swaps = 0

    @property
    def served(self) -> Served | None:
        return self._served

    @property
    def baseline(self) -> Served | None:
        return self._baseline

    def swap(self, model: Any, record: Mapping[str, Any]) -> None:
        self._served = _served(model, record)
        self.swaps += 1

    def set_baseline(self, model: Any, record: Mapping[str, Any]) -> None:
        self._baseline = _served(model, record)

    @property
    def challengers(self) -> list[int]:
        """Versions predicting in shadow as challengers, in version order."""
        return sorted(self._challengers)

    def add_challenger(self, model: Any, record: Mapping[str, Any]) -> None:
        # A new dict, not a mutation: a batch in flight keeps iterating the one it started with.
        self._challengers = {**self._challengers, int(record["version"]): _served(model, record)}

    def challenger_model(self, version: int) -> Any | None:
        """The model of a challenger being shadowed (already loaded and checked), if any."""
        c = self._challengers.get(version)
        return None if c is None else c.model

    def remove_challenger(self, version: int) -> bool:
        if version not in self._challengers:
            return False
        self._challengers = {v: c for v, c in self._challengers.items() if v != version}
        return True

    def answering(self, version: int | None) -> tuple[Served, Role] | None:
        """Who answers a request for ``version`` (None: the champion of the moment), in which
        role; None when that version is not loaded here."""
        served = self._served
        if served is None:
            return None
        if version is None or version == served.version:
            return served, "champion"
        if self._baseline is not None and self._baseline.version == version:
            return self._baseline, "baseline"
        challenger = self._challengers.get(version)
        return None if challenger is None else (challenger, "challenger")

    def predict(self, vector: FeatureVector, now_ms: int) -> Prediction:
        served = self._served
        if served is None:
            raise RuntimeError("no model loaded")  # the shell waits for one before consuming
        return predict_as(served, "champion", vector, now_ms)

    def predict_baseline(self, vector: FeatureVector, now_ms: int) -> Prediction | None:
        """The baseline's shadow prediction; None without a baseline or when its feature set differs."""
        base = self._baseline
        if base is None or vector["feature_set_version"] != base.feature_set_version:
            return None
        return predict_as(base, "baseline", vector, now_ms)

    def predict_challengers(self, vector: FeatureVector, now_ms: int) -> list[Prediction]:
        """Each challenger's shadow prediction, in version order; those of another feature set abstain."""
        return [
            predict_as(c, "challenger", vector, now_ms)
            for _, c in sorted(self._challengers.items())
            if c.feature_set_version == vector["feature_set_version"]
        ]


def _served(model: Any, record: Mapping[str, Any]) -> Served:
    return Served(model, record["name"], int(record["version"]), record["feature_set_version"])


def predict_as(served: Served, role: Role, vector: FeatureVector, now_ms: int) -> Prediction:
    if vector["feature_set_version"] != served.feature_set_version:
        raise FeatureSetMismatch(
            f"vector has feature set {vector['feature_set_version']!r}, model "
            f"{served.name} v{served.version} was trained on {served.feature_set_version!r}"
        )
    predicted, scores = predict(served.model, vector["features"])
    return {
        "event_id": vector["event_id"],
        "entity_id": vector["entity_id"],
        "event_time": vector["event_time"],
        "model_name": served.name,
        "model_version": served.version,
        "role": role,
        "predicted": predicted,
        "scores": scores,
        "feature_set_version": vector["feature_set_version"],
        "ingest_time": vector.get("ingest_time"),
        "predicted_at": now_ms,
    }


class EntityStates:
    """The latest FeatureVector of each entity this instance has served from the stream: its
    windows as of its last event, which request–response can answer a windowed model from.
    At most ``limit`` entities, the least recently updated forgotten first (0: none kept)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._latest: dict[str, FeatureVector] = {}

    def remember(self, vector: FeatureVector) -> None:
        if not self.limit:
            return
        latest, entity = self._latest, vector["entity_id"]
        # Popped and set again: a dict keeps insertion order, so the first key is the stalest.
        latest.pop(entity, None)
        latest[entity] = vector
        if len(latest) > self.limit:
            del latest[next(iter(latest))]

    def get(self, entity_id: str) -> FeatureVector | None:
        return self._latest.get(entity_id)

    def __len__(self) -> int:
        return len(self._latest)
