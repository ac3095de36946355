"""Monitoring core (pure): prediction/label join, rolling accuracy, concept-drift alerts."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, MutableMapping
from typing import Any

from river import drift

from shared.join import OnceJoin
from shared.modelspec import same_class


def outcome(prediction: Mapping[str, Any], label: Mapping[str, Any]) -> dict[str, Any]:
    correct = same_class(prediction["predicted"], label["label"])
    return {
        "event_id": prediction["event_id"],
        "entity_id": prediction["entity_id"],
        "event_time": prediction["event_time"],
        "model_name": prediction["model_name"],
        "model_version": prediction["model_version"],
        "role": prediction["role"],
        "predicted": prediction["predicted"],
        "label": label["label"],
        "label_time": label["label_time"],
        "correct": correct,
        "loss": 0.0 if correct else 1.0,
    }


class OutcomeJoin(OnceJoin):
    """Champion predictions ⨝ labels by event_id, once per event_id."""

    def __init__(
        self,
        predictions: MutableMapping[str, Any],
        labels: MutableMapping[str, Any],
        joined: MutableMapping[str, Any],
    ) -> None:
        super().__init__(predictions, labels, joined, outcome)
        self.predictions, self.labels = predictions, labels

    def on_prediction(self, prediction: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.on_left(prediction["event_id"], prediction)

    def on_label(self, label: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.on_right(label["event_id"], label)


class RollingAccuracy:
    """Accuracy over the last ``window`` outcomes."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._hits: deque[bool] = deque(maxlen=window)
        self._sum = 0

    def update(self, correct: bool) -> None:
        if len(self._hits) == self.window:
            self._sum -= self._hits[0]
        self._hits.append(correct)
        self._sum += correct

    @property
    def value(self) -> float | None:
        return self._sum / len(self._hits) if self._hits else None

    @property
    def n(self) -> int:
        return len(self._hits)


class ConceptDriftMonitor:
    """ADWIN on the 0/1 error stream of the served model.

    ``cooldown`` outcomes must pass after an alert before the next one can fire, so one
    drift gives one alert, not a storm while the window shrinks.
    """

    def __init__(self, delta: float = 0.002, cooldown: int = 300) -> None:
        self.delta = delta
        self.cooldown = cooldown
        self._adwin = drift.ADWIN(delta=delta)
        self._seen = 0
        self._last_alert: int | None = None
        self._window_start_time: int | None = None

    def update(self, out: Mapping[str, Any]) -> dict[str, Any] | None:
        """Feed one outcome; return the alert fields when drift is detected."""
        self._seen += 1
        if self._window_start_time is None:
            self._window_start_time = out["event_time"]
        self._adwin.update(out["loss"])
        if not self._adwin.drift_detected:
            return None
        in_cooldown = self._last_alert is not None and self._seen - self._last_alert < self.cooldown
        if in_cooldown:
            return None
        self._last_alert = self._seen
        alert = {
            "kind": "concept",
            "detector": "ADWIN",
            "subject": "error_rate",
            "statistic": float(self._adwin.estimation),
            "threshold": self.delta,
            "model_name": out["model_name"],
            "model_version": out["model_version"],
            "window_start_time": self._window_start_time,
            "window_end_time": out["event_time"],
            "window_size": int(self._adwin.width),
            "event_id": out["event_id"],
        }
        self._window_start_time = out["event_time"]
        return alert
