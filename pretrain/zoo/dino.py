"""The DINO recipe: self-distillation with no labels (Caron et al. 2021), after facebookresearch/dino
``main_dino.py``, on the zoo engine.

The networks are ``pretrain/models/dino.py``'s ``DINO`` cell (student, EMA teacher, loss centre,
under ``student.*``, ``teacher.*``, ``dino_loss.center``), built by this recipe as the engine's
``'model'``: the step checkpoints hold all three, so a resumed run continues the teacher and the
centre, and ``converters/rules/zoo_dino.py`` converts the teacher backbone straight from them
(``ms2torch.py STEP.ckpt -o OUT.pth --family dino:<variant>``). Each save also writes
``<family>-<name>-teacher.ckpt``: the teacher backbone alone under a plain ViT's names.

One step, as main_dino.py's ``train_one_epoch`` does it:

    views           data.views: the first ``dino.global_crops`` views are the global crops (the
                    teacher sees only those), the rest are local crops; stacked crop-major
    loss            the student's distribution of every crop against the centred, sharpened
                    teacher distribution of every other global crop, at the teacher temperature
                    of the epoch (linear warm-up, then constant)
    gradients       each parameter's gradient clipped to norm ``dino.clip_grad`` (DINO clips per
                    parameter, not globally); during the first ``dino.freeze_last_layer`` epochs
                    the prototypes' (the head's last layer) gradients are zeroed
    update          AdamW; lr and weight decay follow per-step cosines (``optim.weight_decay`` to
                    ``optim.weight_decay_end``); the frozen prototypes are then put back, since
                    decoupled weight decay would still shrink them (DINO gives them no gradient,
                    so torch's AdamW leaves them alone)
    after the step  centre <- m c + (1 - m) mean(teacher outputs); teacher <- m_t t + (1 - m_t)
                    student, m_t a cosine from ``dino.momentum_teacher`` to 1 over the run

The engine's own weight EMA must stay off (``ema.decay=0``): the teacher is DINO's EMA.
Schedules given per epoch (teacher temperature, prototype freezing) use the engine's epoch,
images // batch size steps, so a run given in ``train.steps`` (demos) keeps their meaning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from mindspore import Tensor, ops  # module level: the loss and gradient transform are compiled by ms.jit

from pretrain.config import ConfigError
from pretrain.zoo import schedules
from pretrain.zoo.recipes import Recipe, RunInfo

# The DINO section of a config, with main_dino.py's defaults (ViT-S/16, 100 epochs).
DEFAULTS: dict = {
    "global_crops": 2,                 # the first views of data.views: the teacher's inputs
    "head": None,                      # DINOHead arguments; None: pretrain/models/dino.py's HEAD
                                       # (DEMO_HEAD for dino_vit_demo)
    "student_temp": 0.1,
    "teacher_temp": 0.04,              # after the warm-up
    "warmup_teacher_temp": 0.04,       # linear from this ...
    "warmup_teacher_temp_epochs": 0,   # ... over these epochs
    "center_momentum": 0.9,
    "momentum_teacher": 0.996,         # cosine to 1 over the run, per step
    "freeze_last_layer": 1,            # epochs whose updates leave the prototypes unchanged
    "clip_grad": 3.0,                  # per-parameter gradient norm limit; 0: no clipping
}
CLIP_EPS = 1e-6  # DINO's utils.clip_gradients: coefficient clip / (norm + 1e-6)


@dataclass(frozen=True)
class DinoSchedule:
    """The self-distillation schedules of one run, indexed by the 0-based update number."""

    momentum: np.ndarray       # per update: the teacher EMA momentum applied after it
    teacher_temp: np.ndarray   # per epoch
    steps_per_epoch: int
    freeze_steps: int          # updates 0 .. freeze_steps - 1 leave the prototypes unchanged

    @classmethod
    def build(cls, dino: dict, run: RunInfo) -> "DinoSchedule":
        epochs = math.ceil(run.steps / run.steps_per_epoch)
        warmup = int(dino["warmup_teacher_temp_epochs"])
        ramp = np.linspace(dino["warmup_teacher_temp"], dino["teacher_temp"], warmup)  # both ends included
        temps = np.concatenate((ramp, np.full(max(epochs - warmup, 1), dino["teacher_temp"])))
        # 0.996 -> 1 by half a cosine over the updates (DINO's cosine_scheduler, per iteration)
        momentum = np.asarray(schedules.cosine_schedule(dino["momentum_teacher"], run.steps, 0, 1.0))
        return cls(momentum, temps, run.steps_per_epoch, int(dino["freeze_last_layer"]) * run.steps_per_epoch)

    def temperature(self, step: int) -> float:
        return float(self.teacher_temp[min(step // self.steps_per_epoch, len(self.teacher_temp) - 1)])

    def frozen(self, step: int) -> bool:
        return step < self.freeze_steps


def dino_section(cfg: dict) -> dict:
    """``cfg['dino']`` over DEFAULTS, checked (ConfigError)."""
    section = cfg.get("dino") or {}
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"dino: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    dino = {**DEFAULTS, **section}
    if not isinstance(dino["global_crops"], int) or dino["global_crops"] < 1:
        raise ConfigError(f"dino.global_crops must be a positive int, got {dino['global_crops']!r}")
    for key in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
        if not dino[key] > 0:
            raise ConfigError(f"dino.{key} must be positive, got {dino[key]!r}")
    for key in ("center_momentum", "momentum_teacher"):
        if not 0.0 <= dino[key] <= 1.0:
            raise ConfigError(f"dino.{key} must be in [0, 1], got {dino[key]!r}")
    if dino["clip_grad"] is not None and dino["clip_grad"] < 0:
        raise ConfigError(f"dino.clip_grad must be >= 0 (0: off), got {dino['clip_grad']!r}")
    return dino


def clip_per_parameter(grads: tuple, max_norm: float) -> tuple:
    """Each gradient scaled by min(1, max_norm / (||g|| + 1e-6)) (DINO's clip_gradients)."""
    return tuple(g * ops.minimum(max_norm / (ops.sqrt((g * g).sum()) + CLIP_EPS), 1.0) for g in grads)


class DINORecipe(Recipe):
    """DINO self-distillation: student and EMA teacher on multi-crop views, no labels."""

    name = "dino"

    def __init__(self, cfg: dict, run: RunInfo):
        super().__init__(cfg, run)
        self.dino = dino_section(cfg)
        self.n_global = self.dino["global_crops"]
        if self.num_views < max(2, self.n_global):
            raise ConfigError(f"dino needs at least 2 views per image and its {self.n_global} global crops; "
                              f"data.views gives {self.num_views}")
        if (cfg.get("ema") or {}).get("decay"):
            raise ConfigError("ema.decay must be 0 for dino: the teacher is DINO's own EMA of the student")
        self.schedule = DinoSchedule.build(self.dino, run)
        self.optimizer = None          # set by grad_transform: its update counter is the step
        self.prototypes: list = []     # the student's last-layer parameters
        self.snapshot: list | None = None  # their values while frozen
        self.last_step = 0             # updates done, as after_step last saw them

    # ---- networks ----------------------------------------------------------------------------
    def build(self) -> dict:
        from pretrain.models.dino import build_dino_pretrainer

        model = dict(self.cfg["model"])
        kwargs = {k: model[k] for k in ("drop_path_rate", "interpolate_offset") if k in model}
        unknown = set(model) - {"family", "arch", "num_classes", *kwargs}
        if unknown:
            raise ConfigError(f"model: keys {sorted(unknown)} are not DINO pretrainer arguments "
                              "(drop_path_rate, interpolate_offset; the head is dino.head)")
        try:
            dino = build_dino_pretrainer(model["arch"], head=self.dino["head"],
                                         student_temp=self.dino["student_temp"],
                                         center_momentum=self.dino["center_momentum"], **kwargs)
        except (KeyError, ValueError, TypeError) as err:
            raise ConfigError(f"model dino/{model['arch']!r}: {err}") from None
        self.prototypes = dino.last_layer_params()
        self.cells = {"model": dino}
        return self.cells

    def grad_transform(self, optimizer):
        """The engine's hook between backward and update (inside the compiled step): per-parameter
        clipping, and zero gradients for the prototypes while ``targets[1]`` is 0. Gradients are
        ordered as ``optimizer.parameters``."""
        self.optimizer = optimizer
        names = {p.name for p in self.prototypes}
        frozen = tuple(p.name in names for p in optimizer.parameters)
        max_norm = float(self.dino["clip_grad"] or 0.0)

        def transform(grads: tuple, targets: tuple) -> tuple:
            if max_norm > 0:
                grads = clip_per_parameter(grads, max_norm)
            keep = targets[1]
            return tuple(g * keep if f else g for g, f in zip(grads, frozen))

        return transform

    # ---- data --------------------------------------------------------------------------------
    def current_step(self) -> int:
        """Updates done so far: the optimizer's counter, which indexes the lr schedule and is
        restored on resume."""
        if self.optimizer is None:
            raise RuntimeError("the dino recipe needs the engine's grad_transform hook before the first batch")
        return int(self.optimizer.global_step.asnumpy().reshape(-1)[0])

    def prepare_batch(self, views: list[np.ndarray], labels: np.ndarray,
                      rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Views -> (globals [G, B, C, H, W], locals [L, B, C, h, w] if any); targets ->
        (teacher temperature, 1 or 0: whether this update may move the prototypes). Labels unused."""
        groups = [views[:self.n_global], views[self.n_global:]]
        for kind, group in zip(("global", "local"), groups):
            shapes = sorted({v.shape[1:] for v in group})
            if len(shapes) > 1:
                raise ValueError(f"dino: the {kind} crops must share one size, got {shapes}")
        step = self.current_step()
        frozen = self.schedule.frozen(step)
        if frozen and self.snapshot is None:  # the values to keep (initial, or the resumed checkpoint's)
            self.snapshot = [Tensor(p.asnumpy().copy()) for p in self.prototypes]
        stacked = [np.stack(group) for group in groups if group]
        targets = [np.float32(self.schedule.temperature(step)), np.float32(0.0 if frozen else 1.0)]
        return stacked, targets

    # ---- objective ---------------------------------------------------------------------------
    def loss(self, views: tuple, targets: tuple) -> tuple:
        local_crops = views[1] if len(views) > 1 else None
        loss, batch_center = self.cells["model"](views[0], local_crops, targets[0])
        return loss, (batch_center,)

    def after_step(self, step: int, aux: tuple) -> None:
        dino = self.cells["model"]
        if self.schedule.frozen(step - 1) and self.snapshot is not None:
            for param, value in zip(self.prototypes, self.snapshot):  # undo the weight decay
                ops.assign(param, value)
        elif self.snapshot is not None:
            self.snapshot = None
        dino.update_center(aux[0])
        self.last_step = step
        dino.update_teacher(float(self.schedule.momentum[step - 1]))

    def metrics(self, loss: float, aux: list[np.ndarray], labels: np.ndarray, targets: list[np.ndarray]) -> dict:
        """The schedules' values of the logged update (after_step has just run for it)."""
        update = self.last_step - 1
        return {"losses": {"dino": loss}, "teacher_temp": self.schedule.temperature(update),
                "teacher_momentum": float(self.schedule.momentum[update]),
                "prototypes_frozen": self.schedule.frozen(update)}

    def exports(self) -> dict:
        """``teacher``: the teacher backbone under a plain ViT's names (what DINO evaluates)."""
        prefix = "teacher.backbone."
        return {"teacher": [(p.name[len(prefix):], p) for p in self.cells["model"].get_parameters()
                            if p.name.startswith(prefix)]}
