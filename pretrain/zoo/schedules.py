"""Learning-rate schedules, one value per optimizer step (entry i is the rate of update i + 1).

``cosine``: linear warm-up to the peak, then cosine decay to ``min_lr`` (pretrain/train.py's
``lr_schedule``, shared with the RingMoE trainer).

``bit_hyperrule``: BiT-HyperRule (Kolesnikov et al., "Big Transfer", ECCV 2020, and
google-research/big_transfer ``bit_hyperrule.py``), which sets the fine-tuning schedule from the
number of training images:

    images          supports (warm-up end, decays ..., end)   mixup alpha
    < 20 000        100, 200, 300, 400, 500                   0.0
    < 500 000       500, 3000, 6000, 9000, 10 000             0.1
    otherwise       500, 6000, 12 000, 18 000, 20 000         0.1

The rate rises linearly from 0 (``base_lr * step / warmup``, so the first update has rate 0, as
in the reference code) and is divided by 10 after each decay support: at 30/60/90 % of the
steps for the medium and large regimes (the paper's description), at 40/60/80 % for small
datasets (the reference code's table, followed here). Resolution: images smaller than 96 x 96
px in area are resized to 160 and randomly cropped to 128, larger ones resized to 512 and
cropped to 480 (the code; the paper's text says 448/384). A run with an explicit
``train.steps`` keeps the rule's shape and scales its supports to that many steps (demos).

``multistep``: the constant rate multiplied by ``gamma`` at each milestone (``schedule.milestones``,
in epochs; torch's ``MultiStepLR``), as the step decay of Multigrain's and ResNet's ImageNet recipes.
"""
from __future__ import annotations

import math

from pretrain.config import ConfigError

HYPERRULE_REGIMES: tuple[tuple[float, tuple[int, ...], float], ...] = (
    (20_000, (100, 200, 300, 400, 500), 0.0),
    (500_000, (500, 3000, 6000, 9000, 10_000), 0.1),
    (math.inf, (500, 6000, 12_000, 18_000, 20_000), 0.1),
)


def hyperrule_supports(dataset_size: int) -> tuple[int, ...]:
    """(warm-up steps, decay steps ..., total steps) for a dataset of ``dataset_size`` images."""
    return next(supports for limit, supports, _ in HYPERRULE_REGIMES if dataset_size < limit)


def hyperrule_mixup(dataset_size: int) -> float:
    """BiT-HyperRule's mixup alpha: none for small datasets, 0.1 from 20k images on."""
    return next(alpha for limit, _, alpha in HYPERRULE_REGIMES if dataset_size < limit)


def hyperrule_resolution(height: int, width: int) -> tuple[int, int]:
    """(resize, crop) for images of ``height`` x ``width`` pixels."""
    return (160, 128) if height * width < 96 * 96 else (512, 480)


def scale_supports(supports: tuple[int, ...], steps: int) -> tuple[int, ...]:
    """The same schedule shape over ``steps`` steps (supports strictly increasing, at least 1 apart)."""
    if steps < len(supports):
        raise ConfigError(f"a BiT-HyperRule run needs at least {len(supports)} steps, got {steps}")
    scaled = [max(1, round(s * steps / supports[-1])) for s in supports[:-1]] + [steps]
    for i in range(1, len(scaled)):  # keep them increasing on very short runs
        scaled[i] = max(scaled[i], scaled[i - 1] + 1)
    for i in range(len(scaled) - 2, -1, -1):
        scaled[i] = min(scaled[i], scaled[i + 1] - 1)
    return tuple(scaled)


def hyperrule_lr(step: int, supports: tuple[int, ...], base_lr: float) -> float:
    """The reference ``get_lr``: rate of the update made at 0-based ``step``."""
    if step < supports[0]:
        return base_lr * step / supports[0]
    if step >= supports[-1]:
        raise ValueError(f"step {step} is past the end of the schedule ({supports[-1]} steps)")
    return base_lr / 10 ** sum(1 for s in supports[1:] if s < step)


def hyperrule_schedule(base_lr: float, supports: tuple[int, ...]) -> list[float]:
    return [hyperrule_lr(step, supports, base_lr) for step in range(supports[-1])]


def cosine_schedule(base_lr: float, steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> list[float]:
    """Linear warm-up over ``warmup_steps`` (reaching ``base_lr`` at the last warm-up step), then
    half a cosine from ``base_lr`` down to ``min_lr`` at the end."""
    from pretrain.train import lr_schedule

    return lr_schedule({"lr": base_lr, "min_lr": min_lr, "warmup_steps": warmup_steps}, steps)


def check_milestones(milestones) -> None:
    """``schedule.milestones`` of a multistep schedule: strictly increasing positive epochs."""
    if (not isinstance(milestones, (list, tuple)) or not milestones
            or not all(isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in milestones)
            or any(b <= a for a, b in zip(milestones, milestones[1:]))):
        raise ConfigError(f"schedule.milestones must be strictly increasing positive epochs, got {milestones!r}")


def multistep_schedule(base_lr: float, steps: int, milestones: list[int], gamma: float = 0.1) -> list[float]:
    """``base_lr`` times ``gamma`` per milestone reached: update i + 1 (0-based index i) has the rate
    ``base_lr * gamma ** #(milestones <= i)``, so a milestone at step s decays update s + 1 on."""
    return [base_lr * gamma ** sum(1 for m in milestones if m <= step) for step in range(steps)]
