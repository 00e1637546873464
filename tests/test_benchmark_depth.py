"""benchmarks/run.py on the depth (nDSM height) task, and the BinsFormer / regression heads."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from benchmarks import results
from benchmarks.run import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "benchmarks" / "depth"
NO_WORKERS = ["train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
              "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"]
DEPTH_KEYS = {"d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"}


@pytest.fixture(scope="module")
def depth_run(tiny_converted, tmp_path_factory):
    root = tmp_path_factory.mktemp("depth")
    args = ["--task", "depth", "--checkpoint", str(tiny_converted), "--work-dir", str(root / "wd"),
            "--results", str(root / "results.csv"), "--seed", "3", "--iters", "3", "--cfg-options", *NO_WORKERS]
    assert main(args) == 0
    return {"root": root, "work_dir": root / "wd", "results": root / "results.csv", "data": root / "data"}


def test_binsformer_run_writes_row_and_coverage(depth_run):
    (row,) = results.read_rows(depth_run["results"])
    assert (row["task"], row["dataset"], row["modality"], row["status"]) == (
        "depth", "vaihingen_ndsm", "optical", "ok")
    assert row["primary_metric"] == "rmse" and math.isfinite(float(row["primary_value"]))
    metrics = json.loads(row["metrics_json"])
    assert DEPTH_KEYS <= set(metrics) and metrics["rmse"] == float(row["primary_value"]) > 0
    assert 0 <= metrics["d1"] <= metrics["d2"] <= metrics["d3"] <= 1
    assert "mmsegmentation" in json.loads(row["versions_json"])

    cov = json.loads((depth_run["work_dir"] / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["unexplained"] == 0
    assert cov["summary"]["backbone_mapped"] > 0
    heads = [k for k in cov["new"] if k.startswith("decode_head.")]
    assert "decode_head.query_feat.weight" in heads and "decode_head.width_head.0.weight" in heads
    assert all("downstream head" in cov["new"][k] for k in heads)

    dumped = (depth_run["work_dir"] / "binsformer_ringmoe_tiny_vaihingen.py").read_text()
    assert re.search(r"in_channels=\[\s*32,\s*64,\s*128,\s*256,?\s*\]", dumped)  # fitted to the widths
    assert "type='RingMoE'" in dumped and "embed_dim=32" in dumped  # filled from the checkpoint meta


def test_regression_baseline_runs(depth_run, tiny_converted, tmp_path):
    args = ["--task", "depth", "--checkpoint", str(tiny_converted), "--work-dir", str(tmp_path / "wd"),
            "--results", str(tmp_path / "r.csv"),
            "--config", str(CONFIGS / "regression_ringmoe_tiny_vaihingen.py"),
            "--data-root", str(depth_run["data"] / "vaihingen_ndsm"),
            "--iters", "2", "--cfg-options", *NO_WORKERS]
    assert main(args) == 0
    (row,) = results.read_rows(tmp_path / "r.csv")
    assert row["dataset"] == "vaihingen_ndsm" and row["primary_metric"] == "rmse"
    assert math.isfinite(float(row["primary_value"]))
    cov = json.loads((tmp_path / "wd" / "coverage.json").read_text())
    assert cov["summary"]["unexplained"] == 0 and "decode_head.depth_conv.1.weight" in cov["new"]


def test_potsdam_config_gets_its_own_demo_data(depth_run):
    """The Potsdam config gets its own demo data, whose 16-bit PNG centimetres mmseg reads as metres."""
    import benchmarks  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from benchmarks.run import set_data_root
    from benchmarks.tasks import get_task

    cfg = Config.fromfile(str(CONFIGS / "binsformer_ringmoe_tiny_potsdam.py"))
    potsdam = get_task("depth").demo_data(depth_run["data"], cfg)
    assert potsdam == depth_run["data"] / "potsdam_ndsm"
    set_data_root(cfg, potsdam)
    init_default_scope("mmseg")
    sample = DATASETS.build(cfg.val_dataloader.dataset)[0]["data_samples"]
    assert Path(sample.depth_map_path).suffix == ".png" and Path(sample.img_path).name.startswith("top_potsdam_")
    gt = sample.gt_depth_map.data
    assert gt.dtype == torch.float32 and 0.05 <= gt.min() and gt.max() < 40  # metres


# ---- the heads -----------------------------------------------------------------------------
WIDTHS = [32, 64, 128, 256]


def _features(batch: int = 2, size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sides = [size // 4 // 2**i for i in range(len(WIDTHS))]
    return [torch.randn(batch, c, s, s, generator=gen) for c, s in zip(WIDTHS, sides)]


def _binsformer(**kwargs):
    import benchmarks  # noqa: F401
    from benchmarks.models.depth import BinsFormerHead

    torch.manual_seed(0)
    args = dict(in_channels=WIDTHS, channels=32, embed_dim=32, num_bins=16, num_layers=3, num_heads=4,
                ffn_channels=64, min_depth=0.5, max_depth=30.0, norm_cfg=dict(type="GN", num_groups=8))
    return BinsFormerHead(**{**args, **kwargs})


def _samples(gt: torch.Tensor):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for depth in gt:
        sample = SegDataSample()
        sample.gt_depth_map = PixelData(data=depth)
        samples.append(sample)
    return samples


def test_binsformer_depth_is_the_probability_weighted_bin_centres():
    head = _binsformer().eval()
    with torch.no_grad():
        predictions = head.forward_bins(_features())
        final = head(_features())
    assert len(predictions) == 3  # one per decoder layer
    for p in predictions:
        assert p.widths.shape == p.centres.shape == (2, 16) and p.probs.shape == (2, 16, 16, 16)
        assert (p.widths > 0).all()
        torch.testing.assert_close(p.widths.sum(1), torch.full((2,), 29.5))  # max_depth - min_depth
        assert (p.centres.diff(dim=1) > 0).all() and (p.centres > 0.5).all() and (p.centres < 30).all()
        torch.testing.assert_close(p.centres[:, 0], 0.5 + p.widths[:, 0] / 2)
        torch.testing.assert_close(p.probs.sum(1), torch.ones(2, 16, 16))
        expected = (p.probs * p.centres[:, :, None, None]).sum(1, keepdim=True)
        torch.testing.assert_close(p.depth, expected)
    torch.testing.assert_close(final, predictions[-1].depth)
    # Bins adapt to the image: different inputs give different bin widths.
    with torch.no_grad():
        other = head.forward_bins(_features(seed=1))[-1]
    assert not torch.allclose(other.widths, predictions[-1].widths)


def test_binsformer_loss_has_the_deep_supervision_terms():
    from mmseg.models.utils import resize

    head = _binsformer(aux_loss_weight=0.5)
    feats = _features()
    gt = torch.rand(2, 1, 64, 64) * 20 + 0.2
    gt[0, 0, :8] = 0  # invalid (e.g. padding): masked by SILog
    torch.manual_seed(1)
    losses = head.loss(feats, _samples(gt), train_cfg={})
    assert set(losses) == {"loss_silog", "loss_silog_aux0", "loss_silog_aux1"}
    head.eval()  # no dropout: recompute each layer's SILog by hand
    with torch.no_grad():
        predictions = head.forward_bins(feats)
        terms = (("loss_silog_aux0", predictions[0], 0.5), ("loss_silog_aux1", predictions[1], 0.5),
                 ("loss_silog", predictions[2], 1.0))
        for key, pred, weight in terms:
            up = resize(pred.depth, size=(64, 64), mode="bilinear", align_corners=False)
            expected = weight * head.loss_decode(up, gt)
            torch.testing.assert_close(losses[key].detach(), expected, rtol=1e-4, atol=1e-5)
    total = sum(losses.values())
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    assert head.query_feat.weight.grad.abs().sum() > 0 and head.width_head[0].weight.grad.abs().sum() > 0


def test_regression_head_stays_in_range():
    import benchmarks  # noqa: F401
    from benchmarks.models.depth import RegressionDepthHead

    head = RegressionDepthHead(in_channels=WIDTHS, channels=32, min_depth=0.5, max_depth=30.0,
                               norm_cfg=dict(type="GN", num_groups=8))
    depth = head(_features())
    assert depth.shape == (2, 1, 16, 16) and (depth > 0.5).all() and (depth < 30).all()
    losses = head.loss(_features(), _samples(torch.rand(2, 1, 64, 64) * 10 + 0.1), train_cfg={})
    assert set(losses) == {"loss_silog"} and torch.isfinite(losses["loss_silog"])


def test_fit_heads_sizes_the_decode_head():
    from mmengine.config import Config

    from benchmarks.tasks.depth import fit_depth_head

    cfg = Config.fromfile(str(CONFIGS / "binsformer_ringmoe_tiny_vaihingen.py"))
    cfg.model.decode_head.in_index = [1, 2, 3]
    fit_depth_head(cfg, [128, 256, 512, 1024])
    assert cfg.model.decode_head.in_channels == [256, 512, 1024]
    assert cfg.primary_metric == "rmse" and cfg.dataset_name == "vaihingen_ndsm"
