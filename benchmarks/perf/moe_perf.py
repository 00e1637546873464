#!/usr/bin/env python
"""Throughput of the RingMoE MoE layer alone against a dense FFN with the same activated FLOPs.

Forward + backward (gradients of the input and of every weight) of tokens [N, C] through one
MoE layer, in MindSpore GRAPH and PyNative (pretrain/models/ringmoe.py ModalMoE) and in PyTorch
(the twin's ModalMoE, benchmarks/models/ringmoe.py, in the joint path of step_perf.joint_moe),
reported as tokens/s, each framework in its own subprocess.

The MoE layer (what one token activates): its modality's router and one specialised expert,
the cross router and one cross expert, and the shared FFN, each FFN C -> 4C -> C with tanh
GELU; outputs summed. Experts are dispatched by index (MindSpore: into an [experts, capacity]
buffer by token index and back; PyTorch: per-expert index_select/index_copy), never by dense
one-hot [tokens, experts, capacity] tensors.

"Same activated FLOPs": the dense baseline applies three FFNs C -> 4C -> C (the framework's
own shared-FFN module, same GELU) to every token and sums them, i.e. exactly the matmul FLOPs a
token activates in the MoE layer (2 experts + the shared FFN: 3 x 16 C^2 per token forward).
The MoE layer additionally does the routing (two C x 4 router matmuls, softmax, argmax, slot
counting: about 16 C FLOPs per token, < 1% at C >= 32), the dispatch and combine copies, and,
in MindSpore, expert work on empty capacity slots: each router's buffer holds
ceil(1.2 T / 4) slots per expert, i.e. 1.2x the tokens, so two of its three FFNs run on 1.2x
rows in the joint path; in the single path (no capacity limit) every expert's buffer has T
slots, so the experts run on 4x the rows (PyTorch runs exactly the routed rows in both).
Ratio = MoE tokens/s / dense tokens/s, as the median over rounds that time one pass of each
back to back (robust to a shared machine's load bursts); the goal is >= 0.7.

Paths: ``joint`` (default) is the pretraining path: the N tokens are 4 equal modality chunks,
specialised experts per chunk and cross experts over all, Switch capacity 1.2 with drops, plus
the aux loss. ``single`` is the downstream path: one modality, no capacity limit.

Tokens: --images images of --img-size px at stage --stage (default: stage 0, the first, 48 x 48 tokens of
8 images = 18,432 tokens, at width embed_dim: 32 tiny, 128 base).

Examples:
  python benchmarks/perf/moe_perf.py                                    # tiny and base, joint
  python benchmarks/perf/moe_perf.py --configs tiny --paths joint single --json moe_perf.json
  python benchmarks/perf/moe_perf.py --images 2 --warmup 1 --steps 2   # quick
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.perf.step_perf import (  # noqa: E402
    CONFIGS, FRAMEWORKS, default_threads, error_line, load_arch_and_config, ms_sync, run_in_subprocess,
)

PATHS = ("joint", "single")
TARGET_RATIO = 0.7
DENSE_FFNS = 3  # one specialised expert + one cross expert + the shared FFN per token


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="benchmarks/perf/moe_perf.py", description=doc[0],
                                     epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["joint"])
    parser.add_argument("--images", type=int, default=8, help="images whose tokens form the batch (default 8; "
                        "a multiple of the 4 modalities for the joint path)")
    parser.add_argument("--img-size", type=int, default=192)
    parser.add_argument("--stage", type=int, default=0, help="stage whose width and token grid to use (default 0)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes after the first (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed passes; the median is reported (default 10)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def layer_shape(arch, images: int, img_size: int, stage: int) -> tuple[int, int, int]:
    """(images, tokens per image, width) of the tokens entering a block of ``stage``."""
    side = arch.stage_resolution(stage, img_size)
    return images, side * side, arch.stage_dim(stage)


def _inputs(shape: tuple[int, int, int], seed: int = 0):
    """Tokens and a fixed upstream gradient (loss = sum(out * g)), so the backward is a real one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32))


def _timed_pairs(runs: dict, warmup: int, steps: int) -> dict[str, list[float]]:
    """Time the layers alternately, one pass of each per round, so that both see the same
    machine load (a shared machine's bursts otherwise land on one side of the ratio)."""
    for _ in range(1 + warmup):  # the first call compiles (graph) or selects kernels
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(steps):
        for name, run in runs.items():
            tick = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - tick)
    return times


def mindspore_layers(arch, spec: dict) -> dict:
    import mindspore as ms
    from mindspore import nn

    from pretrain.models.ringmoe import ModalMoE, SharedFFN
    from pretrain.train import set_device

    graph = spec["framework"] == "ms-graph"
    ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
    set_device("CPU")
    ms.device_context.cpu.op_tuning.threads_num(spec["threads"])
    ms.set_seed(0)
    shape = layer_shape(arch, spec["images"], spec["img_size"], spec["stage"])
    dim = shape[2]
    x, g = (ms.Tensor(a) for a in _inputs(shape))
    moe = ModalMoE(arch, dim)

    class DenseFFNs(nn.Cell):
        """The baseline: DENSE_FFNS shared-FFN modules on every token, summed."""

        def __init__(self):
            super().__init__()
            self.ffns = nn.CellList([SharedFFN(dim, dim * arch.mlp_ratio) for _ in range(DENSE_FFNS)])

        def construct(self, flat):
            out = 0.0
            for ffn in self.ffns:  # a loop over the whole list: graph mode cannot slice a CellList
                out = out + ffn(flat)
            return out

    dense = DenseFFNs()
    modality = None if spec["path"] == "joint" else 0

    def moe_loss(tokens, upstream):
        out, aux = moe(tokens, modality)
        return (out * upstream).sum() + aux

    def dense_loss(tokens, upstream):
        return (dense(tokens.reshape(-1, dim)).reshape(tokens.shape) * upstream).sum()

    runs = {}
    for name, loss_fn, cell in (("moe", moe_loss, moe), ("dense", dense_loss, dense)):
        cell.set_train(True)
        step = ms.value_and_grad(loss_fn, 0, cell.trainable_params())
        if graph:
            step = ms.jit(step)

        def run(step=step) -> None:
            loss, _ = step(x, g)
            float(loss)
            ms_sync()

        runs[name] = run
    return _timed_pairs(runs, spec["warmup"], spec["steps"])


def torch_layers(arch, spec: dict) -> dict:
    import torch
    from torch import nn

    from benchmarks.models.ringmoe import FFN, ModalMoE
    from benchmarks.perf.step_perf import joint_moe

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    shape = layer_shape(arch, spec["images"], spec["img_size"], spec["stage"])
    dim = shape[2]
    x, g = (torch.from_numpy(a) for a in _inputs(shape))
    x.requires_grad_(True)
    names = [m.name for m in arch.modalities]
    moe = ModalMoE(dim, dim * arch.mlp_ratio, arch.num_experts, names)
    dense = nn.ModuleList(FFN(dim, dim * arch.mlp_ratio) for _ in range(DENSE_FFNS))

    def moe_loss():
        if spec["path"] == "joint":
            out, aux = joint_moe(moe, x, names, arch.capacity_factor, arch.aux_loss_experts, arch.aux_loss_weight)
            return (out * g).sum() + aux
        return (moe(x, names[0]) * g).sum()

    def dense_loss():
        flat = x.reshape(-1, dim)
        return (sum(ffn(flat) for ffn in dense).reshape(shape) * g).sum()

    runs = {}
    for name, loss_fn, module in (("moe", moe_loss, moe), ("dense", dense_loss, dense)):
        def run(loss_fn=loss_fn, module=module) -> None:
            module.zero_grad(set_to_none=True)
            x.grad = None
            loss_fn().backward()

        runs[name] = run
    return _timed_pairs(runs, spec["warmup"], spec["steps"])


def run_worker(spec: dict) -> dict:
    arch, _ = load_arch_and_config(spec["config"])
    if spec["framework"] == "torch":
        return torch_layers(arch, spec)
    return mindspore_layers(arch, spec)


def make_row(spec: dict, result: dict | None, peak: float, error: str | None) -> dict:
    arch, _ = load_arch_and_config(spec["config"])
    images, per_image, dim = layer_shape(arch, spec["images"], spec["img_size"], spec["stage"])
    row = {"config": spec["config"], "framework": spec["framework"], "path": spec["path"], "tokens": images * per_image,
           "dim": dim, "threads": spec["threads"], "peak_rss_mib": peak}
    if error:
        return dict(row, error=error)
    for name in ("moe", "dense"):
        row[f"{name}_times_s"] = result[name]
        median = statistics.median(result[name])
        row[f"{name}_s"] = median
        row[f"{name}_tokens_per_s"] = row["tokens"] / median
    # The median over rounds of dense time / MoE time (each round times both back to back).
    row["ratio"] = statistics.median(d / m for m, d in zip(result["moe"], result["dense"]))
    # Forward matmul FLOPs per token of the dense baseline (= the MoE's activated FLOPs), x3 with backward.
    row["dense_gflop_per_s"] = 3 * DENSE_FFNS * 2 * 2 * dim * dim * arch.mlp_ratio * row["dense_tokens_per_s"] / 1e9
    return row


def format_table(rows: list[dict]) -> str:
    head = ("config", "framework", "path", "tokens", "C", "threads", "MoE s", "MoE tokens/s", "dense s",
            "dense tokens/s", "dense GFLOP/s", "MoE/dense", f">= {TARGET_RATIO}")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        first = [r["config"], r["framework"], r["path"], str(r["tokens"]), str(r["dim"]), str(r["threads"])]
        if "error" in r:
            lines.append(" | ".join(first + ["-"] * (len(head) - len(first))) + f"  ({error_line(r['error'])})")
            continue
        lines.append(" | ".join(first + [
            f"{r['moe_s']:.4f}", f"{r['moe_tokens_per_s']:,.0f}",
            f"{r['dense_s']:.4f}", f"{r['dense_tokens_per_s']:,.0f}",
            f"{r['dense_gflop_per_s']:.1f}", f"{r['ratio']:.2f}", "PASS" if r["ratio"] >= TARGET_RATIO else "FAIL"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        Path(spec["out"]).write_text(json.dumps(run_worker(spec)))
        return 0
    if "joint" in args.paths and args.images % 4:
        print("moe_perf: error: the joint path needs --images divisible by the 4 modalities", file=sys.stderr)
        return 2
    if min(args.images, args.steps, args.threads) < 1 or args.warmup < 0:
        print("moe_perf: error: --images, --steps and --threads must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    rows = []
    for name in args.configs:
        arch, _ = load_arch_and_config(name)
        if not 0 <= args.stage < arch.num_stages or args.img_size % (arch.patch_size * 2**args.stage):
            print(f"moe_perf: error: --stage must be in [0, {arch.num_stages}) and --img-size a multiple of "
                  f"{arch.patch_size} * 2**stage", file=sys.stderr)
            return 2
        for path in args.paths:
            for framework in args.frameworks:
                spec = {"config": name, "framework": framework, "path": path, "images": args.images,
                        "img_size": args.img_size, "stage": args.stage, "warmup": args.warmup, "steps": args.steps,
                        "threads": args.threads}
                print(f"running {name} {path} {framework} ...", file=sys.stderr, flush=True)
                rows.append(make_row(spec, *run_in_subprocess(Path(__file__).resolve(), spec)))
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
