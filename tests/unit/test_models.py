"""The registry state, the artifact store, model specs, serving, training and drift monitoring."""

from __future__ import annotations

import hashlib
import math
import pickle
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.models_cli import list_rows
from driftloop.services.inference.serving import Server
from driftloop.services.monitoring.core import Monitor, RollingAccuracy
from driftloop.shared.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactOutsideStore,
    ConfigError,
    FeatureSetMismatch,
    UnknownModelSpec,
)
from driftloop.shared.modelspec import SPECS, build_model, is_regressor, predict, same_class
from driftloop.shared.registry import ArtifactStore, ChampionChange, Registry, registry_key, version_record, with_status
from driftloop.shared.resources import SCHEMA_DIR
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.streams import sea_stream

SEA = sea_stream(900, seed=11)
CLASSIFIERS = ("logreg", "hat", "arf")
REGRESSORS = ("linreg", "hatr", "arfr")


def friedman(n: int, seed: int = 3) -> list[tuple[dict[str, float], float]]:
    """River's Friedman regression stream: y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4 + noise."""
    from river.datasets import synth

    return [({f"x{k}": float(v) for k, v in x.items()}, float(y)) for x, y in synth.Friedman(seed=seed).take(n)]


FRIEDMAN = friedman(1200)


def record(version: int, status: str, name: str = "default", now_ms: int = 1_000) -> dict[str, Any]:
    return version_record(
        name=name,
        version=version,
        status=status,
        reason=f"test {status}",
        artifact=(f"file:///store/{name}/v{version}.pkl", "ab" * 32),
        parent=version - 1 or None,
        trigger="label_volume",
        window={"examples": 10 * version, "first_event_id": "r-0", "last_event_id": f"r-{10 * version - 1}"},
        params={"spec": "logreg", "seed": "42"},
        metrics={"prequential_accuracy": 0.75},
        feature_set_version="fs1",
        code_version="test",
        now_ms=now_ms,
    )


# --- Registry ------------------------------------------------------------------------------------


def test_registry_champion_changes() -> None:
    reg = Registry()
    assert reg.champion("default") is None
    assert reg.latest_version("default") == 0
    assert reg.apply(record(1, "candidate")) is None
    assert reg.champion("default") is None
    assert reg.apply(record(1, "champion")) == ChampionChange("default", None, 1)
    assert reg.apply(record(2, "candidate")) is None
    assert reg.champion("default")["version"] == 1
    assert reg.apply(record(2, "champion")) == ChampionChange("default", 1, 2)
    assert reg.apply(record(1, "archived")) is None  # archiving the old champion changes nothing
    assert reg.champion("default")["version"] == 2
    assert reg.latest_version("default") == 2
    assert len(reg) == 2
    assert reg.records_applied == 5
    assert [r["status"] for r in reg.versions("default")] == ["archived", "champion"]


def test_archived_champion_falls_back_to_the_newest_other_champion() -> None:
    reg = Registry()
    reg.apply(record(1, "champion"))
    reg.apply(record(2, "champion"))
    reg.apply(record(3, "champion"))
    assert reg.apply(with_status(record(3, "champion"), "rejected", "rollback", 2_000)) == ChampionChange(
        "default", 3, 2
    )
    assert reg.champion("default")["version"] == 2
    assert reg.apply(with_status(record(2, "champion"), "archived", "bad", 3_000)) == ChampionChange("default", 2, 1)
    assert reg.apply(with_status(record(1, "champion"), "archived", "bad", 4_000)) is None
    assert reg.champion("default") is None
    assert reg.latest_version("default") == 3


def test_replaying_the_same_record_is_idempotent() -> None:
    reg = Registry()
    rec = record(1, "champion")
    assert reg.apply(rec) is not None
    assert reg.apply(dict(rec)) is None
    assert reg.champion("default") == rec
    assert len(reg) == 1


def test_a_later_record_for_a_version_wins() -> None:
    reg = Registry()
    reg.apply(record(4, "candidate"))
    promoted = with_status(record(4, "candidate"), "champion", "promoted", 5_000)
    assert reg.apply(promoted) == ChampionChange("default", None, 4)
    assert reg.get("default", 4)["status_reason"] == "promoted"
    assert reg.get("default", 4)["updated_at"] == 5_000
    assert reg.get("default", 4)["created_at"] == 1_000
    assert reg.get("default", 5) is None


def test_models_are_independent_by_name() -> None:
    reg = Registry()
    reg.apply(record(1, "champion", name="a"))
    assert reg.apply(record(7, "champion", name="b")) == ChampionChange("b", None, 7)
    reg.apply(with_status(record(1, "champion", name="a"), "archived", "x", 2))
    assert reg.champion("a") is None
    assert reg.champion("b")["version"] == 7
    assert reg.latest_version("a") == 1
    assert reg.latest_version("b") == 7
    assert [r["name"] for r in reg.versions("b")] == ["b"]


def test_version_numbers_are_ordered_numerically() -> None:
    reg = Registry()
    for v in (2, 10, 9):
        reg.apply(record(v, "candidate"))
    assert reg.latest_version("default") == 10
    assert [r["version"] for r in reg.versions("default")] == [2, 9, 10]


def test_version_record_and_with_status() -> None:
    rec = record(3, "candidate", now_ms=42)
    assert rec["training_window"] == {
        "examples": 30,
        "start_time": None,
        "end_time": None,
        "first_event_id": "r-0",
        "last_event_id": "r-29",
    }
    assert rec["parent_version"] == 2
    assert (rec["created_at"], rec["updated_at"]) == (42, 42)
    changed = with_status(rec, "archived", "superseded", 99)
    assert (changed["status"], changed["status_reason"], changed["updated_at"]) == ("archived", "superseded", 99)
    assert rec["status"] == "candidate"  # the original is not mutated
    assert changed["status_history"] == [{"status": "candidate", "reason": "test candidate", "at": 42}]
    again = with_status(changed, "champion", "re-promoted", 120)
    assert [h["status"] for h in again["status_history"]] == ["candidate", "archived"]
    assert again["status_history"][-1] == {"status": "archived", "reason": "superseded", "at": 99}
    with pytest.raises(ValueError):
        with_status(rec, "retired", "x", 1)
    with pytest.raises(ValueError):
        record(1, "live")
    assert registry_key("default", 3) == b"default:3"


def test_version_record_fits_the_model_version_schema() -> None:
    serde = Serde(FileSchemaRegistry(SCHEMA_DIR))
    rec = record(2, "champion")
    assert serde.decode("ModelVersion", serde.encode("ModelVersion", rec)) == rec
    assert record(1, "candidate")["parent_version"] is None


# --- ArtifactStore -------------------------------------------------------------------------------


def test_artifact_round_trip(tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "my store").as_uri())  # a space, percent-encoded in the URI
    model = build_model("logreg", 1)
    for x, y in SEA.rows[:50]:
        model.learn_one(x, y)
    uri, sha = store.save("default", 3, model)
    path = tmp_path / "my store" / "default" / "v3.pkl"
    assert uri == path.as_uri()
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = store.load(uri, sha)
    x = SEA.rows[60][0]
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)
    assert [p.name for p in path.parent.iterdir()] == ["v3.pkl"]  # no temp files left behind


def test_saving_a_version_again_replaces_it(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path.as_uri())
    uri1, sha1 = store.save("m", 1, {"a": 1})
    uri2, sha2 = store.save("m", 1, {"a": 2})
    assert uri1 == uri2 and sha1 != sha2
    assert store.load(uri2, sha2) == {"a": 2}
    with pytest.raises(ArtifactIntegrityError):
        store.load(uri1, sha1)


def test_relative_store_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("file://./artifacts")
    assert store.root == tmp_path.resolve() / "artifacts"
    uri, sha = store.save("m", 1, [1, 2, 3])
    assert store.load(uri, sha) == [1, 2, 3]


def test_tampered_artifact_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path.as_uri())
    uri, sha = store.save("m", 1, {"weights": [0.1, 0.2]})
    path = tmp_path / "m" / "v1.pkl"
    path.write_bytes(pickle.dumps({"weights": [9.9, 9.9]}))  # valid pickle, different bytes
    with pytest.raises(ArtifactIntegrityError) as info:
        store.load(uri, sha)
    assert info.value.code == "artifact_sha256_mismatch"
    data = bytearray(pickle.dumps({"weights": [0.1, 0.2]}, protocol=pickle.HIGHEST_PROTOCOL))
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError):
        store.load(uri, sha)


def test_artifact_outside_the_store_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "store").as_uri())
    outside = tmp_path / "store-evil" / "v1.pkl"  # shares the root's prefix as a string
    outside.parent.mkdir()
    data = pickle.dumps("payload")
    outside.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    for uri in (outside.as_uri(), f"{(tmp_path / 'store').as_uri()}/../store-evil/v1.pkl", "file:///etc/passwd"):
        with pytest.raises(ArtifactOutsideStore) as info:
            store.load(uri, sha)
        assert info.value.code == "artifact_outside_store"


def test_symlink_out_of_the_store_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "store").as_uri())
    target = tmp_path / "secret.pkl"
    data = pickle.dumps("secret")
    target.write_bytes(data)
    link = tmp_path / "store" / "m" / "v1.pkl"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    with pytest.raises(ArtifactOutsideStore):
        store.load(link.as_uri(), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("uri", ["s3://bucket/m/v1.pkl", "http://example.com/v1.pkl", "/abs/path/v1.pkl"])
def test_non_file_artifact_uri_is_refused(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ArtifactOutsideStore):
        ArtifactStore(tmp_path.as_uri()).load(uri, "0" * 64)


@pytest.mark.parametrize("uri", ["s3://bucket/artifacts", "./artifacts", "https://example.com/a"])
def test_non_file_store_is_a_config_error(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        ArtifactStore(uri)
    assert info.value.code == "config_error"


def test_missing_artifact_is_an_artifact_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path.as_uri())
    with pytest.raises(ArtifactError) as info:
        store.load((tmp_path / "m" / "v9.pkl").as_uri(), "0" * 64)
    assert type(info.value) is ArtifactError


# --- model specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", CLASSIFIERS)
def test_every_classifier_spec_builds_learns_and_predicts(spec: str) -> None:
    model = build_model(spec, 7)
    assert not is_regressor(model)
    for x, y in SEA.rows[:200]:
        model.learn_one(x, y)
    predicted, scores = predict(model, SEA.rows[250][0])
    assert predicted in (True, False)
    assert set(scores) <= {"True", "False"} and scores
    assert abs(sum(scores.values()) - 1.0) < 1e-6
    assert scores[str(predicted)] == max(scores.values())


def test_spec_names() -> None:
    assert set(SPECS) == {*CLASSIFIERS, *REGRESSORS}


def _regression_run(spec: str, seed: int, rows: list[tuple[dict[str, float], float]]) -> list[Any]:
    model = build_model(spec, seed)
    out = []
    for x, y in rows:
        out.append(predict(model, x))
        model.learn_one(x, y)
    return out


@pytest.mark.parametrize("spec", REGRESSORS)
def test_every_regressor_spec_predicts_a_value_without_scores_and_learns(spec: str) -> None:
    assert is_regressor(build_model(spec, 7))
    runs = _regression_run(spec, 7, FRIEDMAN)
    assert all(type(value) is float and scores == {} for value, scores in runs)
    errors = [abs(value - y) for (value, _), (_, y) in zip(runs, FRIEDMAN, strict=True)]
    # Learning, not a constant: on the last 200 examples it beats the best constant (the mean).
    ys = [y for _, y in FRIEDMAN]
    mean = sum(ys) / len(ys)
    assert sum(errors[-200:]) < 0.7 * sum(abs(y - mean) for y in ys[-200:])
    assert len({value for value, _ in runs[-200:]}) > 100


@pytest.mark.parametrize("spec", ["hatr", "arfr"])
def test_same_seed_same_data_same_predictions_for_randomised_regressors(spec: str) -> None:
    first, second = _regression_run(spec, 5, FRIEDMAN[:600]), _regression_run(spec, 5, FRIEDMAN[:600])
    assert first == second
    assert len({value for value, _ in first}) > 300  # the model really predicted


def test_the_forest_regressor_seed_matters() -> None:
    assert _regression_run("arfr", 5, FRIEDMAN[:600]) != _regression_run("arfr", 6, FRIEDMAN[:600])


@pytest.mark.parametrize("spec", ["", "LOGREG", "xgboost"])
def test_unknown_spec(spec: str) -> None:
    with pytest.raises(UnknownModelSpec) as info:
        build_model(spec, 1)
    assert info.value.code == "unknown_model_spec"
    assert "logreg" in str(info.value)


def test_untrained_tree_predicts_nothing() -> None:
    assert predict(build_model("hat", 1), {"x0": 1.0}) == (None, {})


def _predictions(spec: str, seed: int, n: int = 600) -> list[Any]:
    model = build_model(spec, seed)
    out = []
    for x, y in SEA.rows[:n]:
        out.append(predict(model, x))
        model.learn_one(x, y)
    return out


def test_same_seed_same_data_same_predictions_for_hat() -> None:
    first, second = _predictions("hat", 5), _predictions("hat", 5)
    assert first == second
    assert sum(p is not None for p, _ in first) > 500  # the tree really predicted


def test_same_seed_same_data_same_predictions_for_arf() -> None:
    first = _predictions("arf", 1, n=120)
    assert first == _predictions("arf", 1, n=120)
    assert first[-1][0] is not None


def test_same_class() -> None:
    assert same_class(True, 1) and same_class(1.0, True) and same_class("0", False)
    assert not same_class(None, None)
    assert not same_class("a", "b")
    assert same_class("a", "a")


# --- Server --------------------------------------------------------------------------------------


class Constant:
    """A model that always answers ``cls`` (and records what it was asked)."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        self.seen: list[dict[str, float]] = []

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        self.seen.append(x)
        return {self.cls: 0.9, "other": 0.1}


def fvector(eid: str, fs: str = "fs1") -> dict[str, Any]:
    return {
        "event_id": eid,
        "entity_id": "u",
        "event_time": 5,
        "features": {"x0": 1.5},
        "feature_set_version": fs,
        "ingest_time": 4,
    }


def test_server_needs_a_model() -> None:
    with pytest.raises(RuntimeError):
        Server().predict(fvector("e1"), 10)


def test_server_predicts_with_the_swapped_model_and_names_its_version() -> None:
    server = Server()
    old, new = Constant("spam"), Constant("ham")
    server.swap(old, record(1, "champion"))
    p1 = server.predict(fvector("e1"), now_ms=100)
    server.swap(new, record(2, "champion"))
    p2 = server.predict(fvector("e2"), now_ms=200)
    assert (p1["predicted"], p1["model_version"]) == ("spam", 1)
    assert (p2["predicted"], p2["model_version"]) == ("ham", 2)
    assert p2["scores"] == {"ham": 0.9, "other": 0.1}
    assert p2["model_name"] == "default" and p2["role"] == "champion"
    assert (p2["event_id"], p2["predicted_at"], p2["ingest_time"]) == ("e2", 200, 4)
    assert old.seen == [{"x0": 1.5}] and new.seen == [{"x0": 1.5}]
    assert server.swaps == 2
    assert server.served is not None and server.served.version == 2


def test_server_feature_set_mismatch() -> None:
    server = Server()
    model = Constant(True)
    server.swap(model, record(1, "champion"))  # trained on fs1
    with pytest.raises(FeatureSetMismatch) as info:
        server.predict(fvector("e1", fs="fs2"), 1)
    assert info.value.code == "feature_set_mismatch"
    assert model.seen == []  # the model was not asked


def test_server_challengers_predict_in_shadow_until_unloaded() -> None:
    server = Server()
    server.swap(Constant("champ"), record(1, "champion"))
    assert server.predict_challengers(fvector("e0"), 1) == []
    c3, c2 = Constant("three"), Constant("two")
    server.add_challenger(c3, record(3, "candidate"))
    server.add_challenger(c2, record(2, "candidate"))
    assert server.challengers == [2, 3]
    shadows = server.predict_challengers(fvector("e1"), now_ms=50)
    assert [(p["model_version"], p["role"], p["predicted"]) for p in shadows] == [
        (2, "challenger", "two"),
        (3, "challenger", "three"),
    ]
    assert all(p["event_id"] == "e1" and p["predicted_at"] == 50 for p in shadows)
    assert server.predict(fvector("e1"), 50)["predicted"] == "champ"  # the champion is untouched
    # A promoted challenger is swapped in as it is: no second load of its artifact.
    assert server.challenger_model(2) is c2 and server.challenger_model(7) is None
    assert server.remove_challenger(2) and not server.remove_challenger(2)
    assert server.challenger_model(2) is None
    assert [p["model_version"] for p in server.predict_challengers(fvector("e2"), 60)] == [3]
    assert c2.seen == [{"x0": 1.5}] and len(c3.seen) == 2


def test_a_challenger_of_another_feature_set_abstains() -> None:
    server = Server()
    other = Constant("x")
    server.add_challenger(other, {**record(4, "candidate"), "feature_set_version": "fs2"})
    server.add_challenger(Constant("y"), record(5, "candidate"))
    assert [p["model_version"] for p in server.predict_challengers(fvector("e1"), 1)] == [5]
    assert other.seen == []


def test_challenger_prediction_fits_the_prediction_schema() -> None:
    serde = Serde(FileSchemaRegistry(SCHEMA_DIR))
    server = Server()
    server.add_challenger(Constant(True), record(2, "candidate"))
    (p,) = server.predict_challengers(fvector("e1"), 1_000)
    assert serde.decode("Prediction", serde.encode("Prediction", p)) == p


def test_server_prediction_fits_the_prediction_schema() -> None:
    serde = Serde(FileSchemaRegistry(SCHEMA_DIR))
    model = build_model("logreg", 1)
    for x, y in SEA.rows[:100]:
        model.learn_one(x, y)
    server = Server()
    server.swap(model, record(1, "champion"))
    vec = {**fvector("e1"), "features": SEA.rows[120][0]}
    p = server.predict(vec, 1_000)
    assert isinstance(p["predicted"], bool)
    assert serde.decode("Prediction", serde.encode("Prediction", p)) == p


def test_a_regressor_serves_its_value_with_no_scores() -> None:
    serde = Serde(FileSchemaRegistry(SCHEMA_DIR))
    model = build_model("linreg", 1)
    for x, y in FRIEDMAN[:300]:
        model.learn_one(x, y)
    server = Server()
    server.swap(model, record(1, "champion"))
    x = FRIEDMAN[400][0]
    p = server.predict({**fvector("e1"), "features": x}, 1_000)
    assert p["predicted"] == model.predict_one(x) and type(p["predicted"]) is float
    assert p["scores"] == {}
    decoded = serde.decode("Prediction", serde.encode("Prediction", p))
    assert decoded == p and type(decoded["predicted"]) is float  # the double branch, not long


# --- Monitor: performance and drift -------------------------------------------------------------


def loss_stream(segments: list[tuple[int, float]], seed: int) -> list[float]:
    rng = random.Random(seed)
    return [1.0 if rng.random() < rate else 0.0 for n, rate in segments for _ in range(n)]


def concept_alerts(monitor: Monitor, losses: list[float], role: str = "champion") -> list[tuple[int, Any]]:
    fired = []
    for i, loss in enumerate(losses):
        out = {
            "event_id": f"e{i}",
            "event_time": 10_000 + i,
            "loss": loss,
            "correct": loss == 0.0,
            "label": loss == 0.0,
            "scores": {"True": 0.8, "False": 0.2},
            "model_name": "default",
            "model_version": 4,
            "role": role,
        }
        fired += [(i, d) for d in monitor.on_outcome(out)]
    return fired


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concept_drift_fires_after_the_change(seed: int) -> None:
    monitor = Monitor(concept_detectors=("adwin",), cooldown=300)
    fired = concept_alerts(monitor, loss_stream([(2000, 0.1), (2000, 0.6)], seed))
    after = [i for i, _ in fired if i >= 2000]
    assert after, "no alert after the error rate went from 10% to 60%"
    assert after[0] < 2500  # detected promptly
    gaps = [b - a for (a, _), (b, _) in zip(fired, fired[1:], strict=False)]
    assert all(g >= 300 for g in gaps)
    d = next(d for i, d in fired if i >= 2000)
    assert (d.kind, d.detector, d.subject) == ("concept", "ADWIN", "error_rate")
    assert 0.0 <= d.statistic <= 1.0 and d.window_size > 0 and d.threshold == 0.002


def test_no_concept_alert_on_a_stable_stream_nor_for_the_baseline() -> None:
    assert concept_alerts(Monitor(concept_detectors=("adwin",)), loss_stream([(3000, 0.2)], seed=4)) == []
    drifting = loss_stream([(2000, 0.1), (2000, 0.6)], 0)
    assert concept_alerts(Monitor(concept_detectors=("adwin",)), drifting, role="baseline") == []


def test_performance_is_tracked_per_version_and_role() -> None:
    monitor = Monitor(window=4)
    for i, (version, role, correct) in enumerate(
        [(1, "champion", True), (1, "champion", False), (2, "champion", True), (2, "baseline", False)]
    ):
        monitor.on_outcome(
            {
                "event_id": f"e{i}",
                "event_time": i,
                "loss": 0.0 if correct else 1.0,
                "correct": correct,
                "label": True,
                "scores": {"True": 0.9 if correct else 0.1, "False": 0.1 if correct else 0.9},
                "model_name": "m",
                "model_version": version,
                "role": role,
            }
        )
    assert set(monitor.trackers) == {("m", 1, "champion"), ("m", 2, "champion"), ("m", 2, "baseline")}
    assert monitor.trackers[("m", 1, "champion")].accuracy == 0.5
    assert monitor.trackers[("m", 2, "baseline")].accuracy == 0.0
    assert monitor.trackers[("m", 2, "champion")].log_loss == pytest.approx(-math.log(0.9))


def test_input_drift_is_watched_per_feature_up_to_the_cap() -> None:
    monitor = Monitor(input_detectors=("adwin",), max_features=2, cooldown=1000)
    rng = random.Random(3)
    fired = []
    for i in range(4000):
        shift = 3.0 if i >= 2000 else 0.0
        features = {"a": rng.gauss(shift, 1), "b": rng.gauss(0, 1), "c": rng.gauss(shift, 1)}
        fired += [(i, d) for d in monitor.on_vector({"features": features})]
    subjects = {d.subject for _, d in fired}
    assert "a" in subjects and "c" not in subjects  # c is beyond max_features
    assert all(i >= 2000 for i, d in fired if d.subject == "a")
    assert monitor.unmonitored_features == 4000
    mean, std = monitor.feature_stats()["a"]
    assert 2.0 < mean < 4.0 and 0.5 < std < 1.5


def test_prediction_drift_watches_the_champion_score_only() -> None:
    monitor = Monitor(prediction_detectors=("adwin",), cooldown=1000)
    rng = random.Random(5)
    fired = []
    for i in range(4000):
        p = min(1.0, max(0.0, rng.gauss(0.2 if i < 2000 else 0.7, 0.05)))
        for role in ("champion", "baseline"):
            pred = {"role": role, "scores": {"True": p, "False": 1 - p}}
            fired += [(i, role, d) for d in monitor.on_prediction(pred)]
    assert fired and all(role == "champion" and i >= 2000 and d.kind == "prediction" for i, role, d in fired)
    assert 0.6 < monitor.score_mean < 0.8


# --- RollingAccuracy -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(window=st.integers(min_value=1, max_value=25), hits=st.lists(st.booleans(), max_size=80))
def test_rolling_accuracy_matches_brute_force(window: int, hits: list[bool]) -> None:
    acc = RollingAccuracy(window)
    assert acc.value is None and acc.n == 0
    for k, hit in enumerate(hits, start=1):
        acc.update(hit)
        last = hits[max(0, k - window) : k]
        assert acc.n == len(last)
        assert acc.value == pytest.approx(sum(last) / len(last))


def test_a_falling_error_rate_is_not_a_concept_drift() -> None:
    rising = concept_alerts(Monitor(concept_detectors=("adwin",)), loss_stream([(2000, 0.1), (2000, 0.6)], 7))
    falling = concept_alerts(Monitor(concept_detectors=("adwin",)), loss_stream([(2000, 0.6), (2000, 0.1)], 7))
    assert rising and all(i >= 2000 for i, _ in rising)
    assert falling == []


def test_served_performance_spans_versions_per_role() -> None:
    monitor = Monitor(window=10)
    for i, (version, correct) in enumerate([(1, True), (2, False), (3, True), (3, True)]):
        monitor.on_outcome(
            {
                "event_id": f"e{i}",
                "event_time": i,
                "loss": 0.0 if correct else 1.0,
                "correct": correct,
                "label": True,
                "scores": {},
                "model_name": "m",
                "model_version": version,
                "role": "champion",
            }
        )
    assert set(monitor.served) == {("m", "champion")}
    assert monitor.served[("m", "champion")].accuracy == 0.75 and monitor.served[("m", "champion")].n == 4


def test_models_list_shows_the_gain_over_the_champion_when_judged() -> None:
    reg = Registry()
    reg.apply(record(1, "champion"))
    judged = with_status(record(2, "candidate"), "rejected", "rejected against champion v1", 2_000)
    reg.apply({**judged, "metrics": {"prequential_accuracy": 0.5, "champion_accuracy": 0.75}})
    rows = list_rows(reg, "default")
    assert [r[6] for r in rows] == ["-", "-0.250"]
    assert rows[1][1] == "rejected" and rows[1][-1] == "rejected against champion v1"
