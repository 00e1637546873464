"""Load a converted single-model checkpoint (a seed-zoo family or a mindcv model) into a backbone.

``python converters/ms2torch.py SRC -o OUT.pth --family FAMILY:VARIANT`` writes the state dict
of a whole mmpretrain ``ImageClassifier`` (``backbone.*``, ``neck.*``, ``head.*``) with a meta
that names the family, the variant, the target model config and the input normalisation.
Downstream tasks reuse the backbone only. A task config either names the backbone type the
checkpoint holds (and adds task arguments such as ``out_indices``), or says
``type='ConvertedBackbone'`` to take whatever the checkpoint holds; the runner fills every
argument the config leaves out from the checkpoint's target config.

Loading is strict and accounted for, as for RingMoE (``benchmarks/models/loading.py``): every
backbone entry of the model is filled from the checkpoint or declared new with a reason (the
family rules' ``NEW`` table, or the backbone's own ``new_parameter_reasons()`` for entries a task
adds, such as the norms of extra outputs); every checkpoint tensor is loaded or dropped with a
reason (the pretraining head, and the neck unless the config takes it with
``neck=dict(type='ConvertedNeck')``); shapes must agree. Anything else is a ``CoverageError``
naming the keys, and nothing is loaded.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch

from benchmarks.models.loading import CoverageError, LoadReport, _listing

FAMILY_FORMAT = "ringmoe-bench/family-v1"
CONVERTED_BACKBONE = "ConvertedBackbone"  # config sentinel: the backbone type the checkpoint holds
PREFIX = "backbone."

# ImageNet statistics on a 0-1 scale: what mindcv and our zoo recipes normalise with by default.
IMAGENET_INPUT = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def is_family_meta(meta: dict | None) -> bool:
    return bool(meta) and meta.get("format") == FAMILY_FORMAT


def checked_family_meta(meta: dict | None, path: str | Path) -> dict:
    if not is_family_meta(meta):
        raise CoverageError(f"{path} is not a converted single-model checkpoint (ms2torch --family)")
    return meta


def read_family_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, meta) of a ``--family`` conversion (a .pth read with weights_only=True)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    return payload["state_dict"], checked_family_meta(payload.get("meta"), path)


def _bare_type(name: str) -> str:
    """'mmpretrain.ResNet' -> 'ResNet' (a scope prefix names the registry, not the model)."""
    return name.rsplit(".", 1)[-1]


def backbone_config(cfg_backbone: dict, meta: dict, default_scope: str | None) -> dict:
    """The backbone config of a task: the checkpoint's target backbone, the config's keys on top.

    Raises ValueError when the config names another backbone type than the checkpoint holds.
    """
    from converters.mindcv import FAMILIES

    if meta["family"] in FAMILIES:  # the family's twins register themselves on import
        for module in getattr(importlib.import_module(FAMILIES[meta["family"]]), "IMPORTS", ()):
            importlib.import_module(module)
    target = dict(meta["target_config"]["backbone"])
    wanted = cfg_backbone.get("type", CONVERTED_BACKBONE)
    if wanted == CONVERTED_BACKBONE:
        # The target is an mmpretrain model; from another framework's config, say so by scope.
        wanted = target["type"] if default_scope in (None, "mmpretrain") else f"mmpretrain.{target['type']}"
    elif _bare_type(wanted) != target["type"]:
        raise ValueError(f"the config builds a {wanted} backbone, but the checkpoint holds a {meta['family']} "
                         f"{target['type']} ({meta['variant']})")
    merged = {**target, **{k: v for k, v in cfg_backbone.items() if k != "type"}}
    merged["type"] = wanted
    merged["init_cfg"] = None  # the runner loads the weights itself, with the coverage check below
    return merged


def family_name(meta: dict) -> str:
    """The results table's backbone name of a family checkpoint, e.g. 'gmlp-gmlp_ti'."""
    return meta["variant"] if meta["variant"].startswith(meta["family"]) else f"{meta['family']}-{meta['variant']}"


def _new_reasons(module, meta: dict, prefix: str) -> list[tuple[re.Pattern, str]]:
    """(pattern over the module's own keys, reason) for entries no checkpoint tensor fills."""
    from converters.mindcv import FAMILIES

    rules = importlib.import_module(FAMILIES[meta["family"]]) if meta["family"] in FAMILIES else None
    escaped = re.escape(prefix)
    reasons = []
    for pattern, reason in getattr(rules, "NEW", ()):
        # The rules' patterns name ImageClassifier entries: keep those of this part, unprefixed.
        if pattern.startswith(escaped):
            reasons.append((re.compile(pattern[len(escaped):]), reason))
        elif pattern.startswith(".*"):
            reasons.append((re.compile(pattern), reason))
    own = getattr(module, "new_parameter_reasons", None)
    for key_prefix, reason in (own() if own else {}).items():
        reasons.append((re.compile(re.escape(key_prefix) + ".*"), reason))
    return reasons

def load_parts(model: torch.nn.Module, state_dict: dict, meta: dict, parts: dict[str, str]) -> LoadReport:
    """Load checkpoint parts into model parts, ``{model path: checkpoint prefix}`` (e.g.
    ``{'backbone': 'backbone'}``, or ``{'detector.backbone': 'backbone', ...}``); the report is
    keyed by model paths and drops every checkpoint tensor outside the loaded parts with a reason."""
    report = LoadReport()
    used = set()
    for path, source in parts.items():
        module = model
        for name in path.split("."):
            module = getattr(module, name)
        part = load_part(module, state_dict, meta, f"{source}.")
        report.mapped.update({f"{path}.{k}": v for k, v in part.mapped.items()})
        report.new.update({f"{path}.{k}": v for k, v in part.new.items()})
        used.update(part.mapped.values())
    for key in state_dict:
        if key not in used:
            report.dropped[key] = f"the pretraining model's {key.split('.', 1)[0]}, not loaded by this task"
    return report


def load_part(module: torch.nn.Module, state_dict: dict, meta: dict, prefix: str = PREFIX) -> LoadReport:
    """Load the checkpoint's ``prefix*`` tensors into ``module``; every key accounted for.

    The report maps module keys to checkpoint keys; tensors outside ``prefix`` are not its concern.
    """
    report = LoadReport()
    expected = module.state_dict()
    filled = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    unexpected = sorted(set(filled) - set(expected))
    if unexpected:
        raise CoverageError(f"{len(unexpected)} checkpoint tensors under {prefix} have no place in the "
                            f"{type(module).__name__} the config builds (other variant or arguments?): "
                            f"{_listing(unexpected)}")
    wrong = [f"{prefix}{k} {list(v.shape)} vs {list(expected[k].shape)}" for k, v in filled.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise CoverageError(f"{len(wrong)} shape mismatches (wrong variant?): {_listing(wrong, 2)}")
    reasons = _new_reasons(module, meta, prefix)
    for key in expected:
        if key in filled:
            report.mapped[key] = prefix + key
            continue
        reason = next((r for pattern, r in reasons if pattern.fullmatch(key)), None)
        if reason is not None:
            report.new[key] = reason
            filled[key] = expected[key]  # its value as the module built it
    missing = sorted(set(expected) - set(filled))
    if missing:
        raise CoverageError(f"{len(missing)} entries of {type(module).__name__} are neither in the checkpoint "
                            f"under {prefix} nor declared new: {_listing(missing)}")
    module.load_state_dict(filled, strict=True)
    return report

def read_family_meta(path: str | Path) -> dict | None:
    """The meta of a ``--family`` conversion without reading its tensors (memory-mapped), or None
    for any other file (a RingMoE conversion, a safetensors directory)."""
    path = Path(path)
    if not path.is_file() or path.suffix in (".safetensors", ".json"):
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    meta = payload.get("meta") if isinstance(payload, dict) else None
    return meta if is_family_meta(meta) else None
