"""DINO's recipe on the zoo engine (pretrain/zoo/dino.py), then its path to the classification
benchmarks: the demo config trained a few steps (graph mode), resumed, converted with
ms2torch --family dino:dino_vit_demo and evaluated with the k-NN and linear protocols.

One run of 7 steps (5 per epoch: 90 images, batch 16, 2 global + 2 local crops) with a checkpoint
at every step is shared by the tests; a second run resumes from its step-3 checkpoint. The
recipe's initial weights are recorded at build time (a test-only subclass), so the prototypes'
freezing and the teacher's EMA are checked against exact starting values.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pretrain.config import ConfigError
from pretrain.zoo.train import load_zoo_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs/pretrain/zoo/dino_vits16_demo.py"
KNN = "configs/benchmarks/classification/knn_converted_nwpu.py"
LINEAR = "configs/benchmarks/classification/linear_converted_nwpu.py"
STEPS, PER_EPOCH, RESUME_AT = 7, 5, 3
PREFIX = "dino-dino_vits16_demo"
PROTOTYPES = "student.head.last_layer.weight_v"
NO_WORKERS = ["train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
              "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"]
# A resumed run restores weights, teacher, centre, optimizer state and data position; the CPU
# kernels are deterministic, so only reduction-order noise could separate the runs.
RTOL = 1e-5


def demo_config(root: Path) -> dict:
    """The demo config, smaller: 90 images, batch 16 (5 steps per epoch), 2 local crops."""
    cfg = load_zoo_config(DEMO, [f"data.root={root}", "data.batch_size=16", "data.num_workers=1",
                                 "train.epochs=None", f"train.steps={STEPS}", "train.log_interval=1",
                                 "train.save_interval=1", "schedule.warmup_steps=2", "checkpoint.keep_last=10"])
    cfg["data"]["views"][2]["repeat"] = 2
    return cfg


def ckpt(work: Path, step: int) -> dict[str, np.ndarray]:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(work / f"{PREFIX}-step{step}.ckpt")).items()
            if k != "ringmoe_meta"}


def read_log(work: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (work / "log.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """The 7-step demo run, with the weights the recipe built (before any update)."""
    from benchmarks.datasets.scene_classification import generate_nwpu_resisc45
    from pretrain.zoo import recipes
    from pretrain.zoo.dino import DINORecipe
    from pretrain.zoo.engine import train

    root = tmp_path_factory.mktemp("dino")
    data = generate_nwpu_resisc45(root / "nwpu", per_class=2, size=64, seed=0)
    initial: dict[str, np.ndarray] = {}

    class Recording(DINORecipe):
        def build(self) -> dict:
            cells = super().build()
            initial.update({p.name: p.asnumpy().copy() for p in cells["model"].get_parameters()})
            return cells

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(recipes.RECIPES, "dino", Recording)
        final = train(demo_config(data), root / "whole")
    return {"root": root, "data": data, "work": root / "whole", "final": final, "initial": initial}


def test_demo_steps_log_the_schedules_and_write_checkpoints(run):
    import mindspore as ms

    work = run["work"]
    assert run["final"] == work / f"{PREFIX}-step{STEPS}.ckpt"
    log = read_log(work)
    assert sorted(log) == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and r["losses"] == {"dino": r["loss"]} for r in log.values())
    # teacher temperature per epoch: 0.04 during the 1 warm-up epoch, then 0.07
    assert [log[s]["teacher_temp"] for s in (1, PER_EPOCH, PER_EPOCH + 1)] == pytest.approx([0.04, 0.04, 0.07])
    assert [log[s]["prototypes_frozen"] for s in range(1, STEPS + 1)] == [True] * PER_EPOCH + [False] * 2
    momenta = [log[s]["teacher_momentum"] for s in range(1, STEPS + 1)]
    assert momenta[0] == pytest.approx(0.996) and momenta == sorted(momenta) and momenta[-1] < 1.0
    assert (work / "loss.png").stat().st_size > 0
    # the teacher export: the step checkpoint's teacher backbone under a plain ViT's names
    final = ckpt(work, STEPS)
    teacher = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(work / f"{PREFIX}-teacher.ckpt")).items()}
    assert "pos_embed" in teacher and "blocks.3.mlp.fc2.weight" in teacher
    assert set(teacher) == {k[len("teacher.backbone."):] for k in final if k.startswith("teacher.backbone.")}
    for name, value in teacher.items():
        np.testing.assert_array_equal(value, final[f"teacher.backbone.{name}"], err_msg=name)


def test_teacher_moves_by_the_ema_of_the_student_and_gets_no_gradient(run):
    work, log = run["work"], read_log(run["work"])
    previous = run["initial"]
    for step in range(1, STEPS + 1):
        now, m = ckpt(work, step), log[step]["teacher_momentum"]
        for name in (k for k in now if k.startswith("teacher.")):
            student = now["student." + name[len("teacher."):]]
            np.testing.assert_allclose(now[name], m * previous[name] + (1 - m) * student, rtol=1e-6, atol=1e-7,
                                       err_msg=f"step {step} {name}")
        previous = now
    final = ckpt(work, STEPS)
    assert not [k for k in final if k.startswith(("adam_m.teacher", "adam_v.teacher"))]  # not optimised
    assert not np.allclose(final["teacher.backbone.pos_embed"], final["student.backbone.pos_embed"])
    assert not np.array_equal(final["dino_loss.center"], run["initial"]["dino_loss.center"])


def test_prototypes_are_unchanged_during_the_first_epoch(run):
    start = run["initial"][PROTOTYPES]
    for step in range(1, PER_EPOCH + 1):
        now = ckpt(run["work"], step)
        np.testing.assert_array_equal(now[PROTOTYPES], start, err_msg=f"step {step}")
        # zero gradients, as DINO's cancelled ones: AdamW's moments never saw them
        assert not now[f"adam_m.{PROTOTYPES}"].any() and not now[f"adam_v.{PROTOTYPES}"].any()
        moved = "student.backbone.blocks.0.attn.qkv.weight"
        assert not np.array_equal(now[moved], run["initial"][moved])
    after = ckpt(run["work"], PER_EPOCH + 1)
    assert not np.array_equal(after[PROTOTYPES], start) and after[f"adam_m.{PROTOTYPES}"].any()


def test_resume_continues_the_uninterrupted_run(run):
    from pretrain.zoo.engine import train

    resumed = run["root"] / "resumed"
    resumed.mkdir()
    source = run["work"] / f"{PREFIX}-step{RESUME_AT}.ckpt"
    shutil.copy(source, resumed / source.name)
    train(demo_config(run["data"]), resumed, resume="auto")
    whole, again = read_log(run["work"]), read_log(resumed)
    assert sorted(again) == list(range(RESUME_AT + 1, STEPS + 1))
    for step in again:
        assert again[step]["loss"] == pytest.approx(whole[step]["loss"], rel=RTOL), step
        assert again[step]["teacher_temp"] == whole[step]["teacher_temp"]
    reference, final = ckpt(run["work"], STEPS), ckpt(resumed, STEPS)
    assert set(final) == set(reference)
    for name, value in reference.items():
        np.testing.assert_allclose(final[name], value, rtol=RTOL, atol=1e-6, err_msg=name)


def test_clipping_is_per_parameter():
    import mindspore as ms

    from pretrain.zoo.dino import clip_per_parameter

    big, small = np.full((2, 2), 3.0, np.float32), np.array([0.3, 0.4], np.float32)  # norms 6 and 0.5
    out = clip_per_parameter((ms.Tensor(big), ms.Tensor(small)), 3.0)
    np.testing.assert_allclose(out[0].asnumpy(), big * 3.0 / (6.0 + 1e-6), rtol=1e-6)
    np.testing.assert_array_equal(out[1].asnumpy(), small)  # a global norm clip would scale it too


def test_schedules_are_dinos_per_iteration_and_per_epoch_ones():
    from pretrain.models.dino import cosine_schedule, teacher_temp_schedule
    from pretrain.zoo.dino import DEFAULTS, DinoSchedule
    from pretrain.zoo.recipes import RunInfo

    dino = dict(DEFAULTS, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3)
    schedule = DinoSchedule.build(dino, RunInfo(2, ("a", "b"), 40, (64, 64), 4, 50, 10, 0))
    np.testing.assert_allclose(schedule.momentum, cosine_schedule(0.996, 1.0, 5, 10), rtol=0, atol=1e-12)
    temps = teacher_temp_schedule(0.04, 0.07, 3, 5)
    assert [schedule.temperature(s) for s in range(0, 50, 10)] == pytest.approx(list(temps))
    assert schedule.frozen(9) and not schedule.frozen(10)


def test_weight_decay_end_gives_a_per_step_cosine_decay():
    """The engine hook DINO uses: optim.weight_decay -> optim.weight_decay_end over the run.
    With zero gradients AdamW moves a weight only by decay: w <- w (1 - lr wd_i); none on 1-d."""
    import mindspore as ms

    from pretrain.zoo.engine import build_optimizer

    steps, lr = 4, 0.5
    matrix = ms.Parameter(ms.Tensor(np.ones((2, 2), np.float32)), name="matrix")
    bias = ms.Parameter(ms.Tensor(np.ones(2, np.float32)), name="bias")
    optimizer = build_optimizer([matrix, bias], {"type": "adamw", "weight_decay": 0.04, "weight_decay_end": 0.4},
                                [lr] * steps)
    expected = 1.0
    for i in range(steps):
        optimizer((ms.Tensor(np.zeros((2, 2), np.float32)), ms.Tensor(np.zeros(2, np.float32))))
        expected *= 1 - lr * (0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * i / steps)))
        np.testing.assert_allclose(matrix.asnumpy(), expected, rtol=1e-6, err_msg=f"update {i}")
    np.testing.assert_array_equal(bias.asnumpy(), 1.0)


@pytest.mark.parametrize("change, message", [
    ({"ema": {"decay": 0.999}}, "ema.decay must be 0"),
    ({"dino": {"teacher_tmp": 0.04}}, "unknown keys"),
    ({"dino": {"global_crops": 7}}, "at least 2 views"),
])
def test_bad_dino_configs_are_config_errors(change, message):
    from pretrain.config import merge
    from pretrain.zoo.dino import DINORecipe
    from pretrain.zoo.recipes import RunInfo

    cfg = merge(load_zoo_config(DEMO), change)
    info = RunInfo(45, tuple(map(str, range(45))), 360, (64, 64), 32, 33, 11, 0)
    with pytest.raises(ConfigError, match=message):
        DINORecipe(cfg, info)


# ---- the benchmarks ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(run) -> Path:
    from converters.ms2torch import main as convert_main

    out = run["root"] / "dino_demo.pth"
    assert convert_main([str(run["final"]), "-o", str(out), "--family", "dino:dino_vit_demo"]) == 0
    return out


def _benchmark(run, converted: Path, config: str, name: str, *extra: str) -> tuple[dict, Path]:
    from benchmarks.results import read_rows
    from benchmarks.run import main as run_main

    work_dir, results = run["root"] / name, run["root"] / f"{name}.csv"
    code = run_main(["--task", "classification", "--config", config, "--checkpoint", str(converted),
                     "--work-dir", str(work_dir), "--results", str(results), *extra,
                     "--cfg-options", *NO_WORKERS])
    assert code == 0
    (row,) = read_rows(results)
    return row, work_dir


def _check_coverage(work_dir: Path, converted: Path) -> None:
    import torch

    state_dict = torch.load(converted, map_location="cpu", weights_only=True)["state_dict"]
    backbone = [k for k in state_dict if k.startswith("backbone.")]
    report = json.loads((work_dir / "coverage.json").read_text())
    assert report["summary"]["backbone_mapped"] == len(backbone) > 0
    assert report["summary"]["backbone_new"] == 0 and report["summary"]["unexplained"] == 0
    assert all(report["mapped"][k] == k for k in backbone)


def test_knn_on_the_converted_teacher(run, converted):
    row, work_dir = _benchmark(run, converted, KNN, "knn")
    assert (row["backbone"], row["protocol"]) == ("dino_vit_demo", "knn")
    assert 0.0 <= float(row["primary_value"]) <= 100.0
    _check_coverage(work_dir, converted)


def test_linear_probe_keeps_the_teacher_position_embedding(run, converted):
    import torch

    row, work_dir = _benchmark(run, converted, LINEAR, "linear", "--iters", "2")
    assert (row["backbone"], row["protocol"]) == ("dino_vit_demo", "linear_probe")
    assert 0.0 <= float(row["primary_value"]) <= 100.0
    _check_coverage(work_dir, converted)
    # mmpretrain's ViT init draws a fresh pos_embed unless the loaded one survives it
    saved = torch.load(work_dir / "iter_2.pth", map_location="cpu", weights_only=False)["state_dict"]
    teacher = ckpt(run["work"], STEPS)["teacher.backbone.pos_embed"]
    np.testing.assert_array_equal(saved["backbone.pos_embed"].numpy(), teacher)
    np.testing.assert_array_equal(saved["backbone.cls_token"].numpy(), ckpt(run["work"], STEPS)["teacher.backbone.cls_token"])
