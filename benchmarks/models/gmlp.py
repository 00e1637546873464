"""PyTorch twin of our MindSpore gMLP (``pretrain/models/gmlp.py``), as an mmpretrain backbone.

mmpretrain has no gMLP. ``GMLP`` mirrors the MindSpore cells one for one, with the same names
(``patch_embed.proj``, ``blocks.<i>.norm | proj_in | sgu.norm | sgu.proj | proj_out``, ``norm``),
so the conversion rules (``converters/rules/zoo_gmlp.py``) only rename LayerNorm gamma/beta.
Numerics are set by the config the rules write: exact erf GELU, LayerNorm eps 1e-6.

Output: a tuple with one entry per ``out_indices`` (block indices; default the last block), each
the token map after that block as a [B, C, h, w] feature map (``out_type='featmap'``, tokens in
row-major order; the final LayerNorm is applied after the last block when ``final_norm``), or its
mean over tokens [B, C] (``out_type='avg'``). Hence
``ImageClassifier(GMLP, neck=GlobalAveragePooling, head=LinearClsHead)`` (what the rules build)
reproduces the MindSpore ``forward_features`` and logits, and dense tasks get a stride-``patch``
map. The spatial projection fixes the token count, so inputs must be ``img_size`` square.

Importing this module registers ``GMLP`` in mmpretrain's MODELS registry, so configs can name it
with ``custom_imports=dict(imports=['benchmarks.models.gmlp'])``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from benchmarks import compat  # noqa: F401  the torchvision shim must precede mmpretrain
from mmcv.cnn.bricks import DropPath, build_activation_layer  # noqa: E402

__all__ = ["GMLP", "GMLPBlock", "SpatialGatingUnit"]

OUT_TYPES = ("featmap", "avg")


class SpatialGatingUnit(nn.Module):
    """u * proj(norm(v)) over the token axis, with (u, v) the two channel halves of x [B, N, C]."""

    def __init__(self, channels: int, num_tokens: int, norm_eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels // 2, eps=norm_eps)
        self.proj = nn.Linear(num_tokens, num_tokens)
        # The paper's init: spatial weights near zero and bias one, so the gate starts at u * 1.
        nn.init.normal_(self.proj.weight, std=1e-6)
        nn.init.ones_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = x.chunk(2, dim=-1)
        v = self.norm(v)
        v = self.proj(v.transpose(1, 2)).transpose(1, 2)
        return u * v


class GMLPBlock(nn.Module):
    """x + proj_out(sgu(act(proj_in(norm(x))))), with stochastic depth on the branch."""

    def __init__(self, dim: int, ffn: int, num_tokens: int, norm_eps: float, act_cfg: dict,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.proj_in = nn.Linear(dim, ffn)
        self.act = build_activation_layer(act_cfg)
        self.sgu = SpatialGatingUnit(ffn, num_tokens, norm_eps)
        self.proj_out = nn.Linear(ffn // 2, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        for linear in (self.proj_in, self.proj_out):  # as the MindSpore model initialises them
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.proj_out(self.sgu(self.act(self.proj_in(self.norm(x))))))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, C], row-major tokens


def _register() -> type:
    from mmpretrain.models.backbones.base_backbone import BaseBackbone
    from mmpretrain.registry import MODELS

    class GMLP(BaseBackbone):
        """gMLP backbone (Liu et al. 2021), the twin of ``pretrain.models.gmlp.GMLP``.

        Args:
            img_size: input side in px; with ``patch_size`` it fixes the token count.
            patch_size: patch side (the patch convolution's kernel and stride).
            in_channels: input channels.
            embed_dims: token width (dim).
            num_layers: number of gMLP blocks.
            mlp_ratio: d_ffn = mlp_ratio * embed_dims (the gating unit halves it).
            norm_eps: LayerNorm epsilon (1e-6 to match the MindSpore model).
            act_cfg: activation (exact GELU to match the MindSpore model).
            drop_path_rate: stochastic depth, rising linearly over the blocks from 0.
            out_indices: blocks whose outputs are returned (negative counts from the end).
            final_norm: apply the final LayerNorm after the last block.
            out_type: 'featmap' ([B, C, h, w]) or 'avg' ([B, C], the mean over tokens).
            frozen_stages: freeze the patch embedding and the first ``frozen_stages`` blocks
                (mmpretrain ViT's convention); all blocks also freeze the final norm. -1: none.
        """

        def __init__(self, img_size: int = 224, patch_size: int = 16, in_channels: int = 3,
                     embed_dims: int = 128, num_layers: int = 30, mlp_ratio: int = 6,
                     norm_eps: float = 1e-6, act_cfg: dict | None = None, drop_path_rate: float = 0.0,
                     out_indices: int | Sequence[int] = -1, final_norm: bool = True,
                     out_type: str = "featmap", frozen_stages: int = -1, init_cfg: dict | None = None) -> None:
            super().__init__(init_cfg)
            if img_size % patch_size:
                raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
            if out_type not in OUT_TYPES:
                raise ValueError(f"out_type {out_type!r} is not one of {OUT_TYPES}")
            self.img_size, self.patch_size = img_size, patch_size
            self.grid = img_size // patch_size
            self.out_type, self.final_norm, self.frozen_stages = out_type, final_norm, frozen_stages
            self.num_layers = num_layers
            indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
            if any(not -num_layers <= i < num_layers for i in indices):
                raise ValueError(f"out_indices {indices} out of range for {num_layers} blocks")
            self.out_indices = sorted(i % num_layers for i in indices)
            act_cfg = act_cfg or {"type": "GELU"}
            ffn = embed_dims * mlp_ratio
            self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size)
            rates = [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
            self.blocks = nn.ModuleList(
                GMLPBlock(embed_dims, ffn, self.grid * self.grid, norm_eps, act_cfg, r) for r in rates)
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps) if final_norm else nn.Identity()
            self._freeze()

        def _frozen_modules(self) -> list[nn.Module]:
            if self.frozen_stages < 0:
                return []
            frozen = [self.patch_embed, *self.blocks[: self.frozen_stages]]
            return frozen + [self.norm] if self.frozen_stages >= self.num_layers else frozen

        def _freeze(self) -> None:
            for module in self._frozen_modules():
                module.eval()
                for p in module.parameters():
                    p.requires_grad = False

        def train(self, mode: bool = True):
            super().train(mode)
            self._freeze()  # frozen blocks stay in eval (no stochastic depth)
            return self

        def _output(self, x: torch.Tensor) -> torch.Tensor:
            if self.out_type == "avg":
                return x.mean(dim=1)
            return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.grid, self.grid)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
                raise ValueError(f"gMLP's spatial projection is built for {self.img_size} px inputs, "
                                 f"got {tuple(x.shape[-2:])}: resize the input")
            x = self.patch_embed(x)
            outs = []
            for i, block in enumerate(self.blocks):
                x = block(x)
                if i == self.num_layers - 1:
                    x = self.norm(x)
                if i in self.out_indices:
                    outs.append(self._output(x))
            return tuple(outs)

    if "GMLP" not in MODELS.module_dict:
        MODELS.register_module(name="GMLP", module=GMLP)
    return MODELS.get("GMLP")


GMLP = _register()
