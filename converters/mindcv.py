"""Convert single-model MindSpore checkpoints (mindcv's ResNet, ViT and Swin; our seed-zoo families
gMLP, Multigrain, BiT and DINO) into mmpretrain ``ImageClassifier``s.

    from converters.mindcv import build_target, convert_mindcv
    state_dict, report = convert_mindcv("swin_tiny.ckpt", "swin", "swin_tiny")
    model = build_target("swin", "swin_tiny")          # configured, eval mode
    model.load_state_dict(state_dict, strict=True)

The rules of each family are data in ``converters/rules/{mindcv,zoo}_<family>.py``: name
canonicalization (CellList mangling), a rename table with transforms (and fused parts), drops
with reasons (optionally verified against the target), target entries that are new in torch
with reasons, and the mmpretrain config that reproduces mindcv's numerics. Every source tensor
must be mapped or dropped, every target entry filled or declared new, with equal shapes; any
other outcome is a one-line :class:`ConversionError` that names the keys. Nothing is written.
"""
from __future__ import annotations

import importlib
import math
import os
import re
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from converters.ckpt_io import CheckpointError, read_tensor, scan_checkpoint
from converters.util import ConversionError

__all__ = ["FAMILIES", "ConversionError", "build_target", "convert_mindcv", "resolve_variant", "target_config"]

# family -> its rules module, imported on first use (a family's rules may import its twin).
FAMILIES: dict[str, str] = {
    "resnet": "converters.rules.mindcv_resnet",
    "vit": "converters.rules.mindcv_vit",
    "swin": "converters.rules.mindcv_swin",
    "gmlp": "converters.rules.zoo_gmlp",
    "multigrain": "converters.rules.zoo_multigrain",
    "bit": "converters.rules.zoo_bit",
    "dino": "converters.rules.zoo_dino",
}

OPTIMIZER_STATE = "optimizer state or training counter (not model weights)"

# Drops shared by every family: what mindcv's training loop can put beside the weights.
COMMON_DROPS: list[tuple[str, str]] = [
    (r"(adam_m|adam_v|moments|moment|moment1|moment2|accum|mean_grad|mean_square|vhat)\..+", OPTIMIZER_STATE),
    (
        r"global_step|learning_rate|beta1_power|beta2_power|epoch_num|step_num|scale_sense"
        r"|current_iterator_step|last_overflow_iterator_step|loss_scale|weight_decay|momentum",
        OPTIMIZER_STATE,
    ),
    (r"ema\..+", "EMA shadow copy kept by mindcv's TrainStep (ema=True); the live weights are converted"),
    (r"ringmoe_meta", "training metadata of a pretrain/zoo run (recipe, config, input normalisation, data "
                      "position): copied into the converted meta, not a weight"),
]


# ------------------------------------------------------------------ families and targets
def _family(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ConversionError(f"unknown family {family!r}; choose from {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[family])


def resolve_variant(family: str, variant: str | dict) -> tuple[str, dict]:
    """(name, architecture) for a mindcv factory name, or for an architecture dict of that family."""
    rules = _family(family)
    if isinstance(variant, dict):
        known = next(iter(rules.ARCHS.values()))
        missing = sorted(set(known) - set(variant) - {"mlp_ratio"})
        if missing:
            raise ConversionError(f"{family} architecture dict lacks {missing}")
        return "custom", dict(variant)
    if variant not in rules.ARCHS:
        raise ConversionError(f"unknown {family} variant {variant!r}; choose from {sorted(rules.ARCHS)} "
                              "or pass an architecture dict")
    return variant, dict(rules.ARCHS[variant])


def target_config(family: str, variant: str | dict, num_classes: int | None = 1000) -> dict:
    """The mmpretrain model config (an ``ImageClassifier``) that matches mindcv's numerics.

    ``num_classes=None`` (or 0) builds no head.
    """
    _, arch = resolve_variant(family, variant)
    try:
        return _family(family).model_config(arch, num_classes or None)
    except ValueError as err:
        raise ConversionError(f"{family} {variant}: {err}") from None


def build_target(family: str, variant: str | dict, num_classes: int | None = 1000):
    """Build the configured PyTorch target (mmpretrain ``ImageClassifier``) in eval mode."""
    import benchmarks  # noqa: F401  torchvision shim before mmpretrain
    import benchmarks.models.mindcv_twins  # noqa: F401  registers MindCVResNet
    import mmpretrain.models  # noqa: F401  registers mmpretrain's modules
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    for module in getattr(_family(family), "IMPORTS", ()):  # twins register themselves on import
        importlib.import_module(module)

    # A Runner of another framework (mmseg, mmdet) may have left its default scope set, and
    # mmengine then looks up 'ImageClassifier' there: pin the scope while building.
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        model = MODELS.build(target_config(family, variant, num_classes))
    return model.eval()


# ------------------------------------------------------------------ mapping
@dataclass(frozen=True)
class Mapping:
    target: str
    transform: str
    part: int | None = None  # index among ``parts`` for fused targets
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Drop:
    reason: str
    verifier: str | None = None
    groups: tuple = ()


def _tables(rules: ModuleType):
    """Compiled (pattern, rule) pairs; re's own cache makes repeated calls cheap."""
    renames = [(re.compile(rule[0]), rule) for rule in rules.RENAMES]
    drops = [(re.compile(rule[0]), rule) for rule in [*rules.DROPS, *COMMON_DROPS]]
    return renames, drops


def canonical_name(rules: ModuleType, key: str) -> str:
    """Undo CellList name mangling (``rules.CANONICAL``), each substitution at most once."""
    for pattern, replacement in getattr(rules, "CANONICAL", ()):
        key = re.sub(pattern, replacement, key, count=1)
    return key


def map_key(rules: ModuleType, key: str, arch: dict) -> Mapping | Drop:
    """The rule for one canonical source key. Raises KeyError when no rule explains it."""
    renames, drops = _tables(rules)
    for pattern, rule in renames:
        match = pattern.fullmatch(key)
        if match:
            groups = {k: v for k, v in match.groupdict().items() if v is not None}
            target = rule[1].format(**groups, **rules.template_fields(groups, arch))
            if len(rule) > 3:
                parts = tuple(rule[3])
                return Mapping(target, rule[2], parts.index(groups["part"]), parts)
            return Mapping(target, rule[2])
    for pattern, rule in drops:
        match = pattern.fullmatch(key)
        if match:
            return Drop(rule[1], rule[2] if len(rule) > 2 else None, tuple(sorted(match.groupdict().items())))
    raise KeyError(key)


def _listing(keys, limit: int = 4) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _transformed_shape(rules: ModuleType, shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    if not math.prod(shape):
        return tuple(shape)
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=shape, strides=(0,) * len(shape))
    return tuple(rules.TRANSFORMS[transform](probe).shape)


def plan_mapping(rules: ModuleType, names, arch: dict) -> tuple[dict, dict, dict]:
    """({source: Mapping}, {source: Drop}, {source: canonical name if it differs})."""
    mapped, dropped, renamed, unexplained, seen = {}, {}, {}, [], {}
    for key in names:
        canonical = canonical_name(rules, key)
        if canonical in seen:
            raise ConversionError(f"{key} and {seen[canonical]} both read as {canonical}")
        seen[canonical] = key
        if canonical != key:
            renamed[key] = canonical
        try:
            rule = map_key(rules, canonical, arch)
        except KeyError:
            unexplained.append(key)
            continue
        (mapped if isinstance(rule, Mapping) else dropped)[key] = rule
    if unexplained:
        raise ConversionError(f"{len(unexplained)} source tensors match no rule: {_listing(sorted(unexplained))}")
    return mapped, dropped, renamed


def check_coverage(rules: ModuleType, mapped: dict, shapes: dict, expected: dict) -> dict[str, str]:
    """Every target entry filled once (or declared new), shapes equal. Returns {new target: reason}."""
    by_target: dict[str, list[str]] = {}
    for source, rule in mapped.items():
        by_target.setdefault(rule.target, []).append(source)
    for target, sources in by_target.items():
        rules_ = [mapped[s] for s in sources]
        if rules_[0].parts:
            have = {r.part: s for r, s in zip(rules_, sources)}
            if len(have) != len(sources):
                raise ConversionError(f"{_listing(sorted(sources))} fill the same part of {target}")
            lacking = [p for i, p in enumerate(rules_[0].parts) if i not in have]
            if lacking:
                raise ConversionError(f"{target} is fused from parts {list(rules_[0].parts)} but part(s) "
                                      f"{lacking} are missing (have {_listing(sorted(sources))})")
        elif len(sources) > 1:
            raise ConversionError(f"{_listing(sorted(sources))} all map to {target}")
    new_rules = [(re.compile(p), reason) for p, reason in rules.NEW]
    new, missing = {}, []
    for target in expected:
        if target in by_target:
            continue
        reason = next((r for p, r in new_rules if p.fullmatch(target)), None)
        if reason is None:
            missing.append(target)
        else:
            new[target] = reason
    if missing:
        raise ConversionError(f"checkpoint lacks {len(missing)} tensors the model needs "
                              f"(wrong variant or file?): {_listing(sorted(missing))}")
    extra = sorted(set(by_target) - set(expected))
    if extra:
        raise ConversionError(f"{len(extra)} mapped tensors have no place in the model (wrong variant?): "
                              f"{_listing(extra)} (from {_listing(sorted(by_target[extra[0]]))})")
    for target, sources in by_target.items():
        ordered = sorted(sources, key=lambda s: mapped[s].part or 0)
        pieces = [_transformed_shape(rules, shapes[s], mapped[s].transform) for s in ordered]
        shape = pieces[0] if len(pieces) == 1 else (sum(p[0] for p in pieces), *pieces[0][1:])
        if any(p[1:] != pieces[0][1:] for p in pieces) or shape != expected[target]:
            got = ", ".join(f"{s} {list(shapes[s])}" for s in ordered)
            raise ConversionError(f"{got} -> {list(shape)}, but {target} needs {list(expected[target])} "
                                  "(wrong variant?)")
    return new


# ------------------------------------------------------------------ conversion
def _infer_num_classes(rules: ModuleType, shapes: dict, renamed: dict) -> int | None:
    canonical = {renamed.get(k, k): k for k in shapes}
    head = canonical.get(rules.HEAD_KEY)
    return shapes[head][0] if head is not None else None


def _to_torch(array: np.ndarray, stored_dtype: str, like):
    import torch

    if stored_dtype == "BFloat16":  # ckpt_io returns the raw 16-bit words
        tensor = torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_floating_point() != like.is_floating_point():
        raise ConversionError(f"dtype {stored_dtype} cannot fill a {like.dtype} entry")
    return tensor.to(like.dtype).clone()


def convert_mindcv(src_ckpt: str | os.PathLike, family: str, variant: str | dict,
                   num_classes: int | None = None) -> tuple[dict, dict]:
    """Convert a mindcv checkpoint into the state dict of ``build_target(family, variant, n)``.

    ``num_classes`` defaults to the checkpoint's classifier rows (no head if it has none).
    Returns ``(state_dict, report)``; the report lists, per source key, its target and transform
    or its drop reason, the target entries new in torch with reasons, the renamed (mangled)
    source names, the verified drops and the target config.
    """
    name, arch = resolve_variant(family, variant)
    rules = _family(family)
    label = os.fspath(src_ckpt)
    if not os.path.isfile(label):
        raise ConversionError(f"{label}: no such checkpoint file")
    try:
        index = scan_checkpoint(label)
    except CheckpointError as err:
        raise ConversionError(str(err)) from None
    shapes = {k: tuple(r.shape) for k, r in index.items()}

    mapped, dropped, renamed = plan_mapping(rules, shapes, arch)
    if num_classes is None:
        num_classes = _infer_num_classes(rules, shapes, renamed)
    model = build_target(family, variant, num_classes)
    target_state = model.state_dict()
    new = check_coverage(rules, mapped, shapes, {k: tuple(v.shape) for k, v in target_state.items()})

    state_dict: dict = {}
    verified = []
    try:
        with open(label, "rb") as handle:
            fused: dict[str, dict[int, np.ndarray]] = {}
            for source, rule in mapped.items():
                array = rules.TRANSFORMS[rule.transform](read_tensor(handle, index[source]))
                if rule.parts:
                    fused.setdefault(rule.target, {})[rule.part] = array
                    if len(fused[rule.target]) < len(rule.parts):
                        continue
                    pieces = fused.pop(rule.target)
                    array = np.concatenate([pieces[i] for i in range(len(rule.parts))], axis=0)
                state_dict[rule.target] = _to_torch(array, index[source].dtype, target_state[rule.target])
            for source, drop in dropped.items():
                if drop.verifier is None:
                    continue
                check = rules.VERIFIERS[drop.verifier]
                problem = check(read_tensor(handle, index[source]), dict(drop.groups), arch, target_state)
                if problem:
                    raise ConversionError(f"{source}: {problem}")
                verified.append(source)
    except CheckpointError as err:
        raise ConversionError(str(err)) from None
    for target in new:
        state_dict[target] = target_state[target].clone()
    state_dict = {k: state_dict[k] for k in target_state}  # the target's own order

    def mapping_report(rule: Mapping) -> dict:
        entry = {"target": rule.target, "transform": rule.transform}
        if rule.parts:
            entry["part"] = f"{rule.parts[rule.part]} ({rule.part + 1} of {len(rule.parts)}, concatenated on axis 0)"
        return entry

    report = {
        "family": family,
        "variant": name,
        "arch": arch,
        "source": label,
        "num_classes": num_classes,
        "target_config": target_config(family, variant, num_classes),
        "mapped": {s: mapping_report(r) for s, r in sorted(mapped.items())},
        "dropped": {s: d.reason for s, d in sorted(dropped.items())},
        "verified_drops": sorted(verified),
        "new": dict(sorted(new.items())),
        "canonicalized": dict(sorted(renamed.items())),
        "coverage": {"source_tensors": len(shapes), "mapped": len(mapped), "dropped": len(dropped),
                     "target_entries": len(target_state), "new": len(new)},
    }
    return state_dict, report
