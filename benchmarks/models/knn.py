"""Nearest-neighbour evaluations of frozen features, for mmpretrain: k-NN classification and
instance-retrieval mAP.

``KNNClassifier`` + ``KNNHead``: DINO's k-NN protocol (Caron et al. 2021, ``eval_knn.py``). The
backbone (and neck) stay frozen; each image becomes one L2-normalised feature; a test image
takes its k = 20 most cosine-similar training features, and each neighbour votes for its label
with weight exp(cos / T), T = 0.07; the class scores are the normalised vote sums.

It fits mmengine's train-then-validate Runner (what ``benchmarks/run.py`` drives) as follows:

- ``train_step`` extracts the batch's features under ``torch.no_grad()`` and writes them, with
  their labels, into the head's bank at the rows of their dataset indices (``sample_idx``). It
  never touches the optimizer: the Runner builds one, and no step is ever taken on it. One
  training epoch (``EpochBasedTrainLoop``, ``max_epochs=1``, an unshuffled ``DefaultSampler``)
  fills the bank once; validation at the epoch's end votes over it.
- Rows are keyed by dataset index, so a second epoch overwrites the same rows: the bank is
  rebuilt, never appended to. The bank is made of non-persistent buffers: it is not in the
  state dict, so no checkpoint holds it, a resumed run starts from an empty bank and refills
  it, and predicting from an empty bank is an error, never a silent zero. (The configs keep no
  checkpoints: there are no trained weights to keep.)
- Frozen, four ways: every parameter has ``requires_grad=False``; features are computed under
  ``torch.no_grad()``; ``train()`` keeps the backbone and neck in eval mode (BatchNorm
  statistics, dropout and drop-path do not change); no optimizer step is taken.

``HolidaysAveragePrecision``: the INRIA Holidays protocol (``eval_holidays/holidays_map.py``)
over the output of mmpretrain's ``ImageToImageRetriever``, which scores each query against the
whole database by cosine similarity. The query's own database entry is removed from its ranking
(``db_index``), then mmpretrain's ``RetrievalAveragePrecision`` in its ``integrate`` mode gives the
query's AP (the trapezoidal rule of holidays_map.py) and mAP is its mean over the queries.
mmpretrain's metric alone cannot drop the query from its own ranking. ``Recall@k`` (mmpretrain's
``RetrievalRecall``, same ranking): the share of queries with a relevant image in their top k.

Importing this module registers ``KNNClassifier``, ``KNNHead`` and ``HolidaysAveragePrecision``
in mmpretrain's registries (configs list it in ``custom_imports``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks import compat  # noqa: F401  the torchvision shim must precede mmpretrain
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmpretrain.evaluation.metrics import RetrievalAveragePrecision, RetrievalRecall
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import METRICS, MODELS
from mmpretrain.structures import DataSample

__all__ = ["knn_vote", "KNNHead", "KNNClassifier", "holidays_average_precision", "HolidaysAveragePrecision"]


# ---- k-NN classification -------------------------------------------------------------------
def knn_vote(query: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int = 20,
             temperature: float = 0.07) -> Tensor:
    """[B, num_classes] class scores (each row sums to 1) of DINO's weighted k-NN vote.

    ``query`` [B, C] and ``bank`` [N, C] must be L2-normalised (a dot product is the cosine);
    ``bank_labels`` [N]. Each query's min(k, N) most similar bank rows vote for their label with
    weight exp(cos / temperature).
    """
    similarity = query @ bank.T
    top, index = similarity.topk(min(k, bank.shape[0]), dim=1)
    weights = (top / temperature).exp()
    votes = torch.zeros(query.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, bank_labels[index], weights)
    return votes / votes.sum(dim=1, keepdim=True)


@MODELS.register_module()
class KNNHead(BaseModule):
    """The feature bank and the vote. It has no parameters; its bank is non-persistent buffers.

    Args:
        num_classes: number of classes.
        in_channels: feature width, checked when features arrive (``benchmarks/run.py`` sets it
            from the backbone); None skips the check.
        k: neighbours per vote (DINO: 20).
        temperature: T of the vote weights exp(cos / T) (DINO: 0.07).
    """

    def __init__(self, num_classes: int, in_channels: int | None = None, k: int = 20,
                 temperature: float = 0.07, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_classes < 1 or k < 1 or temperature <= 0:
            raise ValueError(f"need num_classes >= 1, k >= 1 and temperature > 0; got {num_classes}, {k}, "
                             f"{temperature}")
        self.num_classes, self.in_channels, self.k, self.temperature = num_classes, in_channels, k, temperature
        # Row i holds training sample i (its dataset index); ``filled`` marks the rows written.
        self.register_buffer("bank", torch.zeros(0, in_channels or 0), persistent=False)
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("filled", torch.zeros(0, dtype=torch.bool), persistent=False)
        self._announced = -1  # bank size last written to the log

    @property
    def size(self) -> int:
        """Training features in the bank."""
        return int(self.filled.sum())

    def reset(self) -> None:
        """Empty the bank."""
        self.filled.zero_()

    def _check_width(self, features: Tensor) -> None:
        if features.dim() != 2:
            raise ValueError(f"k-NN needs one feature vector per image, got features of shape "
                             f"{tuple(features.shape)}: give the model a pooling neck")
        if self.in_channels is not None and features.shape[1] != self.in_channels:
            raise ValueError(f"features have {features.shape[1]} channels, the k-NN head expects "
                             f"in_channels={self.in_channels}")

    def _grow(self, rows: int, channels: int) -> None:
        """Room for ``rows`` rows (at least doubling, so filling N rows copies O(N) in total)."""
        old = self.bank.shape[0]
        rows = max(rows, 2 * old)
        bank = self.bank.new_zeros(rows, channels)
        labels = self.bank_labels.new_zeros(rows)
        filled = self.filled.new_zeros(rows)
        if old:  # an empty bank may not know its width yet (in_channels=None)
            bank[:old], labels[:old], filled[:old] = self.bank, self.bank_labels, self.filled
        self.bank, self.bank_labels, self.filled = bank, labels, filled

    @torch.no_grad()
    def memorise(self, features: Tensor, labels: Tensor, indices: Tensor) -> None:
        """Write L2-normalised ``features`` [B, C] and ``labels`` [B] at rows ``indices`` [B]
        (dataset indices): a row written again is replaced."""
        self._check_width(features)
        features = F.normalize(features.float(), dim=1)
        if self.bank.shape[0] and self.bank.shape[1] != features.shape[1]:
            raise ValueError(f"features have {features.shape[1]} channels, the bank holds {self.bank.shape[1]}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}, got {labels.tolist()}")
        needed = int(indices.max()) + 1
        if needed > self.bank.shape[0]:
            self._grow(needed, features.shape[1])
        self.bank[indices] = features
        self.bank_labels[indices] = labels
        self.filled[indices] = True

    @torch.no_grad()
    def scores(self, features: Tensor) -> Tensor:
        """[B, num_classes] vote scores of ``features`` [B, C] over the bank."""
        self._check_width(features)
        rows = self.filled.nonzero().squeeze(1)
        if rows.numel() == 0:
            raise RuntimeError("the k-NN bank is empty: no training epoch ran in this process (the bank is "
                               "rebuilt by training, never restored from a checkpoint)")
        if rows.numel() != self._announced:  # once per bank, so the log says what was voted over
            print_log(f"k-NN: {rows.numel()} training features of {self.bank.shape[1]} channels in the bank, "
                      f"k={self.k}, T={self.temperature}", logger="current")
            self._announced = rows.numel()
        query = F.normalize(features.float(), dim=1)
        return knn_vote(query, self.bank[rows], self.bank_labels[rows], self.num_classes, self.k,
                        self.temperature)


def _sample_indices(data_samples: Sequence[DataSample]) -> Tensor:
    indices = [s.get("sample_idx") for s in data_samples]
    if any(i is None for i in indices):
        raise ValueError("k-NN keys its bank by each training sample's dataset index: the pipeline's "
                         "PackInputs must keep 'sample_idx' in its meta_keys (its default does)")
    return torch.as_tensor(indices, dtype=torch.long)


def _single_labels(data_samples: Sequence[DataSample]) -> Tensor:
    labels = [s.gt_label for s in data_samples]
    if any(label.numel() != 1 for label in labels):
        raise ValueError("k-NN classification needs one label per training image")
    return torch.cat(labels).long()


@MODELS.register_module()
class KNNClassifier(ImageClassifier):
    """A frozen backbone (+ neck) and a ``KNNHead``; see the module docstring for the protocol.

    Args as mmpretrain's ``ImageClassifier``; ``head`` is a ``KNNHead`` config.
    """

    def __init__(self, backbone: dict, head: dict, neck: dict | None = None, **kwargs) -> None:
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        if not isinstance(self.head, KNNHead):
            raise TypeError(f"KNNClassifier needs a KNNHead, got {type(self.head).__name__}")
        self.requires_grad_(False)  # nothing here is trained

    def train(self, mode: bool = True) -> "KNNClassifier":
        """The Runner's train mode must not change the frozen features: backbone and neck stay in
        eval mode (BatchNorm keeps its statistics; dropout and drop-path stay off)."""
        super().train(mode)
        self.backbone.eval()
        if self.neck is not None:
            self.neck.eval()
        return self

    @torch.no_grad()
    def features(self, inputs: Tensor) -> Tensor:
        """[B, C] features: the last output of the neck (else of the backbone)."""
        feats = self.extract_feat(inputs)
        return feats[-1] if isinstance(feats, (tuple, list)) else feats

    def train_step(self, data: dict | tuple | list, optim_wrapper) -> dict[str, Tensor]:
        """Memorise the batch's features and labels; no loss, no gradient, no optimizer step."""
        data = self.data_preprocessor(data, False)  # no training-time batch augmentation
        samples = data["data_samples"]
        self.head.memorise(self.features(data["inputs"]), _single_labels(samples).to(self.head.bank.device),
                           _sample_indices(samples).to(self.head.bank.device))
        return {"bank_size": torch.tensor(float(self.head.size))}

    def loss(self, inputs: Tensor, data_samples: list[DataSample]) -> dict:
        raise RuntimeError("KNNClassifier has no loss: train_step memorises features instead")

    def predict(self, inputs: Tensor, data_samples: list[DataSample] | None = None,
                **kwargs) -> list[DataSample]:
        scores = self.head.scores(self.features(inputs))
        if data_samples is None:
            data_samples = [DataSample() for _ in range(scores.shape[0])]
        for sample, score in zip(data_samples, scores):
            sample.set_pred_score(score).set_pred_label(score.argmax(keepdim=True))
        return data_samples


# ---- instance retrieval (INRIA Holidays) ---------------------------------------------------
def holidays_average_precision(scores: Tensor, relevant: Sequence[int], query_index: int | None,
                               topk: Sequence[int] = ()) -> tuple[float, list[float]]:
    """(AP, [recall@k for k in topk]) of one query, in percent, by the Holidays protocol.

    ``scores`` [N]: the query's similarity to each database image; ``relevant``: database indices
    of its relevant images; ``query_index``: the query's own database index, removed from the
    ranking (None when the query is not in the database).
    """
    keep = torch.ones(scores.shape[0], dtype=torch.bool)
    if query_index is not None:
        keep[query_index] = False
    target = torch.zeros(scores.shape[0])
    target[torch.as_tensor(list(relevant), dtype=torch.long)] = 1
    if query_index is not None and target[query_index]:
        raise ValueError(f"database image {query_index} is the query itself, not one of its relevant images")
    pred, target = scores[keep].float()[None], target[keep][None]
    if not target.any():
        raise ValueError("a query without relevant images has no average precision")
    ranked = pred.shape[1]
    ap = RetrievalAveragePrecision.calculate(pred, target, topk=ranked, mode="integrate")
    recalls = RetrievalRecall.calculate(pred, target, topk=[min(k, ranked) for k in topk]) if topk else []
    return float(ap), [float(r) for r in recalls]


@METRICS.register_module()
class HolidaysAveragePrecision(BaseMetric):
    """mAP (and Recall@k) of instance retrieval by the INRIA Holidays protocol, in percent.

    Reads, per query data sample: ``pred_score`` (similarity to every database image, as
    ``ImageToImageRetriever`` sets it), ``gt_label`` (database indices of the relevant images)
    and the metainfo ``db_index`` (the query's own database index; the query pipeline's
    ``PackInputs`` must list it in ``meta_keys``). Outputs ``retrieval/mAP`` and
    ``retrieval/Recall@k`` for each k of ``topk``.
    """

    default_prefix: str | None = "retrieval"

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = "cpu", prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = tuple(topk)
        if any(k < 1 for k in self.topk):
            raise ValueError(f"topk must be positive, got {self.topk}")

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if "db_index" not in sample:
                raise KeyError("HolidaysAveragePrecision needs each query's 'db_index': add it to the query "
                               "pipeline's PackInputs meta_keys")
            ap, recalls = holidays_average_precision(sample["pred_score"].cpu(), sample["gt_label"].tolist(),
                                                     int(sample["db_index"]), self.topk)
            self.results.append((ap, recalls))

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = {"mAP": sum(ap for ap, _ in results) / len(results)}
        for i, k in enumerate(self.topk):
            metrics[f"Recall@{k}"] = sum(r[i] for _, r in results) / len(results)
        return metrics
