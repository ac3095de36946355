"""The bench's request-response phase: OIP v2 infer latency from a load client on this
machine, at a fixed request rate, while the stream runs beside it through ingestion,
features and inference; next to a bare River predict of the same rows."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from driftloop.replay import replay
from driftloop.runner import Stack
from driftloop.shared.broker import free_port
from driftloop.shared.kafka import create_topics, produce_all
from driftloop.shared.modelspec import predict
from driftloop.shared.registry import ArtifactStore, registry_key
from driftloop.shared.serde import Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import MODELS_REGISTRY, Topics
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
        streamed = threading.Thread(
            target=lambda: asyncio.run(
                replay(bootstrap, topics, serde, stream, run_id="oip", label_delay=50, rate=stream_rate)
            ),
            daemon=True,
        )
        if stream_rate > 0:
            streamed.start()
            time.sleep(2.0)  # the stream flowing first: its vectors also tell inference the inputs
        latencies, errors = asyncio.run(_load(base, path, bodies, request_rate))
        if stream_rate > 0:
            streamed.join(timeout=seconds + 60)
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
