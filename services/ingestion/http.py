"""HTTP ingest (shared/http.py serves it on the service's event loop): POST /v1/events and
/v1/labels take one JSON record or an array of them, in the JSON producers write to the raw
topics. Each record is judged here by the Kafka path's own functions (validate.py's decode
and validators, then the contract), and every record, valid or not, is then written to its
raw topic as the bytes it was sent as: the stream ingests or dead-letters it as it does a
Kafka producer's record, so both paths give the same result. The answer waits for the write.
The OpenAPI document is at /openapi.json."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from driftloop.services.ingestion.validate import Limits, Validator, decode
from driftloop.shared.errors import HttpError, InvalidRecord
from driftloop.shared.http import HttpMetrics, error_responses, new_app
from driftloop.shared.serde import Serde

Kind = Literal["events", "labels"]
#: Characters of an error message an answer carries at most.
MAX_MESSAGE_CHARS = 300


class TooManyRecords(HttpError):
    code = "too_many_records"
    status = 400


class NotDelivered(HttpError):
    """The raw topic did not take every record: the request may be sent again whole (a
    record that was written is then dead-lettered once as duplicate_event)."""

    code = "produce_failed"
    status = 503
    retriable = True


class NotReady(HttpError):
    code = "not_ready"
    status = 503
    retriable = True


# --- the pure core: a body to records, each judged as the Kafka path judges it ---------------


@dataclass(frozen=True, slots=True)
class Checks:
    """How the Kafka path checks a raw record of one topic (services/ingestion/app.py)."""

    record: str
    validate: Validator
    limits: Limits
    serde: Serde
    contract: Callable[[dict[str, Any]], None] | None = None


@dataclass(frozen=True, slots=True)
class Screened:
    """One record of a body: its bytes as sent, its key (the entity), and its error if the
    Kafka path will dead-letter it."""

    data: bytes
    key: bytes | None
    event_id: str | None
    error: InvalidRecord | None


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def split_body(body: bytes, max_records: int) -> list[bytes]:
    """The records of a body, one JSON object or an array of values, each as the bytes it was
    sent as (so that a dead letter carries what the client wrote). A body that is not JSON
    is an HttpError: it holds no record to dead-letter."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError("the body is not UTF-8 text") from None
    try:
        return [s.encode() for s in _split(text, max_records)]
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise HttpError(f"the body is not JSON: {type(exc).__name__}: {exc}"[:MAX_MESSAGE_CHARS]) from None


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _split(text: str, max_records: int) -> list[str]:
    i = _skip(text, 0)
    if text.startswith("{", i):
        _, end = _DECODER.raw_decode(text, i)
        records, i = [text[i:end]], end
    elif text.startswith("[", i):
        records = []
        i = _skip(text, i + 1)
        if text.startswith("]", i):
            raise HttpError("the array holds no record")
        while True:
            _, end = _DECODER.raw_decode(text, i)
            records.append(text[i:end])
            if len(records) > max_records:  # refused before the rest is parsed
                raise TooManyRecords(f"more than {max_records} records in one body")
            i = _skip(text, end)
            if text.startswith(",", i):
                i = _skip(text, i + 1)
            elif text.startswith("]", i):
                i += 1
                break
            else:
                raise HttpError(f"the array is malformed at character {i}: expected ',' or ']'")
    else:
        raise HttpError("the body must be a JSON object (one record) or an array of records")
    if _skip(text, i) != len(text):
        raise HttpError(f"the body goes on after its JSON value, at character {i}")
    return records


def _text(obj: dict[str, Any] | None, name: str) -> str | None:
    """``obj[name]`` if it is text that can be answered and keyed with (an invalid record's
    event_id may be anything)."""
    value = obj.get(name) if obj is not None else None
    if not isinstance(value, str) or not value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def screen(data: bytes, checks: Checks, now_ms: int) -> Screened:
    """What the Kafka path makes of ``data``: the same decode, validation and contract, in the
    same order, whose first failure is the record's error."""
    obj: dict[str, Any] | None = None
    try:
        obj = decode(data, checks.record, checks.serde, checks.limits)
        value = checks.validate(obj, now_ms, checks.limits)
        if checks.contract is not None:
            checks.contract(value)
    except InvalidRecord as exc:
        entity = _text(obj, "entity_id")
        return Screened(data, entity.encode() if entity else None, _text(obj, "event_id"), exc)
    return Screened(data, value["entity_id"].encode(), value["event_id"], None)


class RecordResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "rejected"]
    #: Why a rejected record is dead-lettered: the code the Kafka path gives it.
    code: str | None = None
    error: str | None = None


class IngestResponse(BaseModel):
    accepted: int
    rejected: int
    results: list[RecordResult]


class RejectedResponse(IngestResponse):
    """400: some records are invalid (and dead-lettered); the valid ones were accepted."""

    error: str
    #: The first rejected record's code.
    code: str


def _message(exc: BaseException) -> str:
    return str(exc).encode("utf-8", "replace").decode()[:MAX_MESSAGE_CHARS]


def answer_of(records: Sequence[Screened]) -> IngestResponse:
    """The answer to a body whose records are all written: 202 unless one is invalid."""
    results = [
        RecordResult(index=i, event_id=r.event_id, status="accepted")
        if r.error is None
        else RecordResult(index=i, event_id=r.event_id, status="rejected", code=r.error.code, error=_message(r.error))
        for i, r in enumerate(records)
    ]
    rejected = [r for r in results if r.status == "rejected"]
    accepted = len(results) - len(rejected)
    if not rejected:
        return IngestResponse(accepted=accepted, rejected=0, results=results)
    first = rejected[0]
    assert first.code is not None
    return RejectedResponse(
        accepted=accepted,
        rejected=len(rejected),
        results=results,
        error=(
            f"{len(rejected)} of {len(results)} records are invalid and go to the dead-letter topic "
            f"(the first, record {first.index}: {first.code}); the {accepted} others were accepted"
        ),
        code=first.code,
    )


# --- the endpoints ----------------------------------------------------------------------------


class Api(Protocol):
    """What the endpoints ask of the service (services/ingestion/app.py)."""

    @property
    def ready(self) -> bool: ...

    @property
    def max_records(self) -> int: ...

    def checks(self, kind: Kind) -> Checks: ...

    async def produce(self, kind: Kind, records: Sequence[Screened]) -> None:
        """Write every record to the kind's raw topic and wait for the broker (acks=all), or
        raise NotDelivered."""
        ...


_BODY = {
    "requestBody": {
        "required": True,
        "description": "One record, or an array of records, as the JSON producers write to the raw topic",
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}
            }
        },
    }
}


def build_app(api: Api, metrics: HttpMetrics) -> FastAPI:
    app = new_app(
        "driftloop ingestion",
        "Events and labels over HTTP, onto the raw topics the stream ingests from.",
        "1",
        metrics,
        "/v1/health",
        lambda: api.ready,
    )
    errors = error_responses(
        {
            408: "the body arrived too slowly",
            413: "the body is too large",
            503: "the raw topic did not take the records, or the service is stopping",
        }
    )
    responses: dict[int | str, dict[str, Any]] = {
        **errors,
        400: {"model": RejectedResponse, "description": "invalid records (dead-lettered), or a malformed body"},
    }

    async def ingest(kind: Kind, request: Request) -> JSONResponse:
        if not api.ready:
            raise NotReady("the service is stopping")
        body = await request.body()
        checks, now = api.checks(kind), int(time.time() * 1000)
        records = [screen(data, checks, now) for data in split_body(body, api.max_records)]
        await api.produce(kind, records)
        res = answer_of(records)
        status = 400 if isinstance(res, RejectedResponse) else 202
        return JSONResponse(res.model_dump(exclude_none=True), status_code=status)

    @app.post("/v1/events", status_code=202, response_model=IngestResponse, responses=responses, openapi_extra=_BODY)
    async def events(request: Request) -> JSONResponse:
        return await ingest("events", request)

    @app.post("/v1/labels", status_code=202, response_model=IngestResponse, responses=responses, openapi_extra=_BODY)
    async def labels(request: Request) -> JSONResponse:
        return await ingest("labels", request)

    return app
