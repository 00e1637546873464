"""Per-sample view pipelines: one decoded image (HWC uint8 RGB) -> its views (CHW float32).

A pipeline is a list of op dicts, ``dict(type=<name in OPS>, **arguments)``, applied in order;
the last op is ``normalize`` (to CHW float32). ``data.views`` is a list of view groups
``dict(repeat=n, pipeline=[...])``: one group with repeat 1 for supervised training, repeat m for
Multigrain's repeated augmentations, a 224 px group of 2 and a 96 px group of N for DINO.

Randomness. Every op draws its random choices (crop box, flip, factors) from the per-sample numpy
generator it is given, then applies a deterministic MindSpore op (``vision.ResizedCrop``,
``vision.HorizontalFlip``, ``vision.AdjustBrightness`` ...) or numpy. So a sample's views depend on
(seed, position in the stream) only, never on the worker that made them or on a resume.
``vision.RandAugment`` has no seed argument: it draws from the dataset seed at each eager call,
so ``RandAugment`` sets ``mindspore.dataset.config.set_seed`` (which also seeds Python's
``random`` and numpy's global generator) from the sample's generator, under a lock, just before
the call.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from pretrain.config import ConfigError
from pretrain.data.augment import sample_box

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")
_SEED_LOCK = threading.Lock()  # RandAugment: set the dataset seed and call, atomically


def _vision():
    import mindspore.dataset.vision as vision  # heavy: imported when the first view is made

    return vision


def _inter(name: str):
    vision = _vision()
    return {"nearest": vision.Inter.NEAREST, "bilinear": vision.Inter.BILINEAR,
            "bicubic": vision.Inter.BICUBIC, "area": vision.Inter.AREA}[name]


def _check_interpolation(name: str) -> str:
    if name not in INTERPOLATIONS:
        raise ConfigError(f"interpolation {name!r} is not one of {INTERPOLATIONS}")
    return name


def _size(value) -> int:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"a crop or resize size must be a positive int, got {value!r}")
    return value


def _prob(value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"a probability must be in [0, 1], got {value!r}")
    return float(value)


class RandomResizedCrop:
    """torchvision/timm ``RandomResizedCrop``: area fraction in ``scale``, log-uniform aspect in
    ``ratio`` (up to ten tries, then the central crop), resized to ``size`` x ``size``."""

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 interpolation: str = "bicubic"):
        self.size, self.scale, self.ratio = _size(size), tuple(map(float, scale)), tuple(map(float, ratio))
        self.interpolation = _check_interpolation(interpolation)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        top, left, h, w = sample_box(rng, image.shape[0], image.shape[1], self.scale, self.ratio)
        return _vision().ResizedCrop(top, left, h, w, (self.size, self.size), _inter(self.interpolation))(image)


class Resize:
    """Resize to ``size`` x ``size`` (BiT's pre-crop resize ignores the aspect ratio)."""

    def __init__(self, size: int, interpolation: str = "bilinear"):
        self.size, self.interpolation = _size(size), _check_interpolation(interpolation)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _vision().Resize((self.size, self.size), _inter(self.interpolation))(image)


class RandomCrop:
    """A ``size`` x ``size`` crop at a uniform position (the image must be at least that large)."""

    def __init__(self, size: int):
        self.size = _size(size)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        if height < self.size or width < self.size:
            raise ValueError(f"random_crop of {self.size} px from a {height}x{width} image: resize first")
        top, left = int(rng.integers(0, height - self.size + 1)), int(rng.integers(0, width - self.size + 1))
        return np.ascontiguousarray(image[top:top + self.size, left:left + self.size])


class CenterCrop:
    def __init__(self, size: int):
        self.size = _size(size)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _vision().CenterCrop(self.size)(image)


class HorizontalFlip:
    def __init__(self, prob: float = 0.5):
        self.prob = _prob(prob)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.ascontiguousarray(image[:, ::-1]) if rng.random() < self.prob else image


class RandAugment:
    """MindSpore's ``vision.RandAugment`` (torchvision's policy: ``num_ops`` ops, each with
    magnitude ``magnitude`` of ``num_magnitude_bins - 1``). With the default 11 bins, magnitude 9
    is timm's ``rand-m9`` scale (9/10 of each op's range); timm's magnitude noise (``mstd``) and
    increasing-severity ops (``inc1``) are not modelled."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 11,
                 interpolation: str = "bilinear", fill: Sequence[int] = (124, 116, 104)):
        if not 0 <= magnitude < num_magnitude_bins:
            raise ConfigError(f"rand_augment magnitude {magnitude} must be in [0, num_magnitude_bins="
                              f"{num_magnitude_bins})")
        self.num_ops, self.magnitude, self.bins = int(num_ops), int(magnitude), int(num_magnitude_bins)
        self.interpolation, self.fill = _check_interpolation(interpolation), tuple(int(v) for v in fill)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import mindspore.dataset as ds

        seed = int(rng.integers(0, 2**31 - 1))
        op = _vision().RandAugment(self.num_ops, self.magnitude, self.bins, _inter(self.interpolation), self.fill)
        with _SEED_LOCK:  # the eager op draws from the process-wide dataset seed at this call
            ds.config.set_seed(seed)
            return op(image)


class ColorJitter:
    """With probability ``prob``: brightness, contrast, saturation (factors uniform in
    [1 - x, 1 + x]) and hue (shift uniform in [-hue, hue]) in a random order (torchvision)."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2, hue: float = 0.1,
                 prob: float = 0.8):
        self.amounts = (float(brightness), float(contrast), float(saturation), float(hue))
        if not 0.0 <= self.amounts[3] <= 0.5:
            raise ConfigError(f"color_jitter hue must be in [0, 0.5], got {hue}")
        self.prob = _prob(prob)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.prob:
            return image
        vision = _vision()
        adjust = (vision.AdjustBrightness, vision.AdjustContrast, vision.AdjustSaturation, vision.AdjustHue)
        for index in rng.permutation(4):
            amount = self.amounts[index]
            if amount <= 0:
                continue
            factor = rng.uniform(-amount, amount) if index == 3 else rng.uniform(max(0.0, 1 - amount), 1 + amount)
            image = adjust[index](float(factor))(image)
        return image


class Grayscale:
    """With probability ``prob``: ITU-R 601-2 luma (PIL's ``convert('L')``), as 3 channels."""

    def __init__(self, prob: float = 0.2):
        self.prob = _prob(prob)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.prob:
            return image
        luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.repeat(np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


class GaussianBlur:
    """With probability ``prob``: a Gaussian blur with sigma uniform in ``sigma`` (kernel 6 sigma + 1)."""

    def __init__(self, prob: float = 0.5, sigma: Sequence[float] = (0.1, 2.0)):
        self.prob, self.sigma = _prob(prob), tuple(map(float, sigma))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.prob:
            return image
        sigma = float(rng.uniform(*self.sigma))
        kernel = 2 * math.ceil(3 * sigma) + 1
        return _vision().GaussianBlur(kernel, sigma)(image)


class Solarize:
    """With probability ``prob``: invert every value >= ``threshold`` (PIL's ``ImageOps.solarize``)."""

    def __init__(self, prob: float = 0.2, threshold: int = 128):
        self.prob, self.threshold = _prob(prob), int(threshold)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.prob:
            return image
        return np.where(image >= self.threshold, 255 - image, image).astype(np.uint8)


class Normalize:
    """[0, 255] HWC -> ``(x / 255 - mean) / std`` as CHW float32 (mean and std on the [0, 1] scale)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)
        if self.mean.size != self.std.size or np.any(self.std <= 0):
            raise ConfigError(f"normalize needs as many positive std values as means, got {mean}, {std}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        return (chw - self.mean) / self.std


OPS: dict[str, Callable] = {
    "random_resized_crop": RandomResizedCrop, "resize": Resize, "random_crop": RandomCrop,
    "center_crop": CenterCrop, "hflip": HorizontalFlip, "rand_augment": RandAugment,
    "color_jitter": ColorJitter, "grayscale": Grayscale, "gaussian_blur": GaussianBlur,
    "solarize": Solarize, "normalize": Normalize,
}


def build_op(spec: dict):
    """One op from ``dict(type=..., **arguments)``; a ConfigError names what is wrong."""
    if not isinstance(spec, dict) or spec.get("type") not in OPS:
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise ConfigError(f"unknown view op {kind!r}; known: {sorted(OPS)}")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    try:
        return OPS[spec["type"]](**kwargs)
    except TypeError as err:
        raise ConfigError(f"view op {spec['type']!r}: {err}") from None


@dataclass(frozen=True)
class ViewGroup:
    repeat: int
    ops: tuple


class ViewMaker:
    """``data.views`` -> callable(image, rng) -> list of views (groups in order, each repeated)."""

    def __init__(self, groups: Sequence[dict]):
        if not groups:
            raise ConfigError("data.views is empty: give at least one dict(repeat=1, pipeline=[...])")
        self.groups = []
        for i, group in enumerate(groups):
            if not isinstance(group, dict) or set(group) - {"repeat", "pipeline"} or "pipeline" not in group:
                raise ConfigError(f"data.views[{i}] must be dict(repeat=n, pipeline=[ops]), got {group!r}")
            pipeline = list(group["pipeline"])
            if not pipeline or not isinstance(pipeline[-1], dict) or pipeline[-1].get("type") != "normalize":
                raise ConfigError(f"data.views[{i}].pipeline must end with dict(type='normalize', ...)")
            repeat = group.get("repeat", 1)
            if not isinstance(repeat, int) or repeat < 1:
                raise ConfigError(f"data.views[{i}].repeat must be a positive int, got {repeat!r}")
            self.groups.append(ViewGroup(repeat, tuple(build_op(op) for op in pipeline)))

    @property
    def num_views(self) -> int:
        return sum(g.repeat for g in self.groups)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        views = []
        for group in self.groups:
            for _ in range(group.repeat):
                view = image
                for op in group.ops:
                    view = op(view, rng)
                views.append(view)
        return views
