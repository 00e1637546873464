"""Small shared pieces of the converters: the user-facing error, atomic writes, file hashes."""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Callable, Iterator, TypeVar

T = TypeVar("T")



class ConversionError(Exception):
    """A one-line, user-facing reason why a conversion cannot go on."""


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path``, then rename it into place.

    A crash or an exception leaves no file at ``path`` (or the old one, untouched) and no
    temporary file behind: a half-written output never looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it owner-only; outputs get the usual mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _hash_key(path: str | Path) -> tuple[str, int, int]:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


_started: dict[tuple[str, int, int], "SequentialReader"] = {}


def _sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read once with large direct reads (see converters/seqread.py)."""
    from converters.seqread import SequentialReader

    reader = SequentialReader(path, keep=False)
    try:
        return reader.sha256()
    finally:
        reader.close()


def in_background(fn: Callable[[], T], name: str) -> "Future[T]":
    """Run ``fn`` in a daemon thread; the future's ``result()`` waits for it and returns or raises.

    Daemon: a conversion that fails meanwhile exits without waiting for it.
    """
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # raised again by whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True, name=name).start()
    return future


def start_sha256(path: str | Path) -> None:
    """Begin reading and hashing ``path`` in background threads; :func:`sha256_file` then takes
    that result, and :func:`started_reader` gives the converter the same pass over the file.

    The converter CLI calls this first thing, so the source is read (and its hash computed)
    while Python imports torch and plans the conversion, and the conversion copies its tensors
    out of the same reads (converters/seqread.py).
    """
    from converters.seqread import SequentialReader

    key = _hash_key(path)
    if key not in _started:
        _started[key] = SequentialReader(path)


def started_reader(path: str | Path):
    """The :class:`converters.seqread.SequentialReader` that :func:`start_sha256` began for this
    file (unchanged since), attached for a consumer that must ``detach()`` it; or None."""
    reader = _started.get(_hash_key(path))
    return reader.attach() if reader is not None else None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (the one :func:`start_sha256` began, if the file is unchanged)."""
    key = _hash_key(path)
    for stale in [k for k in _started if k[0] == key[0] and k != key]:  # the file changed since
        _started.pop(stale).close()
    reader = _started.pop(key, None)
    if reader is None:
        return _sha256(path)
    try:
        return reader.sha256()
    finally:
        reader.close()
