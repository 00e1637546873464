"""The seed-zoo training engine: one MindSpore trainer for gMLP, BiT, Multigrain and DINO.

    python pretrain/train.py --config configs/pretrain/zoo/gmlp_ti_demo.py     # dispatched here
    python -m pretrain.zoo.train --config configs/pretrain/zoo/bit_hyperrule_demo.py --resume

A config with a top-level ``recipe`` key is a zoo config (configs/pretrain/zoo/_base_.py lists
every key). The engine (``pretrain/zoo/engine.py``) reads a folder-per-class image root with
``mindspore.dataset.ImageFolderDataset`` (or generates the synthetic NWPU-RESISC45 of
``benchmarks/datasets/scene_classification.py`` when ``data.root`` is None), turns each sample
into its views, builds the optimizer and schedule, keeps an EMA of the weights if asked, and
writes log.jsonl, loss.png and atomic checkpoints that ``--resume`` continues exactly.

Layers, each importing only the ones above it:

    transforms.py  per-sample view pipelines (crops, flip, RandAugment, colour ops, normalise)
    batch.py       batch ops in numpy: label smoothing, mixup, cutmix
    schedules.py   cosine with linear warm-up; BiT-HyperRule (schedule, mixup, resolution by data size)
    data.py        the ImageFolderDataset stream: seeded order, per-sample views, batches
    recipes.py     the recipe interface, the recipe and model factory tables
    supervised.py  the supervised recipe (soft-target cross-entropy, mixup/cutmix)
    engine.py      optimizer, EMA, checkpoints, resume, the training loop, log and plot
    train.py       the command line

The recipe interface
--------------------
A recipe is one training objective, chosen by the config's ``recipe`` key from
``recipes.RECIPES`` (name -> class or ``"module:Class"``, imported on first use). Today:
``'supervised'`` (gMLP, BiT; ``supervised.py``). Multigrain and DINO add ``'multigrain'`` and ``'dino'`` entries
with their own modules; the engine needs no change. A recipe subclasses ``recipes.Recipe``:

    Recipe(cfg: dict, run: RunInfo)
        cfg is the whole resolved config; run holds num_classes, classes, dataset_size,
        image_hw, batch_size, steps, steps_per_epoch, seed.
    build(self) -> dict[str, nn.Cell]
        Builds the networks, ``'model'`` first: the network whose weights are exported, EMA'd
        and converted. ``recipes.build_model(cfg["model"], num_classes)`` makes one from
        ``model=dict(family=..., arch=..., num_classes=..., **factory kwargs)`` through the
        lazily imported factory table ``recipes.FACTORIES`` (gmlp -> pretrain.models.gmlp:build_gmlp,
        multigrain -> pretrain.models.multigrain:build_multigrain, bit -> pretrain.models.bit:build_bit,
        dino -> pretrain.models.dino:build_dino). Other cells (a DINO teacher, heads) are saved in
        every checkpoint too, so their parameter names must not collide with the model's (give
        them a prefix, e.g. ``teacher.update_parameters_name("teacher.")``).
    trainable_params(self) -> list[ms.Parameter]
        What the optimizer updates (default: the model's trainable parameters).
    make_views(self, image: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]
        One decoded sample (HWC uint8 RGB) -> its views (CHW float32), drawing every random
        choice from ``rng`` (seeded per sample, so any worker and any resumed run gives the same
        views). Default: the view groups of ``data.views`` (transforms.ViewMaker): one crop for
        supervised, m repeats for Multigrain, 2 global + N local crops for DINO.
    prepare_batch(self, views: list[np.ndarray], labels: np.ndarray, rng: np.random.Generator)
            -> tuple[list[np.ndarray], list[np.ndarray]]
        Batch ops in numpy (views[i] is [B, C, H, W]): mixup/cutmix, soft targets, instance
        ids. Returns (views, targets) as fed to ``loss``. Default: (views, [labels]).
    loss(self, views: tuple[ms.Tensor, ...], targets: tuple[ms.Tensor, ...])
            -> tuple[ms.Tensor, tuple[ms.Tensor, ...]]
        The scalar loss and auxiliary outputs, in MindSpore ops. The engine differentiates it
        with ``ms.value_and_grad`` with respect to ``trainable_params()`` (only the loss carries
        gradient) and compiles it with ``ms.jit`` when ``train.mode='graph'``.
    metrics(self, loss: float, aux: list[np.ndarray], labels: np.ndarray, targets: list[np.ndarray])
            -> dict
        Fields added to a log.jsonl record, e.g. ``{"losses": {"ce": ...}, "top1": ...}``.
    after_step(self, step: int, aux: tuple[ms.Tensor, ...]) -> None
        Called after each optimizer update (``step`` updates done): an EMA teacher, DINO's
        center. State it keeps must live in Parameters of the cells ``build`` returned, so that
        checkpoints hold it and resume restores it.
    exports(self) -> dict[str, list[tuple[str, ms.Parameter]]]
        Extra weight files written beside each checkpoint: suffix -> (name, parameter) pairs,
        saved as ``<prefix>-<suffix>.ckpt`` (e.g. DINO's teacher backbone under its own names).

The engine's own EMA (``ema.decay``) is separate: the shadow copies of every model parameter
(BN statistics included, as mindcv does) are named ``ema.<name>`` in the step checkpoints
(converters/mindcv.py drops them) and written as ``<prefix>-ema.ckpt`` under the model's own
names, so that file converts exactly like the live weights.
"""
