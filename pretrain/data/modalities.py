"""Per-modality conversion of raw pixels to model inputs in [0, 1], then normalisation.

One function per modality, so that the data pipeline, the demo generator and downstream
configs agree on what a band means. The mean/std used after scaling come from the modality
table in ``pretrain/models/arch.py`` and travel with the checkpoint's metadata.
"""
from __future__ import annotations

import numpy as np

from pretrain.models.arch import Modality


def optical_to_unit(raw: np.ndarray) -> np.ndarray:
    """8-bit RGB [H, W, 3] -> [3, H, W] in [0, 1]."""
    return raw.astype(np.float32).transpose(2, 0, 1) / 255.0


def sar_l1_to_unit(raw: np.ndarray) -> np.ndarray:
    """Complex polarimetric I/Q [H, W, 8] (HH, HV, VH, VV as I/Q pairs) -> [8, H, W] in [0, 1].

    I and Q are signed: scale by the tile's 99.9th percentile of |value| and map [-1, 1] to
    [0, 1], clipping the rare brighter scatterers.
    """
    x = raw.astype(np.float32).transpose(2, 0, 1)
    scale = float(np.percentile(np.abs(x), 99.9)) or 1.0
    return np.clip(0.5 + 0.5 * x / scale, 0.0, 1.0)


def sar_l1_power(raw: np.ndarray) -> np.ndarray:
    """Total power sum over polarisations of |I + jQ|^2: [H, W, 8] I/Q -> [H, W] float32."""
    x = raw.astype(np.float32)
    return (x[..., 0::2] ** 2 + x[..., 1::2] ** 2).sum(-1)


def power_to_target(power: np.ndarray) -> np.ndarray:
    """Total power [H, W] -> the target [1, H, W]: clipped at its 99th percentile, min-max normalised."""
    power = np.minimum(power, np.percentile(power, 99))
    low, high = power.min(), power.max()
    return ((power - low) / (high - low + 1e-12))[None].astype(np.float32)


def sar_l1_total_power(raw: np.ndarray) -> np.ndarray:
    """The physics-informed target: total power sum over polarisations of |I + jQ|^2.

    Clipped at the 99th percentile and min-max normalised, shape [1, H, W]. Used only when
    ``sar_l1_power_target`` is on (a ninth reconstructed channel; the released model has 8).
    The training pipeline computes the power on the crop at the sensor's resolution and
    resamples it before ``power_to_target`` (pretrain/data/augment.py).
    """
    return power_to_target(sar_l1_power(raw))


def sar_l2_to_unit(raw: np.ndarray) -> np.ndarray:
    """Single-band intensity [H, W] (8-bit after the 0.1/99.9 percentile clip) -> [3, H, W]."""
    band = raw.astype(np.float32) / 255.0
    return np.repeat(band[None], 3, axis=0)


def msi_to_unit(raw: np.ndarray) -> np.ndarray:
    """Multispectral [H, W, 4] (B, G, R, NIR; any integer depth) -> [4, H, W] via a 2-98% stretch."""
    x = raw.astype(np.float32).transpose(2, 0, 1)
    low, high = np.percentile(x, (2, 98), axis=(1, 2), keepdims=True)  # one partition for both
    return np.clip((x - low) / np.maximum(high - low, 1e-6), 0.0, 1.0)


TO_UNIT = {"optical": optical_to_unit, "sar_l1": sar_l1_to_unit, "sar_l2": sar_l2_to_unit, "msi": msi_to_unit}


def normalise(unit: np.ndarray, modality: Modality) -> np.ndarray:
    mean = np.asarray(modality.mean, np.float32)[:, None, None]
    std = np.asarray(modality.std, np.float32)[:, None, None]
    return (unit - mean) / std
