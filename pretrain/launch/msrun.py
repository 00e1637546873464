#!/usr/bin/env python
"""Start distributed pretraining with msrun, MindSpore's dynamic-cluster launcher (CPU, GPU, Ascend).

msrun starts a scheduler on the master node and --nproc workers on each node; the workers find
each other through master_addr:master_port, so no rank table is needed (on Ascend too). Run the
same command on every node, with its own --node-rank. The workers run `python <script>`: this
wrapper puts its own interpreter first on PATH so they use this environment, waits for msrun
(--join), and on Ctrl-C / SIGTERM / --timeout stops msrun and its workers (which msrun starts in
sessions of their own). Worker output: <log-dir>/worker_<rank>.log, scheduler.log.

On CPU, data_parallel runs (MindSpore's own collective library; the all-reduce is float32 SUM);
semi_auto_parallel does not (MindSpore 2.10: "Invalid communication backend: CPU").

Examples:
  python -m pretrain.launch.msrun --nproc 2 -- pretrain/train.py --config configs/pretrain/tiny_dp2.py
  python -m pretrain.launch.msrun --nnodes 2 --nproc 8 --node-rank 0 --master-addr 10.0.0.1 -- \\
      pretrain/train.py --config configs/pretrain/base.py \\
      --cfg-options parallel.mode=data_parallel parallel.data_parallel=16
  python -m pretrain.launch.msrun --nproc 8 --dry-run -- pretrain/train.py --config ...
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pretrain.launch.procs import Child, LaunchError, fail, run_children, shell_line  # noqa: E402


def msrun_argv() -> list[str]:
    """msrun beside this interpreter, else on PATH, else its module through this interpreter."""
    beside = Path(sys.executable).parent / "msrun"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("msrun")
    return [found] if found else [sys.executable, "-c", "from mindspore.parallel.cluster.run import main; main()"]


def msrun_child(script: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0, master_addr: str = "127.0.0.1",
                master_port: int = 8118, log_dir: Path = Path("work_dirs/msrun_logs"),
                cluster_time_out: int = 600) -> Child:
    if nproc < 1 or nnodes < 1:
        raise LaunchError(f"--nproc and --nnodes must be >= 1, got {nproc} and {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise LaunchError(f"--node-rank must be in 0..{nnodes - 1}, got {node_rank}")
    if not 1024 <= master_port <= 65535:
        raise LaunchError(f"--master-port must be in 1024..65535, got {master_port}")
    if not script or not script[0].endswith(".py"):
        raise LaunchError("give the training script after --, e.g. -- pretrain/train.py --config ...")
    argv = [*msrun_argv(), f"--worker_num={nproc * nnodes}", f"--local_worker_num={nproc}",
            f"--master_addr={master_addr}", f"--master_port={master_port}", f"--node_rank={node_rank}",
            f"--log_dir={log_dir}", "--join=True", f"--cluster_time_out={cluster_time_out}", *script]
    # msrun runs workers as `python <script>`: make that this interpreter (a venv's bin first on PATH)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return Child(argv, {"PATH": path}, None, name="msrun")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="python -m pretrain.launch.msrun", description="\n\n".join(doc[:3]),
                                     epilog=doc[3], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=8, help="processes (devices) on this node (default: 8)")
    parser.add_argument("--nnodes", type=int, default=1, help="nodes (default: 1)")
    parser.add_argument("--node-rank", type=int, default=0, help="this node's index (default: 0)")
    parser.add_argument("--master-addr", default="127.0.0.1", help="IP of node 0, where the scheduler runs")
    parser.add_argument("--master-port", type=int, default=8118, help="scheduler port (default: 8118)")
    parser.add_argument("--log-dir", default="work_dirs/msrun_logs", help="worker logs (default: %(default)s)")
    parser.add_argument("--cluster-time-out", type=int, default=600, help="seconds to wait for all workers to join")
    parser.add_argument("--timeout", type=float, help="stop everything after this many seconds")
    parser.add_argument("--dry-run", action="store_true", help="print the msrun command only")
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- then the training script and its arguments")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    try:
        child = msrun_child(script, args.nproc, args.nnodes, args.node_rank, args.master_addr, args.master_port,
                            Path(args.log_dir), args.cluster_time_out)
    except LaunchError as err:
        return fail("msrun", str(err))
    if args.dry_run:  # PATH shown as what it prepends
        print(shell_line(child).replace(child.env["PATH"], f"{Path(sys.executable).parent}{os.pathsep}$PATH", 1))
        return 0
    # SIGINT is what msrun forwards to its workers (it kills them); SIGTERM would orphan them.
    return run_children([child], args.timeout, first_signal=signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
