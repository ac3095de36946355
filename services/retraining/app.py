"""Retraining service shell: LabeledExamples and drift alerts in, model versions out.

The lifecycle core decides; this shell saves artifacts and writes every status change,
with its reason, to the registry topic. The lifecycle starts once the task is known (the
setting, the champion's record, or the first labels: services/retraining/task.py); an
example whose label the task cannot learn is dead-lettered as ``label_task_mismatch``.

The continuous learner is a Selection (services/retraining/selection.py) of the families in
``MODEL_SPECS`` (else ``MODEL_SPEC`` alone), each in the task's form. A family that fails on
an example is dead-lettered for that family (``learner_failed``) and counted, and the others
learn it. Each family's score, state, stride and cost go to /metrics at every plan (every
``replan_every`` examples) and on a clock, and a change of state or stride is logged
(``model_family_planned``).

Registry records go out at once, in the order they are written (``svc.publisher``), never
on a handler's batch. Under exactly-once each input partition commits its batches in a
transaction of its own, and those transactions commit in any order: a version registered
while handling one partition and promoted while handling another could land promoted first
and candidate last, leaving two champions on the topic. The registry has one writer, and its
records must reach the topic in that writer's order.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import Counter, Gauge

from driftloop.services.retraining.lifecycle import Action, Lifecycle, Promote, Register, Reject
from driftloop.services.retraining.selection import STATES, Selection, SelectionStatus, plan_changes
from driftloop.services.retraining.task import TaskGate
from driftloop.shared.errors import LabelTaskMismatch, UnknownModelSpec
from driftloop.shared.modelspec import build_model, check_task, fits_task, fixed_task, spec_for_task
from driftloop.shared.records import DriftAlert, LabeledExample
from driftloop.shared.registry import ArtifactStore, ChampionChange, version_record, with_status
from driftloop.shared.registry_client import RegistryClient, code_version
from driftloop.shared.runtime import Context, Service, run_service
from driftloop.shared.settings import RetrainingSettings
from driftloop.shared.topics import ALERTS, EXAMPLES, MODELS_REGISTRY

SERVICE = "retraining"
#: The drift kinds that call for a fresh challenger (input and prediction drift do not).
CHALLENGER_KINDS = ("concept", "performance")
#: What the task gate holds: an example with the Kafka record it came in (to dead-letter it).
Held = tuple[LabeledExample, ConsumerRecord]
#: Seconds between exports of the selection's figures on the clock (they also go out at every plan).
SELECTION_EVERY_S = 2.0


class RetrainingMetrics:
    def __init__(self, svc: Service[RetrainingSettings]) -> None:
        reg = svc.metrics.registry
        self.versions = Counter(
            "driftloop_model_versions_registered_total", "Model versions registered", ["model", "trigger"], registry=reg
        )
        self.decisions = Counter(
            "driftloop_model_decisions_total",
            "Lifecycle decisions on model versions (promote, reject, rollback)",
            ["model", "decision"],
            registry=reg,
        )
        self.examples = Gauge(
            "driftloop_training_examples", "Examples the continuous learner has learned from", ["model"], registry=reg
        )
        self.task = Gauge(
            "driftloop_model_task_info",
            "1 for the task retraining trains for (binary, multiclass, regression) once it is known",
            ["model", "task"],
            registry=reg,
        )
        self.mismatches = Counter(
            "driftloop_label_task_mismatches_total",
            "Examples refused because the task cannot learn their label (dead-lettered)",
            ["model", "task"],
            registry=reg,
        )
        # Online model selection: one series per model family (services/retraining/selection.py).
        family = ["model", "family"]
        self.family_accuracy = Gauge(
            "driftloop_model_family_accuracy_ratio",
            "Prequential accuracy of a family's continuous learner over the evaluation window",
            family,
            registry=reg,
        )
        self.family_mae = Gauge(
            "driftloop_model_family_mae",
            "Prequential mean absolute error of a family's continuous regressor over the evaluation window",
            family,
            registry=reg,
        )
        self.family_leader = Gauge(
            "driftloop_model_family_leader",
            "1 for the family a version would be cut from now, else 0",
            family,
            registry=reg,
        )
        self.family_state = Gauge(
            "driftloop_model_family_state",
            "1 for a family's state under the CPU budget (active, subsampled, dropped), 0 for the others",
            [*family, "state"],
            registry=reg,
        )
        self.family_stride = Gauge(
            "driftloop_model_family_sampling_stride",
            "A family learns 1 example in this many (1: every example)",
            family,
            registry=reg,
        )
        self.family_cost = Gauge(
            "driftloop_model_family_cpu_seconds_per_example",
            "CPU seconds a family takes per example at its stride (predict, plus learn over the stride)",
            family,
            registry=reg,
        )
        self.family_share = Gauge(
            "driftloop_model_family_cpu_share_ratio",
            "Share of one core a family takes at the offered example rate",
            family,
            registry=reg,
        )
        self.family_learned = Counter(
            "driftloop_model_family_examples_learned_total", "Examples a family's learner learned", family, registry=reg
        )
        self.family_failures = Counter(
            "driftloop_model_family_failures_total",
            "Examples a family failed to predict or learn (dead-lettered as learner_failed)",
            [*family, "stage"],
            registry=reg,
        )
        self.selection_share = Gauge(
            "driftloop_model_selection_cpu_share_ratio",
            "Share of one core the model families take together at the offered example rate",
            ["model"],
            registry=reg,
        )
        self.selection_budget = Gauge(
            "driftloop_model_selection_cpu_budget_ratio",
            "Share of one core the model families may take (DRIFTLOOP_RETRAINING_CPU_BUDGET)",
            ["model"],
            registry=reg,
        )
        self.selection_rate = Gauge(
            "driftloop_model_selection_offered_examples_per_second",
            "Labelled examples per second offered to retraining, measured from their event times",
            ["model"],
            registry=reg,
        )


class Retraining:
    """Trains continuously, registers versions, and carries out the lifecycle's decisions."""

    def __init__(self, svc: Service[RetrainingSettings], client: RegistryClient | None = None) -> None:
        self.svc = svc
        self.settings = svc.settings
        self.name = svc.common.model_name
        self.store = ArtifactStore(svc.common.artifact_store)
        self.client = client or RegistryClient.from_settings(
            svc.common, svc.topics.name(MODELS_REGISTRY), svc.serde, svc.log, svc.metrics.registry
        )
        self.metrics = RetrainingMetrics(svc)
        #: The task the settings fix before any label (an unknown spec or task fails here, at start).
        self.fixed = fixed_task(self.settings.specs, self.settings.task)
        #: Holds examples until their labels tell the task; refuses those it cannot learn.
        self.gate: TaskGate[Held] = self._gate(self.fixed)
        #: The trained champion to resume from (model, version), read from the registry at start.
        self.champion_model: Any | None = None
        self.champion_version: int | None = None
        #: The champion's family (its record's params spec): that family resumes from it.
        self.champion_spec: str | None = None
        #: Set by start() once the task is known.
        self.lifecycle: Lifecycle | None = None
        self.task: str | None = None
        self.spec: str | None = None  # the first family listed, in the task's form
        self.specs: list[str] = []
        #: The selection's figures as last exported: what changed since, and the counters' deltas.
        self.exported: SelectionStatus | None = None
        #: Set once the registry is loaded: examples and alerts wait for it.
        self.ready = asyncio.Event()
        svc.task(self.follow_registry)
        svc.on(EXAMPLES, self.on_example, after=self.ready)
        svc.on(ALERTS, self.on_alert, after=self.ready)
        svc.every(SELECTION_EVERY_S, self.export_on_clock)

    def _gate(self, task: str | None) -> TaskGate[Held]:
        return TaskGate(task, examples=self.settings.task_examples, label=lambda item: item[0]["label"])

    # --- the handlers -------------------------------------------------------------------------

    async def on_example(self, example: LabeledExample, ctx: Context) -> None:
        gate = self.gate
        try:
            ready_now, refused = gate.offer((example, ctx.message))
        except LabelTaskMismatch:
            self.metrics.mismatches.labels(self.name, gate.task or "undecided").inc()
            raise  # dead-lettered by the runtime with its code
        if gate.task is not None and self.lifecycle is None:
            self.start(gate.task)
        for (held, message), exc in refused:
            self.metrics.mismatches.labels(self.name, gate.task or "undecided").inc()
            await ctx.dead_letter(message, exc, held["event_id"])
        lc = self.lifecycle
        if lc is None:
            return  # held until the labels tell the task
        sel = lc.selection
        for ex, message in ready_now:
            actions = lc.learn(ex)
            if sel is not None:
                for f in sel.last_failures:  # that family skipped it; the others learned it
                    self.metrics.family_failures.labels(self.name, f.spec, f.stage).inc()
                    await ctx.dead_letter(message, f.error, ex["event_id"])
                if sel.examples % sel.replan_every == 0:
                    self.export_selection()  # right after each plan
            if actions:
                await self.execute(actions)
        self.metrics.examples.labels(self.name).set(lc.examples_seen)

    async def on_alert(self, alert: DriftAlert, ctx: Context) -> None:
        lc = self.lifecycle
        if lc is not None and alert["model_name"] == self.name and alert["kind"] in CHALLENGER_KINDS:
            self.svc.log.info("drift_alert_received", alert_id=alert["alert_id"], detector=alert["detector"])
            await self.execute(lc.on_drift(alert["alert_id"]))

    # --- the registry -------------------------------------------------------------------------

    async def follow_registry(self) -> None:
        await self.client.load()
        await self.reject_leftovers()
        task = self.resume(self.client.registry.champion(self.name))
        self.gate = self._gate(task)
        if task is not None:
            self.start(task)
        self.ready.set()
        await self.client.follow(self.on_champion_change, self.on_registry_batch)

    async def reject_leftovers(self) -> None:
        """A candidate left by an earlier run lost its evaluation with that process."""
        now = int(time.time() * 1000)
        for r in self.client.registry.versions(self.name):
            if r["status"] == "candidate":
                await self.write(with_status(r, "rejected", "retraining restarted: its evaluation was lost", now))

    def resume(self, champion: dict[str, Any] | None) -> str | None:
        """Keep the registry's trained champion to train on from; the task it tells (None:
        the labels must tell)."""
        log, fixed = self.svc.log, self.fixed
        model = self.load_trained(champion)
        task = fixed
        if model is not None and champion is not None:
            # The champion's task carries on, unless the setting says otherwise.
            if fixed is not None and champion.get("task") not in (None, fixed):
                log.warning(
                    "champion_task_differs", model_name=self.name, model_version=champion["version"], task=fixed
                )
                model = None
            else:
                task = fixed or champion.get("task")
                log.info("training_resumed_from_champion", model_name=self.name, model_version=champion["version"])
        self.champion_model = model
        self.champion_version = champion["version"] if model is not None and champion is not None else None
        self.champion_spec = champion["params"].get("spec") if model is not None and champion is not None else None
        return task

    def load_trained(self, record: dict[str, Any] | None) -> Any | None:
        if record is None or record["params"].get("trained") != "true":
            return None
        try:
            return self.store.load(record["artifact_uri"], record["artifact_sha256"])
        except Exception as exc:  # noqa: BLE001 - fall back to a fresh model, loudly
            self.svc.log.error(
                "champion_artifact_refused", model_name=self.name, model_version=record["version"], error=str(exc)
            )
            return None

    async def on_champion_change(self, change: ChampionChange) -> None:
        # Our own records are applied when written and not again when they come back, so a
        # change seen here was made by someone else (an operator): score that champion from now on.
        lc = self.lifecycle
        if lc is None:
            return  # nothing trained yet: the lifecycle will start from the registry as it is then
        if change.name == self.name and change.new != lc.champion_version:
            lc.champion_changed(change.new, self.load_trained(self.client.registry.get(self.name, change.new)))
            self.svc.log.info("champion_changed_externally", model_name=self.name, model_version=change.new)

    async def on_registry_batch(self) -> None:
        lc = self.lifecycle
        if lc is None:
            return
        for version in lc.pending.values():
            record = self.client.registry.get(self.name, version)
            if record is not None and record["status"] != "candidate":
                lc.withdraw(version)
                self.svc.log.info("candidate_withdrawn", model_name=self.name, model_version=version)

    # --- the lifecycle ------------------------------------------------------------------------

    def start(self, task: str) -> None:
        """The lifecycle, for ``task``, its continuous learner a Selection of the listed families:
        the champion's family resumes from the champion when it was trained for the task."""
        check_task(task)
        s, name = self.settings, self.name
        model, version = self.champion_model, self.champion_version
        if model is not None and not fits_task(model, task):
            # A champion recorded before versions carried their task, of another kind.
            self.svc.log.warning("champion_task_differs", model_name=name, model_version=version, task=task)
            model, version = None, None
        specs = [spec_for_task(x, task) for x in s.specs]
        resumes = self.resuming_family(specs, task) if model is not None else None
        learners = {sp: model if sp == resumes else build_model(sp, s.seed, task) for sp in specs}
        selection = Selection(
            learners,
            build=lambda sp: build_model(sp, s.seed, task),
            window=s.evaluation_window,
            cpu_budget=s.cpu_budget,  # one family alone is never subsampled nor dropped
            max_stride=s.max_stride,
        )
        self.task, self.spec, self.specs = task, specs[0], specs
        self.lifecycle = Lifecycle.from_policy(
            s,
            selection,
            build=lambda: build_model(specs[0], s.seed, task),
            next_version=lambda: self.client.registry.latest_version(name) + 1,
            champion=model,  # the lifecycle keeps its own copy, as registered
            champion_version=version,
        )
        self.metrics.task.labels(name, task).set(1)
        self.metrics.selection_budget.labels(name).set(s.cpu_budget)
        self.export_selection()
        self.svc.log.info(
            "task_decided",
            model_name=name,
            task=task,
            model_spec=specs[0],
            model_specs=",".join(specs),
            resumed_family=resumes,
            setting=s.task,
        )

    def resuming_family(self, specs: list[str], task: str) -> str | None:
        """The family that carries on from the champion: the champion's own (its record's
        params spec, in the task's form) if listed; a champion recorded without one, when a
        single family is listed, is taken for that family (as before selection)."""
        if self.champion_spec is None:
            return specs[0] if len(specs) == 1 else None
        try:
            spec = spec_for_task(self.champion_spec, task)
        except UnknownModelSpec:  # a family this code does not know: nothing resumes from it
            return None
        return spec if spec in specs else None

    # --- the selection's figures ----------------------------------------------------------------

    async def export_on_clock(self) -> None:
        self.export_selection()

    def export_selection(self) -> None:
        """Each family's figures to /metrics, and a log line for each change of plan."""
        lc = self.lifecycle
        st = lc.selection_status() if lc is not None else None
        if st is None:
            return
        m, name = self.metrics, self.name
        for change in plan_changes(self.exported, st):
            self.svc.log.info(
                "model_family_planned",
                model_name=name,
                family=change.spec,
                state=change.state,
                stride=change.stride,
                cost_s=change.cost_s,
                reason=change.reason,
            )
        learned_before = {} if self.exported is None else {f.spec: f.examples_learned for f in self.exported.families}
        score = m.family_mae if st.metric == "mae" else m.family_accuracy
        for f in st.families:
            if f.score is not None:
                score.labels(name, f.spec).set(f.score)
            m.family_leader.labels(name, f.spec).set(1 if f.leader else 0)
            for state in STATES:
                m.family_state.labels(name, f.spec, state).set(1 if state == f.state else 0)
            m.family_stride.labels(name, f.spec).set(f.stride)
            cost = f.cost_s if f.cost_s is not None else 0.0  # dropped: it costs nothing
            m.family_cost.labels(name, f.spec).set(cost)
            if st.rate is not None:
                m.family_share.labels(name, f.spec).set(st.rate * cost)
            m.family_learned.labels(name, f.spec).inc(f.examples_learned - learned_before.get(f.spec, 0))
            for stage in ("predict", "learn"):
                m.family_failures.labels(name, f.spec, stage)  # exported at 0 from the start
        if st.cpu_share is not None:
            m.selection_share.labels(name).set(st.cpu_share)
        if st.rate is not None:
            m.selection_rate.labels(name).set(st.rate)
        self.exported = st

    async def execute(self, actions: list[Action]) -> None:
        now = int(time.time() * 1000)
        for a in actions:
            if isinstance(a, Register):
                await self.register(a, now)
                continue
            if isinstance(a, Promote):
                # The lineage is what it replaced, which may differ from the champion at registration.
                await self.change(a.version, "champion", a.reason, a.metrics, now, parent_version=a.replaces)
                if a.replaces is not None:
                    await self.change(a.replaces, "archived", f"superseded by v{a.version}", {}, now)
                decision = "promote"
            elif isinstance(a, Reject):
                await self.change(a.version, "rejected", a.reason, a.metrics, now)
                decision = "reject"
            else:
                await self.change(a.to, "champion", f"re-promoted: {a.reason}", {}, now)
                await self.change(a.version, "rejected", a.reason, a.metrics, now)
                decision = "rollback"
            self.metrics.decisions.labels(self.name, decision).inc()
            self.svc.log.info(
                "model_lifecycle_decision", model_name=self.name, model_version=a.version, decision=decision
            )

    async def register(self, a: Register, now: int) -> None:
        assert self.task is not None and self.spec is not None, "register() before start()"
        s, name = self.settings, self.name
        parent = self.client.registry.champion(name)
        record = version_record(
            name=name,
            version=a.version,
            status="champion" if a.direct else "candidate",
            reason=a.reason,
            artifact=self.store.save(name, a.version, a.model),
            parent=parent["version"] if parent else None,
            trigger=a.trigger,
            window=a.window,
            params={"spec": a.spec or self.spec, "seed": str(s.seed), "trained": "true", "contender": a.contender},
            metrics=a.metrics,
            feature_set_version=a.feature_set_version or self.svc.common.effective_feature_set_version,
            code_version=code_version(),
            now_ms=now,
            task=self.task,
        )
        await self.write(record)
        if a.direct and parent is not None:
            await self.write(with_status(parent, "archived", f"superseded by v{a.version}", now))
        self.metrics.versions.labels(name, a.trigger.split(":")[0]).inc()
        self.svc.log.info(
            "model_version_registered",
            model_name=name,
            model_version=a.version,
            status=record["status"],
            trigger=a.trigger,
            contender=a.contender,
            family=record["params"]["spec"],
            parent_version=record["parent_version"],
            examples=a.window.get("examples"),
        )

    async def change(
        self, version: int, status: str, reason: str, metrics: dict[str, float], now: int, **extra: Any
    ) -> None:
        record = self.client.registry.get(self.name, version)
        if record is None:
            self.svc.log.error("model_version_unknown", model_name=self.name, model_version=version)
            return
        await self.write(
            {**with_status(record, status, reason, now), "metrics": {**record["metrics"], **metrics}, **extra}
        )

    async def write(self, record: dict[str, Any]) -> None:
        """Send ``record`` to the registry topic at once and apply what was sent (signed when a
        key is set, which the local registry then requires). See the module docstring for why
        not on the handler's batch."""

        async def send(key: bytes, value: bytes) -> None:
            await self.svc.publisher.send_bytes(MODELS_REGISTRY, key, value)

        await self.client.write(send, record)


def main() -> None:
    run_service(SERVICE, RetrainingSettings, Retraining)
