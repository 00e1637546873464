"""gMLP in MindSpore (Liu et al. 2021, "Pay Attention to MLPs"), written from the paper.

Read top to bottom: stochastic depth, the Spatial Gating Unit, the block, the model, the factory
and an exact parameter count. For an image of ``img_size`` px cut into ``patch_size`` patches
(N tokens of width ``dim``, d_ffn = mlp_ratio * dim):

* patch embedding: Conv2d(patch x patch, stride patch, with bias); tokens in row-major order;
* L blocks: ``x + proj_out(sgu(gelu(proj_in(norm(x)))))``, proj_in: dim -> d_ffn,
  proj_out: d_ffn/2 -> dim, optional stochastic depth on the residual branch (default off);
* Spatial Gating Unit: split the d_ffn channels into halves u (first) and v (second);
  v = LayerNorm(v); v = W v + b over the token axis (a Dense N -> N, W near 0 and b = 1 at init,
  as the paper prescribes, so every block starts as a plain channel MLP); out = u * v;
* final LayerNorm, mean over tokens, linear head.

The spatial projection fixes N, so ``img_size`` is part of the architecture. Numerics (exact erf
GELU, LayerNorm eps 1e-6) and the variant table ``ARCHS`` come from the conversion rules
(``converters/rules/zoo_gmlp.py``), the one place the PyTorch twin's config is made from too.

Other initialisation (the paper gives none besides the gating unit): truncated normal 0.02 for the
channel projections and the head, zero biases, MindSpore's default for the patch convolution.
The paper trains Ti/S/B with stochastic-depth survival probabilities 1.00/0.95/0.80; that is a
recipe setting (``drop_path_rate``), not part of ``ARCHS``.
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal, TruncatedNormal

from converters.rules.zoo_gmlp import ARCHS, DEFAULT_MLP_RATIO, GELU_APPROXIMATE, LN_EPS, check_arch

__all__ = ["ARCHS", "GMLP", "build_gmlp", "count_params", "resolve_arch"]

SPATIAL_INIT_STD = 1e-6  # "near-zero" spatial weights; with bias 1 the gate starts as identity


class DropPath(nn.Cell):
    """Stochastic depth: drop a sample's residual branch with probability ``prob`` in training,
    scaling kept samples by 1 / (1 - prob); the identity in eval."""

    def __init__(self, prob: float):
        super().__init__()
        self.dropout = nn.Dropout(p=prob)

    def construct(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return x * self.dropout(ops.ones((x.shape[0], 1, 1), x.dtype))


class SpatialGatingUnit(nn.Cell):
    """u * proj(norm(v)) over the token axis, with (u, v) the two channel halves of x [B, N, C]."""

    def __init__(self, channels: int, num_tokens: int):
        super().__init__()
        self.norm = nn.LayerNorm((channels // 2,), epsilon=LN_EPS)
        self.proj = nn.Dense(num_tokens, num_tokens, weight_init=Normal(SPATIAL_INIT_STD), bias_init="ones")

    def construct(self, x: Tensor) -> Tensor:
        u, v = ops.chunk(x, 2, axis=-1)
        v = self.norm(v)
        v = self.proj(v.transpose(0, 2, 1)).transpose(0, 2, 1)  # mix tokens, per channel
        return u * v


class GMLPBlock(nn.Cell):
    def __init__(self, dim: int, ffn: int, num_tokens: int, drop_path: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm((dim,), epsilon=LN_EPS)
        self.proj_in = nn.Dense(dim, ffn, weight_init=TruncatedNormal(0.02), bias_init="zeros")
        self.act = nn.GELU(approximate=GELU_APPROXIMATE)
        self.sgu = SpatialGatingUnit(ffn, num_tokens)
        self.proj_out = nn.Dense(ffn // 2, dim, weight_init=TruncatedNormal(0.02), bias_init="zeros")
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def construct(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.proj_out(self.sgu(self.act(self.proj_in(self.norm(x))))))


class PatchEmbed(nn.Cell):
    """Conv patch x patch, stride patch, with bias; [B, C, H, W] -> [B, N, dim], row-major tokens."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch, pad_mode="valid", has_bias=True)

    def construct(self, x: Tensor) -> Tensor:
        x = self.proj(x)
        return x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)


class GMLP(nn.Cell):
    """gMLP classifier. ``num_classes`` None or 0 builds no head (``construct`` gives features)."""

    def __init__(self, arch: dict, num_classes: int | None = 1000, in_channels: int = 3,
                 drop_path_rate: float = 0.0):
        super().__init__()
        check_arch(arch)
        dim, depth = arch["embed_dim"], arch["depth"]
        self.arch = dict(arch)
        self.num_tokens = (arch["img_size"] // arch["patch_size"]) ** 2
        ffn = dim * arch.get("mlp_ratio", DEFAULT_MLP_RATIO)
        self.patch_embed = PatchEmbed(in_channels, dim, arch["patch_size"])
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear, as DeiT
        self.blocks = nn.CellList([GMLPBlock(dim, ffn, self.num_tokens, r) for r in rates])
        self.norm = nn.LayerNorm((dim,), epsilon=LN_EPS)
        self.head = (nn.Dense(dim, num_classes, weight_init=TruncatedNormal(0.02), bias_init="zeros")
                     if num_classes else None)

    def forward_tokens(self, x: Tensor) -> Tensor:
        """The final-normed token map [B, N, dim] (N = (img_size / patch_size)^2, row-major)."""
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features [B, dim]: the mean over tokens of ``forward_tokens``.

        Downstream, the PyTorch twin ``GMLP`` gives the same token map as a [B, dim, h, w]
        feature map (``out_type='featmap'``), and the classifier's ``GlobalAveragePooling`` neck
        turns it into exactly these pooled features.
        """
        return self.forward_tokens(x).mean(axis=1)

    def construct(self, x: Tensor) -> Tensor:
        feats = self.forward_features(x)
        return feats if self.head is None else self.head(feats)


def resolve_arch(arch: dict | str) -> dict:
    """The architecture dict of a variant name of ``ARCHS``, or a copy of a given dict."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"unknown gMLP variant {arch!r}; choose from {sorted(ARCHS)}")
        return dict(ARCHS[arch])
    return dict(arch)


def build_gmlp(arch: dict | str, num_classes: int | None = 1000, in_channels: int = 3,
               drop_path_rate: float = 0.0) -> GMLP:
    """A gMLP from a variant name of ``ARCHS`` (gmlp_ti, gmlp_s, gmlp_b, gmlp_tiny_demo) or an
    architecture dict with img_size, patch_size, embed_dim, depth and optionally mlp_ratio."""
    return GMLP(resolve_arch(arch), num_classes, in_channels, drop_path_rate)


def count_params(arch: dict | str, num_classes: int | None = 1000, in_channels: int = 3) -> int:
    """Exact parameter count of ``build_gmlp(arch, num_classes, in_channels)``, allocating nothing."""
    arch = resolve_arch(arch)
    dim, patch = arch["embed_dim"], arch["patch_size"]
    ffn = dim * arch.get("mlp_ratio", DEFAULT_MLP_RATIO)
    tokens = (arch["img_size"] // patch) ** 2
    embed = in_channels * patch * patch * dim + dim
    block = (2 * dim  # norm
             + dim * ffn + ffn  # proj_in
             + ffn  # sgu.norm over ffn / 2 channels, gamma and beta
             + tokens * tokens + tokens  # sgu.proj
             + ffn // 2 * dim + dim)  # proj_out
    head = dim * num_classes + num_classes if num_classes else 0
    return embed + arch["depth"] * block + 2 * dim + head


def main() -> None:
    """Print the parameter count of every variant (1000 classes), computed from the arch."""
    print(f"{'variant':<16} {'params':>12}  {'(M)':>6}")
    for name in ARCHS:
        n = count_params(name)
        print(f"{name:<16} {n:>12,d}  {n / 1e6:>6.2f}")


if __name__ == "__main__":
    main()
