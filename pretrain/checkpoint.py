"""Pretraining checkpoints: atomic saves with metadata, and resume.

A checkpoint holds the network parameters (the authors' names), the optimizer state
(``adam_m.*``, ``adam_v.*``, ``global_step``), ``step_num`` and ``ringmoe_meta``: a JSON string
with the architecture and modality table, which the converter copies into the PyTorch
checkpoint's ``meta`` so that downstream configs need no hand-copied numbers.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import mindspore as ms

META_KEY = "ringmoe_meta"
LATEST = "last_checkpoint"


def _entries(*cells) -> list[dict]:
    seen, entries = set(), []
    for cell in cells:
        if cell is None:
            continue
        for param in cell.get_parameters():
            if param.name not in seen:
                seen.add(param.name)
                entries.append({"name": param.name, "data": param})
    return entries


def save_checkpoint(path: str | Path, net, meta: dict, optimizer=None, step: int = 0) -> Path:
    """Save network (+ optimizer) parameters and metadata to ``path`` atomically.

    MindSpore writes to a temporary name in the same directory, which is then renamed, so an
    interrupted save never leaves a file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.ckpt")
    try:
        ms.save_checkpoint(
            _entries(net, optimizer), str(tmp),
            append_dict={META_KEY: json.dumps(dict(meta, step=step)), "step_num": step},
        )
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    # mmengine-style pointer to the newest checkpoint, for --resume without a path.
    pointer = path.parent / LATEST
    tmp_pointer = pointer.with_name(f".{LATEST}.tmp-{os.getpid()}")
    tmp_pointer.write_text(path.name + "\n")
    os.replace(tmp_pointer, pointer)
    return path


def latest_checkpoint(work_dir: str | Path) -> Path | None:
    pointer = Path(work_dir) / LATEST
    if not pointer.is_file():
        return None
    path = Path(work_dir) / pointer.read_text().strip()
    return path if path.is_file() else None


def load_for_resume(path: str | Path, net, optimizer=None) -> int:
    """Load parameters (and optimizer state) from ``path``; return the step to continue from."""
    params = ms.load_checkpoint(str(path))
    missing, _ = ms.load_param_into_net(net, params, strict_load=True)
    if missing:
        raise RuntimeError(f"{path} lacks network parameters: {missing[:4]}")
    if optimizer is not None:
        # The learning-rate schedule is derived from the config (its length is the step count),
        # so a resumed run that extends training keeps its own schedule.
        params.pop("learning_rate", None)
        missing, _ = ms.load_param_into_net(optimizer, params, strict_load=True)
        missing = [name for name in missing if name != "learning_rate"]
        if missing:
            raise RuntimeError(f"{path} lacks optimizer state: {missing[:4]}")
    return int(params["step_num"].asnumpy()) if "step_num" in params else 0


def checkpoint_name(prefix: str, step: int) -> str:
    return f"{prefix}-step{step}.ckpt"

