"""OIP v2 over HTTP (shared/http.py serves it on the service's event loop): health, model
metadata and infer, each error a JSON body with a machine-readable code. The OpenAPI
document is at /openapi.json."""

from __future__ import annotations

from typing import Protocol

from fastapi import FastAPI

from driftloop.services.inference.oip import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
)
from driftloop.shared.http import HttpMetrics, Ready, error_responses, new_app


class Api(Protocol):
    """What the endpoints ask of the service (services/inference/app.py)."""

    @property
    def ready(self) -> bool: ...

    def metadata(self, name: str) -> ModelMetadata: ...

    async def infer(self, name: str, version: int | None, request: InferenceRequest) -> InferenceResponse: ...


def build_app(api: Api, metrics: HttpMetrics) -> FastAPI:
    app = new_app(
        "driftloop inference",
        "The Open Inference Protocol v2 for the champion being served, beside the stream.",
        "2",
        metrics,
        "/v2/health",
        lambda: api.ready,
    )
    errors = error_responses(
        {
            400: "a malformed or invalid request",
            404: "no such model or version, or no window state for the entity named",
            408: "the body arrived too slowly",
            413: "the body is too large",
            422: "the model needs the stream's windowed features",
            503: "no champion loaded yet",
        }
    )

    @app.get("/v2/models/{name}", response_model=ModelMetadata, responses=errors)
    async def metadata(name: str) -> ModelMetadata:
        return api.metadata(name)

    @app.get("/v2/models/{name}/ready", response_model=Ready, responses=errors)
    async def model_ready(name: str) -> Ready:
        api.metadata(name)  # 404 for another name, 503 before a champion
        return Ready(ready=True)

    @app.post("/v2/models/{name}/infer", response_model=InferenceResponse, responses=errors)
    async def infer(name: str, request: InferenceRequest) -> InferenceResponse:
        return await api.infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer", response_model=InferenceResponse, responses=errors)
    async def infer_version(name: str, version: int, request: InferenceRequest) -> InferenceResponse:
        return await api.infer(name, version, request)

    return app
