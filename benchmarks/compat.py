"""Compatibility shims for third-party packages, kept in this one module.

Each shim says why it exists and when it can go. ``apply()`` is idempotent and is called by
``benchmarks/__init__.py``, so every entry point of the project (runner, tests, configs with
``custom_imports``) gets it automatically. It costs nothing at import: the torchvision and
mmrotate shims wait in import hooks and act only when those packages are first imported.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import itertools
import sys
import types
from typing import Callable, Iterator


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


# mmrotate 1.0.0rc1 asserts this at import; every version it accepts is older than ours.
_MMROTATE_MAX_MMDET = "3.1.0"


@contextlib.contextmanager
def _mmdet_reads_as_accepted_by_mmrotate() -> Iterator[None]:
    """While mmrotate/__init__ runs, mmdet.__version__ reads 3.1.0; afterwards it is restored.

    Why: mmrotate 1.0.0rc1 (the newest 1.x release) asserts ``mmdet <= 3.1.0`` at import,
    and no mmdet <= 3.1.0 works with an mmcv that compiles against our torch (mmdet 3.1.0
    asserts mmcv < 2.1.0; mmcv 2.0.1 does not build against torch 2.13's C++17 headers).
    Rotated RetinaNet le90 trains with finite losses and evaluates on mmdet 3.3.0
    (tests/test_benchmark_rotated_detection.py); Oriented R-CNN and rotated FCOS ran a CPU
    test step (../shared/design/stack.md).
    What: only the version string that the assert reads changes, only for the duration of
    ``mmrotate/__init__``; mmdet's reported version is 3.3.0 for everyone before and after.
    When it can go: when an mmrotate release accepts mmdet 3.3 (or the project pins an
    mmdet/mmcv pair that mmrotate accepts and that builds).
    """
    import mmdet

    real = mmdet.__version__
    mmdet.__version__ = _MMROTATE_MAX_MMDET
    try:
        yield
    finally:
        mmdet.__version__ = real


@contextlib.contextmanager
def _collections_has_sequence() -> Iterator[None]:
    """While mmrotate's refine_single_stage.py runs, ``collections.Sequence`` exists.

    Why: mmrotate 1.0.0rc1's ``mmrotate/models/detectors/refine_single_stage.py`` does
    ``from collections import Sequence``; the alias was removed in Python 3.10, so importing
    ``mmrotate.models`` (every mmrotate config does) fails with ImportError on our 3.11.
    What: the alias ``collections.Sequence = collections.abc.Sequence`` exists only while
    that one module executes (the module keeps its own reference), then is removed again so
    no other code comes to rely on it.
    When it can go: when a released mmrotate imports it from ``collections.abc``.
    """
    import collections
    import collections.abc

    added = not hasattr(collections, "Sequence")
    if added:
        collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del collections.Sequence  # type: ignore[attr-defined]


class _InProcessPool:
    """The part of ``multiprocessing.Pool`` that mmrotate's mAP uses, run in this process."""

    def __init__(self, processes: int | None = None) -> None:
        del processes

    def starmap(self, func, iterable) -> list:
        return list(itertools.starmap(func, iterable))

    def close(self) -> None:
        pass

    def join(self) -> None:
        pass

    def terminate(self) -> None:
        pass


def _in_process_context(method: str | None = None) -> types.SimpleNamespace:
    del method
    return types.SimpleNamespace(Pool=_InProcessPool)


@contextlib.contextmanager
def _mmrotate_map_in_process(module: types.ModuleType) -> Iterator[None]:
    """After mmrotate's mean_ap.py has run, its ``get_context`` gives an in-process pool.

    Why: ``eval_rbbox_map`` (behind DOTAMetric) computes per-image TP/FP in
    ``get_context('spawn').Pool(4)``. Spawned children start a fresh interpreter and import
    mmrotate by unpickling ``tpfp_default`` before anything imports ``benchmarks``, so they
    die on mmrotate's mmdet assert and the evaluation hangs for ever. Even where they start,
    each evaluation pays four interpreters importing torch, mmcv and mmdet, and the pool is
    never closed (leaked semaphores). The per-image work is small (one box_iou_rotated each).
    What: the module's global ``get_context`` is replaced by one whose ``Pool`` runs
    ``starmap`` serially in this process; the results are the same, in the same order.
    When it can go: when mmrotate imports without our hook (it accepts our mmdet) and closes
    its pool, or computes the metric in-process.
    """
    yield
    module.get_context = _in_process_context


# Module name -> a context (given the new module) that wraps that module's body executing.
_MMROTATE_PATCHES: dict[str, Callable[[types.ModuleType], contextlib.AbstractContextManager]] = {
    "mmrotate": lambda module: _mmdet_reads_as_accepted_by_mmrotate(),
    "mmrotate.models.detectors.refine_single_stage": lambda module: _collections_has_sequence(),
    "mmrotate.evaluation.functional.mean_ap": _mmrotate_map_in_process,
}


class _PatchedLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` inside a context; delegates everything else."""

    def __init__(self, loader: importlib.abc.Loader,
                 patch: Callable[[types.ModuleType], contextlib.AbstractContextManager],
                 on_exec: Callable[[], None]):
        self._loader = loader
        self._patch = patch
        self._on_exec = on_exec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._on_exec()
        with self._patch(module):
            self._loader.exec_module(module)

    def __getattr__(self, name: str):  # get_data, get_filename, is_package, ... (resources, inspect)
        return getattr(self._loader, name)


class _MmrotateImports(importlib.abc.MetaPathFinder):
    """Wraps the loaders of the mmrotate modules in ``_MMROTATE_PATCHES`` until they are imported.

    It finds the real spec with the other finders and only swaps in a ``_PatchedLoader``, so
    the modules load from their installed files as usual. A module stops being patched once
    it has executed (``importlib.util.find_spec`` alone, as used to test for installed
    packages, does not count), and the finder leaves ``sys.meta_path`` when all have.
    """

    def __init__(self) -> None:
        self._pending = {k: v for k, v in _MMROTATE_PATCHES.items() if k not in sys.modules}

    def _executed(self, name: str) -> None:
        self._pending.pop(name, None)
        if not self._pending and self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, name, path=None, target=None):
        patch = self._pending.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchedLoader(spec.loader, patch, lambda: self._executed(name))
                return spec
        return None


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs the torchvision shim at the first ``import torchvision``, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            _define_torchvision_cpu_ops()
        return None  # the regular finders locate the module


def apply() -> None:
    """Install every shim once. Safe to call many times; imports nothing heavy."""
    if "mmrotate" not in sys.modules and not any(isinstance(f, _MmrotateImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _MmrotateImports())
    if "torchvision" in sys.modules or any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BeforeTorchvision())


def _installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module blocked or half-imported counts as absent
        return False


def register_in_frameworks(name: str, module: type, frameworks: tuple[str, ...]) -> list[str]:
    """Register ``module`` as ``name`` in the MODELS registry of each installed framework of
    ``frameworks`` (after the shims, which their imports need); return the frameworks' names.
    Registering twice is harmless (``force=True``)."""
    import importlib

    done = []
    for package in frameworks:
        if not _installed(package):
            continue
        registry = importlib.import_module(f"{package}.registry")
        registry.MODELS.register_module(name=name, module=module, force=True)
        done.append(package)
    return done
