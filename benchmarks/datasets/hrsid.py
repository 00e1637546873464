"""Synthetic HRSID (SAR ship detection), written in the dataset's COCO JSON layout.

Why synthetic: HRSID (Wei et al., 2020: 5,604 SAR images of 800x800 px from Sentinel-1B,
TerraSAR-X and TanDEM-X, one class) cannot be downloaded on the build machines, so tests and
demos use a small generated twin in exactly the layout of the released ``HRSID_JPG`` folder,
read by mmdet's own ``CocoDataset`` and evaluated by ``CocoMetric``:

    <root>/JPEGImages/<name>.jpg         8-bit SAR amplitude, stored as 3-channel JPEG (the
                                         single band replicated)
    <root>/annotations/train2017.json    COCO instances: images, annotations (bbox [x, y, w, h],
    <root>/annotations/test2017.json     area, iscrowd 0, a polygon segmentation), categories
                                         [{"id": 1, "name": "ship", "supercategory": "ship"}]

Image names follow HRSID's ``P<scene>_<y0>_<y1>_<x0>_<x1>.jpg``: a scene number and the
window that the 800 px tile covers in the scene (here a made-up grid, names never collide).

Content (demo only, and smaller than real: 256 px by default, real tiles are 800 px): open
sea as multiplicative speckle (gamma-distributed intensity over a dark, slowly varying
backscatter), sometimes a bright textured coast along one edge, and 1-5 bright ships:
rotated ellipses with speckle and a brighter keel line, some with a faint wake. Boxes are
the tight boxes of the ship polygons. Everything is a function of (seed, split, index).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from benchmarks.datasets.drawing import smooth_noise
from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic_hrsid.json"
CLASSES: tuple[str, ...] = ("ship",)
CATEGORIES = [{"id": 1, "name": "ship", "supercategory": "ship"}]
IMAGE_SIDE = 800  # every real HRSID tile is 800 x 800
MIN_SIZE = 64
ANNOTATION_FILES = {"train": "annotations/train2017.json", "test": "annotations/test2017.json"}
_SPLIT_INDEX = {"train": 0, "test": 1}
_SHIP_POINTS = 16  # vertices of a ship's polygon (an ellipse outline)


def image_name(split: str, index: int) -> str:
    """HRSID-style name: a scene per 6 tiles, tiles on a 800 px grid of that scene."""
    scene = 1 + 200 * _SPLIT_INDEX[split] + index // 6
    y0, x0 = (index % 6 // 3) * IMAGE_SIDE, (index % 3) * IMAGE_SIDE
    return f"P{scene:04d}_{y0}_{y0 + IMAGE_SIDE}_{x0}_{x0 + IMAGE_SIDE}.jpg"


# ----------------------------------------------------------------------------- drawing


def _ship_polygon(centre: np.ndarray, length: float, beam: float, angle: float) -> np.ndarray:
    """(N, 2) x, y vertices of a rotated ellipse outline."""
    t = np.linspace(0, 2 * np.pi, _SHIP_POINTS, endpoint=False)
    u, v = length / 2 * np.cos(t), beam / 2 * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([centre[0] + u * c - v * s, centre[1] + u * s + v * c], axis=1)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def synthesize_tile(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """One tile: (size, size) uint8 amplitude and the ships' polygons ((N, 2) x, y arrays)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_INDEX[split], index]))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Mean backscatter (linear intensity): dark sea with slow variation.
    sigma = 0.02 * np.exp(0.4 * smooth_noise(rng, size, 4)).astype(np.float32)
    land = np.zeros((size, size), bool)
    if rng.random() < 0.3:  # an inshore tile: bright, textured land along one edge
        edge = rng.uniform(0.12, 0.25) * size + 0.05 * size * smooth_noise(rng, size, 3)[0]
        land = xx < edge[:, None] if rng.random() < 0.5 else yy < edge[None, :]
        sigma[land] = 0.12 * np.exp(0.8 * smooth_noise(rng, size, max(4, size // 16)))[land]
    ships: list[np.ndarray] = []
    keep_out = land.copy()
    for _ in range(int(rng.integers(1, 6))):
        length = rng.uniform(0.08, 0.2) * size
        beam = length * rng.uniform(0.25, 0.4)
        angle = float(rng.uniform(0, np.pi))
        for _attempt in range(20):
            centre = rng.uniform(length / 2 + 2, size - length / 2 - 2, 2)
            u = (xx - centre[0]) * np.cos(angle) + (yy - centre[1]) * np.sin(angle)
            v = -(xx - centre[0]) * np.sin(angle) + (yy - centre[1]) * np.cos(angle)
            hull = (u / (length / 2)) ** 2 + (v / (beam / 2)) ** 2 <= 1.0
            if not (hull & keep_out).any():
                break
        else:
            continue
        # Ships are strong scatterers: 20-60x the sea, brightest along the keel.
        sigma[hull] = rng.uniform(0.5, 1.0) * (1.0 + 1.5 * (np.abs(v[hull]) < beam * 0.15))
        if rng.random() < 0.4:  # a faint turbulent wake behind the stern
            wake = (u < -length / 2) & (u > -1.8 * length) & (np.abs(v) < beam * 0.4) & ~land
            sigma[wake] *= 2.5
        keep_out |= (u / (length / 2 + 3)) ** 2 + (v / (beam / 2 + 3)) ** 2 <= 1.0
        ships.append(_ship_polygon(centre, length, beam, angle))
    # Fully developed speckle: exponential intensity (4-look gamma), then amplitude, 8-bit log-ish.
    intensity = sigma * rng.gamma(4.0, 0.25, size=(size, size))
    amplitude = np.sqrt(intensity)
    image = np.clip(255.0 * amplitude / 0.9, 0, 255)
    return np.rint(image).astype(np.uint8), ships


def _coco_annotation(points: np.ndarray, size: int, image_id: int, ann_id: int) -> dict:
    points = np.clip(points, 0, size)
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "area": round(_polygon_area(points), 2),
            "segmentation": [[round(float(c), 2) for c in points.reshape(-1)]]}


# ----------------------------------------------------------------------------- writing


def _expected_files(params: dict) -> list[Path]:
    files = [Path(f) for f in ANNOTATION_FILES.values()]
    for split in ANNOTATION_FILES:
        files += [Path("JPEGImages", image_name(split, i)) for i in range(int(params[f"num_{split}"]))]
    return files


def _write_dataset(target: Path, params: dict) -> None:
    size, seed = int(params["size"]), int(params["seed"])
    (target / "JPEGImages").mkdir()
    (target / "annotations").mkdir()
    image_id = ann_id = 0
    for split, ann_file in ANNOTATION_FILES.items():
        coco: dict = {"images": [], "annotations": [], "categories": CATEGORIES}
        for index in range(int(params[f"num_{split}"])):
            image_id += 1
            amplitude, ships = synthesize_tile(seed, split, index, size)
            name = image_name(split, index)
            Image.fromarray(np.repeat(amplitude[..., None], 3, axis=2)).save(target / "JPEGImages" / name, quality=95)
            coco["images"].append({"id": image_id, "file_name": name, "width": size, "height": size})
            for points in ships:
                ann_id += 1
                coco["annotations"].append(_coco_annotation(points, size, image_id, ann_id))
        (target / ann_file).write_text(json.dumps(coco))


def generate_hrsid(root: str | Path, num_train: int = 24, num_test: int = 8, size: int = 256,
                   seed: int = 0) -> Path:
    """Write a synthetic HRSID under root (see the module doc), atomically and once per
    parameter set. Returns root. Raises FileExistsError if root is a non-empty directory this
    generator did not write, ValueError on bad arguments."""
    if min(num_train, num_test) < 1:
        raise ValueError(f"need at least one image per split, got {num_train}, {num_test}")
    if not MIN_SIZE <= size <= IMAGE_SIDE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {IMAGE_SIDE}], got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")
    params = {"generator": "ringmoe-bench synthetic hrsid", "generator_version": GENERATOR_VERSION,
              "layout": "HRSID_JPG (JPEGImages/, annotations/{train,test}2017.json)",
              "num_train": num_train, "num_test": num_test, "size": size, "seed": seed}
    return build_atomically(root, MARKER_NAME, params, _expected_files, _write_dataset)


# ----------------------------------------------------------------------------- command line


_EPILOG = """\
layout written (the released HRSID_JPG folder's):
  ROOT/JPEGImages/P0001_0_800_0_800.jpg ...   8-bit SAR amplitude, 3-channel JPEG
  ROOT/annotations/train2017.json             COCO instances, one category: ship
  ROOT/annotations/test2017.json
  ROOT/synthetic_hrsid.json                   parameters; present only when complete

Read it with mmdet's CocoDataset (configs/benchmarks/detection/_base_/hrsid.py).
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.hrsid",
        description="Write a small synthetic HRSID (SAR ships) in the dataset's COCO layout.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/hrsid", help="output directory (default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=24, help="train tiles (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=8, help="test tiles (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="tile side in px; real HRSID is 800 "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    root = generate_hrsid(args.root, args.num_train, args.num_test, args.size, args.seed)
    print(f"synthetic HRSID ready at {root} ({args.num_train} train + {args.num_test} test tiles "
          f"of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
