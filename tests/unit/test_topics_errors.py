"""The topic catalogue and the error hierarchy."""

from __future__ import annotations

import re

import pytest

from driftloop.shared import errors
from driftloop.shared.errors import DEAD_LETTER_CODES, DriftloopError
from driftloop.shared.topics import EVENT_TOPICS, EVENTS_RAW, LABELS_CLEAN, MODELS_REGISTRY, REGISTRY_TOPIC, Topics

# --- topics --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "partitions"), [("driftloop.", 4), ("run-42.", 1), ("", 12)])
def test_catalogue_names_every_topic_with_the_prefix(prefix: str, partitions: int) -> None:
    catalogue = Topics(prefix, partitions).catalogue()
    names = [spec.name for spec in catalogue]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(prefix + short for short in (*EVENT_TOPICS, REGISTRY_TOPIC))
    assert all(name.startswith(prefix) for name in names)


def test_event_topics_share_the_partition_count_and_are_not_compacted() -> None:
    catalogue = {spec.name: spec for spec in Topics("p.", 6).catalogue()}
    for short in EVENT_TOPICS:
        spec = catalogue[f"p.{short}"]
        assert spec.partitions == 6
        assert spec.config["cleanup.policy"] == "delete"
        assert not spec.compacted


def test_registry_is_one_compacted_partition() -> None:
    catalogue = {spec.name: spec for spec in Topics("p.", 6).catalogue()}
    registry = catalogue["p.models.registry"]
    assert registry.partitions == 1
    assert registry.compacted
    assert registry.config == {"cleanup.policy": "compact"}
    assert [s.name for s in catalogue.values() if s.compacted] == ["p.models.registry"]


def test_the_joined_topics_are_in_the_catalogue() -> None:
    # The joins rely on these being co-partitioned event topics.
    for short in (
        "events.raw",
        "events.clean",
        "labels.raw",
        "labels.clean",
        "features",
        "examples",
        "predictions",
        "outcomes",
        "deadletter",
        "alerts",
    ):
        assert short in EVENT_TOPICS


def test_names_come_from_the_topic_definitions() -> None:
    t = Topics("x.", 2)
    assert t.name(EVENTS_RAW) == "x.events.raw"
    assert t.name(LABELS_CLEAN) == "x.labels.clean"
    assert t.name(MODELS_REGISTRY) == "x.models.registry"
    assert t.name("outcomes") == "x.outcomes"
    assert not hasattr(t, "events_raw")  # no attribute magic: a typo is a type error


@pytest.mark.parametrize("short", ["events", "events.dirty", "models", "", "x.events.raw", "EVENTS.RAW"])
def test_unknown_topic_name_raises(short: str) -> None:
    with pytest.raises(KeyError):
        Topics().name(short)


def test_unknown_topic_attribute_raises_attribute_error() -> None:
    t = Topics()
    with pytest.raises(AttributeError):
        _ = t.events_dirty
    assert not hasattr(t, "metrics")
    assert getattr(t, "nonexistent", None) is None


@pytest.mark.parametrize("partitions", [0, -1])
def test_partitions_must_be_positive(partitions: int) -> None:
    with pytest.raises(ValueError):
        Topics("p.", partitions)


# --- errors --------------------------------------------------------------------------------------

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _all_error_classes() -> list[type[DriftloopError]]:
    return [obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, DriftloopError)]


def test_dead_letter_codes_are_unique_and_snake_case() -> None:
    assert len(DEAD_LETTER_CODES) == len(set(DEAD_LETTER_CODES))
    for code in DEAD_LETTER_CODES:
        assert SNAKE.match(code), code


def test_dead_letter_codes_cover_every_invalid_record_error() -> None:
    invalid = {cls.code for cls in _all_error_classes() if issubclass(cls, errors.InvalidRecord)}
    invalid.discard(errors.InvalidRecord.code)  # the abstract base, never raised as such
    assert invalid <= set(DEAD_LETTER_CODES)
    assert "internal_error" in DEAD_LETTER_CODES  # what an unexpected exception is dead-lettered as


def test_every_error_class_has_its_own_snake_case_code() -> None:
    classes = _all_error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), codes
    assert all(SNAKE.match(code) for code in codes)


def test_retriable_flags() -> None:
    assert errors.BrokerError("x").retriable is True
    assert errors.BrokerUnavailable("x").retriable is True
    for cls in (
        errors.InvalidRecord,
        errors.DecodeError,
        errors.TooOld,
        errors.ArtifactIntegrityError,
        errors.ConfigError,
        errors.UnknownModelSpec,
        errors.PortInUse,
        DriftloopError,
    ):
        assert cls("x").retriable is False, cls


def test_bad_data_errors_are_invalid_records() -> None:
    for cls in (
        errors.DecodeError,
        errors.UnknownSchema,
        errors.SchemaMismatch,
        errors.MissingField,
        errors.WrongType,
        errors.NonFiniteNumber,
        errors.RecordTooLarge,
        errors.TooOld,
        errors.DuplicateEvent,
        errors.FeatureSetMismatch,
    ):
        assert issubclass(cls, errors.InvalidRecord)
    assert not issubclass(errors.BrokerError, errors.InvalidRecord)
    assert issubclass(errors.ArtifactIntegrityError, errors.ArtifactError)
    assert issubclass(errors.ArtifactOutsideStore, errors.ArtifactError)


def test_code_can_be_overridden_per_instance() -> None:
    err = errors.InvalidRecord("field 'x' is a date", code="wrong_type")
    assert err.code == "wrong_type"
    assert str(err) == "field 'x' is a date"
    assert errors.InvalidRecord("x").code == "invalid_record"  # the class default is untouched
    assert errors.DecodeError("x").code == "decode_error"
    assert errors.DriftloopError("x").code == "internal_error"
