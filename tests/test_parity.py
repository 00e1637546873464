"""Parity between the MindSpore RingMoE and the PyTorch twin after conversion (ringmoe.md)."""
from __future__ import annotations

import numpy as np
import pytest

from converters.parity import TOLERANCE, compare_models
from pretrain.models.arch import get_arch

MODALITIES = [m.name for m in get_arch("tiny").modalities]


@pytest.fixture(scope="module")
def twins(tiny_converted):
    from benchmarks.models.loading import load_pretrained
    from benchmarks.models.ringmoe import RingMoE

    built = {}
    for name in MODALITIES:
        twin = RingMoE(modality=name, window_size=[12, 12, 12, 6], out_norms=False)
        load_pretrained(twin, tiny_converted)
        built[name] = twin
    return built


@pytest.mark.parametrize("index,name", list(enumerate(MODALITIES)))
def test_tiny_features_and_routing_match(tiny_simmim, twins, index, name):
    channels = get_arch("tiny").modalities[index].channels
    image = np.random.default_rng(100 + index).standard_normal((2, channels, 192, 192)).astype(np.float32)
    report = compare_models(tiny_simmim.encoder, twins[name], image, index)
    print(report.line())
    # Every token of every block was compared: 2 images x (2304+576+144+36) tokens x 2 blocks
    # per stage, once for the specialised and once for the cross router.
    assert report.tokens_routed == 2 * 2 * 2 * (2304 + 576 + 144 + 36)
    assert report.flips == 0
    assert report.near_tie_flips == 0  # features below are only comparable without flips
    assert len(report.feature_errors) == 5
    assert report.max_error <= TOLERANCE["tiny"], report.line()


def test_parity_detects_a_wrong_weight(tiny_simmim, tiny_converted):
    """The comparison can fail: perturb one converted expert and the report must show it."""
    import torch

    from benchmarks.models.loading import load_pretrained
    from benchmarks.models.ringmoe import RingMoE

    twin = RingMoE(modality="optical", window_size=[12, 12, 12, 6], out_norms=False)
    load_pretrained(twin, tiny_converted)
    with torch.no_grad():
        twin.layers[1].blocks[0].ffn.cross_experts.fc1.weight[2].mul_(1.01)
        twin.layers[0].blocks[1].ffn.modal_routers["optical"].weight.mul_(-1)
    image = np.random.default_rng(7).standard_normal((1, 3, 192, 192)).astype(np.float32)
    report = compare_models(tiny_simmim.encoder, twin, image, 0)
    assert report.flips > 0
    assert report.max_error > TOLERANCE["tiny"]
