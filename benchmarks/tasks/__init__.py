"""Downstream tasks of benchmarks/run.py: one module per task, each defining ``SPEC``.

A task module names its default config, the primary metric, the OpenMMLab package, how to fit
heads to the backbone's widths and how to write demo data. Adding a task is adding a module
here (plus configs and tests); the runner finds it by name. Modules must import nothing heavy
at top level: ``run.py --help`` lists the tasks by file name without importing them.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from benchmarks.tasks.spec import TaskSpec

__all__ = ["TaskSpec", "task_names", "get_task"]

_NOT_TASKS = {"spec"}


def task_names() -> list[str]:
    """Names of the task modules in this package (file names, nothing imported)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if not m.name.startswith("_") and m.name not in _NOT_TASKS)


def get_task(name: str) -> TaskSpec:
    """The ``SPEC`` of task module ``name``."""
    if name not in task_names():
        raise KeyError(f"unknown task {name!r}; known: {', '.join(task_names())}")
    return importlib.import_module(f"{__name__}.{name}").SPEC
