"""Distributed pretraining: the parallel config, the released 32 x 8 x 4 layout, rank tables,
the launchers, and a real 2-process data-parallel run on CPU under msrun.

What runs on CPU with MindSpore 2.10 (checked here): msrun data parallel (MindSpore's own
collective library: init, a float32 SUM all-reduce of the gradients). What does not:
semi_auto_parallel ("Invalid communication backend: CPU ..."), optimizer sharding in data
parallel ("... only supports "Ascend" in data parallel mode"), dry runs (MS_SIMULATION_LEVEL:
"Dryrun is not supported on CPU device for a distributed job."). So the operator-parallel layout
is checked through its strategy file: planned by pretrain/parallel.py, sliced with MindSpore's
own slicing helper, and merged back by converters/merge.py and by MindSpore's
transform_checkpoints.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pretrain.config import ConfigError, load_config
from pretrain.launch import hccl_run, msrun, rank_table
from pretrain.parallel import (
    ParallelConfig, check_parallel, config_parallel, context_kwargs, parse_parallel, plan_layouts,
    semi_auto_unsupported,
)

REPO = Path(__file__).resolve().parents[1]


# ---- config checks --------------------------------------------------------------------------------
@pytest.mark.parametrize("section,device,message", [
    (dict(mode="data_paralel"), None, "parallel.mode must be one of"),
    (dict(data_parallel=2), None, "parallel.mode='stand_alone' runs one process"),
    (dict(mode="data_parallel", data_parallel=2, model_parallel=2), None, "need parallel.mode='semi_auto_parallel'"),
    (dict(mode="semi_auto_parallel", data_parallel=6, expert_parallel=4), None, "must divide data_parallel=6"),
    (dict(mode="semi_auto_parallel", data_parallel=24, expert_parallel=3), None, "must divide the 4 experts"),
    (dict(mode="semi_auto_parallel", data_parallel=2, pipeline_stages=2), None, "pipeline parallelism is not"),
    (dict(mode="semi_auto_parallel", data_parallel=2), "CPU", "Invalid communication backend: CPU"),
    (dict(mode="data_parallel", data_parallel=2, optimizer_shard=True), "GPU", 'only supports "Ascend" in data'),
    (dict(mode="data_parallel", data_parallel=2, strategy_file="s.ckpt"), None, "name it *.json"),
    (dict(mode="data_parallel", data_paralel=2), None, "unknown key(s) ['data_paralel']"),
    (dict(mode="data_parallel", data_parallel="2"), None, "must be an integer"),
])
def test_bad_parallel_sections_are_one_line_errors(section, device, message):
    with pytest.raises(ConfigError) as err:
        check_parallel(parse_parallel(section), 4, device)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_launched_process_count_must_match_the_layout():
    pc = parse_parallel(dict(mode="data_parallel", data_parallel=2))
    check_parallel(pc, 4, "CPU", group_size=2)
    with pytest.raises(ConfigError, match="= 2 but 3 process"):
        check_parallel(pc, 4, "CPU", group_size=3)


def test_context_settings_per_mode():
    assert context_kwargs(ParallelConfig(), 1, None) == {}
    dp = context_kwargs(parse_parallel(dict(mode="data_parallel", data_parallel=8)), 8, None)
    assert dp == {"parallel_mode": "data_parallel", "device_num": 8, "gradients_mean": True}
    semi = context_kwargs(parse_parallel(dict(mode="semi_auto_parallel", data_parallel=4, model_parallel=2,
                                              optimizer_shard=True, optimizer_shard_size=2)), 8, "/w/strategy.ckpt")
    assert semi["parallel_mode"] == "semi_auto_parallel" and semi["enable_parallel_optimizer"] is True
    assert semi["parallel_optimizer_config"]["optimizer_weight_shard_size"] == 2
    assert semi["strategy_ckpt_config"] == {"save_file": "/w/strategy.ckpt", "only_trainable_params": False}


def test_ranks_must_agree_on_the_resume_step(monkeypatch):
    """agree() sums the value's bits over ranks (an all-reduce); here the other rank is simulated."""
    from pretrain.parallel import DistInfo

    info = DistInfo(parse_parallel(dict(mode="data_parallel", data_parallel=2)), rank=0, group_size=2)
    other = {"step": 400_000}
    monkeypatch.setattr(DistInfo, "all_sum", lambda self, bits: [
        b + float(other["step"] >> i & 1) for i, b in enumerate(bits)])
    info.agree(400_000, "the step")
    other["step"] = 399_999
    with pytest.raises(RuntimeError, match="ranks disagree on the step"):
        info.agree(400_000, "the step")


def test_train_cli_refuses_semi_auto_on_cpu(capsys):
    from pretrain.train import main

    code = main(["--config", str(REPO / "configs/pretrain/tiny.py"), "--cfg-options",
                 "parallel.mode=semi_auto_parallel", "parallel.data_parallel=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Invalid communication backend: CPU" in err[0]


# ---- the released layout ------------------------------------------------------------------------
def test_released_32x8x4_layout_is_accepted_and_slices_as_planned(tmp_path):
    from converters.merge import load_strategy
    from pretrain.parallel import model_params, summarize, write_strategy
    from pretrain.train import build_arch

    cfg = load_config(REPO / "configs/pretrain/giant_32x8x4.py")
    pc = config_parallel(cfg, "Ascend")
    assert (pc.device_num, pc.data_parallel, pc.model_parallel, pc.expert_parallel) == (256, 32, 8, 4)
    with pytest.raises(ConfigError, match="Invalid communication backend: CPU"):
        config_parallel(cfg, "CPU")
    assert semi_auto_unsupported(pc) is None  # pretrain/models/ringmoe.py sets its strategies (test_pretrain_shard.py)
    arch = build_arch(cfg)
    layouts = plan_layouts(model_params(arch), pc, arch.num_heads)
    assert len(layouts) == 1070 and summarize(layouts, pc)["parameters"] == 14_813_014_212

    stage2 = "encoder.layers.2.blocks.0"
    expert = layouts[f"{stage2}.mlp.cross_ffn.mapping.weight"]  # 4 experts over ep 4, hidden over mp 8
    assert (expert.shape, expert.dev_matrix, expert.slice_shape) == ((4, 1792, 7168), (4, 8, 8), (1, 1792, 896))
    public = layouts[f"{stage2}.mlp.public_ffn.mapping.weight"]  # mp 8, then optimizer-sharded over dp 32
    assert (public.slice_shape, public.opt_shard_size) == ((56, 896), -1)
    assert layouts[f"{stage2}.attn.q.weight"].slice_shape == (7, 1792)  # 56 heads: head-parallel
    assert layouts["encoder.layers.0.blocks.0.attn.q.weight"].tensor_map == (-1, -1)  # 14 heads: not split 8 ways

    # The plan as a strategy file: converters/merge.py reads the same layouts and slice shapes.
    strategy = load_strategy(write_strategy(layouts, tmp_path / "strategy.json"))
    assert strategy.stage_device_num == 256 and sorted(strategy.layouts) == sorted(layouts)
    for name, ours in layouts.items():
        theirs = strategy.layouts[name]
        theirs.check("plan")
        assert theirs.slice_shape(ours.shape) == ours.slice_shape, name


def test_planned_operator_parallel_checkpoints_merge_like_mindspore(tmp_path):
    """dp 2 x mp 2, ep 2, optimizer sharding on tiny: slice full tensors per rank with MindSpore's
    own slicing helper, then merge with converters/merge.py and MindSpore's transform_checkpoints."""
    import mindspore as ms
    from mindspore.parallel._tensor import _get_tensor_slice_index, _get_tensor_strategy, _load_tensor

    from converters.ckpt_io import read_tensor, scan_checkpoint
    from converters.merge import open_merged
    from pretrain.models.arch import get_arch
    from pretrain.parallel import model_params, write_strategy

    arch = get_arch("tiny").replace(depths=(1, 1, 1, 1))
    pc = parse_parallel(dict(mode="semi_auto_parallel", data_parallel=2, model_parallel=2, expert_parallel=2,
                             optimizer_shard=True, optimizer_shard_threshold_kb=0))
    check_parallel(pc, arch.num_experts, "Ascend")
    layouts = plan_layouts(model_params(arch), pc, arch.num_heads)
    kinds = {(any(s > 1 for s in lay.splits), lay.opt_pieces > 1) for lay in layouts.values()}
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}
    rng = np.random.default_rng(0)
    full = {name: rng.standard_normal(lay.shape).astype(np.float32) for name, lay in layouts.items()}

    def mp_slice(lay, rank):
        strategy = _get_tensor_strategy(list(lay.dev_matrix), list(lay.tensor_map))
        return _get_tensor_slice_index(list(lay.dev_matrix), strategy, list(lay.tensor_map), rank)

    for rank in range(pc.device_num):
        items = []
        for name, lay in layouts.items():
            piece = _load_tensor(ms.Tensor(full[name]), list(lay.dev_matrix), list(lay.tensor_map), rank_id=rank)
            if lay.opt_pieces > 1:  # the i-th of the ranks holding one model-parallel slice keeps piece i
                holders = [r for r in range(pc.device_num) if mp_slice(lay, r) == mp_slice(lay, rank)]
                piece = np.split(piece, lay.opt_pieces)[holders.index(rank) % lay.opt_pieces]
            assert piece.shape == lay.slice_shape, name
            items.append({"name": name, "data": ms.Tensor(np.ascontiguousarray(piece))})
        (tmp_path / "src" / f"rank_{rank}").mkdir(parents=True)
        ms.save_checkpoint(items, str(tmp_path / "src" / f"rank_{rank}" / "ringmoe-t-step00000001.ckpt"))
    strategy = write_strategy(layouts, tmp_path / "strategy.json")

    merged = open_merged(tmp_path / "src", strategy)
    for name in full:
        assert merged.read(name).tobytes() == full[name].tobytes(), name
    ms.transform_checkpoints(str(tmp_path / "src"), str(tmp_path / "ms"), "merged", str(strategy), None)
    path = tmp_path / "ms" / "rank_0" / "merged0.ckpt"
    index = scan_checkpoint(path)
    assert sorted(index) == sorted(full)
    for name, record in index.items():
        assert read_tensor(path, record).tobytes() == full[name].tobytes(), name


# ---- rank tables and launchers --------------------------------------------------------------------
@pytest.mark.parametrize("nodes", [1, 2, 8, 16])
def test_rank_table_for_n_nodes(nodes, tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# host, then its 8 device IPs\n" + "".join(
        f"10.0.{n // 200}.{n % 200 + 1} " + " ".join(f"192.{d + 1}.{n}.6" for d in range(8)) + "\n"
        for n in range(nodes)))
    out = tmp_path / "rank_table.json"
    assert rank_table.main(["--hostfile", str(hosts), "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["version"] == "1.0" and doc["server_count"] == str(nodes) and doc["status"] == "completed"
    first = doc["server_list"][0]["device"][0]
    assert all(isinstance(v, str) for v in first.values()) and first == {
        "device_id": "0", "device_ip": "192.1.0.6", "rank_id": "0"}
    table = rank_table.load_rank_table(out)
    assert table.rank_size == 8 * nodes
    for n, server in enumerate(table.servers):
        assert [d.rank_id for d in server.devices] == list(range(8 * n, 8 * n + 8))
        assert [d.device_id for d in server.devices] == list(range(8))
    last = table.servers[-1].server_id
    children = hccl_run.children(out, table, last, ["pretrain/train.py", "--config", "c.py"], tmp_path / "logs")
    assert [c.env["RANK_ID"] for c in children] == [str(r) for r in range(8 * nodes - 8, 8 * nodes)]
    assert {c.env["RANK_SIZE"] for c in children} == {str(8 * nodes)}
    assert [c.env["DEVICE_ID"] for c in children] == [str(d) for d in range(8)]
    assert children[0].env["RANK_TABLE_FILE"] == str(out.resolve())
    assert children[0].argv[0] == sys.executable and children[0].log.name == f"rank_{8 * nodes - 8}.log"


def test_rank_table_inputs_and_errors(tmp_path, capsys):
    conf = tmp_path / "hccn.conf"
    conf.write_text("".join(f"address_{d}=192.{d + 1}.27.6\nnetmask_{d}=255.255.255.0\n" for d in range(8)))
    out = tmp_path / "rt.json"
    assert rank_table.main(["--hosts", "10.0.0.9", "--hccn-conf", str(conf), "-o", str(out)]) == 0
    assert rank_table.load_rank_table(out).servers[0].devices[7].device_ip == "192.8.27.6"
    assert rank_table.main(["--hosts", "10.0.0.1,10.0.0.2", "--device-ip-template", "192.{device}.27.{node}",
                            "--devices-per-node", "4", "-o", str(out)]) == 0
    assert rank_table.main(["--check", str(out)]) == 0
    assert "2 servers, 8 ranks" in capsys.readouterr().out
    bad = [["--hosts", "10.0.0.1,10.0.0.1", "--device-ip-template", "192.{device}.1.{node}"],  # host twice
           ["--hosts", "10.0.0.1", "--device-ip-template", "192.{dev}.1.1"],  # unknown field
           ["--hosts", "10.0.0.1"],  # no device IPs
           ["--hosts", "node1", "--hccn-conf", str(conf)]]  # not an IP
    for args in bad:
        assert rank_table.main(args + ["-o", str(tmp_path / "x.json")]) == 2
    doc = json.loads(out.read_text())
    doc["server_list"][1]["device"][0]["rank_id"] = "0"
    out.write_text(json.dumps(doc))
    assert rank_table.main(["--check", str(out)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == len(bad) + 1 and all(e.startswith("rank_table: error: ") for e in errors)
    assert "rank ids must be 0..7 once each" in errors[-1]


def test_a_rank_table_process_uses_its_device_id(monkeypatch):
    from pretrain.parallel import device_id_from_env

    monkeypatch.setenv("DEVICE_ID", "5")
    assert device_id_from_env("Ascend") is None  # msrun: MindSpore negotiates the device itself
    monkeypatch.setenv("RANK_TABLE_FILE", "/x/rank_table.json")
    assert device_id_from_env("Ascend") == 5 and device_id_from_env("CPU") is None


def test_msrun_and_rank_table_command_lines(tmp_path, capsys):
    child = msrun.msrun_child(["pretrain/train.py", "--config", "c.py"], nproc=8, nnodes=2, node_rank=1,
                              master_addr="10.0.0.1", master_port=8118, log_dir=tmp_path)
    assert child.argv[1:9] == ["--worker_num=16", "--local_worker_num=8", "--master_addr=10.0.0.1",
                               "--master_port=8118", "--node_rank=1", f"--log_dir={tmp_path}", "--join=True",
                               "--cluster_time_out=600"]
    assert child.argv[-3:] == ["pretrain/train.py", "--config", "c.py"]
    assert child.env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # workers' `python`
    assert msrun.main(["--nproc", "2", "--dry-run", "--", "pretrain/train.py", "--config", "c.py"]) == 0
    assert "--worker_num=2 --local_worker_num=2" in capsys.readouterr().out
    assert msrun.main(["--nproc", "8", "--node-rank", "1", "--", "pretrain/train.py"]) == 2
    assert msrun.main(["--nproc", "2"]) == 2
    table = tmp_path / "rt.json"
    rank_table.main(["--hosts", "10.0.0.1,10.0.0.2", "--device-ip-template", "192.{device}.1.{node}", "-o", str(table)])
    capsys.readouterr()
    assert hccl_run.main(["--rank-table", str(table), "--server-id", "10.0.0.2", "--dry-run", "--",
                          "pretrain/train.py", "--config", "c.py"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "server 10.0.0.2: ranks 8..15 of 16" and len(lines) == 9
    assert lines[1].startswith(f"RANK_TABLE_FILE={table} RANK_ID=8 DEVICE_ID=0 RANK_SIZE=16 ")
    assert hccl_run.main(["--rank-table", str(table), "--server-id", "10.0.0.3", "--", "x.py"]) == 2
    assert "not in the rank table" in capsys.readouterr().err


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_launcher_stops_children_and_their_own_sessions(tmp_path):
    """Like msrun: a child that starts a worker in a session of its own (setsid) and then hangs.
    A timeout, or another child failing, must end both, by their ids."""
    from pretrain.launch.procs import Child, run_children

    spawn = ("import subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', 'import time; "
             "time.sleep(120)'], start_new_session=True); open(sys.argv[1], 'w').write(str(w.pid)); time.sleep(120)")
    pids = [tmp_path / "a.pid", tmp_path / "b.pid"]
    hung = [Child([sys.executable, "-c", spawn, str(pids[0])], {}, tmp_path / "a.log")]
    assert run_children(hung, timeout_s=3, echo=lambda _: None) == 124
    failing = Child([sys.executable, "-c", "import time, sys; time.sleep(2); sys.exit(3)"], {}, tmp_path / "c.log")
    assert run_children([Child([sys.executable, "-c", spawn, str(pids[1])], {}), failing],
                        echo=lambda _: None) == 3
    for path in pids:
        assert not _alive(int(path.read_text())), "a worker in its own session survived"


@pytest.mark.parametrize("module", ["pretrain.launch.rank_table", "pretrain.launch.hccl_run", "pretrain.launch.msrun",
                                    "pretrain.parallel"])
def test_cli_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=30,
                            cwd=REPO)
    assert result.returncode == 0 and "usage:" in result.stdout
    imported = subprocess.run(  # --help imports nothing heavy
        [sys.executable, "-c", f"import sys, {module}; print(sorted(m for m in sys.modules if 'mindspore' in m))"],
        capture_output=True, text=True, timeout=30, cwd=REPO)
    assert imported.stdout.strip() == "[]", imported.stderr


# ---- a real data-parallel run ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _running_with(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (a test's own temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _launch(tmp_path: Path, work: Path, nproc: int, extra: list[str], timeout: int = 200):
    data = tmp_path / "data"
    if not data.is_dir():
        from pretrain.data.synthetic import generate_pretrain_data

        generate_pretrain_data(data, num_per_modality=2, size=200, seed=0)
    args = [sys.executable, "-m", "pretrain.launch.msrun", "--nproc", str(nproc), "--master-port", str(_free_port()),
            "--log-dir", str(work / "msrun_logs"), "--timeout", str(timeout), "--cluster-time-out", "60", "--",
            "pretrain/train.py", "--config", "configs/pretrain/tiny_dp2.py", "--work-dir", str(work),
            "--cfg-options", "model.depths=(1,1,1,1)", f"data.root={data}", "data.batch_size=1", "data.num_workers=0",
            "train.log_interval=1", "train.routing_interval=0", "train.mode=pynative", *extra]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 30, cwd=REPO)
    assert not _running_with(str(work)), "launcher left processes behind"
    return result


def _params(path: Path) -> dict[str, np.ndarray]:
    from converters.ckpt_io import read_tensor, scan_checkpoint

    index = scan_checkpoint(path)
    return {name: read_tensor(path, record) for name, record in index.items()}


def test_data_parallel_training_on_two_cpu_processes(tmp_path):
    work = tmp_path / "run"
    result = _launch(tmp_path, work, 2, ["train.steps=1", "train.save_interval=1"])
    logs = "".join(p.read_text() for p in sorted((work / "msrun_logs").glob("worker_*.log")))
    assert result.returncode == 0, result.stdout[-2000:] + logs[-4000:]

    # One checkpoint per rank in rank_<r>/, the strategy beside them, shared logs from rank 0 only.
    ckpts = {r: sorted((work / f"rank_{r}").glob("*.ckpt")) for r in (0, 1)}
    assert [p.name for r in (0, 1) for p in ckpts[r]] == ["ringmoe-tiny_dp2-step00000001.ckpt"] * 2
    assert {"config.json", "log.jsonl", "loss.png", "strategy.json", "train.log"} <= {p.name for p in work.iterdir()}
    assert not (work / "rank_1" / "loss.png").exists() and (work / "rank_1" / "log.jsonl").is_file()

    # The ranks read different batches, and the gradient all-reduce kept their weights identical.
    first = [json.loads((d / "log.jsonl").read_text().splitlines()[0]) for d in (work, work / "rank_1")]
    assert first[0]["step"] == first[1]["step"] == 1 and first[0]["loss"] != first[1]["loss"]
    rank0, rank1 = _params(ckpts[0][0]), _params(ckpts[1][0])
    assert sorted(rank0) == sorted(rank1)
    trained = [n for n in rank0 if n.startswith("adam_m.")]
    assert trained and all(np.abs(rank0[n]).max() > 0 for n in trained[:20])  # updates happened
    for name in rank0:
        assert rank0[name].tobytes() == rank1[name].tobytes(), f"ranks disagree on {name}"
    meta = json.loads(str(rank0["ringmoe_meta"]))
    assert meta["data"]["group_size"] == 2 and meta["step"] == 1

    # The converter merges the per-rank directory with the strategy (and checks every replica).
    from converters.ms2torch import main as ms2torch

    out = tmp_path / "merged.pth"
    assert ms2torch([str(work), "--strategy", str(work / "strategy.json"), "-o", str(out)]) == 0
    import torch

    converted = torch.load(out, weights_only=True)
    assert converted["meta"]["arch"]["depths"] == [1, 1, 1, 1]
    q = converted["state_dict"]["layers.0.blocks.0.attn.q.weight"].numpy()  # nn.Dense: same layout
    assert q.tobytes() == rank0["encoder.layers.0.blocks.0.attn.q.weight"].tobytes()


def test_a_launch_with_the_wrong_process_count_fails_cleanly(tmp_path):
    work = tmp_path / "run"
    result = _launch(tmp_path, work, 1, ["train.steps=1"], timeout=120)
    log = (work / "msrun_logs" / "worker_0.log").read_text()
    assert result.returncode != 0
    assert "train: error: parallel: data_parallel x model_parallel x pipeline_stages = 2 but 1 process(es)" in log
