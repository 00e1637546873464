"""Pretraining checkpoints: atomic saves with metadata, rotation, and resume.

A checkpoint holds the network parameters (the authors' names), the optimizer state
(``adam_m.*``, ``adam_v.*``, ``global_step``), ``step_num`` and ``ringmoe_meta``: a JSON string
with the architecture and modality table, which the converter copies into the PyTorch
checkpoint's ``meta`` so that downstream configs need no hand-copied numbers. The training
script adds the data position to that meta (``data``: stream, seed, batch size, next index).

Saving is atomic: the file is written under a hidden temporary name (``.<stem>.tmp-<pid>.ckpt``),
flushed to disk, then renamed, and only then does the ``last_checkpoint`` pointer move and do
old checkpoints get deleted. So a process killed at any moment leaves the previous complete
checkpoint in place, and resume never sees a half-written file (temporary names are never
candidates).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
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


def _fsync(path: Path) -> None:
    """Flush a file (or a directory entry) to disk, so a rename never outlives its content."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a small text file in one rename (temp name ``.<name>.tmp-<pid>``, which
    prune_checkpoints clears if the writer died)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, net, meta: dict, optimizer=None, step: int = 0,
                    keep_last: int | None = None) -> Path:
    """Save network (+ optimizer) parameters and metadata to ``path`` atomically.

    MindSpore writes to a temporary name in the same directory, which is then renamed, so an
    interrupted save never leaves a file that looks complete. ``keep_last``: afterwards delete
    all but the newest ``keep_last`` checkpoints of the same name prefix (None or 0 keeps all).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.ckpt")
    try:
        ms.save_checkpoint(
            _entries(net, optimizer), str(tmp),
            append_dict={META_KEY: json.dumps(dict(meta, step=step)), "step_num": step},
        )
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    # mmengine-style pointer to the newest checkpoint, for --resume without a path.
    write_text_atomic(path.parent / LATEST, path.name + "\n")
    if keep_last:
        prune_checkpoints(path.parent, checkpoint_prefix(path.name), keep_last)
    return path


_STEP = re.compile(r"^(?P<prefix>[^.].*)-step(?P<step>\d+)\.ckpt$")  # hidden (temporary) names never match


def checkpoint_prefix(name: str) -> str | None:
    match = _STEP.match(name)
    return match["prefix"] if match else None


def complete_checkpoints(work_dir: str | Path, prefix: str | None = None) -> list[tuple[int, Path]]:
    """(step, path) of the finished ``<prefix>-step<N>.ckpt`` files in ``work_dir``, oldest first.

    Ordered by when they were written (then by step): a fresh run in a work dir that still
    holds a longer earlier run's checkpoints must not resume from those higher-numbered files.
    """
    found = []
    for path in Path(work_dir).glob("*-step*.ckpt"):
        match = _STEP.match(path.name)
        if match and path.is_file() and (prefix is None or match["prefix"] == prefix):
            found.append((path.stat().st_mtime_ns, int(match["step"]), path))
    return [(step, path) for _, step, path in sorted(found)]


def _pointer_target(work_dir: Path) -> Path | None:
    pointer = work_dir / LATEST
    if not pointer.is_file():
        return None
    path = work_dir / pointer.read_text().strip()
    return path if path.is_file() else None


def prune_checkpoints(work_dir: str | Path, prefix: str | None, keep_last: int) -> list[Path]:
    """Delete all but the newest (last written) ``keep_last`` checkpoints of ``prefix``; return them.

    The checkpoint the ``last_checkpoint`` pointer names is never deleted, whatever its step.
    Temporary files left by killed processes (their pid no longer runs) are removed too.
    """
    work_dir = Path(work_dir)
    keep = {work_dir / p.name for _, p in complete_checkpoints(work_dir, prefix)[-keep_last:]}
    target = _pointer_target(work_dir)
    if target is not None:
        keep.add(target)
    deleted = [p for _, p in complete_checkpoints(work_dir, prefix) if p not in keep]
    for tmp in work_dir.glob(".*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            deleted.append(tmp)
    for path in deleted:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return deleted


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def latest_checkpoint(work_dir: str | Path) -> Path | None:
    """The newest (last written) complete checkpoint in ``work_dir``: the pointer's, or a newer one.

    A run killed between renaming a checkpoint into place and moving the pointer leaves a
    complete file newer than the pointer; a missing pointer (or one naming a deleted file)
    falls back to the newest ``*-step<N>.ckpt``. Temporary files are never candidates.
    """
    work_dir = Path(work_dir)
    target = _pointer_target(work_dir)
    prefix = checkpoint_prefix(target.name) if target is not None else None
    found = complete_checkpoints(work_dir, prefix)
    if target is not None and (not found or prefix is None):
        return target
    return found[-1][1] if found else None


def resume_state(path: str | Path, net, optimizer=None) -> tuple[int, dict]:
    """Load parameters (and optimizer state) from ``path``; return (step to continue from, meta)."""
    params = ms.load_checkpoint(str(path))
    meta = params.pop(META_KEY, None)
    meta = json.loads(meta) if isinstance(meta, str) else {}
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
    return (int(params["step_num"].asnumpy()) if "step_num" in params else 0), meta


def checkpoint_name(prefix: str, step: int, width: int = 0) -> str:
    """``<prefix>-step<N>.ckpt``; ``width`` zero-pads N so that the lexicographically last file of a
    rank_<r>/ directory is its newest, which is the one MindSpore's tools and converters/merge.py take."""
    return f"{prefix}-step{step:0{width}d}.ckpt"

