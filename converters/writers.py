"""Streaming writers for converted checkpoints: mmengine ``.pth`` and (sharded) safetensors.

Both writers take the converter's stream of ``(target key, tensor)`` pairs and keep one tensor in
memory at a time, so converting a checkpoint needs about the largest tensor, not the model.

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
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from converters.util import ConversionError

META_KEY = "ringmoe_meta"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
SCHEME = "safetensors://"
DEFAULT_SHARD_BYTES = 5 * 2**30
_WRITE_BUFFER = 1 << 20

# torch dtype -> (safetensors dtype, bytes per element, torch storage class name for pickles)
_DTYPES: dict[torch.dtype, tuple[str, int, str]] = {
    torch.float32: ("F32", 4, "FloatStorage"),
    torch.float16: ("F16", 2, "HalfStorage"),
    torch.bfloat16: ("BF16", 2, "BFloat16Storage"),
    torch.float64: ("F64", 8, "DoubleStorage"),
    torch.int64: ("I64", 8, "LongStorage"),
    torch.int32: ("I32", 4, "IntStorage"),
    torch.int16: ("I16", 2, "ShortStorage"),
    torch.int8: ("I8", 1, "CharStorage"),
    torch.uint8: ("U8", 1, "ByteStorage"),
    torch.bool: ("BOOL", 1, "BoolStorage"),
}

Spec = tuple[tuple[int, ...], torch.dtype]


# --------------------------------------------------------------------------- helpers


def _dtype_info(dtype: torch.dtype, name: str) -> tuple[str, int, str]:
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConversionError(f"{name}: dtype {dtype} is not supported by the writers "
                              f"(supported: {', '.join(str(d) for d in _DTYPES)})") from None


def _nbytes(spec: Spec, name: str) -> int:
    shape, dtype = spec
    return math.prod(shape) * _dtype_info(dtype, name)[1]


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in C order without a copy when it is already contiguous on the CPU."""
    if sys.byteorder != "little":  # pragma: no cover - every supported machine is little-endian
        raise ConversionError("the writers produce little-endian files and need a little-endian machine")
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
    if not isinstance(tensor, torch.Tensor):
        raise ConversionError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    shape, dtype = spec
    if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
        raise ConversionError(f"{name}: got {tensor.dtype} {list(tensor.shape)}, "
                              f"but the header announced {dtype} {list(shape)}")


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
def _temp_file(out: Path) -> Iterator[tuple[object, Path]]:
    """A buffered binary file beside ``out``; fsynced and renamed into place on success."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb", buffering=_WRITE_BUFFER) as f:
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
        _install(tmp, out)
    except BaseException:
        _remove(tmp)
        raise


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
        stride, step = [], 1
        for size in reversed(self.shape):
            stride.append(step)
            step *= max(size, 1)
        args = (self.storage, 0, tuple(self.shape), tuple(reversed(stride)), False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _RefPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", getattr(torch, obj.storage_class), obj.key, "cpu", obj.numel)
        return None


def write_pth(tensors: Iterable[tuple[str, torch.Tensor]], meta: dict | Callable[[], dict], out: str | Path) -> Path:
    """Write the mmengine checkpoint ``{'state_dict': ..., 'meta': meta}`` to ``out``, streaming.

    The result is what ``torch.save`` writes (a zip archive with ``data.pkl`` and one record
    per tensor) and loads with ``torch.load(weights_only=True)`` (and ``mmap=True``). ``meta``
    must be plain Python types; it may also be a callable, called after the last tensor.
    """
    out = Path(out)
    from torch.serialization import get_crc32_options

    state: dict[str, _TensorRef] = {}
    with _temp_file(out) as (f, _):
        writer = torch._C.PyTorchFileWriter(f, get_crc32_options(), 64)
        try:
            for name, tensor in tensors:
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
            payload = {"state_dict": state, "meta": meta() if callable(meta) else meta}
            buffer = _pickle(payload)
            writer.write_record("data.pkl", buffer, len(buffer))
            writer.write_record(".format_version", "1", 1)
            writer.write_record(".storage_alignment", "64", 2)
            writer.write_record("byteorder", sys.byteorder, len(sys.byteorder))
            writer.write_end_of_file()
        finally:
            del writer  # finish with the file still open (the destructor may write to it)
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
            raise ConversionError(f"{name}: a spec is (shape, torch dtype), got {spec!r}") from None
        if any(d < 0 for d in shape) or not isinstance(dtype, torch.dtype):
            raise ConversionError(f"{name}: bad spec {spec!r}")
        _dtype_info(dtype, name)
        out[name] = (shape, dtype)
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
        f.write(_raw_bytes(tensor))
        del tensor
        done += 1
    return done


def write_safetensors(tensors: Iterable[tuple[str, torch.Tensor]], specs: dict, meta: dict, out: str | Path,
                      max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """Stream ``tensors`` into safetensors; return the written files.

    ``specs`` maps each name to ``(shape, torch dtype)`` in the order the tensors will arrive;
    every arriving tensor must match its spec. The header's ``__metadata__`` holds
    ``{"format": "pt", "ringmoe_meta": json.dumps(meta)}``.

    If the tensors fit in ``max_shard_bytes``, ``out`` is a single file. Otherwise ``out`` is a
    directory holding ``model-0000i-of-0000N.safetensors`` and ``model.safetensors.index.json``
    (``{"metadata": {"total_size", "ringmoe_meta"}, "weight_map": {name: file}}``); the shards'
    own metadata is ``{"format": "pt"}``. Returns ``[out]`` or the shards then the index.
    """
    out = Path(out)
    specs = _normalise_specs(specs)
    if max_shard_bytes <= 0:
        raise ConversionError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    meta_text = json.dumps(meta)
    names = list(specs)
    stream = iter(tensors)
    groups = _shards(specs, max_shard_bytes)

    if len(groups) == 1:
        with _temp_file(out) as (f, _):
            f.write(_header(specs, {"format": "pt", META_KEY: meta_text}))
            _stream_into(f, specs, stream, 0, len(names), names, specs)
            _expect_end(stream, len(names))
        return [out]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        files, weight_map, done = [], {}, 0
        count = len(groups)
        for i, group in enumerate(groups, 1):
            filename = f"model-{i:05d}-of-{count:05d}.safetensors"
            with open(tmp_dir / filename, "wb", buffering=_WRITE_BUFFER) as f:
                f.write(_header(group, {"format": "pt"}))
                done = _stream_into(f, group, stream, done, len(names), names, specs)
                f.flush()
                os.fsync(f.fileno())
            files.append(filename)
            weight_map.update(dict.fromkeys(group, filename))
        _expect_end(stream, len(names))
        index = {"metadata": {"total_size": sum(_nbytes(s, n) for n, s in specs.items()), META_KEY: meta_text},
                 "weight_map": weight_map}
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


def _expect_end(stream: Iterator, total: int) -> None:
    extra = next(stream, None)
    if extra is not None:
        raise ConversionError(f"stream has more tensors than the {total} announced: unexpected {extra[0]!r}")


# --------------------------------------------------------------------------- conversion plans


def plan_specs(plan) -> dict[str, Spec]:
    """``(shape, dtype)`` of each target of a ``converters.ringmoe.Plan``, in ``Plan.tensors()`` order."""
    from converters import ringmoe

    target_dtype = getattr(torch, ringmoe.DTYPES[plan.dtype])
    shapes = plan.source.shapes()
    index = getattr(plan.source, "index", None)
    position = {name: i for i, name in enumerate(shapes)}
    specs: dict[str, Spec] = {}
    for source, (target, how) in sorted(plan.mapped.items(), key=lambda kv: position[kv[0]]):
        dtype = target_dtype
        record = index.get(source) if index is not None else None
        if record is not None and not record.dtype.startswith(("Float", "BFloat")):
            dtype = _SOURCE_INTEGER_DTYPES.get(record.dtype, target_dtype)
        specs[target] = (ringmoe._transformed_shape(tuple(shapes[source]), how), dtype)
    return specs


_SOURCE_INTEGER_DTYPES = {"Int64": torch.int64, "Int32": torch.int32, "Int16": torch.int16,
                          "Int8": torch.int8, "UInt8": torch.uint8, "Bool": torch.bool}


def write_plan(plan, out: str | Path, fmt: str = "safetensors", max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """Stream a checked conversion plan into ``out`` as ``"safetensors"`` or ``"pth"``."""
    if fmt == "safetensors":
        return write_safetensors(plan.tensors(), plan_specs(plan), plan.meta(), out, max_shard_bytes)
    if fmt == "pth":
        return [write_pth(plan.tensors(), plan.meta, out)]
    raise ConversionError(f"unknown output format {fmt!r}; choose 'safetensors' or 'pth'")


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


def read_safetensors_checkpoint(path: str | Path, device: str = "cpu") -> tuple[dict, dict]:
    """``(state_dict, meta)`` of a checkpoint written by :func:`write_safetensors`.

    ``path`` is a ``.safetensors`` file, a ``model.safetensors.index.json``, or a directory
    holding either. ``meta`` is ``{}`` when the files carry no ``ringmoe_meta``.
    """
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
