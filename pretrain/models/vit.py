"""A Vision Transformer in MindSpore, with the numerics of DINO's (facebookresearch/dino
``vision_transformer.py``, after Dosovitskiy et al. 2021).

Read top to bottom: position-embedding resampling, layers, the model, the factory.

* patch embedding ``Conv2d(k=p, s=p)`` with bias, no padding; tokens row-major; class token first;
* learned position embedding for the pretraining grid, resampled bicubically for other inputs
  (see :func:`bicubic_matrix`);
* pre-norm blocks ``x + drop_path(attn(norm1(x)))``, ``x + drop_path(mlp(norm2(x)))``; fused qkv
  with bias, softmax(q k^T / sqrt(d)) v; MLP Linear -> exact erf GELU -> Linear;
* LayerNorm eps 1e-6 everywhere (MindSpore's default is 1e-7), final norm;
* no dropout layers (DINO trains with drop 0; stochastic depth only).

Parameter names are DINO's where MindSpore allows (``patch_embed.proj``, ``blocks.{i}.attn.qkv``,
``blocks.{i}.mlp.fc1``, ``norm``), LayerNorm's being ``gamma``/``beta``.
"""
from __future__ import annotations

import math

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeUniform, TruncatedNormal, initializer

LN_EPS = 1e-6
CUBIC_A = -0.75  # Keys' cubic kernel coefficient used by torch (and hence DINO and mmpretrain)


# ---- position-embedding resampling -----------------------------------------------------------
def _cubic_near(t: Tensor) -> Tensor:
    """Kernel weight for |distance| <= 1."""
    return ((CUBIC_A + 2) * t - (CUBIC_A + 3)) * t * t + 1


def _cubic_far(t: Tensor) -> Tensor:
    """Kernel weight for 1 < |distance| < 2."""
    return ((CUBIC_A * t - 5 * CUBIC_A) * t + 8 * CUBIC_A) * t - 4 * CUBIC_A


def bicubic_matrix(n_in: int, n_out: int, offset: float = 0.0) -> Tensor:
    """[n_out, n_in] matrix of 1-D bicubic resampling, as ``torch.nn.functional.interpolate``
    (mode='bicubic', align_corners=False) computes it: output i samples the input at
    ``(i + 0.5) * scale - 0.5`` with the 4-tap kernel (a = -0.75), borders clamped.

    ``scale = n_in / (n_out + offset)``. offset 0 is ``interpolate(size=n_out)`` (mmpretrain's
    ``resize_pos_embed``); offset 0.1 is ``interpolate(scale_factor=(n_out + 0.1) / n_in)``, the
    call of DINO's ``interpolate_pos_encoding`` (its 0.1 keeps the rounded output size right).
    Built from ops on constants, so it also compiles in graph mode.
    """
    scale = n_in / (n_out + offset)
    real = (ops.arange(n_out).astype(ms.float32) + 0.5) * scale - 0.5
    base = ops.floor(real)
    t = real - base
    columns = ops.arange(n_in).astype(ms.float32).reshape(1, n_in)
    matrix = ops.zeros((n_out, n_in), ms.float32)
    for tap, weight in enumerate((_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t))):
        index = ops.clamp(base + (tap - 1), 0, n_in - 1).reshape(n_out, 1)
        matrix = matrix + weight.reshape(n_out, 1) * (index == columns).astype(ms.float32)
    return matrix


def resize_grid(table: Tensor, src: tuple[int, int], dst: tuple[int, int], offset: float = 0.0) -> Tensor:
    """Resample a [h*w, C] row-major grid of embeddings to [H*W, C], separably (rows, then columns)."""
    (h, w), (hh, ww) = src, dst
    c = table.shape[-1]
    rows = ops.matmul(bicubic_matrix(h, hh, offset), table.reshape(h, w * c)).reshape(hh, w, c)
    cols = ops.matmul(bicubic_matrix(w, ww, offset), rows.transpose(1, 0, 2).reshape(w, hh * c))
    return cols.reshape(ww, hh, c).transpose(1, 0, 2).reshape(hh * ww, c)


# ---- layers ------------------------------------------------------------------------------------
class DropPath(nn.Cell):
    """Stochastic depth: drop a sample's residual branch with probability p while training, scale
    the kept ones by 1 / (1 - p) (DINO's ``drop_path``)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.keep = 1.0 - p

    def construct(self, x: Tensor) -> Tensor:
        if not self.training or self.keep == 1.0:
            return x
        mask = ops.bernoulli(ops.zeros((x.shape[0],) + (1,) * (x.ndim - 1), x.dtype), p=self.keep)
        return x / self.keep * mask


class PatchEmbed(nn.Cell):
    """Non-overlapping p x p patches -> C channels (Conv2d with bias, no padding)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, pad_mode="valid",
                              has_bias=True, weight_init=HeUniform(math.sqrt(5)))

    def construct(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # [B, C, h, w]
        b, c = x.shape[:2]
        return x.reshape(b, c, -1).transpose(0, 2, 1)  # [B, h*w, C], row-major


def _dense(n_in: int, n_out: int) -> nn.Dense:
    """nn.Dense with DINO's init (truncated normal 0.02, zero bias)."""
    return nn.Dense(n_in, n_out, weight_init=TruncatedNormal(0.02), bias_init="zeros")


class Attention(nn.Cell):
    """Multi-head self-attention with a fused qkv projection (rows q, k, v; heads inside each)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = _dense(dim, 3 * dim)
        self.proj = _dense(dim, dim)

    def construct(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, d]
        attn = ops.softmax(ops.matmul(q, k.swapaxes(-1, -2)) * self.scale, axis=-1)
        return self.proj(ops.matmul(attn, v).transpose(0, 2, 1, 3).reshape(b, n, c))


class Mlp(nn.Cell):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = _dense(dim, hidden)
        self.act = nn.GELU(approximate=False)  # exact erf form, as torch.nn.GELU()
        self.fc2 = _dense(hidden, dim)

    def construct(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Cell):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm((dim,), epsilon=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm((dim,), epsilon=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def construct(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ---- the model ---------------------------------------------------------------------------------
class VisionTransformer(nn.Cell):
    """ViT with a class token. ``forward_features(x)``: the class token after the final norm
    ([B, C], what DINO's k-NN and linear evaluations read); ``forward_tokens(x)``: every token
    after the final norm ([B, 1 + h*w, C], patch tokens from index 1); ``construct(x)``: logits
    when built with ``num_classes``, else the features.

    ``interpolate_offset`` picks how the position table is resampled for other grids (see
    :func:`bicubic_matrix`): 0 (default) is mmpretrain's resampling, so a converted model agrees
    at every input size; 0.1 reproduces facebookresearch/dino exactly, and then agrees with
    mmpretrain only at the pretraining size.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, num_classes: int | None = None,
                 drop_path_rate: float = 0.0, interpolate_offset: float = 0.0):
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.embed_dim = embed_dim
        self.interpolate_offset = interpolate_offset
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = Parameter(initializer(TruncatedNormal(0.02), (1, 1, embed_dim), ms.float32), name="cls_token")
        self.pos_embed = Parameter(initializer(TruncatedNormal(0.02), (1, 1 + self.grid ** 2, embed_dim), ms.float32),
                                   name="pos_embed")
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule
        self.blocks = nn.CellList([Block(embed_dim, num_heads, mlp_ratio, rate) for rate in rates])
        self.norm = nn.LayerNorm((embed_dim,), epsilon=LN_EPS)
        self.head = _dense(embed_dim, num_classes) if num_classes else None

    def position_embedding(self, h: int, w: int) -> Tensor:
        """[1, 1 + h*w, C]: the class token's entry, then the grid resampled to h x w."""
        if h == self.grid and w == self.grid:
            return self.pos_embed
        patches = resize_grid(self.pos_embed[0, 1:], (self.grid, self.grid), (h, w), self.interpolate_offset)
        return ops.concat((self.pos_embed[:, :1], patches.reshape(1, h * w, self.embed_dim)), axis=1)

    def prepare_tokens(self, x: Tensor) -> Tensor:
        h, w = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        x = self.patch_embed(x)
        cls = ops.broadcast_to(self.cls_token, (x.shape[0], 1, self.embed_dim))
        return ops.concat((cls, x), axis=1) + self.position_embedding(h, w)

    def forward_tokens(self, x: Tensor) -> Tensor:
        x = self.prepare_tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_tokens(x)[:, 0]

    def get_intermediate_layers(self, x: Tensor, n: int = 1) -> list[Tensor]:
        """The last ``n`` blocks' outputs, each after the final norm (DINO's linear protocol
        concatenates their class tokens: n=4 for ViT-S)."""
        x = self.prepare_tokens(x)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - n:
                outs.append(self.norm(x))
        return outs

    def construct(self, x: Tensor) -> Tensor:
        features = self.forward_features(x)
        return features if self.head is None else self.head(features)


def build_vit(arch: dict, num_classes: int | None = None, drop_path_rate: float = 0.0,
              interpolate_offset: float = 0.0, in_chans: int = 3) -> VisionTransformer:
    """A ViT from an architecture dict (img_size, patch_size, embed_dim, depth, num_heads[, mlp_ratio])."""
    return VisionTransformer(img_size=arch["img_size"], patch_size=arch["patch_size"],
                             in_chans=in_chans, embed_dim=arch["embed_dim"], depth=arch["depth"],
                             num_heads=arch["num_heads"], mlp_ratio=arch.get("mlp_ratio", 4.0),
                             num_classes=num_classes, drop_path_rate=drop_path_rate,
                             interpolate_offset=interpolate_offset)
