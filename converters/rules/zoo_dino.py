"""Conversion rules: DINO (our MindSpore ``pretrain/models/dino.py``) -> mmpretrain ``VisionTransformer``.

Source: a DINO training checkpoint (``mindspore.save_checkpoint`` of the ``DINO`` cell:
``student.backbone.*``, ``student.head.*``, ``teacher.backbone.*``, ``teacher.head.*``,
``dino_loss.center``), or a plain ViT saved on its own (``build_dino(arch, num_classes)``:
``cls_token``, ``blocks.*``, ..., and ``head.*`` when it has a classifier).

What is converted is the TEACHER backbone: DINO evaluates the EMA teacher (k-NN and linear
protocols; Caron et al. 2021 find it better than the student throughout training). The student, both projection heads and the loss's centre are
dropped with reasons.

Target: mmpretrain ``ImageClassifier`` with backbone ``VisionTransformer`` (class token out after
the final norm ``ln1``), no neck, ``LinearClsHead`` or no head. mmpretrain 1.2.0's module matches
DINO's numerics by configuration alone, checked against its source:

* pre-norm blocks ``x + attn(ln1(x))``, ``x + ffn(ln2(x))``; no layer scale
  (``layer_scale_init_value=0`` gives ``nn.Identity``), no extra pre-norm (``pre_norm=False``);
* fused qkv ``Linear(C, 3C)`` with bias, rows (q, k, v; heads inside each) as DINO's;
* LayerNorm eps 1e-6 everywhere (blocks and final norm share ``norm_cfg``);
* exact erf GELU (``act_cfg=dict(type='GELU')`` builds ``torch.nn.GELU()``, approximate='none');
* patch embedding: ``Conv2d(k=16, s=16)`` with bias, tokens row-major, class token first;
* position embedding of the pretraining grid, resized for other inputs with
  ``F.interpolate(size=grid, mode='bicubic', align_corners=False)``: what our MindSpore ViT
  does with its default ``interpolate_offset=0``. facebookresearch/dino passes
  ``scale_factor=(g + 0.1) / g0`` instead (``interpolate_offset=0.1`` in our model), which
  samples the table at slightly different points; no mmpretrain option reproduces that, so
  such a model matches the target only at its pretraining size (see pretrain/models/vit.py).

One difference is outside the numerics of a valid input: mmcv's ``PatchEmbed`` pads inputs whose
side is not a multiple of 16 (bottom/right, ``padding='corner'``); DINO's convolution drops the
remainder. Feed multiples of the patch size.

Rules are data, read by ``converters/mindcv.py``; see ``mindcv_resnet.py`` for the table format.
"""
from __future__ import annotations

import numpy as np

from converters.rules.mindcv_vit import LN, vit_classifier_config
from converters.rules.mindcv_vit import template_fields  # noqa: F401  part of the rules interface: same LN renames

FAMILY = "dino"

# The ViTs DINO published (facebookresearch/dino hubconf: dino_vits16, dino_vits8, dino_vitb16,
# dino_vitb8), all pretrained at 224 px with mlp ratio 4, qkv bias and a class token; plus
# ``dino_vit_demo``, OURS (not a published model): a tiny ViT for tests and CPU demos.
# pretrain/models/dino.py builds from this table; it is the only copy.
_VARIANTS = {  # name: (img_size, patch_size, embed_dim, depth, num_heads)
    "dino_vits16": (224, 16, 384, 12, 6),
    "dino_vits8": (224, 8, 384, 12, 6),
    "dino_vitb16": (224, 16, 768, 12, 12),
    "dino_vitb8": (224, 8, 768, 12, 12),
    "dino_vit_demo": (64, 16, 64, 4, 4),  # ours
}
ARCHS: dict[str, dict] = {
    name: {"img_size": img, "patch_size": patch, "embed_dim": dim, "depth": depth, "num_heads": heads,
           "mlp_ratio": 4.0}
    for name, (img, patch, dim, depth, heads) in _VARIANTS.items()
}

LN_EPS = 1e-6  # every LayerNorm of DINO's ViT (partial(nn.LayerNorm, eps=1e-6))

# The backbone's own names, optionally under the teacher's prefix (a DINO training checkpoint)
# or under none (a ViT saved on its own). A file holding both spellings fails: two sources
# would fill one target.
PRE = r"(?:teacher\.backbone\.)?"
BLOCK = PRE + r"blocks\.(?P<i>\d+)"  # nn.CellList built in one go: names are not mangled
T_BLOCK = "backbone.layers.{i}"
_LN = r"(?P<ln>gamma|beta)"
_P = r"(?P<p>weight|bias)"


def identity(a: np.ndarray) -> np.ndarray:
    return a


TRANSFORMS = {f.__name__: f for f in (identity,)}

# (source pattern, target template, transform). Conv2d weights are OIHW and Dense weights
# [out, in] in both frameworks; the position embedding is [1, 1 + N, C], class token first.
RENAMES: list[tuple[str, str, str]] = [
    (PRE + r"cls_token", "backbone.cls_token", "identity"),
    (PRE + r"pos_embed", "backbone.pos_embed", "identity"),
    (PRE + rf"patch_embed\.proj\.{_P}", "backbone.patch_embed.projection.{p}", "identity"),
    (rf"{BLOCK}\.norm(?P<n>[12])\.{_LN}", T_BLOCK + ".ln{n}.{ln_t}", "identity"),
    (rf"{BLOCK}\.attn\.(?P<l>qkv|proj)\.{_P}", T_BLOCK + ".attn.{l}.{p}", "identity"),
    (rf"{BLOCK}\.mlp\.fc1\.{_P}", T_BLOCK + ".ffn.layers.0.0.{p}", "identity"),
    (rf"{BLOCK}\.mlp\.fc2\.{_P}", T_BLOCK + ".ffn.layers.1.{p}", "identity"),
    (PRE + rf"norm\.{_LN}", "backbone.ln1.{ln_t}", "identity"),
    (rf"head\.{_P}", "head.fc.{p}", "identity"),  # a plain ViT's classifier (linear probe / fine-tune)
]

DROPS: list[tuple[str, str]] = [
    (r"student\..+", "DINO student network: the EMA teacher is the model DINO evaluates (k-NN and linear "
                     "protocols) and the one converted"),
    (r"teacher\.head\..+", "DINO projection head (3-layer MLP, L2 bottleneck, weight-normalised prototypes): "
                           "a pretext head, discarded for evaluation as in the paper"),
    (r"dino_loss\.center", "centre of the DINO loss (running mean of teacher outputs): training state"),
]

NEW: list[tuple[str, str]] = []

HEAD_KEY = "head.weight"


def model_config(arch: dict, num_classes: int | None) -> dict:
    """mmpretrain config of the target: DINO's ViT numerics spelled out (see the module doc)."""
    return vit_classifier_config(
        arch, num_classes, LN_EPS,
        {"type": "GELU"},  # torch.nn.GELU(): exact erf form
        interpolate_mode="bicubic", layer_scale_init_value=0.0, pre_norm=False)
