"""benchmarks/run.py on the change detection task (BIT on LEVIR-CD / CDD), and the parts it is
built from: the siamese segmentor, fit_heads, the change metric."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import results
from benchmarks.run import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "benchmarks" / "change_detection"
# Two iterations of two pairs, no worker processes: the whole pipeline, as fast as it goes on a CPU.
SHORT = ["--iters", "2", "--cfg-options", "train_dataloader.batch_size=2", "train_dataloader.num_workers=0",
         "train_dataloader.persistent_workers=False", "val_dataloader.num_workers=0",
         "val_dataloader.persistent_workers=False"]
METRIC_KEYS = {"change/F1", "change/IoU", "change/precision", "change/recall", "OA"}


@pytest.fixture(scope="module")
def cd_run(tiny_converted, tmp_path_factory):
    root = tmp_path_factory.mktemp("cd")
    args = ["--task", "change_detection", "--checkpoint", str(tiny_converted), "--work-dir", str(root / "wd"),
            "--results", str(root / "results.csv"), *SHORT]
    assert main(args) == 0
    return {"root": root, "work_dir": root / "wd", "results": root / "results.csv", "checkpoint": tiny_converted}


def test_run_writes_row_and_coverage(cd_run):
    (row,) = results.read_rows(cd_run["results"])
    assert (row["task"], row["dataset"], row["modality"], row["status"]) == (
        "change_detection", "levir_cd", "optical", "ok")
    assert row["primary_metric"] == "change/F1" and math.isfinite(float(row["primary_value"]))
    metrics = json.loads(row["metrics_json"])
    assert METRIC_KEYS <= set(metrics) and metrics["change/F1"] == float(row["primary_value"])
    assert 0.0 <= metrics["OA"] <= 100.0
    assert row["checkpoint_sha256"] == results.sha256_file(cd_run["checkpoint"])

    cov = json.loads((cd_run["work_dir"] / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["unexplained"] == 0
    assert cov["summary"]["backbone_mapped"] > 0 and cov["summary"]["head_new"] > 0
    heads = [k for k in cov["new"] if not k.startswith("backbone.")]
    assert {k.split(".")[0] for k in heads} == {"neck", "decode_head"}
    assert not any(k.startswith(("neck.", "decode_head.")) for k in cov["mapped"])

    # fit_heads: the neck got the backbone's widths, the preprocessor the meta's mean/std twice.
    from mmengine.config import Config

    from benchmarks.models.loading import read_converted_meta

    dumped = Config.fromfile(str(cd_run["work_dir"] / "bit_ringmoe_tiny_levir_cd.py"))
    assert dumped.model.neck.in_channels == [32, 64, 128, 256]
    optical = next(m for m in read_converted_meta(cd_run["checkpoint"])["modalities"] if m["name"] == "optical")
    assert dumped.model.data_preprocessor.mean == [round(v * 255, 4) for v in optical["mean"]] * 2
    assert dumped.model.data_preprocessor.std == [round(v * 255, 4) for v in optical["std"]] * 2


def test_cdd_config_gets_its_own_demo(cd_run, tiny_converted):
    """The CDD config on the generated LEVIR-CD root: the task swaps in a generated CDD (JPEG, OUT/)."""
    root = cd_run["root"]
    args = ["--task", "change_detection", "--config", str(CONFIGS / "bit_ringmoe_tiny_cdd.py"),
            "--checkpoint", str(tiny_converted), "--work-dir", str(root / "wd_cdd"),
            "--results", str(root / "cdd.csv"), *SHORT[:-2]]
    args[args.index("--iters") + 1] = "1"
    assert main(args) == 0
    (row,) = results.read_rows(root / "cdd.csv")
    assert row["dataset"] == "cdd" and math.isfinite(float(row["primary_value"]))
    assert (root / "data" / "cdd" / "val" / "OUT" / "00000.jpg").is_file()


def test_resnet18_baseline_from_scratch(tmp_path):
    args = ["--task", "change_detection", "--config", str(CONFIGS / "bit_resnet18_levir_cd.py"),
            "--checkpoint", "none", "--work-dir", str(tmp_path / "wd"), "--results", str(tmp_path / "r.csv"),
            *SHORT]
    assert main(args) == 0
    (row,) = results.read_rows(tmp_path / "r.csv")
    assert row["primary_metric"] == "change/F1" and math.isfinite(float(row["primary_value"]))
    assert row["backbone"] == "resnet18-random-init"
    cov = json.loads((tmp_path / "wd" / "coverage.json").read_text())
    assert cov["summary"]["unexplained"] == 0 and cov["summary"]["backbone_mapped"] == 0
    assert any(k.startswith("backbone.layer3.") for k in cov["new"])  # ResNet-18's third stage
    from mmengine.config import Config

    dumped = Config.fromfile(str(tmp_path / "wd" / "bit_resnet18_levir_cd.py"))
    assert dumped.model.backbone.type == "ResNetV1c" and dumped.model.neck.in_channels == [64, 128, 256]


def test_data_root_without_the_layout_is_bad_input(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    rc = main(["--task", "change_detection", "--checkpoint", "none", "--data-root", str(tmp_path / "data"),
               "--work-dir", str(tmp_path / "wd"), "--results", str(tmp_path / "r.csv")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("run: error:") and "train/A" in err and err.count("\n") == 1
    assert not (tmp_path / "r.csv").exists()


# ---- the parts ---------------------------------------------------------------------------
def _model_cfg():
    import benchmarks.models.change_detection  # noqa: F401  registers the modules
    import benchmarks.models.registry  # noqa: F401
    from mmengine.config import Config
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(str(CONFIGS / "bit_ringmoe_tiny_levir_cd.py"))
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.dec_depth = 1
    return cfg


def test_one_backbone_sees_both_dates_in_one_batch():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData

    torch.manual_seed(0)
    model = MODELS.build(_model_cfg().model)
    calls = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    inputs = torch.randn(2, 6, 64, 64)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 2, (1, 64, 64)))
        samples.append(sample)
    losses = model.loss(inputs, samples)
    assert calls == [torch.Size([4, 3, 64, 64])]  # one call: dates A of both pairs, then dates B
    losses["decode.loss_ce"].backward()
    backbones = [name for name, m in model.named_modules() if type(m).__name__ == "RingMoE"]
    assert backbones == ["backbone"]
    embed = model.backbone.patch_embed["optical"].proj.weight
    assert embed.grad is not None and embed.grad.abs().sum() > 0  # both dates' losses reach it

    # Shared weights: the same image on both dates gives the same features, in either slot.
    model.eval()
    with torch.no_grad():
        image = torch.randn(1, 3, 64, 64)
        feat_a, feat_b = model.extract_feat(torch.cat([image, image], dim=1))
        torch.testing.assert_close(feat_a, feat_b, atol=1e-4, rtol=1e-4)
        other = torch.randn(1, 3, 64, 64)
        swapped_a, swapped_b = model.extract_feat(torch.cat([other, image], dim=1))
        torch.testing.assert_close(swapped_b, feat_a, atol=1e-4, rtol=1e-4)


def test_fit_heads_sizes_ringmoe_and_leaves_resnet():
    from mmengine.config import Config

    from benchmarks.tasks.change_detection import fit_cd_heads

    cfg = Config.fromfile(str(CONFIGS / "bit_ringmoe_tiny_levir_cd.py"))
    cfg.model.data_preprocessor.mean = [1.0, 2.0, 3.0]  # what run.py writes from one modality's meta
    cfg.model.data_preprocessor.std = [4.0, 5.0, 6.0]
    fit_cd_heads(cfg, [64, 128, 256, 512])
    assert cfg.model.neck.in_channels == [64, 128, 256, 512]
    assert cfg.model.data_preprocessor.mean == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    assert cfg.model.data_preprocessor.std == [4.0, 5.0, 6.0, 4.0, 5.0, 6.0]
    fit_cd_heads(cfg, [64, 128, 256, 512])  # both dates present: unchanged
    assert len(cfg.model.data_preprocessor.mean) == 6
    cfg.model.data_preprocessor.mean = [1.0, 2.0]
    with pytest.raises(ValueError, match="3 \\(one date"):
        fit_cd_heads(cfg, [32])

    resnet = Config.fromfile(str(CONFIGS / "bit_resnet18_levir_cd.py"))
    fit_cd_heads(resnet, [32, 64, 128, 256])  # the runner's RingMoE widths: not for a ResNet
    assert resnet.model.neck.in_channels == [64, 128, 256]


def _sample(pred: list[list[int]], label: list[list[int]]) -> dict:
    return {"pred_sem_seg": {"data": torch.tensor([pred])}, "gt_sem_seg": {"data": torch.tensor([label])}}


def test_metric_on_a_known_confusion():
    from benchmarks.models.change_detection import ChangeDetectionMetric

    metric = ChangeDetectionMetric()
    # Pixels (pred, label): 3 TP, 1 FP, 2 FN, 4 TN in two images, plus 2 ignored pixels.
    metric.process({}, [_sample([[1, 1, 1, 1, 0]], [[1, 1, 1, 0, 1]]),
                        _sample([[0, 0, 0, 0, 0, 1, 0]], [[1, 0, 0, 0, 0, 255, 255]])])
    scores = metric.compute_metrics(metric.results)
    expected = {"change/F1": 100 * 6 / 9, "change/IoU": 50.0, "change/precision": 75.0,
                "change/recall": 60.0, "OA": 70.0}
    assert scores.keys() == expected.keys()
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value)

    # Predicting nothing where nothing changed: precision and F1 have nothing to count (NaN, not 0).
    empty = ChangeDetectionMetric()
    empty.process({}, [_sample([[0, 0]], [[0, 0]])])
    scores = empty.compute_metrics(empty.results)
    assert math.isnan(scores["change/F1"]) and math.isnan(scores["change/precision"]) and scores["OA"] == 100.0
