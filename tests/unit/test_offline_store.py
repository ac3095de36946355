"""The offline store: what is written reads back equal, in the documented layout, with
filters; a crash mid-write leaves nothing unreadable; the export command."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest

from driftloop.cli import main
from driftloop.services.features.export import export
from driftloop.services.features.offline import OfflineWriter, container, feature_set_versions, read
from driftloop.shared.serde import Serde

DAY = 86_400_000
T0 = 1_795_219_200_000  # 2026-11-21T00:00:00Z


@pytest.fixture
def writer(tmp_path: Path, serde: Serde) -> OfflineWriter:
    schemas = {
        "features": serde.registry.latest("FeatureVector")[1],
        "examples": serde.registry.latest("LabeledExample")[1],
    }
    return OfflineWriter(tmp_path / "store", schemas)


def vector(i: int, t: int, fsv: str = "fs1") -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "entity_id": f"u{i % 3}",
        "event_time": t,
        "features": {"x": float(i), f"c=v{i % 2}": 1.0},
        "feature_set_version": fsv,
        "ingest_time": t + 5 if i % 2 else None,
    }


def example(i: int, t: int, label: Any) -> dict[str, Any]:
    v = vector(i, t)
    del v["ingest_time"]
    return {**v, "label": label, "label_time": t + 1000}


def test_round_trip_layout_and_filters(writer: OfflineWriter, tmp_path: Path) -> None:
    vectors = [vector(i, T0 + (i % 3) * DAY + i) for i in range(30)] + [vector(99, T0, "fs2")]
    examples = [example(i, T0 + i, label) for i, label in enumerate([True, 3, 0.5, "up"])]
    for v in vectors:
        writer.append("features", v)
    for e in examples:
        writer.append("examples", e)
    assert writer.pending == len(vectors) + len(examples)
    parts = writer.flush(now_ms=T0 + 7)
    assert writer.pending == 0
    root = tmp_path / "store"
    rel = sorted(str(p.relative_to(root).parent) for p in parts)
    assert rel == [
        "examples/feature_set_version=fs1/date=2026-11-21",
        "features/feature_set_version=fs1/date=2026-11-21",
        "features/feature_set_version=fs1/date=2026-11-22",
        "features/feature_set_version=fs1/date=2026-11-23",
        "features/feature_set_version=fs2/date=2026-11-21",
    ]
    assert all(p.name.startswith("part-") and p.suffix == ".avro" for p in parts)

    def key(r: dict[str, Any]) -> str:
        return r["event_id"] + r["feature_set_version"]

    assert sorted(read(root, "features"), key=key) == sorted(vectors, key=key)
    assert sorted(read(root, "examples"), key=key) == sorted(examples, key=key)
    assert [r["event_id"] for r in read(root, "features", "fs2")] == ["e99"]
    day2 = list(read(root, "features", "fs1", start=dt.date(2026, 11, 22), end=dt.date(2026, 11, 22)))
    assert sorted(r["event_id"] for r in day2) == sorted(f"e{i}" for i in range(30) if i % 3 == 1)
    since = list(read(root, "features", start=dt.date(2026, 11, 23)))
    assert {r["event_id"] for r in since} == {f"e{i}" for i in range(30) if i % 3 == 2}
    assert list(read(root, "features", "fs9")) == []
    assert feature_set_versions(root, "features") == ["fs1", "fs2"]


def test_each_flush_writes_new_parts_and_reads_in_write_order(writer: OfflineWriter, tmp_path: Path) -> None:
    for batch in range(3):
        for i in range(batch * 10, batch * 10 + 10):
            writer.append("features", vector(i, T0 + i))
        writer.flush(now_ms=T0 + batch)
    assert writer.flush(now_ms=T0 + 9) == []  # nothing pending, nothing written
    folder = tmp_path / "store/features/feature_set_version=fs1/date=2026-11-21"
    assert len(list(folder.glob("part-*.avro"))) == 3
    assert [r["event_id"] for r in read(tmp_path / "store", "features")] == [f"e{i}" for i in range(30)]


def test_an_interrupted_write_leaves_the_store_readable(writer: OfflineWriter, tmp_path: Path) -> None:
    writer.append("features", vector(1, T0))
    writer.flush(now_ms=T0)
    folder = tmp_path / "store/features/feature_set_version=fs1/date=2026-11-21"
    # What a crash between open and rename leaves behind: a hidden, truncated temporary.
    (folder / ".part-0000000000009-deadbeef.avro.tmp").write_bytes(b"Obj\x01 truncated")
    assert [r["event_id"] for r in read(tmp_path / "store", "features")] == ["e1"]


def test_a_version_with_a_slash_stays_one_directory(writer: OfflineWriter, tmp_path: Path) -> None:
    writer.append("features", vector(1, T0, "team/fs1"))
    (part,) = writer.flush(now_ms=T0)
    assert part.parent.parent.parent == tmp_path / "store/features"
    assert [r["feature_set_version"] for r in read(tmp_path / "store", "features", "team/fs1")] == ["team/fs1"]


def test_export_csv_and_jsonl(writer: OfflineWriter, tmp_path: Path) -> None:
    for i in range(4):
        writer.append("examples", example(i, T0 + i, i % 2))
    writer.flush(now_ms=T0)
    out = io.StringIO()
    assert export(tmp_path / "store", "examples", out, "csv") == 4
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["event_id"] for r in rows] == ["e0", "e1", "e2", "e3"]
    assert list(rows[0]) == [
        "event_id", "entity_id", "event_time", "feature_set_version", "label", "label_time", "c=v0", "c=v1", "x",
    ]  # fmt: skip
    assert (rows[1]["x"], rows[1]["c=v1"], rows[1]["c=v0"], rows[1]["label"]) == ("1.0", "1.0", "", "1")
    out = io.StringIO()
    assert export(tmp_path / "store", "examples", out, "jsonl") == 4
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [example(i, T0 + i, i % 2) for i in range(4)]


def test_cli_export(writer: OfflineWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    for i in range(6):
        writer.append("features", vector(i, T0 + (i % 2) * DAY))
    writer.flush(now_ms=T0)
    monkeypatch.setenv("DRIFTLOOP_OFFLINE_STORE", str(tmp_path / "store"))
    out = tmp_path / "out.jsonl"
    assert main(["features", "export", "--since", "2026-11-22", "--out", str(out)]) == 0
    assert [json.loads(line)["event_id"] for line in out.read_text().splitlines()] == ["e1", "e3", "e5"]
    assert "exported 3 features records" in capsys.readouterr().err
    assert main(["features", "export", "--record", "examples", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("event_id,entity_id,event_time,feature_set_version,label,label_time")
    for bad in (["--since", "21-11-2026"], ["--record", "vectors"], ["--since", "2026-11-22", "--until", "2026-11-21"]):
        with pytest.raises(SystemExit) as exit_:
            main(["features", "export", *bad])
        assert exit_.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    monkeypatch.setenv("DRIFTLOOP_OFFLINE_STORE", "")
    assert main(["features", "export"]) == 1
    assert "disabled" in capsys.readouterr().err


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_stored_bytes_of_the_topic_read_back_as_the_records(tmp_path: Path, serde: Serde, codec: str) -> None:
    """The service appends the Avro body it produced to the topic; fastavro reads the
    hand-built container back as the records, whatever the codec."""
    schema = serde.registry.latest("FeatureVector")[1]
    w = OfflineWriter(tmp_path / "store", {"features": schema}, codec=codec)
    values = [vector(i, T0 + i) for i in range(50)]
    for v in values:
        w.append("features", v, serde.encode("FeatureVector", v)[5:])
    w.flush(T0)
    assert list(read(tmp_path / "store", "features")) == values
    (part,) = (tmp_path / "store").rglob("part-*.avro")
    with part.open("rb") as fh:
        assert fastavro.reader(fh).codec == codec


def test_container_with_no_records_is_a_valid_empty_file(serde: Serde) -> None:
    data = container(serde.registry.latest("LabeledExample")[1], [])
    assert list(fastavro.reader(io.BytesIO(data))) == []


def test_an_unknown_codec_is_refused(tmp_path: Path, serde: Serde) -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        OfflineWriter(tmp_path, {"features": serde.registry.latest("FeatureVector")[1]}, codec="snappy")
