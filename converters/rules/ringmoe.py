"""Conversion rules: the authors' MindSpore RingMoE layout -> the PyTorch twin (all modalities).

Rules are data: a rename table of (source pattern, target template, transform) and a table of
(source pattern, drop reason). Patterns are full-match regular expressions; ``{mod}`` in a
target is the modality name of the ``m`` group. Every source key must match exactly one
mapping or drop rule; the converter fails and names the keys otherwise.
"""
from __future__ import annotations

import re

import numpy as np

BLOCK = r"encoder\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)"
T_BLOCK = "layers.{s}.blocks.{b}"


# ---- transforms: numpy in, numpy out, named so that the report can say what was done ------
def identity(a: np.ndarray) -> np.ndarray:
    return a


def transpose(a: np.ndarray) -> np.ndarray:
    """[in, out] (MindSpore ``_Linear`` with transpose_b=False) -> [out, in] (torch)."""
    return np.ascontiguousarray(a.T)


def experts_bias(a: np.ndarray) -> np.ndarray:
    """Stacked expert bias [1, E, 1, out] -> [E, out]."""
    return np.ascontiguousarray(a.reshape(a.shape[1], a.shape[3]))


TRANSFORMS = {f.__name__: f for f in (identity, transpose, experts_bias)}


def _experts(src: str, dst: str) -> list[tuple[str, str, str]]:
    # Stacked expert weights stay [E, in, out]: the twin's StackedLinear uses MindSpore's layout.
    return [
        (rf"{BLOCK}\.mlp\.{src}\.mapping\.weight", f"{T_BLOCK}.ffn.{dst}.fc1.weight", "identity"),
        (rf"{BLOCK}\.mlp\.{src}\.mapping\.bias", f"{T_BLOCK}.ffn.{dst}.fc1.bias", "experts_bias"),
        (rf"{BLOCK}\.mlp\.{src}\.projection\.weight", f"{T_BLOCK}.ffn.{dst}.fc2.weight", "identity"),
        (rf"{BLOCK}\.mlp\.{src}\.projection\.bias", f"{T_BLOCK}.ffn.{dst}.fc2.bias", "experts_bias"),
    ]


# (source pattern, target template, transform name)
RENAMES: list[tuple[str, str, str]] = [
    (r"encoder\.patch_embed(?P<m>\d+)\.projection\.(?P<p>weight|bias)", "patch_embed.{mod}.proj.{p}", "identity"),
    (r"encoder\.patch_embed(?P<m>\d+)\.norm\.gamma", "patch_embed.{mod}.norm.weight", "identity"),
    (r"encoder\.patch_embed(?P<m>\d+)\.norm\.beta", "patch_embed.{mod}.norm.bias", "identity"),
    (rf"{BLOCK}\.norm(?P<n>[12])\.gamma", T_BLOCK + ".norm{n}.weight", "identity"),
    (rf"{BLOCK}\.norm(?P<n>[12])\.beta", T_BLOCK + ".norm{n}.bias", "identity"),
    (rf"{BLOCK}\.attn\.(?P<l>q|k|v|proj)\.(?P<p>weight|bias)", T_BLOCK + ".attn.{l}.{p}", "identity"),
    (
        rf"{BLOCK}\.attn\.relative_position_bias\.relative_position_bias_table",
        T_BLOCK + ".attn.relative_position_bias_table",
        "identity",
    ),
    *_experts(r"special_ffn\.(?P<m>\d+)", "modal_experts.{mod}"),
    (rf"{BLOCK}\.mlp\.special_router\.(?P<m>\d+)\.dense\.weight", T_BLOCK + ".ffn.modal_routers.{mod}.weight", "identity"),
    *_experts("cross_ffn", "cross_experts"),
    (rf"{BLOCK}\.mlp\.cross_router\.dense\.weight", T_BLOCK + ".ffn.cross_router.weight", "identity"),
    (rf"{BLOCK}\.mlp\.public_ffn\.mapping\.weight", T_BLOCK + ".ffn.shared.fc1.weight", "transpose"),
    (rf"{BLOCK}\.mlp\.public_ffn\.mapping\.bias", T_BLOCK + ".ffn.shared.fc1.bias", "identity"),
    (rf"{BLOCK}\.mlp\.public_ffn\.projection\.weight", T_BLOCK + ".ffn.shared.fc2.weight", "transpose"),
    (rf"{BLOCK}\.mlp\.public_ffn\.projection\.bias", T_BLOCK + ".ffn.shared.fc2.bias", "identity"),
    (r"encoder\.layers\.(?P<s>\d+)\.downsample\.reduction\.weight", "layers.{s}.downsample.reduction.weight", "identity"),
    (r"encoder\.layers\.(?P<s>\d+)\.downsample\.norm\.gamma", "layers.{s}.downsample.norm.weight", "identity"),
    (r"encoder\.layers\.(?P<s>\d+)\.downsample\.norm\.beta", "layers.{s}.downsample.norm.bias", "identity"),
    (r"encoder\.norm\.gamma", "norm.weight", "identity"),
    (r"encoder\.norm\.beta", "norm.bias", "identity"),
]

OPTIMIZER_STATE = "optimizer state or training counter (not model weights)"

# (source pattern, reason)
DROPS: list[tuple[str, str]] = [
    (r"encoder\.mask_token", "SimMIM mask token: pretraining only"),
    (r"decoder_\d+\.(weight|bias)", "SimMIM reconstruction head: pretraining only"),
    (
        r"encoder\.patch_embed\.(projection|norm)\.\w+",
        "generic 3-channel patch embedding: saved by the authors' code, never used in its forward",
    ),
    (r".*\.relative_position_index", "derived buffer: the twin recomputes it"),
    (r".*\.attn_mask", "derived buffer: the twin recomputes shifted-window masks"),
    (r"(adam_m|adam_v|moments|moment1|moment2|accum|mean_grad|mean_square)\..+", OPTIMIZER_STATE),
    (
        r"global_step|learning_rate|beta1_power|beta2_power|epoch_num|step_num|scale_sense"
        r"|current_iterator_step|last_overflow_iterator_step|loss_scale|weight_decay|momentum",
        OPTIMIZER_STATE,
    ),
    (r"ringmoe_meta", "metadata written by pretrain/train.py: read into the converted checkpoint's meta"),
]

_RENAMES = [(re.compile(p), t, f) for p, t, f in RENAMES]
_DROPS = [(re.compile(p), r) for p, r in DROPS]


def map_key(key: str, modality_names: list[str]) -> tuple[str | None, str]:
    """Return (target key, transform name) for a mapped key, or (None, drop reason).

    Raises KeyError if no rule explains the key, or if it names an unknown modality.
    """
    for pattern, template, transform in _RENAMES:
        match = pattern.fullmatch(key)
        if match:
            groups = match.groupdict()
            if "m" in groups:
                m = int(groups["m"])
                if m >= len(modality_names):
                    raise KeyError(f"{key}: modality index {m} but only {len(modality_names)} modalities")
                groups["mod"] = modality_names[m]
            return template.format(**groups), transform
    for pattern, reason in _DROPS:
        if pattern.fullmatch(key):
            return None, reason
    raise KeyError(key)


def infer_arch(shapes: dict[str, tuple[int, ...]]) -> dict:
    """Read the architecture off the tensor shapes of a RingMoE checkpoint.

    Returns embed_dim, depths, num_heads, window sizes per stage, patch size, mlp ratio,
    number of experts and the input channels of each modality embedding.
    """
    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ValueError(f"not a RingMoE checkpoint: {key} is missing")
        return shapes[key]

    embed_dim, _, patch, _ = need("encoder.patch_embed0.projection.weight")
    channels = []
    while f"encoder.patch_embed{len(channels)}.projection.weight" in shapes:
        channels.append(shapes[f"encoder.patch_embed{len(channels)}.projection.weight"][1])
    depths, heads, windows = [], [], []
    block = re.compile(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias\.relative_position_bias_table")
    found: dict[int, dict[int, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        match = block.fullmatch(key)
        if match:
            found.setdefault(int(match[1]), {})[int(match[2])] = shape
    for s in range(len(found)):
        if s not in found:
            raise ValueError(f"not a RingMoE checkpoint: stage {s} has no blocks")
        depths.append(max(found[s]) + 1)
        table = found[s][0]
        heads.append(table[1])
        windows.append((int(round(table[0] ** 0.5)) + 1) // 2)
    hidden = need("encoder.layers.0.blocks.0.mlp.public_ffn.mapping.weight")[1]
    experts = need("encoder.layers.0.blocks.0.mlp.cross_router.dense.weight")[0]
    return {
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": windows,
        "patch_size": patch,
        "mlp_ratio": hidden // embed_dim,
        "num_experts": experts,
        "channels": channels,
    }
