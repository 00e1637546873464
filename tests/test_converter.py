"""Converter coverage, a deliberately wrong mapping, and the CLI's error paths."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from converters.ckpt_io import scan_checkpoint
from converters.rules import ringmoe as rules
from converters.ringmoe import convert
from converters.util import ConversionError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "converters/ms2torch.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_report_accounts_for_every_source_tensor(tiny_ms_checkpoint, tiny_converted):
    sources = set(scan_checkpoint(tiny_ms_checkpoint))
    report = json.loads(tiny_converted.with_suffix(".report.json").read_text())
    assert set(report["mapped"]) | set(report["dropped"]) == sources
    assert not set(report["mapped"]) & set(report["dropped"])
    assert all(reason for reason in report["dropped"].values())
    reasons = set(report["dropped"].values())
    assert any("pretraining only" in r for r in reasons)  # mask token and decoders
    assert any("derived buffer" in r for r in reasons)


def test_converted_checkpoint_loads_weights_only_and_carries_metadata(tiny_converted):
    payload = torch.load(tiny_converted, weights_only=True)
    meta = payload["meta"]
    assert [m["name"] for m in meta["modalities"]] == ["optical", "sar_l1", "sar_l2", "msi"]
    assert [m["channels"] for m in meta["modalities"]] == [3, 8, 3, 4]
    assert all(len(m["mean"]) == len(m["std"]) == m["channels"] == len(m["bands"]) for m in meta["modalities"])
    assert meta["pretrain"] == {"img_size": 192, "window_sizes": [12, 12, 12, 6], "config": "tiny", "step": 0}
    assert meta["arch"]["depths"] == [2, 2, 2, 2] and meta["arch"]["num_experts"] == 4
    # all four modalities are kept
    assert {k.split(".")[1] for k in payload["state_dict"] if k.startswith("patch_embed.")} == {
        "optical", "sar_l1", "sar_l2", "msi"}


def test_values_and_layouts_are_transformed(tiny_simmim, tiny_converted):
    sd = torch.load(tiny_converted, weights_only=True)["state_dict"]
    mlp = tiny_simmim.encoder.layers[1].blocks[0].mlp
    w = mlp.special_ffn[2].mapping.weight.asnumpy()  # [E, in, out]
    assert torch.equal(sd["layers.1.blocks.0.ffn.modal_experts.sar_l2.fc1.weight"], torch.from_numpy(w))  # kept
    b = mlp.cross_ffn.projection.bias.asnumpy()  # [1, E, 1, out]
    assert torch.equal(sd["layers.1.blocks.0.ffn.cross_experts.fc2.bias"], torch.from_numpy(b[0, :, 0]))
    shared = mlp.public_ffn.mapping.weight.asnumpy()  # [in, out]
    assert torch.equal(sd["layers.1.blocks.0.ffn.shared.fc1.weight"], torch.from_numpy(shared).T)


def test_a_key_without_a_rule_fails_and_is_named(tiny_ms_checkpoint, monkeypatch):
    monkeypatch.setattr(rules, "_DROPS", [d for d in rules._DROPS if "mask_token" not in d[0].pattern])
    with pytest.raises(ConversionError, match=r"1 source tensors match no rule: encoder\.mask_token"):
        convert(tiny_ms_checkpoint)


def test_a_wrong_mapping_fails(tiny_ms_checkpoint, monkeypatch):
    """Map k onto q by mistake: two sources for one target, and k left unfilled."""
    wrong = [(p, t.replace("{l}", "q") if "attn.{l}" in t else t, f) for p, t, f in rules.RENAMES]
    monkeypatch.setattr(rules, "_RENAMES", [(rules.re.compile(p), t, f) for p, t, f in wrong])
    with pytest.raises(ConversionError, match="both map to"):
        convert(tiny_ms_checkpoint)


def test_a_wrong_transform_fails(tiny_ms_checkpoint, monkeypatch):
    """Forgetting to transpose the [in, out] shared FFN gives the wrong shape, and says so."""
    wrong = [(p, t, "identity" if f == "transpose" else f) for p, t, f in rules.RENAMES]
    monkeypatch.setattr(rules, "_RENAMES", [(rules.re.compile(p), t, f) for p, t, f in wrong])
    with pytest.raises(ConversionError, match="shape"):
        convert(tiny_ms_checkpoint)


# ---- CLI error paths: one line on stderr, exit code 2, nothing written ---------------------
def assert_clean_failure(result: subprocess.CompletedProcess, out_dir: Path, pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ms2torch: error:"), result.stderr
    assert pattern in lines[0], lines[0]
    assert list(out_dir.iterdir()) == [], "a failed conversion must leave nothing behind"


def test_cli_missing_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_failure(run_cli(str(tmp_path / "nope.ckpt"), "-o", str(out / "x.pth")), out, "no such file")


def test_cli_truncated_inside_a_record(tiny_ms_checkpoint, tmp_path):
    data = tiny_ms_checkpoint.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2 + 7])
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_failure(run_cli(str(cut), "-o", str(out / "x.pth")), out, "cut.ckpt")


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_cli_truncated_at_a_record_boundary(tiny_ms_checkpoint, tmp_path, fmt):
    """A file cut between records parses, but tensors the model needs are missing. (For
    safetensors the twin check that finds this runs while the tensors are being written.)"""
    index = scan_checkpoint(tiny_ms_checkpoint)
    middle = sorted(index.values(), key=lambda r: r.offsets[0][0])[len(index) // 2]
    data = tiny_ms_checkpoint.read_bytes()
    cut = tmp_path / "boundary.ckpt"
    # The record's framing (tag, name, dims, type) precedes its content: walk back from the
    # content to the first cut that parses, which is the boundary before this record.
    for stop in range(middle.offsets[0][0], 0, -1):
        cut.write_bytes(data[:stop])
        try:
            scanned = scan_checkpoint(cut)
        except Exception:
            continue
        break
    assert len(scanned) == len(index) // 2
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_failure(run_cli(str(cut), "-o", str(out / f"x.{fmt}"), "--format", fmt), out, "lacks")


def test_cli_wrong_architecture(tiny_ms_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert_clean_failure(run_cli(str(tiny_ms_checkpoint), "-o", str(out / "x.pth"), "--arch", "giant"), out,
                         "wrong architecture")


def test_cli_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00\x01definitely not protobuf" * 10)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(str(junk), "-o", str(out / "x.pth"))
    assert_clean_failure(result, out, "junk.ckpt")


def test_cli_converts_and_reports(tiny_ms_checkpoint, tmp_path):
    result = run_cli(str(tiny_ms_checkpoint), "-o", str(tmp_path / "t.pth"), "--arch", "tiny")
    assert result.returncode == 0, result.stderr
    assert "0 unexplained" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pth", "t.report.json"]


def test_cli_piped_into_a_reader_that_leaves_early_ends_without_a_traceback(tiny_ms_checkpoint, tmp_path):
    """``ms2torch ... | head -1``: the reader closes the pipe before the summary is written."""
    out = tmp_path / "piped.pth"
    proc = subprocess.Popen([sys.executable, str(REPO / "converters/ms2torch.py"), str(tiny_ms_checkpoint),
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 1
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert torch.load(out, weights_only=True)["meta"]["coverage"]["mapped"] > 0  # the conversion itself completed


def test_cli_help_is_fast_and_explains():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "report" in result.stdout and "Exit codes" in result.stdout
    probe = ("import sys; from converters import ms2torch; ms2torch.parse_args(['a.ckpt', '-o', 'b.pth']); "
             "print(sorted({'torch', 'mindspore', 'numpy'} & set(sys.modules)))")
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert heavy.stdout.strip() == "[]", "argument parsing must not import heavy frameworks"


def test_conversion_needs_only_torch_and_numpy(tiny_ms_checkpoint, tmp_path):
    """MindSpore, protobuf and every OpenMMLab package made unimportable: conversion still works."""
    blocked = ["mindspore", "google", "mmengine", "mmcv", "mmseg", "mmdet", "mmpretrain", "torchvision"]
    code = (f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
            "from converters.ms2torch import main\n"
            f"code = main([{str(tiny_ms_checkpoint)!r}, '-o', {str(tmp_path / 'x.pth')!r}])\n"
            f"assert not set({blocked!r}) & {{k for k, v in sys.modules.items() if v is not None}}\n"
            "sys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.pth").is_file()


def test_a_checkpoint_without_crc_footer_gets_a_warning(tiny_ms_checkpoint, tmp_path):
    result = run_cli(str(tiny_ms_checkpoint), "-o", str(tmp_path / "t.pth"))
    assert result.returncode == 0
    assert "has no CRC footer: a flipped bit inside tensor data cannot be detected" in result.stderr
    meta = torch.load(tmp_path / "t.pth", weights_only=True)["meta"]
    assert meta["warnings"] and "CRC" in meta["warnings"][0]


def test_bf16_checkpoints_convert_to_their_values(tiny_ms_checkpoint, tmp_path):
    """bf16 arrives as raw 16-bit words: it must become bf16 values, never integers."""
    import mindspore as ms

    from converters.ckpt_io import read_tensor

    index = scan_checkpoint(tiny_ms_checkpoint)
    items = []
    for name, record in index.items():
        value = read_tensor(tiny_ms_checkpoint, record)
        if record.dtype == "Float32":
            items.append({"name": name, "data": ms.Tensor(value, ms.bfloat16)})
        elif name != "ringmoe_meta":
            items.append({"name": name, "data": ms.Tensor(value)})
    bf16 = tmp_path / "bf16.ckpt"
    ms.save_checkpoint(items, str(bf16))
    converted = convert(bf16, "tiny").state_dict
    reference = convert(tiny_ms_checkpoint, "tiny").state_dict
    for key in ("layers.1.blocks.0.ffn.cross_experts.fc1.weight", "norm.weight", "patch_embed.msi.proj.weight"):
        assert converted[key].dtype == torch.float32
        assert torch.equal(converted[key], reference[key].to(torch.bfloat16).float())


def test_cli_writes_sharded_safetensors_that_the_twin_loads(tiny_ms_checkpoint, tmp_path):
    from benchmarks.models.loading import load_pretrained
    from benchmarks.models.ringmoe import RingMoE
    from converters.ms2torch import main

    out = tmp_path / "tiny.safetensors"
    assert main([str(tiny_ms_checkpoint), "-o", str(out), "--format", "safetensors", "--shard-size", "20MB",
                 "--dtype", "bf16"]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors")
    assert len(shards) > 1 and set(index["weight_map"].values()) == set(shards)
    assert (tmp_path / "tiny.report.json").is_file()
    twin = RingMoE(modality="optical")
    report = load_pretrained(twin, out)
    assert not report.new.keys() - {k for k in twin.state_dict() if k.startswith("out_norms.")}
    whole = convert(tiny_ms_checkpoint).state_dict
    assert torch.equal(twin.layers[2].blocks[1].attn.q.weight.data, whole["layers.2.blocks.1.attn.q.weight"].to(torch.bfloat16).float())


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_meta_records_the_true_source_hash(tiny_ms_checkpoint, tmp_path, fmt):
    from converters.ms2torch import main
    from converters.util import sha256_file

    out = tmp_path / f"t.{fmt}"
    assert main([str(tiny_ms_checkpoint), "-o", str(out), "--format", fmt]) == 0
    report = json.loads((tmp_path / "t.report.json").read_text())
    assert report["meta"]["source"]["files"][0]["sha256"] == sha256_file(tiny_ms_checkpoint)
