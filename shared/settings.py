"""Typed settings, built once per process from the environment.

Every service reads the common settings (prefix ``DRIFTLOOP_``) plus its own
(prefix ``DRIFTLOOP_<SERVICE>_``). ``KAFKA_BOOTSTRAP_SERVERS`` is the one
unprefixed variable: when set, every command uses that Kafka instead of the
embedded broker.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop.shared.errors import ConfigError
from driftloop.shared.resources import SCHEMA_DIR

EMBEDDED_BROKER_DEFAULT = "127.0.0.1:9092"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_NAME = re.compile(r"[A-Za-z0-9._-]*")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    labels = text.split(".")
    # All-digit labels are an IPv4 address that ip_address() refused (999.1.1.1).
    return all(_HOST_LABEL.fullmatch(x) for x in labels) and not all(x.isdigit() for x in labels)


class CommonSettings(BaseSettings):
    """Settings every process shares."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"),
        description="An existing Kafka; unset means the embedded broker.",
    )
    broker_port: int = Field(default=9092, ge=1, le=65535)
    # The local broker `broker`, `up`, `demo` and `bench` start (shared/broker.py choose_engine).
    broker_engine: Literal["auto", "kafka", "tansu"] = "auto"
    broker_heap_mb: int = Field(default=1024, ge=256, le=16384)
    # Unset: idempotent producers unless the broker is Tansu, which has no InitProducerId.
    producer_idempotence: bool | None = None
    # Unset: exactly_once unless the broker is Tansu, which has no transactions.
    processing_guarantee: Literal["exactly_once", "at_least_once"] | None = None
    # Static group membership: a name for this instance of a service, stable across its
    # restarts (`up` names them <service>-<n>; the k8s manifests use the pod name), so that
    # a restarted instance gets its partitions back at once. Unset: dynamic membership.
    instance_id: str | None = None
    topic_prefix: str = "driftloop."
    partitions: int = Field(default=4, ge=1)
    # 1 suits the embedded broker and a single-broker Kafka; use 3 on a production cluster.
    replication_factor: int = Field(default=1, ge=1)
    # The packaged schemas (driftloop.schemas, read through importlib.resources); a folder
    # of your own with its registry.json replaces them.
    schema_dir: Path = SCHEMA_DIR
    artifact_store: str = "file://./artifacts"
    data_dir: Path = Path("./.driftloop-data")
    log_level: str = "INFO"
    log_json: bool = True
    metrics_addr: str = "127.0.0.1"
    model_name: str = "default"
    feature_set_version: str = "fs1"
    # Windowed aggregates (services/features/windows.py syntax); empty = passthrough only.
    # Common, not the features service's own: inference stamps its bootstrap model with
    # the effective feature set version, which depends on it.
    features_windows: str = ""
    # Where the features service appends FeatureVectors and LabeledExamples (Avro files),
    # and where `driftloop features export` reads them; unset means <data_dir>/offline-store,
    # empty disables the offline store.
    offline_store: str | None = None
    # Consumer-group timeouts short enough for the embedded broker to assign a worker
    # within ~3 s; real Kafka is fine with them too.
    session_timeout_s: float = Field(default=6.0, gt=0)
    rebalance_timeout_s: float = Field(default=6.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    # Unset: 10 ms on Tansu, which holds a fetch for its whole max wait even when records
    # arrive meanwhile; 100 ms on Apache Kafka, which answers a waiting fetch as soon as a
    # record arrives, so a longer wait only spares the requests of idle consumers.
    fetch_max_wait_ms: int | None = Field(default=None, ge=1, le=1500)
    # Secured Kafka: passed through to every Kafka client (shared/kafka.py client_options).
    # SASL settings apply only when the protocol asks for SASL, TLS files only for SSL.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # When set, registry records are signed by every publisher and unsigned or wrongly
    # signed ones are refused by every reader (shared/signing.py).
    registry_hmac_key: SecretStr | None = None

    @model_validator(mode="after")
    def _offline_store_under_data_dir(self) -> CommonSettings:
        if self.offline_store is None:
            self.offline_store = str(self.data_dir / "offline-store")
        return self

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _blank_is_unset(cls, v: str | None) -> str | None:
        return (v.strip() or None) if v is not None else None

    @field_validator("sasl_username", "sasl_password", "registry_hmac_key", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        if isinstance(v, SecretStr):
            return v if v.get_secret_value() else None
        return v if v is not None and str(v).strip() else None

    @model_validator(mode="after")
    def _security_is_complete(self) -> CommonSettings:
        # ConfigError, not ValueError: pydantic would wrap a ValueError with the input values.
        if self.security_protocol.startswith("SASL") and (not self.sasl_username or self.sasl_password is None):
            raise ConfigError(
                f"DRIFTLOOP_SECURITY_PROTOCOL={self.security_protocol} with DRIFTLOOP_SASL_MECHANISM="
                f"{self.sasl_mechanism} needs DRIFTLOOP_SASL_USERNAME and DRIFTLOOP_SASL_PASSWORD"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"DRIFTLOOP_{name.upper()}={path} is not a readable file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("DRIFTLOOP_SSL_CERTFILE and DRIFTLOOP_SSL_KEYFILE go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _values_are_usable(self) -> CommonSettings:
        # Checked here, before any connection: each of these failed later, as a traceback
        # (an address /metrics cannot bind) or not at all (an unknown log level
        # logged at INFO, a topic prefix Kafka refuses only when a topic is created).
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"DRIFTLOOP_LOG_LEVEL={self.log_level!r}: choose one of {', '.join(LOG_LEVELS)}")
        if not _NAME.fullmatch(self.topic_prefix):
            raise ConfigError(
                f"DRIFTLOOP_TOPIC_PREFIX={self.topic_prefix!r}: topic names take letters, digits, '.', '_' and '-'"
            )
        if self.processing_guarantee == "exactly_once" and self.broker_engine == "tansu":
            raise ConfigError(
                "DRIFTLOOP_PROCESSING_GUARANTEE=exactly_once needs Apache Kafka: Tansu has no transactions"
            )
        if self.instance_id is not None and not _NAME.fullmatch(self.instance_id):
            raise ConfigError(f"DRIFTLOOP_INSTANCE_ID={self.instance_id!r}: use letters, digits, '.', '_' or '-'")
        for env, value in (("MODEL_NAME", self.model_name), ("FEATURE_SET_VERSION", self.feature_set_version)):
            # Both become parts of registry keys and of artifact and offline store paths.
            if not value or not _NAME.fullmatch(value):
                raise ConfigError(f"DRIFTLOOP_{env}={value!r}: use 1 or more letters, digits, '.', '_' or '-'")
        if not _is_host(self.metrics_addr):
            raise ConfigError(f"DRIFTLOOP_METRICS_ADDR={self.metrics_addr!r} is neither an IP address nor a host name")
        return self

    @property
    def effective_fetch_max_wait_ms(self) -> int:
        if self.fetch_max_wait_ms is not None:
            return self.fetch_max_wait_ms
        return 10 if self.broker_engine == "tansu" else 100

    @property
    def exactly_once(self) -> bool:
        """Each batch's output, changelog records and input offsets commit in one transaction."""
        if self.processing_guarantee is not None:
            return self.processing_guarantee == "exactly_once"
        return self.broker_engine != "tansu"

    @property
    def idempotent_producers(self) -> bool:
        if self.producer_idempotence is not None:
            return self.producer_idempotence
        return self.broker_engine != "tansu"

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def hmac_key(self) -> bytes | None:
        """The registry HMAC key as bytes, for the pure signing code; None when unset."""
        return None if self.registry_hmac_key is None else self.registry_hmac_key.get_secret_value().encode()

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def effective_feature_set_version(self) -> str:
        """``feature_set_version``, suffixed with a hash of the window spec when one is set,
        so a changed spec can never carry the version of another."""
        items = [i.replace(" ", "") for i in self.features_windows.split(",") if i.strip()]
        if not items:
            return self.feature_set_version
        digest = hashlib.sha256(",".join(items).encode()).hexdigest()[:8]
        return f"{self.feature_set_version}-w{digest}"


class ServiceSettings(BaseSettings):
    """Base of the per-service settings: where /metrics listens and batching knobs."""

    model_config = SettingsConfigDict(extra="ignore")

    metrics_port: int = Field(default=0, ge=0, le=65535)
    batch_size: int = Field(default=500, ge=1)
    batch_window_s: float = Field(default=0.02, gt=0)
    # Offsets of delivered batches are committed at most this often (and at every stop and
    # rebalance); a crash redelivers at most this much, which de-duplication absorbs.
    commit_interval_s: float = Field(default=0.2, gt=0)
    # Under exactly-once, each input partition begins a transaction at most this often: the
    # batches handled meanwhile share the next one. Every transaction costs the broker a few
    # log writes and a marker per partition it touched, whatever its size.
    transaction_interval_s: float = Field(default=0.1, ge=0)
    # This service's fetch wait; unset means DRIFTLOOP_FETCH_MAX_WAIT_MS.
    fetch_max_wait_ms: int | None = Field(default=None, ge=1, le=1500)


class IngestionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_INGESTION_", extra="ignore")
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    max_lateness_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    max_record_bytes: int = Field(default=1_000_000, gt=0)
    # How long an event_id is remembered against duplicates (older ids are forgotten).
    dedup_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    # A data contract file (YAML or JSON, services/ingestion/contract.py); unset = none.
    contract: str = ""
    # HTTP ingest, POST /v1/events and /v1/labels (0: off), bound to DRIFTLOOP_METRICS_ADDR.
    http_port: int = Field(default=8081, ge=0, le=65535)
    http_max_body_bytes: int = Field(default=1_000_000, gt=0)
    http_max_records: int = Field(default=10_000, gt=0)
    # A request body must have arrived whole within this.
    http_body_timeout_s: float = Field(default=10.0, gt=0)


class FeaturesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_FEATURES_", extra="ignore")
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    join_ttl_s: float = Field(default=3600.0, gt=0)
    # How far behind an entity's newest event an event may be and still update its
    # windows (state is kept for this plus the largest window).
    windows_lateness_s: float = Field(default=3600.0, ge=0)
    windows_max_events: int = Field(default=10_000, ge=1)
    offline_flush_records: int = Field(default=5000, ge=1)
    offline_flush_s: float = Field(default=5.0, gt=0)


def _known_spec(spec: str) -> str:
    # At start, before any connection: inference reads its spec only once the registry is
    # loaded, so an unknown one was a traceback in the JSON log after connecting to Kafka.
    from driftloop.shared.modelspec import SPECS

    if spec not in SPECS:
        raise ValueError(f"unknown model spec {spec!r}; choose one of {', '.join(SPECS)}")
    return spec


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_INFERENCE_", extra="ignore")
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    model_spec: str = "logreg"
    seed: int = 42
    shadow_baseline: bool = True
    shadow_challengers: bool = True
    # The Open Inference Protocol v2 over HTTP (0: off), bound to DRIFTLOOP_METRICS_ADDR.
    http_port: int = Field(default=8080, ge=0, le=65535)
    http_max_body_bytes: int = Field(default=1_000_000, gt=0)
    http_max_rows: int = Field(default=10_000, gt=0)
    # A request body must have arrived whole within this.
    http_body_timeout_s: float = Field(default=10.0, gt=0)
    # Entities whose latest feature vector is kept for requests that name an entity_id to a
    # model of windowed features (0: none; such a model then answers 422).
    entity_states: int = Field(default=100_000, ge=0)

    _model_spec = field_validator("model_spec")(_known_spec)


class MonitoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_MONITORING_", extra="ignore")
    metrics_port: int = Field(default=9104, ge=0, le=65535)
    # Off the path from event to prediction: a longer fetch wait costs nothing there and
    # saves the broker most of this service's fetch requests.
    fetch_max_wait_ms: int | None = Field(default=100, ge=1, le=1500)
    window: int = Field(default=500, ge=1)
    join_ttl_s: float = Field(default=3600.0, gt=0)
    input_detectors: str = "adwin,psi"
    prediction_detectors: str = "adwin"
    concept_detectors: str = "adwin,ddm"
    alert_cooldown: int = Field(default=300, ge=0)
    # Each detector's knob is set, per subject, to fire at most this often on stationary data
    # resampled from the subject's first values (0, the default: River's fixed parameters).
    false_alarms_per_10k: float = Field(default=0.0, ge=0, le=1000)
    # Records handled (feature vectors, predictions, outcomes: about three per event) after an
    # incident's latest detection during which another joins it, and after its first before
    # it is raised without a concept one; 0 raises each alone.
    incident_window: int = Field(default=1500, ge=0, le=100_000)
    # The longest an incident spans, in records: a drift that keeps firing is raised again
    # this often. At least incident_window.
    incident_max_records: int = Field(default=15_000, ge=0, le=10_000_000)
    max_features: int = Field(default=50, ge=0)
    regression_tolerance: float = Field(default=0.0, ge=0)
    seed: int = 42


class RetrainingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_RETRAINING_", extra="ignore")
    metrics_port: int = Field(default=9105, ge=0, le=65535)
    model_spec: str = "logreg"
    _model_spec = field_validator("model_spec")(_known_spec)
    # What the model predicts; auto: a regressor spec is a regression, otherwise the first
    # labels tell (shared/modelspec.py infer_task), and model_spec's family is built in that
    # task's form (logreg on numbers is linreg). Integral labels are held, at most
    # task_examples of them, until they tell.
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    task_examples: int = Field(default=100, ge=1)
    seed: int = 42
    version_every: int = Field(default=1000, ge=1)
    first_version_after: int = Field(default=200, ge=1)
    # A candidate becomes champion when its accuracy beats the champion's by this margin
    # over this many labelled examples after its registration; otherwise it is rejected.
    promotion_margin: float = Field(default=0.01, ge=0)
    promotion_min_examples: int = Field(default=200, ge=1)
    # When a fresh drift challenger wins: true, the continuous learner restarts from it (abrupt
    # concept changes); false, it keeps all it learned and its next cut must beat the winner.
    challenger_takes_over: bool = False
    # A new champion worse than its parent by more than the margin over its first window
    # of examples is rolled back.
    rollback_window: int = Field(default=300, ge=1)
    rollback_margin: float = Field(default=0.02, ge=0)
    schedule_s: float = Field(default=0.0, ge=0)
    challenger_buffer: int = Field(default=200, ge=0)
    evaluation_window: int = Field(default=1000, ge=1)
    # Online model selection (services/retraining/selection.py): continuous learners of these
    # families, scored on the same examples; each cut takes the best. Empty: model_spec alone.
    model_specs: str = ""
    # The share of one core the families may take at the offered example rate; an expensive
    # family learns every k-th example (k up to max_stride) to fit, or is dropped. Measured on
    # Agrawal, a forest learning every 4th example fell below a tree learning every example.
    cpu_budget: float = 0.25
    max_stride: int = 3

    @model_validator(mode="after")
    def _selection_is_usable(self) -> RetrainingSettings:
        # ConfigError, not ValueError: one line at start (pydantic would wrap a ValueError).
        from driftloop.shared.errors import UnknownModelSpec
        from driftloop.shared.modelspec import SPECS, parse_specs

        env = "DRIFTLOOP_RETRAINING_"
        try:
            parse_specs(self.model_specs)
        except UnknownModelSpec as exc:
            raise ConfigError(f"{env}MODEL_SPECS={self.model_specs!r}: {exc}") from None
        except ValueError as exc:
            choose = f"choose each of {', '.join(SPECS)} at most once"
            raise ConfigError(f"{env}MODEL_SPECS={self.model_specs!r}: {exc}; {choose}") from None
        if not (math.isfinite(self.cpu_budget) and 0 < self.cpu_budget <= 1):
            raise ConfigError(f"{env}CPU_BUDGET={self.cpu_budget}: a share of one core, above 0 and at most 1")
        if not 1 <= self.max_stride <= 1000:
            raise ConfigError(f"{env}MAX_STRIDE={self.max_stride}: learn at least every 1000th example (1 to 1000)")
        return self

    @property
    def specs(self) -> list[str]:
        """The families retraining keeps, in order: model_specs, else model_spec alone."""
        from driftloop.shared.modelspec import parse_specs

        return parse_specs(self.model_specs) or [self.model_spec]


SERVICE_SETTINGS: dict[str, type[ServiceSettings]] = {
    "ingestion": IngestionSettings,
    "features": FeaturesSettings,
    "inference": InferenceSettings,
    "monitoring": MonitoringSettings,
    "retraining": RetrainingSettings,
}
SERVICES: tuple[str, ...] = tuple(SERVICE_SETTINGS)


def secret_env_names() -> set[str]:
    """Variables holding secrets: on Kubernetes they come from a Secret, never a ConfigMap."""
    prefix = CommonSettings.model_config.get("env_prefix", "")
    secret = {n for n, f in CommonSettings.model_fields.items() if f.annotation in (SecretStr, SecretStr | None)}
    return {f"{prefix}{n}".upper() for n in secret | {"sasl_username"}}


def _env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(a) for a in alias.choices)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def env_var_names(service: str | None = None) -> set[str]:
    """Every environment variable a service (or, with None, any process) reads."""
    names = _env_names(CommonSettings)
    classes = [SERVICE_SETTINGS[service]] if service else SERVICE_SETTINGS.values()
    for cls in classes:
        names |= _env_names(cls)
    return names
