#!/usr/bin/env python
"""Does pretraining help? Pretrained versus random-init backbones on the generated benchmarks.

Pretrains a tiny RingMoE with pretrain/train.py (SimMIM, MindSpore), converts it, then runs each
downstream task three times per seed through benchmarks/run.py, with the same config, schedule,
data and seed:

  pretrained  the converted checkpoint after --pretrain-steps of SimMIM
  ms-init     the same MindSpore model at step 0 (its own initialisation), converted the same way:
              the margin to it is what pretraining itself added
  scratch     the PyTorch twin's own random initialisation (--checkpoint none)

Prints the primary metric of each and the margins of the pretrained arm, and writes
<work_dir>/fidelity.json. Every run also lands in <work_dir>/results.csv, like any benchmark run.

Pretraining data: the optical folder holds unlabeled images in the downstream domain, made by
the same generators as the benchmark data but with other seeds (no image of a benchmark split is
ever seen in pretraining); the other three modalities are the pretraining demo data
(pretrain/data/synthetic.py), since the joint MoE path trains on all four at once.

Example (about 25 minutes on 2 CPU cores with the defaults):
  python benchmarks/fidelity.py --work-dir work_dirs/fidelity
  python benchmarks/fidelity.py --tasks classification --seeds 0 1 2 --pretrain-steps 600

A finished piece (pretraining, conversion, a run whose row is in the results) is reused when the
command is repeated with the same work dir, so an interrupted study continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a plain clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import Parser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TASKS = ("classification", "detection")
# Seeds of the unlabeled in-domain images: far from the benchmark generators' default seed 0.
UNLABELED_SEED = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="fidelity", doc=__doc__)
    parser.add_argument("--work-dir", default="work_dirs/fidelity", help="everything goes here (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="benchmark tasks (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="downstream seeds (default: %(default)s)")
    parser.add_argument("--pretrain-steps", type=int, default=400, help="SimMIM steps (default: %(default)s)")
    parser.add_argument("--pretrain-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="passed to pretrain/train.py --cfg-options, e.g. optim.lr=1e-4")
    parser.add_argument("--unlabeled-images", type=int, default=192,
                        help="in-domain optical images generated for pretraining (default: %(default)s)")
    parser.add_argument("--config", nargs="+", default=[], metavar="TASK=CONFIG",
                        help="another config for a task, e.g. classification=configs/benchmarks/classification/"
                        "finetune_llrd_ringmoe_tiny_nwpu.py (default: each task's default config)")
    parser.add_argument("--iters", type=int, help="downstream iterations (default: each config's schedule)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="passed to every benchmark run (same budget for both arms)")
    args = parser.parse_args(argv)
    if args.pretrain_steps < 1 or args.unlabeled_images < 1:
        parser.error("--pretrain-steps and --unlabeled-images must be positive")
    if any("=" not in item for item in args.config):
        parser.error("--config expects TASK=CONFIG")
    args.config = dict(item.split("=", 1) for item in args.config)
    return args


# ---- pretraining data ----------------------------------------------------------------------
def _unlabeled_images(tasks: list[str], count: int, out: Path, size: int) -> int:
    """Write ``count`` in-domain optical images (labels discarded) into ``out``; return how many."""
    import tempfile

    from benchmarks.datasets.dior import generate_dior
    from benchmarks.datasets.scene_classification import LAYOUTS, generate_scene_dataset

    makers = []
    if "classification" in tasks:
        per_class = max(2, count // (2 * len(LAYOUTS["nwpu_resisc45"].classes)))  # the generator needs 2
        makers.append(lambda d: generate_scene_dataset("nwpu_resisc45", d, per_class=per_class, size=size,
                                                       seed=UNLABELED_SEED))
    if "detection" in tasks or not makers:
        makers.append(lambda d: generate_dior(d, num_train=max(1, count // 2), num_val=1, num_test=1,
                                              size=size, seed=UNLABELED_SEED + 1))
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        for i, make in enumerate(makers):
            root = make(Path(scratch) / str(i))
            for image in sorted(root.rglob("*.jpg")):
                shutil.copyfile(image, out / f"{i}_{image.parent.name}_{image.name}")
                written += 1
    return written


def pretraining_data(work_dir: Path, tasks: list[str], count: int, img_size: int) -> Path:
    """<work_dir>/pretrain_data/{optical,sar_l1,sar_l2,msi}; reused once complete."""
    from pretrain.data.synthetic import generate_pretrain_data

    root = work_dir / "pretrain_data"
    done = root / "fidelity_data.json"
    params = {"tasks": sorted(tasks), "count": count, "size": img_size + 64, "seed": UNLABELED_SEED}
    if done.is_file() and json.loads(done.read_text()) == params:
        return root
    generate_pretrain_data(root, num_per_modality=16, size=img_size + 64, seed=UNLABELED_SEED)
    optical = root / "optical"
    shutil.rmtree(optical)
    written = _unlabeled_images(tasks, count, optical, img_size + 64)
    done.write_text(json.dumps(params))
    print(f"fidelity: pretraining data in {root} ({written} unlabeled in-domain optical images)", flush=True)
    return root


# ---- the pieces, each a subprocess of a project CLI ----------------------------------------
def _call(command: list[str]) -> None:
    print("fidelity: $ " + " ".join(command), flush=True)
    result = subprocess.run([sys.executable, *command], cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"fidelity: error: {command[0]} exited with {result.returncode}")


INITIAL_CHECKPOINT = """
import sys
import mindspore as ms
from pretrain.checkpoint import save_checkpoint
from pretrain.models.arch import get_arch
from pretrain.models.ringmoe import RingMoESimMIM
ms.set_seed(0)  # train.py seeds the same way (train.seed=0) before it builds the model
net = RingMoESimMIM(get_arch("tiny"))
save_checkpoint(sys.argv[1], net, {"arch": net.arch.to_dict(), "config": "tiny"}, step=0)
"""


def initial_checkpoint(work_dir: Path) -> Path:
    """The tiny model as pretraining starts from it (MindSpore's initialisation), converted."""
    converted = work_dir / "ringmoe_tiny_init.pth"
    if not converted.is_file():
        ckpt = work_dir / "pretrain" / "ringmoe-tiny-init.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        _call(["-c", INITIAL_CHECKPOINT, str(ckpt)])
        _call(["converters/ms2torch.py", str(ckpt), "-o", str(converted), "--arch", "tiny"])
    return converted


def pretrain_and_convert(work_dir: Path, data_root: Path, steps: int, options: list[str]) -> Path:
    """Pretrain (or resume) and convert; one folder per number of steps and set of options."""
    import hashlib

    name = f"{steps}steps" + (f"-{hashlib.sha256(' '.join(options).encode()).hexdigest()[:8]}" if options else "")
    converted = work_dir / f"ringmoe_tiny_pretrained_{name}.pth"
    if converted.is_file():
        return converted
    pre = work_dir / f"pretrain_{name}"
    ckpt = pre / f"ringmoe-tiny-step{steps}.ckpt"
    if not ckpt.is_file():
        resume = ["--resume"] if any(pre.glob("ringmoe-tiny-step*.ckpt")) else []
        _call(["pretrain/train.py", "--config", "configs/pretrain/tiny.py", "--work-dir", str(pre), *resume,
               "--cfg-options", f"train.steps={steps}", f"train.save_interval={max(1, steps // 4)}",
               f"data.root={data_root}", *options])
    _call(["converters/ms2torch.py", str(ckpt), "-o", str(converted), "--arch", "tiny"])
    return converted


ARMS = ("pretrained", "ms-init", "scratch")


def benchmark(work_dir: Path, task: str, config: str | None, arm: str, checkpoint: Path | None, seed: int,
              iters: int | None, options: list[str]) -> None:
    protocol = protocol_name(config)
    # One work dir per checkpoint: --resume must never continue another checkpoint's run.
    label = checkpoint.stem.replace("ringmoe_tiny_", "") if checkpoint else arm
    command = ["benchmarks/run.py", "--task", task, "--checkpoint", str(checkpoint or "none"),
               "--seed", str(seed), "--work-dir", str(work_dir / "runs" / task / protocol / f"{label}-seed{seed}"),
               "--results", str(work_dir / "results.csv"), "--resume"]
    if config:
        command += ["--config", config]
    if iters is not None:
        command += ["--iters", str(iters)]
    _call(command + (["--cfg-options", *options] if options else []))


# ---- the comparison ------------------------------------------------------------------------
def protocol_name(config: str | None) -> str:
    return Path(config).stem if config else "default"


def margins(rows: list[dict], tasks: list[str], seeds: list[int], checkpoints: dict[str, str],
            protocols: dict[str, str] | None = None) -> dict:
    """Per task: the primary metric of each arm and seed, the arms' means, and the pretrained
    arm's margins over the others. ``checkpoints`` maps an arm to the checkpoint path its rows
    carry ("" for random weights); ``protocols`` a task to its protocol name (default
    "default"), the folder its runs' work dirs sit in (runs/<task>/<protocol>/<arm>-seed<n>).

    Margins are signed so that a positive one means the pretrained arm did better, also for
    lower-is-better metrics (depth's rmse). Raises ValueError when a task lacks a row for an
    arm and seed (a study that did not finish).
    """
    from benchmarks.results import lower_is_better

    arm_of = {path: arm for arm, path in checkpoints.items()}
    out = {}
    for task in tasks:
        protocol = (protocols or {}).get(task, "default")
        arms: dict[str, dict[int, float]] = {arm: {} for arm in checkpoints}
        metric = None
        for row in rows:
            if (row["task"] != task or row["status"] != "ok" or int(row["seed"]) not in seeds
                    or row["checkpoint"] not in arm_of or Path(row["work_dir"]).parent.name != protocol):
                continue
            arms[arm_of[row["checkpoint"]]][int(row["seed"])] = float(row["primary_value"])
            metric = row["primary_metric"]
        missing = [f"{arm} seed {s}" for arm, values in arms.items() for s in seeds if s not in values]
        if missing:
            raise ValueError(f"{task}: no results for {', '.join(missing)}")
        means = {arm: statistics.mean(values.values()) for arm, values in arms.items()}
        sign = -1.0 if lower_is_better(metric) else 1.0  # a positive margin always means "pretrained is better"
        out[task] = {"protocol": protocol, "metric": metric, "values": arms, "means": means,
                     "margins": {arm: sign * (means["pretrained"] - means[arm]) for arm in arms if arm != "pretrained"},
                     "seeds_won": {arm: sum(sign * (arms["pretrained"][s] - arms[arm][s]) > 0 for s in seeds)
                                   for arm in arms if arm != "pretrained"},
                     "seeds": len(seeds)}
    return out


def format_margins(result: dict) -> str:
    others = [arm for arm in ARMS if arm != "pretrained"]
    lines = [f"{'task (protocol)':<42}{'metric':<22}" + "".join(f"{arm:>12}" for arm in ARMS)
             + "".join(f"{'vs ' + arm:>14}" for arm in others) + "  seeds won"]
    for task, r in result.items():
        won = ", ".join(f"{r['seeds_won'][a]}/{r['seeds']} vs {a}" for a in others)
        lines.append(f"{task + ' (' + r['protocol'] + ')':<42}{r['metric']:<22}" + "".join(f"{r['means'][a]:>12.2f}" for a in ARMS)
                     + "".join(f"{r['margins'][a]:>+14.2f}" for a in others) + f"  {won}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks import results
    from benchmarks.tasks import task_names
    from converters.util import atomic_write
    from pretrain.models.arch import get_arch

    unknown = sorted(set(args.tasks) - set(task_names()))
    if unknown:
        print(f"fidelity: error: unknown task(s) {unknown}; known: {task_names()}", file=sys.stderr)
        return 2
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    data_root = pretraining_data(work_dir, args.tasks, args.unlabeled_images, get_arch("tiny").img_size)
    checkpoints = {"pretrained": pretrain_and_convert(work_dir, data_root, args.pretrain_steps, args.pretrain_options),
                   "ms-init": initial_checkpoint(work_dir), "scratch": None}
    for task in args.tasks:
        for seed in args.seeds:
            for arm, checkpoint in checkpoints.items():
                benchmark(work_dir, task, args.config.get(task), arm, checkpoint, seed, args.iters,
                          args.cfg_options)
    paths = {arm: str(path) if path else "" for arm, path in checkpoints.items()}
    protocols = {task: protocol_name(args.config.get(task)) for task in args.tasks}
    result = margins(results.read_rows(work_dir / "results.csv"), args.tasks, args.seeds, paths, protocols)
    report = {"pretrain_steps": args.pretrain_steps, "pretrain_options": args.pretrain_options,
              "unlabeled_images": args.unlabeled_images,
              "checkpoints": paths, "iters": args.iters, "cfg_options": args.cfg_options,
              "tasks": result}
    with atomic_write(work_dir / "fidelity.json", "w") as f:
        json.dump(report, f, indent=1)
    print(format_margins(result))
    print(f"fidelity: {work_dir / 'fidelity.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
