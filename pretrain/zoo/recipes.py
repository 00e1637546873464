"""Recipes (training objectives) and the model factory table; the interface is documented in
``pretrain/zoo/__init__.py``."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pretrain.config import ConfigError
from pretrain.zoo.transforms import ViewMaker

# family -> factory ``build_<family>(arch: dict | str, num_classes: int | None, **kwargs) -> nn.Cell``,
# as "module:function" (imported on first use) or a callable.
FACTORIES: dict[str, str | Callable] = {
    "gmlp": "pretrain.models.gmlp:build_gmlp",
    "multigrain": "pretrain.models.multigrain:build_multigrain",
    "bit": "pretrain.models.bit:build_bit",
    "dino": "pretrain.models.dino:build_dino",
}

# recipe name -> Recipe subclass, as "module:Class" or the class. Multigrain and DINO add
# 'multigrain' and 'dino' here with their modules (pretrain/zoo/multigrain.py, pretrain/zoo/dino.py).
RECIPES: dict[str, str | type] = {
    "supervised": "pretrain.zoo.supervised:SupervisedRecipe",
    "dino": "pretrain.zoo.dino:DINORecipe",
    "multigrain": "pretrain.zoo.multigrain:MultigrainRecipe",
}


def import_object(target: str | Callable, what: str):
    """A callable from the table: itself, or ``module:attribute`` imported now."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{what} ({target}) is not available: {type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class RunInfo:
    """What a recipe may need to know about the run."""

    num_classes: int
    classes: tuple[str, ...]
    dataset_size: int
    image_hw: tuple[int, int]
    batch_size: int
    steps: int
    steps_per_epoch: int
    seed: int


def build_model(model_cfg: dict, num_classes: int | None):
    """``model=dict(family=..., arch=..., num_classes=..., **kwargs)`` -> the family's nn.Cell."""
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("family", "arch", "num_classes")}
    family = model_cfg.get("family")
    if family not in FACTORIES:
        raise ConfigError(f"model.family {family!r} is not one of {sorted(FACTORIES)}")
    factory = import_object(FACTORIES[family], f"model factory of family {family!r}")
    try:
        return factory(model_cfg.get("arch"), num_classes, **kwargs)
    except (KeyError, ValueError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ConfigError(f"model {family}/{model_cfg.get('arch')!r}: {message}") from None


def get_recipe(name: str) -> type:
    if name not in RECIPES:
        raise ConfigError(f"recipe {name!r} is not one of {sorted(RECIPES)}")
    return import_object(RECIPES[name], f"recipe {name!r}")


class Recipe:
    """Base class of a training objective (see the package docstring for the contract)."""

    name = ""

    def __init__(self, cfg: dict, run: RunInfo):
        self.cfg, self.run = cfg, run
        self.cells: dict = {}
        self.view_maker = ViewMaker(cfg["data"]["views"])

    @property
    def num_views(self) -> int:
        return self.view_maker.num_views

    def build(self) -> dict:
        raise NotImplementedError

    def trainable_params(self) -> list:
        return self.cells["model"].trainable_params()

    def make_views(self, image: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        return self.view_maker(image, rng)

    def prepare_batch(self, views: list[np.ndarray], labels: np.ndarray,
                      rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return views, [labels]

    def loss(self, views: tuple, targets: tuple) -> tuple:
        raise NotImplementedError

    def metrics(self, loss: float, aux: list[np.ndarray], labels: np.ndarray, targets: list[np.ndarray]) -> dict:
        return {}

    def after_step(self, step: int, aux: tuple) -> None:
        return None

    def exports(self) -> dict:
        return {}
