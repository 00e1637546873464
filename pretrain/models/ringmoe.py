"""RingMoE in MindSpore: a Swin backbone with modal Mixture-of-Experts FFNs, and its SimMIM wrapper.

Read top to bottom: shard strategies, helpers, routing, the MoE layer, attention, block, stage,
encoder, SimMIM. Numerics and parameter names follow ``../shared/design/ringmoe.md`` (the authors'
layout), so that a checkpoint of the original code base converts with the same rules as ours:

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

Memory on MindSpore's CPU backend (measured on the tiny training graph, benchmarks/perf/step_perf.py):
a broadcasting Add/Mul/Sub kernel keeps two 8-byte indices per output element, and a Transpose kernel
one, for as long as the compiled graph lives (1.5 GB of the tiny step). So operands are tiled to full
shape (or added with BiasAdd) before binary ops, transposes that only reorder rows are gathers
(RowPermutation), and q @ k^T reads k transposed inside the matmul: the same forward numbers to the
bit (gradients to rounding: some sums run in another order).

Operator parallelism (MindSpore semi_auto_parallel): built with ``parallel=ParallelLayout(dp, mp,
ep)`` (pretrain/parallel.py), every operator declares a shard strategy that realises the layouts
``pretrain.parallel.plan_layouts`` plans: batch axes over data_parallel; attention heads over
model_parallel where they divide (q/k/v split by output, proj by input); the shared FFN split
Megatron-style (mapping by hidden column, projection by hidden row); experts over expert_parallel
and their hidden width over model_parallel, with the capacity axis over the data-parallel ranks
that share an expert slice; routers, norms, embeddings and decoders replicated. Without a layout
(the default) no strategy is set and the graph computes exactly what it computed before.
Operator parallelism computes the single-device program on the global batch, so capacity,
routing and drops are those of the whole batch, whatever the layout.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, TruncatedNormal, Uniform, Zero, initializer

from pretrain.models.arch import RingMoEArch, capacity
from pretrain.parallel import ParallelLayout, head_split

LN_EPS = 1e-6
MERGE_LN_EPS = 1e-4
MASK_VALUE = -100.0


# ---- shard strategies --------------------------------------------------------------------
class ShardSpec:
    """Split counts of a ParallelLayout, and ``spec(prim, *strategy)`` to declare a primitive's
    input strategy: a no-op without a layout, so stand-alone graphs carry no strategies."""

    def __init__(self, layout: ParallelLayout | None = None):
        self.on = layout is not None
        self.dp = layout.data_parallel if self.on else 1
        self.mp = layout.model_parallel if self.on else 1
        self.ep = layout.expert_parallel if self.on else 1
        self.outer = self.dp // self.ep  # data-parallel ranks holding the same expert slice

    def __call__(self, prim, *strategy: tuple):
        if self.on:
            prim.shard(tuple(strategy))
        return prim

    def heads(self, num_heads: int) -> int:
        """Head split of an attention layer: model_parallel where it divides the heads, else none
        (the planner's rule)."""
        return head_split(num_heads, self.mp)

    def cols(self, size: int) -> int:
        """Split of a token width for the dispatch gathers (model_parallel where it divides)."""
        return self.mp if size % self.mp == 0 else 1

    def batch(self, rank: int) -> tuple:
        """Batch axis over data_parallel, the rest whole."""
        return (self.dp,) + (1,) * (rank - 1)

    def layer_norm(self, norm: nn.LayerNorm, rank: int) -> None:
        self(norm.layer_norm, self.batch(rank), (1,), (1,))


NO_SHARD = ShardSpec()


def _const(value, dtype=ms.float32, scalar: bool = False) -> Tensor:
    """A constant operand: shape (1,) broadcasts against any tensor and takes strategy (1,); a
    scalar (shape ()) takes strategy ()."""
    return Tensor(value if scalar else [value], dtype)


# ---- helpers -----------------------------------------------------------------------------
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


def window_order(resolution: int, window: int, shift: int) -> np.ndarray:
    """Token (row-major h*R + w) at each position of the cyclically shifted map cut into windows:
    windows row-major, tokens row-major within a window; the shift is torch.roll(x, -shift)."""
    r = np.arange(resolution)
    grid = ((r[:, None] + shift) % resolution) * resolution + (r[None, :] + shift) % resolution
    nw = resolution // window
    return grid.reshape(nw, window, nw, window).transpose(0, 2, 1, 3).reshape(-1)


def head_order(tokens: int, heads: int) -> np.ndarray:
    """Row of [tokens * heads, head_dim] (token-major, as a linear layer writes them) at each
    position of the head-major order [heads, tokens]."""
    return np.arange(tokens * heads).reshape(tokens, heads).T.reshape(-1)


def merge_order(resolution: int) -> np.ndarray:
    """Token of each 2x2 neighbour, grouped by output token, in the original Swin order (2i,2j),
    (2i+1,2j), (2i,2j+1), (2i+1,2j+1)."""
    half = resolution // 2
    i, j, b, a = np.meshgrid(np.arange(half), np.arange(half), np.arange(2), np.arange(2), indexing="ij")
    return ((2 * i + a) * resolution + 2 * j + b).reshape(-1)


class RowPermutation(nn.Cell):
    """x[:, order] for x [B, N, ...] (or x[order] for x [N, ...], axis=0) and a fixed permutation
    ``order`` of the N rows: a gather, whose gradient is the gather by the inverse permutation.

    Replaces Transpose kernels that only reorder rows: MindSpore's CPU Transpose keeps an 8-byte
    index per element for the graph's lifetime, a gather only its int32 row order. MindSpore's own
    gradient of a Gather along axis 1 transposes; the inverse permutation moves the same values.
    """

    def __init__(self, order: np.ndarray, rank: int, spec: ShardSpec = NO_SHARD, axis: int = 1):
        super().__init__()
        self.axis = axis
        self.order = Tensor(np.asarray(order, np.int32))
        self.inverse = Tensor(np.argsort(order).astype(np.int32))
        table = spec.batch(rank) if axis == 1 else (1,) * rank  # axis 0: a replicated weight
        self.gather = spec(ops.Gather(), table, (1,))
        self.gather_back = spec(ops.Gather(), table, (1,))

    def construct(self, x: Tensor) -> Tensor:
        return self.gather(x, self.order, self.axis)

    def bprop(self, x, out, dout):
        return (self.gather_back(dout, self.inverse, self.axis),)


class ModalityBatch(nn.Cell):
    """Where each modality's images sit in the joint batch of the pretraining path.

    Stand-alone: modality-major rows (row m*B + b), as the authors concatenate. Under a layout:
    batch-major rows (row b*M + m), so that a data-parallel split of the batch axis gives every
    rank whole images of every modality and taking one modality out is a local slice (MindSpore
    cannot split a concatenated or sliced axis). Only routing depends on the row order; the MoE
    layer restores the modality-major order there. Tensors are [rows, L, C].
    """

    def __init__(self, num_modalities: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.num_modalities = num_modalities
        self.batch_major = spec.on
        self.concat = ops.Concat(axis=0)
        self.stack = spec(ops.Stack(axis=1), *[spec.batch(3)] * num_modalities)
        self.slice = spec(ops.StridedSlice(), spec.batch(4))

    def join(self, parts) -> Tensor:
        """Per-modality [B, L, C] tensors -> one [M*B, L, C] batch."""
        if not self.batch_major:
            return self.concat(tuple(parts))
        x = self.stack(tuple(parts))
        return x.reshape((-1,) + x.shape[2:])

    def part(self, x: Tensor, m: int) -> Tensor:
        """Modality m's [B, L, C] rows of a joint [M*B, L, C] batch."""
        count = x.shape[0] // self.num_modalities
        if not self.batch_major:
            return x[m * count : (m + 1) * count]
        x = x.reshape((count, self.num_modalities) + x.shape[1:])
        begin, end = (0, m, 0, 0), (count, m + 1) + x.shape[2:]
        return self.slice(x, begin, end, (1, 1, 1, 1)).reshape((count,) + x.shape[2:])


# ---- routing and experts -----------------------------------------------------------------
class Router(nn.Cell):
    """Bias-free Linear in fp32, softmax, top-1 by argmax. Saved as ``<name>.dense.weight``.

    Replicated weight, tokens over data_parallel."""

    def __init__(self, dim: int, num_experts: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.num_experts = num_experts
        self.dense = nn.Dense(dim, num_experts, has_bias=False, weight_init=Normal(0.02))
        dp = spec.dp
        self.matmul = spec(ops.MatMul(transpose_b=True), (dp, 1), (1, 1))
        self.softmax = spec(ops.Softmax(axis=-1), (dp, 1))
        self.argmax = spec(ops.Argmax(axis=-1, output_type=ms.int32), (dp, 1))
        # Switch load balancing: E^2 * mean_e(mean_t(onehot) * mean_t(p)), onehot before drops.
        self.density = spec(ops.ReduceMean(), (1, 1))
        self.proxy = spec(ops.ReduceMean(), (dp, 1))
        self.product = spec(ops.Mul(), (1,), (1,))
        self.mean = spec(ops.ReduceMean(), (1,))
        self.scale = spec(ops.Mul(), (), ())

    def weight_consumers(self):
        yield self.dense.weight, self.matmul, 1

    def construct(self, tokens: Tensor):
        logits = self.matmul(tokens.astype(ms.float32), self.dense.weight.astype(ms.float32))
        probs = self.softmax(logits)
        return self.argmax(probs), probs

    def aux_loss(self, onehot: Tensor, probs: Tensor, scale_experts: int) -> Tensor:
        """onehot, probs: [tokens, E] (one router), or [groups, tokens, E] (one loss per group)."""
        axis = onehot.ndim - 2  # the token axis
        density = self.density(onehot.astype(ms.float32), axis)
        product = self.product(density, self.proxy(probs, axis))
        balance = self.mean(product, ()) if axis == 0 else self.mean(product, -1)
        return self.scale(balance, _const(float(scale_experts**2), scalar=True))


class RouteSlots(nn.Cell):
    """Slot of each token in its expert's buffer and whether it is kept (cap: the capacity).

    A token's slot is the running count of earlier tokens (in the order given) routed to the same
    expert. Tokens whose slot reaches the capacity are dropped. The running count needs every
    token's choice, so these small integer vectors are replicated on every rank.
    """

    def __init__(self, num_experts: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.num_experts = num_experts
        self.onehot = spec(ops.OneHot(), (1, 1), (), ())
        self.cumsum = spec(ops.CumSum(), (1, 1))
        self.mask = spec(ops.Mul(), (1, 1), (1, 1))
        self.count = spec(ops.ReduceSum(), (1, 1))
        self.minus_one = spec(ops.Sub(), (1,), (1,))
        self.below = spec(ops.Less(), (1,), (1,))
        self.on_value, self.off_value = _const(1, ms.int32, True), _const(0, ms.int32, True)
        self.one = _const(1, ms.int32)

    def construct(self, expert: Tensor, cap: int):
        """expert: [tokens] (one group) or [groups, tokens] (groups counted separately)."""
        onehot = self.onehot(expert, self.num_experts, self.on_value, self.off_value)
        slot = self.minus_one(self.count(self.mask(self.cumsum(onehot, expert.ndim - 1), onehot), -1), self.one)
        return slot, self.below(slot, _const(cap, ms.int32)), onehot


def route_slots(expert: Tensor, num_experts: int, cap: int | None):
    """RouteSlots as a function (PyNative); cap None keeps every token."""
    return RouteSlots(num_experts)(expert, expert.shape[0] if cap is None else cap)


class ExpertWeights(nn.Cell):
    """One stacked linear of E experts, stored [E, in, out] with bias [1, E, 1, out] (authors')."""

    def __init__(self, num_experts: int, dim_in: int, dim_out: int):
        super().__init__()
        self.weight = Parameter(trunc_normal((num_experts, dim_in, dim_out)), name="weight")
        self.bias = Parameter(initializer(Zero(), (1, num_experts, 1, dim_out)), name="bias")


class ExpertFFN(nn.Cell):
    """E expert FFNs (Linear, tanh GELU, dropout, Linear), run on an [E, capacity, C] buffer.

    Dispatch and combine are gathers by index: the buffer row of a kept token is
    ``expert * capacity + slot``. Under a layout the buffer splits over experts (expert_parallel)
    and capacity (the dp/ep ranks sharing an expert slice; capacity is padded to a multiple of
    that, the padding rows stay empty), the hidden width over model_parallel; the token tables of
    the two gathers split by rows over data_parallel (each rank looks up its rows, then a
    reduce-scatter), by columns over model_parallel.

    Stand-alone, empty buffer rows and dropped tokens read an appended zero row; under a layout
    (where a gathered table cannot be extended along its split rows) they read row 0 and are
    zeroed by a 0/1 mask. The same numbers either way.
    """

    def __init__(self, num_experts: int, dim: int, hidden: int, dropout: float = 0.0,
                 spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.num_experts = num_experts
        self.outer = spec.outer
        self.zero_rows = not spec.on
        self.mapping = ExpertWeights(num_experts, dim, hidden)
        self.projection = ExpertWeights(num_experts, hidden, dim)
        self.dropout = nn.Dropout(p=dropout)
        dp, mp, ep, o, cols = spec.dp, spec.mp, spec.ep, spec.outer, spec.cols(dim)
        vec = (1,)  # [tokens] and [buffer rows] index vectors: replicated
        self.row_of = spec(ops.Mul(), vec, vec)
        self.row_plus = spec(ops.Add(), vec, vec)
        self.keep_row = spec(ops.Mul(), vec, vec)
        self.ones = spec(ops.OnesLike(), vec)
        self.count = spec(ops.CumSum(), vec)
        self.keep_id = spec(ops.Mul(), vec, vec)
        self.inverse = spec(ops.UnsortedSegmentSum(), vec, vec)
        self.dispatch = spec(ops.Gather(), (dp, cols), vec)
        self.combine = spec(ops.Gather(), (dp, cols), vec)
        # Broadcasting operands are tiled to full shape first: MindSpore's CPU kernel of a
        # broadcasting Add/Mul keeps two 8-byte indices per output element for the graph's lifetime
        # (1.2 GB of the tiny training graph), a same-shape one keeps none.
        self.fc1 = spec(ops.BatchMatMul(), (ep, o, 1), (ep, 1, mp))
        self.tile1 = spec(ops.Tile(), (1, ep, 1, mp))
        self.bias1 = spec(ops.Add(), (1, ep, o, mp), (1, ep, o, mp))
        self.gelu = spec(ops.GeLU(), (1, ep, o, mp))
        spec(self.dropout.dropout, (1, ep, o, mp))
        self.fc2 = spec(ops.BatchMatMul(), (ep, o, mp), (ep, mp, 1))
        self.tile2 = spec(ops.Tile(), (1, ep, 1, 1))
        self.bias2 = spec(ops.Add(), (1, ep, o, 1), (1, ep, o, 1))
        if self.zero_rows:
            self.pad_tokens = ops.Concat(axis=0)
            self.pad_out = ops.Concat(axis=0)
            self.not_kept = ops.Sub()
            self.spill = ops.Mul()
            self.to_zero_row = ops.Add()
            self.zero_row = Tensor(np.zeros((1, dim), np.float32))
        else:
            self.minus_one = spec(ops.Sub(), vec, vec)
            self.at_least = spec(ops.Maximum(), vec, vec)
            self.filled = spec(ops.Greater(), vec, vec)
            self.row_mask = spec(ops.Tile(), (dp, 1))
            self.empty_rows = spec(ops.Mul(), (dp, cols), (dp, cols))
            self.kept_mask = spec(ops.Tile(), (dp, 1))
            self.dropped = spec(ops.Mul(), (dp, cols), (dp, cols))
        self.one, self.zero = _const(1, ms.int32), _const(0, ms.int32)

    def weight_consumers(self):
        yield self.mapping.weight, self.fc1, 1
        yield self.mapping.bias, self.tile1, 0
        yield self.projection.weight, self.fc2, 1
        yield self.projection.bias, self.tile2, 0

    def _row_mask(self, tile, flags: Tensor, like: Tensor) -> Tensor:
        """A 0/1 row mask [rows, C] from boolean flags [rows]."""
        rows, c = like.shape
        return tile(flags.astype(like.dtype).reshape(rows, 1), (1, c))

    def construct(self, tokens: Tensor, expert: Tensor, slot: Tensor, kept: Tensor, cap: int) -> Tensor:
        cap = -(-cap // self.outer) * self.outer  # padded so that the dp/ep ranks of an expert share it evenly
        row = self.row_plus(self.row_of(expert, _const(cap, ms.int32)), slot)
        return self.run(tokens, row, kept, cap, self.mapping.weight, self.mapping.bias, self.projection.weight,
                        self.projection.bias)

    def run(self, tokens: Tensor, row: Tensor, kept: Tensor, cap: int, w1: Tensor, b1: Tensor, w2: Tensor,
            b2: Tensor) -> Tensor:
        """Expert FFNs of the given weights (w1 [E, C, H], b1 [1, E, 1, H], w2, b2: this cell's own, or
        several groups' stacked) on ``cap`` buffer rows each: token i of ``tokens`` [T, C] goes to
        buffer row ``row[i]`` if ``kept[i]``. Returns [T, C], zero for dropped tokens."""
        e = w1.shape[0]
        c = tokens.shape[1]
        rows = e * cap
        keep = kept.astype(ms.int32)
        # A dropped token points at row 0 with id 0, so it adds nothing there.
        row = self.keep_row(row, keep)
        # The token of each buffer row (1-based, 0: empty), by summing the ids into their rows.
        token = self.inverse(self.keep_id(self.count(self.ones(keep), 0), keep), row, rows)
        if self.zero_rows:  # row 0 of the padded table is zero: empty buffer rows read it
            buffer = self.dispatch(self.pad_tokens((self.zero_row.astype(tokens.dtype), tokens)), token, 0)
        else:
            buffer = self.dispatch(tokens, self.at_least(self.minus_one(token, self.one), self.zero), 0)
            buffer = self.empty_rows(buffer, self._row_mask(self.row_mask, self.filled(token, self.zero), buffer))
        hidden = self.fc1(buffer.reshape(e, cap, c), w1).reshape(1, e, cap, -1)
        hidden = self.bias1(hidden, self.tile1(b1, (1, 1, cap, 1)))
        hidden = self.dropout(self.gelu(hidden)).reshape(e, cap, -1)
        out = self.fc2(hidden, w2).reshape(1, e, cap, c)
        out = self.bias2(out, self.tile2(b2, (1, 1, cap, 1))).reshape(rows, c)
        if self.zero_rows:  # dropped assignments read the appended zero row
            out = self.pad_out((out, self.zero_row.astype(out.dtype)))
            row = self.to_zero_row(row, self.spill(self.not_kept(self.one, keep), _const(rows, ms.int32)))
            return self.combine(out, row, 0)
        gathered = self.combine(out, row, 0)
        return self.dropped(gathered, self._row_mask(self.kept_mask, kept, gathered))


class DenseWeights(nn.Cell):
    """A plain linear stored [in, out] (the authors' ``_Linear`` with transpose_b=False)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.weight = Parameter(trunc_normal((dim_in, dim_out)), name="weight")
        self.bias = Parameter(initializer(Zero(), (dim_out,)), name="bias")


class SharedFFN(nn.Cell):
    """The shared ("public") dense FFN applied to every token: mapping split by hidden columns,
    projection by hidden rows over model_parallel (one all-reduce), tokens over data_parallel."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.mapping = DenseWeights(dim, hidden)
        self.projection = DenseWeights(hidden, dim)
        self.dropout = nn.Dropout(p=dropout)
        dp, mp = spec.dp, spec.mp
        self.fc1 = spec(ops.MatMul(), (dp, 1), (1, mp))
        self.bias1 = spec(ops.BiasAdd(), (dp, mp), (mp,))  # not a broadcasting Add (see ExpertFFN)
        self.gelu = spec(ops.GeLU(), (dp, mp))
        spec(self.dropout.dropout, (dp, mp))
        self.fc2 = spec(ops.MatMul(), (dp, mp), (mp, 1))
        self.bias2 = spec(ops.BiasAdd(), (dp, 1), (1,))

    def weight_consumers(self):
        yield self.mapping.weight, self.fc1, 1
        yield self.mapping.bias, self.bias1, 1
        yield self.projection.weight, self.fc2, 1
        yield self.projection.bias, self.bias2, 1

    def construct(self, x: Tensor) -> Tensor:
        h = self.dropout(self.gelu(self.bias1(self.fc1(x, self.mapping.weight), self.mapping.bias)))
        return self.bias2(self.fc2(h, self.projection.weight), self.projection.bias)


class ModalMoE(nn.Cell):
    """Specialised experts (per modality) + cross experts + shared FFN, summed unweighted."""

    def __init__(self, arch: RingMoEArch, dim: int, dropout: float = 0.0, spec: ShardSpec = NO_SHARD):
        super().__init__()
        hidden = dim * arch.mlp_ratio
        self.arch = arch
        self.num_modalities = len(arch.modalities)
        self.num_experts = arch.num_experts
        self.special_ffn = nn.CellList(
            [ExpertFFN(arch.num_experts, dim, hidden, dropout, spec) for _ in arch.modalities]
        )
        self.special_router = nn.CellList([Router(dim, arch.num_experts, spec) for _ in arch.modalities])
        self.cross_ffn = ExpertFFN(arch.num_experts, dim, hidden, dropout, spec)
        self.cross_router = Router(dim, arch.num_experts, spec)
        self.public_ffn = SharedFFN(dim, hidden, dropout, spec)
        self.slots = RouteSlots(arch.num_experts, spec)
        self.batch = ModalityBatch(self.num_modalities, spec)
        self.reorder = spec(ops.Transpose(), (1, 1, 1))  # batch-major <-> modality-major routing order
        self.aux_cat = spec(ops.Concat(axis=0), *[(1,)] * self.num_modalities)
        self.aux_mean = spec(ops.ReduceMean(), (1,))
        self.aux_add = spec(ops.Add(), (), ())
        self.aux_weight = spec(ops.Mul(), (), ())
        self.aux_loss_weight = _const(arch.aux_loss_weight, scalar=True)
        self.add_cross = spec(ops.Add(), (spec.dp, 1), (spec.dp, 1))
        self.add_public = spec(ops.Add(), (spec.dp, 1), (spec.dp, 1))
        # Stand-alone, the joint path runs the four specialised routers and expert groups as one
        # (stacked weights, a [modalities, tokens] routing): the same numbers as one group at a
        # time, with a third of the operators (graph size, compile memory and launches). Under a
        # layout each group keeps its own operators, sharded as planned.
        self.stand_alone = not spec.on
        if self.stand_alone:
            self.stack_routers = ops.Stack(axis=0)
            self.router_matmul = ops.BatchMatMul(transpose_b=True)
            self.router_softmax = ops.Softmax(axis=-1)
            self.router_argmax = ops.Argmax(axis=-1, output_type=ms.int32)
            self.stack_experts = ops.Concat(axis=0)  # [E, ...] weights -> [M * E, ...]
            self.stack_biases = ops.Concat(axis=1)  # [1, E, 1, H] biases -> [1, M * E, 1, H]
            self.tile_offsets = ops.Tile()
            self.add_offsets = ops.Add()
            self.row_of = ops.Mul()
            self.row_plus = ops.Add()
            self.expert_offsets = Tensor(np.arange(self.num_modalities, dtype=np.int32)[:, None] * arch.num_experts)
        # Routing records are for parity checks in PyNative mode; graph mode cannot keep them.
        self.record_routing = False
        self.last_routing: dict = {}

    def _route_and_run(self, ffn: ExpertFFN, router: Router, tokens: Tensor, limit: bool, images: int = 0):
        """``images`` > 0: tokens are the whole batch-major joint batch of that many images per
        modality, whose routing order is modality-major (as stand-alone)."""
        expert, probs = router(tokens)
        if self.stand_alone:  # (StopGradient takes no shard strategy)
            expert = ops.stop_gradient(expert)  # integer routing: no gradient, and a smaller backward graph
        t = tokens.shape[0]
        cap = capacity(t, self.arch.capacity_factor, self.num_experts) if limit else t
        if images:
            shape = (images, self.num_modalities, t // (images * self.num_modalities))
            order = self.reorder(expert.reshape(shape), (1, 0, 2)).reshape(t)
            slot, kept, onehot = self.slots(order, cap)
            slot = self.reorder(slot.reshape(shape[1], shape[0], shape[2]), (1, 0, 2)).reshape(t)
            kept = self.reorder(kept.reshape(shape[1], shape[0], shape[2]), (1, 0, 2)).reshape(t)
        else:
            slot, kept, onehot = self.slots(expert, cap)
        out = ffn(tokens, expert, slot, kept, cap)
        aux = router.aux_loss(onehot, probs, self.arch.aux_loss_experts)
        return out, aux, {"expert": expert, "probs": probs, "kept": kept}

    def _stacked_special(self, x: Tensor, routing: dict):
        """The specialised experts of the joint path, stand-alone (modality-major rows): modality m's
        tokens through its router and experts, capacity per modality, all modalities at once
        (stacked router and expert weights, slots counted per modality).
        Returns ([N * L, C] output, mean over modalities of the aux losses)."""
        n, l, c = x.shape
        mods, e = self.num_modalities, self.num_experts
        tokens = x.reshape(mods, -1, c)
        t = tokens.shape[1]
        weights = self.stack_routers(tuple(router.dense.weight for router in self.special_router))
        probs = self.router_softmax(self.router_matmul(tokens.astype(ms.float32), weights.astype(ms.float32)))
        expert = ops.stop_gradient(self.router_argmax(probs))  # [M, T] (no gradient: integer routing)
        cap = capacity(t, self.arch.capacity_factor, e)
        slot, kept, onehot = self.slots(expert, cap)  # slots counted per modality
        group = self.add_offsets(expert, self.tile_offsets(self.expert_offsets, (1, t)))  # expert m*E + e
        row = self.row_plus(self.row_of(group, _const(cap, ms.int32)), slot).reshape(-1)
        ffns = self.special_ffn
        out = ffns[0].run(x.reshape(-1, c), row, kept.reshape(-1), cap,
                          self.stack_experts(tuple(f.mapping.weight for f in ffns)),
                          self.stack_biases(tuple(f.mapping.bias for f in ffns)),
                          self.stack_experts(tuple(f.projection.weight for f in ffns)),
                          self.stack_biases(tuple(f.projection.bias for f in ffns)))
        aux = self.special_router[0].aux_loss(onehot, probs, self.arch.aux_loss_experts)  # [M]
        if self.record_routing:
            for m in range(mods):
                routing[f"special{m}"] = {"expert": expert[m], "probs": probs[m], "kept": kept[m]}
        return out, self.aux_mean(aux, ())

    def construct(self, x: Tensor, modality: int | None = None):
        """x: [N, L, C]. modality=None: joint path, N splits into equal modality chunks."""
        n, l, c = x.shape
        routing = {}
        reorder = 0
        if modality is None and self.stand_alone:
            if n % self.num_modalities:
                raise ValueError(f"joint MoE batch of {n} does not split into {self.num_modalities} modalities")
            special, special_aux_mean = self._stacked_special(x, routing)
            limit = True
        elif modality is None:
            if n % self.num_modalities:
                raise ValueError(f"joint MoE batch of {n} does not split into {self.num_modalities} modalities")
            chunk = n // self.num_modalities
            special_out, special_aux = [], []
            for m in range(self.num_modalities):
                tokens = self.batch.part(x, m).reshape(-1, c)
                out, aux, info = self._route_and_run(self.special_ffn[m], self.special_router[m], tokens, True)
                special_out.append(out.reshape(chunk, l, c))
                special_aux.append(aux.reshape(1))
                routing[f"special{m}"] = info
            special = self.batch.join(special_out).reshape(-1, c)
            special_aux_mean = self.aux_mean(self.aux_cat(tuple(special_aux)), ())
            limit = True
            reorder = chunk if self.batch.batch_major else 0
        else:
            tokens = x.reshape(-1, c)
            special, special_aux_mean, info = self._route_and_run(
                self.special_ffn[modality], self.special_router[modality], tokens, False
            )
            routing[f"special{modality}"] = info
            limit = False
        tokens = x.reshape(-1, c)
        cross, cross_aux, info = self._route_and_run(self.cross_ffn, self.cross_router, tokens, limit, reorder)
        routing["cross"] = info
        if self.record_routing:
            self.last_routing = routing
        out = self.add_public(self.add_cross(special, cross), self.public_ffn(tokens))
        aux = self.aux_weight(self.aux_loss_weight, self.aux_add(cross_aux, special_aux_mean))
        return out.reshape(n, l, c), aux


# ---- attention, block, stage -------------------------------------------------------------
class RelativePositionBias(nn.Cell):
    def __init__(self, window: int, num_heads: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.window = window
        self.relative_position_bias_table = Parameter(
            trunc_normal(((2 * window - 1) ** 2, num_heads)), name="relative_position_bias_table"
        )
        # A derived buffer, saved like the authors' checkpoints do; the converter drops it.
        self.relative_position_index = Parameter(
            Tensor(relative_position_index(window)), name="relative_position_index", requires_grad=False
        )
        heads = spec.heads(num_heads)
        self.gather = spec(ops.Gather(), (1, heads), (1,))
        self.to_heads = spec(ops.Transpose(), (1, 1, heads))

    def weight_consumers(self):
        yield self.relative_position_bias_table, self.gather, 0
        yield self.relative_position_index, self.gather, 1  # flattened on the way: replicated

    def construct(self) -> Tensor:
        n = self.window * self.window
        bias = self.gather(self.relative_position_bias_table, self.relative_position_index.reshape(-1), 0)
        return self.to_heads(bias.reshape(n, n, -1), (2, 0, 1))  # [heads, N, N]


class AttentionSoftmax(nn.Cell):
    """Softmax over the last axis of [windows, heads, N, N] scores, with MindSpore's own gradient
    ``(dy - sum(dy * y)) * y`` written out so that the row sums are tiled rather than broadcast
    (see ExpertFFN: the broadcasting Sub kept 140 MB of indices in the tiny training graph)."""

    def __init__(self, strategy: tuple, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.softmax = spec(ops.Softmax(axis=-1), strategy)
        self.grad_product = spec(ops.Mul(), strategy, strategy)
        self.row_sum = spec(ops.ReduceSum(keep_dims=True), strategy)
        self.tile = spec(ops.Tile(), strategy)
        self.centre = spec(ops.Sub(), strategy, strategy)
        self.grad_scale = spec(ops.Mul(), strategy, strategy)

    def construct(self, x: Tensor) -> Tensor:
        return self.softmax(x)

    def bprop(self, x, out, dout):
        rows = self.tile(self.row_sum(self.grad_product(dout, out), -1), (1,) * (out.ndim - 1) + (out.shape[-1],))
        return (self.grad_scale(self.centre(dout, rows), out),)


class WindowAttention(nn.Cell):
    """Swin-V1 scaled dot-product attention with separate q, k, v; heads over model_parallel
    where they divide (q/k/v split by output features, proj by input features)."""

    def __init__(self, dim: int, window: int, num_heads: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Dense(dim, dim, weight_init=TruncatedNormal(0.02))
        self.k = nn.Dense(dim, dim, weight_init=TruncatedNormal(0.02))
        self.v = nn.Dense(dim, dim, weight_init=TruncatedNormal(0.02))
        self.proj = nn.Dense(dim, dim, weight_init=TruncatedNormal(0.02))
        self.relative_position_bias = RelativePositionBias(window, num_heads, spec)
        dp, a = spec.dp, spec.heads(num_heads)
        for dense in (self.q, self.k, self.v):  # nn.Dense stores [out, in]: split the outputs
            spec(dense.matmul, (dp, 1), (a, 1))
            spec(dense.bias_add, (dp, a), (a,))
        spec(self.proj.matmul, (dp, a), (1, a))  # ... and the inputs: one all-reduce
        spec(self.proj.bias_add, (dp, 1), (1,))
        heads = (dp, a, 1, 1)  # [windows, heads, N, head_dim]
        # Several heads stand-alone: a row permutation (see RowPermutation); under a layout a
        # Transpose, which splits the heads over model_parallel without gathering them first.
        n = window * window
        self.gather_heads = num_heads > 1 and not spec.on
        if self.gather_heads:
            self.to_heads = RowPermutation(head_order(n, num_heads), 3, spec)
            self.from_heads = RowPermutation(np.argsort(head_order(n, num_heads)), 3, spec)
        self.split_heads = spec(ops.Transpose(), (dp, 1, a, 1))
        self.scale_q = spec(ops.Mul(), heads, (1,))
        self.scale_value = _const(self.scale)
        # q @ k^T with k read transposed by the matmul (the same result to the bit, without a
        # Transpose kernel: MindSpore's CPU Transpose keeps an 8-byte index per element for the
        # graph's lifetime). Bias and mask are tiled to full shape before adding (see ExpertFFN).
        self.qk = spec(ops.BatchMatMul(transpose_b=True), heads, heads)
        self.tile_bias = spec(ops.Tile(), (1, a, 1, 1))
        self.add_bias = spec(ops.Add(), heads, heads)
        self.tile_mask = spec(ops.Tile(), (1, 1, 1, 1, 1))
        self.add_mask = spec(ops.Add(), (dp, 1, a, 1, 1), (dp, 1, a, 1, 1))
        self.softmax = AttentionSoftmax(heads, spec)
        self.av = spec(ops.BatchMatMul(), heads, heads)
        self.merge_heads = spec(ops.Transpose(), heads)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        if self.num_heads == 1:  # [b, n, 1, c] -> [b, 1, n, c] moves nothing in memory
            return x.reshape(b, 1, n, c)
        d = c // self.num_heads
        if self.gather_heads:
            return self.to_heads(x.reshape(b, n * self.num_heads, d)).reshape(b, self.num_heads, n, d)
        return self.split_heads(x.reshape(b, n, self.num_heads, c // self.num_heads), (0, 2, 1, 3))

    def construct(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, c = x.shape
        q = self.scale_q(self._heads(self.q(x)), self.scale_value)
        k, v = self._heads(self.k(x)), self._heads(self.v(x))
        attn = self.qk(q, k)
        bias = self.relative_position_bias().reshape(1, self.num_heads, n, n)
        attn = self.add_bias(attn, self.tile_bias(bias, (b, 1, 1, 1)))
        if mask is not None:
            nw = mask.shape[0]
            mask = self.tile_mask(mask.reshape(1, nw, 1, n, n), (b // nw, 1, self.num_heads, 1, 1))
            attn = self.add_mask(attn.reshape(b // nw, nw, self.num_heads, n, n), mask)
            attn = attn.reshape(b, self.num_heads, n, n)
        attn = self.softmax(attn.astype(ms.float32)).astype(v.dtype)
        out = self.av(attn, v)
        if self.num_heads == 1:
            out = out.reshape(b, n, c)
        elif self.gather_heads:
            out = self.from_heads(out.reshape(b, self.num_heads * n, c // self.num_heads)).reshape(b, n, c)
        else:
            out = self.merge_heads(out, (0, 2, 1, 3)).reshape(b, n, c)
        return self.proj(out)


class RingMoEBlock(nn.Cell):
    def __init__(self, arch: RingMoEArch, stage: int, index: int, dropout: float = 0.0,
                 spec: ShardSpec = NO_SHARD):
        super().__init__()
        dim = arch.stage_dim(stage)
        self.resolution = arch.stage_resolution(stage)
        self.window = arch.stage_window(stage)
        self.shift = self.window // 2 if (index % 2 == 1 and arch.stage_shifts(stage)) else 0
        self.norm1 = nn.LayerNorm((dim,), epsilon=LN_EPS)
        self.attn = WindowAttention(dim, self.window, arch.num_heads[stage], spec)
        self.norm2 = nn.LayerNorm((dim,), epsilon=LN_EPS)
        self.mlp = ModalMoE(arch, dim, dropout, spec)
        if self.shift:
            mask = shifted_window_mask(self.resolution, self.resolution, self.window, self.shift)
            self.attn_mask = Parameter(Tensor(mask), name="attn_mask", requires_grad=False)
        else:
            self.attn_mask = None
        spec.layer_norm(self.norm1, 3)
        spec.layer_norm(self.norm2, 3)
        self.add_attn = spec(ops.Add(), spec.batch(3), spec.batch(3))
        self.add_moe = spec(ops.Add(), spec.batch(3), spec.batch(3))
        # Cyclic shift and window partition in one row permutation of the tokens (none where the
        # map is one unshifted window), and its inverse after the attention.
        self.windowed = self.shift > 0 or self.window < self.resolution
        if self.windowed:
            order = window_order(self.resolution, self.window, self.shift)
            self.to_windows = RowPermutation(order, 3, spec)
            self.from_windows = RowPermutation(np.argsort(order), 3, spec)

    def weight_consumers(self):
        if self.attn_mask is not None:
            yield self.attn_mask, self.attn.tile_mask, 0  # reshaped on the way: replicated

    def construct(self, x: Tensor, modality: int | None = None):
        b, l, c = x.shape
        n = self.window * self.window
        if self.windowed:
            attn = self.attn(self.to_windows(x).reshape(-1, n, c), self.attn_mask)
            attn = self.from_windows(attn.reshape(b, l, c))
        else:
            attn = self.attn(x, self.attn_mask)
        x = self.add_attn(x, self.norm1(attn))
        moe_out, aux = self.mlp(x, modality)
        return self.add_moe(x, self.norm2(moe_out)), aux


class PatchMerging(nn.Cell):
    """2x2 neighbours in the original Swin order, Linear(4C->2C, no bias), then LayerNorm(1e-4)."""

    def __init__(self, dim: int, resolution: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Dense(4 * dim, 2 * dim, has_bias=False, weight_init=TruncatedNormal(0.02))
        self.norm = nn.LayerNorm((2 * dim,), epsilon=MERGE_LN_EPS)
        self.gather_2x2 = RowPermutation(merge_order(resolution), 3, spec)
        spec(self.reduction.matmul, (spec.dp, 1), (1, 1))
        spec.layer_norm(self.norm, 3)

    def construct(self, x: Tensor) -> Tensor:
        b, l, c = x.shape
        # A row permutation rather than strided slices, whose gradient kernel fails on MindSpore's
        # CPU backend (and rather than a Transpose, see RowPermutation).
        x = self.gather_2x2(x).reshape(b, l // 4, 4 * c)
        return self.norm(self.reduction(x))


def _sum_scalars(add, values):
    """values[0] + values[1] + ... in that order (the stand-alone graph's order)."""
    total = None
    for value in values:
        total = value if total is None else add(total, value)
    return total


class RingMoEStage(nn.Cell):
    def __init__(self, arch: RingMoEArch, stage: int, dropout: float = 0.0, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.blocks = nn.CellList([RingMoEBlock(arch, stage, i, dropout, spec) for i in range(arch.depths[stage])])
        last = stage == arch.num_stages - 1
        self.downsample = None if last else PatchMerging(arch.stage_dim(stage), arch.stage_resolution(stage), spec)
        self.add_aux = spec(ops.Add(), (), ())

    def construct(self, x: Tensor, modality: int | None = None):
        aux = []
        for block in self.blocks:
            x, block_aux = block(x, modality)
            aux.append(block_aux)
        out = x
        if self.downsample is not None:
            x = self.downsample(x)
        return out, x, _sum_scalars(self.add_aux, aux)


# ---- encoder -----------------------------------------------------------------------------
class PatchEmbed(nn.Cell):
    """Conv 4x4 stride 4 with bias, tokens in row-major order, LayerNorm eps 1e-6."""

    def __init__(self, in_channels: int, dim: int, patch: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.projection = nn.Conv2d(
            in_channels, dim, patch, stride=patch, pad_mode="valid", has_bias=True,
            weight_init=TruncatedNormal(0.02),
        )
        self.norm = nn.LayerNorm((dim,), epsilon=LN_EPS)
        spec(self.projection.conv2d, spec.batch(4), (1, 1, 1, 1))
        spec(self.projection.bias_add, spec.batch(4), (1,))
        self.to_tokens = spec(ops.Transpose(), spec.batch(3))
        spec.layer_norm(self.norm, 3)

    def construct(self, x: Tensor) -> Tensor:
        x = self.projection(x)
        b, c, h, w = x.shape
        return self.norm(self.to_tokens(x.reshape(b, c, h * w), (0, 2, 1)))


class RingMoEEncoder(nn.Cell):
    """The backbone. Parameter names match the authors' ``encoder.*`` layout."""

    def __init__(self, arch: RingMoEArch, dropout: float = 0.0, parallel: ParallelLayout | None = None):
        super().__init__()
        if not arch.moe:
            raise ValueError("the MindSpore RingMoE is pretrained with MoE; dense layouts come from conversion")
        spec = ShardSpec(parallel)
        self.arch = arch
        for m, modality in enumerate(arch.modalities):
            setattr(self, f"patch_embed{m}", PatchEmbed(modality.channels, arch.embed_dim, arch.patch_size, spec))
        self.mask_token = Parameter(initializer(Zero(), (1, 1, arch.embed_dim)), name="mask_token")
        self.layers = nn.CellList([RingMoEStage(arch, s, dropout, spec) for s in range(arch.num_stages)])
        self.norm = nn.LayerNorm((arch.num_features,), epsilon=LN_EPS)
        spec.layer_norm(self.norm, 3)
        tokens = spec.batch(3)
        self.tile_w = spec(ops.Tile(), tokens)  # full-shape operands (see ExpertFFN)
        self.tile_token = spec(ops.Tile(), (1, 1, 1))
        self.unmasked = spec(ops.Sub(), (1,), tokens)
        self.keep_tokens = spec(ops.Mul(), tokens, tokens)
        self.mask_tokens = spec(ops.Mul(), tokens, tokens)
        self.mix = spec(ops.Add(), tokens, tokens)
        self.one = _const(1.0)
        self.add_aux = spec(ops.Add(), (), ())

    def weight_consumers(self):
        yield self.mask_token, self.tile_token, 0

    def patch_embed(self, modality: int) -> PatchEmbed:
        return getattr(self, f"patch_embed{modality}")

    def embed(self, image: Tensor, modality: int, mask: Tensor | None = None) -> Tensor:
        """Patch tokens of one modality; masked tokens become ``x*(1-w) + mask_token*w``."""
        x = self.patch_embed(modality)(image)
        if mask is not None:
            b, l, c = x.shape
            w = self.tile_w(mask.reshape(b, l, 1).astype(x.dtype), (1, 1, c))
            token = self.tile_token(self.mask_token, (b, l, 1))
            x = self.mix(self.keep_tokens(x, self.unmasked(self.one, w)), self.mask_tokens(token, w))
        return x

    def forward_tokens(self, x: Tensor, modality: int | None = None):
        """Run the stages. Returns (stage outputs before merging, final-normed tokens, aux loss).

        modality None: x is the joint batch, in the row order of ModalityBatch for this layout."""
        outs, aux = [], []
        for stage in self.layers:
            out, x, stage_aux = stage(x, modality)
            outs.append(out)
            aux.append(stage_aux)
        return outs, self.norm(x), _sum_scalars(self.add_aux, aux)

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
class DepthToSpace(nn.Cell):
    """TensorFlow DepthToSpace (DCR): out[32h+i, 32w+j, c] = in[(i*32 + j)*C + c, h, w]."""

    def __init__(self, block: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.block = block
        self.transpose = spec(ops.Transpose(), spec.batch(6))

    def construct(self, x: Tensor) -> Tensor:
        b, d, h, w = x.shape
        block = self.block
        c = d // (block * block)
        x = self.transpose(x.reshape(b, block, block, c, h, w), (0, 3, 4, 1, 5, 2))
        return x.reshape(b, c, h * block, w * block)


def depth_to_space_dcr(x: Tensor, block: int) -> Tensor:
    """DepthToSpace as a function (PyNative)."""
    return DepthToSpace(block)(x)


class PixelDecoder(nn.Cell):
    """A modality's SimMIM head: a 1x1 convolution from the last stage to block*block*C channels,
    then DepthToSpace (DCR). Stored as the authors' Conv2d (weight [out, in, 1, 1], bias [out]).

    The 1x1 convolution runs as a MatMul on the tokens (the same numbers): no token-to-map
    transpose, and none of oneDNN's convolution buffers (64 MB for the 8-channel head). Its output
    channels (i*block + j)*C + c are taken in (c, i, j) order (weight and bias rows gathered), so
    that each output pixel row ends with its block of j and the DCR rearrangement is a row
    permutation rather than a Transpose (see RowPermutation)."""

    def __init__(self, dim: int, channels: int, block: int, side: int, spec: ShardSpec = NO_SHARD):
        super().__init__()
        self.block, self.channels = block, channels
        self.weight = Parameter(trunc_normal((block * block * channels, dim, 1, 1)), name="weight")
        # nn.Conv2d's default bias initialisation (which this head had as a Conv2d)
        bias = initializer(Uniform(1 / math.sqrt(dim)), (block * block * channels,), ms.float32)
        self.bias = Parameter(bias, name="bias")
        self.side = side
        by_channel = np.arange(block * block * channels).reshape(block, block, channels).transpose(2, 0, 1)
        self.weight_rows = RowPermutation(by_channel.reshape(-1), 2, spec, axis=0)
        self.bias_rows = RowPermutation(by_channel.reshape(-1), 1, spec, axis=0)
        self.matmul = spec(ops.MatMul(transpose_b=True), (spec.dp, 1), (1, 1))
        self.bias_add = spec(ops.BiasAdd(), (spec.dp, 1), (1,))
        # rows [h, w, c, i] of `block` pixels j -> image rows [c, h, i, w]
        rows = np.arange(side * side * channels * block).reshape(side, side, channels, block)
        self.to_image = RowPermutation(rows.transpose(2, 0, 3, 1).reshape(-1), 3, spec)

    def weight_consumers(self):
        yield self.weight, self.weight_rows.gather, 0  # reshaped on the way: replicated
        yield self.bias, self.bias_rows.gather, 0

    def construct(self, tokens: Tensor) -> Tensor:
        """tokens [B, side*side, dim] (row-major) -> image [B, C, side*block, side*block]."""
        b, l, d = tokens.shape
        side, block, c = self.side, self.block, self.channels
        y = self.matmul(tokens.reshape(b * l, d), self.weight_rows(self.weight.reshape(-1, d)))
        y = self.bias_add(y, self.bias_rows(self.bias)).reshape(b, l * c * block, block)
        # out[b, c, block*h + i, block*w + j] = y[b, h, w, (c, i, j)]
        return self.to_image(y).reshape(b, c, side * block, side * block)


class RingMoESimMIM(nn.Cell):
    """SimMIM over four modalities: one batch of each, joined along the batch axis.

    ``parallel``: a pretrain.parallel.ParallelLayout for MindSpore semi_auto_parallel (operator
    shard strategies as planned by pretrain.parallel.plan_layouts), or None (no strategies)."""

    def __init__(self, arch: RingMoEArch, dropout: float = 0.0, parallel: ParallelLayout | None = None):
        super().__init__()
        spec = ShardSpec(parallel)
        self.arch = arch
        self.encoder = RingMoEEncoder(arch, dropout, parallel)
        self.stride = arch.patch_size * 2 ** (arch.num_stages - 1)
        for m in range(len(arch.modalities)):
            decoder = PixelDecoder(arch.num_features, arch.reconstructed_channels(m), self.stride,
                                   arch.stage_resolution(arch.num_stages - 1), spec)
            setattr(self, f"decoder_{m}", decoder)
        num = len(arch.modalities)
        image = spec.batch(4)
        self.batch = ModalityBatch(num, spec)
        self.with_targets = spec(ops.Concat(axis=1), image, image)
        # A patch mask [B, h, w] to pixels: each patch value repeated scale x scale times, and over
        # the channels for the product (tiles, not broadcasting products: see ExpertFFN).
        self.upsample = spec(ops.Tile(), spec.batch(5))
        self.over_channels = spec(ops.Tile(), image)
        self.diff = spec(ops.Sub(), image, image)
        self.abs = spec(ops.Abs(), image)
        self.masked = spec(ops.Mul(), image, image)
        self.total = spec(ops.ReduceSum(), image)
        self.count = spec(ops.ReduceSum(), image)
        self.plus_eps = spec(ops.Add(), (), ())
        self.per_pixel = spec(ops.RealDiv(), (), ())
        self.per_channel = spec(ops.RealDiv(), (), ())
        self.eps = _const(1e-5, scalar=True)
        self.add_loss = spec(ops.Add(), (), ())
        self.add_aux = spec(ops.Add(), (), ())
        self.stack_losses = spec(ops.Concat(axis=0), *[(1,)] * num)

    def reconstruct(self, tokens: Tensor, modality: int) -> Tensor:
        return getattr(self, f"decoder_{modality}")(tokens)

    def masked_l1(self, img: Tensor, rec: Tensor, mask: Tensor) -> Tensor:
        """L1 on masked pixels, per masked pixel and channel."""
        b, h, w = mask.shape
        scale = self.arch.patch_size
        pixel_mask = self.upsample(mask.astype(ms.float32).reshape(b, h, 1, w, 1), (1, 1, scale, 1, scale))
        pixel_mask = pixel_mask.reshape(b, 1, h * scale, w * scale)
        per_channel = self.over_channels(pixel_mask, (1, img.shape[1], 1, 1))
        l1 = self.total(self.masked(self.abs(self.diff(img, rec)), per_channel), ())
        l1 = self.per_pixel(l1, self.plus_eps(self.count(pixel_mask, ()), self.eps))
        return self.per_channel(l1, _const(float(img.shape[1]), scalar=True))

    def construct(self, images: tuple, masks: tuple, extra_targets: tuple | None = None):
        """images[m]: [B, C_m, H, W]; masks[m]: [B, H/4, W/4] patch masks (1 = masked).

        ``extra_targets[m]`` (or None) holds reconstructed channels that are not inputs, such as
        the SAR-L1 total power. Returns (total loss, per-modality reconstruction losses, aux loss).
        """
        tokens = [self.encoder.embed(img, m, mask) for m, (img, mask) in enumerate(zip(images, masks))]
        batch = [t.shape[0] for t in tokens]
        if len(set(batch)) != 1:
            raise ValueError(f"the joint MoE path needs equal batches per modality, got {batch}")
        _, z, aux = self.encoder.forward_tokens(self.batch.join(tokens), None)
        losses = []
        for m, (img, mask) in enumerate(zip(images, masks)):
            rec = self.reconstruct(self.batch.part(z, m), m)
            if extra_targets is not None and extra_targets[m] is not None:
                img = self.with_targets((img, extra_targets[m]))
            losses.append(self.masked_l1(img, rec, mask).reshape(1))
        recon = _sum_scalars(self.add_loss, [loss.reshape(()) for loss in losses])
        return self.add_aux(recon, aux), self.stack_losses(tuple(losses)), aux


def recompute_experts(net: RingMoESimMIM) -> int:
    """Recompute each block's MoE layer in the backward pass (graph mode) instead of keeping its
    activations: on tiny they are ~40% of a training step's memory, and recomputing them costs
    one more MoE forward (~10% of the step). Blocks already recomputed whole (parallel.recompute)
    are left alone: MindSpore takes one recompute setting per cell tree. Returns the number set."""
    count = 0
    for stage in net.encoder.layers:
        for block in stage.blocks:
            if block._recompute_cell is None and block.mlp._recompute_cell is None:
                block.mlp.recompute()
                count += 1
    return count


# ---- reading the strategies back -------------------------------------------------------------
def _consumers(cell):
    """(parameter, primitive, input index) for the parameters a cell owns and feeds to a primitive."""
    if isinstance(cell, nn.Dense):
        yield cell.weight, cell.matmul, 1
        if cell.has_bias:
            yield cell.bias, cell.bias_add, 1
    elif isinstance(cell, nn.Conv2d):
        yield cell.weight, cell.conv2d, 1
        if cell.has_bias:
            yield cell.bias, cell.bias_add, 1
    elif isinstance(cell, nn.LayerNorm):
        yield cell.gamma, cell.layer_norm, 1
        yield cell.beta, cell.layer_norm, 2
    elif hasattr(cell, "weight_consumers"):
        yield from cell.weight_consumers()


def weight_strategies(net: nn.Cell) -> dict[str, tuple | None]:
    """Parameter name -> the input strategy declared for it by the primitive that consumes it,
    read back from the primitive (None: no strategy, a stand-alone model). A router's nn.Dense
    is only a weight holder: its consumer is the router's own matmul."""
    found: dict[str, tuple | None] = {}
    for _, cell in net.cells_and_names():
        for param, prim, index in _consumers(cell):
            if isinstance(cell, nn.Dense) and param.name in found:
                continue
            strategy = prim.attrs.get("in_strategy")
            found[param.name] = None if strategy is None else tuple(strategy[index])
    return found
