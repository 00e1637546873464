"""Generate small multi-modal pretraining data in the file formats of real sensor products.

One folder per modality, the formats an image-folder pipeline reads from real data:

  optical/*.png   8-bit RGB
  sar_l1/*.tif    float32 [H, W, 8]: HH, HV, VH, VV as I/Q pairs (single-look complex)
  sar_l2/*.png    8-bit single-band intensity (already clipped at 0.1/99.9 percentiles)
  msi/*.tif       uint16 [H, W, 4]: B, G, R, NIR

Scenes have structure (fields, buildings, roads, water) rendered per sensor physics in a
simplified way: SAR is speckled, water is dark in SAR and NIR, vegetation is bright in NIR.
So masked reconstruction has something to learn. ``python -m pretrain.data.synthetic --help``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

MARKER = "synthetic.json"
LAND, VEGETATION, BUILDING, ROAD, WATER = range(5)


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A land-cover map [size, size] with classes LAND..WATER."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for _ in range(4):  # smooth blobs decide vegetation vs land
        cy, cx, s = rng.random(), rng.random(), 0.1 + 0.2 * rng.random()
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    classes = np.where(field > np.median(field), VEGETATION, LAND).astype(np.uint8)
    if rng.random() < 0.5:  # a lake
        cy, cx, r = rng.random(), rng.random(), 0.1 + 0.15 * rng.random()
        classes[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = WATER
    for _ in range(rng.integers(1, 3)):  # roads
        if rng.random() < 0.5:
            y = rng.integers(0, size - 6)
            classes[y : y + rng.integers(3, 7)] = ROAD
        else:
            x = rng.integers(0, size - 6)
            classes[:, x : x + rng.integers(3, 7)] = ROAD
    for _ in range(rng.integers(3, 9)):  # buildings
        h, w = rng.integers(size // 16, size // 6, size=2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        classes[y : y + h, x : x + w] = BUILDING
    return classes


# Per-class reflectance of each band, roughly like the real sensors.
_RGB = np.array([[170, 150, 120], [60, 120, 50], [190, 80, 70], [110, 110, 110], [30, 60, 110]], np.float32)
_MSI = np.array([[900, 1100, 1400, 2200], [500, 800, 600, 4200], [1300, 1200, 1500, 1700],
                 [1100, 1100, 1100, 1200], [700, 600, 400, 150]], np.float32)
_SAR = np.array([[0.25, 0.05, 0.05, 0.2], [0.3, 0.15, 0.15, 0.25], [1.5, 0.3, 0.3, 1.2],
                 [0.08, 0.02, 0.02, 0.06], [0.01, 0.003, 0.003, 0.01]], np.float32)  # HH HV VH VV


def _texture(rng: np.random.Generator, size: int, amount: float) -> np.ndarray:
    return 1.0 + amount * rng.standard_normal((size, size)).astype(np.float32)


def render_optical(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rgb = _RGB[classes] * _texture(rng, classes.shape[0], 0.08)[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def render_msi(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bands = _MSI[classes] * _texture(rng, classes.shape[0], 0.05)[..., None]
    return np.clip(bands, 0, 65535).astype(np.uint16)


def render_sar_l1(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Single-look complex: amplitude sqrt(sigma0) times circular Gaussian speckle, per polarisation."""
    sigma = _SAR[classes]  # [H, W, 4]
    speckle = rng.standard_normal(sigma.shape + (2,)).astype(np.float32) / np.sqrt(2)
    iq = np.sqrt(sigma)[..., None] * speckle  # [H, W, 4, 2]
    return iq.reshape(classes.shape + (8,)).astype(np.float32)


def render_sar_l2(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multi-looked VV intensity in dB, clipped at the 0.1/99.9 percentiles, to 8 bits."""
    sigma = _SAR[classes][..., 3] * rng.gamma(4.0, 0.25, classes.shape).astype(np.float32)
    db = 10 * np.log10(sigma + 1e-6)
    low, high = np.percentile(db, [0.1, 99.9])
    return np.round(255 * np.clip((db - low) / (high - low), 0, 1)).astype(np.uint8)


def _write(path: Path, array: np.ndarray) -> None:
    if path.suffix == ".png":
        from PIL import Image

        Image.fromarray(array).save(path)
    else:
        import tifffile

        tifffile.imwrite(path, array, photometric="minisblack", planarconfig="contig")


RENDERERS = {
    "optical": (render_optical, ".png"),
    "sar_l1": (render_sar_l1, ".tif"),
    "sar_l2": (render_sar_l2, ".png"),
    "msi": (render_msi, ".tif"),
}


def generate_pretrain_data(root: str | Path, num_per_modality: int = 16, size: int = 256, seed: int = 0) -> Path:
    """Write the four modality folders under ``root`` (atomically); reuse an identical existing set."""
    root = Path(root)
    params = {"num_per_modality": num_per_modality, "size": size, "seed": seed, "version": 1}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        rng = np.random.default_rng(seed)
        for modality, (render, suffix) in RENDERERS.items():
            folder = staging / modality
            folder.mkdir()
            for i in range(num_per_modality):
                _write(folder / f"{modality}_{i:05d}{suffix}", render(_scene(rng, size), rng))
        (staging / MARKER).write_text(json.dumps(params))
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/pretrain_demo", help="output folder")
    parser.add_argument("--num-per-modality", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = generate_pretrain_data(args.root, args.num_per_modality, args.size, args.seed)
    print(f"wrote {args.num_per_modality} tiles per modality to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
