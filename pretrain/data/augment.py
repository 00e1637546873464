"""The pretraining augmentations, in numpy, for every modality alike: SimMIM's recipe.

One sample = random resized crop (scale, ratio as torchvision/MindSpore ``RandomResizedCrop``)
to the model's input size, a horizontal flip, the modality's conversion to [0, 1] and its
normalisation; for SAR-L1 optionally the total-power target channel; and a SimMIM mask.

Why not ``mindspore.dataset.vision.RandomResizedCrop``: it takes at most 4 channels of uint8 or
float images through OpenCV, and SAR-L1 is 8 float32 I/Q channels. A numpy resize written here
treats all four modalities the same way, reads any dtype and channel count, and draws its
randomness from the caller's generator (MindSpore's ops draw from a global seed, which cannot
give per-sample reproducibility across parallel workers and resumed runs).

The resize is an antialiased bilinear (triangle filter, PIL's ``BILINEAR`` convention: pixel
centres at +0.5, the filter widened by the scale factor when shrinking, edges renormalised),
separable, computed as a fixed sum of gathered taps. For enlarging (the usual case: a crop of
20-50 % of a tile is scaled up to the input size) it is exactly bilinear interpolation; when
shrinking, it averages every source pixel under the filter instead of skipping pixels. Being
linear, it is the right operation for SAR-L1 I/Q (complex resampling interpolates I and Q alike)
and for power (area-weighted averaging is multi-looking). Elementwise numpy in a fixed order
(no BLAS), so the result is bit-identical in any process or thread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pretrain.data.modalities import TO_UNIT, normalise, power_to_target, sar_l1_power
from pretrain.models.arch import Modality


class MaskGenerator:
    """SimMIM masks: a grid of ``mask_patch`` px units, ``ratio`` of them masked, at token scale."""

    def __init__(self, input_size: int = 192, mask_patch: int = 32, model_patch: int = 4, ratio: float = 0.6):
        if input_size % mask_patch or mask_patch % model_patch:
            raise ValueError("input size must be a multiple of the mask patch, and that of the model patch")
        self.grid = input_size // mask_patch
        self.scale = mask_patch // model_patch
        self.count = int(np.ceil(self.grid**2 * ratio))

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros(self.grid**2, np.float32)
        mask[rng.permutation(self.grid**2)[: self.count]] = 1.0
        grid = mask.reshape(self.grid, self.grid)
        return grid.repeat(self.scale, 0).repeat(self.scale, 1)


def sample_box(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float] = (0.2, 0.5),
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width): torchvision's ``RandomResizedCrop.get_params``.

    Area uniform in ``scale`` of the tile, log-aspect (width/height) uniform in ``ratio``; up to
    ten tries, then the central crop with the closest admissible aspect (only reached by tiles
    much longer than wide: a square tile always fits a box of at most half its area).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


@lru_cache(maxsize=1024)
def resize_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [dst, K] into the source, float32 weights [dst, K] summing to 1) of the triangle
    filter that maps ``src`` samples to ``dst`` (PIL's bilinear with antialiasing)."""
    scale = src / dst
    stretch = max(scale, 1.0)  # the filter widens when shrinking, so every source pixel counts
    centres = (np.arange(dst) + 0.5) * scale
    first = np.floor(centres - stretch + 0.5).astype(np.int64)
    taps = int(math.ceil(stretch)) * 2 + 1
    index = first[:, None] + np.arange(taps)[None]
    weight = np.maximum(0.0, 1.0 - np.abs((index + 0.5 - centres[:, None]) / stretch))
    weight[(index < 0) | (index >= src)] = 0.0  # outside the source: dropped, the rest renormalised
    weight /= weight.sum(1, keepdims=True)
    # keep only the span of non-zero taps (2 when enlarging, not 3): shift each row to its first
    nonzero = weight > 0  # contiguous in each row: the triangle's support
    span = int(nonzero.sum(1).max())
    columns = np.minimum(np.argmax(nonzero, axis=1)[:, None] + np.arange(span)[None], taps - 1)
    kept = np.arange(span)[None] < nonzero.sum(1, keepdims=True)
    index = np.take_along_axis(index, columns, 1)
    weight = np.where(kept, np.take_along_axis(weight, columns, 1), 0.0)
    return np.clip(index, 0, src - 1), weight.astype(np.float32)


def _resize_axis(x: np.ndarray, axis: int, start: int, length: int, size: int) -> np.ndarray:
    index, weight = resize_taps(length, size)
    shape = [1] * x.ndim
    shape[axis] = size
    out = None
    for k in range(index.shape[1]):  # a fixed order of float32 adds: the same bits everywhere
        term = np.take(x, index[:, k] + start, axis=axis) * weight[:, k].reshape(shape)
        out = term if out is None else out + term
    return out


def resize_box(raw: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The ``box`` (top, left, h, w) of ``raw`` [H, W] or [H, W, C] (any dtype) resized to
    [size, size(, C)] float32; rows first, then columns."""
    top, left, h, w = box
    rows = _resize_axis(raw[:, left : left + w], 0, top, h, size).astype(np.float32, copy=False)
    return _resize_axis(rows, 1, 0, w, size)


@dataclass(frozen=True)
class Augmentation:
    """The training transform of one modality: raw tile (stored form) -> model input.

    Each call draws, from the generator it is given and in this order: the crop box, then the
    flip. So a sample is a pure function of (tile, generator state).
    """

    modality: Modality
    img_size: int = 192
    scale: tuple[float, float] = (0.2, 0.5)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    power_target: bool = False  # SAR-L1 only: also return the total-power target [1, S, S]

    def __call__(self, raw: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """(normalised input [C, S, S] float32, power target [1, S, S] or None)."""
        box = sample_box(rng, raw.shape[0], raw.shape[1], self.scale, self.ratio)
        flip = rng.random() < self.flip_prob
        crop = resize_box(raw, box, self.img_size)
        if flip:
            crop = crop[:, ::-1]
        unit = TO_UNIT[self.modality.name](np.ascontiguousarray(crop))
        if unit.shape[0] != self.modality.channels:
            raise ValueError(f"{self.modality.name} expects {self.modality.channels} bands, tile has {unit.shape[0]}")
        image = normalise(unit, self.modality).astype(np.float32, copy=False)
        if not self.power_target:
            return image, None
        # power at the sensor's resolution first, then resampled: shrinking multi-looks it
        top, left, h, w = box
        power = resize_box(sar_l1_power(raw[top : top + h, left : left + w]), (0, 0, h, w), self.img_size)
        if flip:
            power = power[:, ::-1]
        return image, power_to_target(power)
