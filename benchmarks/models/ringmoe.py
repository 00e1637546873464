"""RingMoE backbone in PyTorch: the twin of ``pretrain/models/ringmoe.py`` for downstream use.

Pure torch (no OpenMMLab import), so the converter can build it to check coverage.
``benchmarks/models/registry.py`` registers it with mmpretrain, mmseg and mmdet.

Same numerics as the MindSpore model (``../shared/design/ringmoe.md``): post-norm residuals,
Swin-V1 attention with separate q/k/v and a relative-position table, LayerNorm eps 1e-6 (1e-4
in patch merging), tanh GELU, and the modal MoE (specialised experts of the chosen modality +
cross experts + shared FFN, top-1, combine weight 1.0, no capacity limit downstream).

Downstream additions that the pretrained model does not have: inputs of any size (padding to
the patch, the window and even maps, with padded keys masked out of attention), per-stage
output norms, and dense reductions of the experts (``moe_reduction``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6
MERGE_LN_EPS = 1e-4
MASK_VALUE = -100.0

MOE_REDUCTIONS = {
    None: "full MoE: specialised experts of the modality + cross experts + shared FFN",
    "shared": "one FFN per block: keep the shared FFN, drop all experts (the 1.06B giant layout)",
    "expert_mean": "dense: average the modality's experts and the cross experts into one FFN each, "
    "plus the shared FFN (three dense FFNs per block)",
    "top_expert": "dense: keep the modality's most-routed expert and the most-routed cross expert as "
    "plain FFNs, plus the shared FFN (three dense FFNs per block; needs routing statistics)",
}
# Reductions that turn each expert bank into one dense FFN (ffn.modal_dense, ffn.cross_dense).
DENSE_FROM_EXPERTS = ("expert_mean", "top_expert")

DEFAULT_MODALITY_CHANNELS = {"optical": 3, "sar_l1": 8, "sar_l2": 3, "msi": 4}


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# ---- routing and experts -----------------------------------------------------------------
def top1_route(tokens: torch.Tensor, router_weight: torch.Tensor, capacity: int | None = None):
    """Top-1 routing in fp32. Returns (expert [T], probs [T, E], kept [T]).

    A token's slot is the running count of earlier tokens routed to the same expert; with a
    capacity, tokens whose slot reaches it are dropped (their expert branch adds zero).
    """
    probs = torch.softmax(F.linear(tokens.float(), router_weight.float()), dim=-1)
    expert = probs.argmax(dim=-1)
    if capacity is None:
        return expert, probs, torch.ones_like(expert, dtype=torch.bool)
    onehot = F.one_hot(expert, router_weight.shape[0])
    slot = (onehot.cumsum(0) * onehot).sum(-1) - 1
    return expert, probs, slot < capacity


class StackedLinear(nn.Module):
    """E linears stacked on a leading axis: weight [E, in, out], bias [E, out].

    [in, out] (``y = x @ W + b``) is MindSpore's layout for the experts, kept here so that
    converting them is a plain copy: the expert weights are most of a RingMoE checkpoint, and
    transposing them was the largest CPU cost of a conversion.
    """

    def __init__(self, num: int, dim_in: int, dim_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim_in, dim_out))
        self.bias = nn.Parameter(torch.zeros(num, dim_out))
        nn.init.trunc_normal_(self.weight, std=0.02)


class ExpertBank(nn.Module):
    """E expert FFNs (Linear, tanh GELU, Linear); each token runs through its chosen expert."""

    def __init__(self, num_experts: int, dim: int, hidden: int):
        super().__init__()
        self.num_experts = num_experts
        self.fc1 = StackedLinear(num_experts, dim, hidden)
        self.fc2 = StackedLinear(num_experts, hidden, dim)

    def forward(self, tokens: torch.Tensor, expert: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        out = tokens.new_zeros(tokens.shape)
        for e in range(self.num_experts):
            idx = torch.nonzero((expert == e) & kept).squeeze(1)
            if idx.numel() == 0:
                continue
            h = gelu_tanh(torch.addmm(self.fc1.bias[e], tokens[idx], self.fc1.weight[e]))
            out.index_copy_(0, idx, torch.addmm(self.fc2.bias[e], h, self.fc2.weight[e]))
        return out


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class ModalMoE(nn.Module):
    """Specialised experts (per built modality) + cross experts + shared FFN, summed unweighted."""

    def __init__(self, dim: int, hidden: int, num_experts: int, modalities: Sequence[str],
                 reduction: str | None = None):
        super().__init__()
        self.reduction = reduction
        self.shared = FFN(dim, hidden)
        if reduction is None:
            self.modal_experts = nn.ModuleDict({m: ExpertBank(num_experts, dim, hidden) for m in modalities})
            self.modal_routers = nn.ModuleDict({m: nn.Linear(dim, num_experts, bias=False) for m in modalities})
            self.cross_experts = ExpertBank(num_experts, dim, hidden)
            self.cross_router = nn.Linear(dim, num_experts, bias=False)
        elif reduction in DENSE_FROM_EXPERTS:
            self.modal_dense = FFN(dim, hidden)
            self.cross_dense = FFN(dim, hidden)
        elif reduction != "shared":
            raise ValueError(f"unknown moe_reduction {reduction!r}; choose from {list(MOE_REDUCTIONS)}")
        self.last_routing: dict | None = None

    def forward(self, x: torch.Tensor, modality: str, capacity_factor: float | None = None,
                record_routing: bool = False) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        out = self.shared(tokens)
        if self.reduction in DENSE_FROM_EXPERTS:
            out = out + self.modal_dense(tokens) + self.cross_dense(tokens)
        elif self.reduction is None:
            routing = {}
            for name, bank, router in (
                ("special", self.modal_experts[modality], self.modal_routers[modality]),
                ("cross", self.cross_experts, self.cross_router),
            ):
                cap = None
                if capacity_factor is not None:
                    cap = math.ceil(tokens.shape[0] * capacity_factor / bank.num_experts)
                expert, probs, kept = top1_route(tokens, router.weight, cap)
                out = out + bank(tokens, expert, kept)
                if record_routing:
                    routing[name] = {"expert": expert, "probs": probs, "kept": kept}
            self.last_routing = routing if record_routing else None
        return out.reshape(shape)


# ---- attention ---------------------------------------------------------------------------
def relative_position_index(window: int) -> torch.Tensor:
    # Always computed on the CPU, also inside a ``torch.device("meta")`` block: the converter
    # builds the twin on the meta device for its shapes, and index arithmetic on meta tensors
    # makes torch import its reference decompositions (2 s, most of a small conversion).
    arange = torch.arange(window, device="cpu")
    coords = torch.stack(torch.meshgrid(arange, arange, indexing="ij"))
    coords = coords.flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def attention_mask(h: int, w: int, hp: int, wp: int, window: int, shift: int) -> torch.Tensor | None:
    """[num_windows, N, N] additive mask for a map of h x w padded to hp x wp.

    Tokens of different shift regions (standard Swin), and real and padded tokens, never
    attend to each other. Returns None when neither applies.
    """
    if shift == 0 and hp == h and wp == w:
        return None
    labels = torch.zeros(hp, wp)
    if shift:
        spans = ((0, -window), (-window, -shift), (-shift, None))
        count = 0
        for hs in spans:
            for ws in spans:
                labels[slice(*hs), slice(*ws)] = count
                count += 1
    padded = torch.ones(hp, wp)
    padded[:h, :w] = 0
    # The shift regions are defined in the rolled frame; the padding map rolls with the image.
    padded = torch.roll(padded, (-shift, -shift), (0, 1))
    labels = labels * 2 + padded
    win = window_partition(labels.view(1, hp, wp, 1), window).squeeze(-1)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, MASK_VALUE, 0.0)


class WindowAttention(nn.Module):
    """Swin-V1 scaled dot-product attention, separate q/k/v, learned relative-position bias."""

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q = self._heads(self.q(x)) * self.scale
        k, v = self._heads(self.k(x)), self._heads(self.v(x))
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = q @ k.transpose(-2, -1) + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.num_heads, n, n) + mask[None, :, None].to(attn.dtype)
            attn = attn.view(b, self.num_heads, n, n)
        attn = torch.softmax(attn.float(), dim=-1).to(v.dtype)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


# ---- block, merging, embedding -----------------------------------------------------------
class RingMoEBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, index: int, hidden: int,
                 num_experts: int, modalities: Sequence[str], reduction: str | None, drop_path: float):
        super().__init__()
        self.window = window
        self.odd = index % 2 == 1
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.ffn = ModalMoE(dim, hidden, num_experts, modalities, reduction)
        self.drop_path = drop_path

    def _drop_path(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = x.new_empty(x.shape[0], 1, 1).bernoulli_(1 - self.drop_path)
        return x * keep / (1 - self.drop_path)

    def _attention(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, l, c = x.shape
        win = self.window
        # Shift only where the map is larger than the window (Swin V1 rule).
        shift = win // 2 if (self.odd and min(h, w) > win) else 0
        hp, wp = math.ceil(h / win) * win, math.ceil(w / win) * win
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
        if shift:
            x = torch.roll(x, (-shift, -shift), (1, 2))
        mask = attention_mask(h, w, hp, wp, win, shift)
        out = window_reverse(self.attn(window_partition(x, win), mask), win, hp, wp)
        if shift:
            out = torch.roll(out, (shift, shift), (1, 2))
        return out[:, :h, :w].reshape(b, l, c)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], modality: str,
                capacity_factor: float | None = None, record_routing: bool = False) -> torch.Tensor:
        x = x + self._drop_path(self.norm1(self._attention(x, *hw)))
        moe = self.ffn(x, modality, capacity_factor, record_routing)
        return x + self._drop_path(self.norm2(moe))


class PatchMerging(nn.Module):
    """2x2 neighbours in the original Swin order, Linear(4C->2C, no bias), LayerNorm(1e-4)."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=MERGE_LN_EPS)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]):
        b, l, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        hw = (x.shape[1], x.shape[2])
        return self.norm(self.reduction(x.view(b, -1, 4 * c))), hw


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % self.patch, 0, (-h) % self.patch))
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class RingMoEStage(nn.Module):
    def __init__(self, blocks: list[RingMoEBlock], downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


# ---- the backbone ------------------------------------------------------------------------
class RingMoE(nn.Module):
    """RingMoE backbone for one modality (or all, for conversion checks).

    Args:
        embed_dim, depths, num_heads, patch_size, mlp_ratio, num_experts: architecture.
        window_size: an int, or one window per stage (the pretraining windows are
            ``[12, 12, 12, 6]`` at 192 px). A different window than the checkpoint's resizes the
            relative-position tables at load time.
        modalities: modality name -> input channels, in the checkpoint's order.
        modality: the modality this model runs on.
        build_modalities: modalities whose embeddings and experts are built; defaults to
            ``[modality]``. ``"all"`` builds every one (what the converter checks against).
        moe_reduction: None, ``"shared"``, ``"expert_mean"`` or ``"top_expert"`` (see
            ``MOE_REDUCTIONS``); ``"top_expert"`` reads the routing statistics that
            ``ms2torch --routing-stats`` stores in the checkpoint's meta.
        out_indices: stages whose outputs ``forward`` returns as [B, C, H, W].
        out_norms: LayerNorm on each output. Stage 3 uses the pretrained final norm; the
            others are new parameters.
        capacity_factor: None downstream (nothing dropped); a number applies Switch capacity.
        frozen_stages: freeze the patch embedding and stages up to this index (-1: none).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads a converted checkpoint
            with a full coverage check (see ``benchmarks/models/loading.py``).
    """

    def __init__(
        self,
        embed_dim: int = 32,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        window_size: int | Sequence[int] = (12, 12, 12, 6),
        patch_size: int = 4,
        mlp_ratio: int = 4,
        num_experts: int = 4,
        modalities: dict[str, int] | None = None,
        modality: str = "optical",
        build_modalities: Sequence[str] | str | None = None,
        moe_reduction: str | None = None,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        out_norms: bool = True,
        capacity_factor: float | None = None,
        drop_path_rate: float = 0.0,
        frozen_stages: int = -1,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        modalities = dict(modalities or DEFAULT_MODALITY_CHANNELS)
        if modality not in modalities:
            raise ValueError(f"modality {modality!r} is not one of {list(modalities)}")
        if build_modalities is None:
            build_modalities = [modality]
        elif build_modalities == "all":
            build_modalities = list(modalities)
        num_stages = len(depths)
        windows = [window_size] * num_stages if isinstance(window_size, int) else list(window_size)
        self.arch = dict(
            embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads), window_size=windows,
            patch_size=patch_size, mlp_ratio=mlp_ratio, num_experts=num_experts,
            modalities=modalities, moe_reduction=moe_reduction,
        )
        self.modality = modality
        self.out_indices = tuple(out_indices)
        self.capacity_factor = capacity_factor
        self.frozen_stages = frozen_stages
        self.init_cfg = init_cfg
        self.record_routing = False
        self.load_report = None
        self.num_features = [embed_dim * 2**s for s in range(num_stages)]

        self.patch_embed = nn.ModuleDict(
            {m: PatchEmbed(modalities[m], embed_dim, patch_size) for m in build_modalities}
        )
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # stochastic depth
        stages, k = [], 0
        for s in range(num_stages):
            dim = self.num_features[s]
            blocks = [
                RingMoEBlock(dim, num_heads[s], windows[s], i, dim * mlp_ratio, num_experts,
                             build_modalities, moe_reduction, rates[k + i])
                for i in range(depths[s])
            ]
            k += depths[s]
            downsample = PatchMerging(dim) if s < num_stages - 1 else None
            stages.append(RingMoEStage(blocks, downsample))
        self.layers = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.num_features[-1], eps=LN_EPS)
        self.out_norms = None
        if out_norms:
            self.out_norms = nn.ModuleDict(
                {str(i): nn.LayerNorm(self.num_features[i], eps=LN_EPS) for i in self.out_indices
                 if i != num_stages - 1}
            )
        self._freeze_stages()

    # -- parameters that a pretrained checkpoint cannot provide, and why ------------------
    def new_parameter_reasons(self) -> dict[str, str]:
        """Prefixes of parameters that are new downstream, with the reason."""
        return {"out_norms.": "new: per-stage output norm for dense heads (not in pretraining)"}

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        modules = [self.patch_embed] + [self.layers[i] for i in range(self.frozen_stages + 1)]
        # A frozen stage's output norm freezes with it (as in mmpretrain's Swin); the last stage's
        # is the final norm, so frozen_stages = last stage freezes the whole backbone (linear probe).
        if self.out_norms is not None:
            modules += [m for i, m in self.out_norms.items() if int(i) <= self.frozen_stages]
        if self.frozen_stages >= len(self.layers) - 1:
            modules.append(self.norm)
        for module in modules:
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def init_weights(self) -> None:
        """OpenMMLab hook: load a converted checkpoint with our own coverage check."""
        if self.init_cfg and self.init_cfg.get("type") == "Pretrained":
            from benchmarks.models.loading import load_pretrained

            # Kept for the runner's coverage.json: what was loaded, dropped and new, and why.
            self.load_report = load_pretrained(self, self.init_cfg["checkpoint"])

    # -- forward ---------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor):
        """Stage outputs before merging ([B, L, C] each, with their (H, W)) and the final norm."""
        x, hw = self.patch_embed[self.modality](x)
        outs = []
        for stage in self.layers:
            for block in stage.blocks:
                x = block(x, hw, self.modality, self.capacity_factor, self.record_routing)
            outs.append((x, hw))
            if stage.downsample is not None:
                x, hw = stage.downsample(x, hw)
        return outs, self.norm(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs, final = self.forward_features(x)
        last = len(self.layers) - 1
        features = []
        for i in self.out_indices:
            tokens, (h, w) = outs[i]
            if i == last and self.out_norms is not None:
                tokens = final
            elif self.out_norms is not None:
                tokens = self.out_norms[str(i)](tokens)
            features.append(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w))
        return tuple(features)

    def routing(self) -> list[dict]:
        """Routing of the last forward (set ``record_routing = True`` first), one dict per block."""
        return [b.ffn.last_routing for stage in self.layers for b in stage.blocks]
