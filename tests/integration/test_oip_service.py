"""The Open Inference Protocol v2 on the running inference service, with a real HTTP client:
health, metadata, infer before and after a hot swap (the answer changes version and is never
an error), every HTTP prediction on the predictions topic, a label posted later closing the
loop as an Outcome, and bad requests answered 4xx with a code while the service goes on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from waiting import fuzz_openapi, read_values, readme_curls, wait_until

from driftloop.bench import _slice_models, _version
from driftloop.runner import Stack
from driftloop.shared.broker import Broker
from driftloop.shared.kafka import produce_all
from driftloop.shared.registry import ArtifactStore, registry_key, with_status
from driftloop.shared.serde import Serde
from driftloop.shared.settings import CommonSettings
from driftloop.shared.topics import LABELS_RAW, MODELS_REGISTRY, OUTCOMES, PREDICTIONS, Topics
from driftloop.streams import sea_stream

MODEL = CommonSettings().model_name


def _rows(n: int, event_ids: list[str] | None = None) -> dict[str, Any]:
    rows = sea_stream(n, seed=3).rows
    inputs = [
        {"name": f"x{k}", "shape": [n], "datatype": "FP64", "data": [r[0][f"x{k}"] for r in rows]} for k in range(3)
    ]
    if event_ids is not None:
        inputs.append({"name": "event_id", "shape": [n], "datatype": "BYTES", "data": event_ids})
    return {"id": "req-1", "inputs": inputs}


def _publish(bootstrap: str, topics: Topics, serde: Serde, records: list[dict[str, Any]]) -> None:
    items = [
        (topics.name(MODELS_REGISTRY), registry_key(r["name"], r["version"]), serde.encode(MODELS_REGISTRY, r))
        for r in records
    ]
    asyncio.run(produce_all(bootstrap, items))


def test_oip_infer_follows_swaps_publishes_and_closes_the_loop(
    broker: Broker, topics: Topics, serde: Serde, service_env: dict[str, str], tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    store = ArtifactStore(service_env["DRIFTLOOP_ARTIFACT_STORE"])
    first, second = _slice_models(sea_stream(2000), 2)
    v1 = _version(store, first, 1, "champion", "test: the first champion", "logreg")
    _publish(bootstrap, topics, serde, [v1])
    base = f"http://127.0.0.1:{service_env['DRIFTLOOP_INFERENCE_HTTP_PORT']}"
    stack = Stack(env=dict(service_env), log_dir=tmp_path / "logs", services=("ingestion", "inference", "monitoring"))
    try:
        stack.start()
        stack.wait_ready()
        with httpx.Client(base_url=base, timeout=10) as client:
            wait_until("OIP ready", lambda: client.get("/v2/health/ready").status_code == 200, 60, stack.check)
            assert client.get("/v2/health/live").json() == {"live": True}
            meta = client.get(f"/v2/models/{MODEL}").json()
            assert meta["name"] == MODEL and meta["versions"] == ["1"]
            assert {o["name"] for o in meta["outputs"]} == {"predicted", "event_id", "scores"}
            assert client.get("/openapi.json").json()["paths"].keys() >= {
                "/v2/models/{name}/infer",
                "/v2/models/{name}/versions/{version}/infer",
            }

            # The README's curl examples, as written, against this service's port.
            port = int(service_env["DRIFTLOOP_INFERENCE_HTTP_PORT"])
            for command in readme_curls("Request-response serving (OIP v2)", 3, 8080, port):
                res = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
                assert res.returncode == 0, (command, res.stderr)
                answer_json = json.loads(res.stdout)
                assert "error" not in answer_json, (command, answer_json)
            readme_preds = answer_json  # the last one is the infer request
            assert readme_preds["model_version"] == "1" and readme_preds["id"] == "r1"
            assert next(o for o in readme_preds["outputs"] if o["name"] == "event_id")["data"] == [
                "order-17",
                "order-18",
            ]

            ids = ["http-a", "http-b", "http-c"]
            answer = client.post(f"/v2/models/{MODEL}/infer", json=_rows(3, ids))
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model_version"] == "1" and body["id"] == "req-1"
            out = {o["name"]: o for o in body["outputs"]}
            assert out["event_id"]["data"] == ids and out["predicted"]["shape"] == [3]
            assert out["scores"]["shape"] == [3, len(out["scores"]["parameters"]["classes"])]
            generated = client.post(f"/v2/models/{MODEL}/infer", json=_rows(2)).json()
            generated_ids = next(o for o in generated["outputs"] if o["name"] == "event_id")["data"]
            assert len(set(generated_ids)) == 2 and not set(generated_ids) & set(ids)

            # A hot swap under a stream of requests: each answer is 200, from v1 and then v2.
            seen: list[tuple[int, str | None]] = []
            stop = threading.Event()

            def hammer() -> None:
                with httpx.Client(base_url=base, timeout=10) as c:
                    while not stop.is_set():
                        r = c.post(f"/v2/models/{MODEL}/infer", json=_rows(5))
                        seen.append((r.status_code, r.json().get("model_version")))

            thread = threading.Thread(target=hammer, daemon=True)
            thread.start()
            time.sleep(0.5)
            v2 = _version(store, second, 2, "champion", "test: the second champion", "logreg")
            _publish(bootstrap, topics, serde, [v2, with_status(v1, "archived", "superseded by v2", v2["created_at"])])
            wait_until("an answer from v2", lambda: any(v == "2" for _, v in seen), 60, stack.check)
            time.sleep(0.3)
            stop.set()
            thread.join(10)
            assert {code for code, _ in seen} == {200}, [s for s in seen if s[0] != 200][:5]
            versions = [v for _, v in seen]
            assert versions[0] == "1" and versions[-1] == "2" and "1" not in versions[versions.index("2") :]
            # v1, the first trained version, stays loaded as the static baseline in shadow.
            old = client.post(f"/v2/models/{MODEL}/versions/1/infer", json=_rows(1)).json()
            assert old["model_version"] == "1" and old["parameters"]["role"] == "baseline"
            gone = client.post(f"/v2/models/{MODEL}/versions/99/infer", json=_rows(1))
            assert gone.status_code == 404 and gone.json()["code"] == "model_not_found"

            bad = {
                "malformed JSON": (client.post(f"/v2/models/{MODEL}/infer", content=b"{not json"), 400),
                "missing inputs": (client.post(f"/v2/models/{MODEL}/infer", json={"id": "x"}), 400),
                "unknown model": (client.post("/v2/models/nope/infer", json=_rows(1)), 404),
                "NaN": (
                    client.post(
                        f"/v2/models/{MODEL}/infer",
                        content=b'{"inputs": [{"name": "x0", "shape": [1], "datatype": "FP64", "data": [NaN]}]}',
                        headers={"content-type": "application/json"},
                    ),
                    400,
                ),
                "shape": (
                    client.post(
                        f"/v2/models/{MODEL}/infer",
                        json={"inputs": [{"name": "x0", "shape": [2], "datatype": "FP64", "data": [1.0]}]},
                    ),
                    400,
                ),
                "huge body": (client.post(f"/v2/models/{MODEL}/infer", content=b"[" + b"1," * 600_000 + b"1]"), 413),
            }
            for what, (r, status) in bad.items():
                assert r.status_code == status, (what, r.status_code, r.text[:300])
                assert r.json()["code"], what
            assert client.get("/v2/health/ready").status_code == 200, "bad requests stopped the server"

            # Generated requests from the OpenAPI document (for the served model's name, or
            # most would stop at 404): no 5xx, no crash, no stall.
            assert fuzz_openapi(base, tmp_path, {"name": MODEL}) >= 100
            assert client.get("/v2/health/ready").status_code == 200, "generated requests stopped the server"

        # Every HTTP prediction is on the topic, with the event id the caller got.
        def published() -> list[dict[str, Any]]:
            preds = read_values(bootstrap, topics.name(PREDICTIONS), serde, "Prediction")
            return [p for p in preds if p["event_id"] in ids]

        preds = wait_until("the HTTP predictions on the topic", lambda: p if len(p := published()) == 3 else None, 30)
        assert {(p["role"], p["model_version"]) for p in preds} == {("champion", 1)}

        # A label posted later for one of them is joined into an Outcome.
        label = {"event_id": "http-b", "entity_id": "http-b", "label": True, "label_time": int(time.time() * 1000)}
        asyncio.run(produce_all(bootstrap, [(topics.name(LABELS_RAW), b"http-b", serde.encode("Label", label))]))

        def outcome() -> list[dict[str, Any]]:
            return [
                o for o in read_values(bootstrap, topics.name(OUTCOMES), serde, "Outcome") if o["event_id"] == "http-b"
            ]

        outcomes = wait_until("the label's outcome", lambda: outcome() or None, 60, stack.check)
        assert outcomes[0]["role"] == "champion" and outcomes[0]["model_version"] == 1
    finally:
        stack.stop_services()


def test_a_windowed_model_answers_an_entity_from_its_window_state(
    broker: Broker, topics: Topics, serde: Serde, service_env: dict[str, str], tmp_path: Path
) -> None:
    """A champion trained on windowed features: a request that names an entity (and no
    feature) is answered from that entity's latest vector on the stream, and gives the same
    scores as the stream's prediction of the entity's last event."""
    from driftloop.replay import replay
    from driftloop.shared.modelspec import build_model

    windows = "x0:mean:sliding:1h"
    env = {**service_env, "DRIFTLOOP_FEATURES_WINDOWS": windows}
    fsv = CommonSettings(features_windows=windows).effective_feature_set_version
    bootstrap = broker.bootstrap_servers
    store = ArtifactStore(service_env["DRIFTLOOP_ARTIFACT_STORE"])
    model = build_model("logreg", 42)
    for x, y in sea_stream(500, seed=4).rows:
        model.learn_one({**x, "x0_mean_sliding_1h": x["x0"]}, y)  # the window's weight is learnt too
    _publish(
        bootstrap,
        topics,
        serde,
        [{**_version(store, model, 1, "champion", "test", "logreg"), "feature_set_version": fsv}],
    )
    base = f"http://127.0.0.1:{service_env['DRIFTLOOP_INFERENCE_HTTP_PORT']}"
    n = 60
    with Stack(env=env, log_dir=tmp_path / "logs", services=("ingestion", "features", "inference")) as stack:
        stack.wait_ready()
        with httpx.Client(base_url=base, timeout=10) as client:
            wait_until("OIP ready", lambda: client.get("/v2/health/ready").status_code == 200, 60, stack.check)
            asyncio.run(replay(bootstrap, topics, serde, sea_stream(n, seed=5), run_id="w", label_delay=10, rate=None))

            def champion_predictions() -> list[dict[str, Any]]:
                preds = read_values(bootstrap, topics.name(PREDICTIONS), serde, "Prediction")
                return [p for p in preds if p["role"] == "champion"]

            wait_until("every event predicted", lambda: len(champion_predictions()) >= n, 60, stack.check)
            last: dict[str, dict[str, Any]] = {}
            for p in champion_predictions():  # in partition order: an entity's last event comes last
                last[p["entity_id"]] = p
            assert {p["feature_set_version"] for p in last.values()} == {fsv}
            entities = sorted(last)
            request = {
                "inputs": [{"name": "entity_id", "shape": [len(entities)], "datatype": "BYTES", "data": entities}]
            }
            answer = client.post(f"/v2/models/{MODEL}/infer", json=request)
            assert answer.status_code == 200, answer.text
            out = {o["name"]: o for o in answer.json()["outputs"]}
            classes = out["scores"]["parameters"]["classes"]
            expected = [last[e]["scores"][c] for e in entities for c in classes]
            assert out["scores"]["data"] == pytest.approx(expected)
            assert out["predicted"]["data"] == [last[e]["predicted"] for e in entities]

            unknown = client.post(
                f"/v2/models/{MODEL}/infer",
                json={"inputs": [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["nobody"]}]},
            )
            assert unknown.status_code == 404 and unknown.json()["code"] == "entity_unknown", unknown.text
            no_entity = client.post(f"/v2/models/{MODEL}/infer", json=_rows(1))
            assert no_entity.status_code == 422 and no_entity.json()["code"] == "windowed_features", no_entity.text
        stack.check()
