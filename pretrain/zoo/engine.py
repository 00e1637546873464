"""The zoo training loop: plan, optimizer, EMA, checkpoints, resume, log.jsonl and loss plot.

A run: inspect the image folder (or generate the demo data), resolve the plan (steps, schedule,
BiT-HyperRule values), build the recipe's networks and the optimizer, load pretrained weights
or resume, then per step: batch ops, one compiled (graph mode) or eager forward/backward/update,
the EMA update, the recipe's ``after_step``; log every ``train.log_interval`` steps and
checkpoint every ``train.save_interval`` steps (and at the end).

Work dir: config.json (resolved), train.log, log.jsonl (LOG_KEYS), loss.png,
``<family>-<name>-step<N>.ckpt`` (weights of every recipe cell, ``ema.*`` shadows, optimizer
state, ``ringmoe_meta`` with the data position; the newest ``checkpoint.keep_last`` kept, written
atomically by pretrain/checkpoint.py), ``<family>-<name>-ema.ckpt`` (the EMA weights under the
model's own names) and any recipe exports ``<family>-<name>-<suffix>.ckpt``.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import time
from pathlib import Path

from pretrain.config import ConfigError
from pretrain.zoo import schedules

logger = logging.getLogger("pretrain.zoo")

OPTIMIZERS = ("adamw", "sgd", "rmsprop")
SCHEDULES = ("cosine", "bit_hyperrule", "multistep")
HYPERRULE = "hyperrule"  # a config value resolved from the data by BiT-HyperRule

LOG_KEYS = """\
log.jsonl: one JSON object per logged step (every train.log_interval steps and the last):
  step          int    optimizer updates done (1-based)
  epoch         float  step / steps per epoch (images // batch size)
  loss          float  the recipe's loss on that step's batch (forward before its update)
  losses        dict   the recipe's loss terms (supervised: {"ce": ...}; multigrain: {"ce": ..., "margin": ...})
  top1          float  supervised: fraction of the batch whose arg-max logit is the arg-max of
                       its (smoothed, mixed) target; multigrain: of the crops classified right
  beta, gem_p   float  multigrain: the margin's boundary and GeM's exponent after the update
  lr            float  learning rate of that step's update
  images_per_s  float  samples per second of training steps since the last record (forward,
                       backward, update, EMA; excludes data loading, logging and saving; the
                       first record of a process includes graph compilation)
  elapsed_s     float  wall seconds since this process started training
A resumed run first trims records after its checkpoint's step, so steps are unique and ascending."""


# ----------------------------------------------------------------------------- config


def _with_placeholders(value, placeholder):
    """A copy with every 'hyperrule' string replaced (to validate before the data is known)."""
    if isinstance(value, dict):
        return {k: _with_placeholders(v, placeholder) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_with_placeholders(v, placeholder) for v in value)
    return placeholder if value == HYPERRULE else value


def _section(cfg: dict, name: str) -> dict:
    value = cfg.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config section {name!r} must be a dict, got {type(value).__name__}")
    return value


def _positive_int(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be a positive int, got {value!r}")
    return value


def check_config(cfg: dict) -> None:
    """Everything that can be checked before MindSpore is imported; one-line ConfigErrors."""
    from pretrain.zoo.batch import MixOptions
    from pretrain.zoo.recipes import FACTORIES, RECIPES
    from pretrain.zoo.transforms import ViewMaker

    if cfg.get("recipe") not in RECIPES:
        raise ConfigError(f"recipe {cfg.get('recipe')!r} is not one of {sorted(RECIPES)}")
    model = _section(cfg, "model")
    if not isinstance(model.get("family"), str) or not isinstance(model.get("arch"), (str, dict)):
        raise ConfigError("model needs family (str) and arch (a variant name or an arch dict)")
    if model["family"] not in FACTORIES:
        raise ConfigError(f"model.family {model['family']!r} is not one of {sorted(FACTORIES)}")
    if model.get("num_classes") is not None:
        _positive_int(model["num_classes"], "model.num_classes")
    data, optim, sched, train = (_section(cfg, n) for n in ("data", "optim", "schedule", "train"))
    _positive_int(data.get("batch_size"), "data.batch_size")
    ViewMaker(_with_placeholders(data.get("views", []), 1))
    MixOptions.from_config(_with_placeholders(_section(cfg, "mix"), 0.0))
    if optim.get("type") not in OPTIMIZERS:
        raise ConfigError(f"optim.type {optim.get('type')!r} is not one of {OPTIMIZERS}")
    if not isinstance(optim.get("lr"), (int, float)) or optim["lr"] <= 0:
        raise ConfigError(f"optim.lr must be a positive number, got {optim.get('lr')!r}")
    if sched.get("type") not in SCHEDULES:
        raise ConfigError(f"schedule.type {sched.get('type')!r} is not one of {SCHEDULES}")
    if train.get("steps") is not None:
        _positive_int(train["steps"], "train.steps")
    elif sched["type"] in ("cosine", "multistep"):
        _positive_int(train.get("epochs"), "train.epochs (or train.steps)")
    if sched["type"] == "multistep":
        schedules.check_milestones(sched.get("milestones"))
    for key in ("log_interval", "save_interval"):
        _positive_int(train.get(key), f"train.{key}")
    if train.get("mode", "graph") not in ("graph", "pynative"):
        raise ConfigError(f"train.mode must be 'graph' or 'pynative', got {train.get('mode')!r}")
    decay = _section(cfg, "ema").get("decay") or 0.0
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"ema.decay must be in [0, 1) (0: no EMA), got {decay!r}")


# ----------------------------------------------------------------------------- plan


def _resolve_hyperrule(value, resize: int, crop: int, mixup: float, key: str = ""):
    """Replace 'hyperrule' values: view-op sizes (resize -> resize, any crop -> crop) and mix.mixup."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v == HYPERRULE and k == "size":
                out[k] = resize if value.get("type") == "resize" else crop
            elif v == HYPERRULE and k == "mixup":
                out[k] = mixup
            else:
                out[k] = _resolve_hyperrule(v, resize, crop, mixup, k)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve_hyperrule(v, resize, crop, mixup, key) for v in value)
    if value == HYPERRULE:
        raise ConfigError(f"'hyperrule' is not a value BiT-HyperRule sets (key {key!r}); it sets view sizes "
                          "and mix.mixup")
    return value


def plan_run(cfg: dict, dataset_size: int, image_hw: tuple[int, int]) -> tuple[dict, list[float], dict]:
    """(config with BiT-HyperRule values resolved, per-step learning rates, plan summary)."""
    resize, crop = schedules.hyperrule_resolution(*image_hw)
    cfg = _resolve_hyperrule(copy.deepcopy(cfg), resize, crop, schedules.hyperrule_mixup(dataset_size))
    batch = cfg["data"]["batch_size"]
    steps_per_epoch = max(1, dataset_size // batch)
    optim, sched, train = cfg["optim"], cfg["schedule"], cfg["train"]
    lr = optim["lr"] * (batch / optim["base_batch_size"] if optim.get("base_batch_size") else 1.0)
    if sched["type"] == "bit_hyperrule":
        supports = schedules.hyperrule_supports(dataset_size)
        if train.get("steps"):
            supports = schedules.scale_supports(supports, train["steps"])
        lrs = schedules.hyperrule_schedule(lr, supports)
        summary = {"schedule": "bit_hyperrule", "supports": list(supports)}
    elif sched["type"] == "multistep":
        steps = train.get("steps") or train["epochs"] * steps_per_epoch
        milestones = [round(epoch * steps_per_epoch) for epoch in sched["milestones"]]
        lrs = schedules.multistep_schedule(lr, steps, milestones, sched.get("gamma", 0.1))
        summary = {"schedule": "multistep", "milestone_steps": milestones}
    else:
        steps = train.get("steps") or train["epochs"] * steps_per_epoch
        warmup = sched.get("warmup_steps")
        if warmup is None:
            warmup = round(sched.get("warmup_epochs", 0) * steps_per_epoch)
        if warmup >= steps:
            raise ConfigError(f"warm-up ({warmup} steps) must be shorter than the run ({steps} steps)")
        lrs = schedules.cosine_schedule(lr, steps, warmup, sched.get("min_lr", 0.0))
        summary = {"schedule": "cosine", "warmup_steps": warmup}
    summary.update(steps=len(lrs), steps_per_epoch=steps_per_epoch, epochs=round(len(lrs) / steps_per_epoch, 3),
                   peak_lr=lr)
    return cfg, lrs, summary


# ----------------------------------------------------------------------------- optimizer, EMA


def build_optimizer(params: list, optim: dict, lrs: list[float]):
    """AdamW (decoupled decay), SGD with momentum (optionally Nesterov; L2 decay) or RMSProp (L2
    decay) over ``params``, stepping through ``lrs``. ``no_decay_1d`` (default on): no weight
    decay on 1-d parameters (biases, norm scales and shifts), as mindcv's filter_bias_and_bn."""
    from mindspore import nn

    wd = float(optim.get("weight_decay", 0.0))
    decay = wd  # ``weight_decay_end``: a per-step cosine from weight_decay to it (DINO's schedule)
    if optim.get("weight_decay_end") is not None:
        decay = step_table(schedules.cosine_schedule(wd, len(lrs), 0, float(optim["weight_decay_end"])))
    if optim.get("no_decay_1d", True) and (wd > 0 or decay is not wd):
        groups = [{"params": [p for p in params if len(p.shape) > 1], "weight_decay": decay},
                  {"params": [p for p in params if len(p.shape) <= 1], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": list(params), "weight_decay": decay}]
    kind = optim["type"]
    if kind == "adamw":
        beta1, beta2 = optim.get("betas", (0.9, 0.999))
        return nn.AdamWeightDecay(groups, learning_rate=lrs, beta1=beta1, beta2=beta2, eps=optim.get("eps", 1e-8))
    if kind == "sgd":
        return nn.Momentum(groups, learning_rate=lrs, momentum=optim.get("momentum", 0.9),
                           use_nesterov=bool(optim.get("nesterov", False)))
    return nn.RMSProp(groups, learning_rate=lrs, decay=optim.get("decay", 0.9), momentum=optim.get("momentum", 0.9),
                      epsilon=optim.get("eps", 1e-3))


def step_table(values: list[float]):
    """A MindSpore dynamic value (weight decay): ``cell(global_step)`` -> values[global_step]."""
    import mindspore as ms
    import numpy as np
    from mindspore import nn, ops

    class StepTable(nn.Cell):
        def __init__(self):
            super().__init__()
            self.values = ms.Tensor(np.asarray(values, np.float32))

        def construct(self, global_step):
            return ops.gather(self.values, ops.clamp(global_step, 0, len(values) - 1), 0)

    return StepTable()


def _ema_cell():
    import mindspore as ms
    from mindspore import nn, ops

    class WeightEMA(nn.Cell):
        """Shadow copies ``ema.<name>`` of every floating-point parameter of ``model`` (BN statistics
        included); ``ema(decay)`` sets shadow = decay * shadow + (1 - decay) * weight."""

        def __init__(self, model, decay: float, warmup_updates: int = 0):
            super().__init__(auto_prefix=False)  # keep the model's and the shadows' own names
            floats = (ms.float16, ms.float32, ms.float64, ms.bfloat16)
            weights = [p for p in model.get_parameters() if p.dtype in floats]
            self.weights = ms.ParameterTuple(weights)
            self.shadow = self.weights.clone(prefix="ema", init="same")
            self.decay, self.warmup_updates = decay, warmup_updates
            self.hyper_map = ops.HyperMap()

        def decay_at(self, updates: int) -> float:
            """The decay of update number ``updates`` (mindcv's warm-up: decay * (1 - exp(-n / w)))."""
            if not self.warmup_updates:
                return self.decay
            return self.decay * (1.0 - math.exp(-updates / self.warmup_updates))

        def construct(self, decay):
            def update(d, shadow, weight):
                return ops.assign(shadow, d * shadow + (1.0 - d) * weight)

            return self.hyper_map(ops.partial(update, decay), self.shadow, self.weights)

        def export(self) -> list[tuple[str, object]]:
            return [(w.name, s) for w, s in zip(self.weights, self.shadow)]

    return WeightEMA


def build_ema(model, decay: float, warmup_updates: int = 0):
    return _ema_cell()(model, decay, warmup_updates)


def train_state(cells: dict, ema=None):
    """One cell holding every checkpointed parameter under its own name (no prefixes added)."""
    from mindspore import nn

    state = nn.Cell(auto_prefix=False)
    for name, cell in cells.items():
        setattr(state, name, cell)
    if ema is not None:
        state.ema_shadow = ema
    names = [p.name for p in state.get_parameters()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"parameter names shared by two recipe cells (prefix one of them): {duplicates[:4]}")
    return state


def save_weights(path: Path, entries: list[tuple[str, object]]) -> Path:
    """Just weights, ``name -> tensor``, written atomically (temporary name, then rename)."""
    import mindspore as ms

    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.ckpt")
    try:
        ms.save_checkpoint([{"name": name, "data": data} for name, data in entries], str(tmp))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def load_pretrained(model, path: str | Path, new_keys: str | None = None) -> list[str]:
    """Fine-tuning start: every model parameter from ``path`` with its shape, except those matching
    ``new_keys`` (a regex, e.g. the classifier of another class count), which keep their
    initialisation. Any other missing or mis-shaped parameter is an error. Returns the new ones."""
    import mindspore as ms

    if not Path(path).is_file():
        raise FileNotFoundError(f"pretrained.path {path} does not exist")
    params = ms.load_checkpoint(str(path))
    pattern = re.compile(new_keys) if new_keys else None
    load, new, bad = {}, [], []
    for param in model.get_parameters():
        source = params.get(param.name)
        if source is not None and tuple(source.shape) == tuple(param.shape):
            load[param.name] = source
        elif pattern is not None and pattern.search(param.name):
            new.append(param.name)
        else:
            bad.append(param.name if source is None else f"{param.name} {tuple(source.shape)}!={tuple(param.shape)}")
    if bad:
        raise ValueError(f"{path}: {len(bad)} model parameters missing or mis-shaped and not matched by "
                         f"pretrained.new_keys: {bad[:4]}")
    not_loaded, _ = ms.load_param_into_net(model, load)
    if set(not_loaded) - set(new):
        raise RuntimeError(f"{path}: parameters not loaded: {sorted(set(not_loaded) - set(new))[:4]}")
    return new


def build_train_step(recipe, optimizer, graph: bool):
    """forward + backward + update; called as ``step(views, targets)`` with tuples of tensors
    (ms.mutable in graph mode); returns (loss, *aux)."""
    import mindspore as ms

    def forward(views, targets):
        loss, aux = recipe.loss(views, targets)
        return (loss,) + tuple(aux)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=True)
    # optional recipe hook: (grads, targets) -> grads between backward and update (DINO: clipping, freezing)
    transform = recipe.grad_transform(optimizer) if hasattr(recipe, "grad_transform") else None

    def train_step(views, targets):
        outputs, grads = grad_fn(views, targets)
        if transform is not None:
            grads = transform(grads, targets)
        optimizer(grads)
        return outputs

    return ms.jit(train_step) if graph else train_step


# ----------------------------------------------------------------------------- log and plot


def plot_log(log_path: Path, out: Path) -> None:
    """loss.png: the loss (and its terms) per step, top-1 on the batch, the learning rate."""
    from pretrain.train import read_log

    records = read_log(log_path)
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (ax, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax.plot(steps, [r["loss"] for r in records], "k-", label="loss")
    terms = records[0].get("losses", {})
    if len(terms) > 1:
        for name in terms:
            ax.plot(steps, [r["losses"][name] for r in records], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    if "top1" in records[0]:
        right.plot(steps, [r["top1"] for r in records], "o-", label="top-1 (batch)")
        right.set_ylabel("top-1 on the batch")
    right.set_xlabel("step")
    lr = right.twinx()
    lr.plot(steps, [r["lr"] for r in records], color="tab:red", label="lr")
    lr.set_ylabel("learning rate")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- training


def _data_position(cfg: dict, root: Path, dataset_size: int, step: int) -> dict:
    """What fixes the batches after ``step`` (saved with each checkpoint)."""
    from pretrain.zoo.data import STREAM

    return {"stream": STREAM, "seed": cfg["train"]["seed"], "batch_size": cfg["data"]["batch_size"],
            "root": str(root), "dataset_size": dataset_size, "views": cfg["data"]["views"],
            "mix": cfg.get("mix", {}), "next_index": step}


def _check_position(saved: dict, current: dict) -> None:
    for key in ("stream", "seed", "batch_size", "root", "dataset_size", "views", "mix"):
        if key in saved and saved[key] != current[key]:
            logger.warning("warning: resuming with data %s=%r but the checkpoint was trained with %r: the batches "
                           "after resume differ from an uninterrupted run", key, current[key], saved[key])
    if saved.get("next_index", current["next_index"]) != current["next_index"]:
        raise RuntimeError(f"checkpoint data position {saved['next_index']} != its step {current['next_index']}")


def _setup_data(cfg: dict, work_dir: Path):
    from pretrain.zoo.data import demo_root, inspect_folder

    dcfg = cfg["data"]
    root = dcfg.get("root")
    if not root:
        root = demo_root(work_dir, dcfg.get("demo", {}), cfg["train"]["seed"])
        logger.info("no data.root given: synthetic %s in %s", dcfg.get("demo", {}).get("dataset", "nwpu_resisc45"),
                    root)
    info = inspect_folder(root)
    logger.info("data: %d images, %d classes, first image %dx%d px (%s)", info.size, len(info.classes),
                *info.image_hw, info.root)
    return info


def input_normalisation(cfg: dict) -> dict | None:
    """The mean/std (0-1 scale) of the first view's ``normalize`` op: what the converter records
    for downstream preprocessors."""
    from pretrain.zoo.transforms import IMAGENET_MEAN, IMAGENET_STD

    views = (cfg.get("data") or {}).get("views") or []
    ops = [op for op in (views[0].get("pipeline") or []) if op.get("type") == "normalize"] if views else []
    if not ops:
        return None
    return {"mean": [float(v) for v in ops[-1].get("mean", IMAGENET_MEAN)],
            "std": [float(v) for v in ops[-1].get("std", IMAGENET_STD)]}


class Checkpointer:
    """Saves ``<prefix>-step<N>.ckpt`` (every recipe cell, EMA shadows, optimizer state, meta with
    the data position), then the EMA and recipe exports beside it."""

    def __init__(self, cfg: dict, info, work_dir: Path, state, optimizer, recipe, ema, num_classes: int):
        self.cfg, self.info, self.work_dir = cfg, info, work_dir
        self.state, self.optimizer, self.recipe, self.ema = state, optimizer, recipe, ema
        self.prefix = f"{cfg['model']['family']}-{cfg.get('name', 'model')}"
        self.keep_last = (cfg.get("checkpoint") or {}).get("keep_last", 3)
        self.meta = {"recipe": cfg["recipe"], "model": dict(cfg["model"], num_classes=num_classes),
                     "config": cfg.get("name"), "classes": list(info.classes), "input": input_normalisation(cfg)}

    def path(self, step: int) -> Path:
        from pretrain.checkpoint import checkpoint_name

        return self.work_dir / checkpoint_name(self.prefix, step)

    def position(self, step: int) -> dict:
        return _data_position(self.cfg, self.info.root, self.info.size, step)

    def save(self, step: int) -> None:
        from pretrain.checkpoint import save_checkpoint

        path = save_checkpoint(self.path(step), self.state, dict(self.meta, data=self.position(step)),
                               self.optimizer, step, self.keep_last)
        exports = dict(self.recipe.exports(), **({"ema": self.ema.export()} if self.ema is not None else {}))
        for suffix, entries in exports.items():
            save_weights(self.work_dir / f"{self.prefix}-{suffix}.ckpt", entries)
        logger.info("saved %s%s", path.name, f" (+ {', '.join(exports)})" if exports else "")

    def resume(self, resume: str) -> int:
        """Load ``resume`` (a path, or 'auto': the newest in the work dir); the step to continue from."""
        from pretrain.checkpoint import latest_checkpoint, resume_state

        path = latest_checkpoint(self.work_dir) if resume == "auto" else Path(resume)
        if path is None:
            raise ConfigError(f"--resume: no checkpoint in {self.work_dir}")
        start, saved = resume_state(path, self.state, self.optimizer)
        _check_position(saved.get("data", {}), self.position(start))
        logger.info("resumed from %s at step %d", path, start)
        return start


def _build(cfg: dict, run, lrs: list[float]):
    """(recipe, optimizer, EMA or None, the checkpointed state cell), weights initialised or pretrained."""
    import mindspore as ms

    from pretrain.zoo.recipes import get_recipe

    ms.set_seed(run.seed)  # the same initial weights in every run of a config
    recipe = get_recipe(cfg["recipe"])(cfg, run)
    cells = recipe.build()
    model = cells["model"]
    arch = cfg["model"]["arch"]
    logger.info("model %s/%s: %d parameters (%d trainable)", cfg["model"]["family"],
                arch if isinstance(arch, str) else "custom", sum(p.size for p in model.get_parameters()),
                sum(p.size for p in recipe.trainable_params()))
    pretrained = cfg.get("pretrained") or {}
    if pretrained.get("path"):
        new = load_pretrained(model, pretrained["path"], pretrained.get("new_keys"))
        logger.info("pretrained weights from %s (new: %s)", pretrained["path"], new or "none")
    optimizer = build_optimizer(recipe.trainable_params(), cfg["optim"], lrs)
    ema_cfg = cfg.get("ema") or {}
    ema = build_ema(model, ema_cfg["decay"], ema_cfg.get("warmup_updates", 0)) if ema_cfg.get("decay") else None
    return recipe, optimizer, ema, train_state(cells, ema)


def train(cfg: dict, work_dir: Path, resume: str | None = None) -> Path:
    """Train as configured; returns the final checkpoint's path."""
    import mindspore as ms
    import numpy as np

    from pretrain.checkpoint import write_text_atomic
    from pretrain.train import set_device, trim_log
    from pretrain.zoo.data import SampleViews, batch_rng, batches
    from pretrain.zoo.recipes import RunInfo

    tcfg, seed = cfg["train"], cfg["train"]["seed"]
    work_dir.mkdir(parents=True, exist_ok=True)
    graph = tcfg.get("mode", "graph") == "graph"
    # set_device first: on CPU it caps oneDNN at AVX2 before any kernel runs (its docstring says why)
    set_device(tcfg.get("device", "CPU"))
    ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
    info = _setup_data(cfg, work_dir)
    cfg, lrs, summary = plan_run(cfg, info.size, info.image_hw)
    write_text_atomic(work_dir / "config.json", json.dumps(cfg, indent=1))  # with BiT-HyperRule values resolved
    logger.info("plan: %s", ", ".join(f"{k}={v}" for k, v in summary.items()))
    steps, batch_size = len(lrs), cfg["data"]["batch_size"]
    num_classes = cfg["model"].get("num_classes") or len(info.classes)
    if num_classes < len(info.classes):
        raise ConfigError(f"model.num_classes={num_classes} but the data has {len(info.classes)} classes")
    run = RunInfo(num_classes, info.classes, info.size, info.image_hw, batch_size, steps,
                  summary["steps_per_epoch"], seed)
    recipe, optimizer, ema, state = _build(cfg, run, lrs)
    checkpoints = Checkpointer(cfg, info, work_dir, state, optimizer, recipe, ema, num_classes)
    start = checkpoints.resume(resume) if resume else 0
    if start > steps:
        raise ConfigError(f"the checkpoint is at step {start}, past this run's {steps} steps")

    sample = SampleViews(recipe.make_views, recipe.num_views, seed)
    stream = batches(info, sample, batch_size, seed, start, steps - start, cfg["data"].get("num_workers", 2),
                     cfg["data"].get("python_multiprocessing", False))
    train_step = build_train_step(recipe, optimizer, graph)
    recipe.cells["model"].set_train(True)
    log_path = work_dir / "log.jsonl"
    trim_log(log_path, start)  # a resumed run drops what a killed run logged after its checkpoint
    begin, step_time, step_count = time.perf_counter(), 0.0, 0
    try:
        with log_path.open("a") as log_file:
            for step in range(start, steps):
                batch = next(stream)
                views, targets = recipe.prepare_batch(batch.views, batch.labels, batch_rng(seed, step))
                tick = time.perf_counter()
                # mutable: in graph mode a tuple input is otherwise a constant, recompiled every step
                outputs = train_step(ms.mutable(tuple(ms.Tensor(v) for v in views)),
                                     ms.mutable(tuple(ms.Tensor(t) for t in targets)))
                loss, aux = float(outputs[0]), tuple(outputs[1:])  # float() waits for the step
                done = step + 1
                if ema is not None:
                    ema(ms.Tensor(ema.decay_at(done), ms.float32))  # a Cell: compiled in graph mode
                recipe.after_step(done, aux)
                step_time, step_count = step_time + time.perf_counter() - tick, step_count + 1
                if not np.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {done}")
                if done % tcfg["log_interval"] == 0 or done == steps:
                    record = {"step": done, "epoch": round(done / run.steps_per_epoch, 4), "loss": loss,
                              **recipe.metrics(loss, [a.asnumpy() for a in aux], batch.labels, targets),
                              "lr": lrs[step], "images_per_s": batch_size * step_count / step_time,
                              "elapsed_s": round(time.perf_counter() - begin, 3)}
                    _write_record(log_file, record, steps)
                    step_time, step_count = 0.0, 0
                if done % tcfg["save_interval"] == 0 or done == steps:
                    checkpoints.save(done)
    finally:
        stream.close()  # stops the dataset workers, also when a step fails
    plot_log(log_path, work_dir / "loss.png")
    return checkpoints.path(steps)


def _write_record(log_file, record: dict, steps: int) -> None:
    logger.info("step %d/%d loss %.4f%s lr %.3e %.1f img/s", record["step"], steps, record["loss"],
                f" top1 {record['top1']:.3f}" if "top1" in record else "", record["lr"], record["images_per_s"])
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()
