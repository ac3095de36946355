"""`driftloop demo`: the whole loop on a stream, measured from the topics, with a report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftloop.replay import replay
from driftloop.runner import Stack, demo_env
from driftloop.shared.kafka import ClientOptions, client_options, read_topic, tail_topic
from driftloop.shared.modelspec import build_model, spec_for_task
from driftloop.shared.registry import ArtifactStore, Registry
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import Topics
from driftloop.streams import Dataset, index_of, load_dataset
from driftloop.summary import bare_prequential, failure, summarize

TOPIC_RECORDS = {
    "events.clean": "RawEvent",
    "labels.clean": "Label",
    "deadletter": "DeadLetter",
    "features": "FeatureVector",
    "predictions": "Prediction",
    "outcomes": "Outcome",
    "alerts": "DriftAlert",
    "models.registry": "ModelVersion",
}


class Progress:
    """One status line on stderr, rewritten in place (plain lines when not a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.5 if self.tty else 5.0):
            return
        self._last = now
        print(("\r" + text.ljust(100)) if self.tty else text, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


async def _wait_for_predictions(
    bootstrap: str,
    topics: Topics,
    serde: Serde,
    sent: set[str],
    stack: Stack,
    progress: Progress,
    deadline: float,
    labels_expected: int,
    options: ClientOptions,
) -> None:
    """Until every sent event has a prediction or a dead letter, then until the outcomes
    stop growing (every label that can be joined has been)."""
    done: set[str] = set()
    outcomes: set[str] = set()

    async def watch(short: str, record: str, into: set[str]) -> None:
        # Only the event_id: decoding every prediction and outcome whole took this process
        # CPU the services under test then lacked (README, Measured choices).
        first = record != "DeadLetter"
        async for batch in tail_topic(bootstrap, topics.name(short), options=options):
            for r in batch:
                if first:
                    event_id = serde.leading_string(r.value)
                else:
                    try:
                        event_id = serde.decode(record, r.value).get("event_id")
                    except Exception:  # noqa: BLE001 - the summary counts what cannot be read
                        continue
                if event_id in sent:
                    into.add(event_id)

    tasks = [
        asyncio.create_task(watch("predictions", "Prediction", done)),
        asyncio.create_task(watch("deadletter", "DeadLetter", done)),
        asyncio.create_task(watch("outcomes", "Outcome", outcomes)),
    ]
    try:
        quiet_since, last_outcomes = time.monotonic(), -1
        while time.monotonic() < deadline:
            stack.check()
            progress.show(
                f"demo: {len(done)}/{len(sent)} events predicted or dead-lettered, {len(outcomes)} labels joined"
            )
            if len(done) >= len(sent):
                if len(outcomes) != last_outcomes:
                    quiet_since, last_outcomes = time.monotonic(), len(outcomes)
                if len(outcomes) >= labels_expected or time.monotonic() - quiet_since > 5.0:
                    progress.show(
                        f"demo: {len(done)}/{len(sent)} events predicted or dead-lettered, "
                        f"{len(outcomes)} labels joined",
                        force=True,
                    )
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"only {len(done)} of {len(sent)} events got a prediction or a dead letter in time")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _read_all(
    bootstrap: str, topics: Topics, serde: Serde, options: ClientOptions
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for short, record in TOPIC_RECORDS.items():
        records = await read_topic(bootstrap, topics.name(short), options=options)
        out[short] = [serde.decode(record, r.value) for r in records]
    return out


def run_demo(
    dataset: Dataset,
    out_dir: Path,
    *,
    label_delay: int = 50,
    rate: float | None = None,
    timeout_s: float = 600.0,
    version_every: int | None = None,
    env_overrides: dict[str, str] | None = None,
    on_stack: Callable[[Stack], None] | None = None,
    on_ready: Callable[[Stack], None] | None = None,
    replicas: dict[str, int] | None = None,
    on_series: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the loop over ``dataset`` and write summary.json, report.md and plots into
    ``out_dir``. ``env_overrides`` reach the services (the bench points them at its broker
    and a topic prefix per phase); ``on_ready`` sees the stack once every service is ready,
    right before the replay, and ``on_stack`` once every event has its prediction.
    ``replicas`` runs that many instances of a scalable service; ``on_series`` gets the
    per-event series the report plots."""
    started = time.time()
    common = CommonSettings()
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    env = {**demo_env(), **(env_overrides or {})}
    env.setdefault("DRIFTLOOP_ARTIFACT_STORE", f"file://{(out_dir / 'artifacts').resolve()}")
    env.setdefault("DRIFTLOOP_DATA_DIR", str((out_dir / "state").resolve()))
    # On an existing Kafka, a run-scoped prefix keeps this run's topics apart from anything there.
    if not common.uses_embedded_broker and "DRIFTLOOP_TOPIC_PREFIX" not in {**os.environ, **env}:
        env["DRIFTLOOP_TOPIC_PREFIX"] = f"driftloop.demo-{run_id}."
    # A demo's stream is short: a candidate every 100 examples, judged over the next 100
    # against the champion (both as served), promoted when strictly better. The service
    # defaults would serve models thousands of events stale here, and serve less accurately
    # (README, Measured choices).
    cadence = {
        "DRIFTLOOP_RETRAINING_VERSION_EVERY": str(version_every or 100),
        "DRIFTLOOP_RETRAINING_PROMOTION_MIN_EXAMPLES": "100",
        "DRIFTLOOP_RETRAINING_PROMOTION_MARGIN": "0.0",
    }
    for name, value in cadence.items():
        if name not in os.environ:
            env.setdefault(name, value)
    topics = Topics(env.get("DRIFTLOOP_TOPIC_PREFIX", common.topic_prefix), common.partitions)
    serde = Serde(FileSchemaRegistry(common.schema_dir))
    progress = Progress()
    if common.uses_embedded_broker and "KAFKA_BOOTSTRAP_SERVERS" not in env:
        # A local Apache Kafka keeps its log under the data dir: each demo starts from an empty one.
        shutil.rmtree(Path(env["DRIFTLOOP_DATA_DIR"]) / "kafka", ignore_errors=True)
    stack = Stack(env=env, log_dir=out_dir / "logs", replicas=replicas or {})
    broker_info: dict[str, Any] = {"engine": "external", "version": None}
    try:
        progress.show("demo: starting the broker and the five services", force=True)
        stack.start()
        if stack.broker is not None:
            broker_info = {"engine": stack.broker.engine, "version": stack.broker.version}
        stack.wait_ready()
        if on_ready is not None:
            on_ready(stack)
        bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
        result = asyncio.run(
            replay(
                bootstrap,
                topics,
                serde,
                dataset,
                run_id=run_id,
                label_delay=label_delay,
                rate=rate,
                options=client_options(common),
                on_progress=lambda d, t: progress.show(f"demo: replaying {d}/{t} events"),
            )
        )
        sent = {f"{run_id}-{i}" for i in range(result.events_sent)}
        asyncio.run(
            _wait_for_predictions(
                bootstrap,
                topics,
                serde,
                sent,
                stack,
                progress,
                time.monotonic() + timeout_s,
                result.labels_sent,
                client_options(common),
            )
        )
        progress.done()
        if on_stack is not None:
            on_stack(stack)
        stack.stop_services()
        data = asyncio.run(_read_all(bootstrap, topics, serde, client_options(common)))
    finally:
        progress.done()
        stack.stop()
    summary, series = _summarize(
        data,
        dataset,
        run_id,
        result.events_sent,
        result.labels_sent,
        ArtifactStore(env["DRIFTLOOP_ARTIFACT_STORE"]),
        time.time() - started,
        label_delay,
        env.get(SPEC_ENV, os.environ.get(SPEC_ENV, "logreg")),
    )
    summary.update(
        dataset=dataset.name, run_id=run_id, topic_prefix=topics.prefix, label_delay=label_delay, broker=broker_info
    )
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from driftloop.report import write_report

    write_report(out_dir, summary, series)
    if on_series is not None:
        on_series(series)
    return summary


def _summarize(
    data: dict[str, list[dict[str, Any]]],
    dataset: Dataset,
    run_id: str,
    events_sent: int,
    labels_sent: int,
    store: ArtifactStore,
    wall: float,
    label_delay: int,
    spec: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    registry = Registry()
    for rec in data["models.registry"]:
        registry.apply(rec)
    name = CommonSettings().model_name
    trained = [r for r in registry.versions(name) if r["params"].get("trained") == "true"]
    baseline = trained[0] if trained else None
    # Bare River runs the spec retraining trained (as recorded), in the task's form.
    spec = trained[-1]["params"].get("spec", spec) if trained else spec

    def bare(task: str | None) -> tuple[str, list[Any]] | None:
        if task is None:
            return None
        form = spec_for_task(spec, task)
        return form, bare_prequential(dataset.rows[:events_sent], label_delay, build_model(form, 42, task), task)

    return summarize(
        sent_event_ids=[f"{run_id}-{i}" for i in range(events_sent)],
        labels_sent=labels_sent,
        clean_events=data["events.clean"],
        dead_letters=data["deadletter"],
        vectors=data["features"],
        predictions=data["predictions"],
        clean_labels=data["labels.clean"],
        outcomes=data["outcomes"],
        alerts=data["alerts"],
        registry=data["models.registry"],
        drift_points=dataset.drift_points,
        load_baseline=(lambda: store.load(baseline["artifact_uri"], baseline["artifact_sha256"])) if baseline else None,
        baseline_version=baseline["version"] if baseline else None,
        baseline_from=_after_window(baseline),
        wall_seconds=wall,
        bare_predictions=bare,
    )


def _after_window(version: dict[str, Any] | None) -> int:
    last = version["training_window"]["last_event_id"] if version else None
    return index_of(last) + 1 if last else 0


SPEC_ENV = "DRIFTLOOP_RETRAINING_MODEL_SPEC"
QUALITY_KEYS = {
    "classification": (
        "served_accuracy",
        "baseline_static_accuracy",
        "bare_river_accuracy",
        "served_macro_f1",
        "estimated_accuracy",
        "estimated_accuracy_error_stationary",
        "estimated_accuracy_error_drift",
        "lagged_accuracy_error_stationary",
        "lagged_accuracy_error_drift",
    ),
    "regression": ("served_mae", "served_rmse", "baseline_static_mae", "bare_river_mae", "bare_river_rmse"),
}


def demo_cli(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset, args.target, args.events)
    summary = run_demo(dataset, args.out, label_delay=args.label_delay, rate=args.rate, timeout_s=args.timeout)
    quality = QUALITY_KEYS["regression" if summary["task"] == "regression" else "classification"]
    keys = (
        "task",
        "events_sent",
        "events_without_prediction",
        "dead_lettered",
        *quality,
        "drift_alerts",
        "drift_incidents",
        "detection_delays",
        "model_versions",
        "promotions",
        "p50_latency_ms",
        "p99_latency_ms",
        "events_per_second",
        "wall_seconds",
    )
    width = max(map(len, keys))
    for k in keys:
        v = summary[k]
        print(f"{k:<{width}}  {round(v, 4) if isinstance(v, float) else v}")
    print(f"report: {args.out / 'report.md'}")
    why = failure(summary)
    if why is not None:
        print(f"driftloop demo: {why}", file=sys.stderr)
        return 1
    return 0
