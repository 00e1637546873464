#!/usr/bin/env python
"""Fine-tune and evaluate a RingMoE backbone on one downstream task; append one results row.

One run: load the task's mmengine config, fill the backbone's architecture and the input
normalisation from the converted checkpoint's meta, train with the mmengine Runner, validate
at the end, write <work_dir>/coverage.json (every model parameter loaded, or new with a
reason; every checkpoint tensor used or dropped with a reason), and append one row to the
results table (checkpoint sha256, config hash, seed, metrics, package versions, wall time).

Examples:
  # demo: synthetic Potsdam is generated next to the work dir, 50 iterations on CPU
  python benchmarks/run.py --task segmentation --checkpoint ringmoe_tiny.pth

  # the same model from random weights (the no-pretraining baseline)
  python benchmarks/run.py --task segmentation --checkpoint none

  # real data (mmseg's converted Potsdam layout), a longer schedule, another seed
  python benchmarks/run.py --task segmentation --checkpoint giant.pth --data-root data/potsdam \\
      --iters 80000 --cfg-options train_dataloader.batch_size=8 --seed 1

  # continue an interrupted run from its work dir (a finished identical run is skipped)
  python benchmarks/run.py --task segmentation --checkpoint ringmoe_tiny.pth --resume

  # every task, three seeds, one after another (work dirs work_dirs/<task>/<config>/<ckpt>/seed<n>)
  python benchmarks/run.py --task all --seeds 0 1 2 --checkpoint ringmoe_tiny.pth --resume

  # one run on 8 GPUs (OpenMMLab's launchers; torchrun also works on CPU, over gloo)
  torchrun --nproc_per_node 8 benchmarks/run.py --task segmentation --checkpoint giant.pth --launcher pytorch

Architecture fields that the config leaves out (embed_dim, depths, num_heads, window_size,
patch_size, mlp_ratio, num_experts, modalities) come from the checkpoint's meta; fields the
config (or --cfg-options) sets are kept, and a checkpoint that disagrees is a coverage error.
The data preprocessor's mean/std become the chosen modality's meta mean/std x 255, unless
--cfg-options sets model.data_preprocessor.mean/std.

Outputs: <work_dir>/<config>.py (the resolved config), logs and checkpoints of the Runner,
<work_dir>/coverage.json, and one row in --results (schema: python -m benchmarks.results schema).
The row's run_id is a hash of the task, the config hash, the checkpoint's sha256 and the seed;
it is the resume key. benchmarks/report.py turns the table into tables and plots;
benchmarks/sweep.py runs sweeps as cluster jobs.

Exit codes: 0 done (or skipped under --resume); 2 bad input (unknown task, missing config,
checkpoint or data root, a file that is not a converted checkpoint, a checkpoint that does
not fit the model): one line on stderr, no results row.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a plain clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import BadInput, Parser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARCH_FIELDS = ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio", "num_experts")
BASE_PACKAGES = ("torch", "mmengine", "mmcv", "numpy")
RANDOM_INIT = "new: random initialisation (--checkpoint none, the baseline without pretraining)"


# ---- tasks (benchmarks/tasks/<name>.py) ---------------------------------------------------
def _attr_path(root, dotted: str):
    """Follow a dotted path through attributes or config keys: ``detector.backbone``."""
    for name in dotted.split("."):
        root = root[name] if isinstance(root, dict) else getattr(root, name)
    return root


# ---- command line --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="run", doc=__doc__)
    from benchmarks.tasks import task_names  # file names only: nothing heavy is imported

    parser.add_argument("--task", required=True, nargs="+", choices=task_names() + ["all"], metavar="TASK",
                        help=f"downstream task(s): {', '.join(task_names())}, or all. Several tasks (or "
                        "--seeds with several seeds) run one after another, each in its own process and "
                        "work dir (benchmarks/sweep.py runs the same sweep on a cluster)")
    parser.add_argument("--config", help="mmengine config (default: the task's, e.g. "
                        "configs/benchmarks/segmentation/upernet_ringmoe_tiny_potsdam.py)")
    parser.add_argument("--checkpoint", help="converted RingMoE .pth (converters/ms2torch.py), or 'none' "
                        "for random weights (default: the config's backbone init_cfg.checkpoint)")
    parser.add_argument("--data-root", help="dataset root in the framework's layout (default: generate "
                        "small synthetic data in <work_dir>/../data)")
    parser.add_argument("--work-dir", help="logs, checkpoints, coverage.json (default: "
                        "work_dirs/<task>/<config stem>)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config entries, mmengine style: a.b=1 c=[1,2] d=\"(1,2)\"")
    parser.add_argument("--iters", type=int, metavar="N",
                        help="train for N iterations: the config's max_iters, and every scheduler end, "
                        "validation and checkpoint interval equal to it, become N; milestones scale with it "
                        "(setting train_cfg.max_iters alone would leave the lr schedule at the demo length)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="random seed (default: the config's randomness.seed, else 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="N", help="several seeds: one run each")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                        help="distributed launcher, as in OpenMMLab's tools/train.py: 'pytorch' under "
                        "torchrun, 'slurm' under srun; only rank 0 writes the results row")
    parser.add_argument("--results", default="results/results.csv", help="results table (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the "
                        "work dir; skip the run if the results already hold its run_id")
    return parser.parse_args(argv)


def _cfg_options(items: list[str]) -> dict:
    from mmengine.config import DictAction

    for item in items:
        if not item.partition("=")[0] or "=" not in item:
            raise BadInput(f"--cfg-options expects KEY=VALUE, got {item!r}")
    parsed = argparse.Namespace()  # parsed here, not by argparse, so that --help imports nothing heavy
    DictAction(option_strings=[], dest="options")(None, parsed, items)
    return parsed.options or {}


# ---- config --------------------------------------------------------------------------------
def set_iterations(cfg, iters: int) -> None:
    """Stretch (or shrink) an iteration-based schedule to ``iters`` iterations.

    What equals the config's ``max_iters`` (scheduler ends, the validation and checkpoint
    intervals) becomes ``iters``; scheduler milestones scale in proportion; shorter lengths
    such as a warm-up are kept, capped at ``iters``. A scheduler left with nothing to do
    (begin >= end, a warm-up that fills the whole run) is removed.
    """
    loop = cfg.get("train_cfg") or {}
    if loop.get("type") != "IterBasedTrainLoop" or "max_iters" not in loop:
        raise BadInput("--iters needs an IterBasedTrainLoop config with max_iters; set the schedule "
                       "with --cfg-options instead")
    if iters < 1:
        raise BadInput(f"--iters must be positive, got {iters}")
    old = loop.max_iters

    def fit(value: int) -> int:
        return iters if value >= old else min(value, iters)

    loop.max_iters = iters
    if "val_interval" in loop:
        loop.val_interval = fit(loop.val_interval)
    schedulers = cfg.get("param_scheduler") or []
    kept = []
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        if not scheduler.get("by_epoch", True):  # epoch-based ones are not measured in iterations
            for key in ("begin", "end"):
                if key in scheduler:
                    scheduler[key] = fit(scheduler[key])
            if "milestones" in scheduler:
                scheduler.milestones = [max(1, round(m * iters / old)) for m in scheduler.milestones]
            if scheduler.get("begin", 0) >= scheduler.get("end", iters):
                continue
        kept.append(scheduler)
    if schedulers:
        cfg.param_scheduler = kept
    checkpoint = (cfg.get("default_hooks") or {}).get("checkpoint")
    if checkpoint and not checkpoint.get("by_epoch", True) and "interval" in checkpoint:
        checkpoint.interval = fit(checkpoint.interval)


def _fill_from_meta(cfg, backbone, meta: dict | None, options: dict) -> None:
    """Architecture and modality list from the checkpoint meta, unless the config sets them."""
    if meta is not None:
        arch = meta["arch"]
        for name in ARCH_FIELDS:
            backbone.setdefault(name, arch[name])
        backbone.setdefault("modalities", {m["name"]: m["channels"] for m in meta["modalities"]})
    modality = backbone.get("modality", "optical")
    known = backbone.get("modalities")
    if known is not None and modality not in known:
        raise BadInput(f"modality {modality!r} is not in the checkpoint's modalities {list(known)}")
    if meta is not None and not any(k.startswith("model.data_preprocessor.") and k.split(".")[-1] in
                                    ("mean", "std") for k in options):
        info = next(m for m in meta["modalities"] if m["name"] == modality)
        for preprocessor in (cfg.model.data_preprocessor, cfg.get("data_preprocessor")):
            if preprocessor is not None:  # the top-level copy too, so the dumped config reads true
                preprocessor.mean = [round(v * 255, 4) for v in info["mean"]]
                preprocessor.std = [round(v * 255, 4) for v in info["std"]]


CONVERTED_NECK = "ConvertedNeck"  # config sentinel: the neck of the checkpoint's own model


def _fill_from_family(cfg, spec, meta: dict, options: dict):
    """A single-model checkpoint (ms2torch --family): its backbone type and arguments, under the
    config's own keys, and its input normalisation. Returns the new backbone config."""
    from benchmarks.models.family_loading import backbone_config

    parent, _, name = spec.backbone.rpartition(".")
    holder = _attr_path(cfg.model, parent) if parent else cfg.model
    try:
        holder[name] = backbone_config(holder[name].to_dict(), meta, cfg.get("default_scope"))
    except ValueError as err:
        raise BadInput(str(err)) from None
    neck = holder.get("neck")  # beside the backbone: model.neck, or model.image_encoder.neck
    if neck is not None and neck.get("type") == CONVERTED_NECK:  # the pretraining model's pooling
        holder.neck = meta["target_config"].get("neck")
        # initialise_weights loads it from the checkpoint too (a learned GeM p, for one)
        meta["neck_from_checkpoint"] = holder.neck is not None
    if not any(k.startswith("model.data_preprocessor.") and k.split(".")[-1] in ("mean", "std") for k in options):
        for preprocessor in (cfg.model.get("data_preprocessor"), cfg.get("data_preprocessor")):
            if preprocessor is not None:
                preprocessor.mean = [round(v * 255, 4) for v in meta["input"]["mean"]]
                preprocessor.std = [round(v * 255, 4) for v in meta["input"]["std"]]
    return holder[name]


def _backbone_widths(backbone, default_scope: str | None = None) -> list[int]:
    """Channels of each backbone output: from the arguments for RingMoE, else by a forward pass of
    the built backbone on a small zero image (any OpenMMLab backbone; its own img_size if it has one)."""
    if backbone.get("type") != "RingMoE":
        return _probe_widths(backbone, default_scope)
    from benchmarks.models.ringmoe import RingMoE

    defaults = {k: p.default for k, p in inspect.signature(RingMoE).parameters.items()}
    embed = backbone.get("embed_dim", defaults["embed_dim"])
    return [embed * 2**i for i in backbone.get("out_indices", defaults["out_indices"])]


def _probe_widths(backbone, default_scope: str | None) -> list[int]:
    import torch
    from mmengine.registry import MODELS, DefaultScope

    probe_cfg = {**backbone.to_dict(), "init_cfg": None}
    size = backbone.get("img_size", 64)
    side = size if isinstance(size, int) else size[0]
    with DefaultScope.overwrite_default_scope(default_scope):
        module = MODELS.build(probe_cfg)
    module.eval()  # not chained: some backbones' train() (mmpretrain's ResNet) returns None
    with torch.no_grad():
        outputs = module(torch.zeros(1, backbone.get("in_channels", 3), side, side))
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [int(o.shape[1]) for o in outputs]


def set_data_root(cfg, root: Path) -> None:
    """Point every dataloader of a config at a dataset root."""
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(name)
        if loader and "dataset" in loader:
            loader.dataset.data_root = str(root)
    cfg.data_root = str(root)


# ---- coverage and metrics (a Runner hook) --------------------------------------------------
def _backbone_report(backbone) -> dict:
    """The LoadReport that the backbone's init_weights kept when it loaded the checkpoint."""
    from benchmarks.models.loading import CoverageError

    if backbone.load_report is None:
        raise CoverageError("the backbone has a checkpoint but init_weights did not load it")
    return backbone.load_report.to_dict()


def coverage(model, checkpoint: str | None, backbone_path: str = "backbone", loaded: dict | None = None) -> dict:
    """Every state-dict entry of the model mapped or new with a reason, plus the dropped tensors.

    ``loaded``: the report of a single-model checkpoint loaded into the backbone (and the neck),
    keyed by model paths; without it, the backbone's own load report (RingMoE).
    """
    backbone = _attr_path(model, backbone_path)
    prefix = f"{backbone_path}."
    if checkpoint is None:
        report = {"mapped": {}, "dropped": {}, "new": {prefix + k: RANDOM_INIT for k in backbone.state_dict()}}
    elif loaded is not None:
        report = loaded
    else:
        own = _backbone_report(backbone)
        report = {"mapped": {prefix + k: v for k, v in own["mapped"].items()}, "dropped": own["dropped"],
                  "new": {prefix + k: v for k, v in own["new"].items()}}
    mapped, new = dict(report["mapped"]), dict(report["new"])
    for key in model.state_dict():
        if key not in mapped and key not in new and not key.startswith(prefix):
            new[key] = f"downstream head ({key.split('.')[0]}), randomly initialised"
    unexplained = sorted(k for k in model.state_dict() if k not in mapped and k not in new)
    summary = {"backbone_mapped": len(mapped), "backbone_new": sum(k.startswith(prefix) for k in new),
               "checkpoint_dropped": len(report["dropped"]),
               "head_new": sum(not k.startswith(prefix) for k in new), "unexplained": len(unexplained)}
    return {"checkpoint": checkpoint, "summary": summary, "mapped": mapped, "dropped": report["dropped"],
            "new": new, "unexplained": unexplained}


def initialise_weights(runner, work_dir: Path, checkpoint: str | None, meta: dict | None,
                       backbone_path: str) -> dict:
    """Initialise the model's weights now, load the checkpoint with its coverage check and write
    coverage.json, before any training or resume; Runner.train must then not initialise again.

    A RingMoE backbone loads in its own init_weights (its Pretrained init_cfg); a single-model
    checkpoint's backbone is loaded here, after the backbone's own initialisation, so that no
    init_weights (e.g. mmpretrain ViT's position-embedding init) can overwrite loaded weights.
    """
    from mmengine.model import is_model_wrapper

    from benchmarks.models.family_loading import is_family_meta, load_parts, read_family_checkpoint
    from benchmarks.models.loading import CoverageError

    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    model.init_weights()
    # Runner.train() calls init_weights() again (mmengine then warns "called more than once");
    # what was just loaded and checked is final, so that call has nothing to do.
    model.init_weights = lambda: None
    loaded = None
    if checkpoint is not None and is_family_meta(meta):
        # The backbone, and the neck when the config takes the checkpoint's own (e.g. a learned GeM p).
        parts = {backbone_path: "backbone"}
        if meta.get("neck_from_checkpoint"):
            parent = backbone_path.rpartition(".")[0]
            parts[f"{parent}.neck" if parent else "neck"] = "neck"
        loaded = load_parts(model, read_family_checkpoint(checkpoint)[0], meta, parts).to_dict()
    report = coverage(model, checkpoint, backbone_path, loaded)
    if runner.rank == 0:  # one writer, even with many processes
        from converters.util import atomic_write

        with atomic_write(work_dir / "coverage.json", "w") as f:
            json.dump(report, f, indent=1)
    s = report["summary"]
    line = (f"coverage: backbone {s['backbone_mapped']} loaded + {s['backbone_new']} new, "
            f"{s['checkpoint_dropped']} checkpoint tensors dropped with reasons, heads "
            f"{s['head_new']} new, {s['unexplained']} unexplained -> {work_dir / 'coverage.json'}")
    runner.logger.info(line)
    print(line, flush=True)
    if s["unexplained"]:
        raise CoverageError(f"{s['unexplained']} model entries unexplained: {', '.join(report['unexplained'][:4])}")
    return report


def _recorder():
    """A Runner hook that keeps the last validation metrics."""
    from mmengine.hooks import Hook

    class Recorder(Hook):
        priority = "VERY_LOW"

        def __init__(self):
            self.metrics: dict | None = None

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.metrics = dict(metrics or {})

    return Recorder()


def checkpoint_sha256(path: Path) -> str:
    """sha256 of a checkpoint file; for a directory of shards, of its files' names and hashes."""
    from benchmarks import results

    if path.is_file():
        return results.sha256_file(path)
    listing = "".join(f"{p.name} {results.sha256_file(p)}\n" for p in sorted(path.iterdir()) if p.is_file())
    return hashlib.sha256(listing.encode()).hexdigest()


def _claim_work_dir(work_dir: Path, identity: dict, resume: bool) -> None:
    """Record whose run a work dir holds; refuse to resume another one's Runner checkpoints.

    mmengine's resume loads the latest checkpoint in the work dir whatever it came from, so
    resuming with another pretrained checkpoint (or task, or seed) would silently continue the
    other run's weights. A longer schedule for the same weights and seed may resume.
    """
    from converters.util import atomic_write

    record = work_dir / "run_identity.json"
    if resume and record.is_file():
        held = json.loads(record.read_text())
        if held != identity:
            changed = ", ".join(k for k in identity if held.get(k) != identity[k])
            raise BadInput(f"--resume: {work_dir} holds a run with another {changed}; use another "
                           "--work-dir (or drop --resume to start over there)")
    work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(record, "w") as f:
        json.dump(identity, f)


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value  # strict JSON has no NaN


# ---- the run -------------------------------------------------------------------------------
def _setup_launcher(cfg, launcher: str) -> None:
    """Distributed training as OpenMMLab's tools/train.py does it, plus CPU-only machines.

    mmengine joins the processes itself on GPUs. Its 'pytorch' path calls
    torch.cuda.set_device and gives DDP a device id, which a CPU build cannot do, so without
    CUDA the process group is joined here over gloo (mmengine then skips its own init) and
    DDP gets no device ids.
    """
    cfg.launcher = launcher
    if launcher == "none":
        return
    import torch

    if torch.cuda.is_available():
        return
    if launcher != "pytorch":
        raise BadInput(f"--launcher {launcher} needs GPUs; on a CPU machine use --launcher pytorch under torchrun")
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                 find_unused_parameters=cfg.get("find_unused_parameters", False))


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    from benchmarks.tasks import get_task

    spec = get_task(args.task)
    config = Path(args.config) if args.config else REPO / spec.config
    if not config.is_file():
        raise BadInput(f"config {config} does not exist")
    if args.checkpoint and args.checkpoint != "none" and not Path(args.checkpoint).exists():
        raise BadInput(f"checkpoint {args.checkpoint} does not exist")
    if args.data_root and not Path(args.data_root).is_dir():
        raise BadInput(f"data root {args.data_root} is not a directory")
    options = _cfg_options(args.cfg_options)

    import benchmarks  # noqa: F401  compat shims before any OpenMMLab import
    from mmengine.config import Config

    from benchmarks import results
    from benchmarks.models.family_loading import CONVERTED_BACKBONE, family_name, is_family_meta, read_family_meta
    from benchmarks.models.loading import CoverageError, read_converted_meta

    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(options)
    if args.iters is not None:
        set_iterations(cfg, args.iters)
    backbone_cfg = _attr_path(cfg.model, spec.backbone)
    init_cfg = backbone_cfg.get("init_cfg") or {}
    checkpoint = args.checkpoint or init_cfg.get("checkpoint")
    if checkpoint is None:
        raise BadInput("no checkpoint: pass --checkpoint PATH (a converted .pth) or --checkpoint none")
    if checkpoint == "none":
        checkpoint, meta = None, None
        if backbone_cfg.get("type") == CONVERTED_BACKBONE:
            raise BadInput("this config takes its backbone from the checkpoint: --checkpoint none has none")
        backbone_cfg.init_cfg = None
    else:
        try:
            meta = read_family_meta(checkpoint) or read_converted_meta(checkpoint)
        except CoverageError as err:
            raise BadInput(str(err)) from None
        except Exception as err:  # not a torch file at all (pickle, zip or EOF errors)
            raise BadInput(f"{checkpoint} is not a readable converted checkpoint "
                           f"({type(err).__name__})") from None
    if is_family_meta(meta):
        backbone_cfg = _fill_from_family(cfg, spec, meta, options)
    else:
        if checkpoint is not None:
            backbone_cfg.init_cfg = dict(type="Pretrained", checkpoint=str(Path(checkpoint).resolve()))
        _fill_from_meta(cfg, backbone_cfg, meta, options)
    spec.fit_heads(cfg, _backbone_widths(backbone_cfg, cfg.get("default_scope")))

    work_dir = Path(args.work_dir or cfg.get("work_dir") or Path("work_dirs", args.task, config.stem))
    cfg.work_dir = str(work_dir)
    seed = args.seed if args.seed is not None else (cfg.get("randomness") or {}).get("seed", 0)
    cfg.randomness = dict(cfg.get("randomness") or {}, seed=seed)
    if args.data_root:
        data_root = Path(args.data_root)
    elif spec.demo_data is not None:
        try:
            data_root = spec.demo_data(work_dir.resolve().parent / "data", cfg)
        except ValueError as err:
            raise BadInput(str(err)) from None
    else:
        raise BadInput(f"task {args.task} has no demo data: pass --data-root")
    set_data_root(cfg, data_root.resolve())
    if spec.prepare is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            spec.prepare(cfg, data_root.resolve(), work_dir)
        except (ValueError, OSError) as err:  # data that does not have the task's layout
            raise BadInput(f"{data_root}: {err}") from None

    # Identity of the run: the resolved config (before the resume switch), weights and seed.
    cfg_hash = results.config_hash(cfg.pretty_text)
    ckpt_sha = checkpoint_sha256(Path(checkpoint)) if checkpoint else ""
    run_id = hashlib.sha256(f"{args.task}|{cfg_hash}|{ckpt_sha}|{seed}".encode()).hexdigest()[:16]
    if args.resume and results.has_row(args.results, run_id):
        print(f"run: {run_id} is already in {args.results}: skipped (finished identical run)")
        return 0
    cfg.resume = args.resume
    _claim_work_dir(work_dir, {"task": args.task, "checkpoint_sha256": ckpt_sha, "seed": seed}, args.resume)

    _setup_launcher(cfg, args.launcher)
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    try:
        initialise_weights(runner, work_dir, checkpoint, meta, spec.backbone)
    except CoverageError as err:
        raise BadInput(str(err)) from None
    recorder = _recorder()
    runner.register_hook(recorder)
    runner.train()
    metrics = recorder.metrics if recorder.metrics is not None else runner.val()
    from mmengine.dist import get_rank

    if get_rank() != 0:
        return 0  # one row per run: rank 0 writes it
    primary = cfg.get("primary_metric", spec.metric)
    if primary not in metrics:
        raise RuntimeError(f"the evaluator reported {sorted(metrics)}, not {primary}")

    # A config may name its backbone (a CNN baseline is no RingMoE); else the checkpoint's arch.
    if is_family_meta(meta):  # a converted model names itself (a config's name is for --checkpoint none)
        name = family_name(meta)
    elif cfg.get("backbone_name"):
        name = cfg.backbone_name
    else:
        name = f"ringmoe-{meta['pretrain']['config']}" if meta and meta.get("pretrain") else "ringmoe"
    reduction = backbone_cfg.get("moe_reduction")
    row = {
        "run_id": run_id,
        "schema_version": results.SCHEMA_VERSION,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": args.task,
        "dataset": cfg.get("dataset_name", spec.dataset),
        "split": cfg.get("split", "val"),
        "train_ratio": cfg.get("train_ratio", ""),
        "protocol": cfg.get("protocol", "finetune"),
        "backbone": name + ("" if checkpoint else "-random-init"),  # the reduction has its own column
        "modality": backbone_cfg.get("modality", "optical"),
        "expert_reduction": reduction or "",
        "checkpoint": str(checkpoint or ""),
        "checkpoint_sha256": ckpt_sha,
        "config_hash": cfg_hash,
        "seed": seed,
        "metrics_json": {k: _number(v) for k, v in metrics.items()},
        "primary_metric": primary,
        "primary_value": float(metrics[primary]),
        "versions_json": results.package_versions(BASE_PACKAGES + (spec.package,)),
        "host": socket.gethostname(),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "work_dir": str(work_dir),
        "status": "ok",
    }
    results.append_row(args.results, row)
    print(f"run: {primary} = {row['primary_value']:.2f} in {row['wall_time_s']:.0f} s; row {run_id} "
          f"appended to {args.results}")
    print(results.format_table(results.read_rows(args.results)))
    return 0


def _sweep(args: argparse.Namespace, tasks: list[str], seeds: list[int]) -> int:
    """Several tasks or seeds: one run.py process per cell, one after another (benchmarks/sweep.py)."""
    from benchmarks import sweep

    if args.launcher != "none":
        raise BadInput("--launcher runs one task and seed; start a sweep's cells separately "
                       "(benchmarks/sweep.py slurm writes a job array that does)")
    if len(tasks) > 1 and (args.config or args.data_root):
        raise BadInput("--config and --data-root name one task's files; for several tasks use "
                       "benchmarks/sweep.py plan --config TASK=CONFIG --data-root TASK=DIR")
    if args.checkpoint is None:
        raise BadInput("several runs need --checkpoint PATH (or none)")
    if args.checkpoint != "none" and not Path(args.checkpoint).exists():
        raise BadInput(f"checkpoint {args.checkpoint} does not exist")
    if args.data_root and not Path(args.data_root).is_dir():
        raise BadInput(f"data root {args.data_root} is not a directory")
    cells = sweep.plan(tasks, seeds, [args.checkpoint], results=args.results, work_root=args.work_dir or "work_dirs",
                       configs={tasks[0]: args.config} if args.config else None,
                       data_roots={tasks[0]: args.data_root} if args.data_root else None,
                       iters=args.iters, cfg_options=args.cfg_options, resume=args.resume)
    return sweep.run_local(cells)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from benchmarks.sweep import expand_tasks

        tasks = expand_tasks(args.task)
        seeds = args.seeds or [args.seed]
        if len(tasks) > 1 or len(seeds) > 1:
            return _sweep(args, tasks, seeds)
        args.task, args.seed = tasks[0], seeds[0]
        return _run(args)
    except BadInput as err:
        print(f"run: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
