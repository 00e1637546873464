"""DINO: the MindSpore teacher backbone against mmpretrain's VisionTransformer after conversion,
the conversion's coverage and errors, and the objective (loss, centring, EMA teacher, schedules)
against NumPy references on fixed arrays.

A tiny ViT (patch 16, 64 px, 2 blocks) inside a full DINO cell (student, teacher, loss centre):
every parameter is drawn at random (teacher unlike student, LayerNorm affine and position table
included), the cell is saved with mindspore.save_checkpoint, converted, loaded strictly, and
compared in fp32 eval mode at the pretraining size and at three others (position-table
resampling).
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

import benchmarks  # noqa: F401  the torchvision shim precedes mmpretrain

from converters.mindcv import build_target, convert_mindcv  # noqa: E402
from converters.rules import zoo_dino  # noqa: E402
from converters.util import ConversionError  # noqa: E402

ARCH = {"img_size": 64, "patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 4.0}
HEAD = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}
# (H, W) inputs: the pretraining grid 4x4, then grids resampled up, down and to a non-square one.
SIZES = {"pretrain": (64, 64), "up": (96, 96), "down": (48, 48), "wide": (64, 112)}
ATOL = 1e-5  # max |torch - mindspore|, fp32; outputs of a LayerNorm, so of order 1 (max |ref| ~ 4)


def randomize(net, seed: int) -> None:
    """Every parameter away from its default: LayerNorm gamma ~ 1 +- 0.2, biases, betas and the
    class token ~ 0.1, the position table ~ 0.5, weights ~ N(0, 1/fan_in) (peaky attention)."""
    import mindspore as ms

    rng = np.random.RandomState(seed)
    for p in net.get_parameters():
        shape = p.shape
        if p.name.endswith(("gamma", "weight_g")):
            a = 1 + 0.2 * rng.randn(*shape)
        elif p.name.endswith(("beta", "bias", "cls_token", "center")):
            a = 0.1 * rng.randn(*shape)
        elif p.name.endswith("pos_embed"):
            a = 0.5 * rng.randn(*shape)
        else:
            a = rng.randn(*shape) / np.sqrt(np.prod(shape[1:]))
        p.set_data(ms.Tensor(a.astype(np.float32)))


def images(size: tuple[int, int], n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, 3, *size).astype(np.float32)


@pytest.fixture(scope="module")
def dino():
    """A tiny DINO cell, randomized, in fp32 PyNative eval mode."""
    import mindspore as ms

    from pretrain.models.dino import build_dino_pretrainer

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    net = build_dino_pretrainer(ARCH, head=HEAD, drop_path_rate=0.1)
    randomize(net, seed=1)
    net.set_train(False)
    return net


def teacher_outputs(net, offset: float = 0.0, sizes=tuple(SIZES)) -> dict[str, np.ndarray]:
    """The teacher backbone's final-normed tokens [B, 1 + N, C] at the named sizes."""
    import mindspore as ms

    backbone = net.teacher.backbone
    backbone.interpolate_offset = offset
    try:
        return {k: backbone.forward_tokens(ms.Tensor(images(SIZES[k]))).asnumpy() for k in sizes}
    finally:
        backbone.interpolate_offset = 0.0


@pytest.fixture(scope="module")
def converted(dino, tmp_path_factory):
    import mindspore as ms

    path = tmp_path_factory.mktemp("dino") / "dino_tiny.ckpt"
    ms.save_checkpoint(dino, str(path))
    state_dict, report = convert_mindcv(path, "dino", ARCH)
    model = build_target("dino", ARCH, report["num_classes"])
    model.load_state_dict(state_dict, strict=True)
    return {"path": path, "report": report, "model": model, "ms": teacher_outputs(dino)}


def torch_tokens(model, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(final-normed tokens from a hook on ln1, the backbone's class-token output)."""
    seen = {}
    hook = model.backbone.ln1.register_forward_hook(lambda m, i, out: seen.setdefault("tokens", out))
    try:
        with torch.no_grad():
            cls = model.extract_feat(torch.from_numpy(images(size)))[-1]
    finally:
        hook.remove()
    return seen["tokens"].numpy(), cls.numpy()


# ---- parity --------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", list(SIZES))
def test_teacher_backbone_parity(converted, size):
    """Class token and patch tokens agree at the pretraining size and with a resampled table."""
    tokens, cls = torch_tokens(converted["model"], SIZES[size])
    ref = converted["ms"][size]
    assert tokens.shape == ref.shape == (2, 1 + (SIZES[size][0] // 16) * (SIZES[size][1] // 16), ARCH["embed_dim"])
    assert np.abs(cls - ref[:, 0]).max() <= ATOL
    assert np.abs(tokens[:, 1:] - ref[:, 1:]).max() <= ATOL
    assert np.abs(ref).max() > 1.0  # a perturbed model, not near-zero outputs


def dino_interpolate_pos_encoding(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """facebookresearch/dino vision_transformer.py ``interpolate_pos_encoding``, patch grid h x w."""
    n = pos_embed.shape[1] - 1
    dim = pos_embed.shape[-1]
    side = int(np.sqrt(n))
    h0, w0 = h + 0.1, w + 0.1
    grid = torch.nn.functional.interpolate(
        pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=(h0 / side, w0 / side), mode="bicubic")
    assert grid.shape[-2:] == (h, w)
    return torch.cat((pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


def test_position_resampling_default_is_mmpretrains_offset_is_dinos(dino):
    """Offset 0 resamples the table as mmpretrain's resize_pos_embed (size=...), hence the parity
    above; offset 0.1 is DINO's own call (scale_factor=(g + 0.1) / g0), which samples other
    points. No mmpretrain option reproduces the latter: such a model matches only at 64 px."""
    from mmpretrain.models.utils import resize_pos_embed

    backbone = dino.teacher.backbone
    table = torch.from_numpy(backbone.pos_embed.asnumpy())
    for h, w in [(6, 6), (3, 3), (4, 7)]:
        ours = backbone.position_embedding(h, w).asnumpy()
        assert np.abs(ours - resize_pos_embed(table, (4, 4), (h, w)).numpy()).max() <= ATOL
        backbone.interpolate_offset = 0.1
        try:
            dinos = backbone.position_embedding(h, w).asnumpy()
        finally:
            backbone.interpolate_offset = 0.0
        assert np.abs(dinos - dino_interpolate_pos_encoding(table, h, w).numpy()).max() <= ATOL
        assert np.abs(dinos - ours).max() > 1e-3  # the two recipes are different functions


def test_dino_offset_model_differs_from_target_off_grid_only(dino, converted):
    ref = teacher_outputs(dino, offset=0.1, sizes=("pretrain", "up"))
    tokens, _ = torch_tokens(converted["model"], SIZES["pretrain"])
    assert np.abs(tokens - ref["pretrain"]).max() <= ATOL  # no resampling at the pretraining grid
    tokens, _ = torch_tokens(converted["model"], SIZES["up"])
    assert np.abs(tokens - ref["up"]).max() > 100 * ATOL


def test_plain_vit_with_classifier_converts_with_logits(tmp_path):
    """A ViT saved on its own (no student/teacher prefix), with a linear classifier."""
    import mindspore as ms

    from pretrain.models.dino import build_dino

    net = build_dino(ARCH, num_classes=5)
    randomize(net, seed=2)
    net.set_train(False)
    path = tmp_path / "vit.ckpt"
    ms.save_checkpoint(net, str(path))
    x = images(SIZES["pretrain"])
    feats, logits = net.forward_features(ms.Tensor(x)).asnumpy(), net(ms.Tensor(x)).asnumpy()
    last_two = net.get_intermediate_layers(ms.Tensor(x), n=2)  # DINO's linear protocol input
    assert len(last_two) == 2 and np.abs(last_two[-1].asnumpy()[:, 0] - feats).max() <= 1e-6

    state_dict, report = convert_mindcv(path, "dino", ARCH)
    assert report["num_classes"] == 5 and report["mapped"]["head.weight"]["target"] == "head.fc.weight"
    model = build_target("dino", ARCH, 5)
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        t_logits = model(torch.from_numpy(x), mode="tensor").numpy()
        t_feats = model.extract_feat(torch.from_numpy(x))[-1].numpy()
    assert np.abs(t_feats - feats).max() <= ATOL
    assert np.abs(t_logits - logits).max() <= ATOL


# ---- coverage and errors ---------------------------------------------------------------------------
def test_report_converts_the_teacher_and_explains_every_drop(converted):
    from converters.ckpt_io import scan_checkpoint

    report = converted["report"]
    sources = set(scan_checkpoint(converted["path"]))
    assert set(report["mapped"]) | set(report["dropped"]) == sources
    assert all(k.startswith("teacher.backbone.") for k in report["mapped"])
    assert {k for k in sources if k.startswith("teacher.backbone.")} == set(report["mapped"])
    dropped = report["dropped"]
    assert {k for k in dropped if k.startswith("student.")} == {k for k in sources if k.startswith("student.")}
    assert any(k.startswith("teacher.head.") for k in dropped) and "dino_loss.center" in dropped
    assert "EMA teacher" in dropped["student.backbone.cls_token"]
    assert "projection head" in dropped["teacher.head.last_layer.weight_v"]
    assert "centre" in dropped["dino_loss.center"]
    assert report["new"] == {} and report["num_classes"] is None
    assert set(converted["model"].state_dict()) == {v["target"] for v in report["mapped"].values()}
    fc2 = report["mapped"]["teacher.backbone.blocks.1.mlp.fc2.weight"]
    assert fc2["target"] == "backbone.layers.1.ffn.layers.1.weight"
    assert report["mapped"]["teacher.backbone.norm.gamma"]["target"] == "backbone.ln1.weight"


def test_target_config_states_dinos_numerics():
    from converters.mindcv import target_config

    backbone = target_config("dino", "dino_vits16", None)["backbone"]
    assert backbone["arch"] == {"embed_dims": 384, "num_layers": 12, "num_heads": 6, "feedforward_channels": 1536}
    assert backbone["norm_cfg"] == {"type": "LN", "eps": 1e-6}
    model = build_target("dino", ARCH, None)
    act = model.backbone.layers[0].ffn.layers[0][1]
    assert isinstance(act, torch.nn.GELU) and act.approximate == "none"
    assert model.backbone.layers[0].ln1.eps == model.backbone.ln1.eps == 1e-6
    assert isinstance(model.backbone.layers[0].attn.gamma1, torch.nn.Identity)  # no layer scale


def test_broken_rule_names_the_unexplained_keys(converted, monkeypatch):
    rules = [r for r in zoo_dino.RENAMES if "fc2" not in r[0]]
    monkeypatch.setattr(zoo_dino, "RENAMES", rules)
    with pytest.raises(ConversionError, match=r"match no rule: teacher\.backbone\.blocks\.0\.mlp\.fc2\.bias"):
        convert_mindcv(converted["path"], "dino", ARCH)


@pytest.mark.parametrize("change, message", [
    ({"depth": 3}, r"lacks 12 tensors .*backbone\.layers\.2\."),
    ({"embed_dim": 96}, r"teacher\.backbone\.\S+ \[.*48.*\] -> .* needs \[.*96"),
    ({"img_size": 96}, r"teacher\.backbone\.pos_embed \[1, 17, 48\] -> \[1, 17, 48\], "
                       r"but backbone\.pos_embed needs \[1, 37, 48\]"),
])
def test_wrong_architecture_is_refused(converted, change, message):
    with pytest.raises(ConversionError, match=message):
        convert_mindcv(converted["path"], "dino", {**ARCH, **change})


def test_unknown_variant_and_doubled_spellings_are_refused(converted, tmp_path):
    import mindspore as ms

    with pytest.raises(ConversionError, match="unknown dino variant 'vit_small'"):
        convert_mindcv(converted["path"], "dino", "vit_small")
    both = tmp_path / "both.ckpt"
    param = {"name": "teacher.backbone.cls_token", "data": ms.Tensor(np.zeros((1, 1, 48), np.float32))}
    ms.save_checkpoint([param, {"name": "cls_token", "data": param["data"]}], str(both))
    with pytest.raises(ConversionError, match=r"cls_token.*all map to backbone\.cls_token"):
        convert_mindcv(both, "dino", ARCH)


# ---- the objective -------------------------------------------------------------------------------
def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def dino_loss_reference(student: np.ndarray, teacher: np.ndarray, center: np.ndarray, t_temp: float,
                        s_temp: float = 0.1) -> float:
    """main_dino.py DINOLoss.forward, literally. student [V, B, K], teacher [Vg, B, K]."""
    total, terms = 0.0, 0
    for iq, q in enumerate(softmax((teacher - center) / t_temp)):
        for v, s in enumerate(student):
            if v == iq:
                continue
            total += np.sum(-q * log_softmax(s / s_temp), axis=-1).mean()
            terms += 1
    return total / terms


def test_loss_and_centering_match_numpy():
    import mindspore as ms

    from pretrain.models.dino import DINOLoss

    rng = np.random.RandomState(3)
    student, teacher = rng.randn(6, 4, 10).astype(np.float32), rng.randn(2, 4, 10).astype(np.float32)
    center = 0.3 * rng.randn(1, 10).astype(np.float32)
    loss_fn = DINOLoss(10, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.set_data(ms.Tensor(center))
    loss, batch_center = loss_fn(ms.Tensor(student), ms.Tensor(teacher), ms.Tensor(0.05, ms.float32))
    assert abs(float(loss.asnumpy()) - dino_loss_reference(student, teacher, center, 0.05)) <= 1e-5
    np.testing.assert_allclose(batch_center.asnumpy(), teacher.reshape(-1, 10).mean(0, keepdims=True), atol=1e-6)
    loss_fn.update_center(batch_center)
    expected = 0.9 * center + 0.1 * teacher.reshape(-1, 10).mean(0, keepdims=True)
    np.testing.assert_allclose(loss_fn.center.asnumpy(), expected, atol=1e-6)


def test_multi_crop_forward_matches_per_crop_reference(dino):
    """The cell's loss equals the paper's loss on per-crop outputs: the teacher sees the 2 globals
    only, the student all 4 crops, rows crop-major, the centre subtracted."""
    import mindspore as ms

    rng = np.random.RandomState(4)
    globals_ = rng.randn(2, 2, 3, 64, 64).astype(np.float32)
    locals_ = rng.randn(2, 2, 3, 32, 32).astype(np.float32)
    loss, batch_center = dino(ms.Tensor(globals_), ms.Tensor(locals_), ms.Tensor(0.04, ms.float32))

    def per_crop(net, crops):
        return np.stack([net.head(net.backbone.forward_features(ms.Tensor(c))).asnumpy() for c in crops])

    teacher = per_crop(dino.teacher, globals_)
    student = np.concatenate([per_crop(dino.student, globals_), per_crop(dino.student, locals_)])
    center = dino.dino_loss.center.asnumpy()
    assert abs(float(loss.asnumpy()) - dino_loss_reference(student, teacher, center, 0.04)) <= 1e-5
    np.testing.assert_allclose(batch_center.asnumpy(), teacher.reshape(-1, HEAD["out_dim"]).mean(0, keepdims=True),
                               atol=1e-6)


def test_only_the_student_gets_gradients(dino):
    import mindspore as ms

    student = dino.trainable_params()
    assert student and all(p.name.startswith("student.") for p in student)
    assert not any(p.name.endswith("weight_g") for p in student)  # norm_last_layer: norms frozen at 1
    teacher = [p for p in dino.get_parameters() if p.name.startswith("teacher.")]
    grad_fn = ms.value_and_grad(dino, None, student + teacher, has_aux=True)
    crops = ms.Tensor(images((64, 64), n=4).reshape(2, 2, 3, 64, 64))
    _, grads = grad_fn(crops, None, ms.Tensor(0.04, ms.float32))
    assert sum(float(np.abs(g.asnumpy()).sum()) for g in grads[:len(student)]) > 0
    assert all(not np.any(g.asnumpy()) for g in grads[len(student):])


def test_teacher_starts_as_a_copy_with_its_own_buffers():
    from mindspore import ops

    from pretrain.models.dino import build_dino_pretrainer, ema_pairs

    pairs = ema_pairs(build_dino_pretrainer(ARCH, head=HEAD))
    assert all(np.array_equal(s.asnumpy(), t.asnumpy()) for s, t in pairs)
    student, teacher = pairs[0]
    before = teacher.asnumpy().copy()
    ops.assign(student, student + 1.0)  # in place, as an optimizer step writes
    np.testing.assert_array_equal(teacher.asnumpy(), before)
    np.testing.assert_allclose(student.asnumpy() - before, 1.0, atol=1e-6)  # the student did move


def test_ema_teacher_update_matches_numpy(dino):
    from pretrain.models.dino import ema_pairs

    pairs = ema_pairs(dino)
    assert len(pairs) == len(list(dino.get_parameters())) // 2  # every parameter but the centre
    before = [(s.asnumpy().copy(), t.asnumpy().copy()) for s, t in pairs]  # asnumpy may alias
    assert all(np.any(sb != tb) for sb, tb in before if sb.size > 1)  # randomized apart
    dino.update_teacher(0.9)
    for (s, t), (sb, tb) in zip(pairs, before):
        np.testing.assert_allclose(t.asnumpy(), 0.9 * tb + 0.1 * sb, atol=1e-6, err_msg=t.name)
        np.testing.assert_array_equal(s.asnumpy(), sb)
    dino.update_teacher(1.0)  # momentum 1: the teacher stays
    for (s, t), (sb, tb) in zip(pairs, before):
        np.testing.assert_allclose(t.asnumpy(), 0.9 * tb + 0.1 * sb, atol=1e-6)


def test_schedules_follow_dino():
    from pretrain.models.dino import RECIPE, cosine_schedule, teacher_temp_schedule

    momentum = cosine_schedule(RECIPE["momentum_teacher"], 1.0, epochs=3, iters_per_epoch=4)
    expected = 1.0 + 0.5 * (0.996 - 1.0) * (1 + np.cos(np.pi * np.arange(12) / 12))
    np.testing.assert_allclose(momentum, expected, rtol=0, atol=1e-12)
    assert momentum[0] == 0.996 and abs(momentum[6] - 0.998) < 1e-12 and momentum[-1] < 1.0
    lr = cosine_schedule(1e-3, 1e-6, epochs=3, iters_per_epoch=2, warmup_epochs=1)
    np.testing.assert_allclose(lr[:2], [0.0, 1e-3])
    assert lr[2] == 1e-3 and len(lr) == 6
    temp = teacher_temp_schedule(0.04, 0.07, warmup_epochs=30, epochs=100)
    assert len(temp) == 100 and temp[0] == 0.04 and abs(temp[29] - 0.07) < 1e-12 and np.all(temp[30:] == 0.07)
    assert np.all(np.diff(temp[:30]) > 0)


def test_variants_and_multi_crop_data():
    from pretrain.models.dino import ARCHS, HEAD as PAPER_HEAD, MULTI_CROP

    assert ARCHS is zoo_dino.ARCHS  # one table for the model and the rules
    assert ARCHS["dino_vits16"] == {"img_size": 224, "patch_size": 16, "embed_dim": 384, "depth": 12,
                                    "num_heads": 6, "mlp_ratio": 4.0}
    assert ARCHS["dino_vitb16"]["embed_dim"] == 768 and ARCHS["dino_vitb16"]["num_heads"] == 12
    assert PAPER_HEAD == {"out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "nlayers": 3,
                          "norm_last_layer": True}
    assert MULTI_CROP["global_scale"] == (0.4, 1.0) and MULTI_CROP["local_scale"] == (0.05, 0.4)
    assert (MULTI_CROP["global_crops"], MULTI_CROP["global_size"], MULTI_CROP["local_size"]) == (2, 224, 96)


def test_vit_small_builds_with_the_published_size():
    """ViT-S/16 backbone: 21.67M parameters in both frameworks (DINO's 21M)."""
    from pretrain.models.dino import build_dino

    ms_count = sum(int(np.prod(p.shape)) for p in build_dino("dino_vits16").get_parameters())
    torch_count = sum(p.numel() for p in build_target("dino", "dino_vits16", None).parameters())
    assert ms_count == torch_count == 21_665_664
