"""Synthetic rotated-detection data in the real on-disk layouts of DOTA, DIOR-R and HRSC2016.

Why synthetic: none of the three can be downloaded on our machines, so tests and demos use a
small generated twin that mmrotate's own readers parse (``DOTADataset``-style txt through
``benchmarks.datasets.rotated_loaders.DOTATxtDataset``, ``DIORDataset``, ``HRSCDataset``).

One demo root holds all three layouts side by side; their paths do not collide, so every
rotated-detection config runs on the same generated root without ``--data-root``:

    <root>/train/images/P0000.png            DOTA v1.0 style: 8-bit RGB PNG
    <root>/train/labelTxt/P0000.txt          'imagesource:..', 'gsd:..' header, then one
    <root>/val/{images,labelTxt}/...           'x1 y1 x2 y2 x3 y3 x4 y4 class difficult' per object
    <root>/JPEGImages-trainval/00001.jpg     DIOR-R: JPEG images; trainval ids from 00001,
    <root>/JPEGImages-test/11726.jpg           test ids from 11726, as in the real release
    <root>/Annotations/Oriented Bounding Boxes/00001.xml   VOC-like XML, <robndbox> corners
    <root>/ImageSets/Main/{train,val,test}.txt
    <root>/FullDataSet/AllImages/100000001.bmp        HRSC2016: BMP images
    <root>/FullDataSet/Annotations/100000001.xml      HRSC_Objects/HRSC_Object, mbox_* in px/rad
    <root>/ImageSets/{trainval,test}.txt
    <root>/synthetic_rotated.json            parameters; present only when complete

Content: ``size`` x ``size`` images (256 by default) of textured ground with a few
non-overlapping rotated rectangles. Each class has its own colour and aspect ratio (DOTA and
DIOR-R: three classes; HRSC2016: one, 'ship', long grey hulls on water), and every angle is
drawn exactly as annotated, so a short run learns it. ``num_train`` images are for training
(DOTA train/, DIOR-R train.txt + val.txt, HRSC trainval.txt), ``num_test`` for evaluation
(DOTA val/, DIOR-R test.txt, HRSC test.txt). Everything is a function of (seed, format, split,
index): the same arguments give identical bytes.
"""
from __future__ import annotations

import argparse
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic_rotated.json"
FORMATS = ("dota", "dior", "hrsc")
MIN_SIZE = 96  # below this the objects (>= 20 px) no longer fit several to an image

# Classes drawn per format (names exactly as the real annotations spell them) and their looks:
# RGB colour, (min, max) long side as a fraction of the image, (min, max) aspect ratio.
DOTA_CLASSES = ("plane", "ship", "large-vehicle")
DIOR_CLASSES = ("airplane", "ship", "vehicle")
HRSC_CLASSES = ("ship",)
_LOOKS: dict[str, list[tuple[tuple[int, int, int], tuple[float, float], tuple[float, float]]]] = {
    "dota": [((225, 45, 40), (0.16, 0.26), (1.2, 1.6)),
             ((40, 90, 225), (0.18, 0.28), (2.2, 3.0)),
             ((235, 215, 40), (0.12, 0.20), (1.6, 2.2))],
    "dior": [((225, 45, 40), (0.16, 0.26), (1.2, 1.6)),
             ((40, 90, 225), (0.18, 0.28), (2.2, 3.0)),
             ((235, 215, 40), (0.12, 0.20), (1.6, 2.2))],
    "hrsc": [((215, 215, 210), (0.25, 0.40), (3.0, 4.5))],
}
_BACKGROUND = {"dota": (96, 104, 88), "dior": (110, 100, 86), "hrsc": (30, 62, 96)}

HRSC_SHIP_CLASS_ID = "100000001"  # HRSC2016's class id of the level-1 class 'ship'
DIOR_FIRST_TEST_ID = 11726  # real DIOR-R numbers trainval 00001-11725 and test from 11726


@dataclass(frozen=True)
class RotatedObject:
    """One annotated object: class index, centre (px), long side w, short side h (px), angle.

    ``angle`` is in radians from the image x axis to the long side, measured in image
    coordinates (y down, so positive is clockwise on screen), in [-pi/2, pi/2): mmrotate's
    rbox convention in its le90 range, and what HRSC2016's mbox_ang holds.
    """

    label: int
    cx: float
    cy: float
    w: float
    h: float
    angle: float

    def corners(self) -> np.ndarray:
        """The four corners (4, 2) in image pixels, clockwise on screen (DOTA's order), the
        same points as mmrotate's ``rbox2qbox``."""
        u = np.array([math.cos(self.angle), math.sin(self.angle)]) * self.w / 2  # along w
        v = np.array([-math.sin(self.angle), math.cos(self.angle)]) * self.h / 2  # along h
        c = np.array([self.cx, self.cy])
        return np.stack([c - u - v, c + u - v, c + u + v, c - u + v])


# ----------------------------------------------------------------------------- drawing


def _sample_objects(rng: np.random.Generator, fmt: str, size: int) -> list[RotatedObject]:
    """3-6 objects that lie inside the image and do not overlap (circumscribed circles)."""
    looks = _LOOKS[fmt]
    objects: list[RotatedObject] = []
    for _ in range(int(rng.integers(3, 7))):
        label = int(rng.integers(len(looks)))
        _, long_side, aspect = looks[label]
        w = float(rng.uniform(*long_side)) * size
        h = w / float(rng.uniform(*aspect))
        radius = math.hypot(w, h) / 2
        for _attempt in range(30):
            cx, cy = (float(v) for v in rng.uniform(radius + 2, size - radius - 2, 2))
            if all(math.hypot(cx - o.cx, cy - o.cy) > radius + math.hypot(o.w, o.h) / 2 + 2 for o in objects):
                angle = float(rng.uniform(-math.pi / 2, math.pi / 2))
                objects.append(RotatedObject(label, round(cx, 1), round(cy, 1), round(w, 1),
                                             round(h, 1), round(angle, 4)))
                break
    return objects


def _object_mask(obj: RotatedObject, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside the rotated rectangle."""
    dx, dy = xx + 0.5 - obj.cx, yy + 0.5 - obj.cy
    along = dx * math.cos(obj.angle) + dy * math.sin(obj.angle)
    across = -dx * math.sin(obj.angle) + dy * math.cos(obj.angle)
    return (np.abs(along) <= obj.w / 2) & (np.abs(across) <= obj.h / 2)


def synthesize_image(seed: int, fmt: str, split: str, index: int,
                     size: int) -> tuple[np.ndarray, list[RotatedObject]]:
    """One (image, objects) pair: (size, size, 3) uint8 RGB and the objects drawn on it."""
    key = [seed, FORMATS.index(fmt), 0 if split == "train" else 1, index]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.empty((size, size, 3), np.float32)
    image[:] = np.asarray(_BACKGROUND[fmt], np.float32) + rng.uniform(-8, 8, 3)
    image += rng.normal(0.0, 10.0, (size, size, 1))  # ground texture
    objects = _sample_objects(rng, fmt, size)
    for obj in objects:
        colour = np.asarray(_LOOKS[fmt][obj.label][0], np.float32) + rng.uniform(-12, 12, 3)
        image[_object_mask(obj, xx, yy)] = colour
    image += rng.normal(0.0, 4.0, image.shape)  # sensor noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


# ----------------------------------------------------------------------------- formats


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def dota_label_text(objects: Sequence[RotatedObject], classes: Sequence[str] = DOTA_CLASSES) -> str:
    """A DOTA v1.0 labelTxt file: two header lines, then 'x1 y1 ... x4 y4 class difficult'."""
    lines = ["imagesource:GoogleEarth", "gsd:0.5"]
    for obj in objects:
        corners = " ".join(_fmt(v) for v in obj.corners().ravel())
        lines.append(f"{corners} {classes[obj.label]} 0")
    return "\n".join(lines) + "\n"


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def dior_xml(name: str, size: int, objects: Sequence[RotatedObject],
             classes: Sequence[str] = DIOR_CLASSES) -> bytes:
    """A DIOR-R 'Oriented Bounding Boxes' annotation: VOC-like, corners in <robndbox>."""
    root = ET.Element("annotation")
    _sub(root, "filename", f"{name}.jpg")
    _sub(_sub(root, "source"), "database", "DIOR")
    dims = _sub(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        _sub(dims, tag, value)
    _sub(root, "segmented", 0)
    for obj in objects:
        node = _sub(root, "object")
        _sub(node, "name", classes[obj.label])
        _sub(node, "pose", "Unspecified")
        _sub(node, "truncated", 0)
        _sub(node, "difficult", 0)
        _sub(node, "type", "robndbox")
        box = _sub(node, "robndbox")
        corners = obj.corners()
        for (x, y), corner in zip(corners, ("left_top", "right_top", "right_bottom", "left_bottom")):
            _sub(box, f"x_{corner}", _fmt(x))
            _sub(box, f"y_{corner}", _fmt(y))
        _sub(node, "angle", round(math.degrees(obj.angle), 2))
    return ET.tostring(root, encoding="utf-8")


def hrsc_xml(image_id: str, size: int, objects: Sequence[RotatedObject]) -> bytes:
    """An HRSC2016 annotation: HRSC_Image with HRSC_Objects/HRSC_Object (mbox_* rotated boxes)."""
    root = ET.Element("HRSC_Image")
    for tag, value in (("Img_ID", image_id), ("Img_FileName", image_id), ("Img_FileFmt", "bmp"),
                       ("Img_SizeWidth", size), ("Img_SizeHeight", size), ("Img_SizeDepth", 3),
                       ("Img_Resolution", 1.0), ("segmented", 0), ("Annotated", 1)):
        _sub(root, tag, value)
    objs = _sub(root, "HRSC_Objects")
    for k, obj in enumerate(objects):
        node = _sub(objs, "HRSC_Object")
        corners = obj.corners()
        (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
        # The bow ("header") is the end of the long side that the angle points to.
        head = (obj.cx + math.cos(obj.angle) * obj.w / 2, obj.cy + math.sin(obj.angle) * obj.w / 2)
        for tag, value in (("Object_ID", f"{int(image_id) * 10 + k}"), ("Class_ID", HRSC_SHIP_CLASS_ID),
                           ("Object_NO", k + 1), ("truncated", 0), ("difficult", 0),
                           ("box_xmin", int(x0)), ("box_ymin", int(y0)),
                           ("box_xmax", int(math.ceil(x1))), ("box_ymax", int(math.ceil(y1))),
                           ("mbox_cx", f"{obj.cx:.4f}"), ("mbox_cy", f"{obj.cy:.4f}"),
                           ("mbox_w", f"{obj.w:.4f}"), ("mbox_h", f"{obj.h:.4f}"),
                           ("mbox_ang", f"{obj.angle:.4f}"), ("segmented", 0),
                           ("header_x", int(round(head[0]))), ("header_y", int(round(head[1])))):
            _sub(node, tag, value)
    return ET.tostring(root, encoding="utf-8")


def dior_ids(num_train: int, num_test: int) -> dict[str, list[str]]:
    """DIOR-R image ids per ImageSets/Main list: every 4th trainval image goes to val."""
    trainval = [f"{i:05d}" for i in range(1, num_train + 1)]
    return {"train": [n for k, n in enumerate(trainval) if k % 4 != 3],
            "val": [n for k, n in enumerate(trainval) if k % 4 == 3],
            "test": [f"{DIOR_FIRST_TEST_ID + i:05d}" for i in range(num_test)]}


def hrsc_ids(num_train: int, num_test: int) -> dict[str, list[str]]:
    """HRSC2016-style 9-digit image ids for ImageSets/trainval.txt and test.txt."""
    return {"trainval": [f"{100000001 + i}" for i in range(num_train)],
            "test": [f"{100001001 + i}" for i in range(num_test)]}


def _write_dota(target: Path, num_train: int, num_test: int, size: int, seed: int) -> None:
    for split, count in (("train", num_train), ("val", num_test)):
        (target / split / "images").mkdir(parents=True)
        (target / split / "labelTxt").mkdir(parents=True)
        for index in range(count):
            name = f"P{index + (0 if split == 'train' else num_train):04d}"
            image, objects = synthesize_image(seed, "dota", split, index, size)
            Image.fromarray(image).save(target / split / "images" / f"{name}.png", format="PNG")
            (target / split / "labelTxt" / f"{name}.txt").write_text(dota_label_text(objects))


def _write_dior(target: Path, num_train: int, num_test: int, size: int, seed: int) -> None:
    ann_dir = target / "Annotations" / "Oriented Bounding Boxes"
    ann_dir.mkdir(parents=True)
    (target / "ImageSets" / "Main").mkdir(parents=True)
    ids = dior_ids(num_train, num_test)
    for split, names in (("train", ids["train"] + ids["val"]), ("test", ids["test"])):
        image_dir = target / ("JPEGImages-trainval" if split == "train" else "JPEGImages-test")
        image_dir.mkdir()
        for index, name in enumerate(sorted(names)):
            image, objects = synthesize_image(seed, "dior", split, index, size)
            Image.fromarray(image).save(image_dir / f"{name}.jpg", format="JPEG", quality=95)
            (ann_dir / f"{name}.xml").write_bytes(dior_xml(name, size, objects))
    for split, names in ids.items():
        (target / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


def _write_hrsc(target: Path, num_train: int, num_test: int, size: int, seed: int) -> None:
    (target / "FullDataSet" / "AllImages").mkdir(parents=True)
    (target / "FullDataSet" / "Annotations").mkdir(parents=True)
    (target / "ImageSets").mkdir(exist_ok=True)  # DIOR-R's ImageSets/Main may share it
    for split, names in hrsc_ids(num_train, num_test).items():
        for index, name in enumerate(names):
            image, objects = synthesize_image(seed, "hrsc", "train" if split == "trainval" else "test",
                                              index, size)
            Image.fromarray(image).save(target / "FullDataSet" / "AllImages" / f"{name}.bmp", format="BMP")
            (target / "FullDataSet" / "Annotations" / f"{name}.xml").write_bytes(hrsc_xml(name, size, objects))
        (target / "ImageSets" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


_WRITERS = {"dota": _write_dota, "dior": _write_dior, "hrsc": _write_hrsc}


# ----------------------------------------------------------------------------- publishing


def _params(formats: Sequence[str], num_train: int, num_test: int, size: int, seed: int) -> dict[str, object]:
    """The marker's content: everything the generated bytes depend on."""
    return {"generator": "ringmoe-bench synthetic rotated detection", "generator_version": GENERATOR_VERSION,
            "formats": sorted(formats), "num_train": num_train, "num_test": num_test, "size": size,
            "seed": seed}


def _validate(formats: Sequence[str], num_train: int, num_test: int, size: int, seed: int) -> None:
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    if num_train < 1 or num_test < 1:
        raise ValueError(f"need at least one image per split, got num_train={num_train}, num_test={num_test}")
    if not MIN_SIZE <= size <= 4096:
        raise ValueError(f"size must be in [{MIN_SIZE}, 4096], got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")


def _write_dataset(target: Path, params: dict[str, object]) -> None:
    for fmt in FORMATS:
        if fmt in params["formats"]:
            _WRITERS[fmt](target, int(params["num_train"]), int(params["num_test"]), int(params["size"]),
                          int(params["seed"]))


def _no_file_list(params: dict[str, object]) -> list[Path]:
    return []  # the marker, written after every file, is the proof of completeness


def generate_rotated(root: str | Path, formats: Sequence[str] = FORMATS, num_train: int = 16,
                     num_test: int = 8, size: int = 256, seed: int = 0) -> Path:
    """Write the chosen layouts under root, atomically (temp dir beside it, then rename).

    A complete dataset with the same parameters (the JSON marker) is returned as is.
    Raises FileExistsError if root is a non-empty directory this generator did not write.
    """
    root = Path(root)
    formats = tuple(dict.fromkeys(formats))
    _validate(formats, num_train, num_test, size, seed)
    params = _params(formats, num_train, num_test, size, seed)
    return build_atomically(root, MARKER_NAME, params, _no_file_list, _write_dataset)


# ----------------------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.rotated",
        description="Write small synthetic rotated-detection data in the DOTA (txt), DIOR-R and "
                    "HRSC2016 layouts, side by side in one root.",
        epilog="\n\n".join(__doc__.split("\n\n")[2:4]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/rotated_demo", help="output directory (default: %(default)s)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                        help="layouts to write (default: all)")
    parser.add_argument("--num-train", type=int, default=16, help="training images per format (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=8, help="evaluation images per format (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    root = generate_rotated(args.root, formats=args.formats, num_train=args.num_train,
                            num_test=args.num_test, size=args.size, seed=args.seed)
    print(f"synthetic rotated-detection data ({', '.join(args.formats)}) ready at {root} "
          f"({args.num_train} train + {args.num_test} eval images of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
