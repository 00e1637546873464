"""Small generators that write synthetic test data in each benchmark dataset's real on-disk format.

Each generator writes exactly the layout (directories, file names, pixel encoding) that the
OpenMMLab dataset class reads after that project's own converter, so the whole pipeline
(dataset class, transforms, model, evaluator) runs on it unchanged. Content is simple but
learnable, so a short training run can show above-chance metrics.
"""
from __future__ import annotations

from typing import Any

__all__ = ["generate_potsdam"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `python -m benchmarks.datasets.potsdam` does not find its own module
    # already imported by the package (runpy warns about that), and Pillow loads only when used.
    if name == "generate_potsdam":
        from benchmarks.datasets.potsdam import generate_potsdam

        return generate_potsdam
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
