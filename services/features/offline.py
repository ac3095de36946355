"""The offline store: FeatureVectors and LabeledExamples in Avro object-container files,
for training and backfill (no Kafka; the clock is passed in).

Layout, one directory per record kind, feature set version and UTC date of event_time::

    <root>/features/feature_set_version=fs1/date=2026-11-24/part-<ms>-<id>.avro
    <root>/examples/feature_set_version=fs1/date=2026-11-24/part-<ms>-<id>.avro

Records are buffered and written in batches: every ``flush`` writes one new part file per
partition it has records for, never appends to an old one. A part is written under a
hidden temporary name and renamed into place once complete, so a crash leaves either a
whole readable part or a hidden temporary the reader skips; the records buffered since
the last flush are what a crash loses (the Kafka topics stay the source of truth).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import fastavro
from fastavro.schema import to_parsing_canonical_form
from fastavro.types import Schema

from driftloop.shared.serde import zigzag_long

#: The directory of each record kind, and the Avro record it holds.
RECORDS = {"features": "FeatureVector", "examples": "LabeledExample"}
_FSV, _DATE = "feature_set_version=", "date="
_MAGIC = b"Obj\x01"
CODECS = ("null", "deflate")


def _bytes(b: bytes) -> bytes:
    return zigzag_long(len(b)) + b


def container(schema: Schema, bodies: list[bytes], codec: str = "deflate", sync: bytes | None = None) -> bytes:
    """An Avro object container file holding ``bodies``, records already encoded with
    ``schema`` (the bytes after the Confluent header of a topic record): the features
    service stores what it produced without encoding it again (re-encoding with
    fastavro.writer was a large share of the service's CPU: README, Measured choices)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    sync = sync or uuid.uuid4().bytes
    meta = {"avro.schema": to_parsing_canonical_form(schema).encode(), "avro.codec": codec.encode()}
    out = io.BytesIO()
    out.write(_MAGIC)
    out.write(zigzag_long(len(meta)))
    for key, value in meta.items():
        out.write(_bytes(key.encode()))
        out.write(_bytes(value))
    out.write(b"\x00")
    out.write(sync)
    if bodies:
        data = b"".join(bodies)
        if codec == "deflate":
            deflate = zlib.compressobj(1, zlib.DEFLATED, -15)  # raw deflate, as Avro specifies
            data = deflate.compress(data) + deflate.flush()
        out.write(zigzag_long(len(bodies)))
        out.write(_bytes(data))
        out.write(sync)
    return out.getvalue()


def utc_date(event_time_ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(event_time_ms / 1000, tz=dt.UTC).date()


def partition_dir(root: Path, record: str, feature_set_version: str, date: dt.date) -> Path:
    # quote(): a version is user-chosen text and must stay one path component.
    return Path(root) / record / f"{_FSV}{quote(feature_set_version, safe='')}" / f"{_DATE}{date.isoformat()}"


class OfflineWriter:
    """Buffers records and writes them as new Avro part files on ``flush``.

    ``schemas`` maps each record kind (``features``, ``examples``) to its parsed Avro schema.
    """

    def __init__(self, root: Path, schemas: Mapping[str, Schema], codec: str = "deflate") -> None:
        unknown = set(schemas) - set(RECORDS)
        if unknown:
            raise ValueError(f"unknown record kinds {sorted(unknown)}; known: {sorted(RECORDS)}")
        self.root = Path(root)
        self.schemas = dict(schemas)
        self.codec = codec
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
        self._buffer: dict[tuple[str, str, dt.date], list[bytes]] = defaultdict(list)
        self._pending = 0

    @property
    def pending(self) -> int:
        """Records buffered since the last flush."""
        return self._pending

    def append(self, record: str, value: Mapping[str, Any], body: bytes | None = None) -> None:
        """Buffer ``value``; ``body``, when given, is ``value`` already encoded with the
        record's schema (schemaless Avro), stored as it is."""
        schema = self.schemas.get(record)
        if schema is None:
            raise ValueError(f"no schema for record kind {record!r}")
        if body is None:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, dict(value))
            body = buf.getvalue()
        key = (record, value["feature_set_version"], utc_date(value["event_time"]))
        self._buffer[key].append(body)
        self._pending += 1

    def take(self) -> dict[tuple[str, str, dt.date], list[bytes]]:
        """Hand over the buffered records (for ``write``) and start a new buffer."""
        buffer, self._buffer, self._pending = self._buffer, defaultdict(list), 0
        return buffer

    def write(self, batch: Mapping[tuple[str, str, dt.date], list[bytes]], now_ms: int) -> list[Path]:
        """Write a batch from ``take`` as one new part file per partition (safe off the event
        loop: it touches only the batch); returns the new part files."""
        written: list[Path] = []
        for (record, fsv, date), bodies in sorted(batch.items()):
            folder = partition_dir(self.root, record, fsv, date)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{now_ms:013d}-{uuid.uuid4().hex[:8]}.avro"
            tmp = folder / f".{name}.tmp"
            with tmp.open("wb") as fh:
                fh.write(container(self.schemas[record], bodies, self.codec))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
            written.append(folder / name)
        return written

    def flush(self, now_ms: int) -> list[Path]:
        """Write every buffered record; returns the new part files."""
        return self.write(self.take(), now_ms)


def _partitions(root: Path, prefix: str) -> list[tuple[str, Path]]:
    if not root.is_dir():
        return []
    return sorted(
        (unquote(p.name[len(prefix) :]), p) for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix)
    )


def read(
    root: Path,
    record: str,
    feature_set_version: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the stored records of one kind (``features`` or ``examples``), optionally of one
    feature set version and of event dates from ``start`` to ``end`` (UTC days, inclusive),
    partition by partition and part by part in the order they were written."""
    if record not in RECORDS:
        raise ValueError(f"unknown record kind {record!r}; known: {', '.join(RECORDS)}")
    for fsv, fsv_dir in _partitions(Path(root) / record, _FSV):
        if feature_set_version is not None and fsv != feature_set_version:
            continue
        for day, day_dir in _partitions(fsv_dir, _DATE):
            try:
                date = dt.date.fromisoformat(day)
            except ValueError:
                continue  # not a partition of ours
            if (start is not None and date < start) or (end is not None and date > end):
                continue
            for part in sorted(day_dir.glob("part-*.avro")):
                with part.open("rb") as fh:
                    yield from fastavro.reader(fh)  # type: ignore[misc]


def feature_set_versions(root: Path, record: str) -> list[str]:
    return [fsv for fsv, _ in _partitions(Path(root) / record, _FSV)]
