"""Change detection on mmsegmentation 1.x: a siamese segmentor, BIT's head, data transforms and a metric.

BIT (Chen, Qi & Shi, "Remote Sensing Image Change Detection with Transformers", 2021) turns
the features of each date into a few semantic tokens, relates the tokens of both dates with
a transformer encoder, projects the refined tokens back onto each date's pixels with a
transformer decoder, and classifies the absolute difference of the two refined maps.
Written here from the paper, in mmseg's vocabulary:

- ``SiameseEncoderDecoder``: the input is both dates stacked on channels ([B, 2C, H, W], as
  mmseg's ``ConcatCDInput`` makes it). It runs ONE backbone on both dates in one batch
  ([2B, C, H, W]: shared weights, shared batch statistics), a neck, then the decode head on
  the pair of per-date feature maps.
- ``ScaleFusionNeck``: fuses a backbone's multi-scale outputs into one stride-4 map per date
  (lateral 1x1 convs, upsampling, sum, a 3x3 conv), the role of BIT's upsampled ResNet stage.
- ``BITHead``: semantic tokenizer (spatial attention pooling into ``token_len`` tokens per
  date), transformer encoder over the 2 x token_len tokens with a learned position
  embedding, transformer decoder per date (pixels attend to their date's tokens), |A - B|,
  a conv classifier (unchanged / changed); mmseg's head base resizes logits to the input and
  applies the cross-entropy loss.
- ``LoadImagePairFromFile``: the two dates from ``img_path`` / ``img_path2`` in R, G, B order,
  the keys of mmseg's ``LoadMultipleRSImageFromFile`` (which needs GDAL, not installed here).
- ``BinarizeChangeMask``: LEVIR-CD's 0/255 PNG labels and CDD's noisy 0/255 JPEG masks -> 0/1.
- ``ChangeDetectionMetric``: confusion counts of the change class -> ``change/F1``,
  ``change/IoU``, ``change/precision``, ``change/recall`` and ``OA``, in percent.

Importing this module registers all of them in mmseg's registries (configs list it in
``custom_imports``).
"""
from __future__ import annotations

from typing import Sequence

import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import METRICS, MODELS, TRANSFORMS
from torch import Tensor, nn

IGNORE_INDEX = 255


# ---- model -----------------------------------------------------------------------------
@MODELS.register_module()
class SiameseEncoderDecoder(EncoderDecoder):
    """EncoderDecoder for bi-temporal input: both dates through one backbone, in one batch.

    ``inputs`` is [B, 2C, H, W] (date A's C channels, then date B's). ``extract_feat`` returns
    ``[features_a, features_b]``, each [B, C', h, w], the neck's (last) output per date.
    """

    def extract_feat(self, inputs: Tensor) -> list[Tensor]:
        if inputs.shape[1] % 2:
            raise ValueError(f"change detection input needs 2 x C channels (two dates), got {inputs.shape[1]}")
        date_a, date_b = inputs.chunk(2, dim=1)
        # One pass with the dates as one batch: identical weights (and BN statistics) for both.
        feats = self.backbone(torch.cat([date_a, date_b], dim=0))
        if self.with_neck:
            feats = self.neck(feats)
        fused = feats[-1] if isinstance(feats, (list, tuple)) else feats
        return list(fused.chunk(2, dim=0))


@MODELS.register_module()
class ScaleFusionNeck(BaseModule):
    """Fuse multi-scale maps into one map at the finest scale: lateral 1x1, upsample, sum, 3x3.

    Args:
        in_channels: widths of the backbone outputs (the task's fit_heads sets them for RingMoE).
        out_channels: width of the fused map (BIT uses 32).
        channels: width of the laterals (default: out_channels).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 32, channels: int | None = None,
                 norm_cfg: dict | None = None, align_corners: bool = False, init_cfg: dict | None = None):
        super().__init__(init_cfg=init_cfg)
        channels = channels or out_channels
        norm_cfg = norm_cfg or dict(type="BN", requires_grad=True)
        self.in_channels = list(in_channels)
        self.align_corners = align_corners
        self.laterals = nn.ModuleList(
            ConvModule(c, channels, 1, norm_cfg=norm_cfg, act_cfg=None) for c in self.in_channels)
        self.fuse = ConvModule(channels, out_channels, 3, padding=1, norm_cfg=norm_cfg)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor]:
        if len(inputs) != len(self.laterals):
            raise ValueError(f"ScaleFusionNeck expects {len(self.laterals)} maps, got {len(inputs)}")
        size = inputs[0].shape[2:]
        fused = sum(F.interpolate(lateral(x), size=size, mode="bilinear", align_corners=self.align_corners)
                    if x.shape[2:] != size else lateral(x) for lateral, x in zip(self.laterals, inputs))
        return (self.fuse(fused),)


class _Attention(nn.Module):
    """Multi-head attention with its own inner width (heads x head_dim), as in BIT's transformer."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.proj = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        def heads(t: Tensor) -> Tensor:  # [B, N, heads*d] -> [B, heads, N, d]
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        k, v = self.to_kv(context).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(k), heads(v))
        return self.proj(out.transpose(1, 2).flatten(2))


class _Layer(nn.Module):
    """Pre-norm transformer layer: x + MA(LN(x), LN(context)), then x + MLP(LN(x)).

    With ``context=None`` it is the encoder's self-attention layer; with tokens as context it
    is BIT's decoder layer (pixel queries, token keys and values).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float = 0.0,
                 cross: bool = False):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = _Attention(dim, heads, head_dim, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        q = self.norm_q(x)
        kv = q if context is None else self.norm_kv(context)
        x = x + self.attn(q, kv)
        return x + self.mlp(self.norm_mlp(x))


@MODELS.register_module()
class BITHead(BaseDecodeHead):
    """The bitemporal image transformer head (BIT) on a pair of per-date feature maps.

    Args:
        in_channels: width C of each date's map (the neck's out_channels).
        channels: width of the classifier's hidden conv.
        token_len: semantic tokens per date (L, 4 in the paper).
        enc_depth / dec_depth: transformer encoder / decoder layers (1 and 8 in the paper's BIT).
        heads, head_dim, mlp_ratio: transformer sizes (8 heads of 64, MLP 2C in the paper's code).
        Other arguments are mmseg's BaseDecodeHead's (num_classes=2, loss_decode, ...).
    """

    def __init__(self, token_len: int = 4, enc_depth: int = 1, dec_depth: int = 8, heads: int = 8,
                 head_dim: int = 64, mlp_ratio: float = 2.0, attn_dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        dim = self.in_channels
        mlp_dim = int(dim * mlp_ratio)
        self.token_len = token_len
        # Tokenizer: one spatial attention map per token (1x1 conv), softmax over the pixels.
        self.token_attention = nn.Conv2d(dim, token_len, 1, bias=False)
        self.token_pos = nn.Parameter(torch.zeros(1, 2 * token_len, dim))
        nn.init.trunc_normal_(self.token_pos, std=0.02)
        self.encoder = nn.ModuleList(
            _Layer(dim, heads, head_dim, mlp_dim, attn_dropout) for _ in range(enc_depth))
        self.decoder = nn.ModuleList(
            _Layer(dim, heads, head_dim, mlp_dim, attn_dropout, cross=True) for _ in range(dec_depth))
        self.classifier = ConvModule(dim, self.channels, 3, padding=1, norm_cfg=self.norm_cfg,
                                     act_cfg=self.act_cfg)

    def tokenize(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, L, C]: each token is an attention-weighted average of the pixels."""
        attention = self.token_attention(x).flatten(2).softmax(dim=-1)  # [B, L, HW]
        return torch.einsum("bln,bcn->blc", attention, x.flatten(2))

    def encode(self, tokens_a: Tensor, tokens_b: Tensor) -> tuple[Tensor, Tensor]:
        """Relate both dates' tokens in one sequence of 2L; split them back per date."""
        tokens = torch.cat([tokens_a, tokens_b], dim=1) + self.token_pos
        for layer in self.encoder:
            tokens = layer(tokens)
        return tokens[:, :self.token_len], tokens[:, self.token_len:]

    def decode(self, x: Tensor, tokens: Tensor) -> Tensor:
        """Project a date's refined tokens back onto its pixels: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        pixels = x.flatten(2).transpose(1, 2)  # [B, HW, C]: every pixel is a query
        for layer in self.decoder:
            pixels = layer(pixels, tokens)
        return pixels.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """``inputs`` = [features of date A, features of date B] -> change logits at their scale."""
        x_a, x_b = inputs
        tokens_a, tokens_b = self.encode(self.tokenize(x_a), self.tokenize(x_b))
        difference = torch.abs(self.decode(x_a, tokens_a) - self.decode(x_b, tokens_b))
        return self.cls_seg(self.classifier(difference))


# ---- data ------------------------------------------------------------------------------
@TRANSFORMS.register_module()
class LoadImagePairFromFile(BaseTransform):
    """Load both dates of a change pair (``img_path``, ``img_path2``) as R, G, B arrays.

    Same output keys as mmseg's ``LoadMultipleRSImageFromFile`` (``img``, ``img2``,
    ``img_shape``, ``ori_shape``), so ``ConcatCDInput`` follows it; reads PNG/JPEG through
    mmcv instead of GDAL. Channel order is R, G, B (the checkpoint's band order; GDAL's too).
    """

    def __init__(self, to_float32: bool = True, imdecode_backend: str = "cv2"):
        self.to_float32 = to_float32
        self.imdecode_backend = imdecode_backend

    def _read(self, path: str) -> np.ndarray:
        image = mmcv.imfrombytes(fileio.get(path), flag="color", channel_order="rgb",
                                 backend=self.imdecode_backend)
        if image is None:
            raise OSError(f"unable to read image {path}")
        return image.astype(np.float32) if self.to_float32 else image

    def transform(self, results: dict) -> dict:
        img, img2 = self._read(results["img_path"]), self._read(results["img_path2"])
        if img.shape != img2.shape:
            raise ValueError(f"the dates differ in shape: {img.shape} ({results['img_path']}) vs "
                             f"{img2.shape} ({results['img_path2']})")
        results.update(img=img, img2=img2, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(to_float32={self.to_float32})"


@TRANSFORMS.register_module()
class BinarizeChangeMask(BaseTransform):
    """``gt_seg_map`` > threshold -> 1 (changed), else 0: 0/255 masks, JPEG noise included.

    Runs after ``LoadAnnotations`` (which would treat a raw 255 as "ignore"). A mask saved with
    three channels (some CDD copies) counts a pixel as changed when any channel is above.
    """

    def __init__(self, threshold: int = 127):
        self.threshold = threshold

    def transform(self, results: dict) -> dict:
        mask = results["gt_seg_map"]
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        results["gt_seg_map"] = (mask > self.threshold).astype(np.uint8)
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(threshold={self.threshold})"


# ---- metric ----------------------------------------------------------------------------
def change_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """F1, IoU, precision, recall of the change class and overall accuracy, in percent.

    A ratio with nothing to count (no predicted change for precision, no true change for recall,
    neither for F1/IoU) is NaN rather than a made-up 0 or 100.
    """
    def ratio(num: float, den: float) -> float:
        return 100.0 * num / den if den else float("nan")

    return {"change/F1": ratio(2 * tp, 2 * tp + fp + fn), "change/IoU": ratio(tp, tp + fp + fn),
            "change/precision": ratio(tp, tp + fp), "change/recall": ratio(tp, tp + fn),
            "OA": ratio(tp + tn, tp + fp + fn + tn)}


@METRICS.register_module()
class ChangeDetectionMetric(BaseMetric):
    """Accumulates the change class's confusion counts over the whole split (pixels pooled, as
    BIT and the LEVIR-CD literature report), then ``change_scores`` in percent.

    Args:
        change_index: label value of "changed" (1 after ``BinarizeChangeMask``).
        ignore_index: label value excluded from every count.
    """

    default_prefix = None

    def __init__(self, change_index: int = 1, ignore_index: int = IGNORE_INDEX,
                 collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.change_index = change_index
        self.ignore_index = ignore_index

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze()
            label = sample["gt_sem_seg"]["data"].squeeze().to(pred)
            valid = label != self.ignore_index
            p, t = pred[valid] == self.change_index, label[valid] == self.change_index
            self.results.append(np.array([(p & t).sum().item(), (p & ~t).sum().item(),
                                          (~p & t).sum().item(), (~p & ~t).sum().item()], np.int64))

    def compute_metrics(self, results: list) -> dict[str, float]:
        tp, fp, fn, tn = (int(v) for v in np.sum(results, axis=0))
        return change_scores(tp, fp, fn, tn)
