"""A stream's data contract: per-field rules the user writes once (pure, but for ``load``).

The contract is a YAML (or JSON) file::

    fields:
      nswprice: {type: number, required: true, min: 0, max: 1}
      day:      {type: integer, min: 1, max: 7}
      region:   {type: string, allowed: [NSW, VIC]}
      holiday:  {type: boolean}
    label: {allowed: [UP, DOWN]}     # optional: a rule for the labels' value
    extra_fields: allow              # or "reject": a field the contract does not list

Types: ``number`` (integer or float), ``integer``, ``string``, ``boolean``. A null counts as
absent: it breaks ``required`` and nothing else. ``min``/``max`` are inclusive and apply to
numbers; ``allowed`` lists every accepted value. A record that breaks a rule raises
ContractViolation (code ``contract_violation``), naming the field and the rule, and is
dead-lettered; a malformed contract is a ConfigError when the service starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from driftloop.shared.errors import ConfigError, ContractViolation

TYPES = ("number", "integer", "string", "boolean")
_RULE_KEYS = {"type", "required", "min", "max", "allowed"}


def _is_type(value: object, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, int | float)


@dataclass(frozen=True)
class FieldRule:
    type: str | None = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None

    def check(self, name: str, value: object) -> None:
        if value is None:
            if self.required:
                raise ContractViolation(f"{name}: required, but missing or null")
            return
        if self.type is not None and not _is_type(value, self.type):
            raise ContractViolation(f"{name}: type {self.type} expected, got {type(value).__name__}")
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if self.min is not None and is_number and value < self.min:  # type: ignore[operator]
            raise ContractViolation(f"{name}: min {self.min:g} broken by {value}")
        if self.max is not None and is_number and value > self.max:  # type: ignore[operator]
            raise ContractViolation(f"{name}: max {self.max:g} broken by {value}")
        if self.allowed is not None and not any(_same(value, a) for a in self.allowed):
            raise ContractViolation(f"{name}: allowed values are {list(self.allowed)}, got {value!r}")


def _same(value: object, allowed: object) -> bool:
    # True == 1 in Python; a contract allowing 1 must not accept true, nor the reverse.
    if isinstance(value, bool) or isinstance(allowed, bool):
        return type(value) is type(allowed) and value == allowed
    return value == allowed


def _rule(where: str, raw: object) -> FieldRule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a rule must be a mapping of {', '.join(sorted(_RULE_KEYS))}")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown rule {sorted(map(str, unknown))[0]!r}")
    kind = raw.get("type")
    if kind is not None and kind not in TYPES:
        raise ConfigError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise ConfigError(f"{where}: required must be true or false")
    bounds: dict[str, float | None] = {}
    for key in ("min", "max"):
        v = raw.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise ConfigError(f"{where}: {key} must be a finite number")
        bounds[key] = v
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise ConfigError(f"{where}: min is above max")
    allowed = raw.get("allowed")
    if allowed is not None:
        if not isinstance(allowed, list) or not allowed:
            raise ConfigError(f"{where}: allowed must be a non-empty list")
        if not all(isinstance(a, bool | int | float | str) for a in allowed):
            raise ConfigError(f"{where}: allowed values must be numbers, strings or booleans")
        allowed = tuple(allowed)
    return FieldRule(kind, required, bounds["min"], bounds["max"], allowed)


@dataclass(frozen=True)
class Contract:
    fields: Mapping[str, FieldRule]
    label: FieldRule | None = None
    extra_fields: str = "allow"

    @classmethod
    def from_text(cls, text: str, source: str = "contract") -> Contract:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}: not valid YAML or JSON{where}") from None
        if not isinstance(doc, Mapping) or not isinstance(doc.get("fields"), Mapping):
            raise ConfigError(f"{source}: expected a mapping with a `fields` mapping")
        unknown = set(doc) - {"fields", "label", "extra_fields"}
        if unknown:
            raise ConfigError(f"{source}: unknown key {sorted(map(str, unknown))[0]!r}")
        extra = doc.get("extra_fields", "allow")
        if extra not in ("allow", "reject"):
            raise ConfigError(f"{source}: extra_fields must be allow or reject")
        rules = {str(name): _rule(f"{source}: field {name!r}", raw) for name, raw in doc["fields"].items()}
        label = None if doc.get("label") is None else _rule(f"{source}: label", doc["label"])
        return cls(rules, label, extra)

    @classmethod
    def load(cls, path: Path) -> Contract:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"data contract {path}: {exc.strerror or exc}") from None
        return cls.from_text(text, f"data contract {path}")

    def check_event(self, event: Mapping[str, Any]) -> None:
        """Raise ContractViolation for the first field of a validated RawEvent that breaks a rule."""
        fields = event["fields"]
        for name, rule in self.fields.items():
            rule.check(f"field {name!r}", fields.get(name))
        if self.extra_fields == "reject":
            for name in fields:
                if name not in self.fields:
                    raise ContractViolation(f"field {name!r}: not in the contract (extra_fields: reject)")

    def check_label(self, label: Mapping[str, Any]) -> None:
        if self.label is not None:
            self.label.check("label", label.get("label"))
