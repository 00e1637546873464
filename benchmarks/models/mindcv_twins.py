"""Small PyTorch twins for mindcv models whose numerics mmpretrain's modules cannot match by config.

Only one is needed: mindcv's ResNet pools its stem with ``nn.MaxPool2d(3, 2, pad_mode="same")``,
TensorFlow-style padding that puts the extra row and column at the bottom and right (pads
(0, 1, 0, 1) on an even-sized map, (1, 1, 1, 1) on an odd one). mmpretrain's ``ResNet`` uses
``padding=1`` on every side, which shifts every pooling window by one pixel on even-sized maps
(about 2% logit error on a ResNet-50). ``MindCVResNet`` is mmpretrain's ``ResNet`` with that
one layer replaced; its parameters and state-dict keys are unchanged.

Importing this module registers ``MindCVResNet`` in mmpretrain's MODELS registry, so configs can
name it with ``custom_imports=dict(imports=['benchmarks.models.mindcv_twins'])``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import compat  # noqa: F401  the torchvision shim must precede mmpretrain

__all__ = ["SamePadMaxPool2d", "MindCVResNet", "same_padding"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF/MindSpore ``pad_mode="same"`` along one axis.

    The output has ``ceil(size / stride)`` elements; the total padding needed for that is split
    with the smaller half first.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SamePadMaxPool2d(nn.Module):
    """``mindspore.nn.MaxPool2d(kernel_size, stride, pad_mode="same")`` in PyTorch.

    Pads with -inf (padding never wins the max), then pools without padding.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad_mode='same'"


def _register() -> type:
    from mmpretrain.models.backbones import ResNet
    from mmpretrain.registry import MODELS

    class MindCVResNet(ResNet):
        """mmpretrain ``ResNet`` with mindcv's stem pooling (``pad_mode="same"``, see module doc)."""

        def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
            super()._make_stem_layer(in_channels, stem_channels)
            self.maxpool = SamePadMaxPool2d(kernel_size=3, stride=2)

    if "MindCVResNet" not in MODELS.module_dict:
        MODELS.register_module(name="MindCVResNet", module=MindCVResNet)
    return MODELS.get("MindCVResNet")


MindCVResNet = _register()
