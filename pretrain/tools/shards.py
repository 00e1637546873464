"""Sharded MindRecord writing, the manifest, and checksum verification.

Layout of one modality (``<out>/<modality>/``)::

  <modality>-00000.mindrecord, <modality>-00000.mindrecord.db, ...   one independent file per shard
  manifest.json                                                      written last

Each shard is its own MindRecord file (``FileWriter(shard_num=1)``) so that shard counts are
exact and ``MindDataset`` can read any subset of them. Rows: ``data`` (the tile's bytes, C order,
shape and dtype in the manifest), ``index`` (row number within the shard, indexed for random
access with ``MindPage``), ``scene``, ``y``, ``x``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SCHEMA = {
    "data": {"type": "bytes"},
    "index": {"type": "int64"},
    "scene": {"type": "string"},
    "y": {"type": "int32"},
    "x": {"type": "int32"},
}
BUFFER_ROWS = 64  # rows per write_raw_data call: fewer, larger writes
# MindRecord's defaults (16 MB header, 32 MB pages) pad every shard to >= 48 MB. A page must hold
# a whole row, so size pages to a few tiles; the header only lists pages, 1 MB is plenty.
HEADER_SIZE = 1 << 20
MIN_PAGE, MAX_PAGE = 1 << 20, 1 << 28


def page_size(tile_bytes: int) -> int:
    """Smallest power of two >= 4 tiles, within MindRecord's page-size limits."""
    size = MIN_PAGE
    while size < 4 * tile_bytes and size < MAX_PAGE:
        size *= 2
    return size


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_name(modality: str, k: int) -> str:
    return f"{modality}-{k:05d}.mindrecord"


class ShardWriter:
    """Writes tiles to shards: round-robin over ``num_shards`` or rolling over at ``max_per_shard``.

    Shards are created on their first row, so no shard is empty.
    """

    def __init__(self, folder: Path, modality: str, num_shards: int | None = None,
                 max_per_shard: int | None = None):
        if (num_shards is None) == (max_per_shard is None):
            raise ValueError("give exactly one of num_shards and max_per_shard")
        self.folder, self.modality = Path(folder), modality
        self.num_shards, self.max_per_shard = num_shards, max_per_shard
        self.writers: dict[int, object] = {}
        self.buffers: dict[int, list[dict]] = {}
        self.counts: dict[int, int] = {}
        self.total = 0

    def _target(self) -> int:
        if self.num_shards is not None:
            return self.total % self.num_shards
        return self.total // self.max_per_shard

    def _open(self, k: int) -> None:
        from mindspore.mindrecord import FileWriter

        writer = FileWriter(str(self.folder / shard_name(self.modality, k)), shard_num=1, overwrite=True)
        writer.set_header_size(HEADER_SIZE)
        writer.set_page_size(page_size(self.tile_bytes))
        writer.add_schema(SCHEMA, f"ringmoe {self.modality} tiles")
        writer.add_index(["index"])
        self.writers[k], self.buffers[k], self.counts[k] = writer, [], 0

    def _flush(self, k: int) -> None:
        if self.buffers[k]:
            self.writers[k].write_raw_data(self.buffers[k])
            self.buffers[k] = []

    def add(self, tile: np.ndarray, scene: str, y: int, x: int) -> None:
        k = self._target()
        self.tile_bytes = tile.nbytes
        if k not in self.writers:
            self._open(k)
        self.buffers[k].append({"data": np.ascontiguousarray(tile).tobytes(), "index": self.counts[k],
                                "scene": scene, "y": int(y), "x": int(x)})
        self.counts[k] += 1
        self.total += 1
        if len(self.buffers[k]) >= BUFFER_ROWS:
            self._flush(k)
        if self.max_per_shard is not None and self.counts[k] == self.max_per_shard:
            self._commit(k)

    def _commit(self, k: int) -> None:
        self._flush(k)
        self.writers[k].commit()
        self.writers[k] = None

    def close(self) -> list[dict]:
        """Commit open shards; the manifest's shard list (file, count, checksums of file and .db)."""
        for k, writer in self.writers.items():
            if writer is not None:
                self._commit(k)
        shards = []
        for k in sorted(self.counts):
            path = self.folder / shard_name(self.modality, k)
            db = path.with_name(path.name + ".db")
            shards.append({"file": path.name, "count": self.counts[k], "sha256": sha256(path),
                           "db": db.name, "db_sha256": sha256(db)})
        return shards


def write_manifest(folder: Path, manifest: dict) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def modality_folders(path: Path) -> list[Path]:
    """``path`` itself when it holds a manifest, else its sub-folders that do."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return [path]
    return sorted(p for p in path.glob("*") if (p / MANIFEST).is_file()) if path.is_dir() else []


def verify_folder(folder: Path) -> tuple[int, int]:
    """Check every shard and .db against the manifest: (shards, tiles). Raises ValueError on a mismatch."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder / MANIFEST}: unreadable manifest ({err})") from err
    shards = manifest.get("shards") or []
    if not shards:
        raise ValueError(f"{folder / MANIFEST}: no shards listed")
    for shard in shards:
        for name, expected in ((shard["file"], shard["sha256"]), (shard["db"], shard["db_sha256"])):
            path = folder / name
            if not path.is_file():
                raise ValueError(f"{path}: missing")
            if sha256(path) != expected:
                raise ValueError(f"{path}: sha256 mismatch (file changed or corrupted)")
    total = sum(s["count"] for s in shards)
    if total != manifest["counts"]["written"]:
        raise ValueError(f"{folder / MANIFEST}: shard counts sum to {total}, manifest says "
                         f"{manifest['counts']['written']} written")
    return len(shards), total
