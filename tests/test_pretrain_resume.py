"""Checkpoint rotation and crash-safe resume of pretrain/train.py, and its observability log.

The subprocess test trains the tiny config with one block per stage (``model.depths=(1,1,1,1)``:
same code paths, half the graph to compile) on generated data, kills a run with SIGKILL after a
checkpoint, resumes it with ``--resume`` (auto) and compares the loss trajectory with an
uninterrupted run of the same config.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pretrain.checkpoint import (
    LATEST, complete_checkpoints, latest_checkpoint, prune_checkpoints, resume_state, save_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
STEPS = 6
# Resume restores the float32 weights, the Adam moments and step counter, and the data position
# exactly, and a CPU graph-mode run is bit-reproducible across processes here, so the only
# admissible difference is reduction-order noise (a few float32 ulps, ~1e-7 relative) carried
# through at most STEPS updates (measured: bit-identical). A broken resume moves these losses by
# far more (measured from the step-4 checkpoint: other batches (seed 1) change step 5 by 0.035;
# zeroed Adam moments change step 6 by 0.15).
RTOL = 1e-5


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _tiny_cell():
    import mindspore as ms
    from mindspore import nn

    ms.set_context(mode=ms.PYNATIVE_MODE)
    return nn.Dense(3, 2)


def test_keep_last_deletes_old_checkpoints_and_resume_ignores_temporary_files(tmp_path, monkeypatch):
    net = _tiny_cell()
    for step in range(1, 6):
        save_checkpoint(tmp_path / f"ringmoe-t-step{step}.ckpt", net, {"config": "t"}, step=step, keep_last=2)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [4, 5]
    assert (tmp_path / LATEST).read_text().strip() == "ringmoe-t-step5.ckpt"

    # A save killed half-way leaves only a hidden temporary file: never a resume candidate.
    (tmp_path / f".ringmoe-t-step9.tmp-{_dead_pid()}.ckpt").write_bytes(b"half a checkpoint")
    assert latest_checkpoint(tmp_path) == tmp_path / "ringmoe-t-step5.ckpt"
    (tmp_path / LATEST).unlink()  # without the pointer, the newest finished file
    assert latest_checkpoint(tmp_path) == tmp_path / "ringmoe-t-step5.ckpt"
    step, meta = resume_state(latest_checkpoint(tmp_path), _tiny_cell())
    assert step == 5 and meta["step"] == 5 and meta["config"] == "t"

    # A save that fails while writing keeps the previous checkpoints and the pointer.
    (tmp_path / LATEST).write_text("ringmoe-t-step4.ckpt\n")  # as if killed before the pointer moved

    def broken_save(entries, path, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    import pretrain.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint.ms, "save_checkpoint", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ringmoe-t-step6.ckpt", net, {}, step=6, keep_last=1)
    monkeypatch.undo()
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [4, 5]
    assert (tmp_path / LATEST).read_text().strip() == "ringmoe-t-step4.ckpt"
    assert not list(tmp_path.glob("*step6*"))
    # A complete file newer than the pointer (killed between rename and pointer) is the newest;
    # a higher step left by an earlier run in the same work dir (written before) is not.
    stale = save_checkpoint(tmp_path / "ringmoe-t-step99.ckpt", net, {}, step=99)
    os.utime(stale, ns=(0, 0))
    (tmp_path / LATEST).write_text("ringmoe-t-step4.ckpt\n")
    assert latest_checkpoint(tmp_path) == tmp_path / "ringmoe-t-step5.ckpt"

    # Pruning never deletes what the pointer names, and removes dead processes' temporary files.
    deleted = prune_checkpoints(tmp_path, "ringmoe-t", keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "ringmoe-t-step4.ckpt", "ringmoe-t-step5.ckpt"]
    assert any(".tmp-" in p.name for p in deleted) and stale in deleted


def _train_args(work: Path, data: Path) -> list[str]:
    return [sys.executable, str(REPO / "pretrain/train.py"), "--config", str(REPO / "configs/pretrain/tiny.py"),
            "--work-dir", str(work), "--cfg-options", "model.depths=(1,1,1,1)", f"data.root={data}",
            "data.batch_size=1", f"train.steps={STEPS}", "train.log_interval=1", "train.save_interval=2",
            "train.routing_interval=3", "train.mode=graph", "checkpoint.keep_last=2"]


def _log(work: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
    return {r["step"]: r for r in records}


def _run_until(args: list[str], marker: str, limit_s: float = 240) -> str:
    """Start training, SIGKILL it as soon as a line containing ``marker`` is printed."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(limit_s, proc.kill)
    watchdog.start()
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    return "".join(seen)


def _assert_same_record(got: dict, want: dict) -> None:
    assert got["loss"] == pytest.approx(want["loss"], rel=RTOL)
    assert got["aux"] == pytest.approx(want["aux"], rel=RTOL)
    assert got["losses"] == pytest.approx(want["losses"], rel=RTOL)
    assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)


def test_sigkill_then_resume_auto_continues_the_uninterrupted_trajectory(tmp_path):
    from pretrain.data.synthetic import generate_pretrain_data

    data = generate_pretrain_data(tmp_path / "data", num_per_modality=2, size=200, seed=0)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(_train_args(whole, data), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reference = _log(whole)
    assert sorted(reference) == list(range(1, STEPS + 1))
    assert [s for s, _ in complete_checkpoints(whole)] == [4, 6]  # keep_last=2 of 2, 4, 6

    # Kill during step 4, after the step-2 checkpoint and the step-3 log record.
    _run_until(_train_args(killed, data), f"step 3/{STEPS}")
    newest = latest_checkpoint(killed)
    assert newest is not None
    start = int(newest.stem.rsplit("step", 1)[1])
    assert 2 <= start < STEPS and not (killed / f"ringmoe-tiny-step{STEPS}.ckpt").exists()

    resumed = subprocess.run(_train_args(killed, data) + ["--resume"], capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {newest} at step {start}" in resumed.stdout
    assert f"step {start + 1}/{STEPS}" in resumed.stdout and f"step {start}/{STEPS}" not in resumed.stdout
    log = _log(killed)  # records the killed run wrote after its checkpoint were trimmed
    assert sorted(log) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        _assert_same_record(log[step], reference[step])

    # Observability: per-block routing every routing_interval steps, on both runs alike.
    probe = reference[STEPS]
    assert "routing" in reference[3] and "routing" not in reference[2]
    assert sorted(probe["routing"]) == [f"layers.{s}.blocks.0" for s in range(4)]
    for block in probe["routing"].values():
        assert sorted(block["load"]) == sorted(block["drop"]) == ["cross", "msi", "optical", "sar_l1", "sar_l2"]
        for load in block["load"].values():
            assert len(load) == 4 and sum(load) == pytest.approx(1.0, abs=1e-3)
        assert all(0.0 <= d <= 1.0 for d in block["drop"].values())
    assert 0.0 < probe["drop_rate"] < 1.0  # capacity factor 1.2 with skewed early routing drops some
    assert log[STEPS]["drop_rate"] == pytest.approx(probe["drop_rate"], abs=1e-4)
    assert all(r["images_per_s"] > 0 for r in log.values())
    assert (killed / "loss.png").stat().st_size > 0
