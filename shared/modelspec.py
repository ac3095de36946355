"""Model specs: a River pipeline by name and task, seeded; the task a stream's labels call for (pure).

Three tasks: ``binary`` (labels True/False, or 0/1), ``multiclass`` (any other classes:
strings, integers, booleans mixed with them) and ``regression`` (numbers). Each family has a
form per task: ``logreg`` is a logistic regression for a binary task and one logistic
regression per class (one-vs-rest) for a multi-class one, ``hat`` and ``arf`` handle several
classes natively, and ``linreg``, ``hatr`` and ``arfr`` are their regressors. Classifiers
predict a class with a score for every class seen; regressors predict a number with no scores.
Everything downstream tells them apart by that shape: a Prediction with empty scores and a
numeric ``predicted``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

from river import base, compose, forest, linear_model, multiclass, preprocessing, tree

from driftloop.shared.errors import ConfigError, LabelTaskMismatch, UnknownModelSpec

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)
AUTO = "auto"


def _logreg(seed: int) -> base.Classifier:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _logreg_ovr(seed: int) -> base.Classifier:
    # River's LogisticRegression is binary (it casts the label to an int).
    return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression())


def _hat(seed: int) -> base.Classifier:
    return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)


def _arf(seed: int) -> base.Classifier:
    return forest.ARFClassifier(n_models=10, seed=seed)


# Regressors learn a standardised target on standardised features: an SGD intercept starting
# at 0 takes hundreds of examples to reach a target in the tens, and the trees' split
# criteria and the forest's drift detectors overflow on unscaled features such as a date.
def _linreg(seed: int) -> base.Regressor:
    return preprocessing.TargetStandardScaler(preprocessing.StandardScaler() | linear_model.LinearRegression())


def _hatr(seed: int) -> base.Regressor:
    return preprocessing.TargetStandardScaler(
        preprocessing.StandardScaler() | tree.HoeffdingAdaptiveTreeRegressor(seed=seed)
    )


def _arfr(seed: int) -> base.Regressor:
    return preprocessing.TargetStandardScaler(
        preprocessing.StandardScaler() | forest.ARFRegressor(n_models=10, seed=seed)
    )


Model: TypeAlias = base.Classifier | base.Regressor
SPECS: dict[str, Callable[[int], Model]] = {
    "logreg": _logreg,
    "hat": _hat,
    "arf": _arf,
    "linreg": _linreg,
    "hatr": _hatr,
    "arfr": _arfr,
}
REGRESSOR_SPECS = ("linreg", "hatr", "arfr")
# The same family in the other task's form: (classifier spec, regressor spec).
FAMILIES = (("logreg", "linreg"), ("hat", "hatr"), ("arf", "arfr"))
_MULTICLASS: dict[str, Callable[[int], Model]] = {"logreg": _logreg_ovr}


def _check_spec(spec: str) -> None:
    if spec not in SPECS:
        raise UnknownModelSpec(f"unknown model spec {spec!r}; choose one of {', '.join(SPECS)}")


def build_model(spec: str, seed: int, task: str | None = None) -> Model:
    """The model of ``spec`` in the form ``task`` needs (None: the spec as named, binary for a
    classifier)."""
    spec = spec_for_task(spec, task) if task is not None else spec
    _check_spec(spec)
    if task == MULTICLASS and spec in _MULTICLASS:
        return _MULTICLASS[spec](seed)
    return SPECS[spec](seed)


def spec_for_task(spec: str, task: str) -> str:
    """``spec``'s family in the form ``task`` needs: ``logreg`` on a regression is ``linreg``."""
    _check_spec(spec)
    check_task(task)
    for classifier, regressor in FAMILIES:
        if spec in (classifier, regressor):
            return regressor if task == REGRESSION else classifier
    return spec


def check_task(task: str, *, auto: bool = False) -> str:
    if task in TASKS or (auto and task == AUTO):
        return task
    allowed = (*TASKS, AUTO) if auto else TASKS
    raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(allowed)}")


def fixed_task(spec: str | Sequence[str], task: str) -> str | None:
    """The task before any label is seen: the ``task`` setting, else regression for a
    regressor spec, or a list of them alone (a number is all they can learn); None when the
    labels must tell."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    for one in specs:
        _check_spec(one)
    check_task(task, auto=True)
    if task != AUTO:
        return task
    return REGRESSION if specs and all(one in REGRESSOR_SPECS for one in specs) else None


def family(spec: str) -> str:
    """The family of ``spec``, named by its classifier form: ``linreg`` is ``logreg``."""
    _check_spec(spec)
    return next((c for c, r in FAMILIES if spec in (c, r)), spec)


def parse_specs(text: str) -> list[str]:
    """The model specs of a comma-separated list (``logreg,hat,arf``), in its order; empty
    for an empty list. Raises UnknownModelSpec for an unknown name, ValueError for a family
    listed twice (``hat`` and ``hatr`` are one family: both take the task's form)."""
    specs = [item.strip() for item in text.split(",")]
    if specs == [""]:
        return []
    seen: dict[str, str] = {}
    for one in specs:
        if not one:
            raise ValueError(f"an empty entry in the model spec list {text!r}")
        _check_spec(one)
        if family(one) in seen:
            raise ValueError(f"model family {family(one)} listed twice ({seen[family(one)]}, {one})")
        seen[family(one)] = one
    return specs


def is_regressor(model: Any) -> bool:
    """A River regressor, or a pipeline ending in one."""
    return isinstance(model, base.Regressor)


def fits_task(model: Any, task: str) -> bool:
    """Whether ``model`` can learn ``task``'s labels (a model of a record older than the task
    field, resumed for a task the labels told): a regressor numbers, any classifier two
    classes, and one that is not River's binary-only LogisticRegression several."""
    if task == REGRESSION or is_regressor(model):
        return task == REGRESSION and is_regressor(model)
    if task == MULTICLASS:
        last = list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model
        return not isinstance(last, linear_model.LogisticRegression)
    return True


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integral(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())  # bool is an int


def infer_task(labels: Iterable[Any], *, final: bool, max_classes: int = 20) -> str | None:
    """The task ``labels`` (the first of a stream) call for; None while they cannot tell yet.

    A string is a class (multi-class); a number with a fractional part is a value
    (regression); booleans alone are binary. Integral numbers (CSV's ``1`` and ``1.0`` alike)
    tell only by how many distinct values they take: more than ``max_classes`` is a
    regression at once; with ``final`` (enough labels seen), 0 and 1 alone are binary and a
    few values are classes. A rating from 1 to 5 to be predicted as a number needs the
    ``task`` setting."""
    values: set[Any] = set()
    only_bools = True
    for y in labels:
        if isinstance(y, str):
            return MULTICLASS
        if isinstance(y, float) and math.isfinite(y) and not y.is_integer():
            return REGRESSION
        if not _integral(y):
            continue  # non-finite: refused on its own (label_fits)
        only_bools = only_bools and isinstance(y, bool)
        values.add(int(y))
    if not values:
        return None
    if only_bools:
        return BINARY
    if len(values) > max_classes:
        return REGRESSION
    if not final:
        return None
    return BINARY if values <= {0, 1} else MULTICLASS


def label_fits(task: str, label: Any) -> bool:
    """Whether ``label`` is one a model of ``task`` can learn: a finite number for a
    regression, True/False or 0/1 for a binary task, any class for a multi-class one."""
    if task == REGRESSION:
        return is_number(label) and math.isfinite(label)
    if task == BINARY:
        return isinstance(label, bool) or (is_number(label) and label in (0, 1))
    return isinstance(label, bool | int | str) or (isinstance(label, float) and math.isfinite(label))


def check_label(task: str, label: Any) -> None:
    """Raise LabelTaskMismatch (dead-lettered, never an internal error) for a label ``task`` cannot learn."""
    if not label_fits(task, label):
        want = {
            REGRESSION: "a finite number",
            BINARY: "True/False or 0/1",
            MULTICLASS: "a class (string, integer, boolean)",
        }[task]
        kind = type(label).__name__
        raise LabelTaskMismatch(f"label {label!r} ({kind}) does not fit the {task} task: it needs {want}")


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
