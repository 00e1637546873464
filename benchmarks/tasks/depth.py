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

from benchmarks.tasks.spec import TaskSpec, demo_by_dataset


def _vaihingen(root: Path) -> Path:
    from benchmarks.datasets.ndsm import generate_vaihingen_ndsm

    return generate_vaihingen_ndsm(root)


def _potsdam(root: Path) -> Path:
    from benchmarks.datasets.ndsm import generate_potsdam_ndsm

    return generate_potsdam_ndsm(root)


# A config's dataset_name -> the generator of its demo data.
DEMOS = {"vaihingen_ndsm": _vaihingen, "potsdam_ndsm": _potsdam}


def fit_depth_head(cfg: Any, widths: list[int]) -> None:
    """Give the decode head the backbone's output widths at its in_index (a list of levels)."""
    head = cfg.model.decode_head
    head.in_channels = [widths[i] for i in head.get("in_index", range(len(widths)))]


SPEC = TaskSpec(
    config="configs/benchmarks/depth/binsformer_ringmoe_tiny_vaihingen.py",
    dataset="vaihingen_ndsm", metric="rmse", package="mmsegmentation",
    fit_heads=fit_depth_head, demo_data=demo_by_dataset(DEMOS, "vaihingen_ndsm"))
