"""Continuous training (pure): learn from every labelled example, say when a version is due.

The trainer scores each example before learning from it (prequential), so every version
it cuts carries an honest accuracy (a regressor: mean absolute error) over the examples it
learned since the last one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.modelspec import is_regressor, predict, same_class


class ContinuousTrainer:
    def __init__(
        self, model: Any, version_every: int, min_examples_on_drift: int = 100, first_version_after: int | None = None
    ) -> None:
        self.model = model
        self.version_every = version_every
        self.min_examples_on_drift = min_examples_on_drift
        # The first trained version replaces an untrained bootstrap: worth cutting early.
        self.first_version_after = version_every if first_version_after is None else first_version_after
        self._versions_cut = 0
        self._since = 0
        self._hits = 0
        self._abs_error = 0.0
        self._total = 0
        self._window: dict[str, Any] = {}
        self._feature_set_version: str | None = None
        self._drift_trigger: str | None = None

    def learn(self, example: Mapping[str, Any]) -> None:
        predicted, _ = predict(self.model, example["features"])
        if is_regressor(self.model):
            self._abs_error += abs(predicted - float(example["label"]))
        else:
            self._hits += same_class(predicted, example["label"])
        self.model.learn_one(dict(example["features"]), example["label"])
        self._since += 1
        self._total += 1
        self._feature_set_version = example["feature_set_version"]
        w = self._window
        if not w:
            w.update(first_event_id=example["event_id"], start_time=example["event_time"], examples=0)
        w.update(
            last_event_id=example["event_id"],
            end_time=max(w.get("end_time", example["event_time"]), example["event_time"]),
            examples=w["examples"] + 1,
        )
        w["start_time"] = min(w["start_time"], example["event_time"])

    def on_drift(self, alert_id: str) -> None:
        self._drift_trigger = f"drift:{alert_id}"

    def due(self) -> str | None:
        """The trigger of the version that is due now, if one is."""
        if self._drift_trigger and self._since >= self.min_examples_on_drift:
            return self._drift_trigger
        if self._since >= (self.version_every if self._versions_cut else self.first_version_after):
            return "label_volume"
        return None

    def cut(self) -> tuple[dict[str, Any], dict[str, float], str | None]:
        """The training window and metrics of the version being cut; resets the counters."""
        window = dict(self._window)
        if is_regressor(self.model):
            score = {"prequential_mae": self._abs_error / self._since if self._since else 0.0}
        else:
            score = {"prequential_accuracy": self._hits / self._since if self._since else 0.0}
        metrics = {
            **score,
            "examples_since_last_version": float(self._since),
            "examples_total": float(self._total),
        }
        self._since = self._hits = 0
        self._abs_error = 0.0
        self._versions_cut += 1
        self._window = {}
        self._drift_trigger = None
        return window, metrics, self._feature_set_version

    @property
    def examples_seen(self) -> int:
        return self._total
