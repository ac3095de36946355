"""A label-free estimate of the champion's accuracy (pure), from the confidence of its
predictions as they arrive, before their labels do.

A prediction made with confidence ``c`` (the score of the class it predicts) is correct with
some probability P(correct | c); the expected accuracy of a window of predictions is the
mean of that probability over them. A model's scores are seldom calibrated, so
P(correct | c) is learned per model version from its labelled outcomes: the confidence range
is cut into bins, and in each bin ``c`` is corrected by the mean of ``correct - c`` over the
version's latest outcomes in it, shrunk towards the mean correction of all bins while the
bin holds few (a learning model moves its confidence into bins that have seen little). For
a calibrated model that mean is 0 and the estimate is the mean confidence, the expected
accuracy. A new version starts from the last ``INHERITED`` outcomes of the version before
it (retraining cuts versions from one continuous learner, whose scores change little
between cuts) and then learns from its own.

Where it fails: under concept drift a model keeps its confidence while its accuracy falls,
since the calibration describes the concept it learned. The estimate stays up until labels
of the new concept have recalibrated it. The estimate is early, the realized accuracy late.
Regressors have no class scores and get no estimate.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from driftloop.shared.modelspec import same_class

#: Versions per model whose calibration and window are kept (the most recently predicting).
KEPT_VERSIONS = 8
#: Outcomes of the version it replaced that a new version's calibration starts from. More
#: hold on to a concept the new version may have been cut to leave (README, Monitoring).
INHERITED = 100


def confidence(record: Mapping[str, Any]) -> float | None:
    """The score the model gave the class it predicted (a Prediction or an Outcome), or
    None without class scores (a regressor, or a model that has learned nothing yet)."""
    scores = record.get("scores")
    if not scores:
        return None
    predicted = record.get("predicted")
    own = next((float(p) for k, p in scores.items() if same_class(k, predicted)), None)
    return min(max(own if own is not None else max(map(float, scores.values())), 0.0), 1.0)


class ConfidenceCalibration:
    """P(correct | confidence) of one model version, learned from its last ``window``
    outcomes: ``bins`` equal bins of confidence, each correcting by its mean residual
    ``correct - c``, shrunk by ``prior`` outcomes' worth of the mean residual of all bins."""

    def __init__(self, bins: int = 10, window: int = 500, prior: float = 20.0) -> None:
        if bins < 1 or window < 1 or prior < 0:
            raise ValueError("bins and window must be at least 1, prior at least 0")
        self.bins, self.window, self.prior = bins, window, prior
        self._kept: deque[tuple[int, float]] = deque()
        self._sum = [0.0] * bins
        self._n = [0] * bins

    def _bin(self, c: float) -> int:
        return min(int(c * self.bins), self.bins - 1)

    def learn_one(self, c: float, correct: bool) -> None:
        if len(self._kept) == self.window:
            b, r = self._kept.popleft()
            self._sum[b] -= r
            self._n[b] -= 1
        b, r = self._bin(c), float(correct) - c
        self._kept.append((b, r))
        self._sum[b] += r
        self._n[b] += 1

    def predict_one(self, c: float) -> float:
        """The probability that a prediction of confidence ``c`` is correct."""
        b = self._bin(c)
        n = len(self._kept)
        overall = sum(self._sum) / n if n else 0.0
        weight = self._n[b] + self.prior
        correction = (self._sum[b] + self.prior * overall) / weight if weight else overall
        return min(max(c + correction, 0.0), 1.0)

    @property
    def n(self) -> int:
        return len(self._kept)

    def successor(self, last: int = INHERITED) -> ConfidenceCalibration:
        """A new calibration that starts from this one's ``last`` outcomes."""
        twin = ConfidenceCalibration(self.bins, self.window, self.prior)
        for b, r in list(self._kept)[-last:] if last else []:
            twin._kept.append((b, r))
            twin._sum[b] += r
            twin._n[b] += 1
        return twin


class RollingMean:
    """Mean of the last ``window`` values."""

    def __init__(self, window: int) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._sum = 0.0

    def update(self, x: float) -> None:
        if len(self._values) == self._values.maxlen:
            self._sum -= self._values[0]
        self._values.append(x)
        self._sum += x

    @property
    def value(self) -> float | None:
        # Summed again when read: a running sum drifts after millions of updates.
        return sum(self._values) / len(self._values) if self._values else None


class _Version:
    def __init__(self, calibration: ConfidenceCalibration, window: int) -> None:
        self.calibration = calibration
        self.estimate = RollingMean(window)


class AccuracyEstimate:
    """The estimated accuracy of each model's champion predictions over the last ``window``
    of them, per version and across versions (what the role served), fed every champion
    prediction as it arrives and every champion outcome as its label does."""

    def __init__(
        self, window: int = 500, bins: int = 10, calibration_window: int | None = None, prior: float = 20.0
    ) -> None:
        self.window = window
        kept = window if calibration_window is None else calibration_window
        self._new = lambda: ConfidenceCalibration(bins, kept, prior)
        self._versions: dict[str, OrderedDict[int, _Version]] = {}
        self._served: dict[str, RollingMean] = {}
        self.updates = 0

    def _version(self, model: str, version: int) -> _Version:
        versions = self._versions.setdefault(model, OrderedDict())
        found = versions.get(version)
        if found is None:
            # The latest version before this one (the champion it replaced) lends its calibration.
            before = [v for v in versions if v < version]
            start = versions[max(before)].calibration.successor() if before else self._new()
            found = versions[version] = _Version(start, self.window)
            while len(versions) > KEPT_VERSIONS:
                versions.popitem(last=False)
        versions.move_to_end(version)
        return found

    def on_prediction(self, prediction: Mapping[str, Any]) -> float | None:
        """The probability that this champion prediction is correct (None without scores)."""
        c = confidence(prediction)
        if c is None or prediction.get("role") != "champion":
            return None
        model = prediction["model_name"]
        v = self._version(model, int(prediction["model_version"]))
        p = v.calibration.predict_one(c)
        v.estimate.update(p)
        served = self._served.get(model)
        if served is None:
            served = self._served[model] = RollingMean(self.window)
        served.update(p)
        self.updates += 1
        return p

    def on_outcome(self, out: Mapping[str, Any]) -> None:
        """Learn the calibration of the outcome's version from it (champion, classification)."""
        c = confidence(out)
        if c is None or out.get("role") != "champion":
            return
        versions = self._versions.get(out["model_name"])
        v = versions.get(int(out["model_version"])) if versions is not None else None
        if v is not None:  # an outcome of a version no longer kept teaches nothing served
            v.calibration.learn_one(c, bool(out["correct"]))

    def served(self) -> dict[str, float]:
        """The estimated accuracy of each model's last ``window`` champion predictions."""
        return {model: value for model, rolling in self._served.items() if (value := rolling.value) is not None}

    def by_version(self) -> dict[tuple[str, int], float]:
        """The estimate of each kept version over its last ``window`` champion predictions."""
        out: dict[tuple[str, int], float] = {}
        for model, versions in self._versions.items():
            for version, v in versions.items():
                value = v.estimate.value
                if value is not None:
                    out[model, version] = value
        return out
