"""Drawing helpers shared by the demo-data generators."""
from __future__ import annotations

import numpy as np


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A [size, size] float64 field of roughly unit spread that varies over ``size / cells``
    pixels: bilinear interpolation of a coarse normal grid, with numpy alone.

    Gives regions a low-frequency texture (ground, blotchy crowns, water, uneven pavement).
    """
    coarse = rng.normal(size=(cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    t = pos - i0
    rows = coarse[i0] * (1 - t)[:, None] + coarse[i0 + 1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]
