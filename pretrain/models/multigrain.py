"""Multigrain in MindSpore (Berman et al. 2019, "MultiGrain: a unified image embedding for classes
and instances"): a ResNet with GeM pooling, trained with cross-entropy plus a margin loss on the
L2-normalised embedding, on batches that repeat augmented copies of each image.

Read top to bottom: the network (ResNet blocks, GeM, ``MultigrainNet``, ``build_multigrain``),
the objective (``MarginLoss``, ``MultigrainLoss``), distance-weighted sampling in NumPy
(``negative_weights``, ``sample_pairs``, ``multigrain_forward``), and the repeated-augmentation
batch sampler.

Numerics (the converted mmpretrain ``ResNet`` + ``GeneralizedMeanPooling`` match them exactly):

* torchvision-style ResNet: stride on the 3x3 conv of the bottleneck, 7x7/2 stem conv with
  padding 3, 3x3/2 max-pool with padding 1, 1x1 strided conv + BN shortcut where shapes change;
* BatchNorm eps 1e-5, momentum 0.9 in MindSpore's convention (running = 0.9 running + 0.1 batch,
  torch's momentum 0.1);
* GeM: ``mean_hw(clamp(x, min=1e-6) ** p) ** (1 / p)`` with a learnable p initialised at 3, as
  mmpretrain's ``gem`` (clamp, then pow, then the spatial mean, then pow 1/p);
* L2 normalisation ``x / max(||x||, 1e-12)`` (torch's ``F.normalize``).

Parameter names are MindSpore's natural ones and mirror torchvision's: ``conv1.weight``,
``bn1.gamma``, ``layer1.0.conv1.weight``, ``layer1.0.downsample.0.weight``, ``pool.p``,
``classifier.weight``. The loss's boundary is ``margin.beta`` (dropped by the converter).
"""
from __future__ import annotations

from typing import Iterator

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeNormal

from converters.rules.zoo_multigrain import ARCHS, BN_EPS, GEM_EPS, GEM_P

BN_MOMENTUM = 0.9  # MindSpore convention; torch's 0.1
NORM_EPS = 1e-12  # F.normalize's floor on the norm

# The objective's defaults (Berman et al. 2019, Wu et al. 2017).
LAMBDA = 0.5  # weight of cross-entropy; the margin loss gets 1 - LAMBDA
ALPHA = 0.2  # margin
BETA = 1.2  # boundary between positive and negative distances (initial value when learnt)
CUTOFF = 0.5  # distances below are clipped up before weighting (Wu et al.'s cut-off)
NONZERO_LOSS_CUTOFF = 1.4  # negatives at least beta + alpha away give no loss: never sampled
DISTANCE_EPS = 1e-8  # under the square root of the pair distances, as the reference code
REPEATS = 3  # augmented copies of each image in a batch

__all__ = [
    "ARCHS", "GeM", "MarginLoss", "MultigrainLoss", "MultigrainNet", "RepeatedAugmentationSampler",
    "build_multigrain", "l2_normalize", "multigrain_forward", "negative_weights", "sample_pairs",
]


# ---- network --------------------------------------------------------------------------------
def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free conv with torch-style symmetric padding kernel // 2, He-normal (fan_out) init."""
    pad = kernel // 2
    return nn.Conv2d(cin, cout, kernel, stride=stride, pad_mode="pad" if pad else "valid", padding=pad,
                     has_bias=False, weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _downsample(cin: int, cout: int, stride: int) -> nn.SequentialCell | None:
    """The projection shortcut (``downsample.0`` conv, ``downsample.1`` BN) where shapes change."""
    if stride == 1 and cin == cout:
        return None
    return nn.SequentialCell([_conv(cin, cout, 1, stride), _bn(cout)])


class BasicBlock(nn.Cell):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv(cin, width, 3, stride)
        self.bn1 = _bn(width)
        self.conv2 = _conv(width, width, 3)
        self.bn2 = _bn(width)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, width, stride)

    def construct(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Cell):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's "ResNet v1.5"), 1x1 expand x4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv(cin, width, 1)
        self.bn1 = _bn(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = _bn(width)
        self.conv3 = _conv(width, cout, 1)
        self.bn3 = _bn(cout)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, cout, stride)

    def construct(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block, blocks per stage), He et al. 2016 Table 1.
STAGES: dict[int, tuple[type, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class GeM(nn.Cell):
    """Generalized-mean pooling over H and W, [B, C, H, W] -> [B, C]; p is a learnt [1] vector."""

    def __init__(self, p: float = GEM_P, eps: float = GEM_EPS, learn_p: bool = True):
        super().__init__()
        self.p = Parameter(Tensor(np.full((1,), p, np.float32)), name="p", requires_grad=learn_p)
        self.eps = eps

    def construct(self, x: Tensor) -> Tensor:
        x = ops.pow(ops.clamp(x, min=self.eps), self.p)
        return ops.pow(ops.mean(x, axis=(2, 3)), 1.0 / self.p)


class MultigrainNet(nn.Cell):
    """ResNet trunk, GeM pooling, a linear classifier on the pooled feature.

    ``forward_map`` gives the last stage's map, ``forward_features`` the GeM embedding (what a
    downstream classifier or retrieval index uses), ``embed`` its L2-normalised form, ``construct``
    the logits (the embedding when built without classes), ``forward_with_features`` both.
    """

    def __init__(self, depth: int = 50, num_classes: int | None = 1000, learn_p: bool = True):
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"ResNet depth {depth} is not one of {sorted(STAGES)}")
        block, counts = STAGES[depth]
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, pad_mode="pad", padding=3, has_bias=False,
                               weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))
        self.bn1 = _bn(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        cin = 64
        stages = []
        for i, count in enumerate(counts):
            width = 64 * 2**i
            blocks = []
            for b in range(count):
                blocks.append(block(cin, width, 2 if (i > 0 and b == 0) else 1))
                cin = width * block.expansion
            stages.append(nn.SequentialCell(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = cin
        self.pool = GeM(learn_p=learn_p)
        self.num_classes = num_classes or None
        self.classifier = nn.Dense(cin, num_classes) if num_classes else None

    def forward_map(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_map(x))

    def embed(self, x: Tensor) -> Tensor:
        return l2_normalize(self.forward_features(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, GeM features) from one pass: what the training objective needs."""
        features = self.forward_features(x)
        logits = features if self.classifier is None else self.classifier(features)
        return logits, features

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]


def build_multigrain(arch: dict | str = "multigrain_resnet50", num_classes: int | None = 1000,
                     learn_p: bool = True) -> MultigrainNet:
    """A Multigrain network from a variant name of ``ARCHS`` or an arch dict ``{"depth": N}``."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise KeyError(f"unknown Multigrain variant {arch!r}; known: {sorted(ARCHS)}")
        arch = ARCHS[arch]
    return MultigrainNet(int(arch["depth"]), num_classes, learn_p=learn_p)


# ---- objective --------------------------------------------------------------------------------
def l2_normalize(x: Tensor) -> Tensor:
    """Rows divided by max(their L2 norm, 1e-12), as torch's F.normalize."""
    norm = ops.sqrt(ops.sum(x * x, dim=1, keepdim=True))
    return x / ops.maximum(norm, NORM_EPS)


class MarginLoss(nn.Cell):
    """Margin loss of Wu et al. 2017 on sampled (anchor, positive, negative) index triples.

    ``relu(d_ap - beta + alpha) + relu(beta - d_an + alpha)`` summed over the pairs and divided by
    the number of non-zero terms (at least 1), as Multigrain's reference code;
    ``d = sqrt(||a - b||^2 + 1e-8)``. beta is a [1] Parameter named ``beta``, learnt when
    ``learn_beta`` (the paper's setting) or held fixed.
    """

    def __init__(self, alpha: float = ALPHA, beta: float = BETA, learn_beta: bool = True):
        super().__init__()
        self.alpha = alpha
        self.beta = Parameter(Tensor(np.full((1,), beta, np.float32)), name="beta", requires_grad=learn_beta)

    def construct(self, embeddings: Tensor, anchors: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        a = ops.gather(embeddings, anchors, 0)
        d_ap = ops.sqrt(ops.sum(ops.square(ops.gather(embeddings, positives, 0) - a), dim=1) + DISTANCE_EPS)
        d_an = ops.sqrt(ops.sum(ops.square(ops.gather(embeddings, negatives, 0) - a), dim=1) + DISTANCE_EPS)
        pos = ops.relu(d_ap - self.beta + self.alpha)
        neg = ops.relu(self.beta - d_an + self.alpha)
        active = ops.cast(pos > 0, ms.float32).sum() + ops.cast(neg > 0, ms.float32).sum()
        return (pos + neg).sum() / ops.maximum(active, 1.0)


class MultigrainLoss(nn.Cell):
    """L = lambda * CE(logits, labels) + (1 - lambda) * margin loss on the L2-normalised features.

    ``construct(logits [B, K] f32, features [B, D] f32 (raw GeM output), labels [B] int32,
    anchors, positives, negatives [P] int32 from ``sample_pairs``)`` returns
    ``(loss, ce, margin)``, scalars; the index triples are data (no gradient), everything else is
    differentiable, beta included when learnt (``self.margin.beta``, saved as ``margin.beta``).
    """

    def __init__(self, lam: float = LAMBDA, alpha: float = ALPHA, beta: float = BETA, learn_beta: bool = True):
        super().__init__()
        self.lam = lam
        self.margin = MarginLoss(alpha, beta, learn_beta)

    def construct(self, logits: Tensor, features: Tensor, labels: Tensor, anchors: Tensor, positives: Tensor,
                  negatives: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ce = ops.cross_entropy(logits, labels)
        margin = self.margin(l2_normalize(features), anchors, positives, negatives)
        return self.lam * ce + (1.0 - self.lam) * margin, ce, margin


# ---- distance-weighted sampling (NumPy, on detached embeddings) ---------------------------------
def _normalized(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), NORM_EPS)


def negative_weights(embeddings: np.ndarray, instance_ids: np.ndarray, cutoff: float = CUTOFF,
                     nonzero_loss_cutoff: float | None = NONZERO_LOSS_CUTOFF) -> np.ndarray:
    """[B, B] row-stochastic probabilities of drawing column j as the negative of anchor i.

    Proportional to 1 / q(d) with q(d) = d^(n-2) (1 - d^2/4)^((n-3)/2), the density of pairwise
    distances of points uniform on the unit sphere in n = D dimensions, so negatives are drawn
    evenly over distance instead of crowding near sqrt(2). d is clipped below at ``cutoff``;
    only other instances closer than ``nonzero_loss_cutoff`` (None: no limit) are candidates. A
    row with no candidate falls back to uniform over other instances (as the reference code).
    Computed in float64 logs, normalised per row.
    """
    x = _normalized(embeddings)
    ids = np.asarray(instance_ids).reshape(-1)
    n = x.shape[1]
    sq = np.maximum(2.0 - 2.0 * (x @ x.T), 0.0)  # unit rows: ||a - b||^2 = 2 - 2 a.b
    d = np.maximum(np.sqrt(sq), cutoff)
    # 1 - d^2/4 reaches 0 only for antipodal points; the floor keeps the log finite there.
    log_w = (2.0 - n) * np.log(d) - 0.5 * (n - 3.0) * np.log(np.maximum(1.0 - 0.25 * d * d, 1e-12))
    other = ids[:, None] != ids[None, :]
    allowed = other if nonzero_loss_cutoff is None else other & (d < nonzero_loss_cutoff)
    log_w = np.where(allowed, log_w, -np.inf)
    row_max = log_w.max(axis=1, keepdims=True)
    weights = np.where(allowed, np.exp(log_w - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
    empty = ~allowed.any(axis=1)
    weights[empty] = other[empty]
    totals = weights.sum(axis=1, keepdims=True)
    if np.any(totals == 0):
        raise ValueError("an anchor has no other instance in the batch to draw a negative from")
    return weights / totals


def sample_pairs(embeddings: np.ndarray, instance_ids: np.ndarray, rng: np.random.Generator,
                 cutoff: float = CUTOFF, nonzero_loss_cutoff: float | None = NONZERO_LOSS_CUTOFF
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchors, positives, negatives) int32 index arrays into the batch, one triple per ordered
    (anchor, positive) pair of the same instance; the anchor's negatives are drawn from
    ``negative_weights`` without replacement where there are enough candidates (with replacement
    otherwise). With every instance ``m`` times in a batch of B there are B (m - 1) triples.
    Anchors in batch order, positives ascending: the arrays depend only on the inputs and ``rng``.
    """
    ids = np.asarray(instance_ids).reshape(-1)
    probs = negative_weights(embeddings, ids, cutoff, nonzero_loss_cutoff)
    anchors, positives, negatives = [], [], []
    for i in range(len(ids)):
        same = np.flatnonzero((ids == ids[i]) & (np.arange(len(ids)) != i))
        if not len(same):
            continue
        replace = np.count_nonzero(probs[i]) < len(same)
        negatives.extend(rng.choice(len(ids), size=len(same), replace=replace, p=probs[i]))
        anchors.extend([i] * len(same))
        positives.extend(same)
    return tuple(np.asarray(v, np.int32) for v in (anchors, positives, negatives))


def multigrain_forward(net: MultigrainNet, loss_fn: MultigrainLoss, images: Tensor, labels: Tensor,
                       instance_ids: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One differentiable forward pass with in-pass sampling, for ``ms.value_and_grad(...,
    has_aux=True)`` in PyNative mode: returns ``(loss, (ce, margin))``. The sampler reads the
    features through ``stop_gradient`` and ``asnumpy`` (PyNative only; a graph-mode step gets its
    triples from a separate forward pass and passes them to ``MultigrainLoss`` as inputs).
    """
    logits, features = net.forward_with_features(images)
    triples = sample_pairs(ops.stop_gradient(features).asnumpy(), instance_ids, rng)
    loss, ce, margin = loss_fn(logits, features, labels, *(Tensor(t) for t in triples))
    return loss, (ce, margin)


# ---- repeated-augmentation batches --------------------------------------------------------------
class RepeatedAugmentationSampler:
    """Batches of dataset indices in which each chosen image appears ``repeats`` times in a row.

    Each epoch visits every image at most once, in a permutation drawn from
    ``np.random.default_rng((seed, epoch))``, ``batch_size // repeats`` images per batch, so a
    batch, and hence its instance ids (the indices themselves), depends only on (seed, epoch,
    batch number): a resumed run sees the same batches. The loader applies an independent
    augmentation to every copy, and the indices are the instance ids ``sample_pairs`` needs.
    With ``drop_last=False`` a smaller last batch is kept if it has at least two images (one
    image alone has no negative). Plain Python: usable as a torch ``batch_sampler`` too.
    """

    def __init__(self, num_images: int, batch_size: int, repeats: int = REPEATS, seed: int = 0,
                 drop_last: bool = True):
        if repeats < 2:
            raise ValueError("repeats must be >= 2: the margin loss needs two copies of an image")
        if batch_size % repeats or batch_size < 2 * repeats:
            raise ValueError(f"batch_size {batch_size} must be a multiple of repeats {repeats} with at "
                             "least two images (a negative needs another instance)")
        self.num_images, self.batch_size, self.repeats = num_images, batch_size, repeats
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0
        self.images_per_batch = batch_size // repeats
        if len(self) == 0:
            raise ValueError(f"{num_images} images give no full batch of {self.images_per_batch} images")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_images, self.images_per_batch)
        return full + (1 if rest >= 2 and not self.drop_last else 0)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng((self.seed, epoch)).permutation(self.num_images)
        k = self.images_per_batch
        chunks = [order[s:s + k] for s in range(0, len(self) * k, k)]
        return [[int(i) for i in chunk for _ in range(self.repeats)] for chunk in chunks]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.epoch_batches(self.epoch))

