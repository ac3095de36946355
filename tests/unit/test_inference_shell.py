"""The inference shell's handlers, in-process through the runtime's testing harness."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from driftloop.services.inference.app import Inference
from driftloop.shared.modelspec import build_model
from driftloop.shared.records import FeatureVector
from driftloop.shared.registry import version_record
from driftloop.shared.runtime import Service
from driftloop.shared.runtime.testing import Harness
from driftloop.shared.settings import CommonSettings, InferenceSettings
from driftloop.shared.topics import FEATURES, PREDICTIONS


def vector(i: int, fsv: str = "v1") -> FeatureVector:
    return {
        "event_id": f"e{i}",
        "entity_id": f"u{i % 3}",
        "event_time": 1_700_000_000_000 + i,
        "features": {"x": float(i % 2), "y": 1.0},
        "feature_set_version": fsv,
        "ingest_time": int(time.time() * 1000),
    }


def register(shell: Inference, version: int, status: str = "champion", fsv: str = "v1") -> dict[str, Any]:
    model = build_model("logreg", 7)
    for i in range(50):
        model.learn_one({"x": float(i % 2), "y": 1.0}, bool(i % 2))
    record = version_record(
        name=shell.name,
        version=version,
        status=status,
        reason="test",
        artifact=shell.store.save(shell.name, version, model),
        parent=None,
        trigger="test",
        window={"examples": 50},
        params={"spec": "logreg", "seed": "7", "trained": "true"},
        metrics={},
        feature_set_version=fsv,
        code_version="test",
        now_ms=int(time.time() * 1000),
        task="binary",
    )
    shell.client.registry.apply(record)
    return record


def service(tmp_path: Path, **settings: Any) -> tuple[Inference, Harness]:
    common = CommonSettings(artifact_store=f"file://{tmp_path}", feature_set_version="v1")
    svc = Service("inference", InferenceSettings(metrics_port=0, **settings), common)
    shell = Inference(svc)
    return shell, Harness(svc)


def test_features_wait_for_a_champion(tmp_path: Path) -> None:
    _, h = service(tmp_path)
    with pytest.raises(AssertionError, match="start condition"):
        asyncio.run(h.feed(FEATURES, vector(1)))


def test_each_vector_gets_the_champions_prediction_keyed_by_entity(tmp_path: Path) -> None:
    shell, h = service(tmp_path, shadow_baseline=False)

    async def run() -> None:
        register(shell, 2)
        await shell.load(2)
        shell.model_loaded.set()
        await h.feed(FEATURES, *(vector(i) for i in range(4)))

    asyncio.run(run())
    predictions = h.sent(PREDICTIONS)
    assert [p["event_id"] for p in predictions] == ["e0", "e1", "e2", "e3"]
    assert {p["role"] for p in predictions} == {"champion"}
    assert {p["model_version"] for p in predictions} == {2}
    assert h.keys(PREDICTIONS) == [f"u{i % 3}".encode() for i in range(4)]
    assert all(0.0 <= score <= 1.0 for p in predictions for score in p["scores"].values())
    assert h.dead_letters() == []


def test_a_swap_changes_the_version_between_records(tmp_path: Path) -> None:
    shell, h = service(tmp_path, shadow_baseline=False)

    async def run() -> None:
        register(shell, 2)
        await shell.load(2)
        shell.model_loaded.set()
        await h.feed(FEATURES, vector(1))
        register(shell, 3)
        await shell.load(3)
        await h.feed(FEATURES, vector(2))

    asyncio.run(run())
    assert [p["model_version"] for p in h.sent(PREDICTIONS)] == [2, 3]


def test_candidates_and_the_baseline_predict_in_shadow(tmp_path: Path) -> None:
    shell, h = service(tmp_path)

    async def run() -> None:
        register(shell, 2)
        register(shell, 3, status="candidate")
        await shell.load(2)
        await shell.on_registry_batch()
        shell.model_loaded.set()
        await h.feed(FEATURES, vector(1))

    asyncio.run(run())
    roles = sorted((p["role"], p["model_version"]) for p in h.sent(PREDICTIONS))
    assert roles == [("baseline", 2), ("challenger", 3), ("champion", 2)]


def test_bad_input_is_dead_lettered_with_its_code_and_event_id(tmp_path: Path) -> None:
    shell, h = service(tmp_path, shadow_baseline=False)

    async def run() -> None:
        register(shell, 2)
        await shell.load(2)
        shell.model_loaded.set()
        await h.feed(FEATURES, b"not avro", vector(1, fsv="v9"), vector(2))

    asyncio.run(run())
    letters = h.dead_letters()
    assert [d["error_code"] for d in letters] == ["decode_error", "feature_set_mismatch"]
    assert letters[0]["original_value"] == b"not avro"
    assert letters[1]["event_id"] == "e1"
    assert [p["event_id"] for p in h.sent(PREDICTIONS)] == ["e2"]


def test_a_refused_artifact_keeps_the_current_champion(tmp_path: Path) -> None:
    shell, h = service(tmp_path, shadow_baseline=False)

    async def run() -> None:
        register(shell, 2)
        await shell.load(2)
        shell.model_loaded.set()
        bad = register(shell, 3)
        Path(bad["artifact_uri"].removeprefix("file://")).write_bytes(b"tampered")
        await shell.load(3)
        await h.feed(FEATURES, vector(1))

    asyncio.run(run())
    assert [p["model_version"] for p in h.sent(PREDICTIONS)] == [2]
    refused = shell.metrics.load_failures.labels(shell.name, "artifact_sha256_mismatch")._value.get()
    assert refused == 1


def test_feeding_a_record_of_the_wrong_shape_fails_the_test_clearly(tmp_path: Path) -> None:
    shell, h = service(tmp_path)
    shell.model_loaded.set()
    with pytest.raises(AssertionError, match="is not a FeatureVector"):
        asyncio.run(h.feed(FEATURES, {"event_id": "e1"}))  # type: ignore[arg-type]


WINDOWED = "v1-w0123abcd"  # a feature set with windows over the stream


def _request(inputs: list[dict[str, Any]]) -> Any:
    from driftloop.services.inference import oip

    return oip.InferenceRequest.model_validate({"inputs": inputs})


def _entity(*ids: str) -> dict[str, Any]:
    return {"name": "entity_id", "shape": [len(ids)], "datatype": "BYTES", "data": list(ids)}


def test_a_windowed_model_answers_an_entity_from_its_latest_vector_on_the_stream(tmp_path: Path) -> None:
    from driftloop.services.inference import oip

    shell, h = service(tmp_path, shadow_baseline=False)

    async def run() -> tuple[Any, Any, Any]:
        register(shell, 2, fsv=WINDOWED)
        await shell.load(2)
        shell.model_loaded.set()
        await h.feed(FEATURES, *(vector(i, WINDOWED) for i in range(6)))  # u0: e0, e3; u1: e1, e4
        same = await shell.infer("default", None, _request([_entity("u1", "u0")]))
        x_given = {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}
        overridden = await shell.infer("default", None, _request([_entity("u1"), x_given]))
        await asyncio.gather(*shell._publishing)
        return same, overridden, h.sent(PREDICTIONS)

    same, overridden, predictions = asyncio.run(run())
    by_event = {p["event_id"]: p for p in predictions}
    scores = {o.name: o.data for o in same.outputs}["scores"]
    # e4 (x=0) and e3 (x=1) are u1's and u0's latest vectors: the same scores as on the stream.
    classes = sorted(by_event["e4"]["scores"])
    expected = [by_event[e]["scores"][c] for e in ("e4", "e3") for c in classes]
    assert scores == pytest.approx(expected)
    # The row's own value wins over the state's: u1's latest has x=0, the row x=1, as e3 had.
    over = {o.name: o.data for o in overridden.outputs}["scores"]
    assert over == pytest.approx([by_event["e3"]["scores"][c] for c in classes])
    assert over != pytest.approx([by_event["e4"]["scores"][c] for c in classes])
    stream = {f"e{i}" for i in range(6)}
    http = [p for p in predictions if p["event_id"] not in stream]
    assert len(http) == 3
    assert [p["entity_id"] for p in http][:2] == ["u1", "u0"]
    assert {p["feature_set_version"] for p in http} == {WINDOWED}

    # An entity with no event yet, a row without an entity, and no state kept at all.
    with pytest.raises(oip.EntityUnknown, match="no window state of v1-w0123abcd for entity 'u9' here"):
        asyncio.run(shell.infer("default", None, _request([_entity("u1", "u9")])))
    x_only = {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}
    with pytest.raises(oip.WindowedFeatures, match="give each row's entity_id"):
        asyncio.run(shell.infer("default", None, _request([x_only])))
    with pytest.raises(oip.UnknownInput, match="no input 'z'"):
        z = {"name": "z", "shape": [1], "datatype": "FP64", "data": [1.0]}
        asyncio.run(shell.infer("default", None, _request([_entity("u1"), z])))


def test_with_no_entity_states_kept_a_windowed_model_needs_the_stream(tmp_path: Path) -> None:
    from driftloop.services.inference import oip

    shell, h = service(tmp_path, shadow_baseline=False, entity_states=0)

    async def run() -> None:
        register(shell, 2, fsv=WINDOWED)
        await shell.load(2)
        shell.model_loaded.set()
        await h.feed(FEATURES, vector(1, WINDOWED))
        await shell.infer("default", None, _request([_entity("u1")]))

    with pytest.raises(oip.WindowedFeatures, match="send its events to Kafka"):
        asyncio.run(run())


def test_entity_states_keep_the_latest_vector_of_the_most_recently_updated_entities() -> None:
    from driftloop.services.inference.serving import EntityStates

    states = EntityStates(2)
    for i, entity in enumerate(("a", "b", "a", "c")):
        states.remember({**vector(i), "entity_id": entity})
    assert len(states) == 2
    assert states.get("b") is None  # the least recently updated went first
    a, c = states.get("a"), states.get("c")
    assert a is not None and a["event_id"] == "e2" and c is not None and c["event_id"] == "e3"
    none = EntityStates(0)
    none.remember(vector(1))
    assert len(none) == 0 and none.get("u1") is None
