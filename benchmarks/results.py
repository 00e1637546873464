"""One flat results table: a CSV with a declared schema, safe under concurrent writers.

Every benchmark run appends exactly one row. Many runs may finish at the same time (parallel
jobs on one machine, or on a shared file system that supports ``flock``), so writers serialise
on an exclusive lock on a sidecar ``<table>.lock`` file, and each write replaces the whole table
with ``os.replace`` from a temp file in the same directory: a crash leaves the previous table
intact, and a reader never sees a half-written row.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import importlib.metadata
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from converters.util import sha256_file  # noqa: F401  re-exported: rows record checkpoint hashes

DEFAULT_PATH = Path("results/results.csv")

SCHEMA_VERSION = 2
"""Bumped whenever a column is added, removed or changes meaning (see SCHEMA_HISTORY)."""

SCHEMA: dict[str, str] = {
    "run_id": "Unique id of the run; the resume key (a run whose id is present is skipped).",
    "schema_version": "Version of this schema the row was written with (SCHEMA_VERSION).",
    "timestamp": "When the run finished, ISO 8601 in UTC.",
    "task": "Downstream task as run.py names it, e.g. 'segmentation', 'change_detection'.",
    "dataset": "Dataset name, e.g. 'potsdam', 'levir_cd'.",
    "split": "The split the metrics were measured on, e.g. 'val' or 'test'.",
    "train_ratio": "Fraction of the training set used (e.g. 0.2 for NWPU 20%); '' for the full set.",
    "protocol": "How the backbone was trained downstream: 'finetune', 'linear_probe', 'frozen', ...",
    "backbone": "Backbone name, e.g. 'ringmoe-tiny'; '-random-init' marks the from-scratch baseline.",
    "modality": "Input modality fed to the backbone, e.g. 'optical', 'sar_l2'.",
    "expert_reduction": "How the MoE was made dense for the task ('' = the full MoE); schema 1 put it in backbone.",
    "checkpoint": "Path of the converted weights ('' when trained from scratch).",
    "checkpoint_sha256": "sha256 of the checkpoint file, hex ('' when there is none).",
    "config_hash": "sha256 of the fully resolved config text, hex.",
    "seed": "Random seed of the run.",
    "primary_metric": "Name of the metric the run is ranked by, e.g. 'mIoU'.",
    "primary_value": "Value of primary_metric, a number.",
    "metrics_json": "All final metrics as a JSON object, e.g. {\"mIoU\": 71.2, \"aAcc\": 88.0}.",
    "versions_json": "Versions of the relevant packages as a JSON object (see package_versions).",
    "host": "Name of the machine the run ran on.",
    "wall_time_s": "Wall-clock duration of the run in seconds.",
    "work_dir": "Directory holding the run's logs and checkpoints.",
    "status": "Outcome: 'ok', or 'failed' / 'timeout' with details in work_dir.",
}
"""The table's columns, in file order, each with what it holds. Changing this is a schema change:
bump SCHEMA_VERSION and add the old header to SCHEMA_HISTORY with a migration."""

SCHEMA_HISTORY: dict[int, tuple[str, ...]] = {
    1: ("run_id", "timestamp", "task", "dataset", "backbone", "modality", "checkpoint",
        "checkpoint_sha256", "config_hash", "seed", "metrics_json", "primary_metric", "primary_value",
        "versions_json", "wall_time_s", "work_dir", "status"),
}
"""Headers of earlier schema versions, so that an old table is recognised and can be migrated."""

COLUMNS: tuple[str, ...] = tuple(SCHEMA)

# What format_table shows by default; "metric" is the pseudo-column "primary_metric=value".
TABLE_COLUMNS: tuple[str, ...] = ("task", "dataset", "protocol", "backbone", "modality", "metric", "seed",
                                  "wall_time_s")


# Metrics where a smaller value is better, by their last name component ('depth/rmse' -> 'rmse'):
# the error measures of monocular depth (mmseg's DepthMetric names, and the log_10 spelling).
LOWER_IS_BETTER = frozenset({"rmse", "rmse_log", "abs_rel", "sq_rel", "log10", "log_10", "silog"})


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of this metric is better (comparisons must flip their sign)."""
    return metric.rsplit("/", 1)[-1].lower() in LOWER_IS_BETTER


class SchemaMismatchError(ValueError):
    """An existing table's header differs from SCHEMA (or the file is not a results table)."""


# ----------------------------------------------------------------------------- locking and I/O


@contextmanager
def _locked(path: Path, exclusive: bool) -> Iterator[None]:
    """Hold an flock on ``<path>.lock`` for the duration of the block.

    A sidecar file is locked rather than the table itself because the table is replaced by
    rename on every write: a lock on the old inode would not exclude the next writer.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_file = open(lock_path, "a")
    except PermissionError:
        if exclusive:
            raise
        # A reader in a read-only directory: safe without the lock, as writers publish by rename.
        yield
        return
    with lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def _parse(path: Path, text: str) -> list[dict[str, str]]:
    """Rows of a table's text, after checking its header and row widths against SCHEMA."""
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return []  # an empty file (e.g. created by hand) counts as an empty table
    header = tuple(records[0])
    old = next((v for v, columns in SCHEMA_HISTORY.items() if columns == header), None)
    if old is not None:
        raise SchemaMismatchError(
            f"{path} is a results table of schema version {old}; this code writes version "
            f"{SCHEMA_VERSION}. Upgrade it in place with: python -m benchmarks.results migrate {path}")
    if header != COLUMNS:
        raise SchemaMismatchError(
            f"{path} has header {list(header)}, but this code writes {list(COLUMNS)}. Refusing to "
            "touch it: move it aside or migrate it, or write to another path.")
    for line_no, record in enumerate(records[1:], start=2):
        if len(record) != len(COLUMNS):
            raise SchemaMismatchError(
                f"{path}: record {line_no} has {len(record)} fields, expected {len(COLUMNS)}")
    return [dict(zip(COLUMNS, record)) for record in records[1:]]


def _read_text(path: Path) -> str:
    try:
        # newline="" keeps the bytes as written (csv quotes embedded newlines itself).
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def _cell(value: object) -> str:
    """One value as CSV text: JSON for dicts and lists (the *_json columns), '' for None."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return repr(value)  # repr round-trips floats exactly
    return str(value)


def _render_row(row: Mapping[str, object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_cell(row[c]) for c in COLUMNS])
    return buffer.getvalue()


def _header_text() -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(COLUMNS)
    return buffer.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    """Replace path's content with text in one rename; on any failure the old file stays."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())  # the data must be on disk before the rename makes it visible
        os.chmod(tmp_name, 0o644)  # mkstemp makes it owner-only; a results table is shared
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def _validate_keys(row: Mapping[str, object]) -> None:
    missing = [c for c in COLUMNS if c not in row]
    unknown = sorted(k for k in row if k not in SCHEMA)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if unknown:
            parts.append(f"unknown columns {unknown}")
        raise ValueError(f"results row does not match the schema: {'; '.join(parts)}")


# ----------------------------------------------------------------------------- public API


def append_row(path: str | Path, row: Mapping[str, object]) -> None:
    """Append one row (a dict with exactly the SCHEMA columns) to the table at path.

    Raises ValueError naming missing/unknown columns, and SchemaMismatchError if the existing
    file's header differs from SCHEMA (the file is then left untouched). Callers without a
    path of their own pass DEFAULT_PATH.
    """
    _validate_keys(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_line = _render_row(row)
    with _locked(path, exclusive=True):
        text = _read_text(path)
        _parse(path, text)  # validate before writing anything
        if not text:
            text = _header_text()
        elif not text.endswith(("\n", "\r")):
            text += "\n"  # a hand-edited file may lack the final newline
        # Keep the existing bytes as they are and add one line: no re-serialisation drift.
        _atomic_write(path, text + new_line)


def read_rows(path: str | Path = DEFAULT_PATH) -> list[dict[str, str]]:
    """All rows of the table as dicts of strings (no file -> empty list)."""
    path = Path(path)
    if not path.exists():
        return []
    with _locked(path, exclusive=False):
        return _parse(path, _read_text(path))


def has_row(path: str | Path, run_id: str) -> bool:
    """Whether a row with this run_id is already in the table (for resuming a sweep)."""
    return any(row["run_id"] == run_id for row in read_rows(path))


def _display(row: Mapping[str, str], column: str) -> str:
    """One cell as shown in the terminal table."""
    if column == "metric":
        return f"{row.get('primary_metric', '')}={_short_number(row.get('primary_value', ''))}"
    if column == "wall_time_s":
        try:
            return f"{float(row.get(column, '')):.1f}"
        except ValueError:
            return row.get(column, "")
    return str(row.get(column, ""))


def _short_number(text: str) -> str:
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def format_table(rows: Sequence[Mapping[str, str]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A fixed-width text table of rows for the terminal.

    columns are SCHEMA names, plus "metric" for "primary_metric=primary_value".
    """
    if not rows:
        return "(no results)"
    headers = ["time_s" if c == "wall_time_s" else c for c in columns]
    cells = [[_display(row, c) for c in columns] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    right = {i for i, c in enumerate(columns) if c in ("seed", "wall_time_s")}  # numbers align right

    def render(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    lines = [render(headers), "  ".join("-" * w for w in widths)]
    lines += [render(line) for line in cells]
    return "\n".join(lines)


def config_hash(cfg_text: str) -> str:
    """sha256 (hex) of a resolved config's text."""
    return hashlib.sha256(cfg_text.encode("utf-8")).hexdigest()


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed distribution versions by name; "absent" for those not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


# ----------------------------------------------------------------------------- migration


def migrate(path: str | Path) -> int:
    """Upgrade a table written with an older schema to SCHEMA_VERSION in place; returns its rows.

    Columns that the old schema lacked are left empty (unknown) rather than guessed, and each
    row keeps the version it was written with in ``schema_version``. A current table is left
    untouched.
    """
    path = Path(path)
    with _locked(path, exclusive=True):
        text = _read_text(path)
        records = list(csv.reader(io.StringIO(text, newline="")))
        if not records:
            raise SchemaMismatchError(f"{path} is empty or missing: nothing to migrate")
        header = tuple(records[0])
        if header == COLUMNS:
            return len(records) - 1
        version = next((v for v, columns in SCHEMA_HISTORY.items() if columns == header), None)
        if version is None:
            raise SchemaMismatchError(f"{path} has header {list(header)}, which is no known schema version")
        lines = [_header_text()]
        for record in records[1:]:
            row = {c: "" for c in COLUMNS} | dict(zip(header, record)) | {"schema_version": version}
            lines.append(_render_row(row))
        _atomic_write(path, "".join(lines))
        return len(records) - 1


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m benchmarks.results",
                                     description="Inspect or upgrade a results table.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("schema", help="print the columns and what each holds")
    show = commands.add_parser("show", help="print a table in the terminal")
    show.add_argument("path", nargs="?", default=str(DEFAULT_PATH))
    upgrade = commands.add_parser("migrate", help="upgrade an older table to the current schema in place")
    upgrade.add_argument("path")
    args = parser.parse_args(argv)
    try:
        if args.command == "schema":
            print(f"results schema version {SCHEMA_VERSION}")
            for column, doc in SCHEMA.items():
                print(f"  {column:18s} {doc}")
        elif args.command == "show":
            print(format_table(read_rows(args.path)))
        else:
            rows = migrate(args.path)
            print(f"{args.path}: {rows} rows at schema version {SCHEMA_VERSION}")
    except (SchemaMismatchError, OSError) as err:
        print(f"results: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
