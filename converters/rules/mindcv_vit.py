"""Conversion rules: mindcv ``VisionTransformer`` (vit_b_16_224 ... vit_l_32_224) -> mmpretrain.

Target: mmpretrain ``ImageClassifier`` with backbone ``VisionTransformer`` (class token out,
final norm ``ln1``) and ``LinearClsHead``. mmpretrain's module matches mindcv's numerics once the
config sets LayerNorm eps 1e-7 (MindSpore's default, used by every mindcv ViT norm) and the tanh
GELU (``mindspore.nn.GELU()`` defaults to ``approximate=True``).

Rules are data, read by ``converters/mindcv.py``; see ``mindcv_resnet.py`` for the table format.
"""
from __future__ import annotations

import numpy as np

FAMILY = "vit"

# mindcv's factory functions (mindcv/models/vit.py): all use mlp_ratio 4, qkv_bias, a class token,
# global_pool="token" and a final norm.
ARCHS: dict[str, dict] = {
    "vit_b_16_224": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_b_16_384": {"img_size": 384, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_l_16_224": {"img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16},
    "vit_l_16_384": {"img_size": 384, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16},
    "vit_b_32_224": {"img_size": 224, "patch_size": 32, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_b_32_384": {"img_size": 384, "patch_size": 32, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_l_32_224": {"img_size": 224, "patch_size": 32, "embed_dim": 1024, "depth": 24, "num_heads": 16},
}

MINDSPORE_LN_EPS = 1e-7  # mindspore.nn.LayerNorm default; mindcv's ViT never overrides it

BLOCK = r"blocks\.(?P<i>\d+)"  # nn.CellList built in one go: names are not mangled
T_BLOCK = "backbone.layers.{i}"
LN = {"gamma": "weight", "beta": "bias"}
_LN = r"(?P<ln>gamma|beta)"


def identity(a: np.ndarray) -> np.ndarray:
    return a


TRANSFORMS = {f.__name__: f for f in (identity,)}

# (source pattern, target template, transform). The fused qkv Dense [3C, C] has the same row
# order (q, k, v; heads inside each) as mmpretrain's MultiheadAttention.qkv.
RENAMES: list[tuple[str, str, str]] = [
    (r"cls_token", "backbone.cls_token", "identity"),
    (r"pos_embed", "backbone.pos_embed", "identity"),  # [1, 1 + N, C], class token first
    (r"patch_embed\.proj\.(?P<p>weight|bias)", "backbone.patch_embed.projection.{p}", "identity"),
    (rf"{BLOCK}\.norm(?P<n>[12])\.{_LN}", T_BLOCK + ".ln{n}.{ln_t}", "identity"),
    (rf"{BLOCK}\.attn\.(?P<l>qkv|proj)\.(?P<p>weight|bias)", T_BLOCK + ".attn.{l}.{p}", "identity"),
    (rf"{BLOCK}\.mlp\.fc1\.(?P<p>weight|bias)", T_BLOCK + ".ffn.layers.0.0.{p}", "identity"),
    (rf"{BLOCK}\.mlp\.fc2\.(?P<p>weight|bias)", T_BLOCK + ".ffn.layers.1.{p}", "identity"),
    (rf"norm\.{_LN}", "backbone.ln1.{ln_t}", "identity"),
    (r"head\.(?P<p>weight|bias)", "head.fc.{p}", "identity"),
]

DROPS: list[tuple[str, str]] = []

NEW: list[tuple[str, str]] = []

HEAD_KEY = "head.weight"


def template_fields(groups: dict, arch: dict) -> dict:
    return {"ln_t": LN[groups["ln"]]} if groups.get("ln") else {}


def vit_classifier_config(arch: dict, num_classes: int | None, ln_eps: float, act_cfg: dict,
                          **backbone: object) -> dict:
    """mmpretrain ``ImageClassifier`` around a ``VisionTransformer`` with a class-token head; the
    numerics that differ between sources (LayerNorm eps, GELU form) and any other backbone keys
    are the caller's (mindcv here, DINO in zoo_dino.py)."""
    dim = arch["embed_dim"]
    return {
        "type": "ImageClassifier",
        "backbone": {
            "type": "VisionTransformer",
            "arch": {
                "embed_dims": dim,
                "num_layers": arch["depth"],
                "num_heads": arch["num_heads"],
                "feedforward_channels": int(dim * arch.get("mlp_ratio", 4.0)),
            },
            "img_size": arch["img_size"],
            "patch_size": arch["patch_size"],
            "qkv_bias": True,
            "norm_cfg": {"type": "LN", "eps": ln_eps},
            "layer_cfgs": {"act_cfg": act_cfg},
            "final_norm": True,
            "out_type": "cls_token",
            "with_cls_token": True,
            **backbone,
        },
        "neck": None,
        "head": (
            {"type": "LinearClsHead", "num_classes": num_classes, "in_channels": dim}
            if num_classes else None
        ),
    }


def model_config(arch: dict, num_classes: int | None) -> dict:
    return vit_classifier_config(arch, num_classes, MINDSPORE_LN_EPS, {"type": "GELU", "approximate": "tanh"})
