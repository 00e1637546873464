"""Small shared pieces of the converters: the user-facing error, atomic writes, file hashes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Callable, Iterator, TypeVar

T = TypeVar("T")

_HASH_CHUNK = 8 << 20  # large reads: the hashing thread needs the GIL once per chunk only
_READ_AHEAD = 8  # chunks the kernel is asked to read ahead of the hash (64 MiB)


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


_started: dict[tuple[str, int, int], Future] = {}


def _sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read while a helper thread keeps the disk busy ahead of the hash.

    Hashing (a core at ~1.8 GB/s) and filling the page cache (kernel time) are both CPU work;
    done in turn by one thread they add up, so :func:`_read_ahead` asks the kernel for the
    next ``_READ_AHEAD`` chunks while this thread hashes the current one.
    """
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        progress = _ReadAhead(f.fileno(), os.fstat(f.fileno()).st_size)
        try:
            while count := f.readinto(buffer):
                digest.update(view[:count])  # hashlib releases the GIL for large buffers
                progress.advance(count)
        finally:
            progress.stop()
    return digest.hexdigest()


class _ReadAhead:
    """A thread that asks the kernel to read a file up to ``_READ_AHEAD`` chunks ahead of a reader."""

    def __init__(self, fd: int, size: int):
        self._fd, self._size = fd, size
        self._position = 0  # how far the reader has got
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sha256-readahead")
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        while offset < self._size:
            with self._changed:
                while not self._stopped and offset > self._position + _READ_AHEAD * _HASH_CHUNK:
                    self._changed.wait()
                if self._stopped:
                    return
            with contextlib.suppress(OSError):  # only a hint: the reader reads regardless
                os.posix_fadvise(self._fd, offset, _HASH_CHUNK, os.POSIX_FADV_WILLNEED)
            offset += _HASH_CHUNK

    def advance(self, count: int) -> None:
        with self._changed:
            self._position += count
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join()


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
    """Begin hashing ``path`` in a background thread; :func:`sha256_file` then takes that result.

    The converter CLI calls this first thing, so the source is read (and its hash computed)
    while Python imports torch and plans the conversion: the hash costs no extra wall time, and
    the conversion then reads the file from the page cache.
    """
    key = _hash_key(path)
    if key not in _started:
        _started[key] = in_background(lambda: _sha256(path), "sha256")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (the one :func:`start_sha256` began, if the file is unchanged)."""
    future = _started.pop(_hash_key(path), None)
    return future.result() if future is not None else _sha256(path)
