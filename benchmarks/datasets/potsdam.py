"""Synthetic ISPRS Potsdam, written in the layout mmsegmentation 1.2.2 reads after its converter.

Why synthetic: the real dataset needs a registration and is ~20 GB, so tests and smoke runs
use a small generated twin instead. It has to be in the *converted* format, because that is
what ``mmseg.datasets.PotsdamDataset`` and ``configs/_base_/datasets/potsdam.py`` read:

    <root>/img_dir/{train,val}/<name>.png   8-bit RGB crops of the orthophoto
    <root>/ann_dir/{train,val}/<name>.png   8-bit single-channel label crops, same <name>

``<name>`` is ``{row}_{col}_{x0}_{y0}_{x1}_{y1}``: the tile id of the raw file
``top_potsdam_{row}_{col}_RGB.tif`` and the pixel box of the crop within that 6000x6000 tile,
as ``tools/dataset_converters/potsdam.py`` names its crops (e.g. ``2_10_0_0_512_512.png``).
Tiles go to train or val by the converter's fixed split lists, which are reused here.

Label values are the converter's, which maps each ISPRS label colour to an index:
0 = black (the boundary band of the "noBoundary" labels, or any unknown colour),
1 = impervious surfaces (white), 2 = building (blue), 3 = low vegetation (cyan),
4 = tree (green), 5 = car (yellow), 6 = clutter/background (red).
``PotsdamDataset`` sets ``reduce_zero_label=True``: at load time 0 becomes 255 (ignored by
the loss and by IoUMetric) and every other value drops by one, giving the six classes
``('impervious_surface', 'building', 'low_vegetation', 'tree', 'car', 'clutter')``.
Clutter is therefore a real, evaluated class; only the boundary is ignored.

Content: each class has its own colour and texture (grey/terracotta striped roofs, dark green
grainy tree crowns, light green lawns, light grey pavement, small blue/white cars, magenta-red
clutter), with mild noise, so a tiny network learns it within a few hundred iterations.
Everything is a function of (seed, split, index): the same arguments give identical bytes.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from benchmarks.datasets.drawing import smooth_noise
from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic_potsdam.json"

# Label values written to ann_dir, as the mmseg converter writes them.
BOUNDARY = 0
IMPERVIOUS = 1
BUILDING = 2
LOW_VEGETATION = 3
TREE = 4
CAR = 5
CLUTTER = 6

LABEL_NAMES: dict[int, str] = {
    BOUNDARY: "boundary (ignored: 255 after reduce_zero_label)",
    IMPERVIOUS: "impervious_surface",
    BUILDING: "building",
    LOW_VEGETATION: "low_vegetation",
    TREE: "tree",
    CAR: "car",
    CLUTTER: "clutter",
}

# RGB colour of each value in the raw ISPRS label tiles (documentation; the converter's input).
ISPRS_LABEL_RGB: dict[int, tuple[int, int, int]] = {
    BOUNDARY: (0, 0, 0),
    IMPERVIOUS: (255, 255, 255),
    BUILDING: (0, 0, 255),
    LOW_VEGETATION: (0, 255, 255),
    TREE: (0, 255, 0),
    CAR: (255, 255, 0),
    CLUTTER: (255, 0, 0),
}

# The converter's split: tiles "row_col" of the 38 labelled Potsdam tiles.
TRAIN_TILES: tuple[str, ...] = (
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11",
    "5_12", "6_10", "6_11", "6_12", "6_7", "6_8", "6_9", "7_10", "7_11", "7_12", "7_7", "7_8",
    "7_9",
)
VAL_TILES: tuple[str, ...] = (
    "5_15", "6_15", "6_13", "3_13", "4_14", "6_14", "5_14", "2_13", "4_15", "2_14", "5_13",
    "4_13", "3_14", "7_13",
)
TILE_SIDE = 6000  # raw Potsdam tiles are 6000 x 6000 pixels
MIN_SIZE = 32  # below this the smallest objects (cars) no longer fit with their boundary band

_SPLITS: dict[str, tuple[int, tuple[str, ...]]] = {"train": (0, TRAIN_TILES), "val": (1, VAL_TILES)}


# ----------------------------------------------------------------------------- naming


def crop_names(split: str, count: int, size: int) -> list[str]:
    """File names (without directory) of the ``count`` crops of ``split``.

    Crops are spread round-robin over the split's tiles, then laid on a ``size`` grid inside each
    tile, so names look like the converter's and never collide.
    """
    tiles = _SPLITS[split][1]
    per_row = TILE_SIDE // size
    names = []
    for k in range(count):
        tile = tiles[k % len(tiles)]
        slot = k // len(tiles)
        if slot >= per_row * per_row:
            raise ValueError(f"{count} crops of {size}px do not fit in the {split} tiles")
        x0, y0 = (slot % per_row) * size, (slot // per_row) * size
        names.append(f"{tile}_{x0}_{y0}_{x0 + size}_{y0 + size}.png")
    return names


# ----------------------------------------------------------------------------- drawing


def _blob_mask(xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator,
               centre: tuple[float, float], radius: float) -> np.ndarray:
    """An irregular round blob: a circle whose radius wobbles with two random harmonics."""
    dx, dy = xx - centre[0], yy - centre[1]
    angle = np.arctan2(dy, dx)
    wobble = 1.0
    for harmonic in (2, 3):
        wobble = wobble + rng.uniform(0.05, 0.18) * np.sin(harmonic * angle + rng.uniform(0, 6.3))
    return np.hypot(dx, dy) <= radius * wobble


def _rect_mask(xx: np.ndarray, yy: np.ndarray, centre: tuple[float, float],
               half: tuple[float, float], angle: float) -> np.ndarray:
    """A rectangle rotated by ``angle`` radians (rotation of the sampling coordinates)."""
    dx, dy = xx - centre[0], yy - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (np.abs(u) <= half[0]) & (np.abs(v) <= half[1])


def _paint(image: np.ndarray, label: np.ndarray, mask: np.ndarray, value: int,
           colour: np.ndarray) -> None:
    """Set ``mask`` to class ``value`` and its pixels to ``colour`` (an (H, W, 3) field)."""
    label[mask] = value
    image[mask] = colour[mask]


def _field(base: Sequence[float], size: int, texture: np.ndarray | None = None,
           amplitude: float = 0.0) -> np.ndarray:
    """An (H, W, 3) colour field: a base colour, optionally modulated by a texture map."""
    field = np.empty((size, size, 3), np.float32)
    field[:] = np.asarray(base, np.float32)
    if texture is not None:
        field += amplitude * texture[..., None]
    return field


def _jitter(rng: np.random.Generator, base: Sequence[float], spread: float) -> np.ndarray:
    """A per-object variation of a class colour, so objects of one class are not identical."""
    return np.asarray(base, np.float32) + rng.uniform(-spread, spread, 3)


def _random_centre(rng: np.random.Generator, size: int) -> tuple[float, float]:
    return float(rng.uniform(0, size)), float(rng.uniform(0, size))


def _draw_low_vegetation(ctx: "_Canvas") -> None:
    """Lawns: a few large light-green blobs with a fine grass grain."""
    rng, s = ctx.rng, ctx.size
    for _ in range(int(rng.integers(1, 4))):
        mask = _blob_mask(ctx.xx, ctx.yy, rng, _random_centre(rng, s), rng.uniform(0.10, 0.22) * s)
        grain = rng.normal(size=(s, s)).astype(np.float32)
        _paint(ctx.image, ctx.label, mask, LOW_VEGETATION,
               _field(_jitter(rng, (140, 195, 105), 12), s, grain, 9.0))


def _draw_buildings(ctx: "_Canvas") -> None:
    """Roofs: large near-axis-aligned rectangles, grey or terracotta, with ridge stripes."""
    rng, s = ctx.rng, ctx.size
    for _ in range(int(rng.integers(2, 5))):
        angle = float(rng.uniform(-0.3, 0.3))
        half = (rng.uniform(0.08, 0.18) * s, rng.uniform(0.08, 0.18) * s)
        mask = _rect_mask(ctx.xx, ctx.yy, _random_centre(rng, s), half, angle)
        base = (118, 118, 126) if rng.random() < 0.5 else (160, 92, 76)
        period = max(4.0, 0.03 * s)
        stripes = np.sin(2 * np.pi * (ctx.xx * np.cos(angle) + ctx.yy * np.sin(angle)) / period)
        _paint(ctx.image, ctx.label, mask, BUILDING, _field(_jitter(rng, base, 10), s, stripes, 12.0))


def _draw_trees(ctx: "_Canvas") -> None:
    """Tree crowns: dark green blobs with a blotchy texture (they may overhang roofs, as in Potsdam)."""
    rng, s = ctx.rng, ctx.size
    blotches = smooth_noise(rng, s, max(4, s // 12)).astype(np.float32)
    for _ in range(int(rng.integers(2, 6))):
        radius = max(4.0, rng.uniform(0.04, 0.09) * s)
        mask = _blob_mask(ctx.xx, ctx.yy, rng, _random_centre(rng, s), radius)
        _paint(ctx.image, ctx.label, mask, TREE, _field(_jitter(rng, (45, 95, 45), 8), s, blotches, 14.0))


def _draw_clutter(ctx: "_Canvas") -> None:
    """Clutter: small magenta-red blobs with strong speckle (skips, tarps, building sites)."""
    rng, s = ctx.rng, ctx.size
    for _ in range(int(rng.integers(1, 3))):
        radius = max(3.5, rng.uniform(0.025, 0.05) * s)
        mask = _blob_mask(ctx.xx, ctx.yy, rng, _random_centre(rng, s), radius)
        speckle = rng.normal(size=(s, s)).astype(np.float32)
        colour = _field(_jitter(rng, (200, 55, 110), 10), s, speckle, 20.0)
        _paint(ctx.image, ctx.label, mask, CLUTTER, colour)


def _draw_cars(ctx: "_Canvas") -> None:
    """Cars: small blue or white rectangles, preferably parked on pavement, along the axes."""
    rng, s = ctx.rng, ctx.size
    for _ in range(int(rng.integers(2, 6))):
        centre = _random_centre(rng, s)
        for _attempt in range(20):  # look for pavement so cars sit on roads, as in the real tiles
            if ctx.label[int(centre[1]), int(centre[0])] == IMPERVIOUS:
                break
            centre = _random_centre(rng, s)
        half = (max(3.5, 0.035 * s), max(2.0, 0.017 * s))  # at least 7 x 4 px
        angle = float(rng.choice([0.0, np.pi / 2]) + rng.uniform(-0.1, 0.1))
        mask = _rect_mask(ctx.xx, ctx.yy, centre, half, angle)
        base = (35, 60, 195) if rng.random() < 0.5 else (242, 242, 248)
        _paint(ctx.image, ctx.label, mask, CAR, _field(_jitter(rng, base, 8), s))


class _Canvas:
    """The state shared by the drawing steps of one crop."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng = rng
        self.size = size
        self.yy, self.xx = np.mgrid[0:size, 0:size].astype(np.float32)
        # Background is pavement: light grey with gentle low-frequency unevenness.
        self.label = np.full((size, size), IMPERVIOUS, np.uint8)
        pavement = smooth_noise(rng, size, max(2, size // 32)).astype(np.float32)
        self.image = _field(_jitter(rng, (186, 184, 178), 6), size, pavement, 7.0)


def _mark_boundaries(label: np.ndarray) -> None:
    """Set 0 on both sides of every class edge, like the black band of the noBoundary labels.

    This exercises the ignore path (0 -> 255 under reduce_zero_label) exactly as real data does.
    """
    edge = np.zeros(label.shape, bool)
    horizontal = label[:, 1:] != label[:, :-1]
    vertical = label[1:, :] != label[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    label[edge] = BOUNDARY


def synthesize_crop(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair: (size, size, 3) uint8 RGB and (size, size) uint8 converter values.

    Seeded by (seed, split, index) alone, so any crop can be regenerated on its own.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLITS[split][0], index]))
    ctx = _Canvas(rng, size)
    # Paint order matters: later layers occlude earlier ones; cars and clutter last so they survive.
    for draw in (_draw_low_vegetation, _draw_buildings, _draw_trees, _draw_clutter, _draw_cars):
        draw(ctx)
    _mark_boundaries(ctx.label)
    # Sensor-like variation: a per-crop exposure change and mild pixel noise.
    image = ctx.image * rng.uniform(0.92, 1.08) + rng.normal(0.0, 4.0, ctx.image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), ctx.label


# ----------------------------------------------------------------------------- writing


def _params(num_train: int, num_val: int, size: int, seed: int) -> dict[str, object]:
    """The marker's content: everything the generated bytes depend on."""
    return {"generator": "ringmoe-bench synthetic potsdam", "generator_version": GENERATOR_VERSION,
            "layout": "mmsegmentation-1.x converted", "num_train": num_train, "num_val": num_val,
            "size": size, "seed": seed}


def _validate(num_train: int, num_val: int, size: int, seed: int) -> None:
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one crop per split, got num_train={num_train}, num_val={num_val}")
    if not MIN_SIZE <= size <= TILE_SIDE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {TILE_SIDE}], got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")


def _expected_files(params: dict[str, object]) -> list[Path]:
    files = []
    for split in _SPLITS:
        for name in crop_names(split, int(params[f"num_{split}"]), int(params["size"])):
            files += [Path("img_dir", split, name), Path("ann_dir", split, name)]
    return files


def _write_dataset(target: Path, params: dict[str, object]) -> None:
    """Write all crops under target (build_atomically adds the marker and publishes)."""
    size, seed = int(params["size"]), int(params["seed"])
    for split in _SPLITS:
        (target / "img_dir" / split).mkdir(parents=True)
        (target / "ann_dir" / split).mkdir(parents=True)
        for index, name in enumerate(crop_names(split, int(params[f"num_{split}"]), size)):
            image, label = synthesize_crop(seed, split, index, size)
            Image.fromarray(image).save(target / "img_dir" / split / name, format="PNG")
            Image.fromarray(label).save(target / "ann_dir" / split / name, format="PNG")


def generate_potsdam(root: str | Path, num_train: int = 8, num_val: int = 4, size: int = 256,
                     seed: int = 0) -> Path:
    """Write the dataset under root (root/img_dir/..., root/ann_dir/...) atomically: build in a
    temp dir beside it, then rename; if a complete dataset with the same parameters already
    exists (a small JSON marker file with the parameters), return it without rewriting.
    Returns root.

    Raises FileExistsError if root is a non-empty directory this generator did not write.
    """
    root = Path(root)
    _validate(num_train, num_val, size, seed)
    params = _params(num_train, num_val, size, seed)
    return build_atomically(root, MARKER_NAME, params, _expected_files, _write_dataset)


# ----------------------------------------------------------------------------- command line


_EPILOG = """\
layout written (what mmseg's tools/dataset_converters/potsdam.py produces):
  ROOT/img_dir/train/*.png   RGB crops        ROOT/ann_dir/train/*.png   label crops
  ROOT/img_dir/val/*.png                      ROOT/ann_dir/val/*.png
  ROOT/synthetic_potsdam.json                 parameters; present only when complete

file names: {row}_{col}_{x0}_{y0}_{x1}_{y1}.png, e.g. 2_10_0_0_512_512.png = crop (0,0)-(512,512)
  of raw tile top_potsdam_2_10; train/val tiles follow the converter's split.

label values (single-channel PNG):
  0 boundary -> ignored (255) by PotsdamDataset's reduce_zero_label=True
  1 impervious_surface  2 building  3 low_vegetation  4 tree  5 car  6 clutter
  (after reduce_zero_label: 0..5 in that order)

use with configs/_base_/datasets/potsdam.py by pointing data_root at ROOT.
An existing complete dataset with the same parameters is reused, not rewritten.
"""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.potsdam",
        description="Write a small synthetic ISPRS Potsdam dataset in mmsegmentation's layout.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/potsdam", help="output directory (default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=8, help="train crops (default: %(default)s)")
    parser.add_argument("--num-val", type=int, default=4, help="val crops (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    root = generate_potsdam(args.root, num_train=args.num_train, num_val=args.num_val,
                            size=args.size, seed=args.seed)
    print(f"synthetic Potsdam ready at {root} "
          f"({args.num_train} train + {args.num_val} val crops of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
