"""benchmarks/routing.py and the routing collection it shares with ms2torch --routing-stats."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from benchmarks.models.loading import read_converted
from benchmarks.routing import analyse, main
from converters.routing_stats import collect_routing_stats, load_twin, record_routing

SIZE = 96  # token maps 24, 12, 6, 3: shifted windows, padding and a map smaller than the window


@pytest.fixture(scope="module")
def converted(tiny_converted):
    return read_converted(tiny_converted)


def _pixels(channels: int, count: int, seed: int) -> np.ndarray:
    """Smooth random images (neighbouring tokens alike, as in real images)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((count, channels, SIZE // 16, SIZE // 16)).astype(np.float32)
    return coarse.repeat(16, 2).repeat(16, 3) + 0.3 * rng.standard_normal((count, channels, SIZE, SIZE)).astype(np.float32)


def _channels(meta: dict) -> dict[str, int]:
    return {m["name"]: m["channels"] for m in meta["modalities"]}


def test_counts_per_block_sum_to_the_token_count(converted):
    state_dict, meta = converted
    stats = analyse(state_dict, meta, {"msi": _pixels(4, 3, 0)}, batch=2)["msi"]
    assert len(stats) == sum(meta["arch"]["depths"])
    for block, entry in stats.items():
        side = SIZE // 4 // 2 ** int(block.split(".")[1])
        assert entry["tokens"] == 3 * side * side
        for bank in ("special", "cross"):
            assert sum(entry[bank]["counts"]) == entry["tokens"]
            assert sum(entry[bank]["load"]) == pytest.approx(1.0)
            assert entry[bank]["top_load"] == max(entry[bank]["load"])
            assert sum(entry[bank]["kept"]) == round(entry["tokens"] * (1 - entry[bank]["dropped_fraction"]))
            assert 0 <= entry[bank]["entropy"] <= math.log(len(entry[bank]["counts"])) + 1e-9
            assert 1 / len(entry[bank]["counts"]) <= entry[bank]["mean_top1_prob"] <= 1


def _independent_drops(tokens: np.ndarray, router: np.ndarray, capacity_factor: float) -> int:
    """Switch top-1 routing of one group, token by token, in float64: how many are dropped."""
    logits = tokens.astype(np.float64) @ router.astype(np.float64).T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top2 = np.sort(probs, 1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-6  # no near-tie that float32 could flip
    capacity = math.ceil(len(tokens) * capacity_factor / router.shape[0])
    used = np.zeros(router.shape[0], int)
    dropped = 0
    for expert in probs.argmax(1):
        dropped += used[expert] >= capacity
        used[expert] += 1
    return dropped


def test_dropped_fraction_matches_an_independent_computation(converted):
    """Capacity group = the tokens of one forward call: 4 images in calls of 2 are 2 groups."""
    state_dict, meta = converted
    block, (s, b) = "layers.1.blocks.1", (1, 1)
    pixels = _pixels(3, 4, 1)
    twin = load_twin(state_dict, meta, "optical")
    inputs = []
    hook = twin.layers[s].blocks[b].ffn.register_forward_hook(
        lambda module, args, out: inputs.append(args[0].reshape(-1, args[0].shape[-1]).numpy().copy()))
    recorded = record_routing(twin, pixels, batch=2, capacity_factor=1.2).blocks[block]
    hook.remove()
    reported = analyse(state_dict, meta, {"optical": pixels}, batch=2, capacity_factor=1.2)["optical"][block]
    assert len(inputs) == 2
    tokens = sum(len(group) for group in inputs)
    for bank, key in (("special", "modal_routers.optical"), ("cross", "cross_router")):
        router = state_dict[f"{block}.ffn.{key}.weight"].float().numpy()
        dropped = sum(_independent_drops(group, router, 1.2) for group in inputs)
        assert dropped > 0  # the check below is not vacuous
        assert recorded[bank].summary()["dropped_fraction"] == pytest.approx(dropped / tokens, abs=1e-12)
        assert reported[bank]["dropped_fraction"] == pytest.approx(dropped / tokens, abs=1e-12)


def test_a_large_capacity_factor_drops_nothing(converted):
    state_dict, meta = converted
    pixels = {"sar_l1": _pixels(8, 2, 2)}
    limited = analyse(state_dict, meta, pixels, batch=2, capacity_factor=1.2)["sar_l1"]
    unlimited = analyse(state_dict, meta, pixels, batch=2, capacity_factor=100.0)["sar_l1"]
    assert any(e[bank]["dropped_fraction"] > 0 for e in limited.values() for bank in ("special", "cross"))
    for entry in unlimited.values():
        for bank in ("special", "cross"):
            assert entry[bank]["dropped_fraction"] == 0.0
            assert entry[bank]["kept"] == entry[bank]["counts"]


def test_modalities_are_recorded_separately(converted):
    """Same images through the optical and the SAR-L2 twin (both 3 channels): other experts, other routes."""
    state_dict, meta = converted
    pixels = _pixels(3, 2, 3)
    stats = analyse(state_dict, meta, {"optical": pixels, "sar_l2": pixels}, batch=2)
    assert set(stats) == {"optical", "sar_l2"}
    assert any(stats["optical"][b]["special"]["counts"] != stats["sar_l2"][b]["special"]["counts"] for b in stats["optical"])


def test_cli_writes_json_and_plots(tiny_converted, converted, tmp_path, capsys):
    out = tmp_path / "routing"
    assert main(["--checkpoint", str(tiny_converted), "--images", "2", "--batch", "2", "--out", str(out)]) == 0
    report = json.loads((out / "routing.json").read_text())
    assert report["format"] == "ringmoe-bench/routing-v1"
    assert report["checkpoint_sha256"] == hashlib.sha256(tiny_converted.read_bytes()).hexdigest()
    assert report["modalities"] == list(_channels(converted[1])) and report["capacity_factor"] == 1.2
    assert report["blocks"] == [f"layers.{s}.blocks.{b}" for s in range(4) for b in range(2)]
    assert set(report["stats"]["msi"]["layers.3.blocks.1"]["cross"]) >= {"load", "load_cv", "switch_aux", "dropped_fraction"}
    for name in ("load_special.png", "load_cross.png", "dropped.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert all(m in printed for m in report["modalities"]) and "most imbalanced" in printed


def test_without_capacity_the_cli_reports_the_converters_counts(tiny_converted, converted, tmp_path):
    """ms2torch --routing-stats and this command share the collection: same images, same counts."""
    state_dict, meta = converted
    two = dict(meta, modalities=[m for m in meta["modalities"] if m["name"] in ("optical", "sar_l1")])
    stored = collect_routing_stats(state_dict, two, images=2, batch=2)
    argv = ["--checkpoint", str(tiny_converted), "--images", "2", "--batch", "2", "--capacity-factor", "none",
            "--modalities", "optical", "sar_l1", "--no-plots", "--out", str(tmp_path)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "routing.json").read_text())
    for modality in ("optical", "sar_l1"):
        for block, counts in stored[modality]["blocks"].items():
            for bank in ("special", "cross"):
                assert report["stats"][modality][block][bank]["counts"] == counts[bank]
                assert report["stats"][modality][block][bank]["dropped_fraction"] == 0.0


def test_task_images_come_from_the_task_dataset(tiny_converted, tmp_path):
    from benchmarks.datasets.potsdam import generate_potsdam

    root = generate_potsdam(tmp_path / "potsdam", num_train=1, num_val=2, size=128)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tiny_converted), "--task", "segmentation", "--data-root", str(root),
            "--images", "4", "--no-plots", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "routing.json").read_text())
    assert report["modalities"] == ["optical"]  # the config's modality
    assert report["images_per_modality"] == {"optical": 2} and report["image_size"] == {"optical": [128, 128]}
    assert "img_dir/val" in report["sources"]["optical"]


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{missing}"], "does not exist"),
    (["--checkpoint", "{text}"], "not a readable converted checkpoint"),
    (["--checkpoint", "{ckpt}", "--modalities", "lidar"], "not in the checkpoint"),
    (["--checkpoint", "{ckpt}", "--task", "nope"], "unknown task"),
    (["--checkpoint", "{ckpt}", "--data-root", "{empty}"], "no images for modality"),
    (["--checkpoint", "{ckpt}", "--capacity-factor", "0"], "must be > 0"),
])
def test_bad_input_exits_2_with_one_line(tiny_converted, tmp_path, capsys, args, message):
    (tmp_path / "text.pth").write_text("not a checkpoint")
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope.pth", "text": tmp_path / "text.pth", "ckpt": tiny_converted,
             "empty": tmp_path / "empty"}
    argv = [a.format(**paths) for a in args] + ["--out", str(tmp_path / "out")]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and err.startswith("routing: error:")
    assert not (tmp_path / "out").exists()
