"""Inference service shell: FeatureVectors in, Predictions out, champion hot-swapped."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Literal

from prometheus_client import Counter, Gauge

from driftloop.services.inference import http, oip
from driftloop.services.inference.serving import EntityStates, Served, Server, predict_as
from driftloop.shared import http as shared_http
from driftloop.shared.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactOutsideStore,
    DriftloopError,
)
from driftloop.shared.modelspec import build_model, is_regressor
from driftloop.shared.records import FeatureVector, Prediction
from driftloop.shared.registry import ArtifactStore, ChampionChange, version_record
from driftloop.shared.registry_client import RegistryClient, code_version
from driftloop.shared.runtime import Context, Service, run_service
from driftloop.shared.settings import InferenceSettings
from driftloop.shared.topics import FEATURES, MODELS_REGISTRY, PREDICTIONS

SERVICE = "inference"
#: The codes load_artifact counts a refused artifact under.
LOAD_FAILURE_CODES = (
    ArtifactError.code,
    ArtifactIntegrityError.code,
    ArtifactOutsideStore.code,
    DriftloopError.code,
)


class InferenceMetrics:
    def __init__(self, svc: Service[InferenceSettings]) -> None:
        reg, name = svc.metrics.registry, svc.common.model_name
        self.served = Gauge(
            "driftloop_served_model_version", "Version of the champion being served", ["model"], registry=reg
        )
        self.predictions = Counter(
            "driftloop_predictions_total", "Predictions made", ["model", "version", "role"], registry=reg
        )
        self.swaps = Counter("driftloop_model_swaps_total", "Hot swaps of the served model", ["model"], registry=reg)
        self.info = Gauge(
            "driftloop_model_info",
            "1 for each model version loaded, by role",
            ["model", "version", "role"],
            registry=reg,
        )
        self.load_failures = Counter(
            "driftloop_model_load_failures_total", "Artifacts refused", ["model", "code"], registry=reg
        )
        self.unpublished = Counter(
            "driftloop_http_predictions_unpublished_total",
            "HTTP predictions answered but not written to the predictions topic",
            ["model"],
            registry=reg,
        )
        self.unpublished.labels(name)
        # Exported at 0 from the start, so that a rule or panel on it sees a series before the first refusal.
        for code in LOAD_FAILURE_CODES:
            self.load_failures.labels(name, code)


class Inference:
    """Serves the registry's champion, and every candidate and the static baseline in shadow."""

    def __init__(self, svc: Service[InferenceSettings], client: RegistryClient | None = None) -> None:
        self.svc = svc
        self.name = svc.common.model_name
        self.store = ArtifactStore(svc.common.artifact_store)
        # Inference dead-letters what on the registry topic is no ModelVersion (retraining only logs it).
        self.client = client or RegistryClient.from_settings(
            svc.common, svc.topics.name(MODELS_REGISTRY), svc.serde, svc.log, svc.metrics.registry, keep_unreadable=True
        )
        self.server = Server()
        self.metrics = InferenceMetrics(svc)
        #: Set once a champion is loaded: features wait for it.
        self.model_loaded = asyncio.Event()
        #: Candidates whose artifact was refused: not retried on every registry batch.
        self.refused: set[int] = set()
        #: The feature names the stream's vectors carried, per feature set: a model's inputs.
        self.feature_names: dict[str, dict[str, None]] = {}
        #: Each entity's latest vector, for requests to a model of windowed features.
        self.entities = EntityStates(svc.settings.entity_states)
        self._publishing: set[asyncio.Task[None]] = set()
        s = svc.settings
        app = http.build_app(self, shared_http.HttpMetrics(svc.metrics.registry))
        self.http = shared_http.Serving(app, svc.common.metrics_addr, s)
        svc.task(self.follow_registry)
        svc.on(FEATURES, self.on_vector, after=self.model_loaded)
        if s.http_port:
            svc.task(self.serve_http)
            svc.on_shutdown(self.stop_http)

    # --- the hot path -------------------------------------------------------------------------

    async def on_vector(self, vector: FeatureVector, ctx: Context) -> None:
        now = int(time.time() * 1000)
        names = self.feature_names.get(vector["feature_set_version"])
        if names is None or not vector["features"].keys() <= names.keys():
            self.feature_names.setdefault(vector["feature_set_version"], {}).update(dict.fromkeys(vector["features"]))
        # A swap can land between any two records (the registry follower runs whenever this
        # handler awaits); each prediction names the version that made it.
        self.entities.remember(vector)
        prediction = self.server.predict(vector, now)
        await self.send_prediction(ctx, prediction)
        ctx.observe_latency(prediction["ingest_time"])
        shadow = self.server.predict_baseline(vector, now)
        if shadow is not None:
            await self.send_prediction(ctx, shadow)
        for challenger in self.server.predict_challengers(vector, now):
            await self.send_prediction(ctx, challenger)

    async def send_prediction(self, ctx: Context, prediction: Prediction) -> None:
        await ctx.send(PREDICTIONS, prediction)
        self.metrics.predictions.labels(self.name, str(prediction["model_version"]), prediction["role"]).inc()

    # --- request-response (OIP v2, services/inference/http.py) ---------------------------------

    @property
    def ready(self) -> bool:
        return self.model_loaded.is_set() and self.server.served is not None

    def _known(self, feature_set_version: str) -> list[str]:
        return sorted(self.feature_names.get(feature_set_version, {}))

    def _task(self, model: Any) -> Literal["classification", "regression"]:
        return "regression" if is_regressor(model) else "classification"

    def metadata(self, name: str) -> oip.ModelMetadata:
        if name != self.name:
            raise oip.ModelNotFound(f"no model {name!r}; this service serves {self.name!r}")
        served = self.server.served
        if served is None or not self.ready:
            raise oip.NotReady(f"{self.name} has no champion loaded yet")
        record = self.client.registry.get(self.name, served.version) or {}
        spec = str((record.get("params") or {}).get("spec") or self.svc.settings.model_spec)
        meta = oip.metadata_of(
            self.name, served.version, self._known(served.feature_set_version), self._task(served.model), spec
        )
        meta.parameters = {**(meta.parameters or {}), "feature_set_version": served.feature_set_version}
        return meta

    async def infer(self, name: str, version: int | None, request: oip.InferenceRequest) -> oip.InferenceResponse:
        """Predict the request's rows with the champion of the moment (or the version asked
        for, when loaded here); each prediction also goes to the predictions topic."""
        if name != self.name:
            raise oip.ModelNotFound(f"no model {name!r}; this service serves {self.name!r}")
        if not self.ready:
            raise oip.NotReady(f"{self.name} has no champion loaded yet")
        answering = self.server.answering(version)
        if answering is None:
            raise oip.ModelNotFound(f"{self.name} v{version} is not loaded here (not the champion, nor in shadow)")
        served, role = answering
        windowed = oip.windowed(served.feature_set_version)
        known = self._known(served.feature_set_version)
        rows = oip.rows_of(request, known, self.svc.settings.http_max_rows, partial=windowed)
        if windowed:
            rows = self._with_window_state(served, rows)
        now = int(time.time() * 1000)
        predictions = []
        for x, event_id, entity_id in zip(rows.features, rows.event_ids, rows.entity_ids, strict=True):
            eid = event_id or uuid.uuid4().hex
            vector: FeatureVector = {
                "event_id": eid,
                "entity_id": entity_id or eid,
                "event_time": now,
                "features": x,
                "feature_set_version": served.feature_set_version,
                "ingest_time": now,
            }
            predictions.append(predict_as(served, role, vector, now))
        # Written after the answer: the topic's round trip is not the caller's latency.
        task = asyncio.create_task(self._publish(predictions))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)
        return oip.response_of(predictions, request.id, self._task(served.model))

    def _with_window_state(self, served: Served, rows: oip.Rows) -> oip.Rows:
        """Rows for a model of windowed features: each names an entity, whose latest feature
        vector from the stream gives the features the row does not (the row's own values win)."""
        if not self.entities.limit or any(e is None for e in rows.entity_ids):
            how = "give each row's entity_id" if self.entities.limit else "send its events to Kafka"
            raise oip.WindowedFeatures(
                f"{self.name} v{served.version} was trained on windowed features ({served.feature_set_version}), "
                f"which only the stream computes: {how}"
            )
        features = []
        for x, entity_id in zip(rows.features, rows.entity_ids, strict=True):
            assert entity_id is not None
            state = self.entities.get(entity_id)
            if state is None or state["feature_set_version"] != served.feature_set_version:
                raise oip.EntityUnknown(
                    f"no window state of {served.feature_set_version} for entity {entity_id!r} here: it has had no "
                    "event on the stream yet, or its partition is served by another instance"
                )
            features.append({**state["features"], **x})
        return oip.Rows(features, rows.event_ids, rows.entity_ids)

    async def _publish(self, predictions: list[Prediction]) -> None:
        # All at once: the producer batches them, where one after the other each row of a
        # request would wait for its own round trip.
        sent = await asyncio.gather(
            *(self.svc.publisher.send(PREDICTIONS, p) for p in predictions), return_exceptions=True
        )
        failed = [exc for exc in sent if isinstance(exc, BaseException)]
        if failed:  # the answer is given: count what the topic lacks
            self.metrics.unpublished.labels(self.name).inc(len(failed))
            self.svc.log.error("http_predictions_unpublished", count=len(failed), error=repr(failed[0])[:300])
        for prediction, result in zip(predictions, sent, strict=True):
            if not isinstance(result, BaseException):
                self.metrics.predictions.labels(self.name, str(prediction["model_version"]), prediction["role"]).inc()

    async def serve_http(self) -> None:
        await self.http.serve(self.svc.log)

    async def stop_http(self) -> None:
        await self.http.stop()  # the requests in flight are answered first
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)

    # --- the registry -------------------------------------------------------------------------

    async def follow_registry(self) -> None:
        client = self.client
        await client.load()
        champion = client.registry.champion(self.name)
        if champion is None:
            await self.bootstrap()
            champion = client.registry.champion(self.name)
        assert champion is not None
        await self.load(champion["version"])
        await self.on_registry_batch()
        self.model_loaded.set()

        async def on_change(change: ChampionChange) -> None:
            if change.name == self.name:
                await self.load(change.new)

        await client.follow(on_change, self.on_registry_batch)

    async def on_registry_batch(self) -> None:
        for record, exc in self.client.take_unreadable():
            await self.svc.publisher.dead_letter(record, exc)
        await self.ensure_baseline()
        await self.sync_challengers()

    async def load_artifact(self, record: dict[str, Any]) -> Any | None:
        try:
            # Off the event loop: unpickling and hashing a large model (a forest) would stall
            # every prediction meanwhile.
            return await asyncio.to_thread(self.store.load, record["artifact_uri"], record["artifact_sha256"])
        except Exception as exc:  # noqa: BLE001 - a bad artifact must not stop serving the current one
            code = getattr(exc, "code", "internal_error")
            self.metrics.load_failures.labels(self.name, code).inc()
            self.svc.log.error(
                "model_load_refused",
                model_name=self.name,
                model_version=record["version"],
                error=str(exc),
                error_code=code,
            )
            return None

    async def load(self, version: int) -> None:
        """Swap in ``version`` as the champion (kept as it is when its artifact is refused)."""
        record = self.client.registry.get(self.name, version)
        assert record is not None
        # A promoted candidate is already here, loaded and checked, predicting in shadow.
        model = self.server.challenger_model(version)
        if model is None:
            model = await self.load_artifact(record)
        if model is None:
            return
        old = self.server.served.version if self.server.served else None
        self.server.swap(model, record)
        m = self.metrics
        if old is not None:
            m.info.labels(self.name, str(old), "champion").set(0)
        m.info.labels(self.name, str(version), "champion").set(1)
        m.served.labels(self.name).set(version)
        m.swaps.labels(self.name).inc()
        self.svc.log.info("model_swapped", model_name=self.name, model_version=version, previous_version=old)

    async def ensure_baseline(self) -> None:
        """Load the first trained version, once, to predict in shadow as the static baseline."""
        if not self.svc.settings.shadow_baseline or self.server.baseline is not None:
            return
        record = self.client.registry.first_trained(self.name)
        if record is None:
            return
        model = await self.load_artifact(record)
        if model is not None:
            self.server.set_baseline(model, record)
            self.metrics.info.labels(self.name, str(record["version"]), "baseline").set(1)
            self.svc.log.info("baseline_loaded", model_name=self.name, model_version=record["version"])

    async def sync_challengers(self) -> None:
        """Every candidate version predicts in shadow; one that leaves candidate is unloaded."""
        server, info = self.server, self.metrics.info
        wanted = {
            r["version"]: r
            for r in self.client.registry.versions(self.name)
            if r["status"] == "candidate" and self.svc.settings.shadow_challengers
        }
        for version in server.challengers:
            if version not in wanted:
                server.remove_challenger(version)
                info.labels(self.name, str(version), "challenger").set(0)
                self.svc.log.info("challenger_unloaded", model_name=self.name, model_version=version)
        for version, record in wanted.items():
            if version in server.challengers or version in self.refused:
                continue
            model = await self.load_artifact(record)
            if model is None:
                self.refused.add(version)
                continue
            server.add_challenger(model, record)
            info.labels(self.name, str(version), "challenger").set(1)
            self.svc.log.info(
                "challenger_loaded", model_name=self.name, model_version=version, trigger=record["trigger"]
            )

    async def bootstrap(self) -> None:
        """Register version 1, untrained, when the registry has no champion at all."""
        s, name = self.svc.settings, self.name
        model = build_model(s.model_spec, s.seed)
        record = version_record(
            name=name,
            version=1,
            status="champion",
            reason="bootstrap: the registry was empty; untrained, it predicts the prior until retraining "
            "registers a trained version",
            artifact=self.store.save(name, 1, model),
            parent=None,
            trigger="bootstrap",
            window={"examples": 0},
            params={"spec": s.model_spec, "seed": str(s.seed), "trained": "false"},
            metrics={},
            feature_set_version=self.svc.common.effective_feature_set_version,
            code_version=code_version(),
            now_ms=int(time.time() * 1000),
        )

        async def send(key: bytes, value: bytes) -> None:
            await self.svc.publisher.send_bytes(MODELS_REGISTRY, key, value)

        await self.client.write(send, record)
        self.svc.log.info("model_bootstrapped", model_name=name, model_version=1)


def main() -> None:
    run_service(SERVICE, InferenceSettings, Inference)
