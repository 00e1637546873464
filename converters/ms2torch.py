#!/usr/bin/env python
"""Convert a MindSpore RingMoE checkpoint into a PyTorch checkpoint that OpenMMLab loads.

Reads the .ckpt without MindSpore (a streaming walk of its protobuf records), maps every tensor
by the rules in converters/rules/ringmoe.py, checks the result strictly against the PyTorch
twin built for all four modalities, and writes:

  OUT.pth          {'state_dict': ..., 'meta': ...}; loads with torch.load(weights_only=True)
  OUT.report.json  every source tensor -> its target key and transform, or its drop reason

Examples:
  python converters/ms2torch.py work_dirs/pretrain/tiny/ringmoe-tiny-step200.ckpt -o ringmoe_tiny.pth
  python converters/ms2torch.py authors_giant.ckpt -o giant.pth --arch giant

Exit codes: 0 converted; 2 bad input (missing or corrupt file, wrong architecture, a tensor
that no rule explains, a tensor the model needs that the file lacks). Nothing is written then.
"""
from __future__ import annotations

import argparse
import sys
import time
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
    parser.add_argument("src", help="MindSpore .ckpt (or MindSpore-format safetensors) file")
    parser.add_argument("-o", "--out", required=True, help="output .pth path")
    parser.add_argument("--arch", choices=ARCH_CHOICES,
                        help="expected config; the architecture is read off the tensor shapes, and a "
                             "mismatch with this config is an error (default: accept what the file holds)")
    parser.add_argument("--report", help="JSON report path (default: OUT with suffix .report.json)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="floating-point type of the written tensors (default: fp32)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from converters.ckpt_io import CheckpointError
    from converters.ringmoe import convert, save
    from converters.util import ConversionError

    start = time.perf_counter()
    try:
        conversion = convert(args.src, args.arch, args.dtype)
        out, report = save(conversion, args.out, args.report)
    except (ConversionError, CheckpointError, OSError) as err:
        print(f"ms2torch: error: {err}", file=sys.stderr)
        return 2
    cov = conversion.meta["coverage"]
    arch = conversion.meta["arch"]
    print(f"converted {cov['source_tensors']} tensors: {cov['mapped']} mapped, {cov['dropped']} dropped "
          f"with reasons, 0 unexplained ({time.perf_counter() - start:.1f}s)")
    print(f"architecture: embed_dim={arch['embed_dim']} depths={arch['depths']} heads={arch['num_heads']} "
          f"modalities={[m['name'] for m in conversion.meta['modalities']]}")
    print(f"wrote {out}\nwrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
