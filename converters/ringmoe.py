"""Convert a MindSpore RingMoE checkpoint into the PyTorch twin's state dict, with a full report.

The HF-conversion-script shape: rename by table (``converters/rules/ringmoe.py``), check the
result strictly against the twin built for all modalities on the meta device, and only then
write. Every source tensor is mapped or dropped with a reason; every twin parameter is filled.
Needs torch and numpy only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.ckpt_io import CheckpointError, TensorRecord, read_tensor, scan_checkpoint
from converters.rules import ringmoe as rules
from converters.util import ConversionError, atomic_write, sha256_file
from pretrain.models.arch import DEFAULT_MODALITIES, RingMoEArch, get_arch

CONVERTER_VERSION = "0.1.0"
FORMAT = "ringmoe-bench/converted-v1"
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
META_KEY = "ringmoe_meta"


@dataclass
class Conversion:
    state_dict: dict
    meta: dict
    report: dict = field(default_factory=dict)


def _read_pretrain_meta(path: Path, index) -> dict | None:
    """The JSON that pretrain/train.py stores in the checkpoint (absent in the authors' files)."""
    record = index.get(META_KEY)
    if record is None:
        return None
    value = read_tensor(path, record)
    text = value if isinstance(value, str) else str(np.asarray(value).item())
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: {META_KEY} is not valid JSON ({err.msg})") from None


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


def plan_mapping(index, modality_names: list[str]) -> tuple[dict, dict]:
    """Map every source key: {source: (target, transform)} and {source: drop reason}."""
    mapped, dropped, unexplained = {}, {}, []
    for key in index:
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


def check_coverage(mapped: dict, index, expected: dict[str, tuple[int, ...]]) -> None:
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
        record: TensorRecord = index[source]
        shape = _transformed_shape(record.shape, mapped[source][1])
        if shape != expected[target]:
            raise ConversionError(f"{source} has shape {list(record.shape)} -> {list(shape)}, "
                                  f"but {target} needs {list(expected[target])} (wrong architecture?)")


def _transformed_shape(shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=shape, strides=(0,) * len(shape))
    return tuple(rules.TRANSFORMS[transform](probe).shape) if math.prod(shape) else tuple(shape)


def convert(src: str | Path, arch_name: str | None = None, dtype: str = "fp32") -> Conversion:
    """Read, map, check and convert a RingMoE checkpoint. Nothing is written."""
    import torch

    src = Path(src)
    if not src.is_file():
        raise ConversionError(f"{src}: no such file")
    if dtype not in DTYPES:
        raise ConversionError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")
    index = scan_checkpoint(src)
    shapes = {k: tuple(r.shape) for k, r in index.items()}
    pretrain_meta = _read_pretrain_meta(src, index)
    arch, modalities = resolve_arch(shapes, pretrain_meta, arch_name)
    names = [m["name"] for m in modalities]
    mapped, dropped = plan_mapping(index, names)
    check_coverage(mapped, index, build_twin_shapes(arch, modalities))

    target_dtype = getattr(torch, DTYPES[dtype])
    state_dict = {}
    with open(src, "rb") as f:
        for source, (target, how) in sorted(mapped.items(), key=lambda kv: index[kv[0]].offsets[0][0]):
            array = rules.TRANSFORMS[how](read_tensor(f, index[source]))
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            state_dict[target] = tensor.to(target_dtype) if tensor.is_floating_point() else tensor
    report = {
        "mapped": {s: {"target": t, "transform": how} for s, (t, how) in sorted(mapped.items())},
        "dropped": dict(sorted(dropped.items())),
    }
    meta = {
        "format": FORMAT,
        "architecture": "ringmoe",
        "converter_version": CONVERTER_VERSION,
        "dtype": dtype,
        "arch": arch,
        "modalities": [dict(m, index=i) for i, m in enumerate(modalities)],
        "pretrain": {
            "img_size": arch["img_size"],
            "window_sizes": list(arch["window_size"]),
            "config": (pretrain_meta or {}).get("config"),
            "step": (pretrain_meta or {}).get("step"),
        },
        "source": {"files": [{"path": str(src), "bytes": src.stat().st_size, "sha256": sha256_file(src)}]},
        "coverage": {"mapped": len(mapped), "dropped": len(dropped), "source_tensors": len(index)},
        "report": report,
    }
    return Conversion(state_dict, meta, report)


def save(conversion: Conversion, out: str | Path, report_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write the mmengine checkpoint ({'state_dict', 'meta'}) and the JSON report, atomically."""
    import torch

    out = Path(out)
    report_path = Path(report_path) if report_path else out.with_suffix(".report.json")
    payload = {"state_dict": conversion.state_dict, "meta": conversion.meta}
    report = {"meta": {k: v for k, v in conversion.meta.items() if k != "report"}, **conversion.report}
    with atomic_write(out, "wb") as f:
        torch.save(payload, f)
    try:
        with atomic_write(report_path, "w") as f:
            json.dump(report, f, indent=1)
    except BaseException:
        out.unlink(missing_ok=True)  # never leave a checkpoint without its report
        raise
    return out, report_path


__all__ = ["CheckpointError", "ConversionError", "Conversion", "convert", "save"]
