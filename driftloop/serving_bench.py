"""The bench's request-response phases: OIP v2 infer latency from a load client on this
machine, at a fixed request rate, while the stream runs beside it through ingestion,
features and inference, next to a bare River predict of the same rows; and HTTP ingest
throughput, next to aiokafka producing the same records."""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from driftloop.replay import replay
from driftloop.runner import Stack
from driftloop.shared.broker import free_port
from driftloop.shared.kafka import create_topics, produce_all, producer
from driftloop.shared.modelspec import predict
from driftloop.shared.registry import ArtifactStore, registry_key
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import EVENTS_RAW, MODELS_REGISTRY, Topics
from driftloop.streams import Dataset, numeric
from driftloop.summary import percentile

WARM_UP_REQUESTS = 300


def _request(x: dict[str, float], i: int) -> dict[str, Any]:
    inputs = [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in x.items()]
    return {"id": f"bench-{i}", "inputs": inputs}


async def _load(base: str, path: str, bodies: list[dict[str, Any]], rate: float) -> tuple[list[float], int]:
    """Each request sent at its time on a fixed schedule (open loop: a slow answer does not
    slow the load), over a pool of kept-alive connections; latencies in ms, and the errors."""
    latencies: list[float] = []
    errors = 0
    payloads = [orjson.dumps(b) for b in bodies]
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:
        for body in payloads[:WARM_UP_REQUESTS]:  # connections opened, code paths warm
            async with session.post(path, data=body, headers=headers) as r:
                await r.read()

        async def one(body: bytes) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                async with session.post(path, data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(1000 * (time.perf_counter() - started))
            else:
                errors += 1

        t0 = time.perf_counter()
        tasks = []
        for i, body in enumerate(payloads[WARM_UP_REQUESTS:]):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return latencies, errors


def _replay_stream(
    bootstrap: str, prefix: str, partitions: int, schema_dir: Path, stream: Dataset, rate: float
) -> None:
    """The stream beside the load, in a process of its own: in the load client's process it
    would share that interpreter's lock and add its own work to the latencies measured."""
    serde = Serde(FileSchemaRegistry(schema_dir))
    asyncio.run(replay(bootstrap, Topics(prefix, partitions), serde, stream, run_id="oip", label_delay=50, rate=rate))


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bool(r.status == 200)
    except OSError:  # refused before the port is bound; 503 (an HTTPError) before a champion
        return False


def oip_latency(
    bootstrap: str,
    out_dir: Path,
    serde: Serde,
    dataset: Dataset,
    model: Any,
    *,
    request_rate: float,
    stream_rate: float,
    seconds: float,
) -> dict[str, Any]:
    """Infer latency of one-row OIP requests at ``request_rate`` for ``seconds``, with the
    stream replayed at ``stream_rate`` through ingestion, features and inference meanwhile;
    ``model`` is the champion (registered before the services start)."""
    from driftloop.bench import _phase_env, _version  # the bench's own helpers

    common = CommonSettings()
    http_port = free_port()
    services = ("ingestion", "features", "inference")
    env = _phase_env(
        bootstrap,
        "oip",
        DRIFTLOOP_ARTIFACT_STORE=f"file://{(out_dir / 'artifacts').resolve()}",
        DRIFTLOOP_INFERENCE_HTTP_PORT=str(http_port),
        **{f"DRIFTLOOP_{svc.upper()}_METRICS_PORT": str(free_port()) for svc in services},
    )
    topics = Topics(env["DRIFTLOOP_TOPIC_PREFIX"], common.partitions)
    asyncio.run(create_topics(bootstrap, topics.catalogue()))
    first = _version(ArtifactStore(env["DRIFTLOOP_ARTIFACT_STORE"]), model, 1, "champion", "bench: OIP", "logreg")
    asyncio.run(
        produce_all(
            bootstrap,
            [(topics.name(MODELS_REGISTRY), registry_key(first["name"], 1), serde.encode(MODELS_REGISTRY, first))],
        )
    )
    xs = [numeric(fields) for fields, _ in dataset.rows]
    n = int(request_rate * seconds)
    bodies = [_request(xs[i % len(xs)], i) for i in range(n + WARM_UP_REQUESTS)]
    stream_n = int(stream_rate * (seconds + 5))
    stream = Dataset(dataset.name, [dataset.rows[i % len(dataset.rows)] for i in range(stream_n)], [])
    base, path = f"http://127.0.0.1:{http_port}", f"/v2/models/{common.model_name}/infer"
    with Stack(env=env, log_dir=out_dir / "logs", services=services) as stack:
        stack.wait_ready()
        deadline = time.monotonic() + 60
        while not _ready(f"{base}/v2/health/ready"):
            stack.check()
            if time.monotonic() > deadline:
                raise TimeoutError("inference's OIP endpoint was not ready within 60 s")
            time.sleep(0.2)
        streamed = multiprocessing.get_context("spawn").Process(
            target=_replay_stream,
            args=(bootstrap, topics.prefix, topics.partitions, serde.registry.schema_dir, stream, stream_rate),
            daemon=True,
        )
        if stream_rate > 0:
            streamed.start()
            time.sleep(3.0)  # the stream flowing first (a spawned interpreter starts in ~1 s)
        try:
            latencies, errors = asyncio.run(_load(base, path, bodies, request_rate))
        finally:
            if stream_rate > 0:
                streamed.join(timeout=seconds + 60)
                if streamed.is_alive():
                    streamed.kill()
    bare = []
    for x in (xs[i % len(xs)] for i in range(n)):
        started = time.perf_counter()
        predict(model, x)
        bare.append(1000 * (time.perf_counter() - started))
    return {
        "oip_requests_per_second_offered": request_rate,
        "oip_stream_events_per_second": stream_rate,
        "oip_requests": n,
        "oip_errors": errors,
        "oip_p50_latency_ms": percentile(latencies, 50),
        "oip_p99_latency_ms": percentile(latencies, 99),
        "bare_predict_p50_ms": percentile(bare, 50),
        "bare_predict_p99_ms": percentile(bare, 99),
    }


def http_ingest(bootstrap: str, out_dir: Path, dataset: Dataset, n: int, batch: int = 100) -> dict[str, float]:
    """Ingestion alone: ``n`` events posted to POST /v1/events in bodies of ``batch`` records,
    one request at a time (each answered once its records are on events.raw), and the same
    JSON records produced with aiokafka to events.raw, ``batch`` at a time, each batch waited
    for (acks=all, linger 0, as the service's own producer), while the service consumes both."""
    from driftloop.bench import _phase_env, cycled  # the bench's own helpers

    port = free_port()
    env = _phase_env(
        bootstrap,
        "http-ingest",
        DRIFTLOOP_INGESTION_METRICS_PORT=str(free_port()),
        DRIFTLOOP_INGESTION_HTTP_PORT=str(port),
    )
    topics = Topics(env["DRIFTLOOP_TOPIC_PREFIX"], CommonSettings().partitions)
    rows = cycled(dataset, n).rows
    now = int(time.time() * 1000)

    def records(prefix: str) -> list[tuple[bytes, bytes]]:
        return [
            (
                f"e{i % 97}".encode(),
                json.dumps(
                    {"event_id": f"{prefix}-{i}", "entity_id": f"e{i % 97}", "event_time": now, "fields": fields}
                ).encode(),
            )
            for i, (fields, _) in enumerate(rows)
        ]

    def post_all(conn: http.client.HTTPConnection, recs: list[tuple[bytes, bytes]]) -> None:
        for i in range(0, len(recs), batch):
            conn.request("POST", "/v1/events", b"[" + b",".join(v for _, v in recs[i : i + batch]) + b"]")
            res = conn.getresponse()
            body = res.read()
            if res.status != 202:
                raise RuntimeError(f"HTTP ingest answered {res.status}: {body[:300]!r}")

    async def produce_all_batched(recs: list[tuple[bytes, bytes]]) -> float:
        prod = producer(bootstrap, linger_ms=0, enable_idempotence=CommonSettings().idempotent_producers)
        await prod.start()
        try:
            topic = topics.name(EVENTS_RAW)
            await prod.partitions_for(topic)  # metadata fetched before the clock
            started = time.perf_counter()
            for i in range(0, len(recs), batch):
                futures = [await prod.send(topic, value, key=key) for key, value in recs[i : i + batch]]
                await asyncio.gather(*futures)
            return len(recs) / (time.perf_counter() - started)
        finally:
            await prod.stop()

    over_http, over_kafka = records("h"), records("k")
    with Stack(env=env, log_dir=out_dir / "logs", services=("ingestion",)) as stack:
        stack.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn.request("GET", "/v1/health/ready")
                    res = conn.getresponse()
                    res.read()
                    if res.status == 200:
                        break
                except OSError:
                    conn.close()
                if time.monotonic() > deadline:
                    raise TimeoutError("HTTP ingest not ready within 30 s")
                time.sleep(0.2)
            post_all(conn, records("warm")[: 5 * batch])  # the connection and the service's first sends
            started = time.perf_counter()
            post_all(conn, over_http)
            http_rate = n / (time.perf_counter() - started)
        finally:
            conn.close()
        kafka_rate = asyncio.run(produce_all_batched(over_kafka))
        stack.check()
    return {
        "http_ingest_events_per_second": http_rate,
        "aiokafka_produce_events_per_second": kafka_rate,
        "http_ingest_ratio_to_aiokafka": http_rate / kafka_rate,
    }
