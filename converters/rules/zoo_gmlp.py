"""Conversion rules: our MindSpore gMLP (``pretrain/models/gmlp.py``) -> mmpretrain ``ImageClassifier``.

gMLP is Liu et al. 2021, "Pay Attention to MLPs". mmpretrain has no gMLP, so the target backbone
is our twin ``GMLP`` (``benchmarks/models/gmlp.py``), whose state-dict keys mirror the MindSpore
names; the neck ``GlobalAveragePooling`` averages the twin's final token map (the mean over tokens
of the MindSpore model) and ``LinearClsHead`` takes ``head``.

This module is also the one table of the architecture: ``ARCHS`` and the numerics constants are
imported by the MindSpore model, so the model, its twin's config and these rules cannot drift.

Numerics (the paper gives neither; the twin is configured to match exactly):

* GELU: exact, erf form (``mindspore.nn.GELU(approximate=False)``; torch's default ``nn.GELU``).
  The paper's TensorFlow code base uses ``tf.nn.gelu``, whose default is the erf form.
* LayerNorm eps 1e-6 everywhere (the common gMLP reimplementations' value; MindSpore's default
  would be 1e-7, torch's 1e-5, so both sides set it explicitly).

Rules are data, read by ``converters/mindcv.py``; see ``mindcv_resnet.py`` for the table format.
"""
from __future__ import annotations

import numpy as np

FAMILY = "gmlp"
IMPORTS = ("benchmarks.models.gmlp",)  # registers the twin GMLP in mmpretrain

LN_EPS = 1e-6
GELU_APPROXIMATE = False  # exact erf GELU on both sides
DEFAULT_MLP_RATIO = 6  # d_ffn = mlp_ratio * dim for every variant of the paper

# The paper's Table 1 (ImageNet, 224 px, patch 16 -> 196 tokens). The spatial projection is a
# [tokens, tokens] matrix, so img_size is part of the architecture: another input size is another
# model. ``gmlp_tiny_demo`` is ours, not the paper's: a CPU-sized variant for tests and the demo
# recipe on the generated 64 px scene images (8 px patches -> 64 tokens).
ARCHS: dict[str, dict] = {
    "gmlp_ti": {"img_size": 224, "patch_size": 16, "embed_dim": 128, "depth": 30, "mlp_ratio": 6},
    "gmlp_s": {"img_size": 224, "patch_size": 16, "embed_dim": 256, "depth": 30, "mlp_ratio": 6},
    "gmlp_b": {"img_size": 224, "patch_size": 16, "embed_dim": 512, "depth": 30, "mlp_ratio": 6},
    "gmlp_tiny_demo": {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 4, "mlp_ratio": 6},
}

BLOCK = r"blocks\.(?P<i>\d+)"  # nn.CellList built in one go: names are not mangled
T_BLOCK = "backbone.blocks.{i}"
LN = {"gamma": "weight", "beta": "bias"}
_LN = r"(?P<ln>gamma|beta)"


def identity(a: np.ndarray) -> np.ndarray:
    return a


TRANSFORMS = {f.__name__: f for f in (identity,)}

# (source pattern, target template, transform). The twin keeps the MindSpore cell names, and
# Conv2d (OIHW) and Dense ([out, in]) weights have the same layout in both frameworks; the
# spatial projection ``sgu.proj`` is a Dense over the token axis in both, [tokens_out, tokens_in].
RENAMES: list[tuple[str, str, str]] = [
    (r"patch_embed\.proj\.(?P<p>weight|bias)", "backbone.patch_embed.proj.{p}", "identity"),
    (rf"{BLOCK}\.(?P<n>norm|sgu\.norm)\.{_LN}", T_BLOCK + ".{n}.{ln_t}", "identity"),
    (rf"{BLOCK}\.(?P<l>proj_in|sgu\.proj|proj_out)\.(?P<p>weight|bias)", T_BLOCK + ".{l}.{p}", "identity"),
    (rf"norm\.{_LN}", "backbone.norm.{ln_t}", "identity"),
    (r"head\.(?P<p>weight|bias)", "head.fc.{p}", "identity"),
]

DROPS: list[tuple[str, str]] = []

NEW: list[tuple[str, str]] = []  # the twin has no torch-only buffers

HEAD_KEY = "head.weight"


def template_fields(groups: dict, arch: dict) -> dict:
    return {"ln_t": LN[groups["ln"]]} if groups.get("ln") else {}


def check_arch(arch: dict) -> None:
    """Raise ValueError when an architecture dict cannot build a gMLP."""
    side, patch = arch["img_size"], arch["patch_size"]
    if side % patch:
        raise ValueError(f"img_size {side} is not a multiple of patch_size {patch}")
    if (arch["embed_dim"] * arch.get("mlp_ratio", DEFAULT_MLP_RATIO)) % 2:
        raise ValueError("embed_dim * mlp_ratio must be even: the gating unit splits it in halves")


def model_config(arch: dict, num_classes: int | None) -> dict:
    """mmpretrain config of the target: the twin's token map, average-pooled, then a linear head."""
    check_arch(arch)
    dim = arch["embed_dim"]
    return {
        "type": "ImageClassifier",
        "backbone": {
            "type": "GMLP",
            "img_size": arch["img_size"],
            "patch_size": arch["patch_size"],
            "in_channels": arch.get("in_channels", 3),
            "embed_dims": dim,
            "num_layers": arch["depth"],
            "mlp_ratio": arch.get("mlp_ratio", DEFAULT_MLP_RATIO),
            "norm_eps": LN_EPS,
            "act_cfg": {"type": "GELU", "approximate": "tanh" if GELU_APPROXIMATE else "none"},
            "out_indices": (arch["depth"] - 1,),
            "final_norm": True,
            "out_type": "featmap",
        },
        "neck": {"type": "GlobalAveragePooling"},  # mean over the h x w tokens = MindSpore's mean
        "head": (
            {"type": "LinearClsHead", "num_classes": num_classes, "in_channels": dim}
            if num_classes else None
        ),
    }
