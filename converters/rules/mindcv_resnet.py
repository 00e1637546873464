"""Conversion rules: mindcv ``ResNet`` (resnet18 ... resnet152) -> mmpretrain ``ImageClassifier``.

Target: ``MindCVResNet`` (``benchmarks/models/mindcv_twins.py``), which is mmpretrain's ``ResNet``
with mindcv's TF-style "same" stem max-pool; state-dict keys are mmpretrain's. Neck
``GlobalAveragePooling`` and ``LinearClsHead`` take mindcv's ``pool`` and ``classifier``.

Rules are data, read by ``converters/mindcv.py``: ``RENAMES`` (source pattern, target template,
transform), ``DROPS`` (source pattern, reason), ``NEW`` (target pattern, reason: target entries
no source tensor fills; their values are the freshly built target's own). Patterns are
full-match regular expressions over the source key. Numerics are set in ``model_config``.
"""
from __future__ import annotations

import numpy as np

FAMILY = "resnet"

# mindcv's factory functions -> the architecture they build (mindcv/models/resnet.py).
ARCHS: dict[str, dict] = {
    "resnet18": {"depth": 18},
    "resnet34": {"depth": 34},
    "resnet50": {"depth": 50},
    "resnet101": {"depth": 101},
    "resnet152": {"depth": 152},
}

# Stage and block from mindcv's SequentialCell names (layer1.0 ...); they are not mangled.
BLOCK = r"layer(?P<l>[1-4])\.(?P<b>\d+)"
T_BLOCK = "backbone.layer{l}.{b}"

# mindcv BatchNorm2d parameter -> torch BatchNorm2d entry.
BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_BN = "(?P<bn>" + "|".join(BN) + ")"


def identity(a: np.ndarray) -> np.ndarray:
    return a


TRANSFORMS = {f.__name__: f for f in (identity,)}

# (source pattern, target template, transform). Conv2d weights are OIHW and Dense weights
# [out, in] in both frameworks. ``{bn_t}`` is BN[bn].
RENAMES: list[tuple[str, str, str]] = [
    (r"conv1\.weight", "backbone.conv1.weight", "identity"),
    (rf"bn1\.{_BN}", "backbone.bn1.{bn_t}", "identity"),
    (rf"{BLOCK}\.conv(?P<c>[123])\.weight", T_BLOCK + ".conv{c}.weight", "identity"),
    (rf"{BLOCK}\.bn(?P<c>[123])\.{_BN}", T_BLOCK + ".bn{c}.{bn_t}", "identity"),
    (rf"{BLOCK}\.down_sample\.0\.weight", T_BLOCK + ".downsample.0.weight", "identity"),
    (rf"{BLOCK}\.down_sample\.1\.{_BN}", T_BLOCK + ".downsample.1.{bn_t}", "identity"),
    (r"classifier\.(?P<p>weight|bias)", "head.fc.{p}", "identity"),
]

DROPS: list[tuple[str, str]] = []

# (target pattern, reason)
NEW: list[tuple[str, str]] = [
    (
        r".*\.num_batches_tracked",
        "torch-only BatchNorm counter (MindSpore keeps none); used only with momentum=None in "
        "training, never in eval; left at the target's initial 0",
    ),
]

HEAD_KEY = "classifier.weight"


def template_fields(groups: dict, arch: dict) -> dict:
    """Extra fields a target template may use, from a match's groups."""
    return {"bn_t": BN[groups["bn"]]} if groups.get("bn") else {}


def model_config(arch: dict, num_classes: int | None) -> dict:
    """mmpretrain config of the target. BatchNorm eps is 1e-5 in both frameworks."""
    depth = arch["depth"]
    channels = 512 if depth < 50 else 2048
    return {
        "type": "ImageClassifier",
        "backbone": {
            "type": "MindCVResNet",  # TF-style "same" stem max-pool, see mindcv_twins.py
            "depth": depth,
            "num_stages": 4,
            "out_indices": (3,),
            "style": "pytorch",  # stride on the 3x3 conv of Bottleneck, as mindcv does
            "norm_cfg": {"type": "BN", "eps": 1e-5, "requires_grad": True},
        },
        "neck": {"type": "GlobalAveragePooling"},
        "head": (
            {"type": "LinearClsHead", "num_classes": num_classes, "in_channels": channels}
            if num_classes else None
        ),
    }
