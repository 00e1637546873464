"""Batch ops of the supervised recipes, in numpy: label smoothing, mixup and cutmix (timm's
``Mixup`` in batch mode: one mixing coefficient per batch, each image mixed with its partner in
the reversed batch, labels mixed by the same coefficient).

Targets are soft labels [B, num_classes] summing to 1: smoothing spreads ``label_smoothing``
evenly over all classes (the true class keeps ``1 - s + s / C``), then mixing combines two rows.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pretrain.config import ConfigError


@dataclass(frozen=True)
class MixOptions:
    """The config's ``mix`` section."""

    mixup: float = 0.0          # Beta(alpha, alpha) for mixup; 0: off
    cutmix: float = 0.0         # Beta(alpha, alpha) for cutmix; 0: off
    prob: float = 1.0           # probability that a batch is mixed at all
    switch_prob: float = 0.5    # with both on: probability of cutmix instead of mixup
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, section: dict) -> "MixOptions":
        unknown = set(section) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"mix: unknown keys {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        options = cls(**{k: float(v) for k, v in section.items()})
        if options.mixup < 0 or options.cutmix < 0:
            raise ConfigError(f"mix.mixup and mix.cutmix are Beta alphas >= 0, got {options.mixup}, {options.cutmix}")
        for name in ("prob", "switch_prob", "label_smoothing"):
            if not 0.0 <= getattr(options, name) <= 1.0:
                raise ConfigError(f"mix.{name} must be in [0, 1], got {getattr(options, name)}")
        return options

    @property
    def active(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.prob > 0


def smooth_one_hot(labels: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """[B] int labels -> [B, num_classes] float32 soft targets."""
    off = smoothing / num_classes
    targets = np.full((len(labels), num_classes), off, np.float32)
    targets[np.arange(len(labels)), labels] = 1.0 - smoothing + off
    return targets


def cutmix_box(rng: np.random.Generator, height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a box of area about (1 - lam) of the image, centred uniformly and
    clipped at the borders (timm's ``rand_bbox``)."""
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    return int(y0), int(y1), int(x0), int(x1)


def mix_batch(images: np.ndarray, labels: np.ndarray, num_classes: int, options: MixOptions,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """(images [B, C, H, W], soft targets [B, num_classes], lam): image b mixed with image
    B-1-b, targets ``lam * t_b + (1 - lam) * t_(B-1-b)``. For cutmix, lam is the fraction of the
    image left unpasted after clipping the box. lam 1.0: the batch was not mixed."""
    targets = smooth_one_hot(labels, num_classes, options.label_smoothing)
    if not options.active or rng.random() >= options.prob:
        return images, targets, 1.0
    use_cutmix = options.cutmix > 0 and (options.mixup <= 0 or rng.random() < options.switch_prob)
    alpha = options.cutmix if use_cutmix else options.mixup
    lam = float(rng.beta(alpha, alpha))
    partner = images[::-1]
    if use_cutmix:
        height, width = images.shape[-2:]
        y0, y1, x0, x1 = cutmix_box(rng, height, width, lam)
        mixed = images.copy()
        mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
    else:
        mixed = (lam * images + (1.0 - lam) * partner).astype(images.dtype)
    return mixed, (lam * targets + (1.0 - lam) * targets[::-1]).astype(np.float32), lam
