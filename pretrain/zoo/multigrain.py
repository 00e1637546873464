"""The Multigrain recipe: cross-entropy plus a margin loss with distance-weighted sampling, on
batches that repeat augmented copies of each image (Berman et al. 2019; Wu et al. 2017).

A step. Every sample of the stream gives ``m`` views, one view group ``dict(repeat=m, ...)`` of
``data.views`` (m = 3 in the paper), so a batch of B images holds N = B m crops, each drawn with
its own random choices. ``prepare_batch`` interleaves them (the m copies of an image adjacent,
as ``RepeatedAugmentationSampler`` lays them out), repeats the labels, and gives each crop the
instance id of its source image (its position in the batch). Then, in one forward pass:

    logits, features = model.forward_with_features(crops)        # GeM features [N, D]
    negatives = distance_weighted_negatives(stop_gradient(features), ids, gumbel, m - 1)
    loss = lambda CE(logits, labels) + (1 - lambda) margin(l2n(features), anchors, positives, negatives)

with one (anchor, positive) pair per ordered pair of copies of an image, N (m - 1) in all, and
beta (the margin's boundary, ``margin.beta``) learnt with the network.

Sampling inside the step. The reference code (and ``multigrain.sample_pairs``) reads the
embeddings out of the forward pass to NumPy and draws each anchor's m - 1 negatives with
``np.random.choice(p=weights, replace=False)``. That needs an eager step, and a compiled step
would need a second forward pass to get the embeddings first. Here the draw happens inside the
compiled step, with the Gumbel-top-k trick: with keys ``log w_ij + g_ij`` (g standard Gumbel
noise), the k largest keys of row i are distributed exactly as k draws without replacement from
w_i in draw order (Vieira 2014; Kool et al. 2019), so the draws have the reference's
distribution, with no second pass and no host round trip. ``log w`` is
``multigrain.negative_weights`` in MindSpore ops (float32; the tests hold it to the NumPy
float64 version). The noise is data: ``prepare_batch`` draws it from the step's generator
(seeded by (seed, step)), so a resumed run draws the same negatives, in graph and PyNative mode
alike. One difference: where a row has fewer than m - 1 candidates (other instances closer than
``nonzero_loss_cutoff``; at least one, else all other instances are), NumPy draws the rest with
replacement and this sampler repeats the top candidate; with m = 3 the two agree exactly
(one candidate: both negatives are that one).

Measured (CPU, 2 shared cores, the demo's ResNet-18, 8 images x 3 copies at 64 px, median of 11
steps): compiled step with this sampler 1.35 s, eager step with it 1.36 s, eager step with the
NumPy reference (``multigrain.multigrain_forward``) 1.35 s; a compiled forward pass alone, what a
separate sampling pass would add, 0.24 s (+17 %). On a CPU the convolutions dominate and the three
are equal; the compiled step is what Ascend needs (graph mode, no host round trip mid-step).
"""
from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import ops  # module level: the loss is compiled by ms.jit, which cannot parse imports

from pretrain.config import ConfigError
from pretrain.zoo.recipes import Recipe, RunInfo, build_model

NEG_INF = -1e30  # the key of a pair that can never be a negative (finite: no inf - inf = nan)


@dataclass(frozen=True)
class MultigrainOptions:
    """The config's ``multigrain`` section (defaults: the paper's values)."""

    lam: float = 0.5                   # weight of cross-entropy; the margin loss gets 1 - lam
    alpha: float = 0.2                 # margin
    beta: float = 1.2                  # initial boundary between positive and negative distances
    learn_beta: bool = True
    cutoff: float = 0.5                # distances are clipped up to this before weighting
    nonzero_loss_cutoff: float | None = 1.4  # farther negatives give no loss: never drawn

    @classmethod
    def from_config(cls, section: dict) -> "MultigrainOptions":
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"multigrain: unknown keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        options = cls(**section)
        if not 0.0 <= options.lam <= 1.0:
            raise ConfigError(f"multigrain.lam must be in [0, 1], got {options.lam!r}")
        if options.alpha < 0 or options.cutoff < 0:
            raise ConfigError("multigrain.alpha and multigrain.cutoff must be >= 0")
        return options


def pair_indices(num_images: int, repeats: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(instance ids [N], anchors [N (m - 1)], positives [N (m - 1)]) int32 for a batch of
    ``num_images`` images with their ``repeats`` copies adjacent: every anchor with each other copy
    of its image, anchors in batch order and positives ascending (as ``sample_pairs``)."""
    ids = np.repeat(np.arange(num_images, dtype=np.int32), repeats)
    anchors, positives = [], []
    for i in range(len(ids)):
        for j in range(ids[i] * repeats, (ids[i] + 1) * repeats):
            if j != i:
                anchors.append(i)
                positives.append(j)
    return ids, np.asarray(anchors, np.int32), np.asarray(positives, np.int32)


def negative_log_weights(embeddings, ids, cutoff: float, nonzero_loss_cutoff: float | None):
    """(log w [N, N], candidates [N, N] bool): ``multigrain.negative_weights`` in MindSpore ops,
    unnormalised and in logs. Row i holds the log-probability (up to a constant) of drawing
    column j as anchor i's negative: 1 / q(d), q the density of distances between points uniform
    on the unit sphere of the embedding's dimension; rows without a candidate closer than
    ``nonzero_loss_cutoff`` fall back to uniform over the other instances (log w = 0)."""
    norm = ops.sqrt((embeddings * embeddings).sum(axis=1, keepdims=True))
    x = embeddings / ops.maximum(norm, 1e-12)
    dim = x.shape[1]
    squared = ops.maximum(2.0 - 2.0 * ops.matmul(x, x.T), 0.0)  # unit rows: ||a - b||^2 = 2 - 2 a.b
    d = ops.maximum(ops.sqrt(squared), cutoff)
    log_w = (2.0 - dim) * ops.log(d) - 0.5 * (dim - 3.0) * ops.log(ops.maximum(1.0 - 0.25 * d * d, 1e-12))
    other = ops.expand_dims(ids, 1) != ops.expand_dims(ids, 0)
    if nonzero_loss_cutoff is None:
        return log_w, other
    allowed = ops.logical_and(other, d < nonzero_loss_cutoff)
    empty = ops.logical_not(ops.any(allowed, 1, True))  # [N, 1]: no candidate in reach
    return ops.where(empty, ops.zeros_like(log_w), log_w), ops.logical_or(allowed, ops.logical_and(empty, other))


def distance_weighted_negatives(embeddings, ids, gumbel, k: int, cutoff: float, nonzero_loss_cutoff: float | None):
    """[N k] int32 negatives, row-major (anchor i's k draws, in draw order), by Gumbel-top-k on
    ``log w + gumbel``; a row with fewer than k candidates repeats its first draw."""
    log_w, candidates = negative_log_weights(embeddings, ids, cutoff, nonzero_loss_cutoff)
    keys = ops.where(candidates, log_w + gumbel, ops.full_like(log_w, NEG_INF))
    top, index = ops.topk(keys, k, 1)
    index = ops.where(top > 0.5 * NEG_INF, index, index[:, :1].broadcast_to(index.shape))
    return ops.cast(index, ms.int32).reshape(-1)


class MultigrainRecipe(Recipe):
    """lambda CE + (1 - lambda) margin loss on m augmented copies of each image (see the module doc)."""

    name = "multigrain"

    def __init__(self, cfg: dict, run: RunInfo):
        super().__init__(cfg, run)
        groups = self.view_maker.groups
        if len(groups) != 1 or groups[0].repeat < 2:
            raise ConfigError("the multigrain recipe takes one view group with repeat >= 2 (m augmented copies "
                              f"of each image); data.views gives repeats {[g.repeat for g in groups]}")
        if run.batch_size < 2:
            raise ConfigError("the multigrain recipe needs at least 2 images per batch (a negative is another image)")
        mix = cfg.get("mix") or {}
        if mix.get("mixup") or mix.get("cutmix") or mix.get("label_smoothing"):
            raise ConfigError("the multigrain recipe takes no mixup, cutmix or label smoothing (mix.*): a mixed "
                              "image has no single instance")
        self.repeats = groups[0].repeat
        self.options = MultigrainOptions.from_config(cfg.get("multigrain") or {})
        self.ids, self.anchors, self.positives = pair_indices(run.batch_size, self.repeats)

    def build(self) -> dict:
        from pretrain.models.multigrain import MultigrainLoss

        o = self.options
        model = build_model(self.cfg["model"], self.run.num_classes)
        if not hasattr(model, "forward_with_features"):
            raise ConfigError(f"model.family {self.cfg['model']['family']!r} has no forward_with_features: the "
                              "multigrain recipe trains a Multigrain network")
        # parameter "margin.beta": the converter drops it (converters/rules/zoo_multigrain.py)
        self.cells = {"model": model, "loss": MultigrainLoss(o.lam, o.alpha, o.beta, o.learn_beta)}
        return self.cells

    def trainable_params(self) -> list:
        return self.cells["model"].trainable_params() + self.cells["loss"].trainable_params()

    def prepare_batch(self, views: list[np.ndarray], labels: np.ndarray,
                      rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        crops = np.stack(views, axis=1)  # [B, m, C, H, W]: the copies of an image adjacent
        crops = crops.reshape(-1, *crops.shape[2:])
        n = len(crops)
        gumbel = rng.gumbel(size=(n, n)).astype(np.float32)  # the step's draws: a function of (seed, step)
        return [crops], [np.repeat(labels.astype(np.int32), self.repeats), self.ids, self.anchors, self.positives,
                         gumbel]

    def loss(self, views: tuple, targets: tuple) -> tuple:
        labels, ids, anchors, positives, gumbel = targets
        logits, features = self.cells["model"].forward_with_features(views[0])
        negatives = distance_weighted_negatives(ops.stop_gradient(features), ids, gumbel, self.repeats - 1,
                                                self.options.cutoff, self.options.nonzero_loss_cutoff)
        loss, ce, margin = self.cells["loss"](logits, features, labels, anchors, positives, negatives)
        return loss, (ce, margin, logits)

    def metrics(self, loss: float, aux: list[np.ndarray], labels: np.ndarray, targets: list[np.ndarray]) -> dict:
        ce, margin, logits = aux
        return {"losses": {"ce": float(ce), "margin": float(margin)},
                "top1": float(np.mean(logits.argmax(-1) == targets[0])),
                "beta": float(self.cells["loss"].margin.beta.asnumpy()[0]),
                "gem_p": float(self.cells["model"].pool.p.asnumpy()[0])}
