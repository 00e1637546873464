"""Downstream benchmarks: the PyTorch twins, OpenMMLab registration, tasks and the runner."""
from benchmarks import compat as _compat

_compat.apply()
