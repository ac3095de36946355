"""HTTP beside the stream, on a service's own event loop: FastAPI on uvicorn (no second
process), JSON errors with a machine-readable code, request counts and durations for
/metrics, and a guard that bounds every request body in size and time."""

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
from pydantic import BaseModel
from starlette.routing import Match

from driftloop.shared.errors import BodyTooLarge, HttpError, PortInUse, RequestTimeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ErrorBody(BaseModel):
    error: str
    code: str


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


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


def error_response(exc: HttpError) -> JSONResponse:
    return JSONResponse(ErrorBody(error=str(exc), code=exc.code).model_dump(), status_code=exc.status)


class BodyLimit:
    """Refuses a body over ``max_bytes`` (413) before it is read whole, and a client that
    sends it slower than ``timeout_s`` allows (408): no request holds memory or a slot long.
    Past the limit the app is told the client left; whatever it answers then (Starlette's
    error middleware would answer 500) is dropped for the refusal."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, BodyTooLarge(f"the body is {int(declared)} bytes; at most {self.max_bytes}"))
            return
        seen = 0
        deadline = time.monotonic() + self.timeout_s
        refusal: HttpError | None = None
        started = False

        async def limited() -> Message:
            nonlocal seen, refusal
            if refusal is None:
                try:
                    message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    refusal = RequestTimeout(f"the body did not arrive within {self.timeout_s:.0f} s")
                    return {"type": "http.disconnect"}
                if message["type"] != "http.request":
                    return message
                seen += len(message.get("body", b""))
                if seen <= self.max_bytes:
                    return message
                refusal = BodyTooLarge(f"the body is over {self.max_bytes} bytes")
            return {"type": "http.disconnect"}

        async def tracked(message: Message) -> None:
            nonlocal started
            if refusal is not None and not started:
                return  # the app's answer to a body it never got whole
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except Exception:
            if refusal is None or started:
                raise
        if refusal is not None and not started:
            await self._refuse(send, refusal)

    @staticmethod
    async def _refuse(send: Send, exc: HttpError) -> None:
        body = ErrorBody(error=str(exc), code=exc.code).model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Measure:
    """Counts and times each request by its route (a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware costs a task and a stream per request). It wraps the body guard, so a
    refused body is counted as the 413 or 408 the client got, under the route it was for."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, routes: FastAPI) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = self._route(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.seconds.labels(route).observe(time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            # Refused before routing (a declared body over the limit): the route it asked for.
            route = next((r for r in self.routes.router.routes if r.matches(scope)[0] is Match.FULL), None)
        return str(getattr(route, "path", "unmatched"))


def new_app(
    title: str, summary: str, version: str, metrics: HttpMetrics, health: str, ready: Callable[[], bool]
) -> FastAPI:
    """A service's FastAPI app: its requests counted and timed, errors answered as ErrorBody,
    and ``{health}/live`` and ``{health}/ready`` (503 while ``ready()`` is false) for probes."""
    app = FastAPI(title=title, summary=summary, version=version, docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    install(app)

    @app.get(f"{health}/live", response_model=Live)
    async def live() -> Live:
        return Live(live=True)

    @app.get(f"{health}/ready", response_model=Ready, responses={503: {"model": Ready}})
    async def is_ready() -> Any:
        if ready():
            return Ready(ready=True)
        return JSONResponse(Ready(ready=False).model_dump(), status_code=503)

    return app


def install(app: FastAPI) -> None:
    """Answers errors as ErrorBody: an HttpError with its status, a request that fails
    validation (malformed JSON included) with 400."""

    @app.exception_handler(HttpError)
    async def http_error(_: Request, exc: HttpError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
        return error_response(HttpError(message))


def error_responses(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route answers, each with why."""
    return {status: {"model": ErrorBody, "description": why} for status, why in described.items()}


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service's runtime owns SIGTERM and SIGINT: it stops this server among the rest.
        yield


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is a named error (uvicorn would
    exit the process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets' connections, and
    # without it each answer's last segment waits for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"the HTTP port {host}:{port} is taken or cannot be bound: {exc.strerror}") from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


def guarded(app: FastAPI, max_body_bytes: int, body_timeout_s: float) -> ASGIApp:
    """``app`` (from new_app) as it is served: every request measured, its body bounded."""
    return Measure(BodyLimit(app, max_body_bytes, body_timeout_s), app.state.metrics, app)


def server(app: FastAPI, max_body_bytes: int, body_timeout_s: float) -> uvicorn.Server:
    config = uvicorn.Config(
        guarded(app, max_body_bytes, body_timeout_s),
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


class HttpSettings(Protocol):
    """The settings of a service that serves HTTP (inference's and ingestion's)."""

    http_port: int
    http_max_body_bytes: int
    http_body_timeout_s: float


class Serving:
    """A service's HTTP server: bound when its task starts (a taken port is PortInUse, and
    the service stops with one line), stopped at the service's shutdown once the requests
    in flight are answered, for at most ``stop_timeout_s``."""

    def __init__(self, app: FastAPI, host: str, settings: HttpSettings) -> None:
        self.app, self.host, self.port = app, host, settings.http_port
        self.max_body_bytes, self.body_timeout_s = settings.http_max_body_bytes, settings.http_body_timeout_s
        self.server: uvicorn.Server | None = None
        self.stopping = False
        self._done = asyncio.Event()

    @property
    def started(self) -> bool:
        return self.server is not None and bool(self.server.started) and not self.stopping

    async def serve(self, log: Any) -> None:
        sock = bind(self.host, self.port)
        self.server = server(self.app, self.max_body_bytes, self.body_timeout_s)
        log.info("http_serving", port=self.port, addr=self.host)
        try:
            await self.server.serve(sockets=[sock])
        finally:
            self._done.set()

    async def stop(self, stop_timeout_s: float = 5.0) -> None:
        self.stopping = True
        if self.server is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), stop_timeout_s)
