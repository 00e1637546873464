"""gMLP: our MindSpore model against its PyTorch twin through the conversion rules.

The MindSpore model is built from a small architecture dict (random init, every parameter then
perturbed so that no swap or transposition hides behind ones, zeros or the near-zero spatial
init), saved with ``mindspore.save_checkpoint`` beside some optimizer state, converted with
``convert_mindcv``, loaded strictly into the mmpretrain ``ImageClassifier`` and run on the same
fixed input in fp32 eval mode. Also: coverage, broken rules and wrong architectures fail naming
keys, the CLI on the named demo variant, the parameter counts against the paper, and the twin's
own options.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import benchmarks  # noqa: F401  the torchvision shim precedes mmpretrain

from converters.mindcv import build_target, convert_mindcv  # noqa: E402
from converters.rules import zoo_gmlp  # noqa: E402
from converters.util import ConversionError  # noqa: E402

# 48 px / 8 px patches = 36 tokens, 3 blocks of width 32, d_ffn 192 (the paper's ratio 6).
ARCH = {"img_size": 48, "patch_size": 8, "embed_dim": 32, "depth": 3, "mlp_ratio": 6}
NUM_CLASSES = 10
ATOL = 1e-5  # max |torch - mindspore|, fp32; the outputs are O(1) (printed beside the errors)
EXTRAS = {"adam_m.blocks.0.proj_in.weight": (192, 32), "global_step": (1,)}  # a training run's extras
# The paper's Table 1, in millions of parameters (ImageNet head).
PAPER_PARAMS_M = {"gmlp_ti": 6, "gmlp_s": 20, "gmlp_b": 73}


def perturb(net, seed: int) -> None:
    """Give every parameter distinctive values: norms off 1/0, gate biases off 1, the spatial
    weights (initialised near 0) of order 0.1, so that a transposed token mixing shows."""
    import mindspore as ms

    rng = np.random.RandomState(seed)
    for p in net.get_parameters():
        a = p.asnumpy()
        if p.name.endswith("gamma"):
            a = 1 + 0.2 * rng.randn(*a.shape)
        elif p.name.endswith("sgu.proj.bias"):
            a = 1 + 0.1 * rng.randn(*a.shape)
        else:
            a = a + 0.1 * rng.randn(*a.shape)
        p.set_data(ms.Tensor(a.astype(np.float32)))


def make_checkpoint(arch: dict | str, path, seed: int, extras: dict | None = None) -> dict:
    """Build, perturb, save and run one MindSpore gMLP; its outputs on a fixed input."""
    import mindspore as ms

    from pretrain.models.gmlp import build_gmlp

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(seed)
    net = build_gmlp(arch, NUM_CLASSES)
    net.set_train(False)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    perturb(net, seed + 1)
    unchanged = [p.name for p in net.get_parameters() if np.abs(p.asnumpy() - before[p.name]).mean() < 0.05]
    assert not unchanged, f"perturbation left parameters near their init: {unchanged}"
    params = [{"name": p.name, "data": p} for p in net.get_parameters()]
    params += [{"name": k, "data": ms.Tensor(np.ones(s, np.float32))} for k, s in (extras or {}).items()]
    ms.save_checkpoint(params, str(path))
    side = net.arch["img_size"]
    x = np.random.RandomState(seed).randn(2, 3, side, side).astype(np.float32)
    xm = ms.Tensor(x)
    return {"path": path, "x": x, "tokens": net.forward_tokens(xm).asnumpy(),
            "features": net.forward_features(xm).asnumpy(), "logits": net(xm).asnumpy(),
            "names": [p.name for p in net.get_parameters()]}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    item = make_checkpoint(ARCH, tmp_path_factory.mktemp("gmlp") / "gmlp_tiny.ckpt", seed=0, extras=EXTRAS)
    item["state_dict"], item["report"] = convert_mindcv(item["path"], "gmlp", ARCH)
    return item


def torch_outputs(model, x: np.ndarray) -> dict:
    """The twin's final token map as [B, N, C] (row-major), pooled features and logits."""
    with torch.no_grad():
        xt = torch.from_numpy(x)
        fmap = model.backbone(xt)[-1]
        return {"tokens": fmap.flatten(2).transpose(1, 2).numpy(),
                "features": model.extract_feat(xt)[-1].numpy(),
                "logits": model(xt, mode="tensor").numpy()}


def max_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max())


def loaded_target(made: dict, state_dict: dict | None = None):
    model = build_target("gmlp", ARCH, NUM_CLASSES)
    model.load_state_dict(state_dict or made["state_dict"], strict=True)
    return model


def test_parity_tokens_features_and_logits(made):
    got = torch_outputs(loaded_target(made), made["x"])
    for name in ("tokens", "features", "logits"):
        err = max_err(got[name], made[name])
        print(f"{name}: max abs diff {err:.2e}, max |mindspore| {np.abs(made[name]).max():.3f}")
        assert err <= ATOL, name


def test_control_transposed_spatial_weights_break_parity(made):
    """The parity test sees the token-axis orientation of the spatial projection."""
    state = dict(made["state_dict"])
    key = "backbone.blocks.1.sgu.proj.weight"
    state[key] = state[key].t().contiguous()
    got = torch_outputs(loaded_target(made, state), made["x"])
    assert max_err(got["logits"], made["logits"]) > 1e-3


def test_control_tanh_gelu_breaks_parity(made):
    """The parity test sees the GELU form (tanh vs erf: ~1e-4 on these outputs)."""
    import copy

    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from converters.mindcv import target_config

    cfg = copy.deepcopy(target_config("gmlp", ARCH, NUM_CLASSES))
    cfg["backbone"]["act_cfg"] = {"type": "GELU", "approximate": "tanh"}
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        model = MODELS.build(cfg).eval()
    model.load_state_dict(made["state_dict"], strict=True)
    assert max_err(torch_outputs(model, made["x"])["tokens"], made["tokens"]) > 1e-4


def test_numerics_are_explicit_and_equal_on_both_sides(made):
    """LayerNorm eps 1e-6 and erf GELU in every cell of both models. A wrong eps (1e-7, say)
    moves the outputs by only a few 1e-6, under the parity tolerance, so it is checked here."""
    from mindspore import nn as ms_nn

    from pretrain.models.gmlp import build_gmlp

    net = build_gmlp(ARCH, NUM_CLASSES)
    ms_cells = [c for _, c in net.cells_and_names()]
    ms_norms = [c for c in ms_cells if isinstance(c, ms_nn.LayerNorm)]
    ms_gelus = [c for c in ms_cells if isinstance(c, ms_nn.GELU)]
    assert len(ms_norms) == 2 * ARCH["depth"] + 1 and len(ms_gelus) == ARCH["depth"]
    assert {c.epsilon for c in ms_norms} == {zoo_gmlp.LN_EPS} == {1e-6}
    assert {c.approximate for c in ms_gelus} == {"none"}
    modules = list(loaded_target(made).backbone.modules())
    norms = [m for m in modules if isinstance(m, torch.nn.LayerNorm)]
    gelus = [m for m in modules if isinstance(m, torch.nn.GELU)]
    assert len(norms) == len(ms_norms) and len(gelus) == len(ms_gelus)
    assert {m.eps for m in norms} == {1e-6} and {m.approximate for m in gelus} == {"none"}


def test_report_accounts_for_every_source_key(made):
    from converters.ckpt_io import scan_checkpoint

    report = made["report"]
    sources = set(scan_checkpoint(made["path"]))
    assert set(report["mapped"]) | set(report["dropped"]) == sources
    assert set(report["dropped"]) == set(EXTRAS) and all("optimizer state" in r for r in report["dropped"].values())
    assert set(report["mapped"]) == set(made["names"])  # every model parameter, nothing else
    per_block = 10  # norm, proj_in, sgu.norm, sgu.proj, proj_out: weight and bias each
    n_model = 2 + ARCH["depth"] * per_block + 2 + 2
    assert report["coverage"] == {"source_tensors": n_model + len(EXTRAS), "mapped": n_model,
                                  "dropped": len(EXTRAS), "target_entries": n_model, "new": 0}
    assert report["mapped"]["blocks.2.sgu.norm.gamma"]["target"] == "backbone.blocks.2.sgu.norm.weight"
    assert report["mapped"]["head.weight"]["target"] == "head.fc.weight"
    assert set(made["state_dict"]) == {m["target"] for m in report["mapped"].values()}


def test_a_broken_rule_fails_naming_the_keys(made, monkeypatch):
    renames = [(p.replace("norm|sgu\\.norm", "norm"), *rest) for p, *rest in zoo_gmlp.RENAMES]
    assert renames != zoo_gmlp.RENAMES
    monkeypatch.setattr(zoo_gmlp, "RENAMES", renames)
    unmatched = r"6 source tensors match no rule: " + re.escape("blocks.0.sgu.norm.beta")  # 3 blocks x 2
    with pytest.raises(ConversionError, match=unmatched):
        convert_mindcv(made["path"], "gmlp", ARCH)


def test_a_wrong_depth_fails_naming_the_extra_tensors(made):
    with pytest.raises(ConversionError, match=r"no place in the model.*backbone\.blocks\.2\.norm\.bias"):
        convert_mindcv(made["path"], "gmlp", {**ARCH, "depth": 2})


def test_a_wrong_image_size_fails_naming_the_spatial_projection(made):
    # Another input size is another token count: the spatial projection's shape tells.
    with pytest.raises(ConversionError, match=r"blocks\.0\.sgu\.proj\.weight \[36, 36\].*needs \[16, 16\]"):
        convert_mindcv(made["path"], "gmlp", {**ARCH, "img_size": 32})


def test_a_wrong_variant_name_or_bad_arch_fails():
    with pytest.raises(ConversionError, match="unknown gmlp variant 'gmlp_xl'"):
        build_target("gmlp", "gmlp_xl")
    with pytest.raises(ConversionError, match="not a multiple of patch_size"):
        build_target("gmlp", {**ARCH, "img_size": 50})


def test_parameter_counts_match_the_models_and_the_paper():
    from pretrain.models.gmlp import build_gmlp, count_params

    for arch, classes in ((ARCH, NUM_CLASSES), (ARCH, None), ("gmlp_ti", 1000)):
        allocated = sum(p.size for p in build_gmlp(arch, classes).get_parameters())
        assert allocated == count_params(arch, classes), arch
    for name, paper in PAPER_PARAMS_M.items():  # gmlp_b is counted, not allocated (73M floats)
        ours = count_params(name) / 1e6
        print(f"{name}: {ours:.2f}M parameters (paper: {paper}M)")
        # The paper rounds loosely: gMLP-S has 19.42M (timm's count too), which it gives as 20M.
        assert abs(ours - paper) <= 0.05 * paper, name


def test_cli_converts_the_named_demo_variant(tmp_path):
    from converters.ms2torch import main

    item = make_checkpoint("gmlp_tiny_demo", tmp_path / "demo.ckpt", seed=3)
    out = tmp_path / "demo.pth"
    assert main([str(item["path"]), "-o", str(out), "--family", "gmlp:gmlp_tiny_demo"]) == 0
    payload = torch.load(out, weights_only=True)
    assert payload["meta"]["family"] == "gmlp" and (tmp_path / "demo.report.json").is_file()
    assert payload["meta"]["target_config"]["backbone"]["img_size"] == 64
    model = build_target("gmlp", "gmlp_tiny_demo", NUM_CLASSES)
    model.load_state_dict(payload["state_dict"], strict=True)
    got = torch_outputs(model, item["x"])
    assert max_err(got["logits"], item["logits"]) <= ATOL
    assert main([str(item["path"]), "-o", str(tmp_path / "bad.pth"), "--family", "gmlp:gmlp_ti"]) == 2
    assert not (tmp_path / "bad.pth").exists()


def test_twin_options_out_indices_avg_frozen_and_input_size():
    from benchmarks.models.gmlp import GMLP

    kwargs = {"img_size": 32, "patch_size": 8, "embed_dims": 16, "num_layers": 3, "mlp_ratio": 2}
    x = torch.randn(2, 3, 32, 32)
    net = GMLP(**kwargs, out_indices=(0, -1)).eval()
    with torch.no_grad():
        first, last = net(x)
    assert first.shape == last.shape == (2, 16, 4, 4)
    avg_net = GMLP(**kwargs, out_type="avg").eval()
    avg_net.load_state_dict(net.state_dict())
    with torch.no_grad():
        (pooled,) = avg_net(x)
    assert torch.allclose(pooled, last.mean(dim=(2, 3)), atol=1e-6)
    # The paper's gate init: spatial weights near 0 and bias 1.
    sgu = net.blocks[0].sgu.proj
    assert torch.equal(sgu.bias, torch.ones_like(sgu.bias)) and sgu.weight.abs().max() < 1e-4
    frozen = GMLP(**kwargs, frozen_stages=3, drop_path_rate=0.1).train()
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen.blocks[2].training  # frozen blocks run without stochastic depth
    partly = GMLP(**kwargs, frozen_stages=1)
    assert [any(p.requires_grad for p in b.parameters()) for b in partly.blocks] == [False, True, True]
    with pytest.raises(ValueError, match="built for 32 px inputs"):
        net(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match="out of range for 3 blocks"):
        GMLP(**kwargs, out_indices=(3,))


def test_mindspore_gate_init_and_drop_path():
    import mindspore as ms

    from pretrain.models.gmlp import DropPath, build_gmlp

    ms.set_context(mode=ms.PYNATIVE_MODE)
    proj = build_gmlp(ARCH, None).blocks[0].sgu.proj
    assert np.all(proj.bias.asnumpy() == 1) and np.abs(proj.weight.asnumpy()).max() < 1e-4
    drop = DropPath(0.5)
    x = ms.Tensor(np.ones((64, 2, 3), np.float32))
    drop.set_train(False)
    assert np.array_equal(drop(x).asnumpy(), x.asnumpy())
    drop.set_train(True)
    out = drop(x).asnumpy()
    per_sample = out.reshape(64, -1)
    assert np.all((per_sample == 0) | (per_sample == 2))  # whole samples dropped, kept ones scaled
    assert np.all(per_sample == per_sample[:, :1]) and 0 < (per_sample[:, 0] == 0).sum() < 64
