"""Conversion rules: mindcv ``SwinTransformer`` (swin_tiny) -> mmpretrain ``SwinTransformer``.

Target: mmpretrain ``ImageClassifier`` with backbone ``SwinTransformer`` (last stage out, norm
``norm{last}``), ``GlobalAveragePooling`` and ``LinearClsHead``. mmpretrain's module matches once
the config sets the tanh GELU and LayerNorm eps 1e-7 in the patch-merging norms (mindcv builds
those with MindSpore's default; its other norms pass epsilon=1e-5, torch's default).

Layout differences handled here:

* Names: MindSpore 2.10's ``CellList.append`` mangles the stage names: stage 0 is saved as
  ``0.<x>`` and stage s > 0 as ``0.blocks.<s>.<x>`` (instead of ``layers.<s>.<x>``).
  ``CANONICAL`` rewrites both (and accepts unmangled ``layers.<s>.``) before the renames.
* mindcv keeps separate q, k, v Dense layers; mmpretrain fuses them into ``w_msa.qkv``: rules
  with ``parts`` concatenate their sources along axis 0 in the order given.
* Patch merging: mindcv concatenates the 2x2 neighbours as (w_off, h_off, C), i.e. channel
  ``w*2C + h*C + c``; mmpretrain's ``nn.Unfold`` gives (C, h_off, w_off), channel ``c*4 + h*2 + w``.
  The merge norm's gamma/beta and the reduction weight's input channels are permuted.
* Derived tensors mindcv saves (one-hot relative-position index, shifted-window masks) are
  dropped, after checking that mmpretrain recomputes exactly the same thing.

Rules are data, read by ``converters/mindcv.py``; see ``mindcv_resnet.py`` for the table format.
"""
from __future__ import annotations

import numpy as np

FAMILY = "swin"

# mindcv's factory functions (mindcv/models/swintransformer.py).
ARCHS: dict[str, dict] = {
    "swin_tiny": {"img_size": 224, "patch_size": 4, "embed_dim": 96, "depths": [2, 2, 6, 2],
                  "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0},
}

MINDSPORE_LN_EPS = 1e-7  # PatchMerging's norm_layer([4C]) takes MindSpore's default
MINDCV_LN_EPS = 1e-5  # every other mindcv Swin norm passes epsilon=1e-5

# (pattern, replacement) applied in order with re.sub, at most once each, to undo CellList
# name mangling. The two-level form must come first: "0.blocks.1.norm1.gamma" is stage 0,
# block 1, but "0.blocks.1.blocks.0.norm1.gamma" is stage 1, block 0.
CANONICAL: list[tuple[str, str]] = [
    (r"^0\.blocks\.(\d+)\.(blocks\.\d+\.|downsample\.)", r"layers.\1.\2"),
    (r"^0\.(blocks\.\d+\.|downsample\.)", r"layers.0.\1"),
]

STAGE = r"layers\.(?P<s>\d+)"
BLOCK = STAGE + r"\.blocks\.(?P<b>\d+)"
T_STAGE = "backbone.stages.{s}"
T_BLOCK = T_STAGE + ".blocks.{b}"
LN = {"gamma": "weight", "beta": "bias"}
_LN = r"(?P<ln>gamma|beta)"


def identity(a: np.ndarray) -> np.ndarray:
    return a


def merge_to_unfold_vector(a: np.ndarray) -> np.ndarray:
    """Merge-norm gamma/beta [4C]: mindcv (w, h, C) channel order -> Unfold's (C, h, w)."""
    c = a.shape[0] // 4
    return np.ascontiguousarray(a.reshape(2, 2, c).transpose(2, 1, 0).reshape(-1))


def merge_to_unfold_weight(a: np.ndarray) -> np.ndarray:
    """Reduction weight [2C, 4C]: permute the input channels as ``merge_to_unfold_vector``."""
    out, c = a.shape[0], a.shape[1] // 4
    return np.ascontiguousarray(a.reshape(out, 2, 2, c).transpose(0, 3, 2, 1).reshape(out, -1))


TRANSFORMS = {f.__name__: f for f in (identity, merge_to_unfold_vector, merge_to_unfold_weight)}

QKV = ("q", "k", "v")

# (source pattern, target template, transform[, parts]). With ``parts`` the pattern has a
# ``part`` group; every part must be present and they are concatenated along axis 0 in order.
RENAMES: list[tuple] = [
    (r"patch_embed\.proj\.(?P<p>weight|bias)", "backbone.patch_embed.projection.{p}", "identity"),
    (rf"patch_embed\.norm\.{_LN}", "backbone.patch_embed.norm.{ln_t}", "identity"),
    (rf"{BLOCK}\.norm(?P<n>[12])\.{_LN}", T_BLOCK + ".norm{n}.{ln_t}", "identity"),
    (
        rf"{BLOCK}\.attn\.relative_bias\.relative_position_bias_table",
        T_BLOCK + ".attn.w_msa.relative_position_bias_table",
        "identity",
    ),
    (rf"{BLOCK}\.attn\.(?P<part>q|k|v)\.(?P<p>weight|bias)", T_BLOCK + ".attn.w_msa.qkv.{p}", "identity", QKV),
    (rf"{BLOCK}\.attn\.proj\.(?P<p>weight|bias)", T_BLOCK + ".attn.w_msa.proj.{p}", "identity"),
    (rf"{BLOCK}\.mlp\.fc1\.(?P<p>weight|bias)", T_BLOCK + ".ffn.layers.0.0.{p}", "identity"),
    (rf"{BLOCK}\.mlp\.fc2\.(?P<p>weight|bias)", T_BLOCK + ".ffn.layers.1.{p}", "identity"),
    (rf"{STAGE}\.downsample\.norm\.{_LN}", T_STAGE + ".downsample.norm.{ln_t}", "merge_to_unfold_vector"),
    (rf"{STAGE}\.downsample\.reduction\.weight", T_STAGE + ".downsample.reduction.weight", "merge_to_unfold_weight"),
    (rf"norm\.{_LN}", "backbone.norm{last}.{ln_t}", "identity"),
    (r"classifier\.(?P<p>weight|bias)", "head.fc.{p}", "identity"),
]

# (source pattern, reason[, verifier]). A verifier checks the dropped tensor against what the
# target recomputes, so dropping it cannot hide a difference.
DROPS: list[tuple] = [
    (
        rf"{BLOCK}\.attn\.relative_bias\.index",
        "derived: one-hot of the relative-position index (mindcv gathers the bias table by a "
        "matmul with it); mmpretrain indexes the table with its relative_position_index buffer, "
        "checked equal",
        "onehot_equals_relative_position_index",
    ),
    (
        rf"{BLOCK}\.attn_mask",
        "derived: shifted-window attention mask (0 / -100); mmpretrain recomputes it in "
        "ShiftWindowMSA.get_attn_mask, checked equal",
        "attn_mask_equals_recomputed",
    ),
]

NEW: list[tuple[str, str]] = [
    (
        r"backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.relative_position_index",
        "derived buffer computed by the target's constructor; checked against mindcv's one-hot index",
    ),
]

HEAD_KEY = "classifier.weight"


def template_fields(groups: dict, arch: dict) -> dict:
    fields = {"last": len(arch["depths"]) - 1}
    if groups.get("ln"):
        fields["ln_t"] = LN[groups["ln"]]
    return fields


# ---- verifiers: (source array, match groups, arch, target state dict) -> error text or None ----
def onehot_equals_relative_position_index(a, groups, arch, target_state) -> str | None:
    key = T_BLOCK.format(**groups) + ".attn.w_msa.relative_position_index"
    if key not in target_state:
        return f"no {key} in the target to check against"
    index = target_state[key].reshape(-1).numpy()
    if a.ndim != 2 or a.shape[0] != index.size:
        return f"shape {list(a.shape)} is not [{index.size}, table size]"
    if not (np.all((a == 0) | (a == 1)) and np.all(a.sum(axis=1) == 1)):
        return "is not one-hot"
    if not np.array_equal(a.argmax(axis=1), index):
        return f"selects other table rows than {key}"
    return None


def attn_mask_equals_recomputed(a, groups, arch, target_state) -> str | None:
    from mmpretrain.models.utils.attention import ShiftWindowMSA

    stage = int(groups["s"])
    side = arch["img_size"] // arch["patch_size"] // 2 ** stage
    window = arch["window_size"]
    expected = ShiftWindowMSA.get_attn_mask((side, side), window, window // 2).numpy()
    got = a.reshape(a.shape[1], a.shape[3], a.shape[4]) if a.ndim == 5 else a
    if got.shape != expected.shape or not np.array_equal(got, expected):
        return f"differs from mmpretrain's mask for a {side}x{side} map, window {window}, shift {window // 2}"
    return None


VERIFIERS = {f.__name__: f for f in (onehot_equals_relative_position_index, attn_mask_equals_recomputed)}


def model_config(arch: dict, num_classes: int | None) -> dict:
    dim = arch["embed_dim"]
    depths = list(arch["depths"])
    if arch.get("mlp_ratio", 4.0) != 4.0:
        raise ValueError("only mlp_ratio 4 is supported")
    for stage in range(len(depths)):
        side = arch["img_size"] // arch["patch_size"] // 2 ** stage
        if side < arch["window_size"]:
            raise ValueError(f"stage {stage} map ({side}) is smaller than the window "
                             f"({arch['window_size']}): mindcv shrinks the window there, mmpretrain cannot")
    ln = {"type": "LN", "eps": MINDCV_LN_EPS}
    return {
        "type": "ImageClassifier",
        "backbone": {
            "type": "SwinTransformer",
            "arch": {"embed_dims": dim, "depths": depths, "num_heads": list(arch["num_heads"])},
            "img_size": arch["img_size"],
            "patch_size": arch["patch_size"],
            "window_size": arch["window_size"],
            "out_indices": (len(depths) - 1,),
            "norm_cfg": ln,
            "patch_cfg": {"norm_cfg": ln},
            "stage_cfgs": {
                "downsample_cfg": {"norm_cfg": {"type": "LN", "eps": MINDSPORE_LN_EPS}},
                "block_cfgs": {
                    "norm_cfg": ln,
                    "ffn_cfgs": {"act_cfg": {"type": "GELU", "approximate": "tanh"}},
                },
            },
            # mindcv shrinks the window (and its bias table) on maps smaller than the window and
            # does not shift on maps equal to it; mmpretrain does the latter only (pad_small_map=False).
            "pad_small_map": False,
        },
        "neck": {"type": "GlobalAveragePooling"},
        "head": (
            {"type": "LinearClsHead", "num_classes": num_classes, "in_channels": dim * 2 ** (len(depths) - 1)}
            if num_classes else None
        ),
    }
