"""OIP v2 (services/inference/oip.py, http.py): requests to rows, predictions to tensors, and
the endpoints' answers to good and bad requests, through the ASGI app in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from driftloop.services.inference import http, oip
from driftloop.shared import http as shared_http
from driftloop.shared.records import Prediction


def _request(**inputs: tuple[str, list[Any]]) -> oip.InferenceRequest:
    return oip.InferenceRequest(
        inputs=[
            oip.RequestInput(name=name, shape=[len(data)], datatype=dt, data=data)
            for name, (dt, data) in inputs.items()
        ]
    )


def test_rows_of_columns_with_ids() -> None:
    req = _request(
        a=("FP64", [1.0, 2.5]), b=("INT32", [3, 4]), c=("BOOL", [True, False]), event_id=("BYTES", ["e1", "e2"])
    )
    rows = oip.rows_of(req, known=["a", "b", "c"], max_rows=10)
    assert rows.features == [{"a": 1.0, "b": 3.0, "c": 1.0}, {"a": 2.5, "b": 4.0, "c": 0.0}]
    assert rows.event_ids == ["e1", "e2"] and rows.entity_ids == [None, None]


def test_rows_of_accepts_nested_data_of_shape_n_by_1() -> None:
    req = oip.InferenceRequest(inputs=[oip.RequestInput(name="a", shape=[2, 1], datatype="FP32", data=[[1.0], [2.0]])])
    assert oip.rows_of(req, known=[], max_rows=10).features == [{"a": 1.0}, {"a": 2.0}]


@pytest.mark.parametrize(
    ("inputs", "known", "error"),
    [
        ({"a": ("FP64", [1.0]), "b": ("FP64", [1.0, 2.0])}, [], oip.ShapeMismatch),
        ({"a": ("FP64", [float("nan")])}, [], oip.NonFiniteInput),
        ({"a": ("FP64", ["1.0"])}, [], oip.WrongDatatype),
        ({"a": ("FP64", [True])}, [], oip.WrongDatatype),
        ({"a": ("BOOL", [1])}, [], oip.WrongDatatype),
        ({"a": ("BYTES", ["x"])}, [], oip.WrongDatatype),
        ({"a": ("FP64", [1.0]), "typo": ("FP64", [1.0])}, ["a"], oip.UnknownInput),
        ({"a": ("FP64", [1.0])}, ["a", "b"], oip.MissingInput),
        ({"event_id": ("BYTES", ["e"])}, [], oip.MissingInput),
        ({"a": ("FP64", [1.0]), "event_id": ("BYTES", [""])}, [], oip.WrongDatatype),
        ({"a": ("FP64", [1.0] * 11)}, [], oip.TooManyRows),
    ],
)
def test_rows_of_refuses(inputs: dict[str, tuple[str, list[Any]]], known: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        oip.rows_of(_request(**inputs), known=known, max_rows=10)


def test_a_shape_that_does_not_match_its_data_is_refused() -> None:
    req = oip.InferenceRequest(inputs=[oip.RequestInput(name="a", shape=[3], datatype="FP64", data=[1.0])])
    with pytest.raises(oip.ShapeMismatch, match="3"):
        oip.rows_of(req, known=[], max_rows=10)


def _prediction(event_id: str, predicted: Any, scores: dict[str, float]) -> Prediction:
    return {
        "event_id": event_id,
        "entity_id": event_id,
        "event_time": 1,
        "model_name": "m",
        "model_version": 7,
        "role": "champion",
        "predicted": predicted,
        "scores": scores,
        "feature_set_version": "v1",
        "ingest_time": 1,
        "predicted_at": 2,
    }


def test_response_of_a_classifier() -> None:
    preds = [
        _prediction("e1", True, {"True": 0.8, "False": 0.2}),
        _prediction("e2", False, {"True": 0.1, "False": 0.9}),
    ]
    res = oip.response_of(preds, "r", "classification")
    out = {o.name: o for o in res.outputs}
    assert (res.model_name, res.model_version, res.id) == ("m", "7", "r")
    assert out["predicted"].datatype == "BOOL" and out["predicted"].data == [True, False]
    assert out["scores"].shape == [2, 2] and out["scores"].parameters == {"classes": ["False", "True"]}
    assert out["scores"].data == [0.2, 0.8, 0.9, 0.1]
    assert out["event_id"].data == ["e1", "e2"]


def test_response_of_a_regressor_has_no_scores() -> None:
    res = oip.response_of([_prediction("e1", 2.5, {})], None, "regression")
    assert [o.name for o in res.outputs] == ["predicted", "event_id"]
    assert res.outputs[0].datatype == "FP64" and res.outputs[0].data == [2.5]


def test_windowed_feature_sets_are_told_apart() -> None:
    assert oip.windowed("v1-w0123abcd") and not oip.windowed("v1") and not oip.windowed("v1-wide")


class FakeApi:
    def __init__(self) -> None:
        self.ready = False

    def metadata(self, name: str) -> oip.ModelMetadata:
        if name != "m":
            raise oip.ModelNotFound("no model")
        if not self.ready:
            raise oip.NotReady("not yet")
        return oip.metadata_of("m", 7, ["a"], "classification", "logreg")

    async def infer(self, name: str, version: int | None, request: oip.InferenceRequest) -> oip.InferenceResponse:
        self.metadata(name)
        rows = oip.rows_of(request, ["a"], 10)
        return oip.response_of(
            [_prediction(f"e{i}", True, {"True": 1.0}) for i in range(len(rows.features))], None, "classification"
        )


async def _chunks(chunk: bytes, n: int, pause_s: float = 0.0) -> AsyncIterator[bytes]:
    """A body without a declared length, sent in ``n`` chunks."""
    for _ in range(n):
        await asyncio.sleep(pause_s)
        yield chunk


def test_a_body_slower_than_the_timeout_is_answered_408() -> None:
    async def run() -> httpx.Response:
        app = shared_http.guarded(http.build_app(FakeApi(), shared_http.HttpMetrics(CollectorRegistry())), 10_000, 0.2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v2/models/m/infer", content=_chunks(b"{", 5, pause_s=0.1))

    answer = asyncio.run(run())
    assert answer.status_code == 408 and answer.json()["code"] == "request_timeout"


def test_a_refused_body_is_counted_as_the_client_got_it_under_its_route() -> None:
    """The guard's 413 and 408 are what /metrics counts, not the app's answer to a body it
    never got whole (which would be a 500), whether the refusal came before routing or after."""
    registry = CollectorRegistry()
    api = FakeApi()
    api.ready = True

    async def run() -> None:
        app = shared_http.guarded(http.build_app(api, shared_http.HttpMetrics(registry)), 1_000, 0.2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.post("/v2/models/m/infer", content=b"x" * 1_001)).status_code == 413
            assert (await c.post("/v2/models/m/infer", content=_chunks(b"x" * 600, 2))).status_code == 413
            assert (await c.post("/v2/models/m/infer", content=_chunks(b"{", 5, pause_s=0.1))).status_code == 408

    asyncio.run(run())

    def count(code: str) -> float | None:
        labels = {"route": "/v2/models/{name}/infer", "code": code}
        return registry.get_sample_value("driftloop_http_requests_total", labels)

    assert (count("413"), count("408"), count("500")) == (2.0, 1.0, None)


async def _calls(api: FakeApi, max_bytes: int = 10_000) -> dict[str, httpx.Response]:
    app = shared_http.guarded(http.build_app(api, shared_http.HttpMetrics(CollectorRegistry())), max_bytes, 5.0)
    good = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        out = {
            "ready before": await c.get("/v2/health/ready"),
            "infer before": await c.post("/v2/models/m/infer", json=good),
        }
        api.ready = True
        out |= {
            "ready": await c.get("/v2/health/ready"),
            "metadata": await c.get("/v2/models/m"),
            "infer": await c.post("/v2/models/m/infer", json=good),
            "version not a number": await c.post("/v2/models/m/versions/x/infer", json=good),
            "extra field": await c.post("/v2/models/m/infer", json={**good, "surprise": 1}),
            "unknown input": await c.post(
                "/v2/models/m/infer", json={"inputs": [{"name": "b", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
            ),
            "too large": await c.post("/v2/models/m/infer", content=b"x" * (max_bytes + 1)),
            "too large, chunked": await c.post(
                "/v2/models/m/infer", content=_chunks(b"x" * 1000, max_bytes // 1000 + 2)
            ),
            "openapi": await c.get("/openapi.json"),
        }
    return out


def test_the_endpoints_answer_with_status_and_code() -> None:
    calls = asyncio.run(_calls(FakeApi()))
    assert calls["ready before"].status_code == 503 and calls["ready before"].json() == {"ready": False}
    assert calls["infer before"].status_code == 503 and calls["infer before"].json()["code"] == "model_not_ready"
    assert calls["ready"].json() == {"ready": True}
    assert calls["metadata"].json()["inputs"] == [{"name": "a", "datatype": "FP64", "shape": [-1]}]
    assert calls["infer"].status_code == 200 and calls["infer"].json()["model_version"] == "7"
    for what, code in (
        ("version not a number", "invalid_request"),
        ("extra field", "invalid_request"),
        ("unknown input", "unknown_input"),
    ):
        assert calls[what].status_code == 400 and calls[what].json()["code"] == code, (what, calls[what].text)
    for what in ("too large", "too large, chunked"):
        assert calls[what].status_code == 413 and calls[what].json()["code"] == "body_too_large", calls[what].text
    assert "/v2/models/{name}/infer" in calls["openapi"].json()["paths"]
