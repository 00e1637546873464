"""Rotated (oriented) object detection (mmrotate 1.0.0rc1): rotated RetinaNet le90, mAP.

Configs under configs/benchmarks/rotated_detection/: DOTA-style txt (the default), DIOR-R and
HRSC2016. Without --data-root the runner generates one small root that holds all three real
layouts side by side (benchmarks/datasets/rotated.py), so every config runs on demo data.
mmrotate imports through benchmarks/compat.py's shims.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.tasks.spec import TaskSpec

DEMO_DIR = "rotated_demo"


def rotated_demo(data_dir: Path, cfg: Any = None) -> Path:
    from benchmarks.datasets.rotated import generate_rotated

    return generate_rotated(data_dir / DEMO_DIR)


def fit_rotated_heads(cfg, widths: list[int]) -> None:
    """Give the FPN the backbone's output widths (one per out_index)."""
    cfg.model.neck.in_channels = list(widths)


def write_dior_trainval(cfg, data_root: Path, work_dir: Path) -> None:
    """DIOR-R trains on train + val, but ships only train.txt, val.txt and test.txt.

    When a DIORDataset's ann_file names a list that does not exist and the lists beside it
    are train.txt and val.txt, write their union (train first, as ImageSets order) into the
    work dir and point ann_file there. Other datasets are left alone.
    """
    loader = cfg.get("train_dataloader") or {}
    dataset = loader.get("dataset") or {}
    if dataset.get("type") != "DIORDataset":
        return
    wanted = data_root / dataset.ann_file
    if wanted.is_file():
        return
    parts = [wanted.parent / "train.txt", wanted.parent / "val.txt"]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{wanted} does not exist, nor {', '.join(missing)} to build it from")
    ids = [line.strip() for part in parts for line in part.read_text().splitlines() if line.strip()]
    union = work_dir / f"dior_{wanted.name}"
    union.write_text("".join(f"{i}\n" for i in ids))
    dataset.ann_file = str(union.resolve())


SPEC = TaskSpec(
    config="configs/benchmarks/rotated_detection/rotated_retinanet_ringmoe_tiny_dota.py",
    dataset="dota", metric="dota/mAP", package="mmrotate",
    fit_heads=fit_rotated_heads, demo_data=rotated_demo, prepare=write_dior_trainval)
