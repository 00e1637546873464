#!/usr/bin/env python
"""Write or check an HCCL rank table (Ascend, format version 1.0) for 1 to N nodes.

A rank table lists every server (its host IP as server_id) and, per device, its device id, the
IP of its NPU network port and its global rank id (servers in the given order, devices in id
order: rank = node * devices_per_node + device). MindSpore reads it through RANK_TABLE_FILE
(pretrain.launch.hccl_run sets it, with RANK_ID and DEVICE_ID per process).

The device IPs come from, per node, `hccn_tool -i <d> -ip -g` or /etc/hccn.conf
(address_<d>=...). Give them as a host file, one node per line: `<host ip> <device ip 0> ...
<device ip 7>` ('#' starts a comment); or with --hccn-conf for this node alone; or with a
--device-ip-template such as '192.{device}.27.{node}' (fields node, device) for a dry run.

Examples:
  python -m pretrain.launch.rank_table --hostfile nodes.txt -o rank_table_16p.json
  python -m pretrain.launch.rank_table --hosts 10.0.0.1 --hccn-conf /etc/hccn.conf -o rank_table_8p.json
  python -m pretrain.launch.rank_table --hosts 10.0.0.1,10.0.0.2 --device-ip-template '192.{device}.27.{node}' \\
      -o rt.json
  python -m pretrain.launch.rank_table --check rank_table_16p.json
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pretrain.launch.procs import LaunchError, fail  # noqa: E402

VERSION = "1.0"


@dataclass(frozen=True)
class Device:
    rank_id: int
    device_id: int
    device_ip: str


@dataclass(frozen=True)
class Server:
    server_id: str
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class RankTable:
    servers: tuple[Server, ...]

    @property
    def rank_size(self) -> int:
        return sum(len(s.devices) for s in self.servers)

    def server(self, server_id: str) -> Server:
        for server in self.servers:
            if server.server_id == server_id:
                return server
        listed = ", ".join(s.server_id for s in self.servers[:8]) + (" ..." if len(self.servers) > 8 else "")
        raise LaunchError(f"server {server_id!r} is not in the rank table (servers: {listed})")


def _ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise LaunchError(f"{what}: {text!r} is not an IP address") from None


def read_hccn_conf(path: str | Path) -> list[str]:
    """Device IPs from an hccn.conf (``address_<d>=<ip>`` lines), ordered by device id."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"{path}: no such hccn.conf")
    found = {}
    for line in path.read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key.startswith("address_") and key[len("address_"):].isdigit():
            found[int(key[len("address_"):])] = _ip(value.strip(), f"{path}: {key}")
    if not found:
        raise LaunchError(f"{path}: no address_<device>= lines")
    if sorted(found) != list(range(len(found))):
        raise LaunchError(f"{path}: device ids {sorted(found)} are not 0..{len(found) - 1}")
    return [found[d] for d in range(len(found))]


def parse_hostfile(path: str | Path) -> list[tuple[str, list[str]]]:
    """(host IP, device IPs) per node from a host file (``host [device ip ...]`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"{path}: no such host file")
    nodes = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if fields:
            nodes.append((_ip(fields[0], f"{path}:{number}"), [_ip(f, f"{path}:{number}") for f in fields[1:]]))
    if not nodes:
        raise LaunchError(f"{path}: no hosts")
    return nodes


def template_ips(template: str, node: int, devices: int) -> list[str]:
    try:
        return [_ip(template.format(node=node, device=d), "--device-ip-template") for d in range(devices)]
    except (KeyError, IndexError, ValueError) as err:
        if isinstance(err, LaunchError):
            raise
        raise LaunchError(f"--device-ip-template {template!r}: use the fields {{node}} and {{device}}") from None


def build_rank_table(nodes: list[tuple[str, list[str]]]) -> RankTable:
    """Rank ids in node order, then device order; every node needs the same device count."""
    if not nodes:
        raise LaunchError("no nodes given")
    hosts = [host for host, _ in nodes]
    if len(set(hosts)) != len(hosts):
        raise LaunchError(f"a host appears twice: {sorted(h for h in set(hosts) if hosts.count(h) > 1)}")
    counts = {len(ips) for _, ips in nodes}
    if len(counts) != 1 or 0 in counts:
        raise LaunchError(f"every node needs the same number (> 0) of device IPs, got {[len(i) for _, i in nodes]}")
    all_ips = [ip for _, ips in nodes for ip in ips]
    if len(set(all_ips)) != len(all_ips):
        raise LaunchError("a device IP appears twice")
    per_node = counts.pop()
    servers = tuple(Server(host, tuple(Device(n * per_node + d, d, ip) for d, ip in enumerate(ips)))
                    for n, (host, ips) in enumerate(nodes))
    return RankTable(servers)


def to_json(table: RankTable) -> dict:
    """The HCCL v1.0 document (all values strings, as MindSpore's hccl_tools writes them)."""
    return {
        "version": VERSION,
        "server_count": str(len(table.servers)),
        "server_list": [
            {"server_id": s.server_id,
             "device": [{"device_id": str(d.device_id), "device_ip": d.device_ip, "rank_id": str(d.rank_id)}
                        for d in s.devices],
             "host_nic_ip": "reserve"}
            for s in table.servers],
        "status": "completed",
    }


def _int(value, what: str) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if type(value) is int and value >= 0:
        return value
    raise LaunchError(f"{what}: expected a non-negative integer (a string in HCCL files), got {value!r}")


def load_rank_table(path: str | Path) -> RankTable:
    """Read and check a v1.0 rank table: rank ids 0..N-1 once each, device ids unique per server."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise LaunchError(f"{path}: no such rank table") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LaunchError(f"{path}: not JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise LaunchError(f"{path}: expected an HCCL rank table with \"version\": \"{VERSION}\"")
    if doc.get("status", "completed") != "completed":
        raise LaunchError(f"{path}: status is {doc.get('status')!r}, not 'completed'")
    servers = []
    for i, entry in enumerate(doc.get("server_list") or []):
        where = f"{path}: server_list[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("device"), list) or not entry["device"]:
            raise LaunchError(f"{where}: needs server_id and a non-empty device list")
        devices = tuple(Device(_int(d.get("rank_id"), f"{where} rank_id"),
                               _int(d.get("device_id"), f"{where} device_id"),
                               _ip(str(d.get("device_ip")), f"{where} device_ip")) for d in entry["device"])
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise LaunchError(f"{where}: device ids repeat: {ids}")
        servers.append(Server(_ip(str(entry.get("server_id")), f"{where} server_id"), devices))
    if not servers:
        raise LaunchError(f"{path}: server_list is empty")
    if "server_count" in doc and _int(doc["server_count"], f"{path}: server_count") != len(servers):
        raise LaunchError(f"{path}: server_count {doc['server_count']} but {len(servers)} servers listed")
    ranks = sorted(d.rank_id for s in servers for d in s.devices)
    if ranks != list(range(len(ranks))):
        raise LaunchError(f"{path}: rank ids must be 0..{len(ranks) - 1} once each")
    return RankTable(tuple(servers))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="python -m pretrain.launch.rank_table", description="\n\n".join(doc[:3]),
                                     epilog=doc[3], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--hostfile", help="one node per line: host IP, then its device IPs")
    src.add_argument("--hosts", help="comma-separated host IPs (device IPs from --hccn-conf or --device-ip-template)")
    src.add_argument("--check", metavar="RANK_TABLE", help="check a rank table and print its servers and ranks")
    parser.add_argument("--hccn-conf", help="device IPs of a single node from its hccn.conf")
    parser.add_argument("--device-ip-template",
                        help="device IP pattern with {node} and {device}, e.g. '192.{device}.27.{node}'")
    parser.add_argument("--devices-per-node", type=int, default=8, help="with --device-ip-template (default: 8)")
    parser.add_argument("-o", "--out", help="rank table to write (default: rank_table_<N>p.json)")
    return parser.parse_args(argv)


def _nodes(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    if args.hostfile:
        nodes = parse_hostfile(args.hostfile)
        if all(ips for _, ips in nodes):
            return nodes
        if not any(ips for _, ips in nodes) and (args.hccn_conf or args.device_ip_template):
            hosts = [h for h, _ in nodes]
        else:
            raise LaunchError(f"{args.hostfile}: give device IPs on every line or on none (then --hccn-conf or "
                              "--device-ip-template)")
    else:
        hosts = [_ip(h.strip(), "--hosts") for h in args.hosts.split(",") if h.strip()]
    if args.hccn_conf:
        if len(hosts) != 1:
            raise LaunchError("--hccn-conf holds one node's device IPs: use a host file with device IPs for several")
        return [(hosts[0], read_hccn_conf(args.hccn_conf))]
    if args.device_ip_template:
        if args.devices_per_node < 1:
            raise LaunchError("--devices-per-node must be >= 1")
        return [(h, template_ips(args.device_ip_template, n, args.devices_per_node)) for n, h in enumerate(hosts)]
    raise LaunchError("device IPs needed: a host file with them, --hccn-conf or --device-ip-template")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prog = "rank_table"
    try:
        if args.check:
            table = load_rank_table(args.check)
            for s in table.servers:
                ranks = [d.rank_id for d in s.devices]
                print(f"{s.server_id}: devices {[d.device_id for d in s.devices]} ranks {ranks[0]}..{ranks[-1]}")
            print(f"{len(table.servers)} servers, {table.rank_size} ranks")
            return 0
        table = build_rank_table(_nodes(args))
    except LaunchError as err:
        return fail(prog, str(err))
    out = Path(args.out or f"rank_table_{table.rank_size}p.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_json(table), indent=4) + "\n")
    print(f"wrote {out}: {len(table.servers)} servers, {table.rank_size} ranks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
