"""The zoo's input stream: ``mindspore.dataset.ImageFolderDataset`` over a folder-per-class root.

    ImageFolderDataset(root, sampler=StreamSampler, decode=True)   (image HWC uint8 RGB, label)
    zip GeneratorDataset(positions)                               + position in the stream
      .map(SampleViews)                                           -> view0 .. view{V-1}, label
      .batch(batch_size, drop_remainder=True)                     one optimizer step per row

Labels are the sorted class-folder names' indices (ImageFolderDataset's own class indexing).

Determinism. The stream is endless: position p = step * batch_size + slot reads image
``order(seed, epoch)[p mod N]`` with epoch = p // N, a fresh seeded permutation each epoch
(every image once per epoch). Sample p's views draw every random choice from a numpy generator
seeded by (seed, p), so map workers (threads or processes), a second run, and a run resumed at
step k (positions start at k * batch_size) give bit-identical batches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import mindspore.dataset as ds
import numpy as np

STREAM = "zoo-folder-v1"  # names the sampling scheme in a checkpoint's data position
_SAMPLE, _ORDER, _BATCH = 0, 1, 2  # seed domains: a permutation, a sample, a batch op never share a generator


@dataclass(frozen=True)
class FolderInfo:
    """What the engine needs to know about a folder-per-class root before training."""

    root: Path
    size: int                    # images
    classes: tuple[str, ...]     # label index -> class folder
    image_hw: tuple[int, int]    # (height, width) of the first image (BiT-HyperRule's resolution)


def inspect_folder(root: str | Path) -> FolderInfo:
    """Count images and classes with ImageFolderDataset itself (the loader training uses)."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a directory")
    dataset = ds.ImageFolderDataset(str(root), shuffle=False)
    size = dataset.get_dataset_size()
    indexing = dataset.get_class_indexing()
    if size == 0 or not indexing:
        raise ValueError(f"data.root {root} holds no <class>/<image> files")
    classes = tuple(sorted(indexing, key=indexing.get))
    first = next(p for c in classes for p in sorted((root / c).iterdir()) if p.is_file())
    with Image.open(first) as image:
        width, height = image.size
    return FolderInfo(root, size, classes, (height, width))


def demo_root(work_dir: Path, demo: dict, seed: int) -> Path:
    """The synthetic dataset of ``data.demo`` (NWPU-RESISC45 by default), generated once."""
    from benchmarks.datasets.scene_classification import generate_scene_dataset

    dataset = demo.get("dataset", "nwpu_resisc45")
    return generate_scene_dataset(dataset, work_dir / "data" / dataset, per_class=demo.get("per_class", 8),
                                  size=demo.get("size", 64), seed=seed)


@lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    order = np.random.default_rng([seed, _ORDER, epoch]).permutation(size)
    order.flags.writeable = False
    return order


def batch_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of step ``step``'s batch ops (mixup/cutmix draws): a function of (seed, step)."""
    return np.random.default_rng([seed, _BATCH, step])


class StreamSampler(ds.Sampler):
    """Dataset indices of stream positions ``first`` .. ``first + count - 1`` (lazily)."""

    def __init__(self, size: int, seed: int, first: int, count: int):
        super().__init__(num_samples=count)
        self.size, self.seed, self.first, self.count = size, seed, first, count

    def __iter__(self) -> Iterator[int]:
        for position in range(self.first, self.first + self.count):
            epoch, index = divmod(position, self.size)
            yield int(epoch_order(self.seed, epoch, self.size)[index])


class Positions:
    """GeneratorDataset source: the stream positions, zipped beside the images."""

    def __init__(self, first: int, count: int):
        self.first, self.count = first, count

    def __iter__(self) -> Iterator[tuple[np.ndarray]]:
        return ((np.array(p, np.int64),) for p in range(self.first, self.first + self.count))

    def __len__(self) -> int:
        return self.count


class SampleViews:
    """The map operation: (image, label, position) -> (view_0, ..., view_{V-1}, label)."""

    def __init__(self, make_views: Callable[[np.ndarray, np.random.Generator], list], num_views: int, seed: int):
        self.make_views, self.num_views, self.seed = make_views, num_views, seed

    @property
    def columns(self) -> list[str]:
        return [f"view{i}" for i in range(self.num_views)] + ["label"]

    def rng(self, position: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SAMPLE, position])

    def __call__(self, image: np.ndarray, label: np.ndarray, position: np.ndarray) -> tuple:
        views = self.make_views(image, self.rng(int(position)))
        if len(views) != self.num_views:
            raise ValueError(f"make_views returned {len(views)} views, expected {self.num_views}")
        return (*views, np.asarray(label, np.int32))


@dataclass
class Batch:
    views: list[np.ndarray]   # per view [B, C, H, W] float32
    labels: np.ndarray        # [B] int32


def batches(info: FolderInfo, sample: SampleViews, batch_size: int, seed: int, start: int, num_steps: int,
            num_workers: int = 2, python_multiprocessing: bool = False) -> Iterator[Batch]:
    """Steps ``start`` .. ``start + num_steps - 1`` of the stream as numpy batches."""
    first, count = start * batch_size, num_steps * batch_size
    workers = max(1, min(num_workers, os.cpu_count() or 1))  # mindspore.dataset refuses more than the CPUs
    images = ds.ImageFolderDataset(str(info.root), sampler=StreamSampler(info.size, seed, first, count),
                                   decode=True, num_parallel_workers=workers)
    positions = ds.GeneratorDataset(Positions(first, count), ["position"], shuffle=False,
                                    python_multiprocessing=False)
    rows = ds.zip((images, positions)).map(sample, input_columns=["image", "label", "position"],
                                           output_columns=sample.columns, num_parallel_workers=workers,
                                           python_multiprocessing=python_multiprocessing and workers > 1)
    iterator = rows.batch(batch_size, drop_remainder=True).create_dict_iterator(output_numpy=True, num_epochs=1)
    try:
        for row in iterator:
            yield Batch([row[f"view{i}"] for i in range(sample.num_views)], row["label"].astype(np.int32))
    finally:  # also when training stops early: stop the workers now, not at exit
        iterator.stop()
