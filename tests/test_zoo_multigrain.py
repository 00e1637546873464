"""Multigrain: MindSpore model -> mmpretrain ResNet + GeM parity, conversion coverage and failures,
the objective (CE + margin loss) against NumPy, distance-weighted sampling and the
repeated-augmentation batch sampler.

Parity: random init with every BatchNorm statistic, affine parameter, bias and GeM's p moved off
its default, saved with mindspore.save_checkpoint beside what a training run adds (the loss's
beta, optimizer moments, a step counter), converted, loaded strictly into mmpretrain, compared in
fp32 eval mode on a fixed input: max |torch - mindspore| <= 1e-5, absolute and relative to
max |mindspore|, for the last stage's map, the GeM features and the logits.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import benchmarks  # noqa: F401  the torchvision shim precedes mmpretrain

from converters.mindcv import build_target, convert_mindcv  # noqa: E402
from converters.rules import zoo_multigrain  # noqa: E402
from converters.util import ConversionError  # noqa: E402

RTOL = 1e-5  # max |torch - mindspore| / max |mindspore|, fp32
ATOL = 1e-5  # max |torch - mindspore|, fp32 (the perturbation keeps activations O(1))
NUM_CLASSES = 7
P_TRAINED = 2.6  # GeM exponent "learnt" away from its initial 3
CASES = {18: 64, 50: 64}  # depth -> input side (small: MindSpore's CPU convolutions are slow)


def perturb(net, rng: np.random.RandomState) -> None:
    """Give every parameter distinctive values so that no swap hides behind ones and zeros.

    The last BatchNorm of each residual branch gets a small gamma, as in a trained ResNet: the
    activations stay O(1), so the absolute bound holds beside the relative one.
    """
    import mindspore as ms

    last_bn = re.compile(rf"layer\d\.\d+\.bn{3 if net.depth >= 50 else 2}\.gamma")
    for p in net.get_parameters():
        a = p.asnumpy()
        if p.name.endswith("moving_variance"):
            a = rng.uniform(0.5, 1.5, a.shape)
        elif p.name.endswith("gamma"):
            a = (0.25 if last_bn.fullmatch(p.name) else 1.0) * (1 + 0.2 * rng.randn(*a.shape))
        elif p.name.endswith(("beta", "moving_mean", "bias")):
            a = 0.1 * rng.randn(*a.shape)
        elif p.name == "pool.p":
            a = np.full(a.shape, P_TRAINED)
        p.set_data(ms.Tensor(a.astype(np.float32)))


def save_multigrain(depth: int, path) -> dict:
    """Build, perturb, run and save one model the way a training run would (with loss and optimizer)."""
    import mindspore as ms

    from pretrain.models.multigrain import MultigrainLoss, build_multigrain

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(depth)
    net = build_multigrain({"depth": depth}, NUM_CLASSES)
    net.set_train(False)
    perturb(net, np.random.RandomState(depth))
    loss = MultigrainLoss(beta=1.1)
    params = [{"name": p.name, "data": p} for p in [*net.get_parameters(), *loss.get_parameters()]]
    extras = [{"name": "moments.conv1.weight", "data": ms.Tensor(np.zeros((64, 3, 7, 7), np.float32))},
              {"name": "global_step", "data": ms.Tensor(np.array([11], np.int32))}]
    ms.save_checkpoint(params + extras, str(path))
    x = np.random.RandomState(100 + depth).randn(2, 3, CASES[depth], CASES[depth]).astype(np.float32)
    seen = {}
    net.layer4.register_forward_hook(lambda cell, inputs, out: seen.setdefault("map", out))
    net.pool.register_forward_hook(lambda cell, inputs, out: seen.setdefault("features", out))
    embedding = net.embed(ms.Tensor(x))  # one trunk pass (CPU convolutions are the slow part), hooks see the rest
    logits = net.classifier(seen["features"])
    return {"depth": depth, "path": path, "x": x, "map": seen["map"].asnumpy(),
            "features": seen["features"].asnumpy(), "logits": logits.asnumpy(), "embedding": embedding.asnumpy(),
            "num_bn": sum(p.name.endswith("moving_mean") for p in net.get_parameters())}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    cache: dict[int, dict] = {}

    def get(depth: int) -> dict:
        if depth not in cache:
            item = save_multigrain(depth, tmp_path_factory.mktemp("multigrain") / f"mg{depth}.ckpt")
            item["state_dict"], item["report"] = convert_mindcv(item["path"], "multigrain", {"depth": depth})
            cache[depth] = item
        return cache[depth]

    return get


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def torch_outputs(state_dict: dict, depth: int, x: np.ndarray) -> dict:
    model = build_target("multigrain", {"depth": depth}, NUM_CLASSES)
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        return {"map": model.backbone(xt)[-1].numpy(), "features": model.extract_feat(xt)[-1].numpy(),
                "logits": model(xt, mode="tensor").numpy()}


# ---- parity and conversion --------------------------------------------------------------------
@pytest.mark.parametrize("depth", sorted(CASES))
def test_parity_gem_features_and_logits(made, depth):
    item = made(depth)
    got = torch_outputs(item["state_dict"], depth, item["x"])
    for name in ("map", "features", "logits"):
        assert rel_err(got[name], item[name]) <= RTOL, name
        assert np.abs(got[name] - item[name]).max() <= ATOL, name
    norms = np.linalg.norm(item["embedding"], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    np.testing.assert_allclose(item["embedding"], item["features"] / np.linalg.norm(item["features"], axis=1,
                                                                                   keepdims=True), rtol=1e-5)
    assert rel_err(got["features"] / np.linalg.norm(got["features"], axis=1, keepdims=True),
                   item["embedding"]) <= RTOL


def test_learnt_p_is_converted_not_left_at_its_default(made):
    item = made(18)
    assert float(item["state_dict"]["neck.p"]) == pytest.approx(P_TRAINED)
    reset = dict(item["state_dict"], **{"neck.p": torch.full((1,), 3.0)})
    assert rel_err(torch_outputs(reset, 18, item["x"])["features"], item["features"]) > 1e-2


@pytest.mark.parametrize("depth", sorted(CASES))
def test_report_accounts_for_every_source_key(made, depth):
    from converters.ckpt_io import scan_checkpoint

    item = made(depth)
    report = item["report"]
    sources = set(scan_checkpoint(item["path"]))
    assert set(report["mapped"]) | set(report["dropped"]) == sources
    assert report["mapped"]["pool.p"]["target"] == "neck.p"
    assert report["mapped"]["classifier.weight"]["target"] == "head.fc.weight"
    assert set(report["dropped"]) == {"margin.beta", "moments.conv1.weight", "global_step"}
    assert "margin loss" in report["dropped"]["margin.beta"]
    assert len(report["new"]) == item["num_bn"] and all(k.endswith("num_batches_tracked") for k in report["new"])
    assert report["target_config"]["neck"] == {"type": "GeneralizedMeanPooling", "p": 3.0, "eps": 1e-6,
                                              "clamp": True, "p_trainable": True}


def test_a_missing_rename_fails_naming_the_key(made, monkeypatch):
    item = made(18)
    renames = [r for r in zoo_multigrain.RENAMES if "downsample\\.0" not in r[0]]
    assert len(renames) == len(zoo_multigrain.RENAMES) - 1
    monkeypatch.setattr(zoo_multigrain, "RENAMES", renames)
    with pytest.raises(ConversionError, match=re.escape("layer2.0.downsample.0.weight")):
        convert_mindcv(item["path"], "multigrain", {"depth": 18})


def test_two_sources_on_one_target_fail_naming_them(made, monkeypatch):
    item = made(18)
    renames = [(r"classifier\.(?P<p>weight|bias)", "head.fc.weight", "identity") if r[0].startswith("classifier")
               else r for r in zoo_multigrain.RENAMES]  # a rule that forgets the {p} of its target
    monkeypatch.setattr(zoo_multigrain, "RENAMES", renames)
    with pytest.raises(ConversionError, match=r"classifier\.bias, classifier\.weight all map to head\.fc\.weight"):
        convert_mindcv(item["path"], "multigrain", {"depth": 18})


def test_wrong_depth_fails_naming_missing_targets(made):
    with pytest.raises(ConversionError, match=r"lacks \d+ tensors.*backbone\.layer1\.2\.bn1\.bias"):
        convert_mindcv(made(18)["path"], "multigrain", "multigrain_resnet34")
    with pytest.raises(ConversionError, match=r"no place in the model.*backbone\.layer1\.0\.bn3\."):
        convert_mindcv(made(50)["path"], "multigrain", {"depth": 18})
    with pytest.raises(ConversionError, match="depth 20"):
        convert_mindcv(made(18)["path"], "multigrain", {"depth": 20})


# ---- objective ---------------------------------------------------------------------------------
def np_multigrain_loss(logits, features, labels, a, p, n, lam=0.5, alpha=0.2, beta=1.2):
    """Float64 reference: (total, ce, margin, active pair terms, d loss / d beta)."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce = -logp[np.arange(len(labels)), labels].mean()
    e = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    d_ap = np.sqrt(((e[p] - e[a]) ** 2).sum(1) + 1e-8)
    d_an = np.sqrt(((e[n] - e[a]) ** 2).sum(1) + 1e-8)
    pos, neg = np.maximum(d_ap - beta + alpha, 0), np.maximum(beta - d_an + alpha, 0)
    active = (pos > 0).sum() + (neg > 0).sum()
    margin = (pos + neg).sum() / max(active, 1)
    dbeta = (1 - lam) * ((neg > 0).sum() - (pos > 0).sum()) / max(active, 1)
    return lam * ce + (1 - lam) * margin, ce, margin, active, dbeta


@pytest.fixture(scope="module")
def batch():
    """9 images = 3 instances x 3 copies: features near their instance's centre, fixed triples."""
    rng = np.random.RandomState(5)
    ids = np.repeat(np.arange(3), 3)
    centres = rng.randn(3, 16)
    features = (np.abs(centres[ids] + 0.6 * rng.randn(9, 16))).astype(np.float32)  # GeM output is >= 0
    logits = rng.randn(9, NUM_CLASSES).astype(np.float32)
    labels = np.array([1, 1, 1, 4, 4, 4, 0, 0, 0], np.int32)
    a = np.repeat(np.arange(9), 2).astype(np.int32)
    p = np.array([j for i in range(9) for j in range(9) if ids[j] == ids[i] and j != i], np.int32)
    n = np.array([3, 6, 5, 7, 4, 8, 0, 8, 1, 7, 2, 6, 1, 3, 2, 4, 0, 5], np.int32)  # other instances
    assert np.all(ids[n] != ids[a])
    return {"ids": ids, "features": features, "logits": logits, "labels": labels, "triples": (a, p, n)}


def test_multigrain_loss_matches_numpy(batch):
    import mindspore as ms

    from pretrain.models.multigrain import MultigrainLoss

    ms.set_context(mode=ms.PYNATIVE_MODE)
    args = (batch["logits"], batch["features"], batch["labels"], *batch["triples"])
    want = np_multigrain_loss(*[x.astype(np.float64) if x.dtype == np.float32 else x for x in args])
    assert 0 < want[3] < 2 * len(batch["triples"][0])  # some pair terms active, some not: the count matters
    loss = MultigrainLoss()
    got = loss(*[ms.Tensor(x) for x in args])
    jitted = ms.jit(loss.construct)(*[ms.Tensor(x) for x in args])  # graph mode computes the same
    for g, j, w in zip(got, jitted, want[:3]):
        assert float(g.asnumpy()) == pytest.approx(w, rel=1e-6)
        assert float(j.asnumpy()) == pytest.approx(w, rel=1e-6)


def test_multigrain_loss_gradients_match_numpy(batch):
    """d loss / d features against central differences of the float64 reference; d / d beta exact."""
    import mindspore as ms

    from pretrain.models.multigrain import MultigrainLoss

    ms.set_context(mode=ms.PYNATIVE_MODE)
    logits, features, labels = batch["logits"], batch["features"], batch["labels"]
    triples = batch["triples"]
    loss = MultigrainLoss()
    grad_fn = ms.value_and_grad(lambda f: loss(ms.Tensor(logits), f, ms.Tensor(labels),
                                                *[ms.Tensor(t) for t in triples])[0], 0, loss.trainable_params())
    _, (g_features, (g_beta,)) = grad_fn(ms.Tensor(features))
    f64 = features.astype(np.float64)

    def total(f):
        return np_multigrain_loss(logits.astype(np.float64), f, labels, *triples)[0]

    step, numeric = 1e-6, np.zeros_like(f64)
    for idx in np.ndindex(f64.shape):
        up, down = f64.copy(), f64.copy()
        up[idx] += step
        down[idx] -= step
        numeric[idx] = (total(up) - total(down)) / (2 * step)
    assert rel_err(g_features.asnumpy().astype(np.float64), numeric) < 1e-3
    assert float(g_beta.asnumpy()[0]) == pytest.approx(np_multigrain_loss(logits, f64, labels, *triples)[4], abs=1e-6)


def test_fixed_beta_is_not_trainable():
    from pretrain.models.multigrain import MultigrainLoss

    assert [p.name for p in MultigrainLoss().trainable_params()] == ["margin.beta"]
    assert MultigrainLoss(learn_beta=False).trainable_params() == []


# ---- distance-weighted sampling ---------------------------------------------------------------
def at_distances(distances, dim: int) -> np.ndarray:
    """Unit rows: row 0 the anchor e0, row k+1 at Euclidean distance distances[k] from it."""
    rows = [np.eye(dim)[0]]
    for k, d in enumerate(distances):
        cos = 1 - d * d / 2
        rows.append(cos * np.eye(dim)[0] + np.sqrt(1 - cos * cos) * np.eye(dim)[1 + k % (dim - 1)])
    return np.array(rows)


def test_negative_weights_follow_the_inverse_sphere_distance_density():
    from pretrain.models.multigrain import negative_weights

    dim, dists = 6, [0.3, 0.5, 0.8, 1.2, 1.6]
    x = at_distances(dists, dim) * 3.0  # not unit: the sampler normalises
    probs = negative_weights(x, np.arange(len(dists) + 1))[0]

    def inv_q(d):
        d = max(d, 0.5)
        return 1.0 / (d ** (dim - 2) * (1 - d * d / 4) ** ((dim - 3) / 2))

    want = np.array([0.0] + [inv_q(d) if d < 1.4 else 0.0 for d in dists])
    np.testing.assert_allclose(probs, want / want.sum(), rtol=1e-9, atol=1e-12)
    assert probs[1] == pytest.approx(probs[2])  # below the 0.5 cut-off all weigh alike
    assert probs[-1] == 0.0  # beyond beta + alpha: no loss, never drawn
    unlimited = negative_weights(x, np.arange(len(dists) + 1), nonzero_loss_cutoff=None)[0]
    assert unlimited[-1] > 0


def test_negative_weights_fall_back_to_uniform_when_all_negatives_are_far():
    from pretrain.models.multigrain import negative_weights

    x = np.array([[1.0, 0, 0], [0.99, 0.1, 0], [-1.0, 0, 0], [-0.99, -0.1, 0]])  # two far pairs
    probs = negative_weights(x, np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(probs[0], [0, 0, 0.5, 0.5])
    with pytest.raises(ValueError, match="no other instance"):
        negative_weights(x, np.zeros(4))


def test_sample_pairs_triples_are_valid_and_seeded():
    from pretrain.models.multigrain import sample_pairs

    ids = np.repeat(np.arange(8), 3)
    feats = np.random.RandomState(0).rand(24, 32)
    a, p, n = sample_pairs(feats, ids, np.random.default_rng(0))
    assert a.dtype == p.dtype == n.dtype == np.int32 and len(a) == len(p) == len(n) == 24 * 2
    assert np.all(ids[a] == ids[p]) and np.all(a != p) and np.all(ids[n] != ids[a])
    assert np.array_equal(np.bincount(a), np.full(24, 2))
    for i in range(24):  # without replacement while there are enough candidates
        assert len(set(n[a == i])) == 2
    again = sample_pairs(feats, ids, np.random.default_rng(0))
    other = sample_pairs(feats, ids, np.random.default_rng(1))
    assert all(np.array_equal(u, v) for u, v in zip((a, p, n), again))
    assert not np.array_equal(n, other[2]) and np.array_equal(a, other[0])


def test_sample_pairs_draws_negatives_with_the_weights():
    from pretrain.models.multigrain import negative_weights, sample_pairs

    dists = [0.6, 0.9, 1.1, 1.3, 1.5]
    anchor = at_distances(dists, 8)
    x = np.concatenate([anchor, anchor[:1] + 1e-3], axis=0)  # the anchor's second copy, nearly equal
    ids = np.array([0, 1, 2, 3, 4, 5, 0])
    rng = np.random.default_rng(3)
    counts = np.zeros(len(ids))
    draws = 3000
    for _ in range(draws):
        a, _, n = sample_pairs(x, ids, rng)
        counts[n[a == 0]] += 1
    want = negative_weights(x, ids)[0]
    assert counts[5] == 0 and want[5] == 0  # 1.5 away
    np.testing.assert_allclose(counts / draws, want, atol=0.03)


def test_forward_with_in_pass_sampling_trains_every_part():
    """PyNative: sampling inside the differentiated function, grads reach trunk, p, head and beta."""
    import mindspore as ms

    from pretrain.models.multigrain import (MultigrainLoss, RepeatedAugmentationSampler, build_multigrain,
                                            multigrain_forward)

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    net = build_multigrain("multigrain_resnet18", 4)
    net.set_train(True)
    loss_fn = MultigrainLoss()
    batch = next(iter(RepeatedAugmentationSampler(10, 6, seed=0)))
    ids = np.asarray(batch)
    images = np.random.RandomState(1).rand(6, 3, 32, 32).astype(np.float32)
    labels = ms.Tensor((ids % 4).astype(np.int32))
    params = net.trainable_params() + loss_fn.trainable_params()
    rng = np.random.default_rng(0)
    grad_fn = ms.value_and_grad(lambda x, y: multigrain_forward(net, loss_fn, x, y, ids, rng), None, params,
                                has_aux=True)
    (loss, (ce, margin)), grads = grad_fn(ms.Tensor(images), labels)
    assert np.isfinite(float(loss.asnumpy())) and float(margin.asnumpy()) > 0
    assert float(loss.asnumpy()) == pytest.approx(0.5 * float(ce.asnumpy()) + 0.5 * float(margin.asnumpy()), rel=1e-6)
    by_name = {p.name: g.asnumpy() for p, g in zip(params, grads)}
    for name in ("conv1.weight", "layer4.1.conv2.weight", "pool.p", "classifier.weight"):
        assert np.all(np.isfinite(by_name[name])) and np.abs(by_name[name]).max() > 0, name
    assert np.isfinite(by_name["margin.beta"]).all()  # (active negatives - active positives) / active: may be 0


# ---- repeated-augmentation batches ------------------------------------------------------------
def test_repeated_augmentation_batches():
    from pretrain.models.multigrain import RepeatedAugmentationSampler

    sampler = RepeatedAugmentationSampler(20, 12, repeats=3, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    seen = []
    for b in batches:
        assert len(b) == 12
        images = b[::3]
        assert all(b[3 * k:3 * k + 3] == [img] * 3 for k, img in enumerate(images))  # m copies in a row
        seen.extend(images)
    assert len(set(seen)) == len(seen) == 20 and set(seen) == set(range(20))  # each image once per epoch
    assert list(RepeatedAugmentationSampler(20, 12, repeats=3, seed=7)) == batches  # (seed, epoch) decides
    sampler.set_epoch(1)
    assert list(sampler) != batches and sampler.epoch_batches(0) == batches
    assert list(RepeatedAugmentationSampler(20, 12, seed=8)) != batches


def test_repeated_augmentation_last_batch_and_bad_arguments():
    from pretrain.models.multigrain import RepeatedAugmentationSampler

    full = RepeatedAugmentationSampler(11, 9, seed=0)  # 3 images a batch: 3 full, 2 left over
    assert len(full) == 3 and all(len(b) == 9 for b in full)
    kept = RepeatedAugmentationSampler(11, 9, seed=0, drop_last=False)
    batches = list(kept)
    assert len(kept) == 4 and len(batches[-1]) == 6 and batches[:3] == list(full)
    assert sorted(set(i for b in batches for i in b)) == list(range(11))
    for kwargs in ({"batch_size": 10}, {"batch_size": 3}, {"batch_size": 6, "repeats": 1}):
        with pytest.raises(ValueError):
            RepeatedAugmentationSampler(11, **kwargs)
    with pytest.raises(ValueError, match="no full batch"):
        RepeatedAugmentationSampler(2, 9)
