"""Streaming writers for converted checkpoints: mmengine ``.pth`` and (sharded) safetensors.

Both writers take the converter's stream of ``(target key, tensor)`` pairs and hold a few
tensors at a time (the one being written, and with ``prefetch`` the next one or two, produced
in a background thread), so converting a checkpoint needs about the largest tensor, not the
model. Data goes to disk with ``O_DIRECT`` through a 16 MiB aligned staging buffer where the
file system allows it (``RINGMOE_DIRECT_IO=0`` turns that off): on the machines we measured,
writing through the page cache cost as much kernel time as the rest of the conversion.
The metadata may be given as a callable or future that is resolved after the last tensor, so
``write_plan`` hashes the source in a background thread while the tensors stream.

* :func:`write_pth` writes the mmengine checkpoint ``{'state_dict', 'meta'}`` that
  ``torch.load(weights_only=True)`` reads. Tensor records go into the zip archive as they
  arrive; the pickle that names them is written last (a zip is read by its central directory,
  so record order does not matter to the reader).
* :func:`write_safetensors` writes a safetensors file whose header is computed up front from
  the tensors' specs (shape and dtype), then streams the bytes of each tensor in header order.
  Past ``max_shard_bytes`` it writes a directory of ``model-0000i-of-0000N.safetensors`` shards
  and ``model.safetensors.index.json`` (the Hugging Face layout).
* :func:`read_safetensors_checkpoint` reads either back as ``(state_dict, meta)``, the same pair
  ``benchmarks.models.loading.read_converted`` returns for a ``.pth``.
* :func:`register_mmengine_loader` adds a ``safetensors://`` scheme to mmengine's
  ``CheckpointLoader``, so that configs can say ``load_from='safetensors://path'``.

Every output is atomic: a file is written under a temporary name and renamed into place; a
sharded checkpoint is built in a temporary directory beside ``out`` that is renamed into place
once complete. An exception (or a kill) never leaves something that looks finished.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import json
import math
import os
import pickle
import queue
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from converters.util import ConversionError, in_background

META_KEY = "ringmoe_meta"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
SCHEME = "safetensors://"
DEFAULT_SHARD_BYTES = 5 * 2**30
_WRITE_BUFFER = 1 << 20
_BLOCK = 4096  # O_DIRECT alignment: a multiple of every common logical block size
_STAGE = 16 * 2**20
_WRITERS = 2  # writes in flight (threads); each holds a staging buffer
_DIRECT_IO = os.environ.get("RINGMOE_DIRECT_IO", "1") != "0"  # 0: write through the page cache

# dtype name (torch's and numpy's) -> (safetensors dtype, bytes per element, torch storage class
# name for pickles). Keyed by name, not torch.dtype, so that the safetensors path needs no torch:
# the converter starts writing while torch is still being imported for the twin check.
_DTYPES: dict[str, tuple[str, int, str]] = {
    "float32": ("F32", 4, "FloatStorage"),
    "float16": ("F16", 2, "HalfStorage"),
    "bfloat16": ("BF16", 2, "BFloat16Storage"),
    "float64": ("F64", 8, "DoubleStorage"),
    "int64": ("I64", 8, "LongStorage"),
    "int32": ("I32", 4, "IntStorage"),
    "int16": ("I16", 2, "ShortStorage"),
    "int8": ("I8", 1, "CharStorage"),
    "uint8": ("U8", 1, "ByteStorage"),
    "bool": ("BOOL", 1, "BoolStorage"),
}

Spec = tuple[tuple[int, ...], str]  # (shape, dtype name)


# --------------------------------------------------------------------------- helpers


def _dtype_name(dtype) -> str:
    """``"float32"`` for ``torch.float32``, ``numpy.float32`` or ``"float32"`` itself."""
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        return np.dtype(dtype).name
    text = str(dtype)
    return text[len("torch."):] if text.startswith("torch.") else text


def _dtype_info(dtype, name: str) -> tuple[str, int, str]:
    try:
        return _DTYPES[_dtype_name(dtype)]
    except KeyError:
        raise ConversionError(f"{name}: dtype {dtype} is not supported by the writers "
                              f"(supported: {', '.join(_DTYPES)})") from None


def _is_torch_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # never imported here: a torch tensor means torch is loaded
    return torch is not None and isinstance(value, torch.Tensor)


def _nbytes(spec: Spec, name: str) -> int:
    shape, dtype = spec
    return math.prod(shape) * _dtype_info(dtype, name)[1]


def _raw_bytes(tensor) -> memoryview:
    """The bytes of a torch tensor or numpy array in C order, without a copy when it is
    already contiguous (on the CPU)."""
    if sys.byteorder != "little":  # pragma: no cover - every supported machine is little-endian
        raise ConversionError("the writers produce little-endian files and need a little-endian machine")
    if isinstance(tensor, np.ndarray):
        return memoryview(np.ascontiguousarray(tensor).reshape(-1).view(np.uint8))
    import torch

    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    flat = tensor.contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def _check(name: str, tensor, expected_name: str | None, spec: Spec | None, position: int, total: int) -> None:
    if expected_name is None:
        raise ConversionError(f"stream has more tensors than the {total} announced: unexpected {name!r}")
    if name != expected_name:
        raise ConversionError(f"tensor {position + 1} of {total} is {name!r}, expected {expected_name!r} "
                              "(tensors must arrive in the order of the specs)")
    if not isinstance(tensor, (np.ndarray, FileSlices)) and not _is_torch_tensor(tensor):
        raise ConversionError(f"{name}: expected a torch.Tensor, numpy array or FileSlices, got {type(tensor).__name__}")
    shape, dtype = spec
    if tuple(tensor.shape) != tuple(shape) or _dtype_name(tensor.dtype) != dtype:
        raise ConversionError(f"{name}: got {tensor.dtype} {list(tensor.shape)}, "
                              f"but the header announced {dtype} {list(shape)}")
    if isinstance(tensor, FileSlices) and tensor.nbytes != _nbytes(spec, name):
        raise ConversionError(f"{name}: {tensor.path} holds {tensor.nbytes} bytes for it, "
                              f"but {dtype} {list(shape)} needs {_nbytes(spec, name)}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _install(tmp: Path, out: Path) -> None:
    """Rename a finished temporary file or directory to ``out``, replacing what was there."""
    if out.exists() and (out.is_dir() or tmp.is_dir()) and not out.is_symlink():
        # os.replace cannot put anything over a non-empty directory (or a directory over a file):
        # move the old output aside first, then drop it.
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "previous")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    _fsync_dir(out.parent)


@contextlib.contextmanager
def _temp_path(out: Path) -> Iterator[Path]:
    """An empty temporary file beside ``out``, renamed into place if the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _install(tmp, out)
    except BaseException:
        _remove(tmp)
        raise


@dataclass(frozen=True)
class FileSlices:
    """A tensor whose output bytes are already on disk, byte for byte: the concatenation of
    ``pieces`` (``(offset, length)`` in file order) of the open file descriptor ``fd``; ``dtype``
    is a dtype name (``"float32"``).

    A converter yields this instead of a ``torch.Tensor`` when a source tensor needs no
    transform and no dtype change; the safetensors writer then reads it straight into its
    staging buffer, skipping the intermediate array (one copy and its page faults).
    """

    fd: int
    pieces: tuple[tuple[int, int], ...]
    shape: tuple[int, ...]
    dtype: str
    path: str
    reader: Any = None  # a converters.seqread.SequentialReader over the file: read from its pool

    def pread_into(self, view: memoryview, offset: int) -> int:
        if self.reader is not None:
            return self.reader.pread_into(view, offset)
        return os.preadv(self.fd, [view], offset)

    @property
    def nbytes(self) -> int:
        return sum(length for _, length in self.pieces)


class _SequentialFile:
    """Appends bytes to a file through aligned staging buffers, bypassing the page cache.

    Writing a multi-GB checkpoint through the page cache costs about as much kernel time as
    the copy itself (and evicts everything else cached), so the data goes out with
    ``O_DIRECT`` in ``_STAGE``-byte blocks; the tail is padded to a block and the file then
    truncated to its true length. Where ``O_DIRECT`` is refused (tmpfs, some network file
    systems) the same code writes through the page cache. ``close()`` fsyncs. The file
    object interface (``write``, ``flush``) is what ``torch._C.PyTorchFileWriter`` needs.

    A full buffer is handed to one of ``_WRITERS`` threads and filling goes on in the next one,
    so the disk always has writes in flight while the caller reads or copies. Each buffer has
    its own offset, so the writes may finish in any order. With ``size`` (the bytes to follow
    ``offset``, when known) the file's blocks are reserved first, which lets those writes run in
    parallel and keeps the file contiguous.
    """

    def __init__(self, path: Path, offset: int = 0, direct: bool | None = None, size: int | None = None):
        import mmap

        import numpy as np

        if offset % _BLOCK:
            raise ValueError(f"offset {offset} is not a multiple of {_BLOCK}")
        direct = _DIRECT_IO if direct is None else direct
        self.fd = -1
        self.direct = False
        if direct and hasattr(os, "O_DIRECT"):
            with contextlib.suppress(OSError):
                self.fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
                self.direct = True
        if self.fd < 0:
            self.fd = os.open(path, os.O_WRONLY)
        if size:
            self._preallocate(offset + size + (-size % _BLOCK))
        depth = _WRITERS + 2  # staging buffers: one being filled, one queued, one per write in flight
        self._stages = [mmap.mmap(-1, _STAGE) for _ in range(depth)]  # page-aligned, as O_DIRECT wants
        self._free: queue.Queue = queue.Queue()
        for index in range(1, depth):
            self._free.put(index)
        self._full: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._writers = [threading.Thread(target=self._write_loop, daemon=True, name=f"writers-disk-{i}")
                         for i in range(_WRITERS)]
        for writer in self._writers:
            writer.start()
        self._current = 0
        self._array = np.frombuffer(self._stages[0], np.uint8)
        self._fill = 0
        self._start = offset
        self._offset = offset  # where the current staging buffer goes in the file
        self.written = 0

    def _preallocate(self, length: int) -> None:
        """Reserve the file's blocks up front when its final length is known.

        Why: ext4 (and XFS) serialise direct writes that extend a file or fill holes on the
        inode lock, so several writes in flight would queue behind each other; into allocated
        (unwritten) blocks they proceed in parallel. Best effort: where fallocate is not
        supported, the writes allocate as they go. (Not ``os.posix_fallocate``: glibc emulates
        it there by writing every block, a second pass over the disk.)
        """
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.fallocate(self.fd, 0, ctypes.c_int64(0), ctypes.c_int64(length))  # failure: allocate as we go

    def write(self, data) -> int:
        import numpy as np

        source = np.frombuffer(data, np.uint8)
        size, done = len(source), 0
        while done < size:
            take = min(_STAGE - self._fill, size - done)
            self._array[self._fill:self._fill + take] = source[done:done + take]  # releases the GIL
            self._fill += take
            done += take
            if self._fill == _STAGE:
                self._flush_stage(_STAGE)
        self.written += size
        return size

    def write_slices(self, slices: FileSlices) -> int:
        """Append a tensor's bytes read from its source file directly into the staging buffers."""
        for offset, length in slices.pieces:
            end = offset + length
            while offset < end:
                if slices.reader is not None:
                    # Slices are copied in file order: the source's one sequential pass may free
                    # what lies before (as it goes, so a tensor larger than its pool streams too).
                    slices.reader.release_before(offset)
                take = min(_STAGE - self._fill, end - offset)
                view = memoryview(self._stages[self._current])[self._fill:self._fill + take]
                try:
                    got = slices.pread_into(view, offset)
                finally:
                    view.release()
                if got <= 0:
                    raise ConversionError(f"{slices.path}: file ended at byte {offset} while reading tensor data")
                self._fill += got
                offset += got
                if self._fill == _STAGE:
                    self._flush_stage(_STAGE)
        self.written += slices.nbytes
        return slices.nbytes

    def flush(self) -> None:
        pass  # whole blocks only; close() writes the tail

    def _flush_stage(self, size: int) -> None:
        """Queue the current buffer for the writer thread and continue in a free one."""
        import numpy as np

        self._full.put((self._current, size, self._offset))
        self._offset += size
        self._current = self._free.get()  # waits while every other buffer is being written
        if self._error is not None:
            raise self._error
        self._array = np.frombuffer(self._stages[self._current], np.uint8)
        self._fill = 0

    def _write_loop(self) -> None:
        while True:
            job = self._full.get()
            if job is None:
                return
            index, size, offset = job
            if self._error is None:
                try:
                    self._pwrite(memoryview(self._stages[index])[:size], offset)
                except BaseException as exc:  # raised in the caller at its next buffer switch
                    self._error = exc
            self._free.put(index)

    def _pwrite(self, view: memoryview, offset: int) -> None:
        done = 0
        try:
            while done < len(view):
                try:
                    done += os.pwrite(self.fd, view[done:], offset + done)
                except OSError as err:
                    if not self.direct or err.errno != errno.EINVAL:
                        raise
                    # The file system took O_DIRECT at open but not for this write: go buffered.
                    fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                    self.direct = False
        finally:
            view.release()

    def _drain(self) -> None:
        """Wait for the writer threads to finish everything queued, and stop them."""
        running = [writer for writer in self._writers if writer.is_alive()]
        for _ in running:
            self._full.put(None)
        for writer in running:
            writer.join()

    def close(self) -> None:
        """Write the tail, fix the length, fsync and close."""
        try:
            if self._fill:
                size = self._fill
                if self.direct:
                    padded = size + (-size % _BLOCK)
                    self._array[size:padded] = 0
                    self._flush_stage(padded)
                else:
                    self._flush_stage(size)
            self._drain()
            if self._error is not None:
                raise self._error
            os.ftruncate(self.fd, self._start + self.written)
            os.fsync(self.fd)
        finally:
            self.abort()

    def abort(self) -> None:
        self._drain()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._array = None
        for stage in self._stages:
            with contextlib.suppress(BufferError):
                stage.close()


# --------------------------------------------------------------------------- .pth


class _StorageRef:
    """Stands for a storage in the pickle; the pickler turns it into torch's persistent id."""

    __slots__ = ("key", "storage_class", "numel")

    def __init__(self, key: str, storage_class: str, numel: int):
        self.key, self.storage_class, self.numel = key, storage_class, numel


class _TensorRef:
    """Pickles exactly as a contiguous CPU tensor whose bytes are the record ``data/<key>``."""

    __slots__ = ("storage", "shape")

    def __init__(self, storage: _StorageRef, shape: tuple[int, ...]):
        self.storage, self.shape = storage, shape

    def __reduce_ex__(self, protocol):
        import torch

        stride, step = [], 1
        for size in reversed(self.shape):
            stride.append(step)
            step *= max(size, 1)
        args = (self.storage, 0, tuple(self.shape), tuple(reversed(stride)), False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _RefPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            import torch

            return ("storage", getattr(torch, obj.storage_class), obj.key, "cpu", obj.numel)
        return None


def write_pth(tensors: Iterable[tuple[str, "torch.Tensor"]], meta, out: str | Path, prefetch: bool = True) -> Path:
    """Write the mmengine checkpoint ``{'state_dict': ..., 'meta': meta}`` to ``out``, streaming.

    The result is what ``torch.save`` writes (a zip archive with ``data.pkl`` and one record
    per tensor) and loads with ``torch.load(weights_only=True)`` (and ``mmap=True``). ``meta``
    must be plain Python types; it may also be a zero-argument callable or a future, resolved
    after the last tensor. ``prefetch`` as in :func:`write_safetensors`.
    """
    out = Path(out)
    import torch
    from torch.serialization import get_crc32_options

    state: dict[str, _TensorRef] = {}
    with _temp_path(out) as tmp:
        f = _SequentialFile(tmp)
        writer = None
        stream = _Prefetched(tensors) if prefetch else _Plain(tensors)
        try:
            writer = torch._C.PyTorchFileWriter(f, get_crc32_options(), 64)
            for name, tensor in stream:
                if not isinstance(tensor, torch.Tensor):
                    raise ConversionError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
                if name in state:
                    raise ConversionError(f"tensor {name!r} arrives twice")
                storage_class = _dtype_info(tensor.dtype, name)[2]
                tensor = tensor.detach().cpu().contiguous()
                storage = tensor.untyped_storage()
                if tensor.storage_offset() or storage.nbytes() != tensor.nbytes:
                    storage = tensor.clone().untyped_storage()  # a view into a larger buffer
                key = str(len(state))
                # One record per tensor, its bytes taken straight from the tensor's memory.
                writer.write_record(f"data/{key}", storage, tensor.nbytes)
                state[name] = _TensorRef(_StorageRef(key, storage_class, tensor.numel()), tuple(tensor.shape))
                del tensor, storage
            payload = {"state_dict": state, "meta": _resolve(meta)}
            buffer = _pickle(payload)
            writer.write_record("data.pkl", buffer, len(buffer))
            writer.write_record(".format_version", "1", 1)
            writer.write_record(".storage_alignment", "64", 2)
            writer.write_record("byteorder", sys.byteorder, len(sys.byteorder))
            writer.write_end_of_file()
            writer = None
            f.close()
        finally:
            stream.close()
            writer = None  # drop it while the file is still open (its destructor may write to it)
            f.abort()
    return out


def _pickle(payload: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    _RefPickler(buffer, protocol=2).dump(payload)
    return buffer.getvalue()


# --------------------------------------------------------------------------- safetensors


def _header(specs: dict[str, Spec], metadata: dict[str, str]) -> bytes:
    """The length-prefixed JSON header, padded with spaces so that the data starts 8-aligned."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, (shape, dtype) in specs.items():
        size = _nbytes((shape, dtype), name)
        header[name] = {"dtype": _dtype_info(dtype, name)[0], "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-(8 + len(text)) % 8)
    return len(text).to_bytes(8, "little") + text


def _data_bytes(specs: dict[str, Spec]) -> int:
    return sum(_nbytes(spec, name) for name, spec in specs.items())


def _shards(specs: dict[str, Spec], max_shard_bytes: int) -> list[dict[str, Spec]]:
    """Cut the specs, in order, into consecutive groups of at most ``max_shard_bytes`` each.

    A tensor larger than the limit gets a shard of its own.
    """
    shards: list[dict[str, Spec]] = [{}]
    size = 0
    for name, spec in specs.items():
        nbytes = _nbytes(spec, name)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = spec
        size += nbytes
    return shards


def _normalise_specs(specs: dict) -> dict[str, Spec]:
    out: dict[str, Spec] = {}
    for name, spec in specs.items():
        try:
            shape, dtype = spec
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ConversionError(f"{name}: a spec is (shape, dtype), got {spec!r}") from None
        if any(d < 0 for d in shape):
            raise ConversionError(f"{name}: bad spec {spec!r}")
        _dtype_info(dtype, name)
        out[name] = (shape, _dtype_name(dtype))
    if not out:
        raise ConversionError("nothing to write: the specs list no tensors")
    return out


def _stream_into(f, specs: dict[str, Spec], stream: Iterator, done: int, total: int,
                 expected: list[str], all_specs: dict[str, Spec]) -> int:
    """Write the tensors of one file (``specs``, in order) from ``stream``; return the count."""
    for _ in specs:
        try:
            name, tensor = next(stream)
        except StopIteration:
            raise ConversionError(f"stream ended after {done} of {total} tensors; "
                                  f"{expected[done]!r} and later are missing") from None
        _check(name, tensor, expected[done], all_specs.get(name), done, total)
        if isinstance(tensor, FileSlices):
            f.write_slices(tensor)
        else:
            f.write(_raw_bytes(tensor))
        del tensor
        done += 1
    return done


def write_safetensors(tensors: Iterable[tuple[str, "torch.Tensor"]], specs: dict, meta, out: str | Path,
                      max_shard_bytes: int = DEFAULT_SHARD_BYTES, prefetch: bool = True) -> list[Path]:
    """Stream ``tensors`` into safetensors; return the written files.

    ``specs`` maps each name to ``(shape, dtype)`` in the order the tensors will arrive (a torch
    or numpy dtype, or its name); every arriving tensor must match its spec. A tensor is a
    ``torch.Tensor``, a numpy array or :class:`FileSlices`; this writer never imports torch. The header's ``__metadata__`` holds
    ``{"format": "pt", "ringmoe_meta": json.dumps(meta)}``.

    ``meta`` is a dict, or something resolved after the last tensor (a zero-argument callable
    or an object with ``result()``, such as a ``concurrent.futures.Future``): the header then
    gets room reserved up front and is written last, padded with spaces (which the format
    allows), so the metadata can be computed while the tensors stream.

    If the tensors fit in ``max_shard_bytes``, ``out`` is a single file. Otherwise ``out`` is a
    directory holding ``model-0000i-of-0000N.safetensors`` and ``model.safetensors.index.json``
    (``{"metadata": {"total_size", "ringmoe_meta"}, "weight_map": {name: file}}``); the shards'
    own metadata is ``{"format": "pt"}``. Returns ``[out]`` or the shards then the index.

    With ``prefetch`` the source is iterated in a background thread one tensor ahead, so that
    reading and transforming the next tensor overlaps writing this one (at most three tensors
    are alive at once: being produced, queued, being written).
    """
    out = Path(out)
    specs = _normalise_specs(specs)
    if max_shard_bytes <= 0:
        raise ConversionError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    names = list(specs)
    groups = _shards(specs, max_shard_bytes)
    stream = _Prefetched(tensors) if prefetch else _Plain(tensors)
    try:
        if len(groups) == 1:
            with _temp_path(out) as tmp:
                reserve, header = 0, b""
                if isinstance(meta, dict):
                    header = _header(specs, {"format": "pt", META_KEY: json.dumps(meta)})
                else:
                    reserve = len(_header(specs, {"format": "pt", META_KEY: ""})) + _meta_reserve(len(specs))
                    reserve += -reserve % _BLOCK
                f = _SequentialFile(tmp, reserve, size=len(header) + _data_bytes(specs))
                try:
                    f.write(header)
                    _stream_into(f, specs, stream, 0, len(names), names, specs)
                    _expect_end(stream, len(names))
                    f.close()
                finally:
                    f.abort()
                if not isinstance(meta, dict):
                    _finish_header(tmp, specs, {"format": "pt", META_KEY: json.dumps(_resolve(meta))}, reserve)
            return [out]
        return _write_shards(stream, specs, groups, meta, out)
    finally:
        stream.close()


def _write_shards(stream, specs: dict[str, Spec], groups: list[dict[str, Spec]], meta, out: Path) -> list[Path]:
    names = list(specs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        files, weight_map, done = [], {}, 0
        count = len(groups)
        for i, group in enumerate(groups, 1):
            filename = f"model-{i:05d}-of-{count:05d}.safetensors"
            path = tmp_dir / filename
            path.touch()
            header = _header(group, {"format": "pt"})
            f = _SequentialFile(path, size=len(header) + _data_bytes(group))
            try:
                f.write(header)
                done = _stream_into(f, group, stream, done, len(names), names, specs)
                f.close()
            finally:
                f.abort()
            files.append(filename)
            weight_map.update(dict.fromkeys(group, filename))
        _expect_end(stream, len(names))
        index = {"metadata": {"total_size": _data_bytes(specs), META_KEY: json.dumps(_resolve(meta))}, "weight_map": weight_map}
        with open(tmp_dir / INDEX_NAME, "w") as f:
            json.dump(index, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp_dir)
        _install(tmp_dir, out)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return [out / name for name in files] + [out / INDEX_NAME]


def _meta_reserve(count: int) -> int:
    """Header room kept for metadata computed after the data (ours takes ~150 bytes a tensor)."""
    return 64 * 1024 + 1024 * count


def _resolve(meta) -> dict:
    if isinstance(meta, dict):
        return meta
    if hasattr(meta, "result"):
        return meta.result()
    if callable(meta):
        return meta()
    raise ConversionError(f"meta must be a dict, a callable or a future, not {type(meta).__name__}")


def _finish_header(tmp: Path, specs: dict[str, Spec], metadata: dict[str, str], reserve: int) -> None:
    """Write the final header into the reserved room, padded with spaces to fill it exactly.

    If it does not fit (metadata far larger than expected), rewrite the file with the data
    moved: slow but correct.
    """
    header = _header(specs, metadata)
    if len(header) <= reserve:
        text = header[8:] + b" " * (reserve - len(header))
        with open(tmp, "r+b") as f:
            f.write(len(text).to_bytes(8, "little") + text)
            f.flush()
            os.fsync(f.fileno())
        return
    moved = tmp.with_name(tmp.name + ".moved")
    try:
        with open(tmp, "rb") as src, open(moved, "wb", buffering=_WRITE_BUFFER) as dst:
            dst.write(header)
            src.seek(reserve)
            shutil.copyfileobj(src, dst, 16 * 2**20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(moved, tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            moved.unlink()


def _expect_end(stream: Iterator, total: int) -> None:
    extra = next(stream, None)
    if extra is not None:
        raise ConversionError(f"stream has more tensors than the {total} announced: unexpected {extra[0]!r}")


class _Plain:
    """The tensors as given, with the same interface as :class:`_Prefetched`."""

    def __init__(self, items: Iterable):
        self._items = iter(items)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._items)

    def close(self) -> None:
        pass


class _Prefetched(_Plain):
    """Iterate ``items`` in a background thread, one item ahead of the consumer.

    Reading a tensor and transposing it (numpy) and writing one (a system call) all release
    the GIL, so on two cores they overlap. The producer's exception is raised in the consumer.
    """

    def __init__(self, items: Iterable):
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(iter(items),), daemon=True,
                                        name="writers-prefetch")
        self._thread.start()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(("item", item)):
                    return
                del item
            self._put(("end", None))
        except BaseException as exc:  # handed to the consumer
            self._put(("error", exc))

    def __next__(self):
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "item":
            return value
        self._finished = True
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join()


# --------------------------------------------------------------------------- conversion plans


def plan_specs(plan) -> dict[str, Spec]:
    """``(shape, dtype)`` of each target of a ``converters.ringmoe.Plan``, in ``Plan.tensors()`` order."""
    from converters import ringmoe

    target_dtype = ringmoe.DTYPES[plan.dtype]
    shapes = plan.source.shapes()
    source_dtypes = plan.source.dtypes()
    position = {name: i for i, name in enumerate(shapes)}
    specs: dict[str, Spec] = {}
    for source, (target, how) in sorted(plan.mapped.items(), key=lambda kv: position[kv[0]]):
        specs[target] = (ringmoe._transformed_shape(tuple(shapes[source]), how),
                         ringmoe.output_dtype(source_dtypes[source], target_dtype))
    return specs


def write_plan(plan, out: str | Path, fmt: str = "safetensors", max_shard_bytes: int = DEFAULT_SHARD_BYTES,
               prefetch: bool = True) -> tuple[list[Path], dict]:
    """Stream a checked ``converters.ringmoe.Plan`` into ``out`` as ``"safetensors"`` or ``"pth"``.

    ``Plan.meta()`` (which hashes the source files) runs in a background thread while the
    tensors stream; both writers take the metadata last. Returns (written files, that meta).
    """
    if fmt not in ("safetensors", "pth"):
        raise ConversionError(f"unknown output format {fmt!r}; choose 'safetensors' or 'pth'")
    specs = plan_specs(plan) if fmt == "safetensors" else None
    meta = in_background(plan.meta, "writers-meta")  # an error below does not wait for it
    if fmt == "safetensors":
        files = write_safetensors(plan.tensors(for_safetensors=True), specs, meta, out, max_shard_bytes, prefetch)
    else:
        files = [write_pth(plan.tensors(), meta, out, prefetch)]
    return files, meta.result()


# --------------------------------------------------------------------------- reading


def is_safetensors_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` names a safetensors checkpoint (file, index or directory holding one)."""
    path = Path(path)
    if path.name.endswith(".safetensors") and not path.is_dir():
        return True
    if path.name.endswith(".safetensors.index.json"):
        return True
    return path.is_dir() and ((path / INDEX_NAME).is_file() or (path / SINGLE_NAME).is_file()
                              or any(path.glob("*.safetensors")))


def _file_order(path: Path) -> list[str]:
    """Tensor names of a safetensors file in the order of their bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConversionError(f"{path}: too short to be a safetensors file")
        size = int.from_bytes(head, "little")
        if size > 100 * 2**20:
            raise ConversionError(f"{path}: not a safetensors file (header of {size} bytes)")
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ConversionError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: not a safetensors file (header is not a JSON object)")
    header.pop("__metadata__", None)
    try:
        return sorted(header, key=lambda name: header[name]["data_offsets"][0])
    except (TypeError, KeyError, IndexError):
        raise ConversionError(f"{path}: malformed safetensors header") from None


def _read_file(path: Path, names: list[str] | None, state_dict: dict, device: str) -> dict:
    """Add the tensors of one file to ``state_dict``; return its ``__metadata__``."""
    from safetensors import SafetensorError, safe_open

    order = _file_order(path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            present = set(f.keys())
            wanted = order if names is None else names
            missing = [n for n in wanted if n not in present]
            if missing:
                raise ConversionError(f"{path} lacks {len(missing)} tensors its index lists: {missing[:4]}")
            for name in (order if names is None else [n for n in order if n in set(names)]):
                state_dict[name] = f.get_tensor(name)
    except SafetensorError as err:
        raise ConversionError(f"{path}: unreadable safetensors file ({err})") from None
    return metadata


def _load_meta(text: str | None, where: Path) -> dict:
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConversionError(f"{where}: {META_KEY} is not valid JSON ({err.msg})") from None
    return meta if isinstance(meta, dict) else {}


def _entry_file(path: str | Path) -> Path:
    """The file that describes a safetensors checkpoint: the index, or the single file."""
    path = Path(path)
    if path.is_dir():
        if (path / INDEX_NAME).is_file():
            path = path / INDEX_NAME
        elif (path / SINGLE_NAME).is_file():
            path = path / SINGLE_NAME
        else:
            found = sorted(path.glob("*.safetensors"))
            if len(found) != 1:
                raise ConversionError(f"{path}: expected {INDEX_NAME}, {SINGLE_NAME} or a single .safetensors "
                                      f"file, found {len(found)} .safetensors files")
            path = found[0]
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    return path


def read_safetensors_meta(path: str | Path) -> dict:
    """Only the meta of a safetensors checkpoint: the index or a file header, no tensor data."""
    from safetensors import SafetensorError, safe_open

    path = _entry_file(path)
    try:
        if path.name.endswith(".json"):
            metadata = json.loads(path.read_text()).get("metadata") or {}
        else:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, SafetensorError) as err:
        raise ConversionError(f"{path}: unreadable safetensors checkpoint ({err})") from None
    return _load_meta(metadata.get(META_KEY), path)


def read_safetensors_checkpoint(path: str | Path, device: str = "cpu") -> tuple[dict, dict]:
    """``(state_dict, meta)`` of a checkpoint written by :func:`write_safetensors`.

    ``path`` is a ``.safetensors`` file, a ``model.safetensors.index.json``, or a directory
    holding either. ``meta`` is ``{}`` when the files carry no ``ringmoe_meta``.
    """
    path = _entry_file(path)
    state_dict: dict[str, torch.Tensor] = {}
    if not path.name.endswith(".json"):
        metadata = _read_file(path, None, state_dict, device)
        return state_dict, _load_meta(metadata.get(META_KEY), path)

    try:
        index = json.loads(path.read_text())
        weight_map = index["weight_map"]
        metadata = index.get("metadata") or {}
        if not isinstance(weight_map, dict) or not isinstance(metadata, dict):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ConversionError(f"{path}: not a safetensors index (needs a 'weight_map' object)") from None
    by_file: dict[str, list[str]] = {}
    for name, filename in weight_map.items():
        by_file.setdefault(filename, []).append(name)
    shard_meta = {}
    for filename, names in by_file.items():
        shard = path.parent / filename
        if Path(filename).name != filename or not shard.is_file():
            raise ConversionError(f"{path}: shard {filename!r} is missing")
        shard_meta = _read_file(shard, names, state_dict, device) or shard_meta
    text = metadata.get(META_KEY, shard_meta.get(META_KEY))
    # Keep the index's order of names (the stream order for our own files).
    return {name: state_dict[name] for name in weight_map}, _load_meta(text, path)


# --------------------------------------------------------------------------- mmengine


def load_from_safetensors(filename: str, map_location=None) -> dict:
    """mmengine loader for ``safetensors://PATH``: ``{'state_dict': ..., 'meta': ...}``."""
    path = os.path.expanduser(filename[len(SCHEME):] if filename.startswith(SCHEME) else filename)
    import torch

    device = "cpu"
    if isinstance(map_location, (str, torch.device)) and str(map_location) != "cpu":
        device = str(map_location)
    state_dict, meta = read_safetensors_checkpoint(path, device=device)
    return {"state_dict": state_dict, "meta": meta}


def register_mmengine_loader(force: bool = False) -> None:
    """Register the ``safetensors://`` scheme with mmengine's CheckpointLoader (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    if CheckpointLoader._get_checkpoint_loader(SCHEME) is load_from_safetensors:
        return
    CheckpointLoader.register_scheme(SCHEME, load_from_safetensors, force=force)


__all__ = [
    "INDEX_NAME", "SCHEME", "is_safetensors_checkpoint", "load_from_safetensors", "plan_specs",
    "read_safetensors_checkpoint", "register_mmengine_loader", "write_pth", "write_plan", "write_safetensors",
]
