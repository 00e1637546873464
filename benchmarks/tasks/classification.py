"""Scene classification (mmpretrain): NWPU-RESISC45 and AID, overall accuracy (top-1).

Protocols are configs under configs/benchmarks/classification/: a linear probe (frozen backbone)
and a full finetune with layer-wise lr decay, each on NWPU-RESISC45 and AID.

Neither dataset ships a split; the protocol trains on a fixed ratio of each class (NWPU 10% or
20%, AID 20% or 50%) and tests on the rest. ``prepare`` draws that split, stratified and
seeded by the config's ``train_ratio`` and ``split_seed``, and writes it into the work dir as
mmpretrain annotation files (``splits/train.txt``, ``splits/val.txt``: "class/file.jpg label";
``splits/classes.txt``), which the configs' ``CustomDataset`` loaders then read. The files'
hashes go into the config before the runner hashes it, so the split is part of the run's identity.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from benchmarks.tasks.spec import TaskSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
SPLIT_DIR = "splits"


def scene_demo(data_dir: Path, cfg: Any = None) -> Path:
    """Both synthetic datasets under data_dir/scene_classification/{nwpu_resisc45,aid}.

    The task has one demo hook for all its configs, so it writes both; ``prepare`` picks the
    config's dataset folder (the same rule lets --data-root name a folder holding both).
    """
    from benchmarks.datasets.scene_classification import LAYOUTS, generate_scene_dataset

    root = data_dir / "scene_classification"
    for name in LAYOUTS:
        generate_scene_dataset(name, root / name)
    return root


def fit_cls_head(cfg, widths: list[int]) -> None:
    """The classification head reads the (pooled) last backbone output."""
    cfg.model.head.in_channels = widths[-1]


def dataset_root(data_root: Path, dataset: str) -> Path:
    """The folder holding the class folders: data_root itself, or data_root/<dataset>."""
    nested = data_root / dataset
    return nested if nested.is_dir() else data_root


def list_images(root: Path, classes: list[str]) -> dict[str, list[str]]:
    """Class -> sorted image paths relative to root ("class/file.jpg").

    Raises ValueError unless the class folders under root are exactly ``classes``.
    """
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
    if missing or extra:
        raise ValueError(f"{root} does not hold the expected class folders: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
                         f"{' ...' if len(extra) > 5 else ''}")
    images = {}
    for name in classes:
        files = sorted(f"{name}/{p.name}" for p in (root / name).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ValueError(f"class {name} has {len(files)} images under {root}; a split needs 2")
        images[name] = files
    return images


def stratified_split(images: dict[str, list[str]], train_ratio: float,
                     seed: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, val) lists of (relative path, label); labels follow the order of ``images``.

    Each class contributes round(ratio * n) images to train (at least one, and at least one
    left for val), drawn by a shuffle seeded with (seed, class name): a class's split does not
    depend on which other classes are present.
    """
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    train, val = [], []
    for label, (name, files) in enumerate(images.items()):
        order = list(files)
        random.Random(f"{seed}:{name}").shuffle(order)
        count = min(max(round(train_ratio * len(order)), 1), len(order) - 1)
        train += [(path, label) for path in sorted(order[:count])]
        val += [(path, label) for path in sorted(order[count:])]
    return train, val


def _write_lines(path: Path, lines: list[str]) -> str:
    text = "".join(f"{line}\n" for line in lines)
    path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def apply_img_size(cfg, size: int) -> None:
    """Set the train crop and the val/test resize of the pipelines to ``size`` (so that
    ``--cfg-options img_size=224`` changes every place at once)."""
    pipelines = [cfg.get(name) or [] for name in ("train_pipeline", "test_pipeline")]  # as dumped
    pipelines += [(cfg.get(name) or {}).get("dataset", {}).get("pipeline", [])
                  for name in ("train_dataloader", "val_dataloader", "test_dataloader")]
    for step in (step for pipeline in pipelines for step in pipeline):
        if step["type"] in ("RandomResizedCrop", "CenterCrop"):
            step["scale" if step["type"] == "RandomResizedCrop" else "crop_size"] = size
        elif step["type"] == "Resize":
            step["scale"] = (size, size)


def prepare_split(cfg, data_root: Path, work_dir: Path) -> None:
    """Write the seeded stratified split into work_dir/splits and point the loaders at it."""
    from benchmarks.datasets.scene_classification import LAYOUTS

    dataset = cfg.scene_dataset
    ratio, seed = float(cfg.train_ratio), int(cfg.split_seed)
    root = dataset_root(data_root, dataset)
    classes = list(LAYOUTS[dataset].classes)  # the real class names; labels in sorted order
    images = list_images(root, sorted(classes))
    train, val = stratified_split(images, ratio, seed)
    out = work_dir / SPLIT_DIR
    out.mkdir(parents=True, exist_ok=True)
    digests = {
        "train": _write_lines(out / "train.txt", [f"{p} {label}" for p, label in train]),
        "val": _write_lines(out / "val.txt", [f"{p} {label}" for p, label in val]),
        "classes": _write_lines(out / "classes.txt", list(images)),
    }
    for loader_name, split in (("train_dataloader", "train"), ("val_dataloader", "val"),
                               ("test_dataloader", "val")):
        loader = cfg.get(loader_name)
        if loader and "dataset" in loader:
            loader.dataset.update(data_root=str(root), data_prefix="",
                                  ann_file=str((out / f"{split}.txt").resolve()),
                                  classes=str((out / "classes.txt").resolve()))
    cfg.data_root = str(root)
    # In the config, hence in the run's identity: another split is another run.
    cfg.split_record = dict(train_ratio=ratio, seed=seed, num_train=len(train), num_val=len(val),
                     sha256=digests)
    cfg.dataset_name = f"{dataset}_train{round(ratio * 100):d}%"
    apply_img_size(cfg, int(cfg.img_size))


SPEC = TaskSpec(
    config="configs/benchmarks/classification/linear_ringmoe_tiny_nwpu.py",
    dataset="nwpu_resisc45", metric="accuracy/top1", package="mmpretrain",
    fit_heads=fit_cls_head, demo_data=scene_demo, prepare=prepare_split)
