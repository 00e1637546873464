"""Single-model checkpoints (ms2torch --family) in the benchmark runner: the backbone type and
arguments come from the checkpoint's meta, the weights load with a coverage check, and a linear
probe leaves them exactly as converted.

The family here is mindcv's ResNet-18 (the same path as the seed-zoo families: converters/mindcv.py
rules, an mmpretrain ImageClassifier state dict, benchmarks/models/family_loading.py).
"""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks.models.family_loading import FAMILY_FORMAT, load_part, load_parts, read_family_checkpoint
from benchmarks.models.loading import CoverageError
from benchmarks.run import main as run_main
from converters.ms2torch import main as convert_main

LINEAR = "configs/benchmarks/classification/linear_converted_nwpu.py"


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory) -> dict:
    """A mindcv ResNet-18 saved by MindSpore, with BatchNorm statistics moved off their defaults,
    converted with the CLI."""
    import mindspore as ms
    import numpy as np
    from mindcv.models import create_model

    root = tmp_path_factory.mktemp("family")
    net = create_model("resnet18", num_classes=10)
    rng = np.random.default_rng(0)
    for param in net.get_parameters():
        if "moving_" in param.name:  # stats a training run would have moved; a linear probe must not
            value = rng.uniform(0.5, 1.5, param.shape) if "variance" in param.name else rng.normal(0, 0.1, param.shape)
            param.set_data(ms.Tensor(value.astype(np.float32)))
    ms.save_checkpoint(net, str(root / "resnet18.ckpt"))
    out = root / "resnet18.pth"
    assert convert_main([str(root / "resnet18.ckpt"), "-o", str(out), "--family", "resnet:resnet18"]) == 0
    return {"root": root, "pth": out}


def test_conversion_meta_names_the_target_and_the_source(resnet18):
    state_dict, meta = read_family_checkpoint(resnet18["pth"])
    assert meta["format"] == FAMILY_FORMAT
    assert (meta["family"], meta["variant"]) == ("resnet", "resnet18")
    assert meta["target_config"]["backbone"]["type"] == "MindCVResNet"
    assert len(meta["source"]["sha256"]) == 64 and meta["input"]["mean"] == [0.485, 0.456, 0.406]
    assert any(k.startswith("backbone.") for k in state_dict) and "head.fc.weight" in state_dict


@pytest.fixture(scope="module")
def linear_run(resnet18) -> dict:
    work_dir = resnet18["root"] / "linear"
    results = resnet18["root"] / "results.csv"
    code = run_main(["--task", "classification", "--config", LINEAR, "--checkpoint", str(resnet18["pth"]),
                     "--iters", "2", "--work-dir", str(work_dir), "--results", str(results),
                     "--cfg-options", "train_dataloader.num_workers=0", "val_dataloader.num_workers=0",
                     "train_dataloader.persistent_workers=False", "val_dataloader.persistent_workers=False"])
    return {"code": code, "work_dir": work_dir, "results": results}


def test_linear_probe_row_and_coverage(linear_run, resnet18):
    from benchmarks.results import read_rows

    assert linear_run["code"] == 0
    (row,) = read_rows(linear_run["results"])
    assert (row["backbone"], row["protocol"]) == ("resnet18", "linear_probe")
    assert 0.0 <= float(row["primary_value"]) <= 100.0
    report = json.loads((linear_run["work_dir"] / "coverage.json").read_text())
    state_dict, _ = read_family_checkpoint(resnet18["pth"])
    backbone_keys = [k for k in state_dict if k.startswith("backbone.")]
    assert report["summary"] == {"backbone_mapped": len(backbone_keys), "backbone_new": 0,
                                 "checkpoint_dropped": 2, "head_new": 2, "unexplained": 0}
    assert set(report["dropped"]) == {"head.fc.weight", "head.fc.bias"}
    assert all(report["mapped"][k] == k for k in backbone_keys)


def test_linear_probe_leaves_the_converted_backbone_untouched(linear_run, resnet18):
    """Weights and BatchNorm statistics after training equal the converted ones: loaded (not
    re-initialised by any init_weights) and frozen in eval mode by FreezeBackboneHook."""
    state_dict, _ = read_family_checkpoint(resnet18["pth"])
    saved = torch.load(linear_run["work_dir"] / "iter_2.pth", map_location="cpu", weights_only=False)["state_dict"]
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            assert torch.equal(saved[key], value), key


def test_a_config_for_another_backbone_is_refused_in_one_line(resnet18, tmp_path, capsys):
    code = run_main(["--task", "classification", "--checkpoint", str(resnet18["pth"]), "--iters", "1",
                     "--work-dir", str(tmp_path / "wd"), "--results", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "builds a RingMoE backbone, but the checkpoint holds a resnet MindCVResNet" in err[0]
    assert not (tmp_path / "r.csv").exists()


def test_the_converted_backbone_config_needs_a_checkpoint(tmp_path, capsys):
    code = run_main(["--task", "classification", "--config", LINEAR, "--checkpoint", "none",
                     "--work-dir", str(tmp_path / "wd"), "--results", str(tmp_path / "r.csv")])
    assert code == 2 and "takes its backbone from the checkpoint" in capsys.readouterr().err


def _gem_classifier():
    import benchmarks  # noqa: F401
    import mmpretrain.models  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    cfg = dict(type="ImageClassifier", backbone=dict(type="ResNet", depth=18, out_indices=(3,)),
               neck=dict(type="GeneralizedMeanPooling", p=3.0), head=dict(type="LinearClsHead", num_classes=5,
                                                                          in_channels=512))
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        return MODELS.build(cfg)


def test_load_parts_takes_the_neck_and_accounts_for_every_key():
    meta = {"family": "resnet"}  # its NEW table declares num_batches_tracked
    source = _gem_classifier()
    with torch.no_grad():
        source.neck.p.fill_(4.5)
    state_dict = {k: v.clone() for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    target = _gem_classifier()
    report = load_parts(target, state_dict, meta, {"backbone": "backbone", "neck": "neck"})
    assert float(target.neck.p.detach()) == 4.5
    assert report.mapped["neck.p"] == "neck.p"
    assert set(report.dropped) == {"head.fc.weight", "head.fc.bias"}
    assert report.new and all(k.endswith("num_batches_tracked") for k in report.new)


def test_load_part_names_missing_extra_and_misshapen_keys():
    meta = {"family": "resnet"}
    source = _gem_classifier().state_dict()
    missing = {k: v for k, v in source.items() if k != "backbone.layer1.0.conv1.weight"}
    with pytest.raises(CoverageError, match=r"neither in the checkpoint under backbone\. nor declared new: layer1\.0\.conv1\.weight"):
        load_part(_gem_classifier().backbone, missing, meta)
    extra = dict(source, **{"backbone.layer9.weight": torch.zeros(1)})
    with pytest.raises(CoverageError, match="no place in the ResNet.*layer9.weight"):
        load_part(_gem_classifier().backbone, extra, meta)
    wrong = dict(source, **{"backbone.conv1.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(CoverageError, match=r"shape mismatches.*backbone\.conv1\.weight \[64, 3, 3, 3\]"):
        load_part(_gem_classifier().backbone, wrong, meta)
