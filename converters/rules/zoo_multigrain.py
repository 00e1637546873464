"""Conversion rules: our MindSpore Multigrain (``pretrain/models/multigrain.py``) -> mmpretrain.

Target: mmpretrain's own ``ImageClassifier(backbone=ResNet, neck=GeneralizedMeanPooling,
head=LinearClsHead)``; no twin is needed. The MindSpore model is a torchvision-style ResNet
(stride on the 3x3 conv, plain padding=1 stem max-pool), so its names map one to one onto
mmpretrain's ``ResNet``; GeM's learnable exponent ``pool.p`` becomes ``neck.p`` and the
classifier ``head.fc``. The margin loss's boundary beta is a training-objective parameter: when a
training run saved it beside the weights it is dropped with a reason.

Rules are data, read by ``converters/mindcv.py`` (see ``mindcv_resnet.py`` for the format).
``ARCHS`` is the one variant table: the MindSpore factory imports it.
"""
from __future__ import annotations

# The MindSpore -> torch BatchNorm table, block pattern, num_batches_tracked declaration and
# identity transform are the same as for mindcv's ResNet: one definition, in mindcv_resnet.
from converters.rules.mindcv_resnet import BN, BLOCK, NEW, T_BLOCK, identity, template_fields

_BN = "(?P<bn>" + "|".join(BN) + ")"

__all__ = ["ARCHS", "DROPS", "FAMILY", "HEAD_KEY", "NEW", "RENAMES", "TRANSFORMS", "model_config", "template_fields"]

FAMILY = "multigrain"

# Published variants (Berman et al. 2019 report ResNet-50 and ResNet-152); 18/34/101 for
# tests and smaller runs. An architecture is just the ResNet depth.
ARCHS: dict[str, dict] = {
    "multigrain_resnet18": {"depth": 18},
    "multigrain_resnet34": {"depth": 34},
    "multigrain_resnet50": {"depth": 50},
    "multigrain_resnet101": {"depth": 101},
    "multigrain_resnet152": {"depth": 152},
}

# GeM numerics, shared with the MindSpore model (mmpretrain's GeneralizedMeanPooling defaults).
GEM_P = 3.0
GEM_EPS = 1e-6
BN_EPS = 1e-5

TRANSFORMS = {f.__name__: f for f in (identity,)}

# (source pattern, target template, transform). Conv2d weights are OIHW and Dense weights
# [out, in] in both frameworks; ``{bn_t}`` is BN[bn] (gamma -> weight, moving_mean -> running_mean ...).
RENAMES: list[tuple[str, str, str]] = [
    (r"conv1\.weight", "backbone.conv1.weight", "identity"),
    (rf"bn1\.{_BN}", "backbone.bn1.{bn_t}", "identity"),
    (rf"{BLOCK}\.conv(?P<c>[123])\.weight", T_BLOCK + ".conv{c}.weight", "identity"),
    (rf"{BLOCK}\.bn(?P<c>[123])\.{_BN}", T_BLOCK + ".bn{c}.{bn_t}", "identity"),
    (rf"{BLOCK}\.downsample\.0\.weight", T_BLOCK + ".downsample.0.weight", "identity"),
    (rf"{BLOCK}\.downsample\.1\.{_BN}", T_BLOCK + ".downsample.1.{bn_t}", "identity"),
    (r"pool\.p", "neck.p", "identity"),
    (r"classifier\.(?P<p>weight|bias)", "head.fc.{p}", "identity"),
]

# (source pattern, reason). ``margin.beta`` is what MultigrainLoss names its boundary (optionally
# under a training wrapper's prefix); BatchNorm betas end in ``bnN.beta`` and never match.
DROPS: list[tuple[str, str]] = [
    (
        r"(?:.+\.)?margin\.beta",
        "the margin loss's boundary beta (Wu et al. 2017): a parameter of the training objective, "
        "not of the embedding network; no place in an ImageClassifier",
    ),
]

HEAD_KEY = "classifier.weight"

def model_config(arch: dict, num_classes: int | None) -> dict:
    """mmpretrain config of the target: eps and momentum as the MindSpore model sets them."""
    depth = arch["depth"]
    if depth not in (18, 34, 50, 101, 152):
        raise ValueError(f"ResNet depth {depth} is not one of 18, 34, 50, 101, 152")
    channels = 512 if depth < 50 else 2048
    return {
        "type": "ImageClassifier",
        "backbone": {
            "type": "ResNet",
            "depth": depth,
            "num_stages": 4,
            "out_indices": (3,),
            "style": "pytorch",  # stride on the 3x3 conv of Bottleneck, as torchvision and our model
            # torch momentum 0.1 is MindSpore's momentum 0.9 (running = 0.9 running + 0.1 batch)
            "norm_cfg": {"type": "BN", "eps": BN_EPS, "momentum": 0.1, "requires_grad": True},
        },
        # p is overwritten by the checkpoint's learnt value; eps and the clamp are the numerics.
        "neck": {"type": "GeneralizedMeanPooling", "p": GEM_P, "eps": GEM_EPS, "clamp": True, "p_trainable": True},
        "head": (
            {"type": "LinearClsHead", "num_classes": num_classes, "in_channels": channels}
            if num_classes else None
        ),
    }
