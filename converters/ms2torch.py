#!/usr/bin/env python
"""Convert a MindSpore RingMoE checkpoint into a PyTorch checkpoint that OpenMMLab loads.

Reads the .ckpt without MindSpore (a streaming walk of its protobuf records), maps every tensor
by the rules in converters/rules/ringmoe.py, checks the result strictly against the PyTorch
twin built for all four modalities, and writes:

  OUT.pth          {'state_dict': ..., 'meta': ...}; loads with torch.load(weights_only=True)
  OUT.safetensors  with --format safetensors (a directory of shards above --shard-size);
                   OpenMMLab loads it as safetensors://OUT, our configs by its path
  OUT.report.json  every source tensor -> its target key and transform, or its drop reason

Examples:
  python converters/ms2torch.py work_dirs/pretrain/tiny/ringmoe-tiny-step200.ckpt -o ringmoe_tiny.pth
  python converters/ms2torch.py authors_giant.ckpt -o giant.pth --arch giant
  python converters/ms2torch.py ckpt_dir/ --strategy strategy.ckpt -o merged.pth   # rank_*/ slices
  python converters/ms2torch.py giant.ckpt -o giant.safetensors --format safetensors  # 59 GB, bounded memory

Exit codes: 0 converted; 1 --verify found a numeric difference above the tolerance; 2 bad input (missing or corrupt file, wrong architecture, a tensor
that no rule explains, a tensor the model needs that the file lacks). Nothing is written then.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import Future
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a plain clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARCH_CHOICES = ("tiny", "base", "giant")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ms2torch",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="MindSpore .ckpt (or MindSpore-format safetensors) file, or a directory of "
                                    "per-rank slices rank_<r>/*.ckpt (with --strategy)")
    parser.add_argument("--strategy", help="MindSpore parallel strategy file (protobuf or JSON) describing how "
                                           "the per-rank slices in SRC cut each parameter; they are merged first")
    parser.add_argument("-o", "--out", required=True, help="output .pth path")
    parser.add_argument("--arch", choices=ARCH_CHOICES,
                        help="expected config; the architecture is read off the tensor shapes, and a "
                             "mismatch with this config is an error (default: accept what the file holds)")
    parser.add_argument("--report", help="JSON report path (default: OUT with suffix .report.json)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="floating-point type of the written tensors (default: fp32)")
    parser.add_argument("--format", choices=("pth", "safetensors"), default="pth",
                        help="pth: an mmengine checkpoint; safetensors: streamed with almost no memory, sharded "
                             "above --shard-size into OUT/ with model.safetensors.index.json (default: pth)")
    parser.add_argument("--shard-size", type=parse_size, default="5GiB",
                        help="largest safetensors shard, e.g. 5GiB or 500MB (default: 5GiB)")
    parser.add_argument("--family", "--mindcv", dest="family", metavar="FAMILY:VARIANT",
                        help="SRC is a single-model checkpoint instead of RingMoE: a mindcv model (resnet:resnet50, "
                             "vit:vit_b_32_224, swin:swin_tiny, ...) or a seed-zoo model (gmlp:gmlp_ti, "
                             "multigrain:multigrain_resnet50, bit:bit_m_r50x1, dino:dino_vits16, ...) -> the matching mmpretrain "
                             "ImageClassifier's state dict, whose backbone the benchmarks load")
    parser.add_argument("--verify", action="store_true",
                        help="before writing, run the MindSpore model and the converted PyTorch twin on "
                             "fixed inputs of every modality; print the relative error per stage and the "
                             "expert agreement; exit 1 above the tolerance (needs MindSpore; without it "
                             "only the structural checks run, and it says so)")
    parser.add_argument("--routing-stats", nargs="?", const="generated", metavar="DATA_ROOT",
                        help="count how often each expert is chosen on calibration images (an image folder "
                             "per modality, DATA_ROOT/<modality>/*; generated demo data without DATA_ROOT) and "
                             "store the counts in the meta; the 'top_expert' dense reduction needs them")
    parser.add_argument("--calibration-images", type=int, default=16,
                        help="images per modality for --routing-stats (default: 16)")
    parser.add_argument("--tolerance", type=float,
                        help="--verify's limit on max|diff|/max|ref| (default: 1e-5 for tiny, 1e-4 otherwise)")
    return parser.parse_args(argv)


def verify_conversion(args: argparse.Namespace, state_dict: dict, meta: dict) -> bool:
    """The numeric check of --verify; True when it passed (or could not run: MindSpore absent)."""
    from converters import verify

    if not verify.mindspore_available():
        print("verify: MindSpore is not installed: only the structural checks ran (every source tensor "
              "mapped or dropped with a reason, every parameter filled with the right shape)")
        return True
    tolerance = args.tolerance or verify.tolerance_for(meta["arch"])
    reports = verify.verify(args.src, state_dict, meta, strategy=args.strategy)
    for report in reports:
        print(f"verify: {report.line()}")
    ok = verify.passed(reports, tolerance)
    worst = max(r.max_error for r in reports)
    print(f"verify: {'passed' if ok else 'FAILED'}: worst relative error {worst:.2e} (tolerance {tolerance:.0e}), "
          f"{sum(r.flips for r in reports)} routing flips")
    return ok


def family_meta(family: str, variant: str, report: dict, src: str) -> dict:
    """The meta of a single-model conversion: what the benchmark runner builds and normalises with."""
    import json

    from benchmarks.models.family_loading import FAMILY_FORMAT, IMAGENET_INPUT
    from converters.mindcv import FAMILIES
    from converters.ringmoe import CONVERTER_VERSION
    from converters.util import sha256_file

    rules = __import__(FAMILIES[family], fromlist=["INPUT"])
    training = training_meta(src)  # a pretrain/zoo checkpoint says how its inputs were normalised
    return {"format": FAMILY_FORMAT, "family": family, "variant": variant,
            "converter_version": CONVERTER_VERSION,
            "target_config": json.loads(json.dumps(report["target_config"])),
            "input": dict((training or {}).get("input") or getattr(rules, "INPUT", IMAGENET_INPUT)),
            "pretrain": training,
            "source": {"path": src, "bytes": os.path.getsize(src), "sha256": sha256_file(src)},
            "report": json.loads(json.dumps(report, default=str))}


def training_meta(src: str) -> dict | None:
    """The ``ringmoe_meta`` JSON that pretrain/zoo step checkpoints carry, without the data position."""
    import json

    from converters.ckpt_io import read_tensor, scan_checkpoint

    record = scan_checkpoint(src).get("ringmoe_meta")
    if record is None:
        return None
    meta = json.loads(str(read_tensor(src, record)))
    meta.pop("data", None)  # where the data stream stood: of no use downstream
    return meta


def convert_family_cli(args: argparse.Namespace) -> int:
    """mindcv or seed-zoo model -> mmpretrain, with the same coverage rules and atomic writes."""
    import json

    from converters.mindcv import convert_mindcv
    from converters.ringmoe import default_report_path
    from converters.util import ConversionError, atomic_write
    from converters.writers import write_pth

    family, _, variant = args.family.partition(":")
    try:
        state_dict, report = convert_mindcv(args.src, family, variant)
        meta = family_meta(family, variant, report, args.src)
        out = write_pth(state_dict.items(), meta, args.out)
        report_path = Path(args.report) if args.report else default_report_path(out)
        with atomic_write(report_path, "w") as f:
            json.dump(meta["report"], f, indent=1)
    except (ConversionError, OSError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"ms2torch: error: {message}", file=sys.stderr)
        return 2
    print(f"converted {family} {variant}: {len(state_dict)} tensors, 0 unexplained\nwrote {out}\nwrote {report_path}")
    return 0


def reduction_sizes(meta: dict) -> str:
    """Backbone parameters of the twin for one modality under each expert reduction (nothing allocated)."""
    import torch

    from benchmarks.models.loading import twin_from_meta
    from benchmarks.models.ringmoe import MOE_REDUCTIONS

    modality = meta["modalities"][0]["name"]
    sizes = []
    for reduction in MOE_REDUCTIONS:
        with torch.device("meta"):
            twin = twin_from_meta(meta, modality, moe_reduction=reduction, out_norms=False)
        sizes.append(f"{reduction or 'moe'} {sum(p.numel() for p in twin.parameters()) / 1e6:,.2f}M")
    return f"backbone parameters for one modality ({modality}), by moe_reduction: {', '.join(sizes)}"


def start_reduction_sizes(checked, in_helper: bool) -> Future:
    """Count the reduced backbones while the tensors stream (about a second of model building
    that would otherwise follow the conversion), in the helper interpreter or in a thread."""
    from converters import ms2torch  # by module name, so the job pickles the same when this file runs as __main__
    from converters.util import in_background, in_subprocess

    meta = {"arch": checked.arch, "modalities": checked.modalities}
    if in_helper:
        return in_subprocess(ms2torch.reduction_sizes, meta)
    return in_background(lambda: reduction_sizes(meta), "reduction-sizes")


def twin_checks_in_helper(args: argparse.Namespace) -> bool:
    """Whether the twin checks run in the helper interpreter: when this process needs no torch
    (a plain safetensors output). Where it imports torch anyway (a .pth, --verify,
    --routing-stats), a second copy of torch costs memory and gains nothing (a .pth run's
    process tree: 1058 MiB with the helper, 840-868 MiB without)."""
    return not args.family and args.format == "safetensors" and not (args.verify or args.routing_stats)


def parse_size(text: str) -> int:
    """'5GiB', '500MB', '1048576' -> bytes."""
    import re

    units = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?)?B?\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 5GiB or 500MB)")
    return int(float(match[1]) * units[match[2] or ""])


def write_outputs(args: argparse.Namespace, checked) -> tuple[list[Path], dict]:
    """Stream the checked plan to the output; hold it in memory only when --verify or
    --routing-stats need the whole state dict (then check first, write after)."""
    from converters.writers import write_plan, write_pth, write_safetensors

    if not (args.verify or args.routing_stats):
        return write_plan(checked, args.out, args.format, args.shard_size)
    state_dict = dict(checked.tensors())
    meta = checked.meta()
    if args.verify and not verify_conversion(args, state_dict, meta):
        raise VerificationFailed
    if args.routing_stats:
        from converters.routing_stats import collect_routing_stats

        root = None if args.routing_stats == "generated" else args.routing_stats
        meta["routing_stats"] = collect_routing_stats(state_dict, meta, root, args.calibration_images)
    if args.format == "pth":
        return [write_pth(state_dict.items(), meta, args.out)], meta
    specs = {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}
    return write_safetensors(state_dict.items(), specs, meta, args.out, args.shard_size), meta


class VerificationFailed(Exception):
    """--verify found a difference above the tolerance."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from converters.util import ConversionError, import_modules, in_subprocess, start_sha256

    if os.path.isfile(args.src):
        start_sha256(args.src)  # read and hash the source while the heavy imports below run
    in_helper = twin_checks_in_helper(args)
    if in_helper and os.path.exists(args.src):
        # Start the helper now, so that its torch import overlaps the scan of the source.
        in_subprocess(import_modules, "torch", "benchmarks.models.ringmoe")
    from converters.ckpt_io import CheckpointError
    from converters.ringmoe import default_report_path, open_source, plan, write_report

    start = time.perf_counter()
    if args.family:
        return convert_family_cli(args)
    try:
        source = open_source(args.src, args.strategy)
        try:
            # The twin check imports torch (in the helper, or in a thread) while the tensors
            # stream; a failed check stops the writer before anything is installed.
            checked = plan(source, args.arch, args.dtype, check_in_background=True, check_in_helper=in_helper)
            sizes = start_reduction_sizes(checked, in_helper)
            outputs, meta = write_outputs(args, checked)
        finally:
            source.close()
        report = write_report(meta, args.report or default_report_path(args.out), outputs)
    except VerificationFailed:
        print("ms2torch: verification failed: nothing written", file=sys.stderr)
        return 1
    except (ConversionError, CheckpointError, OSError) as err:
        print(f"ms2torch: error: {err}", file=sys.stderr)
        return 2
    cov = meta["coverage"]
    arch = meta["arch"]
    print(f"converted {cov['source_tensors']} tensors: {cov['mapped']} mapped, {cov['dropped']} dropped "
          f"with reasons, 0 unexplained ({time.perf_counter() - start:.1f}s)")
    print(f"architecture: embed_dim={arch['embed_dim']} depths={arch['depths']} heads={arch['num_heads']} "
          f"modalities={[m['name'] for m in meta['modalities']]}")
    print(sizes.result())
    for warning in meta["warnings"]:
        print(f"ms2torch: warning: {warning}", file=sys.stderr)
    for output in outputs:
        print(f"wrote {output}")
    print(f"wrote {report}")
    return 0


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown: every output is written, fsynced and closed by
    now, and unloading torch takes about half a second that a conversion need not wait for."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # the reader went away (piped to head): nothing left to tell it
            code = code or 1
    os._exit(code)


def cli() -> int:
    """``main`` as a command: a reader that closes our output early (``| head``) ends the
    summary quietly, exit code 1 as Python advises, instead of a traceback. Whatever was written
    by then is complete (every output is installed atomically before the summary)."""
    try:
        return main()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's own final flush cannot fail
        os.dup2(devnull, sys.stderr.fileno())
        return 1


if __name__ == "__main__":
    exit_now(cli())
