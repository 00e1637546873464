#!/usr/bin/env python
"""Distributed pretraining: the ``parallel`` config section, its checks, the parameter layout it
implies, and the MindSpore communication / auto-parallel set-up.

Modes (``parallel.mode``):
  stand_alone          one process (the default)
  data_parallel        one process per device, each with the whole model; gradients are averaged
                       with an all-reduce every step. Runs on CPU (MindSpore's own collective
                       library under msrun), GPU (NCCL) and Ascend (HCCL)
  semi_auto_parallel   MindSpore's operator-level parallelism: data x model x expert parallel,
                       optimizer sharding, sliced per-rank checkpoints plus a strategy file.
                       GPU and Ascend only: MindSpore 2.10 refuses it on CPU

Layout rules (the MindFormers convention the authors trained with): the device count is
data_parallel x model_parallel (x pipeline_stages); expert parallelism is carved out of the
data-parallel ranks, so expert_parallel divides data_parallel and the expert count. Ranks are
numbered row-major over [data, model]: rank = d * model_parallel + m, and for expert weights the
data index splits as d = e * (data_parallel / expert_parallel) + i (expert slice e, copy i).
pretrain/models/ringmoe.py, built with ParallelLayout.from_config(...), declares the operator
shard strategies that realise these layouts (models.ringmoe.weight_strategies reads them back).

Check a layout without devices (prints the device matrix, per-rank shard shapes and memory, and
can write the planned strategy in MindSpore's JSON form, which converters/merge.py reads):
  python -m pretrain.parallel --config configs/pretrain/giant_32x8x4.py
  python -m pretrain.parallel --config configs/pretrain/giant_32x8x4.py --strategy-out plan.json --json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.config import ConfigError  # noqa: E402

MODES = ("stand_alone", "data_parallel", "semi_auto_parallel")
DEVICES = ("CPU", "GPU", "Ascend")

# MindSpore 2.10's own words for what it refuses, so a config fails before any process starts.
MS_SEMI_AUTO_CPU = ("Invalid communication backend: CPU for semi_auto_parallel/auto_parallel mode, "
                    "currently only support Ascend/GPU backend.")
MS_OPT_SHARD_DP = 'For "Optimizer", parallel optimizer only supports "Ascend" in data parallel mode'
MS_DRYRUN_CPU = "Dryrun is not supported on CPU device for a distributed job."


@dataclass(frozen=True)
class ParallelConfig:
    """The ``parallel`` config section (defaults in configs/pretrain/_base_simmim.py)."""

    mode: str = "stand_alone"
    data_parallel: int = 1
    model_parallel: int = 1
    expert_parallel: int = 1
    pipeline_stages: int = 1
    optimizer_shard: bool = False
    optimizer_shard_size: int = -1       # ranks per optimizer-shard group; -1: every rank holding a copy
    optimizer_shard_threshold_kb: int = 64  # smaller parameters stay whole (MindSpore's default)
    recompute: bool = False
    gradients_mean: bool = True
    strategy_file: str = "strategy.json"

    @property
    def device_num(self) -> int:
        return self.data_parallel * self.model_parallel * self.pipeline_stages

    @property
    def distributed(self) -> bool:
        return self.mode != "stand_alone"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_INT_KEYS = ("data_parallel", "model_parallel", "expert_parallel", "pipeline_stages")


def head_split(num_heads: int, model_parallel: int) -> int:
    """How many ways an attention layer splits over model_parallel: by heads where they divide
    evenly, else not at all (giant stage 0 has 14 heads; 8-way model parallel leaves it whole)."""
    return model_parallel if num_heads % model_parallel == 0 else 1


@dataclass(frozen=True)
class ParallelLayout:
    """The operator-parallel split counts pretrain/models/ringmoe.py shards its operators by
    (``RingMoESimMIM(arch, parallel=layout)``)."""

    data_parallel: int = 1
    model_parallel: int = 1
    expert_parallel: int = 1

    @classmethod
    def from_config(cls, pc: ParallelConfig) -> "ParallelLayout | None":
        """The layout of a semi_auto_parallel run; None otherwise (the model sets no strategies:
        stand-alone and data_parallel run the whole model on every rank)."""
        if pc.mode != "semi_auto_parallel":
            return None
        return cls(pc.data_parallel, pc.model_parallel, pc.expert_parallel)


def parse_parallel(section: dict | None) -> ParallelConfig:
    """The ``parallel`` section as a ParallelConfig; unknown keys and wrong types are ConfigErrors."""
    section = dict(section or {})
    known = {f.name for f in dataclasses.fields(ParallelConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"parallel: unknown key(s) {unknown}; known: {sorted(known)}")
    for key in _INT_KEYS + ("optimizer_shard_size", "optimizer_shard_threshold_kb"):
        value = section.get(key)
        if value is not None and (type(value) is not int):
            raise ConfigError(f"parallel.{key} must be an integer, got {value!r}")
    for key in ("optimizer_shard", "recompute", "gradients_mean"):
        if key in section and type(section[key]) is not bool:
            raise ConfigError(f"parallel.{key} must be True or False, got {section[key]!r}")
    return ParallelConfig(**section)


def check_parallel(pc: ParallelConfig, num_experts: int, device: str | None = None,
                   group_size: int | None = None) -> None:
    """Refuse layouts that cannot run, each with a one-line ConfigError.

    ``device``: the target (CPU, GPU, Ascend), for what MindSpore refuses there; ``group_size``:
    the number of processes actually launched (after communication init).
    """
    if pc.mode not in MODES:
        raise ConfigError(f"parallel.mode must be one of {list(MODES)}, got {pc.mode!r}")
    for key in _INT_KEYS:
        if getattr(pc, key) < 1:
            raise ConfigError(f"parallel.{key} must be >= 1, got {getattr(pc, key)}")
    dp, mp, ep = pc.data_parallel, pc.model_parallel, pc.expert_parallel
    if pc.mode == "stand_alone" and pc.device_num * ep > 1:
        raise ConfigError(f"parallel.mode='stand_alone' runs one process but data_parallel={dp}, "
                          f"model_parallel={mp}, expert_parallel={ep}: set parallel.mode")
    if pc.mode == "data_parallel" and (mp > 1 or ep > 1):
        raise ConfigError(f"parallel.mode='data_parallel' keeps the whole model on every rank: model_parallel={mp} "
                          f"and expert_parallel={ep} need parallel.mode='semi_auto_parallel'")
    if pc.pipeline_stages != 1:
        raise ConfigError(f"parallel.pipeline_stages={pc.pipeline_stages}: pipeline parallelism is not supported "
                          "(the model is not split into stage cells); use 1")
    if dp % ep:
        raise ConfigError(f"parallel.expert_parallel={ep} must divide data_parallel={dp} "
                          "(experts are spread over data-parallel ranks)")
    if num_experts % ep:
        raise ConfigError(f"parallel.expert_parallel={ep} must divide the {num_experts} experts per router")
    if pc.optimizer_shard_size == 0 or pc.optimizer_shard_size < -1:
        raise ConfigError(f"parallel.optimizer_shard_size must be -1 or >= 1, got {pc.optimizer_shard_size}")
    if pc.optimizer_shard and pc.optimizer_shard_size > 0 and dp % pc.optimizer_shard_size:
        raise ConfigError(f"parallel.optimizer_shard_size={pc.optimizer_shard_size} must divide "
                          f"data_parallel={dp}")
    name = pc.strategy_file
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"parallel.strategy_file must be a plain file name (saved in the work dir), got {name!r}")
    if pc.mode == "data_parallel" and not name.endswith(".json"):
        raise ConfigError(f"parallel.strategy_file={name!r}: data_parallel writes the JSON form, name it *.json")
    if device is not None:
        if device not in DEVICES:
            raise ConfigError(f"train.device must be one of {list(DEVICES)}, got {device!r}")
        if pc.mode == "semi_auto_parallel" and device == "CPU":
            raise ConfigError(f"parallel.mode='semi_auto_parallel' needs GPU or Ascend; MindSpore 2.10 on CPU: "
                              f"{MS_SEMI_AUTO_CPU}")
        if pc.mode == "data_parallel" and pc.optimizer_shard and device != "Ascend":
            raise ConfigError(f"parallel.optimizer_shard with data_parallel needs Ascend; MindSpore 2.10 on "
                              f"{device}: {MS_OPT_SHARD_DP}")
    if group_size is not None:
        check_group_size(pc, group_size)


def check_group_size(pc: ParallelConfig, group_size: int) -> None:
    """The launched process count must be the layout's device count."""
    if group_size != pc.device_num:
        raise ConfigError(f"parallel: data_parallel x model_parallel x pipeline_stages = {pc.device_num} but "
                          f"{group_size} process(es) were launched")


def check_layout(pc: ParallelConfig, arch) -> None:
    """Under semi_auto_parallel, every stage's FFN hidden width (shared FFN and experts) must split
    evenly over model_parallel (attention heads that do not divide stay whole)."""
    if pc.mode != "semi_auto_parallel":
        return
    for stage in range(arch.num_stages):
        hidden = arch.stage_dim(stage) * arch.mlp_ratio
        if hidden % pc.model_parallel:
            raise ConfigError(f"parallel.model_parallel={pc.model_parallel} does not divide the FFN hidden width "
                              f"{hidden} of stage {stage}")


def config_parallel(cfg: dict, device: str | None = None) -> ParallelConfig:
    """Parse and check the ``parallel`` section of a resolved pretraining config."""
    from pretrain.models.arch import get_arch

    pc = parse_parallel(cfg.get("parallel"))
    experts = cfg.get("model", {}).get("num_experts") or get_arch(cfg["model"]["arch"]).num_experts
    check_parallel(pc, experts, device)
    if pc.mode == "semi_auto_parallel":
        from pretrain.train import build_arch

        check_layout(pc, build_arch(cfg))
    return pc


# ---- the auto-parallel context ------------------------------------------------------------------
def context_kwargs(pc: ParallelConfig, group_size: int, strategy_path: str | Path | None) -> dict:
    """Keyword arguments for ``mindspore.set_auto_parallel_context`` (plain data, so the dry path
    and tests can record them). ``strategy_path``: where MindSpore saves the strategy (semi-auto;
    rank 0 only, so that ranks never write one file at once)."""
    if not pc.distributed:
        return {}
    kwargs: dict = {"parallel_mode": pc.mode, "device_num": group_size, "gradients_mean": pc.gradients_mean}
    if pc.optimizer_shard:
        kwargs["enable_parallel_optimizer"] = True
        kwargs["parallel_optimizer_config"] = {"optimizer_weight_shard_size": pc.optimizer_shard_size,
                                               "parallel_optimizer_threshold": pc.optimizer_shard_threshold_kb}
    if pc.mode == "semi_auto_parallel":
        if pc.pipeline_stages > 1:
            kwargs["pipeline_stages"] = pc.pipeline_stages
        if strategy_path is not None:
            kwargs["strategy_ckpt_config"] = {"save_file": str(strategy_path), "only_trainable_params": False}
    return kwargs


@dataclass
class DistInfo:
    """Where this process stands in the job (rank 0 of 1 when stand-alone)."""

    config: ParallelConfig = field(default_factory=ParallelConfig)
    rank: int = 0
    group_size: int = 1
    context: dict = field(default_factory=dict)  # what was passed to set_auto_parallel_context

    @property
    def distributed(self) -> bool:
        return self.config.distributed

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the shared outputs: config.json, log.jsonl, loss.png, the strategy file."""
        return self.rank == 0

    def rank_dir(self, work_dir: Path) -> Path:
        """Checkpoints (and, for ranks > 0, logs) of this rank: ``<work_dir>/rank_<r>/`` when
        distributed, the layout converters/merge.py reads; the work dir itself when stand-alone."""
        return work_dir / f"rank_{self.rank}" if self.distributed else work_dir

    @property
    def step_width(self) -> int:
        """Zero-padding of checkpoint step numbers in rank dirs (see checkpoint.checkpoint_name)."""
        return 8 if self.distributed else 0

    def log_dir(self, work_dir: Path) -> Path:
        return work_dir if self.is_main else self.rank_dir(work_dir)

    def strategy_path(self, work_dir: Path) -> Path | None:
        return work_dir / self.config.strategy_file if self.distributed else None

    @property
    def data_shard(self) -> tuple[int, int]:
        """(shard index, shard count) of the data stream: ranks of one model-parallel group read
        the same batch, so shards follow the data-parallel index."""
        mp = self.config.model_parallel
        return (self.rank // mp) % self.config.data_parallel, self.config.data_parallel

    def grad_reducer(self, parameters):
        """Gradient all-reduce (mean) for data_parallel; None otherwise (semi-auto inserts its own)."""
        if self.config.mode != "data_parallel":
            return None
        from mindspore import nn

        return nn.DistributedGradReducer(parameters, mean=self.config.gradients_mean, degree=self.group_size)

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all ranks (a barrier too). An eager float32 AllReduce: on CPU
        MindSpore's AllReduce kernel takes only float16/32 and only SUM."""
        if not self.distributed or self.group_size == 1:
            return list(values)
        import mindspore as ms
        import numpy as np
        from mindspore import ops

        mode = ms.get_context("mode")
        ms.set_context(mode=ms.PYNATIVE_MODE)
        try:
            out = ops.AllReduce(ops.ReduceOp.SUM)(ms.Tensor(np.asarray(values, np.float32)))
            return [float(v) for v in out.asnumpy()]
        finally:
            ms.set_context(mode=mode)

    def barrier(self) -> None:
        self.all_sum([0.0])

    def agree(self, value: int, what: str) -> None:
        """Raise unless every rank holds the same integer ``value`` (0 <= value < 2**31, e.g. the
        resume step). Summed bit by bit, each bit's total is 0 or the rank count exactly (float32
        is exact there), whatever the value's size."""
        if not self.distributed or self.group_size == 1:
            return
        totals = self.all_sum([float(value >> bit & 1) for bit in range(31)])
        if any(t not in (0.0, float(self.group_size)) for t in totals):
            raise RuntimeError(f"ranks disagree on {what}: rank {self.rank} has {value}")


def semi_auto_unsupported(pc: ParallelConfig) -> str | None:
    """Why this MindSpore model cannot run ``pc`` (None if it sets strategies for it): data x
    model x expert parallel are supported; pipeline stages are not (the model has no stage cells)."""
    if pc.mode == "semi_auto_parallel" and pc.pipeline_stages > 1:
        return (f"parallel.pipeline_stages={pc.pipeline_stages}: pretrain/models/ringmoe.py is not split into "
                "pipeline stage cells; use pipeline_stages=1")
    return None


def device_id_from_env(device: str) -> int | None:
    """The device of a rank-table launch (pretrain.launch.hccl_run exports DEVICE_ID with
    RANK_TABLE_FILE): without it set_device would put every process of a node on device 0.
    None otherwise: msrun negotiates device ids itself, and CPU has none."""
    value = os.environ.get("DEVICE_ID", "")
    if device == "CPU" or "RANK_TABLE_FILE" not in os.environ or not value.isdigit():
        return None
    return int(value)


def init_parallel(pc: ParallelConfig, work_dir: Path) -> DistInfo:
    """Initialise communication (``mindspore.communication.init``) and the auto-parallel context.

    Call after ``set_context(mode=...)`` and ``set_device``: the device picks the backend (CPU:
    MindSpore's collective library, GPU: NCCL, Ascend: HCCL). The process must have been started
    by msrun (or with a rank table on Ascend). Stand-alone: nothing is initialised.
    """
    if not pc.distributed:
        return DistInfo(pc)
    reason = semi_auto_unsupported(pc)
    if reason:
        raise ConfigError(reason)
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    rank, size = get_rank(), get_group_size()
    check_group_size(pc, size)
    info = DistInfo(pc, rank, size)
    strategy = info.strategy_path(work_dir) if rank == 0 else None
    info.context = context_kwargs(pc, size, strategy if pc.mode == "semi_auto_parallel" else None)
    ms.set_auto_parallel_context(**info.context)
    return info


def apply_recompute(net) -> int:
    """Recompute every encoder block's activations in the backward pass; returns the block count."""
    count = 0
    for stage in net.encoder.layers:
        for block in stage.blocks:
            block.recompute()
            count += 1
    return count


# ---- parameter layouts (the strategy a run implies) ------------------------------------------
@dataclass(frozen=True)
class Layout:
    """One parameter's layout in MindSpore's terms: device matrix, tensor map (value k names
    device axis len(dev)-1-k; -1: not split), optimizer-shard size (0: none, -1: all copies)."""

    name: str
    shape: tuple[int, ...]
    dev_matrix: tuple[int, ...]
    tensor_map: tuple[int, ...]
    opt_shard_size: int = 0
    opt_shard_step: int = 0

    @property
    def splits(self) -> tuple[int, ...]:
        return tuple(1 if k == -1 else self.dev_matrix[len(self.dev_matrix) - 1 - k] for k in self.tensor_map)

    @property
    def repeat(self) -> int:
        """Ranks holding the same model-parallel slice."""
        used = {len(self.dev_matrix) - 1 - k for k in self.tensor_map if k != -1}
        return math.prod(d for i, d in enumerate(self.dev_matrix) if i not in used)

    @property
    def opt_pieces(self) -> int:
        return {0: 1, -1: self.repeat}.get(self.opt_shard_size, self.opt_shard_size)

    @property
    def slice_shape(self) -> tuple[int, ...]:
        out = [n // s for n, s in zip(self.shape, self.splits)]
        if out:
            out[0] //= self.opt_pieces
        return tuple(out)

    def to_json(self) -> dict:
        """The entry of ``parallel_layout_item`` in MindSpore's JSON strategy form."""
        return {"dev_matrix": list(self.dev_matrix), "tensor_map": list(self.tensor_map),
                "tensor_shape": list(self.shape), "field": 0, "opt_weight_shard_step": self.opt_shard_step,
                "opt_weight_shard_size": self.opt_shard_size}


# Tensor maps over [data, model] (model = 0) and, for experts, [expert, data/ep, model] (expert = 2):
# the expert matmuls split the buffer [experts, capacity, width] as (ep, dp/ep, 1), their weights
# as (ep, 1, mp) (pretrain/models/ringmoe.py ExpertFFN).
_EXPERT = re.compile(r"\.(special_ffn\.\d+|cross_ffn)\.(mapping|projection)\.(weight|bias)$")
_PUBLIC = re.compile(r"\.public_ffn\.(mapping|projection)\.(weight|bias)$")
_ATTN = re.compile(r"\.layers\.(\d+)\.blocks\.\d+\.attn\.(q|k|v|proj|relative_position_bias)\."
                   r"(weight|bias|relative_position_bias_table)$")
_EXPERT_MAPS = {("mapping", "weight"): (2, -1, 0), ("mapping", "bias"): (-1, 2, -1, 0),
                ("projection", "weight"): (2, 0, -1), ("projection", "bias"): (-1, 2, -1, -1)}
_PUBLIC_MAPS = {("mapping", "weight"): (-1, 0), ("mapping", "bias"): (0,),
                ("projection", "weight"): (0, -1), ("projection", "bias"): (-1,)}
# nn.Dense stores [out, in]: q/k/v split their outputs (heads), proj its inputs.
_ATTN_MAPS = {("q", "weight"): (0, -1), ("q", "bias"): (0,), ("k", "weight"): (0, -1), ("k", "bias"): (0,),
              ("v", "weight"): (0, -1), ("v", "bias"): (0,), ("proj", "weight"): (-1, 0), ("proj", "bias"): (-1,),
              ("relative_position_bias", "relative_position_bias_table"): (-1, 0)}


def _tensor_map(name: str, ndim: int, pc: ParallelConfig, num_heads: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """(kind, tensor map) of a parameter under semi-auto parallel; kind is 'expert', 'dense' or
    'replicated'."""
    if pc.mode != "semi_auto_parallel":
        return "replicated", (-1,) * ndim
    match = _EXPERT.search(name)
    if match:
        return "expert", _EXPERT_MAPS[match.group(2), match.group(3)]
    match = _PUBLIC.search(name)
    if match:
        return "dense", _PUBLIC_MAPS[match.group(1), match.group(2)]
    match = _ATTN.search(name)
    # Head-parallel attention only where the heads split evenly (giant stage 0 has 14 heads).
    if match and head_split(num_heads[int(match.group(1))], pc.model_parallel) == pc.model_parallel:
        return "dense", _ATTN_MAPS[match.group(2), match.group(3)]
    return "replicated", (-1,) * ndim


def plan_layouts(params: list[tuple[str, tuple[int, ...], bool]], pc: ParallelConfig,
                 num_heads: tuple[int, ...], dtype_bytes: int = 4) -> dict[str, Layout]:
    """The layout of every parameter (name, shape, trainable) under ``pc``.

    data_parallel: every parameter whole on every rank (dev matrix [n]). semi_auto_parallel:
    expert FFNs split over experts (expert_parallel) and hidden width (model_parallel), the
    shared FFN and head-divisible attention split Megatron-style over model_parallel, the rest
    replicated; optimizer sharding then cuts axis 0 of each trainable slice over the ranks
    holding copies, where it divides and the parameter is at least the threshold (as MindSpore
    does). A split that does not divide evenly is a ConfigError naming the parameter.
    """
    dp, mp, ep = pc.data_parallel, pc.model_parallel, pc.expert_parallel
    layouts = {}
    for name, shape, trainable in params:
        kind, tmap = _tensor_map(name, len(shape), pc, num_heads)
        if pc.mode == "data_parallel":
            dev = (pc.device_num,)
        elif kind == "expert":
            dev = (ep, dp // ep, mp)
        else:
            dev = (dp, mp)
        # a map onto a device axis of size 1 splits nothing: write -1 as MindSpore does
        tmap = tuple(-1 if k != -1 and dev[len(dev) - 1 - k] == 1 else k for k in tmap)
        layout = Layout(name, tuple(shape), dev, tmap)
        for axis, (length, parts) in enumerate(zip(shape, layout.splits)):
            if length % parts:
                raise ConfigError(f"parallel: {name} axis {axis} ({length}) does not split into {parts} "
                                  f"(model_parallel={mp}, expert_parallel={ep})")
        if pc.optimizer_shard and pc.mode == "semi_auto_parallel" and trainable and shape:
            layout = _opt_shard(layout, pc, dtype_bytes)
        layouts[name] = layout
    return layouts


def _opt_shard(layout: Layout, pc: ParallelConfig, dtype_bytes: int) -> Layout:
    pieces = layout.repeat if pc.optimizer_shard_size == -1 else pc.optimizer_shard_size
    first = layout.shape[0] // layout.splits[0]
    big_enough = math.prod(layout.shape) * dtype_bytes >= pc.optimizer_shard_threshold_kb * 1024
    if pieces <= 1 or layout.repeat % pieces or first % pieces or not big_enough:
        return layout
    dev = layout.dev_matrix
    used = {len(dev) - 1 - k for k in layout.tensor_map if k != -1}
    strides = [math.prod(dev[i + 1:]) for i in range(len(dev))]
    span = sum((dev[i] - 1) * strides[i] for i in range(len(dev)) if i not in used)
    step = span // (layout.repeat - 1) if layout.repeat > 1 else 0  # MindSpore's mean rank distance
    return dataclasses.replace(layout, opt_shard_size=-1 if pc.optimizer_shard_size == -1 else pieces,
                               opt_shard_step=step)


def strategy_document(layouts: dict[str, Layout]) -> dict:
    """MindSpore's JSON strategy form (StrategyCheckpointInfo::to_json) of ``layouts``."""
    return {"current_stage": 0, "parallel_strategy_item": {},
            "parallel_layout_item": {name: layout.to_json() for name, layout in layouts.items()}}


def write_strategy(layouts: dict[str, Layout], path: Path) -> Path:
    """Write the JSON strategy atomically (one rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(strategy_document(layouts), indent=1))
    tmp.replace(path)
    return path


def net_params(net) -> list[tuple[str, tuple[int, ...], bool]]:
    return [(p.name, tuple(p.shape), bool(p.requires_grad)) for p in net.get_parameters()]


def model_params(arch) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, shape, trainable) of the SimMIM model's parameters, without allocating them (giant
    enumerates in well under a second)."""
    from mindspore.nn.utils import no_init_parameters

    from pretrain.models.ringmoe import RingMoESimMIM

    with no_init_parameters():
        net = RingMoESimMIM(arch)
    return net_params(net)


def summarize(layouts: dict[str, Layout], pc: ParallelConfig, dtype_bytes: int = 4) -> dict:
    """Per-rank numbers of a plan: parameters and checkpoint bytes (weights + two Adam moments)."""
    full = sum(math.prod(lay.shape) for lay in layouts.values())
    per_rank = sum(math.prod(lay.slice_shape) for lay in layouts.values())
    kinds: dict[str, int] = {}
    for lay in layouts.values():
        kind = "sliced" if any(s > 1 for s in lay.splits) else "replicated"
        kind += "+optimizer-sharded" if lay.opt_pieces > 1 else ""
        kinds[kind] = kinds.get(kind, 0) + 1
    # Adam moments have the weight's layout; optimizer sharding cuts them like the weight slice
    return {"mode": pc.mode, "device_num": pc.device_num, "data_parallel": pc.data_parallel,
            "model_parallel": pc.model_parallel, "expert_parallel": pc.expert_parallel,
            "parameters": full, "parameters_per_rank": per_rank,
            "checkpoint_bytes_per_rank": 3 * per_rank * dtype_bytes, "layout_kinds": kinds}


def representatives(layouts: dict[str, Layout]) -> list[Layout]:
    """One parameter per distinct (name pattern, layout): block and expert indices collapsed,
    sliced ones first."""
    seen, out = set(), []
    for lay in layouts.values():
        key = (re.sub(r"\d+", "*", lay.name), lay.dev_matrix, lay.tensor_map, lay.opt_shard_size)
        if key not in seen:
            seen.add(key)
            out.append(lay)
    return sorted(out, key=lambda lay: all(s == 1 for s in lay.splits) and lay.opt_pieces == 1)


# ---- CLI: the dry path ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="python -m pretrain.parallel", description=doc[0],
                                     epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="pretraining config, e.g. configs/pretrain/giant_32x8x4.py")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", help="override config entries")
    parser.add_argument("--device", choices=DEVICES, help="overrides train.device")
    parser.add_argument("--strategy-out", help="write the planned strategy (MindSpore JSON form) here")
    parser.add_argument("--show", type=int, default=12, help="parameters listed with their shard shapes")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pretrain.config import apply_overrides, load_config

    try:
        cfg = apply_overrides(load_config(args.config), args.cfg_options)
        device = args.device or cfg["train"]["device"]
        pc = config_parallel(cfg, device)
        from pretrain.train import build_arch

        arch = build_arch(cfg)
        layouts = plan_layouts(model_params(arch), pc, arch.num_heads)
    except (ConfigError, KeyError, TypeError) as err:
        print(f"parallel: error: {err.args[0] if isinstance(err, KeyError) and err.args else err}", file=sys.stderr)
        return 2
    summary = summarize(layouts, pc)
    summary["context"] = context_kwargs(pc, pc.device_num, pc.strategy_file)
    summary["data"] = {"batch_per_rank": cfg["data"]["batch_size"],
                       "global_batch": cfg["data"]["batch_size"] * pc.data_parallel}
    summary["runnable_now"] = semi_auto_unsupported(pc) or (
        "yes (operator shard strategies: pretrain/models/ringmoe.py)" if pc.mode == "semi_auto_parallel" else "yes")
    if args.strategy_out:
        summary["strategy"] = str(write_strategy(layouts, Path(args.strategy_out)))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{cfg.get('name', Path(args.config).stem)}: {pc.mode} on {pc.device_num} devices (data {pc.data_parallel} "
          f"x model {pc.model_parallel}, expert {pc.expert_parallel}), optimizer_shard={pc.optimizer_shard}, "
          f"recompute={pc.recompute}")
    print(f"  parameters {summary['parameters']:,}; per rank {summary['parameters_per_rank']:,} "
          f"({summary['checkpoint_bytes_per_rank'] / 2**30:.2f} GiB per rank checkpoint: fp32 weights + Adam moments)")
    print(f"  global batch {summary['data']['global_batch']} per modality ({summary['data']['batch_per_rank']} per "
          f"data-parallel rank); layouts: {summary['layout_kinds']}")
    print(f"  set_auto_parallel_context({', '.join(f'{k}={v!r}' for k, v in summary['context'].items())})")
    print(f"  runnable with this MindSpore model: {summary['runnable_now']}")
    for lay in representatives(layouts)[: args.show]:
        print(f"  {lay.name}: {list(lay.shape)} -> {list(lay.slice_shape)} per rank "
              f"(dev {list(lay.dev_matrix)}, map {list(lay.tensor_map)}, opt {lay.opt_shard_size})")
    if args.strategy_out:
        print(f"  wrote {summary['strategy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
