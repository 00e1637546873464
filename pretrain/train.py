#!/usr/bin/env python
"""SimMIM pretraining of RingMoE with MindSpore on CPU, GPU or Ascend.

Each step takes one batch of every modality (optical, SAR-L1, SAR-L2, multispectral), runs
the joint MoE path (capacity-limited, as the authors train) and minimises the masked L1
reconstruction losses plus the MoE load-balancing loss.

Examples:
  python pretrain/train.py --config configs/pretrain/tiny.py
  python pretrain/train.py --config configs/pretrain/tiny.py --cfg-options train.steps=20 data.batch_size=1
  python pretrain/train.py --config configs/pretrain/tiny.py --resume          # newest in work_dir
  python pretrain/train.py --config configs/pretrain/giant.py --count-params   # nothing allocated

The work dir receives the resolved config (config.json), a log (train.log and log.jsonl),
checkpoints <name>-step<N>.ckpt written atomically (the newest checkpoint.keep_last are kept), a
last_checkpoint pointer, and a loss plot (loss.png). A checkpoint holds the weights, the optimizer
state and the data position, so `--resume` (auto: the newest complete checkpoint) continues
with the batches an uninterrupted run would see. Without data.root, demo data is generated
(pretrain/data/synthetic.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.config import ConfigError, apply_overrides, load_config  # noqa: E402
from pretrain.models.arch import (  # noqa: E402
    RingMoEArch, activated_param_count, backbone_param_count, get_arch,
)

logger = logging.getLogger("pretrain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="pretrain/train.py", description="\n\n".join(doc[:2]),
                                     epilog="\n\n".join(doc[2:] + [LOG_KEYS]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file, e.g. configs/pretrain/tiny.py")
    parser.add_argument("--work-dir", help="output folder (default: the config's work_dir)")
    parser.add_argument("--resume", nargs="?", const="auto",
                        help="continue from a checkpoint; without a path, the newest in the work dir")
    parser.add_argument("--device", choices=("CPU", "GPU", "Ascend"), help="overrides train.device")
    parser.add_argument("--count-params", action="store_true",
                        help="print the backbone parameter counts of the config and exit (allocates nothing)")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", help="override config entries")
    return parser.parse_args(argv)


def build_arch(cfg: dict) -> RingMoEArch:
    model = dict(cfg["model"])
    arch = get_arch(model.pop("arch"))
    model.pop("dropout", None)  # a training option, not part of the architecture
    if "depths" in model:
        model["depths"] = tuple(model["depths"])
    if "num_heads" in model:
        model["num_heads"] = tuple(model["num_heads"])
    return arch.replace(**model)


def count_params(arch: RingMoEArch) -> str:
    full = backbone_param_count(arch)
    dense = backbone_param_count(arch.replace(moe=False))
    active = activated_param_count(arch)
    return (f"backbone parameters: {full:,} ({full / 1e9:.3f}B) with MoE; "
            f"{dense:,} ({dense / 1e9:.3f}B) with one FFN per block; "
            f"{active:,} ({active / 1e9:.3f}B) activated per token")


def lr_schedule(optim: dict, steps: int) -> list[float]:
    """Linear warm-up, then cosine decay to min_lr, one value per step."""
    warmup = optim.get("warmup_steps", 0)
    base, low = optim["lr"], optim.get("min_lr", 0.0)
    values = []
    for step in range(steps):
        if step < warmup:
            values.append(base * (step + 1) / warmup)
        else:
            progress = (step - warmup) / max(steps - warmup, 1)
            values.append(low + 0.5 * (base - low) * (1 + math.cos(math.pi * progress)))
    return values


def setup_logging(work_dir: Path) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in list(logger.handlers):  # a second run in the same process logs to its own work dir
        logger.removeHandler(handler)
        handler.close()
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(work_dir / "train.log")):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def read_log(log_path: Path) -> list[dict]:
    """The step records of a log.jsonl (see LOG_KEYS)."""
    if not log_path.is_file():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def trim_log(log_path: Path, start: int) -> None:
    """Keep the records up to ``start`` (atomically): a fresh run starts an empty log, and a
    resumed one drops what a killed run logged after its last checkpoint, so no step is logged
    twice and the file reads as one uninterrupted run."""
    from pretrain.checkpoint import write_text_atomic

    kept = [r for r in read_log(log_path) if r.get("step", 0) <= start]
    write_text_atomic(log_path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_losses(log_path: Path, out: Path) -> None:
    """Loss curves from log.jsonl: per modality and total, and the MoE aux loss and drop rate
    (skipped if matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib not installed: no loss plot")
        return
    records = read_log(log_path)
    if not records:
        return
    fig, (ax, moe) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in records]
    for name in records[0]["losses"]:
        ax.plot(steps, [r["losses"][name] for r in records], label=name)
    ax.plot(steps, [r["loss"] for r in records], "k--", label="total")
    ax.set_xlabel("step")
    ax.set_ylabel("masked L1 (total: + aux)")
    ax.legend(fontsize=7)
    moe.plot(steps, [r["aux"] for r in records], label="aux loss")
    moe.set_xlabel("step")
    moe.set_ylabel("MoE aux loss")
    routed = [r for r in records if "drop_rate" in r]
    if routed:
        drop = moe.twinx()
        drop.plot([r["step"] for r in routed], [r["drop_rate"] for r in routed], "o-", color="tab:red",
                  label="drop rate")
        drop.set_ylabel("tokens dropped (capacity)")
        drop.legend(fontsize=7, loc="upper right")
    moe.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def set_device(device: str) -> None:
    """ms.set_device, tolerating a second call in one process (tests, notebooks) on the same device:
    MindSpore refuses any call once a kernel has run, even one that changes nothing.

    On CPU it also caps oneDNN at AVX2 (unless ONEDNN_MAX_CPU_ISA is set): MindSpore's CPU
    convolutions run on plain NCHW tensors, for which oneDNN on an AVX-512 host picks a wrapper
    around its reference kernel; capped at AVX2 it picks its GEMM kernel. Measured on this
    project's 2-core machine, a patch-embedding conv (8x3x192x192, 4x4/4) forward + backward:
    507 ms -> 56 ms. oneDNN reads the cap when the process creates its first primitive.
    """
    import os

    import mindspore as ms

    from pretrain.parallel import device_id_from_env

    if device == "CPU":
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

    try:
        ms.set_device(device, device_id_from_env(device))
    except RuntimeError:
        if ms.get_context("device_target") != device:
            raise


def setup_distributed(cfg: dict, work_dir: Path):
    """Parallel init (after set_device): communication and the auto-parallel context from the
    ``parallel`` section; returns pretrain.parallel.DistInfo (rank 0 of 1 when stand-alone).

    Rank 0 writes the work dir's config.json, train.log, log.jsonl, loss.png and the strategy
    file; rank r > 0 logs to <work_dir>/rank_<r>/ (train.log, log.jsonl). Every rank saves its
    checkpoints in <work_dir>/rank_<r>/ (converters/merge.py reads that layout)."""
    from pretrain.parallel import config_parallel, init_parallel

    dist = init_parallel(config_parallel(cfg, cfg["train"]["device"]), work_dir)
    if dist.distributed:
        if not dist.is_main:
            setup_logging(dist.log_dir(work_dir))
        logger.info("rank %d of %d (%s); auto-parallel context %s", dist.rank, dist.group_size,
                    dist.config.mode, dist.context)
    return dist


def routing_stats(net, names: list[str], images, masks, targets) -> dict:
    """Per block, each router's expert load and capacity drop rate on one batch.

    A separate forward without gradients, run eagerly (PyNative) because graph mode cannot
    keep the routing decisions; in eval mode, so dropout consumes no random numbers and the
    training trajectory is the same with or without these probes.
    """
    import mindspore as ms
    import numpy as np

    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net.encoder.set_record_routing(True)
    net.set_train(False)
    try:
        net(images, masks, targets)
        blocks, dropped, routed = {}, 0, 0
        for s, stage in enumerate(net.encoder.layers):
            for b, block in enumerate(stage.blocks):
                entry: dict = {"load": {}, "drop": {}}
                for key, info in block.mlp.last_routing.items():
                    router = names[int(key[len("special"):])] if key.startswith("special") else "cross"
                    expert, kept = info["expert"].asnumpy(), info["kept"].asnumpy()
                    load = np.bincount(expert, minlength=block.mlp.num_experts) / expert.size
                    entry["load"][router] = [round(float(v), 4) for v in load]
                    entry["drop"][router] = round(float(1.0 - kept.mean()), 4)
                    dropped, routed = dropped + int((~kept).sum()), routed + kept.size
                blocks[f"layers.{s}.blocks.{b}"] = entry
                block.mlp.last_routing = {}
    finally:
        net.encoder.set_record_routing(False)
        net.set_train(True)
        ms.set_context(mode=mode)
    return {"routing": blocks, "drop_rate": round(dropped / max(routed, 1), 5)}


LOG_KEYS = """\
log.jsonl: one JSON object per logged step (every train.log_interval steps and the last):
  step          int    steps done (1-based; the optimizer has applied this many updates)
  loss          float  total loss of that step's batch (forward before its update): sum of the
                       per-modality losses + aux
  losses        dict   modality name -> masked L1 reconstruction loss of that step
  aux           float  MoE load-balancing loss (0.001-weighted, summed over blocks)
  lr            float  learning rate used for that step
  images_per_s  float  images (all modalities) per second of training steps since the last
                       record (excludes logging, routing probes and checkpoint saves; the
                       first record of a process includes graph compilation)
  elapsed_s     float  wall seconds since this process started training
on logged steps that are multiples of train.routing_interval (and the last), from an extra eval
  forward on that step's batch after its update:
  drop_rate     float  tokens dropped by expert capacity / tokens routed, all routers and blocks
  routing       dict   "layers.<s>.blocks.<b>" -> {"load": {router: [fraction of tokens per
                       expert, before capacity]}, "drop": {router: fraction dropped}}, routers
                       being the modality names (specialised experts) and "cross"
A resumed run first trims records after its checkpoint's step, so steps are unique and ascending."""


def _data_position(cfg: dict, root, step: int, group_size: int = 1) -> dict:
    """Where the data stream stands: pretrain/data/pipeline.py seeds every sample by (seed, step,
    modality, slot), so (seed, per-rank batch size, ranks, data root, augmentation, next index)
    reproduce the next batches."""
    from pretrain.data.pipeline import STREAM, PipelineOptions

    return {"stream": STREAM, "seed": cfg["train"]["seed"], "batch_size": cfg["data"]["batch_size"],
            "group_size": group_size, "root": str(root), "next_index": step,
            **PipelineOptions.from_config(cfg["data"]).position()}


def _check_resume_position(saved: dict, current: dict) -> None:
    """A resumed run sees the same batches only with the same seed, batch size and data."""
    for key in ("stream", "seed", "batch_size", "group_size", "root", "crop_scale", "crop_ratio", "flip_prob"):
        if key in saved and saved[key] != current[key]:
            logger.warning("warning: resuming with data %s=%r but the checkpoint was trained with %r: the batches "
                           "after resume differ from an uninterrupted run", key, current[key], saved[key])
    if saved.get("next_index", current["next_index"]) != current["next_index"]:
        raise RuntimeError(f"checkpoint data position {saved['next_index']} != its step {current['next_index']}")


def build_optimizer(net, optim: dict, steps: int):
    """AdamW (MindSpore's AdamWeightDecay) over every trainable parameter, with the per-step
    warm-up + cosine schedule of ``steps`` steps (also used by benchmarks/perf/)."""
    from mindspore import nn

    beta1, beta2 = optim.get("betas", (0.9, 0.999))
    return nn.AdamWeightDecay(net.trainable_params(), learning_rate=lr_schedule(optim, steps), beta1=beta1,
                              beta2=beta2, weight_decay=optim.get("weight_decay", 0.05))


def build_train_step(net, optimizer, names: list[str], graph: bool, grad_reducer=None):
    """One training step: forward, backward and the optimizer update (also timed by
    benchmarks/perf/step_perf.py). Called as ``train_step(images, masks, power)`` with tuples of
    per-modality tensors (ms.mutable in graph mode) and the SAR-L1 power target or None;
    returns (loss, per-modality losses, aux loss).

    Graph mode (compiled once, about 30 s for tiny on 2 cores, then ~4x faster than eager): see
    _graph_train_step."""
    import mindspore as ms

    sar_l1 = names.index("sar_l1") if "sar_l1" in names else -1
    if graph:
        return _graph_train_step(net, optimizer, len(names), sar_l1, grad_reducer)

    def forward(images, masks, targets):
        return net(images, masks, targets)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=True)

    def train_step(images, masks, power):
        targets = None if power is None else tuple(power if m == sar_l1 else None for m in range(len(names)))
        (loss, per_modality, aux), grads = grad_fn(images, masks, targets)
        if grad_reducer is not None:  # data parallel: the mean gradient over ranks
            grads = grad_reducer(grads)
        optimizer(grads)
        return loss, per_modality, aux

    return train_step


def _graph_train_step(net, optimizer, count: int, sar_l1: int, grad_reducer):
    """build_train_step in graph mode, measured on tiny (benchmarks/perf/step_perf.py):

    * one compiled Cell: the same step as an ms.jit function ran ~1.6x slower on CPU;
    * each block's MoE layer is recomputed in the backward pass (pretrain.models.ringmoe.
      recompute_experts): its activations were ~40% of the step's memory, for ~10% more time;
    * compiled before the first step, after which the heap pages the compiler freed go back to the
      OS (glibc keeps ~190 MB of them otherwise, on top of the step's own memory)."""
    import mindspore as ms
    from mindspore import nn

    from pretrain.models.ringmoe import recompute_experts

    recompute_experts(net)

    class TrainStep(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)  # keep the parameter names
            self.net, self.optimizer, self.grad_reducer = net, optimizer, grad_reducer
            self.grad_fn = ms.value_and_grad(net, None, optimizer.parameters, has_aux=True)
            self.modalities, self.sar_l1 = count, sar_l1

        def construct(self, images, masks, power):
            targets = None
            if power is not None:
                targets = ()
                for m in range(self.modalities):
                    targets = targets + ((power,) if m == self.sar_l1 else (None,))
            (loss, per_modality, aux), grads = self.grad_fn(images, masks, targets)
            if self.grad_reducer is not None:  # data parallel: the mean gradient over ranks
                grads = self.grad_reducer(grads)
            self.optimizer(grads)
            return loss, per_modality, aux

    cell = TrainStep()
    compiled = []

    def train_step(images, masks, power):
        if not compiled:
            cell.compile(images, masks, power)
            release_freed_heap()
            compiled.append(True)
        return cell(images, masks, power)

    return train_step


def release_freed_heap() -> None:
    """Return the heap pages that glibc keeps after frees to the OS (malloc_trim); a no-op where
    the C library has no malloc_trim."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def train(cfg: dict, work_dir: Path, resume: str | None) -> Path:
    import mindspore as ms
    import numpy as np

    from pretrain.checkpoint import checkpoint_name, latest_checkpoint, resume_state, save_checkpoint
    from pretrain.data.pipeline import PipelineOptions, describe, multimodal_batches
    from pretrain.data.synthetic import generate_pretrain_data
    from pretrain.models.ringmoe import RingMoESimMIM

    tcfg, dcfg, ocfg = cfg["train"], cfg["data"], cfg["optim"]
    keep_last = cfg.get("checkpoint", {}).get("keep_last", 3)
    mode = ms.GRAPH_MODE if tcfg.get("mode", "pynative") == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode)
    set_device(tcfg["device"])
    dist = setup_distributed(cfg, work_dir)  # parallel init; every rank seeds alike, so weights start equal
    ms.set_seed(tcfg["seed"])
    arch = build_arch(cfg)
    logger.info(count_params(arch))

    root = dcfg.get("root")
    kind = dcfg.get("type", "folder")
    if not root and not dist.is_main:  # rank 0 writes the demo data (below); the others wait for it
        dist.barrier()
        root = work_dir / ("data_mindrecord" if kind == "mindrecord" else "data")
    if not root:
        root = generate_pretrain_data(work_dir / "data", dcfg.get("demo_tiles", 16), dcfg.get("demo_tile_size", 256),
                                      tcfg["seed"])
        logger.info("no data.root given: generated demo data in %s", root)
        if kind == "mindrecord":  # the demo goes through the shard writer too
            from pretrain.tools.make_dataset import BuildOptions, build_from_root

            build_from_root(root, work_dir / "data_mindrecord", BuildOptions(overwrite=True, progress=False),
                            echo=logger.info)
            root = work_dir / "data_mindrecord"
        dist.barrier()  # the demo data is complete (a no-op stand-alone)

    from pretrain.parallel import ParallelLayout  # semi_auto_parallel: the model's operator shard strategies

    net = RingMoESimMIM(arch, dropout=cfg["model"].get("dropout", 0.0),
                        parallel=ParallelLayout.from_config(dist.config))
    if dist.config.recompute:
        from pretrain.parallel import apply_recompute

        logger.info("recompute: %d encoder blocks", apply_recompute(net))
    ckpt_dir = dist.rank_dir(work_dir)  # <work_dir>/rank_<r>/ when distributed
    if dist.is_main and dist.config.mode == "data_parallel":  # MindSpore writes none in this mode: every
        from pretrain.parallel import net_params, plan_layouts, write_strategy  # parameter whole on every rank

        write_strategy(plan_layouts(net_params(net), dist.config, arch.num_heads), dist.strategy_path(work_dir))
    steps = tcfg["steps"]
    schedule = lr_schedule(ocfg, steps)
    optimizer = build_optimizer(net, ocfg, steps)
    start = 0
    if resume:
        if dist.distributed and resume != "auto":
            raise ConfigError("--resume PATH: a distributed run resumes each rank from its rank_<r>/ dir; "
                              "use --resume without a path and the same --work-dir")
        path = latest_checkpoint(ckpt_dir) if resume == "auto" else Path(resume)
        if path is None:
            raise ConfigError(f"--resume: no checkpoint in {ckpt_dir}")
        start, saved_meta = resume_state(path, net, optimizer)
        dist.agree(start, "the step to resume from (a rank was killed while saving? delete its newest checkpoint)")
        _check_resume_position(saved_meta.get("data", {}), _data_position(cfg, root, start, dist.data_shard[1]))
        logger.info("resumed from %s at step %d", path, start)
    data_options = PipelineOptions.from_config(dcfg)
    logger.info("data pipeline: %s", describe(data_options))
    batches = multimodal_batches(root, arch, dcfg["batch_size"], tcfg["seed"], arch.sar_l1_power_target, start,
                                 kind=kind, num_steps=steps - start, options=data_options,
                                 rank=dist.data_shard[0], group_size=dist.data_shard[1])  # this rank's share

    names = [m.name for m in arch.modalities]
    sar_l1 = names.index("sar_l1") if "sar_l1" in names else -1
    train_step = build_train_step(net, optimizer, names, graph=mode == ms.GRAPH_MODE,
                                  grad_reducer=dist.grad_reducer(optimizer.parameters))
    meta = {"arch": arch.to_dict(), "config": cfg.get("name"), "data_root": str(root)}
    prefix = f"ringmoe-{cfg.get('name', 'model')}"
    net.set_train(True)
    images_per_step = dcfg["batch_size"] * len(names)
    routing_interval = tcfg.get("routing_interval", 0)
    log_path = dist.log_dir(work_dir) / "log.jsonl"
    trim_log(log_path, start)
    log_file = log_path.open("a")
    begin = time.perf_counter()
    step_time, step_count = 0.0, 0
    for step in range(start, steps):
        batch = next(batches)
        # mutable: in graph mode a tuple input is otherwise a constant, recompiled every step
        images = ms.mutable(tuple(ms.Tensor(x) for x in batch["images"]))
        masks = ms.mutable(tuple(ms.Tensor(x) for x in batch["masks"]))
        power = batch["targets"][sar_l1] if sar_l1 >= 0 else None
        tick = time.perf_counter()
        loss, per_modality, aux = train_step(images, masks, None if power is None else ms.Tensor(power))
        loss = float(loss)  # waits for the step, so the time below is the step's
        step_time, step_count = step_time + time.perf_counter() - tick, step_count + 1
        done = step + 1
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {done}")
        if done % tcfg["log_interval"] == 0 or done == steps:
            per = dict(zip(names, (float(v) for v in per_modality.asnumpy())))
            rate = images_per_step * step_count / step_time
            record = {"step": done, "loss": loss, "losses": per, "aux": float(aux), "lr": schedule[step],
                      "images_per_s": rate, "elapsed_s": round(time.perf_counter() - begin, 3)}
            if routing_interval and (done % routing_interval == 0 or done == steps):
                targets = None if power is None else tuple(ms.Tensor(power) if m == sar_l1 else None
                                                           for m in range(len(names)))
                record.update(routing_stats(net, names, images, masks, targets))
            logger.info("step %d/%d loss %.4f (%s, aux %.4f) lr %.2e %.2f img/s%s", done, steps, loss,
                        " ".join(f"{k} {v:.4f}" for k, v in per.items()), record["aux"], record["lr"], rate,
                        f" drop {record['drop_rate']:.3f}" if "drop_rate" in record else "")
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            step_time, step_count = 0.0, 0
        if done % tcfg["save_interval"] == 0 or done == steps:
            position = _data_position(cfg, root, done, dist.data_shard[1])
            path = save_checkpoint(ckpt_dir / checkpoint_name(prefix, done, dist.step_width), net,
                                   dict(meta, data=position), optimizer, done, keep_last)
            logger.info("saved %s", path)
    log_file.close()
    if dist.is_main:
        plot_losses(log_path, work_dir / "loss.png")
    final = ckpt_dir / checkpoint_name(prefix, steps, dist.step_width)
    return final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # a config with a `recipe` key is a seed-zoo recipe: pretrain/zoo's engine trains it
        zoo = "recipe" in load_config(args.config)
    except ConfigError:
        zoo = False  # reported below
    if zoo:
        from pretrain.zoo.train import main as zoo_main

        return zoo_main(sys.argv[1:] if argv is None else argv)
    try:
        cfg = apply_overrides(load_config(args.config), args.cfg_options)
        cfg.setdefault("name", Path(args.config).stem)
        arch = build_arch(cfg)
        from pretrain.parallel import config_parallel

        config_parallel(cfg, args.device or cfg["train"].get("device"))
    except (ConfigError, KeyError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # KeyError quotes its text
        print(f"train: error: {message}", file=sys.stderr)
        return 2
    if args.count_params:
        print(f"{cfg['name']}: {count_params(arch)}")
        return 0
    return run_in_work_dir(cfg, args, f"work_dirs/pretrain/{cfg['name']}", train, logger)


def run_in_work_dir(cfg: dict, args: argparse.Namespace, default_work_dir: str, train_fn, log) -> int:
    """What both trainers (RingMoE's and the seed zoo's) do once the config is loaded: apply
    ``--device``, set up the work dir and its log, write the resolved config, train, and turn
    bad input found while training into a one-line error with exit code 2."""
    if args.device:
        cfg["train"]["device"] = args.device
    work_dir = Path(args.work_dir or cfg.get("work_dir") or default_work_dir)
    setup_logging(work_dir)
    from pretrain.checkpoint import write_text_atomic

    # the resolved config, written whole or not at all (every rank writes it: one temp file each)
    write_text_atomic(work_dir / "config.json", json.dumps(cfg, indent=1))
    try:
        final = train_fn(cfg, work_dir, args.resume)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    log.info("done: %s", final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
