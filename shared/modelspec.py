"""Model specs: a River pipeline by name, seeded (pure).

Classifiers (``logreg``, ``hat``, ``arf``) predict a class with class scores; regressors
(``linreg``, ``hatr``, ``arfr``) predict a number with no scores. Everything downstream tells
them apart by that shape: a Prediction with empty scores and a numeric ``predicted``.
"""

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


def _linreg(seed: int) -> base.Regressor:
    return preprocessing.StandardScaler() | linear_model.LinearRegression()


def _hatr(seed: int) -> base.Regressor:
    return tree.HoeffdingAdaptiveTreeRegressor(seed=seed)


def _arfr(seed: int) -> base.Regressor:
    return forest.ARFRegressor(n_models=10, seed=seed)


Model = base.Classifier | base.Regressor
SPECS: dict[str, Callable[[int], Model]] = {
    "logreg": _logreg,
    "hat": _hat,
    "arf": _arf,
    "linreg": _linreg,
    "hatr": _hatr,
    "arfr": _arfr,
}


def build_model(spec: str, seed: int) -> Model:
    try:
        return SPECS[spec](seed)
    except KeyError:
        raise UnknownModelSpec(f"unknown model spec {spec!r}; choose one of {', '.join(SPECS)}") from None


def is_regressor(model: Any) -> bool:
    """A River regressor, or a pipeline ending in one."""
    return isinstance(model, base.Regressor)


def predict(model: Model, x: dict[str, float]) -> tuple[Any, dict[str, float]]:
    """The predicted class and the class scores (keyed by the class as a string); for a
    regressor, the predicted value (a float) and no scores."""
    if is_regressor(model):
        return float(model.predict_one(x)), {}
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
