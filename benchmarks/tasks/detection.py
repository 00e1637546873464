"""Horizontal object detection (mmdetection): Faster R-CNN / RetinaNet + FPN on DIOR and HRSID.

Configs (configs/benchmarks/detection/): ``faster_rcnn_ringmoe_tiny_dior.py`` (the default),
``retinanet_ringmoe_tiny_dior.py`` and ``faster_rcnn_ringmoe_tiny_hrsid.py`` (SAR, modality
sar_l2). Each config names its primary metric: pascal_voc/AP50 for DIOR (mmdet's VOCMetric),
coco/bbox_mAP for HRSID (mmdet's CocoMetric).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from benchmarks.tasks.spec import TaskSpec


def _generate_dior(root: Path) -> Path:
    from benchmarks.datasets.dior import generate_dior

    return generate_dior(root)


def _generate_hrsid(root: Path) -> Path:
    from benchmarks.datasets.hrsid import generate_hrsid

    return generate_hrsid(root)


# dataset_name of a config -> (marker file of its generated demo data, generator).
DEMOS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "dior": ("synthetic_dior.json", _generate_dior),
    "hrsid": ("synthetic_hrsid.json", _generate_hrsid),
}
DEFAULT_DATASET = "dior"


def dior_demo(data_dir: Path) -> Path:
    """Demo data of the default config (DIOR); ``prepare`` swaps it for another config's."""
    return _generate_dior(data_dir / DEFAULT_DATASET)


def fit_det_heads(cfg: Any, widths: list[int]) -> None:
    """Give the FPN the backbone's output widths (one per out_index)."""
    cfg.model.neck.in_channels = list(widths)


def _generated_by(root: Path) -> str | None:
    """The dataset whose demo generator wrote root, or None (real data, or another layout)."""
    return next((name for name, (marker, _) in DEMOS.items() if (root / marker).is_file()), None)


def _point_loaders_at(cfg: Any, root: Path) -> None:
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(name)
        if loader and "dataset" in loader:
            loader.dataset.data_root = str(root)
    cfg.data_root = str(root)


def _resolve_ann_files(cfg: Any, root: Path) -> None:
    """COCO evaluators read their ann_file themselves: a relative one is relative to the data root."""
    for name in ("val_evaluator", "test_evaluator"):
        evaluators = cfg.get(name) or []
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            ann_file = evaluator.get("ann_file")
            if ann_file and not Path(ann_file).is_absolute():
                evaluator.ann_file = str(root / ann_file)


def prepare_detection(cfg: Any, data_root: Path, work_dir: Path) -> None:
    """Match generated demo data to the config's dataset, then resolve evaluator paths.

    The runner generates the default (DIOR) demo when no --data-root is given; a config for
    another dataset (``dataset_name = 'hrsid'``) gets its own demo beside it instead. Real data
    (no generator marker) is never touched.
    """
    wanted = cfg.get("dataset_name", DEFAULT_DATASET)
    found = _generated_by(data_root)
    if found is not None and found != wanted:
        if wanted not in DEMOS:
            raise ValueError(f"no demo data for dataset {wanted!r}: pass --data-root")
        generated = DEMOS[wanted][1](data_root.parent / wanted).resolve()
        print(f"detection: the config reads {wanted}, {data_root} holds generated {found}: "
              f"using generated {wanted} at {generated}", flush=True)
        data_root = generated
        _point_loaders_at(cfg, data_root)
    _resolve_ann_files(cfg, data_root)


SPEC = TaskSpec(
    config="configs/benchmarks/detection/faster_rcnn_ringmoe_tiny_dior.py",
    dataset="dior", metric="pascal_voc/AP50", package="mmdet",
    fit_heads=fit_det_heads, demo_data=dior_demo, prepare=prepare_detection)
