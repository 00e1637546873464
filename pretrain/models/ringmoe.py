"""RingMoE in MindSpore: a Swin backbone with modal Mixture-of-Experts FFNs, and its SimMIM wrapper.

Read top to bottom: helpers, routing, the MoE layer, attention, block, stage, encoder, SimMIM.
Numerics and parameter names follow ``../shared/design/ringmoe.md`` (the authors' layout), so
that a checkpoint of the original code base converts with the same rules as ours:

* post-norm residuals ``x = x + norm1(attn(x))``, ``x = x + norm2(moe(x))``;
* Swin-V1 attention with separate q/k/v and a relative-position-bias table;
* LayerNorm eps 1e-6 (1e-4 in patch merging), tanh GELU;
* modal MoE = specialised experts (per modality) + cross experts + a shared FFN, top-1 routing,
  Switch capacity with drops, combine weight exactly 1.0.

Two MoE paths: the joint pretraining path (a batch of 4 equal modality chunks, capacity-limited,
dropping overflow tokens exactly as the authors do) and the single-modality path used
downstream and for parity (no capacity limit). Experts are dispatched by index into a
[experts, capacity] buffer rather than the authors' dense one-hot [tokens, experts, capacity]
tensors, which need ~20 GB for the tiny config.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, TruncatedNormal, Zero, initializer

from pretrain.models.arch import RingMoEArch, capacity

LN_EPS = 1e-6
MERGE_LN_EPS = 1e-4
MASK_VALUE = -100.0


# ---- helpers -----------------------------------------------------------------------------
def gelu_tanh(x: Tensor) -> Tensor:
    return ops.gelu(x, approximate="tanh")


def roll_hw(x: Tensor, shift: int) -> Tensor:
    """torch.roll(x, (shift, shift), dims=(1, 2)) for a [B, H, W, C] map, with slices and concat."""
    if shift == 0:
        return x
    h, w = x.shape[1], x.shape[2]
    sh, sw = (-shift) % h, (-shift) % w
    x = ops.concat((x[:, sh:], x[:, :sh]), axis=1)
    return ops.concat((x[:, :, sw:], x[:, :, :sw]), axis=2)


def window_partition(x: Tensor, window: int) -> Tensor:
    """[B, H, W, C] -> [B * num_windows, window * window, C], windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.reshape(b, h // window, w // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(window: int) -> np.ndarray:
    """The standard Swin index into a [(2W-1)^2, heads] table, shape [W*W, W*W]."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return (rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]).astype(np.int32)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> np.ndarray:
    """[num_windows, N, N] additive mask: -100 between tokens of different shift regions."""
    labels = np.zeros((h, w), np.float32)
    spans = ((0, -window), (-window, -shift), (-shift, None))
    count = 0
    for hs in spans:
        for ws in spans:
            labels[slice(*hs), slice(*ws)] = count
            count += 1
    win = labels.reshape(h // window, window, w // window, window).transpose(0, 2, 1, 3)
    win = win.reshape(-1, window * window)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, MASK_VALUE, 0.0).astype(np.float32)


def trunc_normal(shape, std: float = 0.02):
    return initializer(TruncatedNormal(std), shape, ms.float32)


# ---- routing and experts -----------------------------------------------------------------
class Router(nn.Cell):
    """Bias-free Linear in fp32, softmax, top-1 by argmax. Saved as ``<name>.dense.weight``."""

    def __init__(self, dim: int, num_experts: int):
        super().__init__()
        self.num_experts = num_experts
        self.dense = nn.Dense(dim, num_experts, has_bias=False, weight_init=Normal(0.02))

    def construct(self, tokens: Tensor):
        logits = ops.matmul(tokens.astype(ms.float32), self.dense.weight.astype(ms.float32).T)
        probs = ops.softmax(logits, axis=-1)
        expert = ops.argmax(probs, dim=-1).astype(ms.int32)
        return expert, probs


def route_slots(expert: Tensor, num_experts: int, cap: int | None):
    """Slot of each token in its expert's buffer and whether it is kept.

    A token's slot is the running count of earlier tokens (in flattened batch-major order)
    routed to the same expert. Tokens whose slot reaches the capacity are dropped.
    """
    onehot = ops.one_hot(expert, num_experts, Tensor(1, ms.int32), Tensor(0, ms.int32))
    slot = (ops.cumsum(onehot, axis=0) * onehot).sum(axis=-1) - 1
    if cap is None:
        kept = ops.ones_like(slot).astype(ms.bool_)
    else:
        kept = slot < cap
    return slot, kept, onehot


def switch_aux_loss(onehot: Tensor, probs: Tensor, scale_experts: int) -> Tensor:
    """Switch load balancing: E^2 * mean_e(mean_t(onehot) * mean_t(p)), onehot before drops."""
    density = onehot.astype(ms.float32).mean(axis=0)
    proxy = probs.mean(axis=0)
    return (density * proxy).mean() * float(scale_experts**2)


class ExpertWeights(nn.Cell):
    """One stacked linear of E experts, stored [E, in, out] with bias [1, E, 1, out] (authors')."""

    def __init__(self, num_experts: int, dim_in: int, dim_out: int):
        super().__init__()
        self.weight = Parameter(trunc_normal((num_experts, dim_in, dim_out)), name="weight")
        self.bias = Parameter(initializer(Zero(), (1, num_experts, 1, dim_out)), name="bias")


class ExpertFFN(nn.Cell):
    """E expert FFNs (Linear, tanh GELU, dropout, Linear), run on a [E, capacity, C] buffer."""

    def __init__(self, num_experts: int, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.num_experts = num_experts
        self.mapping = ExpertWeights(num_experts, dim, hidden)
        self.projection = ExpertWeights(num_experts, hidden, dim)
        self.dropout = nn.Dropout(p=dropout)

    def construct(self, tokens: Tensor, expert: Tensor, slot: Tensor, kept: Tensor, cap: int) -> Tensor:
        e = self.num_experts
        c = tokens.shape[-1]
        # Position of each kept token in the flattened buffer; dropped tokens go to a spare row
        # that is never read back as an expert output (it maps to zeros below).
        spare = e * cap
        pos = ops.where(kept, expert * cap + slot, ops.full_like(slot, spare))
        buffer = ops.scatter_nd(pos.reshape(-1, 1), tokens, (spare + 1, c))
        hidden = ops.bmm(buffer[:spare].reshape(e, cap, c), self.mapping.weight)
        hidden = hidden + self.mapping.bias.reshape(e, 1, -1)
        hidden = self.dropout(gelu_tanh(hidden))
        out = ops.bmm(hidden, self.projection.weight) + self.projection.bias.reshape(e, 1, -1)
        out = ops.concat((out.reshape(spare, c), ops.zeros((1, c), out.dtype)), axis=0)
        return ops.gather(out, pos, 0)


class DenseWeights(nn.Cell):
    """A plain linear stored [in, out] (the authors' ``_Linear`` with transpose_b=False)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.weight = Parameter(trunc_normal((dim_in, dim_out)), name="weight")
        self.bias = Parameter(initializer(Zero(), (dim_out,)), name="bias")


class SharedFFN(nn.Cell):
    """The shared ("public") dense FFN applied to every token."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.mapping = DenseWeights(dim, hidden)
        self.projection = DenseWeights(hidden, dim)
        self.dropout = nn.Dropout(p=dropout)

    def construct(self, x: Tensor) -> Tensor:
        h = self.dropout(gelu_tanh(ops.matmul(x, self.mapping.weight) + self.mapping.bias))
        return ops.matmul(h, self.projection.weight) + self.projection.bias


class ModalMoE(nn.Cell):
    """Specialised experts (per modality) + cross experts + shared FFN, summed unweighted."""

    def __init__(self, arch: RingMoEArch, dim: int, dropout: float = 0.0):
        super().__init__()
        hidden = dim * arch.mlp_ratio
        self.arch = arch
        self.num_modalities = len(arch.modalities)
        self.num_experts = arch.num_experts
        self.special_ffn = nn.CellList(
            [ExpertFFN(arch.num_experts, dim, hidden, dropout) for _ in arch.modalities]
        )
        self.special_router = nn.CellList([Router(dim, arch.num_experts) for _ in arch.modalities])
        self.cross_ffn = ExpertFFN(arch.num_experts, dim, hidden, dropout)
        self.cross_router = Router(dim, arch.num_experts)
        self.public_ffn = SharedFFN(dim, hidden, dropout)
        # Routing records are for parity checks in PyNative mode; graph mode cannot keep them.
        self.record_routing = False
        self.last_routing: dict = {}

    def _route_and_run(self, ffn: ExpertFFN, router: Router, tokens: Tensor, limit: bool):
        expert, probs = router(tokens)
        t = tokens.shape[0]
        cap = capacity(t, self.arch.capacity_factor, self.num_experts) if limit else t
        slot, kept, onehot = route_slots(expert, self.num_experts, cap if limit else None)
        out = ffn(tokens, expert, slot, kept, cap)
        aux = switch_aux_loss(onehot, probs, self.arch.aux_loss_experts)
        return out, aux, {"expert": expert, "probs": probs, "kept": kept}

    def construct(self, x: Tensor, modality: int | None = None):
        """x: [N, L, C]. modality=None: joint path, N splits into equal modality chunks."""
        n, l, c = x.shape
        routing = {}
        if modality is None:
            if n % self.num_modalities:
                raise ValueError(f"joint MoE batch of {n} does not split into {self.num_modalities} modalities")
            chunk = n // self.num_modalities
            special_out, special_aux = [], []
            for m in range(self.num_modalities):
                tokens = x[m * chunk : (m + 1) * chunk].reshape(-1, c)
                out, aux, info = self._route_and_run(self.special_ffn[m], self.special_router[m], tokens, True)
                special_out.append(out)
                special_aux.append(aux)
                routing[f"special{m}"] = info
            special = ops.concat(special_out, axis=0)
            special_aux_mean = ops.stack(special_aux).mean()
            limit = True
        else:
            tokens = x.reshape(-1, c)
            special, special_aux_mean, info = self._route_and_run(
                self.special_ffn[modality], self.special_router[modality], tokens, False
            )
            routing[f"special{modality}"] = info
            limit = False
        tokens = x.reshape(-1, c)
        cross, cross_aux, info = self._route_and_run(self.cross_ffn, self.cross_router, tokens, limit)
        routing["cross"] = info
        if self.record_routing:
            self.last_routing = routing
        out = special + cross + self.public_ffn(tokens)
        aux = self.arch.aux_loss_weight * (cross_aux + special_aux_mean)
        return out.reshape(n, l, c), aux


# ---- attention, block, stage -------------------------------------------------------------
class RelativePositionBias(nn.Cell):
    def __init__(self, window: int, num_heads: int):
        super().__init__()
        self.window = window
        self.relative_position_bias_table = Parameter(
            trunc_normal(((2 * window - 1) ** 2, num_heads)), name="relative_position_bias_table"
        )
        # A derived buffer, saved like the authors' checkpoints do; the converter drops it.
        self.relative_position_index = Parameter(
            Tensor(relative_position_index(window)), name="relative_position_index", requires_grad=False
        )

    def construct(self) -> Tensor:
        n = self.window * self.window
        bias = ops.gather(self.relative_position_bias_table, self.relative_position_index.reshape(-1), 0)
        return bias.reshape(n, n, -1).transpose(2, 0, 1)  # [heads, N, N]


class WindowAttention(nn.Cell):
    """Swin-V1 scaled dot-product attention with separate q, k, v."""

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Dense(dim, dim, weight_init=TruncatedNormal(0.02))
        self.k = nn.Dense(dim, dim, weight_init=TruncatedNormal(0.02))
        self.v = nn.Dense(dim, dim, weight_init=TruncatedNormal(0.02))
        self.proj = nn.Dense(dim, dim, weight_init=TruncatedNormal(0.02))
        self.relative_position_bias = RelativePositionBias(window, num_heads)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(0, 2, 1, 3)

    def construct(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, c = x.shape
        q = self._heads(self.q(x)) * self.scale
        k, v = self._heads(self.k(x)), self._heads(self.v(x))
        attn = ops.matmul(q, k.transpose(0, 1, 3, 2)) + self.relative_position_bias().expand_dims(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(b // nw, nw, self.num_heads, n, n) + mask.expand_dims(1).expand_dims(0)
            attn = attn.reshape(b, self.num_heads, n, n)
        attn = ops.softmax(attn.astype(ms.float32), axis=-1).astype(v.dtype)
        out = ops.matmul(attn, v).transpose(0, 2, 1, 3).reshape(b, n, c)
        return self.proj(out)


class RingMoEBlock(nn.Cell):
    def __init__(self, arch: RingMoEArch, stage: int, index: int, dropout: float = 0.0):
        super().__init__()
        dim = arch.stage_dim(stage)
        self.resolution = arch.stage_resolution(stage)
        self.window = arch.stage_window(stage)
        self.shift = self.window // 2 if (index % 2 == 1 and arch.stage_shifts(stage)) else 0
        self.norm1 = nn.LayerNorm((dim,), epsilon=LN_EPS)
        self.attn = WindowAttention(dim, self.window, arch.num_heads[stage])
        self.norm2 = nn.LayerNorm((dim,), epsilon=LN_EPS)
        self.mlp = ModalMoE(arch, dim, dropout)
        if self.shift:
            mask = shifted_window_mask(self.resolution, self.resolution, self.window, self.shift)
            self.attn_mask = Parameter(Tensor(mask), name="attn_mask", requires_grad=False)
        else:
            self.attn_mask = None

    def construct(self, x: Tensor, modality: int | None = None):
        b, l, c = x.shape
        h = w = self.resolution
        shifted = roll_hw(x.reshape(b, h, w, c), -self.shift)
        windows = window_partition(shifted, self.window)
        attn = window_reverse(self.attn(windows, self.attn_mask), self.window, h, w)
        attn = roll_hw(attn, self.shift).reshape(b, l, c)
        x = x + self.norm1(attn)
        moe_out, aux = self.mlp(x, modality)
        return x + self.norm2(moe_out), aux


class PatchMerging(nn.Cell):
    """2x2 neighbours in the original Swin order, Linear(4C->2C, no bias), then LayerNorm(1e-4)."""

    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Dense(4 * dim, 2 * dim, has_bias=False, weight_init=TruncatedNormal(0.02))
        self.norm = nn.LayerNorm((2 * dim,), epsilon=MERGE_LN_EPS)

    def construct(self, x: Tensor) -> Tensor:
        b, l, c = x.shape
        half = self.resolution // 2
        # [B, i, a, j, b, C] holds x[2i+a, 2j+b]; ordering the 2x2 as (b, a) gives the original
        # Swin order (2i,2j), (2i+1,2j), (2i,2j+1), (2i+1,2j+1). A reshape instead of strided
        # slices, whose gradient kernel fails on MindSpore's CPU backend.
        x = x.reshape(b, half, 2, half, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, half * half, 4 * c)
        return self.norm(self.reduction(x))


class RingMoEStage(nn.Cell):
    def __init__(self, arch: RingMoEArch, stage: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.CellList([RingMoEBlock(arch, stage, i, dropout) for i in range(arch.depths[stage])])
        last = stage == arch.num_stages - 1
        self.downsample = None if last else PatchMerging(arch.stage_dim(stage), arch.stage_resolution(stage))

    def construct(self, x: Tensor, modality: int | None = None):
        aux = 0.0
        for block in self.blocks:
            x, block_aux = block(x, modality)
            aux = aux + block_aux
        out = x
        if self.downsample is not None:
            x = self.downsample(x)
        return out, x, aux


# ---- encoder -----------------------------------------------------------------------------
class PatchEmbed(nn.Cell):
    """Conv 4x4 stride 4 with bias, tokens in row-major order, LayerNorm eps 1e-6."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.projection = nn.Conv2d(
            in_channels, dim, patch, stride=patch, pad_mode="valid", has_bias=True,
            weight_init=TruncatedNormal(0.02),
        )
        self.norm = nn.LayerNorm((dim,), epsilon=LN_EPS)

    def construct(self, x: Tensor) -> Tensor:
        x = self.projection(x)
        b, c, h, w = x.shape
        return self.norm(x.reshape(b, c, h * w).transpose(0, 2, 1))


class RingMoEEncoder(nn.Cell):
    """The backbone. Parameter names match the authors' ``encoder.*`` layout."""

    def __init__(self, arch: RingMoEArch, dropout: float = 0.0):
        super().__init__()
        if not arch.moe:
            raise ValueError("the MindSpore RingMoE is pretrained with MoE; dense layouts come from conversion")
        self.arch = arch
        for m, modality in enumerate(arch.modalities):
            setattr(self, f"patch_embed{m}", PatchEmbed(modality.channels, arch.embed_dim, arch.patch_size))
        self.mask_token = Parameter(initializer(Zero(), (1, 1, arch.embed_dim)), name="mask_token")
        self.layers = nn.CellList([RingMoEStage(arch, s, dropout) for s in range(arch.num_stages)])
        self.norm = nn.LayerNorm((arch.num_features,), epsilon=LN_EPS)

    def patch_embed(self, modality: int) -> PatchEmbed:
        return getattr(self, f"patch_embed{modality}")

    def embed(self, image: Tensor, modality: int, mask: Tensor | None = None) -> Tensor:
        """Patch tokens of one modality; masked tokens become ``x*(1-w) + mask_token*w``."""
        x = self.patch_embed(modality)(image)
        if mask is not None:
            w = mask.reshape(mask.shape[0], -1, 1).astype(x.dtype)
            x = x * (1 - w) + self.mask_token * w
        return x

    def forward_tokens(self, x: Tensor, modality: int | None = None):
        """Run the stages. Returns (stage outputs before merging, final-normed tokens, aux loss)."""
        outs = []
        aux = 0.0
        for stage in self.layers:
            out, x, stage_aux = stage(x, modality)
            outs.append(out)
            aux = aux + stage_aux
        return outs, self.norm(x), aux

    def construct(self, image: Tensor, modality: int):
        """Single-modality forward (downstream semantics: no capacity limit)."""
        return self.forward_tokens(self.embed(image, modality), modality)

    def set_record_routing(self, record: bool) -> None:
        """Keep each block's routing decisions of the next forwards (PyNative mode only)."""
        for stage in self.layers:
            for block in stage.blocks:
                block.mlp.record_routing = record

    def routing(self) -> list[dict]:
        """Routing decisions of the last forward, one dict per block in order."""
        return [block.mlp.last_routing for stage in self.layers for block in stage.blocks]


# ---- SimMIM ------------------------------------------------------------------------------
def depth_to_space_dcr(x: Tensor, block: int) -> Tensor:
    """TensorFlow DepthToSpace (DCR): out[32h+i, 32w+j, c] = in[(i*32 + j)*C + c, h, w]."""
    b, d, h, w = x.shape
    c = d // (block * block)
    x = x.reshape(b, block, block, c, h, w).transpose(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c, h * block, w * block)


class RingMoESimMIM(nn.Cell):
    """SimMIM over four modalities: one batch of each, concatenated along the batch axis."""

    def __init__(self, arch: RingMoEArch, dropout: float = 0.0):
        super().__init__()
        self.arch = arch
        self.encoder = RingMoEEncoder(arch, dropout)
        self.stride = arch.patch_size * 2 ** (arch.num_stages - 1)
        for m in range(len(arch.modalities)):
            decoder = nn.Conv2d(
                arch.num_features, self.stride**2 * arch.reconstructed_channels(m), 1, has_bias=True,
                weight_init=TruncatedNormal(0.02),
            )
            setattr(self, f"decoder_{m}", decoder)

    def reconstruct(self, tokens: Tensor, modality: int) -> Tensor:
        b, l, c = tokens.shape
        side = int(math.isqrt(l))
        z = tokens.transpose(0, 2, 1).reshape(b, c, side, side)
        return depth_to_space_dcr(getattr(self, f"decoder_{modality}")(z), self.stride)

    def construct(self, images: tuple, masks: tuple, extra_targets: tuple | None = None):
        """images[m]: [B, C_m, H, W]; masks[m]: [B, H/4, W/4] patch masks (1 = masked).

        ``extra_targets[m]`` (or None) holds reconstructed channels that are not inputs, such as
        the SAR-L1 total power. Returns (total loss, per-modality reconstruction losses, aux loss).
        """
        tokens = [self.encoder.embed(img, m, mask) for m, (img, mask) in enumerate(zip(images, masks))]
        batch = [t.shape[0] for t in tokens]
        if len(set(batch)) != 1:
            raise ValueError(f"the joint MoE path needs equal batches per modality, got {batch}")
        _, z, aux = self.encoder.forward_tokens(ops.concat(tokens, axis=0), None)
        losses = []
        scale = self.arch.patch_size
        for m, (img, mask) in enumerate(zip(images, masks)):
            rec = self.reconstruct(z[m * batch[0] : (m + 1) * batch[0]], m)
            if extra_targets is not None and extra_targets[m] is not None:
                img = ops.concat((img, extra_targets[m]), axis=1)
            pixel_mask = ops.repeat_interleave(ops.repeat_interleave(mask.astype(ms.float32), scale, 1), scale, 2)
            pixel_mask = pixel_mask.expand_dims(1)
            l1 = (ops.abs(img - rec) * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / img.shape[1]
            losses.append(l1)
        recon = losses[0]
        for loss in losses[1:]:
            recon = recon + loss
        return recon + aux, ops.stack(losses), aux
