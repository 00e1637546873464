"""The PyTorch twin downstream: dense reductions, window resizing, any input size, coverage."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.models.loading import CoverageError, load_pretrained
from benchmarks.models.ringmoe import MOE_REDUCTIONS, RingMoE, attention_mask
from pretrain.models.arch import backbone_param_count, get_arch


def test_every_parameter_is_loaded_or_declared_new(tiny_converted):
    twin = RingMoE(modality="sar_l1")
    report = load_pretrained(twin, tiny_converted)
    params = set(twin.state_dict())
    assert set(report.mapped) | set(report.new) == params
    assert set(report.new) == {k for k in params if k.startswith("out_norms.")}
    other = [k for k, r in report.dropped.items() if r.startswith("another modality")]
    assert other and all("sar_l1" not in k for k in other)
    assert not any(k.startswith("patch_embed.optical") for k in params)


@pytest.mark.parametrize("reduction", [r for r in MOE_REDUCTIONS if r and r != "top_expert"])
def test_dense_reductions_load_and_run(tiny_converted, reduction):
    twin = RingMoE(modality="optical", moe_reduction=reduction)
    report = load_pretrained(twin, tiny_converted)
    assert any(f"moe_reduction" in r for r in report.dropped.values())
    feats = twin(torch.randn(1, 3, 192, 192))
    assert [f.shape[1] for f in feats] == [32, 64, 128, 256]
    if reduction == "shared":
        # One FFN per block: the "compressed" layout, counted for one modality's embedding.
        arch = get_arch("tiny")
        dense = backbone_param_count(arch.replace(moe=False, modalities=arch.modalities[:1]))
        n = sum(p.numel() for k, p in twin.named_parameters() if not k.startswith("out_norms"))
        assert n == dense


def test_expert_mean_is_the_mean_of_the_experts(tiny_converted):
    sd = torch.load(tiny_converted, weights_only=True)["state_dict"]
    twin = RingMoE(modality="msi", moe_reduction="expert_mean")
    load_pretrained(twin, tiny_converted)
    got = twin.layers[2].blocks[1].ffn.modal_dense.fc2.weight
    want = sd["layers.2.blocks.1.ffn.modal_experts.msi.fc2.weight"].mean(0).T  # [E, in, out] -> Linear
    assert torch.allclose(got, want)


def test_a_larger_window_resizes_the_tables(tiny_converted):
    twin = RingMoE(modality="optical", window_size=12)  # stage 4 was pretrained with window 6
    report = load_pretrained(twin, tiny_converted)
    resized = {k: v for k, v in report.mapped.items() if v.startswith("resized")}
    assert set(resized) == {f"layers.3.blocks.{b}.attn.relative_position_bias_table" for b in (0, 1)}
    assert all("11x11 -> 23x23" in v for v in resized.values())
    assert twin.layers[3].blocks[0].attn.relative_position_bias_table.shape == (23 * 23, 8)


def test_resizing_a_table_to_its_own_size_keeps_it():
    from benchmarks.models.loading import resize_table

    table = torch.randn(11 * 11, 3)
    same = resize_table(table, 11)
    assert torch.allclose(same, table, atol=1e-5)


def test_any_input_size_runs_and_padding_is_masked():
    twin = RingMoE(modality="optical").eval()
    with torch.no_grad():
        feats = twin(torch.randn(1, 3, 203, 130))
    assert [tuple(f.shape[-2:]) for f in feats] == [(51, 33), (26, 17), (13, 9), (7, 5)]
    mask = attention_mask(5, 5, 12, 12, 12, 0)
    assert mask.shape == (1, 144, 144)
    real = torch.zeros(12, 12, dtype=torch.bool)
    real[:5, :5] = True
    real = real.flatten()
    assert torch.all(mask[0][real][:, ~real] == -100.0)  # real tokens never see padding
    assert torch.all(mask[0][real][:, real] == 0.0)


def test_shift_mask_matches_the_standard_swin_mask():
    """With no padding, the mask is the standard one that the MindSpore model uses."""
    from pretrain.models.ringmoe import shifted_window_mask

    ours = attention_mask(48, 48, 48, 48, 12, 6).numpy()
    np.testing.assert_array_equal(ours, shifted_window_mask(48, 48, 12, 6))


def test_wrong_architecture_is_refused(tiny_converted):
    twin = RingMoE(modality="optical", embed_dim=64, num_heads=(2, 4, 8, 16))
    with pytest.raises(CoverageError, match="embed_dim: checkpoint 32 vs model 64"):
        load_pretrained(twin, tiny_converted)


def test_a_missing_parameter_is_named(tiny_converted, tmp_path):
    payload = torch.load(tiny_converted, weights_only=True)
    del payload["state_dict"]["layers.2.blocks.0.attn.q.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(payload, broken)
    with pytest.raises(CoverageError, match=r"layers\.2\.blocks\.0\.attn\.q\.weight"):
        load_pretrained(RingMoE(modality="optical"), broken)


def test_a_checkpoint_of_an_outdated_converter_says_convert_again(tiny_converted, tmp_path):
    payload = torch.load(tiny_converted, weights_only=True)
    payload["meta"]["converter_version"] = "0.1.0"  # its expert weights were [E, out, in]
    old = tmp_path / "old.pth"
    torch.save(payload, old)
    with pytest.raises(CoverageError, match="converter 0.1.0.*convert the MindSpore checkpoint again"):
        load_pretrained(RingMoE(modality="optical"), old)


def test_an_unknown_tensor_is_named(tiny_converted, tmp_path):
    payload = torch.load(tiny_converted, weights_only=True)
    payload["state_dict"]["layers.0.blocks.0.attn.extra"] = torch.zeros(3)
    broken = tmp_path / "extra.pth"
    torch.save(payload, broken)
    with pytest.raises(CoverageError, match=r"no place in the model: layers\.0\.blocks\.0\.attn\.extra"):
        load_pretrained(RingMoE(modality="optical"), broken)


def test_frozen_stages_do_not_train():
    twin = RingMoE(modality="optical", frozen_stages=1).train()
    assert not any(p.requires_grad for p in twin.patch_embed.parameters())
    assert not any(p.requires_grad for p in twin.layers[1].parameters())
    assert all(p.requires_grad for p in twin.layers[2].parameters())


def test_top_expert_keeps_the_most_routed_expert(tiny_ms_checkpoint, tmp_path):
    from converters.ms2torch import main

    out = tmp_path / "stats.pth"
    assert main([str(tiny_ms_checkpoint), "-o", str(out), "--routing-stats", "--calibration-images", "4"]) == 0
    payload = torch.load(out, weights_only=True)
    stats = payload["meta"]["routing_stats"]["sar_l2"]["blocks"]["layers.1.blocks.1"]
    assert sum(stats["special"]) == sum(stats["cross"]) == 4 * 24 * 24  # every token of stage 2 counted
    twin = RingMoE(modality="sar_l2", moe_reduction="top_expert")
    report = load_pretrained(twin, out)
    top = int(np.argmax(stats["special"]))
    expected = payload["state_dict"]["layers.1.blocks.1.ffn.modal_experts.sar_l2.fc1.weight"][top].T
    assert torch.equal(twin.layers[1].blocks[1].ffn.modal_dense.fc1.weight, expected)
    assert f"expert {top} (most routed)" in report.mapped["layers.1.blocks.1.ffn.modal_dense.fc1.weight"]


def test_top_expert_without_statistics_is_refused(tiny_converted):
    with pytest.raises(CoverageError, match="needs routing statistics"):
        load_pretrained(RingMoE(modality="optical", moe_reduction="top_expert"), tiny_converted)


def test_giant_with_one_ffn_per_block_is_the_compressed_1b_model():
    from benchmarks.models.loading import twin_from_meta
    from pretrain.models.arch import get_arch

    giant = get_arch("giant")
    meta = {"arch": {"embed_dim": 448, "depths": [2, 2, 18, 2], "num_heads": [14, 28, 56, 112],
                     "window_size": [12, 12, 12, 6], "patch_size": 4, "mlp_ratio": 4, "num_experts": 4},
            "modalities": [m.to_dict() for m in giant.modalities]}
    with torch.device("meta"):
        moe = twin_from_meta(meta, "optical", out_norms=False, build_modalities="all")
        dense = twin_from_meta(meta, "optical", out_norms=False, moe_reduction="shared", build_modalities="all")
    assert sum(p.numel() for p in moe.parameters()) == backbone_param_count(giant)
    assert sum(p.numel() for p in dense.parameters()) == backbone_param_count(giant.replace(moe=False))
    assert 1.05e9 < backbone_param_count(giant.replace(moe=False)) < 1.07e9
