"""Read pretraining tiles back from the MindRecord shards written by ``pretrain.tools.make_dataset``.

Layout: ``<root>/<modality>/manifest.json`` next to its shards. Tiles come back in the stored
form, which is what ``ModalityFolder.raw()`` returns for the same modality (uint8 [H, W, 3]
optical, float32 [H, W, 8] SAR-L1 I/Q, uint8 [H, W] SAR-L2, uint8 [H, W, 4] MSI), so the
training transforms of ``pretrain/data/modalities.py`` apply unchanged.

- ``iter_raw_tiles``: a stream over the shards with ``mindspore.dataset.MindDataset``.
- ``MindRecordFolder``: a drop-in for ``ModalityFolder`` (``__len__``, ``raw(i)``, ``sample(rng)``)
  with random access by index through ``mindspore.mindrecord.MindPage`` (one indexed lookup per
  tile, nothing cached), so the per-sample seeded stream of pretrain/data/pipeline.py (and exact
  resume) works on data sets larger than memory. Readers are opened per process and
  thread, so the pipeline's workers never share one.
"""
from __future__ import annotations

import bisect
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pretrain.data.folder import ModalityFolder

MANIFEST = "manifest.json"


def load_manifest(root: str | Path, modality: str) -> tuple[Path, dict]:
    """(modality folder, manifest); ``root`` may be the output root or the modality folder itself."""
    root = Path(root)
    folder = root if (root / MANIFEST).is_file() else root / modality
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no MindRecord manifest for modality {modality!r} at {path}")
    manifest = json.loads(path.read_text())
    if manifest["modality"] != modality:
        raise ValueError(f"{path} holds {manifest['modality']!r}, not {modality!r}")
    return folder, manifest


def decode_tile(data: bytes, manifest: dict) -> np.ndarray:
    stored = manifest["stored"]
    array = np.frombuffer(data, dtype=np.dtype(stored["dtype"]))
    return array.reshape(stored["shape"]).copy()  # writable, owns its memory


def iter_raw_tiles(root: str | Path, modality: str, shuffle: bool = False, seed: int = 0,
                   with_keys: bool = False) -> Iterator:
    """Yield every tile of ``modality`` (stored form); with ``with_keys``, (scene, y, x), tile pairs."""
    import mindspore.dataset as ds

    folder, manifest = load_manifest(root, modality)
    files = [str(folder / s["file"]) for s in manifest["shards"]]
    if shuffle:
        ds.config.set_seed(seed)
    dataset = ds.MindDataset(files, columns_list=["data", "scene", "y", "x"], shuffle=shuffle,
                             num_parallel_workers=1)
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        # tobytes(), not item(): numpy bytes scalars drop trailing NUL bytes (zero pixels)
        tile = decode_tile(row["data"].tobytes(), manifest)
        yield ((str(row["scene"]), int(row["y"]), int(row["x"])), tile) if with_keys else tile


@dataclass
class MindRecordFolder(ModalityFolder):
    """``ModalityFolder`` over MindRecord shards: same fields, same ``sample``, tiles by index."""

    def __post_init__(self) -> None:
        self.folder, self.manifest = load_manifest(self.root, self.modality.name)
        stored = self.manifest["stored"]
        if self.manifest["model_channels"] != self.modality.channels:
            raise ValueError(f"{self.folder}: {self.manifest['model_channels']} channels, "
                             f"the model's {self.modality.name} has {self.modality.channels}")
        self.shards = self.manifest["shards"]
        self.starts = list(np.cumsum([0] + [s["count"] for s in self.shards])[:-1])
        self.total = int(sum(s["count"] for s in self.shards))
        self.stored = stored
        self._pages: dict[tuple[int, int, int], object] = {}

    def __len__(self) -> int:
        return self.total

    def _page(self, k: int):
        # one reader per process and thread: one opened before a fork stays with its process,
        # and thread workers never share one
        key = (os.getpid(), threading.get_ident(), k)
        if key not in self._pages:
            from mindspore.mindrecord import MindPage

            page = MindPage(str(self.folder / self.shards[k]["file"]), num_consumer=1)
            page.category_field = "index"
            self._pages[key] = page
        return self._pages[key]

    def key(self, index: int) -> tuple[int, int]:
        """(shard, row within the shard) of a global index (shards in manifest order)."""
        if not 0 <= index < self.total:
            raise IndexError(f"tile {index} out of range ({self.total})")
        k = bisect.bisect_right(self.starts, index) - 1
        return k, index - int(self.starts[k])

    def raw(self, index: int) -> np.ndarray:
        k, row = self.key(int(index))
        rows = self._page(k).read_at_page_by_name(str(row), 0, 1)
        if len(rows) != 1:
            raise KeyError(f"{self.shards[k]['file']}: row {row} not found")
        return decode_tile(rows[0]["data"], self.manifest)
