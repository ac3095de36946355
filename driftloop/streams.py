"""Turning a dataset into the events and delayed labels a producer sends (pure)."""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftloop.shared.errors import ConfigError


@dataclass
class Dataset:
    name: str
    rows: list[tuple[dict[str, Any], Any]]  # (fields, label)
    drift_points: list[int] = field(default_factory=list)
    entities: list[str] | None = None


def _cell(text: str | None) -> Any:
    if text is None or text == "":  # None: a short row (csv's restval)
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def numeric(fields: dict[str, Any]) -> dict[str, float]:
    """A row's numeric fields as a model's features (booleans and text left out)."""
    return {k: float(v) for k, v in fields.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def read_csv(path: Path, target: str, entity: str | None = None, limit: int | None = None) -> Dataset:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if target not in columns:
            raise ConfigError(f"{path}: no column {target!r}; columns are {', '.join(columns)}")
        if entity is not None and entity not in columns:
            raise ConfigError(f"{path}: no entity column {entity!r}; columns are {', '.join(columns)}")
        rows: list[tuple[dict[str, Any], Any]] = []
        entities: list[str] | None = [] if entity else None
        for raw in itertools.islice(reader, limit):
            fields = {k: _cell(v) for k, v in raw.items() if k not in (target, entity) and k is not None}
            rows.append((fields, _cell(raw[target])))
            if entities is not None and entity is not None:
                entities.append(str(raw[entity]))
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return Dataset(path.stem, rows, [], entities)


def sea_stream(n: int, seed: int = 7) -> Dataset:
    """River's SEA generator with abrupt concept changes at n/3 and 2n/3 (known drift points).

    Thresholds 8 -> 7 -> 9.5 (variants 0, 2, 3): after each change a static model is wrong
    on every point between the old and the new boundary.
    """
    from river.datasets import synth

    variants = (0, 2, 3)
    points = [n // 3, 2 * n // 3]
    sizes = [points[0], points[1] - points[0], n - points[1]]
    rows: list[tuple[dict[str, Any], Any]] = []
    for i, (variant, size) in enumerate(zip(variants, sizes, strict=True)):
        gen = synth.SEA(variant=variant, noise=0.05, seed=seed + i)
        rows.extend(({f"x{k}": float(v) for k, v in x.items()}, bool(y)) for x, y in gen.take(size))
    return Dataset("sea", rows, points)


def elec2_stream(limit: int | None = None) -> Dataset:
    """River's Elec2 loader (it downloads the file on first use)."""
    from river import datasets

    rows = [(dict(x), y) for x, y in itertools.islice(datasets.Elec2(), limit)]
    return Dataset("elec2", rows, [])


def load_dataset(spec: str, target: str | None, events: int | None) -> Dataset:
    if spec == "sea":
        return sea_stream(events or 6_000)
    if spec == "elec2":
        return elec2_stream(events)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"dataset {spec!r} is neither 'sea', 'elec2' nor a CSV file")
    if target is None:
        raise ConfigError("a CSV dataset needs --target COL")
    return read_csv(path, target, limit=events)


def monitoring_stream(
    n: int,
    *,
    drift_at: int,
    right_before: float,
    right_after: float,
    input_shift: float = 0.0,
    seed: int = 0,
    entities: int = 13,
    base_ms: int = 0,
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(FeatureVector, champion Prediction, Label) records of a binary model with 6 features
    whose predictions are right with probability ``right_before`` and then, from ``drift_at``,
    ``right_after`` (a concept drift); feature f0's mean moves by ``input_shift`` at the same
    point (an input drift, when non-zero). For monitoring's tests and benchmark."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        eid, ent, t = f"m-{i}", f"ent-{i % entities}", base_ms + i
        truth = rng.random() < 0.5
        predicted = truth if rng.random() < (right_before if i < drift_at else right_after) else not truth
        p = 0.9 if predicted else 0.1
        shift = input_shift if i >= drift_at else 0.0
        vector = {
            "event_id": eid,
            "entity_id": ent,
            "event_time": t,
            "feature_set_version": "fs1",
            "features": {f"f{k}": rng.gauss(shift if k == 0 else 0.0, 1) for k in range(6)},
            "ingest_time": t,
        }
        prediction = {
            "event_id": eid,
            "entity_id": ent,
            "event_time": t,
            "model_name": "default",
            "model_version": 2,
            "role": "champion",
            "predicted": predicted,
            "scores": {"True": p, "False": 1 - p},
            "feature_set_version": "fs1",
            "ingest_time": t,
            "predicted_at": t + 5,
        }
        label = {"event_id": eid, "entity_id": ent, "label": truth, "label_time": t + 1000}
        out.append((vector, prediction, label))
    return out


def schedule(dataset: Dataset, run_id: str, label_delay: int) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """("event" | "label", row index, record) in send order: the label of row i goes out
    right after event i + label_delay, and the remaining labels after the last event."""
    n = len(dataset.rows)

    def ids(i: int) -> tuple[str, str]:
        event_id = f"{run_id}-{i}"
        entity = dataset.entities[i] if dataset.entities else event_id
        return event_id, entity

    for i in range(n + label_delay):
        if i < n:
            event_id, entity = ids(i)
            yield "event", i, {"event_id": event_id, "entity_id": entity, "fields": dataset.rows[i][0]}
        j = i - label_delay
        # A row without a target value is an event whose label never comes.
        if 0 <= j < n and dataset.rows[j][1] is not None:
            event_id, entity = ids(j)
            yield "label", j, {"event_id": event_id, "entity_id": entity, "label": dataset.rows[j][1]}


def index_of(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def batched(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(it)
    while chunk := list(itertools.islice(it, n)):
        yield chunk
