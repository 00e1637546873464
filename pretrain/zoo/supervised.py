"""The supervised recipe: classification with soft-target cross-entropy (gMLP's and BiT's)."""
from __future__ import annotations

import numpy as np
from mindspore import ops  # module level: the loss is compiled by ms.jit, which cannot parse imports

from pretrain.config import ConfigError
from pretrain.zoo.batch import MixOptions, mix_batch
from pretrain.zoo.recipes import Recipe, RunInfo, build_model


class SupervisedRecipe(Recipe):
    """Classification with soft-target cross-entropy: one view per sample, label smoothing and
    mixup/cutmix from the config's ``mix`` section (gMLP's and BiT's recipes)."""

    name = "supervised"

    def __init__(self, cfg: dict, run: RunInfo):
        super().__init__(cfg, run)
        if self.num_views != 1:
            raise ConfigError(f"the supervised recipe takes one view per sample; data.views gives {self.num_views}")
        self.mix = MixOptions.from_config(cfg.get("mix", {}))

    def build(self) -> dict:
        self.cells = {"model": build_model(self.cfg["model"], self.run.num_classes)}
        return self.cells

    def prepare_batch(self, views: list[np.ndarray], labels: np.ndarray,
                      rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        images, targets, _ = mix_batch(views[0], labels, self.run.num_classes, self.mix, rng)
        return [images], [targets]

    def loss(self, views: tuple, targets: tuple) -> tuple:
        logits = self.cells["model"](views[0])
        loss = -(targets[0] * ops.log_softmax(logits, -1)).sum(-1).mean()
        return loss, (logits,)

    def metrics(self, loss: float, aux: list[np.ndarray], labels: np.ndarray, targets: list[np.ndarray]) -> dict:
        # top-1 against the dominant class of the (mixed, smoothed) target: the label itself
        # unless mixing gave the partner the larger share
        top1 = float(np.mean(aux[0].argmax(-1) == targets[0].argmax(-1)))
        return {"losses": {"ce": loss}, "top1": top1}
