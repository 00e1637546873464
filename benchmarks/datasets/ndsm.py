"""Synthetic ISPRS Vaihingen and Potsdam with normalised DSM (nDSM) heights, for height estimation.

Why synthetic: the ISPRS data need a registration, so tests and demos use a small generated twin
in the layout a user gets by cutting the orthophotos and the normalised DSMs into tiles:

    <root>/img_dir/{train,val}/<tile>.png    8-bit image tiles
    <root>/ndsm_dir/{train,val}/<tile>.tif   float32 TIFF, height above ground in metres
                                 <tile>.png   or 16-bit PNG, height in centimetres (value / 100)

Vaihingen tiles are IRRG false colour (near infrared, red, green; like the ISPRS orthophotos),
named ``top_mosaic_09cm_area<N>_<i>_<j>.png``; Potsdam tiles are RGB, named
``top_potsdam_<row>_<col>_RGB_<i>_<j>.png``. ``<i>_<j>`` is the tile's row and column in the cut
of its area; areas go to train/val by mmsegmentation's converter split lists. A height map has the
image's stem. mmseg's ``NYUDataset`` pairs them (data_prefix ``img_path`` / ``depth_map_path``,
``depth_map_suffix``) and ``LoadDepthAnnotation`` reads them: cv2 with IMREAD_UNCHANGED gives
float32 for the TIFF and uint16 for the PNG, and its ``depth_rescale_factor`` (1.0 for TIFF
metres, 0.01 for PNG centimetres) gives metres.

Ground: real nDSMs are 0 on bare ground, and mmseg masks ground truth <= eps in the SILog loss and
<= min_depth_eval in DepthMetric, so zero ground would silently drop out of both. The generator
therefore gives the ground a small positive height (pavement ~0.1 m, lawns ~0.3 m, the residue
of a DTM subtraction), and every pixel is scored. Real data: see configs/benchmarks/depth/_base_.

Heights are a function of what the image shows, so a model can learn them: red-tiled roofs are
flat, 3-18 m, and a roof's shade encodes its height (taller is darker); tree crowns are green
domes, 5-12 m at the top, darker when taller; cars are 1.5 m; lawns and pavement are near zero.
Everything is a function of (dataset, seed, split, index): the same arguments give identical bytes.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from benchmarks.datasets import potsdam as _potsdam
from benchmarks.datasets.drawing import smooth_noise
from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
PNG16_METRES_PER_UNIT = 0.01  # 16-bit PNG heights are centimetres
HEIGHT_FORMATS = ("tif", "png")
MIN_SIZE = 32

# mmseg's tools/dataset_converters/vaihingen.py split of the 33 Vaihingen areas.
VAIHINGEN_TRAIN_AREAS: tuple[int, ...] = (1, 11, 13, 15, 17, 21, 23, 26, 28, 3, 30, 32, 34, 37, 5, 7)
VAIHINGEN_VAL_AREAS: tuple[int, ...] = (6, 24, 35, 16, 14, 22, 10, 4, 2, 20, 8, 31, 33, 27, 38, 12, 29)

# Height ranges in metres (what the content encodes).
PAVEMENT_HEIGHT = 0.10
LAWN_HEIGHT = 0.30
CAR_HEIGHT = 1.5
ROOF_HEIGHTS = (3.0, 18.0)
TREE_HEIGHTS = (5.0, 12.0)

# Reflectance of each surface in (red, green, blue, near infrared), 0-255.
PAVEMENT = (186, 184, 178, 160)
LAWN = (140, 195, 105, 225)
ROOF_TILES = (205, 92, 70, 125)  # terracotta; scaled by the height shade
TREE = (60, 120, 55, 215)        # scaled by the height shade
CAR_BLUE = (35, 60, 195, 70)
CAR_WHITE = (242, 242, 248, 235)


class _Flavour:
    """What differs between the two datasets: tile names, splits, the bands written."""

    def __init__(self, name: str, key: int, train: Sequence[str], val: Sequence[str],
                 bands: tuple[int, int, int], default_format: str) -> None:
        self.name = name
        self.key = key  # part of every tile's seed, so the two datasets do not share scenes
        self.splits = {"train": (0, tuple(train)), "val": (1, tuple(val))}
        self.bands = bands  # indices into (R, G, B, NIR)
        self.default_format = default_format
        self.marker = f"synthetic_{name}_ndsm.json"

    def tile_name(self, area: str, i: int, j: int) -> str:
        if self.name == "vaihingen":
            return f"top_mosaic_09cm_area{area}_{i}_{j}"
        return f"top_potsdam_{area}_RGB_{i}_{j}"


VAIHINGEN = _Flavour("vaihingen", 0, [str(a) for a in VAIHINGEN_TRAIN_AREAS],
                     [str(a) for a in VAIHINGEN_VAL_AREAS], bands=(3, 0, 1), default_format="tif")
POTSDAM = _Flavour("potsdam", 1, _potsdam.TRAIN_TILES, _potsdam.VAL_TILES, bands=(0, 1, 2),
                   default_format="png")
FLAVOURS = {"vaihingen": VAIHINGEN, "potsdam": POTSDAM}


def tile_stems(flavour: _Flavour, split: str, count: int) -> list[str]:
    """Stems of the ``count`` tiles of ``split``: round-robin over the split's areas, then a grid."""
    areas = flavour.splits[split][1]
    stems = []
    for k in range(count):
        slot = k // len(areas)
        stems.append(flavour.tile_name(areas[k % len(areas)], slot // 16, slot % 16))
    return stems


# ----------------------------------------------------------------------------- drawing


class _Scene:
    """One tile being painted: reflectance in (R, G, B, NIR) and height in metres."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng, self.size = rng, size
        self.yy, self.xx = np.mgrid[0:size, 0:size].astype(np.float32)
        unevenness = smooth_noise(rng, size, max(2, size // 32)).astype(np.float32)
        self.bands = np.empty((size, size, 4), np.float32)
        self.bands[:] = np.asarray(PAVEMENT, np.float32)
        self.bands += 6.0 * unevenness[..., None]
        self.height = np.clip(PAVEMENT_HEIGHT + 0.02 * unevenness, 0.05, None).astype(np.float32)

    def centre(self) -> tuple[float, float]:
        return float(self.rng.uniform(0, self.size)), float(self.rng.uniform(0, self.size))

    def paint(self, mask: np.ndarray, colour: Sequence[float], height: np.ndarray | float,
              texture: np.ndarray | None = None) -> None:
        self.bands[mask] = np.asarray(colour, np.float32)
        if texture is not None:
            self.bands[mask] += texture[mask][:, None]
        self.height[mask] = height[mask] if isinstance(height, np.ndarray) else height


def _draw_lawns(scene: _Scene) -> None:
    rng, s = scene.rng, scene.size
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = scene.centre()
        mask = np.hypot(scene.xx - cx, scene.yy - cy) <= rng.uniform(0.10, 0.22) * s
        grain = rng.normal(size=(s, s)).astype(np.float32)
        scene.paint(mask, LAWN, LAWN_HEIGHT + 0.03 * grain, 8.0 * grain)


def roof_shade(height: float) -> float:
    """Brightness factor of a roof of ``height`` metres: 1.15 at the lowest, 0.6 at the tallest."""
    lo, hi = ROOF_HEIGHTS
    return 1.15 - 0.55 * (height - lo) / (hi - lo)


def tree_shade(top: float) -> float:
    """Brightness factor of a crown whose top is ``top`` metres: 1.2 for the lowest, 0.7 tallest."""
    lo, hi = TREE_HEIGHTS
    return 1.2 - 0.5 * (top - lo) / (hi - lo)


def _draw_buildings(scene: _Scene) -> None:
    """Flat roofs of red tiles, rotated rectangles; darker roofs are taller."""
    rng, s = scene.rng, scene.size
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = scene.centre()
        angle = float(rng.uniform(-0.3, 0.3))
        half = rng.uniform(0.08, 0.18, 2) * s
        u = (scene.xx - cx) * np.cos(angle) + (scene.yy - cy) * np.sin(angle)
        v = -(scene.xx - cx) * np.sin(angle) + (scene.yy - cy) * np.cos(angle)
        mask = (np.abs(u) <= half[0]) & (np.abs(v) <= half[1])
        height = float(rng.uniform(*ROOF_HEIGHTS))
        stripes = 6.0 * np.sin(2 * np.pi * u / max(4.0, 0.03 * s)).astype(np.float32)  # tile rows
        scene.paint(mask, np.asarray(ROOF_TILES, np.float32) * roof_shade(height), height, stripes)


def _draw_trees(scene: _Scene) -> None:
    """Round crowns, dome-shaped in height (top at the centre, 60% at the rim)."""
    rng, s = scene.rng, scene.size
    blotches = 10.0 * smooth_noise(rng, s, max(4, s // 12)).astype(np.float32)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy = scene.centre()
        radius = max(4.0, rng.uniform(0.05, 0.10) * s)
        r = np.hypot(scene.xx - cx, scene.yy - cy) / radius
        mask = r <= 1.0
        top = float(rng.uniform(*TREE_HEIGHTS))
        dome = top * (0.6 + 0.4 * np.sqrt(np.clip(1.0 - r**2, 0.0, 1.0)))
        scene.paint(mask, np.asarray(TREE, np.float32) * tree_shade(top), dome, blotches)


def _draw_cars(scene: _Scene) -> None:
    rng, s = scene.rng, scene.size
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = scene.centre()
        half = (max(3.5, 0.035 * s), max(2.0, 0.017 * s))
        if rng.random() < 0.5:
            half = half[::-1]
        mask = (np.abs(scene.xx - cx) <= half[0]) & (np.abs(scene.yy - cy) <= half[1])
        if (scene.height[mask] > 1.0).any():  # cars park on the ground, not on roofs or under trees
            continue
        scene.paint(mask, CAR_BLUE if rng.random() < 0.5 else CAR_WHITE, CAR_HEIGHT)


def synthesize_tile(flavour: _Flavour, seed: int, split: str, index: int,
                    size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image, height) pair: (size, size, 3) uint8 in the flavour's bands, (size, size)
    float32 metres rounded to the centimetre (so the TIFF and PNG16 formats hold equal values)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, flavour.key, flavour.splits[split][0], index]))
    scene = _Scene(rng, size)
    for draw in (_draw_lawns, _draw_buildings, _draw_trees, _draw_cars):  # later ones occlude
        draw(scene)
    bands = scene.bands * rng.uniform(0.95, 1.05) + rng.normal(0.0, 3.0, scene.bands.shape)
    image = np.clip(np.rint(bands[..., list(flavour.bands)]), 0, 255).astype(np.uint8)
    height = (np.rint(scene.height * 100.0) / 100.0).astype(np.float32)
    return image, height


# ----------------------------------------------------------------------------- reading


def read_height(path: str | Path) -> np.ndarray:
    """Height in metres from a float TIFF (metres) or a 16-bit PNG (centimetres)."""
    path = Path(path)
    with Image.open(path) as im:
        values = np.asarray(im)
    if path.suffix == ".png":
        return values.astype(np.float32) * PNG16_METRES_PER_UNIT
    return values.astype(np.float32)


def constant_baseline(root: str | Path, min_height: float = 1e-3) -> dict[str, float]:
    """RMSE and AbsRel on val of predicting the mean train height everywhere, averaged per image
    as mmseg's DepthMetric does (pixels with height <= min_height are not scored)."""
    root = Path(root)
    train = np.concatenate([read_height(p).ravel() for p in sorted((root / "ndsm_dir" / "train").iterdir())])
    mean = float(train[train > min_height].mean())
    rmse, abs_rel = [], []
    for path in sorted((root / "ndsm_dir" / "val").iterdir()):
        gt = read_height(path)
        gt = gt[gt > min_height]
        rmse.append(float(np.sqrt(np.mean((gt - mean) ** 2))))
        abs_rel.append(float(np.mean(np.abs(gt - mean) / gt)))
    return {"mean_height": mean, "rmse": float(np.mean(rmse)), "abs_rel": float(np.mean(abs_rel))}


# ----------------------------------------------------------------------------- writing


def _write_height(path: Path, height: np.ndarray) -> None:
    if path.suffix == ".png":
        Image.fromarray(np.rint(height / PNG16_METRES_PER_UNIT).astype(np.uint16)).save(path, format="PNG")
    else:
        Image.fromarray(height.astype(np.float32)).save(path, format="TIFF")


def _params(flavour: _Flavour, num_train: int, num_val: int, size: int, seed: int,
            height_format: str) -> dict[str, object]:
    """The marker's content: everything the generated bytes depend on."""
    unit = "centimetres (uint16)" if height_format == "png" else "metres (float32)"
    return {"generator": f"ringmoe-bench synthetic {flavour.name} ndsm",
            "generator_version": GENERATOR_VERSION, "flavour": flavour.name, "num_train": num_train,
            "num_val": num_val, "size": size, "seed": seed, "height_format": height_format,
            "height_unit": unit}


def _expected_files(params: dict[str, object]) -> list[Path]:
    flavour = FLAVOURS[str(params["flavour"])]
    files = []
    for split in flavour.splits:
        for stem in tile_stems(flavour, split, int(params[f"num_{split}"])):
            files += [Path("img_dir", split, f"{stem}.png"),
                      Path("ndsm_dir", split, f"{stem}.{params['height_format']}")]
    return files


def _write_dataset(target: Path, params: dict[str, object]) -> None:
    flavour = FLAVOURS[str(params["flavour"])]
    size, seed, fmt = int(params["size"]), int(params["seed"]), str(params["height_format"])
    for split in flavour.splits:
        (target / "img_dir" / split).mkdir(parents=True)
        (target / "ndsm_dir" / split).mkdir(parents=True)
        for index, stem in enumerate(tile_stems(flavour, split, int(params[f"num_{split}"]))):
            image, height = synthesize_tile(flavour, seed, split, index, size)
            Image.fromarray(image).save(target / "img_dir" / split / f"{stem}.png", format="PNG")
            _write_height(target / "ndsm_dir" / split / f"{stem}.{fmt}", height)


def _generate(flavour: _Flavour, root: str | Path, num_train: int, num_val: int, size: int, seed: int,
              height_format: str | None) -> Path:
    height_format = height_format or flavour.default_format
    if height_format not in HEIGHT_FORMATS:
        raise ValueError(f"height_format must be one of {HEIGHT_FORMATS}, got {height_format!r}")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one tile per split, got num_train={num_train}, num_val={num_val}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")
    params = _params(flavour, num_train, num_val, size, seed, height_format)
    return build_atomically(root, flavour.marker, params, _expected_files, _write_dataset)


def generate_vaihingen_ndsm(root: str | Path, num_train: int = 12, num_val: int = 4, size: int = 128,
                            seed: int = 0, height_format: str | None = None) -> Path:
    """Write synthetic Vaihingen IRRG tiles and nDSM heights (default float32 TIFF, metres) under
    root, atomically; a complete dataset with the same parameters is reused. Returns root.

    Raises FileExistsError if root is a non-empty directory this generator did not write.
    """
    return _generate(VAIHINGEN, root, num_train, num_val, size, seed, height_format)


def generate_potsdam_ndsm(root: str | Path, num_train: int = 12, num_val: int = 4, size: int = 128,
                          seed: int = 0, height_format: str | None = None) -> Path:
    """Write synthetic Potsdam RGB tiles and nDSM heights (default 16-bit PNG, centimetres) under
    root, atomically; a complete dataset with the same parameters is reused. Returns root."""
    return _generate(POTSDAM, root, num_train, num_val, size, seed, height_format)


# ----------------------------------------------------------------------------- command line


_EPILOG = """\
layout written:
  ROOT/img_dir/{train,val}/<tile>.png     8-bit tiles (Vaihingen IRRG, Potsdam RGB)
  ROOT/ndsm_dir/{train,val}/<tile>.tif    float32 height above ground, metres   (--height-format tif)
  ROOT/ndsm_dir/{train,val}/<tile>.png    uint16 height above ground, centimetres (--height-format png)
  ROOT/synthetic_<dataset>_ndsm.json      parameters; present only when complete

tiles: top_mosaic_09cm_area<N>_<i>_<j> (Vaihingen), top_potsdam_<row>_<col>_RGB_<i>_<j> (Potsdam);
  areas split into train/val as mmseg's converters do. Ground is 0.1-0.3 m, never 0 (see module doc).
use with configs/benchmarks/depth/ by pointing --data-root at ROOT.
"""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.ndsm",
        description="Write a small synthetic ISPRS Vaihingen or Potsdam height (nDSM) dataset.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(FLAVOURS), help="which dataset to imitate")
    parser.add_argument("--root", help="output directory (default: data/<dataset>_ndsm)")
    parser.add_argument("--num-train", type=int, default=12, help="train tiles (default: %(default)s)")
    parser.add_argument("--num-val", type=int, default=4, help="val tiles (default: %(default)s)")
    parser.add_argument("--size", type=int, default=128, help="tile side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--height-format", choices=HEIGHT_FORMATS,
                        help="tif (float32 metres) or png (uint16 centimetres); "
                        "default: tif for vaihingen, png for potsdam")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    generate = generate_vaihingen_ndsm if args.dataset == "vaihingen" else generate_potsdam_ndsm
    root = generate(args.root or f"data/{args.dataset}_ndsm", num_train=args.num_train, num_val=args.num_val,
                    size=args.size, seed=args.seed, height_format=args.height_format)
    print(f"synthetic {args.dataset} nDSM ready at {root} ({args.num_train} train + {args.num_val} val "
          f"tiles of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
