"""`driftloop features export`: the offline store as JSON lines or CSV, for training and backfill."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from driftloop.services.features.offline import read
from driftloop.shared.errors import ConfigError
from driftloop.shared.settings import CommonSettings

#: Columns before the features, per record kind; a CSV has one column per feature after them.
BASE_COLUMNS = {
    "features": ["event_id", "entity_id", "event_time", "feature_set_version", "ingest_time"],
    "examples": ["event_id", "entity_id", "event_time", "feature_set_version", "label", "label_time"],
}


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
    else:
        with path.open("w", newline="") as fh:
            yield fh


def export(
    root: Path,
    record: str,
    out: IO[str],
    fmt: str = "jsonl",
    feature_set_version: str | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> int:
    """Write the selected records to ``out``; returns how many."""

    def rows() -> Iterator[dict[str, Any]]:
        return read(root, record, feature_set_version, since, until)

    n = 0
    if fmt == "jsonl":
        for row in rows():
            out.write(json.dumps(row, separators=(",", ":"), sort_keys=True) + "\n")
            n += 1
        return n
    # CSV needs every feature name for its header: a first pass collects them.
    names = sorted({name for row in rows() for name in row["features"]})
    writer = csv.writer(out)
    writer.writerow(BASE_COLUMNS[record] + names)
    for row in rows():
        feats = row["features"]
        writer.writerow([row.get(c) for c in BASE_COLUMNS[record]] + [feats.get(name, "") for name in names])
        n += 1
    return n


def features_cli(args: argparse.Namespace) -> int:
    root = CommonSettings().offline_store
    if not root:
        raise ConfigError("the offline store is disabled (DRIFTLOOP_OFFLINE_STORE is empty)")
    try:
        with _output(args.out) as out:
            n = export(Path(root), args.record, out, args.format, args.feature_set, args.since, args.until)
            out.flush()
    except BrokenPipeError:
        if args.out is not None:
            raise
        # The reader closed the pipe (`| head -1`): it has what it wanted. Standard output goes
        # to /dev/null so that the interpreter's final flush raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(f"exported {n} {args.record} records from {root}" + (f" to {args.out}" if args.out else ""), file=sys.stderr)
    return 0
