"""One sequential pass over a source file that feeds both its sha256 and the conversion.

Why: a conversion must hash its source (the meta records it) and copy most of its bytes. Read
twice, or read through the page cache, the file costs either a second pass over the disk or
about as much kernel time as the copy itself (filling and reclaiming cache pages, on a
2-core machine as much CPU as the hash). So the file is read once, in large ``O_DIRECT``
chunks (``READERS`` of them in flight) into a bounded pool of aligned buffers, from the moment
the CLI starts (before torch is imported); a hashing thread digests every chunk in file order,
and the converter copies tensor bytes out of the same buffers.

Memory stays bounded: at most ``depth`` chunks are held. A chunk is freed once it is hashed and
the converter has promised (:meth:`SequentialReader.release_before`) not to need it; until the
converter has planned its work it promises nothing, so the reader stops one pool ahead and
waits. Reads outside the pool (a record read while planning, far ahead of the window, or bytes
already freed) fall back to ordinary positional reads, so correctness never depends on the
order of reads, only the speed does.

Where ``O_DIRECT`` is refused (tmpfs, some network file systems) the same code reads through
the page cache.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import threading
from pathlib import Path

CHUNK = 16 << 20  # a multiple of any logical block size; large, so the hash takes the GIL rarely
DEPTH = 24  # chunks held at most (384 MiB): what the disk reads in the converter's start-up time
READERS = 2  # reads in flight: the disk starts the next while a finished one is published


class SequentialReader:
    """Reads ``path`` once, front to back, for its sha256 and for positional reads of its bytes."""

    def __init__(self, path: str | Path, keep: bool = True, chunk: int | None = None, depth: int | None = None,
                 readers: int | None = None):
        """``keep``: hold chunks for a consumer until it releases them (else free them once hashed).
        ``chunk`` (a multiple of the page size), ``depth`` and ``readers`` (reading threads) default
        to the module's CHUNK, DEPTH and READERS."""
        self.path = str(path)
        self._chunk, self._depth = chunk or CHUNK, depth or DEPTH
        readers = readers or READERS
        chunk = self._chunk
        self._plain = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self._plain).st_size
        self._count = -(-self.size // chunk)
        self._direct = self._open_direct()
        self._direct_ok = True  # cleared when the file system refuses an O_DIRECT read
        self._buffers: dict[int, tuple[mmap.mmap, int]] = {}  # chunk index -> (buffer, bytes read)
        self._free: list[mmap.mmap] = []
        self._read_upto = 0  # chunks [0, _read_upto) have been read
        self._next_read = 0  # the next chunk a reading thread claims
        self._hashed_upto = 0
        self._released_upto = 0  # chunks below were freed (or never held)
        self._promised = 0 if keep else self.size  # the consumer needs no byte below this offset
        self._error: BaseException | None = None
        self._closed = False
        self._owners = 1  # the creator; attach() adds consumers, close() and detach() let go
        self._consumers = 0
        self._digest = hashlib.sha256()
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._guard(self._read_all), daemon=True, name=f"seqread-{i}")
                         for i in range(readers)]
        self._threads.append(threading.Thread(target=self._guard(self._hash_all), daemon=True, name="seqread-sha256"))
        for thread in self._threads:
            thread.start()

    def _open_direct(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY | os.O_DIRECT)
        except (OSError, AttributeError):  # the file system refuses it: read through the cache
            return os.dup(self._plain)

    # ---- the two threads
    def _guard(self, work):
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported to whoever waits on the reader
                with self._changed:
                    self._error = exc
                    self._changed.notify_all()

        return run

    def _read_all(self) -> None:
        """One of READERS threads: claim the next chunk, read it, publish it. Several reads in
        flight keep the disk busy between one read's completion and the next one's start."""
        while True:
            with self._changed:
                while (not self._closed and self._error is None and self._next_read < self._count
                       and self._next_read >= self._released_upto + self._depth):
                    self._changed.wait()
                if self._closed or self._error is not None or self._next_read >= self._count:
                    return
                index = self._next_read
                self._next_read += 1
                buffer = self._free.pop() if self._free else mmap.mmap(-1, self._chunk)  # page-aligned
            got = self._read_chunk(buffer, index * self._chunk)
            with self._changed:
                self._buffers[index] = (buffer, got)
                while self._read_upto in self._buffers:
                    self._read_upto += 1
                self._changed.notify_all()
            if got < self._chunk and index < self._count - 1:
                raise OSError(f"{self.path}: file ended at byte {index * self._chunk + got} while reading it")

    def _read_chunk(self, buffer: mmap.mmap, offset: int) -> int:
        want = min(self._chunk, self.size - offset)
        if self._direct_ok:
            try:
                # O_DIRECT transfers whole blocks: ask for the full (aligned) buffer, the kernel stops at EOF.
                return min(os.preadv(self._direct, [buffer], offset), want)
            except OSError:  # e.g. EINVAL on an odd file system: plain reads from here on (all threads)
                self._direct_ok = False
        return min(os.preadv(self._plain, [buffer], offset), want)

    def _hash_all(self) -> None:
        for index in range(self._count):
            with self._changed:
                while not self._closed and self._read_upto <= index and self._error is None:
                    self._changed.wait()
                if self._closed or self._error is not None:
                    return
                buffer, got = self._buffers[index]
            with memoryview(buffer) as view:
                self._digest.update(view[:got])  # hashlib releases the GIL for large buffers
            with self._changed:
                self._hashed_upto = index + 1
                self._release()
                self._changed.notify_all()

    def _release(self) -> None:
        """Free the chunks that are hashed and wholly below the consumer's promise (lock held)."""
        limit = min(self._hashed_upto, self._promised // self._chunk)
        while self._released_upto < limit:
            buffer, _ = self._buffers.pop(self._released_upto)
            self._free.append(buffer)
            self._released_upto += 1

    # ---- the consumer's side
    def attach(self) -> "SequentialReader":
        """Register a consumer: chunks are kept for it until it releases them or detaches."""
        with self._changed:
            self._owners += 1
            self._consumers += 1
        return self

    def detach(self) -> None:
        """The consumer is done (or gave up): nothing more is kept for it."""
        with self._changed:
            self._consumers -= 1
            last = self._consumers == 0
        if last:
            self.release_before(self.size)
        self.close()

    def release_before(self, offset: int) -> None:
        """Promise that no byte below ``offset`` will be read again (through this reader's pool)."""
        with self._changed:
            if offset > self._promised:
                self._promised = offset
                self._release()
                self._changed.notify_all()

    def pread_into(self, view: memoryview, offset: int) -> int:
        """Copy up to ``len(view)`` bytes at ``offset`` into ``view`` (fewer at a chunk end or EOF)."""
        index = offset // self._chunk
        with self._changed:
            # Worth waiting for: a chunk not yet freed that the reader will reach, i.e. within the
            # pool's depth of the consumer's promise (the pool moves there as the hash catches up).
            # Anything else (freed, or far ahead: a record read while planning) is read directly.
            while (self._error is None and index not in self._buffers and self._released_upto <= index
                   < max(self._released_upto, self._promised // self._chunk) + self._depth):
                self._changed.wait()
            if self._error is not None:
                raise self._error
            held = self._buffers.get(index) if index >= self._released_upto else None
            if held is not None:
                start = offset - index * self._chunk
                count = max(0, min(len(view), held[1] - start))
                view[:count] = memoryview(held[0])[start:start + count]  # releases the GIL
                return count
        return self._read_plain(view, offset)

    def _read_plain(self, view: memoryview, offset: int) -> int:
        """Outside the pool: an ordinary positional read."""
        return os.preadv(self._plain, [view], offset)

    def sha256(self) -> str:
        """The file's hex sha256, once every chunk is read and hashed."""
        with self._changed:
            unclaimed = self._consumers == 0
        if unclaimed:  # nobody will read through the pool: let the hash run to the end
            self.release_before(self.size)
        with self._changed:
            while self._error is None and self._hashed_upto < self._count:
                self._changed.wait()
            if self._error is not None:
                raise self._error
        return self._digest.hexdigest()

    def close(self) -> None:
        """Let go of the reader; the last owner stops its threads and frees its memory."""
        with self._changed:
            self._owners -= 1
            if self._owners > 0 or self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()
        for buffer, _ in self._buffers.values():
            buffer.close()
        for buffer in self._free:
            buffer.close()
        self._buffers.clear()
        self._free.clear()
        for fd in (self._plain, self._direct):
            os.close(fd)


class ReaderFile:
    """The file-object side (``seek``, ``readinto``) of a :class:`SequentialReader`, for code that
    reads records from a binary file (``converters.ckpt_io.read_tensor``)."""

    def __init__(self, reader: SequentialReader):
        self._reader = reader
        self._position = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET:
            raise ValueError("only absolute seeks")
        self._position = offset
        return offset

    def tell(self) -> int:
        return self._position

    def readinto(self, view) -> int:
        with memoryview(view) as target:
            got = self._reader.pread_into(target.cast("B"), self._position)
        self._position += got
        return got
