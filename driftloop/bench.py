"""`driftloop bench`: throughput, latency and loop quality, each next to a bare baseline
measured in the same run on the same machine.

Phases, each on fresh topics of one broker:
1. baselines: a bare aiokafka consume->produce passthrough (the transport ceiling) and a
   bare River prequential run of the same model spec with the same label delay in one
   process (the quality reference and the compute floor);
2. saturation: the five services at full speed over N events (after a short unmeasured
   run that warms the broker's JVM), at exactly-once, again at at-least-once, and with two
   instances of each scalable service;
3. latency: the five services at a fixed offered load, paced;
4. ingestion + features alone, and inference alone (its throughput next to a bare predict
   loop; its latency at the offered load while the registry swaps its champion);
5. monitoring: the monitoring service alone over N prepared events with 6 features,
   next to a bare loop of the same detectors.
Nothing here is asserted against a target: the figures are printed and written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from driftloop.demo import run_demo
from driftloop.runner import SCALABLE_SERVICES, Stack
from driftloop.services.monitoring.core import Monitor
from driftloop.serving_bench import http_ingest, oip_latency
from driftloop.shared.broker import Broker, free_port, start_local_broker
from driftloop.shared.kafka import create_topics, produce_all, produce_batched, producer, read_topic, tail_topic
from driftloop.shared.modelspec import BINARY, REGRESSION, build_model, infer_task, predict, same_class, spec_for_task
from driftloop.shared.registry import ArtifactStore, registry_key, version_record, with_status
from driftloop.shared.registry_client import code_version
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings, MonitoringSettings
from driftloop.shared.topics import (
    EVENTS_CLEAN,
    EVENTS_RAW,
    FEATURES,
    LABELS_CLEAN,
    MODELS_REGISTRY,
    PREDICTIONS,
    Topics,
)
from driftloop.streams import Dataset, load_dataset, monitoring_stream, numeric
from driftloop.summary import accuracy, bare_prequential, errors_of, mae, percentile, prediction_gaps_ms, rmse

WARM_UP_EVENTS = 3000
OIP_REQUESTS_PER_SECOND = 500
OIP_SECONDS = 10.0


def _phase_env(bootstrap: str, name: str, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTLOOP_TOPIC_PREFIX": f"bench-{name}-{uuid.uuid4().hex[:6]}.",
        **extra,
    }


# --- baselines ------------------------------------------------------------------------------------


async def passthrough(bootstrap: str, serde: Serde, n: int, partitions: int) -> float:
    """Bare aiokafka: consume n RawEvent records and produce each to another topic; events/s."""
    topics = Topics(f"bench-pass-{uuid.uuid4().hex[:6]}.", partitions)
    await create_topics(bootstrap, topics.catalogue())
    now = int(time.time() * 1000)
    prod = producer(bootstrap)
    await prod.start()
    try:
        for i in range(n):
            value = serde.encode(
                "RawEvent",
                {
                    "event_id": f"p-{i}",
                    "entity_id": f"e{i % 97}",
                    "event_time": now,
                    "fields": {f"x{k}": random.random() for k in range(6)},
                    "ingest_time": None,
                },
            )
            await prod.send(topics.name(EVENTS_RAW), key=f"e{i % 97}".encode(), value=value)
        await prod.flush()
        started, moved = time.perf_counter(), 0
        async for batch in tail_topic(bootstrap, topics.name(EVENTS_RAW), poll_ms=50, max_wait_s=300):
            for rec in batch:
                await prod.send(topics.name(EVENTS_CLEAN), key=rec.key, value=rec.value)
            moved += len(batch)
            if moved >= n:
                break
        await prod.flush()
        return n / (time.perf_counter() - started)
    finally:
        await prod.stop()


def task_of(dataset: Dataset) -> str:
    """The task the dataset's labels call for, as retraining infers it."""
    return infer_task((y for _, y in dataset.rows if y is not None), final=True) or BINARY


def bare_river(dataset: Dataset, spec: str, seed: int, label_delay: int) -> tuple[dict[str, float | None], float]:
    """Prequential run in one process with the same label delay, the spec in the dataset's
    task form (the demo's summary runs the same loop): (its figures, events/s). A classifier's
    figure is its accuracy, a regressor's its MAE and RMSE."""
    task = task_of(dataset)
    model = build_model(spec_for_task(spec, task), seed, task)
    started = time.perf_counter()
    predicted = bare_prequential(dataset.rows, label_delay, model, task)
    rate = len(dataset.rows) / (time.perf_counter() - started)
    triples = [(i, p, y) for i, (p, (_, y)) in enumerate(zip(predicted, dataset.rows, strict=True)) if y is not None]
    if task == REGRESSION:
        errors = errors_of(triples)
        return {"bare_river_mae": mae(errors), "bare_river_rmse": rmse(errors)}, rate
    return {"bare_river_accuracy": accuracy([(i, same_class(p, y)) for i, p, y in triples])}, rate


# --- monitoring ---------------------------------------------------------------------------------


def bare_monitor(stream: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]) -> float:
    """The monitoring core alone, same detectors as the service's defaults: predictions/s."""
    from driftloop.services.monitoring.core import outcome

    monitor = Monitor.from_settings(MonitoringSettings())
    started = time.perf_counter()
    for vector, prediction, label in stream:
        monitor.on_vector(vector)
        monitor.on_prediction(prediction)
        monitor.on_outcome(outcome(prediction, label))
    return len(stream) / (time.perf_counter() - started)


Records = Callable[[Topics], Iterator[tuple[str, bytes, bytes]]]


def isolated_rate(
    bootstrap: str,
    out_dir: Path,
    services: tuple[str, ...],
    records: Records,
    output: str,
    expected: int,
    env_extra: dict[str, str] | None = None,
    before: Callable[[Topics, dict[str, str]], None] | None = None,
) -> float:
    """Records/s of ``services`` alone: they start, join and recover first; then ``records``,
    encoded beforehand, are offered in one burst (``produce_batched``), and the clock runs from the
    first record offered to the ``expected``-th record on ``output``."""
    env = _phase_env(
        bootstrap,
        "-".join(services),
        DRIFTLOOP_ARTIFACT_STORE=f"file://{(out_dir / 'artifacts').resolve()}",
        **{f"DRIFTLOOP_{svc.upper()}_METRICS_PORT": str(free_port()) for svc in services},
        **(env_extra or {}),
    )
    topics = Topics(env["DRIFTLOOP_TOPIC_PREFIX"], CommonSettings().partitions)

    async def until_done(stack: Stack) -> float:
        seen, last = 0, 0.0
        async for batch in tail_topic(bootstrap, topics.name(output), poll_ms=50, max_wait_s=600):
            stack.check()
            last = max([last] + [r.timestamp / 1000 for r in batch])
            seen += len(batch)
            if seen >= expected:
                return last
        raise TimeoutError(f"{', '.join(services)} produced {seen} of {expected} records on {output}")

    asyncio.run(create_topics(bootstrap, topics.catalogue()))
    if before is not None:
        before(topics, env)
    offered = list(records(topics))  # encoded before the clock starts
    with Stack(env=env, log_dir=out_dir / "logs", services=services) as stack:
        stack.wait_ready()
        started = time.time()
        asyncio.run(produce_batched(bootstrap, offered))
        last = asyncio.run(until_done(stack))
    return expected / (last - started)


def monitoring_records(serde: Serde, stream: list) -> Records:
    def records(topics: Topics) -> Iterator[tuple[str, bytes, bytes]]:
        for vector, prediction, label in stream:
            key = vector["entity_id"].encode()
            yield topics.name(FEATURES), key, serde.encode(FEATURES, vector)
            yield topics.name(PREDICTIONS), key, serde.encode(PREDICTIONS, prediction)
            yield topics.name(LABELS_CLEAN), key, serde.encode(LABELS_CLEAN, label)

    return records


def raw_event_records(serde: Serde, dataset: Dataset) -> Records:
    def records(topics: Topics) -> Iterator[tuple[str, bytes, bytes]]:
        now = int(time.time() * 1000)
        for i, (fields, _) in enumerate(dataset.rows):
            entity = f"e{i % 97}"
            event = {"event_id": f"b-{i}", "entity_id": entity, "event_time": now, "fields": fields}
            event["ingest_time"] = None
            yield topics.name(EVENTS_RAW), entity.encode(), serde.encode("RawEvent", event)

    return records


def vector_records(serde: Serde, dataset: Dataset, feature_set_version: str) -> Records:
    def records(topics: Topics) -> Iterator[tuple[str, bytes, bytes]]:
        now = int(time.time() * 1000)
        for i, (fields, _) in enumerate(dataset.rows):
            entity = f"e{i % 97}"
            vector = {
                "event_id": f"b-{i}",
                "entity_id": entity,
                "event_time": now,
                "features": numeric(fields),
                "feature_set_version": feature_set_version,
                "ingest_time": now,
            }
            yield topics.name(FEATURES), entity.encode(), serde.encode(FEATURES, vector)

    return records


def trained_model(dataset: Dataset, spec: str, seed: int) -> Any:
    model = build_model(spec, seed, task_of(dataset))
    for fields, label in dataset.rows:
        model.learn_one(numeric(fields), label)
    return model


def bare_predict(dataset: Dataset, model: Any) -> float:
    """The same model predicting the same vectors in a bare loop: events/s."""
    xs = [numeric(fields) for fields, _ in dataset.rows]
    started = time.perf_counter()
    for x in xs:
        predict(model, x)
    return len(xs) / (time.perf_counter() - started)


def register_champion(bootstrap: str, serde: Serde, model: Any, spec: str) -> Callable[[Topics, dict[str, str]], None]:
    """Before the inference phase: the trained model as the registry's champion (version 1)."""
    common = CommonSettings()

    def before(topics: Topics, env: dict[str, str]) -> None:
        store = ArtifactStore(env["DRIFTLOOP_ARTIFACT_STORE"])
        record = _version(store, model, 1, "champion", "bench: trained on the bench stream", spec)
        value = serde.encode(MODELS_REGISTRY, record)
        asyncio.run(produce_all(bootstrap, [(topics.name(MODELS_REGISTRY), registry_key(common.model_name, 1), value)]))

    return before


def _version(store: ArtifactStore, model: Any, version: int, status: str, reason: str, spec: str) -> dict[str, Any]:
    """A registry record of ``model``, its artifact saved in ``store``."""
    common = CommonSettings()
    return version_record(
        name=common.model_name,
        version=version,
        status=status,
        reason=reason,
        artifact=store.save(common.model_name, version, model),
        parent=None,
        trigger="manual",
        window={"examples": 0},
        params={"spec": spec, "seed": "42", "trained": "true"},
        metrics={},
        feature_set_version=common.feature_set_version,
        code_version=code_version(),
        now_ms=int(time.time() * 1000),
    )


def _slice_models(dataset: Dataset, count: int) -> list[Any]:
    """``count`` different models, so a swap changes what is served: each learned a slice of
    the stream."""
    slice_ = max(1, len(dataset.rows) // count)
    models = []
    task = task_of(dataset)
    for k in range(count):
        model = build_model("logreg", 42, task)
        for fields, label in dataset.rows[k * slice_ : (k + 1) * slice_]:
            model.learn_one(numeric(fields), label)
        models.append(model)
    return models


def _registry_key(record: dict[str, Any]) -> bytes:
    return registry_key(record["name"], record["version"])


async def _paced_vectors(
    prod: Any, topic: str, serde: Serde, xs: list[dict[str, float]], n: int, rate: float, feature_set_version: str
) -> None:
    """``n`` feature vectors at ``rate`` a second, cycling ``xs``."""
    started = time.time()
    pending = []
    for i in range(n):
        ahead = started + i / rate - time.time()
        if ahead > 0:
            await asyncio.sleep(ahead)
        now = int(time.time() * 1000)
        entity = f"e{i % 97}"
        vector = {
            "event_id": f"ip-{i}",
            "entity_id": entity,
            "event_time": now,
            "features": xs[i % len(xs)],
            "feature_set_version": feature_set_version,
            "ingest_time": now,
        }
        value = serde.encode(FEATURES, vector)
        pending.append(await prod.send(topic, key=entity.encode(), value=value))
    await asyncio.gather(*pending)


async def _promotions(
    prod: Any,
    topic: str,
    serde: Serde,
    first: dict[str, Any],
    candidates: list[dict[str, Any]],
    swap_every_s: float,
) -> None:
    """Each candidate registered, then promoted half an interval later (the champion it
    replaces archived), as retraining does."""
    champion = first
    for cand in candidates:
        await asyncio.sleep(swap_every_s / 2)
        await prod.send_and_wait(topic, serde.encode(MODELS_REGISTRY, cand), _registry_key(cand))
        await asyncio.sleep(swap_every_s / 2)
        now = int(time.time() * 1000)
        promoted = {
            **with_status(cand, "champion", "bench: promoted", now),
            "parent_version": champion["version"],
        }
        archived = with_status(champion, "archived", f"superseded by v{cand['version']}", now)
        for r in (promoted, archived):
            await prod.send_and_wait(topic, serde.encode(MODELS_REGISTRY, r), _registry_key(r))
        champion = promoted


async def _champion_predictions(bootstrap: str, topic: str, serde: Serde) -> tuple[list[dict[str, Any]], int]:
    """The first champion prediction of each vector, and how many came again: all of the
    topic, read once the service has stopped (what it sent on its way out included)."""
    first: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for rec in await read_topic(bootstrap, topic):
        p = serde.decode(PREDICTIONS, rec.value)
        if p["role"] == "champion":
            duplicates += p["event_id"] in first
            first.setdefault(p["event_id"], p)
    return [*first.values()], duplicates


def inference_paced(
    bootstrap: str, out_dir: Path, serde: Serde, dataset: Dataset, *, rate: float, n: int, swap_every_s: float
) -> dict[str, Any]:
    """The inference service alone, as the loop runs it (the frozen baseline and every
    candidate predicting in shadow), fed feature vectors paced at ``rate`` while the
    registry changes its champion every ``swap_every_s``: each new version is registered
    as a candidate (inference loads it, checks it and shadows it), then promoted half an
    interval later, as retraining does. Latency runs from a vector's produce time to its
    champion prediction; the swap pause is the longest gap in champion predictions that
    spans a change of version."""
    common = CommonSettings()
    env = _phase_env(
        bootstrap,
        "inference-paced",
        DRIFTLOOP_ARTIFACT_STORE=f"file://{(out_dir / 'artifacts').resolve()}",
        DRIFTLOOP_INFERENCE_METRICS_PORT=str(free_port()),
    )
    topics = Topics(env["DRIFTLOOP_TOPIC_PREFIX"], common.partitions)
    store = ArtifactStore(env["DRIFTLOOP_ARTIFACT_STORE"])
    xs = [numeric(fields) for fields, _ in dataset.rows]
    models = _slice_models(dataset, max(1, int(n / rate / swap_every_s)) + 1)
    candidates = [
        _version(store, m, k + 2, "candidate", "bench: a candidate", "logreg") for k, m in enumerate(models[1:])
    ]
    first = _version(store, models[0], 1, "champion", "bench: the first champion", "logreg")

    async def drive() -> None:
        prod = producer(bootstrap)
        await prod.start()
        try:
            await asyncio.gather(
                _paced_vectors(prod, topics.name(FEATURES), serde, xs, n, rate, common.feature_set_version),
                _promotions(prod, topics.name(MODELS_REGISTRY), serde, first, candidates, swap_every_s),
            )
        finally:
            await prod.stop()

    async def until_predicted(stack: Stack) -> None:
        seen: set[str] = set()
        async for batch in tail_topic(bootstrap, topics.name(PREDICTIONS), poll_ms=50, max_wait_s=120):
            stack.check()
            seen.update(filter(None, (serde.leading_string(r.value) for r in batch)))  # event_ids, any role
            if len(seen) >= n:
                return

    asyncio.run(create_topics(bootstrap, topics.catalogue()))
    value = serde.encode(MODELS_REGISTRY, first)
    asyncio.run(produce_all(bootstrap, [(topics.name(MODELS_REGISTRY), _registry_key(first), value)]))
    with Stack(env=env, log_dir=out_dir / "logs", services=("inference",)) as stack:
        stack.wait_ready()
        asyncio.run(drive())
        asyncio.run(until_predicted(stack))
    preds, duplicates = asyncio.run(_champion_predictions(bootstrap, topics.name(PREDICTIONS), serde))
    latencies = [p["predicted_at"] - p["ingest_time"] for p in preds]
    swap_pause, max_gap = prediction_gaps_ms(preds)
    return {
        "inference_offered_rate": rate,
        "inference_p50_latency_ms": percentile(latencies, 50),
        "inference_p95_latency_ms": percentile(latencies, 95),
        "inference_p99_latency_ms": percentile(latencies, 99),
        "inference_max_latency_ms": float(max(latencies)) if latencies else None,
        "inference_swaps": len({p["model_version"] for p in preds}) - 1,
        "inference_swap_pause_ms": swap_pause,
        "inference_max_prediction_gap_ms": max_gap,
        "inference_events_without_prediction": n - len(preds),
        "inference_duplicate_predictions": duplicates,
    }


# --- the command ----------------------------------------------------------------------------------


def cycled(dataset: Dataset, n: int) -> Dataset:
    """The dataset's rows repeated to ``n`` events (a soak longer than the data lasts); the
    repeats carry new event ids, since the replay numbers events by their position."""
    rows = [dataset.rows[i % len(dataset.rows)] for i in range(n)]
    entities = [dataset.entities[i % len(dataset.rows)] for i in range(n)] if dataset.entities else None
    return Dataset(dataset.name, rows, [p for p in dataset.drift_points if p < n], entities)


def latency_by_minute(predictions: list[dict[str, Any]]) -> list[float | None]:
    """p99 of event-in -> champion-prediction-out per minute of ingest time, from the first."""
    timed = [(p["ingest_time"], p["predicted_at"]) for p in predictions if p["role"] == "champion" and p["ingest_time"]]
    if not timed:
        return []
    first = min(t for t, _ in timed)
    minutes: dict[int, list[float]] = {}
    for t_in, t_out in timed:
        minutes.setdefault((t_in - first) // 60_000, []).append(float(t_out - t_in))
    return [percentile(minutes.get(m, []), 99) for m in range(max(minutes) + 1)]


def run_bench(
    dataset: Dataset,
    out: Path,
    *,
    events: int,
    offered_rate: float,
    label_delay: int,
    soak_s: float | None = None,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    common = CommonSettings()
    serde = Serde(FileSchemaRegistry(common.schema_dir))
    broker: Broker | None = None
    if common.uses_embedded_broker:
        shutil.rmtree(out / "broker", ignore_errors=True)
        broker = start_local_broker(
            common.broker_engine, free_port(), out / "broker", out / "broker.log", heap_mb=common.broker_heap_mb
        )
        os.environ["DRIFTLOOP_BROKER_ENGINE"] = broker.engine  # what auto chose, for every phase's services
    bootstrap = broker.bootstrap_servers if broker else common.bootstrap_servers
    res: dict[str, Any] = {
        "dataset": dataset.name,
        "events": len(dataset.rows),
        "label_delay": label_delay,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "broker": {"engine": broker.engine, "version": broker.version} if broker else {"engine": "external"},
    }
    say = lambda text: print(f"bench: {text}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        say(f"passthrough baseline over {len(dataset.rows)} records")
        res["passthrough_events_per_second"] = asyncio.run(
            passthrough(bootstrap, serde, len(dataset.rows), common.partitions)
        )
        say("bare River prequential baseline")
        res["task"] = task_of(dataset)
        figures, rate = bare_river(dataset, "logreg", 42, label_delay)
        res.update(figures, bare_river_events_per_second=rate)

        # A fresh broker's JVM is still compiling its hot paths, transactions' most of all: a
        # short run first, so the phases compared below all meet a warm broker.
        say("warm-up: a short saturation run, not measured")
        run_demo(
            cycled(dataset, min(len(dataset.rows), WARM_UP_EVENTS)),
            out / "warm-up",
            label_delay=label_delay,
            rate=None,
            env_overrides=_phase_env(bootstrap, "warm"),
        )
        say("saturation: the five services at full speed")
        at_ready: dict[str, tuple[float, float]] = {}
        at_end: dict[str, tuple[float, float]] = {}
        sat = run_demo(
            dataset,
            out / "saturation",
            label_delay=label_delay,
            rate=None,
            env_overrides=_phase_env(bootstrap, "sat"),
            # CPU from the moment every service is ready to the last prediction: start-up
            # (imports, group join, recovery) is not the cost of the events.
            on_ready=lambda stack: at_ready.update(stack.resources_by_service()),
            on_stack=lambda stack: at_end.update(stack.resources_by_service()),
        )
        n = len(dataset.rows)
        cpu = {svc: at_end[svc][0] - at_ready.get(svc, (0.0, 0.0))[0] for svc in at_end}
        res["per_service"] = {
            svc: {
                "cpu_seconds_per_1k_events": 1000 * c / n,
                # What one core would sustain for this service alone at this cost.
                "events_per_core_second": n / c if c > 0 else None,
                "peak_rss_mb": at_end[svc][1],
            }
            for svc, c in sorted(cpu.items())
        }
        res.update(
            events_per_second=sat["events_per_second"],
            ratio_to_passthrough=sat["events_per_second"] / res["passthrough_events_per_second"],
            ratio_to_bare_river=sat["events_per_second"] / res["bare_river_events_per_second"],
            # At saturation the loop runs thousands of events behind its labels: what it
            # serves then is older than the label delay says. Quality comes from the paced run.
            saturation_served_accuracy=sat.get("served_accuracy"),
            saturation_served_mae=sat.get("served_mae"),
            events_without_prediction=sat["events_without_prediction"],
            cpu_seconds_per_1k_events=1000 * sum(cpu.values()) / n,
            peak_rss_mb=sum(rss for _, rss in at_end.values()),
            saturation_p99_latency_ms=sat["p99_latency_ms"],
        )
        # The services' guarantee: exactly-once unless the broker is Tansu (or it is set).
        eos = CommonSettings().exactly_once
        res["guarantee"] = "exactly_once" if eos else "at_least_once"
        if eos:
            say("saturation again, at-least-once: what exactly-once costs")
            alo = run_demo(
                dataset,
                out / "saturation-at-least-once",
                label_delay=label_delay,
                rate=None,
                env_overrides=_phase_env(bootstrap, "sat-alo", DRIFTLOOP_PROCESSING_GUARANTEE="at_least_once"),
            )
            res.update(
                events_per_second_at_least_once=alo["events_per_second"],
                exactly_once_to_at_least_once=sat["events_per_second"] / alo["events_per_second"],
            )
        say("saturation again, 2 instances of each scalable service: the cost of scaling out on these cores")
        two = run_demo(
            dataset,
            out / "saturation-2-replicas",
            label_delay=label_delay,
            rate=None,
            env_overrides=_phase_env(bootstrap, "sat-x2"),
            replicas=dict.fromkeys(SCALABLE_SERVICES, 2),
        )
        res.update(
            events_per_second_2_replicas=two["events_per_second"],
            replicas_2_to_1=two["events_per_second"] / sat["events_per_second"],
        )

        # The whole stream, paced: latency at a fixed offered load, and the loop's quality
        # when it keeps up with the stream (the label delay is then what it says).
        paced = cycled(dataset, int(soak_s * offered_rate)) if soak_s else dataset
        n_lat = len(paced.rows)
        say(f"paced: {n_lat} events offered at {offered_rate:.0f}/s (latency and loop quality)")
        lat_env = _phase_env(bootstrap, "lat")
        lat = run_demo(paced, out / "latency", label_delay=label_delay, rate=offered_rate, env_overrides=lat_env)
        lat_topics = Topics(lat_env["DRIFTLOOP_TOPIC_PREFIX"], common.partitions)
        per_minute = latency_by_minute(
            [
                serde.decode(PREDICTIONS, r.value)
                for r in asyncio.run(read_topic(bootstrap, lat_topics.name(PREDICTIONS)))
            ]
        )
        # A minute that is only partly in the run says little: the first and last whole ones.
        whole = per_minute[:-1] if len(per_minute) > 2 else per_minute
        res.update(
            soak_s=soak_s,
            p99_latency_by_minute_ms=per_minute,
            p99_latency_first_minute_ms=whole[0] if whole else None,
            p99_latency_last_minute_ms=whole[-1] if whole else None,
            p99_last_to_first_minute=(
                (whole[-1] / whole[0]) if len(whole) >= 2 and whole[0] and whole[-1] is not None else None
            ),
        )
        res.update(
            offered_rate=offered_rate,
            p50_latency_ms=lat["p50_latency_ms"],
            p95_latency_ms=lat["p95_latency_ms"],
            p99_latency_ms=lat["p99_latency_ms"],
            max_latency_ms=lat["max_latency_ms"],
            swap_pause_ms=lat["swap_pause_ms"],
            max_prediction_gap_ms=lat["max_prediction_gap_ms"],
            swaps_in_latency_run=len(lat["versions_served"]) - 1,
            latency_events=n_lat,
            achieved_rate=lat["events_per_second"],
            served_accuracy=lat.get("served_accuracy"),
            served_accuracy_same_window=lat.get("served_accuracy_same_window"),
            static_accuracy=lat.get("baseline_static_accuracy"),
            estimated_accuracy=lat.get("estimated_accuracy"),
            estimated_accuracy_error=lat.get("estimated_accuracy_error"),
            estimated_accuracy_error_stationary=lat.get("estimated_accuracy_error_stationary"),
            estimated_accuracy_error_drift=lat.get("estimated_accuracy_error_drift"),
            lagged_accuracy_error=lat.get("lagged_accuracy_error"),
            lagged_accuracy_error_stationary=lat.get("lagged_accuracy_error_stationary"),
            lagged_accuracy_error_drift=lat.get("lagged_accuracy_error_drift"),
            served_mae=lat.get("served_mae"),
            served_rmse=lat.get("served_rmse"),
            served_mae_same_window=lat.get("served_mae_same_window"),
            static_mae=lat.get("baseline_static_mae"),
            static_rmse=lat.get("baseline_static_rmse"),
            # From the first event a trained version served, where bare River's cold start
            # (its first label_delay predictions untrained) is left out as the loop's is.
            served_accuracy_trained_window=lat.get("served_accuracy_trained_window"),
            bare_river_accuracy_trained_window=lat.get("bare_river_accuracy_trained_window"),
            served_mae_trained_window=lat.get("served_mae_trained_window"),
            bare_river_mae_trained_window=lat.get("bare_river_mae_trained_window"),
            drift_alerts=lat["drift_alerts"],
            drift_incidents=lat["drift_incidents"],
            promotions=lat["promotions"],
            model_versions=lat["model_versions"],
        )

        say(f"ingestion + features alone over {len(dataset.rows)} events")
        res["ingest_features_events_per_second"] = isolated_rate(
            bootstrap,
            out / "ingest-features",
            ("ingestion", "features"),
            raw_event_records(serde, dataset),
            "features",
            len(dataset.rows),
        )
        res["ingest_features_ratio_to_passthrough"] = (
            res["ingest_features_events_per_second"] / res["passthrough_events_per_second"]
        )

        n_http = min(len(dataset.rows), 5000)
        say(f"HTTP ingest: {n_http} events posted 100 a request, and produced 100 a batch with aiokafka")
        res.update(http_ingest(bootstrap, out / "http-ingest", dataset, n_http))

        say(f"inference alone over {len(dataset.rows)} feature vectors, and a bare predict loop")
        model = trained_model(dataset, "logreg", 42)
        res["bare_predict_events_per_second"] = bare_predict(dataset, model)
        res["inference_events_per_second"] = isolated_rate(
            bootstrap,
            out / "inference",
            ("inference",),
            vector_records(serde, dataset, common.feature_set_version),
            "predictions",
            len(dataset.rows),
            # The champion alone: no frozen baseline predicting in shadow beside it.
            env_extra={"DRIFTLOOP_INFERENCE_SHADOW_BASELINE": "false"},
            before=register_champion(bootstrap, serde, model, "logreg"),
        )
        res["inference_ratio_to_bare_predict"] = (
            res["inference_events_per_second"] / res["bare_predict_events_per_second"]
        )

        n_paced = min(len(dataset.rows), int(offered_rate * 20))
        say(f"inference alone: {n_paced} feature vectors at {offered_rate:.0f}/s, a new champion every 0.5 s")
        res.update(
            inference_paced(
                bootstrap, out / "inference-paced", serde, dataset, rate=offered_rate, n=n_paced, swap_every_s=0.5
            )
        )

        oip_s = min(OIP_SECONDS, max(2.0, len(dataset.rows) / offered_rate))
        say(f"OIP infer: {OIP_REQUESTS_PER_SECOND}/s one-row requests for {oip_s:.0f} s, alone and beside the stream")
        for stream_rate in (0.0, offered_rate):
            oip = oip_latency(
                bootstrap,
                out / f"oip-{stream_rate:.0f}",
                serde,
                dataset,
                model,
                request_rate=OIP_REQUESTS_PER_SECOND,
                stream_rate=stream_rate,
                seconds=oip_s,
            )
            if stream_rate:
                res.update(oip)
            else:
                res.update(
                    oip_alone_p50_latency_ms=oip["oip_p50_latency_ms"],
                    oip_alone_p99_latency_ms=oip["oip_p99_latency_ms"],
                )

        n_mon = min(len(dataset.rows), 5000)
        say(f"monitoring: {n_mon} predictions with 6 features, service and bare core")
        stream = monitoring_stream(
            n_mon,
            drift_at=n_mon // 2,
            right_before=0.9,
            right_after=0.6,
            input_shift=0.5,
            seed=3,
            entities=101,
            base_ms=int(time.time() * 1000),
        )
        res["bare_monitoring_predictions_per_second"] = bare_monitor(stream)
        res["monitoring_predictions_per_second"] = isolated_rate(
            bootstrap, out / "monitoring", ("monitoring",), monitoring_records(serde, stream), "outcomes", n_mon
        )
        res["monitoring_ratio_to_bare"] = (
            res["monitoring_predictions_per_second"] / res["bare_monitoring_predictions_per_second"]
        )
    finally:
        if broker:
            broker.stop()
    (out / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    write_bench_report(out, res)
    return res


ROWS = (
    ("events_per_second", "end to end, five services, saturation"),
    ("events_per_second_at_least_once", "the same with DRIFTLOOP_PROCESSING_GUARANTEE=at_least_once"),
    ("exactly_once_to_at_least_once", "exactly-once / at-least-once end to end (1 means it costs nothing)"),
    ("events_per_second_2_replicas", "end to end with 2 instances of ingestion, features and inference"),
    ("replicas_2_to_1", "2 instances / 1 (on 2 cores this is the overhead of scaling out, not a speed-up)"),
    ("passthrough_events_per_second", "bare aiokafka consume->produce, same broker"),
    ("ratio_to_passthrough", "end to end / passthrough"),
    ("bare_river_events_per_second", "bare River prequential, one process"),
    ("ratio_to_bare_river", "end to end / bare River"),
    ("offered_rate", "paced load of the paced run (events/s)"),
    ("achieved_rate", "rate the paced run achieved (events/s)"),
    ("p50_latency_ms", "event in -> prediction out, p50"),
    ("p95_latency_ms", "event in -> prediction out, p95"),
    ("p99_latency_ms", "event in -> prediction out, p99"),
    ("max_latency_ms", "event in -> prediction out, max"),
    ("p99_latency_first_minute_ms", "p99 of the paced run's first whole minute"),
    ("p99_latency_last_minute_ms", "p99 of its last whole minute"),
    ("p99_last_to_first_minute", "last minute's p99 / first minute's: 1 means no slowing down as topics fill"),
    ("swap_pause_ms", "longest gap in predictions across a model swap (paced run)"),
    ("max_prediction_gap_ms", "longest gap in predictions of all (paced run): a swap pause near it is a stall"),
    ("swaps_in_latency_run", "model swaps during the paced run"),
    ("ingest_features_events_per_second", "ingestion + features alone, 4 partitions"),
    ("ingest_features_ratio_to_passthrough", "ingestion + features / passthrough"),
    ("http_ingest_events_per_second", "POST /v1/events, 100 records a request, one at a time (ingestion alone)"),
    ("aiokafka_produce_events_per_second", "the same records produced with aiokafka to events.raw, 100 a batch"),
    ("http_ingest_ratio_to_aiokafka", "HTTP ingest / aiokafka produce"),
    ("oip_requests_per_second_offered", "OIP v2 infer requests a second, one row each, from a load client here"),
    ("oip_stream_events_per_second", "events a second streamed meanwhile through ingestion, features and inference"),
    ("oip_p50_latency_ms", "OIP v2 infer beside that stream: request sent -> answer read, p50"),
    ("oip_p99_latency_ms", "the same, p99 (target: under 5 ms)"),
    ("oip_errors", "OIP requests not answered 200 in that run"),
    ("oip_alone_p50_latency_ms", "the same requests with no stream beside them: p50"),
    ("oip_alone_p99_latency_ms", "the same, p99"),
    ("bare_predict_p50_ms", "a bare River predict of the same rows, per call: p50"),
    ("bare_predict_p99_ms", "the same, p99"),
    ("inference_events_per_second", "inference alone, trained logreg champion"),
    ("bare_predict_events_per_second", "the same model in a bare predict loop"),
    ("inference_ratio_to_bare_predict", "inference alone / bare predict"),
    ("inference_p50_latency_ms", "inference alone, paced at the offered rate: vector in -> prediction out, p50"),
    ("inference_p95_latency_ms", "the same, p95"),
    ("inference_p99_latency_ms", "the same, p99"),
    ("inference_max_latency_ms", "the same, max"),
    ("inference_swaps", "champion swaps in that run (each version first shadowed as a candidate)"),
    ("inference_swap_pause_ms", "longest gap in champion predictions across a swap (inference alone)"),
    ("inference_max_prediction_gap_ms", "longest gap in champion predictions of all (inference alone)"),
    ("inference_events_without_prediction", "vectors without a champion prediction (inference alone)"),
    ("inference_duplicate_predictions", "duplicate champion predictions (inference alone)"),
    ("served_accuracy", "accuracy of what users received (paced run)"),
    ("saturation_served_accuracy", "the same at saturation, the loop far behind its labels"),
    ("static_accuracy", "first trained model, frozen, out of sample"),
    ("served_accuracy_same_window", "served accuracy on the static model's window"),
    ("bare_river_accuracy", "bare River prequential, same label delay"),
    ("estimated_accuracy", "served accuracy estimated from confidence before the labels (monitoring's estimate)"),
    ("estimated_accuracy_error", "its mean absolute error against the realized accuracy over 500-event windows"),
    ("estimated_accuracy_error_stationary", "the same over windows away from known drift points"),
    ("estimated_accuracy_error_drift", "the same over windows within 1,000 events after a known drift point"),
    ("lagged_accuracy_error", "baseline: the realized accuracy known at each prediction, its error likewise"),
    ("lagged_accuracy_error_stationary", "the same away from known drift points"),
    ("lagged_accuracy_error_drift", "the same within 1,000 events after a known drift point"),
    ("served_mae", "MAE of what users received (paced run)"),
    ("saturation_served_mae", "the same at saturation, the loop far behind its labels"),
    ("static_mae", "first trained model, frozen, out of sample"),
    ("served_mae_same_window", "served MAE on the static model's window"),
    ("bare_river_mae", "bare River prequential, same label delay"),
    ("served_rmse", "RMSE of what users received (paced run)"),
    ("static_rmse", "first trained model, frozen, out of sample"),
    ("bare_river_rmse", "bare River prequential, same label delay"),
    ("served_accuracy_trained_window", "served accuracy from the first event a trained version served (paced run)"),
    ("bare_river_accuracy_trained_window", "bare River accuracy on the same events"),
    ("served_mae_trained_window", "served MAE from the first event a trained version served (paced run)"),
    ("bare_river_mae_trained_window", "bare River MAE on the same events"),
    ("drift_alerts", "drift alerts (paced run)"),
    ("drift_incidents", "drift incidents: alerts less escalations (paced run)"),
    ("promotions", "model promotions (paced run)"),
    ("cpu_seconds_per_1k_events", "CPU seconds of the five services per 1k events"),
    ("peak_rss_mb", "peak RSS summed over the five services (MB)"),
    ("monitoring_predictions_per_second", "monitoring service alone, 6 features"),
    ("bare_monitoring_predictions_per_second", "the same detectors in a bare loop"),
    ("monitoring_ratio_to_bare", "monitoring service / bare loop"),
)


ACCURACY_ROWS = {k for k, _ in ROWS if "accuracy" in k}
REGRESSION_ROWS = {k for k, _ in ROWS if "mae" in k or "rmse" in k}


def rows_for(task: str | None) -> list[tuple[str, str]]:
    """The figures of the bench's task: a regressor's MAE and RMSE in place of accuracy."""
    hidden = ACCURACY_ROWS if task == REGRESSION else REGRESSION_ROWS
    return [(k, what) for k, what in ROWS if k not in hidden]


def _fmt(v: Any) -> str:
    return f"{v:,.4g}" if isinstance(v, float) else str(v)


def write_bench_report(out: Path, res: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["passthrough", "bare River", "end to end", "monitoring", "bare monitoring"]
    vals = [
        res["passthrough_events_per_second"],
        res["bare_river_events_per_second"],
        res["events_per_second"],
        res["monitoring_predictions_per_second"],
        res["bare_monitoring_predictions_per_second"],
    ]
    a1.barh(names, vals)
    a1.set_xscale("log")
    a1.set_xlabel("records per second (log)")
    a1.set_title("Throughput against bare baselines")
    lat_path = out / "latency" / "summary.json"
    if lat_path.exists():
        x = [0, 1]
        a2.bar(
            [i - 0.2 for i in x], [res["p50_latency_ms"], res["p99_latency_ms"]], 0.4, label="event in, five services"
        )
        a2.bar(
            [i + 0.2 for i in x],
            [res["inference_p50_latency_ms"], res["inference_p99_latency_ms"]],
            0.4,
            label="vector in, inference alone",
        )
        a2.set_xticks(x, ["p50", "p99"])
        a2.set_ylabel("ms to the prediction")
        a2.legend()
        a2.set_title(f"Latency at {res['offered_rate']:.0f} events/s offered")
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=110)
    plt.close(fig)
    m = res["machine"]
    lines = [
        f"# driftloop bench — {res['dataset']}, {res['events']} events, label delay {res['label_delay']}",
        "",
        f"{m['cores']} cores, Python {m['python']}, {m['platform']}.",
        "",
        "| figure | value | what |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {_fmt(res.get(k))} | {what} |" for k, what in rows_for(res.get("task"))]
    lines += [
        "",
        "Per service in the saturation run (CPU from ready to the last prediction):",
        "",
        "| service | CPU s per 1k events | events per core-second | peak RSS MB |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {svc} | {_fmt(f['cpu_seconds_per_1k_events'])} | {_fmt(f['events_per_core_second'])} "
        f"| {_fmt(f['peak_rss_mb'])} |"
        for svc, f in res.get("per_service", {}).items()
    ]
    lines += ["", "![throughput and latency](bench.png)", ""]
    (out / "bench.md").write_text("\n".join(lines))


def bench_cli(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset, args.target, args.events)
    res = run_bench(
        dataset,
        args.out,
        events=len(dataset.rows),
        offered_rate=args.rate,
        label_delay=args.label_delay,
        soak_s=args.soak_s,
    )
    rows = rows_for(res.get("task"))
    width = max(len(k) for k, _ in rows)
    for k, _ in rows:
        print(f"{k:<{width}}  {_fmt(res.get(k))}")
    for svc, f in res.get("per_service", {}).items():
        print(f"{svc + ' events_per_core_second':<{width}}  {_fmt(f['events_per_core_second'])}")
    print(f"report: {args.out / 'bench.md'}")
    return 0
