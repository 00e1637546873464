"""The seed-zoo training engine (pretrain/zoo/): training, resume, EMA, schedules, batch ops, CLI.

Most runs use a toy MindSpore network (conv + BN + linear) registered in the factory table by
the test only, on a small synthetic NWPU-RESISC45 read by ImageFolderDataset; one run goes
through pretrain/train.py's dispatch with the real gMLP demo config.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from pretrain.config import ConfigError
from pretrain.zoo import schedules
from pretrain.zoo.batch import MixOptions, mix_batch, smooth_one_hot
from pretrain.zoo.train import load_zoo_config

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "configs/pretrain/zoo/_base_.py"
STEPS = 6
# A resumed run restores the weights, BN statistics, EMA shadows, optimizer state and data
# position exactly; the CPU kernels are deterministic here (measured: bit-identical), so only
# reduction-order noise could separate the runs. A broken resume moves these losses by ~1e-2.
RTOL = 1e-5


def build_toy(arch: dict, num_classes: int | None):
    """conv 3x3 stride 2 -> BN -> ReLU -> global mean -> linear: every kind of state the engine keeps."""
    from mindspore import nn, ops

    class Toy(nn.Cell):
        def __init__(self):
            super().__init__()
            width = arch["width"]
            self.conv = nn.Conv2d(3, width, 3, stride=2, pad_mode="pad", padding=1, has_bias=True)
            self.bn = nn.BatchNorm2d(width, momentum=0.9)
            self.head = nn.Dense(width, num_classes)

        def construct(self, x):
            return self.head(ops.relu(self.bn(self.conv(x))).mean(axis=(2, 3)))

    return Toy()


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory) -> Path:
    from benchmarks.datasets.scene_classification import generate_nwpu_resisc45

    return generate_nwpu_resisc45(tmp_path_factory.mktemp("zoo") / "nwpu", per_class=4, size=32, seed=0)


@pytest.fixture
def toy_family(monkeypatch):
    from pretrain.zoo import recipes

    monkeypatch.setitem(recipes.FACTORIES, "toy", build_toy)


def toy_config(root: Path, **train) -> dict:
    from pretrain.config import load_config
    from pretrain.zoo.engine import check_config

    cfg = load_config(BASE)
    cfg.update(name="toy", model={"family": "toy", "arch": {"width": 8}, "num_classes": None})
    cfg["data"].update(root=str(root), batch_size=8, num_workers=2, views=[{"repeat": 1, "pipeline": [
        {"type": "random_resized_crop", "size": 32, "scale": (0.3, 1.0)}, {"type": "hflip"},
        {"type": "normalize"}]}])
    cfg["mix"].update(mixup=0.2, cutmix=1.0, label_smoothing=0.1)
    cfg["optim"].update(type="sgd", lr=0.2, weight_decay=1e-4, nesterov=True)
    cfg["schedule"].update(warmup_steps=1)
    cfg["ema"].update(decay=0.5)
    cfg["train"].update(steps=STEPS, log_interval=1, save_interval=2, mode="pynative", **train)
    cfg["checkpoint"]["keep_last"] = 2
    check_config(cfg)
    return cfg


def read_log(work: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
    return {r["step"]: r for r in records}


class Stop(Exception):
    """Stands in for a killed process."""


def test_training_writes_log_checkpoints_ema_and_resume_continues_the_same_run(scene_root, toy_family, tmp_path,
                                                                                 monkeypatch):
    import mindspore as ms

    import pretrain.checkpoint as checkpoint
    from converters.mindcv import COMMON_DROPS
    from pretrain.zoo.engine import train

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    assert train(toy_config(scene_root), whole) == whole / f"toy-toy-step{STEPS}.ckpt"
    reference = read_log(whole)
    assert sorted(reference) == list(range(1, STEPS + 1))
    for record in reference.values():
        assert {"loss", "losses", "lr", "top1", "images_per_s", "elapsed_s", "epoch"} <= set(record)
        assert math.isfinite(record["loss"]) and 0 <= record["top1"] <= 1 and record["images_per_s"] > 0
    assert reference[1]["lr"] == pytest.approx(0.2) and reference[STEPS]["lr"] < reference[2]["lr"]
    assert [s for s, _ in checkpoint.complete_checkpoints(whole)] == [4, 6]
    assert (whole / "loss.png").stat().st_size > 0 and json.loads((whole / "config.json").read_text())["name"] == "toy"

    # The step checkpoint: the model's weights, their EMA shadows, and what the converter drops.
    saved = ms.load_checkpoint(str(whole / f"toy-toy-step{STEPS}.ckpt"))
    ema = ms.load_checkpoint(str(whole / "toy-toy-ema.ckpt"))
    names = {"conv.weight", "conv.bias", "bn.gamma", "bn.beta", "bn.moving_mean", "bn.moving_variance",
             "head.weight", "head.bias"}
    assert set(ema) == names and {f"ema.{n}" for n in names} <= set(saved)
    for name in names:  # the EMA file is the step checkpoint's shadow, under the model's own names
        np.testing.assert_array_equal(ema[name].asnumpy(), saved[f"ema.{name}"].asnumpy())
    assert not np.array_equal(ema["conv.weight"].asnumpy(), saved["conv.weight"].asnumpy())
    rest = set(saved) - names - {f"ema.{n}" for n in names} - {checkpoint.META_KEY}
    assert rest and all(any(re.fullmatch(p, k) for p, _ in COMMON_DROPS) for k in rest), rest
    assert json.loads(str(saved[checkpoint.META_KEY]))["data"]["next_index"] == STEPS

    # "Kill" right after the step-4 checkpoint; a line logged after it (as by a run killed
    # during step 5) must be dropped by the resumed run.
    original = checkpoint.save_checkpoint

    def save_then_die(path, *args, **kwargs):
        out = original(path, *args, **kwargs)
        if "step4" in Path(path).name:
            raise Stop
        return out

    with monkeypatch.context() as patch, pytest.raises(Stop):
        patch.setattr(checkpoint, "save_checkpoint", save_then_die)
        train(toy_config(scene_root), killed)
    with (killed / "log.jsonl").open("a") as log:
        log.write(json.dumps({"step": 5, "loss": 99.0}) + "\n")
    train(toy_config(scene_root), killed, resume="auto")
    resumed = read_log(killed)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert resumed[step]["loss"] == pytest.approx(reference[step]["loss"], rel=RTOL), step
        assert resumed[step]["lr"] == pytest.approx(reference[step]["lr"], rel=1e-12)
    final = ms.load_checkpoint(str(killed / f"toy-toy-step{STEPS}.ckpt"))
    for name, value in saved.items():
        if name not in (checkpoint.META_KEY,):
            np.testing.assert_allclose(final[name].asnumpy(), value.asnumpy(), rtol=RTOL, atol=1e-6, err_msg=name)


def test_weight_ema_follows_the_decay_formula_and_exports_the_model_names(tmp_path):
    import mindspore as ms

    from pretrain.zoo.engine import build_ema, save_weights

    ms.set_context(mode=ms.PYNATIVE_MODE)
    model = build_toy({"width": 2}, 3)
    params = list(model.get_parameters())
    rng = np.random.default_rng(0)
    start = {p.name: p.asnumpy().copy() for p in params}
    ema = build_ema(model, 0.9)
    expected = dict(start)
    for decay in (0.9, 0.75):
        for p in params:  # new "trained" weights, then one EMA update
            p.set_data(ms.Tensor(rng.normal(size=p.shape).astype(np.float32)))
        ema(ms.Tensor(decay, ms.float32))
        expected = {p.name: decay * expected[p.name] + (1 - decay) * p.asnumpy() for p in params}
    path = save_weights(tmp_path / "toy-ema.ckpt", ema.export())
    written = ms.load_checkpoint(str(path))
    assert set(written) == {p.name for p in params}
    for name, value in expected.items():
        np.testing.assert_allclose(written[name].asnumpy(), value, rtol=1e-6, atol=1e-7, err_msg=name)
    warm = build_ema(model, 0.9999, warmup_updates=2000)
    assert warm.decay_at(1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    assert ema.decay_at(1) == 0.9


def test_bit_hyperrule_schedule_mixup_and_resolution():
    assert schedules.hyperrule_supports(19_999) == (100, 200, 300, 400, 500)
    assert schedules.hyperrule_supports(20_000) == (500, 3000, 6000, 9000, 10_000)
    assert schedules.hyperrule_supports(1_281_167) == (500, 6000, 12_000, 18_000, 20_000)
    assert (schedules.hyperrule_mixup(19_999), schedules.hyperrule_mixup(50_000)) == (0.0, 0.1)
    assert schedules.hyperrule_resolution(32, 32) == (160, 128)
    assert schedules.hyperrule_resolution(96, 96) == (512, 480)
    lrs = schedules.hyperrule_schedule(0.003, schedules.hyperrule_supports(50_000))
    assert len(lrs) == 10_000
    # warm-up from 0 over 500 steps, then /10 after 30 %, 60 % and 90 % of the steps
    expected = {0: 0.0, 250: 0.0015, 500: 0.003, 3000: 0.003, 3001: 3e-4, 6000: 3e-4, 6001: 3e-5, 9001: 3e-6,
                9999: 3e-6}
    for step, value in expected.items():
        assert lrs[step] == pytest.approx(value, rel=1e-12), step
    assert schedules.scale_supports((100, 200, 300, 400, 500), 10) == (2, 4, 6, 8, 10)
    assert schedules.scale_supports((500, 3000, 6000, 9000, 10_000), 5) == (1, 2, 3, 4, 5)
    with pytest.raises(ConfigError):
        schedules.scale_supports((100, 200, 300, 400, 500), 4)

    from pretrain.zoo.engine import plan_run

    cfg = load_zoo_config(REPO / "configs/pretrain/zoo/bit_hyperrule.py")
    resolved, lrs, summary = plan_run(cfg, dataset_size=50_000, image_hw=(32, 32))
    sizes = [(op["type"], op.get("size")) for op in resolved["data"]["views"][0]["pipeline"]]
    assert sizes[:2] == [("resize", 160), ("random_crop", 128)] and resolved["mix"]["mixup"] == 0.1
    assert len(lrs) == 10_000 and summary["supports"] == [500, 3000, 6000, 9000, 10_000]
    resolved, lrs, _ = plan_run(cfg, dataset_size=360, image_hw=(600, 600))
    assert resolved["data"]["views"][0]["pipeline"][1]["size"] == 480 and resolved["mix"]["mixup"] == 0.0
    assert len(lrs) == 500


def test_mixup_and_cutmix_mix_labels_by_the_image_share():
    np.testing.assert_allclose(smooth_one_hot(np.array([1]), 4, 0.1), [[0.025, 0.925, 0.025, 0.025]])
    batch, classes = 4, 5
    labels = np.array([0, 1, 2, 3])
    images = np.broadcast_to(np.arange(batch, dtype=np.float32)[:, None, None, None], (batch, 3, 8, 8)).copy()
    onehot = smooth_one_hot(labels, classes, 0.1)

    mixed, targets, lam = mix_batch(images, labels, classes, MixOptions(mixup=1.0, label_smoothing=0.1),
                                    np.random.default_rng(3))
    assert 0 < lam < 1
    np.testing.assert_allclose(mixed[:, 0, 0, 0], lam * np.arange(batch) + (1 - lam) * np.arange(batch)[::-1],
                               rtol=1e-6)
    np.testing.assert_allclose(targets, lam * onehot + (1 - lam) * onehot[::-1], rtol=1e-6)

    mixed, targets, lam = mix_batch(images, labels, classes, MixOptions(cutmix=1.0), np.random.default_rng(4))
    pasted = (mixed != images).mean(axis=(1, 2, 3))  # share of each image now from its partner
    np.testing.assert_allclose(pasted, 1 - lam)
    assert 0 < lam < 1
    np.testing.assert_allclose(targets, lam * np.eye(classes)[labels] + (1 - lam) * np.eye(classes)[labels[::-1]],
                               rtol=1e-6)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)

    same, targets, lam = mix_batch(images, labels, classes, MixOptions(mixup=1.0, prob=0.0), np.random.default_rng(0))
    assert lam == 1.0 and same is images and np.array_equal(targets, np.eye(classes, dtype=np.float32)[labels])
    with pytest.raises(ConfigError, match="mix.prob"):
        MixOptions.from_config({"prob": 2})


def test_view_pipelines_are_a_function_of_the_sample_seed():
    from pretrain.zoo.transforms import ViewMaker

    local = [{"type": "random_resized_crop", "size": 16, "scale": (0.05, 0.4)}, {"type": "hflip"},
             {"type": "color_jitter"}, {"type": "grayscale"}, {"type": "gaussian_blur", "prob": 1.0},
             {"type": "solarize", "prob": 0.5}, {"type": "normalize"}]
    maker = ViewMaker([
        {"repeat": 2, "pipeline": [{"type": "resize", "size": 40}, {"type": "random_crop", "size": 32},
                                   {"type": "rand_augment", "num_ops": 2, "magnitude": 9}, {"type": "normalize"}]},
        {"repeat": 3, "pipeline": local},
    ])
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)

    def views(seed: int) -> list[np.ndarray]:
        return maker(image, np.random.default_rng(seed))

    first = views(1)
    assert [v.shape for v in first] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v.dtype == np.float32 for v in first)
    with ThreadPoolExecutor(2) as pool:  # RandAugment's seeding under concurrent workers
        again = list(pool.map(views, [1, 2] * 4))
    for got in again[::2]:
        assert all(np.array_equal(a, b) for a, b in zip(got, first))
    assert not np.array_equal(again[1][0], first[0]) and not np.array_equal(first[0], first[1])
    with pytest.raises(ConfigError, match="normalize"):
        ViewMaker([{"repeat": 1, "pipeline": [{"type": "hflip"}]}])
    with pytest.raises(ConfigError, match="unknown view op"):
        ViewMaker([{"repeat": 1, "pipeline": [{"type": "mosaic"}, {"type": "normalize"}]}])


def test_demo_config_through_pretrain_train_dispatch(tmp_path):
    """The real gMLP demo config via pretrain/train.py (graph mode, RandAugment, mixup/cutmix)."""
    from pretrain.train import main

    work = tmp_path / "gmlp"
    assert main(["--config", str(REPO / "configs/pretrain/zoo/gmlp_ti_demo.py"), "--work-dir", str(work),
                 "--cfg-options", "train.steps=2", "schedule.warmup_steps=1", "train.save_interval=2",
                 "data.batch_size=4", "data.demo.per_class=2"]) == 0
    log = read_log(work)
    assert sorted(log) == [2] and math.isfinite(log[2]["loss"])
    assert (work / "gmlp-gmlp_ti_demo-step2.ckpt").is_file()


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs/pretrain/zoo").glob("[!_]*.py")))
def test_every_zoo_config_passes_the_checks(name):
    cfg = load_zoo_config(REPO / f"configs/pretrain/zoo/{name}.py")
    from pretrain.zoo.recipes import RECIPES

    family = name.split("_")[0]
    assert cfg["name"] == name and cfg["model"]["family"] == family
    assert cfg["recipe"] in RECIPES and cfg["recipe"] == {"multigrain": "multigrain", "dino": "dino"}.get(family, "supervised")


def _write(path: Path, text: str) -> Path:
    path.write_text(f"_base_ = {str(BASE)!r}\nmodel = dict(family='gmlp', arch='gmlp_tiny_demo')\n" + text)
    return path


@pytest.mark.parametrize("body, message", [
    ("recipe = 'mae'\n", "recipe 'mae' is not one of"),
    ("optim = dict(type='lamb')\n", "optim.type 'lamb'"),
    ("model = dict(family='vit', arch='vit_s')\n", "model.family 'vit'"),
    ("train = dict(epochs=None, steps=None)\n", "train.epochs"),
    ("data = dict(views=[dict(repeat=1, pipeline=[dict(type='hflip', p=0.5), dict(type='normalize')])])\n",
     "view op 'hflip'"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, body, message):
    from pretrain.zoo.train import main

    assert main(["--config", str(_write(tmp_path / "bad.py", body))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: error:") and message in err and "\n" not in err


def test_cli_dispatch_and_help(tmp_path):
    bad = _write(tmp_path / "bad.py", "schedule = dict(type='step')\n")
    done = subprocess.run([sys.executable, str(REPO / "pretrain/train.py"), "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().startswith("train: error: schedule.type 'step'"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    shown = subprocess.run([sys.executable, "-m", "pretrain.zoo.train", "--help"], capture_output=True, text=True,
                           timeout=60, cwd=REPO)
    assert shown.returncode == 0 and "--resume" in shown.stdout and "images_per_s" in shown.stdout
