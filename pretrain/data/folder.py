"""Image-folder pretraining data: one folder per modality, read with the same conversions as real data.

This is the plain mode for users without MindRecord: ``<root>/<modality>/*.{png,tif,tiff,jpg}``.
Each step takes one batch of every modality (the joint MoE path needs equal batches), applies
a random crop to the model's input size and a horizontal flip, converts to [0, 1] per
modality, normalises, and draws a SimMIM mask per image.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pretrain.data.modalities import TO_UNIT, normalise, sar_l1_total_power
from pretrain.models.arch import Modality, RingMoEArch

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_raw(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


class MaskGenerator:
    """SimMIM masks: a grid of ``mask_patch`` px units, ``ratio`` of them masked, at token scale."""

    def __init__(self, input_size: int = 192, mask_patch: int = 32, model_patch: int = 4, ratio: float = 0.6):
        if input_size % mask_patch or mask_patch % model_patch:
            raise ValueError("input size must be a multiple of the mask patch, and that of the model patch")
        self.grid = input_size // mask_patch
        self.scale = mask_patch // model_patch
        self.count = int(np.ceil(self.grid**2 * ratio))

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros(self.grid**2, np.float32)
        mask[rng.permutation(self.grid**2)[: self.count]] = 1.0
        grid = mask.reshape(self.grid, self.grid)
        return grid.repeat(self.scale, 0).repeat(self.scale, 1)


@dataclass
class ModalityFolder:
    root: Path
    modality: Modality
    img_size: int
    power_target: bool = False

    def __post_init__(self) -> None:
        folder = Path(self.root) / self.modality.name
        self.files = sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"no images for modality {self.modality.name!r} in {folder}")
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, index: int) -> np.ndarray:
        if index not in self._cache:  # demo-sized sets fit in memory; decode once
            self._cache[index] = read_raw(self.files[index])
        return self._cache[index]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """(normalised input [C, S, S], extra target channels or None) of one random crop."""
        raw = self.raw(int(rng.integers(len(self))))
        h, w = raw.shape[:2]
        if h < self.img_size or w < self.img_size:
            raise ValueError(f"{self.modality.name} tile {h}x{w} is smaller than the input {self.img_size}")
        y, x = rng.integers(0, h - self.img_size + 1), rng.integers(0, w - self.img_size + 1)
        crop = raw[y : y + self.img_size, x : x + self.img_size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        unit = TO_UNIT[self.modality.name](np.ascontiguousarray(crop))
        if unit.shape[0] != self.modality.channels:
            raise ValueError(f"{self.modality.name} expects {self.modality.channels} bands, file has {unit.shape[0]}")
        extra = sar_l1_total_power(crop) if self.power_target else None
        return normalise(unit, self.modality), extra


def multimodal_batches(root: str | Path, arch: RingMoEArch, batch_size: int, seed: int,
                       power_target: bool = False, start: int = 0, kind: str = "folder") -> Iterator[dict]:
    """Endless stream of steps: {'images': [per modality [B,C,S,S]], 'masks': [...], 'targets': [...]}.

    Each step draws from its own generator seeded by (seed, step), so a resumed run starting
    at ``start`` sees exactly the batches an uninterrupted run would, without replaying them.
    ``kind`` is the data layout: 'folder' (<root>/<modality>/ images) or 'mindrecord' (the
    shards of pretrain/tools/make_dataset.py); both give the same raw tiles to the same transforms.
    """
    if kind == "mindrecord":
        from pretrain.data.mindrecord import MindRecordFolder as source  # lazy: it imports this module
    elif kind == "folder":
        source = ModalityFolder
    else:
        raise ValueError(f"data.type must be 'folder' or 'mindrecord', got {kind!r}")
    folders = [source(Path(root), m, arch.img_size, power_target and m.name == "sar_l1") for m in arch.modalities]
    masks = MaskGenerator(arch.img_size, arch.mask_patch_size, arch.patch_size, arch.mask_ratio)
    for index in itertools.count(start):
        rng = np.random.default_rng([seed, index])
        step = {"images": [], "masks": [], "targets": []}
        for folder in folders:
            samples = [folder.sample(rng) for _ in range(batch_size)]
            step["images"].append(np.stack([s[0] for s in samples]).astype(np.float32))
            step["masks"].append(np.stack([masks(rng) for _ in range(batch_size)]))
            extra = [s[1] for s in samples]
            step["targets"].append(None if extra[0] is None else np.stack(extra))
        yield step
