"""BiT (ResNet-v2, GroupNorm, weight standardisation): MindSpore model -> PyTorch twin.

Parity: the tiny variant (ours, ``bit_tiny``) in MindSpore with every parameter perturbed (convs
redrawn, GroupNorm gamma/beta off 1/0, the zero-initialised head made non-zero), saved with the
extras a training run adds, converted, loaded strictly into ``ResNetV2BiT`` and compared in fp32
on a fixed input: the four stage maps (normalised and raw) and the logits. The measure is
max |torch - mindspore| / max |mindspore| per tensor (relative: weight standardisation makes the
pre-norm activations O(100), so fp32 rounding alone is ~1e-5 in absolute terms there).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import benchmarks  # noqa: F401  the torchvision shim precedes mmpretrain

from converters.mindcv import build_target, convert_mindcv, target_config  # noqa: E402
from converters.rules import zoo_bit  # noqa: E402
from converters.util import ConversionError  # noqa: E402

RTOL = 1e-5  # max |torch - mindspore| / max |mindspore|, fp32
TINY = "bit_tiny"
NUM_CLASSES = 7
SIDES = (80, 75)  # even and odd root maps: the zero-padded pool's windows differ between them
EXTRAS = ("ema.root.conv.weight", "moment.root.conv.weight", "global_step")


def perturb(net, seed: int) -> None:
    """Distinctive values for every parameter, so no swapped or missed tensor hides."""
    import mindspore as ms

    rng = np.random.RandomState(seed)
    for p in net.get_parameters():
        shape = p.shape
        if p.name.endswith("gamma"):
            a = 1 + 0.2 * rng.randn(*shape)
        elif p.name.endswith(("beta", "bias")):
            a = 0.1 * rng.randn(*shape)
        elif p.name.startswith("classifier"):
            a = 0.05 * rng.randn(*shape)  # BiT's head starts at zero
        else:
            a = rng.randn(*shape)  # standardised anyway; redrawn so each filter differs
        p.set_data(ms.Tensor(a.astype(np.float32)))


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """The saved tiny MindSpore BiT, its outputs at each side, and its conversion."""
    import mindspore as ms

    from pretrain.models.bit import build_bit

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    net = build_bit(TINY, NUM_CLASSES)
    net.set_train(False)
    perturb(net, seed=1)
    path = tmp_path_factory.mktemp("bit") / "bit_tiny.ckpt"
    params = [{"name": p.name, "data": p} for p in net.get_parameters()]
    extras = [  # what the recipe's RMSProp + EMA training step saves beside the weights
        {"name": EXTRAS[0], "data": ms.Tensor(net.root.conv.weight.asnumpy())},
        {"name": EXTRAS[1], "data": ms.Tensor(np.zeros(net.root.conv.weight.shape, np.float32))},
        {"name": EXTRAS[2], "data": ms.Tensor(np.array([5], np.int32))},
    ]
    ms.save_checkpoint(params + extras, str(path))
    outputs = {}
    for side in SIDES:
        x = np.random.RandomState(side).randn(2, 3, side, side).astype(np.float32)
        xm = ms.Tensor(x)
        outputs[side] = {
            "x": x,
            "features": [f.asnumpy() for f in net.forward_features(xm)],
            "raw": [s.asnumpy() for s in net._stage_sums(xm)],
            "logits": net(xm).asnumpy(),
        }
    state_dict, report = convert_mindcv(path, "bit", TINY)
    return {"path": path, "net": net, "outputs": outputs, "state_dict": state_dict, "report": report}


@pytest.fixture(scope="module")
def twin(made):
    model = build_target("bit", TINY, made["report"]["num_classes"])
    model.load_state_dict(made["state_dict"], strict=True)
    return model


def twin_outputs(model, x: np.ndarray, norm_outputs: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
    """(the four stage maps of the loaded backbone, the classifier's logits)."""
    backbone = model.backbone
    saved = backbone.out_indices, backbone.norm_outputs
    try:
        backbone.out_indices, backbone.norm_outputs = (0, 1, 2, 3), norm_outputs
        with torch.no_grad():
            feats = [f.numpy() for f in backbone(torch.from_numpy(x))]
    finally:
        backbone.out_indices, backbone.norm_outputs = saved
    with torch.no_grad():
        logits = model(torch.from_numpy(x), mode="tensor").numpy()
    return feats, logits


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("side", SIDES)
def test_parity_stage_features_and_logits(made, twin, side):
    ref = made["outputs"][side]
    feats, logits = twin_outputs(twin, ref["x"])
    strides = [4, 8, 16, 32]
    for i, (got, want) in enumerate(zip(feats, ref["features"])):
        assert got.shape == (2, zoo_bit.out_channels(zoo_bit.ARCHS[TINY])[i], *[-(-side // strides[i])] * 2)
        assert rel_err(got, want) <= RTOL, f"stage {i}"
    assert logits.shape == (2, NUM_CLASSES)
    assert rel_err(logits, ref["logits"]) <= RTOL


def test_parity_raw_stage_sums(made, twin):
    ref = made["outputs"][SIDES[0]]
    raw, _ = twin_outputs(twin, ref["x"], norm_outputs=False)
    for i, (got, want) in enumerate(zip(raw, ref["raw"])):
        assert rel_err(got, want) <= RTOL, f"stage {i}"
    # The raw sums are not the normalised maps: the choice of out_norm is visible downstream.
    assert rel_err(raw[0], ref["features"][0]) > 0.1


def test_neg_inf_padded_pool_is_not_bits_root(made, twin, monkeypatch):
    """Control: MaxPool2d(3, 2, padding=1) (pads with -inf) instead of BiT's zero pad misses."""
    from benchmarks.models.resnetv2 import Stem

    monkeypatch.setattr(Stem, "forward", lambda self, x: F.max_pool2d(self.conv(x), 3, 2, padding=1))
    ref = made["outputs"][SIDES[0]]
    assert rel_err(twin_outputs(twin, ref["x"])[1], ref["logits"]) > 1e-3


def test_graph_mode_computes_the_same_features(made):
    import mindspore as ms

    class Features(ms.nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, x):
            return self.net.forward_features(x)

    ref = made["outputs"][SIDES[1]]
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        got = Features(made["net"])(ms.Tensor(ref["x"]))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for g, want in zip(got, ref["features"]):
        assert rel_err(g.asnumpy(), want) <= RTOL


# ------------------------------------------------------------------ coverage and failures
def test_report_accounts_for_every_source_key(made):
    from converters.ckpt_io import scan_checkpoint

    report = made["report"]
    sources = set(scan_checkpoint(made["path"]))
    assert set(report["mapped"]) | set(report["dropped"]) == sources
    assert set(report["dropped"]) == set(EXTRAS)
    assert report["new"] == {}  # GroupNorm and standardised convs carry no torch-only buffers
    assert set(made["state_dict"]) == {v["target"] for v in report["mapped"].values()}
    assert report["mapped"]["body.block2.unit01.conv2.weight"]["target"] == "backbone.stages.1.0.conv2.weight"
    assert report["mapped"]["body.block4.unit02.gn3.beta"]["target"] == "backbone.stages.3.1.norm3.bias"
    assert report["mapped"]["norm.gamma"]["target"] == "backbone.norm.weight"
    assert report["num_classes"] == NUM_CLASSES


def test_a_missing_rename_fails_naming_the_key(made, monkeypatch):
    renames = [r for r in zoo_bit.RENAMES if "downsample" not in r[0]]
    assert len(renames) == len(zoo_bit.RENAMES) - 1
    monkeypatch.setattr(zoo_bit, "RENAMES", renames)
    with pytest.raises(ConversionError, match=re.escape("body.block1.unit01.downsample.weight")):
        convert_mindcv(made["path"], "bit", TINY)


def test_a_wrong_gn_name_fails_naming_the_sources(made, monkeypatch):
    monkeypatch.setitem(zoo_bit.GN, "beta", "weight")
    with pytest.raises(ConversionError, match=r"body\.block1\.unit01\.gn1\.(beta|gamma).*all map to"):
        convert_mindcv(made["path"], "bit", TINY)


@pytest.mark.parametrize("change, message", [
    ({"layers": [2, 1, 1, 3]}, r"lacks \d+ tensors.*backbone\.stages\.3\.2\."),
    ({"layers": [1, 1, 1, 2]}, r"no place in the model.*backbone\.stages\.0\.1\..*body\.block1\.unit02\."),
    ({"base_width": 32}, r"root\.conv\.weight \[16, 3, 7, 7\].*backbone\.stem\.conv\.weight needs \[32, 3, 7, 7\]"),
])
def test_wrong_variant_fails_naming_keys(made, change, message):
    with pytest.raises(ConversionError, match=message):
        convert_mindcv(made["path"], "bit", {**zoo_bit.ARCHS[TINY], **change})


def test_a_published_variant_does_not_take_the_tiny_checkpoint(made):
    with pytest.raises(ConversionError, match=r"lacks \d+ tensors.*backbone\.stages\.0\.2\."):
        convert_mindcv(made["path"], "bit", "bit_m_r50x1")


# ------------------------------------------------------------------ sizes
def test_parameter_counts_match_the_published_models():
    """BiT-M-R50x1 25.5M and R101x3 387.9M with a 1000-class head (the sizes timm lists for the
    ImageNet-1k fine-tuned BiT-M weights); 68.3M / 516.0M with the 21843-class ImageNet-21k head.
    Counted analytically, checked against MindSpore (tiny, r50x1) and the twin on torch's meta
    device (nothing allocated)."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from pretrain.models.bit import build_bit, count_parameters

    published = {("bit_m_r50x1", 1000): 25.5, ("bit_m_r101x3", 1000): 387.9,
                 ("bit_m_r50x1", 21843): 68.3, ("bit_m_r101x3", 21843): 516.0}
    for (variant, classes), millions in published.items():
        count = count_parameters(variant, classes)
        assert round(count / 1e6, 1) == millions, (variant, classes, count)
        with torch.device("meta"), DefaultScope.overwrite_default_scope("mmpretrain"):
            model = MODELS.build(target_config("bit", variant, classes))
        assert sum(p.numel() for p in model.parameters()) == count
    for variant in (TINY, "bit_m_r50x1"):
        net = build_bit(variant, 1000)
        assert sum(p.size for p in net.get_parameters()) == count_parameters(variant, 1000)


# ------------------------------------------------------------------ the twin downstream
def test_twin_is_registered_and_gives_multiscale_maps():
    from mmdet.registry import MODELS as MMDET
    from mmpretrain.registry import MODELS as MMPRETRAIN
    from mmseg.registry import MODELS as MMSEG

    from benchmarks.models.resnetv2 import REGISTERED

    assert set(REGISTERED) == {"mmpretrain", "mmseg", "mmdet"}
    arch = zoo_bit.ARCHS[TINY]
    from mmengine.registry import DefaultScope

    for registry in (MMSEG, MMDET, MMPRETRAIN):
        # Pin the scope: an earlier test's Runner may have left another framework's as the default.
        with DefaultScope.overwrite_default_scope(registry.scope):
            backbone = registry.build({"type": "ResNetV2BiT", "layers": arch["layers"], "base_width": 16,
                                       "gn_groups": 8, "out_indices": (0, 1, 2, 3), "frozen_stages": 1})
        outs = backbone(torch.randn(1, 3, 64, 64))
        assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    frozen = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("stem.", "stages.0.")) for n in frozen)
    assert all(p.requires_grad for p in backbone.stages[1].parameters())
    backbone.train()
    assert not backbone.stages[0].training and backbone.stages[1].training


def test_twin_arguments():
    from benchmarks.models.resnetv2 import ResNetV2BiT

    assert ResNetV2BiT(depth=101, base_width=8, gn_groups=8).layers == (3, 4, 23, 3)
    with pytest.raises(ValueError, match="depth 50 has layers"):
        ResNetV2BiT(depth=50, layers=(3, 4, 23, 3))
    with pytest.raises(ValueError, match="out_indices"):
        ResNetV2BiT(depth=50, out_indices=(4,))


def test_a_new_head_starts_at_zero_as_in_bit():
    from mmengine.logging import MMLogger

    model = build_target("bit", TINY, 5)
    # init_weights logs to the current MMLogger: an earlier test's Runner may have left one whose
    # log file is closed, so make a fresh one current.
    MMLogger.get_instance("test_a_new_head_starts_at_zero_as_in_bit")
    model.init_weights()
    assert not model.head.fc.weight.any() and not model.head.fc.bias.any()
