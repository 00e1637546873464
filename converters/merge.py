"""Merge a distributed (per-rank, sliced) MindSpore checkpoint into full tensors.

A semi-auto/auto-parallel MindSpore run saves one file per rank,
``<dir>/rank_<r>/<prefix>-<epoch>_<step>.ckpt``, each holding that rank's slice of every
parameter; the layout lives in a separate strategy file. :func:`open_merged` pairs the two
and returns a :class:`MergedCheckpoint`, a tensor source with the same interface as
``converters.ringmoe.CheckpointFile`` (``label``, ``files``, ``shapes()``, ``read(name)``,
``close()``) that assembles one full tensor at a time.

Strategy files are read without MindSpore or the protobuf runtime: :func:`load_strategy`
walks the protobuf ``mindspore.straspb.ParallelStrategyMap`` (``node_strategy.proto``) itself
and also understands the JSON form (``strategy_ckpt_config={"save_file": "x.json"}``).

Layout semantics (checked against MindSpore 2.10: ``parallel/_tensor.py``,
``parallel/_parallel_serialization.py``, and the C++ ``DeviceMatrix`` /
``OperatorInfo::CreateGroupForOptShard`` / ``StrategyCheckpointInfo::to_protobuf``):

* a rank's coordinate is the row-major unravel of its rank within its pipeline stage over the
  device matrix ``D``; a tensor-map value ``k`` names device axis ``D[len(D) - 1 - k]``;
  ``-1`` leaves the tensor axis whole; a nested entry ``[a, b]`` splits one tensor axis over
  several device axes, ``a`` the major one;
* optimizer sharding (``opt_weight_shard_size`` ``s``; ``-1`` = the whole group) cuts axis 0
  of the model-parallel slice again: the ranks that hold the same model-parallel slice, in
  ascending order, are cut into consecutive groups of ``s`` and the i-th rank of a group holds
  piece ``i``;
* a merged pipeline strategy prefixes every name with ``"<stage>-"``; stage ``s`` owns ranks
  ``s * N .. s * N + N - 1`` with ``N = prod(D)``; a parameter in several stages is taken from
  the lowest one (as MindSpore does);
* parameters absent from the strategy (``global_step``, ...) are per-rank copies.

Only numpy and the standard library are used.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from converters.ckpt_io import CheckpointIndex, TensorRecord, read_tensor, scan_checkpoint
from converters.util import ConversionError

__all__ = [
    "MergedCheckpoint",
    "ParamLayout",
    "Strategy",
    "find_rank_files",
    "load_strategy",
    "open_merged",
]

_RANK_DIR = re.compile(r"rank_(\d+)")
_STAGE_PREFIX = re.compile(r"(\d+)-(.+)", re.DOTALL)
_MAX_STRATEGY_BYTES = 1 << 30
_MAX_LISTED = 8  # ranks or names listed in one error message


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class ParamLayout:
    """The layout of one parameter, as the strategy file gives it.

    ``tensor_map`` has one tuple per tensor axis naming the device axes (``k`` = counted from
    the right of ``dev_matrix``) that split it, major first; ``()`` is an unsplit axis.
    ``nested`` records whether the file used the nested (one TensorMap per axis) form.
    ``tensor_shape`` is the full shape where the file states it (JSON only).
    """

    name: str
    stage: int
    dev_matrix: tuple[int, ...]
    tensor_map: tuple[tuple[int, ...], ...]
    nested: bool = False
    field_size: int = 0
    opt_shard_step: int = 0
    opt_shard_size: int = 0
    param_split_shape: tuple[int, ...] = ()
    indices_offset: tuple[int, ...] = ()
    tensor_shape: tuple[int, ...] | None = None

    @property
    def device_num(self) -> int:
        """Number of devices in one pipeline stage."""
        return math.prod(self.dev_matrix)

    def _axis(self, k: int) -> int:
        """Index into dev_matrix of tensor-map value ``k``."""
        return len(self.dev_matrix) - 1 - k

    @property
    def splits(self) -> tuple[int, ...]:
        """Number of model-parallel pieces along each tensor axis."""
        return tuple(math.prod(self.dev_matrix[self._axis(k)] for k in ks) for ks in self.tensor_map)

    @property
    def used_axes(self) -> frozenset[int]:
        """dev_matrix indices that split the tensor."""
        return frozenset(self._axis(k) for ks in self.tensor_map for k in ks)

    @property
    def unused_axes(self) -> tuple[int, ...]:
        """dev_matrix indices along which the model-parallel slice is repeated, outer first."""
        used = self.used_axes
        return tuple(i for i in range(len(self.dev_matrix)) if i not in used)

    @property
    def repeat(self) -> int:
        """How many ranks of a stage hold each model-parallel slice."""
        return math.prod(self.dev_matrix[i] for i in self.unused_axes)

    @property
    def opt_pieces(self) -> int:
        """Number of optimizer-sharding pieces of axis 0 (1 when not optimizer-sharded)."""
        if self.opt_shard_size == 0:
            return 1
        if self.opt_shard_size == -1:
            return self.repeat
        return self.opt_shard_size

    def describe(self) -> str:
        tmap = [list(ks) if self.nested else (ks[0] if ks else -1) for ks in self.tensor_map]
        text = f"dev_matrix={list(self.dev_matrix)} tensor_map={tmap}"
        if self.opt_shard_size:
            text += f" opt_weight_shard_size={self.opt_shard_size}"
        return text

    def check(self, where: str) -> None:
        """Refuse layouts that are invalid or that this merger does not support."""
        what = f"{where}: parameter {self.name!r} ({self.describe()})"
        if any(d < 1 for d in self.dev_matrix):
            raise ConversionError(f"{what}: device matrix has a dimension below 1")
        seen: set[int] = set()
        for ks in self.tensor_map:
            for k in ks:
                if not 0 <= k < len(self.dev_matrix):
                    raise ConversionError(f"{what}: tensor map value {k} names no device axis")
                if k in seen:
                    raise ConversionError(f"{what}: tensor map uses device axis {k} twice")
                seen.add(k)
        if self.field_size != 0:
            raise ConversionError(f"{what}: field split (field={self.field_size}) is not supported")
        if self.param_split_shape or self.indices_offset:
            raise ConversionError(
                f"{what}: manual (uneven) split param_split_shape={list(self.param_split_shape)} "
                "is not supported")
        if self.opt_shard_size < -1:
            raise ConversionError(f"{what}: invalid opt_weight_shard_size {self.opt_shard_size}")
        pieces = self.opt_pieces
        if pieces > 1:
            if not self.tensor_map:
                raise ConversionError(f"{what}: a 0-d parameter cannot be optimizer-sharded")
            if self.repeat % pieces:
                raise ConversionError(
                    f"{what}: opt_weight_shard_size {self.opt_shard_size} does not divide the "
                    f"{self.repeat} ranks that hold each model-parallel slice")
            if self.opt_shard_step:
                expected = self._expected_step()
                if self.opt_shard_step != expected:
                    raise ConversionError(
                        f"{what}: opt_weight_shard_step {self.opt_shard_step} does not match the "
                        f"layout (expected {expected}); the strategy file is inconsistent")

    def _expected_step(self) -> int:
        """MindSpore's opt_weight_shard_step: mean rank distance inside a repeated group."""
        strides = [math.prod(self.dev_matrix[i + 1:]) for i in range(len(self.dev_matrix))]
        span = sum((self.dev_matrix[i] - 1) * strides[i] for i in self.unused_axes)
        return span // (self.repeat - 1) if self.repeat > 1 else 0

    def coordinate(self, local_rank: int) -> tuple[int, ...]:
        """Row-major unravel of a rank (within its stage) over the device matrix."""
        coord = []
        for size in reversed(self.dev_matrix):
            coord.append(local_rank % size)
            local_rank //= size
        return tuple(reversed(coord))

    def full_shape(self, slice_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The merged shape of a parameter whose per-rank slice has ``slice_shape``."""
        full = [s * n for s, n in zip(slice_shape, self.splits)]
        if full:
            full[0] *= self.opt_pieces
        return tuple(full)

    def slice_shape(self, full_shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """Per-rank slice shape of ``full_shape``, or None if it does not split evenly."""
        out = []
        for i, (length, n) in enumerate(zip(full_shape, self.splits)):
            if i == 0:
                n *= self.opt_pieces
            if length % n:
                return None
            out.append(length // n)
        return tuple(out)

    def region(self, local_rank: int, full_shape: tuple[int, ...]
               ) -> tuple[tuple[int, ...], tuple[slice, ...]]:
        """Which part of the full tensor a rank holds: (slice key, index into the full tensor).

        Ranks with equal keys hold the same slice (replicas).
        """
        coord = self.coordinate(local_rank)
        key: list[int] = []
        index: list[slice] = []
        for axis, (ks, n) in enumerate(zip(self.tensor_map, self.splits)):
            piece = 0
            for k in ks:  # major first
                dim = self._axis(k)
                piece = piece * self.dev_matrix[dim] + coord[dim]
            step = full_shape[axis] // n
            key.append(piece)
            index.append(slice(piece * step, (piece + 1) * step))
        pieces = self.opt_pieces
        if pieces > 1:
            position = 0  # rank's place among the ascending ranks holding its MP slice
            for dim in self.unused_axes:
                position = position * self.dev_matrix[dim] + coord[dim]
            opt = position % pieces
            start, stop = index[0].start, index[0].stop
            step = (stop - start) // pieces
            index[0] = slice(start + opt * step, start + (opt + 1) * step)
            key.append(opt)
        return tuple(key), tuple(index)


@dataclass
class Strategy:
    """The layouts of a strategy file by (unprefixed) parameter name."""

    path: Path
    layouts: dict[str, ParamLayout]
    stages: tuple[int, ...]
    stage_device_num: int
    pipelined: bool = False
    extra: dict[str, list[ParamLayout]] = field(default_factory=dict)  # other stages' copies

    @property
    def ranks(self) -> list[int]:
        """Every global rank the strategy's stages cover."""
        n = self.stage_device_num
        return [s * n + r for s in self.stages for r in range(n)]


# --------------------------------------------------------------------------- protobuf walking


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    for i in range(10):
        if pos >= end:
            raise _Malformed(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result & ((1 << 64) - 1), pos
    raise _Malformed(f"varint longer than 10 bytes before byte {pos}")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value) of one message; LEN values are (start, end)."""
    pos = start
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"field number 0 at byte {at}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _Malformed(f"truncated fixed-size field at byte {at}")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed(f"field {number} at byte {at} runs past its enclosing message")
            value, pos = (pos, pos + length), pos + length
        else:
            raise _Malformed(f"unsupported wire type {wire} (field {number}) at byte {at}")
        yield number, wire, value


def _as_int32(raw: int) -> int:
    raw &= 0xFFFFFFFF
    return raw - (1 << 32) if raw >> 31 else raw


def _as_uint32(raw: int) -> int:
    return raw & 0xFFFFFFFF


def _as_int64(raw: int) -> int:
    return raw - (1 << 64) if raw >> 63 else raw


def _scalar(wire: int, value: Any, conv, what: str) -> int:
    if wire != 0:
        raise _Malformed(f"{what} has wire type {wire}, expected a varint")
    return conv(value)


def _repeated(buf: bytes, wire: int, value: Any, conv, out: list[int], what: str) -> None:
    """Append one occurrence of a repeated integer field, packed or not."""
    if wire == 0:
        out.append(conv(value))
    elif wire == 2:
        pos, end = value
        while pos < end:
            raw, pos = _varint(buf, pos, end)
            out.append(conv(raw))
    else:
        raise _Malformed(f"{what} has wire type {wire}")


def _dims(buf: bytes, span: tuple[int, int], conv, what: str) -> list[int]:
    """A message holding only ``repeated <int> dim = 1``."""
    out: list[int] = []
    for number, wire, value in _fields(buf, *span):
        if number == 1:
            _repeated(buf, wire, value, conv, out, what)
    return out


def _message(wire: int, value: Any, what: str) -> tuple[int, int]:
    if wire != 2:
        raise _Malformed(f"{what} has wire type {wire}, expected a message")
    return value


def _parse_layouts(buf: bytes, span: tuple[int, int], acc: dict[str, Any]) -> None:
    """Fold one ParallelLayouts message into ``acc`` (protobuf merge semantics)."""
    for number, wire, value in _fields(buf, *span):
        if number == 1:
            acc["dev_matrix"].append(_dims(buf, _message(wire, value, "DevMatrix"), _as_uint32, "DevMatrix.dim"))
        elif number == 2:
            acc["tensor_map"].append(_dims(buf, _message(wire, value, "TensorMap"), _as_int32, "TensorMap.dim"))
        elif number == 3:
            acc["param_split_shape"].extend(
                _dims(buf, _message(wire, value, "ParamSplitShape"), _as_int64, "ParamSplitShape.dim"))
        elif number == 4:
            acc["indices_offset"].extend(
                _dims(buf, _message(wire, value, "IndicesOffset"), _as_int64, "IndicesOffset.dim"))
        elif number == 5:
            acc["field"] = _scalar(wire, value, _as_int32, "field")
        elif number == 6:
            acc["opt_weight_shard_step"] = _scalar(wire, value, _as_int32, "opt_weight_shard_step")
        elif number == 7:
            acc["opt_weight_shard_size"] = _scalar(wire, value, _as_int32, "opt_weight_shard_size")


def _parse_protobuf(buf: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(param_name, raw layout) of every ParallelLayoutItem of a ParallelStrategyMap."""
    items = []
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number != 3:
            continue  # current_stage, parallel_strategy_item
        name: str | None = None
        acc: dict[str, Any] = {"dev_matrix": [], "tensor_map": [], "param_split_shape": [],
                               "indices_offset": [], "field": 0, "opt_weight_shard_step": 0,
                               "opt_weight_shard_size": 0}
        for inner, iwire, ivalue in _fields(buf, *_message(wire, value, "ParallelLayoutItem")):
            if inner == 1:
                start, end = _message(iwire, ivalue, "param_name")
                try:
                    name = buf[start:end].decode("utf-8")
                except UnicodeDecodeError:
                    raise _Malformed(f"param_name at byte {start} is not UTF-8") from None
            elif inner == 2:
                _parse_layouts(buf, _message(iwire, ivalue, "ParallelLayouts"), acc)
        if name is None:
            raise _Malformed("a ParallelLayoutItem has no param_name")
        # Like MindSpore: several TensorMap messages = one per tensor axis (nested layout),
        # empty ones being padding; a single one = one value per tensor axis.
        maps = acc["tensor_map"]
        if len(maps) > 1:
            acc["tensor_map"] = [m for m in maps if m]
            acc["nested"] = True
        else:
            acc["tensor_map"] = maps[0] if maps else []
            acc["nested"] = False
        if not acc["dev_matrix"]:
            raise _Malformed(f"parameter {name!r} has no device matrix")
        acc["dev_matrix"] = acc["dev_matrix"][0]
        items.append((name, acc))
    return items


# --------------------------------------------------------------------------- JSON


def _json_int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _Malformed(f"{what} should be an integer, got {value!r:.80}")
    return value


def _json_ints(value: Any, what: str) -> list[int]:
    if not isinstance(value, list):
        raise _Malformed(f"{what} should be a list of integers, got {value!r:.80}")
    return [_json_int(v, what) for v in value]


def _parse_json(text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise _Malformed(f"not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise _Malformed("the JSON document is not an object")
    layouts = doc.get("parallel_layout_item", {})
    if not isinstance(layouts, dict):
        raise _Malformed("parallel_layout_item is not an object")
    items = []
    for name, item in layouts.items():
        if not isinstance(item, dict):
            raise _Malformed(f"layout of {name!r} is not an object")
        where = f"parameter {name!r}"
        tmap = item.get("tensor_map")
        if not isinstance(tmap, list):
            raise _Malformed(f"{where}: tensor_map should be a list")
        nested = any(isinstance(v, list) for v in tmap)
        acc: dict[str, Any] = {
            "dev_matrix": _json_ints(item.get("dev_matrix"), f"{where}: dev_matrix"),
            "tensor_map": [_json_ints(v, f"{where}: tensor_map") if isinstance(v, list)
                           else _json_int(v, f"{where}: tensor_map") for v in tmap],
            "nested": nested,
            "param_split_shape": _json_ints(item.get("param_split_shape", []), f"{where}: param_split_shape"),
            "indices_offset": _json_ints(item.get("indices_offset", []), f"{where}: indices_offset"),
        }
        for key in ("field", "opt_weight_shard_step", "opt_weight_shard_size"):
            acc[key] = _json_int(item.get(key, 0) or 0, f"{where}: {key}")
        if "tensor_shape" in item:
            acc["tensor_shape"] = tuple(_json_ints(item["tensor_shape"], f"{where}: tensor_shape"))
        items.append((name, acc))
    return items


# --------------------------------------------------------------------------- strategy


def _make_layout(name: str, stage: int, raw: dict[str, Any]) -> ParamLayout:
    entries = []
    for entry in raw["tensor_map"]:
        values = entry if isinstance(entry, list) else [entry]
        entries.append(tuple(v for v in values if v != -1))
    return ParamLayout(
        name=name,
        stage=stage,
        dev_matrix=tuple(raw["dev_matrix"]),
        tensor_map=tuple(entries),
        nested=raw["nested"],
        field_size=raw["field"],
        opt_shard_step=raw["opt_weight_shard_step"],
        opt_shard_size=raw["opt_weight_shard_size"],
        param_split_shape=tuple(raw["param_split_shape"]),
        indices_offset=tuple(raw["indices_offset"]),
        tensor_shape=raw.get("tensor_shape"),
    )


def load_strategy(path: str | os.PathLike) -> Strategy:
    """Read a MindSpore strategy file (protobuf or JSON) into per-parameter layouts.

    JSON is recognised by a ``.json`` suffix or a leading ``{``; anything else is parsed as
    protobuf ``ParallelStrategyMap``. Names with a ``"<stage>-"`` prefix (a merged pipeline
    strategy, all names prefixed) are filed under their stage.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > _MAX_STRATEGY_BYTES:
            raise ConversionError(f"{path}: strategy file of {size} bytes is too large")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such strategy file") from None
    except IsADirectoryError:
        raise ConversionError(f"{path}: is a directory, expected a strategy file") from None
    except OSError as err:
        raise ConversionError(f"{path}: cannot read strategy file ({err.strerror or err})") from None
    if not data:
        raise ConversionError(f"{path}: strategy file is empty")
    is_json = path.suffix.lower() == ".json" or data.lstrip()[:1] == b"{"
    try:
        if is_json:
            items = _parse_json(data.decode("utf-8"))
        else:
            items = _parse_protobuf(data)
    except UnicodeDecodeError:
        raise ConversionError(f"{path}: JSON strategy file is not UTF-8") from None
    except (_Malformed, RecursionError) as err:
        kind = "JSON" if is_json else "protobuf ParallelStrategyMap"
        raise ConversionError(f"{path}: not a valid {kind} strategy file: {err}") from None
    if not items:
        raise ConversionError(f"{path}: the strategy file has no parameter layouts (parallel_layout_item)")

    pipelined = all(_STAGE_PREFIX.fullmatch(name) for name, _ in items)
    by_name: dict[str, list[ParamLayout]] = {}
    seen: set[str] = set()
    for full_name, raw in items:
        if full_name in seen:
            raise ConversionError(f"{path}: parameter {full_name!r} appears twice")
        seen.add(full_name)
        stage, name = 0, full_name
        if pipelined:
            match = _STAGE_PREFIX.fullmatch(full_name)
            stage, name = int(match.group(1)), match.group(2)
        by_name.setdefault(name, []).append(_make_layout(name, stage, raw))

    layouts: dict[str, ParamLayout] = {}
    extra: dict[str, list[ParamLayout]] = {}
    for name, options in by_name.items():
        options.sort(key=lambda layout: layout.stage)
        layouts[name] = options[0]
        if len(options) > 1:
            extra[name] = options[1:]
    device_nums = {layout.device_num for options in by_name.values() for layout in options}
    if len(device_nums) != 1:
        raise ConversionError(
            f"{path}: layouts disagree on the number of devices per stage ({sorted(device_nums)}); "
            "this merger needs one device matrix size for all parameters")
    stages = sorted({layout.stage for options in by_name.values() for layout in options})
    if stages != list(range(len(stages))):
        raise ConversionError(f"{path}: pipeline stages {stages} are not 0..{len(stages) - 1}; "
                              "the merged strategy lacks a stage")
    return Strategy(path, layouts, tuple(stages), device_nums.pop(), pipelined, extra)


# --------------------------------------------------------------------------- rank files


def find_rank_files(src_dir: str | os.PathLike) -> dict[int, Path]:
    """The checkpoint of each ``rank_<r>/`` directory: its lexicographically last ``.ckpt``
    (as MindSpore's tools choose), or, where it has none, its last ``.safetensors``."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise ConversionError(f"{src_dir}: not a directory of rank_<r>/ checkpoint folders")
    found: dict[int, Path] = {}
    for entry in sorted(src_dir.iterdir()):
        match = _RANK_DIR.fullmatch(entry.name)
        if not match or not entry.is_dir():
            continue
        rank = int(match.group(1))
        if rank in found:
            raise ConversionError(f"{src_dir}: two directories for rank {rank} "
                                  f"({found[rank].parent.name} and {entry.name})")
        files = sorted(p for p in entry.glob("*.ckpt") if p.is_file())
        if not files:
            files = sorted(p for p in entry.glob("*.safetensors") if p.is_file())
        if not files:
            raise ConversionError(f"{entry}: rank directory holds no .ckpt or .safetensors file")
        found[rank] = files[-1]
    if not found:
        raise ConversionError(f"{src_dir}: no rank_<r>/ directories found")
    return found


def _ranks_text(ranks: list[int]) -> str:
    shown = ", ".join(str(r) for r in ranks[:_MAX_LISTED])
    return shown + (f", ... ({len(ranks)} in all)" if len(ranks) > _MAX_LISTED else "")


@dataclass
class _Entry:
    """How to produce one merged tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]  # merged shape
    holders: list[int]  # global ranks whose files hold the tensor, ascending
    layout: ParamLayout | None = None  # None: a per-rank copy


_UNSLICEABLE = {"str", "Int4"}


class MergedCheckpoint:
    """Per-rank slices plus a strategy, read as full tensors (see :func:`open_merged`)."""

    def __init__(self, src_dir: Path, strategy: Strategy, rank_files: dict[int, Path],
                 *, check_replicas: bool = True, verify_crc: bool = True) -> None:
        self.src_dir = src_dir
        self.strategy = strategy
        self.check_replicas = check_replicas
        self.rank_files = dict(sorted(rank_files.items()))
        self.files = [*self.rank_files.values(), strategy.path]
        self.label = (f"{src_dir} (merged from {len(rank_files)} ranks with strategy "
                      f"{strategy.path.name})")
        self._closed = False
        self._indexes: dict[int, CheckpointIndex] = {
            rank: scan_checkpoint(path, verify_crc=verify_crc) for rank, path in self.rank_files.items()}
        self._entries = self._plan()

    # ------------------------------------------------------------------ planning

    def _plan(self) -> dict[str, _Entry]:
        order: dict[str, list[int]] = {}
        for rank, index in self._indexes.items():
            for name in index:
                order.setdefault(name, []).append(rank)
        entries = {}
        for name, holders in order.items():
            layout = self.strategy.layouts.get(name)
            if layout is None:
                entries[name] = self._plan_copy(name, holders)
            else:
                entries[name] = self._plan_sliced(name, holders, layout)
        return entries

    def _where(self, rank: int) -> str:
        return str(self.rank_files[rank])

    def _plan_copy(self, name: str, holders: list[int]) -> _Entry:
        first = self._indexes[holders[0]][name]
        for rank in holders[1:]:
            record = self._indexes[rank][name]
            if (record.dtype, record.shape) != (first.dtype, first.shape):
                raise ConversionError(
                    f"{self.src_dir}: parameter {name!r} is not in the strategy, so it should be "
                    f"the same on every rank, but rank {holders[0]} has {first.dtype} "
                    f"{list(first.shape)} and rank {rank} has {record.dtype} {list(record.shape)}")
        return _Entry(name, first.dtype, first.shape, holders)

    def _plan_sliced(self, name: str, present: list[int], layout: ParamLayout) -> _Entry:
        n = self.strategy.stage_device_num
        owners = list(range(layout.stage * n, (layout.stage + 1) * n))
        owner_set = set(owners)
        holders = [r for r in present if r in owner_set]
        if not holders:
            raise ConversionError(
                f"{self.src_dir}: parameter {name!r} belongs to pipeline stage {layout.stage} "
                f"(ranks {owners[0]}..{owners[-1]}) but only ranks {_ranks_text(present)} hold it")
        layout.check(str(self.strategy.path))
        held = set(holders)
        missing = [r for r in owners if r not in held]
        if missing:
            raise ConversionError(
                f"{self.src_dir}: parameter {name!r} is missing from rank(s) {_ranks_text(missing)} "
                f"although the strategy puts a slice of it on every rank of stage {layout.stage}; "
                "checkpoints saved with remove_redundancy=True (or from different runs) "
                "are not supported")
        first = self._indexes[holders[0]][name]
        if first.dtype in _UNSLICEABLE:
            raise ConversionError(f"{self._where(holders[0])}: sliced parameter {name!r} has dtype "
                                  f"{first.dtype}, which cannot be merged")
        what = f"parameter {name!r} ({layout.describe()})"
        if len(first.shape) != len(layout.tensor_map):
            hint = ""
            if layout.tensor_shape is not None and len(layout.tensor_shape) == len(layout.tensor_map):
                hint = ("; the JSON strategy seems to hold an expanded (nested) layout, "
                        "use the protobuf strategy file instead")
            raise ConversionError(
                f"{self._where(holders[0])}: {what}: slice has {len(first.shape)} dims "
                f"{list(first.shape)} but the tensor map has {len(layout.tensor_map)}{hint}")
        full = layout.full_shape(first.shape)
        if layout.tensor_shape is not None:
            expected = layout.slice_shape(layout.tensor_shape)
            if expected is None:
                raise ConversionError(
                    f"{self.strategy.path}: {what}: full shape {list(layout.tensor_shape)} does not "
                    "split evenly; uneven splits are not supported")
            if tuple(layout.tensor_shape) != full:
                raise ConversionError(
                    f"{self._where(holders[0])}: {what}: slice shape {list(first.shape)} does not "
                    f"match the strategy (full shape {list(layout.tensor_shape)} gives slices "
                    f"{list(expected)})")
        for rank in holders:
            record = self._indexes[rank][name]
            if record.shape != first.shape or record.dtype != first.dtype:
                raise ConversionError(
                    f"{self._where(rank)}: {what}: slice on rank {rank} is {record.dtype} "
                    f"{list(record.shape)} but on rank {holders[0]} it is {first.dtype} "
                    f"{list(first.shape)}; the slice shapes do not match the strategy "
                    "(uneven splits are not supported)")
        return _Entry(name, first.dtype, full, holders, layout)

    # ------------------------------------------------------------------ source interface

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Merged shape of every tensor, in the order the rank files list them."""
        return {name: entry.shape for name, entry in self._entries.items()}

    def integrity_warnings(self) -> list[str]:
        """Rank files that cannot prove their own integrity (saved without crc_check=True)."""
        bare = [rank for rank, index in sorted(self._indexes.items()) if index.format == "ckpt" and not index.has_crc]
        if not bare:
            return []
        return [f"{len(bare)} of {len(self._indexes)} rank files have no CRC footer: a flipped bit inside tensor "
                "data cannot be detected there (MindSpore: save_checkpoint(..., crc_check=True))"]

    def dtypes(self) -> dict[str, str]:
        """MindSpore dtype name of every tensor (``BFloat16`` tensors read as uint16)."""
        return {name: entry.dtype for name, entry in self._entries.items()}

    def layout(self, name: str) -> ParamLayout | None:
        """The strategy layout used for ``name`` (None for per-rank copies)."""
        return self._entries[name].layout

    def _read_slice(self, rank: int, name: str) -> np.ndarray:
        record: TensorRecord = self._indexes[rank][name]
        return read_tensor(self.rank_files[rank], record)

    def read(self, name: str, *, check_replicas: bool | None = None) -> np.ndarray:
        """Assemble one full tensor, holding only it and one rank's slice in memory.

        With ``check_replicas`` (default: the value given to :func:`open_merged`) every rank
        holding a copy of a slice is read and must agree bit for bit with the first.
        """
        if self._closed:
            raise ConversionError(f"{self.label}: read after close()")
        entry = self._entries.get(name)
        if entry is None:
            raise KeyError(name)
        check = self.check_replicas if check_replicas is None else check_replicas
        if entry.layout is None:
            return self._read_copy(entry, check)
        return self._read_sliced(entry, check)

    @staticmethod
    def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind in "US":
            return bool(np.array_equal(a, b))
        bits = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(a.view(bits), b.view(bits)))

    def _disagree(self, entry: _Entry, pairs: list[tuple[int, int]], what: str) -> ConversionError:
        shown = "; ".join(f"rank {a} vs rank {b}" for a, b in pairs[:_MAX_LISTED])
        more = f" ({len(pairs)} disagreements in all)" if len(pairs) > _MAX_LISTED else ""
        return ConversionError(
            f"{self.src_dir}: parameter {entry.name!r}: {what} differ between ranks: {shown}{more}")

    def _read_copy(self, entry: _Entry, check: bool) -> np.ndarray:
        first_rank = entry.holders[0]
        value = self._read_slice(first_rank, entry.name)
        if check:
            bad = [(first_rank, r) for r in entry.holders[1:]
                   if not self._same_bits(value, self._read_slice(r, entry.name))]
            if bad:
                raise self._disagree(entry, bad, "per-rank copies (not in the strategy)")
        return value

    def _read_sliced(self, entry: _Entry, check: bool) -> np.ndarray:
        layout = entry.layout
        assert layout is not None
        base = layout.stage * self.strategy.stage_device_num
        full: np.ndarray | None = None
        owner: dict[tuple[int, ...], int] = {}
        bad: list[tuple[int, int]] = []
        for rank in entry.holders:
            key, index = layout.region(rank - base, entry.shape)
            if key in owner and not check:
                continue
            piece = self._read_slice(rank, entry.name)
            if full is None:
                full = np.empty(entry.shape, dtype=piece.dtype)
            if key in owner:
                if not self._same_bits(full[index], piece):
                    bad.append((owner[key], rank))
            else:
                full[index] = piece
                owner[key] = rank
            del piece
        if bad:
            raise self._disagree(entry, bad, "replicated slices")
        assert full is not None
        return full

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> MergedCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_merged(src_dir: str | os.PathLike, strategy: str | os.PathLike, *,
                check_replicas: bool = True, verify_crc: bool = True) -> MergedCheckpoint:
    """Open ``src_dir/rank_<r>/*.ckpt`` with its strategy file as one merged tensor source.

    Checks that every rank the strategy's device matrix (and pipeline stages) needs is present
    and no other, that every rank holds the slices the strategy gives it, with the shapes it
    implies, and refuses layouts it cannot merge (field splits, manual/uneven splits,
    redundancy-removed saves). Problems are raised as one-line :class:`ConversionError`
    (:class:`~converters.ckpt_io.CheckpointError` for an unreadable rank file).
    """
    src_dir = Path(src_dir)
    parsed = load_strategy(strategy)
    files = find_rank_files(src_dir)
    needed = parsed.ranks
    missing = [r for r in needed if r not in files]
    if missing:
        first = missing[0]
        raise ConversionError(
            f"{src_dir}: missing rank_{first}/ ({src_dir / f'rank_{first}'})"
            + (f" and {len(missing) - 1} more rank(s): {_ranks_text(missing)}" if len(missing) > 1 else "")
            + f"; the strategy {parsed.path.name} needs ranks 0..{needed[-1]}")
    extra = sorted(set(files) - set(needed))
    if extra:
        hint = ("; for a pipeline-parallel run pass the strategy of all stages merged with "
                "mindspore.merge_pipeline_strategys" if not parsed.pipelined else "")
        raise ConversionError(
            f"{src_dir}: found rank(s) {_ranks_text(extra)} but the strategy {parsed.path.name} "
            f"covers only ranks 0..{needed[-1]}{hint}")
    return MergedCheckpoint(src_dir, parsed, files, check_replicas=check_replicas,
                            verify_crc=verify_crc)
