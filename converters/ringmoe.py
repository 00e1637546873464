"""Convert a MindSpore RingMoE checkpoint into the PyTorch twin's state dict, with a full report.

The HF-conversion-script shape: rename by table (``converters/rules/ringmoe.py``), check the
result strictly against the twin built for all modalities on the meta device, and only then
install the output (the check may run beside the writes to a temporary file). Every source
tensor is mapped or dropped with a reason; every twin parameter is filled. Needs torch and numpy
only, and the safetensors path needs torch only for that check and for bfloat16.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from converters.ckpt_io import CheckpointError, read_tensor, scan_checkpoint
from converters.rules import ringmoe as rules
from converters.seqread import ReaderFile
from converters.util import ConversionError, atomic_write, in_background, in_subprocess, sha256_file, started_reader
from pretrain.models.arch import DEFAULT_MODALITIES, RingMoEArch, get_arch

CONVERTER_VERSION = "0.2.0"  # 0.2: stacked expert weights [E, in, out]
FORMAT = "ringmoe-bench/converted-v1"
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# MindSpore dtypes stored as plain little-endian values -> the torch dtype of those same bytes
RAW_DTYPES = {"Float32": "float32", "Float16": "float16", "BFloat16": "bfloat16", "Int64": "int64",
              "Int32": "int32", "Int16": "int16", "Int8": "int8", "UInt8": "uint8"}
# Integers and booleans keep their dtype through a conversion; floats take --dtype.
_KEPT_DTYPES = {k: v for k, v in RAW_DTYPES.items() if k.startswith(("Int", "UInt"))} | {"Bool": "bool"}
META_KEY = "ringmoe_meta"


def output_dtype(source_dtype: str, target: str) -> str:
    """The dtype name a source tensor (MindSpore dtype name) converts to under the target dtype."""
    return target if source_dtype.startswith(("Float", "BFloat")) else _KEPT_DTYPES.get(source_dtype, target)


@dataclass
class Conversion:
    state_dict: dict
    meta: dict  # plain types; meta["report"] maps every source tensor


class CheckpointFile:
    """A single .ckpt or MindSpore safetensors file as a tensor source, read one tensor at a time.

    The converter reads any source with this interface: ``label``, ``files``, ``shapes()`` (in
    read order), ``read(name)`` and ``close()``; merged per-rank checkpoints provide the same.
    """

    def __init__(self, path: Path):
        self.label = str(path)
        self.files = [path]
        self.index = scan_checkpoint(path)
        self._handle = open(path, "rb")
        self._fd = os.open(path, os.O_RDONLY)  # positional reads of whole tensors, see slices()
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # read in file order: read ahead further
        # The CLI's one pass over the file (hash and data, converters/seqread.py), when it began one.
        self._reader = started_reader(path)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(record.shape) for name, record in self.index.items()}

    def dtypes(self) -> dict[str, str]:
        """MindSpore dtype names (``Float32``, ``BFloat16``, ``Int64``, ...) by tensor name."""
        return {name: record.dtype for name, record in self.index.items()}

    def integrity_warnings(self) -> list[str]:
        """What this file cannot prove about itself (a .ckpt saved without crc_check=True)."""
        if self.index.format == "ckpt" and not self.index.has_crc:
            return [f"{self.label} has no CRC footer: a flipped bit inside tensor data cannot be detected "
                    "(MindSpore: save_checkpoint(..., crc_check=True))"]
        return []

    def read(self, name: str) -> np.ndarray:
        if self._reader is not None:
            return read_tensor(ReaderFile(self._reader), self.index[name])
        return read_tensor(self._handle, self.index[name])

    def slices(self, name: str) -> tuple[int, tuple[tuple[int, int], ...], object] | None:
        """(file descriptor, (offset, length) pieces, the started reader or None) of a tensor
        stored as plain little-endian values (the bytes a writer can copy as they are), or None
        for packed or text dtypes."""
        record = self.index[name]
        if record.dtype not in RAW_DTYPES:
            return None
        return self._fd, record.offsets, self._reader

    def release_before(self, name: str | None) -> None:
        """Tensors are read in file order from ``name`` on (None: no more reads): the started
        reader may free what lies before it."""
        if self._reader is not None:
            offsets = self.index[name].offsets if name is not None else ()
            self._reader.release_before(offsets[0][0] if offsets else self._reader.size)

    def close(self) -> None:
        self._handle.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._reader is not None:
            self._reader.detach()
            self._reader = None


def open_source(src: str | Path, strategy: str | Path | None = None):
    """A checkpoint file, or per-rank slices (``src/rank_*/``) merged with a strategy file."""
    src = Path(src)
    if not src.exists():
        raise ConversionError(f"{src}: no such file")
    if src.is_dir():
        if strategy is None:
            raise ConversionError(f"{src} is a directory: per-rank checkpoints need --strategy FILE to merge")
        from converters.merge import open_merged

        return open_merged(src, Path(strategy))
    if strategy is not None:
        raise ConversionError(f"--strategy merges per-rank directories; {src} is a single file")
    return CheckpointFile(src)


def _read_pretrain_meta(source) -> dict | None:
    """The JSON that pretrain/train.py stores in the checkpoint (absent in the authors' files)."""
    if META_KEY not in source.shapes():
        return None
    value = source.read(META_KEY)
    text = value if isinstance(value, str) else str(np.asarray(value).item())
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConversionError(f"{source.label}: {META_KEY} is not valid JSON ({err.msg})") from None


def _describe(arch: dict) -> str:
    return (f"embed_dim={arch['embed_dim']} depths={list(arch['depths'])} "
            f"heads={list(arch['num_heads'])} windows={list(arch['window_size'])}")


def check_architecture(found: dict, expected: RingMoEArch, name: str) -> None:
    """Fail with one line when the checkpoint's shapes are not the named config's."""
    want = {
        "embed_dim": expected.embed_dim,
        "depths": list(expected.depths),
        "num_heads": list(expected.num_heads),
        "window_size": [expected.stage_window(s) for s in range(expected.num_stages)],
    }
    have = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in found.items() if k in want}
    if have != want:
        raise ConversionError(f"wrong architecture: checkpoint has {_describe(have)}, config {name!r} has {_describe(want)}")


def resolve_arch(shapes: dict, pretrain_meta: dict | None, arch_name: str | None) -> tuple[dict, list[dict]]:
    """Architecture (inferred from shapes, checked against --arch) and the modality table."""
    try:
        found = rules.infer_arch(shapes)
    except ValueError as err:
        raise ConversionError(str(err)) from None
    if arch_name:
        check_architecture(found, get_arch(arch_name), arch_name)
    if pretrain_meta is not None:
        modalities = pretrain_meta["arch"]["modalities"]
        extra = {k: pretrain_meta["arch"][k] for k in ("img_size", "capacity_factor", "mask_patch_size", "mask_ratio")}
    else:
        modalities = [m.to_dict() for m in DEFAULT_MODALITIES[: len(found["channels"])]]
        defaults = RingMoEArch(embed_dim=1, depths=(1,), num_heads=(1,))
        extra = {"img_size": defaults.img_size, "capacity_factor": defaults.capacity_factor,
                 "mask_patch_size": defaults.mask_patch_size, "mask_ratio": defaults.mask_ratio}
    if [m["channels"] for m in modalities] != list(found["channels"]):
        raise ConversionError(
            f"modality table {[(m['name'], m['channels']) for m in modalities]} does not match "
            f"the checkpoint's patch embeddings (channels {found['channels']})"
        )
    arch = {k: v for k, v in found.items() if k != "channels"}
    arch.update(extra)
    return arch, modalities


def build_twin_shapes(arch: dict, modalities: list[dict]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the twin with every modality built (meta device: nothing allocated)."""
    import torch

    from benchmarks.models.ringmoe import RingMoE

    with torch.device("meta"):
        twin = RingMoE(
            embed_dim=arch["embed_dim"], depths=arch["depths"], num_heads=arch["num_heads"],
            window_size=arch["window_size"], patch_size=arch["patch_size"], mlp_ratio=arch["mlp_ratio"],
            num_experts=arch["num_experts"], modalities={m["name"]: m["channels"] for m in modalities},
            modality=modalities[0]["name"], build_modalities="all", out_norms=False,
        )
    return {k: tuple(v.shape) for k, v in twin.state_dict().items()}


def _listing(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def plan_mapping(names, modality_names: list[str]) -> tuple[dict, dict]:
    """Map every source key: {source: (target, transform)} and {source: drop reason}."""
    mapped, dropped, unexplained = {}, {}, []
    for key in names:
        try:
            target, how = rules.map_key(key, modality_names)
        except KeyError:
            unexplained.append(key)
            continue
        if target is None:
            dropped[key] = how
        else:
            mapped[key] = (target, how)
    if unexplained:
        raise ConversionError(f"{len(unexplained)} source tensors match no rule: {_listing(sorted(unexplained))}")
    return mapped, dropped


def check_coverage(mapped: dict, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    """Every twin parameter filled exactly once with the right shape; nothing left over."""
    targets = {}
    for source, (target, how) in mapped.items():
        if target in targets:
            raise ConversionError(f"{source} and {targets[target]} both map to {target}")
        targets[target] = source
    missing = sorted(set(expected) - set(targets))
    if missing:
        raise ConversionError(
            f"checkpoint lacks {len(missing)} tensors the model needs (truncated or wrong file?): {_listing(missing)}"
        )
    extra = sorted(set(targets) - set(expected))
    if extra:
        raise ConversionError(f"{len(extra)} mapped tensors have no place in the model: {_listing(extra)}")
    for target, source in targets.items():
        shape = _transformed_shape(shapes[source], mapped[source][1])
        if shape != expected[target]:
            raise ConversionError(f"{source} has shape {list(shapes[source])} -> {list(shape)}, "
                                  f"but {target} needs {list(expected[target])} (wrong architecture?)")


def _transformed_shape(shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=shape, strides=(0,) * len(shape))
    return tuple(rules.TRANSFORMS[transform](probe).shape) if math.prod(shape) else tuple(shape)


def _numpy_cast(array: np.ndarray, stored: str, target: str) -> np.ndarray | None:
    """The array in the output dtype computed by numpy where numpy gives torch's bytes exactly,
    else None: numpy has no bfloat16, and torch casts float64 to float16 through float32 (two
    roundings) where numpy rounds once."""
    if stored == "BFloat16":
        return None  # the reader returns bf16 as raw 16-bit words
    if array.dtype.kind != "f":
        return array  # integers and booleans keep their dtype, as in the torch path
    if array.dtype.name not in ("float32", "float16") or target not in ("float32", "float16"):
        return None
    with np.errstate(over="ignore"):  # beyond float16's range is inf, as in torch
        return array.astype(target, copy=False)


def _torch_cast(array: np.ndarray, stored: str, target: str) -> "torch.Tensor":
    import torch

    tensor = torch.from_numpy(array)
    if stored == "BFloat16":  # the reader returns bf16 as raw 16-bit words
        tensor = tensor.view(torch.bfloat16)
    return tensor.to(getattr(torch, target)) if tensor.is_floating_point() else tensor


@dataclass
class Plan:
    """A conversion whose every source tensor is mapped or dropped and every target filled.

    Nothing but shapes and metadata has been read yet; ``tensors()`` streams the data. When
    ``twin_check`` is a future, the check against the twin is still running (the twin is built,
    and torch imported, in a thread or a helper interpreter while the CLI writes):
    ``tensors()`` raises its error as soon as it is known and ends only once it passed, so no
    writer finishes an unchecked file.
    """

    source: CheckpointFile
    arch: dict
    modalities: list[dict]
    mapped: dict
    dropped: dict
    pretrain_meta: dict | None
    dtype: str = "fp32"
    twin_check: "Future[None] | None" = None

    def _raise_if_twin_check_failed(self) -> None:
        check = self.twin_check
        if check is not None and check.done() and check.exception() is not None:
            raise check.exception()

    def wait_for_twin_check(self) -> None:
        """Return once the twin check passed; raise its ConversionError if it failed."""
        if self.twin_check is not None:
            self.twin_check.result()

    def tensors(self, for_safetensors: bool = False) -> Iterator[tuple[str, "torch.Tensor"]]:
        """(target key, tensor) in the source's read order, one tensor in memory at a time.

        With ``for_safetensors``, tensors come in the forms the safetensors writer takes, so that
        the common case needs no torch: a tensor whose converted bytes equal its stored bytes
        (identity transform, same dtype, a single-file source) as ``writers.FileSlices`` that say
        where those bytes are, for a writer that copies them straight from the file; one that
        numpy can transform and cast as a numpy array; the rest (bfloat16) as torch tensors.
        """
        from tqdm import tqdm

        from converters.writers import FileSlices

        target_dtype = DTYPES[self.dtype]
        shapes = self.source.shapes()
        position = {name: i for i, name in enumerate(shapes)}
        source_dtypes = self.source.dtypes()
        items = sorted(self.mapped.items(), key=lambda kv: position[kv[0]])
        slices = getattr(self.source, "slices", None) if for_safetensors else None
        release_before = getattr(self.source, "release_before", lambda name: None)
        for source, (target, how) in tqdm(items, desc="converting", unit="tensor",
                                          disable=not sys.stderr.isatty()):
            if slices is None:
                # Tensors are read right here, in file order: what lies before is not needed. (A
                # writer reads FileSlices later, maybe while this generator runs ahead in a
                # prefetch thread, so there the writer makes that promise as it reads them.)
                release_before(source)
            self._raise_if_twin_check_failed()
            stored = RAW_DTYPES.get(source_dtypes[source])
            if slices is not None and how == "identity" and stored is not None and (
                    stored == target_dtype or not stored.startswith(("float", "bfloat"))):
                located = slices(source)
                if located is not None:
                    yield target, FileSlices(located[0], tuple(located[1]), tuple(shapes[source]),
                                             stored, self.source.label, located[2])
                    continue
            array = np.ascontiguousarray(rules.TRANSFORMS[how](self.source.read(source)))
            converted = _numpy_cast(array, source_dtypes[source], target_dtype) if for_safetensors else None
            yield target, _torch_cast(array, source_dtypes[source], target_dtype) if converted is None else converted
        release_before(None)  # no more reads here (the writer may still copy the last slices: a plain read)
        self.wait_for_twin_check()

    def report(self) -> dict:
        return {
            "mapped": {s: {"target": t, "transform": how} for s, (t, how) in sorted(self.mapped.items())},
            "dropped": dict(sorted(self.dropped.items())),
        }

    def meta(self) -> dict:
        self.wait_for_twin_check()
        pretrain = self.pretrain_meta or {}
        return {
            "format": FORMAT,
            "architecture": "ringmoe",
            "converter_version": CONVERTER_VERSION,
            "dtype": self.dtype,
            "arch": self.arch,
            "modalities": [dict(m, index=i) for i, m in enumerate(self.modalities)],
            "pretrain": {
                "img_size": self.arch["img_size"],
                "window_sizes": list(self.arch["window_size"]),
                "config": pretrain.get("config"),
                "step": pretrain.get("step"),
            },
            "source": {"files": [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)}
                                 for f in self.source.files]},
            "coverage": {"mapped": len(self.mapped), "dropped": len(self.dropped),
                         "source_tensors": len(self.mapped) + len(self.dropped)},
            "report": self.report(),
            "warnings": self.source.integrity_warnings(),
        }


def plan(source: CheckpointFile, arch_name: str | None = None, dtype: str = "fp32",
         check_in_background: bool = False, check_in_helper: bool = False) -> Plan:
    """Map and check a source against the twin; raise ConversionError naming what is wrong.

    With ``check_in_background`` the twin is built (and torch imported) in a thread and checked
    against; the returned plan raises the check's error from ``tensors()`` and ``meta()``. With
    ``check_in_helper`` too, the twin is built in the helper interpreter instead
    (``converters.util.in_subprocess``): for a writer that needs no torch, so that this process
    never loads it and its threads keep the GIL to themselves.
    """
    if dtype not in DTYPES:
        raise ConversionError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")
    shapes = source.shapes()
    pretrain_meta = _read_pretrain_meta(source)
    arch, modalities = resolve_arch(shapes, pretrain_meta, arch_name)
    mapped, dropped = plan_mapping(shapes, [m["name"] for m in modalities])

    twin_check = None
    if check_in_background:
        if check_in_helper:
            twin_shapes = in_subprocess(build_twin_shapes, arch, modalities).result  # torch loads there
        else:
            twin_shapes = lambda: build_twin_shapes(arch, modalities)  # noqa: E731
        twin_check = in_background(lambda: check_coverage(mapped, shapes, twin_shapes()), "twin-check")
    else:
        check_coverage(mapped, shapes, build_twin_shapes(arch, modalities))
    return Plan(source, arch, modalities, mapped, dropped, pretrain_meta, dtype, twin_check)


def convert(src: str | Path, arch_name: str | None = None, dtype: str = "fp32",
            strategy: str | Path | None = None) -> Conversion:
    """Read, map, check and convert a RingMoE checkpoint into memory. Nothing is written."""
    source = open_source(src, strategy)
    try:
        checked = plan(source, arch_name, dtype)
        state_dict = dict(checked.tensors())
        meta = checked.meta()
    finally:
        source.close()
    return Conversion(state_dict, meta)


def default_report_path(out: str | Path) -> Path:
    """OUT.pth, OUT.safetensors or OUT/ (shards) -> OUT.report.json beside it."""
    out = Path(out)
    return out.with_name(out.name.split(".")[0] + ".report.json")


def write_report(meta: dict, report_path: str | Path, outputs: list[Path]) -> Path:
    """The JSON report (meta without the mapping, then the mapping); removes ``outputs`` on failure,
    so a checkpoint never stands without its report."""
    report = {"meta": {k: v for k, v in meta.items() if k != "report"}, **meta["report"]}
    try:
        with atomic_write(report_path, "w") as f:
            json.dump(report, f, indent=1)
    except BaseException:
        for output in outputs:
            if output.is_dir():
                shutil.rmtree(output, ignore_errors=True)
            else:
                output.unlink(missing_ok=True)
        raise
    return Path(report_path)


def save(conversion: Conversion, out: str | Path, report_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write an in-memory conversion as an mmengine checkpoint and its JSON report, atomically."""
    from converters.writers import write_pth

    out = write_pth(conversion.state_dict.items(), conversion.meta, out)
    return out, write_report(conversion.meta, report_path or default_report_path(out), [out])


__all__ = ["CheckpointError", "ConversionError", "Conversion", "convert", "save"]
