"""OIP v2 over HTTP, on the inference service's own event loop (FastAPI on uvicorn, no second
process): health, model metadata and infer, each error a JSON body with a machine-readable
code. The OpenAPI document is at /openapi.json."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram

from driftloop.services.inference.oip import (
    BodyTooLarge,
    ErrorBody,
    InferenceError,
    InferenceRequest,
    InferenceResponse,
    Live,
    ModelMetadata,
    Ready,
)
from driftloop.shared.errors import PortInUse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Api(Protocol):
    """What the endpoints ask of the service (services/inference/app.py)."""

    @property
    def ready(self) -> bool: ...

    def metadata(self, name: str) -> ModelMetadata: ...

    async def infer(self, name: str, version: int | None, request: InferenceRequest) -> InferenceResponse: ...


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "driftloop_http_requests_total", "HTTP requests answered", ["route", "code"], registry=registry
        )
        self.seconds = Histogram(
            "driftloop_http_request_duration_seconds",
            "Time from a request's arrival to its answer",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )


def _error(exc: InferenceError) -> JSONResponse:
    return JSONResponse(ErrorBody(error=str(exc), code=exc.code).model_dump(), status_code=exc.status)


class BodyLimit:
    """Refuses a body over ``max_bytes`` (413) before it is read whole, and a client that
    sends it slower than ``timeout_s`` allows (408): no request holds memory or a slot long."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, 413, BodyTooLarge(f"the body is {int(declared)} bytes; at most {self.max_bytes}"))
            return
        seen = 0
        deadline = time.monotonic() + self.timeout_s

        async def limited() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise _TooSlow from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except (_TooLarge, _TooSlow) as exc:
            if started:
                raise
            if isinstance(exc, _TooLarge):
                await self._refuse(send, 413, BodyTooLarge(f"the body is over {self.max_bytes} bytes"))
            else:
                slow = InferenceError(f"the body did not arrive within {self.timeout_s:.0f} s", code="request_timeout")
                await self._refuse(send, 408, slow)

    @staticmethod
    async def _refuse(send: Send, status: int, exc: InferenceError) -> None:
        body = ErrorBody(error=str(exc), code=exc.code).model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def build_app(api: Api, metrics: HttpMetrics) -> FastAPI:
    app = FastAPI(
        title="driftloop inference",
        summary="The Open Inference Protocol v2 for the champion being served, beside the stream.",
        version="2",
        docs_url=None,
        redoc_url=None,
    )

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.seconds.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(InferenceError)
    async def inference_error(_: Request, exc: InferenceError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
        return _error(InferenceError(message))

    errors: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody, "description": d}
        for s, d in (
            (400, "a malformed or invalid request"),
            (404, "no such model or version"),
            (413, "the body is too large"),
            (422, "the model needs the stream's windowed features"),
            (503, "no champion loaded yet"),
        )
    }

    @app.get("/v2/health/live", response_model=Live)
    async def live() -> Live:
        return Live(live=True)

    @app.get("/v2/health/ready", response_model=Ready, responses={503: {"model": Ready}})
    async def ready() -> Any:
        if api.ready:
            return Ready(ready=True)
        return JSONResponse(Ready(ready=False).model_dump(), status_code=503)

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


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service's runtime owns SIGTERM and SIGINT: it stops this server among the rest.
        yield


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is a named error (uvicorn would
    exit the process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"the OIP port {host}:{port} is taken or cannot be bound: {exc.strerror}") from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


def server(app: FastAPI, max_body_bytes: int, body_timeout_s: float) -> uvicorn.Server:
    config = uvicorn.Config(
        BodyLimit(app, max_body_bytes, body_timeout_s),
        log_level="warning",
        access_log=False,
        lifespan="off",
        # A client that keeps a connection idle, or opens too many, is cut off rather than
        # holding the service's sockets.
        timeout_keep_alive=5,
        limit_concurrency=512,
        h11_max_incomplete_event_size=16 * 1024,
    )
    return _Server(config)
