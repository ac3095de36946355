"""HMAC-signed registry records: sign/verify, tampering, wrong keys, and the Registry refusing
what does not verify once a key is configured."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.shared.errors import RegistrySignatureInvalid
from driftloop.shared.registry import Registry, version_record, with_status
from driftloop.shared.resources import SCHEMA_DIR
from driftloop.shared.serde import FileSchemaRegistry, Serde
from driftloop.shared.signing import SCHEME, SIGNATURE_FIELD, canonical, sign, verify

KEY = b"registry-key-for-tests"


def record(version: int = 3, status: str = "champion") -> dict[str, Any]:
    return version_record(
        name="default",
        version=version,
        status=status,
        reason="test",
        artifact=(f"file:///store/default/v{version}.pkl", "ab" * 32),
        parent=version - 1 or None,
        trigger="label_volume",
        window={"examples": 100, "start_time": 1, "end_time": 2, "first_event_id": "a", "last_event_id": "b"},
        params={"spec": "logreg", "seed": "42", "trained": "true"},
        metrics={"prequential_accuracy": 0.75, "examples": 100},
        feature_set_version="fs1",
        code_version="test",
        now_ms=1_000,
    )


def test_a_signed_record_verifies_with_its_key_only() -> None:
    signed = sign(record(), KEY)
    assert signed[SIGNATURE_FIELD].startswith(f"{SCHEME}:")
    assert verify(signed, KEY)
    assert verify(signed, KEY.decode())  # str and bytes keys are the same key
    assert not verify(signed, b"another-key")
    assert not verify(record(), KEY)  # unsigned


def test_signing_ignores_an_earlier_signature_and_does_not_mutate() -> None:
    original = record()
    once = sign(original, KEY)
    assert original[SIGNATURE_FIELD] is None
    assert sign(once, KEY) == once
    assert sign({**once, SIGNATURE_FIELD: "hmac-sha256-v1:00"}, KEY) == once


TAMPERS = [
    ("status", "archived"),
    ("version", 4),
    ("artifact_uri", "file:///etc/passwd"),
    ("artifact_sha256", "cd" * 32),
    ("parent_version", None),
    ("params", {"spec": "logreg", "seed": "43", "trained": "true"}),
    ("metrics", {"prequential_accuracy": 0.76, "examples": 100}),
    ("training_window", {"examples": 101, "start_time": 1, "end_time": 2, "first_event_id": "a", "last_event_id": "b"}),
    ("updated_at", 1_001),
]


@pytest.mark.parametrize(("field", "value"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_tampering_with_any_one_field_breaks_the_signature(field: str, value: object) -> None:
    signed = sign(record(), KEY)
    assert signed[field] != value
    assert not verify({**signed, field: value}, KEY)


def test_an_added_field_breaks_the_signature_but_an_added_null_does_not() -> None:
    signed = sign(record(), KEY)
    assert not verify({**signed, "owner": "mallory"}, KEY)
    # null and absent are the same to an Avro reader with a null default (schema evolution).
    assert verify({**signed, "future_optional_field": None}, KEY)


def test_the_signature_survives_the_avro_round_trip() -> None:
    serde = Serde(FileSchemaRegistry(SCHEMA_DIR))
    signed = sign(record(), KEY)  # metrics hold an int that Avro reads back as a float
    decoded = serde.decode("ModelVersion", serde.encode("ModelVersion", signed))
    assert isinstance(decoded["metrics"]["examples"], float)
    assert verify(decoded, KEY)
    assert canonical(decoded) == canonical(signed)


def test_non_finite_metrics_have_a_canonical_form() -> None:
    r = record()
    nan = sign({**r, "metrics": {"log_loss": float("nan")}}, KEY)
    assert verify(nan, KEY)
    assert not verify({**nan, "metrics": {"log_loss": float("inf")}}, KEY)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=10),
        st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**53), 2**53),
        max_size=5,
    ),
    st.text(max_size=40),
)
def test_sign_then_verify_for_any_metrics_and_reason(metrics: dict[str, float], reason: str) -> None:
    signed = sign({**record(), "metrics": metrics, "status_reason": reason}, KEY)
    assert verify(signed, KEY)
    assert not verify({**signed, "status_reason": reason + "x"}, KEY)


# --- the Registry with and without a key ---------------------------------------------------------


def test_without_a_key_every_record_is_accepted() -> None:
    reg = Registry()
    reg.apply(record(1))
    reg.apply(sign(record(2), b"whatever"))
    assert reg.champion("default")["version"] == 2


def test_with_a_key_unsigned_and_wrongly_signed_records_never_become_champion() -> None:
    reg = Registry(KEY)
    assert reg.apply(sign(record(1), KEY)) is not None
    for forged in (record(2), sign(record(2), b"wrong-key"), {**sign(record(1), KEY), "status": "archived"}):
        with pytest.raises(RegistrySignatureInvalid) as info:
            reg.apply(forged)
        assert info.value.code == "registry_signature_invalid"
        assert KEY.decode() not in str(info.value)
    assert reg.champion("default")["version"] == 1
    assert reg.get("default", 2) is None and len(reg) == 1


def test_a_status_change_must_be_signed_again() -> None:
    reg = Registry(KEY)
    reg.apply(sign(record(1), KEY))
    archived = with_status(sign(record(1), KEY), "archived", "operator", 2_000)
    assert archived[SIGNATURE_FIELD] is None
    with pytest.raises(RegistrySignatureInvalid):
        reg.apply(archived)
    reg.apply(sign(archived, KEY))
    assert reg.champion("default") is None
