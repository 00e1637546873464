"""Sweeps: planning cells, the SLURM job array, submitit jobs writing one table, run.py with
several tasks or seeds, and a two-process torchrun run on CPU (only rank 0 writes a row)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import results, run, sweep
from benchmarks.datasets.scene_classification import generate_scene_dataset

REPO = Path(__file__).resolve().parents[1]
QUIET_LOADERS = ["train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
                 "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"]


@pytest.fixture(scope="module")
def nwpu(tmp_path_factory) -> Path:
    return generate_scene_dataset("nwpu_resisc45", tmp_path_factory.mktemp("scene") / "nwpu", per_class=3, size=32)


def _plan_cli(tmp_path: Path, *extra: str) -> list[str]:
    return ["plan", "--sweep-dir", str(tmp_path / "sweep"), "--results", str(tmp_path / "results.csv"),
            "--work-root", str(tmp_path / "wd"), *extra]


def test_plan_has_one_cell_per_task_checkpoint_and_seed(tmp_path, tiny_converted) -> None:
    assert sweep.main(_plan_cli(tmp_path, "--tasks", "segmentation", "classification", "--seeds", "0", "1",
                                "--checkpoint", str(tiny_converted), "none", "--iters", "3")) == 0
    cells = sweep.load_plan(tmp_path / "sweep")
    assert len(cells) == 8
    assert [(c.task, c.checkpoint, c.seed) for c in cells[:4]] == [
        ("segmentation", str(tiny_converted), 0), ("segmentation", str(tiny_converted), 1),
        ("segmentation", "none", 0), ("segmentation", "none", 1)]
    assert len({c.work_dir for c in cells}) == 8  # --resume never continues another cell's run
    assert cells[2].work_dir.endswith("segmentation/upernet_ringmoe_tiny_potsdam/scratch/seed0")
    for cell in cells:
        args = run.parse_args(cell.argv)  # every cell is a valid run.py command line
        assert args.resume and args.iters == 3 and args.seed == cell.seed and args.task == [cell.task]
        assert Path(args.config).is_absolute() and Path(args.config).is_file()
        assert args.results == str((tmp_path / "results.csv").resolve())


def test_all_means_every_task_and_bad_plans_are_one_line_errors(tmp_path, tiny_converted, capsys) -> None:
    from benchmarks.tasks import task_names

    assert sweep.expand_tasks(["all", "segmentation"]) == task_names()
    checks = [
        (["--tasks", "segmentation", "--checkpoint", str(tmp_path / "missing.pth")], "does not exist"),
        (["--tasks", "segmentaton", "--checkpoint", "none"], "unknown task 'segmentaton'"),
        (["--tasks", "segmentation", "--checkpoint", "none", "--data-root", f"detection={tmp_path}"],
         "not in this sweep"),
        (["--tasks", "segmentation", "--checkpoint", "none", "--config", "segmentation"], "TASK=VALUE"),
    ]
    for extra, message in checks:
        assert sweep.main(_plan_cli(tmp_path, *extra)) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "sweep" / "cells.json").exists()
    assert sweep.main(["local", "--sweep-dir", str(tmp_path / "nowhere")]) == 2
    assert "plan --sweep-dir" in capsys.readouterr().err


def test_slurm_job_array_runs_each_cell(tmp_path, tiny_converted) -> None:
    assert sweep.main(_plan_cli(tmp_path, "--tasks", "classification", "detection", "--seeds", "0", "1", "2",
                                "--checkpoint", str(tiny_converted))) == 0
    assert sweep.main(["slurm", "--sweep-dir", str(tmp_path / "sweep"), "--partition", "gpu", "--gpus-per-cell",
                       "2", "--max-parallel", "4", "--time", "2:00:00", "--sbatch=--account=rs"]) == 0
    script = (tmp_path / "sweep" / "sweep.sbatch").read_text()
    assert subprocess.run(["bash", "-n", str(tmp_path / "sweep" / "sweep.sbatch")]).returncode == 0
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in ("--array=0-5%4", "--partition=gpu", "--gres=gpu:2", "--ntasks-per-node=2",
                     "--time=2:00:00", "--account=rs"):
        assert f"#SBATCH {expected}" in directives
    (command,) = [line for line in script.splitlines() if line.startswith("srun ")]
    words = shlex.split(command.replace('"$SLURM_ARRAY_TASK_ID"', "5"))
    assert words[-2:] == ["--launcher", "slurm"]  # several GPUs: mmengine's SLURM launcher
    args = sweep.parse_args(words[3:])  # after: srun python sweep.py
    assert (args.command, args.index, args.launcher) == ("run-cell", 5, "slurm")
    assert Path(args.sweep_dir) == (tmp_path / "sweep").resolve()
    assert sweep.main(["run-cell", "--sweep-dir", str(tmp_path / "sweep"), "--index", "6"]) == 2  # 6 cells


def test_submitit_jobs_share_one_table_and_a_resubmission_skips_them(tmp_path, tiny_converted, nwpu) -> None:
    table = tmp_path / "results.csv"
    assert sweep.main(_plan_cli(tmp_path, "--tasks", "classification", "--seeds", "0", "1", "--checkpoint",
                                str(tiny_converted), "--data-root", f"classification={nwpu}", "--iters", "2",
                                "--cfg-options", *QUIET_LOADERS)) == 0
    # Two jobs at once on this machine (submitit's local executor), both appending to one table.
    assert sweep.main(["submitit", "--sweep-dir", str(tmp_path / "sweep"), "--cluster", "local",
                       "--gpus-per-cell", "0"]) == 0
    rows = results.read_rows(table)
    assert sorted(int(r["seed"]) for r in rows) == [0, 1]
    assert all(r["status"] == "ok" and r["protocol"] == "linear_probe" for r in rows)
    assert list((tmp_path / "sweep" / "submitit").glob("*/*_log.out"))  # submitit's own job logs
    # Submitted again (here, one after another): both cells are found in the table and skipped.
    assert sweep.main(["local", "--sweep-dir", str(tmp_path / "sweep")]) == 0
    assert len(results.read_rows(table)) == 2


def test_run_py_with_several_tasks_and_seeds_plans_a_local_sweep(tmp_path, tiny_converted, monkeypatch, capsys) -> None:
    planned: list[list[sweep.Cell]] = []
    monkeypatch.setattr(sweep, "run_local", lambda cells: planned.append(cells) or 0)
    assert run.main(["--task", "classification", "--seeds", "0", "1", "2", "--checkpoint", str(tiny_converted),
                     "--work-dir", str(tmp_path), "--iters", "5"]) == 0
    (cells,) = planned
    assert [c.seed for c in cells] == [0, 1, 2] and len({c.work_dir for c in cells}) == 3
    assert all("--resume" not in c.argv and "--iters" in c.argv for c in cells)  # as given: no --resume
    assert run.main(["--task", "segmentation", "classification", "--checkpoint", "none", "--resume"]) == 0
    assert [c.task for c in planned[1]] == ["segmentation", "classification"]
    assert all("--resume" in c.argv for c in planned[1])
    # Files that belong to one task cannot be shared by several.
    assert run.main(["--task", "all", "--checkpoint", "none", "--data-root", str(tmp_path)]) == 2
    assert "benchmarks/sweep.py plan" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: one line, exit 2
        run.main(["--task", "classification", "--seed", "0", "--seeds", "1"])
    assert exited.value.code == 2


def test_torchrun_on_cpu_trains_in_two_processes_and_writes_one_row(tmp_path, tiny_converted, nwpu) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29631",
               str(REPO / "benchmarks" / "run.py"), "--task", "classification", "--launcher", "pytorch",
               "--checkpoint", str(tiny_converted), "--data-root", str(nwpu), "--iters", "2",
               "--work-dir", str(tmp_path / "wd"), "--results", str(tmp_path / "results.csv"),
               "--cfg-options", *QUIET_LOADERS]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = results.read_rows(tmp_path / "results.csv")  # rank 1 trained too, but wrote nothing
    assert row["status"] == "ok"
    log = next((tmp_path / "wd").glob("*/*.log")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log  # mmengine's world size
    coverage = json.loads((tmp_path / "wd" / "coverage.json").read_text())
    assert coverage["unexplained"] == []
