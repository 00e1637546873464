"""The whole chain at tiny scale: a few pretraining steps (with a resume), convert, segment."""
from __future__ import annotations

import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_pretrain_resume_convert_and_segment(tmp_path):
    from benchmarks import results
    from benchmarks.run import main as run_benchmark
    from converters.ms2torch import main as convert
    from pretrain.train import main as pretrain

    work = tmp_path / "pretrain"
    common = ["--config", str(REPO / "configs/pretrain/tiny.py"), "--work-dir", str(work), "--cfg-options",
              "data.batch_size=1", "data.demo_tiles=2", "train.log_interval=1", "train.save_interval=1"]
    assert pretrain(common + ["train.steps=2"]) == 0
    assert (work / "last_checkpoint").read_text().strip() == "ringmoe-tiny-step2.ckpt"
    assert pretrain(["--resume"] + common + ["train.steps=3"]) == 0
    log = (work / "train.log").read_text()
    assert "resumed from" in log and "ringmoe-tiny-step2.ckpt at step 2" in log
    steps = [json.loads(line)["step"] for line in (work / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert (work / "loss.png").stat().st_size > 0

    converted = tmp_path / "ringmoe_tiny.pth"
    assert convert([str(work / "ringmoe-tiny-step3.ckpt"), "-o", str(converted), "--arch", "tiny"]) == 0
    meta = torch.load(converted, weights_only=True)["meta"]
    assert meta["pretrain"]["step"] == 3

    table = tmp_path / "results.csv"
    seg = tmp_path / "segmentation"
    code = run_benchmark(["--task", "segmentation", "--checkpoint", str(converted), "--work-dir", str(seg),
                          "--results", str(table), "--cfg-options", "train_cfg.max_iters=2",
                          "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
                          "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"])
    assert code == 0
    (row,) = results.read_rows(table)
    assert row["task"] == "segmentation" and row["status"] == "ok"
    assert row["checkpoint_sha256"] == results.sha256_file(converted)
    assert 0.0 <= float(row["primary_value"]) <= 100.0
    coverage = json.loads((seg / "coverage.json").read_text())
    assert coverage["unexplained"] == [] and coverage["summary"]["backbone_mapped"] > 0
