"""Synthetic LEVIR-CD and CDD, written in the layouts the real downloads have.

Why synthetic: neither data set can be downloaded on the build machines, so tests and demos
use small generated twins in exactly the on-disk formats of the real ones:

LEVIR-CD (Chen & Shi 2020; 1024x1024 RGB PNG pairs, labels 0/255 PNG)::

    <root>/{train,val,test}/A/<split>_<n>.png       date 1 (RGB)
    <root>/{train,val,test}/B/<split>_<n>.png       date 2 (RGB)
    <root>/{train,val,test}/label/<split>_<n>.png   change mask, single channel, 0 or 255

CDD (Lebedev et al. 2018, "ChangeDetectionDataset/Real/subset"; 256x256 JPEG pairs)::

    <root>/{train,val,test}/A/<nnnnn>.jpg           date 1 (RGB)
    <root>/{train,val,test}/B/<nnnnn>.jpg           date 2 (RGB)
    <root>/{train,val,test}/OUT/<nnnnn>.jpg         change mask, 0 or 255 up to JPEG noise

The benchmark reads both with mmseg's ``LEVIRCDDataset`` (suffixes set per data set) and
``benchmarks.models.change_detection``'s loaders, which threshold the masks at 127, so the
0/255 PNGs and the noisy JPEG masks both become 0 (unchanged) / 1 (changed).

Content: a terrain of grass and soil with a road and buildings (rectangular roofs). Date B
adds buildings on free land (new construction, the main change in LEVIR-CD) and demolishes
some (bare soil where a roof was); the label is exactly those buildings' pixels. Everything
else differs too, without being a change: each date has its own colour balance, brightness
and sensor noise, and its own vegetation season (CDD's defining nuisance; stronger in the CDD
style). Everything is a function of (seed, split, index): the same arguments give identical bytes.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from benchmarks.datasets.drawing import smooth_noise
from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
LEVIR_MARKER = "synthetic_levir_cd.json"
CDD_MARKER = "synthetic_cdd.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
CHANGED = 255  # mask value of a changed pixel in both data sets (0 = unchanged)
MIN_SIZE = 64  # below this the buildings no longer fit beside each other
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Style:
    """How one data set differs from the other: file formats and nuisance strength."""

    name: str
    label_dir: str
    suffix: str
    season: float  # how far date B's vegetation moves towards autumn/snow (0..1)
    gain: float  # spread of the per-date, per-channel colour gain


LEVIR = Style("levir_cd", "label", ".png", season=0.2, gain=0.08)
CDD = Style("cdd", "OUT", ".jpg", season=0.7, gain=0.15)


def file_names(style: Style, split: str, count: int) -> list[str]:
    """LEVIR-CD names its pairs ``train_1.png``...; CDD numbers each split ``00000.jpg``..."""
    if style is LEVIR:
        return [f"{split}_{k + 1}{style.suffix}" for k in range(count)]
    return [f"{k:05d}{style.suffix}" for k in range(count)]


# ----------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Building:
    """An axis-aligned roof: pixel box [y0, y1) x [x0, x1) and its colour."""

    y0: int
    x0: int
    y1: int
    x1: int
    colour: tuple[float, float, float]

    def mask(self, size: int) -> np.ndarray:
        out = np.zeros((size, size), bool)
        out[self.y0:self.y1, self.x0:self.x1] = True
        return out


# Roof colours, far from grass, soil and road so a roof is recognisable in either date.
ROOFS: tuple[tuple[float, float, float], ...] = ((190, 70, 60), (225, 225, 232), (70, 95, 170), (215, 160, 60))


def _place_buildings(rng: np.random.Generator, size: int, count: int, taken: np.ndarray) -> list[Building]:
    """Up to ``count`` roofs on free land (not on the road or on/next to another roof)."""
    placed = []
    for _attempt in range(count * 30):
        if len(placed) == count:
            break
        h, w = (int(rng.uniform(0.08, 0.18) * size) for _ in range(2))
        y0, x0 = int(rng.integers(2, size - h - 2)), int(rng.integers(2, size - w - 2))
        margin = max(2, size // 64)  # a gap between roofs so changes stay separate objects
        if taken[max(0, y0 - margin):y0 + h + margin, max(0, x0 - margin):x0 + w + margin].any():
            continue
        roof = np.asarray(ROOFS[int(rng.integers(len(ROOFS)))]) + rng.uniform(-12, 12, 3)
        building = Building(y0, x0, y0 + h, x0 + w, tuple(float(c) for c in roof))
        taken[building.y0:building.y1, building.x0:building.x1] = True
        placed.append(building)
    return placed


def _terrain(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grass/soil ground with a road: (colour field, vegetation weight in 0..1, road mask)."""
    veg = np.clip(0.5 + 0.6 * smooth_noise(rng, size, max(2, size // 48)), 0.0, 1.0).astype(np.float32)
    grass, soil = np.array([85, 135, 65], np.float32), np.array([150, 128, 98], np.float32)
    ground = veg[..., None] * grass + (1 - veg[..., None]) * soil
    ground += 6.0 * smooth_noise(rng, size, max(4, size // 8))[..., None].astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    if rng.random() < 0.5:  # a straight road, horizontal or vertical, ~5% of the width
        road = np.abs(yy - rng.uniform(0.2, 0.8) * size) < 0.025 * size
    else:
        road = np.abs(xx - rng.uniform(0.2, 0.8) * size) < 0.025 * size
    ground[road] = (112, 112, 116)
    return ground, veg * ~road, road


def _season(ground: np.ndarray, veg: np.ndarray, amount: float) -> np.ndarray:
    """Move vegetation towards dry brown / snow white: a seasonal difference that is no change."""
    autumn = np.array([165, 150, 110], np.float32)
    return ground + (amount * veg)[..., None] * (autumn - ground)


def _sensor(rng: np.random.Generator, image: np.ndarray, gain_spread: float) -> np.ndarray:
    """Per-date acquisition: colour balance, brightness, haze offset and pixel noise."""
    gain = rng.uniform(1 - gain_spread, 1 + gain_spread) * rng.uniform(0.97, 1.03, 3)
    out = image * gain + rng.uniform(-8, 8) + rng.normal(0.0, 3.0, image.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _draw(ground: np.ndarray, buildings: Sequence[Building], size: int) -> np.ndarray:
    image = ground.copy()
    for b in buildings:
        image[b.y0:b.y1, b.x0:b.x1] = b.colour
        # A darker ridge line across the roof: texture that marks a roof as a roof.
        mid = (b.y0 + b.y1) // 2
        image[mid:mid + max(1, size // 128), b.x0:b.x1] = np.asarray(b.colour) * 0.7
    return image


@dataclass(frozen=True)
class Scene:
    """One generated pair and what it shows: the roofs of each date and the change mask."""

    image_a: np.ndarray  # (size, size, 3) uint8 RGB
    image_b: np.ndarray
    mask: np.ndarray  # (size, size) uint8: CHANGED where a roof was built or demolished, else 0
    before: list[Building]
    after: list[Building]


def synthesize_scene(seed: int, split: str, index: int, size: int, style: Style = LEVIR) -> Scene:
    """One pair with its roofs, seeded by (seed, style, split, index) alone."""
    style_id = 0 if style is LEVIR else 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, style_id, SPLITS.index(split), index]))
    ground, veg, road = _terrain(rng, size)
    taken = road.copy()
    before = _place_buildings(rng, size, int(rng.integers(4, 8)), taken)
    # Demolished: 1-2 of the old roofs become bare soil; built: 2-5 new roofs on free land.
    demolished = [b for b in before if rng.random() < 0.35][:2] or before[:1]
    built = _place_buildings(rng, size, int(rng.integers(2, 6)), taken)
    after = [b for b in before if b not in demolished] + built

    ground_b = _season(ground, veg, style.season * rng.uniform(0.5, 1.0))
    for b in demolished:  # a cleared building site: flat, bright soil
        ground_b[b.y0:b.y1, b.x0:b.x1] = (172, 150, 118)
    image_a = _sensor(rng, _draw(ground, before, size), style.gain)
    image_b = _sensor(rng, _draw(ground_b, after, size), style.gain)

    changed = np.zeros((size, size), bool)
    for b in demolished + built:
        changed |= b.mask(size)
    return Scene(image_a, image_b, np.where(changed, CHANGED, 0).astype(np.uint8), before, after)


def synthesize_pair(seed: int, split: str, index: int, size: int,
                    style: Style = LEVIR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (date A, date B, mask): (size, size, 3) uint8 RGB twice and a (size, size) uint8 0/255 mask."""
    scene = synthesize_scene(seed, split, index, size, style)
    return scene.image_a, scene.image_b, scene.mask


# ----------------------------------------------------------------------------- writing


def _params(style: Style, counts: dict[str, int], size: int, seed: int) -> dict[str, object]:
    """The marker's content: everything the generated bytes depend on."""
    return {"generator": f"ringmoe-bench synthetic {style.name}", "generator_version": GENERATOR_VERSION,
            "layout": f"{style.name} A/B/{style.label_dir}", **{f"num_{s}": counts[s] for s in SPLITS},
            "size": size, "seed": seed}


def _validate(counts: dict[str, int], size: int, seed: int) -> None:
    if min(counts.values()) < 1:
        raise ValueError(f"need at least one pair per split, got {counts}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")


def _expected(style: Style) -> Callable[[dict], list[Path]]:
    def expected(params: dict) -> list[Path]:
        return [Path(split, folder, name) for split in SPLITS
                for name in file_names(style, split, int(params[f"num_{split}"]))
                for folder in ("A", "B", style.label_dir)]
    return expected


def _save(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(array)
    if path.suffix == ".jpg":
        image.save(path, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(path, format="PNG")


def _writer(style: Style) -> Callable[[Path, dict], None]:
    def write(target: Path, params: dict) -> None:
        size, seed = int(params["size"]), int(params["seed"])
        for split in SPLITS:
            for folder in ("A", "B", style.label_dir):
                (target / split / folder).mkdir(parents=True)
            for index, name in enumerate(file_names(style, split, int(params[f"num_{split}"]))):
                image_a, image_b, mask = synthesize_pair(seed, split, index, size, style)
                _save(image_a, target / split / "A" / name)
                _save(image_b, target / split / "B" / name)
                _save(mask, target / split / style.label_dir / name)
    return write


def _generate(style: Style, marker: str, root: str | Path, counts: dict[str, int], size: int,
              seed: int) -> Path:
    _validate(counts, size, seed)
    params = _params(style, counts, size, seed)
    return build_atomically(Path(root), marker, params, _expected(style), _writer(style))


def generate_levir_cd(root: str | Path, num_train: int = 16, num_val: int = 4, num_test: int = 4,
                      size: int = 256, seed: int = 0) -> Path:
    """Write synthetic LEVIR-CD under root (root/{train,val,test}/{A,B,label}/*.png) atomically.

    A complete dataset with the same parameters (its marker json) is reused, not rewritten.
    Returns root. Raises FileExistsError if root is a non-empty directory this generator did
    not write (a real dataset is never replaced).
    """
    counts = {"train": num_train, "val": num_val, "test": num_test}
    return _generate(LEVIR, LEVIR_MARKER, root, counts, size, seed)


def generate_cdd(root: str | Path, num_train: int = 16, num_val: int = 4, num_test: int = 4,
                 size: int = 256, seed: int = 0) -> Path:
    """Write synthetic CDD under root (root/{train,val,test}/{A,B,OUT}/*.jpg) atomically.

    Same contract as ``generate_levir_cd``; stronger seasonal and colour nuisance, JPEG files.
    """
    counts = {"train": num_train, "val": num_val, "test": num_test}
    return _generate(CDD, CDD_MARKER, root, counts, size, seed)


# ----------------------------------------------------------------------------- command line


_EPILOG = """\
layouts written (those of the real downloads):
  levir_cd: ROOT/{train,val,test}/{A,B,label}/<split>_<n>.png   labels: single channel, 0 / 255
  cdd:      ROOT/{train,val,test}/{A,B,OUT}/<nnnnn>.jpg         masks: JPEG, 0 / 255 (+ JPEG noise)
  ROOT/synthetic_<dataset>.json: parameters; present only when complete

date B adds and demolishes buildings (the label), and differs everywhere else only by
colour balance, brightness, noise and season (no change). An existing complete dataset with
the same parameters is reused, not rewritten.
"""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.change_detection",
        description="Write a small synthetic change detection dataset (LEVIR-CD or CDD layout).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("levir_cd", "cdd"), default="levir_cd",
                        help="layout to write (default: %(default)s)")
    parser.add_argument("--root", help="output directory (default: data/<dataset>)")
    parser.add_argument("--num-train", type=int, default=16, help="train pairs (default: %(default)s)")
    parser.add_argument("--num-val", type=int, default=4, help="val pairs (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=4, help="test pairs (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    generate = generate_levir_cd if args.dataset == "levir_cd" else generate_cdd
    root = generate(args.root or f"data/{args.dataset}", num_train=args.num_train, num_val=args.num_val,
                    num_test=args.num_test, size=args.size, seed=args.seed)
    print(f"synthetic {args.dataset} ready at {root} ({args.num_train} train + {args.num_val} val + "
          f"{args.num_test} test pairs of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
