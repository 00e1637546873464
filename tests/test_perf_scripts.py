"""benchmarks/perf/step_perf.py, moe_perf.py and convert_perf.py: complete tables of finite numbers, and a torch
step that computes what MindSpore's does. No timing assertions (the numbers are machine-bound).

The full-model GRAPH compile of tiny takes ~30 s on 2 cores, so the step script runs here in
PyNative and torch only; GRAPH mode is covered by the MoE script (a small graph, all three).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from benchmarks.perf import moe_perf, step_perf
from pretrain.models.arch import get_arch


def _finite_positive(row: dict, keys: tuple[str, ...]) -> None:
    assert "error" not in row, row.get("error")
    for key in keys:
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])


def test_torch_simmim_computes_the_mindspore_loss(tiny_simmim, tiny_converted):
    """With MindSpore's weights, the benchmark's torch SimMIM (twin + joint MoE + decoders) gives
    MindSpore's losses and gradients: the two frameworks time the same forward and backward."""
    import mindspore as ms
    import torch

    from benchmarks.models.loading import load_pretrained

    arch = get_arch("tiny")
    model = step_perf.build_torch_simmim(arch)
    load_pretrained(model.backbone, tiny_converted)
    with torch.no_grad():
        model.mask_token.copy_(torch.from_numpy(tiny_simmim.encoder.mask_token.asnumpy()))
        for m, decoder in enumerate(model.decoders):
            ms_decoder = getattr(tiny_simmim, f"decoder_{m}")
            decoder.weight.copy_(torch.from_numpy(ms_decoder.weight.asnumpy()))
            decoder.bias.copy_(torch.from_numpy(ms_decoder.bias.asnumpy()))
    batch = step_perf.synthetic_batches(arch, 1, 1, seed=5)[0]

    ms.set_context(mode=ms.PYNATIVE_MODE)
    images = tuple(ms.Tensor(x) for x in batch["images"])
    masks = tuple(ms.Tensor(x) for x in batch["masks"])
    weight = tiny_simmim.encoder.patch_embed0.projection.weight
    grad_fn = ms.value_and_grad(lambda i, m: tiny_simmim(i, m), None, [weight], has_aux=True)
    (ms_loss, ms_per, ms_aux), (ms_grad,) = grad_fn(images, masks)

    loss, per, aux = model([torch.from_numpy(x) for x in batch["images"]],
                           [torch.from_numpy(x) for x in batch["masks"]])
    loss.backward()
    loss, aux = float(loss.detach()), float(aux.detach())
    np.testing.assert_allclose(per.detach().numpy(), ms_per.asnumpy(), rtol=1e-4)
    np.testing.assert_allclose(aux, float(ms_aux), rtol=1e-4)
    np.testing.assert_allclose(loss, float(ms_loss), rtol=1e-4)
    grad = model.backbone.patch_embed["optical"].proj.weight.grad.numpy()
    ms_grad = ms_grad.asnumpy()
    assert np.abs(grad - ms_grad).max() <= 1e-3 * np.abs(ms_grad).max()


def test_step_perf_table_pynative_and_torch(tmp_path, capsys):
    out = tmp_path / "step.json"
    code = step_perf.main(["--frameworks", "ms-pynative", "torch", "--warmup", "0", "--steps", "1",
                           "--threads", "2", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [(r["config"], r["framework"]) for r in rows] == [("tiny", "ms-pynative"), ("tiny", "torch")]
    for row in rows:
        _finite_positive(row, ("step_s", "mean_s", "first_step_s", "images_per_s", "peak_rss_mib",
                               "rss_after_import_mib"))
        assert row["peak_rss_mib"] >= row["rss_after_import_mib"]
        assert row["threads"] == 2 and row["steps"] == 1 and all(math.isfinite(v) for v in row["losses"])
    printed = capsys.readouterr().out
    assert printed.count("\ntiny | ") == 2
    verdict = [line for line in printed.splitlines() if "tiny ms-pynative: training step" in line]
    assert len(verdict) == 1 and verdict[0].split()[0] in ("PASS", "FAIL")


def test_moe_perf_table_all_frameworks(tmp_path, capsys):
    out = tmp_path / "moe.json"
    # 4 images of 96 px: 2,304 tokens at stage 0 (a small graph to compile).
    code = moe_perf.main(["--configs", "tiny", "--images", "4", "--img-size", "96", "--warmup", "0", "--steps", "1",
                          "--threads", "2", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r["framework"] for r in rows] == list(step_perf.FRAMEWORKS)
    for row in rows:
        assert (row["tokens"], row["dim"], row["path"]) == (4 * 24 * 24, 32, "joint")
        _finite_positive(row, ("moe_s", "dense_s", "moe_tokens_per_s", "dense_tokens_per_s", "ratio",
                               "dense_gflop_per_s", "peak_rss_mib"))
    printed = capsys.readouterr().out
    assert printed.count("\ntiny | ") == 3
    assert all(line.rsplit("|", 1)[1].strip() in ("PASS", "FAIL") for line in printed.splitlines()
               if line.startswith("tiny | "))


@pytest.mark.parametrize("module,argv", [
    (step_perf, ["--steps", "0"]),
    (moe_perf, ["--images", "6"]),  # the joint path splits the images into 4 modalities
    (moe_perf, ["--stage", "4"]),
])
def test_bad_arguments_exit_2(module, argv, capsys):
    assert module.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_pipeline_script_reports_every_modality_and_the_zipped_step(tmp_path, capsys):
    """pipeline_perf.py on tiny, pipeline only (its training rate is a graph compile: see step_perf)."""
    from benchmarks.perf import pipeline_perf

    out = tmp_path / "pipeline.json"
    assert pipeline_perf.main(["--configs", "tiny", "--skip-train", "--pipeline-steps", "2", "--demo-tiles", "4",
                               "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    measured = row["pipeline"]
    assert sorted(measured["per_modality_samples_per_s"]) == sorted(m.name for m in get_arch("tiny").modalities)
    for value in list(measured["per_modality_samples_per_s"].values()) + [measured["step_images_per_s"]]:
        assert math.isfinite(value) and value > 0
    assert "tiny" in capsys.readouterr().out


def test_convert_perf_measures_every_path_and_cleans_up(tmp_path, capsys, monkeypatch):
    """convert_perf.py end to end on tiny (cp, safetensors, pth), memory freed before each run."""
    from benchmarks.perf import convert_perf

    freed = []
    real = convert_perf.touch_and_free
    monkeypatch.setattr(convert_perf, "touch_and_free", lambda gib: (freed.append(gib), real(gib)))
    workdir = tmp_path / "perf"
    assert convert_perf.main(["--arch", "tiny", "--workdir", str(workdir), "--only", "cp", "safetensors", "pth",
                              "--repeat", "1", "--settle", "0", "--free-memory", "0.05"]) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in printed.splitlines()
            if line.split() and line.split()[0] in ("cp", "safetensors", "pth")}
    assert set(rows) == {"cp", "safetensors", "pth"}, printed
    assert all(float(row[1]) > 0 and math.isfinite(float(row[1])) for row in rows.values())  # wall s
    assert "outputs agree (safetensors, pth: same" in printed
    assert "safetensors throughput" in printed and "safetensors peak RSS" in printed
    assert "median of the rounds' ratios" in printed
    assert freed == [0.05] * 3
    assert sorted(p.name for p in workdir.iterdir()) == ["convert_perf.log"]  # no --keep: inputs and outputs gone


def test_convert_perf_counts_the_memory_of_the_whole_process_tree():
    """The converter's helper interpreter is a child process: its memory counts in the peak."""
    import subprocess
    import sys
    import time

    from benchmarks.perf.convert_perf import MiB, cpu_seconds, process_tree, tree_rss

    hold = "b = b'x' * (150 << 20); import time; time.sleep(30)"  # 150 MiB, every page touched
    code = f"import subprocess, sys; b = b'x' * (150 << 20); subprocess.run([sys.executable, '-c', {hold!r}])"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline, seen = time.monotonic() + 60, 0
        while time.monotonic() < deadline and seen < 300 * MiB:
            seen = max(seen, tree_rss(parent.pid))
            time.sleep(0.05)
        assert seen >= 300 * MiB, f"saw {seen / MiB:.0f} MiB for two processes of 150 MiB each"
        tree = process_tree(parent.pid)
        assert len(tree) == 2 and tree[0] == parent.pid
        assert cpu_seconds(tree[1]) > 0  # it built 150 MiB of bytes
    finally:
        for pid in map(int, open(f"/proc/{parent.pid}/task/{parent.pid}/children").read().split()):
            os.kill(pid, 9)
        parent.kill()
        parent.wait()
