"""The README's settings table against the settings classes: every setting a class reads
from the environment has a row, and every row names a setting that exists. A row's
`DRIFTLOOP_<SERVICE>_X` stands for X of each of the five services."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from driftloop.shared.settings import (
    SERVICES,
    CommonSettings,
    FeaturesSettings,
    InferenceSettings,
    IngestionSettings,
    MonitoringSettings,
    RetrainingSettings,
)

README = Path(__file__).resolve().parents[2] / "README.md"
CLASSES: tuple[type[BaseSettings], ...] = (
    CommonSettings,
    IngestionSettings,
    FeaturesSettings,
    InferenceSettings,
    MonitoringSettings,
    RetrainingSettings,
)


def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(c) for c in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field}".upper())
    return names


def table_rows(text: str) -> list[str]:
    """The first cell of each row of the table under '## Settings'."""
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "no settings table under '## Settings'"
    return [row.split("|")[1] for row in rows]


def table_names(text: str) -> set[str]:
    names = set()
    for cell in table_rows(text):
        for name in re.findall(r"`([A-Z0-9_<>]+)`", cell):
            if "<SERVICE>" in name:
                names.update(name.replace("<SERVICE>", s.upper()) for s in SERVICES)
            else:
                names.add(name)
    return names


def test_every_setting_has_a_row_and_every_row_a_setting() -> None:
    settings = set().union(*(env_names(c) for c in CLASSES))
    table = table_names(README.read_text())
    assert not settings - table, f"settings missing from the README's table: {sorted(settings - table)}"
    assert not table - settings, f"README rows naming no setting: {sorted(table - settings)}"


def test_the_comparison_sees_a_missing_row() -> None:
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `DRIFTLOOP_INGESTION_MAX_LATENESS_S`"))
    assert "DRIFTLOOP_INGESTION_MAX_LATENESS_S" not in table_names(text.replace(row + "\n", ""))
    assert "DRIFTLOOP_FEATURES_BATCH_SIZE" in table_names(text)  # a <SERVICE> row, expanded
