#!/usr/bin/env python
"""Run a benchmark sweep (tasks x checkpoints x seeds), here or as one cluster job per cell.

Every cell of the sweep is one ``benchmarks/run.py`` invocation with ``--resume``, all of them
appending to the same results table, which serialises writers with a file lock. A sweep that
was interrupted, or whose jobs partly failed, is finished by submitting it again: the cells
whose rows are already in the table are skipped, and interrupted runs resume from their last
Runner checkpoint. No scheduler of our own: cells run one after another here, or go to SLURM
as a job array (sbatch) or through submitit.

Subcommands:
  plan     write <sweep dir>/cells.json: the cells and each one's run.py arguments
  local    run the planned cells here, one after another (what run.py --task a b --seeds ... does)
  slurm    write <sweep dir>/sweep.sbatch, a SLURM job array with one task per cell; --submit runs sbatch
  submitit submit the cells through submitit (one job per cell; --cluster local runs them here)
  run-cell run one planned cell (what each array task runs)

Examples:
  # every task, three seeds, pretrained and from scratch, on a SLURM cluster, 1 GPU per cell
  python benchmarks/sweep.py plan --tasks all --seeds 0 1 2 --checkpoint giant.pth none \\
      --data-root segmentation=/data/potsdam --data-root change_detection=/data/LEVIR-CD \\
      --results /shared/results.csv --sweep-dir sweeps/giant
  python benchmarks/sweep.py slurm --sweep-dir sweeps/giant --partition gpu --gpus-per-cell 1 \\
      --time 24:00:00 --max-parallel 16 --submit
  # the same through submitit (it writes and submits the array itself)
  python benchmarks/sweep.py submitit --sweep-dir sweeps/giant --cluster slurm --partition gpu

A cell with more than one GPU runs under ``srun`` with mmengine's SLURM launcher
(``--launcher slurm``): one process per GPU, and only rank 0 writes the results row.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a plain clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import BadInput, Parser  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
RUN_SCRIPT = REPO / "benchmarks" / "run.py"
CELLS_FILE = "cells.json"
PLAN_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: run.py's arguments, and where its work dir is."""

    task: str
    seed: int
    checkpoint: str
    work_dir: str
    argv: list[str]

    @property
    def label(self) -> str:
        return f"{self.task} {checkpoint_label(self.checkpoint)} seed {self.seed}"


# ---- planning --------------------------------------------------------------------------------
def expand_tasks(names: list[str]) -> list[str]:
    """'all' means every task module; names keep their order and repeat once."""
    from benchmarks.tasks import task_names

    known = task_names()
    out: list[str] = []
    for name in names:
        for task in known if name == "all" else [name]:
            if task not in known:
                raise BadInput(f"unknown task {task!r}; known: {', '.join(known)} (or 'all')")
            if task not in out:
                out.append(task)
    return out


def checkpoint_label(checkpoint: str) -> str:
    """A short folder name per checkpoint, so that runs of different weights never share a work dir."""
    return "scratch" if checkpoint == "none" else Path(checkpoint).stem


def _per_task(items: list[str], option: str, tasks: list[str]) -> dict[str, str]:
    """TASK=VALUE items as a dict; a task outside the sweep is an error (a typo would go unnoticed)."""
    out = {}
    for item in items:
        task, sep, value = item.partition("=")
        if not sep or not value:
            raise BadInput(f"{option} expects TASK=VALUE, got {item!r}")
        if task not in tasks:
            raise BadInput(f"{option} {item!r}: task {task!r} is not in this sweep ({', '.join(tasks)})")
        out[task] = value
    return out


def plan(tasks: list[str], seeds: list[int], checkpoints: list[str], *, results: str, work_root: str,
         configs: dict[str, str] | None = None, data_roots: dict[str, str] | None = None,
         iters: int | None = None, cfg_options: list[str] | None = None, resume: bool = True) -> list[Cell]:
    """The cells of a sweep, task-major, and each one's run.py arguments.

    Work dirs are <work_root>/<task>/<config stem>/<checkpoint label>/seed<n>: one per cell,
    so that --resume only ever continues the same cell. With ``resume`` (a sweep's default)
    every cell runs with --resume: cells already in the results table are skipped. Paths are
    made absolute (``configs`` relative to the current directory, task defaults to the
    repository), because a cluster job may start in another directory.
    """
    from benchmarks.tasks import get_task

    configs, data_roots = configs or {}, data_roots or {}
    cells = []
    for task in tasks:
        config = Path(configs[task]).resolve() if task in configs else REPO / get_task(task).config
        for checkpoint in checkpoints:
            ckpt = checkpoint if checkpoint == "none" else str(Path(checkpoint).resolve())
            for seed in seeds:
                work_dir = Path(work_root).resolve() / task / config.stem / checkpoint_label(checkpoint) / f"seed{seed}"
                argv = ["--task", task, "--config", str(config), "--checkpoint", ckpt, "--seed", str(seed), "--work-dir", str(work_dir),
                        "--results", str(Path(results).resolve())] + (["--resume"] if resume else [])
                if task in data_roots:
                    argv += ["--data-root", str(Path(data_roots[task]).resolve())]
                if iters is not None:
                    argv += ["--iters", str(iters)]
                if cfg_options:
                    argv += ["--cfg-options", *cfg_options]
                cells.append(Cell(task, seed, checkpoint, str(work_dir), argv))
    return cells


def save_plan(cells: list[Cell], sweep_dir: Path) -> Path:
    from converters.util import atomic_write

    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / CELLS_FILE
    with atomic_write(path, "w") as f:
        json.dump({"version": PLAN_VERSION, "cells": [asdict(c) for c in cells]}, f, indent=1)
    return path


def load_plan(sweep_dir: Path) -> list[Cell]:
    path = Path(sweep_dir) / CELLS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path} does not exist: write it with 'sweep.py plan --sweep-dir {sweep_dir}'") from None
    except ValueError:
        raise BadInput(f"{path} is not a sweep plan (invalid JSON)") from None
    if not isinstance(data, dict) or data.get("version") != PLAN_VERSION:
        raise BadInput(f"{path} is not a version {PLAN_VERSION} sweep plan")
    return [Cell(**c) for c in data["cells"]]


# ---- running ---------------------------------------------------------------------------------
def run_cell(sweep_dir: str, index: int, extra: list[str] | None = None) -> int:
    """Run cell ``index`` of a planned sweep in this process (a job's entry point); its exit code."""
    cells = load_plan(Path(sweep_dir))
    if not 0 <= index < len(cells):
        raise BadInput(f"cell {index} is out of range: the plan has {len(cells)} cells")
    from benchmarks import run

    return run.main(cells[index].argv + list(extra or []))


def _job(repo: str, sweep_dir: str, index: int, extra: list[str]) -> int:
    """A submitit job: make the repository importable wherever the job starts, then run the cell."""
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from benchmarks.sweep import run_cell as run_planned_cell

    return run_planned_cell(sweep_dir, index, extra)


def run_local(cells: list[Cell]) -> int:
    """Run cells one after another, each in its own process (a fresh registry and logger each).

    A failed cell does not stop the others; the exit code is 1 if any failed.
    """
    failed = []
    for number, cell in enumerate(cells, start=1):
        print(f"sweep: [{number}/{len(cells)}] {cell.label}", flush=True)
        code = subprocess.call([sys.executable, str(RUN_SCRIPT), *cell.argv], cwd=REPO)
        if code != 0:
            failed.append(f"{cell.label} (exit {code}, work dir {cell.work_dir})")
    if failed:
        print(f"sweep: {len(failed)} of {len(cells)} cells failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    print(f"sweep: {len(cells)} cells done")
    return 0


def sbatch_script(sweep_dir: Path, count: int, *, partition: str | None = None, gpus_per_cell: int = 0,
                  cpus_per_gpu: int = 8, time: str = "24:00:00", max_parallel: int | None = None,
                  python: str = sys.executable, extra_sbatch: list[str] | None = None) -> str:
    """A SLURM job array with one array task per cell; each runs ``sweep.py run-cell``.

    More than one GPU per cell: the cell's processes start under ``srun`` (one per GPU) and
    mmengine's SLURM launcher joins them (``--launcher slurm``).
    """
    sweep_dir = sweep_dir.resolve()
    array = f"0-{count - 1}" + (f"%{max_parallel}" if max_parallel else "")
    lines = ["#!/bin/bash", "#SBATCH --job-name=ringmoe-bench", f"#SBATCH --array={array}",
             f"#SBATCH --output={sweep_dir}/logs/%A_%a.out", f"#SBATCH --time={time}"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    tasks = max(gpus_per_cell, 1)
    lines += [f"#SBATCH --nodes=1", f"#SBATCH --ntasks-per-node={tasks}",
              f"#SBATCH --cpus-per-task={cpus_per_gpu}"]
    if gpus_per_cell:
        lines.append(f"#SBATCH --gres=gpu:{gpus_per_cell}")
    lines += [f"#SBATCH {option}" for option in extra_sbatch or []]
    command = [python, str(REPO / "benchmarks" / "sweep.py"), "run-cell", "--sweep-dir", str(sweep_dir)]
    launcher = " --launcher slurm" if gpus_per_cell > 1 else ""
    lines += ["", "# One array task = one cell of cells.json; finished cells are skipped (run.py --resume).",
              "set -euo pipefail", f"cd {shlex.quote(str(REPO))}",
              f"srun {shlex.join(command)} --index \"$SLURM_ARRAY_TASK_ID\"{launcher}", ""]
    return "\n".join(lines)


def submit_submitit(sweep_dir: Path, cells: list[Cell], *, cluster: str | None, partition: str | None,
                    gpus_per_cell: int, timeout_min: int, max_parallel: int | None, wait: bool) -> int:
    """One submitit job per cell, as a job array on SLURM; ``cluster='local'`` runs them here."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(sweep_dir / "submitit" / "%j"), cluster=cluster)
    params: dict = {"timeout_min": timeout_min, "tasks_per_node": max(gpus_per_cell, 1), "nodes": 1}
    if gpus_per_cell:
        params["gpus_per_node"] = gpus_per_cell
    if partition:
        params["slurm_partition"] = partition
    if max_parallel:
        params["slurm_array_parallelism"] = max_parallel
    executor.update_parameters(**params)
    extra = [["--launcher", "slurm"]] * len(cells) if gpus_per_cell > 1 else [[]] * len(cells)
    count = len(cells)
    jobs = executor.map_array(_job, [str(REPO)] * count, [str(sweep_dir.resolve())] * count, list(range(count)), extra)
    for job, cell in zip(jobs, cells):
        print(f"sweep: submitted {cell.label} as job {job.job_id}")
    if not wait:
        return 0
    codes = [job.result() for job in jobs]
    failed = [f"{cell.label} (exit {code})" for cell, code in zip(cells, codes) if code != 0]
    if failed:
        print(f"sweep: {len(failed)} of {len(cells)} jobs failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    print(f"sweep: {len(cells)} jobs done")
    return 0


# ---- command line ----------------------------------------------------------------------------
def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", required=True, help="task names, or 'all'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    parser.add_argument("--checkpoint", nargs="+", required=True,
                        help="converted checkpoints; 'none' adds the from-scratch baseline")
    parser.add_argument("--config", action="append", default=[], metavar="TASK=CONFIG",
                        help="a task's config instead of its default (repeatable)")
    parser.add_argument("--data-root", action="append", default=[], metavar="TASK=DIR",
                        help="a task's real data (repeatable; default: generated demo data)")
    parser.add_argument("--results", default="results/results.csv", help="shared results table")
    parser.add_argument("--work-root", default="work_dirs", help="work dirs go under it")
    parser.add_argument("--iters", type=int, help="run.py --iters for every cell")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="run.py --cfg-options for every cell")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="sweep", doc=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("plan", help="write <sweep dir>/cells.json")
    p.add_argument("--sweep-dir", required=True)
    add_plan_arguments(p)
    for name, help_text in (("local", "run the planned cells here, one after another"),
                            ("slurm", "write (and with --submit, sbatch) a SLURM job array"),
                            ("submitit", "submit the planned cells through submitit")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--sweep-dir", required=True)
        if name != "local":
            p.add_argument("--partition", help="SLURM partition")
            p.add_argument("--gpus-per-cell", type=int, default=1,
                           help="GPUs per cell (default 1; 0 for CPU jobs; >1 uses the SLURM launcher)")
            p.add_argument("--max-parallel", type=int, help="at most this many cells at once")
        if name == "slurm":
            p.add_argument("--time", default="24:00:00", help="SLURM time limit per cell")
            p.add_argument("--cpus-per-gpu", type=int, default=8)
            p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                           help="extra #SBATCH line, e.g. --sbatch=--account=rs (repeatable)")
            p.add_argument("--submit", action="store_true", help="run sbatch on the script")
        if name == "submitit":
            p.add_argument("--cluster", choices=["slurm", "local", "debug"],
                           help="submitit executor (default: SLURM if available, else local)")
            p.add_argument("--timeout-min", type=int, default=24 * 60)
            p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p = sub.add_parser("run-cell", help="run one planned cell (what a job runs)")
    p.add_argument("--sweep-dir", required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    return parser.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> list[Cell]:
    tasks = expand_tasks(args.tasks)
    for checkpoint in args.checkpoint:
        if checkpoint != "none" and not Path(checkpoint).exists():
            raise BadInput(f"checkpoint {checkpoint} does not exist")
    data_roots = _per_task(args.data_root, "--data-root", tasks)
    for task, root in data_roots.items():
        if not Path(root).is_dir():
            raise BadInput(f"--data-root {task}={root}: not a directory")
    configs = _per_task(args.config, "--config", tasks)
    for task, config in configs.items():
        if not Path(config).is_file():
            raise BadInput(f"--config {task}={config}: no such file")
    return plan(tasks, args.seeds, args.checkpoint, results=args.results, work_root=args.work_root,
                configs=configs, data_roots=data_roots, iters=args.iters, cfg_options=args.cfg_options)


def _dispatch(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    if args.command == "plan":
        cells = plan_from_args(args)
        path = save_plan(cells, sweep_dir)
        print(f"sweep: {len(cells)} cells -> {path}")
        return 0
    if args.command == "run-cell":
        extra = ["--launcher", args.launcher] if args.launcher != "none" else []
        return run_cell(str(sweep_dir), args.index, extra)
    cells = load_plan(sweep_dir)
    if args.command == "local":
        return run_local(cells)
    if args.command == "slurm":
        from converters.util import atomic_write

        script = sweep_dir / "sweep.sbatch"
        (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
        with atomic_write(script, "w") as f:
            f.write(sbatch_script(sweep_dir, len(cells), partition=args.partition, gpus_per_cell=args.gpus_per_cell,
                                  cpus_per_gpu=args.cpus_per_gpu, time=args.time, max_parallel=args.max_parallel,
                                  extra_sbatch=args.sbatch))
        print(f"sweep: {len(cells)} cells -> {script}")
        if args.submit:
            return subprocess.call(["sbatch", str(script)])
        print(f"submit with: sbatch {script}")
        return 0
    return submit_submitit(sweep_dir, cells, cluster=args.cluster, partition=args.partition,
                           gpus_per_cell=args.gpus_per_cell, timeout_min=args.timeout_min,
                           max_parallel=args.max_parallel, wait=not args.no_wait)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _dispatch(args)
    except BadInput as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:  # sbatch not installed, for instance
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
