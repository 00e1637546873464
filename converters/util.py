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


def _send(stream: IO[bytes], data: bytes) -> None:
    """One frame: its length (8 bytes, little-endian), then the bytes."""
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def _receive_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's bytes; None at the end of the stream (or a frame cut short)."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    return data if len(data) == size else None


class _Helper:
    """A second Python interpreter that runs jobs, one after the other, for this process.

    Its own child process on pipes rather than ``multiprocessing``: a spawned ``multiprocessing``
    worker first re-runs the parent's ``__main__``, and a user's script that calls the converter
    without an ``if __name__ == "__main__"`` guard would convert twice. A job is a pickled
    ``(fn, args)`` (``fn`` pickles by reference: a module-level function); the reply is the
    pickled result or exception. Both travel in length-prefixed frames, so that one that cannot
    be unpickled fails its own job only. The helper lives as long as this process (idle between
    jobs, torch loaded) and leaves when it exits, even in the middle of a job.
    """

    def __init__(self) -> None:
        import pickle
        import subprocess
        import sys

        boot = ("import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
                "from converters.util import serve_jobs; serve_jobs()")
        self._pid = os.getpid()  # a forked child must not share this helper (nor its replies)
        self._process = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE)
        self._lock = threading.Lock()
        self._waiting: list[Future] = []  # jobs sent, in order: replies come in the same order
        self._broken = False
        pickle.dump(list(sys.path), self._process.stdin)
        self._process.stdin.flush()
        threading.Thread(target=self._receive, daemon=True, name="helper-replies").start()

    def alive(self) -> bool:
        return not self._broken and os.getpid() == self._pid and self._process.poll() is None

    def submit(self, fn: Callable[..., T], args: tuple) -> "Future[T]":
        import pickle

        job = pickle.dumps((fn, args))  # an unpicklable job fails here, in the caller
        future: Future = Future()
        with self._lock:
            _send(self._process.stdin, job)  # OSError: the helper is gone (the caller falls back)
            self._waiting.append(future)
        return future

    def _receive(self) -> None:
        import pickle

        while (frame := _receive_frame(self._process.stdout)) is not None:
            try:
                ok, value = pickle.loads(frame)
            except BaseException as exc:  # noqa: BLE001 - e.g. an exception class that will not rebuild here
                ok, value = False, RuntimeError(f"the helper's reply could not be read: {exc!r}")
            with self._lock:
                future = self._waiting.pop(0)
            (future.set_result if ok else future.set_exception)(value)
        with self._lock:  # the helper died (or its stream broke): what it owed fails with _HelperGone
            self._broken = True
            owed, self._waiting = self._waiting, []
        self._process.kill()
        for stream in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        for future in owed:
            future.set_exception(_HelperGone(f"the helper interpreter exited ({self._process.wait()})"))


class _HelperGone(Exception):
    """The helper interpreter exited before replying."""


def serve_jobs() -> None:
    """The helper's loop: run each job from stdin, reply on stdout, until stdin closes or the
    parent is gone."""
    import pickle
    import signal
    import sys

    jobs = sys.stdin.buffer
    sys.stdout.flush()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a job prints (Python or C) goes to stderr, not into the replies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; the helper leaves with it
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    while (frame := _receive_frame(jobs)) is not None:
        try:
            fn, args = pickle.loads(frame)  # e.g. a function this interpreter cannot import
            reply = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply = (False, exc)
        try:
            data = pickle.dumps(reply)
        except Exception:  # an exception (or result) that does not pickle: say what it was
            data = pickle.dumps((False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
        try:
            _send(replies, data)
        except OSError:  # the parent closed its end: nobody is waiting
            return


def _exit_with_parent(parent: int) -> None:
    """Stop the helper (even mid-job: a torch import) once the process it works for has exited."""
    import time

    while os.getppid() == parent:
        time.sleep(0.1)
    os._exit(0)


_helper: _Helper | None = None
_helper_lock = threading.Lock()  # one helper, even when two threads ask at once


def _forget_helper_after_fork() -> None:
    """A forked child starts its own helper, with a lock no other thread of the parent held."""
    global _helper, _helper_lock
    _helper, _helper_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_helper_after_fork)


def in_subprocess(fn: Callable[..., T], *args) -> "Future[T]":
    """Run the module-level ``fn(*args)`` in this process's helper interpreter; the future's
    ``result()`` returns or raises as ``fn`` did.

    Why: the converter's checks import torch and build models on the meta device, a second and
    more of pure-Python work. In a thread it holds the GIL against the threads that read, hash
    and write; on a 2-core machine it then took as long as the whole copy and finished after
    it (benchmarks/perf/convert_perf.py). A second interpreter has its own GIL. Jobs run one
    after the other in one helper, so torch is imported there once. Where no helper can be
    started, or it dies, the job runs in a thread of this process instead.
    """
    global _helper

    def in_a_thread() -> Future:
        return in_background(lambda: fn(*args), getattr(fn, "__name__", "helper"))

    try:
        with _helper_lock:
            if _helper is None or not _helper.alive():
                _helper = _Helper()
            job = _helper.submit(fn, args)
    except OSError:  # no process to be had, or its pipe is closed
        return in_a_thread()
    result: Future = Future()

    def settle(done: Future) -> None:
        if isinstance(done.exception(), _HelperGone):
            in_a_thread().add_done_callback(lambda again: _copy_outcome(again, result))
        else:
            _copy_outcome(done, result)

    job.add_done_callback(settle)
    return result


def _copy_outcome(source: Future, target: Future) -> None:
    error = source.exception()
    if error is None:
        target.set_result(source.result())
    else:
        target.set_exception(error)


def import_modules(*names: str) -> None:
    """Import ``names`` (a job for :func:`in_subprocess`: the helper starts its imports early)."""
    import importlib

    for name in names:
        importlib.import_module(name)


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
