"""Expert usage per block, measured by running the converted twin on calibration images.

``ms2torch --routing-stats [DATA_ROOT]`` stores the counts in the checkpoint's meta, where the
``top_expert`` reduction (keep each block's most-routed experts as dense FFNs) reads them.
Calibration images come from an image folder per modality (the pretraining layout,
``<root>/<modality>/*.png|tif``) or, without one, from generated demo data.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def _images(root: Path, meta: dict, modality: dict, count: int, seed: int) -> np.ndarray:
    from pretrain.data.folder import ModalityFolder
    from pretrain.models.arch import Modality

    folder = ModalityFolder(root, Modality.from_dict(modality), meta["arch"]["img_size"])
    rng = np.random.default_rng(seed)
    return np.stack([folder.sample(rng)[0] for _ in range(count)]).astype(np.float32)


def collect_routing_stats(state_dict: dict, meta: dict, data_root: str | Path | None = None,
                          images: int = 16, seed: int = 0, batch: int = 4) -> dict:
    """{modality: {'images', 'source', 'blocks': {'layers.s.blocks.b': {'special': [..], 'cross': [..]}}}}."""
    import torch

    from benchmarks.models.loading import load_state, twin_from_meta

    with tempfile.TemporaryDirectory() as tmp:
        if data_root is None:
            from pretrain.data.synthetic import generate_pretrain_data

            root = generate_pretrain_data(Path(tmp) / "calibration", num_per_modality=4, seed=seed)
            source = "generated demo data (pretrain/data/synthetic.py)"
        else:
            root, source = Path(data_root), str(data_root)
        stats = {}
        for modality in meta["modalities"]:
            twin = twin_from_meta(meta, modality["name"], out_norms=False)
            load_state(twin, {k: v.float() for k, v in state_dict.items()}, meta)
            twin.eval().record_routing = True
            experts = meta["arch"]["num_experts"]
            counts: dict[str, dict[str, np.ndarray]] = {}
            pixels = _images(root, meta, modality, images, seed)
            with torch.no_grad():
                for start in range(0, images, batch):
                    twin.forward_features(torch.from_numpy(pixels[start : start + batch]))
                    blocks = [(f"layers.{s}.blocks.{b}", blk.ffn.last_routing)
                              for s, stage in enumerate(twin.layers) for b, blk in enumerate(stage.blocks)]
                    for name, routing in blocks:
                        entry = counts.setdefault(name, {"special": np.zeros(experts, int), "cross": np.zeros(experts, int)})
                        for part in ("special", "cross"):
                            entry[part] += np.bincount(routing[part]["expert"].numpy(), minlength=experts)
            stats[modality["name"]] = {
                "images": images, "source": source,
                "blocks": {k: {p: v.tolist() for p, v in parts.items()} for k, parts in counts.items()},
            }
    return stats
