"""Model specs: a River pipeline by name, seeded (pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river import base, forest, linear_model, preprocessing, tree

from shared.errors import UnknownModelSpec


def _logreg(seed: int) -> base.Classifier:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _hat(seed: int) -> base.Classifier:
    return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)


def _arf(seed: int) -> base.Classifier:
    return forest.ARFClassifier(n_models=10, seed=seed)


SPECS: dict[str, Callable[[int], base.Classifier]] = {"logreg": _logreg, "hat": _hat, "arf": _arf}


def build_model(spec: str, seed: int) -> base.Classifier:
    try:
        return SPECS[spec](seed)
    except KeyError:
        raise UnknownModelSpec(f"unknown model spec {spec!r}; choose one of {', '.join(SPECS)}") from None


def predict(model: base.Classifier, x: dict[str, float]) -> tuple[Any, dict[str, float]]:
    """The predicted class and the class scores (keyed by the class as a string)."""
    proba = model.predict_proba_one(x)
    if not proba:
        return None, {}
    predicted = max(proba, key=proba.__getitem__)
    return predicted, {str(k): float(v) for k, v in proba.items()}


def same_class(predicted: Any, label: Any) -> bool:
    """Class equality across encodings: True == 1 == 1.0, "1" == 1 for CSV-born labels."""
    if predicted is None:
        return False
    if predicted == label:
        return True
    try:
        return float(predicted) == float(label)
    except (TypeError, ValueError):
        return str(predicted) == str(label)
