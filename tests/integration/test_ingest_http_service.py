"""HTTP ingest on the running services, with a real HTTP client: the README's curl examples
as written; events posted one and many at a time reach events.clean and get the champion's
prediction under the event ids the 202 returned; labels posted for them become Outcomes;
invalid records are answered 400 with their codes and get the very dead letters that the same
bytes produced to events.raw with aiokafka get; a huge body, a malformed one and a slow one
are refused with their code, and the service stays ready and keeps ingesting."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from waiting import fuzz_openapi, read_values, readme_curls, wait_until

from driftloop.bench import _slice_models, _version
from driftloop.runner import Stack
from driftloop.shared.broker import Broker
from driftloop.shared.kafka import produce_all
from driftloop.shared.registry import ArtifactStore, registry_key
from driftloop.shared.serde import Serde
from driftloop.shared.topics import DEADLETTER, EVENTS_CLEAN, EVENTS_RAW, MODELS_REGISTRY, OUTCOMES, PREDICTIONS, Topics
from driftloop.streams import sea_stream

#: Of a dead letter, what does not depend on when and where the record was consumed.
SAME = ("original_key", "original_value", "source_topic", "service", "error_code", "error_message", "event_id")


def _slow_body(port: int) -> bytes:
    """The answer to a request whose body never arrives whole."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = b""
        while not answer.endswith(b"}") and (chunk := sock.recv(4096)):  # head and body may come apart
            answer += chunk
        return answer


def test_http_ingest_flows_through_the_stream_and_dead_letters_as_kafka_does(
    broker: Broker, topics: Topics, serde: Serde, service_env: dict[str, str], tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    store = ArtifactStore(service_env["DRIFTLOOP_ARTIFACT_STORE"])
    (model,) = _slice_models(sea_stream(2000), 1)
    v1 = _version(store, model, 1, "champion", "test: the champion", "logreg")
    registry = [(topics.name(MODELS_REGISTRY), registry_key(v1["name"], 1), serde.encode(MODELS_REGISTRY, v1))]
    asyncio.run(produce_all(bootstrap, registry))
    port = int(service_env["DRIFTLOOP_INGESTION_HTTP_PORT"])
    env = {**service_env, "DRIFTLOOP_INGESTION_HTTP_BODY_TIMEOUT_S": "1"}
    stack = Stack(env=env, log_dir=tmp_path / "logs", services=("ingestion", "features", "inference", "monitoring"))
    try:
        stack.start()
        stack.wait_ready()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            wait_until("HTTP ingest ready", lambda: client.get("/v1/health/ready").status_code == 200, 60, stack.check)
            assert client.get("/v1/health/live").json() == {"live": True}

            # The README's curl examples, as written, against this service's port.
            for command in readme_curls("HTTP ingest", 3, 8081, port):
                res = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
                assert res.returncode == 0, (command, res.stdout, res.stderr)
                assert "error" not in json.loads(res.stdout), (command, res.stdout)

            # Events, one and then many at a time: 202 with their event ids.
            now = int(time.time() * 1000)
            rows = sea_stream(20, seed=5).rows
            events = [
                {"event_id": f"h-{i}", "entity_id": f"c{i % 3}", "event_time": now, "fields": fields}
                for i, (fields, _) in enumerate(rows)
            ]
            one = client.post("/v1/events", json=events[0])
            many = client.post("/v1/events", json=events[1:])
            assert one.status_code == 202 and many.status_code == 202, (one.text, many.text)
            answered = [r["event_id"] for a in (one, many) for r in a.json()["results"]]
            ids = [e["event_id"] for e in events]
            assert answered == ids

            def champion_predictions() -> list[dict[str, Any]] | None:
                preds = read_values(bootstrap, topics.name(PREDICTIONS), serde, "Prediction")
                found = [p for p in preds if p["event_id"] in ids and p["role"] == "champion"]
                return found if len(found) >= len(ids) else None

            preds = wait_until("the posted events' predictions", champion_predictions, 60, stack.check)
            assert sorted(p["event_id"] for p in preds) == sorted(ids) and {p["model_version"] for p in preds} == {1}
            clean = read_values(bootstrap, topics.name(EVENTS_CLEAN), serde, "RawEvent")
            assert {e["event_id"]: e["fields"] for e in clean if e["event_id"] in ids} == {
                e["event_id"]: e["fields"] for e in events
            }

            # Labels for them close the loop.
            labels = [
                {"event_id": e["event_id"], "entity_id": e["entity_id"], "label": y, "label_time": now + 1}
                for e, (_, y) in zip(events, rows, strict=True)
            ]
            labelled = client.post("/v1/labels", json=labels)
            assert labelled.status_code == 202, labelled.text

            def outcomes() -> list[dict[str, Any]] | None:
                found = [
                    o
                    for o in read_values(bootstrap, topics.name(OUTCOMES), serde, "Outcome")
                    if o["event_id"] in ids and o["role"] == "champion"
                ]
                return found if len(found) >= len(ids) else None

            assert len(wait_until("the posted labels' outcomes", outcomes, 60, stack.check)) == len(ids)

            # Invalid records: 400 with their codes, and the dead letters the Kafka path gives.
            stale = now - 8 * 24 * 3600 * 1000
            invalid: list[tuple[bytes, bytes | None, str]] = [
                (b'{"entity_id": "c1", "event_time": %d, "fields": {}}' % now, b"c1", "missing_field"),
                (b'{"event_id": "bad-2", "entity_id": "c1", "event_time": "now", "fields": {}}', b"c1", "wrong_type"),
                (
                    b'{"event_id": "bad-3", "entity_id": "c2", "event_time": %d, "fields": {"x0": NaN}}' % now,
                    b"c2",
                    "non_finite_number",
                ),
                (b'{"event_id": "bad-4", "entity_id": "c0", "event_time": %d, "fields": {}}' % stale, b"c0", "too_old"),
                (
                    b'{"event_id": "bad-5", "entity_id": "c0", "event_time": %d, "fields": {"x0": [1]}}' % now,
                    b"c0",
                    "wrong_type",
                ),
                (b"[1, 2]", None, "decode_error"),
            ]
            good = {"event_id": "h-after", "entity_id": "c0", "event_time": now, "fields": rows[0][0]}
            body = b"[" + b",\n".join(data for data, _, _ in invalid) + b", " + json.dumps(good).encode() + b"]"
            rejected = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
            assert rejected.status_code == 400, rejected.text
            res = rejected.json()
            assert (res["accepted"], res["rejected"], res["code"]) == (1, len(invalid), "missing_field")
            assert [r.get("code") for r in res["results"]] == [code for _, _, code in invalid] + [None]
            assert res["results"][1]["event_id"] == "bad-2" and res["results"][-1]["status"] == "accepted"
            kafka = [(topics.name(EVENTS_RAW), key, data) for data, key, _ in invalid]
            asyncio.run(produce_all(bootstrap, kafka))

            def letters() -> list[dict[str, Any]] | None:
                sent = {data for data, _, _ in invalid}
                found = [
                    d
                    for d in read_values(bootstrap, topics.name(DEADLETTER), serde, "DeadLetter")
                    if d["original_value"] in sent
                ]
                return found if len(found) >= 2 * len(invalid) else None

            dead = wait_until("the dead letters of both paths", letters, 60, stack.check)
            assert len(dead) == 2 * len(invalid), dead
            for data, _, code in invalid:
                pair = [d for d in dead if d["original_value"] == data]
                assert len(pair) == 2 and pair[0]["error_code"] == code, pair
                # A too_old message names the record's age when it was read.
                fields = [f for f in SAME if not (code == "too_old" and f == "error_message")]
                assert {f: pair[0][f] for f in fields} == {f: pair[1][f] for f in fields}, pair

            # Bad bodies: refused with a code, nothing written, and the service goes on.
            huge = client.post("/v1/events", content=b"[" + b"1," * 600_000 + b"1]")
            assert huge.status_code == 413 and huge.json()["code"] == "body_too_large", huge.text
            malformed = client.post("/v1/labels", content=b'{"event_id": "x", ')
            assert malformed.status_code == 400 and malformed.json()["code"] == "invalid_request"
            empty = client.post("/v1/events", json=[])
            assert empty.status_code == 400 and empty.json()["code"] == "invalid_request"
            slow = _slow_body(port)
            assert slow.startswith(b"HTTP/1.1 408") and b"request_timeout" in slow, slow
            assert client.get("/v1/health/ready").status_code == 200, "bad requests stopped the server"
            # Generated requests from the OpenAPI document: no 5xx, no crash, no stall.
            assert fuzz_openapi(f"http://127.0.0.1:{port}", tmp_path) >= 50
            assert client.get("/v1/health/ready").status_code == 200, "generated requests stopped the server"
            last = {"event_id": "h-last", "entity_id": "c1", "event_time": now, "fields": rows[1][0]}
            assert client.post("/v1/events", json=last).status_code == 202

        def cleaned() -> bool:
            clean = read_values(bootstrap, topics.name(EVENTS_CLEAN), serde, "RawEvent")
            return {"h-after", "h-last"} <= {e["event_id"] for e in clean}

        wait_until("the valid events of a rejected body, and one after the bad bodies, on events.clean", cleaned, 60)
        stack.check()
    finally:
        stack.stop_services()
