"""Height estimation (mmsegmentation DepthEstimator) on ISPRS Vaihingen and Potsdam nDSM.

Configs (configs/benchmarks/depth/): ``binsformer_ringmoe_tiny_vaihingen.py`` (the default),
``binsformer_ringmoe_tiny_potsdam.py`` and the plain regression baseline
``regression_ringmoe_tiny_vaihingen.py``. Primary metric: ``rmse`` in metres, LOWER is better
(mmseg's DepthMetric; the row also holds abs_rel, log10, d1-d3 = delta < 1.25, 1.25^2, 1.25^3,
sq_rel, rmse_log, silog).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.tasks.spec import TaskSpec

DEFAULT_DATASET = "vaihingen_ndsm"
# dataset_name of a config -> the generator flavour of its demo data (benchmarks/datasets/ndsm.py).
DEMO_FLAVOURS = {"vaihingen_ndsm": "vaihingen", "potsdam_ndsm": "potsdam"}


def _generate(dataset: str, root: Path) -> Path:
    from benchmarks.datasets import ndsm

    if DEMO_FLAVOURS[dataset] == "vaihingen":
        return ndsm.generate_vaihingen_ndsm(root)
    return ndsm.generate_potsdam_ndsm(root)


def vaihingen_demo(data_dir: Path) -> Path:
    """Demo data of the default config; ``prepare`` swaps it for another config's."""
    return _generate(DEFAULT_DATASET, data_dir / DEFAULT_DATASET)


def fit_depth_head(cfg: Any, widths: list[int]) -> None:
    """Give the decode head the backbone's output widths at its in_index (a list of levels)."""
    head = cfg.model.decode_head
    head.in_channels = [widths[i] for i in head.get("in_index", range(len(widths)))]


def _generated_by(root: Path) -> str | None:
    """The dataset whose demo generator wrote root, or None (real data)."""
    return next((name for name, flavour in DEMO_FLAVOURS.items()
                 if (root / f"synthetic_{flavour}_ndsm.json").is_file()), None)


def prepare_depth(cfg: Any, data_root: Path, work_dir: Path) -> None:
    """Without --data-root the runner generates the default (Vaihingen) demo; a config for
    another dataset (``dataset_name = 'potsdam_ndsm'``) gets its own demo beside it. Real data
    (no generator marker) is never touched."""
    wanted = cfg.get("dataset_name", DEFAULT_DATASET)
    found = _generated_by(data_root)
    if found is None or found == wanted:
        return
    if wanted not in DEMO_FLAVOURS:
        raise ValueError(f"no demo data for dataset {wanted!r}: pass --data-root")
    generated = _generate(wanted, data_root.parent / wanted).resolve()
    print(f"depth: the config reads {wanted}, {data_root} holds generated {found}: "
          f"using generated {wanted} at {generated}", flush=True)
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(name)
        if loader and "dataset" in loader:
            loader.dataset.data_root = str(generated)
    cfg.data_root = str(generated)


SPEC = TaskSpec(
    config="configs/benchmarks/depth/binsformer_ringmoe_tiny_vaihingen.py",
    dataset=DEFAULT_DATASET, metric="rmse", package="mmsegmentation",
    fit_heads=fit_depth_head, demo_data=vaihingen_demo, prepare=prepare_depth)
