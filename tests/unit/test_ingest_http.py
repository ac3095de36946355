"""HTTP ingest (services/ingestion/http.py): bodies split into the bytes of their records,
each record judged as the Kafka path judges it, and the endpoints' answers through the ASGI
app in-process, with a fake API and with the ingestion shell itself, whose raw records then
fed to its own Kafka handler give the dead letters the answer named."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from driftloop.services.ingestion import http
from driftloop.services.ingestion.app import Ingestion
from driftloop.services.ingestion.validate import Limits, validate_event, validate_label
from driftloop.shared import http as shared_http
from driftloop.shared.runtime import Service
from driftloop.shared.runtime.testing import Harness
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings, IngestionSettings
from driftloop.shared.topics import EVENTS_CLEAN, EVENTS_RAW, LABELS_CLEAN, LABELS_RAW

NOW = int(time.time() * 1000)
SERDE = Serde(FileSchemaRegistry(CommonSettings().schema_dir))


def event(i: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "entity_id": f"u{i % 2}", "event_time": NOW, "fields": fields or {"x": 1.5}}


def label(i: int) -> dict[str, Any]:
    return {"event_id": f"e{i}", "entity_id": f"u{i % 2}", "label": 1, "label_time": NOW}


# --- the pure core -----------------------------------------------------------------------------


def test_a_body_splits_into_the_bytes_each_record_was_sent_as() -> None:
    assert http.split_body(b' {"a": 1} \n', 10) == [b'{"a": 1}']
    body = b'[ {"a": [1, 2]} ,{"b": "x,]"},\n 7 , "s" ]'
    assert http.split_body(body, 10) == [b'{"a": [1, 2]}', b'{"b": "x,]"}', b"7", b'"s"']
    assert http.split_body('[{"k": "é\\ud800"}]'.encode(), 10) == ['{"k": "é\\ud800"}'.encode()]


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        (b"{not json", "invalid_request", "not JSON"),
        (b"", "invalid_request", "object"),
        (b"[]", "invalid_request", "no record"),
        (b'"a string"', "invalid_request", "object"),
        (b"42", "invalid_request", "object"),
        (b'{"a": 1} {"b": 2}', "invalid_request", "goes on"),
        (b'[{"a": 1} {"b": 2}]', "invalid_request", "malformed"),
        (b'[{"a": 1},]', "invalid_request", "not JSON"),
        (b'[{"a": 1}', "invalid_request", "malformed"),
        (b"\xff\xfe{}", "invalid_request", "UTF-8"),
        (b"[" * 100_000, "invalid_request", "not JSON"),
        (b"[" + b"{}," * 10 + b"{}]", "too_many_records", "more than 10"),
    ],
)
def test_a_body_that_holds_no_records_is_refused_whole(body: bytes, code: str, says: str) -> None:
    with pytest.raises(shared_http.HttpError) as err:
        http.split_body(body, 10)
    assert err.value.code == code and err.value.status == 400 and says in str(err.value), str(err.value)


EVENTS = http.Checks("RawEvent", validate_event, Limits(), SERDE)


@pytest.mark.parametrize(
    ("record", "code", "event_id", "key"),
    [
        (json.dumps(event(1)).encode(), None, "e1", b"u1"),
        (json.dumps({**event(1), "event_id": None}).encode(), "missing_field", None, b"u1"),
        (json.dumps({**event(1), "event_id": 7}).encode(), "wrong_type", None, b"u1"),
        (json.dumps({**event(2), "event_time": "today"}).encode(), "wrong_type", "e2", b"u0"),
        (json.dumps({**event(1), "fields": {"x": {"nested": 1}}}).encode(), "wrong_type", "e1", b"u1"),
        (json.dumps(event(1, x=float("nan"))).encode(), "non_finite_number", "e1", b"u1"),
        (json.dumps({**event(1), "event_time": NOW - 8 * 24 * 3600 * 1000}).encode(), "too_old", "e1", b"u1"),
        (b"[1]", "decode_error", None, None),
        (b'{"event_id": "\\ud800", "entity_id": "u"}', "wrong_type", None, b"u"),
    ],
)
def test_a_record_is_judged_as_the_kafka_path_judges_it(
    record: bytes, code: str | None, event_id: str | None, key: bytes | None
) -> None:
    screened = http.screen(record, EVENTS, NOW)
    assert (screened.error.code if screened.error else None) == code, screened.error
    assert screened.event_id == event_id and screened.key == key and screened.data == record


# --- the endpoints, with a fake API -----------------------------------------------------------


class FakeApi:
    max_records = 10

    def __init__(self) -> None:
        self.ready = True
        self.written: list[tuple[str, bytes | None, bytes]] = []
        self.fail = False

    def checks(self, kind: http.Kind) -> http.Checks:
        return EVENTS if kind == "events" else http.Checks("Label", validate_label, Limits(), SERDE)

    async def produce(self, kind: http.Kind, records: Sequence[http.Screened]) -> None:
        if self.fail:
            raise http.NotDelivered("the broker is away")
        self.written += [(kind, r.key, r.data) for r in records]


def _client(api: Any, max_bytes: int = 10_000, timeout_s: float = 5.0) -> httpx.AsyncClient:
    app = shared_http.guarded(http.build_app(api, shared_http.HttpMetrics(CollectorRegistry())), max_bytes, timeout_s)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _calls(api: FakeApi) -> dict[str, httpx.Response]:
    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(30):
            yield b"[" * 500

    async def slow() -> AsyncIterator[bytes]:
        yield b"["
        await asyncio.sleep(1.0)
        yield b"]"

    mixed = b"[%s, %s, 17, %s]" % (
        json.dumps(event(1)).encode(),
        json.dumps({"entity_id": "u", "event_time": NOW, "fields": {}}).encode(),
        json.dumps(event(3, x=float("nan"))).encode(),
    )
    async with _client(api) as c:
        out = {
            "live": await c.get("/v1/health/live"),
            "ready": await c.get("/v1/health/ready"),
            "one": await c.post("/v1/events", json=event(1)),
            "array": await c.post("/v1/events", json=[event(2), event(3)]),
            "label": await c.post("/v1/labels", json=label(1)),
            "mixed": await c.post("/v1/events", content=mixed),
            "label missing": await c.post("/v1/labels", json={**label(2), "label": None}),
            "malformed": await c.post("/v1/events", content=b'{"event_id": '),
            "too many": await c.post("/v1/events", json=[event(i) for i in range(11)]),
            "too large": await c.post("/v1/events", content=b"[" + b"1," * 6000 + b"1]"),
            "too large, chunked": await c.post("/v1/events", content=chunked()),
            "openapi": await c.get("/openapi.json"),
            "wrong method": await c.get("/v1/events"),
        }
        api.fail = True
        out["unwritten"] = await c.post("/v1/events", json=event(4))
        api.fail, api.ready = False, False
        out |= {
            "ready, stopping": await c.get("/v1/health/ready"),
            "stopping": await c.post("/v1/events", json=event(5)),
        }
    async with _client(api, timeout_s=0.2) as c:
        api.ready = True
        out["slow"] = await c.post("/v1/events", content=slow())
    return out


def test_the_endpoints_answer_with_status_code_and_event_ids() -> None:
    api = FakeApi()
    calls = asyncio.run(_calls(api))
    assert calls["live"].json() == {"live": True} and calls["ready"].json() == {"ready": True}
    assert calls["one"].status_code == 202, calls["one"].text
    assert calls["one"].json() == {
        "accepted": 1,
        "rejected": 0,
        "results": [{"index": 0, "event_id": "e1", "status": "accepted"}],
    }
    assert calls["array"].status_code == 202
    assert [r["event_id"] for r in calls["array"].json()["results"]] == ["e2", "e3"]
    assert calls["label"].status_code == 202 and calls["label"].json()["results"][0]["event_id"] == "e1"

    mixed = calls["mixed"]
    assert mixed.status_code == 400, mixed.text
    body = mixed.json()
    assert (body["accepted"], body["rejected"], body["code"]) == (1, 3, "missing_field")
    assert "accepted" in body["error"]
    assert [(r["index"], r.get("event_id"), r["status"], r.get("code")) for r in body["results"]] == [
        (0, "e1", "accepted", None),
        (1, None, "rejected", "missing_field"),
        (2, None, "rejected", "decode_error"),
        (3, "e3", "rejected", "non_finite_number"),
    ]
    assert calls["label missing"].status_code == 400 and calls["label missing"].json()["code"] == "missing_field"

    # Every record of a body with records was written, the invalid ones too (ingestion
    # dead-letters them), keyed by its entity, as the bytes it was sent as.
    assert [(k, key) for k, key, _ in api.written] == [
        ("events", b"u1"),
        ("events", b"u0"),
        ("events", b"u1"),
        ("labels", b"u1"),
        ("events", b"u1"),
        ("events", b"u"),
        ("events", None),
        ("events", b"u1"),
        ("labels", b"u0"),
    ]
    assert api.written[6][2] == b"17" and b"NaN" in api.written[7][2]

    for what, status, code in (
        ("malformed", 400, "invalid_request"),
        ("too many", 400, "too_many_records"),
        ("too large", 413, "body_too_large"),
        ("too large, chunked", 413, "body_too_large"),
        ("slow", 408, "request_timeout"),
        ("unwritten", 503, "produce_failed"),
        ("stopping", 503, "not_ready"),
    ):
        assert calls[what].status_code == status and calls[what].json()["code"] == code, (what, calls[what].text)
    assert calls["ready, stopping"].status_code == 503 and calls["ready, stopping"].json() == {"ready": False}
    assert calls["wrong method"].status_code == 405
    paths = calls["openapi"].json()["paths"]
    assert {"/v1/events", "/v1/labels", "/v1/health/live", "/v1/health/ready"} <= set(paths)
    assert "requestBody" in paths["/v1/events"]["post"]
    assert len(api.written) == 9, "a refused body wrote records"


# --- the endpoints on the ingestion shell: the same result as the Kafka path ----------------


class ShellApi:
    """The ingestion shell as the endpoints' API, ready without a running server."""

    def __init__(self, shell: Ingestion) -> None:
        self.shell, self.ready = shell, True
        self.max_records = shell.max_records
        self.checks = shell.checks
        self.produce = shell.produce


def test_posted_records_reach_the_raw_topic_and_get_the_kafka_paths_dead_letters() -> None:
    svc = Service("ingestion", IngestionSettings(metrics_port=0, http_port=0), CommonSettings())
    shell = Ingestion(svc)
    h = Harness(svc)
    stale = {**event(4), "event_time": NOW - 8 * 24 * 3600 * 1000}
    events = [event(1), {"entity_id": "u", "fields": {}}, event(2, x=float("inf")), stale, event(5)]

    async def post() -> tuple[httpx.Response, httpx.Response]:
        async with _client(ShellApi(shell)) as c:
            body = "[" + ",".join(json.dumps(e) for e in events) + "]"  # Infinity: as json.dumps writes it
            return await c.post("/v1/events", content=body), await c.post("/v1/labels", json=label(1))

    answer, labelled = asyncio.run(post())
    assert answer.status_code == 400 and labelled.status_code == 202
    codes = [r.get("code") for r in answer.json()["results"]]
    assert codes == [None, "missing_field", "non_finite_number", "too_old", None]
    raw, raw_labels = h.raw(EVENTS_RAW), h.raw(LABELS_RAW)
    assert [key for _, key, _, _ in raw] == [b"u1", b"u", b"u0", b"u0", b"u1"]
    assert [key for _, key, _, _ in raw_labels] == [b"u1"]

    # What HTTP wrote, consumed as ingestion consumes any producer's records.
    h.produced.clear()
    asyncio.run(h.feed(EVENTS_RAW, *[value for _, _, value, _ in raw]))
    asyncio.run(h.feed(LABELS_RAW, *[value for _, _, value, _ in raw_labels]))
    assert [e["event_id"] for e in h.sent(EVENTS_CLEAN)] == ["e1", "e5"]
    assert h.codes() == [c for c in codes if c]
    assert [d["original_value"] for d in h.dead_letters()] == [raw[i][2] for i in (1, 2, 3)]
    assert [lb["event_id"] for lb in h.sent(LABELS_CLEAN)] == ["e1"]
    assert h.svc.metrics.registry.get_sample_value(
        "driftloop_http_ingest_records_total", {"kind": "events", "status": "rejected"}
    ) == pytest.approx(3)
