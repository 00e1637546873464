"""Python config files in the mmengine style, without needing mmengine on a pretraining cluster.

A config is a Python file whose top-level names (not starting with ``_``) form the config.
``_base_ = "other.py"`` (or a list) inherits: dictionaries merge recursively, the child wins.
``--cfg-options a.b.c=value`` overrides from the command line (values parsed as Python
literals, falling back to strings), as in OpenMMLab.
"""
from __future__ import annotations

import ast
import copy
import runpy
from pathlib import Path


class ConfigError(ValueError):
    """A one-line problem with a config file or an override."""


def merge(base: dict, child: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get("_delete_", False):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy({k: v for k, v in value.items() if k != "_delete_"}
                                     if isinstance(value, dict) else value)
    return out


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist")
    try:
        namespace = runpy.run_path(str(path))
    except Exception as err:  # a broken config is user input: report it in one line
        raise ConfigError(f"config {path} failed to load: {type(err).__name__}: {err}") from None
    bases = namespace.get("_base_", [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    cfg: dict = {}
    for base in bases:
        cfg = merge(cfg, load_config(path.parent / base))
    own = {k: v for k, v in namespace.items() if not k.startswith("_") and _is_plain(v)}
    return merge(cfg, own)


def _is_plain(value) -> bool:
    return isinstance(value, (dict, list, tuple, str, int, float, bool, type(None)))


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(cfg: dict, options: list[str] | None) -> dict:
    """Apply ``key.sub=value`` overrides; unknown top-level sections are an error (typo guard)."""
    cfg = copy.deepcopy(cfg)
    for option in options or []:
        if "=" not in option:
            raise ConfigError(f"--cfg-options expects key=value, got {option!r}")
        dotted, text = option.split("=", 1)
        keys = dotted.split(".")
        if keys[0] not in cfg:
            raise ConfigError(f"--cfg-options: unknown section {keys[0]!r}; known: {sorted(cfg)}")
        node = cfg
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--cfg-options: {dotted} goes through a non-dict value")
        node[keys[-1]] = _parse_value(text)
    return cfg
