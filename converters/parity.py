"""Feature and routing parity between the MindSpore RingMoE and its PyTorch twin.

The definition of ``../shared/design/ringmoe.md``: in fp32, on the stage outputs before patch
merging and the final norm, max |difference| / max |reference| per output; and identical expert
choices except where the reference's top-1/top-2 router-probability margin is below 1e-5 (a
near-tie). Flips are counted and reported, never hidden: a flipped near-tie changes later
features, so feature tolerances only mean something on inputs with no flip.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NEAR_TIE_MARGIN = 1e-5
TOLERANCE = {"tiny": 1e-5, "base": 1e-4}


@dataclass
class ParityReport:
    modality: str
    feature_errors: list[float] = field(default_factory=list)  # per stage, then the final norm
    tokens_routed: int = 0
    flips: int = 0  # different experts where the reference was decisive
    near_tie_flips: int = 0  # different experts at a reference near-tie
    near_ties: int = 0  # near-ties in the reference, flipped or not

    @property
    def max_error(self) -> float:
        return max(self.feature_errors)

    def line(self) -> str:
        errs = " ".join(f"{e:.1e}" for e in self.feature_errors)
        return (f"{self.modality:8s} rel. error per stage+final [{errs}]  tokens routed {self.tokens_routed}, "
                f"flips {self.flips}, near-tie flips {self.near_tie_flips} (near-ties {self.near_ties})")


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(reference - other).max() / max(np.abs(reference).max(), 1e-30))


def compare_routing(report: ParityReport, ms_expert: np.ndarray, ms_probs: np.ndarray, twin_expert: np.ndarray) -> None:
    top2 = np.sort(ms_probs, axis=-1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) < NEAR_TIE_MARGIN
    differ = ms_expert != twin_expert
    report.tokens_routed += len(ms_expert)
    report.near_ties += int(tie.sum())
    report.flips += int((differ & ~tie).sum())
    report.near_tie_flips += int((differ & tie).sum())


def compare_models(ms_encoder, twin, image: np.ndarray, modality_index: int) -> ParityReport:
    """Run both single-modality forwards on ``image`` and compare features and routing.

    ``ms_encoder``: ``pretrain.models.ringmoe.RingMoEEncoder``; ``twin``: ``RingMoE`` built for
    the same modality with ``out_norms=False`` and converted weights loaded.
    """
    import mindspore as ms
    import torch

    name = twin.modality
    report = ParityReport(name)
    ms_encoder.set_record_routing(True)
    try:
        outs, final, _ = ms_encoder(ms.Tensor(image), modality_index)
        ms_routing = ms_encoder.routing()
    finally:
        ms_encoder.set_record_routing(False)
    twin.eval()
    twin.record_routing = True
    try:
        with torch.no_grad():
            twin_outs, twin_final = twin.forward_features(torch.from_numpy(image))
        twin_routing = twin.routing()
    finally:
        twin.record_routing = False
    for ref, (tokens, _) in zip(outs, twin_outs):
        report.feature_errors.append(relative_error(ref.asnumpy(), tokens.numpy()))
    report.feature_errors.append(relative_error(final.asnumpy(), twin_final.numpy()))
    for ms_block, twin_block in zip(ms_routing, twin_routing):
        for ms_key, twin_key in ((f"special{modality_index}", "special"), ("cross", "cross")):
            compare_routing(report, ms_block[ms_key]["expert"].asnumpy(), ms_block[ms_key]["probs"].asnumpy(),
                            twin_block[twin_key]["expert"].numpy())
    return report
