"""The joint pretraining MoE path against an independent, loop-by-loop reference of the rules.

Rules (ringmoe.md): fp32 router, softmax, top-1 by argmax; capacity ceil(T * 1.2 / 4) per group
(a modality chunk for a specialised router, all tokens for the cross router); a token's slot is
the running count of earlier tokens routed to the same expert; tokens past capacity get exactly
zero from that branch; kept tokens have combine weight 1.0; aux loss 64 * mean(density * proxy)
per router, 0.001 * (cross + mean over modalities of special) per block.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from pretrain.models.arch import get_arch

E = 4


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def reference_group(tokens, router, w1, b1, w2, b2, capacity_factor=1.2):
    """One router group, token by token. Weights in the authors' layout ([E, in, out])."""
    probs = softmax(tokens.astype(np.float64) @ router.T.astype(np.float64))
    choice = probs.argmax(-1)
    cap = math.ceil(len(tokens) * capacity_factor / E)
    counts = np.zeros(E, int)
    out = np.zeros_like(tokens, dtype=np.float64)
    kept = np.zeros(len(tokens), bool)
    for t, e in enumerate(choice):
        slot = counts[e]
        counts[e] += 1
        if slot < cap:
            kept[t] = True
            hidden = gelu_tanh(tokens[t] @ w1[e] + b1[0, e, 0])
            out[t] = hidden @ w2[e] + b2[0, e, 0]
    onehot = np.eye(E)[choice]
    aux = 8**2 * np.mean(onehot.mean(0) * probs.mean(0))
    return out, kept, choice, aux


def expert_weights(ffn):
    return [p.asnumpy() for p in (ffn.mapping.weight, ffn.mapping.bias, ffn.projection.weight, ffn.projection.bias)]


@pytest.fixture(scope="module")
def moe_and_input():
    import mindspore as ms

    from pretrain.models.ringmoe import ModalMoE

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(3)
    arch = get_arch("tiny")
    moe = ModalMoE(arch, 32)
    moe.record_routing = True
    rng = np.random.default_rng(0)
    # Skew every router towards expert 0 so that it overflows and drops tokens.
    for router in list(moe.special_router) + [moe.cross_router]:
        w = rng.standard_normal((E, 32)).astype(np.float32)
        w[0, 0] = 4.0
        router.dense.weight.set_data(ms.Tensor(w))
    x = rng.standard_normal((4 * 2, 16, 32)).astype(np.float32)  # 4 modalities x 2 images x 16 tokens
    x[..., 0] += 1.0
    return moe, x


def test_joint_path_matches_reference_rules(moe_and_input):
    import mindspore as ms

    moe, x = moe_and_input
    out, aux = moe(ms.Tensor(x), None)
    tokens = x.reshape(-1, 32)
    chunk = len(tokens) // 4
    special, special_aux, dropped = [], [], 0
    for m in range(4):
        group = tokens[m * chunk : (m + 1) * chunk]
        o, kept, choice, a = reference_group(group, moe.special_router[m].dense.weight.asnumpy(),
                                             *expert_weights(moe.special_ffn[m]))
        routing = moe.last_routing[f"special{m}"]
        np.testing.assert_array_equal(routing["expert"].asnumpy(), choice)
        np.testing.assert_array_equal(routing["kept"].asnumpy(), kept)
        dropped += int((~kept).sum())
        special.append(o)
        special_aux.append(a)
    cross, kept, choice, cross_aux = reference_group(tokens, moe.cross_router.dense.weight.asnumpy(),
                                                     *expert_weights(moe.cross_ffn))
    np.testing.assert_array_equal(moe.last_routing["cross"]["kept"].asnumpy(), kept)
    dropped += int((~kept).sum())
    w1, b1 = moe.public_ffn.mapping.weight.asnumpy(), moe.public_ffn.mapping.bias.asnumpy()
    w2, b2 = moe.public_ffn.projection.weight.asnumpy(), moe.public_ffn.projection.bias.asnumpy()
    shared = gelu_tanh(tokens @ w1 + b1) @ w2 + b2
    expected = np.concatenate(special) + cross + shared
    assert dropped > 20, "the test input must overflow some experts"
    np.testing.assert_allclose(out.asnumpy().reshape(-1, 32), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert float(aux) == pytest.approx(0.001 * (cross_aux + np.mean(special_aux)), rel=1e-5)


def test_dropped_tokens_get_exactly_zero_from_the_expert_branch(moe_and_input):
    """For a dropped token, special + cross contribute nothing beyond the kept branches."""
    import mindspore as ms

    moe, x = moe_and_input
    tokens = x.reshape(-1, 32)
    group = ms.Tensor(tokens[:32])
    router = moe.special_router[0]
    expert, probs = router(group)
    from pretrain.models.ringmoe import route_slots

    cap = math.ceil(32 * 1.2 / E)
    slot, kept, _ = route_slots(expert, E, cap)
    out = moe.special_ffn[0](group, expert, slot, kept, cap).asnumpy()
    dropped = ~kept.asnumpy()
    assert dropped.any()
    assert np.all(out[dropped] == 0.0)
    assert np.all(np.abs(out[~dropped]).sum(-1) > 0)


def test_twin_capacity_path_matches_reference(moe_and_input):
    """The PyTorch twin applies the same capacity and slot rules when asked to."""
    import torch

    from benchmarks.models.ringmoe import ExpertBank, top1_route

    moe, x = moe_and_input
    tokens = x.reshape(-1, 32)[:32]
    w1, b1, w2, b2 = expert_weights(moe.special_ffn[1])
    router = moe.special_router[1].dense.weight.asnumpy()
    reference, kept_ref, choice_ref, _ = reference_group(tokens, router, w1, b1, w2, b2)
    bank = ExpertBank(E, 32, 128)
    with torch.no_grad():
        bank.fc1.weight.copy_(torch.from_numpy(w1))
        bank.fc1.bias.copy_(torch.from_numpy(b1.reshape(E, -1)))
        bank.fc2.weight.copy_(torch.from_numpy(w2))
        bank.fc2.bias.copy_(torch.from_numpy(b2.reshape(E, -1)))
        t = torch.from_numpy(tokens)
        expert, _, kept = top1_route(t, torch.from_numpy(router), math.ceil(32 * 1.2 / E))
        out = bank(t, expert, kept).numpy()
    np.testing.assert_array_equal(kept.numpy(), kept_ref)
    np.testing.assert_array_equal(expert.numpy(), choice_ref)
    assert (~kept_ref).any()
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
