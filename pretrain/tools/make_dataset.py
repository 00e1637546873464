"""Build MindRecord pretraining shards from large scenes, and verify them.

  build:  tile each scene into TILE x TILE crops (stride = TILE - OVERLAP; the last tile of a row
          or column is aligned to the border), convert to the modality's stored form (see
          pretrain/tools/convert.py), drop tiles with more than MAX_NODATA of nodata pixels (all
          bands zero), write sharded MindRecord files plus manifest.json under OUT/<modality>/.
          Each modality folder is built in a temporary folder and renamed into place.
  verify: check every shard and .db file against the manifest's sha256 and counts.

Sources: --root ROOT with one folder per modality (ROOT/optical, ROOT/sar_l1, ROOT/sar_l2,
ROOT/msi; the image-folder layout of pretrain/data/folder.py), or --modality M --src FILE|DIR ...
Formats: PNG/JPEG, and (multi-band, complex) TIFF/GeoTIFF read with tifffile (rasterio is not
installed; georeferencing is not carried into the tiles).

Examples:
  python -m pretrain.tools.make_dataset build --root data/pretrain_demo --out data/pretrain_mr
  python -m pretrain.tools.make_dataset build --modality sar_l1 --src scenes/slc --out data/mr --overlap 32
  python -m pretrain.tools.make_dataset verify data/pretrain_mr
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MODALITIES = ("optical", "sar_l1", "sar_l2", "msi")
PROG = "make_dataset"


class UsageError(ValueError):
    """Bad input from the user: reported in one line, exit status 2."""


@dataclass
class BuildOptions:
    tile: int = 192
    stride: int = 192
    max_nodata: float = 0.5
    num_shards: int | None = None
    max_per_shard: int | None = 2048
    overwrite: bool = False
    progress: bool = True
    convert: object = None  # pretrain.tools.convert.ConvertParams; None = defaults


@dataclass
class Tally:
    written: int = 0
    skipped_nodata: int = 0
    scenes_too_small: int = 0
    scenes_unreadable: int = 0
    scenes: list = field(default_factory=list)
    skipped_scenes: list = field(default_factory=list)


def list_sources(sources: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted, not recursive)."""
    from pretrain.tools.convert import SUFFIXES

    files: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif source.is_file():
            if source.suffix.lower() not in SUFFIXES:
                raise UsageError(f"{source}: unsupported file type (use {', '.join(SUFFIXES)})")
            files.append(source)
        else:
            raise UsageError(f"{source}: no such file or folder")
    if not files:
        raise UsageError(f"no images ({', '.join(SUFFIXES)}) in {', '.join(map(str, sources))}")
    return files


def _tile_scene(path: Path, modality: str, opts: BuildOptions, writer, tally: Tally) -> None:
    """Read, convert and tile one scene into ``writer``; record what happened in ``tally``."""
    from pretrain.tools.convert import SceneError, convert_scene, read_scene
    from pretrain.tools.tiling import tile_grid

    try:
        stored, valid = convert_scene(modality, read_scene(path), opts.convert)
    except SceneError as err:
        tally.scenes_unreadable += 1
        tally.skipped_scenes.append({"path": str(path), "reason": "unreadable", "detail": str(err)})
        return
    height, width = valid.shape
    positions = tile_grid(height, width, opts.tile, opts.stride)
    if not positions:
        tally.scenes_too_small += 1
        tally.skipped_scenes.append({"path": str(path), "reason": "too small",
                                     "detail": f"{height}x{width} < tile {opts.tile}"})
        return
    written = nodata = 0
    t = opts.tile
    for y, x in positions:
        if 1.0 - float(valid[y : y + t, x : x + t].mean()) > opts.max_nodata:
            nodata += 1
            continue
        writer.add(stored[y : y + t, x : x + t], path.name, y, x)
        written += 1
    tally.written += written
    tally.skipped_nodata += nodata
    tally.scenes.append({"path": str(path), "height": height, "width": width, "tiles": len(positions),
                         "written": written, "nodata": nodata})


def _manifest(modality: str, opts: BuildOptions, tally: Tally, shards: list[dict]) -> dict:
    from pretrain.models.arch import DEFAULT_MODALITIES
    from pretrain.tools.convert import STORED

    channels, dtype, model_channels = STORED[modality]
    shape = [opts.tile, opts.tile] + ([channels] if channels > 1 else [])
    bands = next(m.bands for m in DEFAULT_MODALITIES if m.name == modality)
    return {
        "format_version": 1,
        "modality": modality,
        "tile_size": opts.tile,
        "stride": opts.stride,
        "overlap": opts.tile - opts.stride,
        "edge": "last tile aligned to the border; scenes smaller than a tile are skipped",
        "max_nodata": opts.max_nodata,
        "stored": {"shape": shape, "dtype": dtype, "channels": channels, "layout": "HWC" if channels > 1 else "HW"},
        "model_channels": model_channels,
        "bands": list(bands),
        "conversion": opts.convert.to_dict(),
        "sharding": {"num_shards": opts.num_shards, "max_per_shard": opts.max_per_shard},
        "counts": {"written": tally.written, "skipped_nodata": tally.skipped_nodata,
                   "scenes": len(tally.scenes) + len(tally.skipped_scenes),
                   "scenes_too_small": tally.scenes_too_small, "scenes_unreadable": tally.scenes_unreadable},
        "shards": shards,
        "scenes": tally.scenes,
        "skipped_scenes": tally.skipped_scenes,
    }


def _replace_folder(staging: Path, final: Path) -> None:
    """Move a finished staging folder into place; an old one is removed only after the swap."""
    backup = None
    if final.exists():
        backup = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, backup)
    os.replace(staging, final)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def build_modality(out: Path, modality: str, sources: list[Path], opts: BuildOptions) -> dict:
    """Write OUT/<modality>/ (shards + manifest) atomically; return its manifest."""
    from tqdm import tqdm

    from pretrain.tools.convert import ConvertParams
    from pretrain.tools.shards import ShardWriter, write_manifest

    opts.convert = opts.convert or ConvertParams()
    final = Path(out) / modality
    if final.exists() and not opts.overwrite:
        raise UsageError(f"{final} exists (use --overwrite to replace it)")
    files = list_sources(sources)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{modality}.tmp-", dir=final.parent))
    try:
        writer = ShardWriter(staging, modality, opts.num_shards, None if opts.num_shards else opts.max_per_shard)
        tally = Tally()
        bar = tqdm(files, desc=modality, unit="scene", disable=not opts.progress, file=sys.stderr)
        for path in bar:
            _tile_scene(path, modality, opts, writer, tally)
            bar.set_postfix(written=tally.written, nodata=tally.skipped_nodata,
                            bad=tally.scenes_too_small + tally.scenes_unreadable)
        bar.close()
        if tally.written == 0:
            reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in tally.skipped_scenes[:3])
            raise UsageError(f"{modality}: no tiles written ({tally.skipped_nodata} nodata tiles"
                             f"{'; ' + reasons if reasons else ''})")
        manifest = _manifest(modality, opts, tally, writer.close())
        write_manifest(staging, manifest)  # last: a folder with a manifest is complete
        _replace_folder(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def summary_line(manifest: dict, folder: Path, seconds: float) -> str:
    c = manifest["counts"]
    return (f"{manifest['modality']}: {c['written']} tiles written to {len(manifest['shards'])} shard(s) from "
            f"{c['scenes']} scene(s); skipped {c['skipped_nodata']} tile(s) nodata, {c['scenes_too_small']} "
            f"scene(s) too small, {c['scenes_unreadable']} scene(s) unreadable -> {folder} ({seconds:.1f} s)")


def build_from_root(root: Path, out: Path, opts: BuildOptions, modalities: list[str] | None = None,
                    echo=print) -> dict[str, dict]:
    """Build every modality folder found under ``root`` (or the ones named); {modality: manifest}."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    names = modalities or [m for m in MODALITIES if (root / m).is_dir()]
    if not names:
        raise UsageError(f"{root}: no modality folders ({', '.join(MODALITIES)})")
    for name in names:
        if not (root / name).is_dir():
            raise UsageError(f"{root / name}: no such folder")
    manifests = {}
    for name in names:
        start = time.perf_counter()
        manifests[name] = build_modality(out, name, [root / name], opts)
        echo(summary_line(manifests[name], Path(out) / name, time.perf_counter() - start))
    return manifests


def verify(path: Path) -> list[str]:
    """One OK line per modality folder; raises ValueError (one line) on the first mismatch."""
    from pretrain.tools.shards import modality_folders, verify_folder

    folders = modality_folders(Path(path))
    if not folders:
        raise UsageError(f"{path}: no manifest.json here or in its sub-folders")
    lines = []
    for folder in folders:
        shards, tiles = verify_folder(folder)
        lines.append(f"OK {folder}: {shards} shard(s), {tiles} tiles, checksums match")
    return lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + error
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m pretrain.tools.{PROG}", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="tile, convert and write MindRecord shards",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--out", required=True, help="output root; each modality goes to OUT/<modality>/")
    b.add_argument("--root", help="input root with one folder per modality")
    b.add_argument("--modality", nargs="+", choices=MODALITIES,
                   help="modalities to build (with --src: exactly one)")
    b.add_argument("--src", nargs="+", help="scene files or folders of one modality")
    b.add_argument("--tile", type=int, default=192, help="tile side in pixels")
    step = b.add_mutually_exclusive_group()
    step.add_argument("--stride", type=int, help="tile stride (default: tile - overlap)")
    step.add_argument("--overlap", type=int, default=0, help="overlap of neighbouring tiles in pixels")
    b.add_argument("--max-nodata", type=float, default=0.5,
                   help="drop a tile when more than this fraction of its pixels is nodata (all bands 0)")
    shard = b.add_mutually_exclusive_group()
    shard.add_argument("--num-shards", type=int, help="N shards, tiles dealt round-robin")
    shard.add_argument("--max-per-shard", type=int, default=2048, help="start a new shard after this many tiles")
    b.add_argument("--bands", type=int, nargs="+", help="0-based source bands to use, in order "
                   "(optical R G B; sar_l1 HH HV VH VV complex or 8 I/Q; sar_l2 the intensity band; msi B G R NIR)")
    b.add_argument("--stretch", type=float, nargs=2, default=(2.0, 98.0), metavar=("LOW", "HIGH"),
                   help="per-scene percentile stretch of msi and of >8-bit optical")
    b.add_argument("--sar-l2-clip", type=float, nargs=2, default=(0.1, 99.9), metavar=("LOW", "HIGH"),
                   help="per-scene percentile clip of SAR-L2 intensity (in dB)")
    b.add_argument("--sar-l2-linear", action="store_true", help="clip SAR-L2 in linear units instead of dB")
    b.add_argument("--overwrite", action="store_true", help="replace existing OUT/<modality>/ folders")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    v = sub.add_parser("verify", help="check shards and .db files against the manifest checksums")
    v.add_argument("path", help="a modality folder or the output root")
    return parser


def _options(args: argparse.Namespace) -> BuildOptions:
    from pretrain.tools.convert import ConvertParams

    stride = args.stride if args.stride is not None else args.tile - args.overlap
    if args.tile <= 0 or stride <= 0:
        raise UsageError(f"tile ({args.tile}) and stride ({stride}) must be positive (overlap < tile)")
    if not 0.0 <= args.max_nodata <= 1.0:
        raise UsageError(f"--max-nodata must be in [0, 1], got {args.max_nodata}")
    for name in ("num_shards", "max_per_shard"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    for low, high in (args.stretch, args.sar_l2_clip):
        if not 0.0 <= low < high <= 100.0:
            raise UsageError(f"percentiles must satisfy 0 <= LOW < HIGH <= 100, got {low} {high}")
    params = ConvertParams(bands=args.bands, stretch=tuple(args.stretch), sar_l2_clip=tuple(args.sar_l2_clip),
                           sar_l2_db=not args.sar_l2_linear)
    return BuildOptions(tile=args.tile, stride=stride, max_nodata=args.max_nodata, num_shards=args.num_shards,
                        max_per_shard=None if args.num_shards else args.max_per_shard,
                        overwrite=args.overwrite, progress=not args.quiet, convert=params)


def _build(args: argparse.Namespace) -> None:
    opts = _options(args)
    if (args.root is None) == (args.src is None):
        raise UsageError("give either --root or --modality M --src ...")
    if args.root is not None:
        build_from_root(Path(args.root), Path(args.out), opts, args.modality)
        return
    if not args.modality or len(args.modality) != 1:
        raise UsageError("--src needs exactly one --modality")
    start = time.perf_counter()
    manifest = build_modality(Path(args.out), args.modality[0], [Path(s) for s in args.src], opts)
    print(summary_line(manifest, Path(args.out) / args.modality[0], time.perf_counter() - start))


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command == "build":
            _build(args)
        else:
            print("\n".join(verify(Path(args.path))))
        return 0
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # verify mismatches and conversion problems
        print(f"{PROG}: {'FAIL' if getattr(args, 'command', '') == 'verify' else 'error'}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
