"""The retraining shell's handlers, in-process through the runtime's testing harness.

Registry records go out at once (``svc.publisher``), in the order written, whether a handler
or the registry follower writes them: never on a batch, whose transaction commits in its own
partition's order. Each test binds the publisher to a list of its own, so it can tell the two
apart: ``immediate`` holds only what went out at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from driftloop.services.retraining import app as app_module
from driftloop.services.retraining.app import Retraining
from driftloop.shared.kafka import OutRecord
from driftloop.shared.modelspec import build_model
from driftloop.shared.records import DriftAlert, LabeledExample, LabelValue
from driftloop.shared.registry import ChampionChange, registry_key, version_record, with_status
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.runtime import Service
from driftloop.shared.runtime.testing import Harness
from driftloop.shared.settings import CommonSettings, RetrainingSettings
from driftloop.shared.topics import ALERTS, EXAMPLES, MODELS_REGISTRY

#: Small enough that a version is registered after a few examples.
SMALL = {
    "first_version_after": 6,
    "version_every": 8,
    "promotion_min_examples": 4,
    "rollback_window": 4,
    "evaluation_window": 10,
    "challenger_buffer": 20,
}


class OfflineRegistry(RegistryClient):
    """A registry client with no broker: its copy is what the test applies to it."""

    async def load(self) -> None:
        return None

    async def follow(
        self,
        on_change: Callable[[ChampionChange], Awaitable[None]],
        on_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        return None


class Setup:
    def __init__(self, tmp_path: Path, *, offline: bool = False, **settings: Any) -> None:
        common = CommonSettings(artifact_store=f"file://{tmp_path}", feature_set_version="fs1")
        self.svc = Service("retraining", RetrainingSettings(metrics_port=0, **{**SMALL, **settings}), common)
        client = None
        if offline:
            client = OfflineRegistry("localhost:1", self.svc.topics.name(MODELS_REGISTRY), self.svc.serde, self.svc.log)
        self.shell = Retraining(self.svc, client)
        self.h = Harness(self.svc)
        #: What went out at once, through the publisher (not on a batch).
        self.immediate: list[OutRecord] = []

        async def produce_now(record: OutRecord) -> None:
            self.immediate.append(record)
            self.h.produced.append(record)

        self.svc.publisher.bind(produce_now)

    @property
    def name(self) -> str:
        return self.shell.name

    def started(self, task: str) -> Setup:
        """As the registry follower leaves it for an empty registry and a known task."""
        self.shell.start(task)
        self.shell.ready.set()
        return self

    def registry(self) -> list[dict[str, Any]]:
        return self.h.sent(MODELS_REGISTRY)

    def all_at_once(self) -> bool:
        """Whether every registry record since the harness was last cleared went out at once,
        in order, none on a batch."""
        produced = self.h.raw(MODELS_REGISTRY)
        at_once = [r for r in self.immediate if r[0] == self.svc.topics.name(MODELS_REGISTRY)]
        return at_once[len(at_once) - len(produced) :] == produced

    def metric(self, name: str, **labels: str) -> float | None:
        return self.svc.metrics.registry.get_sample_value(name, labels)


def example(i: int, label: LabelValue) -> LabeledExample:
    return {
        "event_id": f"x-{i}",
        "entity_id": "e1",
        "event_time": 1_700_000_000_000 + i,
        "features": {"a": float(i % 2), "b": 1.0},
        "feature_set_version": "fs1",
        "label": label,
        "label_time": 1_700_000_000_000 + i,
    }


def examples(start: int, n: int) -> list[LabeledExample]:
    return [example(i, bool(i % 2)) for i in range(start, start + n)]


def alert(alert_id: str, kind: str = "concept", model: str = "default") -> DriftAlert:
    now = int(time.time() * 1000)
    return {
        "alert_id": alert_id,
        "kind": kind,  # type: ignore[typeddict-item]
        "detector": "adwin",
        "subject": "accuracy",
        "statistic": 0.4,
        "threshold": 0.1,
        "model_name": model,
        "model_version": 1,
        "window_start_time": now - 1000,
        "window_end_time": now,
        "window_size": 100,
        "event_id": None,
        "created_at": now,
    }


def test_examples_and_alerts_wait_for_the_registry(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary")
    with pytest.raises(AssertionError, match="start condition"):
        asyncio.run(s.h.feed(EXAMPLES, example(0, True)))
    with pytest.raises(AssertionError, match="start condition"):
        asyncio.run(s.h.feed(ALERTS, alert("a1")))


def test_examples_register_the_first_trained_version_as_champion_on_the_batch(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary").started("binary")
    asyncio.run(s.h.feed(EXAMPLES, *examples(0, 5)))
    assert s.registry() == []  # first_version_after is 6
    asyncio.run(s.h.feed(EXAMPLES, *examples(5, 2)))

    (record,) = s.registry()
    assert (record["name"], record["version"], record["status"]) == ("default", 1, "champion")
    assert record["task"] == "binary"
    assert record["params"] == {"spec": "logreg", "seed": "42", "trained": "true", "contender": "continuous"}
    assert record["trigger"] == "label_volume" and record["parent_version"] is None
    assert record["training_window"]["examples"] == 6
    assert record["training_window"]["first_event_id"] == "x-0"
    assert record["feature_set_version"] == "fs1"
    assert s.h.keys(MODELS_REGISTRY) == [registry_key("default", 1)]
    assert s.all_at_once() and s.svc.outbox == []
    champion = s.shell.client.registry.champion("default")  # applied locally as sent
    assert champion is not None and champion["version"] == 1
    assert Path(record["artifact_uri"].removeprefix("file://")).exists()
    assert s.metric("driftloop_model_versions_registered_total", model="default", trigger="label_volume") == 1
    assert s.metric("driftloop_training_examples", model="default") == 7
    assert s.metric("driftloop_model_task_info", model="default", task="binary") == 1
    assert s.h.dead_letters() == []


def test_a_concept_alert_registers_a_fresh_challenger_as_candidate(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary").started("binary")
    asyncio.run(s.h.feed(EXAMPLES, *examples(0, 6)))
    s.h.clear()
    asyncio.run(s.h.feed(ALERTS, alert("a1")))

    (record,) = s.registry()
    assert (record["version"], record["status"], record["parent_version"]) == (2, "candidate", 1)
    assert record["trigger"] == "drift:a1" and record["task"] == "binary"
    assert record["params"]["contender"] == "challenger:a1" and record["params"]["spec"] == "logreg"
    assert record["metrics"]["buffer_examples"] == 6.0
    assert s.all_at_once()
    assert s.shell.lifecycle is not None and s.shell.lifecycle.pending == {"challenger:a1": 2}
    assert s.metric("driftloop_model_versions_registered_total", model="default", trigger="drift") == 1


def test_an_alert_for_another_model_or_of_input_drift_does_nothing(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary").started("binary")
    asyncio.run(s.h.feed(EXAMPLES, *examples(0, 6)))
    s.h.clear()
    asyncio.run(s.h.feed(ALERTS, alert("a1", model="other"), alert("a2", kind="input"), alert("a3", kind="prediction")))
    assert s.h.produced == []
    assert s.shell.lifecycle is not None and s.shell.lifecycle.pending == {}
    assert s.metric("driftloop_model_versions_registered_total", model="default", trigger="drift") is None


def test_a_candidate_another_writer_rejected_is_withdrawn(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary").started("binary")
    asyncio.run(s.h.feed(EXAMPLES, *examples(0, 6)))
    asyncio.run(s.h.feed(ALERTS, alert("a1")))
    candidate = s.shell.client.registry.get("default", 2)
    assert candidate is not None
    s.shell.client.registry.apply(with_status(candidate, "rejected", "an operator said so", 1))
    asyncio.run(s.shell.on_registry_batch())
    assert s.shell.lifecycle is not None and s.shell.lifecycle.pending == {}


def test_a_challenger_that_learnt_the_new_concept_is_promoted_and_its_parent_archived(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary", version_every=1000, challenger_buffer=4).started("binary")
    flipped = [example(i, not bool(i % 2)) for i in range(6, 20)]  # concept B: the labels flip
    # Each step on another input partition: under exactly-once their batches commit in
    # transactions of their own, in any order, so the registry records must not ride on them.
    asyncio.run(s.h.feed(EXAMPLES, *examples(0, 6), partition=0))  # v1, the champion, learns concept A
    asyncio.run(s.h.feed(EXAMPLES, *flipped[:4], partition=1))
    asyncio.run(s.h.feed(ALERTS, alert("a1"), partition=2))  # v2, fresh on the 4 most recent (concept B)
    asyncio.run(s.h.feed(EXAMPLES, *flipped[4:], partition=3))

    changes = [(r["version"], r["status"], r["parent_version"]) for r in s.registry()]
    assert changes == [(1, "champion", None), (2, "candidate", 1), (2, "champion", 1), (1, "archived", None)]
    promoted, archived = s.registry()[2:]
    assert promoted["status_reason"].startswith("promoted over v1: accuracy 1.000 vs champion 0.000")
    assert archived["status_reason"] == "superseded by v2"
    assert [h["status"] for h in promoted["status_history"]] == ["candidate"]
    assert s.metric("driftloop_model_decisions_total", model="default", decision="promote") == 1
    assert s.metric("driftloop_model_decisions_total", model="default", decision="reject") is None
    champion = s.shell.client.registry.champion("default")
    assert champion is not None and champion["version"] == 2
    assert s.all_at_once()  # in the order written


def test_a_label_the_decided_task_cannot_learn_is_dead_lettered_and_counted(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary").started("binary")
    asyncio.run(s.h.feed(EXAMPLES, example(0, True), example(1, "sky"), example(2, 2.5), example(3, False)))
    letters = s.h.dead_letters()
    assert [(d["event_id"], d["error_code"], d["service"]) for d in letters] == [
        ("x-1", "label_task_mismatch", "retraining"),
        ("x-2", "label_task_mismatch", "retraining"),
    ]
    assert "does not fit the binary task" in letters[0]["error_message"]
    assert [d["source_offset"] for d in letters] == [1, 2]
    assert s.metric("driftloop_label_task_mismatches_total", model="default", task="binary") == 2
    assert s.metric("driftloop_dead_letters_total", service="retraining", code="label_task_mismatch") == 2
    assert s.metric("driftloop_training_examples", model="default") == 2


def test_held_examples_the_decided_task_cannot_learn_are_refused_when_the_gate_decides(tmp_path: Path) -> None:
    s = Setup(tmp_path)  # task auto: the labels tell
    s.shell.ready.set()
    asyncio.run(s.h.feed(EXAMPLES, example(0, 1), example(1, True)))  # integral: held
    assert s.shell.gate.held == 2 and s.shell.lifecycle is None
    assert s.h.produced == []
    assert s.metric("driftloop_training_examples", model="default") is None

    asyncio.run(s.h.feed(EXAMPLES, example(2, 2.5)))  # a value: regression; the boolean is no number
    assert (s.shell.task, s.shell.spec) == ("regression", "linreg")
    letters = s.h.dead_letters()
    assert [(d["event_id"], d["error_code"], d["source_offset"]) for d in letters] == [
        ("x-1", "label_task_mismatch", 1)
    ]
    assert "does not fit the regression task" in letters[0]["error_message"]
    assert s.metric("driftloop_label_task_mismatches_total", model="default", task="regression") == 1
    assert s.metric("driftloop_dead_letters_total", service="retraining", code="label_task_mismatch") == 1
    assert s.metric("driftloop_model_task_info", model="default", task="regression") == 1
    assert s.metric("driftloop_training_examples", model="default") == 2
    assert s.all_at_once()


def test_a_label_that_is_no_number_at_all_is_refused_by_decoding_not_counted_as_a_mismatch(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.shell.ready.set()
    asyncio.run(s.h.feed(EXAMPLES, example(0, float("nan")), example(1, 1)))
    assert s.h.codes() == ["non_finite_number"]
    assert s.metric("driftloop_label_task_mismatches_total", model="default", task="undecided") is None
    assert s.shell.gate.held == 1 and s.shell.gate.task is None


def test_garbage_bytes_are_dead_lettered_as_decode_errors(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary").started("binary")
    asyncio.run(s.h.feed(EXAMPLES, b"not avro", example(1, True)))
    asyncio.run(s.h.feed(ALERTS, b"garbage alert"))
    letters = s.h.dead_letters()
    assert [d["error_code"] for d in letters] == ["decode_error", "decode_error"]
    assert [d["original_value"] for d in letters] == [b"not avro", b"garbage alert"]
    assert letters[0]["event_id"] is None
    assert s.metric("driftloop_training_examples", model="default") == 1


def _trained_version(s: Setup, version: int, status: str, task: str | None = "binary") -> dict[str, Any]:
    model = build_model("logreg", 42)
    for i in range(20):
        model.learn_one({"a": float(i % 2), "b": 1.0}, bool(i % 2))
    record = version_record(
        name="default",
        version=version,
        status=status,
        reason="test",
        artifact=s.shell.store.save("default", version, model),
        parent=None,
        trigger="label_volume",
        window={"examples": 20},
        params={"spec": "logreg", "seed": "42", "trained": "true", "contender": "continuous"},
        metrics={},
        feature_set_version="fs1",
        code_version="test",
        now_ms=1,
        task=task,
    )
    s.shell.client.registry.apply(record)
    return record


def test_the_follower_rejects_leftover_candidates_at_once_and_resumes_from_the_champion(tmp_path: Path) -> None:
    s = Setup(tmp_path, offline=True)  # task auto: the champion's record tells
    _trained_version(s, 1, "champion")
    _trained_version(s, 2, "candidate")
    asyncio.run(s.shell.follow_registry())

    assert s.shell.ready.is_set()
    (rejected,) = [s.svc.serde.decode("ModelVersion", value) for _, _, value, _ in s.immediate]
    assert (rejected["version"], rejected["status"]) == (2, "rejected")
    assert rejected["status_reason"] == "retraining restarted: its evaluation was lost"
    assert s.svc.outbox == []  # went out at once, not on a batch
    assert (s.shell.task, s.shell.champion_version) == ("binary", 1)
    assert s.shell.lifecycle is not None and s.shell.lifecycle.champion_version == 1

    # Resumed: the next cut is a candidate against champion v1.
    asyncio.run(s.h.feed(EXAMPLES, *examples(0, 8)))
    (candidate,) = [r for r in s.registry() if r["version"] == 3]
    assert (candidate["status"], candidate["parent_version"], candidate["task"]) == ("candidate", 1, "binary")
    assert len(s.immediate) == 2 and s.all_at_once()


def test_a_champion_of_another_task_than_the_setting_is_not_resumed(tmp_path: Path) -> None:
    s = Setup(tmp_path, offline=True, task="regression")
    _trained_version(s, 1, "champion", task="binary")
    asyncio.run(s.shell.follow_registry())
    assert s.shell.task == "regression" and s.shell.champion_version is None
    assert s.shell.lifecycle is not None and s.shell.lifecycle.champion_version is None
    assert s.immediate == []


def test_a_champion_changed_by_an_operator_is_scored_from_then_on(tmp_path: Path) -> None:
    s = Setup(tmp_path, offline=True, task="binary")
    asyncio.run(s.shell.follow_registry())
    asyncio.run(s.h.feed(EXAMPLES, *examples(0, 6)))  # v1, the first trained champion
    _trained_version(s, 5, "champion")
    asyncio.run(s.shell.on_champion_change(ChampionChange("default", 1, 5)))
    assert s.shell.lifecycle is not None and s.shell.lifecycle.champion_version == 5


# --- online model selection across families -------------------------------------------------------


def band(i: int, *, boom: bool = False) -> LabeledExample:
    """A band no straight line cuts out (label: ``a`` is 2 or 3), so a tree beats logreg;
    ``boom`` adds a feature the Fragile family refuses."""
    e = example(i, i % 7 in (2, 3))
    e["features"] = {"a": float(i % 7), "b": float(i % 5), **({"boom": 1.0} if boom else {})}
    return e


class Fragile:
    """A family's model that raises on any example carrying the feature ``boom``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        if "boom" in x:
            raise ValueError("boom is a value this family cannot take")
        return self.model.predict_proba_one(x)  # type: ignore[no-any-return]

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        self.model.learn_one(x, y)


class Logged:
    """A structlog stand-in that keeps what was logged: (event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = debug = _log

    def bind(self, **fields: Any) -> Logged:
        return self

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for e, fields in self.events if e == event]


def test_the_better_family_is_the_one_registered_and_named(tmp_path: Path) -> None:
    s = Setup(tmp_path, task="binary", model_specs="logreg,hat", first_version_after=400, evaluation_window=100)
    s.started("binary")
    asyncio.run(s.h.feed(EXAMPLES, *[band(i) for i in range(400)]))

    (record,) = s.registry()
    assert (record["version"], record["status"]) == (1, "champion")
    assert record["params"] == {"spec": "hat", "seed": "42", "trained": "true", "contender": "continuous"}
    assert "family hat, the best of 2 (accuracy over the last 100 examples: logreg 0.7" in record["status_reason"]
    assert record["metrics"]["prequential_accuracy"] > 0.95  # hat's own figure, not logreg's
    lc = s.shell.lifecycle
    assert lc is not None and lc.selection is not None and lc.selection.specs == ["logreg", "hat"]
    assert s.h.dead_letters() == []


def test_the_champions_family_resumes_from_it_and_the_others_start_fresh(tmp_path: Path) -> None:
    s = Setup(tmp_path, offline=True, model_specs="hat,logreg")
    _trained_version(s, 1, "champion")  # a logreg, recorded as such
    asyncio.run(s.shell.follow_registry())
    lc = s.shell.lifecycle
    assert lc is not None and lc.selection is not None and lc.champion_version == 1
    assert lc.selection.model("logreg") is s.shell.champion_model
    assert lc.selection.model("hat") is not s.shell.champion_model
    assert (s.shell.spec, s.shell.specs) == ("hat", ["hat", "logreg"])


def test_a_champion_of_a_family_not_listed_is_judged_against_but_resumes_no_family(tmp_path: Path) -> None:
    s = Setup(tmp_path, offline=True, model_specs="hat,arf")
    _trained_version(s, 1, "champion")  # a logreg
    asyncio.run(s.shell.follow_registry())
    lc = s.shell.lifecycle
    assert lc is not None and lc.selection is not None and lc.champion_version == 1
    assert all(lc.selection.model(sp) is not s.shell.champion_model for sp in ("hat", "arf"))


def test_a_family_that_fails_on_an_example_is_dead_lettered_for_it_and_the_others_learn_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(spec: str, seed: int, task: str | None = None) -> Any:
        model = build_model(spec, seed, task)
        return Fragile(model) if spec == "hat" else model

    monkeypatch.setattr(app_module, "build_model", build)
    s = Setup(tmp_path, task="binary", model_specs="logreg,hat", first_version_after=1000).started("binary")
    boom = {3, 50, 51}
    asyncio.run(s.h.feed(EXAMPLES, *[band(i, boom=i in boom) for i in range(60)]))

    letters = s.h.dead_letters()
    assert [(d["event_id"], d["error_code"], d["source_offset"]) for d in letters] == [
        (f"x-{i}", "learner_failed", i) for i in sorted(boom)
    ]
    assert letters[0]["error_message"].startswith("model family hat failed to predict the example: ValueError")
    assert letters[0]["original_value"] is not None
    assert s.metric("driftloop_model_family_failures_total", model="default", family="hat", stage="predict") == 3
    assert s.metric("driftloop_model_family_failures_total", model="default", family="hat", stage="learn") == 0
    assert s.metric("driftloop_dead_letters_total", service="retraining", code="learner_failed") == 3
    asyncio.run(s.h.tick())  # the selection's figures, on the clock
    learned = "driftloop_model_family_examples_learned_total"
    assert s.metric(learned, model="default", family="logreg") == 60
    assert s.metric(learned, model="default", family="hat") == 57
    assert s.metric("driftloop_model_family_failures_total", model="default", family="logreg", stage="predict") == 0
    assert s.metric("driftloop_training_examples", model="default") == 60


def test_the_selections_figures_are_exported_at_each_plan_with_their_values(tmp_path: Path) -> None:
    # A whole core: the default quarter is 250 us an example, about what hat costs here, and a
    # loaded machine would subsample it. What the budget decides is tested below.
    s = Setup(
        tmp_path,
        task="binary",
        model_specs="logreg,hat",
        first_version_after=1000,
        evaluation_window=100,
        cpu_budget=1.0,
    )
    s.started("binary")
    asyncio.run(s.h.feed(EXAMPLES, *[band(i) for i in range(200)]))  # plans at 100 and 200: exported then

    lc = s.shell.lifecycle
    assert lc is not None
    st = lc.selection_status()
    assert st is not None and st.examples == 200 and st.rate == pytest.approx(1000.0)  # one example per ms
    m = {"model": "default"}
    for f in st.families:
        fam = {**m, "family": f.spec}
        assert s.metric("driftloop_model_family_accuracy_ratio", **fam) == pytest.approx(f.score)
        assert s.metric("driftloop_model_family_leader", **fam) == (1.0 if f.spec == "hat" else 0.0)
        assert s.metric("driftloop_model_family_state", **fam, state="active") == 1
        assert s.metric("driftloop_model_family_state", **fam, state="dropped") == 0
        assert s.metric("driftloop_model_family_sampling_stride", **fam) == 1
        cost = s.metric("driftloop_model_family_cpu_seconds_per_example", **fam)
        assert cost == pytest.approx(f.cost_s) and 0 < cost < 0.01
        assert s.metric("driftloop_model_family_cpu_share_ratio", **fam) == pytest.approx(1000.0 * cost)
        assert s.metric("driftloop_model_family_examples_learned_total", **fam) == 200
        assert s.metric("driftloop_model_family_mae", **fam) is None  # a classifier has no MAE
    assert st.family("hat").score > st.family("logreg").score
    assert s.metric("driftloop_model_selection_cpu_budget_ratio", **m) == 1.0
    assert s.metric("driftloop_model_selection_cpu_share_ratio", **m) == pytest.approx(st.cpu_share)
    assert s.metric("driftloop_model_selection_offered_examples_per_second", **m) == pytest.approx(1000.0)


def test_a_family_the_budget_drops_is_logged_and_shown_dropped(tmp_path: Path) -> None:
    # A thousandth of a core at 1,000 examples/s is a microsecond an example: only the floor fits.
    s = Setup(tmp_path, task="binary", model_specs="logreg,hat", first_version_after=1000, cpu_budget=0.001)
    logged = Logged()
    s.svc.log = logged
    s.started("binary")
    asyncio.run(s.h.feed(EXAMPLES, *[band(i) for i in range(150)]))
    asyncio.run(s.h.tick())

    (planned,) = logged.named("model_family_planned")
    assert planned["family"] == "hat" and planned["state"] == "dropped" and planned["stride"] == 1
    assert planned["cost_s"] > 0 and planned["reason"].startswith("dropped: does not fit the CPU budget, 0.001 of")
    fam = {"model": "default", "family": "hat"}
    assert s.metric("driftloop_model_family_state", **fam, state="dropped") == 1
    assert s.metric("driftloop_model_family_state", **fam, state="active") == 0
    assert s.metric("driftloop_model_family_cpu_seconds_per_example", **fam) == 0
    assert s.metric("driftloop_model_family_examples_learned_total", **fam) == 100  # until the plan at 100
    assert s.metric("driftloop_model_family_examples_learned_total", model="default", family="logreg") == 150
    assert s.metric("driftloop_model_family_leader", model="default", family="logreg") == 1
    (decided,) = logged.named("task_decided")
    assert decided["model_specs"] == "logreg,hat"
