"""Operator shard strategies of the MindSpore RingMoE (semi_auto_parallel), checked on CPU.

MindSpore 2.10 neither compiles nor dry-runs semi_auto_parallel on CPU ("Invalid communication
backend: CPU ..."), so what is checked here is what a CPU can show: a model built with a layout
computes exactly what the stand-alone model computes (MindSpore ignores strategies outside
semi/auto parallel); the strategy each primitive declares for a weight splits it as
pretrain.parallel plans (tiny and the released giant 32 x 8 x 4, built without allocating); every
strategy of a real forward fits its inputs and MindSpore's documented operator rules; and the
trainer accepts the layouts at config time and hands the layout to the model.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pretrain.config import ConfigError, apply_overrides, load_config
from pretrain.models.arch import get_arch
from pretrain.parallel import (
    ParallelLayout, config_parallel, model_params, parse_parallel, plan_layouts, semi_auto_unsupported,
)

REPO = Path(__file__).resolve().parents[1]
# Small but complete: a shifted-window block (stage 0), patch merging, every MoE path.
ARCH = get_arch("tiny").replace(img_size=96, depths=(2, 1, 1, 1))
NON_COMPUTE = {"Reshape", "Shape", "Cast"}  # MindSpore gives these no strategy


def _inputs(batch: int, seed: int = 0):
    import mindspore as ms

    rng = np.random.default_rng(seed)
    side = ARCH.img_size // ARCH.patch_size
    images = tuple(ms.Tensor(rng.standard_normal((batch, m.channels, ARCH.img_size, ARCH.img_size)).astype(np.float32))
                   for m in ARCH.modalities)
    masks = tuple(ms.Tensor((rng.random((batch, side, side)) < 0.6).astype(np.float32)) for _ in ARCH.modalities)
    return images, masks


def _net(layout, weights: dict | None = None):
    import mindspore as ms

    from pretrain.models.ringmoe import RingMoESimMIM

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    net = RingMoESimMIM(ARCH, parallel=layout)
    if weights is not None:
        for p in net.get_parameters():
            p.set_data(ms.Tensor(weights[p.name]))
    net.set_train(False)
    return net


@pytest.fixture(scope="module")
def reference():
    """The stand-alone model (no layout): its weights, losses, routing and gradients."""
    net = _net(None)
    weights = {p.name: p.asnumpy() for p in net.get_parameters()}
    return weights, _run(net, grads=True)


def _run(net, grads: bool) -> dict:
    import mindspore as ms

    images, masks = _inputs(2)
    net.encoder.set_record_routing(True)
    loss, per_modality, aux = net(images, masks, None)
    kept = [info["kept"].asnumpy() for block in net.encoder.routing() for info in block.values()]
    net.encoder.set_record_routing(False)
    out = {"loss": float(loss), "per_modality": per_modality.asnumpy(), "aux": float(aux),
           "features": net.encoder(images[1], 1)[1].asnumpy(),  # the single-modality (downstream) path
           "dropped": [int((~k).sum()) for k in kept]}
    if grads:
        net.set_train(True)
        grad_fn = ms.value_and_grad(lambda i, m: net(i, m, None), None, net.trainable_params(), has_aux=True)
        out["grads"] = {p.name: g.asnumpy() for p, g in zip(net.trainable_params(), grad_fn(images, masks)[1])}
        net.set_train(False)
    return out


@pytest.mark.parametrize("layout,grads", [(ParallelLayout(2, 2, 2), False), (ParallelLayout(4, 1, 2), True)],
                         ids=["dp2mp2ep2", "dp4ep2"])
def test_a_layout_leaves_the_numbers_unchanged(reference, layout, grads):
    """Strategies are ignored stand-alone: same losses and features to the bit. A layout orders the
    joint batch batch-major (routing restored to modality-major), and dp4/ep2 pads the expert
    capacity to a multiple of 2, so the same drops must follow. Gradients sum in another order
    (and some are analytically 0, e.g. the key biases: a 1e-9 floor)."""
    weights, ref = reference
    got = _run(_net(layout, weights), grads)
    assert sum(ref["dropped"]) > 0, "the input must overflow some experts"
    assert got["dropped"] == ref["dropped"]
    assert got["loss"] == ref["loss"] and got["aux"] == ref["aux"]
    assert got["per_modality"].tobytes() == ref["per_modality"].tobytes()
    assert got["features"].tobytes() == ref["features"].tobytes()
    for name, grad in got.get("grads", {}).items():
        np.testing.assert_allclose(grad, ref["grads"][name], rtol=0,
                                   atol=1e-5 * np.abs(ref["grads"][name]).max() + 1e-9, err_msg=name)


# ---- declared strategies against the plan ---------------------------------------------------------
def _check_against_plan(net, params, pc, num_heads) -> dict:
    from pretrain.models.ringmoe import weight_strategies

    plan = plan_layouts(params, pc, num_heads)
    declared = weight_strategies(net)
    assert sorted(declared) == sorted(plan), "every parameter needs a declared consumer"
    splits: dict = {}
    for name, layout in plan.items():
        strategy = declared[name]
        assert strategy is not None, name
        if len(strategy) == len(layout.shape):
            assert strategy == layout.splits, (name, strategy, layout.splits)
        else:  # consumed after a reshape (attention mask, position index): whole
            assert set(strategy) == {1} and set(layout.splits) == {1}, name
        key = "sliced" if math.prod(layout.splits) > 1 else "whole"
        splits[key] = splits.get(key, 0) + 1
    return splits


@pytest.mark.parametrize("dp,mp,ep", [(2, 2, 2), (2, 4, 1)])
def test_tiny_strategies_split_every_weight_as_planned(dp, mp, ep):
    """(2, 4, 1): the heads of stages 0 and 1 (1 and 2) do not split 4 ways and stay whole."""
    from pretrain.parallel import net_params

    pc = parse_parallel(dict(mode="semi_auto_parallel", data_parallel=dp, model_parallel=mp, expert_parallel=ep))
    net = _net(ParallelLayout.from_config(pc))
    kinds = _check_against_plan(net, net_params(net), pc, ARCH.num_heads)
    assert kinds["sliced"] > 0 and kinds["whole"] > 0


def test_released_32x8x4_strategies_split_every_weight_as_planned():
    """The authors' layout on giant (14.8B parameters), built without allocating the weights."""
    from mindspore.nn.utils import no_init_parameters

    from pretrain.models.ringmoe import RingMoESimMIM, weight_strategies
    from pretrain.parallel import net_params
    from pretrain.train import build_arch

    cfg = load_config(REPO / "configs/pretrain/giant_32x8x4.py")
    pc = config_parallel(cfg, "Ascend")
    assert semi_auto_unsupported(pc) is None
    arch = build_arch(cfg)
    with no_init_parameters():
        net = RingMoESimMIM(arch, parallel=ParallelLayout.from_config(pc))
    params = net_params(net)
    assert params == model_params(arch)  # same names and shapes as the stand-alone model
    kinds = _check_against_plan(net, params, pc, arch.num_heads)
    assert kinds["sliced"] > 500
    declared = weight_strategies(net)
    stage2 = "encoder.layers.2.blocks.0"
    assert declared[f"{stage2}.mlp.cross_ffn.mapping.weight"] == (4, 1, 8)  # experts over ep, hidden over mp
    assert declared[f"{stage2}.attn.q.weight"] == (8, 1) and declared[f"{stage2}.attn.proj.weight"] == (1, 8)
    assert declared["encoder.layers.0.blocks.0.attn.q.weight"] == (1, 1)  # 14 heads: whole


# ---- every strategy of a real forward against MindSpore's operator rules ----------------------------
def _record_calls(net, run):
    """Run ``run()`` with every primitive class of ``net`` wrapped to record (primitive, args)."""
    from mindspore.ops import Primitive

    classes = set()
    for _, cell in net.cells_and_names():
        for prim in cell._primitives.values():
            if isinstance(prim, Primitive):
                classes.add(next(c for c in type(prim).__mro__ if "__call__" in c.__dict__))
    calls, saved = [], {cls: cls.__dict__["__call__"] for cls in classes}

    def wrap(original):
        def call(self, *args, **kwargs):
            calls.append((self, args))
            return original(self, *args, **kwargs)
        return call

    try:
        for cls, original in saved.items():
            cls.__call__ = wrap(original)
        run()
    finally:
        for cls, original in saved.items():
            cls.__call__ = original
    return calls


def _tensors(args) -> list:
    from mindspore import Tensor

    flat = []
    for arg in args:
        if isinstance(arg, Tensor):
            flat.append(tuple(arg.shape))
        elif isinstance(arg, (tuple, list)) and arg and all(isinstance(a, Tensor) for a in arg):
            flat.extend(tuple(a.shape) for a in arg)
    return flat


def _rule_errors(prim, args, devices: int) -> list[str]:
    """MindSpore's documented constraints (operator_list_parallel) for the operators the model
    shards, plus the generic ones: one strategy per tensor input, of its rank, dividing its shape,
    with a product that divides the device count."""
    name, strategy = prim.name, [tuple(s) for s in prim.attrs["in_strategy"]]
    shapes = _tensors(args)
    if name == "OneHot":  # its first strategy is for the output [indices..., depth]
        shapes[0] = shapes[0] + (args[1],)
    errors = []

    def need(ok: bool, what: str):
        if not ok:
            errors.append(f"{name} {strategy} on {shapes}: {what}")

    need(len(strategy) == len(shapes), "one strategy per tensor input")
    for s, shape in zip(strategy, shapes):
        need(len(s) == len(shape) and all(n % k == 0 for n, k in zip(shape, s)), "rank and divisibility")
        need(devices % math.prod(s) == 0, "product divides the devices")
    if errors:
        return errors
    if name in ("Add", "Mul", "Sub", "RealDiv", "Maximum", "Less", "Greater"):
        (a, sa), (b, sb) = (shapes[0], strategy[0]), (shapes[1], strategy[1])
        for i in range(1, min(len(a), len(b)) + 1):
            if a[-i] == b[-i]:
                need(sa[-i] == sb[-i], "equal dims split alike")
            else:
                need((sa[-i] if a[-i] == 1 else sb[-i]) == 1, "a broadcast dim is whole")
    elif name == "MatMul":
        a, b = strategy
        need(a[-1] == (b[-1] if prim.transpose_b else b[-2]), "contraction split alike")
    elif name == "BatchMatMul":
        a, b = strategy
        need(a[-1] == b[-2] and len(a) == len(b) and a[:-2] == b[:-2], "contraction and batch split alike")
    elif name == "BiasAdd":
        need(strategy[0][1] == strategy[1][0], "bias split as the channels")
    elif name == "LayerNorm":
        begin = prim.attrs["begin_norm_axis"] % len(shapes[0])
        x = strategy[0]
        need(set(x[begin:]) == {1} and strategy[1] == x[begin:] == strategy[2], "normalised axes whole")
    elif name in ("Softmax", "Argmax", "CumSum", "Concat"):
        axis = args[1] if name == "CumSum" else prim.attrs["axis"]
        axis = axis[0] if isinstance(axis, tuple) else axis  # Softmax keeps a tuple
        need(all(s[axis] == 1 for s in strategy), "the axis is whole")
        need(all(s == strategy[0] for s in strategy), "inputs split alike")
    elif name == "Stack":
        need(all(s == strategy[0] for s in strategy), "inputs split alike")
    elif name == "StridedSlice":
        begin, end = args[1], args[2]
        need(all(k == 1 for k, b, e, n in zip(strategy[0], begin, end, shapes[0]) if (b, e) != (0, n)),
             "sliced axes whole")
    elif name == "Gather":
        axis, (p, i) = args[2], strategy
        if p[axis] > 1:
            need(len(shapes[0]) <= 2 and set(i) == {1}, "table rows split: 1-2D table, indices whole")
            need(math.prod(p) == devices or p[1:] == (1,) * (len(p) - 1), "no repeat with split columns")
    elif name == "UnsortedSegmentSum":
        need(strategy[0][: len(strategy[1])] == strategy[1], "data split as the segment ids")
    elif name == "OneHot":
        need(strategy[1] == strategy[2] == (), "scalar on/off values")
    elif name == "Conv2D":
        x, w = strategy
        need(x[2:] == (1, 1) and w[2:] == (1, 1) and x[1] == w[1], "H/W and kernel whole, C_in alike")
    return errors


@pytest.mark.parametrize("dp,mp,ep", [(2, 2, 2), (4, 1, 2)])
def test_every_strategy_of_a_forward_fits_its_inputs_and_mindspores_rules(dp, mp, ep):
    """Global shapes (what semi_auto_parallel compiles) with the per-modality batch = dp."""
    net = _net(ParallelLayout(dp, mp, ep))
    images, masks = _inputs(dp)
    calls = _record_calls(net, lambda: net(images, masks, None))
    sharded = [(prim, args) for prim, args in calls if "in_strategy" in prim.attrs]
    unsharded = {prim.name for prim, _ in calls if "in_strategy" not in prim.attrs}
    assert unsharded <= NON_COMPUTE, f"primitives called without a strategy: {unsharded - NON_COMPUTE}"
    names = {prim.name for prim, _ in sharded}
    assert {"BatchMatMul", "Gather", "UnsortedSegmentSum", "OneHot", "LayerNorm", "Conv2D", "Stack"} <= names
    errors = [e for prim, args in sharded for e in _rule_errors(prim, args, dp * mp)]
    assert not errors, "\n".join(sorted(set(errors))[:20])


# ---- the trainer -------------------------------------------------------------------------------------
SEMI = ["parallel.mode=semi_auto_parallel", "parallel.data_parallel=2", "parallel.model_parallel=2",
        "parallel.expert_parallel=2", "parallel.optimizer_shard=True", "parallel.recompute=True"]


def test_trainer_accepts_the_layouts_and_cpu_gets_mindspores_refusal(capsys):
    from pretrain.train import main

    cfg = apply_overrides(load_config(REPO / "configs/pretrain/tiny.py"), SEMI)
    pc = config_parallel(cfg, "Ascend")
    assert semi_auto_unsupported(pc) is None
    code = main(["--config", str(REPO / "configs/pretrain/tiny.py"), "--cfg-options", *SEMI])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Invalid communication backend: CPU" in err[0], err
    assert "shard" not in err[0] and "Traceback" not in err[0]
    for bad, message in ((["parallel.pipeline_stages=2"], "pipeline parallelism is not supported"),
                         (["parallel.model_parallel=3", "parallel.data_parallel=2"], "does not divide the FFN hidden")):
        with pytest.raises(ConfigError, match=message):
            config_parallel(apply_overrides(cfg, bad), "Ascend")


def test_trainer_builds_the_model_with_the_layout(tmp_path, monkeypatch):
    """train() up to the model: the semi-auto rank set-up is simulated (one rank), the model class
    is a spy that stops the run once it has the layout."""
    import mindspore as ms

    import pretrain.models.ringmoe as ringmoe
    import pretrain.train as train
    from pretrain.parallel import DistInfo

    cfg = apply_overrides(load_config(REPO / "configs/pretrain/tiny.py"),
                          SEMI + ["data.demo_tiles=1", "data.demo_tile_size=96", "data.num_workers=0"])
    pc = config_parallel(cfg, "Ascend")
    monkeypatch.setattr(train, "setup_distributed", lambda cfg, work_dir: DistInfo(pc))
    built = {}

    class Built(Exception):
        pass

    def spy(arch, dropout=0.0, parallel=None):
        built.update(arch=arch, parallel=parallel)
        raise Built

    monkeypatch.setattr(ringmoe, "RingMoESimMIM", spy)
    mode = ms.get_context("mode")
    try:
        with pytest.raises(Built):
            train.train(cfg, tmp_path, None)
    finally:
        ms.set_context(mode=mode)
    assert built["parallel"] == ParallelLayout(2, 2, 2) and built["arch"].embed_dim == 32
