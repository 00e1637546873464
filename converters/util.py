"""Small shared pieces of the converters: the user-facing error and atomic file writing."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


class ConversionError(Exception):
    """A one-line, user-facing reason why a conversion cannot go on."""


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
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class HashingReader:
    """A read-only file that hashes every byte exactly once while it is read forward.

    The converter reads tensors in file order. Forward seeks read and hash the skipped bytes
    instead of seeking, so the sha256 that the output's meta records costs no second pass over
    a multi-GB checkpoint. A backward seek ends the streaming hash; ``hexdigest`` then hashes
    the file on its own.
    """

    CHUNK = 8 << 20

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "rb", buffering=0)
        self._digest = hashlib.sha256()
        self._position = 0
        self._streaming = True
        self._buffer = bytearray(self.CHUNK)
        self._final: str | None = None

    def _consume(self, count: int | None) -> None:
        """Read and hash ``count`` bytes (None: up to the end of the file)."""
        view = memoryview(self._buffer)
        while count is None or count > 0:
            want = self.CHUNK if count is None else min(count, self.CHUNK)
            got = self._file.readinto(view[:want])
            if not got:
                return
            self._digest.update(view[:got])
            self._position += got
            if count is not None:
                count -= got

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET:
            raise ValueError("HashingReader seeks from the start only")
        if self._streaming and offset >= self._position:
            self._consume(offset - self._position)
        else:
            self._streaming = False
            self._file.seek(offset)
            self._position = offset
        return self._position

    def readinto(self, buffer) -> int:
        got = self._file.readinto(buffer)
        if self._streaming and got:
            self._digest.update(memoryview(buffer)[:got])
        self._position += got or 0
        return got

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self._streaming:
            self._digest.update(data)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def fileno(self) -> int:
        return self._file.fileno()

    def hexdigest(self) -> str:
        """The file's sha256: finishes the streaming pass, or hashes anew after random access."""
        if self._final is None:
            if self._streaming:
                self._consume(None)
                self._final = self._digest.hexdigest()
            else:
                self._final = sha256_file(self.path)
            self._streaming = False  # the digest is final; later reads must not extend it
        return self._final

    def close(self) -> None:
        self._file.close()
