#!/usr/bin/env python
"""Train a seed-zoo model (gMLP, BiT; Multigrain and DINO as their recipes land) with MindSpore.

The config's ``recipe`` picks the objective, ``model`` the family and variant; without
``data.root`` a small synthetic NWPU-RESISC45 is generated in the work dir.

Examples:
  python pretrain/train.py --config configs/pretrain/zoo/gmlp_ti_demo.py        # same as below
  python -m pretrain.zoo.train --config configs/pretrain/zoo/gmlp_ti_demo.py
  python -m pretrain.zoo.train --config configs/pretrain/zoo/gmlp_ti.py --cfg-options data.root=/data/NWPU-RESISC45
  python -m pretrain.zoo.train --config configs/pretrain/zoo/bit_hyperrule_demo.py --resume   # newest in work_dir

The work dir receives the resolved config (config.json, BiT-HyperRule values filled in), train.log,
log.jsonl, loss.png, checkpoints <family>-<name>-step<N>.ckpt (written atomically; the newest
checkpoint.keep_last are kept) holding the weights, the optimizer state and the data position,
so `--resume` (auto: the newest complete checkpoint) continues with the batches an uninterrupted
run would see, and with ema.decay > 0 <family>-<name>-ema.ckpt (the EMA weights under the model's
own names: convert it like the live weights).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pretrain.config import ConfigError, apply_overrides, load_config  # noqa: E402
from pretrain.zoo.engine import LOG_KEYS, check_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="python -m pretrain.zoo.train", description="\n\n".join(doc[:2]),
                                     epilog="\n\n".join(doc[2:] + [LOG_KEYS]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file, e.g. configs/pretrain/zoo/gmlp_ti_demo.py")
    parser.add_argument("--work-dir", help="output folder (default: the config's work_dir)")
    parser.add_argument("--resume", nargs="?", const="auto",
                        help="continue from a checkpoint; without a path, the newest in the work dir")
    parser.add_argument("--device", choices=("CPU", "GPU", "Ascend"), help="overrides train.device")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", help="override config entries")
    return parser.parse_args(argv)


def load_zoo_config(path: str | Path, options: list[str] | None = None) -> dict:
    """Load, apply ``--cfg-options`` and check a zoo config (ConfigError on any problem)."""
    cfg = apply_overrides(load_config(path), options)
    cfg.setdefault("name", Path(path).stem)
    check_config(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_zoo_config(args.config, args.cfg_options)
    except ConfigError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    from pretrain.train import run_in_work_dir
    from pretrain.zoo.engine import logger, train

    return run_in_work_dir(cfg, args, f"work_dirs/pretrain/zoo/{cfg['name']}", train, logger)


if __name__ == "__main__":
    sys.exit(main())
