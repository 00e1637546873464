#!/usr/bin/env python
"""Expert routing of a converted RingMoE: which experts each modality's tokens choose, per block.

Runs the full MoE twin (no dense reduction) of each modality, loaded with the coverage-checked
loader, on images of that modality, and records for every block (layers.s.blocks.b) and both
routed banks (the modality's "special" experts and the shared "cross" experts):

  counts / load      tokens whose top-1 is each expert, and their fraction
  load_cv            std/mean of the load (0 balanced, sqrt(E-1) when one expert takes all)
  switch_aux         Switch balance loss E * sum_e(load_e * mean_prob_e) (1 balanced, E at worst)
  dropped_fraction   tokens past Switch capacity ceil(T * factor / E)
  top_load           share of the most-routed expert (the tokens 'top_expert' serves exactly)
  entropy            mean router entropy in nats (ln E = uniform), and mean_top1_prob

Capacity group: T is the tokens of one forward call of the single-modality twin, i.e. --batch
images of one modality, for both banks. Pretraining's joint batch puts all four modalities in
the cross router's group; here each modality competes only with itself. With a capacity factor
dropped tokens get zero from that bank, so later blocks see capacity-limited features, as in
pretraining; --capacity-factor none is the downstream semantics (nothing dropped).

Images: --data-root DIR in the pretraining layout DIR/<modality>/* (random crops at the
pretraining size, as ms2torch --routing-stats); or --task TASK [--config CFG] [--data-root DIR]:
the task's validation images (its generated demo data without --data-root), for the config's
modality only; or nothing: generated pretraining demo data (pretrain/data/synthetic.py).

Outputs in --out (default work_dirs/routing/<checkpoint stem>): routing.json (schema
ringmoe-bench/routing-v1), load_special.png and load_cross.png (blocks x experts heatmaps of
the load, one panel per modality), dropped.png (dropped fraction per block, one line per
modality and bank). Prints a short summary.

Examples:
  python benchmarks/routing.py --checkpoint work_dirs/demo/ringmoe_tiny.pth
  python benchmarks/routing.py --checkpoint giant.pth --data-root data/pretrain --images 64
  python benchmarks/routing.py --checkpoint tiny.pth --task detection \\
      --config configs/benchmarks/detection/faster_rcnn_ringmoe_tiny_hrsid.py

Exit codes: 0 done; 2 bad input (missing or unreadable checkpoint, unknown task or modality,
missing images). Nothing is written then.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a plain clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import BadInput, Parser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FORMAT = "ringmoe-bench/routing-v1"
PLOTS = ("load_special.png", "load_cross.png", "dropped.png")


def _capacity_factor(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (or 'none'): {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="routing", doc=__doc__)
    parser.add_argument("--checkpoint", required=True, help="converted RingMoE checkpoint (converters/ms2torch.py)")
    parser.add_argument("--data-root", help="pretraining layout DIR/<modality>/*; with --task, the task's dataset root")
    parser.add_argument("--task", help="take images from this benchmark task's dataset (benchmarks/tasks/<TASK>.py)")
    parser.add_argument("--config", help="with --task: its config (default: the task's), which names the modality")
    parser.add_argument("--modalities", nargs="+", help="modalities to analyse (default: all of the checkpoint)")
    parser.add_argument("--images", type=_positive, default=16, help="images per modality (default: %(default)s)")
    parser.add_argument("--batch", type=_positive, default=4,
                        help="images per forward call: the capacity group (default: %(default)s)")
    parser.add_argument("--capacity-factor", type=_capacity_factor, default=1.2,
                        help="Switch capacity factor, or 'none' for no limit (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="image sampling seed (default: %(default)s)")
    parser.add_argument("--out", help="output folder (default: work_dirs/routing/<checkpoint stem>)")
    parser.add_argument("--no-plots", action="store_true", help="write routing.json only")
    return parser.parse_args(argv)


# ---- images --------------------------------------------------------------------------------
def _to_model_input(raw, modality: dict):
    """Raw pixels of a dataset image -> normalised [C, H, W], as in pretraining."""
    import numpy as np

    from pretrain.data.modalities import TO_UNIT, normalise
    from pretrain.models.arch import Modality

    name = modality["name"]
    if name == "sar_l2" and raw.ndim == 3:  # SAR amplitude stored as a 3-channel JPEG (HRSID)
        raw = raw[..., 0]
    elif name == "optical" and raw.ndim == 2:
        raw = np.repeat(raw[..., None], 3, axis=-1)
    elif name == "optical" and raw.shape[-1] == 4:  # drop an alpha channel
        raw = raw[..., :3]
    unit = TO_UNIT[name](np.ascontiguousarray(raw))
    if unit.shape[0] != modality["channels"]:
        raise BadInput(f"{name} expects {modality['channels']} bands, an image has {unit.shape[0]}")
    return normalise(unit, Modality.from_dict(modality))


def _centre_crops(arrays: list, side: int):
    import numpy as np

    crops = []
    for a in arrays:
        y, x = (a.shape[1] - side) // 2, (a.shape[2] - side) // 2
        crops.append(a[:, y : y + side, x : x + side])
    return np.stack(crops).astype(np.float32)


def task_image_dir(dataset: dict) -> Path:
    """The image folder of an OpenMMLab dataset config: data_root / data_prefix / img_subdir."""
    prefix = dataset.get("data_prefix") or ""
    if not isinstance(prefix, str):
        prefix = prefix.get("img_path") or prefix.get("img") or prefix.get("sub_data_root") or ""
    return Path(dataset.get("data_root") or "") / prefix / (dataset.get("img_subdir") or "")


def task_images(task: str, config: str | None, data_root: str | None, count: int, seed: int,
                meta: dict) -> tuple[str, str, "object"]:
    """(modality, source, pixels [N, C, S, S]) from a benchmark task's validation images.

    The task config names the modality; the demo data is generated (in work_dirs/<task>/data,
    where benchmarks/run.py puts it) when no data root is given. Images are centre-cropped to
    the pretraining size (or the smallest image side, when smaller).
    """
    import numpy as np
    from mmengine.config import Config

    from benchmarks.tasks import get_task, task_names
    from pretrain.data.folder import SUFFIXES, read_raw

    if task not in task_names():
        raise BadInput(f"unknown task {task!r}; known: {', '.join(task_names())}")
    spec = get_task(task)
    config_path = Path(config) if config else REPO / spec.config
    if not config_path.is_file():
        raise BadInput(f"config {config_path} does not exist")
    cfg = Config.fromfile(str(config_path), import_custom_modules=False)
    backbone = cfg.model
    for key in spec.backbone.split("."):
        backbone = backbone[key]
    modality = backbone.get("modality", "optical")
    info = next((m for m in meta["modalities"] if m["name"] == modality), None)
    if info is None:
        raise BadInput(f"the config's modality {modality!r} is not in the checkpoint")
    if data_root:
        root = Path(data_root)
    elif spec.demo_data is not None:
        try:
            root = spec.demo_data(Path("work_dirs", task, "data"), cfg)
        except ValueError as err:
            raise BadInput(str(err)) from None
    else:
        raise BadInput(f"task {task} has no demo data: pass --data-root")
    root = root.resolve()
    from benchmarks.run import set_data_root

    set_data_root(cfg, root)
    if spec.prepare is not None:  # e.g. detection swaps in another dataset's demo data
        with tempfile.TemporaryDirectory() as work_dir:
            spec.prepare(cfg, root, Path(work_dir))
    folder = task_image_dir(cfg.val_dataloader.dataset)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    if not files:
        raise BadInput(f"no images in {folder}")
    rng = np.random.default_rng(seed)
    picked = [files[i] for i in sorted(rng.choice(len(files), min(count, len(files)), replace=False))]
    arrays = [_to_model_input(read_raw(p), info) for p in picked]
    side = min([meta["arch"]["img_size"]] + [min(a.shape[1:]) for a in arrays])
    source = f"{task} images in {folder} (the validation dataset's image folder of {config_path.name})"
    return modality, source, _centre_crops(arrays, side)


# ---- analysis ------------------------------------------------------------------------------
def analyse(state_dict: dict, meta: dict, pixels: dict, batch: int = 4,
            capacity_factor: float | None = 1.2) -> dict:
    """{modality: {block: {'tokens', 'special': stats, 'cross': stats}}} (see BankStats.summary)."""
    from converters.routing_stats import load_twin, record_routing

    stats = {}
    for modality, images in pixels.items():
        recorder = record_routing(load_twin(state_dict, meta, modality), images, batch, capacity_factor)
        stats[modality] = {
            block: {"tokens": banks["special"].tokens, **{bank: s.summary() for bank, s in banks.items()}}
            for block, banks in recorder.blocks.items()
        }
    return stats


def summarise(stats: dict) -> dict:
    """Per modality and bank: mean dropped fraction, entropy and top-expert share; the most imbalanced block."""
    summary = {}
    for modality, blocks in stats.items():
        worst = max(((b, bank, e[bank]["load_cv"]) for b, e in blocks.items() for bank in ("special", "cross")),
                    key=lambda t: t[2])
        summary[modality] = {
            **{f"mean_dropped_{bank}": sum(e[bank]["dropped_fraction"] for e in blocks.values()) / len(blocks)
               for bank in ("special", "cross")},
            **{f"mean_entropy_{bank}": sum(e[bank]["entropy"] for e in blocks.values()) / len(blocks)
               for bank in ("special", "cross")},
            **{f"mean_top_load_{bank}": sum(e[bank]["top_load"] for e in blocks.values()) / len(blocks)
               for bank in ("special", "cross")},
            "most_imbalanced": {"block": worst[0], "bank": worst[1], "load_cv": worst[2]},
        }
    return summary


def format_summary(report: dict) -> str:
    cf = report["capacity_factor"]
    counts = sorted(set(report["images_per_modality"].values()))
    lines = [f"routing of {report['checkpoint']} ({'/'.join(map(str, counts))} images per modality, "
             f"capacity factor {cf if cf is not None else 'none'}, group = {report['batch']} images of one modality)"]
    for modality, s in report["summary"].items():
        worst = s["most_imbalanced"]
        lines.append(f"  {modality:8s} dropped special {s['mean_dropped_special']:6.1%} cross {s['mean_dropped_cross']:6.1%}"
                     f" | top expert's share special {s['mean_top_load_special']:4.0%} cross {s['mean_top_load_cross']:4.0%}"
                     f" | most imbalanced {worst['block']} {worst['bank']} (load cv {worst['load_cv']:.2f})")
    return "\n".join(lines)


# ---- plots (matplotlib, imported here only) ------------------------------------------------
def _save(fig, path: Path) -> None:
    from converters.util import atomic_write

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")


def plot_load(report: dict, bank: str, path: Path) -> None:
    """Heatmap blocks x experts of the load, one panel per modality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    modalities, blocks = list(report["stats"]), report["blocks"]
    fig, axes = plt.subplots(1, len(modalities), figsize=(2.2 + 2.0 * len(modalities), 1.2 + 0.32 * len(blocks)),
                             squeeze=False, sharey=True)
    for ax, modality in zip(axes[0], modalities):
        load = np.array([report["stats"][modality][b][bank]["load"] for b in blocks])
        image = ax.imshow(load, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(load):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
        ax.set_title(modality, fontsize=9)
        ax.set_xticks(range(load.shape[1]))
        ax.set_xlabel("expert")
    axes[0][0].set_yticks(range(len(blocks)), blocks, fontsize=7)
    fig.colorbar(image, ax=axes[0].tolist(), label="fraction of tokens")
    fig.suptitle(f"{bank} experts: load per block", fontsize=10)
    _save(fig, path)
    plt.close(fig)


def plot_dropped(report: dict, path: Path) -> None:
    """Dropped fraction per block: one line per modality (solid special, dashed cross)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = report["blocks"]
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(blocks), 3.2))
    for k, (modality, stats) in enumerate(report["stats"].items()):
        for bank, style in (("special", "-"), ("cross", "--")):
            ax.plot(range(len(blocks)), [stats[b][bank]["dropped_fraction"] for b in blocks], style,
                    color=f"C{k}", marker="o", markersize=3, label=f"{modality} {bank}")
    ax.set_xticks(range(len(blocks)), blocks, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("dropped fraction")
    cf = report["capacity_factor"]
    ax.set_title(f"tokens dropped at capacity factor {cf if cf is not None else 'none'}", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    _save(fig, path)
    plt.close(fig)


# ---- command line --------------------------------------------------------------------------
def _read_checkpoint(path: str) -> tuple[dict, dict]:
    from benchmarks.models.loading import CoverageError, read_converted

    try:
        return read_converted(path)
    except CoverageError as err:
        raise BadInput(str(err)) from None
    except Exception as err:  # not a torch file at all (pickle, zip or EOF errors)
        raise BadInput(f"{path} is not a readable converted checkpoint ({type(err).__name__})") from None


def gather_pixels(args: argparse.Namespace, meta: dict) -> tuple[dict, dict]:
    """({modality: pixels}, {modality: source}) for the requested image source."""
    from converters.routing_stats import calibration_images, calibration_root

    known = {m["name"]: m for m in meta["modalities"]}
    wanted = args.modalities or list(known)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise BadInput(f"modalities {unknown} are not in the checkpoint's {list(known)}")
    try:
        if args.task:
            modality, source, pixels = task_images(args.task, args.config, args.data_root, args.images, args.seed, meta)
            if args.modalities and modality not in args.modalities:
                raise BadInput(f"the task config's modality is {modality!r}, not one of {args.modalities}")
            return {modality: pixels}, {modality: source}
        with calibration_root(args.data_root, args.seed) as (root, source):
            pixels = {m: calibration_images(root, meta, known[m], args.images, args.seed) for m in wanted}
        return pixels, {m: source for m in wanted}
    except (OSError, ValueError) as err:  # missing, unreadable or too small images; a task's prepare
        raise BadInput(f"{args.data_root or 'data'}: {err}") from None


def run(args: argparse.Namespace) -> dict:
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        raise BadInput(f"checkpoint {checkpoint} does not exist")
    if args.data_root and not Path(args.data_root).is_dir():
        raise BadInput(f"data root {args.data_root} is not a directory")
    if args.config and not args.task:
        raise BadInput("--config needs --task")
    import benchmarks  # noqa: F401  compat shims before any OpenMMLab import
    from benchmarks.run import checkpoint_sha256
    from converters.util import atomic_write

    state_dict, meta = _read_checkpoint(args.checkpoint)
    pixels, sources = gather_pixels(args, meta)
    stats = analyse(state_dict, meta, pixels, args.batch, args.capacity_factor)
    report = {
        "format": FORMAT,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
        "modalities": list(stats),
        "images_per_modality": {m: int(p.shape[0]) for m, p in pixels.items()},
        "image_size": {m: list(p.shape[2:]) for m, p in pixels.items()},
        "sources": sources,
        "seed": args.seed,
        "batch": args.batch,
        "capacity_factor": args.capacity_factor,
        "capacity_group": (f"the tokens of one forward call of the single-modality twin ({args.batch} images of "
                           "one modality), for both the special and the cross router"),
        "num_experts": meta["arch"]["num_experts"],
        "blocks": list(next(iter(stats.values()))),
        "stats": stats,
        "summary": summarise(stats),
    }
    out = Path(args.out) if args.out else Path("work_dirs", "routing", checkpoint.stem)
    with atomic_write(out / "routing.json", "w") as f:
        json.dump(report, f, indent=1)
    if not args.no_plots:
        plot_load(report, "special", out / PLOTS[0])
        plot_load(report, "cross", out / PLOTS[1])
        plot_dropped(report, out / PLOTS[2])
    report["out"] = str(out)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except BadInput as err:
        print(f"routing: error: {err}", file=sys.stderr)
        return 2
    print(format_summary(report))
    print(f"wrote {report['out']}/routing.json" + ("" if args.no_plots else f" and {', '.join(PLOTS)}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
