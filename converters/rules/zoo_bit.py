"""Conversion rules: our MindSpore BiT ``ResNetV2`` (``pretrain/models/bit.py``) -> mmpretrain
``ImageClassifier`` with the twin backbone ``ResNetV2BiT`` (``benchmarks/models/resnetv2.py``).

BigTransfer (Kolesnikov et al. 2020) is a pre-activation ResNet-v2 with GroupNorm and weight
standardisation. mmpretrain has no such backbone, so the target is our twin; the neck is
``GlobalAveragePooling`` and the head ``LinearClsHead`` (zero-initialised, as the paper does).

This module is also the one variant table of the family: the MindSpore model imports ``ARCHS``
and the numerics (``WS_EPS``, ``GN_EPS``) from here, so the three places the architecture lives
cannot drift apart. It imports nothing heavy.

Layout differences handled here (names only; every tensor keeps its layout):

* MindSpore keeps the names of BiT's released code for the body, 1-based
  (``body.block2.unit01.conv2.weight``); the twin uses 0-based ``stages.1.0.conv2.weight``.
* GroupNorm ``gamma``/``beta`` -> ``weight``/``bias``. Conv2d weights are OIHW in both
  frameworks and are stored raw (standardisation happens in the forward pass on both sides),
  Dense weights are [out, in] in both.

Rules are data, read by ``converters/mindcv.py``; see ``mindcv_resnet.py`` for the table format.
"""
from __future__ import annotations

import numpy as np

FAMILY = "bit"

# Weight standardisation: w' = (w - mean) / sqrt(var + WS_EPS) per output filter over
# (in, kh, kw), biased variance. 1e-10 is what all three of BiT's released implementations use
# (bit_pytorch, bit_tf2, bit_jax), so the published checkpoints reproduce with it; timm's 1e-8
# and others' 1e-6 differ only for near-constant filters.
WS_EPS = 1e-10
# GroupNorm epsilon: 1e-5, the released PyTorch code's (torch's and MindSpore's default).
GN_EPS = 1e-5

# The published variants (BiT-M: pretrained on ImageNet-21k; the paper's S/M/L differ only in
# data, not in architecture). ``base_width`` 64 gives stem 64*wf, stage i bottleneck width
# 64*wf*2^i and output 256*wf*2^i. ``bit_tiny`` is OURS (not in the paper): a demo/test size
# with one or two units per stage, base width 16 and 8 groups, so GroupNorm groups still hold
# several channels.
ARCHS: dict[str, dict] = {
    "bit_m_r50x1": {"layers": [3, 4, 6, 3], "width_factor": 1, "base_width": 64, "gn_groups": 32},
    "bit_m_r50x3": {"layers": [3, 4, 6, 3], "width_factor": 3, "base_width": 64, "gn_groups": 32},
    "bit_m_r101x1": {"layers": [3, 4, 23, 3], "width_factor": 1, "base_width": 64, "gn_groups": 32},
    "bit_m_r101x3": {"layers": [3, 4, 23, 3], "width_factor": 3, "base_width": 64, "gn_groups": 32},
    "bit_m_r152x2": {"layers": [3, 8, 36, 3], "width_factor": 2, "base_width": 64, "gn_groups": 32},
    "bit_m_r152x4": {"layers": [3, 8, 36, 3], "width_factor": 4, "base_width": 64, "gn_groups": 32},
    "bit_tiny": {"layers": [2, 1, 1, 2], "width_factor": 1, "base_width": 16, "gn_groups": 8},
}


def out_channels(arch: dict) -> list[int]:
    """Channels of the four stage outputs (256*wf*2^i for BiT's base width 64)."""
    return [4 * arch["base_width"] * arch["width_factor"] * 2**i for i in range(4)]


UNIT = r"body\.block(?P<s>[1-4])\.unit(?P<u>\d+)"
T_UNIT = "backbone.stages.{i}.{j}"
GN = {"gamma": "weight", "beta": "bias"}
_GN = r"(?P<gn>gamma|beta)"


def identity(a: np.ndarray) -> np.ndarray:
    return a


TRANSFORMS = {f.__name__: f for f in (identity,)}

# (source pattern, target template, transform). ``{i}``/``{j}`` are the 0-based stage and unit,
# ``{gn_t}`` is GN[gn] (see template_fields).
RENAMES: list[tuple[str, str, str]] = [
    (r"root\.conv\.weight", "backbone.stem.conv.weight", "identity"),
    (rf"{UNIT}\.gn(?P<k>[123])\.{_GN}", T_UNIT + ".norm{k}.{gn_t}", "identity"),
    (rf"{UNIT}\.conv(?P<k>[123])\.weight", T_UNIT + ".conv{k}.weight", "identity"),
    (rf"{UNIT}\.downsample\.weight", T_UNIT + ".downsample.weight", "identity"),
    (rf"norm\.{_GN}", "backbone.norm.{gn_t}", "identity"),
    (r"classifier\.(?P<p>weight|bias)", "head.fc.{p}", "identity"),
]

DROPS: list[tuple[str, str]] = []

# GroupNorm keeps no running statistics and the standardised convs no buffers: every target
# entry comes from the checkpoint.
NEW: list[tuple[str, str]] = []

HEAD_KEY = "classifier.weight"


def template_fields(groups: dict, arch: dict) -> dict:
    """0-based stage/unit indices and the torch GroupNorm name, from a match's groups."""
    fields = {}
    if "s" in groups:
        fields["i"] = int(groups["s"]) - 1
    if "u" in groups:
        fields["j"] = int(groups["u"]) - 1
    if "gn" in groups:
        fields["gn_t"] = GN[groups["gn"]]
    return fields


def model_config(arch: dict, num_classes: int | None) -> dict:
    """mmpretrain config of the target, with the MindSpore model's numerics (WS_EPS, GN_EPS)."""
    return {
        "type": "ImageClassifier",
        "backbone": {
            "type": "ResNetV2BiT",
            "layers": list(arch["layers"]),
            "width_factor": arch["width_factor"],
            "base_width": arch["base_width"],
            "gn_groups": arch["gn_groups"],
            "ws_eps": WS_EPS,
            "gn_eps": GN_EPS,
            "out_indices": (3,),  # the final GN + ReLU map: what the head pools
        },
        "neck": {"type": "GlobalAveragePooling"},
        "head": (
            {
                "type": "LinearClsHead",
                "num_classes": num_classes,
                "in_channels": out_channels(arch)[-1],
                # BiT zero-initialises the head (a new head starts at uniform predictions).
                "init_cfg": {"type": "Constant", "layer": "Linear", "val": 0.0},
            }
            if num_classes else None
        ),
    }


IMPORTS = ("benchmarks.models.resnetv2",)  # registers ResNetV2BiT before build_target builds
