"""CommonSettings and the per-service settings, read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from driftloop.shared.resources import SCHEMA_DIR
from driftloop.shared.settings import (
    EMBEDDED_BROKER_DEFAULT,
    SERVICE_SETTINGS,
    SERVICES,
    CommonSettings,
    FeaturesSettings,
    InferenceSettings,
    IngestionSettings,
    MonitoringSettings,
    RetrainingSettings,
    env_var_names,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_METRICS_PORTS = {
    "ingestion": 9101,
    "features": 9102,
    "inference": 9103,
    "monitoring": 9104,
    "retraining": 9105,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DRIFTLOOP_* or KAFKA_BOOTSTRAP_SERVERS from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("DRIFTLOOP_") or name.upper() == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


# --- defaults -------------------------------------------------------------------------------------


def test_common_defaults() -> None:
    s = CommonSettings()
    assert s.kafka_bootstrap_servers is None
    assert s.uses_embedded_broker is True
    assert s.broker_port == 9092
    assert s.bootstrap_servers == EMBEDDED_BROKER_DEFAULT == "127.0.0.1:9092"
    assert s.topic_prefix == "driftloop."
    assert s.partitions == 4
    assert s.schema_dir == SCHEMA_DIR
    assert (s.schema_dir / "registry.json").is_file()
    assert s.artifact_store == "file://./artifacts"
    assert s.log_json is True
    assert s.feature_set_version == "fs1"
    assert s.session_timeout_s == 6.0


@pytest.mark.parametrize("service", SERVICES)
def test_service_defaults(service: str) -> None:
    s = SERVICE_SETTINGS[service]()
    assert s.metrics_port == DEFAULT_METRICS_PORTS[service]
    assert s.batch_size == 500
    assert s.batch_window_s == 0.02


def test_services_are_the_five_in_order() -> None:
    assert SERVICES == ("ingestion", "features", "inference", "monitoring", "retraining")
    ports = [SERVICE_SETTINGS[s]().metrics_port for s in SERVICES]
    assert len(set(ports)) == len(ports), "two services would share a metrics port"


def test_service_specific_defaults() -> None:
    assert IngestionSettings().max_lateness_s == 7 * 24 * 3600.0
    assert IngestionSettings().max_record_bytes == 1_000_000
    assert FeaturesSettings().join_ttl_s == 3600.0
    assert InferenceSettings().model_spec == "logreg"
    assert MonitoringSettings().window == 500
    assert MonitoringSettings().alert_cooldown == 300
    assert RetrainingSettings().version_every == 1000


# --- prefixes -------------------------------------------------------------------------------------


def test_service_prefix_only_affects_its_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_INFERENCE_METRICS_PORT", "9999")
    assert InferenceSettings().metrics_port == 9999
    for service in SERVICES:
        if service != "inference":
            assert SERVICE_SETTINGS[service]().metrics_port == DEFAULT_METRICS_PORTS[service]


def test_same_field_name_in_two_services_is_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_RETRAINING_MODEL_SPEC", "hat")
    monkeypatch.setenv("DRIFTLOOP_MONITORING_JOIN_TTL_S", "12.5")
    assert RetrainingSettings().model_spec == "hat"
    assert InferenceSettings().model_spec == "logreg"
    assert MonitoringSettings().join_ttl_s == 12.5
    assert FeaturesSettings().join_ttl_s == 3600.0


def test_common_prefix_is_read_and_service_variable_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_PARTITIONS", "8")
    monkeypatch.setenv("DRIFTLOOP_TOPIC_PREFIX", "t1.")
    monkeypatch.setenv("DRIFTLOOP_LOG_JSON", "false")
    monkeypatch.setenv("DRIFTLOOP_SCHEMA_DIR", "/opt/schemas")
    # An unprefixed or service-prefixed spelling of a common field is not the common field.
    monkeypatch.setenv("PARTITIONS", "2")
    monkeypatch.setenv("DRIFTLOOP_INGESTION_PARTITIONS", "3")
    s = CommonSettings()
    assert s.partitions == 8
    assert s.topic_prefix == "t1."
    assert s.log_json is False
    assert s.schema_dir == Path("/opt/schemas")


def test_lowercase_variable_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("driftloop_features_join_ttl_s", "7")
    assert FeaturesSettings().join_ttl_s == 7.0


# --- the bootstrap switch -------------------------------------------------------------------------


def test_kafka_bootstrap_servers_switches_off_the_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    s = CommonSettings()
    assert s.uses_embedded_broker is False
    assert s.bootstrap_servers == "kafka-0:9092,kafka-1:9092"


def test_prefixed_bootstrap_variable_is_not_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    s = CommonSettings()
    assert s.uses_embedded_broker is True
    assert s.bootstrap_servers == "127.0.0.1:9092"


def test_broker_port_moves_the_embedded_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_BROKER_PORT", "19092")
    s = CommonSettings()
    assert s.uses_embedded_broker is True
    assert s.bootstrap_servers == "127.0.0.1:19092"
    # ...but an explicit Kafka wins over the embedded port.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert CommonSettings().bootstrap_servers == "kafka:9092"


def test_empty_bootstrap_variable_is_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. `KAFKA_BOOTSTRAP_SERVERS=` in an .env file or `${KAFKA_BOOTSTRAP_SERVERS:-}` in compose.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "")
    s = CommonSettings()
    embedded_address = s.bootstrap_servers == f"127.0.0.1:{s.broker_port}"
    assert s.uses_embedded_broker == embedded_address


# --- invalid values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    [
        (CommonSettings, "DRIFTLOOP_PARTITIONS", "0"),
        (CommonSettings, "DRIFTLOOP_PARTITIONS", "-1"),
        (CommonSettings, "DRIFTLOOP_BROKER_PORT", "not-a-port"),
        (CommonSettings, "DRIFTLOOP_BROKER_PORT", "0"),
        (CommonSettings, "DRIFTLOOP_BROKER_PORT", "65536"),
        (CommonSettings, "DRIFTLOOP_SESSION_TIMEOUT_S", "0"),
        (CommonSettings, "DRIFTLOOP_LOG_JSON", "maybe"),
        (InferenceSettings, "DRIFTLOOP_INFERENCE_METRICS_PORT", "91o3"),
        (InferenceSettings, "DRIFTLOOP_INFERENCE_METRICS_PORT", "70000"),
        (IngestionSettings, "DRIFTLOOP_INGESTION_MAX_RECORD_BYTES", "0"),
        (IngestionSettings, "DRIFTLOOP_INGESTION_MAX_LATENESS_S", "-5"),
        (MonitoringSettings, "DRIFTLOOP_MONITORING_ALERT_COOLDOWN", "-1"),
        (MonitoringSettings, "DRIFTLOOP_MONITORING_WINDOW", "0"),
        (MonitoringSettings, "DRIFTLOOP_MONITORING_ALERT_COOLDOWN", "-1"),
        (RetrainingSettings, "DRIFTLOOP_RETRAINING_VERSION_EVERY", "0"),
        (FeaturesSettings, "DRIFTLOOP_FEATURES_BATCH_SIZE", "0"),
        (FeaturesSettings, "DRIFTLOOP_FEATURES_BATCH_WINDOW_S", "0"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        cls()
    field = name.removeprefix(cls.model_config["env_prefix"]).lower()
    assert any(field in map(str, err["loc"]) for err in info.value.errors())


def test_an_invalid_value_of_another_service_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_INGESTION_METRICS_PORT", "not-a-port")
    assert InferenceSettings().metrics_port == 9103
    assert CommonSettings().partitions == 4
    with pytest.raises(ValidationError):
        IngestionSettings()


def test_metrics_port_zero_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_MONITORING_METRICS_PORT", "0")
    assert MonitoringSettings().metrics_port == 0


# --- env_var_names --------------------------------------------------------------------------------


def test_env_var_names_of_one_service() -> None:
    names = env_var_names("inference")
    assert {
        "KAFKA_BOOTSTRAP_SERVERS",
        "DRIFTLOOP_BROKER_PORT",
        "DRIFTLOOP_PARTITIONS",
        "DRIFTLOOP_TOPIC_PREFIX",
        "DRIFTLOOP_SCHEMA_DIR",
        "DRIFTLOOP_ARTIFACT_STORE",
        "DRIFTLOOP_INFERENCE_METRICS_PORT",
        "DRIFTLOOP_INFERENCE_MODEL_SPEC",
        "DRIFTLOOP_INFERENCE_SEED",
        "DRIFTLOOP_INFERENCE_BATCH_SIZE",
    } <= names
    assert "DRIFTLOOP_KAFKA_BOOTSTRAP_SERVERS" not in names
    assert not any(n.startswith(("DRIFTLOOP_INGESTION_", "DRIFTLOOP_RETRAINING_")) for n in names)
    assert all(n == n.upper() for n in names)


def test_env_var_names_of_every_process_is_the_union() -> None:
    union = set().union(*(env_var_names(s) for s in SERVICES))
    assert env_var_names() == union
    assert "DRIFTLOOP_MONITORING_CONCEPT_DETECTORS" in union
    assert "DRIFTLOOP_RETRAINING_VERSION_EVERY" in union
    assert "DRIFTLOOP_INGESTION_MAX_LATENESS_S" in union


def test_env_var_names_has_one_name_per_field() -> None:
    for service, cls in SERVICE_SETTINGS.items():
        expected = len(CommonSettings.model_fields) + len(cls.model_fields)
        assert len(env_var_names(service)) == expected


def test_unknown_service_has_no_names() -> None:
    with pytest.raises(KeyError):
        env_var_names("billing")


def _sample(default: object) -> tuple[str, object]:
    """An environment value for a field, different from its default, and what it parses to."""
    if default is True or default is False:
        return ("false" if default else "true"), not default
    if isinstance(default, int):
        return str(default + 1), default + 1
    if isinstance(default, float):
        return str(default / 2), default / 2
    if isinstance(default, Path):
        return "/elsewhere", Path("/elsewhere")
    return "sentinel-value", "sentinel-value"


# Fields whose values are constrained (a choice, an existing file) or secret.
SAMPLES: dict[str, tuple[str, object]] = {
    "security_protocol": ("SSL", "SSL"),
    "sasl_mechanism": ("SCRAM-SHA-512", "SCRAM-SHA-512"),
    "ssl_cafile": (str(REPO_ROOT / "pyproject.toml"), REPO_ROOT / "pyproject.toml"),
    "fetch_max_wait_ms": ("25", 25),
    "task": ("regression", "regression"),
    "model_spec": ("hat", "hat"),
    "model_specs": ("logreg,arf", "logreg,arf"),
    "log_level": ("DEBUG", "DEBUG"),
    "broker_engine": ("tansu", "tansu"),
    "producer_idempotence": ("false", False),
    "processing_guarantee": ("at_least_once", "at_least_once"),
    "instance_id": ("inference-0", "inference-0"),
}


def _value(v: object) -> object:
    return v.get_secret_value() if isinstance(v, SecretStr) else v


@pytest.mark.parametrize("service", SERVICES)
def test_every_listed_name_is_really_read(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    """A deployment file that sets a name from env_var_names() must change a setting."""
    cls = SERVICE_SETTINGS[service]
    for settings_cls in (CommonSettings, cls):
        prefix = settings_cls.model_config["env_prefix"]
        for field_name, field in settings_cls.model_fields.items():
            var = "KAFKA_BOOTSTRAP_SERVERS" if field.validation_alias else f"{prefix}{field_name}".upper()
            assert var in env_var_names(service)
            if field_name in ("ssl_certfile", "ssl_keyfile"):
                continue  # only valid as a pair: test_settings_security covers them
            raw, parsed = SAMPLES.get(field_name) or _sample(field.default)
            with monkeypatch.context() as m:
                m.setenv(var, raw)
                assert _value(getattr(settings_cls(), field_name)) == parsed, var
