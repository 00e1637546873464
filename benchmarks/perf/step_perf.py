#!/usr/bin/env python
"""Time full SimMIM training steps of RingMoE: MindSpore GRAPH vs PyNative vs the PyTorch twin.

A step is forward + backward + AdamW over one batch of every modality (4 modalities, --batch
images of 192 px each, concatenated for the joint capacity-limited MoE path), as in
pretrain/train.py. Each (config, framework) runs in its own subprocess, so peak RSS is that
configuration's alone (os.wait4's ru_maxrss of the child: framework import, model, optimizer
state, graph compilation and activations, all included).

  ms-graph     pretrain/train.py's own step (build_train_step: value_and_grad + AdamWeightDecay in
               one compiled Cell, each block's MoE layer recomputed in the backward pass, compiled
               before the first step); the compile is the first step minus the steady-state median
  ms-pynative  the same forward, backward and update, eager
  torch        the PyTorch twin (benchmarks/models/ringmoe.py) in the same joint pretraining
               forward (TorchSimMIM below), loss.backward() and torch.optim.AdamW

What the torch path shares with MindSpore and what it does not: the same architecture,
parameter shapes, masking, joint MoE semantics (specialised experts per modality chunk and
cross experts over all tokens, Switch capacity 1.2 with drops, combine weight 1.0, shared FFN,
0.001-weighted aux loss), DCR decoder and masked L1 loss; with the MindSpore weights loaded,
its loss equals MindSpore's (tests/test_perf_scripts.py). Different: experts run through the
twin's ExpertBank (a loop over experts with index_select/index_copy) rather than MindSpore's
index dispatch into an [experts, capacity] buffer, and torch.optim.AdamW applies Adam's bias
correction, which MindSpore's AdamWeightDecay does not (the same work per parameter).

Targets (tiny, --batch 2): the authors' dense one-hot dispatch needs about 34 s and 9 GB for
one forward pass of this config on a 2-core machine; our MindSpore training step must be at
least 10x faster (<= 3.4 s) with a peak RSS of at most 2 GB.

Examples:
  python benchmarks/perf/step_perf.py                               # tiny, all three
  python benchmarks/perf/step_perf.py --configs tiny base --steps 5 --json step_perf.json
  python benchmarks/perf/step_perf.py --frameworks ms-pynative torch --warmup 1 --steps 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REPO = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("ms-graph", "ms-pynative", "torch")
CONFIGS = ("tiny", "base")
REFERENCE_FORWARD_S = 34.0  # the authors' code, one forward of tiny (2 images/modality), 2 cores
REFERENCE_GB = 9.0
TARGET_SPEEDUP = 10.0
TARGET_RSS_MIB = 2048.0
MiB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="benchmarks/perf/step_perf.py", description=doc[0],
                                     epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=["tiny"])
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--batch", type=int, default=2, help="images per modality per step (default 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (default 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="CPU threads for both frameworks (default: the CPUs this process may use)")
    parser.add_argument("--force", action="store_true",
                        help="run a configuration even if its estimated memory exceeds what is available")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one configuration, as JSON
    return parser.parse_args(argv)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_arch_and_config(name: str):
    from pretrain.config import load_config
    from pretrain.train import build_arch

    cfg = load_config(REPO / "configs" / "pretrain" / f"{name}.py")
    return build_arch(cfg), cfg


# ---- inputs ------------------------------------------------------------------------------
def synthetic_batches(arch, batch: int, count: int, seed: int = 0) -> list[dict]:
    """``count`` batches of random images (normalised-like values) and real SimMIM masks."""
    import numpy as np

    from pretrain.data.folder import MaskGenerator

    rng = np.random.default_rng(seed)
    masker = MaskGenerator(arch.img_size, arch.mask_patch_size, arch.patch_size, arch.mask_ratio)
    out = []
    for _ in range(count):
        images = [rng.standard_normal((batch, m.channels, arch.img_size, arch.img_size)).astype(np.float32)
                  for m in arch.modalities]
        masks = [np.stack([masker(rng) for _ in range(batch)]) for _ in arch.modalities]
        out.append({"images": images, "masks": masks})
    return out


# ---- the PyTorch twin in the joint pretraining forward -----------------------------------
def _torch_routed(bank, router, tokens, capacity_factor: float, aux_experts: int):
    """One router group through the twin's ExpertBank, capacity-limited; returns (out, aux)."""
    import torch
    import torch.nn.functional as F

    from benchmarks.models.ringmoe import top1_route

    cap = math.ceil(tokens.shape[0] * capacity_factor / bank.num_experts)
    expert, probs, kept = top1_route(tokens, router.weight, cap)
    density = F.one_hot(expert, bank.num_experts).float().mean(0)  # before drops
    aux = (density * probs.mean(0)).mean() * float(aux_experts**2)
    return bank(tokens, expert, kept), aux.to(torch.float32)


def joint_moe(moe, x, modalities: list[str], capacity_factor: float = 1.2, aux_experts: int = 8,
              aux_weight: float = 0.001):
    """The joint pretraining path of pretrain/models/ringmoe.py ModalMoE on a twin ModalMoE.

    x: [N, L, C] with N = len(modalities) equal chunks. Specialised experts see their chunk
    (capacity per chunk), cross experts all tokens (capacity over all), plus the shared FFN.
    """
    import torch

    n, l, c = x.shape
    chunk = n // len(modalities) * l
    tokens = x.reshape(-1, c)
    special, special_aux = [], []
    for m, name in enumerate(modalities):
        out, aux = _torch_routed(moe.modal_experts[name], moe.modal_routers[name],
                                 tokens[m * chunk:(m + 1) * chunk], capacity_factor, aux_experts)
        special.append(out)
        special_aux.append(aux)
    cross, cross_aux = _torch_routed(moe.cross_experts, moe.cross_router, tokens, capacity_factor, aux_experts)
    out = torch.cat(special) + cross + moe.shared(tokens)
    return out.reshape(n, l, c), aux_weight * (cross_aux + torch.stack(special_aux).mean())


def depth_to_space_dcr_torch(x, block: int):
    """TensorFlow DepthToSpace (DCR), as pretrain/models/ringmoe.py depth_to_space_dcr."""
    b, d, h, w = x.shape
    c = d // (block * block)
    x = x.reshape(b, block, block, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c, h * block, w * block)


def build_torch_simmim(arch):
    """TorchSimMIM(arch): the twin backbone (all modalities) + mask token + DCR decoders."""
    import torch
    from torch import nn

    from benchmarks.models.ringmoe import RingMoE

    class TorchSimMIM(nn.Module):
        """SimMIM over the modalities with the joint MoE path: RingMoESimMIM's forward in torch."""

        def __init__(self):
            super().__init__()
            self.names = [m.name for m in arch.modalities]
            self.backbone = RingMoE(
                embed_dim=arch.embed_dim, depths=arch.depths, num_heads=arch.num_heads,
                window_size=[arch.stage_window(s) for s in range(arch.num_stages)], patch_size=arch.patch_size,
                mlp_ratio=arch.mlp_ratio, num_experts=arch.num_experts,
                modalities={m.name: m.channels for m in arch.modalities}, modality=self.names[0],
                build_modalities="all", out_norms=False)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, arch.embed_dim))
            self.stride = arch.patch_size * 2 ** (arch.num_stages - 1)
            self.decoders = nn.ModuleList(
                nn.Conv2d(arch.num_features, self.stride**2 * arch.reconstructed_channels(m), 1)
                for m in range(len(arch.modalities)))

        def _embed(self, image, name: str, mask):
            x, hw = self.backbone.patch_embed[name](image)
            w = mask.reshape(mask.shape[0], -1, 1).to(x.dtype)
            return x * (1 - w) + self.mask_token * w, hw

        def forward(self, images, masks):
            embedded = [self._embed(img, name, mask) for img, name, mask in zip(images, self.names, masks)]
            x, hw = torch.cat([e[0] for e in embedded]), embedded[0][1]
            aux = x.new_zeros(())
            for stage in self.backbone.layers:
                for block in stage.blocks:
                    x = x + block.norm1(block._attention(x, *hw))
                    moe, block_aux = joint_moe(block.ffn, x, self.names, arch.capacity_factor,
                                               arch.aux_loss_experts, arch.aux_loss_weight)
                    x = x + block.norm2(moe)
                    aux = aux + block_aux
                if stage.downsample is not None:
                    x, hw = stage.downsample(x, hw)
            z = self.backbone.norm(x)
            b = images[0].shape[0]
            losses = []
            for m, (img, mask) in enumerate(zip(images, masks)):
                tokens = z[m * b:(m + 1) * b]
                grid = tokens.transpose(1, 2).reshape(b, -1, *hw)
                rec = depth_to_space_dcr_torch(self.decoders[m](grid), self.stride)
                pixel = mask.repeat_interleave(arch.patch_size, 1).repeat_interleave(arch.patch_size, 2)
                pixel = pixel.unsqueeze(1).float()
                losses.append((torch.abs(img - rec) * pixel).sum() / (pixel.sum() + 1e-5) / img.shape[1])
            losses = torch.stack(losses)
            return losses.sum() + aux, losses, aux

    return TorchSimMIM()


# ---- one configuration (runs in a worker subprocess) --------------------------------------
def rss_mib() -> float:
    """Current resident set size of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _time_steps(step, batches: list, warmup: int, steps: int) -> tuple[float, list[float]]:
    """First step's time, then ``warmup`` untimed and ``steps`` timed steps (the step syncs)."""
    tick = time.perf_counter()
    step(batches[0])
    first = time.perf_counter() - tick
    for i in range(warmup):
        step(batches[(1 + i) % len(batches)])
    times = []
    for i in range(steps):
        tick = time.perf_counter()
        step(batches[(1 + warmup + i) % len(batches)])
        times.append(time.perf_counter() - tick)
    return first, times


def ms_sync() -> None:
    """Wait for every launched MindSpore kernel (ms.runtime.synchronize does not support CPU)."""
    from mindspore.common.api import _pynative_executor

    _pynative_executor.sync()


def mindspore_case(arch, cfg: dict, graph: bool, batches: list, threads: int, warmup: int, steps: int) -> dict:
    import mindspore as ms

    from pretrain.models.ringmoe import RingMoESimMIM
    from pretrain.train import build_optimizer, build_train_step, set_device

    ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
    set_device("CPU")
    ms.device_context.cpu.op_tuning.threads_num(threads)  # the default is 25, whatever the cores
    ms.set_seed(0)
    imported = rss_mib()
    net = RingMoESimMIM(arch, dropout=cfg["model"].get("dropout", 0.0))
    # As pretrain/train.py builds it: a per-step schedule over the run (here the timed run).
    optimizer = build_optimizer(net, cfg["optim"], 1 + warmup + steps)
    names = [m.name for m in arch.modalities]
    train_step = build_train_step(net, optimizer, names, graph=graph)
    net.set_train(True)
    # Inputs converted once, outside the timing: this measures the step, not the data path.
    inputs = [tuple(ms.mutable(tuple(ms.Tensor(x) for x in b[key])) for key in ("images", "masks")) for b in batches]
    losses = []

    def step(batch) -> None:
        loss, _, _ = train_step(batch[0], batch[1], None)
        losses.append(float(loss))
        ms_sync()  # PyNative launches asynchronously: wait for the optimizer update too

    first, times = _time_steps(step, inputs, warmup, steps)
    return {"first_step_s": first, "times_s": times, "rss_after_import_mib": imported, "losses": losses}


def torch_case(arch, cfg: dict, batches: list, threads: int, warmup: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    imported = rss_mib()
    model = build_torch_simmim(arch)
    model.train()
    ocfg = cfg["optim"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=ocfg["lr"], betas=tuple(ocfg.get("betas", (0.9, 0.999))),
                                  weight_decay=ocfg.get("weight_decay", 0.05))
    inputs = [([torch.from_numpy(x) for x in b["images"]], [torch.from_numpy(x) for x in b["masks"]]) for b in batches]
    losses = []

    def step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _, _ = model(*batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))

    first, times = _time_steps(step, inputs, warmup, steps)
    return {"first_step_s": first, "times_s": times, "rss_after_import_mib": imported, "losses": losses}


def run_worker(spec: dict) -> dict:
    arch, cfg = load_arch_and_config(spec["config"])
    batches = synthetic_batches(arch, spec["batch"], min(1 + spec["warmup"] + spec["steps"], 4))
    if spec["framework"] == "torch":
        return torch_case(arch, cfg, batches, spec["threads"], spec["warmup"], spec["steps"])
    return mindspore_case(arch, cfg, spec["framework"] == "ms-graph", batches, spec["threads"], spec["warmup"],
                          spec["steps"])


# ---- the parent: one subprocess per configuration ----------------------------------------
# Peak RSS per (image x block x token x channel) of the activations, and after import, measured
# on tiny (batches 1, 2, 4; MindSpore 2.10, torch 2.13, CPU; ms-graph: the graph's compiled kernels
# included): used only to refuse runs that cannot fit (base needs tens of GB), never reported as a
# result.
ACTIVATION_BYTES_PER_UNIT = {"ms-graph": 450.0, "ms-pynative": 290.0, "torch": 190.0}
IMPORT_MIB = {"ms-graph": 450.0, "ms-pynative": 450.0, "torch": 250.0}


def estimate_mib(arch, batch: int, framework: str) -> float:
    """Rough peak RSS of a training step: weights, gradients and two Adam moments in fp32, the
    framework itself, and activations scaled from tiny by sum over blocks of tokens x width."""
    from pretrain.models.arch import backbone_param_count

    units = sum(depth * arch.stage_resolution(s) ** 2 * arch.stage_dim(s) for s, depth in enumerate(arch.depths))
    images = batch * len(arch.modalities)
    activations = ACTIVATION_BYTES_PER_UNIT[framework] * units * images
    return (16 * backbone_param_count(arch) + activations) / MiB + IMPORT_MIB[framework]


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def run_in_subprocess(script: Path, spec: dict, timeout: float | None = None) -> tuple[dict | None, float, str | None]:
    """Run ``script --worker SPEC`` in a fresh interpreter (in a temporary directory, where
    MindSpore's compile dumps land); returns (its result, its peak RSS in MiB, an error or None).
    The peak is the child's own ru_maxrss from os.wait4, so configurations never share it."""
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="perf_") as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "log.txt"
        with log.open("w") as sink:
            proc = subprocess.Popen([sys.executable, str(script), "--worker", json.dumps(dict(spec, out=str(out)))],
                                    stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp)
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:  # wait4 (not Popen.wait) to get this child's own resource usage
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    proc.kill()
                time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
        peak = usage.ru_maxrss / 1024
        if proc.returncode != 0 or not out.is_file():
            return None, peak, f"worker exited with {proc.returncode}: ...{log.read_text()[-2000:]}"
        return json.loads(out.read_text()), peak, None


def run_case(spec: dict, timeout: float | None = None) -> dict:
    """One configuration's table row."""
    result, peak, error = run_in_subprocess(Path(__file__).resolve(), spec, timeout)
    row = {"config": spec["config"], "framework": spec["framework"], "batch": spec["batch"],
           "threads": spec["threads"], "peak_rss_mib": peak}
    if error:
        return dict(row, error=error)
    times = result.pop("times_s")
    median = statistics.median(times)
    images = spec["batch"] * len(load_arch_and_config(spec["config"])[0].modalities)
    row.update(result, step_s=median, mean_s=statistics.fmean(times), steps=len(times), images_per_s=images / median,
               compile_s=max(result["first_step_s"] - median, 0.0) if spec["framework"] == "ms-graph" else None)
    return row


def error_line(error: str) -> str:
    """The line of a worker's log that names the exception (or the first line)."""
    named = [line for line in error.splitlines() if "Error" in line.split(":")[0] or line.startswith("skipped")]
    return (named[-1] if named else error.splitlines()[0])[:200]


def format_table(rows: list[dict]) -> str:
    head = ("config", "framework", "batch", "threads", "compile s", "first s", "step s (median)", "step s (mean)",
            "images/s", "RSS import MiB", "peak RSS MiB")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        if "error" in r:
            lines.append(" | ".join([r["config"], r["framework"], str(r["batch"]), str(r["threads"])]
                                    + ["-"] * (len(head) - 4)) + f"  ({error_line(r['error'])})")
            continue
        compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        lines.append(" | ".join([r["config"], r["framework"], str(r["batch"]), str(r["threads"]), compile_s,
                                 f"{r['first_step_s']:.2f}", f"{r['step_s']:.3f}", f"{r['mean_s']:.3f}",
                                 f"{r['images_per_s']:.2f}", f"{r['rss_after_import_mib']:.0f}",
                                 f"{r['peak_rss_mib']:.0f}"]))
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    """Tiny against the authors' 34 s / 9 GB forward: >= 10x faster and <= 2 GB peak, per MindSpore mode."""
    lines = []
    for r in rows:
        if r["config"] != "tiny" or not r["framework"].startswith("ms-") or "error" in r:
            continue
        speedup = REFERENCE_FORWARD_S / r["step_s"]
        ok = speedup >= TARGET_SPEEDUP and r["peak_rss_mib"] <= TARGET_RSS_MIB
        note = "" if r["batch"] == 2 else f" (batch {r['batch']}: the reference is batch 2)"
        lines.append(f"{'PASS' if ok else 'FAIL'} tiny {r['framework']}: training step {r['step_s']:.3f} s = "
                     f"{speedup:.1f}x faster than the reference forward ({REFERENCE_FORWARD_S:.0f} s; target >= "
                     f"{TARGET_SPEEDUP:.0f}x), peak RSS {r['peak_rss_mib']:.0f} MiB (reference {REFERENCE_GB:.0f} GB; "
                     f"target <= {TARGET_RSS_MIB:.0f} MiB){note}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        Path(spec["out"]).write_text(json.dumps(run_worker(spec)))
        return 0
    if min(args.batch, args.steps, args.threads) < 1 or args.warmup < 0:
        print("step_perf: error: --batch, --steps and --threads must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    rows = []
    for name in args.configs:
        arch, _ = load_arch_and_config(name)
        for framework in args.frameworks:
            need, have = estimate_mib(arch, args.batch, framework), available_mib()
            spec = {"config": name, "framework": framework, "batch": args.batch, "warmup": args.warmup,
                    "steps": args.steps, "threads": args.threads}
            if need > 0.8 * have and not args.force:  # a margin: the estimate is rough, and others share the RAM
                row = dict(spec, peak_rss_mib=float("nan"),
                           error=f"skipped: needs ~{need / 1024:.0f} GiB (estimate), {have / 1024:.0f} GiB "
                                 f"available (--force runs it anyway)")
            else:
                print(f"running {name} {framework} ...", file=sys.stderr, flush=True)
                row = run_case(spec)
            rows.append(row)
    print(format_table(rows))
    for line in verdicts(rows):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in r and not r["error"].startswith("skipped") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
