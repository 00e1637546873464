"""BigTransfer (BiT, Kolesnikov et al. 2020) in MindSpore: ResNet-v2 with GroupNorm and weight
standardisation.

Read top to bottom: the standardised conv, the pre-activation bottleneck, the network, the
factory and an exact parameter count that allocates nothing. Semantics are those of the paper's
released code (google-research/big_transfer, bit_pytorch/models.py); the PyTorch twin
``benchmarks/models/resnetv2.py`` computes the same function and ``converters/rules/zoo_bit.py``
maps the names. The variant table and the numerics live in that rules module (plain Python, the
one table of the family) and are imported here.

Numerics, stated so the twin can match them exactly:

* every conv is standardised per output filter over (in, kh, kw) with the biased variance:
  ``w' = (w - mean) / sqrt(var + WS_EPS)``, ``WS_EPS = 1e-10`` as in all of BiT's releases;
  convs have no bias; explicit symmetric padding (7x7: 3, 3x3: 1, 1x1: 0) as in the release;
* GroupNorm with ``gn_groups`` groups (32 in BiT) and ``GN_EPS = 1e-5``;
* root: StdConv 7x7/2, then a constant-ZERO pad of 1 and max-pool 3x3/2 without padding. The
  root is not followed by a ReLU, so negative values meet the zero pad and it changes maxima:
  this is the release's ``ConstantPad2d(1, 0)`` + ``MaxPool2d(3, 2)``, not "same" pooling;
* unit: ``a = relu(gn1(x))``; shortcut ``downsample(a)`` on the first unit of each stage
  (1x1 StdConv with the stage's stride, applied to the activated input) else ``x``; branch
  conv1 1x1 -> gn2, relu -> conv2 3x3 with the stride -> gn3, relu -> conv3 1x1; sum, no ReLU;
* final GroupNorm ``norm`` + ReLU, global average pool, ``classifier`` Dense zero-initialised
  (the paper's zero head; the release uses a 1x1 conv there, a Dense is the same map).

Names: the body keeps the release's names, 1-based (``body.block1.unit01.gn1.gamma``,
``...conv2.weight``, ``...downsample.weight``, ``root.conv.weight``); the release's ``head.gn`` is
``norm`` and its ``head.conv`` is ``classifier``.

What downstream gets: ``forward_features(x)`` returns the four stage maps (strides 4, 8, 16, 32,
channels ``4*base_width*wf*2^i``), each normalised as the network itself normalises it next:
stage i < 3 as ``relu(gn1(x))`` of the next stage's first unit, stage 3 as ``relu(norm(x))``.
The twin returns the same maps for ``out_indices``; the classifier pools the last one.
"""
from __future__ import annotations

from collections import OrderedDict

from mindspore import nn, ops

from converters.rules.zoo_bit import ARCHS, GN_EPS, WS_EPS, out_channels

__all__ = ["ARCHS", "GN_EPS", "WS_EPS", "ResNetV2", "StdConv2d", "PreActBottleneck", "build_bit",
           "count_parameters", "resolve_arch"]


class StdConv2d(nn.Conv2d):
    """Bias-free Conv2d whose kernel is weight-standardised on every call (BiT's ``StdConv2d``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 eps: float = WS_EPS) -> None:
        super().__init__(cin, cout, kernel_size, stride=stride, pad_mode="pad" if padding else "valid",
                         padding=padding, has_bias=False)
        self.eps = eps
        self.filter_mean = ops.ReduceMean(keep_dims=True)

    def standardized_weight(self):
        centred = self.weight - self.filter_mean(self.weight, (1, 2, 3))
        var = self.filter_mean(centred * centred, (1, 2, 3))  # biased, as the release
        return centred / ops.sqrt(var + self.eps)

    def construct(self, x):
        return self.conv2d(x, self.standardized_weight())


class PreActBottleneck(nn.Cell):
    """Pre-activation bottleneck: stride on the 3x3 conv, projection on the activated input."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int, groups: int) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(groups, cin, eps=GN_EPS)
        self.conv1 = StdConv2d(cin, cmid, 1)
        self.gn2 = nn.GroupNorm(groups, cmid, eps=GN_EPS)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1)
        self.gn3 = nn.GroupNorm(groups, cmid, eps=GN_EPS)
        self.conv3 = StdConv2d(cmid, cout, 1)
        self.relu = nn.ReLU()
        self.has_projection = stride != 1 or cin != cout
        if self.has_projection:
            self.downsample = StdConv2d(cin, cout, 1, stride=stride)

    def preact(self, x):
        return self.relu(self.gn1(x))

    def construct(self, x):
        a = self.preact(x)
        shortcut = self.downsample(a) if self.has_projection else x
        out = self.conv1(a)
        out = self.conv2(self.relu(self.gn2(out)))
        out = self.conv3(self.relu(self.gn3(out)))
        return out + shortcut


def _stage(index: int, units: int, cin: int, arch: dict) -> nn.SequentialCell:
    wide = arch["base_width"] * arch["width_factor"]
    cout, cmid = out_channels(arch)[index], wide * 2**index
    stride = 2 if index else 1  # stage 1 keeps the pooled root's stride 4
    return nn.SequentialCell(OrderedDict(
        (f"unit{u:02d}", PreActBottleneck(cin if u == 1 else cout, cout, cmid, stride if u == 1 else 1,
                                          arch["gn_groups"]))
        for u in range(1, units + 1)
    ))


class ResNetV2(nn.Cell):
    """BiT ResNet-v2 (GN + WS). ``construct`` gives logits (the pooled features without a head)."""

    def __init__(self, arch: dict, num_classes: int | None = None, in_channels: int = 3) -> None:
        super().__init__()
        self.arch = dict(arch)
        wide = arch["base_width"] * arch["width_factor"]
        self.root = nn.SequentialCell(OrderedDict([
            ("conv", StdConv2d(in_channels, wide, 7, stride=2, padding=3)),
            ("pad", nn.ZeroPad2d(1)),  # constant 0, see the module doc
            ("pool", nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="valid")),
        ]))
        widths = [wide, *out_channels(arch)]
        self.body = nn.SequentialCell(OrderedDict(
            (f"block{i + 1}", _stage(i, units, widths[i], arch)) for i, units in enumerate(arch["layers"])
        ))
        self.norm = nn.GroupNorm(arch["gn_groups"], widths[-1], eps=GN_EPS)
        self.relu = nn.ReLU()
        self.pool = ops.ReduceMean(keep_dims=False)
        self.num_classes = num_classes or 0
        if self.num_classes:
            self.classifier = nn.Dense(widths[-1], self.num_classes, weight_init="zeros", bias_init="zeros")

    def _stage_sums(self, x):
        """Raw (un-normalised) outputs of the four stages."""
        x = self.root(x)
        s1 = self.body.block1(x)
        s2 = self.body.block2(s1)
        s3 = self.body.block3(s2)
        s4 = self.body.block4(s3)
        return s1, s2, s3, s4

    def forward_features(self, x):
        """The four stage maps, each normalised as the network uses it next (module doc)."""
        s1, s2, s3, s4 = self._stage_sums(x)
        return (self.body.block2.unit01.preact(s1), self.body.block3.unit01.preact(s2),
                self.body.block4.unit01.preact(s3), self.relu(self.norm(s4)))

    def pre_logits(self, x):
        """Globally pooled final features [B, C]."""
        return self.pool(self.relu(self.norm(self._stage_sums(x)[-1])), (2, 3))

    def construct(self, x):
        pooled = self.pre_logits(x)
        return self.classifier(pooled) if self.num_classes else pooled


def resolve_arch(arch: dict | str) -> dict:
    """The architecture dict of a variant name in ``ARCHS``, or a copy of a given dict."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise KeyError(f"unknown BiT variant {arch!r}; known: {sorted(ARCHS)}")
        return dict(ARCHS[arch])
    missing = sorted(set(ARCHS["bit_m_r50x1"]) - set(arch))
    if missing:
        raise KeyError(f"BiT architecture dict lacks {missing}")
    return dict(arch)


def build_bit(arch: dict | str, num_classes: int | None = 1000, in_channels: int = 3) -> ResNetV2:
    """A BiT ResNet-v2 for a variant name (``bit_m_r50x1`` ...) or an architecture dict."""
    return ResNetV2(resolve_arch(arch), num_classes, in_channels)


def count_parameters(arch: dict | str, num_classes: int | None = 1000, in_channels: int = 3) -> int:
    """Exact parameter count of ``build_bit(arch, num_classes, in_channels)``, allocating nothing."""
    arch = resolve_arch(arch)
    wide = arch["base_width"] * arch["width_factor"]
    widths = [wide, *out_channels(arch)]
    total = in_channels * wide * 49
    for i, units in enumerate(arch["layers"]):
        cout, cmid = widths[i + 1], wide * 2**i
        for u in range(units):
            cin = widths[i] if u == 0 else cout
            total += 2 * cin + cin * cmid + 2 * cmid + 9 * cmid * cmid + 2 * cmid + cmid * cout
            total += cin * cout if u == 0 else 0  # projection: every first unit changes width
    total += 2 * widths[-1]
    if num_classes:
        total += widths[-1] * num_classes + num_classes
    return total
