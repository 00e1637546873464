"""Synthetic DIOR, written in the dataset's own VOC-style layout (horizontal boxes).

Why synthetic: DIOR (Li et al., 2020: 23,463 optical images of 800x800 px, 20 classes) cannot be
downloaded on the build machines, so tests and demos use a small generated twin in exactly the
layout that the real download unpacks to, read by mmdet's own ``XMLDataset``:

    <root>/JPEGImages-trainval/<id>.jpg   images of the train and val lists (ids 00001..11725)
    <root>/JPEGImages-test/<id>.jpg       images of the test list (ids 11726..23463)
    <root>/Annotations/<id>.xml           one VOC XML per image: <size>, then per object
                                          <name>, <difficult>, <bndbox> xmin ymin xmax ymax
    <root>/ImageSets/Main/{train,val,test}.txt   one five-digit id per line

Box coordinates are VOC's: 1-based pixel indices, xmax/ymax inclusive (mmdet subtracts one).
Class names are spelled as in DIOR's XML files (``CLASSES``, including the capitalised
``Expressway-Service-area`` and ``Expressway-toll-station``).

Content (demo only, and smaller than real: 256 px images by default, real ones are 800 px):
a sandy, low-frequency textured ground with a few objects of five classes, each with its own
colour and shape, so a short training run finds them:
airplane (light grey cross: fuselage and wings), ship (dark red hull with a white deck line),
storagetank (pale yellow disc with a dark rim), tenniscourt (green court with white lines),
vehicle (small blue rectangle). Objects do not overlap. Everything is a function of
(seed, image id): the same arguments give identical files.

Publishing (a staging dir beside the root, a marker with the parameters written last, one
rename, never replacing data a generator did not write) is ``benchmarks/datasets/publish.py``.
"""
from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from benchmarks.datasets.drawing import smooth_noise
from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic_dior.json"

# The 20 DIOR classes, in the order of the dataset paper (mmdet labels 0..19 follow it).
CLASSES: tuple[str, ...] = (
    "airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
    "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield",
    "harbor", "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation",
    "vehicle", "windmill",
)
# The classes the demo draws (a handful is enough to exercise per-class AP).
DEMO_CLASSES: tuple[str, ...] = ("airplane", "ship", "storagetank", "tenniscourt", "vehicle")
IMAGE_SIDE = 800  # every real DIOR image is 800 x 800
FIRST_TEST_ID = 11726  # ids 00001..11725 are trainval (JPEGImages-trainval), the rest test
LAST_ID = 23463
MIN_SIZE = 96  # below this the larger objects no longer fit a few to an image

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- naming


def image_ids(num_train: int, num_val: int, num_test: int) -> dict[str, list[str]]:
    """The ids of each split: train then val from 00001 on, test from 11726 on, as in DIOR."""
    trainval = [f"{i:05d}" for i in range(1, num_train + num_val + 1)]
    test = [f"{i:05d}" for i in range(FIRST_TEST_ID, FIRST_TEST_ID + num_test)]
    return {"train": trainval[:num_train], "val": trainval[num_train:], "test": test}


def image_subdir(split: str) -> str:
    """DIOR keeps trainval and test images in two folders."""
    return "JPEGImages-test" if split == "test" else "JPEGImages-trainval"


# ----------------------------------------------------------------------------- drawing


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight pixel box (x0, y0, x1, y1), inclusive, of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _airplane(yy: np.ndarray, xx: np.ndarray, s: float, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple]]:
    """A cross: a long fuselage and shorter, wider wings, along one of the two axes."""
    length, span = s, s * rng.uniform(0.75, 0.95)
    body = (np.abs(xx) <= 0.1 * s) & (np.abs(yy) <= length / 2)
    wings = (np.abs(yy + 0.05 * s) <= 0.12 * s) & (np.abs(xx) <= span / 2)
    tail = (np.abs(yy - 0.4 * s) <= 0.06 * s) & (np.abs(xx) <= 0.22 * s)
    shape = body | wings | tail
    if rng.random() < 0.5:
        shape = shape.T
    return [(shape, (222, 224, 228))]


def _ship(yy: np.ndarray, xx: np.ndarray, s: float, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple]]:
    """An elongated dark red hull with a pointed bow and a white deck line."""
    length, beam = s, s * rng.uniform(0.22, 0.3)
    hull = (np.abs(yy) <= beam / 2 * np.clip((length / 2 - xx) / (0.2 * s), 0, 1)) & (np.abs(xx) <= length / 2)
    deck = hull & (np.abs(yy) <= max(1.0, beam * 0.12)) & (np.abs(xx) <= length * 0.35)
    if rng.random() < 0.5:
        hull, deck = hull.T, deck.T
    return [(hull, (150, 30, 35)), (deck, (245, 245, 245))]


def _storagetank(yy: np.ndarray, xx: np.ndarray, s: float, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple]]:
    """A pale yellow disc with a dark rim."""
    r = np.hypot(xx, yy)
    return [(r <= s / 2, (60, 55, 50)), (r <= s / 2 - max(1.5, 0.08 * s), (236, 226, 150))]


def _tenniscourt(yy: np.ndarray, xx: np.ndarray, s: float, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple]]:
    """A green rectangle (about 2:1) with a white outline and a white net line."""
    half_long, half_short = s / 2, s * rng.uniform(0.25, 0.3)
    court = (np.abs(xx) <= half_long) & (np.abs(yy) <= half_short)
    line = max(1.0, 0.05 * s)
    inner = (np.abs(xx) <= half_long - line) & (np.abs(yy) <= half_short - line)
    net = court & (np.abs(xx) <= line / 2 + 0.5)
    if rng.random() < 0.5:
        court, inner, net = court.T, inner.T, net.T
    return [(court, (240, 240, 240)), (inner, (40, 140, 70)), (net, (240, 240, 240))]


def _vehicle(yy: np.ndarray, xx: np.ndarray, s: float, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple]]:
    """A small blue rectangle (about 2:1), along one of the axes."""
    body = (np.abs(xx) <= s / 2) & (np.abs(yy) <= s * 0.25)
    if rng.random() < 0.5:
        body = body.T
    return [(body, (30, 70, 200))]


# class -> (painter, object size range as a fraction of the image side)
_PAINTERS: dict[str, tuple[Callable, tuple[float, float]]] = {
    "airplane": (_airplane, (0.14, 0.24)),
    "ship": (_ship, (0.14, 0.26)),
    "storagetank": (_storagetank, (0.08, 0.16)),
    "tenniscourt": (_tenniscourt, (0.16, 0.26)),
    "vehicle": (_vehicle, (0.07, 0.1)),
}


def _free(taken: np.ndarray, box: tuple[int, int, int, int], margin: int) -> bool:
    x0, y0, x1, y1 = box
    return not taken[max(0, y0 - margin):y1 + margin + 1, max(0, x0 - margin):x1 + margin + 1].any()


def synthesize_image(seed: int, image_id: str, size: int) -> tuple[np.ndarray, list[dict]]:
    """One image, (size, size, 3) uint8 RGB, and its objects: ``{"name", "box": (x0, y0, x1, y1)}``
    with inclusive 0-based pixel coordinates. Seeded by (seed, image id) alone."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(image_id)]))
    ground = smooth_noise(rng, size, max(2, size // 24)).astype(np.float32)
    image = np.empty((size, size, 3), np.float32)
    image[:] = np.asarray((176, 160, 128), np.float32) + rng.uniform(-10, 10, 3)
    image += 12.0 * ground[..., None]
    taken = np.zeros((size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    objects = []
    for _ in range(int(rng.integers(3, 7))):
        name = DEMO_CLASSES[int(rng.integers(len(DEMO_CLASSES)))]
        painter, (lo, hi) = _PAINTERS[name]
        side = max(8.0, rng.uniform(lo, hi) * size)
        for _attempt in range(15):  # rejection sampling: objects never overlap
            cx, cy = rng.uniform(side / 2 + 2, size - side / 2 - 2, 2)
            layers = painter(yy - cy, xx - cx, side, rng)
            box = _box(layers[0][0])
            if _free(taken, box, margin=2):
                break
        else:
            continue
        for mask, colour in layers:
            image[mask] = np.asarray(colour, np.float32) + rng.uniform(-8, 8, 3)
        x0, y0, x1, y1 = box
        taken[y0:y1 + 1, x0:x1 + 1] = True
        objects.append({"name": name, "box": box})
    image = image * rng.uniform(0.92, 1.08) + rng.normal(0.0, 4.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


def annotation_xml(image_id: str, size: int, objects: Sequence[dict]) -> ET.ElementTree:
    """The VOC XML of one image, as DIOR writes it (1-based inclusive box corners)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "DIOR"
    size_el = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_el, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = obj["name"]
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = "0"
        ET.SubElement(el, "difficult").text = "0"
        box = ET.SubElement(el, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["box"]):
            ET.SubElement(box, tag).text = str(value + 1)
    tree = ET.ElementTree(root)
    ET.indent(tree, space="\t")
    return tree


# ----------------------------------------------------------------------------- writing


def _ids(params: dict) -> dict[str, list[str]]:
    return image_ids(int(params["num_train"]), int(params["num_val"]), int(params["num_test"]))


def _expected_files(params: dict) -> list[Path]:
    files = [Path("ImageSets", "Main", f"{split}.txt") for split in SPLITS]
    for split, ids in _ids(params).items():
        for i in ids:
            files += [Path(image_subdir(split), f"{i}.jpg"), Path("Annotations", f"{i}.xml")]
    return files


def _write_dataset(target: Path, params: dict) -> None:
    size, seed = int(params["size"]), int(params["seed"])
    (target / "Annotations").mkdir()
    (target / "ImageSets" / "Main").mkdir(parents=True)
    for split, ids in _ids(params).items():
        (target / image_subdir(split)).mkdir(exist_ok=True)
        for image_id in ids:
            image, objects = synthesize_image(seed, image_id, size)
            Image.fromarray(image).save(target / image_subdir(split) / f"{image_id}.jpg", quality=95)
            annotation_xml(image_id, size, objects).write(target / "Annotations" / f"{image_id}.xml",
                                                          encoding="utf-8", xml_declaration=False)
        (target / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def generate_dior(root: str | Path, num_train: int = 24, num_val: int = 4, num_test: int = 8,
                  size: int = 256, seed: int = 0) -> Path:
    """Write a synthetic DIOR under root (see the module doc for the layout), atomically and
    once per parameter set. Returns root. Raises FileExistsError if root is a non-empty
    directory this generator did not write, ValueError on bad arguments."""
    if min(num_train, num_val, num_test) < 1:
        raise ValueError(f"need at least one image per split, got {num_train}, {num_val}, {num_test}")
    if num_train + num_val >= FIRST_TEST_ID or FIRST_TEST_ID + num_test - 1 > LAST_ID:
        raise ValueError("more images than DIOR has ids for")
    if not MIN_SIZE <= size <= IMAGE_SIDE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {IMAGE_SIDE}], got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")
    params = {"generator": "ringmoe-bench synthetic dior", "generator_version": GENERATOR_VERSION,
              "layout": "DIOR VOC-style (JPEGImages-trainval/-test, Annotations, ImageSets/Main)",
              "num_train": num_train, "num_val": num_val, "num_test": num_test, "size": size, "seed": seed}
    return build_atomically(root, MARKER_NAME, params, _expected_files, _write_dataset)


# ----------------------------------------------------------------------------- command line


_EPILOG = """\
layout written (the real DIOR download's):
  ROOT/JPEGImages-trainval/00001.jpg ...   train + val images
  ROOT/JPEGImages-test/11726.jpg ...       test images
  ROOT/Annotations/<id>.xml                VOC XML, 1-based inclusive bndbox
  ROOT/ImageSets/Main/{train,val,test}.txt ids, one per line
  ROOT/synthetic_dior.json                 parameters; present only when complete

classes drawn: airplane, ship, storagetank, tenniscourt, vehicle (of DIOR's 20).
Read it with mmdet's XMLDataset (configs/benchmarks/detection/_base_/dior.py).
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.dior",
        description="Write a small synthetic DIOR (horizontal boxes) in the dataset's VOC-style layout.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/dior", help="output directory (default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=24, help="train images (default: %(default)s)")
    parser.add_argument("--num-val", type=int, default=4, help="val images (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=8, help="test images (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image side in px; real DIOR is 800 "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    root = generate_dior(args.root, args.num_train, args.num_val, args.num_test, args.size, args.seed)
    print(f"synthetic DIOR ready at {root} ({args.num_train} train + {args.num_val} val + "
          f"{args.num_test} test images of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
