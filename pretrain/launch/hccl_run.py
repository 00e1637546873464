#!/usr/bin/env python
"""Start distributed pretraining on one Ascend node from an HCCL rank table.

Run it on every node of the table (the same command): it finds this node's server entry (by
--server-id, or by matching this host's IP addresses) and starts one process per device of that
server, each with RANK_TABLE_FILE, RANK_ID (the global rank), DEVICE_ID and RANK_SIZE set, its
output in <log-dir>/rank_<id>.log. If any process fails, or on Ctrl-C / SIGTERM / --timeout, all
of this node's processes are stopped. The script's config needs a ``parallel`` section whose
device count is the table's rank count (e.g. configs/pretrain/giant_32x8x4.py for 256 ranks).

Examples:
  python -m pretrain.launch.hccl_run --rank-table rank_table_16p.json -- \\
      pretrain/train.py --config configs/pretrain/base.py \\
      --cfg-options parallel.mode=data_parallel parallel.data_parallel=16
  python -m pretrain.launch.hccl_run --rank-table rt.json --server-id 10.0.0.2 --dry-run -- \\
      pretrain/train.py --config ...
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pretrain.launch.procs import Child, LaunchError, fail, run_children, shell_line  # noqa: E402
from pretrain.launch.rank_table import RankTable, load_rank_table  # noqa: E402


def local_addresses() -> set[str]:
    """This host's IP addresses as the resolver knows them (no network traffic)."""
    found = set()
    for name in {socket.gethostname(), socket.getfqdn(), "localhost"}:
        try:
            found.update(socket.gethostbyname_ex(name)[2])
        except OSError:
            continue
    return found


def pick_server(table: RankTable, server_id: str | None) -> str:
    if server_id:
        return table.server(server_id).server_id
    mine = sorted({s.server_id for s in table.servers} & local_addresses())
    if len(mine) != 1:
        raise LaunchError(f"cannot tell which server of the rank table this node is (local addresses matching: "
                          f"{mine or 'none'}): pass --server-id")
    return mine[0]


def children(table_path: Path, table: RankTable, server_id: str, script: list[str], log_dir: Path) -> list[Child]:
    """One process per device of ``server_id``: ``python <script...>`` with the rank-table env."""
    server = table.server(server_id)
    return [Child([sys.executable, *script],
                  {"RANK_TABLE_FILE": str(table_path.resolve()), "RANK_ID": str(d.rank_id),
                   "DEVICE_ID": str(d.device_id), "RANK_SIZE": str(table.rank_size)},
                  log_dir / f"rank_{d.rank_id}.log", name=f"rank {d.rank_id}")
            for d in server.devices]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="python -m pretrain.launch.hccl_run", description="\n\n".join(doc[:2]),
                                     epilog=doc[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank-table", required=True, help="HCCL rank table (python -m pretrain.launch.rank_table)")
    parser.add_argument("--server-id", help="this node's server_id in the table (default: found from local IPs)")
    parser.add_argument("--log-dir", default="work_dirs/launch_logs", help="per-rank logs (default: %(default)s)")
    parser.add_argument("--timeout", type=float, help="stop everything after this many seconds")
    parser.add_argument("--dry-run", action="store_true", help="print each process's environment and command only")
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- then the training script and its arguments")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    try:
        if not script:
            raise LaunchError("give the training script after --, e.g. -- pretrain/train.py --config ...")
        table = load_rank_table(args.rank_table)
        server = pick_server(table, args.server_id)
        procs = children(Path(args.rank_table), table, server, script, Path(args.log_dir))
    except LaunchError as err:
        return fail("hccl_run", str(err))
    print(f"server {server}: ranks {procs[0].env['RANK_ID']}..{procs[-1].env['RANK_ID']} of {table.rank_size}")
    if args.dry_run:
        for child in procs:
            print(shell_line(child))
        return 0
    return run_children(procs, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
