"""benchmarks/run.py on the rotated_detection task: short real runs on DOTA-txt, DIOR-R and HRSC2016 data."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import results
from benchmarks.datasets.rotated import generate_rotated
from benchmarks.run import main
from benchmarks.tasks import get_task
from benchmarks.tasks.rotated_detection import write_dior_trainval

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "benchmarks" / "rotated_detection"
# Two iterations, no worker processes: training, evaluation and the row, as fast as it goes on a CPU.
SHORT = ["--cfg-options", "train_cfg.max_iters=2", "train_dataloader.num_workers=0",
         "train_dataloader.persistent_workers=False", "val_dataloader.num_workers=0",
         "val_dataloader.persistent_workers=False", "default_hooks.logger.interval=1"]
RUNS = {  # config stem -> (results dataset column, primary metric)
    "rotated_retinanet_ringmoe_tiny_dota": ("dota", "dota/mAP"),
    "rotated_retinanet_ringmoe_tiny_dior_r": ("dior-r", "dota/mAP"),
    "rotated_retinanet_ringmoe_tiny_hrsc2016": ("hrsc2016", "voc07/mAP"),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """All three layouts in one small root (what the runner generates, smaller)."""
    return generate_rotated(tmp_path_factory.mktemp("rot") / "data", num_train=2, num_test=2, seed=1)


@pytest.fixture(scope="module", params=sorted(RUNS))
def rot_run(request, tiny_converted, data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    args = ["--task", "rotated_detection", "--config", str(CONFIGS / f"{request.param}.py"),
            "--checkpoint", str(tiny_converted), "--data-root", str(data_root),
            "--work-dir", str(root / "wd"), "--results", str(root / "results.csv"), "--seed", "2", *SHORT]
    assert main(args) == 0
    return {"config": request.param, "work_dir": root / "wd", "results": root / "results.csv",
            "checkpoint": tiny_converted}


def test_run_writes_row_and_coverage(rot_run):
    dataset, primary = RUNS[rot_run["config"]]
    (row,) = results.read_rows(rot_run["results"])
    assert (row["task"], row["dataset"], row["modality"], row["status"]) == (
        "rotated_detection", dataset, "optical", "ok")
    assert row["primary_metric"] == primary and math.isfinite(float(row["primary_value"]))
    assert json.loads(row["metrics_json"])[primary] == float(row["primary_value"])
    assert row["checkpoint_sha256"] == results.sha256_file(rot_run["checkpoint"])
    assert "mmrotate" in json.loads(row["versions_json"])

    cov = json.loads((rot_run["work_dir"] / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["backbone_mapped"] > 0
    heads = [k for k in cov["new"] if not k.startswith("backbone.")]
    assert any(k.startswith("neck.") for k in heads) and any(k.startswith("bbox_head.") for k in heads)
    assert all("downstream head" in cov["new"][k] for k in heads)

    dumped = (rot_run["work_dir"] / f"{rot_run['config']}.py").read_text()
    assert "type='RingMoE'" in dumped and "embed_dim=32" in dumped  # filled from the checkpoint meta
    from mmengine.config import Config

    assert Config.fromfile(str(rot_run["work_dir"] / f"{rot_run['config']}.py")).model.neck.in_channels == [
        64, 128, 256]  # the FPN takes stages 1-3 of the tiny backbone


def test_training_losses_are_finite(rot_run):
    """mmrotate 1.x on mmdet 3.3 is reported to give NaN losses for some models: not this one."""
    scalars = [json.loads(line) for path in rot_run["work_dir"].glob("*/vis_data/scalars.json")
               for line in path.read_text().splitlines()]
    train = [s for s in scalars if "loss" in s]
    assert [s["iter"] for s in train] == [1, 2]
    for step in train:
        for key in ("loss", "loss_cls", "loss_bbox"):
            assert math.isfinite(step[key]) and step[key] > 0, step


def test_default_config_is_dota_style(tmp_path):
    spec = get_task("rotated_detection")
    assert spec.config.endswith("rotated_retinanet_ringmoe_tiny_dota.py") and spec.metric == "dota/mAP"
    assert spec.demo_data(tmp_path).joinpath("train", "labelTxt").is_dir()


def test_dior_trainval_is_the_union_of_train_and_val(tmp_path):
    from mmengine.config import Config

    data_root = generate_rotated(tmp_path / "dior", formats=["dior"], num_train=5, num_test=1, size=96)
    cfg = Config.fromfile(str(CONFIGS / "rotated_retinanet_ringmoe_tiny_dior_r.py"))
    write_dior_trainval(cfg, data_root, tmp_path)
    ann = Path(cfg.train_dataloader.dataset.ann_file)
    main_lists = data_root / "ImageSets" / "Main"
    assert ann.parent == tmp_path and ann.read_text().split() == (
        (main_lists / "train.txt").read_text().split() + (main_lists / "val.txt").read_text().split())
    (main_lists / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        write_dior_trainval(Config.fromfile(str(CONFIGS / "rotated_retinanet_ringmoe_tiny_dior_r.py")),
                            data_root, tmp_path)
