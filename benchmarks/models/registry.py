"""Register the PyTorch twin ``RingMoE`` with the OpenMMLab frameworks (mmseg, mmdet, mmpretrain,
mmrotate), so configs can name it.

Importing this module registers (it is what configs list in ``custom_imports``):

    custom_imports = dict(imports=['benchmarks.models.registry'], allow_failed_imports=False)
    model = dict(backbone=dict(type='RingMoE', modality='optical', ...))

Frameworks that are not installed are skipped; registering twice is harmless (``force=True``).
"""
from __future__ import annotations

import importlib
import importlib.util

from benchmarks import compat  # importing benchmarks applies the torchvision shim first
from benchmarks.models.ringmoe import RingMoE

# mmrotate 1.0.0rc1 imports only through benchmarks/compat.py's import hook, which the
# ``from benchmarks import compat`` above has installed (``benchmarks/__init__`` applies it).
FRAMEWORKS = ("mmseg", "mmdet", "mmpretrain", "mmrotate")


def _register_twins() -> None:
    """Our other twins register themselves with mmpretrain on import (mindcv's ResNet stem)."""
    if importlib.util.find_spec("mmpretrain") is not None:
        importlib.import_module("benchmarks.models.mindcv_twins")


def register_all() -> list[str]:
    """Register ``RingMoE`` in each installed framework's MODELS registry; return their names."""
    return compat.register_in_frameworks("RingMoE", RingMoE, FRAMEWORKS)


compat.apply_mmengine()
REGISTERED = register_all()
if importlib.util.find_spec("mmengine") is not None:
    from converters.writers import register_mmengine_loader

    register_mmengine_loader()  # load_from='safetensors://converted_dir' in any OpenMMLab config
_register_twins()
