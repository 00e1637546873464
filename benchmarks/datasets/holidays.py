"""Synthetic INRIA Holidays, written in the layout the real download unpacks to.

Why synthetic: the real dataset (Jégou et al. 2008, 1491 holiday photos of 500 scenes) is a
download the build machines cannot make, so tests and demos use a small generated twin in the
real on-disk format:

    <root>/jpg/<GGGG><VV>.jpg    e.g. jpg/100000.jpg, jpg/100001.jpg, jpg/100002.jpg

One flat folder of JPEGs (``jpg1.tar.gz`` and ``jpg2.tar.gz`` both unpack into ``jpg/``). A file
name is a 6-digit number: the first four digits ``GGGG`` (1000-1499) name the group, one scene
photographed several times; the last two ``VV`` number its photos. Photo ``00`` is the group's
query, every other photo of the group is relevant to it, and all 1491 photos are the database.
The official protocol (``eval_holidays/holidays_map.py``) ranks the whole database for each
query, removes the query itself from its ranking, and averages the trapezoidal average precision
over the 500 queries (mAP); ``benchmarks/tasks/retrieval.py`` runs that protocol.

What differs from the real data (on purpose, for speed): fewer groups (default 30, 3-5 photos
each) and small photos (long side 160 px; the real ones are a few megapixels). Content: each
group is one synthetic scene (a two-tone sky/ground backdrop in the group's own colours with
smooth texture, and a handful of coloured discs, boxes and triangles at group-specific places);
each photo views it through a different crop (55-80% of the scene, landscape or portrait), a
small camera roll (up to 15 degrees), exposure, gamma and colour-cast changes, sensor noise and
JPEG quality. So photos of one group share layout and colours and differ in framing and
photometry: an embedding that captures the scene retrieves them, and chance mAP is low.
Everything is a function of (seed, group, photo): the same arguments give identical bytes.
"""
from __future__ import annotations

import argparse
import colorsys
import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.datasets.drawing import smooth_noise
from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic_holidays.json"
IMAGE_DIR = "jpg"  # what the real archives unpack to
FIRST_GROUP = 1000  # real Holidays groups are numbered 1000..1499
MAX_GROUPS = 500
QUERY_INDEX = 0  # photo 00 of each group is its query
NAME_RE = re.compile(r"^(\d{4})(\d{2})\.jpg$", re.IGNORECASE)
MIN_SIZE = 32
_COUNTS_STREAM = 1  # seed stream for the photos-per-group draw (0 is for scenes and views)


# ----------------------------------------------------------------------------- naming


def image_name(group: int, index: int) -> str:
    """File name of photo ``index`` of group ``group`` (a Holidays group number, 1000-1499)."""
    return f"{group:04d}{index:02d}.jpg"


def parse_name(name: str) -> tuple[int, int] | None:
    """(group, photo index) of a Holidays file name, or None for any other name."""
    match = NAME_RE.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def group_sizes(groups: int, min_views: int, max_views: int, seed: int) -> list[int]:
    """Photos per group (query included), drawn once from the seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _COUNTS_STREAM]))
    return [int(n) for n in rng.integers(min_views, max_views + 1, size=groups)]


def file_names(groups: int, min_views: int, max_views: int, seed: int) -> list[str]:
    """Every file name of the dataset, sorted (group by group, query first)."""
    sizes = group_sizes(groups, min_views, max_views, seed)
    return [image_name(FIRST_GROUP + g, v) for g, n in enumerate(sizes) for v in range(n)]


# ----------------------------------------------------------------------------- drawing


def _colour(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def synthesize_scene(seed: int, group: int, side: int) -> Image.Image:
    """The (side x side) RGB scene of group number ``group``: what all its photos look at."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, group]))
    hue = rng.uniform()
    sky = np.array(_colour(hue, rng.uniform(0.2, 0.6), rng.uniform(0.7, 0.95)), np.float64)
    ground = np.array(_colour(hue + rng.uniform(0.25, 0.75), rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.6)),
                      np.float64)
    horizon = side * rng.uniform(0.35, 0.65)
    yy = np.arange(side, dtype=np.float64)[:, None, None]
    blend = 1.0 / (1.0 + np.exp(-(yy - horizon) / (side * 0.02)))  # soft horizon line
    image = sky * (1 - blend) + ground * blend
    image = image * (1 + 0.12 * smooth_noise(rng, side, 6)[..., None])  # low-frequency texture
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 8))):
        colour = _colour(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.4, 1.0))
        cx, cy = rng.uniform(0.2, 0.8, 2) * side  # kept central: every crop sees most objects
        radius = side * rng.uniform(0.05, 0.13)
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
        elif kind == 1:
            half_w, half_h = radius * rng.uniform(0.6, 1.4), radius * rng.uniform(0.6, 1.4)
            draw.rectangle([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=colour)
        else:
            angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
            draw.polygon([(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles], fill=colour)
    return canvas


def synthesize_photo(seed: int, group: int, index: int, size: int, scene: Image.Image | None = None) -> bytes:
    """JPEG bytes of photo ``index`` of group ``group``, long side ``size`` px.

    The scene is seen through a random crop (landscape 4:3 or, one time in four, portrait),
    rolled by up to 15 degrees about the scene centre, then its exposure, gamma and white balance
    change and sensor noise is added. The crop stays inside the circle inscribed in the scene,
    which a roll about the centre maps onto itself, so no photo shows blank corners.
    """
    side = 2 * size
    scene = scene if scene is not None else synthesize_scene(seed, group, side)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, group, index + 1]))
    rolled = scene.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR)
    portrait = rng.uniform() < 0.25
    reach = side / 2 * rng.uniform(0.55, 0.8)  # half-diagonal of the crop
    slack = side / 2 - reach
    cx, cy = side / 2 + rng.uniform(-slack, slack, 2) / np.sqrt(2)
    half_long, half_short = reach * 0.8, reach * 0.6  # a 4:3 box with half-diagonal ``reach``
    half_w, half_h = (half_short, half_long) if portrait else (half_long, half_short)
    crop = rolled.crop((round(cx - half_w), round(cy - half_h), round(cx + half_w), round(cy + half_h)))
    out = (round(size * 0.75), size) if portrait else (size, round(size * 0.75))
    photo = np.asarray(crop.resize(out, Image.BILINEAR), np.float64) / 255.0
    photo = photo ** rng.uniform(0.8, 1.25) * rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, 3)
    photo = photo * 255.0 + rng.normal(0.0, 3.0, photo.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(photo), 0, 255).astype(np.uint8)).save(
        buffer, format="JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue()


# ----------------------------------------------------------------------------- writing


def _params(groups: int, min_views: int, max_views: int, size: int, seed: int) -> dict[str, object]:
    """The marker's content: everything the generated bytes depend on."""
    return {"generator": "ringmoe-bench synthetic INRIA Holidays", "generator_version": GENERATOR_VERSION,
            "layout": f"{IMAGE_DIR}/GGGGVV.jpg, VV=00 the query of group GGGG", "groups": groups,
            "min_views": min_views, "max_views": max_views, "size": size, "seed": seed}


def _validate(groups: int, min_views: int, max_views: int, size: int, seed: int) -> None:
    if not 1 <= groups <= MAX_GROUPS:
        raise ValueError(f"groups must be in 1..{MAX_GROUPS} (4-digit group numbers from {FIRST_GROUP}), "
                         f"got {groups}")
    if not 2 <= min_views <= max_views <= 100:
        raise ValueError(f"need 2 <= min_views <= max_views <= 100 (a query and at least one relevant "
                         f"photo; 2-digit photo numbers), got {min_views}, {max_views}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")


def _expected_files(params: dict[str, object]) -> list[Path]:
    names = file_names(int(params["groups"]), int(params["min_views"]), int(params["max_views"]),
                       int(params["seed"]))
    return [Path(IMAGE_DIR, name) for name in names]


def _write_dataset(target: Path, params: dict[str, object]) -> None:
    """Write every photo under target/jpg (build_atomically adds the marker and publishes)."""
    size, seed = int(params["size"]), int(params["seed"])
    (target / IMAGE_DIR).mkdir()
    sizes = group_sizes(int(params["groups"]), int(params["min_views"]), int(params["max_views"]), seed)
    for g, count in enumerate(sizes):
        group = FIRST_GROUP + g
        scene = synthesize_scene(seed, group, 2 * size)  # drawn once, photographed ``count`` times
        for index in range(count):
            (target / IMAGE_DIR / image_name(group, index)).write_bytes(
                synthesize_photo(seed, group, index, size, scene))


def generate_holidays(root: str | Path, groups: int = 30, min_views: int = 3, max_views: int = 5,
                      size: int = 160, seed: int = 0) -> Path:
    """Write a synthetic INRIA Holidays under root (``root/jpg/GGGGVV.jpg``), atomically (built in
    a temp dir beside it, then renamed); a complete dataset with the same parameters (see its
    marker json) is reused as it is. Returns root.

    Raises FileExistsError if root is a non-empty directory this generator did not write.
    """
    _validate(groups, min_views, max_views, size, seed)
    params = _params(groups, min_views, max_views, size, seed)
    return build_atomically(Path(root), MARKER_NAME, params, _expected_files, _write_dataset)


# ----------------------------------------------------------------------------- command line


_EPILOG = """\
layout written (that of the real jpg1.tar.gz + jpg2.tar.gz):
  ROOT/jpg/GGGGVV.jpg           e.g. ROOT/jpg/100000.jpg (query of group 1000), 100001.jpg, ...
  ROOT/synthetic_holidays.json  parameters; present only when complete

protocol: VV=00 is the query of group GGGG, the group's other photos are its relevant
images, every photo is in the database, the query is removed from its own ranking, mAP is
the mean over queries of the trapezoidal AP (eval_holidays/holidays_map.py). Run it with
  python benchmarks/run.py --task retrieval --checkpoint none --data-root ROOT
An existing complete dataset with the same parameters is reused, not rewritten.
"""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.holidays",
        description="Write a small synthetic INRIA Holidays (instance retrieval) in its real layout.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/holidays", help="output directory (default: %(default)s)")
    parser.add_argument("--groups", type=int, default=30, help="scenes, one query each (default: %(default)s)")
    parser.add_argument("--min-views", type=int, default=3, help="fewest photos per group (default: %(default)s)")
    parser.add_argument("--max-views", type=int, default=5, help="most photos per group (default: %(default)s)")
    parser.add_argument("--size", type=int, default=160, help="long side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    root = generate_holidays(args.root, groups=args.groups, min_views=args.min_views,
                             max_views=args.max_views, size=args.size, seed=args.seed)
    count = len(file_names(args.groups, args.min_views, args.max_views, args.seed))
    print(f"synthetic INRIA Holidays ready at {root} ({args.groups} groups, {count} photos with a long "
          f"side of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
