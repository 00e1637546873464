"""Change detection (mmsegmentation): BIT on LEVIR-CD and CDD, F1 of the change class.

Configs (configs/benchmarks/change_detection/): ``bit_ringmoe_tiny_levir_cd.py`` (the default),
``bit_ringmoe_tiny_cdd.py`` and ``bit_resnet18_levir_cd.py`` (BIT's ResNet-18 reference, run
with ``--checkpoint none``). The model, data transforms and metric live in
``benchmarks/models/change_detection.py``; the metric reports ``change/F1``, ``change/IoU``,
``change/precision``, ``change/recall`` and ``OA`` in percent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from benchmarks.tasks.spec import TaskSpec, demo_by_dataset


# Demo pairs are 128 px (the real tiles are 1024 / 256 px): the tiny model then learns the
# changes within the demo schedule on a 2-core CPU.
DEMO_SIZE = 128


def _generate_levir_cd(root: Path) -> Path:
    from benchmarks.datasets.change_detection import generate_levir_cd

    return generate_levir_cd(root, size=DEMO_SIZE)


def _generate_cdd(root: Path) -> Path:
    from benchmarks.datasets.change_detection import generate_cdd

    return generate_cdd(root, size=DEMO_SIZE)


# A config's dataset_name -> the generator of its demo data.
DEMOS: dict[str, Callable[[Path], Path]] = {"levir_cd": _generate_levir_cd, "cdd": _generate_cdd}


def _date_channels(backbone: Any) -> int:
    """Input channels of one date: the RingMoE modality's, or a CNN's ``in_channels``."""
    if backbone.get("type") == "RingMoE":
        from benchmarks.models.ringmoe import DEFAULT_MODALITY_CHANNELS

        known = backbone.get("modalities") or DEFAULT_MODALITY_CHANNELS
        return int(known[backbone.get("modality", "optical")])
    return int(backbone.get("in_channels", 3))


def _two_dates(preprocessor: Any, channels: int) -> None:
    """Repeat one date's mean/std for the second date (the runner writes the modality's values
    from the checkpoint meta, one per band); values for both dates are left as they are."""
    for key in ("mean", "std"):
        values = preprocessor.get(key)
        if values is None or len(values) == 2 * channels:
            continue
        if len(values) != channels:
            raise ValueError(f"data_preprocessor.{key} has {len(values)} values; change detection "
                             f"needs {channels} (one date, repeated) or {2 * channels} (both dates)")
        preprocessor[key] = list(values) * 2


def fit_cd_heads(cfg: Any, widths: list[int]) -> None:
    """Size the fusion neck to a RingMoE's stage widths and give the preprocessor 2 x C mean/std.

    A CNN baseline (ResNet-18) sets its neck widths in its config; ``widths`` (which the runner
    computes for RingMoE) would be wrong for it, so its neck is left alone.
    """
    backbone = cfg.model.backbone
    if backbone.get("type") == "RingMoE" and cfg.model.get("neck") is not None:
        cfg.model.neck.in_channels = list(widths)
    channels = _date_channels(backbone)
    for preprocessor in (cfg.model.get("data_preprocessor"), cfg.get("data_preprocessor")):
        if preprocessor is not None:  # the top-level copy too, so the dumped config reads true
            _two_dates(preprocessor, channels)


def check_layout(cfg: Any, data_root: Path, work_dir: Path) -> None:
    """Refuse a data root without the train/val folders that the loaders read (one line, exit 2)."""
    for name in ("train_dataloader", "val_dataloader"):
        for folder in cfg[name].dataset.data_prefix.values():
            if not (data_root / folder).is_dir():
                raise ValueError(f"missing {folder}/ (the {cfg.get('dataset_name', 'levir_cd')} layout is "
                                 "{train,val,test}/{A,B,label or OUT}/)")


SPEC = TaskSpec(
    config="configs/benchmarks/change_detection/bit_ringmoe_tiny_levir_cd.py",
    dataset="levir_cd", metric="change/F1", package="mmsegmentation",
    fit_heads=fit_cd_heads, demo_data=demo_by_dataset(DEMOS, "levir_cd"), prepare=check_layout)
