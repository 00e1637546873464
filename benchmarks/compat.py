"""Compatibility shims for third-party packages, kept in this one module.

Each shim says why it exists and when it can go. ``apply()`` is idempotent and is called by
``benchmarks/__init__.py``, so every entry point of the project (runner, tests, configs with
``custom_imports``) gets it automatically. It costs nothing at import: the torchvision shim
waits in an import hook and runs just before torchvision is first imported.
"""
from __future__ import annotations

import importlib.abc
import sys


def _define_torchvision_cpu_ops() -> None:
    """Let the CUDA wheel of torchvision import on the CPU build of torch.

    Why: PyPI's torchvision 0.28.0 (the match for torch 2.13.0) is a CUDA build. On the CPU
    torch its C++ ops library does not load, and ``import torchvision`` then fails with
    ``operator torchvision::nms does not exist`` when it registers fake kernels. mmpretrain
    imports torchvision, and mmseg and mmdet import mmpretrain, so all three break.
    What: declare the two operator schemas that torchvision's Python side registers fake
    kernels for. Its Python parts (transforms, datasets) then import; its C++ ops stay
    unavailable, and mmcv's CPU ops replace them (nms, RoIAlign).
    When it can go: when a CPU torchvision wheel matching our torch is installable from the
    package registry (it is not on PyPI), or when the project moves to the CUDA torch.
    """
    if "torchvision" in sys.modules:
        return
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018  already defined (real C++ ops loaded)
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the library object alive for the life of the process.
    globals()["_torchvision_fragment"] = lib


def _allow_resuming_mmengine_checkpoints() -> None:
    """Let mmengine resume from its own checkpoints under torch >= 2.6.

    Why: torch 2.6 made ``torch.load(weights_only=True)`` the default, and mmengine 0.10.7's
    local loader does not pass ``weights_only``. Its own resume checkpoints hold a pickled
    message hub (HistoryBuffer, numpy scalars), so ``--resume`` fails to unpickle them
    (open-mmlab/mmengine#1655). Allow-listing the classes is not enough: they pickle through
    ``builtins.getattr``.
    What: mmengine's loader for local paths tries ``weights_only=True`` first, and only when
    that refuses the pickle falls back to a full load. Only local files go this way: a work
    dir's own checkpoints. Our converted checkpoints never need it (plain types only), and
    ``benchmarks/models/loading.py`` loads them with ``weights_only=True`` directly.
    When it can go: when mmengine passes ``weights_only`` itself (a release after 0.10.7).
    """
    import os
    import pickle

    import torch
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_local(filename: str, map_location=None):
        filename = os.path.expanduser(filename)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"{filename} can not be found.")
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            return torch.load(filename, map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme(prefixes="", loader=load_local, force=True)


def apply_mmengine() -> None:
    """Shims that touch mmengine: applied by benchmarks/models/registry.py, which every
    OpenMMLab config of ours imports (custom_imports), so no entry point can miss them."""
    if _installed("mmengine"):
        _allow_resuming_mmengine_checkpoints()


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs the torchvision shim at the first ``import torchvision``, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            _define_torchvision_cpu_ops()
        return None  # the regular finders locate the module


def apply() -> None:
    """Install every shim once. Safe to call many times; imports nothing heavy."""
    if "torchvision" in sys.modules or any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BeforeTorchvision())


def _installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module blocked or half-imported counts as absent
        return False
