"""``ResNetV2BiT``: the PyTorch twin of BigTransfer's ResNet-v2 (``pretrain/models/bit.py``).

BiT (Kolesnikov et al. 2020) = pre-activation ResNet-v2 bottlenecks, GroupNorm instead of
BatchNorm, weight standardisation on every convolution. Semantics follow the paper's released
code (google-research/big_transfer, bit_pytorch/models.py):

* every conv is a ``StdConv2d``: each output filter standardised over (in, kh, kw) with the
  biased variance, ``w' = (w - mean) / sqrt(var + ws_eps)``, in every forward pass;
* root: StdConv 7x7/2 (pad 3), then a constant-ZERO pad of 1 and a 3x3/2 max-pool without
  padding. The root output is not passed through a ReLU, so it can be negative and the zero pad
  does win some maxima: this is not ``MaxPool2d(3, 2, padding=1)`` (which pads with -inf);
* unit: ``a = relu(gn1(x))``; shortcut ``downsample(a)`` (1x1/stride StdConv, first unit of each
  stage) or ``x``; branch ``conv1(a)`` 1x1 -> gn2, relu -> ``conv2`` 3x3/stride (the stride is
  on the 3x3) -> gn3, relu -> ``conv3`` 1x1; output branch + shortcut (no activation);
* stage widths: bottleneck ``base_width*wf*2^i``, output ``4*base_width*wf*2^i``;
* after the last stage: GroupNorm ``norm`` + ReLU (BiT's ``head.gn``), then the classifier
  pools and applies its linear layer (mmpretrain's neck and head, outside this module).

Stage outputs (``out_indices``). In a pre-activation net a stage's output is a raw residual
sum, never normalised; the activation the rest of the network sees is the next unit's
``relu(gn1(x))``. So with ``norm_outputs=True`` (the default) stage i < 3 is returned as
``relu(stages[i+1][0].norm1(x))`` and stage 3 as ``relu(norm(x))``: pretrained normalisations,
no new parameters, exactly the activations the classifier path computes. ``norm_outputs=False``
returns the raw sums. The MindSpore model's ``forward_features`` returns the same four maps.

Importing this module registers ``ResNetV2BiT`` in the MODELS registry of mmpretrain, mmseg and
mmdet (those installed), so configs can name it with
``custom_imports=dict(imports=['benchmarks.models.resnetv2'], allow_failed_imports=False)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import compat  # the torchvision shim must precede mmpretrain/mmdet/mmseg
from mmengine.model import BaseModule

__all__ = ["DEPTHS", "ResNetV2BiT", "StdConv2d", "PreActBottleneck", "standardize"]

DEPTHS: dict[int, tuple[int, ...]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
FRAMEWORKS = ("mmpretrain", "mmseg", "mmdet")


def standardize(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Weight standardisation of an OIHW kernel: zero mean, unit (biased) variance per filter."""
    var, mean = torch.var_mean(weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (weight - mean) / torch.sqrt(var + eps)


class StdConv2d(nn.Conv2d):
    """Bias-free Conv2d whose kernel is standardised on every call (BiT's ``StdConv2d``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 eps: float = 1e-10) -> None:
        super().__init__(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, standardize(self.weight, self.eps), None, self.stride, self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ws_eps={self.eps}"


class PreActBottleneck(nn.Module):
    """BiT's pre-activation bottleneck; stride on the 3x3, projection on the activated input."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int, groups: int, gn_eps: float,
                 ws_eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=gn_eps)
        self.conv1 = StdConv2d(cin, cmid, 1, eps=ws_eps)
        self.norm2 = nn.GroupNorm(groups, cmid, eps=gn_eps)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, eps=ws_eps)
        self.norm3 = nn.GroupNorm(groups, cmid, eps=gn_eps)
        self.conv3 = StdConv2d(cmid, cout, 1, eps=ws_eps)
        self.downsample = StdConv2d(cin, cout, 1, stride=stride, eps=ws_eps) if stride != 1 or cin != cout else None

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.preact(x)
        shortcut = x if self.downsample is None else self.downsample(a)
        out = self.conv1(a)
        out = self.conv2(F.relu(self.norm2(out)))
        out = self.conv3(F.relu(self.norm3(out)))
        return out + shortcut


class Stem(nn.Module):
    """StdConv 7x7/2, constant-0 pad of 1, max-pool 3x3/2 without padding (BiT's ``root``)."""

    def __init__(self, in_channels: int, width: int, ws_eps: float) -> None:
        super().__init__()
        self.conv = StdConv2d(in_channels, width, 7, stride=2, padding=3, eps=ws_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(self.conv(x), (1, 1, 1, 1), value=0.0), 3, 2)


class ResNetV2BiT(BaseModule):
    """BiT ResNet-v2 (GN + WS) backbone; returns a tuple of NCHW maps for ``out_indices``.

    Args:
        depth: 50, 101 or 152 (BiT's R50/R101/R152); or give ``layers`` (units per stage).
        layers: units per stage, e.g. ``(3, 4, 6, 3)``; must agree with ``depth`` if both given.
        width_factor: BiT's width multiplier (x1 .. x4).
        base_width: stem width before the factor (64 in BiT); stage i is 4*base*wf*2^i wide.
        in_channels: input channels (3 for BiT).
        out_indices: stages to return, 0..3 (stride 4, 8, 16, 32).
        norm_outputs: normalise returned stage maps (see the module doc); False gives raw sums.
        frozen_stages: -1 freezes nothing; k >= 0 freezes the stem and stages 0..k-1.
        gn_groups, gn_eps, ws_eps: GroupNorm groups and epsilon, weight-standardisation epsilon.
    """

    def __init__(self, depth: int | None = None, layers: Sequence[int] | None = None, width_factor: int = 1,
                 base_width: int = 64, in_channels: int = 3, out_indices: Sequence[int] = (3,),
                 norm_outputs: bool = True, frozen_stages: int = -1, gn_groups: int = 32,
                 gn_eps: float = 1e-5, ws_eps: float = 1e-10, init_cfg: dict | list | None = None) -> None:
        super().__init__(init_cfg)
        self.layers = self._resolve_layers(depth, layers)
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f"out_indices must be a non-empty subset of 0..3, got {out_indices}")
        self.out_indices = tuple(out_indices)
        self.norm_outputs = norm_outputs
        self.frozen_stages = frozen_stages
        wide = base_width * width_factor
        self.out_channels = [4 * wide * 2**i for i in range(4)]
        self.stem = Stem(in_channels, wide, ws_eps)
        self.stages = nn.ModuleList()
        cin = wide
        for i, units in enumerate(self.layers):
            cout, cmid = self.out_channels[i], wide * 2**i
            self.stages.append(nn.Sequential(*[
                PreActBottleneck(cin if u == 0 else cout, cout, cmid, 2 if i and u == 0 else 1,
                                 gn_groups, gn_eps, ws_eps)
                for u in range(units)
            ]))
            cin = cout
        self.norm = nn.GroupNorm(gn_groups, cin, eps=gn_eps)
        self._freeze()

    @staticmethod
    def _resolve_layers(depth: int | None, layers: Sequence[int] | None) -> tuple[int, ...]:
        if depth is not None and depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
        if layers is None:
            if depth is None:
                raise ValueError("give depth or layers")
            return DEPTHS[depth]
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive unit counts, got {layers}")
        if depth is not None and DEPTHS[depth] != layers:
            raise ValueError(f"depth {depth} has layers {DEPTHS[depth]}, not {layers}")
        return layers

    def _output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if not self.norm_outputs:
            return x
        if i + 1 < len(self.stages):
            return self.stages[i + 1][0].preact(x)  # what the next stage's first unit sees
        return F.relu(self.norm(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages[:max(self.out_indices) + 1]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(self._output(i, x))
        return tuple(outs)

    def _freeze(self) -> None:
        """Stop gradients in the stem and the first ``frozen_stages`` stages (GN has no stats)."""
        if self.frozen_stages < 0:
            return
        for module in [self.stem, *self.stages[:self.frozen_stages]]:
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> "ResNetV2BiT":
        super().train(mode)
        if mode and self.frozen_stages >= 0:  # no dropout or stats today; keep frozen parts in eval anyway
            for module in [self.stem, *self.stages[:self.frozen_stages]]:
                module.eval()
        return self


def register_all() -> list[str]:
    """Register ``ResNetV2BiT`` in each installed framework's MODELS registry; return their names."""
    return compat.register_in_frameworks("ResNetV2BiT", ResNetV2BiT, FRAMEWORKS)


REGISTERED = register_all()
