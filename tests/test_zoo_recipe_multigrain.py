"""The Multigrain recipe (pretrain/zoo/multigrain.py) on the zoo engine, and Multigrain's whole path:
MindSpore pretraining -> ms2torch --family multigrain -> the retrieval benchmark and a linear probe.

The sampler is checked against the NumPy reference (``pretrain.models.multigrain.negative_weights``);
the batches against the views the engine's stream makes for each image; one short run of the
demo config (ResNet-18, graph mode, through the CLI) against a stopped and resumed one; and its
step checkpoint through the converter and benchmarks/run.py.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pretrain.zoo.train import load_zoo_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs/pretrain/zoo/multigrain_r50_demo.py"
PAPER = REPO / "configs/pretrain/zoo/multigrain_r50.py"
STEPS, SIZE, IMAGES = 4, 48, 4  # a short run: 4 steps of 4 images x 3 copies at 48 px
RTOL = 1e-5  # resumed vs uninterrupted run: bit-identical here; a broken resume moves losses by ~1e-2


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory) -> Path:
    from benchmarks.datasets.scene_classification import generate_nwpu_resisc45

    return generate_nwpu_resisc45(tmp_path_factory.mktemp("mg") / "nwpu", per_class=2, size=SIZE, seed=0)


def demo_config(root: Path, **train) -> dict:
    """The demo config, smaller: IMAGES images per step at SIZE px, STEPS steps, saves every 2."""
    cfg = load_zoo_config(DEMO, [f"data.root={root}", f"data.batch_size={IMAGES}", f"train.steps={STEPS}",
                                 "train.log_interval=1", "train.save_interval=2", "data.num_workers=2"])
    cfg["data"]["views"][0]["pipeline"][0]["size"] = SIZE
    cfg["train"].update(train)
    return cfg


def run_info(cfg: dict, root: Path):
    from pretrain.zoo.data import inspect_folder
    from pretrain.zoo.recipes import RunInfo

    info = inspect_folder(root)
    return info, RunInfo(len(info.classes), info.classes, info.size, info.image_hw, cfg["data"]["batch_size"],
                         STEPS, info.size // cfg["data"]["batch_size"], cfg["train"]["seed"])


def read_log(work: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == sorted({r["step"] for r in records})
    return {r["step"]: r for r in records}


# ---- the sampler -----------------------------------------------------------------------------
def _embeddings(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """5 instances x 3 copies in 16-d; instance 0 orthogonal to the others (every distance to them
    is sqrt 2 > 1.4), so its anchors have no candidate and fall back to uniform."""
    ids = np.repeat(np.arange(5), 3).astype(np.int32)
    x = rng.normal(size=(15, 16))
    x[:3, 1:] = 0.0
    x[:3, 0] = np.abs(x[:3, 0]) + 0.5
    x[3:, 0] = 0.0
    return x.astype(np.float32), ids


def test_log_weights_and_draws_match_the_numpy_reference():
    import mindspore as ms

    from pretrain.models.multigrain import negative_weights, sample_pairs
    from pretrain.zoo.multigrain import distance_weighted_negatives, negative_log_weights, pair_indices

    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(0)
    x, ids = _embeddings(rng)
    reference = negative_weights(x, ids)  # float64, normalised per row
    assert np.allclose(reference[:3, 3:], 1 / 12) and (reference[3:] > 0).sum(1).min() < 12  # both kinds of row
    log_w, candidates = (t.asnumpy() for t in negative_log_weights(ms.Tensor(x), ms.Tensor(ids), 0.5, 1.4))
    np.testing.assert_array_equal(candidates, reference > 0)
    logits = np.where(candidates, log_w - np.where(candidates, log_w, -np.inf).max(1, keepdims=True), -np.inf)
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), reference, atol=1e-5)

    # the step's draws: the two largest keys log w + g of each row, in order
    gumbel = rng.gumbel(size=(15, 15)).astype(np.float32)
    drawn = distance_weighted_negatives(ms.Tensor(x), ms.Tensor(ids), ms.Tensor(gumbel), 2, 0.5, 1.4).asnumpy()
    keys = np.where(reference > 0, np.log(np.where(reference > 0, reference, 1.0)) + gumbel, -np.inf)
    expected = np.argsort(-keys, axis=1, kind="stable")[:, :2]
    one_candidate = (reference > 0).sum(1) == 1  # fewer candidates than draws: the first one again
    expected[one_candidate, 1] = expected[one_candidate, 0]
    np.testing.assert_array_equal(drawn.reshape(15, 2), expected)
    assert np.all(ids[drawn.reshape(15, 2)] != ids[:, None])  # never the anchor's own image

    # the (anchor, positive) pairs are sample_pairs' own, in its order
    anchors, positives, _ = sample_pairs(x, ids, np.random.default_rng(1))
    _, ours_a, ours_p = pair_indices(5, 3)
    np.testing.assert_array_equal(ours_a, anchors)
    np.testing.assert_array_equal(ours_p, positives)


def test_gumbel_top_k_is_sampling_without_replacement():
    """The k largest of log w + Gumbel noise, in order, are k successive draws without replacement."""
    w = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    rng = np.random.default_rng(0)
    top2 = np.argsort(-(np.log(w) + rng.gumbel(size=(100_000, 5))), axis=1)[:, :2]
    observed = np.zeros((5, 5))
    np.add.at(observed, (top2[:, 0], top2[:, 1]), 1.0 / len(top2))
    exact = w[:, None] * w[None, :] / (1 - w[:, None])  # P(first a) P(second b | first a)
    np.fill_diagonal(exact, 0.0)
    np.testing.assert_allclose(observed, exact, atol=0.006)


# ---- the batches ------------------------------------------------------------------------------
def test_a_batch_holds_m_independently_augmented_copies_of_each_image(scene_root):
    import mindspore.dataset as ds

    from pretrain.zoo.data import SampleViews, batches, epoch_order
    from pretrain.zoo.multigrain import MultigrainRecipe

    cfg = demo_config(scene_root)
    info, run = run_info(cfg, scene_root)
    recipe = MultigrainRecipe(cfg, run)
    sample = SampleViews(recipe.make_views, recipe.num_views, run.seed)
    batch = next(batches(info, sample, IMAGES, run.seed, start=1, num_steps=1, num_workers=1))
    views, targets = recipe.prepare_batch(batch.views, batch.labels, np.random.default_rng(0))
    crops, (labels, ids, anchors, positives, gumbel) = views[0], targets
    assert recipe.repeats == 3 and crops.shape == (3 * IMAGES, 3, SIZE, SIZE) and gumbel.shape == (12, 12)
    np.testing.assert_array_equal(ids, np.repeat(np.arange(IMAGES), 3))
    np.testing.assert_array_equal(labels, np.repeat(batch.labels, 3))
    assert len(anchors) == len(positives) == 3 * IMAGES * 2 and np.all(ids[anchors] == ids[positives])

    images = list(ds.ImageFolderDataset(str(scene_root), shuffle=False, decode=True)
                  .create_tuple_iterator(output_numpy=True))
    for slot in range(IMAGES):  # step 1's images: stream positions IMAGES .. 2 IMAGES - 1
        position = IMAGES + slot
        image, label = images[int(epoch_order(run.seed, 0, info.size)[position])]
        *expected, _ = sample(image, label, np.array(position))
        copies = crops[3 * slot:3 * slot + 3]
        for got, want in zip(copies, expected):  # the stream's own views of that image ...
            np.testing.assert_array_equal(got, want)
        for a in range(3):  # ... each with its own crop, flip and colour draws
            for b in range(a + 1, 3):
                assert not np.allclose(copies[a], copies[b])


# ---- training, resume, and the path to the benchmarks -------------------------------------------
# Each run is its own `python -m pretrain.zoo.train` process: oneDNN fixes its CPU kernels at the
# first primitive a process creates (see ONEDNN_MAX_CPU_ISA in pretrain/zoo/engine.py), so a run
# in a process where other tests ran kernels first would be ~100x slower in its convolutions.
PREFIX = "multigrain-mg_short"


@pytest.fixture(scope="module")
def short_config(scene_root, tmp_path_factory) -> Path:
    """The demo config with SIZE px crops of IMAGES images for STEPS steps, as a config file."""
    views = demo_config(scene_root)["data"]["views"]
    path = tmp_path_factory.mktemp("mg_cfg") / "mg_short.py"
    path.write_text(f"_base_ = {str(DEMO)!r}\nname = 'mg_short'\n"
                    f"data = dict(root={str(scene_root)!r}, batch_size={IMAGES}, views={views!r})\n"
                    f"train = dict(steps={STEPS}, log_interval=1, save_interval=2)\n")
    return path


def train_cli(config: Path, work: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pretrain.zoo.train", "--config", str(config), "--work-dir",
                           str(work), *args], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def trained(short_config, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("mg_whole")
    train_cli(short_config, work)
    return work


def test_demo_steps_log_and_checkpoint(trained):
    import mindspore as ms

    from pretrain.checkpoint import META_KEY, complete_checkpoints

    log = read_log(trained)
    assert sorted(log) == list(range(1, STEPS + 1))
    for record in log.values():
        assert set(record["losses"]) == {"ce", "margin"} and 0 <= record["top1"] <= 1
        assert record["loss"] == pytest.approx(0.5 * record["losses"]["ce"] + 0.5 * record["losses"]["margin"],
                                               rel=1e-5)
    assert log[STEPS]["beta"] != 1.2 and log[STEPS]["gem_p"] != 3.0  # both learnt
    assert [s for s, _ in complete_checkpoints(trained)] == [2, 4]
    saved = ms.load_checkpoint(str(trained / f"{PREFIX}-step{STEPS}.ckpt"))
    assert float(saved["margin.beta"].asnumpy()[0]) == pytest.approx(log[STEPS]["beta"])
    assert json.loads(str(saved[META_KEY]))["recipe"] == "multigrain"
    assert {"pool.p", "classifier.weight", "layer4.1.bn2.moving_mean"} <= set(saved)


def test_resume_continues_the_same_run(short_config, trained, tmp_path):
    """Stopped after its step-2 checkpoint, then resumed: the losses, beta, p and every weight and
    optimizer moment of the uninterrupted run (the schedule's milestones are in epochs, so the
    2-step run's learning rates are the 4-step run's first two)."""
    import mindspore as ms

    from pretrain.checkpoint import META_KEY

    train_cli(short_config, tmp_path, "--cfg-options", "train.steps=2")
    train_cli(short_config, tmp_path, "--resume")
    reference, resumed = read_log(trained), read_log(tmp_path)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        for key in ("loss", "beta", "gem_p", "lr"):
            assert resumed[step][key] == pytest.approx(reference[step][key], rel=RTOL), (step, key)
    name = f"{PREFIX}-step{STEPS}.ckpt"
    final, saved = ms.load_checkpoint(str(tmp_path / name)), ms.load_checkpoint(str(trained / name))
    assert set(final) == set(saved)
    for key, value in saved.items():
        if key != META_KEY:  # a JSON string, not a tensor
            np.testing.assert_allclose(final[key].asnumpy(), value.asnumpy(), rtol=RTOL, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def converted(trained) -> dict:
    import mindspore as ms
    import torch

    from converters.ms2torch import main as convert_main

    source = trained / f"{PREFIX}-step{STEPS}.ckpt"
    out = trained / "multigrain_r18.pth"
    assert convert_main([str(source), "-o", str(out), "--family", "multigrain:multigrain_resnet18"]) == 0
    p = float(ms.load_checkpoint(str(source))["pool.p"].asnumpy()[0])
    state = torch.load(out, weights_only=True)
    return {"pth": out, "p": p, "state": state["state_dict"], "meta": state["meta"]}


def test_conversion_of_the_step_checkpoint(converted):
    assert converted["p"] != pytest.approx(3.0, abs=1e-4)  # learnt in the demo
    assert float(converted["state"]["neck.p"]) == converted["p"]
    assert converted["meta"]["input"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    report = json.loads(converted["pth"].with_suffix(".report.json").read_text())
    assert "margin.beta" in report["dropped"] and "ringmoe_meta" in report["dropped"]
    assert report["num_classes"] == 45 and report["coverage"]["mapped"] > 100


def _benchmark(args: list[str], work: Path) -> tuple[dict, dict]:
    from benchmarks import results
    from benchmarks.run import main

    assert main(args + ["--work-dir", str(work / "wd"), "--results", str(work / "r.csv")]) == 0
    (row,) = results.read_rows(work / "r.csv")
    return row, json.loads((work / "wd" / "coverage.json").read_text())


def test_retrieval_benchmark_on_the_converted_demo(converted, tmp_path):
    from benchmarks.datasets.holidays import generate_holidays

    holidays = generate_holidays(tmp_path / "holidays", groups=6, min_views=2, max_views=4, size=48, seed=0)
    row, cov = _benchmark(["--task", "retrieval", "--config", "configs/benchmarks/retrieval/gem_converted_holidays.py",
                           "--checkpoint", str(converted["pth"]), "--data-root", str(holidays), "--cfg-options",
                           "img_size=48", "val_dataloader.num_workers=0", "model.prototype.num_workers=0"], tmp_path)
    assert (row["task"], row["protocol"], row["backbone"]) == ("retrieval", "frozen", "multigrain_resnet18")
    assert row["primary_metric"] == "retrieval/mAP" and 0 < float(row["primary_value"]) <= 100
    assert math.isfinite(float(row["primary_value"]))
    assert cov["unexplained"] == [] and cov["new"] == {}  # backbone and GeM neck both from the checkpoint
    backbone = [k for k in converted["state"] if k.startswith("backbone.")]
    assert cov["summary"]["backbone_mapped"] == len(backbone) + 1  # + the neck's p
    assert cov["mapped"]["image_encoder.neck.p"] == "neck.p"
    assert all(cov["mapped"][f"image_encoder.{k}"] == k for k in backbone)


def test_linear_probe_on_the_converted_demo(converted, tmp_path):
    row, cov = _benchmark(["--task", "classification", "--config",
                           "configs/benchmarks/classification/linear_converted_nwpu.py", "--checkpoint",
                           str(converted["pth"]), "--iters", "2", "--cfg-options", "train_dataloader.num_workers=0",
                           "val_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
                           "val_dataloader.persistent_workers=False"], tmp_path)
    assert (row["protocol"], row["backbone"]) == ("linear_probe", "multigrain_resnet18")
    assert 0.0 <= float(row["primary_value"]) <= 100.0
    assert cov["unexplained"] == [] and cov["summary"]["backbone_new"] == 0
    assert set(cov["new"]) == {"head.fc.weight", "head.fc.bias"}  # the probe's own head


# ---- the paper's config -------------------------------------------------------------------------
def test_paper_config_plan_matches_the_reference_schedule():
    from pretrain.zoo.engine import plan_run

    cfg = load_zoo_config(PAPER)
    assert cfg["recipe"] == "multigrain" and cfg["data"]["views"][0]["repeat"] == 3
    assert cfg["model"]["learn_p"] is False and cfg["multigrain"]["lam"] == 0.5
    imagenet = 1_281_167
    _, lrs, summary = plan_run(cfg, imagenet, (375, 500))
    per_epoch = imagenet // 170
    assert summary["milestone_steps"] == [20 * per_epoch, 40 * per_epoch, 60 * per_epoch]
    reference_steps = 120 * 2 * imagenet / 512  # 120 epochs of 2 x the dataset in crops, 512 per batch
    assert len(lrs) == 80 * per_epoch and abs(len(lrs) / reference_steps - 1) < 0.01
    edges = [0, 20 * per_epoch - 1, 20 * per_epoch, 40 * per_epoch, 60 * per_epoch, len(lrs) - 1]
    assert [lrs[s] for s in edges] == pytest.approx([0.2, 0.2, 0.02, 0.002, 2e-4, 2e-4])


@pytest.mark.parametrize("change, message", [
    ({"views": [dict(repeat=1, pipeline=[dict(type="normalize")])]}, "repeat >= 2"),
    ({"batch_size": 1}, "at least 2 images"),
])
def test_configs_the_recipe_refuses(scene_root, change, message):
    from pretrain.config import ConfigError
    from pretrain.zoo.multigrain import MultigrainRecipe

    cfg = demo_config(scene_root)
    cfg["data"].update(change)
    _, run = run_info(cfg, scene_root)
    with pytest.raises(ConfigError, match=message):
        MultigrainRecipe(cfg, run)
