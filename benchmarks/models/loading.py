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


def read_converted(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, meta) of a converter output; loads with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CoverageError(f"pretrained checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    meta = payload.get("meta") or {}
    if meta.get("format") != CONVERTED_FORMAT or meta.get("architecture") != "ringmoe":
        raise CoverageError(f"{path} is not a converted RingMoE checkpoint (run converters/ms2torch.py)")
    return payload["state_dict"], meta


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


def filter_checkpoint(state_dict: dict, model) -> tuple[dict, LoadReport]:
    """Adapt a converted (all-modality) state dict to ``model``; report what happened to each key."""
    report = LoadReport()
    built = set(model.patch_embed.keys())
    reduction = model.arch["moe_reduction"]
    model_shapes = {k: v.shape for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    expert_groups: dict[str, list[str]] = {}

    for key, value in state_dict.items():
        match = _MODALITY_KEY.search(key)
        if match and match["mod"] not in built:
            report.dropped[key] = f"another modality ({match['mod']}); model built for {model.modality}"
            continue
        if reduction is not None and (_ROUTER_KEY.fullmatch(key) or _EXPERT_KEY.fullmatch(key)):
            if reduction == "expert_mean" and (m := _EXPERT_KEY.fullmatch(key)):
                target = f"{m['block']}.ffn.{'cross_mean' if m['part'] == 'cross_experts' else 'modal_mean'}.{m['rest']}"
                expert_groups.setdefault(target, []).append(key)
                report.dropped[key] = f"averaged into {target} (moe_reduction='expert_mean')"
            else:
                report.dropped[key] = f"experts removed by moe_reduction={reduction!r}"
            continue
        if _TABLE_KEY.fullmatch(key) and key in model_shapes and value.shape != model_shapes[key]:
            size = int(round(model_shapes[key][0] ** 0.5))
            old = int(round(value.shape[0] ** 0.5))
            out[key] = resize_table(value, size)
            report.mapped[key] = f"resized {old}x{old} -> {size}x{size} (bicubic)"
            continue
        out[key] = value
        report.mapped[key] = key

    for target, sources in expert_groups.items():
        (source,) = sources
        out[target] = state_dict[source].float().mean(0).to(state_dict[source].dtype)
        report.mapped[target] = f"mean over experts of {source}"
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


def load_pretrained(model, path: str | Path, report_path: str | Path | None = None) -> LoadReport:
    """Load a converted checkpoint into ``model`` with a full coverage check; return the report."""
    state_dict, meta = read_converted(path)
    check_arch(meta, model, path)
    filtered, report = filter_checkpoint(state_dict, model)
    check_coverage(filtered, model, report)
    result = model.load_state_dict(filtered, strict=False)
    # Belt and braces: what torch reports must be exactly what we declared new.
    if result.unexpected_keys or set(result.missing_keys) != set(report.new):
        raise CoverageError(f"load disagreed with the coverage check: missing {result.missing_keys}, "
                            f"unexpected {result.unexpected_keys}")
    logger.info("loaded %s: %s", path, report.summary())
    for reason, count in sorted(report.reasons().items()):
        logger.info("  %5d x %s", count, reason)
    if report_path is not None:
        Path(report_path).write_text(json.dumps(report.to_dict(), indent=1))
    return report
