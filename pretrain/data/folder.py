"""Image-folder pretraining data: one folder per modality, read with the same conversions as real data.

This is the plain mode for users without MindRecord: ``<root>/<modality>/*.{png,tif,tiff,jpg}``,
one tile per file, in the stored form of pretrain/tools/convert.py (or the sensor formats of
pretrain/data/synthetic.py). ``ModalityFolder`` is a tile source: ``len()`` and ``raw(index)``;
``MindRecordFolder`` (mindrecord.py) is the same over shards. The training stream over either
is pretrain/data/pipeline.py; ``multimodal_batches`` is re-exported here for older callers.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pretrain.data.augment import Augmentation, MaskGenerator  # noqa: F401  (MaskGenerator: re-export)
from pretrain.models.arch import Modality

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_raw(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


@dataclass
class ModalityFolder:
    """The tiles of one modality: ``<root>/<modality.name>/*`` sorted by name; index = position."""

    root: Path
    modality: Modality
    img_size: int
    power_target: bool = False
    cache_tiles: int = 256  # decoded tiles kept per process (demo sets fit whole; big sets stream)

    def __post_init__(self) -> None:
        folder = Path(self.root) / self.modality.name
        self.files = sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"no images for modality {self.modality.name!r} in {folder}")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, index: int) -> np.ndarray:
        """Tile ``index`` as stored (uint8 [H, W, 3], float32 [H, W, 8], uint8 [H, W], [H, W, 4])."""
        tile = self._cache.get(index)
        if tile is None:
            tile = read_raw(self.files[index])
            tile.flags.writeable = False  # shared by every later sample of this tile
            self._cache[index] = tile
            while len(self._cache) > self.cache_tiles:  # oldest first; workers may be threads
                try:
                    self._cache.popitem(last=False)
                except KeyError:
                    break
        return tile

    def augmentation(self, **options) -> Augmentation:
        """The training transform of this modality (options: scale, ratio, flip_prob)."""
        return Augmentation(self.modality, self.img_size, power_target=self.power_target, **options)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """(normalised input [C, S, S], power target or None) of a random tile, augmented as in training."""
        return self.augmentation()(self.raw(int(rng.integers(len(self)))), rng)


def multimodal_batches(*args, **kwargs) -> Iterator[dict]:
    """``pretrain.data.pipeline.multimodal_batches`` (imported lazily: it imports this module)."""
    from pretrain.data.pipeline import multimodal_batches as stream

    return stream(*args, **kwargs)
