"""The ingestion data contract: each rule accepts what it should, refuses the rest with
contract_violation naming the field and the rule, and a malformed file is a ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driftloop.services.ingestion.contract import Contract
from driftloop.shared.errors import ConfigError, ContractViolation, InvalidRecord

CONTRACT = """
fields:
  price: {type: number, required: true, min: 0, max: 1}
  day: {type: integer, min: 1, max: 7}
  region: {type: string, allowed: [NSW, VIC]}
  holiday: {type: boolean}
  level: {allowed: [1, 2]}
label: {allowed: [UP, DOWN]}
"""


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e", "entity_id": "u", "event_time": 0, "fields": fields, "ingest_time": None}


@pytest.fixture
def contract() -> Contract:
    return Contract.from_text(CONTRACT)


@pytest.mark.parametrize(
    "fields",
    [
        {"price": 0.5},
        {"price": 0, "day": 7, "region": "VIC", "holiday": False, "level": 2},
        {"price": 1.0, "day": 3.0, "other": "x", "region": None},
    ],
)
def test_conforming_events_pass(contract: Contract, fields: dict[str, Any]) -> None:
    contract.check_event(event(**fields))


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({}, "'price': required"),
        ({"price": None}, "'price': required"),
        ({"price": "0.5"}, "'price': type number"),
        ({"price": True}, "'price': type number"),
        ({"price": -0.1}, "'price': min 0"),
        ({"price": 1.5}, "'price': max 1"),
        ({"price": 0.5, "day": 2.5}, "'day': type integer"),
        ({"price": 0.5, "day": 0}, "'day': min 1"),
        ({"price": 0.5, "region": "QLD"}, "'region': allowed"),
        ({"price": 0.5, "holiday": 1}, "'holiday': type boolean"),
        ({"price": 0.5, "level": True}, "'level': allowed"),
        ({"price": 0.5, "level": 3}, "'level': allowed"),
    ],
)
def test_violations_name_field_and_rule(contract: Contract, fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ContractViolation) as err:
        contract.check_event(event(**fields))
    assert fragment in str(err.value)
    assert err.value.code == "contract_violation" and isinstance(err.value, InvalidRecord)


def test_labels_and_extra_fields() -> None:
    c = Contract.from_text(
        '{"fields": {"x": {"type": "number"}}, "label": {"allowed": ["UP"]}, "extra_fields": "reject"}'
    )
    c.check_label({"label": "UP"})
    with pytest.raises(ContractViolation, match="label: allowed"):
        c.check_label({"label": "DOWN"})
    c.check_event(event(x=1))
    with pytest.raises(ContractViolation, match="'y': not in the contract"):
        c.check_event(event(x=1, y=2))
    Contract.from_text(CONTRACT).check_event(event(price=0.1, y=2))  # extra fields allowed by default


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("fields: [a, b", "not valid YAML"),
        ("- 1\n- 2", "`fields` mapping"),
        ("fields: {x: {type: float}}", "type 'float'"),
        ("fields: {x: {maximum: 3}}", "unknown rule 'maximum'"),
        ("fields: {x: {min: 5, max: 1}}", "min is above max"),
        ("fields: {x: {min: abc}}", "min must be a finite number"),
        ("fields: {x: {allowed: []}}", "non-empty list"),
        ("fields: {x: {required: maybe}}", "true or false"),
        ("fields: {x: 3}", "must be a mapping"),
        ("fields: {}\nextra_fields: sometimes", "allow or reject"),
        ("fields: {}\nlabels: {}", "unknown key 'labels'"),
    ],
)
def test_malformed_contract_is_a_one_line_config_error(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        Contract.from_text(text, "data contract c.yaml")
    assert fragment in str(err.value) and "c.yaml" in str(err.value) and "\n" not in str(err.value)


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONTRACT)
    assert Contract.load(path) == Contract.from_text(CONTRACT, "other")
    with pytest.raises(ConfigError, match="missing.yaml"):
        Contract.load(tmp_path / "missing.yaml")
