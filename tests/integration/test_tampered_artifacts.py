"""Tampered registry records and artifacts on a running inference service.

Inference runs as a process with a registry HMAC key, scraped by a real Prometheus that
loads prometheus/rules/driftloop.yml. Three champion records reach its registry topic, each
of which would be served if its check were missing (every artifact is a loadable model):

* v2, signed, whose artifact file was replaced after its sha256 was recorded;
* v3, signed, with the right sha256 but an artifact path that climbs out of the store;
* v4, with a valid artifact in the store but no signature.

The served version stays v1 and predictions keep coming from it; each refusal is counted
under its code and the ModelLoadRefused expression is positive for that code on Prometheus.
Then a valid signed v5 is served, so the follower was reading the topic all along.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from live_prometheus import Prometheus, prometheus_binary, rule_expr
from prometheus_client.parser import text_string_to_metric_families
from waiting import scrape_metrics

from driftloop.runner import Stack
from driftloop.shared.kafka import produce_all, read_topic
from driftloop.shared.modelspec import build_model
from driftloop.shared.registry import ArtifactStore, registry_key, version_record
from driftloop.shared.serde import Serde
from driftloop.shared.signing import sign
from driftloop.shared.topics import FEATURES, MODELS_REGISTRY, PREDICTIONS, Topics

pytestmark = pytest.mark.integration

KEY = "tampering-test-hmac-key"
VECTORS = 40
LOAD_FAILURES = "driftloop_model_load_failures_total"
REFUSED = "driftloop_registry_records_refused_total"
SHA256_MISMATCH, OUTSIDE_STORE, UNSIGNED = (
    "artifact_sha256_mismatch",
    "artifact_outside_store",
    "registry_signature_invalid",
)

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], check: Callable[[], None], timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        check()
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with (at least) ``labels`` in a /metrics text."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_tampered_records_are_refused_and_the_champion_keeps_serving(
    service_env: dict[str, str], topics: Topics, serde: Serde, tmp_path: Path
) -> None:
    binary = prometheus_binary()
    env = {**service_env, "DRIFTLOOP_REGISTRY_HMAC_KEY": KEY}
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    port = int(env["DRIFTLOOP_INFERENCE_METRICS_PORT"])
    store = ArtifactStore(env["DRIFTLOOP_ARTIFACT_STORE"])
    workdir = tmp_path / "prometheus"
    workdir.mkdir()

    def registry() -> dict[int, dict[str, Any]]:
        out = [
            serde.decode("ModelVersion", r.value)
            for r in asyncio.run(read_topic(bootstrap, topics.name(MODELS_REGISTRY)))
        ]
        return {r["version"]: r for r in out}

    def metrics() -> str:
        return scrape_metrics(port)

    def predictions(prefix: str) -> dict[str, list[dict[str, Any]]]:
        """Every prediction of the vectors sent under ``prefix``, by event_id."""
        out: dict[str, list[dict[str, Any]]] = {}
        for r in asyncio.run(read_topic(bootstrap, topics.name(PREDICTIONS))):
            p = serde.decode("Prediction", r.value)
            if p["event_id"].startswith(prefix):
                out.setdefault(p["event_id"], []).append(p)
        return out

    def send_vectors(prefix: str, feature_set: str) -> None:
        now = int(time.time() * 1000)
        vectors = [
            {
                "event_id": f"{prefix}{i}",
                "entity_id": f"e{i % 7}",
                "event_time": now + i,
                "features": {"x1": i / VECTORS, "x2": 1.0 - i / VECTORS, "x3": float(i % 3)},
                "feature_set_version": feature_set,
                "ingest_time": now,
            }
            for i in range(VECTORS)
        ]
        asyncio.run(
            produce_all(
                bootstrap,
                [(topics.name(FEATURES), v["entity_id"].encode(), serde.encode("FeatureVector", v)) for v in vectors],
            )
        )

    def champion_versions(prefix: str, check: Callable[[], None]) -> set[int]:
        """The versions that served the champion predictions of all VECTORS vectors of ``prefix``."""

        def all_served() -> dict[str, list[dict[str, Any]]] | None:
            got = predictions(prefix)
            champion = {e: [p for p in ps if p["role"] == "champion"] for e, ps in got.items()}
            return got if len(champion) == VECTORS and all(champion.values()) else None

        got = wait_until(f"a champion prediction for each of the {VECTORS} {prefix}* vectors", all_served, check)
        return {p["model_version"] for ps in got.values() for p in ps if p["role"] == "champion"}

    def record(version: int, artifact: tuple[str, str], spec: str, feature_set: str) -> dict[str, Any]:
        return version_record(
            name="default",
            version=version,
            status="champion",
            reason="tampering test",
            artifact=artifact,
            parent=1,
            trigger="manual",
            window={"examples": 0},
            params={"spec": spec, "seed": str(version), "trained": "false"},
            metrics={},
            feature_set_version=feature_set,
            code_version="test",
            now_ms=int(time.time() * 1000),
        )

    def publish(*records: dict[str, Any]) -> None:
        asyncio.run(
            produce_all(
                bootstrap,
                [
                    (
                        topics.name(MODELS_REGISTRY),
                        registry_key(r["name"], r["version"]),
                        serde.encode("ModelVersion", r),
                    )
                    for r in records
                ],
            )
        )

    with (
        Prometheus(binary, workdir, {"inference": port}) as prom,
        Stack(env=env, log_dir=tmp_path / "logs", services=("inference",)) as stack,
    ):
        stack.wait_ready(60)
        v1 = wait_until("the bootstrap champion v1 on the registry topic", lambda: registry().get(1), stack.check)
        assert v1["name"] == "default" and v1["status"] == "champion"
        spec, feature_set = v1["params"]["spec"], v1["feature_set_version"]
        send_vectors("before-", feature_set)
        assert champion_versions("before-", stack.check) == {1}

        # Both counters are exported at 0 before anything is refused, and Prometheus has that 0:
        # the rise to 1 is then an increase() over two samples.
        for name, code in ((LOAD_FAILURES, SHA256_MISMATCH), (LOAD_FAILURES, OUTSIDE_STORE), (REFUSED, UNSIGNED)):
            assert sample(metrics(), name, code=code) == 0.0, f"{name}{{code={code!r}}} is not exported at 0"
            wait_until(
                f"Prometheus to scrape {name}{{code={code!r}}} at 0",
                # An empty answer is no answer: wait_until takes any value but None and False.
                lambda n=name, c=code: prom.query(f'{n}{{job="inference", code="{c}"}} == 0') or None,
                stack.check,
            )

        # v2: the file behind a recorded sha256 is replaced by another (loadable) model.
        uri2, sha2 = store.save("default", 2, build_model(spec, 2))
        Path(store.root / "default" / "v2.pkl").write_bytes(pickle.dumps(build_model(spec, 99)))
        tampered = sign(record(2, (uri2, sha2), spec, feature_set), KEY)
        # v3: a loadable model with its true sha256, outside the store, by a path that climbs out of it.
        elsewhere = tmp_path / "elsewhere"
        _, sha3 = ArtifactStore(f"file://{elsewhere}").save("default", 3, build_model(spec, 3))
        climbing = f"file://{store.root}/default/../../elsewhere/default/v3.pkl"
        assert Path(store.root, "default", "..", "..", "elsewhere", "default", "v3.pkl").resolve().is_file()
        outside = sign(record(3, (climbing, sha3), spec, feature_set), KEY)
        # v4: everything right but the signature.
        unsigned = record(4, store.save("default", 4, build_model(spec, 4)), spec, feature_set)
        publish(tampered, outside, unsigned)

        def refusals() -> dict[str, float | None] | None:
            text = metrics()
            got = {
                SHA256_MISMATCH: sample(text, LOAD_FAILURES, model="default", code=SHA256_MISMATCH),
                OUTSIDE_STORE: sample(text, LOAD_FAILURES, model="default", code=OUTSIDE_STORE),
                UNSIGNED: sample(text, REFUSED, code=UNSIGNED),
            }
            return got if all(v for v in got.values()) else None

        counted = wait_until("the three refusals counted by code", refusals, stack.check)
        assert counted == {SHA256_MISMATCH: 1.0, OUTSIDE_STORE: 1.0, UNSIGNED: 1.0}
        text = metrics()
        assert sample(text, "driftloop_served_model_version", model="default") == 1.0
        assert sample(text, "driftloop_model_swaps_total", model="default") == 1.0  # v1's load only
        for code in ("artifact_error", "internal_error"):
            assert sample(text, LOAD_FAILURES, model="default", code=code) == 0.0, code

        send_vectors("after-", feature_set)
        assert champion_versions("after-", stack.check) == {1}
        # No refused version made any prediction, in any role.
        made = {p["model_version"] for ps in predictions("").values() for p in ps}
        assert made.isdisjoint({2, 3, 4}), made

        # The rule as shipped, threshold included, is positive for each code on Prometheus.
        expr = rule_expr("ModelLoadRefused")

        def positive_codes() -> set[str] | None:
            got = {s["metric"].get("code") for s in prom.query(expr) if float(s["value"][1]) > 0}
            return got if {SHA256_MISMATCH, OUTSIDE_STORE, UNSIGNED} <= got else None

        codes = wait_until("ModelLoadRefused positive for the three codes on Prometheus", positive_codes, stack.check)
        assert codes == {SHA256_MISMATCH, OUTSIDE_STORE, UNSIGNED}, codes

        # Control: a valid signed record is taken, so the refusals above were the checks at work.
        publish(sign(record(5, store.save("default", 5, build_model(spec, 5)), spec, feature_set), KEY))
        wait_until(
            "v5 served",
            lambda: sample(metrics(), "driftloop_served_model_version", model="default") == 5.0,
            stack.check,
        )
        send_vectors("control-", feature_set)
        assert champion_versions("control-", stack.check) == {5}
        stack.check()

    log = (tmp_path / "logs" / "inference.log").read_text()
    assert log.count('"model_load_refused"') == 2, "one model_load_refused log line per refused artifact"
    assert log.count('"registry_record_refused"') == 1
    assert KEY not in log
