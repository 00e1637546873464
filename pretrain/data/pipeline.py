"""The pretraining input pipeline: one ``mindspore.dataset`` per modality, zipped into steps.

Per modality::

    GeneratorDataset(SampleKeys)            (step, slot) keys, in order
      .map(ModalitySample, num_parallel_workers=W, python_multiprocessing=...)
                                            tile -> random resized crop -> flip -> [0, 1] ->
                                            normalise (+ SAR-L1 power target) + SimMIM mask
      .batch(B, drop_remainder=True)
    ds.zip(optical, sar_l1, sar_l2, msi)    one step: equal batches of the four modalities

Determinism. Nothing in a sample depends on which worker made it or on what came before:
sample (step, slot) of modality m draws its crop box, flip and mask from a generator seeded by
(seed, step, m, slot), and its tile is position ``step * global_batch + slot`` of a seeded
permutation of the modality's tiles (a new permutation each epoch: every tile once per epoch).
``map`` keeps the order of its input, so W parallel workers (threads or processes), a second
run, and a run resumed at step k (keys start at k, nothing replayed) give bit-identical batches.
Workers are threads by default (numpy releases the GIL in the heavy parts, and threads start
and stop at once); ``python_multiprocessing=True`` makes them processes for many-core hosts.

Data parallel. ``batch_size`` is per rank; the global batch of a step has
``batch_size * group_size`` slots and rank r reads slots r, r + G, r + 2G, ... So ranks read
disjoint samples (distinct tiles within an epoch), and their union is the step of a single
process with the global batch size.

Sources: ``kind='folder'`` (pretrain/data/folder.py, one file per tile) or ``'mindrecord'``
(pretrain/data/mindrecord.py, the shards of pretrain/tools/make_dataset.py). Both yield the
stored form of a tile by index, and the same ``Augmentation`` applies.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from pretrain.data.augment import Augmentation, MaskGenerator
from pretrain.data.folder import ModalityFolder
from pretrain.models.arch import RingMoEArch

STREAM = "pipeline-v1"  # names the sampling scheme in a checkpoint's data position
# Seed domains, so a tile permutation and a sample's draws never share a generator state.
_SAMPLE, _ORDER = 0, 1


@dataclass(frozen=True)
class PipelineOptions:
    """The ``data`` config keys of the pipeline (see configs/pretrain/_base_simmim.py)."""

    num_workers: int = 2  # map workers per modality (capped at the CPU count); 0: in-process numpy
    python_multiprocessing: bool = False  # workers as threads (False) or processes (True)
    crop_scale: tuple[float, float] = (0.2, 0.5)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    prefetch: int = 4  # rows buffered between pipeline stages (after batching, a row is a step)

    @classmethod
    def from_config(cls, data: dict) -> "PipelineOptions":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("crop_scale", "crop_ratio"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)

    def position(self) -> dict:
        """What changes the batches (saved with a checkpoint's data position); JSON-plain."""
        return {"crop_scale": list(self.crop_scale), "crop_ratio": list(self.crop_ratio),
                "flip_prob": self.flip_prob}


def open_sources(root: str | Path, arch: RingMoEArch, power_target: bool, kind: str) -> list[ModalityFolder]:
    """One tile source per modality of ``arch`` ('folder' or 'mindrecord' layout)."""
    if kind == "mindrecord":
        from pretrain.data.mindrecord import MindRecordFolder as source
    elif kind == "folder":
        source = ModalityFolder
    else:
        raise ValueError(f"data.type must be 'folder' or 'mindrecord', got {kind!r}")
    return [source(Path(root), m, arch.img_size, power_target and m.name == "sar_l1") for m in arch.modalities]


@lru_cache(maxsize=8)
def tile_order(seed: int, modality: int, epoch: int, count: int) -> np.ndarray:
    """The tile permutation of one epoch of one modality (cached: workers see few epochs)."""
    order = np.random.default_rng([seed, _ORDER, modality, epoch]).permutation(count).astype(np.int64)
    order.flags.writeable = False
    return order


@dataclass(frozen=True)
class SlotLayout:
    """Which slots of each step's global batch this rank reads."""

    batch_size: int  # per rank
    rank: int = 0
    group_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or not 0 <= self.rank < self.group_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < group_size, got {self}")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.group_size

    def slots(self) -> list[int]:
        return list(range(self.rank, self.global_batch, self.group_size))


def step_range(start: int, num_steps: int | None):
    """Steps ``start``, ``start + 1``, ... (``num_steps`` of them, or endless)."""
    return itertools.count(start) if num_steps is None else range(start, start + num_steps)


class SampleKeys:
    """The (step, slot) keys a rank reads, from step ``start`` on (``num_steps`` of them, or endless)."""

    def __init__(self, layout: SlotLayout, start: int = 0, num_steps: int | None = None):
        self.layout, self.start, self.num_steps = layout, start, num_steps

    def __iter__(self) -> Iterator[tuple[np.ndarray]]:
        for step in step_range(self.start, self.num_steps):
            for slot in self.layout.slots():
                yield (np.array([step, slot], np.int64),)


class ModalitySample:
    """The map operation of one modality: key (step, slot) -> (image, mask[, power target])."""

    def __init__(self, source: ModalityFolder, modality_index: int, seed: int, global_batch: int,
                 masks: MaskGenerator, options: PipelineOptions):
        self.source, self.modality_index, self.seed, self.global_batch = source, modality_index, seed, global_batch
        self.masks = masks
        self.augment: Augmentation = source.augmentation(scale=options.crop_scale, ratio=options.crop_ratio,
                                                         flip_prob=options.flip_prob)
        self.count = len(source)

    @property
    def columns(self) -> list[str]:
        name = self.source.modality.name
        return [f"{name}_image", f"{name}_mask"] + ([f"{name}_power"] if self.augment.power_target else [])

    def tile(self, step: int, slot: int) -> int:
        epoch, position = divmod(step * self.global_batch + slot, self.count)
        return int(tile_order(self.seed, self.modality_index, epoch, self.count)[position])

    def __call__(self, key: np.ndarray) -> tuple[np.ndarray, ...]:
        step, slot = (int(v) for v in np.asarray(key).reshape(2))
        rng = np.random.default_rng([self.seed, _SAMPLE, step, self.modality_index, slot])
        image, power = self.augment(self.source.raw(self.tile(step, slot)), rng)
        mask = self.masks(rng)
        return (image, mask) if power is None else (image, mask, power)


def modality_samples(root: str | Path, arch: RingMoEArch, seed: int, layout: SlotLayout, power_target: bool = False,
                     kind: str = "folder", options: PipelineOptions | None = None) -> list[ModalitySample]:
    """The per-modality map operations (tile sources opened, augmentations configured)."""
    options = options or PipelineOptions()
    masks = MaskGenerator(arch.img_size, arch.mask_patch_size, arch.patch_size, arch.mask_ratio)
    sources = open_sources(root, arch, power_target, kind)
    return [ModalitySample(s, m, seed, layout.global_batch, masks, options) for m, s in enumerate(sources)]


def worker_count(options: PipelineOptions) -> int:
    """Map workers per modality: ``num_workers`` capped at the CPU count (mindspore.dataset refuses
    more). Batches never depend on it."""
    return max(1, min(options.num_workers, os.cpu_count() or 1))


def modality_dataset(sample: ModalitySample, layout: SlotLayout, start: int = 0, num_steps: int | None = None,
                     options: PipelineOptions | None = None):
    """The ``mindspore.dataset`` of one modality: batches of (image, mask[, power]) columns."""
    import mindspore.dataset as ds

    options = options or PipelineOptions()
    keys = ds.GeneratorDataset(SampleKeys(layout, start, num_steps), ["key"], shuffle=False,
                               python_multiprocessing=False)  # keys are cheap: one reader
    workers = worker_count(options)
    samples = keys.map(sample, input_columns=["key"], output_columns=sample.columns, num_parallel_workers=workers,
                       python_multiprocessing=options.python_multiprocessing and workers > 1)
    return samples.batch(layout.batch_size, drop_remainder=True)


def build_dataset(root: str | Path, arch: RingMoEArch, batch_size: int, seed: int, power_target: bool = False,
                  start: int = 0, kind: str = "folder", num_steps: int | None = None, rank: int = 0,
                  group_size: int = 1, options: PipelineOptions | None = None):
    """The zipped ``mindspore.dataset`` of all modalities: one row per step, columns per
    modality ``<name>_image`` [B, C, S, S], ``<name>_mask`` [B, S/p, S/p] (+ ``sar_l1_power``
    [B, 1, S, S] with the power target), in ``arch.modalities`` order."""
    import mindspore.dataset as ds

    options = options or PipelineOptions()
    ds.config.set_prefetch_size(max(options.prefetch, 1))  # a process-wide setting of mindspore.dataset
    layout = SlotLayout(batch_size, rank, group_size)
    samples = modality_samples(root, arch, seed, layout, power_target, kind, options)
    return ds.zip(tuple(modality_dataset(s, layout, start, num_steps, options) for s in samples))


def _step(row: dict, names: list[str]) -> dict:
    """A zipped row {column: array} -> {'images': [...], 'masks': [...], 'targets': [power or None]}."""
    return {"images": [row[f"{n}_image"] for n in names], "masks": [row[f"{n}_mask"] for n in names],
            "targets": [row.get(f"{n}_power") for n in names]}


def serial_batches(samples: list[ModalitySample], layout: SlotLayout, start: int = 0,
                   num_steps: int | None = None) -> Iterator[dict]:
    """The same steps computed in this process with plain numpy (``num_workers=0``; the
    reference the parallel pipeline is tested against)."""
    names = [s.source.modality.name for s in samples]
    for step in step_range(start, num_steps):
        row = {}
        for sample in samples:
            outputs = [sample(np.array([step, slot])) for slot in layout.slots()]
            row.update({c: np.stack(column) for c, column in zip(sample.columns, zip(*outputs))})
        yield _step(row, names)


def multimodal_batches(root: str | Path, arch: RingMoEArch, batch_size: int, seed: int, power_target: bool = False,
                       start: int = 0, kind: str = "folder", num_steps: int | None = None, rank: int = 0,
                       group_size: int = 1, options: PipelineOptions | None = None) -> Iterator[dict]:
    """Steps from ``start`` on (``num_steps`` of them, or endless) as dicts of numpy arrays:
    {'images': [per modality [B, C, S, S] float32], 'masks': [[B, S/p, S/p] float32],
    'targets': [SAR-L1 power [B, 1, S, S] or None per modality]}.

    ``batch_size`` is per rank; ``rank``/``group_size`` select this rank's share of each step
    (module docstring). ``kind``: 'folder' or 'mindrecord'. ``options.num_workers`` 0 computes
    in this process without mindspore.dataset; otherwise the zipped dataset of ``build_dataset``.
    """
    options = options or PipelineOptions()
    names = [m.name for m in arch.modalities]
    if options.num_workers == 0:
        layout = SlotLayout(batch_size, rank, group_size)
        samples = modality_samples(root, arch, seed, layout, power_target, kind, options)
        yield from serial_batches(samples, layout, start, num_steps)
        return
    dataset = build_dataset(root, arch, batch_size, seed, power_target, start, kind, num_steps, rank, group_size,
                            options)
    iterator = dataset.create_dict_iterator(output_numpy=True, num_epochs=1)
    try:
        for row in iterator:
            yield _step(row, names)
    finally:  # also when the consumer drops an endless stream: stop the workers now, not at exit
        iterator.stop()


def describe(options: PipelineOptions) -> str:
    """One line for the training log."""
    return ", ".join(f"{k}={v}" for k, v in asdict(options).items())
