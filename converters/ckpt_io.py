"""Streaming reader for MindSpore checkpoints, without MindSpore or protobuf.

Two on-disk formats are understood, chosen by looking at the file's content:

* ``.ckpt``: a concatenation of protobuf ``Checkpoint { repeated Value value = 1 }``
  messages, optionally followed by a 17-byte CRC footer (``b"crc_num"`` and the
  ``zlib.crc32`` of all preceding bytes as a 10-byte big-endian integer).
* MindSpore safetensors (``save_checkpoint(..., format="safetensors")``): an 8-byte
  little-endian header length, a JSON header, then raw tensor bytes.

:func:`scan_checkpoint` walks the file once, seeking over tensor bytes, and returns a
:class:`CheckpointIndex`; :func:`read_tensor` then reads exactly one tensor.
:func:`iter_tensors` combines the two and keeps one tensor in memory at a time.
Every problem with a file is reported as a one-line :class:`CheckpointError`.

Only the standard library and numpy are used.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np

__all__ = [
    "CheckpointError",
    "CheckpointIndex",
    "TensorRecord",
    "has_crc_footer",
    "iter_tensors",
    "read_tensor",
    "scan_checkpoint",
]

PathLike = Union[str, os.PathLike]

CRC_MAGIC = b"crc_num"
CRC_FOOTER_SIZE = len(CRC_MAGIC) + 10

# First four bytes of files written with ``enc_key`` (little-endian 0x7F3A5ED8 + mode).
_ENCRYPTION_MAGICS = {
    b"\xd8\x5e\x3a\x7f": "AES-GCM",
    b"\xd9\x5e\x3a\x7f": "AES-CBC",
    b"\xda\x5e\x3a\x7f": "SM4-CBC",
}
_ENCRYPTION_HINT = (
    "the file is not a MindSpore checkpoint, or it was saved with enc_key (encrypted) "
    "and cannot be read without MindSpore"
)

_MAX_STRING_BYTES = 1 << 16  # tag and tensor_type strings
_MAX_NDIM = 32  # numpy 1.x limit
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_CHUNK = 1 << 20
_MAX_ZERO_CRC = 1 << 30  # see _verify_safetensors_crc

# MindSpore tensor_type -> little-endian numpy dtype of the stored bytes.
_STORAGE_DTYPES = {
    "Float16": "<f2",
    "Float32": "<f4",
    "Float64": "<f8",
    "BFloat16": "<u2",
    "Int8": "i1",
    "Int16": "<i2",
    "Int32": "<i4",
    "Int64": "<i8",
    "UInt8": "u1",
    "UInt16": "<u2",
    "UInt32": "<u4",
    "UInt64": "<u8",
    "Bool": "u1",
    "Int4": "i1",  # one byte per stored element, two 4-bit values in it
}
_ITEMSIZE = {name: np.dtype(code).itemsize for name, code in _STORAGE_DTYPES.items()}
_INTEGER_DTYPES = frozenset(name for name in _STORAGE_DTYPES if "Int" in name)

# safetensors dtype -> MindSpore tensor_type.
_SAFETENSORS_DTYPES = {
    "F16": "Float16",
    "F32": "Float32",
    "F64": "Float64",
    "BF16": "BFloat16",
    "I8": "Int8",
    "I16": "Int16",
    "I32": "Int32",
    "I64": "Int64",
    "U8": "UInt8",
    "U16": "UInt16",
    "U32": "UInt32",
    "U64": "UInt64",
    "BOOL": "Bool",
}

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LEN, _WIRE_FIXED32 = 0, 1, 2, 5


class CheckpointError(Exception):
    """One-line, user-facing error about a bad checkpoint file."""


@dataclass(frozen=True)
class TensorRecord:
    """Where one tensor lives in a checkpoint file.

    ``shape`` is the stored shape (``()`` for 0-d tensors and strings); for ``Int4`` it
    counts packed bytes, see :func:`read_tensor`. ``offsets`` lists the
    ``(file offset, byte length)`` of each piece of the tensor's bytes in file order.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]

    @property
    def nbytes(self) -> int:
        """Total number of stored bytes."""
        return sum(length for _, length in self.offsets)


class CheckpointIndex(Mapping[str, TensorRecord]):
    """Tensors of one checkpoint file by name, in file order.

    Attributes: ``path``; ``format`` (``"ckpt"`` or ``"safetensors"``);
    ``maptensor_names`` (MapParameter records, which are skipped); ``has_crc`` (a CRC
    footer, or a ``crc_num`` safetensors metadata entry, is present); ``size`` (file
    size in bytes); ``metadata`` (safetensors ``__metadata__``, empty for ``.ckpt``).
    """

    def __init__(
        self,
        path: str,
        format: str,
        records: list[TensorRecord],
        *,
        maptensor_names: list[str],
        has_crc: bool,
        size: int,
        metadata: dict[str, str],
    ) -> None:
        self.path = path
        self.format = format
        self._records = {record.name: record for record in records}
        self.maptensor_names = maptensor_names
        self.has_crc = has_crc
        self.size = size
        self.metadata = metadata

    def __getitem__(self, name: str) -> TensorRecord:
        return self._records[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"CheckpointIndex({self.path!r}, {self.format}, {len(self)} tensors)"


# --------------------------------------------------------------------------- errors


def _error(path: str, message: str, offset: int | None = None) -> CheckpointError:
    """Build a one-line CheckpointError naming the file and, if given, a byte offset."""
    where = f" (at byte {offset})" if offset is not None else ""
    text = f"{path}: {message}{where}"
    return CheckpointError(" ".join(text.splitlines()))


@contextmanager
def _guard(path: str) -> Iterator[None]:
    """Turn any internal exception into a CheckpointError about ``path``."""
    try:
        yield
    except CheckpointError:
        raise
    except OSError as exc:
        raise _error(path, f"cannot read file: {exc.strerror or exc}") from exc
    except MemoryError as exc:
        raise _error(path, "out of memory while reading the checkpoint") from exc
    except (ValueError, TypeError, IndexError, KeyError, OverflowError,
            struct.error, RecursionError) as exc:
        raise _error(path, f"malformed checkpoint ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------- protobuf walking


class _Cursor:
    """Reads small protobuf fields from a file, tracking the position and bounds."""

    def __init__(self, f: BinaryIO, path: str, end: int) -> None:
        self.f = f
        self.path = path
        self.end = end  # end of the protobuf stream (file size, less any CRC footer)
        self.pos = 0
        f.seek(0)

    def need(self, n: int, limit: int, at: int) -> None:
        """Fail unless ``n`` bytes remain before ``limit``."""
        left = limit - self.pos
        if n <= left:
            return
        if limit >= self.end:
            place = "before the end of the checkpoint data; the file is truncated or corrupt"
        else:
            place = f"in the enclosing record ending at byte {limit}; the file is corrupt"
        raise _error(self.path, f"a field needs {n} bytes but only {left} remain {place}", at)

    def varint(self, limit: int) -> int:
        """Read one unsigned varint (at most 10 bytes) ending before ``limit``."""
        start = self.pos
        result = 0
        for index in range(10):
            self.need(1, limit, start)
            byte = self.f.read(1)
            if not byte:
                raise _error(self.path, "unexpected end of file inside a varint", start)
            self.pos += 1
            result |= (byte[0] & 0x7F) << (7 * index)
            if not byte[0] & 0x80:
                if result >> 64:
                    break
                return result
        raise _error(self.path, "invalid varint (longer than 64 bits)", start)

    def length(self, limit: int) -> int:
        """Read a length prefix and check that many bytes remain before ``limit``."""
        start = self.pos
        n = self.varint(limit)
        self.need(n, limit, start)
        return n

    def text(self, limit: int, what: str) -> str:
        """Read a length-delimited UTF-8 string of bounded size."""
        start = self.pos
        n = self.length(limit)
        if n > _MAX_STRING_BYTES:
            raise _error(self.path, f"{what} is {n} bytes long (limit {_MAX_STRING_BYTES})", start)
        data = self.f.read(n)
        if len(data) != n:
            raise _error(self.path, "unexpected end of file", start)
        self.pos += n
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _error(self.path, f"{what} is not valid UTF-8", start) from None

    def skip(self, n: int) -> None:
        """Move forward ``n`` bytes without reading them (bounds already checked)."""
        self.pos += n
        self.f.seek(self.pos)

    def peek(self, n: int) -> bytes:
        """Return up to ``n`` bytes at the current position without consuming them."""
        data = self.f.read(n)
        self.f.seek(self.pos)
        return data


def _skip_field(cur: _Cursor, key: int, limit: int, at: int) -> None:
    """Skip one unknown field of any valid wire type."""
    wire = key & 7
    if key >> 3 == 0:
        raise _error(cur.path, "invalid protobuf field number 0", at)
    if wire == _WIRE_VARINT:
        cur.varint(limit)
    elif wire == _WIRE_FIXED64:
        cur.need(8, limit, at)
        cur.skip(8)
    elif wire == _WIRE_LEN:
        cur.skip(cur.length(limit))
    elif wire == _WIRE_FIXED32:
        cur.need(4, limit, at)
        cur.skip(4)
    else:
        raise _error(cur.path, f"invalid protobuf wire type {wire} (field {key >> 3})", at)


def _int64(value: int) -> int:
    """Reinterpret an unsigned varint value as a two's-complement int64."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


@dataclass
class _Tensor:
    """Fields of one TensorProto record."""

    dims: list[int]
    dtype: str
    piece: tuple[int, int]


def _parse_tensor(cur: _Cursor, end: int, at: int) -> _Tensor:
    """Parse a TensorProto ending at ``end``, seeking over tensor_content."""
    dims: list[int] = []
    dtype: str | None = None
    piece: tuple[int, int] | None = None
    while cur.pos < end:
        start = cur.pos
        key = cur.varint(end)
        if key == (1 << 3) | _WIRE_VARINT:
            dims.append(_int64(cur.varint(end)))
        elif key == (1 << 3) | _WIRE_LEN:  # packed dims
            n = cur.length(end)
            packed_end = cur.pos + n
            while cur.pos < packed_end and len(dims) <= _MAX_NDIM:
                dims.append(_int64(cur.varint(packed_end)))
        elif key == (2 << 3) | _WIRE_LEN:
            if dtype is not None:
                raise _error(cur.path, "tensor has two tensor_type fields", start)
            dtype = cur.text(end, "tensor_type")
        elif key == (3 << 3) | _WIRE_LEN:
            if piece is not None:
                raise _error(cur.path, "tensor has two tensor_content fields", start)
            n = cur.length(end)
            piece = (cur.pos, n)
            cur.skip(n)
        else:
            _skip_field(cur, key, end, start)
        if len(dims) > _MAX_NDIM:
            raise _error(cur.path, f"tensor has more than {_MAX_NDIM} dims", at)
    if dtype is None:
        raise _error(cur.path, "tensor has no tensor_type", at)
    if any(d < 0 for d in dims):
        raise _error(cur.path, f"tensor has a negative dimension {dims}", at)
    return _Tensor(dims, dtype, piece if piece is not None else (end, 0))


def _parse_value(cur: _Cursor, end: int, at: int) -> tuple[str, _Tensor | None]:
    """Parse a Value record; returns its tag and tensor (None for a maptensor)."""
    tag: str | None = None
    tensor: _Tensor | None = None
    is_map = False
    while cur.pos < end:
        start = cur.pos
        key = cur.varint(end)
        if key == (1 << 3) | _WIRE_LEN:
            if tag is not None:
                raise _error(cur.path, "record has two tags", start)
            tag = cur.text(end, "tag")
        elif key in ((2 << 3) | _WIRE_LEN, (3 << 3) | _WIRE_LEN):
            if tensor is not None or is_map:
                raise _error(cur.path, "record has more than one tensor", start)
            n = cur.length(end)
            if key >> 3 == 2:
                tensor = _parse_tensor(cur, cur.pos + n, start)
            else:
                is_map = True
                cur.skip(n)
        else:
            _skip_field(cur, key, end, start)
    if tag is None:
        raise _error(cur.path, "record has no tag", at)
    if tensor is None and not is_map:
        raise _error(cur.path, f"record {tag!r} holds no tensor", at)
    return tag, tensor


def _make_record(path: str, name: str, dtype: str, dims: list[int],
                 pieces: list[tuple[int, int]], at: int) -> TensorRecord:
    """Build a TensorRecord after checking its byte count against dtype and shape."""
    nbytes = sum(n for _, n in pieces)
    shape = tuple(dims)
    if dtype == "str":
        if nbytes % 4:
            raise _error(path, f"string {name!r} has {nbytes} bytes, not a multiple of 4", at)
        shape = ()
    elif dtype in _ITEMSIZE:
        itemsize = _ITEMSIZE[dtype]
        if shape == (0,) and nbytes == itemsize:  # 0-d tensor from an older writer
            shape = ()
        expected = math.prod(shape) * itemsize
        if nbytes != expected:
            raise _error(path, f"tensor {name!r} ({dtype}, shape {list(shape)}) should have "
                               f"{expected} bytes but has {nbytes}", at)
    # Unknown dtypes are indexed unchecked; read_tensor refuses them.
    return TensorRecord(name, dtype, shape, tuple(pieces))


class _Merger:
    """Joins consecutive records with the same tag into one TensorRecord."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records: list[TensorRecord] = []
        self.seen: set[str] = set()
        self.current: tuple[str, _Tensor, list[tuple[int, int]], int] | None = None

    def add(self, tag: str, tensor: _Tensor, at: int) -> None:
        """Add one record that starts at byte ``at``."""
        if self.current is not None and self.current[0] == tag:
            first = self.current[1]
            if (first.dtype, first.dims) != (tensor.dtype, tensor.dims):
                raise _error(self.path, f"pieces of tensor {tag!r} disagree on dtype or shape "
                                        f"({first.dtype} {first.dims} vs {tensor.dtype} "
                                        f"{tensor.dims})", at)
            self.current[2].append(tensor.piece)
            return
        self.flush()
        if tag in self.seen:
            raise _error(self.path, f"tensor {tag!r} appears twice, not consecutively", at)
        self.seen.add(tag)
        self.current = (tag, tensor, [tensor.piece], at)

    def flush(self) -> None:
        """Finish the tensor being merged, if any."""
        if self.current is not None:
            tag, tensor, pieces, at = self.current
            self.records.append(_make_record(self.path, tag, tensor.dtype, tensor.dims, pieces, at))
            self.current = None


def _walk_ckpt(f: BinaryIO, path: str, end: int) -> tuple[list[TensorRecord], list[str]]:
    """Walk the top-level records of a .ckpt stream that ends at byte ``end``."""
    cur = _Cursor(f, path, end)
    merger = _Merger(path)
    maptensors: list[str] = []
    values = 0
    try:
        while cur.pos < end:
            start = cur.pos
            if cur.peek(len(CRC_MAGIC)) == CRC_MAGIC:
                raise _error(path, "CRC footer found before the end of the file (trailing data "
                                   "or a damaged footer)", start)
            key = cur.varint(end)
            if key != (1 << 3) | _WIRE_LEN:
                _skip_field(cur, key, end, start)
                continue
            n = cur.length(end)
            tag, tensor = _parse_value(cur, cur.pos + n, start)
            values += 1
            if tensor is None:
                merger.flush()
                maptensors.append(tag)
            else:
                merger.add(tag, tensor, start)
        merger.flush()
    except CheckpointError as exc:
        if values == 0:
            raise CheckpointError(f"{exc}; {_ENCRYPTION_HINT}") from None
        raise
    return merger.records, maptensors


def _crc32_ranges(f: BinaryIO, start: int, stop: int, crcs: tuple[int, ...]) -> tuple[int, ...]:
    """Continue each CRC in ``crcs`` over the file bytes in ``[start, stop)``, in chunks."""
    f.seek(start)
    left = stop - start
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            raise OSError(0, "file shrank while reading")
        crcs = tuple(zlib.crc32(chunk, crc) for crc in crcs)
        left -= len(chunk)
    return crcs


def _crc32_range(f: BinaryIO, start: int, stop: int, crc: int = 0) -> int:
    """zlib.crc32 of the file bytes in ``[start, stop)``, continuing ``crc``."""
    return _crc32_ranges(f, start, stop, (crc,))[0]


def _read_footer(f: BinaryIO, size: int) -> int | None:
    """Return the CRC stored in a .ckpt footer, or None if there is no footer."""
    if size < CRC_FOOTER_SIZE:
        return None
    f.seek(size - CRC_FOOTER_SIZE)
    tail = f.read(CRC_FOOTER_SIZE)
    if tail[: len(CRC_MAGIC)] != CRC_MAGIC:
        return None
    return int.from_bytes(tail[len(CRC_MAGIC):], "big")


def _scan_ckpt(f: BinaryIO, path: str, size: int, verify_crc: bool) -> CheckpointIndex:
    """Index a protobuf .ckpt file."""
    mode = _ENCRYPTION_MAGICS.get(f.read(4))
    if mode is not None:
        raise _error(path, f"the file is encrypted ({mode}, saved with enc_key); decrypt it "
                           "with MindSpore first")
    stored = _read_footer(f, size)
    end = size if stored is None else size - CRC_FOOTER_SIZE
    if stored is not None and verify_crc:
        actual = _crc32_range(f, 0, end)
        if actual != stored:
            raise _error(path, f"CRC mismatch: footer says {stored:#010x}, data gives "
                               f"{actual:#010x}; the file is corrupt")
    records, maptensors = _walk_ckpt(f, path, end)
    return CheckpointIndex(path, "ckpt", records, maptensor_names=maptensors,
                           has_crc=stored is not None, size=size, metadata={})


# --------------------------------------------------------------------------- safetensors


def _safetensors_header_size(f: BinaryIO, size: int) -> int | None:
    """Header length if the file looks like safetensors, else None."""
    if size < 10:
        return None
    f.seek(0)
    head = f.read(9)
    n = int.from_bytes(head[:8], "little")
    if head[8:9] != b"{" or n > size - 8:
        return None
    return n


def _st_entry(path: str, name: object, entry: object, data_start: int, data_size: int,
              metadata: dict[str, str]) -> TensorRecord:
    """Validate one safetensors header entry and turn it into a TensorRecord."""
    if not isinstance(name, str) or not isinstance(entry, dict):
        raise _error(path, f"bad safetensors header entry {name!r}")
    dtype, shape, span = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    ints_ok = (isinstance(shape, list) and len(shape) <= _MAX_NDIM
               and all(type(d) is int and d >= 0 for d in shape)
               and isinstance(span, list) and len(span) == 2
               and all(type(o) is int for o in span))
    if not isinstance(dtype, str) or not ints_ok:
        raise _error(path, f"bad safetensors header entry {name!r}: {entry!r:.200}")
    begin, stop = span
    if not 0 <= begin <= stop <= data_size:
        raise _error(path, f"tensor {name!r} data_offsets {span} fall outside the "
                           f"{data_size}-byte data section")
    ms_dtype = _SAFETENSORS_DTYPES.get(dtype, f"safetensors:{dtype}")
    if dtype == "I8" and metadata.get(name) == "Int4":
        ms_dtype = "Int4"
    return _make_record(path, name, ms_dtype, shape, [(data_start + begin, stop - begin)],
                        data_start + begin)


def _scan_safetensors(f: BinaryIO, path: str, size: int, header_size: int,
                      verify_crc: bool) -> CheckpointIndex:
    """Index a safetensors file (MindSpore's or any other)."""
    if header_size > _MAX_SAFETENSORS_HEADER:
        raise _error(path, f"safetensors header of {header_size} bytes is too large")
    f.seek(8)
    raw = f.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(path, f"safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _error(path, "safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _error(path, "safetensors __metadata__ is not a string-to-string map")
    data_start = 8 + header_size
    records = [_st_entry(path, name, entry, data_start, size - data_start, metadata)
               for name, entry in header.items()]
    records.sort(key=lambda record: record.offsets[0][0])
    has_crc = "crc_num" in metadata
    if has_crc and verify_crc:
        _verify_safetensors_crc(f, path, records, metadata["crc_num"])
    return CheckpointIndex(path, "safetensors", records, maptensor_names=[],
                           has_crc=has_crc, size=size, metadata=metadata)


def _crc32_zeros(count: int, crc: int) -> int:
    """zlib.crc32 continued over ``count`` zero bytes."""
    zeros = bytes(min(count, _CHUNK))
    while count > 0:
        crc = zlib.crc32(zeros[:count], crc)
        count -= len(zeros)
    return crc


def _verify_safetensors_crc(f: BinaryIO, path: str, records: list[TensorRecord],
                            stored: str) -> None:
    """Check MindSpore's safetensors CRC: crc32 over (name, bytes) in sorted-name order.

    MindSpore feeds ``bytes(array)`` to the CRC, which for a 0-d integer array is
    ``value`` zero bytes instead of the array's bytes, so that variant is accepted too.
    """
    true_crc = ms_crc = 0
    ms_possible = True
    for record in sorted(records, key=lambda r: r.name):
        name = record.name.encode("utf-8")
        true_crc, ms_crc = zlib.crc32(name, true_crc), zlib.crc32(name, ms_crc)
        if record.shape == () and record.dtype in _INTEGER_DTYPES:
            (offset, length), = [piece for piece in record.offsets if piece[1]]
            f.seek(offset)
            value = int(np.frombuffer(f.read(length), _STORAGE_DTYPES[record.dtype])[0])
            ms_possible = ms_possible and 0 <= value <= _MAX_ZERO_CRC
            if ms_possible:
                ms_crc = _crc32_zeros(value, ms_crc)
            for offset, length in record.offsets:
                true_crc = _crc32_range(f, offset, offset + length, true_crc)
        else:
            for offset, length in record.offsets:
                true_crc, ms_crc = _crc32_ranges(f, offset, offset + length, (true_crc, ms_crc))
    wanted = stored.strip()
    if str(true_crc) != wanted and not (ms_possible and str(ms_crc) == wanted):
        raise _error(path, f"CRC mismatch: metadata says {stored}, data gives {true_crc}; "
                           "the file is corrupt")


# --------------------------------------------------------------------------- public API


def scan_checkpoint(path: PathLike, *, verify_crc: bool = True) -> CheckpointIndex:
    """Index a MindSpore ``.ckpt`` or safetensors file without loading tensor bytes.

    Split records (one tag repeated in consecutive records: 512 MiB cuts and
    ``np.array_split`` pieces, empty ones included) are merged. Every length is checked
    against the file size before anything is read, byte counts are checked against
    dtype and shape, and a CRC footer (or safetensors ``crc_num``) is verified when
    ``verify_crc`` is true, which reads the whole file once in 1 MiB chunks.
    """
    name = os.fspath(path)
    with _guard(name), open(name, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header_size = _safetensors_header_size(f, size)
        if header_size is not None:
            return _scan_safetensors(f, name, size, header_size, verify_crc)
        f.seek(0)
        return _scan_ckpt(f, name, size, verify_crc)


def _unpack_int4(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Unpack bytes holding two signed 4-bit values each, low nibble first."""
    low = np.left_shift(packed, 4) >> 4  # arithmetic shift sign-extends
    high = packed >> 4
    pairs = np.stack([low, high], axis=-1)
    return pairs.reshape(shape[:-1] + (2 * shape[-1],) if shape else (2,))


def _decode(raw: np.ndarray, record: TensorRecord, path: str) -> np.ndarray:
    """Interpret a tensor's raw bytes according to its dtype."""
    if record.dtype == "str":
        try:
            # numpy (and so MindSpore's loader) drops trailing NULs of unicode items.
            return np.array(raw.tobytes().decode("utf-32-le").rstrip("\x00"))
        except UnicodeDecodeError:
            raise _error(path, f"string {record.name!r} is not valid UTF-32") from None
    storage = _STORAGE_DTYPES.get(record.dtype)
    if storage is None:
        raise _error(path, f"tensor {record.name!r} has unsupported dtype {record.dtype!r}")
    if record.dtype == "Bool":
        return (raw != 0).reshape(record.shape)
    values = raw.view(storage)
    if record.dtype == "Int4":
        return _unpack_int4(values, record.shape)
    return values.reshape(record.shape)


def _read_record(f: BinaryIO, path: str, record: TensorRecord) -> np.ndarray:
    """Read one tensor's pieces into a single preallocated buffer and decode it."""
    raw = np.empty(record.nbytes, dtype=np.uint8)
    view = memoryview(raw)
    filled = 0
    for offset, length in record.offsets:
        f.seek(offset)
        stop = filled + length
        while filled < stop:
            got = f.readinto(view[filled:stop])
            if not got:
                raise _error(path, f"file ended while reading tensor {record.name!r}",
                             offset + length - (stop - filled))
            filled += got
    return _decode(raw, record, path)


def read_tensor(path_or_fileobj: PathLike | BinaryIO, record: TensorRecord) -> np.ndarray:
    """Read one tensor from a file (path or binary file object opened for reading).

    Returns a C-ordered numpy array of ``record.shape``: Float16/32/64, Int8..64,
    UInt8..64 and Bool map to the same numpy dtype. ``BFloat16`` comes back as the raw
    ``uint16`` words (view them as ``torch.bfloat16``). ``Int4`` (MindSpore ``qint4x2``)
    stores two signed 4-bit values per byte and its shape counts bytes; it comes back
    as ``int8`` with the last axis doubled (0-d: shape ``(2,)``), the low nibble of each
    byte first. ``str`` comes back as a 0-d numpy unicode array (``str(arr)`` gives the
    text). 0-d tensors have shape ``()``.
    """
    if isinstance(path_or_fileobj, (str, os.PathLike)):
        name = os.fspath(path_or_fileobj)
        with _guard(name), open(name, "rb") as f:
            return _read_record(f, name, record)
    name = str(getattr(path_or_fileobj, "name", "<file object>"))
    with _guard(name):
        return _read_record(path_or_fileobj, name, record)


def iter_tensors(path: PathLike, *, verify_crc: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, array)`` for every tensor in file order, one in memory at a time."""
    index = scan_checkpoint(path, verify_crc=verify_crc)
    name = os.fspath(path)
    with _guard(name), open(name, "rb") as f:
        for record in index.values():
            yield record.name, _read_record(f, name, record)


def has_crc_footer(path: PathLike) -> bool:
    """Whether a ``.ckpt`` file ends with MindSpore's 17-byte CRC footer (not verified).

    Always False for safetensors files, whose CRC lives in the header metadata
    (see ``CheckpointIndex.has_crc``).
    """
    name = os.fspath(path)
    with _guard(name), open(name, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if _safetensors_header_size(f, size) is not None:
            return False
        return _read_footer(f, size) is not None
