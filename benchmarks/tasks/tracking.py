"""Multi-object tracking (mmdet ByteTrack): satellite video in the MOT layout, HOTA/MOTA/IDF1.

The detector (YOLOX on the RingMoE backbone, at ``detector.backbone``) trains on single frames;
validation runs ByteTracker over the held-out frames of each video, and mmdet's
MOTChallengeMetric scores the tracks with TrackEval. The data is AIR-MOT style (planes and
ships); ``prepare`` converts the MOT-Challenge layout to the CocoVideo JSON that mmdet reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.tasks.spec import TaskSpec


def airmot_demo(data_dir: Path, cfg: Any = None) -> Path:
    from benchmarks.datasets.mot import generate_airmot

    return generate_airmot(data_dir / "airmot")


def fit_tracking_heads(cfg, widths: list[int]) -> None:
    """The YOLOX neck takes the backbone's widths; the head's strides follow its out_indices."""
    detector = cfg.model.detector
    detector.neck.in_channels = list(widths)
    indices = detector.backbone.get("out_indices")
    if indices is not None:  # RingMoE's level i has stride patch 4 x 2**i
        detector.bbox_head.strides = [4 * 2**i for i in indices]


def prepare_mot(cfg, data_root: Path, work_dir: Path) -> None:
    """Convert the MOT layout's train/val splits (``cfg.mot_split``) to CocoVideo JSON files in
    ``<work_dir>/annotations`` and point the dataloaders at them."""
    from benchmarks.datasets.mot import mot_to_cocovideo, write_json_atomic
    from benchmarks.cli import BadInput

    classes = tuple(cfg.val_dataloader.dataset.metainfo["classes"])
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(name)
        if not loader:
            continue
        split = cfg.mot_split["train" if name == "train_dataloader" else "val"]
        try:
            data = mot_to_cocovideo(data_root, split["folder"], split["frames"], classes)
        except (FileNotFoundError, KeyError, ValueError) as err:
            raise BadInput(f"{data_root} is not a MOT-layout dataset for split {dict(split)}: {err}") from None
        if not data["annotations"]:
            raise BadInput(f"no {'/'.join(classes)} boxes in {data_root / split['folder']} "
                           f"(frames: {split['frames']}): check gt/gt.txt and its class column")
        stem = "train" if name == "train_dataloader" else "val"
        path = write_json_atomic(data, work_dir.resolve() / "annotations" / f"{stem}_cocovideo.json")
        dataset = loader.dataset
        dataset.ann_file = str(path)
        prefix_key = "img" if dataset.type == "CocoDataset" else "img_path"  # mmdet's two spellings
        dataset.data_prefix = {prefix_key: split["folder"]}


SPEC = TaskSpec(
    config="configs/benchmarks/tracking/bytetrack_yolox_ringmoe_tiny_airmot.py",
    dataset="airmot", metric="motchallenge-metric/HOTA", package="mmdet",
    fit_heads=fit_tracking_heads, demo_data=airmot_demo, prepare=prepare_mot,
    backbone="detector.backbone")
