"""RingMoE architecture specification: plain Python, no framework imports.

Shared vocabulary of the three places an architecture lives (MindSpore model, PyTorch twin,
conversion rules): the named configs of ``../shared/design/ringmoe.md``, the modality table, and
an exact parameter count that allocates nothing (so ``giant`` can be counted on a laptop).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Modality:
    """One input modality: its own patch embedding, specialised experts and decoder."""

    name: str
    channels: int
    bands: tuple[str, ...]
    # Normalisation applied by the data pipeline to values scaled to [0, 1].
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "channels": self.channels,
            "bands": list(self.bands),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Modality":
        return cls(d["name"], int(d["channels"]), tuple(d["bands"]), tuple(d["mean"]), tuple(d["std"]))


# The released layout (ringmoe.md): index order is the order of patch_embed{m}, special_ffn.{m}
# and decoder_{m} in the authors' checkpoints. SAR-L1 keeps the released 8 channels; the
# optional total-power channel is a pretraining target option, not an input band.
DEFAULT_MODALITIES: tuple[Modality, ...] = (
    Modality("optical", 3, ("R", "G", "B"), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    Modality(
        "sar_l1",
        8,
        ("HH_I", "HH_Q", "HV_I", "HV_Q", "VH_I", "VH_Q", "VV_I", "VV_Q"),
        (0.5,) * 8,
        (0.25,) * 8,
    ),
    Modality("sar_l2", 3, ("I", "I", "I"), (0.5,) * 3, (0.25,) * 3),
    Modality("msi", 4, ("B", "G", "R", "NIR"), (0.5,) * 4, (0.25,) * 4),
)


@dataclass(frozen=True)
class RingMoEArch:
    """Hyper-parameters of a RingMoE backbone (Swin with modal MoE FFNs)."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int = 12
    patch_size: int = 4
    img_size: int = 192
    mlp_ratio: int = 4
    num_experts: int = 4  # per router: specialised (per modality) and cross
    capacity_factor: float = 1.2
    # The released config says expert_num=8 although each router has 4 experts; the Switch
    # load-balancing loss is scaled by expert_num**2, so the authors' aux loss uses 64.
    aux_loss_experts: int = 8
    aux_loss_weight: float = 0.001
    mask_patch_size: int = 32
    mask_ratio: float = 0.6
    moe: bool = True  # False: one dense FFN per block (the "compressed to 1B" layout)
    # The authors' data code computes a SAR-L1 total-power channel, but the released model
    # reconstructs only the 8 input channels. True adds it as a ninth reconstructed channel.
    sar_l1_power_target: bool = False
    modalities: tuple[Modality, ...] = field(default=DEFAULT_MODALITIES)

    # ---- derived quantities -------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def stage_dim(self, stage: int) -> int:
        return self.embed_dim * 2**stage

    def stage_resolution(self, stage: int, img_size: int | None = None) -> int:
        return (img_size or self.img_size) // self.patch_size // 2**stage

    def stage_window(self, stage: int, img_size: int | None = None) -> int:
        """Swin V1 rule: a map no larger than the window uses the whole map as its window."""
        return min(self.window_size, self.stage_resolution(stage, img_size))

    def stage_shifts(self, stage: int, img_size: int | None = None) -> bool:
        """Odd blocks shift by window/2 only where the map is larger than the window."""
        return self.stage_resolution(stage, img_size) > self.window_size

    @property
    def num_features(self) -> int:
        return self.stage_dim(self.num_stages - 1)

    @property
    def head_dims(self) -> tuple[int, ...]:
        return tuple(self.stage_dim(s) // h for s, h in enumerate(self.num_heads))

    def reconstructed_channels(self, modality: int) -> int:
        """Channels the SimMIM decoder of a modality reconstructs (inputs + optional targets)."""
        m = self.modalities[modality]
        return m.channels + int(self.sar_l1_power_target and m.name == "sar_l1")

    def modality_index(self, name: str) -> int:
        for i, m in enumerate(self.modalities):
            if m.name == name:
                return i
        raise KeyError(f"unknown modality {name!r}; known: {[m.name for m in self.modalities]}")

    def replace(self, **changes) -> "RingMoEArch":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["depths"] = list(self.depths)
        d["num_heads"] = list(self.num_heads)
        d["modalities"] = [m.to_dict() for m in self.modalities]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RingMoEArch":
        d = dict(d)
        d["depths"] = tuple(d["depths"])
        d["num_heads"] = tuple(d["num_heads"])
        d["modalities"] = tuple(Modality.from_dict(m) for m in d["modalities"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


ARCHS: dict[str, RingMoEArch] = {
    "tiny": RingMoEArch(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
    "base": RingMoEArch(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "giant": RingMoEArch(embed_dim=448, depths=(2, 2, 18, 2), num_heads=(14, 28, 56, 112)),
}


def get_arch(name: str) -> RingMoEArch:
    try:
        return ARCHS[name]
    except KeyError:
        raise KeyError(f"unknown RingMoE config {name!r}; known: {sorted(ARCHS)}") from None


# ---- exact parameter count, nothing allocated ---------------------------------------------
def _ffn_params(dim: int, hidden: int) -> int:
    return dim * hidden + hidden + hidden * dim + dim


def _block_params(arch: RingMoEArch, stage: int) -> int:
    c = arch.stage_dim(stage)
    w = arch.stage_window(stage)
    hidden = c * arch.mlp_ratio
    n = 2 * 2 * c  # norm1, norm2
    n += 4 * (c * c + c)  # q, k, v, proj
    n += (2 * w - 1) ** 2 * arch.num_heads[stage]  # relative position bias table
    n += _ffn_params(c, hidden)  # shared (public) FFN: present in both layouts
    if arch.moe:
        experts = arch.num_experts * _ffn_params(c, hidden)
        router = arch.num_experts * c
        n += len(arch.modalities) * (experts + router)  # specialised experts + routers
        n += experts + router  # cross-modal experts + router
    return n


def backbone_param_count(arch: RingMoEArch) -> int:
    """Parameters of the encoder without the mask token and the decoders (ringmoe.md)."""
    c0 = arch.embed_dim
    p = arch.patch_size
    n = sum(c0 * m.channels * p * p + c0 + 2 * c0 for m in arch.modalities)  # conv + LN
    for s, depth in enumerate(arch.depths):
        n += depth * _block_params(arch, s)
        if s < arch.num_stages - 1:
            c = arch.stage_dim(s)
            n += 4 * c * 2 * c + 2 * 2 * c  # reduction (no bias) + LN
    n += 2 * arch.num_features  # final norm
    return n


def activated_param_count(arch: RingMoEArch) -> int:
    """Parameters one token of one modality touches: one specialised and one cross expert."""
    dense = backbone_param_count(arch.replace(moe=False))
    c0, p = arch.embed_dim, arch.patch_size
    # Only one patch embedding is used per token.
    dense -= sum(c0 * m.channels * p * p + 3 * c0 for m in arch.modalities[1:])
    for s, depth in enumerate(arch.depths):
        c = arch.stage_dim(s)
        dense += depth * 2 * (_ffn_params(c, c * arch.mlp_ratio) + arch.num_experts * c)
    return dense


def capacity(tokens: int, capacity_factor: float, num_experts: int) -> int:
    """Switch capacity of one router group, exactly as the authors compute it."""
    return math.ceil(tokens * capacity_factor / num_experts)
