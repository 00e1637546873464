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
checkpoints <name>-step<N>.ckpt written atomically, a last_checkpoint pointer, and a loss plot.
Without data.root, demo data is generated (pretrain/data/synthetic.py).
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
                                     epilog="\n\n".join(doc[2:]), formatter_class=argparse.RawDescriptionHelpFormatter)
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


def plot_losses(log_path: Path, out: Path) -> None:
    """Loss curves per modality from log.jsonl (skipped if matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib not installed: no loss plot")
        return
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in records]
    for name in records[0]["losses"]:
        ax.plot(steps, [r["losses"][name] for r in records], label=name)
    ax.plot(steps, [r["loss"] for r in records], "k--", label="total")
    ax.set_xlabel("step")
    ax.set_ylabel("masked L1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def train(cfg: dict, work_dir: Path, resume: str | None) -> Path:
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from pretrain.checkpoint import checkpoint_name, latest_checkpoint, load_for_resume, save_checkpoint
    from pretrain.data.folder import multimodal_batches
    from pretrain.data.synthetic import generate_pretrain_data
    from pretrain.models.ringmoe import RingMoESimMIM

    tcfg, dcfg, ocfg = cfg["train"], cfg["data"], cfg["optim"]
    mode = ms.GRAPH_MODE if tcfg.get("mode", "pynative") == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode)
    ms.set_device(tcfg["device"])
    ms.set_seed(tcfg["seed"])
    arch = build_arch(cfg)
    logger.info(count_params(arch))

    root = dcfg.get("root")
    if not root:
        root = generate_pretrain_data(work_dir / "data", dcfg.get("demo_tiles", 16), dcfg.get("demo_tile_size", 256),
                                      tcfg["seed"])
        logger.info("no data.root given: generated demo data in %s", root)

    net = RingMoESimMIM(arch, dropout=cfg["model"].get("dropout", 0.0))
    steps = tcfg["steps"]
    schedule = lr_schedule(ocfg, steps)
    optimizer = nn.AdamWeightDecay(net.trainable_params(), learning_rate=schedule,
                                   beta1=ocfg.get("betas", (0.9, 0.999))[0], beta2=ocfg.get("betas", (0.9, 0.999))[1],
                                   weight_decay=ocfg.get("weight_decay", 0.05))
    start = 0
    if resume:
        path = latest_checkpoint(work_dir) if resume == "auto" else Path(resume)
        if path is None:
            raise ConfigError(f"--resume: no checkpoint in {work_dir}")
        start = load_for_resume(path, net, optimizer)
        logger.info("resumed from %s at step %d", path, start)
    batches = multimodal_batches(root, arch, dcfg["batch_size"], tcfg["seed"], arch.sar_l1_power_target, start)

    def forward(images, masks, targets):
        return net(images, masks, targets)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=True)
    names = [m.name for m in arch.modalities]

    sar_l1 = names.index("sar_l1") if "sar_l1" in names else -1

    def train_step(images, masks, power):
        targets = None if power is None else tuple(power if m == sar_l1 else None for m in range(len(names)))
        (loss, per_modality, aux), grads = grad_fn(images, masks, targets)
        optimizer(grads)
        return loss, per_modality, aux

    if mode == ms.GRAPH_MODE:  # compiled once (about 30 s for tiny on 2 cores), then ~4x faster
        train_step = ms.jit(train_step)
    meta = {"arch": arch.to_dict(), "config": cfg.get("name"), "data_root": str(root)}
    prefix = f"ringmoe-{cfg.get('name', 'model')}"
    net.set_train(True)
    images_per_step = dcfg["batch_size"] * len(names)
    log_file = (work_dir / "log.jsonl").open("a")
    last = None
    tick = time.perf_counter()
    for step in range(start, steps):
        batch = next(batches)
        # mutable: in graph mode a tuple input is otherwise a constant, recompiled every step
        images = ms.mutable(tuple(ms.Tensor(x) for x in batch["images"]))
        masks = ms.mutable(tuple(ms.Tensor(x) for x in batch["masks"]))
        power = batch["targets"][sar_l1] if sar_l1 >= 0 else None
        loss, per_modality, aux = train_step(images, masks, None if power is None else ms.Tensor(power))
        done = step + 1
        if not np.isfinite(float(loss)):
            raise FloatingPointError(f"loss became {float(loss)} at step {done}")
        if done % tcfg["log_interval"] == 0 or done == steps:
            elapsed = time.perf_counter() - tick
            per = dict(zip(names, (float(v) for v in per_modality.asnumpy())))
            rate = images_per_step * (done - (last or start)) / elapsed
            lr = schedule[step]
            logger.info("step %d/%d loss %.4f (%s, aux %.4f) lr %.2e %.2f img/s", done, steps, float(loss),
                        " ".join(f"{k} {v:.4f}" for k, v in per.items()), float(aux), lr, rate)
            log_file.write(json.dumps({"step": done, "loss": float(loss), "losses": per, "aux": float(aux),
                                       "lr": lr, "images_per_s": rate}) + "\n")
            log_file.flush()
            last, tick = done, time.perf_counter()
        if done % tcfg["save_interval"] == 0 or done == steps:
            path = save_checkpoint(work_dir / checkpoint_name(prefix, done), net, meta, optimizer, done)
            logger.info("saved %s", path)
    log_file.close()
    plot_losses(work_dir / "log.jsonl", work_dir / "loss.png")
    final = work_dir / checkpoint_name(prefix, steps)
    return final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = apply_overrides(load_config(args.config), args.cfg_options)
        cfg.setdefault("name", Path(args.config).stem)
        arch = build_arch(cfg)
    except (ConfigError, KeyError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # KeyError quotes its text
        print(f"train: error: {message}", file=sys.stderr)
        return 2
    if args.count_params:
        print(f"{cfg['name']}: {count_params(arch)}")
        return 0
    if args.device:
        cfg["train"]["device"] = args.device
    work_dir = Path(args.work_dir or cfg.get("work_dir") or f"work_dirs/pretrain/{cfg['name']}")
    setup_logging(work_dir)
    resolved = work_dir / "config.json"  # the resolved config, written whole or not at all
    resolved.with_suffix(".json.tmp").write_text(json.dumps(cfg, indent=1))
    resolved.with_suffix(".json.tmp").replace(resolved)
    try:
        final = train(cfg, work_dir, args.resume)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    logger.info("done: %s", final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
