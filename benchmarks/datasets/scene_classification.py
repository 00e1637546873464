"""Synthetic NWPU-RESISC45 and AID, written in the folder-per-class layouts they ship in.

Why synthetic: the real datasets cannot be downloaded on the build machines, so tests and demos
use small generated twins in exactly the real on-disk format, read by mmpretrain's own
``CustomDataset``:

    NWPU-RESISC45   <root>/<class_name>/<class_name>_NNN.jpg   e.g. airplane/airplane_001.jpg
                    45 classes, 700 images each, 256 x 256 RGB JPEG
    AID             <root>/<ClassName>/<classname>_N.jpg       e.g. BareLand/bareland_1.jpg
                    30 classes, 220-420 images each, 600 x 600 RGB JPEG

Both come without a train/val split: the benchmark protocol draws one at a fixed train ratio
(``benchmarks/tasks/classification.py`` does that, stratified and seeded). The class names
here are the real ones, in the real folder spelling; label indices are their sorted order, as
mmpretrain assigns them to folders.

What differs from the real data (on purpose, for speed): a few images per class (default 10)
and small images (default 64 px). Content is learnable: class ``k`` has a base hue (``k // 3``
spread over the colour wheel) and one of three textures (``k % 3``: stripes with a light
colour, a checkerboard with a dark one, spots of the complementary hue), so both the mean
colour and the texture tell the classes apart; each image varies the hue slightly, the
stripe angle and phase, the texture scale, the exposure and adds pixel noise.
Everything is a function of (seed, dataset, class, index): the same arguments give identical bytes.
"""
from __future__ import annotations

import argparse
import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic_scene_classification.json"
MIN_SIZE = 16

NWPU_CLASSES: tuple[str, ...] = (
    "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral",
    "church", "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert",
    "forest", "freeway", "golf_course", "ground_track_field", "harbor", "industrial_area",
    "intersection", "island", "lake", "meadow", "medium_residential", "mobile_home_park",
    "mountain", "overpass", "palace", "parking_lot", "railway", "railway_station",
    "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
    "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
    "thermal_power_station", "wetland",
)
AID_CLASSES: tuple[str, ...] = (
    "Airport", "BareLand", "BaseballField", "Beach", "Bridge", "Center", "Church", "Commercial",
    "DenseResidential", "Desert", "Farmland", "Forest", "Industrial", "Meadow",
    "MediumResidential", "Mountain", "Park", "Parking", "Playground", "Pond", "Port",
    "RailwayStation", "Resort", "River", "School", "SparseResidential", "Square", "Stadium",
    "StorageTanks", "Viaduct",
)


@dataclass(frozen=True)
class SceneLayout:
    """One dataset's folder-per-class layout."""

    name: str
    classes: tuple[str, ...]
    file_name: Callable[[str, int], str]  # (class folder, 1-based index) -> file name
    real_size: int  # side of the real images, in pixels


LAYOUTS: dict[str, SceneLayout] = {
    "nwpu_resisc45": SceneLayout("nwpu_resisc45", NWPU_CLASSES, lambda c, i: f"{c}_{i:03d}.jpg", 256),
    "aid": SceneLayout("aid", AID_CLASSES, lambda c, i: f"{c.lower()}_{i}.jpg", 600),
}
_DATASET_IDS = {name: i for i, name in enumerate(LAYOUTS)}  # part of each image's seed


def file_names(dataset: str, per_class: int) -> dict[str, list[str]]:
    """Class folder -> its file names, for ``per_class`` images per class."""
    layout = LAYOUTS[dataset]
    return {c: [layout.file_name(c, i) for i in range(1, per_class + 1)] for c in layout.classes}


# ----------------------------------------------------------------------------- drawing


def class_colours(index: int, num_classes: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(hue, base RGB, secondary RGB) of class ``index``; RGB in 0..255 floats."""
    hues = -(-num_classes // 3)
    hue = (index // 3) / hues
    base = np.array(colorsys.hsv_to_rgb(hue, 0.65, 0.75)) * 255
    texture = index % 3
    if texture == 0:  # stripes: base and a light tint
        second = np.array(colorsys.hsv_to_rgb(hue, 0.2, 0.95)) * 255
    elif texture == 1:  # checkerboard: base and a dark shade
        second = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.3)) * 255
    else:  # spots of the complementary hue
        second = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.7, 0.85)) * 255
    return hue, base, second


def _texture(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """A (size, size) mask in [0, 1] where the secondary colour shows."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size * rng.uniform(0.12, 0.2)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        u = xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(0, period)
        return ((u % period) < period / 2).astype(np.float32)
    if kind == 1:
        ox, oy = rng.uniform(0, 2 * period, 2)
        return (((xx + ox) // period + (yy + oy) // period) % 2).astype(np.float32)
    mask = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(3, 7))):
        cx, cy = rng.uniform(0, size, 2)
        radius = size * rng.uniform(0.06, 0.12)
        mask[np.hypot(xx - cx, yy - cy) <= radius] = 1.0
    return mask


def synthesize_image(seed: int, dataset: str, class_index: int, index: int, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 RGB image of class ``class_index`` of ``dataset``.

    Seeded by (seed, dataset, class, index) alone, so any image can be regenerated on its own.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _DATASET_IDS[dataset], class_index, index]))
    num_classes = len(LAYOUTS[dataset].classes)
    _, base, second = class_colours(class_index, num_classes)
    # Per-image colour variation, well below the hue spacing between classes.
    base = base + rng.uniform(-10, 10, 3)
    second = second + rng.uniform(-10, 10, 3)
    mask = _texture(rng, class_index % 3, size)[..., None]
    image = base * (1 - mask) + second * mask
    image = image * rng.uniform(0.92, 1.08) + rng.normal(0.0, 5.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- writing


def _params(dataset: str, per_class: int, size: int, seed: int) -> dict[str, object]:
    """The marker's content: everything the generated bytes depend on."""
    return {"generator": f"ringmoe-bench synthetic {dataset}", "generator_version": GENERATOR_VERSION,
            "layout": "folder per class", "dataset": dataset, "per_class": per_class, "size": size,
            "seed": seed}


def _validate(dataset: str, per_class: int, size: int, seed: int) -> None:
    if dataset not in LAYOUTS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(LAYOUTS)}")
    if per_class < 2:
        raise ValueError(f"need at least 2 images per class (one train, one val), got {per_class}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")


def _expected_files(params: dict[str, object]) -> list[Path]:
    names = file_names(str(params["dataset"]), int(params["per_class"]))
    return [Path(c, n) for c, files in names.items() for n in files]


def _write_dataset(target: Path, params: dict[str, object]) -> None:
    """Write every class folder under target (build_atomically adds the marker and publishes)."""
    dataset, size, seed = str(params["dataset"]), int(params["size"]), int(params["seed"])
    for class_index, (folder, names) in enumerate(file_names(dataset, int(params["per_class"])).items()):
        (target / folder).mkdir()
        for index, name in enumerate(names):
            image = synthesize_image(seed, dataset, class_index, index, size)
            Image.fromarray(image).save(target / folder / name, format="JPEG", quality=95)


def generate_scene_dataset(dataset: str, root: str | Path, per_class: int = 10, size: int = 64,
                           seed: int = 0) -> Path:
    """Write synthetic ``dataset`` ('nwpu_resisc45' or 'aid') under root, atomically (built in a
    temp dir beside it, then renamed); a complete dataset with the same parameters (see its
    marker json) is reused as it is. Returns root.

    Raises FileExistsError if root is a non-empty directory this generator did not write.
    """
    root = Path(root)
    _validate(dataset, per_class, size, seed)
    params = _params(dataset, per_class, size, seed)
    return build_atomically(root, MARKER_NAME, params, _expected_files, _write_dataset)


def generate_nwpu_resisc45(root: str | Path, per_class: int = 10, size: int = 64, seed: int = 0) -> Path:
    """Synthetic NWPU-RESISC45 (45 classes, ``<class>/<class>_NNN.jpg``) under root."""
    return generate_scene_dataset("nwpu_resisc45", root, per_class, size, seed)


def generate_aid(root: str | Path, per_class: int = 10, size: int = 64, seed: int = 0) -> Path:
    """Synthetic AID (30 classes, ``<ClassName>/<classname>_N.jpg``) under root."""
    return generate_scene_dataset("aid", root, per_class, size, seed)


# ----------------------------------------------------------------------------- command line


_EPILOG = """\
layouts written (those of the real downloads):
  nwpu_resisc45: ROOT/<class_name>/<class_name>_NNN.jpg   e.g. ROOT/airplane/airplane_001.jpg
  aid:           ROOT/<ClassName>/<classname>_N.jpg        e.g. ROOT/BareLand/bareland_1.jpg
  ROOT/synthetic_scene_classification.json                 parameters; present only when complete

no split is written: the benchmark draws a stratified one at its train ratio
(benchmarks/tasks/classification.py). mmpretrain's CustomDataset reads ROOT as it is
(labels = sorted folder names). An existing complete dataset with the same parameters is
reused, not rewritten. Real images are 256 px (NWPU) and 600 px (AID); the default here is 64.
"""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.scene_classification",
        description="Write a small synthetic NWPU-RESISC45 or AID in its folder-per-class layout.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(LAYOUTS), help="which dataset's layout and classes")
    parser.add_argument("--root", help="output directory (default: data/<dataset>)")
    parser.add_argument("--per-class", type=int, default=10, help="images per class (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    root = generate_scene_dataset(args.dataset, args.root or Path("data", args.dataset),
                                  per_class=args.per_class, size=args.size, seed=args.seed)
    print(f"synthetic {args.dataset} ready at {root} ({len(LAYOUTS[args.dataset].classes)} classes x "
          f"{args.per_class} images of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
