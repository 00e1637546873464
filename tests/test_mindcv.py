"""mindcv ResNet / ViT / Swin -> mmpretrain: parity on a fixed input, coverage, and broken rules.

Each family: build the mindcv model in MindSpore (random init, no downloads, every parameter
perturbed so that no swap hides behind ones and zeros), save it, convert, load strictly into the
mmpretrain target and compare backbone features and logits in fp32 eval mode.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

import benchmarks  # noqa: F401  the torchvision shim precedes mmpretrain

import mindcv  # noqa: E402,F401  pinned in the test extra: a missing install must fail, not skip

from converters.mindcv import build_target, convert_mindcv, target_config  # noqa: E402
from converters.rules import mindcv_resnet, mindcv_swin  # noqa: E402
from converters.util import ConversionError  # noqa: E402

# (family, mindcv variant, input side). ResNet runs at 112: MindSpore's CPU convolutions are
# slow, and 112 still gives the even-sized stem map where "same" pooling differs from padding=1.
CASES = {"resnet": ("resnet18", 112), "swin": ("swin_tiny", 224), "vit": ("vit_b_32_224", 224)}
RTOL = 1e-5  # max |torch - mindspore| / max |mindspore|, fp32


def perturb(net, seed: int) -> None:
    """Give every parameter distinctive values (BN statistics, norms, biases included)."""
    import mindspore as ms

    rng = np.random.RandomState(seed)
    for p in net.get_parameters():
        if p.name.endswith((".index", "attn_mask")):  # derived tensors stay what mindcv computed
            continue
        a = p.asnumpy()
        if p.name.endswith("moving_variance"):
            a = rng.uniform(0.5, 1.5, a.shape)
        elif p.name.endswith("gamma"):
            a = 1 + 0.2 * rng.randn(*a.shape)
        elif p.name.endswith(("beta", "moving_mean", "bias")):
            a = 0.1 * rng.randn(*a.shape)
        p.set_data(ms.Tensor(a.astype(np.float32)))


def save_mindcv(family: str, path) -> dict:
    """Build, perturb, save (with training extras for ResNet) and run one mindcv model."""
    import mindspore as ms
    from mindcv.models import create_model

    variant, side = CASES[family]
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    net = create_model(variant, pretrained=False)
    net.set_train(False)
    perturb(net, seed=1)
    if family == "resnet":  # what a mindcv training run adds beside the weights
        params = [{"name": p.name, "data": p} for p in net.get_parameters()]
        extras = [{"name": "moments.conv1.weight", "data": ms.Tensor(np.zeros((64, 3, 7, 7), np.float32))},
                  {"name": "global_step", "data": ms.Tensor(np.array([7], np.int32))}]
        ms.save_checkpoint(params + extras, str(path), append_dict={"epoch_num": 3})
    else:
        ms.save_checkpoint(net, str(path))
    x = np.random.RandomState(0).randn(2, 3, side, side).astype(np.float32)
    feats = net.forward_features(ms.Tensor(x))
    logits = net.forward_head(feats)
    return {"family": family, "variant": variant, "path": path, "x": x,
            "features": feats.asnumpy(), "logits": logits.asnumpy()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Saved, run and converted mindcv models by family, each made once per module."""
    cache: dict[str, dict] = {}

    def get(family: str) -> dict:
        if family not in cache:
            item = save_mindcv(family, tmp_path_factory.mktemp("mindcv") / f"{CASES[family][0]}.ckpt")
            item["state_dict"], item["report"] = convert_mindcv(item["path"], family, item["variant"])
            cache[family] = item
        return cache[family]

    return get


@pytest.fixture(params=list(CASES))
def case(request, made):
    return made(request.param)


@pytest.fixture
def resnet(made):
    return made("resnet")


def torch_outputs(model, family: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features as mindcv's forward_features returns them, logits)."""
    seen = {}
    if family == "vit":  # mindcv returns every token after the final norm
        model.backbone.ln1.register_forward_hook(lambda m, i, out: seen.setdefault("tokens", out))
    with torch.no_grad():
        xt = torch.from_numpy(x)
        logits = model(xt, mode="tensor")
        if family == "resnet":
            feats = model.backbone(xt)[-1]  # layer4 map
        elif family == "swin":
            feats = model.extract_feat(xt)[-1]  # final norm, then mean over tokens
        else:
            feats = seen["tokens"]
    return feats.numpy(), logits.numpy()


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def test_parity(case):
    model = build_target(case["family"], case["variant"], case["report"]["num_classes"])
    model.load_state_dict(case["state_dict"], strict=True)
    feats, logits = torch_outputs(model, case["family"], case["x"])
    assert rel_err(feats, case["features"]) <= RTOL
    assert rel_err(logits, case["logits"]) <= RTOL


def test_report_accounts_for_every_source_key(case):
    from converters.ckpt_io import scan_checkpoint

    report = case["report"]
    sources = set(scan_checkpoint(case["path"]))
    assert set(report["mapped"]) | set(report["dropped"]) == sources
    assert not set(report["mapped"]) & set(report["dropped"])
    assert all(report["dropped"].values()) and all(report["new"].values())
    assert set(case["state_dict"]) == {v["target"] for v in report["mapped"].values()} | set(report["new"])
    if case["family"] == "swin":  # CellList mangling undone, derived tensors checked, q/k/v fused
        assert report["canonicalized"]["0.blocks.2.blocks.3.norm1.gamma"] == "layers.2.blocks.3.norm1.gamma"
        assert report["canonicalized"]["0.blocks.1.norm1.gamma"] == "layers.0.blocks.1.norm1.gamma"
        assert report["mapped"]["0.blocks.2.blocks.3.attn.k.weight"]["target"] == \
            "backbone.stages.2.blocks.3.attn.w_msa.qkv.weight"
        assert set(report["verified_drops"]) == {k for k in report["dropped"] if k.endswith((".index", "attn_mask"))}
        assert len(report["verified_drops"]) == 12 + 5  # one index per block, one mask per shifted block


def test_training_extras_are_dropped_and_torch_only_buffers_declared(resnet):
    report = resnet["report"]
    assert set(report["dropped"]) == {"moments.conv1.weight", "global_step", "epoch_num"}
    assert all("optimizer state" in r for r in report["dropped"].values())
    assert len(report["new"]) == 20 and all(k.endswith("num_batches_tracked") for k in report["new"])


def test_plain_mmpretrain_resnet_misses_the_same_pooling(resnet):
    """Control: without the twin's "same" max-pool the logits are off by percents."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    cfg = copy.deepcopy(target_config("resnet", "resnet18"))
    cfg["backbone"]["type"] = "ResNet"
    with DefaultScope.overwrite_default_scope("mmpretrain"):  # another Runner may have set mmseg's
        model = MODELS.build(cfg).eval()
    model.load_state_dict(resnet["state_dict"], strict=True)
    assert rel_err(torch_outputs(model, "resnet", resnet["x"])[1], resnet["logits"]) > 1e-2


@pytest.mark.parametrize("side", [8, 9, 49, 56])
def test_same_pad_maxpool_matches_mindspore(side):
    import mindspore as ms

    from benchmarks.models.mindcv_twins import SamePadMaxPool2d

    x = np.random.RandomState(side).randn(2, 3, side, side).astype(np.float32) - 1.0  # negatives: pad is -inf
    want = ms.nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")(ms.Tensor(x)).asnumpy()
    got = SamePadMaxPool2d(3, 2)(torch.from_numpy(x)).numpy()
    assert np.array_equal(got, want)


def test_a_missing_rename_fails_naming_the_key(resnet, monkeypatch):
    renames = [r for r in mindcv_resnet.RENAMES if "down_sample\\.0" not in r[0]]
    assert len(renames) == len(mindcv_resnet.RENAMES) - 1
    monkeypatch.setattr(mindcv_resnet, "RENAMES", renames)
    with pytest.raises(ConversionError, match=re.escape("layer2.0.down_sample.0.weight")):
        convert_mindcv(resnet["path"], "resnet", "resnet18")


def test_two_sources_on_one_target_fail_naming_them(resnet, monkeypatch):
    monkeypatch.setitem(mindcv_resnet.BN, "moving_mean", "running_var")  # a wrong BN entry
    with pytest.raises(ConversionError, match=r"bn1\.moving_mean.*bn1\.moving_variance.*running_var"):
        convert_mindcv(resnet["path"], "resnet", "resnet18")


def test_wrong_variant_fails_naming_missing_targets(resnet):
    with pytest.raises(ConversionError, match=r"lacks \d+ tensors.*backbone\.layer1\.2\.bn1\.bias"):
        convert_mindcv(resnet["path"], "resnet", "resnet34")


def test_a_missing_fused_part_fails_naming_the_target(tmp_path, monkeypatch):
    # Rules only (no tensors read): plan and coverage on a two-key "checkpoint" of shapes.
    from converters.mindcv import check_coverage, plan_mapping

    arch = mindcv_swin.ARCHS["swin_tiny"]
    shapes = {"0.blocks.0.attn.q.weight": (96, 96), "0.blocks.0.attn.k.weight": (96, 96)}
    mapped, _, _ = plan_mapping(mindcv_swin, shapes, arch)
    with pytest.raises(ConversionError, match=r"stages\.0\.blocks\.0\.attn\.w_msa\.qkv\.weight.*\['v'\]"):
        check_coverage(mindcv_swin, mapped, shapes, {"backbone.stages.0.blocks.0.attn.w_msa.qkv.weight": (288, 96)})


def test_verifiers_reject_a_wrong_derived_tensor():
    from mmpretrain.models.utils.attention import ShiftWindowMSA

    arch = mindcv_swin.ARCHS["swin_tiny"]
    mask = ShiftWindowMSA.get_attn_mask((28, 28), 7, 3).numpy()[None, :, None]  # mindcv's layout
    groups = {"s": "1", "b": "1"}
    assert mindcv_swin.attn_mask_equals_recomputed(mask, groups, arch, {}) is None
    mask[0, 3, 0, 5, 7] = -100.0 - mask[0, 3, 0, 5, 7]
    assert "differs" in mindcv_swin.attn_mask_equals_recomputed(mask, groups, arch, {})


def test_cli_converts_a_mindcv_checkpoint_into_an_mmpretrain_classifier(resnet, tmp_path):
    import torch

    from converters.mindcv import build_target
    from converters.ms2torch import main

    out = tmp_path / "r.pth"
    assert main([str(resnet["path"]), "-o", str(out), "--mindcv", f"resnet:{resnet['variant']}"]) == 0
    payload = torch.load(out, weights_only=True)
    assert payload["meta"]["family"] == "resnet" and (tmp_path / "r.report.json").is_file()
    classifier = build_target("resnet", resnet["variant"], resnet["state_dict"]["head.fc.weight"].shape[0])
    classifier.load_state_dict(payload["state_dict"], strict=True)
    assert main([str(resnet["path"]), "-o", str(tmp_path / "bad.pth"), "--mindcv", "resnet:vit_b_32_224"]) == 2
    assert not (tmp_path / "bad.pth").exists()
