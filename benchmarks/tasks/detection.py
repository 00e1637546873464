"""Horizontal object detection (mmdetection): Faster R-CNN / RetinaNet + FPN on DIOR and HRSID.

Configs (configs/benchmarks/detection/): ``faster_rcnn_ringmoe_tiny_dior.py`` (the default),
``retinanet_ringmoe_tiny_dior.py`` and ``faster_rcnn_ringmoe_tiny_hrsid.py`` (SAR, modality
sar_l2). Each config names its primary metric: pascal_voc/AP50 for DIOR (mmdet's VOCMetric),
coco/bbox_mAP for HRSID (mmdet's CocoMetric).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from benchmarks.tasks.spec import TaskSpec, demo_by_dataset


def _generate_dior(root: Path) -> Path:
    from benchmarks.datasets.dior import generate_dior

    return generate_dior(root)


def _generate_hrsid(root: Path) -> Path:
    from benchmarks.datasets.hrsid import generate_hrsid

    return generate_hrsid(root)


# A config's dataset_name -> the generator of its demo data.
DEMOS: dict[str, Callable[[Path], Path]] = {"dior": _generate_dior, "hrsid": _generate_hrsid}


def fit_det_heads(cfg: Any, widths: list[int]) -> None:
    """Give the FPN the backbone's output widths (one per out_index)."""
    cfg.model.neck.in_channels = list(widths)


def prepare_detection(cfg: Any, data_root: Path, work_dir: Path) -> None:
    """COCO evaluators read their ann_file themselves: a relative one is relative to the data root."""
    for name in ("val_evaluator", "test_evaluator"):
        evaluators = cfg.get(name) or []
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            ann_file = evaluator.get("ann_file")
            if ann_file and not Path(ann_file).is_absolute():
                evaluator.ann_file = str(data_root / ann_file)


SPEC = TaskSpec(
    config="configs/benchmarks/detection/faster_rcnn_ringmoe_tiny_dior.py",
    dataset="dior", metric="pascal_voc/AP50", package="mmdet",
    fit_heads=fit_det_heads, demo_data=demo_by_dataset(DEMOS, "dior"), prepare=prepare_detection)
