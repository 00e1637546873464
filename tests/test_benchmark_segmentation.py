"""benchmarks/run.py on the segmentation task: one short real run, its outputs, and bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import results
from benchmarks.run import main

REPO = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(REPO / "benchmarks" / "run.py")]
# Two iterations, no worker processes: the whole pipeline, as fast as it goes on a CPU.
SHORT = ["--iters", "2", "--cfg-options", "train_dataloader.num_workers=0",
         "train_dataloader.persistent_workers=False", "val_dataloader.num_workers=0",
         "val_dataloader.persistent_workers=False"]


@pytest.fixture(scope="module")
def seg_run(tiny_converted, tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    args = ["--task", "segmentation", "--checkpoint", str(tiny_converted), "--work-dir", str(root / "wd"),
            "--results", str(root / "results.csv"), "--seed", "3", *SHORT]
    assert main(args) == 0
    return {"args": args, "root": root, "work_dir": root / "wd", "results": root / "results.csv",
            "checkpoint": tiny_converted}


def test_run_writes_row_coverage_and_config(seg_run):
    (row,) = results.read_rows(seg_run["results"])
    assert (row["task"], row["dataset"], row["modality"], row["status"]) == (
        "segmentation", "potsdam", "optical", "ok")
    assert row["primary_metric"] == "mIoU" and math.isfinite(float(row["primary_value"]))
    metrics = json.loads(row["metrics_json"])
    assert metrics["mIoU"] == float(row["primary_value"]) and "mFscore" in metrics
    assert row["checkpoint_sha256"] == results.sha256_file(seg_run["checkpoint"])
    assert row["seed"] == "3" and len(row["config_hash"]) == 64
    assert (row["schema_version"], row["split"], row["protocol"], row["expert_reduction"]) == ("2", "val", "finetune", "")
    assert row["host"] and row["train_ratio"] == ""
    assert set(json.loads(row["versions_json"])) == {"torch", "mmengine", "mmcv", "mmsegmentation", "numpy"}

    cov = json.loads((seg_run["work_dir"] / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["unexplained"] == 0
    assert cov["summary"]["backbone_mapped"] > 0
    heads = [k for k in cov["new"] if not k.startswith("backbone.")]
    assert heads and all("downstream head" in cov["new"][k] for k in heads)
    assert not any(k.startswith(("decode_head.", "auxiliary_head.")) for k in cov["mapped"])
    assert any(r.startswith("another modality") for r in cov["dropped"].values())

    dumped = (seg_run["work_dir"] / "upernet_ringmoe_tiny_potsdam.py").read_text()
    assert "type='RingMoE'" in dumped and "embed_dim=32" in dumped  # filled from the checkpoint meta


def test_resume_skips_a_finished_identical_run(seg_run, capsys):
    assert main([*seg_run["args"], "--resume"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert len(results.read_rows(seg_run["results"])) == 1


def test_resume_continues_an_interrupted_run(seg_run, capsys):
    """A longer schedule in the same work dir picks up the saved iteration-2 Runner checkpoint."""
    args = list(seg_run["args"])
    args[args.index("--iters") + 1] = "3"
    assert main([*args, "--resume"]) == 0
    logs = sorted(seg_run["work_dir"].glob("*/*.log"))
    assert any("resumed epoch: 0, iter: 2" in log.read_text() for log in logs)
    rows = results.read_rows(seg_run["results"])
    assert len(rows) == 2 and rows[0]["run_id"] != rows[1]["run_id"]


def test_a_sharded_safetensors_checkpoint_runs(tiny_ms_checkpoint, tmp_path):
    from converters.ms2torch import main as convert

    shards = tmp_path / "tiny.safetensors"
    assert convert([str(tiny_ms_checkpoint), "-o", str(shards), "--format", "safetensors", "--shard-size", "30MB"]) == 0
    assert shards.is_dir()
    args = ["--task", "segmentation", "--checkpoint", str(shards), "--work-dir", str(tmp_path / "wd"),
            "--results", str(tmp_path / "r.csv"), *SHORT]
    assert main(args) == 0
    (row,) = results.read_rows(tmp_path / "r.csv")
    assert row["checkpoint"] == str(shards) and len(row["checkpoint_sha256"]) == 64


def test_checkpoint_that_does_not_fit_is_a_coverage_error(seg_run, capsys):
    results_csv = seg_run["root"] / "mismatch.csv"
    rc = main(["--task", "segmentation", "--checkpoint", str(seg_run["checkpoint"]),
               "--work-dir", str(seg_run["root"] / "mismatch"), "--results", str(results_csv),
               "--data-root", str(seg_run["root"] / "data" / "potsdam"), *SHORT, "model.backbone.embed_dim=64"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "run: error:" in err and "embed_dim: checkpoint 32 vs model 64" in err
    assert not results_csv.exists()


def test_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "bogus.pth"
    bogus.write_text("not a checkpoint")
    assert main(["--task", "segmentation", "--checkpoint", str(bogus), "--results", str(tmp_path / "r.csv")]) == 2
    assert capsys.readouterr().err.startswith("run: error:")
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("args, needle", [
    (["--task", "segmentation", "--checkpoint", "missing.pth"], "missing.pth does not exist"),
    (["--task", "nonsense", "--checkpoint", "none"], "invalid choice"),
    (["--task", "segmentation", "--checkpoint", "none", "--data-root", "no/such/dir"], "no/such/dir"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    proc = subprocess.run([*RUN, *args, "--results", str(tmp_path / "r.csv")], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run: error:") and needle in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.csv").exists()


def test_help_explains_the_options_without_heavy_imports():
    proc = subprocess.run([*RUN, "--help"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0
    for text in ("--task", "--checkpoint", "--data-root", "--cfg-options", "--resume", "Examples", "Exit codes"):
        assert text in proc.stdout
    probe = ("import sys; from benchmarks.run import parse_args; parse_args(['--task', 'segmentation']); "
             "print(sorted({'torch', 'mmengine', 'mmseg', 'mindspore'} & set(sys.modules)))")
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert heavy.stdout.strip() == "[]", "argument parsing must not import heavy frameworks"


def test_iters_stretches_the_whole_schedule():
    from mmengine.config import Config

    from benchmarks.run import set_iterations

    cfg = Config.fromfile(str(REPO / "configs/benchmarks/segmentation/upernet_ringmoe_tiny_potsdam.py"))
    set_iterations(cfg, 80000)
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == 80000
    assert cfg.default_hooks.checkpoint.interval == 80000
    warmup, poly = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 5)  # the warm-up keeps its length
    assert (poly.begin, poly.end) == (5, 80000)  # the decay ends with the run, not at the demo's 50

    set_iterations(cfg, 3)  # shorter than the warm-up: the decay has nothing left to do
    assert [(s.type, s.begin, s.end) for s in cfg.param_scheduler] == [("LinearLR", 0, 3)]


def test_iters_refuses_an_epoch_based_config(capsys):
    assert main(["--task", "segmentation", "--checkpoint", "none", "--iters", "10",
                 "--cfg-options", "train_cfg.type=EpochBasedTrainLoop"]) == 2
    assert "IterBasedTrainLoop" in capsys.readouterr().err


def test_resume_refuses_a_work_dir_of_other_weights(seg_run, capsys):
    """mmengine would resume whatever checkpoint the work dir holds: another run's weights."""
    args = list(seg_run["args"])
    args[args.index("--checkpoint") + 1] = "none"
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with another checkpoint_sha256" in err and err.count("\n") == 1
