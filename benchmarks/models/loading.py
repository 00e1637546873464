"""Load a converted RingMoE checkpoint into a twin built for one modality, accounting for every key.

The timm pattern: one ``filter_checkpoint`` per model family that adapts a checkpoint to the
model (select the modality, reduce experts to dense FFNs, resize relative-position tables),
followed by a load whose coverage we check ourselves instead of trusting ``strict=False``:
every checkpoint tensor is mapped or dropped with a reason, every model parameter is filled
or declared new with a reason. Anything else raises ``CoverageError`` naming the keys.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

CONVERTED_FORMAT = "ringmoe-bench/converted-v1"
logger = logging.getLogger(__name__)


class CoverageError(RuntimeError):
    """A checkpoint and a model do not account for each other's parameters."""


@dataclass
class LoadReport:
    mapped: dict[str, str] = field(default_factory=dict)  # model key -> how it was filled
    dropped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> reason
    new: dict[str, str] = field(default_factory=dict)  # model key -> reason

    def summary(self) -> str:
        return (f"{len(self.mapped)} parameters loaded, {len(self.dropped)} checkpoint tensors dropped "
                f"with reasons, {len(self.new)} new parameters with reasons")

    def to_dict(self) -> dict:
        return {"mapped": self.mapped, "dropped": self.dropped, "new": self.new}

    def reasons(self) -> dict[str, int]:
        """How many keys each drop or new reason covers (for logs)."""
        counts: dict[str, int] = {}
        for reason in list(self.dropped.values()) + list(self.new.values()):
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def _listing(keys, limit: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _converted_path(path: str | Path) -> Path:
    from converters.writers import SCHEME, is_safetensors_checkpoint

    path = Path(str(path).removeprefix(SCHEME))
    if not path.exists() or not (path.is_file() or is_safetensors_checkpoint(path)):
        raise CoverageError(f"pretrained checkpoint {path} does not exist")
    return path


# Converter versions whose layout this loader no longer reads (with what changed).
_OUTDATED = {"0.1.0": "stacked expert weights were [E, out, in]; they are [E, in, out] since 0.2.0"}


def _checked_meta(meta: dict | None, path: Path) -> dict:
    meta = meta or {}
    if meta.get("format") != CONVERTED_FORMAT or meta.get("architecture") != "ringmoe":
        raise CoverageError(f"{path} is not a converted RingMoE checkpoint (run converters/ms2torch.py)")
    version = meta.get("converter_version")
    if version in _OUTDATED:
        raise CoverageError(f"{path} was converted by converter {version} ({_OUTDATED[version]}): "
                            "convert the MindSpore checkpoint again")
    return meta


def read_converted(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, meta) of a converter output: a .pth (loaded with weights_only=True), or a
    .safetensors file, a model.safetensors.index.json or a directory holding one (also as
    ``safetensors://PATH``)."""
    from converters.util import ConversionError
    from converters.writers import is_safetensors_checkpoint, read_safetensors_checkpoint

    path = _converted_path(path)
    if is_safetensors_checkpoint(path):
        try:
            state_dict, meta = read_safetensors_checkpoint(path)
        except ConversionError as err:
            raise CoverageError(str(err)) from None
        return state_dict, _checked_meta(meta, path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["state_dict"], _checked_meta(payload.get("meta"), path)


def read_converted_meta(path: str | Path) -> dict:
    """Only the meta of a converter output, without reading its tensors (memory-mapped .pth,
    safetensors header or index): what a config needs before the model is built."""
    from converters.util import ConversionError
    from converters.writers import is_safetensors_checkpoint, read_safetensors_meta

    path = _converted_path(path)
    if is_safetensors_checkpoint(path):
        try:
            return _checked_meta(read_safetensors_meta(path), path)
        except ConversionError as err:
            raise CoverageError(str(err)) from None
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return _checked_meta(payload.get("meta"), path)


_MODALITY_KEY = re.compile(r"(?:^patch_embed\.|\.modal_experts\.|\.modal_routers\.)(?P<mod>[a-z0-9_]+)\.")
_EXPERT_KEY = re.compile(r"(?P<block>layers\.\d+\.blocks\.\d+)\.ffn\.(?P<part>modal_experts\.[a-z0-9_]+|cross_experts)\.(?P<rest>fc[12]\.(weight|bias))")
_ROUTER_KEY = re.compile(r"layers\.\d+\.blocks\.\d+\.ffn\.(modal_routers\.[a-z0-9_]+|cross_router)\.weight")
_TABLE_KEY = re.compile(r".*\.attn\.relative_position_bias_table")


def resize_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a [(2W-1)^2, heads] relative-position table to a side of ``size``."""
    side = int(round(table.shape[0] ** 0.5))
    grid = table.float().T.reshape(1, -1, side, side)
    grid = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    return grid.reshape(-1, size * size).T.contiguous().to(table.dtype)


def _top_experts(meta: dict, modality: str) -> dict[tuple[str, str], int]:
    """(block key, 'modal' or 'cross') -> index of the most-routed expert, from the meta's statistics."""
    stats = (meta.get("routing_stats") or {}).get(modality)
    if stats is None:
        raise CoverageError(f"moe_reduction='top_expert' needs routing statistics for {modality!r}: "
                            "convert with ms2torch --routing-stats")
    top = {}
    for block, counts in stats["blocks"].items():
        top[(block, "modal")] = max(range(len(counts["special"])), key=counts["special"].__getitem__)
        top[(block, "cross")] = max(range(len(counts["cross"])), key=counts["cross"].__getitem__)
    return top


def filter_checkpoint(state_dict: dict, model, meta: dict | None = None) -> tuple[dict, LoadReport]:
    """Adapt a converted (all-modality) state dict to ``model``; report what happened to each key."""
    report = LoadReport()
    built = set(model.patch_embed.keys())
    reduction = model.arch["moe_reduction"]
    top = _top_experts(meta or {}, model.modality) if reduction == "top_expert" else {}
    model_shapes = {k: v.shape for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}

    for key, value in state_dict.items():
        match = _MODALITY_KEY.search(key)
        if match and match["mod"] not in built:
            report.dropped[key] = f"another modality ({match['mod']}); model built for {model.modality}"
            continue
        if reduction is not None and (_ROUTER_KEY.fullmatch(key) or _EXPERT_KEY.fullmatch(key)):
            m = _EXPERT_KEY.fullmatch(key)
            if m is None or reduction == "shared":
                report.dropped[key] = f"experts and routers removed by moe_reduction={reduction!r}"
                continue
            part = "cross" if m["part"] == "cross_experts" else "modal"
            target = f"{m['block']}.ffn.{part}_dense.{m['rest']}"
            # Stacked expert weights are [E, in, out]; a dense FFN is nn.Linear, [out, in].
            as_linear = (lambda w: w.T.contiguous()) if m["rest"].endswith("weight") else (lambda b: b)
            if reduction == "expert_mean":
                out[target] = as_linear(value.float().mean(0).to(value.dtype))
                report.mapped[target] = f"mean over experts of {key}"
                report.dropped[key] = f"averaged into {target} (moe_reduction='expert_mean')"
            else:
                expert = top[(m["block"], part)]
                out[target] = as_linear(value[expert]).clone()
                report.mapped[target] = f"expert {expert} (most routed) of {key}"
                report.dropped[key] = f"expert {expert} kept as {target}, the others removed (moe_reduction='top_expert')"
            continue
        if _TABLE_KEY.fullmatch(key) and key in model_shapes and value.shape != model_shapes[key]:
            size = int(round(model_shapes[key][0] ** 0.5))
            old = int(round(value.shape[0] ** 0.5))
            out[key] = resize_table(value, size)
            report.mapped[key] = f"resized {old}x{old} -> {size}x{size} (bicubic)"
            continue
        out[key] = value
        report.mapped[key] = key
    return out, report


def check_coverage(state_dict: dict, model, report: LoadReport) -> None:
    """Every model tensor filled or new with a reason; every filtered tensor used; shapes agree."""
    expected = model.state_dict()
    new_reasons = model.new_parameter_reasons()
    missing = [k for k in expected if k not in state_dict]
    for key in missing:
        reason = next((r for prefix, r in new_reasons.items() if key.startswith(prefix)), None)
        if reason is not None:
            report.new[key] = reason
    unexplained = [k for k in missing if k not in report.new]
    if unexplained:
        raise CoverageError(f"{len(unexplained)} model parameters are neither in the checkpoint nor declared new: "
                            f"{_listing(unexplained)}")
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise CoverageError(f"{len(unexpected)} checkpoint tensors have no place in the model: {_listing(unexpected)}")
    wrong = [f"{k} {list(v.shape)} vs {list(expected[k].shape)}" for k, v in state_dict.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise CoverageError(f"{len(wrong)} shape mismatches (wrong architecture?): {_listing(wrong, 2)}")


def check_arch(meta: dict, model, path) -> None:
    """The checkpoint's architecture must be the model's (windows may differ: tables resize)."""
    have = meta["arch"]
    want = model.arch
    diffs = [f"{k}: checkpoint {have[k]} vs model {want[k]}" for k in
             ("embed_dim", "depths", "num_heads", "patch_size", "mlp_ratio", "num_experts")
             if _plain(have[k]) != _plain(want[k])]
    if diffs:
        raise CoverageError(f"{path}: architecture differs from the model config: {'; '.join(diffs)}")


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def twin_from_meta(meta: dict, modality: str, **overrides):
    """The twin with the architecture a converted checkpoint's meta describes (weights not loaded)."""
    from benchmarks.models.ringmoe import RingMoE

    arch = meta["arch"]
    kwargs = dict(
        embed_dim=arch["embed_dim"], depths=arch["depths"], num_heads=arch["num_heads"],
        window_size=arch["window_size"], patch_size=arch["patch_size"], mlp_ratio=arch["mlp_ratio"],
        num_experts=arch["num_experts"], modalities={m["name"]: m["channels"] for m in meta["modalities"]},
        modality=modality,
    )
    kwargs.update(overrides)
    return RingMoE(**kwargs)


def load_state(model, state_dict: dict, meta: dict) -> LoadReport:
    """Filter, check coverage and load an in-memory converted state dict into ``model``."""
    filtered, report = filter_checkpoint(state_dict, model, meta)
    check_coverage(filtered, model, report)
    result = model.load_state_dict(filtered, strict=False)
    # Belt and braces: what torch reports must be exactly what we declared new.
    if result.unexpected_keys or set(result.missing_keys) != set(report.new):
        raise CoverageError(f"load disagreed with the coverage check: missing {result.missing_keys}, "
                            f"unexpected {result.unexpected_keys}")
    return report


def load_pretrained(model, path: str | Path, report_path: str | Path | None = None) -> LoadReport:
    """Load a converted checkpoint into ``model`` with a full coverage check; return the report."""
    state_dict, meta = read_converted(path)
    check_arch(meta, model, path)
    report = load_state(model, state_dict, meta)
    logger.info("loaded %s: %s", path, report.summary())
    for reason, count in sorted(report.reasons().items()):
        logger.info("  %5d x %s", count, reason)
    if report_path is not None:
        Path(report_path).write_text(json.dumps(report.to_dict(), indent=1))
    return report
