"""Shared fixtures: a tiny MindSpore RingMoE, its checkpoint, and its conversion (made once per run)."""
from __future__ import annotations

from pathlib import Path

import pytest

import benchmarks  # noqa: F401  applies benchmarks/compat.py before any OpenMMLab import


def build_tiny_simmim(seed: int = 0):
    """A tiny RingMoE SimMIM model with deterministic random weights, in PyNative fp32."""
    import mindspore as ms

    from pretrain.models.arch import get_arch
    from pretrain.models.ringmoe import RingMoESimMIM

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(seed)
    net = RingMoESimMIM(get_arch("tiny"))
    net.set_train(False)
    return net


@pytest.fixture(scope="session")
def tiny_simmim():
    return build_tiny_simmim()


@pytest.fixture(scope="session")
def tiny_ms_checkpoint(tiny_simmim, tmp_path_factory) -> Path:
    from pretrain.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ms") / "ringmoe-tiny-step0.ckpt"
    meta = {"arch": tiny_simmim.arch.to_dict(), "config": "tiny"}
    return save_checkpoint(path, tiny_simmim, meta, step=0)


@pytest.fixture(scope="session")
def tiny_converted(tiny_ms_checkpoint, tmp_path_factory) -> Path:
    from converters.ringmoe import convert, save

    out = tmp_path_factory.mktemp("converted") / "ringmoe_tiny.pth"
    save(convert(tiny_ms_checkpoint, "tiny"), out)
    return out
