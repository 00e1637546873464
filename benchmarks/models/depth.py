"""Decode heads for height (nDSM) and depth estimation with mmseg 1.x's ``DepthEstimator``.

Two heads share one FPN-like pixel decoder, so that a comparison isolates what the bins add:

- ``BinsFormerHead``: BinsFormer (Li et al., "BinsFormer: Revisiting Adaptive Bins for Monocular
  Depth Estimation", 2022), written from the paper. N bin queries pass through a transformer
  decoder that cross-attends, layer by layer in turn, to the coarse levels of the pixel decoder
  (the multi-scale memory). From every query each layer predicts a bin width (softmax over the
  queries, so the N widths are positive and tile [min_depth, max_depth]) and a bin embedding.
  A pixel's bin probabilities are the softmax over queries of (pixel embedding . bin
  embedding), and its depth is the probability-weighted sum of the bin centres. Every
  decoder layer makes such a prediction: the last is the output, the earlier ones get the
  same SILog loss (the paper's deep supervision). The paper's other auxiliary term, a
  scene-classification query trained with cross-entropy, is not built: the ISPRS nDSM data
  have no scene labels.
- ``RegressionDepthHead``: the plain baseline, a 1-channel convolution on the same pixel
  decoder, squashed by a sigmoid into [min_depth, max_depth], trained with SILog.

Both are registered in mmseg's MODELS when this module is imported (configs list it in
``custom_imports``).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS


class BinPrediction(NamedTuple):
    """One decoder layer's prediction (h, w: the pixel embedding's size, 1/4 of the input)."""

    depth: Tensor    # [B, 1, h, w]: sum over bins of probs x centres
    centres: Tensor  # [B, N]: bin centres, increasing, inside [min_depth, max_depth]
    widths: Tensor   # [B, N]: positive bin widths that sum to max_depth - min_depth
    probs: Tensor    # [B, N, h, w]: per-pixel bin probabilities (softmax over N)


def sine_position_encoding(height: int, width: int, dim: int, device: torch.device) -> Tensor:
    """[height * width, dim] fixed 2-D sine/cosine encoding of normalised pixel positions (DETR)."""
    if dim % 4:
        raise ValueError(f"the position encoding needs a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    freq = 10000.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    y = (ys[:, None] / freq)[:, None, :].expand(height, width, quarter)
    x = (xs[:, None] / freq)[None, :, :].expand(height, width, quarter)
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1).reshape(height * width, dim)


class PixelDecoder(nn.Module):
    """FPN: 1x1 laterals, top-down sums, 3x3 smoothing; returns every level, finest first."""

    def __init__(self, in_channels: Sequence[int], channels: int, norm_cfg: dict | None) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(
            ConvModule(c, channels, 1, norm_cfg=norm_cfg, act_cfg=None) for c in in_channels)
        self.smooth = nn.ModuleList(
            ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg) for _ in in_channels)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        levels = [lateral(f) for lateral, f in zip(self.laterals, feats)]
        for i in range(len(levels) - 2, -1, -1):  # coarse to fine: each level gets the one above
            levels[i] = levels[i] + resize(levels[i + 1], size=levels[i].shape[2:], mode="bilinear",
                                           align_corners=False)
        return [smooth(level) for smooth, level in zip(self.smooth, levels)]


class _MLP(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


class BinQueryLayer(nn.Module):
    """One decoder layer: cross-attention to a memory level, self-attention, FFN (post-norm)."""

    def __init__(self, dim: int, num_heads: int, ffn_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_channels), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_channels, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor) -> Tensor:
        attended = self.cross_attn(query + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        query = self.norms[0](query + attended)
        q = query + query_pos
        query = self.norms[1](query + self.self_attn(q, q, query, need_weights=False)[0])
        return self.norms[2](query + self.ffn(query))


class _DepthHead(BaseDecodeHead):
    """What the two heads share: inputs, the depth range, the SILog loss, predict.

    ``BaseDecodeHead.__init__`` is skipped (as mmseg's VPDDepthHead does) because it builds a
    per-class classifier and a segmentation loss, which a depth head does not have. The
    attributes ``EncoderDecoder`` reads (align_corners, num_classes, out_channels) are set here.
    """

    aux_loss_weight = 0.0  # heads with intermediate predictions set their own

    def __init__(self, in_channels: Sequence[int], in_index: Sequence[int], channels: int,
                 min_depth: float, max_depth: float, norm_cfg: dict | None,
                 loss_decode: dict, align_corners: bool = False, init_cfg: dict | None = None) -> None:
        BaseModule.__init__(self, init_cfg=init_cfg)
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        self._init_inputs(list(in_channels), list(in_index), "multiple_select")
        self.channels = channels
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.align_corners = align_corners
        self.num_classes = self.out_channels = 1  # one depth channel
        self.loss_decode = MODELS.build(loss_decode)
        self.pixel_decoder = PixelDecoder(self.in_channels, channels, norm_cfg)

    def extra_repr(self) -> str:
        return f"in_index={self.in_index}, depth range=[{self.min_depth}, {self.max_depth}]"

    def _silog(self, pred: Tensor, gt: Tensor) -> Tensor:
        """The configured loss on a prediction upsampled to the ground truth's size."""
        pred = resize(pred, size=gt.shape[2:], mode="bilinear", align_corners=self.align_corners)
        return self.loss_decode(pred, gt)

    @staticmethod
    def _stack_batch_gt(batch_data_samples) -> Tensor:
        return torch.stack([sample.gt_depth_map.data for sample in batch_data_samples])

    def forward_train(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """Depth maps to supervise, the final one last."""
        return [self.forward(inputs)]

    def loss(self, inputs: Sequence[Tensor], batch_data_samples, train_cfg) -> dict[str, Tensor]:
        gt = self._stack_batch_gt(batch_data_samples)
        *auxiliary, final = self.forward_train(inputs)
        name = self.loss_decode.loss_name
        losses = {name: self._silog(final, gt)}
        for i, pred in enumerate(auxiliary):
            losses[f"{name}_aux{i}"] = self.aux_loss_weight * self._silog(pred, gt)
        return losses


@MODELS.register_module()
class RegressionDepthHead(_DepthHead):
    """The baseline: FPN pixel decoder, then a 1-channel map squashed into the depth range."""

    def __init__(self, in_channels: Sequence[int], in_index: Sequence[int] = (0, 1, 2, 3),
                 channels: int = 64, min_depth: float = 1e-3, max_depth: float = 30.0,
                 norm_cfg: dict | None = None, loss_decode: dict = dict(type="SiLogLoss"),
                 align_corners: bool = False, init_cfg: dict | None = None) -> None:
        super().__init__(in_channels, in_index, channels, min_depth, max_depth, norm_cfg, loss_decode,
                         align_corners, init_cfg)
        self.depth_conv = nn.Sequential(ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg),
                                        nn.Conv2d(channels, 1, 1))

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """[B, 1, H/4, W/4] depth in [min_depth, max_depth]."""
        finest = self.pixel_decoder(self._transform_inputs(inputs))[0]
        return self.min_depth + torch.sigmoid(self.depth_conv(finest)) * (self.max_depth - self.min_depth)


@MODELS.register_module()
class BinsFormerHead(_DepthHead):
    """BinsFormer: adaptive bins from transformer queries over multi-scale features.

    Args:
        in_channels, in_index: backbone levels, finest first (run.py sizes in_channels).
        channels: pixel decoder (FPN) width.
        embed_dim: query, memory and pixel embedding width (divisible by 4 and by num_heads).
        num_bins: N queries, one bin each.
        num_layers: decoder layers; each makes a prediction, all but the last supervised as
            auxiliary outputs with ``aux_loss_weight``.
        num_memory_levels: how many of the coarsest pixel-decoder levels form the memory; the
            layers visit them in turn, coarsest first.
    """

    def __init__(self, in_channels: Sequence[int], in_index: Sequence[int] = (0, 1, 2, 3),
                 channels: int = 64, embed_dim: int = 64, num_bins: int = 32, num_layers: int = 3,
                 num_heads: int = 4, ffn_channels: int = 128, num_memory_levels: int = 3,
                 dropout: float = 0.0, aux_loss_weight: float = 1.0, min_depth: float = 1e-3,
                 max_depth: float = 30.0, norm_cfg: dict | None = None,
                 loss_decode: dict = dict(type="SiLogLoss"), align_corners: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(in_channels, in_index, channels, min_depth, max_depth, norm_cfg, loss_decode,
                         align_corners, init_cfg)
        if not 1 <= num_memory_levels < len(self.in_channels):
            raise ValueError(f"num_memory_levels must be in [1, {len(self.in_channels) - 1}] (the finest "
                             f"level gives the pixel embeddings), got {num_memory_levels}")
        if num_bins < 2 or num_layers < 1:
            raise ValueError(f"need num_bins >= 2 and num_layers >= 1, got {num_bins}, {num_layers}")
        self.embed_dim, self.num_bins = embed_dim, num_bins
        self.num_memory_levels = num_memory_levels
        self.aux_loss_weight = aux_loss_weight
        self.pixel_embed = nn.Sequential(ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg),
                                         nn.Conv2d(channels, embed_dim, 1))
        self.memory_proj = nn.ModuleList(nn.Conv2d(channels, embed_dim, 1) for _ in range(num_memory_levels))
        self.level_embed = nn.Embedding(num_memory_levels, embed_dim)
        self.query_feat = nn.Embedding(num_bins, embed_dim)
        self.query_pos = nn.Embedding(num_bins, embed_dim)
        self.layers = nn.ModuleList(BinQueryLayer(embed_dim, num_heads, ffn_channels, dropout)
                                    for _ in range(num_layers))
        self.query_norm = nn.LayerNorm(embed_dim)
        self.width_head = _MLP(embed_dim, embed_dim, 1)
        self.bin_embed_head = _MLP(embed_dim, embed_dim, embed_dim)

    def _memory(self, pyramid: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """(tokens [B, hw, D], positions [hw, D]) per memory level, coarsest first."""
        levels = pyramid[::-1][:self.num_memory_levels]
        memory = []
        for i, (proj, fmap) in enumerate(zip(self.memory_proj, levels)):
            tokens = proj(fmap).flatten(2).transpose(1, 2) + self.level_embed.weight[i]
            memory.append((tokens, sine_position_encoding(*fmap.shape[2:], self.embed_dim, fmap.device)))
        return memory

    def _bins(self, query: Tensor, pixel: Tensor) -> BinPrediction:
        """Bins and depth from the queries' state [B, N, D] and the pixel embeddings [B, D, h, w]."""
        query = self.query_norm(query)
        span = self.max_depth - self.min_depth
        widths = torch.softmax(self.width_head(query).squeeze(-1), dim=1) * span
        centres = self.min_depth + torch.cumsum(widths, dim=1) - widths / 2
        logits = torch.einsum("bnd,bdhw->bnhw", self.bin_embed_head(query), pixel)
        probs = logits.softmax(dim=1)
        depth = torch.einsum("bnhw,bn->bhw", probs, centres).unsqueeze(1)
        return BinPrediction(depth, centres, widths, probs)

    def _decode(self, inputs: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """The queries' state after each decoder layer [B, N, D], and the pixel embeddings."""
        pyramid = self.pixel_decoder(self._transform_inputs(inputs))
        pixel = self.pixel_embed(pyramid[0])
        memory = self._memory(pyramid)
        batch = pixel.shape[0]
        query = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.query_pos.weight.unsqueeze(0).expand(batch, -1, -1)
        states = []
        for i, layer in enumerate(self.layers):
            tokens, pos = memory[i % len(memory)]
            query = layer(query, query_pos, tokens, pos.unsqueeze(0))
            states.append(query)
        return states, pixel

    def forward_bins(self, inputs: Sequence[Tensor]) -> list[BinPrediction]:
        """Every decoder layer's prediction, the final one last."""
        states, pixel = self._decode(inputs)
        return [self._bins(query, pixel) for query in states]

    def forward_train(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        return [p.depth for p in self.forward_bins(inputs)]

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """[B, 1, H/4, W/4] depth from the last decoder layer."""
        states, pixel = self._decode(inputs)
        return self._bins(states[-1], pixel).depth
