"""Freeze a whole backbone for linear probes of backbones that have no ``frozen_stages`` of their own.

mmpretrain's ResNet and VisionTransformer, and our twins, freeze in different ways (or not at
all); a linear probe must freeze every one the same way. ``FreezeBackboneHook`` turns off the
backbone's gradients before training (so the optimizer leaves it alone and autograd does not
trace it) and keeps it in eval mode at every iteration (so BatchNorm statistics and dropout stay
as pretrained; the train loop switches the model back to train mode after each validation).
Importing this module registers the hook::

    custom_imports = dict(imports=['benchmarks.engine.frozen'], allow_failed_imports=False)
    custom_hooks = [dict(type='FreezeBackboneHook')]   # backbone='detector.backbone' for trackers
"""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class FreezeBackboneHook(Hook):
    priority = "HIGHEST"  # before any hook that looks at gradients or the model's mode

    def __init__(self, backbone: str = "backbone") -> None:
        self.backbone = backbone

    def _module(self, runner):
        module = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for name in self.backbone.split("."):
            module = getattr(module, name)
        return module

    def before_train(self, runner) -> None:
        backbone = self._module(runner)
        backbone.requires_grad_(False)
        backbone.eval()
        frozen = sum(p.numel() for p in backbone.parameters())
        runner.logger.info(f"FreezeBackboneHook: {self.backbone} frozen ({frozen:,} parameters, eval mode)")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._module(runner).eval()
