#!/usr/bin/env python
"""Measure the pretraining input pipeline alone, against what a training step consumes.

Pipeline (pretrain/data/pipeline.py, the configured data.num_workers as threads or processes, on
demo data generated into a temp dir by pretrain/data/synthetic.py):
  per modality  one modality's mindspore.dataset (map workers + batch) alone: samples/s
  step          the zipped four-modality stream that train.py reads: images/s, all modalities
Each is timed after its first batch (worker start-up excluded), over --pipeline-steps batches.

Consumption: real graph-mode training steps of the config, the step function of pretrain/train.py
(``build_train_step``: forward, backward, AdamW update), on one batch from the pipeline, in a
child process with no pipeline running beside it. The first call (graph compile) is timed
apart; then --train-steps steps: images/s = batch x modalities / median step time.

The verdict: pipeline step images/s >= 3 x training images/s. Memory is watched, for shared
machines: a config whose training state (weights, gradients, two AdamW moments: 16 bytes a
parameter) exceeds --memory-fraction of the available memory is not started, and a child whose
RSS passes it (graph compiles of deep models take far more than the state) is stopped. Such a
row takes, where the run measured one, a smaller config's training rate as an upper bound of
its consumption (same input size, no wider, no deeper, no more activated parameters per token:
more compute per image), so its ratio is a lower bound. --train-cfg-options (e.g.
``model.num_experts=1``: top-1 routing with capacity computes the same expert FLOPs per token
for any expert count, minus the other experts' optimizer update, so a faster stand-in and a
conservative ratio) and --train-batch-size shrink the trained model instead.

The machine's other load changes every number: report the command and the machine with them.

Examples:
  python benchmarks/perf/pipeline_perf.py                          # tiny and base, configured workers
  python benchmarks/perf/pipeline_perf.py --configs tiny --num-workers 4 --workers-as processes --json out.json
  python benchmarks/perf/pipeline_perf.py --configs base --train-batch-size 1 \\
      --train-cfg-options model.num_experts=1                      # a base stand-in
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a plain clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REPO = Path(__file__).resolve().parents[2]
TARGET = 3.0  # the pipeline must supply at least this many times what a step consumes
RESULT = "RESULT "  # prefix of the training child's result line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="pipeline_perf.py", description="\n\n".join(doc[:3]),
                                     epilog="\n\n".join(doc[3:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "base"],
                        help="config names under configs/pretrain (default: tiny base)")
    parser.add_argument("--num-workers", type=int, help="override data.num_workers (map workers per modality)")
    parser.add_argument("--workers-as", choices=("threads", "processes"),
                        help="override data.python_multiprocessing (False: threads, True: processes)")
    parser.add_argument("--pipeline-steps", type=int, default=50, help="batches timed per pipeline measurement")
    parser.add_argument("--train-steps", type=int, default=3, help="training steps timed after the compile")
    parser.add_argument("--train-batch-size", type=int, help="batch for the training measurement (default: config's)")
    parser.add_argument("--train-cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides for the training measurements only, of every config in the run "
                             "(e.g. model.num_experts=1)")
    parser.add_argument("--skip-train", action="store_true", help="measure the pipeline only")
    parser.add_argument("--demo-tiles", type=int, default=16, help="generated tiles per modality")
    parser.add_argument("--memory-fraction", type=float, default=0.8,
                        help="stop a training measurement whose RSS passes this fraction of the available memory")
    parser.add_argument("--train-timeout", type=float, default=900, help="seconds per training measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--_train-one", dest="train_one", help=argparse.SUPPRESS)  # the child of measure_training
    parser.add_argument("--_data", dest="data", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load(name: str, options: list[str]) -> dict:
    from pretrain.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(REPO / "configs/pretrain" / f"{name}.py"), options)
    cfg.setdefault("name", name)
    return cfg


def pipeline_options(cfg: dict, args: argparse.Namespace):
    from pretrain.data.pipeline import PipelineOptions

    data = dict(cfg["data"])
    if args.num_workers is not None:
        data["num_workers"] = args.num_workers
    if args.workers_as:
        data["python_multiprocessing"] = args.workers_as == "processes"
    return PipelineOptions.from_config(data)


def time_modality(sample, layout, options, steps: int) -> float:
    """Samples/s of one modality's dataset alone, after its first batch."""
    from pretrain.data.pipeline import modality_dataset

    dataset = modality_dataset(sample, layout, 0, steps + 1, options)
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    try:
        next(iterator)
        begin = time.perf_counter()
        count = sum(1 for _ in iterator)
        elapsed = time.perf_counter() - begin
    finally:
        iterator.stop()
        del iterator, dataset  # process workers exit now, not while the next one is timed
    return count * layout.batch_size / elapsed


def time_step_stream(root: Path, arch, batch_size: int, options, steps: int) -> float:
    """Images/s (all modalities) of the zipped stream train.py reads, after its first step."""
    from pretrain.data.pipeline import multimodal_batches

    stream = multimodal_batches(root, arch, batch_size, 0, arch.sar_l1_power_target, num_steps=steps + 1,
                                options=options)
    next(stream)
    begin = time.perf_counter()
    count = sum(1 for _ in stream)
    return count * batch_size * len(arch.modalities) / (time.perf_counter() - begin)


def measure_pipeline(root: Path, cfg: dict, args: argparse.Namespace) -> dict:
    from pretrain.data.pipeline import SlotLayout, modality_samples, worker_count
    from pretrain.train import build_arch

    arch, options = build_arch(cfg), pipeline_options(cfg, args)
    layout = SlotLayout(cfg["data"]["batch_size"])
    samples = modality_samples(root, arch, 0, layout, arch.sar_l1_power_target, "folder", options)
    result = {"batch_size": layout.batch_size, "num_workers": worker_count(options),
              "workers_as": "processes" if options.python_multiprocessing and worker_count(options) > 1 else "threads",
              "per_modality_samples_per_s": {}}
    for sample in samples:
        rate = time_modality(sample, layout, options, args.pipeline_steps)
        result["per_modality_samples_per_s"][sample.source.modality.name] = round(rate, 2)
    result["step_images_per_s"] = round(time_step_stream(root, arch, layout.batch_size, options,
                                                         args.pipeline_steps), 2)
    return result


def train_one(root: Path, name: str, args: argparse.Namespace) -> dict:
    """Compile time and images/s of the trainer's graph-mode step on one pipeline batch (run in
    a child process: see ``measure_training``)."""
    import mindspore as ms

    from pretrain.data.pipeline import PipelineOptions, multimodal_batches
    from pretrain.models.ringmoe import RingMoESimMIM
    from pretrain.train import build_arch, build_optimizer, build_train_step, set_device

    cfg = load(name, args.train_cfg_options)
    arch = build_arch(cfg)
    batch_size = args.train_batch_size or cfg["data"]["batch_size"]
    ms.set_context(mode=ms.GRAPH_MODE)
    set_device("CPU")
    ms.set_seed(0)
    net = RingMoESimMIM(arch, dropout=cfg["model"].get("dropout", 0.0))
    optimizer = build_optimizer(net, cfg["optim"], args.train_steps + 1)
    names = [m.name for m in arch.modalities]
    step = build_train_step(net, optimizer, names, graph=True)
    net.set_train(True)
    batch = next(multimodal_batches(root, arch, batch_size, 0, arch.sar_l1_power_target, num_steps=1,
                                    options=PipelineOptions(num_workers=0)))
    images = ms.mutable(tuple(ms.Tensor(x) for x in batch["images"]))
    masks = ms.mutable(tuple(ms.Tensor(x) for x in batch["masks"]))
    power = batch["targets"][names.index("sar_l1")] if "sar_l1" in names else None
    power = None if power is None else ms.Tensor(power)
    times = []
    for _ in range(args.train_steps + 1):
        tick = time.perf_counter()
        float(step(images, masks, power)[0])  # waits for the step
        times.append(time.perf_counter() - tick)
    per_step = statistics.median(times[1:])
    return {"compile_s": round(times[0] - per_step, 1), "step_s": round(per_step, 3),
            "train_images_per_s": round(batch_size * len(names) / per_step, 2)}


def _tree_rss(process) -> int:
    import psutil

    total = 0
    for proc in [process] + process.children(recursive=True):
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total


def measure_training(root: Path, name: str, args: argparse.Namespace) -> dict:
    """``train_one`` in a child process whose memory is watched: on a shared machine a graph
    compile that outgrows ``--memory-fraction`` of the memory available at its start is
    stopped (and reported) instead of pushing other work into the OOM killer."""
    import psutil

    cfg = load(name, args.train_cfg_options)
    result = {"train_batch_size": args.train_batch_size or cfg["data"]["batch_size"],
              "train_cfg_options": args.train_cfg_options}
    budget = args.memory_fraction * psutil.virtual_memory().available
    from pretrain.models.arch import backbone_param_count
    from pretrain.train import build_arch

    state = 16 * backbone_param_count(build_arch(cfg))  # weights, gradients, AdamW m and v in float32
    if state > budget:
        result["skipped"] = f"its training state alone needs {state / 2**30:.1f} GiB, budget {budget / 2**30:.1f} GiB"
        return result
    argv = [sys.executable, str(Path(__file__).resolve()), "--_train-one", name, "--_data", str(root),
            "--train-steps", str(args.train_steps)]
    argv += ["--train-batch-size", str(args.train_batch_size)] if args.train_batch_size else []
    argv += ["--train-cfg-options", *args.train_cfg_options] if args.train_cfg_options else []
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watched, peak, begin = psutil.Process(child.pid), 0, time.perf_counter()
    while child.poll() is None:
        peak = max(peak, _tree_rss(watched))
        elapsed = time.perf_counter() - begin
        if peak > budget or elapsed > args.train_timeout:
            child.kill()
            child.wait()
            why = f"RSS {peak / 2**30:.1f} GiB > budget {budget / 2**30:.1f} GiB" if peak > budget else "timeout"
            result["skipped"] = f"stopped after {elapsed:.0f} s (compiling or first steps): {why}"
            return result
        time.sleep(0.5)
    lines = [line for line in child.stdout.read().splitlines() if line.startswith(RESULT)]
    if child.returncode or not lines:
        result["skipped"] = f"the training child failed (exit {child.returncode})"
        return result
    result.update(json.loads(lines[-1][len(RESULT):]), peak_rss_gib=round(peak / 2**30, 2))
    return result


def bound_from(rows: list[dict], row: dict) -> dict | None:
    """A measured row whose model needs no more compute per image than ``row``'s: its training
    images/s bounds ``row``'s from above (same input size; wider and deeper costs more)."""
    from pretrain.models.arch import activated_param_count
    from pretrain.train import build_arch

    arch = build_arch(load(row["config"], []))
    for other in rows:
        small = build_arch(load(other["config"], other["train"]["train_cfg_options"]))
        if ("train_images_per_s" in other.get("train", {}) and small.img_size == arch.img_size
                and small.embed_dim <= arch.embed_dim and sum(small.depths) <= sum(arch.depths)
                and activated_param_count(small) <= activated_param_count(arch)):
            return other
    return None


def table(rows: list[dict]) -> str:
    names = list(rows[0]["pipeline"]["per_modality_samples_per_s"])
    head = (["config", "batch", "workers"] + [f"{n} /s" for n in names]
            + ["step img/s", "compile s", "train img/s", "ratio", f">={TARGET:g}x"])
    lines, notes = [], []
    for row in rows:
        pipe, train = row["pipeline"], row.get("train", {})
        rate, bound = train.get("train_images_per_s"), ""
        if train and rate is None:
            notes.append(f"{row['config']}: training not measured: {train['skipped']}")
            other = bound_from(rows, row)
            if other is not None:  # an upper bound on the consumption, so a lower bound on the ratio
                rate, bound = other["train"]["train_images_per_s"], "<="
                notes.append(f"{row['config']}: consumes at most what {other['config']} does (same input size, "
                             f"no wider or deeper, no more activated parameters): ratio is a lower bound")
        elif rate is not None:
            options = " ".join(train["train_cfg_options"])
            notes.append(f"{row['config']}: training measured with batch {train['train_batch_size']}"
                         + (f" and {options}" if options else "") + f", peak RSS {train['peak_rss_gib']} GiB")
        ratio = pipe["step_images_per_s"] / rate if rate else None
        row["ratio"] = None if ratio is None else {"value": round(ratio, 2), "lower_bound": bool(bound)}
        lines.append([row["config"], str(pipe["batch_size"]), f"{pipe['num_workers']} {pipe['workers_as']}"]
                     + [f"{pipe['per_modality_samples_per_s'][n]:.1f}" for n in names]
                     + [f"{pipe['step_images_per_s']:.1f}", str(train.get("compile_s", "-")),
                        "-" if rate is None else f"{bound}{rate:.2f}",
                        "-" if ratio is None else f"{'>=' if bound else ''}{ratio:.1f}",
                        "-" if ratio is None else ("yes" if ratio >= TARGET else "NO")])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out + notes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.train_one:
        print(RESULT + json.dumps(train_one(args.data, args.train_one, args)), flush=True)
        return 0
    from pretrain.data.synthetic import generate_pretrain_data

    rows = []
    with tempfile.TemporaryDirectory(prefix="pipeline_perf_") as tmp:
        tick = time.perf_counter()
        root = generate_pretrain_data(Path(tmp) / "data", args.demo_tiles, 256, seed=0)
        print(f"demo data: {args.demo_tiles} tiles of 256 px per modality ({time.perf_counter() - tick:.1f} s); "
              f"{os.cpu_count()} CPUs", flush=True)
        for name in args.configs:
            cfg = load(name, [])
            row = {"config": name, "pipeline": measure_pipeline(root, cfg, args)}
            print(f"{name} pipeline: {json.dumps(row['pipeline'])}", flush=True)
            if not args.skip_train:
                tick = time.perf_counter()
                row["train"] = measure_training(root, name, args)
                print(f"{name} training ({time.perf_counter() - tick:.0f} s): {json.dumps(row['train'])}", flush=True)
            rows.append(row)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
