"""Read a scene and convert it to the stored form of one modality.

The stored form is exactly what ``pretrain.data.folder.ModalityFolder.raw()`` returns for that
modality, so the training transforms in ``pretrain/data/modalities.py`` apply unchanged:

  optical  uint8   [H, W, 3]  RGB. 8-bit sources are kept; deeper sources get a per-scene,
                              per-band percentile stretch (default 2/98) to 0..255.
  sar_l1   float32 [H, W, 8]  I/Q per polarisation (HH, HV, VH, VV), the raw values. No scaling:
                              ``sar_l1_to_unit`` divides each tile by its 99.9th percentile of
                              |I|, |Q| and the total-power target is min-max normalised, so any
                              global scale is a no-op at training time and storing raw keeps it.
  sar_l2   uint8   [H, W]     one intensity band in dB, clipped at the per-scene 0.1/99.9
                              percentiles and scaled to 0..255. Stored single-band: the
                              replication to 3 channels is ``sar_l2_to_unit``'s job (storing 3
                              copies would triple the size and break that function). 8-bit
                              sources are taken as already converted and kept.
  msi      uint8   [H, W, 4]  B, G, R, NIR with a per-scene, per-band percentile stretch
                              (default 2/98, the percentiles ``msi_to_unit`` uses per tile).

Percentiles are computed over valid pixels only. A pixel is nodata when all its (selected)
source bands are zero or any is not finite; nodata pixels are stored as 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
SUFFIXES = IMAGE_SUFFIXES + TIFF_SUFFIXES

# modality -> (stored channels, stored dtype, model channels)
STORED = {
    "optical": (3, "uint8", 3),
    "sar_l1": (8, "float32", 8),
    "sar_l2": (1, "uint8", 3),
    "msi": (4, "uint8", 4),
}


class SceneError(ValueError):
    """A scene that cannot be read or converted (counted as "unreadable")."""


@dataclass
class ConvertParams:
    bands: list[int] | None = None  # 0-based source bands to use, in order; None = the default ones
    stretch: tuple[float, float] = (2.0, 98.0)  # optical (>8-bit) and msi, per scene and band
    sar_l2_clip: tuple[float, float] = (0.1, 99.9)
    sar_l2_db: bool = True  # intensity or amplitude -> dB before the clip (affine-invariant after)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"bands": self.bands, "stretch": list(self.stretch), "sar_l2_clip": list(self.sar_l2_clip),
                "sar_l2_db": self.sar_l2_db}


def _band_last(array: np.ndarray, axes: str) -> np.ndarray:
    """Put Y, X first and the single remaining (band) axis last, using tifffile's axes string."""
    keep = [i for i, a in enumerate(axes) if a in "YX" or array.shape[i] != 1]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "Y" not in axes or "X" not in axes or len(axes) > 3:
        raise SceneError(f"unsupported TIFF layout (axes {axes!r}, shape {array.shape})")
    order = [axes.index("Y"), axes.index("X")] + [i for i, a in enumerate(axes) if a not in "YX"]
    return np.ascontiguousarray(array.transpose(order))


def read_scene(path: Path) -> np.ndarray:
    """[H, W] or [H, W, bands] of a PNG/JPEG or (multi-band, possibly complex) TIFF/GeoTIFF.

    GeoTIFFs are read with tifffile (rasterio is not installed): pixels only, the georeferencing
    tags are not carried into the tiles. The whole scene is read into memory.
    """
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return _band_last(series.asarray(), series.axes)
        from PIL import Image

        with Image.open(path) as image:
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            return np.asarray(image)
    except SceneError:
        raise
    except Exception as err:  # any decoder failure: the scene is unreadable, the run goes on
        raise SceneError(f"cannot read: {type(err).__name__}: {err}".splitlines()[0]) from err


def _select(scene: np.ndarray, bands: list[int] | None) -> np.ndarray:
    scene = scene if scene.ndim == 3 else scene[..., None]
    if bands is None:
        return scene
    if max(bands) >= scene.shape[-1] or min(bands) < 0:
        raise SceneError(f"band selection {bands} out of range for {scene.shape[-1]} bands")
    return scene[..., bands]


def valid_mask(bands: np.ndarray) -> np.ndarray:
    """[H, W] True where a pixel has data: some band non-zero and all bands finite."""
    finite = np.isfinite(bands).all(-1) if np.iscomplexobj(bands) or bands.dtype.kind == "f" else True
    return (bands != 0).any(-1) & finite


def _stretch(bands: np.ndarray, valid: np.ndarray, low_high: tuple[float, float]) -> np.ndarray:
    """Per-band linear stretch between the scene's percentiles (valid pixels) to uint8."""
    out = np.zeros(bands.shape, np.uint8)
    if not valid.any():
        return out
    for c in range(bands.shape[-1]):
        values = bands[..., c].astype(np.float64)
        low, high = np.percentile(values[valid], low_high)
        scaled = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0)
        out[..., c] = np.where(valid, np.round(255 * scaled), 0).astype(np.uint8)
    return out


def to_optical(scene: np.ndarray, p: ConvertParams) -> tuple[np.ndarray, np.ndarray]:
    bands = _select(scene, p.bands)
    if p.bands is None:  # grey -> RGB, grey+alpha -> grey, RGBA -> RGB
        bands = {1: bands[..., [0, 0, 0]], 2: bands[..., [0, 0, 0]]}.get(bands.shape[-1], bands[..., :3])
    if bands.shape[-1] != 3:
        raise SceneError(f"optical needs 3 bands, selection has {bands.shape[-1]}")
    valid = valid_mask(bands)
    if bands.dtype == np.uint8:
        return np.where(valid[..., None], bands, 0).astype(np.uint8), valid
    return _stretch(bands, valid, p.stretch), valid


def to_sar_l1(scene: np.ndarray, p: ConvertParams) -> tuple[np.ndarray, np.ndarray]:
    """4 complex polarisations (HH, HV, VH, VV) or 8 real I/Q bands -> float32 [H, W, 8]."""
    bands = _select(scene, p.bands)
    if np.iscomplexobj(bands):
        if bands.shape[-1] != 4:
            raise SceneError(f"sar_l1 needs 4 complex polarisations (HH, HV, VH, VV), got {bands.shape[-1]}")
        iq = np.stack([bands.real, bands.imag], -1).reshape(bands.shape[:2] + (8,))
    elif bands.shape[-1] == 8:
        iq = bands
    else:
        raise SceneError(f"sar_l1 needs 4 complex bands or 8 I/Q bands, got {bands.shape[-1]} {bands.dtype} bands")
    iq = iq.astype(np.float32)
    valid = valid_mask(iq)
    return np.where(valid[..., None], iq, 0).astype(np.float32), valid


def to_sar_l2(scene: np.ndarray, p: ConvertParams) -> tuple[np.ndarray, np.ndarray]:
    bands = _select(scene, p.bands)
    band = bands[..., 0]  # one intensity band: the first selected (e.g. --bands 1 for VH)
    if np.iscomplexobj(band):
        band = np.abs(band) ** 2
    valid = valid_mask(band[..., None])
    if band.dtype == np.uint8:  # already the product form (as the demo generator writes it)
        return np.where(valid, band, 0).astype(np.uint8), valid
    values = band.astype(np.float64)
    valid &= values > 0 if p.sar_l2_db else True
    if p.sar_l2_db:
        values = 10 * np.log10(np.where(valid, values, 1.0))
    return _stretch(values[..., None], valid, p.sar_l2_clip)[..., 0], valid


def to_msi(scene: np.ndarray, p: ConvertParams) -> tuple[np.ndarray, np.ndarray]:
    bands = _select(scene, p.bands)
    if bands.shape[-1] != 4:
        raise SceneError(f"msi needs 4 bands (B, G, R, NIR), selection has {bands.shape[-1]}; use --bands")
    valid = valid_mask(bands)
    return _stretch(bands, valid, p.stretch), valid


CONVERTERS = {"optical": to_optical, "sar_l1": to_sar_l1, "sar_l2": to_sar_l2, "msi": to_msi}


def convert_scene(modality: str, scene: np.ndarray, params: ConvertParams) -> tuple[np.ndarray, np.ndarray]:
    """(stored array, valid mask [H, W]) of a whole scene."""
    if modality not in CONVERTERS:
        raise ValueError(f"unknown modality {modality!r}; choose from {sorted(CONVERTERS)}")
    return CONVERTERS[modality](scene, params)
