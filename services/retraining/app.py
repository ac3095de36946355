"""Retraining service shell: LabeledExamples and drift alerts in, model versions out.

The lifecycle core decides; this shell saves artifacts and writes every status change,
with its reason, to the registry topic. The lifecycle starts once the task is known (the
setting, the champion's record, or the first labels: services/retraining/task.py); an
example whose label the task cannot learn is dead-lettered as ``label_task_mismatch``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Counter, Gauge

from driftloop.services.retraining.lifecycle import Action, Lifecycle, Promote, Register, Reject
from driftloop.services.retraining.task import TaskGate
from driftloop.shared.app import EventT, ServiceContext, StreamT, build_context, run_worker
from driftloop.shared.errors import LabelTaskMismatch
from driftloop.shared.modelspec import build_model, check_task, fits_task, fixed_task, spec_for_task
from driftloop.shared.registry import ArtifactStore, ChampionChange, version_record, with_status
from driftloop.shared.registry_client import RegistryClient, code_version
from driftloop.shared.settings import RetrainingSettings

SERVICE = "retraining"


def wire(ctx: ServiceContext[RetrainingSettings]) -> None:
    app = ctx.app
    name = ctx.common.model_name
    s = ctx.settings
    store = ArtifactStore(ctx.common.artifact_store)
    client = RegistryClient.from_settings(
        ctx.common, ctx.topics.name("models.registry"), ctx.serde, ctx.log, ctx.metrics.registry
    )
    registry_out = ctx.raw_topic("models.registry")
    versions_c = Counter(
        "driftloop_model_versions_registered_total",
        "Model versions registered",
        ["model", "trigger"],
        registry=ctx.metrics.registry,
    )
    decisions_c = Counter(
        "driftloop_model_decisions_total",
        "Lifecycle decisions on model versions (promote, reject, rollback)",
        ["model", "decision"],
        registry=ctx.metrics.registry,
    )
    examples_g = Gauge(
        "driftloop_training_examples",
        "Examples the continuous learner has learned from",
        ["model"],
        registry=ctx.metrics.registry,
    )
    task_g = Gauge(
        "driftloop_model_task_info",
        "1 for the task retraining trains for (binary, multiclass, regression) once it is known",
        ["model", "task"],
        registry=ctx.metrics.registry,
    )
    mismatch_c = Counter(
        "driftloop_label_task_mismatches_total",
        "Examples refused because the task cannot learn their label (dead-lettered)",
        ["model", "task"],
        registry=ctx.metrics.registry,
    )
    ready = asyncio.Event()
    state: dict[str, Any] = {"lc": None}
    fixed = fixed_task(s.model_spec, s.task)  # an unknown spec or task fails here, at start

    async def send_registry(key: bytes, value: bytes) -> None:
        await ctx.send(registry_out, key, value)

    async def write(record: dict[str, Any]) -> None:
        # Apply what was sent: signed when a key is set, which the local registry then requires.
        client.registry.apply(await client.publish(send_registry, record))

    def load_trained(record: dict[str, Any] | None) -> Any | None:
        if record is None or record["params"].get("trained") != "true":
            return None
        try:
            return store.load(record["artifact_uri"], record["artifact_sha256"])
        except Exception as exc:  # noqa: BLE001 - fall back to a fresh model, loudly
            ctx.log.error("champion_artifact_refused", model_name=name, model_version=record["version"], error=str(exc))
            return None

    @app.task
    async def registry_follower() -> None:
        await client.load()
        now = int(time.time() * 1000)
        # A candidate left by an earlier run lost its evaluation with that process.
        for r in client.registry.versions(name):
            if r["status"] == "candidate":
                await write(with_status(r, "rejected", "retraining restarted: its evaluation was lost", now))
        champion = client.registry.champion(name)
        model = load_trained(champion)
        task = fixed
        if model is not None and champion is not None:
            # The champion's task carries on, unless the setting says otherwise.
            if fixed is not None and champion.get("task") not in (None, fixed):
                ctx.log.warning("champion_task_differs", model_name=name, model_version=champion["version"], task=fixed)
                model = None
            else:
                task = fixed or champion.get("task")
                ctx.log.info("training_resumed_from_champion", model_name=name, model_version=champion["version"])
        state["champion"] = (model, champion["version"] if model is not None and champion is not None else None)
        state["gate"] = TaskGate(task, examples=s.task_examples, label=lambda item: item[0]["label"])
        if task is not None:
            start(task)
        ready.set()

        async def on_change(change: ChampionChange) -> None:
            # Our own records are applied before they come back, so a change seen here
            # was made by someone else (an operator): score that champion from now on.
            lc: Lifecycle | None = state["lc"]
            if lc is None:
                return  # nothing trained yet: the lifecycle will start from the registry as it is then
            if change.name == name and change.new != lc.champion_version:
                lc.champion_changed(change.new, load_trained(client.registry.get(name, change.new)))
                ctx.log.info("champion_changed_externally", model_name=name, model_version=change.new)

        async def on_batch() -> None:
            lc: Lifecycle | None = state["lc"]
            if lc is None:
                return
            for version in lc.pending.values():
                record = client.registry.get(name, version)
                if record is not None and record["status"] != "candidate":
                    lc.withdraw(version)
                    ctx.log.info("candidate_withdrawn", model_name=name, model_version=version)

        await client.follow(on_change, on_batch)

    def start(task: str) -> None:
        """The lifecycle, for ``task``: resumed from the champion when it was trained for it."""
        check_task(task)
        model, version = state["champion"]
        if model is not None and not fits_task(model, task):
            # A champion recorded before versions carried their task, of another kind.
            ctx.log.warning("champion_task_differs", model_name=name, model_version=version, task=task)
            model, version = None, None
        spec = spec_for_task(s.model_spec, task)
        state["task"], state["spec"] = task, spec
        state["lc"] = Lifecycle.from_policy(
            s,
            model if model is not None else build_model(spec, s.seed, task),
            build=lambda: build_model(spec, s.seed, task),
            next_version=lambda: client.registry.latest_version(name) + 1,
            champion=model,  # the lifecycle keeps its own copy, as registered
            champion_version=version,
        )
        task_g.labels(name, task).set(1)
        ctx.log.info("task_decided", model_name=name, task=task, model_spec=spec, setting=s.task)

    async def register(a: Register, now: int) -> None:
        parent = client.registry.champion(name)
        record = version_record(
            name=name,
            version=a.version,
            status="champion" if a.direct else "candidate",
            reason=a.reason,
            artifact=store.save(name, a.version, a.model),
            parent=parent["version"] if parent else None,
            trigger=a.trigger,
            window=a.window,
            params={"spec": state["spec"], "seed": str(s.seed), "trained": "true", "contender": a.contender},
            metrics=a.metrics,
            feature_set_version=a.feature_set_version or ctx.common.effective_feature_set_version,
            code_version=code_version(),
            now_ms=now,
            task=state["task"],
        )
        await write(record)
        if a.direct and parent is not None:
            await write(with_status(parent, "archived", f"superseded by v{a.version}", now))
        versions_c.labels(name, a.trigger.split(":")[0]).inc()
        ctx.log.info(
            "model_version_registered",
            model_name=name,
            model_version=a.version,
            status=record["status"],
            trigger=a.trigger,
            contender=a.contender,
            parent_version=record["parent_version"],
            examples=a.window.get("examples"),
        )

    async def change(version: int, status: str, reason: str, metrics: dict[str, float], now: int, **extra: Any) -> None:
        record = client.registry.get(name, version)
        if record is None:
            ctx.log.error("model_version_unknown", model_name=name, model_version=version)
            return
        await write({**with_status(record, status, reason, now), "metrics": {**record["metrics"], **metrics}, **extra})

    async def execute(actions: list[Action]) -> None:
        now = int(time.time() * 1000)
        for a in actions:
            if isinstance(a, Register):
                await register(a, now)
                continue
            if isinstance(a, Promote):
                # The lineage is what it replaced, which may differ from the champion at registration.
                await change(a.version, "champion", a.reason, a.metrics, now, parent_version=a.replaces)
                if a.replaces is not None:
                    await change(a.replaces, "archived", f"superseded by v{a.version}", {}, now)
                decision = "promote"
            elif isinstance(a, Reject):
                await change(a.version, "rejected", a.reason, a.metrics, now)
                decision = "reject"
            else:
                await change(a.to, "champion", f"re-promoted: {a.reason}", {}, now)
                await change(a.version, "rejected", a.reason, a.metrics, now)
                decision = "rollback"
            decisions_c.labels(name, decision).inc()
            ctx.log.info("model_lifecycle_decision", model_name=name, model_version=a.version, decision=decision)

    @app.agent(ctx.source("examples"), name=f"{SERVICE}.examples")
    async def on_examples(stream: StreamT) -> None:
        await ready.wait()
        await ctx.each(stream, on_example)

    async def on_example(event: EventT) -> None:
        example = ctx.serde.decode_input("LabeledExample", event.message.value)
        ctx.event_id = example["event_id"]
        gate: TaskGate[tuple[dict[str, Any], Any]] = state["gate"]
        try:
            ready_now, refused = gate.offer((example, event.message))
        except LabelTaskMismatch:
            mismatch_c.labels(name, gate.task or "undecided").inc()
            raise  # dead-lettered by the runtime with its code
        if gate.task is not None and state["lc"] is None:
            start(gate.task)
        for (held, message), exc in refused:
            mismatch_c.labels(name, gate.task or "undecided").inc()
            await ctx.dead_letter(message, exc, held["event_id"])
        lc: Lifecycle | None = state["lc"]
        if lc is None:
            return  # held until the labels tell the task
        for ex, _ in ready_now:
            actions = lc.learn(ex)
            if actions:
                await execute(actions)
        examples_g.labels(name).set(lc.examples_seen)

    async def on_alert(event: EventT) -> None:
        alert = ctx.serde.decode_input("DriftAlert", event.message.value)
        lc: Lifecycle | None = state["lc"]
        if lc is not None and alert["model_name"] == name and alert["kind"] in ("concept", "performance"):
            ctx.log.info("drift_alert_received", alert_id=alert["alert_id"], detector=alert["detector"])
            await execute(lc.on_drift(alert["alert_id"]))

    @app.agent(ctx.source("alerts"), name=f"{SERVICE}.alerts")
    async def on_alerts(stream: StreamT) -> None:
        await ready.wait()
        await ctx.each(stream, on_alert)


def main() -> None:
    ctx = build_context(SERVICE, RetrainingSettings)
    wire(ctx)
    run_worker(ctx)
