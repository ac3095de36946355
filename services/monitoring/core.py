"""Monitoring core (pure): the prediction/label join, prequential performance per model
version and role, feature statistics, and input / prediction / concept drift detection.

Classification and regression are told apart per outcome: a regressor's prediction is a
number with no class scores, and its label is a number (:func:`is_regression`). A
regressor's prediction joined with a label that is not a number does not fit the task
(:func:`label_fits_prediction`): the shell counts it and scores nothing."""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from river import stats

from driftloop.services.monitoring.drift import (
    BINARY_ONLY,
    Calibration,
    Debouncer,
    Detection,
    SubjectDetectors,
    parse_detectors,
)
from driftloop.shared.join import OnceJoin
from driftloop.shared.modelspec import is_number, same_class
from driftloop.shared.records import Outcome

_MIN_P = 1e-15


def positive_score(scores: Mapping[str, float]) -> float | None:
    """The score of the positive class of a binary classifier, if the scores are binary."""
    if len(scores) > 2:
        return None  # a multi-class model's class "1" is one class among several
    for key in ("True", "1", "1.0", "true"):
        if key in scores:
            return float(scores[key])
    return None


_number = is_number


def is_regression(predicted: Any, scores: Mapping[str, float] | None, label: Any) -> bool:
    """A regressor's prediction (a number, no class scores) against a numeric label. A
    classifier always gives scores once trained, and None with none before."""
    return not scores and _number(predicted) and _number(label)


def label_fits_prediction(prediction: Mapping[str, Any], label: Any) -> bool:
    """False for a regressor's prediction (a number, no scores) against a label that is not a
    number (a class, a boolean): there is no error to measure. Any label can be a class."""
    return bool(prediction.get("scores")) or not _number(prediction.get("predicted")) or _number(label)


def class_key(value: Any) -> str:
    """One spelling per class across encodings (True, 1, 1.0 and "1" alike, as same_class)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(f)) if f.is_integer() else repr(f)


def label_probability(scores: Mapping[str, float], label: Any) -> float:
    """The score of the label's class (0 when the model gave it none)."""
    return next((float(p) for k, p in scores.items() if same_class(k, label)), 0.0)


def macro_f1(pairs: Sequence[tuple[str, str | None]]) -> float | None:
    """Unweighted mean over the classes seen (as label or prediction) of each class's F1,
    from (label class, predicted class or None) pairs; None without pairs."""
    if not pairs:
        return None
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    fn: dict[str, int] = {}
    for y, p in pairs:
        if p == y:
            tp[y] = tp.get(y, 0) + 1
            continue
        fn[y] = fn.get(y, 0) + 1
        if p is not None:
            fp[p] = fp.get(p, 0) + 1
    classes = set(tp) | set(fp) | set(fn)
    return sum(2 * tp.get(c, 0) / (2 * tp.get(c, 0) + fp.get(c, 0) + fn.get(c, 0)) for c in classes) / len(classes)


def outcome(prediction: Mapping[str, Any], label: Mapping[str, Any], tolerance: float = 0.0) -> Outcome:
    """The Outcome record. Classification: 0/1 loss, ``correct`` when the class matches.
    Regression: the absolute error as the loss, ``correct`` when it is at most ``tolerance``
    (0: only an exact hit), so that counting outcomes by ``correct`` keeps a meaning."""
    if is_regression(prediction["predicted"], prediction.get("scores"), label["label"]):
        loss = abs(float(prediction["predicted"]) - float(label["label"]))
        correct = loss <= tolerance
    else:
        correct = same_class(prediction["predicted"], label["label"])
        loss = 0.0 if correct else 1.0
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
        "loss": loss,
        "scores": dict(prediction.get("scores") or {}),
    }


class OutcomeJoin(OnceJoin[Outcome]):
    """Predictions of one role ⨝ labels by event_id, once per event_id (``tolerance``: see
    :func:`outcome`)."""

    def __init__(
        self,
        predictions: MutableMapping[str, Any],
        labels: MutableMapping[str, Any],
        joined: MutableMapping[str, Any],
        ttl_ms: int | None = None,
        tolerance: float = 0.0,
    ) -> None:
        super().__init__(predictions, labels, joined, functools.partial(outcome, tolerance=tolerance), ttl_ms)
        self.tolerance = tolerance
        self.predictions, self.labels = predictions, labels

    def on_prediction(self, prediction: Mapping[str, Any], now_ms: int = 0, shard: int = 0) -> Outcome | None:
        return self.on_left(prediction["event_id"], prediction, now_ms, shard)

    def on_label(self, label: Mapping[str, Any], now_ms: int = 0, shard: int = 0) -> Outcome | None:
        return self.on_right(label["event_id"], label, now_ms, shard)


class RollingAccuracy:
    """Accuracy over the last ``window`` outcomes."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._hits: deque[bool] = deque(maxlen=window)
        self._sum = 0

    def update(self, correct: bool) -> None:
        if len(self._hits) == self.window:
            self._sum -= self._hits[0]
        self._hits.append(bool(correct))
        self._sum += bool(correct)

    @property
    def value(self) -> float | None:
        return self._sum / len(self._hits) if self._hits else None

    @property
    def n(self) -> int:
        return len(self._hits)


def roc_auc(ys: Sequence[bool], ps: Sequence[float]) -> float | None:
    """Exact ROC AUC (the probability that a positive outranks a negative, ties counting
    half), from the ranks of the scores; None without both classes."""
    positives = sum(ys)
    negatives = len(ys) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(ps)), key=ps.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and ps[order[j + 1]] == ps[order[i]]:
            j += 1
        mid_rank = (i + j) / 2 + 1  # tied scores share their mean rank
        rank_sum += mid_rank * sum(ys[order[k]] for k in range(i, j + 1))
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


class PerformanceTracker:
    """Prequential performance of one model version in one role over a rolling window.

    Classification outcomes: accuracy and macro F1 always; log loss when the prediction
    carries scores (of the label's class; for binary scores, of the positive class); exact
    ROC AUC when the scores are binary. Regression outcomes: MAE and RMSE over the last
    ``window`` of them. Each figure is None until an outcome of its kind arrives.

    An update only appends to the windows (it runs for every outcome); the figures are
    computed when read, which the service does every few hundred records.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._accuracy = RollingAccuracy(window)
        self._scored: deque[tuple[bool, float]] = deque(maxlen=window)  # (label is positive, score)
        self._losses: deque[float] = deque(maxlen=window)  # log loss of outcomes with scores
        self._classes: deque[tuple[str, str | None]] = deque(maxlen=window)  # (label, predicted)
        self._errors: deque[float] = deque(maxlen=window)  # regression: prediction - label
        self._updates = 0

    @property
    def updates(self) -> int:
        """Outcomes seen so far: tells a reader whether the figures can have changed."""
        return self._updates

    def update(self, out: Mapping[str, Any]) -> None:
        self._updates += 1
        if is_regression(out.get("predicted"), out.get("scores"), out["label"]):
            error = float(out["predicted"]) - float(out["label"])
            if math.isfinite(error):  # a diverged model's inf/NaN would poison the window for good
                self._errors.append(error)
            return
        self._accuracy.update(out["correct"])
        predicted = out.get("predicted")
        self._classes.append((class_key(out["label"]), None if predicted is None else class_key(predicted)))
        scores = out.get("scores") or {}
        p = positive_score(scores)
        if p is not None:
            y = same_class(True, out["label"])
            self._scored.append((y, p))
            p = min(max(p, _MIN_P), 1 - _MIN_P)
            self._losses.append(-math.log(p if y else 1 - p))
        elif scores:
            self._losses.append(-math.log(max(label_probability(scores, out["label"]), _MIN_P)))

    @property
    def n(self) -> int:
        """Outcomes in the window (classification and regression windows together)."""
        return self._accuracy.n + self.n_regression

    @property
    def n_regression(self) -> int:
        return len(self._errors)

    @property
    def accuracy(self) -> float | None:
        return self._accuracy.value

    @property
    def log_loss(self) -> float | None:
        return sum(self._losses) / len(self._losses) if self._losses else None

    @property
    def macro_f1(self) -> float | None:
        return macro_f1(self._classes)

    @property
    def roc_auc(self) -> float | None:
        if not self._scored:
            return None
        ys, ps = zip(*self._scored, strict=True)
        return roc_auc(ys, ps)

    @property
    def mae(self) -> float | None:
        return sum(abs(e) for e in self._errors) / len(self._errors) if self._errors else None

    @property
    def rmse(self) -> float | None:
        return (sum(e * e for e in self._errors) / len(self._errors)) ** 0.5 if self._errors else None


class Monitor:
    """Everything monitoring watches, fed one record at a time.

    Input drift: every configured detector on each of the first ``max_features`` features.
    Prediction drift: on the champion's positive-class score. Concept drift: on the
    champion's 0/1 error stream (subject ``error_rate``) and, for a regressor, on its
    absolute error (subject ``absolute_error``) with the concept detectors that take real
    values: DDM and EDDM model a 0/1 stream and are left out there
    (``regression_concept_detectors``). Each detection is de-bounced per subject and detector.
    """

    def __init__(
        self,
        *,
        window: int = 500,
        input_detectors: Sequence[str] = ("adwin", "psi"),
        prediction_detectors: Sequence[str] = ("adwin",),
        concept_detectors: Sequence[str] = ("adwin", "ddm"),
        cooldown: int = 300,
        max_features: int = 50,
        seed: int = 42,
        calibration: Calibration | None = None,
    ) -> None:
        self.window = window
        self.input_detectors = tuple(input_detectors)
        self.prediction_detectors = tuple(prediction_detectors)
        self.concept_detectors = tuple(concept_detectors)
        self.cooldown = cooldown
        self.max_features = max_features
        self.seed = seed
        self.calibration = calibration
        #: Subjects whose warm-up is complete, waiting for the caller to calibrate them.
        self._due: list[SubjectDetectors] = []
        self._debouncer = Debouncer(cooldown)
        self._inputs: dict[str, SubjectDetectors] = {}
        self._feature_stats: dict[str, tuple[stats.EWMean, stats.EWVar]] = {}
        self._prediction = SubjectDetectors(
            "prediction", "score", prediction_detectors, seed, self._debouncer, calibration=calibration
        )
        self._concept = SubjectDetectors(
            "concept", "error_rate", concept_detectors, seed, self._debouncer, True, calibration
        )
        self.regression_concept_detectors = tuple(d for d in self.concept_detectors if d not in BINARY_ONLY)
        self._concept_abs = SubjectDetectors(
            "concept",
            "absolute_error",
            self.regression_concept_detectors,
            seed,
            self._debouncer,
            True,
            calibration,
        )
        self._score_mean = stats.EWMean(fading_factor=2 / (window + 1))
        self.trackers: dict[tuple[str, int, str], PerformanceTracker] = {}
        # Per model and role across versions: what the role delivered lately, which a
        # version swapped in a moment ago has no figures for yet.
        self.served: dict[tuple[str, str], PerformanceTracker] = {}
        self.unmonitored_features = 0

    @classmethod
    def from_settings(cls, s: Any) -> Monitor:
        """From an object with the monitoring settings' fields (checked detector lists)."""
        return cls(
            window=s.window,
            input_detectors=parse_detectors(s.input_detectors, binary=False),
            prediction_detectors=parse_detectors(s.prediction_detectors, binary=False),
            concept_detectors=parse_detectors(s.concept_detectors, binary=True),
            cooldown=s.alert_cooldown,
            max_features=s.max_features,
            seed=s.seed,
            calibration=Calibration(s.false_alarms_per_10k) if s.false_alarms_per_10k else None,
        )

    def on_vector(self, vector: Mapping[str, Any]) -> list[Detection]:
        found: list[Detection] = []
        for name, value in vector["features"].items():
            det = self._inputs.get(name)
            if det is None:
                if len(self._inputs) >= self.max_features:
                    self.unmonitored_features += 1
                    continue
                det = self._inputs[name] = SubjectDetectors(
                    "input", name, self.input_detectors, self.seed, self._debouncer, calibration=self.calibration
                )
                alpha = 2 / (self.window + 1)
                self._feature_stats[name] = (stats.EWMean(fading_factor=alpha), stats.EWVar(fading_factor=alpha))
            mean, var = self._feature_stats[name]
            mean.update(value)
            var.update(value)
            found += self._watch(det, value)
        return found

    def on_prediction(self, prediction: Mapping[str, Any]) -> list[Detection]:
        if prediction["role"] != "champion":
            return []
        p = positive_score(prediction["scores"])
        if p is None:
            return []
        self._score_mean.update(p)
        return self._watch(self._prediction, p)

    def on_outcome(self, out: Mapping[str, Any]) -> list[Detection]:
        key = (out["model_name"], int(out["model_version"]), out["role"])
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = PerformanceTracker(self.window)
        tracker.update(out)
        served_key = (out["model_name"], out["role"])
        served = self.served.get(served_key)
        if served is None:
            served = self.served[served_key] = PerformanceTracker(self.window)
        served.update(out)
        if out["role"] != "champion":
            return []
        if is_regression(out.get("predicted"), out.get("scores"), out["label"]):
            return self._watch(self._concept_abs, out["loss"])
        return self._watch(self._concept, out["loss"])

    def _watch(self, subject: SubjectDetectors, x: float) -> list[Detection]:
        found = subject.update(x)
        if subject.due and not subject.claimed:
            subject.claimed = True
            self._due.append(subject)
        return found

    @property
    def has_due(self) -> bool:
        """Whether some subject waits for its calibration (take_due would hand it out)."""
        return bool(self._due)

    def take_due(self) -> list[SubjectDetectors]:
        """The subjects to calibrate now (``tune`` off the event loop, then ``install``): each
        is handed out once. Until installed, a subject keeps its values and detects nothing."""
        due, self._due = self._due, []
        return due

    def calibrate_due(self) -> list[Detection]:
        """Calibrate every due subject on the caller's thread (pure callers, tests)."""
        return [d for subject in self.take_due() for d in subject.calibrate_now()]

    def feature_stats(self) -> dict[str, tuple[float, float]]:
        return {n: (m.get(), max(v.get(), 0.0) ** 0.5) for n, (m, v) in self._feature_stats.items()}

    @property
    def score_mean(self) -> float:
        return float(self._score_mean.get())
