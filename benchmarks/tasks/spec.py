"""What the runner needs to know about a downstream task."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping


def _no_heads(cfg: Any, widths: list[int]) -> None:
    """For heads that need no widths (e.g. a neck that the config already sizes)."""


def demo_by_dataset(generators: Mapping[str, Callable[[Path], Path]], default: str) -> Callable[[Path, Any], Path]:
    """A ``demo_data`` hook that generates the demo of the config's ``dataset_name`` (else
    ``default``) at ``<data dir>/<dataset_name>``, with that dataset's generator."""

    def demo(data_dir: Path, cfg: Any) -> Path:
        name = cfg.get("dataset_name", default)
        if name not in generators:
            raise ValueError(f"no demo data for dataset {name!r} (only {', '.join(generators)}): pass --data-root")
        return generators[name](data_dir / name)

    return demo


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task.

    config: default config, relative to the repository root.
    dataset: the results' dataset column, unless the config sets ``dataset_name``.
    metric: the primary metric key in the evaluator's output, unless the config sets
        ``primary_metric`` (a task with several datasets/evaluators lets each config name its own).
    package: distribution name of the OpenMMLab framework (for the versions column).
    fit_heads: (cfg, backbone output widths) -> None; sizes necks/heads to the backbone.
    demo_data: (data dir, config) -> dataset root; writes demo data in the real on-disk format,
        for the config's dataset (a task whose configs read several datasets builds its hook
        with ``demo_by_dataset``). Raises ValueError for a dataset it has no demo of.
    prepare: (cfg, data root, work dir) -> None; called after the data root is set, before the
        run's identity is hashed (e.g. writes seeded train/val splits into the work dir). It
        raises ValueError (or OSError) for data it cannot use: the runner reports that in one
        line with exit code 2.
    backbone: dotted path of the backbone inside ``cfg.model`` and inside the built model
        (``backbone``; a tracker's is ``detector.backbone``).
    """

    config: str
    dataset: str
    metric: str
    package: str
    fit_heads: Callable[[Any, list[int]], None] = _no_heads
    demo_data: Callable[[Path, Any], Path] | None = None
    prepare: Callable[[Any, Path, Path], None] | None = None
    backbone: str = "backbone"
