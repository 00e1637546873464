"""``SimpleFeaturePyramid``: multi-scale maps from one plain-ViT map (ViTDet, Li et al. 2022).

"Exploring Plain Vision Transformer Backbones for Object Detection" shows that a plain ViT
needs no hierarchical backbone for dense tasks: its last stride-16 map alone, up- and
down-sampled, makes a pyramid as good as an FPN over a hierarchical backbone. Per scale
(detectron2's ``SimpleFeaturePyramid``, the paper's released code):

* x4 (stride 4): deconv 2x2/2 (C -> C/2), LayerNorm, GELU, deconv 2x2/2 (C/2 -> C/4);
* x2 (stride 8): deconv 2x2/2 (C -> C/2);
* x1 (stride 16): identity;
* x1/2 (stride 32): max-pool 2x2/2;
* then on every level a 1x1 conv to ``out_channels`` and a 3x3 conv, each bias-free and
  followed by a LayerNorm over channels (the paper's ``norm="LN"``);
* levels beyond the scales (``num_outs`` > len(scales)): a 1x1/2 max-pool of the last level,
  detectron2's ``LastLevelMaxPool`` (the same op as mmdet's FPN's extra levels).

Other powers of two follow the same pattern (x8: three deconvs; x1/4: a 4x4 max-pool), so a
stride-8 ViT (patch 8) uses ``scales=(2, 1, 0.5, 0.25)`` for strides 4-32.

Sizing: ``in_channels`` is a list with one width per backbone output, as an FPN's, so
``benchmarks/tasks/detection.py``'s ``fit_det_heads`` (and segmentation's neck hook) fill it from
the backbone; ``in_index`` picks the map the pyramid is built from (the last by default).
The output is ``num_outs`` maps of ``out_channels`` each, finest first.

Importing this module registers ``SimpleFeaturePyramid`` in the MODELS registry of mmseg and
mmdet (those installed): configs list ``'benchmarks.models.simple_fpn'`` in ``custom_imports``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import compat  # the torchvision shim must precede mmseg/mmdet
from mmengine.model import BaseModule

__all__ = ["LayerNorm2d", "SimpleFeaturePyramid"]

FRAMEWORKS = ("mmseg", "mmdet")
LN_EPS = 1e-6  # detectron2's channel LayerNorm (ViTDet's norm="LN")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map, at every pixel (detectron2's ``LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _octaves(scale: float) -> int:
    """log2 of a scale that must be a power of two: 4 -> 2, 1 -> 0, 0.5 -> -1."""
    octaves = math.log2(scale) if scale > 0 else 0.5  # 0.5: not a whole octave, refused below
    if octaves != round(octaves):
        raise ValueError(f"scales must be powers of two (4, 2, 1, 0.5, ...), got {scale}")
    return int(octaves)


def _resampler(channels: int, scale: float) -> tuple[nn.Module, int]:
    """The up/down-sampling of one level and its output width."""
    octaves = _octaves(scale)
    if octaves <= 0:  # identity, or a max-pool by 2^-octaves
        return (nn.Identity() if octaves == 0 else nn.MaxPool2d(2**-octaves, 2**-octaves)), channels
    layers: list[nn.Module] = []
    for k in range(octaves):
        if channels % 2:
            raise ValueError(f"a x{scale:g} level halves the width {octaves} times; {channels} is odd")
        if k:  # LayerNorm + GELU between consecutive deconvs, as ViTDet
            layers += [LayerNorm2d(channels, eps=LN_EPS), nn.GELU()]
        layers.append(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
        channels //= 2
    return nn.Sequential(*layers), channels


class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid as an OpenMMLab neck.

    Args:
        in_channels: widths of the backbone outputs (a list, as an FPN's; an int for one map).
        out_channels: width of every output level.
        scales: resampling of each level relative to the input map (powers of two), finest first;
            ViTDet's (4, 2, 1, 0.5) turns a stride-16 map into strides 4, 8, 16, 32.
        num_outs: output levels; more than ``len(scales)`` adds 1x1/2 max-pools of the last level
            (5 for a detector with a stride-64 RPN level). Default: ``len(scales)``.
        in_index: which backbone output the pyramid is built from (default the last).
        init_cfg: mmengine init config (default: Xavier-uniform convs and deconvs, as mmdet's FPN).
    """

    def __init__(self, in_channels: int | Sequence[int], out_channels: int,
                 scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5), num_outs: int | None = None,
                 in_index: int = -1, init_cfg: dict | list | None = None) -> None:
        if init_cfg is None:
            init_cfg = dict(type="Xavier", layer=["Conv2d", "ConvTranspose2d"], distribution="uniform")
        super().__init__(init_cfg)
        widths = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        if not widths:
            raise ValueError("in_channels is empty")
        self.in_index = in_index
        width = int(widths[in_index])
        self.scales = tuple(float(s) for s in scales)
        self.num_outs = len(self.scales) if num_outs is None else int(num_outs)
        if self.num_outs < len(self.scales):
            raise ValueError(f"num_outs ({self.num_outs}) is fewer than the scales {self.scales}")
        self.resample = nn.ModuleList()
        self.lateral = nn.ModuleList()
        for scale in self.scales:
            resample, channels = _resampler(width, scale)
            self.resample.append(resample)
            self.lateral.append(nn.Sequential(
                nn.Conv2d(channels, out_channels, 1, bias=False), LayerNorm2d(out_channels, eps=LN_EPS),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                LayerNorm2d(out_channels, eps=LN_EPS)))
        self.out_channels = out_channels

    def forward(self, inputs: Sequence[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[self.in_index]
        outs = [lateral(resample(x)) for resample, lateral in zip(self.resample, self.lateral)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)


def register_all() -> list[str]:
    """Register ``SimpleFeaturePyramid`` in each installed framework's MODELS registry."""
    return compat.register_in_frameworks("SimpleFeaturePyramid", SimpleFeaturePyramid, FRAMEWORKS)


REGISTERED = register_all()
