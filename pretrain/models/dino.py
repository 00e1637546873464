"""DINO in MindSpore: self-distillation with no labels (Caron et al. 2021, "Emerging properties in
self-supervised vision transformers"), after facebookresearch/dino ``main_dino.py``.

Read top to bottom: the recipe as data, the projection head, the multi-crop wrapper, the loss,
the student/teacher cell, the schedules, the factories.

One training step, as the engine runs it (see :class:`DINO`)::

    dino = build_dino_pretrainer("dino_vits16")                 # student + teacher + loss centre
    grad_fn = ms.value_and_grad(dino, None, dino.trainable_params(), has_aux=True)
    (loss, batch_center), grads = grad_fn(global_crops, local_crops, Tensor(teacher_temp[epoch], ms.float32))
    grads = ops.clip_by_global_norm(grads, 3.0)                  # RECIPE["clip_grad"] (DINO clips per
                                                                 # parameter; global norm is close)
    if epoch < RECIPE["freeze_last_layer"]: keep dino.last_layer_params() unchanged
    optimizer(grads)
    dino.update_center(batch_center)      # all-reduce-mean batch_center over ranks first
    dino.update_teacher(momentum[step])   # EMA, after the optimizer step

The backbone is :class:`pretrain.models.vit.VisionTransformer`; the architectures are the table
``converters.rules.zoo_dino.ARCHS`` (one copy, framework-free), and the converter turns the
teacher's backbone into mmpretrain's ``VisionTransformer``.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import HeUniform, TruncatedNormal, initializer

from converters.rules.zoo_dino import ARCHS
from pretrain.models.vit import VisionTransformer, build_vit

__all__ = ["ARCHS", "DEMO_HEAD", "DINO", "DINOHead", "DINOLoss", "HEAD", "MULTI_CROP", "MultiCropWrapper", "RECIPE",
           "TeacherEMA",
           "build_dino", "build_dino_pretrainer", "cosine_schedule", "dino_param_groups", "ema_pairs",
           "teacher_temp_schedule"]

# ---- the recipe, as data ---------------------------------------------------------------------
# Projection head of the paper (main_dino.py defaults): 3-layer MLP, hidden 2048, GELU, bottleneck
# 256, L2 normalisation, weight-normalised prototypes K = 65536. norm_last_layer=True freezes the
# prototypes' norms at 1 (the repo advises False for ViT-S, True for ViT-B: more stable).
HEAD: dict = {"out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "nlayers": 3, "norm_last_layer": True}
# OURS, for tests and CPU demos with the dino_vit_demo backbone: the same shape, far narrower.
DEMO_HEAD: dict = {"out_dim": 256, "hidden_dim": 128, "bottleneck_dim": 32, "nlayers": 3, "norm_last_layer": True}

# Multi-crop augmentation (DataAugmentationDINO): every image gives 2 global and N local crops,
# each RandomResizedCrop (ratio 3/4..4/3, bicubic) -> flip 0.5 -> colour jitter (p 0.8) ->
# grayscale (p 0.2) -> Gaussian blur -> [solarise] -> ImageNet normalisation. Per-crop
# probabilities are listed as (global crop 1, global crop 2, every local crop).
MULTI_CROP: dict = {
    "global_crops": 2,
    "global_size": 224,
    "global_scale": (0.4, 1.0),
    "local_crops": 8,  # main_dino.py default; the paper's best ViT-S/16 uses 10
    "local_size": 96,
    "local_scale": (0.05, 0.4),
    "ratio": (3 / 4, 4 / 3),
    "interpolation": "bicubic",
    "flip_prob": 0.5,
    "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "prob": 0.8},
    "grayscale_prob": 0.2,
    "blur_prob": (1.0, 0.1, 0.5),
    "blur_sigma": (0.1, 2.0),
    "solarize_prob": (0.0, 0.2, 0.0),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}

# Optimisation and self-distillation schedule (main_dino.py defaults; ViT-S/16, 100 epochs).
RECIPE: dict = {
    "epochs": 100,
    "batch_size": 1024,  # 64 per GPU x 16
    "optimizer": "adamw",
    "lr": 0.0005,  # per 256 images: lr = 0.0005 * batch_size / 256, after a linear warm-up
    "warmup_epochs": 10,
    "min_lr": 1e-6,  # cosine decay to this
    "weight_decay": 0.04,  # cosine schedule to weight_decay_end; none on biases and 1-D params
    "weight_decay_end": 0.4,
    "clip_grad": 3.0,
    "freeze_last_layer": 1,  # epochs during which the prototypes are not updated
    "momentum_teacher": 0.996,  # cosine schedule to 1 over all iterations
    "student_temp": 0.1,
    "teacher_temp": 0.04,  # 0.07 for long ViT-S runs (30 warm-up epochs from 0.04)
    "warmup_teacher_temp": 0.04,
    "warmup_teacher_temp_epochs": 0,
    "center_momentum": 0.9,
    "drop_path_rate": 0.1,  # student only; the teacher has none
}


# ---- projection head ---------------------------------------------------------------------------
class WeightNormDense(nn.Cell):
    """Bias-free linear layer with weight normalisation (torch ``weight_norm(dim=0)``): row o of
    the weight is ``weight_g[o] * weight_v[o] / ||weight_v[o]||``. ``train_g=False`` keeps the
    norms at 1 (DINO's norm_last_layer)."""

    def __init__(self, n_in: int, n_out: int, train_g: bool = False):
        super().__init__()
        self.weight_g = Parameter(initializer("ones", (n_out, 1), ms.float32), name="weight_g", requires_grad=train_g)
        self.weight_v = Parameter(initializer(HeUniform(math.sqrt(5)), (n_out, n_in), ms.float32), name="weight_v")

    def construct(self, x: Tensor) -> Tensor:
        v = self.weight_v
        weight = self.weight_g * v / ops.sqrt((v * v).sum(axis=1, keepdims=True))
        return ops.matmul(x, weight.T)


class DINOHead(nn.Cell):
    """MLP (Linear-GELU x (nlayers-1), then Linear to the bottleneck) -> L2 normalise ->
    weight-normalised prototypes. GELU is the exact erf form, as torch.nn.GELU()."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        widths = [in_dim] + [hidden_dim] * (max(nlayers, 1) - 1) + [bottleneck_dim]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Dense(a, b, weight_init=TruncatedNormal(0.02), bias_init="zeros"))
            if i < len(widths) - 2:
                layers.append(nn.GELU(approximate=False))
        self.mlp = nn.SequentialCell(layers)
        self.last_layer = WeightNormDense(bottleneck_dim, out_dim, train_g=not norm_last_layer)

    def construct(self, x: Tensor) -> Tensor:
        x = self.mlp(x)
        # torch F.normalize(p=2): x / max(||x||, 1e-12)
        x = x / ops.clamp(ops.sqrt((x * x).sum(axis=-1, keepdims=True)), 1e-12)
        return self.last_layer(x)


class MultiCropWrapper(nn.Cell):
    """Backbone + head over the crops of a step: the backbone runs once per crop resolution
    (class tokens), the head once over all of them. Output rows are crop-major: crop 0 of every
    image, then crop 1, ... (globals first)."""

    def __init__(self, backbone: VisionTransformer, head: DINOHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def construct(self, global_crops: Tensor, local_crops: Tensor | None = None) -> Tensor:
        features = self.backbone.forward_features(global_crops)
        if local_crops is not None:
            features = ops.concat((features, self.backbone.forward_features(local_crops)), axis=0)
        return self.head(features)


# ---- the loss ----------------------------------------------------------------------------------
class DINOLoss(nn.Cell):
    """Cross-entropy between the centred, sharpened teacher distribution of each global view and
    the student distribution of every other view, averaged over the pairs.

    ``construct(student_out [V, B, K], teacher_out [Vg, B, K], teacher_temp)`` returns
    ``(loss, batch_center [1, K])``; views are ordered globals first. The teacher side is
    ``softmax((t - center) / teacher_temp)`` without gradient, the student side
    ``log_softmax(s / student_temp)``. The centre itself is updated by :meth:`update_center`
    after the step (``center <- m * center + (1 - m) * batch_center``), as DINO does with the
    raw teacher outputs (before centring).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center = Parameter(initializer("zeros", (1, out_dim), ms.float32), name="center", requires_grad=False)

    def construct(self, student_out: Tensor, teacher_out: Tensor, teacher_temp: Tensor):
        n_global, n_views = teacher_out.shape[0], student_out.shape[0]
        teacher = ops.stop_gradient(ops.softmax((teacher_out - self.center) / teacher_temp, axis=-1))
        log_student = ops.log_softmax(student_out / self.student_temp, axis=-1)
        # sum over all (teacher view q, student view v) pairs of mean_b <t_q, log s_v>, without
        # the [Vg, V, B, K] tensor: <sum_q t_q, sum_v log s_v>; then remove the pairs v == q.
        every_pair = (teacher.sum(axis=0) * log_student.sum(axis=0)).sum(axis=-1).mean()
        same_view = (teacher * log_student[:n_global]).sum(axis=-1).mean(axis=-1).sum()
        loss = -(every_pair - same_view) / (n_global * n_views - n_global)
        batch_center = ops.stop_gradient(teacher_out.reshape(-1, teacher_out.shape[-1]).mean(axis=0, keep_dims=True))
        return loss, batch_center

    def update_center(self, batch_center: Tensor) -> None:
        m = self.center_momentum
        ops.assign(self.center, self.center * m + batch_center * (1 - m))


# ---- student and teacher -----------------------------------------------------------------------
class DINO(nn.Cell):
    """Student and teacher (backbone + head each) and the loss centre, under natural names:
    ``student.backbone.*``, ``student.head.*``, ``teacher.backbone.*``, ``teacher.head.*``,
    ``dino_loss.center``. The teacher starts as a copy of the student and has no gradients
    (``requires_grad=False``: ``trainable_params()`` is the student's only).

    ``construct(global_crops [Vg, B, C, H, W], local_crops [Vl, B, C, h, w] or None,
    teacher_temp)``: the teacher sees only the globals, the student every crop;
    returns ``(loss, batch_center)``. After the optimizer step call
    ``update_center(batch_center)`` and ``update_teacher(momentum)``.
    ``forward_features(x)``: the teacher backbone's class token, what DINO evaluates.
    """

    def __init__(self, student: MultiCropWrapper, teacher: MultiCropWrapper, dino_loss: DINOLoss):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.dino_loss = dino_loss
        for s, t in ema_pairs(self):
            t.set_data(Tensor(s.asnumpy().copy()))  # a buffer of its own: asnumpy() may alias
            t.requires_grad = False
        # A plain dict: what it holds is not registered as a sub-cell, so the EMA cell's
        # references to the student's and teacher's parameters add no names or duplicates.
        self._compiled = {}

    def construct(self, global_crops: Tensor, local_crops: Tensor | None, teacher_temp: Tensor):
        n_global, batch = global_crops.shape[0], global_crops.shape[1]
        globals_ = global_crops.reshape((n_global * batch,) + global_crops.shape[2:])
        locals_ = None
        n_views = n_global
        if local_crops is not None:
            n_views = n_global + local_crops.shape[0]
            locals_ = local_crops.reshape((local_crops.shape[0] * batch,) + local_crops.shape[2:])
        teacher_out = ops.stop_gradient(self.teacher(globals_))
        student_out = self.student(globals_, locals_)
        return self.dino_loss(student_out.reshape(n_views, batch, -1), teacher_out.reshape(n_global, batch, -1),
                              teacher_temp)

    def update_center(self, batch_center: Tensor) -> None:
        """``center <- m * center + (1 - m) * batch_center``. With data parallelism, pass the mean
        of the ranks' batch centres (equal per-rank batches), as DINO all-reduces it."""
        self.dino_loss.update_center(batch_center)

    def update_teacher(self, momentum: float) -> None:
        """EMA of the student into the teacher: ``t <- m * t + (1 - m) * s`` for every parameter
        (one compiled graph, built on the first call)."""
        if "ema" not in self._compiled:
            self._compiled["ema"] = ms.jit(TeacherEMA(self).construct)
        self._compiled["ema"](Tensor(momentum, ms.float32))

    def last_layer_params(self) -> list[Parameter]:
        """The student's trainable prototypes, frozen during the first RECIPE['freeze_last_layer']
        epochs (DINO drops their gradients then)."""
        return [p for p in self.student.head.last_layer.trainable_params()]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.teacher.backbone.forward_features(x)


def ema_pairs(dino: DINO) -> list[tuple[Parameter, Parameter]]:
    """(student, teacher) parameter pairs, in order, checked to be the same entry of one layout."""
    pairs = list(zip(dino.student.get_parameters(), dino.teacher.get_parameters()))
    for s, t in pairs:
        if s.name.split(".", 1)[1] != t.name.split(".", 1)[1] or s.shape != t.shape:
            raise ValueError(f"student {s.name} {s.shape} does not pair with teacher {t.name} {t.shape}")
    return pairs


class TeacherEMA(nn.Cell):
    """``construct(momentum)``: ``t <- m * t + (1 - m) * s`` over every (student, teacher) pair,
    the update DINO applies after each optimizer step (weight_g included: it stays 1 when frozen).
    Holds references only; it is not part of the DINO cell or its checkpoint."""

    def __init__(self, dino: DINO):
        super().__init__()
        pairs = ema_pairs(dino)
        self.students = ParameterTuple([s for s, _ in pairs])
        self.teachers = ParameterTuple([t for _, t in pairs])

    def construct(self, momentum: Tensor) -> Tensor:
        for s, t in zip(self.students, self.teachers):
            ops.assign(t, t * momentum + s * (1 - momentum))
        return momentum


# ---- schedules ---------------------------------------------------------------------------------
def cosine_schedule(base: float, final: float, epochs: int, iters_per_epoch: int, warmup_epochs: int = 0,
                    start_warmup_value: float = 0.0) -> np.ndarray:
    """Per-iteration values (DINO's ``utils.cosine_scheduler``): linear warm-up, then
    ``final + (base - final) * (1 + cos(pi * i / n)) / 2`` over the n remaining iterations (so the
    last value is just short of ``final``). The teacher momentum is
    ``cosine_schedule(0.996, 1, epochs, iters_per_epoch)``; lr and weight decay use it too."""
    warmup_iters = warmup_epochs * iters_per_epoch
    warmup = np.linspace(start_warmup_value, base, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(epochs * iters_per_epoch - warmup_iters)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, cosine))


def teacher_temp_schedule(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """Per-epoch teacher temperature: linear from ``warmup_temp`` to ``temp`` over the warm-up
    epochs (both ends included), then constant."""
    return np.concatenate((np.linspace(warmup_temp, temp, warmup_epochs), np.full(epochs - warmup_epochs, temp)))


def dino_param_groups(net: nn.Cell) -> list[dict]:
    """MindSpore optimizer groups as DINO's ``get_params_groups``: no weight decay on biases and
    1-D parameters (norms), decay on the rest."""
    params = net.trainable_params()
    plain = [p for p in params if p.name.endswith(".bias") or len(p.shape) == 1]
    decay = [p for p in params if not (p.name.endswith(".bias") or len(p.shape) == 1)]
    return [{"params": decay}, {"params": plain, "weight_decay": 0.0}]


# ---- factories ---------------------------------------------------------------------------------
def _arch(arch: dict | str) -> dict:
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"unknown DINO variant {arch!r}; choose from {sorted(ARCHS)} or pass an arch dict")
        return dict(ARCHS[arch])
    return dict(arch)


def build_dino(arch: dict | str, num_classes: int | None = None, drop_path_rate: float = 0.0,
               interpolate_offset: float = 0.0) -> VisionTransformer:
    """The network DINO trains and evaluates: a ViT (``forward_features``: the class token after
    the final norm) with a linear classifier when ``num_classes`` is given."""
    return build_vit(_arch(arch), num_classes, drop_path_rate, interpolate_offset)


def build_dino_pretrainer(arch: dict | str, head: dict | None = None, drop_path_rate: float | None = None,
                          student_temp: float = RECIPE["student_temp"],
                          center_momentum: float = RECIPE["center_momentum"],
                          interpolate_offset: float = 0.0) -> DINO:
    """Student and teacher for self-distillation. ``head`` overrides :data:`HEAD` (the demo
    variant defaults to :data:`DEMO_HEAD`); ``drop_path_rate`` (student only) defaults to the
    recipe's. The teacher starts equal to the student."""
    name = arch if isinstance(arch, str) else None
    arch = _arch(arch)
    head_cfg = {**(DEMO_HEAD if name == "dino_vit_demo" else HEAD), **(head or {})}
    rate = RECIPE["drop_path_rate"] if drop_path_rate is None else drop_path_rate

    def wrapper(path_rate: float) -> MultiCropWrapper:
        return MultiCropWrapper(build_vit(arch, None, path_rate, interpolate_offset),
                                DINOHead(arch["embed_dim"], **head_cfg))

    return DINO(wrapper(rate), wrapper(0.0), DINOLoss(head_cfg["out_dim"], student_temp, center_momentum))
