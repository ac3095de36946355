"""The point-in-time label join (features) and the prediction/label join (monitoring)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.services.features.join import OFFSET, LabelJoin, expired_label_letter, labeled_example
from driftloop.services.features.spec import FeatureSpec
from driftloop.services.monitoring.core import OutcomeJoin, outcome
from driftloop.shared.errors import LabelExpired
from driftloop.shared.serde import Serde


def vector(eid: str, features: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "event_id": eid,
        "entity_id": f"ent-{eid}",
        "event_time": 1_000 + len(eid),
        "features": {"x0": 1.0, "x1": 2.0} if features is None else features,
        "feature_set_version": "fs1",
        "ingest_time": 1_005,
    }


def label(eid: str, value: Any = True) -> dict[str, Any]:
    return {"event_id": eid, "entity_id": f"ent-{eid}", "label": value, "label_time": 9_000}


def prediction(eid: str, predicted: Any = True, version: int = 3) -> dict[str, Any]:
    return {
        "event_id": eid,
        "entity_id": f"ent-{eid}",
        "event_time": 1_000,
        "model_name": "default",
        "model_version": version,
        "role": "champion",
        "predicted": predicted,
        "scores": {"True": 0.8, "False": 0.2},
        "feature_set_version": "fs1",
        "ingest_time": None,
        "predicted_at": 1_010,
    }


# --- FeatureSpec ---------------------------------------------------------------------------------


def test_feature_spec_transform() -> None:
    spec = FeatureSpec("fs9")
    fields = {"n": 3, "f": 0.5, "yes": True, "no": False, "city": "Oslo", "gap": None}
    assert spec.transform(fields) == {"n": 3.0, "f": 0.5, "yes": 1.0, "no": 0.0, "city=Oslo": 1.0}
    assert all(type(v) is float for v in spec.transform(fields).values())
    vec = spec.vector({"event_id": "e", "entity_id": "u", "event_time": 5, "fields": fields, "ingest_time": 7})
    assert vec["feature_set_version"] == "fs9"
    assert vec["ingest_time"] == 7
    assert vec["features"]["city=Oslo"] == 1.0


# --- LabelJoin -----------------------------------------------------------------------------------


@pytest.mark.parametrize("vector_first", [True, False])
def test_label_join_either_order_gives_one_example(vector_first: bool) -> None:
    join = LabelJoin({}, {})
    features = {"x0": 0.25, "city=Oslo": 1.0}
    v, lab = vector("e1", features), label("e1", 0)
    if vector_first:
        assert join.on_vector(v) is None
        assert set(join.vectors) == {"e1"}
        example = join.on_label(lab)
    else:
        assert join.on_label(lab) is None
        assert set(join.labels) == {"e1"}
        example = join.on_vector(v)
    assert example == {
        "event_id": "e1",
        "entity_id": "ent-e1",
        "event_time": v["event_time"],
        "features": features,
        "feature_set_version": "fs1",
        "label": 0,
        "label_time": 9_000,
    }
    assert join.vectors == {} and join.labels == {}


def test_label_join_is_by_event_not_by_entity() -> None:
    """Two events of one entity: each label meets the features of its own event."""
    join = LabelJoin({}, {})
    first = {**vector("e1", {"x0": 1.0}), "entity_id": "meter-7"}
    second = {**vector("e2", {"x0": 2.0}), "entity_id": "meter-7"}
    assert join.on_vector(first) is None
    assert join.on_vector(second) is None
    ex2 = join.on_label({**label("e2", "late"), "entity_id": "meter-7"})
    ex1 = join.on_label({**label("e1", "early"), "entity_id": "meter-7"})
    assert ex1 is not None and ex2 is not None
    assert (ex1["features"], ex1["label"]) == ({"x0": 1.0}, "early")
    assert (ex2["features"], ex2["label"]) == ({"x0": 2.0}, "late")


def test_label_join_ids_do_not_cross() -> None:
    join = LabelJoin({}, {})
    assert join.on_vector(vector("a")) is None
    assert join.on_label(label("b")) is None
    assert set(join.vectors) == {"a"} and set(join.labels) == {"b"}
    ex = join.on_label(label("a", "spam"))
    assert ex is not None and ex["event_id"] == "a" and ex["label"] == "spam"
    assert set(join.labels) == {"b"}


def test_labeled_example_copies_the_feature_map() -> None:
    v = vector("e1")
    ex = labeled_example(v, label("e1"))
    assert ex["features"] == v["features"] and ex["features"] is not v["features"]


def test_label_join_redelivery_after_the_join_emits_nothing() -> None:
    """At-least-once: after a crash both inputs may be replayed; the join must not emit twice
    nor keep the replayed side waiting forever."""
    join = LabelJoin({}, {})
    examples = [join.on_vector(vector("e1")), join.on_label(label("e1"))]
    examples += [join.on_vector(vector("e1")), join.on_label(label("e1"))]  # both replayed
    assert sum(e is not None for e in examples) == 1
    assert join.vectors == {} and join.labels == {}


def test_label_join_remembers_joined_ids_in_the_given_mapping() -> None:
    joined = {"e1": True}  # e.g. restored from the changelog after a restart
    join = LabelJoin({}, {}, joined)
    assert join.on_label(label("e1")) is None
    assert join.on_vector(vector("e1")) is None
    assert join.vectors == {} and join.labels == {}
    assert join.on_vector(vector("e2")) is None
    assert join.on_label(label("e2")) is not None
    assert set(joined) == {"e1", "e2"}


@settings(max_examples=120, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(["vector", "label"]), st.integers(min_value=0, max_value=5)), max_size=40)
)
def test_label_join_property_with_redeliveries(ops: list[tuple[str, int]]) -> None:
    join = LabelJoin({}, {})
    emitted = []
    for kind, i in ops:
        eid = f"e{i}"
        out = join.on_vector(vector(eid, {"i": float(i)})) if kind == "vector" else join.on_label(label(eid, i))
        if out is not None:
            emitted.append(out)
    both = {f"e{i}" for k, i in ops if k == "vector"} & {f"e{i}" for k, i in ops if k == "label"}
    assert sorted(e["event_id"] for e in emitted) == sorted(both)
    assert all(e["features"] == {"i": float(e["label"])} for e in emitted)
    assert not (set(join.vectors) | set(join.labels)) & both


# One operation: ("vector" | "label", index of the event_id).
ops_once = st.integers(min_value=1, max_value=8).flatmap(
    lambda n: st.permutations([(kind, i) for i in range(n) for kind in ("vector", "label")])
)


@settings(max_examples=150, deadline=None)
@given(ops=ops_once, drop=st.sets(st.integers(min_value=0, max_value=15), max_size=6))
def test_label_join_property_each_side_once(ops: list[tuple[str, int]], drop: set[int]) -> None:
    """Any interleaving, each side delivered once (some sides never): one example per complete
    event_id with its own features and label, and no state left for joined ids."""
    ops = [op for k, op in enumerate(ops) if k not in drop]
    join = LabelJoin({}, {})
    emitted: list[dict[str, Any]] = []
    for kind, i in ops:
        eid = f"e{i}"
        out = join.on_vector(vector(eid, {"i": float(i)})) if kind == "vector" else join.on_label(label(eid, i))
        if out is not None:
            emitted.append(out)
    complete = {f"e{i}" for _, i in ops if ("vector", i) in ops and ("label", i) in ops}
    assert sorted(e["event_id"] for e in emitted) == sorted(complete)
    for e in emitted:
        i = int(e["event_id"][1:])
        assert e["features"] == {"i": float(i)} and e["label"] == i
    assert not (set(join.vectors) | set(join.labels)) & complete
    assert set(join.vectors) == {f"e{i}" for k, i in ops if k == "vector"} - complete
    assert set(join.labels) == {f"e{i}" for k, i in ops if k == "label"} - complete


# --- OutcomeJoin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_first", [True, False])
def test_outcome_join_either_order_gives_one_outcome(prediction_first: bool) -> None:
    join = OutcomeJoin({}, {}, {})
    p, lab = prediction("e1", predicted=True), label("e1", 1)
    first, second = (
        (join.on_prediction(p), join.on_label(lab)) if prediction_first else (join.on_label(lab), join.on_prediction(p))
    )
    assert first is None
    assert second == {
        "event_id": "e1",
        "entity_id": "ent-e1",
        "event_time": 1_000,
        "model_name": "default",
        "model_version": 3,
        "role": "champion",
        "predicted": True,
        "label": 1,
        "label_time": 9_000,
        "correct": True,
        "loss": 0.0,
        "scores": dict(p.get("scores") or {}),
    }
    assert join.predictions == {} and join.labels == {}
    assert "e1" in join.joined
    # Redeliveries of either side after the join are recognised and emit nothing.
    assert join.on_prediction(p) is None
    assert join.on_label(lab) is None
    assert join.predictions == {} and join.labels == {}


ops_with_redelivery = st.lists(
    st.tuples(
        st.sampled_from(["prediction", "label"]),
        st.integers(min_value=0, max_value=5),
        st.integers(min_value=0, max_value=2),
    ),
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(ops=ops_with_redelivery)
def test_outcome_join_property_with_redeliveries(ops: list[tuple[str, int, int]]) -> None:
    """Any interleaving with duplicates: at most one outcome per event_id, and exactly one for
    every event_id that has both sides; it pairs a delivered prediction with a delivered label."""
    join = OutcomeJoin({}, {}, {})
    outcomes: list[dict[str, Any]] = []
    for kind, i, variant in ops:
        eid = f"e{i}"
        if kind == "prediction":
            out = join.on_prediction(prediction(eid, predicted=variant == 0, version=variant))
        else:
            out = join.on_label(label(eid, variant == 0))
        if out is not None:
            outcomes.append(out)
    counts = Counter(o["event_id"] for o in outcomes)
    assert all(c == 1 for c in counts.values())
    both = {f"e{i}" for k, i, _ in ops if k == "prediction"} & {f"e{i}" for k, i, _ in ops if k == "label"}
    assert set(counts) == both
    for o in outcomes:
        i = int(o["event_id"][1:])
        sent_predictions = {(v == 0, v) for k, j, v in ops if k == "prediction" and j == i}
        sent_labels = {v == 0 for k, j, v in ops if k == "label" and j == i}
        assert (o["predicted"], o["model_version"]) in sent_predictions
        assert o["label"] in sent_labels
        assert o["correct"] == (o["predicted"] == o["label"])
    assert not (set(join.predictions) | set(join.labels)) & both


# --- outcome() -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "actual", "correct"),
    [
        (True, 1, True),
        (1, True, True),
        (True, 1.0, True),
        (0, False, True),
        (False, 0, True),
        (False, 1, False),
        (True, 0, False),
        (True, 2, False),
        ("spam", "spam", True),
        ("spam", "ham", False),
        ("1", 1, True),
        (1, "1.0", True),
        ("True", True, True),
        ("yes", True, False),
        (2.5, 2.5, True),
        (None, False, False),
        (None, "None", False),
    ],
)
def test_outcome_correct_and_loss(predicted: Any, actual: Any, correct: bool) -> None:
    out = outcome(prediction("e", predicted=predicted), label("e", actual))
    assert out["correct"] is correct
    assert out["loss"] == (0.0 if correct else 1.0)
    assert out["predicted"] == predicted
    assert out["label"] == actual


# --- expired labels ------------------------------------------------------------------------------


def test_an_expired_label_becomes_a_label_expired_dead_letter(serde: Serde) -> None:
    join = LabelJoin({}, {}, {}, ttl_ms=1_000)
    lab = {**label("ghost", 1), OFFSET: 41}
    assert join.on_label(lab, now_ms=9_000, shard=2) is None
    assert join.expire(10_000, shard=2) == []  # not past the TTL yet
    ((side, waited),) = join.expire(10_001, shard=2)
    assert side == "right" and waited == lab
    original = serde.encode("Label", {k: v for k, v in waited.items() if k != OFFSET})
    letter = expired_label_letter(waited, original, "t.labels.clean", 2, 1_000, now_ms=123)
    decoded = serde.decode("DeadLetter", serde.encode("DeadLetter", letter))
    assert decoded["error_code"] == "label_expired" == LabelExpired.code
    assert (decoded["source_topic"], decoded["source_partition"], decoded["source_offset"]) == ("t.labels.clean", 2, 41)
    assert decoded["event_id"] == "ghost" and decoded["original_key"] == b"ent-ghost"
    assert serde.decode("Label", decoded["original_value"]) == label("ghost", 1)
    assert "ghost" in decoded["error_message"] and "1 s" in decoded["error_message"]


def test_a_label_that_met_its_vector_never_expires_into_a_dead_letter() -> None:
    join = LabelJoin({}, {}, {}, ttl_ms=1_000)
    assert join.on_vector(vector("e1", {"x0": 1.0}), now_ms=0) is None
    assert join.on_label({**label("e1", 0), OFFSET: 3}, now_ms=10) is not None
    assert join.expire(100_000) == []
