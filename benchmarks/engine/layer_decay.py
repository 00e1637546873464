"""Layer-wise learning-rate decay for RingMoE, as an mmpretrain optimizer-wrapper constructor.

mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the backbone for
``get_layer_depth`` and only its own backbones have one, so RingMoE gets this constructor.
Importing the module registers it (configs list it in ``custom_imports``)::

    optim_wrapper = dict(
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        constructor='RingMoELayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.75))

Layer ids (``N = sum(depths)``, ``num_layers = N + 1``): the patch embedding is 0; block ``b``
of stage ``s`` is ``sum(depths[:s]) + b + 1`` in global order; a stage's patch merging joins the
block before it; the final norm, the per-stage output norms and everything outside the backbone
(neck, heads) are ``num_layers``. A parameter's lr is ``base_lr * rate ** (num_layers - id)``,
so heads train at the base lr and the patch embedding at ``rate ** num_layers`` of it.
Norm weights, biases and relative-position tables get no weight decay (the BEiT/MAE recipe).
Parameters with ``requires_grad=False`` (frozen stages) are left out of the optimizer.
"""
from __future__ import annotations

import re
from typing import Sequence

from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

NO_DECAY_NAMES = ("relative_position_bias_table",)
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.")


def num_layers(depths: Sequence[int]) -> int:
    """Layer count of the decay ladder: the embedding plus one per block (heads sit on top)."""
    return sum(depths) + 1


def layer_id(name: str, depths: Sequence[int], backbone: str = "backbone") -> int:
    """Layer id of the model parameter ``name`` (see the module docstring).

    Raises ValueError for a backbone parameter that fits no rule, so that a new module cannot
    silently train at the wrong rate.
    """
    top = num_layers(depths)
    prefix = f"{backbone}."
    if not name.startswith(prefix):
        return top  # neck and heads
    local = name[len(prefix):]
    if local.startswith("patch_embed."):
        return 0
    block = _BLOCK.match(local)
    if block:
        stage, index = int(block.group(1)), int(block.group(2))
        return sum(depths[:stage]) + index + 1
    merge = _MERGE.match(local)
    if merge:
        return sum(depths[: int(merge.group(1)) + 1])  # the last block of its stage
    if local.startswith(("norm.", "out_norms.")):
        return top
    raise ValueError(f"no layer-decay rule for backbone parameter {name!r}")


def _backbone_of(model: nn.Module, path: str) -> nn.Module:
    module = model
    for part in path.split("."):
        module = getattr(module, part)
    return module


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class RingMoELayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """One parameter group per (layer id, decay or not); see the module docstring.

    paramwise_cfg keys: ``layer_decay_rate`` (float, default 1.0: no decay) and ``backbone``
    (attribute path of the RingMoE inside the model, default ``'backbone'``). Groups carry
    ``layer_id``, ``lr_scale`` and ``param_names`` (which torch keeps in the optimizer state).
    """

    ALLOWED_KEYS = {"layer_decay_rate", "backbone"}

    def _validate_cfg(self) -> None:
        unknown = set(self.paramwise_cfg or {}) - self.ALLOWED_KEYS
        if unknown:  # mult keys of the default constructor would be silently ignored here
            raise ValueError(f"unsupported paramwise_cfg keys {sorted(unknown)}; "
                             f"allowed: {sorted(self.ALLOWED_KEYS)}")
        super()._validate_cfg()

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = "", **kwargs) -> None:
        rate = float(self.paramwise_cfg.get("layer_decay_rate", 1.0))
        path = self.paramwise_cfg.get("backbone", "backbone")
        depths = list(_backbone_of(module, path).arch["depths"])
        top = num_layers(depths)
        groups: dict[tuple[int, bool], dict] = {}
        for module_name, owner in module.named_modules():
            for param_name, param in owner.named_parameters(recurse=False):
                if not param.requires_grad:
                    continue
                name = f"{module_name}.{param_name}" if module_name else param_name
                layer = layer_id(name, depths, path)
                decay = not (isinstance(owner, NORM_TYPES) or param_name == "bias"
                             or param_name in NO_DECAY_NAMES)
                group = groups.get((layer, decay))
                if group is None:
                    scale = rate ** (top - layer)
                    group = groups[(layer, decay)] = {
                        "params": [], "param_names": [], "layer_id": layer, "lr_scale": scale,
                        "lr": self.base_lr * scale}
                    if self.base_wd is not None:
                        group["weight_decay"] = self.base_wd if decay else 0.0
                group["params"].append(param)
                group["param_names"].append(name)
        params.extend(groups[key] for key in sorted(groups))
        MMLogger.get_current_instance().info(
            f"layer-wise lr decay {rate}: {len(groups)} groups over layers 0..{top}; lr x"
            f"{rate ** top:.3g} (patch embedding) .. x1 (heads)")
