"""Secured Kafka settings: validation with one-line errors, the mapping to aiokafka and
and secrets that never show in a repr or an error message."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from tools import require_tool

from driftloop.shared.errors import ConfigError
from driftloop.shared.kafka import client_options
from driftloop.shared.settings import CommonSettings, env_var_names, secret_env_names

PASSWORD = "pw-Zq8-never-print-me"
HMAC_KEY = "hmac-Xr4-never-print-me"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_var_names():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and its key, made by openssl (skipped without it, failed under CI=true)."""
    openssl = require_tool("openssl", "no test certificate can be made for the TLS settings tests")
    out = tmp_path_factory.mktemp("tls")
    cert, key = out / "cert.pem", out / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert]
        + ["-days", "1", "-subj", "/CN=driftloop-test"],
        check=True,
        capture_output=True,
    )
    return {"cafile": cert, "certfile": cert, "keyfile": key}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str | Path) -> CommonSettings:
    for name, value in env.items():
        monkeypatch.setenv(f"DRIFTLOOP_{name.upper()}", str(value))
    return CommonSettings()


def test_plaintext_is_the_default_and_passes_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch)
    assert client_options(s) == {"security_protocol": "PLAINTEXT"}


def test_plaintext_ignores_sasl_credentials_and_still_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, sasl_password=PASSWORD, registry_hmac_key=HMAC_KEY)
    assert client_options(s) == {"security_protocol": "PLAINTEXT"}
    assert s.hmac_key == HMAC_KEY.encode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_mapping(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    s = settings(
        monkeypatch,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="svc",
        sasl_password=PASSWORD,
    )
    assert client_options(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": PASSWORD,
    }


def test_sasl_ssl_mapping(monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]) -> None:
    s = settings(
        monkeypatch,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=PASSWORD,
        ssl_cafile=tls_files["cafile"],
    )
    opts = client_options(s)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    assert opts["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert len(opts["ssl_context"].get_ca_certs()) == 1  # our CA file, not the system store


def test_ssl_with_client_certificate(monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]) -> None:
    s = settings(
        monkeypatch,
        security_protocol="SSL",
        ssl_cafile=tls_files["cafile"],
        ssl_certfile=tls_files["certfile"],
        ssl_keyfile=tls_files["keyfile"],
    )
    opts = client_options(s)
    assert set(opts) == {"security_protocol", "ssl_context"} and opts["security_protocol"] == "SSL"


def test_a_key_that_does_not_match_its_certificate_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "not-a-key.pem"
    other.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    s = settings(monkeypatch, security_protocol="SSL", ssl_certfile=tls_files["certfile"], ssl_keyfile=other)
    with pytest.raises(ConfigError, match="TLS context"):
        client_options(s)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_password": PASSWORD}, "DRIFTLOOP_SASL_USERNAME"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "svc"}, "DRIFTLOOP_SASL_PASSWORD"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "svc", "sasl_password": ""}, "PASSWORD"),
        ({"ssl_cafile": "/no/such/ca.pem", "sasl_password": PASSWORD}, "DRIFTLOOP_SSL_CAFILE=/no/such/ca.pem"),
        ({"ssl_certfile": "/etc/hostname", "sasl_password": PASSWORD}, "set both or neither"),
    ],
)
def test_incomplete_security_is_a_one_line_config_error_without_secrets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings(monkeypatch, **env)
    message = str(info.value)
    assert says in message and "\n" not in message
    assert PASSWORD not in message and PASSWORD not in repr(info.value)


@pytest.mark.parametrize(("name", "value"), [("security_protocol", "SASL"), ("sasl_mechanism", "GSSAPI")])
def test_unknown_protocol_or_mechanism_is_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        settings(monkeypatch, **{name: value})


def test_secrets_never_appear_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        security_protocol="SASL_PLAINTEXT",
        sasl_username="svc",
        sasl_password=PASSWORD,
        registry_hmac_key=HMAC_KEY,
    )
    for text in (repr(s), str(s), str(s.model_dump()), s.model_dump_json()):
        assert PASSWORD not in text and HMAC_KEY not in text
    assert s.sasl_password is not None and s.sasl_password.get_secret_value() == PASSWORD


def test_the_secret_variables_are_the_secret_fields() -> None:
    assert secret_env_names() == {"DRIFTLOOP_SASL_USERNAME", "DRIFTLOOP_SASL_PASSWORD", "DRIFTLOOP_REGISTRY_HMAC_KEY"}
    assert secret_env_names() <= set.intersection(*(env_var_names(s) for s in ("ingestion", "inference")))
