"""Semantic segmentation (mmsegmentation): UperNet on ISPRS Potsdam, mIoU."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.tasks.spec import TaskSpec


def potsdam_demo(data_dir: Path, cfg: Any = None) -> Path:
    from benchmarks.datasets.potsdam import generate_potsdam

    return generate_potsdam(data_dir / "potsdam")


def fit_seg_heads(cfg, widths: list[int]) -> None:
    """Give mmseg decode/auxiliary heads the backbone's output widths at their in_index.

    With a neck (e.g. a SimpleFeaturePyramid on a plain ViT), the neck takes the backbone's
    widths, as detection's FPN does, and the heads index its outputs: ``num_outs`` (FPN,
    SimpleFeaturePyramid) or ``len(scales)`` (MultiLevelNeck) maps of ``out_channels``.
    """
    neck = cfg.model.get("neck")
    if neck is not None:
        neck.in_channels = list(widths)
        widths = [neck.out_channels] * (neck.get("num_outs") or len(neck.get("scales") or widths))
    for name in ("decode_head", "auxiliary_head"):
        heads = cfg.model.get(name) or []
        for head in heads if isinstance(heads, list) else [heads]:  # mmseg allows a list of aux heads
            index = head.get("in_index", -1)
            if isinstance(index, (list, tuple)):
                head.in_channels = [widths[i] for i in index]
            else:
                head.in_channels = widths[index]


SPEC = TaskSpec(
    config="configs/benchmarks/segmentation/upernet_ringmoe_tiny_potsdam.py",
    dataset="potsdam", metric="mIoU", package="mmsegmentation",
    fit_heads=fit_seg_heads, demo_data=potsdam_demo)
