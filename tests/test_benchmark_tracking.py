"""benchmarks/run.py on the tracking task: a short real ByteTrack run through TrackEval, and bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mmengine.config import Config

from benchmarks import results
from benchmarks.datasets.mot import generate_airmot
from benchmarks.models.loading import read_converted_meta
from benchmarks.run import main
from benchmarks.tasks import get_task
from benchmarks.tasks.tracking import fit_tracking_heads

REPO = Path(__file__).resolve().parents[1]
# Two iterations of two frames, no worker processes: the whole pipeline, as fast as it goes on a CPU.
SHORT = ["--cfg-options", "train_cfg.max_iters=2", "train_dataloader.batch_size=2",
         "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
         "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"]


@pytest.fixture(scope="module")
def track_run(tiny_converted, tmp_path_factory):
    """The demo generator's data, smaller (2 videos x 8 frames), passed as real data would be."""
    root = tmp_path_factory.mktemp("track")
    data = generate_airmot(root / "airmot", num_seqs=2, num_frames=8)
    args = ["--task", "tracking", "--checkpoint", str(tiny_converted), "--data-root", str(data),
            "--work-dir", str(root / "wd"), "--results", str(root / "results.csv"), "--seed", "2", *SHORT]
    assert main(args) == 0
    return {"root": root, "work_dir": root / "wd", "results": root / "results.csv", "checkpoint": tiny_converted}


def test_run_writes_a_row_with_trackeval_metrics(track_run):
    (row,) = results.read_rows(track_run["results"])
    assert (row["task"], row["dataset"], row["modality"], row["status"]) == ("tracking", "airmot", "optical", "ok")
    assert row["primary_metric"] == "motchallenge-metric/HOTA" and math.isfinite(float(row["primary_value"]))
    metrics = json.loads(row["metrics_json"])
    for key in ("HOTA", "MOTA", "IDF1", "IDSW", "FN"):
        assert f"motchallenge-metric/{key}" in metrics
    # TrackEval saw every val box (the second half of each video): TP + FN.
    val = json.loads((track_run["work_dir"] / "annotations" / "val_cocovideo.json").read_text())
    assert metrics["motchallenge-metric/TP"] + metrics["motchallenge-metric/FN"] == len(val["annotations"]) > 0
    assert set(json.loads(row["versions_json"])) == {"torch", "mmengine", "mmcv", "mmdet", "numpy"}


def test_coverage_puts_the_backbone_under_the_detector(track_run):
    cov = json.loads((track_run["work_dir"] / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["unexplained"] == 0
    assert cov["summary"]["backbone_mapped"] > 0
    assert all(k.startswith("detector.backbone.") for k in cov["mapped"])
    heads = [k for k in cov["new"] if not k.startswith("detector.backbone.")]
    assert any(k.startswith("detector.neck.") for k in heads) and any(k.startswith("detector.bbox_head.") for k in heads)
    assert all("downstream head" in cov["new"][k] for k in heads)


def test_resolved_config_is_filled_from_the_checkpoint(track_run):
    dumped = Config.fromfile(str(track_run["work_dir"] / "bytetrack_yolox_ringmoe_tiny_airmot.py"))
    detector = dumped.model.detector
    assert detector.backbone.type == "RingMoE" and detector.backbone.embed_dim == 32
    assert detector.neck.in_channels == [32, 64, 128] and list(detector.bbox_head.strides) == [4, 8, 16]
    pre = dumped.model.data_preprocessor
    optical = next(m for m in read_converted_meta(track_run["checkpoint"])["modalities"] if m["name"] == "optical")
    assert pre.type == "TrackDataPreprocessor"
    assert pre.mean == [round(v * 255, 4) for v in optical["mean"]] and pre.std == [round(v * 255, 4) for v in optical["std"]]
    for loader, prefix in (("train_dataloader", "img"), ("val_dataloader", "img_path")):
        dataset = dumped[loader].dataset
        assert Path(dataset.ann_file).is_file() and dataset.data_prefix == {prefix: "train"}


def test_fit_heads_follows_the_out_indices():
    cfg = Config.fromfile(str(REPO / get_task("tracking").config))
    cfg.model.detector.backbone.out_indices = (1, 2, 3)
    fit_tracking_heads(cfg, [64, 128, 256])
    assert cfg.model.detector.neck.in_channels == [64, 128, 256]
    assert cfg.model.detector.bbox_head.strides == [8, 16, 32]


def test_data_root_without_the_mot_layout_is_bad_input(tiny_converted, tmp_path, capsys):
    (tmp_path / "not_mot" / "images").mkdir(parents=True)
    rc = main(["--task", "tracking", "--checkpoint", str(tiny_converted), "--data-root", str(tmp_path / "not_mot"),
               "--work-dir", str(tmp_path / "wd"), "--results", str(tmp_path / "r.csv"), *SHORT])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run: error:") and "MOT-layout" in err[0]
    assert not (tmp_path / "r.csv").exists()
