"""Publishing a generated dataset atomically, shared by every demo-data generator.

A generator writes into a staging dir beside its root, a marker json with its parameters goes
in last, and one rename puts it into place. A complete dataset with the same parameters is
reused; a folder that no generator wrote (a real dataset) is never replaced.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def is_complete(root: Path, marker_name: str, params: dict, expected: Callable[[dict], list[Path]]) -> bool:
    """True when root holds a finished dataset generated with exactly these parameters."""
    try:
        marker = json.loads((root / marker_name).read_text())
    except (OSError, ValueError):
        return False
    return marker == params and all((root / f).is_file() for f in expected(params))


def refuse_foreign(root: Path, marker_name: str) -> None:
    """Never replace something a generator did not write (for instance a real dataset)."""
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir() or root.is_symlink():
        raise FileExistsError(f"{root} exists and is not a directory; refusing to replace it")
    if any(root.iterdir()) and not (root / marker_name).is_file():
        raise FileExistsError(
            f"{root} is not empty and has no {marker_name}: it was not written by this generator "
            "(a real dataset?), so it is left alone. Pick another --root.")


def _publish(staging: Path, root: Path, marker_name: str, params: dict,
             expected: Callable[[dict], list[Path]]) -> None:
    """Rename the finished staging dir to root; rename refuses a non-empty target, so a
    concurrent generator that published first is detected rather than overwritten."""
    for _ in range(5):
        try:
            os.rename(staging, root)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        if is_complete(root, marker_name, params, expected):
            return  # another process published the same dataset meanwhile
        refuse_foreign(root, marker_name)
        graveyard = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        try:
            os.rename(root, graveyard / "old")  # an older synthetic dataset: move it aside, drop it
        except FileNotFoundError:
            pass
        shutil.rmtree(graveyard, ignore_errors=True)
    raise RuntimeError(f"could not publish the dataset at {root}: it keeps changing under us")


def build_atomically(root: str | Path, marker_name: str, params: dict,
                     expected: Callable[[dict], list[Path]], write: Callable[[Path, dict], None]) -> Path:
    """Write a generated dataset at root once: reuse a complete one with the same parameters
    (its marker json), else ``write(staging, params)`` beside root, add the marker last, and
    rename into place. Raises FileExistsError if root holds data no generator wrote."""
    root = Path(root)
    if is_complete(root, marker_name, params, expected):
        return root
    refuse_foreign(root, marker_name)  # fail before spending time generating
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; the published dataset should be readable
    try:
        write(staging, params)
        (staging / marker_name).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        _publish(staging, root, marker_name, params, expected)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # no-op once renamed
    return root
