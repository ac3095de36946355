"""The Open Inference Protocol (OIP) v2 for the served models, as pure functions: its JSON
documents as pydantic models, a request's tensors turned into rows of named features, and
predictions turned into the response's tensors. No HTTP and no Kafka here (http.py serves it).

A request carries one input tensor per feature, named after it, of shape ``[N]`` or
``[N, 1]`` (N rows), any numeric datatype or BOOL. Two optional BYTES inputs name each row:
``event_id`` (generated when absent) and ``entity_id`` (the event id when absent). The
response has, per row, ``predicted`` (the class or the value), ``event_id``, and for a
classifier ``scores``, shape ``[N, C]`` in the order its ``classes`` parameter gives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftloop.shared.errors import HttpError
from driftloop.shared.records import Prediction

NUMERIC = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)
ID_INPUTS = ("event_id", "entity_id")
#: The suffix of a feature set whose features include windows over the stream.
_WINDOWED = re.compile(r"-w[0-9a-f]{8}$")


class InferenceError(HttpError):
    """An infer or metadata request answered with an error."""


class ShapeMismatch(InferenceError):
    code = "shape_mismatch"


class WrongDatatype(InferenceError):
    code = "wrong_datatype"


class NonFiniteInput(InferenceError):
    code = "non_finite_number"


class UnknownInput(InferenceError):
    code = "unknown_input"


class MissingInput(InferenceError):
    code = "missing_input"


class TooManyRows(InferenceError):
    code = "too_many_rows"


class ModelNotFound(InferenceError):
    code = "model_not_found"
    status = 404


class NotReady(InferenceError):
    code = "model_not_ready"
    status = 503


class WindowedFeatures(InferenceError):
    code = "windowed_features"
    status = 422


class EntityUnknown(InferenceError):
    code = "entity_unknown"
    status = 404


# --- the documents ----------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid")


class RequestInput(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1, max_length=256)
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    model_config = _STRICT
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = _STRICT
    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = None


# --- requests to rows -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    features: list[dict[str, float]]
    event_ids: list[str | None]
    entity_ids: list[str | None]


def windowed(feature_set_version: str) -> bool:
    return bool(_WINDOWED.search(feature_set_version))


def _flat(data: list[Any]) -> list[Any]:
    """OIP allows the data of a tensor flat or nested by its shape."""
    if data and all(isinstance(d, list) for d in data):
        return [v for row in data for v in _flat(row)]
    return data


def _column(tensor: RequestInput, rows: int | None) -> list[Any]:
    shape = tensor.shape
    if any(d < 0 for d in shape) or (len(shape) == 2 and shape[1] != 1):
        raise ShapeMismatch(f"input {tensor.name!r} has shape {shape}: one value per row, [N] or [N, 1]")
    values = _flat(tensor.data)
    if len(values) != shape[0]:
        raise ShapeMismatch(f"input {tensor.name!r} has shape {shape} but {len(values)} values")
    if rows is not None and shape[0] != rows:
        raise ShapeMismatch(f"input {tensor.name!r} has {shape[0]} rows, another input has {rows}")
    return values


def _number(tensor: RequestInput, v: Any) -> float:
    if tensor.datatype == "BOOL":
        if not isinstance(v, bool):
            raise WrongDatatype(f"input {tensor.name!r} is BOOL but holds {v!r}")
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise WrongDatatype(f"input {tensor.name!r} is {tensor.datatype} but holds {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise NonFiniteInput(f"input {tensor.name!r} holds {v!r}: features must be finite")
    return x


def rows_of(request: InferenceRequest, known: Sequence[str], max_rows: int, *, partial: bool = False) -> Rows:
    """The request's rows of named features. ``known`` is the feature names the model has
    been served (empty before the stream brought any): when given, every row must carry
    exactly those features. ``partial`` rows may carry some or none of them (the rest come
    from the entity's window state); each must still be known."""
    rows: int | None = None
    columns: dict[str, list[float]] = {}
    ids: dict[str, list[str | None]] = {}
    for tensor in request.inputs:
        if tensor.name in columns or tensor.name in ids:
            raise ShapeMismatch(f"input {tensor.name!r} is given twice")
        values = _column(tensor, rows)
        rows = len(values)
        if rows > max_rows:
            raise TooManyRows(f"{rows} rows in one request; at most {max_rows}")
        if tensor.name in ID_INPUTS:
            if tensor.datatype != "BYTES" or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in values):
                raise WrongDatatype(f"input {tensor.name!r} must be BYTES: one non-empty string per row")
            ids[tensor.name] = list(values)
            continue
        if tensor.datatype not in NUMERIC:
            raise WrongDatatype(f"input {tensor.name!r} is {tensor.datatype}: features are numeric or BOOL")
        columns[tensor.name] = [_number(tensor, v) for v in values]
    if not columns and not partial:
        raise MissingInput("the request has no feature input")
    if known:
        unknown = sorted(set(columns) - set(known))
        if unknown:
            raise UnknownInput(f"the model has no input {unknown[0]!r}; its inputs: {', '.join(known)}")
        missing = [] if partial else [k for k in known if k not in columns]
        if missing:
            raise MissingInput(f"input {missing[0]!r} is missing; the model's inputs: {', '.join(known)}")
    n = rows or 0
    features = [{name: col[i] for name, col in columns.items()} for i in range(n)]
    none: list[str | None] = [None] * n
    return Rows(features, ids.get("event_id", none), ids.get("entity_id", none))


# --- predictions to a response ----------------------------------------------------------------


def _datatype(values: Sequence[Any]) -> tuple[str, list[Any]]:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL", list(values)
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "FP64", [None if v is None else float(v) for v in values]
    return "BYTES", [None if v is None else str(v) for v in values]


def response_of(
    predictions: Sequence[Prediction], request_id: str | None, task: Literal["classification", "regression"]
) -> InferenceResponse:
    """The response to one request: every prediction comes from one version, the one named."""
    first = predictions[0]
    n = len(predictions)
    datatype, predicted = _datatype([p["predicted"] for p in predictions])
    outputs = [
        ResponseOutput(name="predicted", shape=[n], datatype=datatype, data=predicted),
        ResponseOutput(name="event_id", shape=[n], datatype="BYTES", data=[p["event_id"] for p in predictions]),
    ]
    if task == "classification":
        classes = sorted({c for p in predictions for c in p["scores"]})
        outputs.append(
            ResponseOutput(
                name="scores",
                shape=[n, len(classes)],
                datatype="FP64",
                parameters={"classes": classes},
                data=[p["scores"].get(c, 0.0) for p in predictions for c in classes],
            )
        )
    return InferenceResponse(
        model_name=first["model_name"],
        model_version=str(first["model_version"]),
        id=request_id,
        parameters={"role": first["role"], "feature_set_version": first["feature_set_version"]},
        outputs=outputs,
    )


def metadata_of(
    name: str, version: int, feature_names: Sequence[str], task: Literal["classification", "regression"], spec: str
) -> ModelMetadata:
    outputs = [TensorMetadata(name="predicted", datatype="BYTES", shape=[-1])]
    outputs.append(TensorMetadata(name="event_id", datatype="BYTES", shape=[-1]))
    if task == "classification":
        outputs.append(TensorMetadata(name="scores", datatype="FP64", shape=[-1, -1]))
    return ModelMetadata(
        name=name,
        versions=[str(version)],
        platform=f"river/{spec}",
        inputs=[TensorMetadata(name=f, datatype="FP64", shape=[-1]) for f in feature_names],
        outputs=outputs,
        parameters={"task": task},
    )
