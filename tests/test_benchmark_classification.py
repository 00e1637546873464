"""benchmarks/run.py on scene classification: short real runs of both protocols, the seeded
stratified split, the frozen backbone of the linear probe and the layer-wise lr decay groups."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import results
from benchmarks.datasets.scene_classification import AID_CLASSES, NWPU_CLASSES, generate_scene_dataset
from benchmarks.run import main
from benchmarks.tasks.classification import list_images, prepare_split, stratified_split

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "benchmarks" / "classification"
# Two iterations, no worker processes: the whole pipeline, as fast as it goes on a CPU.
SHORT = ["--cfg-options", "train_cfg.max_iters=2", "train_dataloader.num_workers=0",
         "train_dataloader.persistent_workers=False", "val_dataloader.num_workers=0",
         "val_dataloader.persistent_workers=False"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Both datasets side by side (the layout --data-root may name), 3 small images per class."""
    root = tmp_path_factory.mktemp("scene")
    for name in ("nwpu_resisc45", "aid"):
        generate_scene_dataset(name, root / name, per_class=3, size=32)
    return root


@pytest.fixture(scope="module")
def linear_run(tiny_converted, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    args = ["--task", "classification", "--checkpoint", str(tiny_converted), "--work-dir", str(out / "wd"),
            "--data-root", str(data / "nwpu_resisc45"), "--results", str(out / "results.csv"),
            "--seed", "3", *SHORT]
    assert main(args) == 0
    return {"work_dir": out / "wd", "results": out / "results.csv", "checkpoint": tiny_converted}


def test_linear_probe_run_writes_row_coverage_and_split(linear_run):
    (row,) = results.read_rows(linear_run["results"])
    assert (row["task"], row["dataset"], row["modality"], row["status"]) == (
        "classification", "nwpu_resisc45_train10%", "optical", "ok")
    assert (row["split"], row["train_ratio"], row["protocol"]) == ("val", "0.1", "linear_probe")
    assert row["primary_metric"] == "accuracy/top1" and math.isfinite(float(row["primary_value"]))
    metrics = json.loads(row["metrics_json"])
    assert metrics["accuracy/top1"] == float(row["primary_value"]) and "accuracy/top5" in metrics
    assert row["checkpoint_sha256"] == results.sha256_file(linear_run["checkpoint"])
    assert "mmpretrain" in json.loads(row["versions_json"])

    cov = json.loads((linear_run["work_dir"] / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["backbone_mapped"] > 0
    assert cov["summary"]["backbone_new"] == 0  # out_indices=(3,): only the pretrained final norm
    assert sorted(k for k in cov["new"]) == ["head.fc.bias", "head.fc.weight"]

    splits = linear_run["work_dir"] / "splits"
    train = (splits / "train.txt").read_text().splitlines()
    val = (splits / "val.txt").read_text().splitlines()
    assert (splits / "classes.txt").read_text().splitlines() == sorted(NWPU_CLASSES)
    assert len(train) == 45 and len(val) == 90  # 10% of 3 rounds to 0: one per class is the floor
    assert train[0].startswith("airplane/airplane_") and train[0].endswith(" 0")
    dumped = (linear_run["work_dir"] / "linear_ringmoe_tiny_nwpu.py").read_text()
    assert "in_channels=256" in dumped and "frozen_stages=3" in dumped and "num_train=45" in dumped


def test_finetune_llrd_run_on_aid(tiny_converted, data, tmp_path):
    """The AID finetune config, with --data-root naming the folder that holds aid/."""
    args = ["--task", "classification", "--config", str(CONFIGS / "finetune_llrd_ringmoe_tiny_aid.py"),
            "--checkpoint", str(tiny_converted), "--work-dir", str(tmp_path / "wd"), "--data-root", str(data),
            "--results", str(tmp_path / "r.csv"), *SHORT, "train_ratio=0.5", "val_dataloader.batch_size=64",
            "model.backbone.moe_reduction=expert_mean"]
    assert main(args) == 0
    (row,) = results.read_rows(tmp_path / "r.csv")
    assert row["dataset"] == "aid_train50%" and math.isfinite(float(row["primary_value"]))
    assert (row["backbone"], row["expert_reduction"], row["protocol"]) == ("ringmoe-tiny", "expert_mean", "finetune_llrd")
    assert len((tmp_path / "wd" / "splits" / "train.txt").read_text().splitlines()) == 60  # 2 of 3 per class
    log = next((tmp_path / "wd").glob("*/*.log")).read_text()
    assert "layer-wise lr decay 0.75" in log


# ---- the split -------------------------------------------------------------------------
def test_stratified_split_is_seeded_and_per_class():
    images = {c: [f"{c}/{c}_{i:03d}.jpg" for i in range(1, 21)] for c in ("a", "b", "c")}
    train, val = stratified_split(images, 0.2, seed=0)
    assert [sum(label == k for _, label in train) for k in range(3)] == [4, 4, 4]
    assert len(val) == 48 and not {p for p, _ in train} & {p for p, _ in val}
    assert stratified_split(images, 0.2, seed=0) == (train, val)
    assert stratified_split(images, 0.2, seed=1)[0] != train
    # A class's draw does not depend on the other classes present.
    alone, _ = stratified_split({"b": images["b"]}, 0.2, seed=0)
    assert [p for p, _ in alone] == [p for p, label in train if label == 1]
    with pytest.raises(ValueError, match="train_ratio"):
        stratified_split(images, 1.0, seed=0)


def test_wrong_class_folders_are_refused(data, tmp_path):
    with pytest.raises(ValueError, match="missing"):
        list_images(data / "aid", sorted(NWPU_CLASSES))
    (tmp_path / "Airport").mkdir()
    with pytest.raises(ValueError, match="unexpected"):
        list_images(tmp_path, ["Airport", "Beach"])


def test_a_data_root_without_the_class_folders_is_one_line_exit_2(tiny_converted, data, tmp_path, capsys):
    args = ["--task", "classification", "--checkpoint", str(tiny_converted), "--work-dir", str(tmp_path / "wd"),
            "--data-root", str(data / "aid"), "--results", str(tmp_path / "results.csv")]  # AID for an NWPU config
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("run: error:") and "missing" in err and "\n" not in err
    assert not (tmp_path / "results.csv").exists()


def _config(name: str):
    from mmengine.config import Config

    return Config.fromfile(str(CONFIGS / name))


def test_split_is_part_of_the_run_identity(data, tmp_path):
    from benchmarks.results import config_hash

    hashes = []
    for ratio, seed in ((0.2, 0), (0.2, 0), (0.5, 0), (0.2, 1)):
        cfg = _config("linear_ringmoe_tiny_aid.py")
        cfg.merge_from_dict({"train_ratio": ratio, "split_seed": seed, "img_size": 48})
        prepare_split(cfg, data, tmp_path / f"{ratio}-{seed}")
        assert cfg.train_dataloader.dataset.data_root == str(data / "aid")
        assert cfg.train_dataloader.dataset.pipeline[1].scale == cfg.train_pipeline[1].scale == 48
        assert cfg.val_dataloader.dataset.pipeline[1].scale == (48, 48)
        hashes.append(config_hash(cfg.pretty_text))
    assert hashes[0] == hashes[1] and len(set(hashes)) == 3
    assert len(AID_CLASSES) == cfg.model.head.num_classes


# ---- the models ------------------------------------------------------------------------
def _build(name: str, **backbone):
    """The config's classifier on the tiny twin (random weights), built in mmpretrain's scope."""
    from mmengine.registry import DefaultScope

    import benchmarks.engine.layer_decay  # noqa: F401  registers the constructor
    import benchmarks.models.registry  # noqa: F401
    from mmpretrain.registry import MODELS

    cfg = _config(name)
    cfg.model.backbone.update(init_cfg=None, **backbone)
    cfg.model.head.in_channels = 256
    with DefaultScope.overwrite_default_scope("mmpretrain"):  # an mmseg run may have left its scope
        return cfg, MODELS.build(cfg.model)


def test_linear_probe_trains_the_head_only():
    _, model = _build("linear_ringmoe_tiny_nwpu.py")
    model.train()
    from mmpretrain.structures import DataSample

    samples = [DataSample().set_gt_label(i) for i in range(2)]
    losses = model(torch.randn(2, 3, 64, 64), samples, mode="loss")
    sum(losses.values()).backward()
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    blocks = [b for stage in model.backbone.layers for b in stage.blocks]
    assert not any(b.training for b in blocks)  # frozen stages stay in eval mode (no drop path)
    assert all(p.grad is not None for p in model.head.parameters())


def test_layer_decay_groups_on_the_tiny_twin():
    from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS

    from benchmarks.engine.layer_decay import layer_id

    cfg, model = _build("finetune_llrd_ringmoe_tiny_nwpu.py", out_indices=(2, 3))
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type=cfg.optim_wrapper.constructor, optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(
            type="AdamW", lr=1e-3, weight_decay=0.05)), paramwise_cfg=dict(layer_decay_rate=0.5)))
    groups = constructor(model).optimizer.param_groups
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    where = {n: g for g in groups for n in g["param_names"]}
    expected_layer = {  # depths (2, 2, 2, 2): 8 blocks, layers 0..9
        "backbone.patch_embed.optical.proj.weight": 0,
        "backbone.layers.0.blocks.0.attn.q.weight": 1,
        "backbone.layers.0.blocks.1.ffn.shared.fc1.weight": 2,
        "backbone.layers.0.downsample.reduction.weight": 2,  # merging joins the block before
        "backbone.layers.1.blocks.0.attn.relative_position_bias_table": 3,
        "backbone.layers.3.blocks.1.ffn.modal_experts.optical.fc1.weight": 8,
        "backbone.out_norms.2.weight": 9, "backbone.norm.bias": 9, "head.fc.weight": 9,
    }
    for name, layer in expected_layer.items():
        group = where[name]
        assert group["layer_id"] == layer, name
        assert group["lr"] == pytest.approx(1e-3 * 0.5 ** (9 - layer)), name
    no_decay = ["backbone.patch_embed.optical.norm.weight", "backbone.layers.0.blocks.0.attn.q.bias",
                "backbone.layers.1.blocks.0.attn.relative_position_bias_table", "backbone.norm.bias",
                "backbone.layers.3.blocks.1.ffn.cross_experts.fc2.bias", "head.fc.bias"]
    assert all(where[n]["weight_decay"] == 0.0 for n in no_decay)
    assert where["backbone.layers.2.blocks.0.attn.q.weight"]["weight_decay"] == 0.05
    assert where["backbone.layers.2.blocks.0.ffn.modal_routers.optical.weight"]["weight_decay"] == 0.05
    assert all(len({where[n]["layer_id"] for n in g["param_names"]}) == 1 for g in groups)
    with pytest.raises(ValueError, match="no layer-decay rule"):
        layer_id("backbone.extra.weight", [2, 2, 2, 2])
    with pytest.raises(ValueError, match="unsupported paramwise_cfg"):
        OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
            type=cfg.optim_wrapper.constructor, optim_wrapper_cfg=dict(optimizer=dict(type="AdamW", lr=1e-3)),
            paramwise_cfg=dict(layer_decay_rate=0.5, bias_decay_mult=0.0)))
