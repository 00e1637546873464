"""Expert routing of the converted twin on calibration images, accumulated per block.

Two users share this collection code:

- ``ms2torch --routing-stats [DATA_ROOT]`` stores the expert counts in the checkpoint's meta,
  where the ``top_expert`` reduction (keep each block's most-routed experts as dense FFNs)
  reads them (``collect_routing_stats``; downstream semantics, no capacity limit);
- ``benchmarks/routing.py`` analyses the routing (load, balance, capacity drops, entropy) and
  plots it (``RoutingRecorder`` and ``BankStats.summary``; optionally with Switch capacity).

Calibration images come from an image folder per modality (the pretraining layout,
``<root>/<modality>/*.png|tif``) or, without one, from generated demo data. Nothing here
imports matplotlib or OpenMMLab: the converter stays light.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

# The two routed expert banks of a block: the modality's specialised experts and the
# cross-modal (collaborative) experts. The shared FFN is not routed.
BANKS = ("special", "cross")


def calibration_images(root: str | Path, meta: dict, modality: dict, count: int, seed: int) -> np.ndarray:
    """[count, C, S, S] normalised random crops (pretraining size) of ``root/<modality>/*``."""
    from pretrain.data.folder import ModalityFolder
    from pretrain.models.arch import Modality

    folder = ModalityFolder(Path(root), Modality.from_dict(modality), meta["arch"]["img_size"])
    rng = np.random.default_rng(seed)
    return np.stack([folder.sample(rng)[0] for _ in range(count)]).astype(np.float32)


@dataclass
class BankStats:
    """One router's decisions over many tokens (one block, one bank, one modality)."""

    num_experts: int
    counts: np.ndarray = field(init=False)  # tokens whose top-1 is each expert (before capacity)
    kept: np.ndarray = field(init=False)  # of those, tokens inside the expert's capacity
    prob_sum: np.ndarray = field(init=False)  # sum of router probabilities (Switch density proxy)
    entropy_sum: float = 0.0  # nats, summed over tokens
    top1_sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.num_experts, np.int64)
        self.kept = np.zeros(self.num_experts, np.int64)
        self.prob_sum = np.zeros(self.num_experts, np.float64)

    def add(self, expert, probs, kept) -> None:
        """Add one forward call's routing (torch tensors: expert [T], probs [T, E], kept [T])."""
        expert = expert.numpy()
        self.counts += np.bincount(expert, minlength=self.num_experts)
        self.kept += np.bincount(expert[kept.numpy()], minlength=self.num_experts)
        p = probs.double()
        self.prob_sum += p.sum(0).numpy()
        self.entropy_sum += float(-(p * p.clamp_min(1e-30).log()).sum())
        self.top1_sum += float(p.max(-1).values.sum())

    @property
    def tokens(self) -> int:
        return int(self.counts.sum())

    def summary(self) -> dict:
        """Counts, load and balance measures of this router (JSON-ready)."""
        n, e = max(self.tokens, 1), self.num_experts
        load = self.counts / n
        proxy = self.prob_sum / n
        return {
            "counts": self.counts.tolist(),
            "kept": self.kept.tolist(),
            "load": load.tolist(),
            # std/mean of the per-expert load: 0 when balanced, sqrt(E-1) when one expert takes all.
            "load_cv": float(load.std() / load.mean()) if load.mean() > 0 else 0.0,
            # Share of the most-routed expert: the tokens that the 'top_expert' reduction serves exactly.
            "top_load": float(load.max()),
            # Switch Transformer's balance loss E * sum_e(f_e * P_e): 1.0 when balanced, E at worst.
            "switch_aux": float(e * (load * proxy).sum()),
            "dropped_fraction": float(1.0 - self.kept.sum() / n),
            "entropy": self.entropy_sum / n,
            "mean_top1_prob": self.top1_sum / n,
        }


def block_names(twin) -> list[str]:
    """``layers.s.blocks.b`` of every block, in forward order (the order of ``twin.routing()``)."""
    return [f"layers.{s}.blocks.{b}" for s, stage in enumerate(twin.layers) for b in range(len(stage.blocks))]


class RoutingRecorder:
    """Accumulates the routing of one twin's forward calls, per block and bank."""

    def __init__(self, twin):
        experts = twin.arch["num_experts"]
        self.blocks = {name: {bank: BankStats(experts) for bank in BANKS} for name in block_names(twin)}

    def add(self, routing: list[dict]) -> None:
        """Add ``twin.routing()`` of the last forward (one dict per block)."""
        for entry, banks in zip(routing, self.blocks.values()):
            for bank, stats in banks.items():
                stats.add(entry[bank]["expert"], entry[bank]["probs"], entry[bank]["kept"])

    def counts(self) -> dict:
        """{block: {'special': [...], 'cross': [...]}}: the meta's ``routing_stats`` layout."""
        return {name: {bank: s.counts.tolist() for bank, s in banks.items()} for name, banks in self.blocks.items()}


def load_twin(state_dict: dict, meta: dict, modality: str):
    """The full-MoE twin of one modality, loaded with the coverage-checked loader, in eval mode."""
    from benchmarks.models.loading import load_state, twin_from_meta

    twin = twin_from_meta(meta, modality, out_norms=False)
    load_state(twin, {k: v.float() for k, v in state_dict.items()}, meta)
    return twin.eval()


def record_routing(twin, pixels: np.ndarray, batch: int = 4, capacity_factor: float | None = None) -> RoutingRecorder:
    """Run ``pixels`` [N, C, H, W] through ``twin`` ``batch`` images per call; return the routing.

    ``capacity_factor`` None is the downstream semantics (nothing dropped). A number applies
    Switch capacity ceil(T * factor / E) per router, where T is the tokens of one forward call
    (``batch`` images of this modality): dropped tokens get zero from that bank, so later blocks
    see the capacity-limited features, as in pretraining.
    """
    import torch

    recorder = RoutingRecorder(twin)
    twin.record_routing, twin.capacity_factor = True, capacity_factor
    try:
        with torch.no_grad():
            for start in range(0, len(pixels), batch):
                twin.forward_features(torch.from_numpy(pixels[start : start + batch]))
                recorder.add(twin.routing())
    finally:
        twin.record_routing, twin.capacity_factor = False, None
    return recorder


@contextlib.contextmanager
def calibration_root(data_root: str | Path | None, seed: int = 0) -> Iterator[tuple[Path, str]]:
    """(image root in the pretraining layout, its description): ``data_root``, or generated demo
    data (4 tiles per modality, in a temporary folder removed on exit)."""
    if data_root is not None:
        yield Path(data_root), str(data_root)
        return
    from pretrain.data.synthetic import generate_pretrain_data

    with tempfile.TemporaryDirectory() as tmp:
        root = generate_pretrain_data(Path(tmp) / "calibration", num_per_modality=4, seed=seed)
        yield root, "generated demo data (pretrain/data/synthetic.py)"


def collect_routing_stats(state_dict: dict, meta: dict, data_root: str | Path | None = None,
                          images: int = 16, seed: int = 0, batch: int = 4) -> dict:
    """{modality: {'images', 'source', 'blocks': {'layers.s.blocks.b': {'special': [..], 'cross': [..]}}}}."""
    stats = {}
    with calibration_root(data_root, seed) as (root, source):
        for modality in meta["modalities"]:
            twin = load_twin(state_dict, meta, modality["name"])
            pixels = calibration_images(root, meta, modality, images, seed)
            recorder = record_routing(twin, pixels, batch)
            stats[modality["name"]] = {"images": images, "source": source, "blocks": recorder.counts()}
    return stats
