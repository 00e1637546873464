"""The results table: schema checks, round trip, concurrent appends, crash safety, helpers."""
from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
from pathlib import Path

import pytest

from benchmarks import results
from benchmarks.results import (
    COLUMNS,
    SCHEMA,
    SchemaMismatchError,
    append_row,
    config_hash,
    format_table,
    has_row,
    package_versions,
    read_rows,
    sha256_file,
)


def make_row(run_id: str = "run-0", **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "run_id": run_id,
        "schema_version": results.SCHEMA_VERSION,
        "timestamp": "2025-01-01T00:00:00+00:00",
        "task": "semseg",
        "dataset": "potsdam",
        "split": "val",
        "train_ratio": "",
        "protocol": "finetune",
        "backbone": "ringmoe-tiny",
        "modality": "optical",
        "expert_reduction": "",
        "checkpoint": "ckpt/ringmoe.pth",
        "checkpoint_sha256": "ab" * 32,
        "config_hash": "0123456789abcdef",
        "seed": 0,
        "metrics_json": {"mIoU": 42.5, "aAcc": 80.25},
        "primary_metric": "mIoU",
        "primary_value": 42.5,
        "versions_json": {"torch": "2.13.0"},
        "host": "node-1",
        "wall_time_s": 12.345,
        "work_dir": "work_dirs/run-0",
        "status": "ok",
    }
    row.update(overrides)
    return row


def test_schema_has_a_description_per_column() -> None:
    assert COLUMNS[0] == "run_id" and COLUMNS[-1] == "status"
    assert len(COLUMNS) == 23 and results.SCHEMA_VERSION == 2
    assert all(isinstance(doc, str) and doc for doc in SCHEMA.values())


def test_missing_and_unknown_columns_are_named(tmp_path: Path) -> None:
    row = make_row()
    del row["seed"]
    row["colour"] = "blue"
    with pytest.raises(ValueError) as info:
        append_row(tmp_path / "r.csv", row)
    assert "seed" in str(info.value) and "colour" in str(info.value)
    assert not (tmp_path / "r.csv").exists()  # nothing written on a bad row


def test_header_mismatch_is_refused_and_file_untouched(tmp_path: Path) -> None:
    table = tmp_path / "r.csv"
    table.write_text("run_id,score\nold,1\n")
    before = table.read_bytes()
    with pytest.raises(SchemaMismatchError, match="header"):
        append_row(table, make_row())
    with pytest.raises(SchemaMismatchError):
        read_rows(table)
    assert table.read_bytes() == before


def test_round_trip_and_resume(tmp_path: Path) -> None:
    table = tmp_path / "nested" / "dir" / "results.csv"  # parents are created
    assert read_rows(table) == []
    append_row(table, make_row("a", work_dir="has,comma and \"quotes\""))
    append_row(table, make_row("b", checkpoint=None))
    rows = read_rows(table)
    assert [r["run_id"] for r in rows] == ["a", "b"]
    assert rows[0]["work_dir"] == "has,comma and \"quotes\""
    assert rows[1]["checkpoint"] == ""
    assert json.loads(rows[0]["metrics_json"]) == {"mIoU": 42.5, "aAcc": 80.25}
    assert float(rows[0]["wall_time_s"]) == 12.345
    assert has_row(table, "a") and not has_row(table, "c")
    with open(table, newline="") as handle:
        assert tuple(next(csv.reader(handle))) == COLUMNS


def _append_many(path: str, worker: int, count: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait()  # all writers begin together, to maximise contention
    for i in range(count):
        append_row(path, make_row(f"w{worker}-{i}", seed=i))


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    """Four writers append 25 rows each while this process keeps reading: every read sees a
    valid table whose row count only grows, and in the end all 100 rows are there, once."""
    table = tmp_path / "results.csv"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    workers = [ctx.Process(target=_append_many, args=(str(table), w, 25, start)) for w in range(4)]
    for proc in workers:
        proc.start()
    start.set()
    seen = [0]
    while any(proc.is_alive() for proc in workers):
        count = len(read_rows(table))  # raises on a torn or half-written table
        assert count >= seen[-1]
        seen.append(count)
    for proc in workers:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    rows = read_rows(table)
    assert len(rows) == 100
    assert len({r["run_id"] for r in rows}) == 100
    assert all(json.loads(r["metrics_json"])["mIoU"] == 42.5 for r in rows)
    assert table.read_text().count("run_id,schema_version") == 1  # header once
    assert not list(tmp_path.glob("*.tmp"))


def test_crash_before_replace_keeps_the_old_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "results.csv"
    append_row(table, make_row("first"))
    before = table.read_bytes()

    def crash(*_args: object, **_kwargs: object) -> None:
        raise OSError("simulated crash during replace")

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        append_row(table, make_row("second"))
    assert table.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.csv.lock"]


def test_format_table() -> None:
    rows = [make_row("a"), make_row("b", backbone="ringmoe-base-long-name", primary_value=7.123456)]
    text = format_table([{k: results._cell(v) for k, v in r.items()} for r in rows])
    lines = text.splitlines()
    assert lines[0].split() == ["task", "dataset", "protocol", "backbone", "modality", "metric", "seed", "time_s"]
    assert "mIoU=42.5" in lines[2] and "mIoU=7.123" in lines[3]
    assert "12.3" in lines[2]
    # fixed width: the metric column starts at the same offset on every data line
    offsets = {line.index("mIoU=") for line in lines[2:]}
    assert len(offsets) == 1
    assert format_table([]) == "(no results)"


def test_hash_helpers(tmp_path: Path, monkeypatch) -> None:
    from converters import seqread, util

    blob = tmp_path / "weights.bin"
    data = bytes(range(256)) * 5000
    blob.write_bytes(data)
    monkeypatch.setattr(seqread, "CHUNK", 4096)  # many reads, the last one short
    assert sha256_file(blob) == hashlib.sha256(data).hexdigest()
    util.start_sha256(blob)  # hashed in the background, taken by the next sha256_file
    assert sha256_file(blob) == hashlib.sha256(data).hexdigest()
    util.start_sha256(blob)
    blob.write_bytes(data[:-1])  # changed since: hashed again, not taken from the background
    assert sha256_file(blob) == hashlib.sha256(data[:-1]).hexdigest()
    assert config_hash("model = dict()") == hashlib.sha256(b"model = dict()").hexdigest()


def test_package_versions() -> None:
    versions = package_versions(["numpy", "surely-not-an-installed-package-xyz"])
    assert versions["numpy"].count(".") >= 1
    assert versions["surely-not-an-installed-package-xyz"] == "absent"


def _v1_table(path: Path) -> None:
    """A table as schema version 1 wrote it (17 columns, 16-hex config hash)."""
    v1 = results.SCHEMA_HISTORY[1]
    row = {c: results._cell(v) for c, v in make_row("old").items() if c in v1} | {"config_hash": "0123456789abcdef"}
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(v1)
        writer.writerow([row[c] for c in v1])


def test_old_schema_is_named_and_migrated(tmp_path: Path) -> None:
    table = tmp_path / "results.csv"
    _v1_table(table)
    before = table.read_bytes()
    with pytest.raises(SchemaMismatchError, match="schema version 1.*migrate"):
        append_row(table, make_row("new"))
    assert table.read_bytes() == before  # refused, not rewritten
    assert results._main(["migrate", str(table)]) == 0
    append_row(table, make_row("new"))
    old, new = read_rows(table)
    assert old["schema_version"] == "1" and new["schema_version"] == "2"
    assert old["protocol"] == "" and old["host"] == ""  # unknown, not guessed
    assert old["primary_value"] == "42.5" and old["config_hash"] == "0123456789abcdef"
    assert results.migrate(table) == 2  # a current table is left as it is
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert results._main(["migrate", str(tmp_path / "other.csv")]) == 2
