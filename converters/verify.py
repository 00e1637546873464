"""``ms2torch --verify``: run the MindSpore model and the converted twin on the same inputs.

For every modality: build the MindSpore RingMoE from the source checkpoint and the PyTorch twin
from the converted tensors, feed both the same fixed input, and compare per-stage features and
expert choices (``converters/parity.py``). Without MindSpore installed only the structural
checks of the conversion itself (every tensor mapped or dropped, every parameter filled with
the right shape) have run, and this module says so.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from converters.parity import TOLERANCE, ParityReport, compare_models

DEFAULT_TOLERANCE = TOLERANCE["base"]


def mindspore_available() -> bool:
    try:
        return importlib.util.find_spec("mindspore") is not None
    except (ImportError, ValueError):
        return False


def tolerance_for(arch: dict) -> float:
    """ringmoe.md: 1e-5 for tiny, 1e-4 for larger configs (longer chains of fp32 rounding)."""
    from pretrain.models.arch import get_arch

    tiny = get_arch("tiny")
    is_tiny = arch["embed_dim"] == tiny.embed_dim and list(arch["depths"]) == list(tiny.depths)
    return TOLERANCE["tiny"] if is_tiny else DEFAULT_TOLERANCE


def _mindspore_arch(meta: dict):
    from pretrain.models.arch import Modality, RingMoEArch

    arch = meta["arch"]
    return RingMoEArch(
        embed_dim=arch["embed_dim"], depths=tuple(arch["depths"]), num_heads=tuple(arch["num_heads"]),
        window_size=max(arch["window_size"]), patch_size=arch["patch_size"], img_size=arch["img_size"],
        mlp_ratio=arch["mlp_ratio"], num_experts=arch["num_experts"],
        modalities=tuple(Modality.from_dict(m) for m in meta["modalities"]),
    )


def _mindspore_params(src, strategy) -> dict:
    """Encoder parameters of the source, read by MindSpore itself for a file (an independent
    reader), or through our merge for per-rank slices (MindSpore cannot merge on CPU)."""
    import mindspore as ms

    if strategy is None:
        return {k[len("encoder."):]: v for k, v in ms.load_checkpoint(str(src)).items() if k.startswith("encoder.")}
    from converters.ringmoe import open_source

    source = open_source(src, strategy)
    try:
        return {name[len("encoder."):]: ms.Parameter(ms.Tensor(_as_float32(source, name)), name=name[len("encoder."):])
                for name in source.shapes() if name.startswith("encoder.")}
    finally:
        source.close()


def _as_float32(source, name: str) -> np.ndarray:
    array = source.read(name)
    if source.dtypes().get(name) == "BFloat16":  # raw 16-bit words: the top half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _load_mindspore_encoder(src, meta: dict, strategy=None):
    import mindspore as ms

    from pretrain.models.ringmoe import RingMoEEncoder

    ms.set_context(mode=ms.PYNATIVE_MODE)
    encoder = RingMoEEncoder(_mindspore_arch(meta))
    not_loaded, _ = ms.load_param_into_net(encoder, _mindspore_params(src, strategy))
    if not_loaded:
        raise RuntimeError(f"the MindSpore model lacks {len(not_loaded)} parameters in {src}: {not_loaded[:3]}")
    encoder.set_train(False)
    return encoder


def _twin(state_dict: dict, meta: dict, modality: str):
    from benchmarks.models.loading import load_state, twin_from_meta

    twin = twin_from_meta(meta, modality, out_norms=False)
    load_state(twin, {k: v.float() for k, v in state_dict.items()}, meta)
    return twin.eval()


def verify(src, state_dict: dict, meta: dict, seed: int = 0, batch: int = 1, tries: int = 3,
           strategy=None) -> list[ParityReport]:
    """Compare the MindSpore model of ``src`` with the twin holding ``state_dict``, per modality.

    A flipped near-tie changes every later feature, so features are compared on an input whose
    routing has no flip: up to ``tries`` fixed inputs per modality, keeping the first clean one.
    """
    encoder = _load_mindspore_encoder(src, meta, strategy)
    size = meta["arch"]["img_size"]
    reports = []
    for index, modality in enumerate(meta["modalities"]):
        twin = _twin(state_dict, meta, modality["name"])
        for attempt in range(tries):
            rng = np.random.default_rng([seed, index, attempt])
            image = rng.standard_normal((batch, modality["channels"], size, size)).astype(np.float32)
            report = compare_models(encoder, twin, image, index)
            if report.flips == 0 and report.near_tie_flips == 0:
                break
        reports.append(report)
    return reports


def passed(reports: list[ParityReport], tolerance: float) -> bool:
    """Features within tolerance on an input with identical routing, for every modality."""
    return all(r.flips == 0 and r.near_tie_flips == 0 and r.max_error <= tolerance for r in reports)
