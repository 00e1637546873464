"""Satellite-video multi-object tracking data in the MOT-Challenge layout (AIR-MOT style).

Two things live here:

1. A generator of small synthetic satellite videos, written in the real on-disk layout that
   AIR-MOT (planes and ships in Jilin-1 satellite video) and the MOT Challenge use:

       <root>/train/<SEQ>/img1/000001.jpg ...   frames, 1-based, zero-padded to six digits
       <root>/train/<SEQ>/gt/gt.txt             frame,id,left,top,width,height,conf,class,visibility
       <root>/train/<SEQ>/seqinfo.ini           [Sequence] name, imDir, frameRate, seqLength,
                                                imWidth, imHeight, imExt

   gt.txt class column: 1 = plane, 2 = ship (``CLASSES`` in that order). Boxes are the tight
   pixel extent of each drawn object, so they are exact; conf is 1 and visibility 1.0 (objects
   never overlap). Why synthetic: real AIR-MOT needs a separate download; tests and demos need
   something small (default 3 sequences x 24 frames of 256 x 256 px; real satellite video
   frames are about 1000 px and hundreds of frames long). The content is a static textured
   scene (land, an apron, a stretch of water) with per-frame sensor noise, over which planes
   (light grey crosses, on land) and ships (orange hulls, on water) move along known straight
   or curved tracks, oriented along their heading. Some objects enter late or leave early, so
   track birth and death are exercised. Everything is a function of (seed, sequence index).

2. A converter from that layout (real or synthetic) to the CocoVideo JSON that mmdet 3.x's
   ``MOTChallengeDataset`` reads (and ``CocoDataset`` reads for detector training): videos,
   images with ``frame_id`` (0-based within the split) and ``mot_frame_id`` (the file's frame
   number), annotations with ``instance_id``, ``mot_conf`` and ``visibility``. A split takes a
   folder (``train``) and its frames: all, the first half or the second half of each sequence
   (the MOT17 "half" protocol when a dataset has no separate labelled validation videos).
"""
from __future__ import annotations

import argparse
import configparser
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.datasets.drawing import smooth_noise
from benchmarks.datasets.publish import build_atomically

# Bump when the generated content changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic_airmot.json"
CLASSES: tuple[str, ...] = ("plane", "ship")  # gt.txt class column 1, 2
PLANE, SHIP = 1, 2
FRAME_RATE = 10  # Jilin-1 video is 10 fps
MIN_SIZE = 96  # below this the land/water scene cannot hold its objects apart
FRAME_SPLITS = ("all", "first_half", "second_half")


# ----------------------------------------------------------------------------- tracks


@dataclass(frozen=True)
class Track:
    """One object's true path: pose at every frame of [start, end) (0-based frame indices)."""

    track_id: int
    cls: int  # PLANE or SHIP
    start: int
    end: int
    length: float  # px, nose to tail / bow to stern
    width: float  # px, wing span (plane) or beam (ship)
    colour: tuple[int, int, int]
    xs: tuple[float, ...]  # centre per frame in [start, end)
    ys: tuple[float, ...]
    headings: tuple[float, ...]  # radians, direction of motion

    def pose(self, frame: int) -> tuple[float, float, float]:
        k = frame - self.start
        return self.xs[k], self.ys[k], self.headings[k]


def _water_line(size: int, rng: np.random.Generator) -> np.ndarray:
    """Row of the land/water boundary for each column: water lies below it (a wavy shore)."""
    cols = np.arange(size)
    base = size * rng.uniform(0.52, 0.58)
    return base + size * 0.04 * np.sin(2 * np.pi * cols / size * rng.uniform(0.8, 1.6) + rng.uniform(0, 6.3))


def _path(rng: np.random.Generator, n: int, speed: float, curved: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets from the start point and headings of a straight or constant-turn path of n frames."""
    heading0 = rng.uniform(0, 2 * np.pi)
    turn = rng.uniform(0.03, 0.07) * rng.choice([-1, 1]) if curved else 0.0
    headings = heading0 + turn * np.arange(n)
    steps_x, steps_y = speed * np.cos(headings), speed * np.sin(headings)
    xs = np.concatenate([[0.0], np.cumsum(steps_x[:-1])])
    ys = np.concatenate([[0.0], np.cumsum(steps_y[:-1])])
    return xs, ys, headings


def _fits(xs: np.ndarray, ys: np.ndarray, reach: float, size: int, shore: np.ndarray, on_water: bool) -> bool:
    """The whole path stays inside the frame and on its side of the shore, with a margin."""
    if xs.min() < reach or ys.min() < reach or xs.max() > size - reach or ys.max() > size - reach:
        return False
    shore_rows = shore[np.clip(np.rint(xs).astype(int), 0, size - 1)]
    return bool(np.all(ys > shore_rows + reach) if on_water else np.all(ys < shore_rows - reach))


def _apart(xs: np.ndarray, ys: np.ndarray, start: int, others: list[Track], gap: float) -> bool:
    """Centres keep at least ``gap`` px from every other object at every shared frame."""
    for other in others:
        for k in range(len(xs)):
            frame = start + k
            if other.start <= frame < other.end:
                ox, oy, _ = other.pose(frame)
                if math.hypot(xs[k] - ox, ys[k] - oy) < gap:
                    return False
    return True


def make_tracks(rng: np.random.Generator, num_frames: int, size: int, shore: np.ndarray,
                per_class: int = 3) -> list[Track]:
    """Planes on land and ships on water along known paths that never overlap."""
    scale = size / 256
    tracks: list[Track] = []
    for cls in (PLANE, SHIP):
        for index in range(per_class):
            for _attempt in range(500):
                track = _sample_track(rng, cls, index, len(tracks) + 1, num_frames, size, scale, shore, tracks)
                if track is not None:
                    tracks.append(track)
                    break
    return tracks


def _sample_track(rng: np.random.Generator, cls: int, index: int, track_id: int, num_frames: int,
                  size: int, scale: float, shore: np.ndarray, others: list[Track]) -> Track | None:
    """One candidate track, or None when it leaves its region or comes too close to another."""
    # The first object of each class spans the whole video; later ones may start late or end early.
    start = 0 if index == 0 else int(rng.integers(0, num_frames // 3 + 1))
    end = num_frames if index == 0 else int(rng.integers(max(start + 4, 2 * num_frames // 3), num_frames + 1))
    if cls == PLANE:
        length, width = rng.uniform(15, 21) * scale, rng.uniform(14, 19) * scale
        colour = tuple(int(v) for v in rng.integers(222, 246, 3))
    else:
        length, width = rng.uniform(13, 19) * scale, rng.uniform(5, 7) * scale
        colour = (int(rng.integers(225, 250)), int(rng.integers(135, 165)), int(rng.integers(40, 75)))
    dx, dy, headings = _path(rng, end - start, rng.uniform(1.0, 2.5) * scale, curved=bool(rng.random() < 0.5))
    reach = max(length, width) / 2 + 3
    xs, ys = rng.uniform(0, size) + dx, rng.uniform(0, size) + dy
    if not _fits(xs, ys, reach, size, shore, on_water=cls == SHIP):
        return None
    if not _apart(xs, ys, start, others, gap=reach + 14 * scale):
        return None
    return Track(track_id, cls, start, end, float(length), float(width), colour,
                 tuple(map(float, xs)), tuple(map(float, ys)), tuple(map(float, headings)))


# ----------------------------------------------------------------------------- drawing


def _outline(cls: int, length: float, width: float) -> list[tuple[float, float]]:
    """Polygon in object coordinates (u forward, v to the side), centred on the object."""
    half_l, half_w = length / 2, width / 2
    if cls == PLANE:  # fuselage with swept wings and a tailplane: a cross seen from above
        body = length / 7
        return [(half_l, 0), (0.25 * half_l, body), (0.05 * half_l, half_w), (-0.2 * half_l, half_w),
                (-0.1 * half_l, body), (-0.75 * half_l, body), (-half_l, 0.4 * half_w),
                (-half_l, -0.4 * half_w), (-0.75 * half_l, -body), (-0.1 * half_l, -body),
                (-0.2 * half_l, -half_w), (0.05 * half_l, -half_w), (0.25 * half_l, -body)]
    # A hull with a pointed bow.
    return [(half_l, 0), (0.45 * half_l, half_w), (-half_l, half_w), (-half_l, -half_w), (0.45 * half_l, -half_w)]


def _polygon(track: Track, frame: int) -> list[tuple[float, float]]:
    x, y, heading = track.pose(frame)
    c, s = math.cos(heading), math.sin(heading)
    return [(x + u * c - v * s, y + u * s + v * c) for u, v in _outline(track.cls, track.length, track.width)]


def _background(rng: np.random.Generator, size: int, shore: np.ndarray) -> np.ndarray:
    """Static scene: olive land with fields, a grey apron with markings, dark blue water."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    land = np.array([118, 112, 84], np.float32) + 14 * smooth_noise(rng, size, 8)[..., None]
    land += 5 * rng.normal(size=(size, size, 1))
    x0, x1 = sorted(rng.uniform(0.1, 0.9, 2) * size)
    apron = (xx > x0) & (xx < max(x1, x0 + size / 4)) & (yy > 0.08 * size) & (yy < 0.35 * size)
    land[apron] = np.array([150, 150, 146], np.float32) + 4 * rng.normal(size=(int(apron.sum()), 1))
    land[apron & (np.abs(yy - 0.2 * size) < 1)] = (205, 200, 120)  # a taxi line
    water = np.array([34, 58, 92], np.float32) + 6 * smooth_noise(rng, size, 16)[..., None]
    image = np.where((yy > shore[None, :])[..., None], water, land)
    return image.astype(np.float32)


def render_frame(background: np.ndarray, tracks: Sequence[Track], frame: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int, int, int, int, int]]]:
    """One RGB frame and its gt rows (id, class, left, top, width, height) of the visible objects.

    Boxes are the tight pixel extent of each object's drawn mask, so gt matches the image exactly.
    """
    size = background.shape[0]
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    rows = []
    for track in tracks:
        if not track.start <= frame < track.end:
            continue
        mask = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask).polygon(_polygon(track, frame), fill=255)
        ys, xs = np.nonzero(np.asarray(mask))
        if len(xs) == 0:
            continue
        image.paste(track.colour, mask=mask)
        left, top = int(xs.min()), int(ys.min())
        rows.append((track.track_id, track.cls, left, top, int(xs.max()) - left + 1, int(ys.max()) - top + 1))
    # Satellite video sensor noise and a slight per-frame gain flicker.
    pixels = np.asarray(image, np.float32) * rng.uniform(0.97, 1.03) + rng.normal(0.0, 3.0, background.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), rows


def sequence_name(index: int) -> str:
    return f"SAT-{index + 1:02d}"


# ----------------------------------------------------------------------------- writing


def _write_seqinfo(path: Path, name: str, length: int, size: int) -> None:
    path.write_text(f"[Sequence]\nname={name}\nimDir=img1\nframeRate={FRAME_RATE}\nseqLength={length}\n"
                    f"imWidth={size}\nimHeight={size}\nimExt=.jpg\n")


def write_sequence(seq_dir: Path, seed: int, index: int, num_frames: int, size: int) -> list[Track]:
    """Write one sequence (frames, gt/gt.txt, seqinfo.ini); return its true tracks."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    shore = _water_line(size, rng)
    background = _background(rng, size, shore)
    tracks = make_tracks(rng, num_frames, size, shore)
    (seq_dir / "img1").mkdir(parents=True)
    (seq_dir / "gt").mkdir()
    lines = []
    for frame in range(num_frames):
        pixels, rows = render_frame(background, tracks, frame, rng)
        Image.fromarray(pixels).save(seq_dir / "img1" / f"{frame + 1:06d}.jpg", quality=95)
        lines += [f"{frame + 1},{tid},{left},{top},{w},{h},1,{cls},1.0" for tid, cls, left, top, w, h in rows]
    (seq_dir / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
    _write_seqinfo(seq_dir / "seqinfo.ini", seq_dir.name, num_frames, size)
    return tracks


def _params(num_seqs: int, num_frames: int, size: int, seed: int) -> dict[str, object]:
    """The marker's content: everything the generated bytes depend on."""
    return {"generator": "ringmoe-bench synthetic AIR-MOT", "generator_version": GENERATOR_VERSION,
            "layout": "MOT Challenge", "classes": list(CLASSES), "num_seqs": num_seqs,
            "num_frames": num_frames, "size": size, "seed": seed}


def _validate(num_seqs: int, num_frames: int, size: int, seed: int) -> None:
    if num_seqs < 1:
        raise ValueError(f"need at least one sequence, got num_seqs={num_seqs}")
    if num_frames < 8:
        raise ValueError(f"need at least 8 frames per sequence (two halves of 4), got {num_frames}")
    if not MIN_SIZE <= size <= 4096:
        raise ValueError(f"size must be in [{MIN_SIZE}, 4096], got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")


def _expected_files(params: dict[str, object]) -> list[Path]:
    files = []
    for index in range(int(params["num_seqs"])):
        seq = Path("train", sequence_name(index))
        files += [seq / "gt" / "gt.txt", seq / "seqinfo.ini"]
        files += [seq / "img1" / f"{k + 1:06d}.jpg" for k in range(int(params["num_frames"]))]
    return files


def _write_dataset(target: Path, params: dict[str, object]) -> None:
    for index in range(int(params["num_seqs"])):
        write_sequence(target / "train" / sequence_name(index), int(params["seed"]), index,
                       int(params["num_frames"]), int(params["size"]))


def generate_airmot(root: str | Path, num_seqs: int = 3, num_frames: int = 24, size: int = 256,
                    seed: int = 0) -> Path:
    """Write synthetic AIR-MOT-style sequences under root/train in the MOT-Challenge layout.

    Built in a temp dir beside root and renamed into place; a complete dataset with the same
    parameters (recorded in a marker JSON) is reused. Returns root. Raises FileExistsError if
    root is a non-empty directory this generator did not write.
    """
    root = Path(root)
    _validate(num_seqs, num_frames, size, seed)
    params = _params(num_seqs, num_frames, size, seed)
    return build_atomically(root, MARKER_NAME, params, _expected_files, _write_dataset)


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SeqInfo:
    """A sequence's seqinfo.ini."""

    name: str
    im_dir: str
    frame_rate: int
    length: int
    width: int
    height: int
    ext: str


def read_seqinfo(seq_dir: Path) -> SeqInfo:
    """Parse ``seqinfo.ini`` (configparser lower-cases keys: imDir -> imdir)."""
    parser = configparser.ConfigParser()
    if not parser.read(seq_dir / "seqinfo.ini"):
        raise FileNotFoundError(f"{seq_dir / 'seqinfo.ini'} is missing")
    section = parser["Sequence"]
    return SeqInfo(name=section.get("name", seq_dir.name), im_dir=section.get("imDir", "img1"),
                   frame_rate=int(float(section.get("frameRate", "0"))), length=int(section["seqLength"]),
                   width=int(section["imWidth"]), height=int(section["imHeight"]),
                   ext=section.get("imExt", ".jpg"))


def read_gt(path: Path) -> np.ndarray:
    """gt.txt as an (N, 9) float array: frame, id, left, top, width, height, conf, class, visibility.

    MOT15-style files with fewer columns get conf 1, class 1 and visibility 1.
    """
    rows = [line.split(",") for line in path.read_text().splitlines() if line.strip()]
    table = np.ones((len(rows), 9), np.float64)
    for i, row in enumerate(rows):
        values = [float(v) for v in row[:9]]
        table[i, :len(values)] = values
        if len(values) < 8 or values[7] < 0:  # MOT15 writes -1 for the unused columns
            table[i, 6:9] = 1.0
    return table


def _frame_numbers(length: int, frames: str) -> range:
    """1-based frame numbers of a split: all, or the first/second half (first gets the odd one)."""
    if frames not in FRAME_SPLITS:
        raise ValueError(f"frames must be one of {FRAME_SPLITS}, got {frames!r}")
    middle = (length + 1) // 2
    return {"all": range(1, length + 1), "first_half": range(1, middle + 1),
            "second_half": range(middle + 1, length + 1)}[frames]


def sequence_dirs(root: Path, folder: str) -> list[Path]:
    """The sequences of ``root/folder`` (directories with a seqinfo.ini), sorted by name."""
    base = Path(root) / folder
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a directory (expected the MOT layout <root>/{folder}/<SEQ>/)")
    seqs = sorted(p for p in base.iterdir() if (p / "seqinfo.ini").is_file())
    if not seqs:
        raise FileNotFoundError(f"no sequences (<SEQ>/seqinfo.ini) under {base}")
    return seqs


def mot_to_cocovideo(root: str | Path, folder: str = "train", frames: str = "all",
                     classes: Sequence[str] = CLASSES) -> dict:
    """The CocoVideo dict that mmdet's MOTChallengeDataset reads, for one split of the MOT layout.

    ``classes[k]`` is gt.txt class ``k + 1`` and becomes category id ``k + 1``; rows of other
    classes are left out. Rows with conf 0 (MOT's "ignore") are kept as ``iscrowd`` so detector
    training ignores them and TrackEval drops them (zero-marked). File names are relative to
    ``root/folder``, as the configs' data_prefix expects.
    """
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    out: dict = {"categories": categories, "videos": [], "images": [], "annotations": []}
    next_instance = 1
    for seq_dir in sequence_dirs(Path(root), folder):
        info = read_seqinfo(seq_dir)
        video_id = len(out["videos"]) + 1
        out["videos"].append({"id": video_id, "name": seq_dir.name, "fps": info.frame_rate,
                              "width": info.width, "height": info.height})
        gt_file = seq_dir / "gt" / "gt.txt"
        gt = read_gt(gt_file) if gt_file.is_file() else np.zeros((0, 9))
        instance_of: dict[int, int] = {}  # MOT ids are per sequence; instance ids are global
        for frame_id, number in enumerate(_frame_numbers(info.length, frames)):
            image_id = len(out["images"]) + 1
            out["images"].append({"id": image_id, "video_id": video_id, "frame_id": frame_id,
                                  "mot_frame_id": number, "width": info.width, "height": info.height,
                                  "file_name": f"{seq_dir.name}/{info.im_dir}/{number:06d}{info.ext}"})
            for row in gt[gt[:, 0] == number]:
                cls = int(row[7])
                if not 1 <= cls <= len(classes):
                    continue
                if int(row[1]) not in instance_of:
                    instance_of[int(row[1])] = next_instance
                    next_instance += 1
                left, top, w, h = (float(v) for v in row[2:6])
                out["annotations"].append({
                    "id": len(out["annotations"]) + 1, "image_id": image_id, "category_id": cls,
                    "instance_id": instance_of[int(row[1])], "bbox": [left, top, w, h], "area": w * h,
                    "iscrowd": int(row[6] == 0), "mot_conf": float(row[6]), "visibility": float(row[8])})
    return out


def write_json_atomic(data: dict, path: str | Path) -> Path:
    """Write JSON through a temp file in the same directory and rename it into place."""
    from converters.util import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(data, f)
    return path


# ----------------------------------------------------------------------------- command line


_EPILOG = """\
layout written (MOT Challenge, as AIR-MOT ships it):
  ROOT/train/SAT-01/img1/000001.jpg ...   frames
  ROOT/train/SAT-01/gt/gt.txt             frame,id,left,top,width,height,conf,class,visibility
  ROOT/train/SAT-01/seqinfo.ini           [Sequence] name imDir frameRate seqLength imWidth imHeight imExt
  ROOT/synthetic_airmot.json              parameters; present only when complete
gt classes: 1 plane, 2 ship.

convert a split to mmdet's CocoVideo JSON (what the tracking task does in its prepare step):
  python -m benchmarks.datasets.mot --root ROOT --to-coco out.json --frames second_half
"""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets.mot",
        description="Write small synthetic AIR-MOT-style satellite videos in the MOT-Challenge layout, "
                    "or convert a MOT-layout split to mmdet's CocoVideo JSON.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/airmot", help="dataset directory (default: %(default)s)")
    parser.add_argument("--num-seqs", type=int, default=3, help="sequences (default: %(default)s)")
    parser.add_argument("--num-frames", type=int, default=24, help="frames per sequence (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--to-coco", metavar="JSON", help="convert ROOT instead of generating: write this JSON")
    parser.add_argument("--folder", default="train", help="with --to-coco: the split's folder (default: %(default)s)")
    parser.add_argument("--frames", default="all", choices=FRAME_SPLITS, help="with --to-coco (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.to_coco:
        data = mot_to_cocovideo(args.root, args.folder, args.frames)
        write_json_atomic(data, args.to_coco)
        print(f"{args.to_coco}: {len(data['videos'])} videos, {len(data['images'])} frames, "
              f"{len(data['annotations'])} boxes")
        return 0
    root = generate_airmot(args.root, num_seqs=args.num_seqs, num_frames=args.num_frames,
                           size=args.size, seed=args.seed)
    print(f"synthetic AIR-MOT ready at {root} ({args.num_seqs} sequences x {args.num_frames} frames "
          f"of {args.size}px, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
