"""Segmentation and detection on the seed zoo's multi-scale backbones, end to end.

For each family a small MindSpore model (Multigrain's ResNet-18, ``bit_tiny``, a DINO
``dino_vit_demo`` training cell) with every normalisation off its default is saved with
``mindspore.save_checkpoint``, converted with ``ms2torch --family``, and fine-tuned for two
iterations through ``benchmarks.run.main`` with the dense configs (UperNet on Potsdam, Faster
R-CNN on DIOR; the ViT through ``SimpleFeaturePyramid``). Each run must write a row with a finite
metric and a coverage.json in which every backbone entry comes from the checkpoint; the trained
backbone must still be the converted one (two small steps away, frozen parts exactly).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmarks  # noqa: F401  the torchvision shim precedes mmpretrain/mmseg/mmdet
from benchmarks import results
from benchmarks.models.family_loading import read_family_checkpoint
from benchmarks.models.simple_fpn import SimpleFeaturePyramid
from benchmarks.run import main as run_main

REPO = Path(__file__).resolve().parents[1]
SEG = REPO / "configs" / "benchmarks" / "segmentation"
DET = REPO / "configs" / "benchmarks" / "detection"
# family -> (variant converted here, segmentation config, detection config)
FAMILIES = {
    "multigrain": ("multigrain_resnet50", "upernet_multigrain_r50_potsdam.py", "faster_rcnn_multigrain_r50_dior.py"),
    "bit": ("bit_tiny", "upernet_bit_potsdam.py", "faster_rcnn_bit_dior.py"),
    "dino": ("dino_vit_demo", "upernet_vit_sfp_potsdam.py", "faster_rcnn_vit_sfp_dior.py"),
}
# Two iterations, no worker processes; fewer proposals than the demo so that the RoI head is quick.
NO_WORKERS = ["train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
              "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"]
FEWER_PROPOSALS = ["model.train_cfg.rpn_proposal.max_per_img=200", "model.test_cfg.rpn.max_per_img=100"]
# Output widths of each converted variant's backbone with the configs' out_indices.
WIDTHS = {"multigrain": [256, 512, 1024, 2048], "bit": [64, 128, 256, 512], "dino": [64]}
# Two AdamW steps at the demo schedules' warm-up rates (<= 1e-3) move no weight by more than this.
TWO_STEPS = 5e-3


# ---- the converted checkpoints ---------------------------------------------------------------
def _perturb(net, seed: int) -> None:
    """Normalisations, running statistics and token tables away from their initial values, so that
    a backbone left at its own initialisation cannot pass for the converted one."""
    import mindspore as ms

    rng = np.random.RandomState(seed)
    for p in net.get_parameters():
        name, shape = p.name, p.shape
        if name.endswith("gamma"):
            value = 1 + 0.1 * rng.randn(*shape)
        elif name.endswith(("beta", "bias", "moving_mean", "cls_token", "pos_embed")):
            value = 0.1 * rng.randn(*shape)
        elif name.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue  # convolution and dense weights: random already
        p.set_data(ms.Tensor(value.astype(np.float32)))


def _build(family: str, variant: str):
    if family == "multigrain":
        from pretrain.models.multigrain import build_multigrain

        return build_multigrain(variant, num_classes=10)
    if family == "bit":
        from pretrain.models.bit import build_bit

        return build_bit(variant, num_classes=10)
    from pretrain.models.dino import build_dino_pretrainer

    return build_dino_pretrainer(variant)  # student + teacher + heads + centre: a DINO training cell


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """family -> its converted .pth (ms2torch --family FAMILY:VARIANT)."""
    import mindspore as ms

    from converters.ms2torch import main as convert_main

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    root = tmp_path_factory.mktemp("zoo_dense")
    out = {}
    for seed, (family, (variant, _, _)) in enumerate(FAMILIES.items()):
        net = _build(family, variant)
        _perturb(net, seed)
        ms.save_checkpoint(net, str(root / f"{variant}.ckpt"))
        out[family] = root / f"{variant}.pth"
        assert convert_main([str(root / f"{variant}.ckpt"), "-o", str(out[family]),
                             "--family", f"{family}:{variant}"]) == 0
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Small Potsdam and DIOR demo sets (128 px) in their real layouts."""
    from benchmarks.datasets.dior import generate_dior
    from benchmarks.datasets.potsdam import generate_potsdam

    root = tmp_path_factory.mktemp("data")
    return {"segmentation": generate_potsdam(root / "potsdam", num_train=2, num_val=1, size=128, seed=1),
            "detection": generate_dior(root / "dior", num_train=4, num_val=1, num_test=2, size=128, seed=1)}


# ---- end to end ------------------------------------------------------------------------------
def _backbone_entries(checkpoint: Path) -> dict[str, torch.Tensor]:
    state_dict, _ = read_family_checkpoint(checkpoint)
    return {k: v for k, v in state_dict.items() if k.startswith("backbone.")}


def _dumped_config(work_dir: Path, config: str):
    from mmengine.config import Config

    return Config.fromfile(str(work_dir / config))


@pytest.mark.parametrize("task", ["segmentation", "detection"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_dense_run_loads_the_whole_backbone(family, task, converted, data, tmp_path):
    variant, seg_config, det_config = FAMILIES[family]
    config = (SEG / seg_config) if task == "segmentation" else (DET / det_config)
    options = NO_WORKERS + (FEWER_PROPOSALS if task == "detection" else [])
    if (family, task) == ("dino", "segmentation"):  # a pyramid width unlike the ViT's: the sizing below tells them apart
        options.append("model.neck.out_channels=48")
    work_dir, table = tmp_path / "wd", tmp_path / "results.csv"
    assert run_main(["--task", task, "--config", str(config), "--checkpoint", str(converted[family]),
                     "--data-root", str(data[task]), "--work-dir", str(work_dir), "--results", str(table),
                     "--iters", "2", "--cfg-options", *options]) == 0

    (row,) = results.read_rows(table)
    assert (row["task"], row["backbone"], row["status"]) == (task, variant, "ok")
    assert row["primary_metric"] == ("mIoU" if task == "segmentation" else "pascal_voc/AP50")
    assert math.isfinite(float(row["primary_value"]))

    entries = _backbone_entries(converted[family])
    report = json.loads((work_dir / "coverage.json").read_text())
    assert report["unexplained"] == [] and report["summary"]["backbone_new"] == 0
    assert report["mapped"] == {k: k for k in entries}  # all of it, key for key
    assert set(report["dropped"]) == {k for k in read_family_checkpoint(converted[family])[0] if k not in entries}
    heads = [k for k in report["new"] if not k.startswith("backbone.")]
    assert heads and all("downstream head" in report["new"][k] for k in heads)

    # run.py sized the neck and heads from the backbone it probed (the pyramid: from the ViT's width).
    cfg = _dumped_config(work_dir, config.name)
    widths = WIDTHS[family]
    if task == "detection":
        assert list(cfg.model.neck.in_channels) == widths
    elif family == "dino":
        assert cfg.model.backbone.out_type == "featmap" and list(cfg.model.neck.in_channels) == widths
        assert list(cfg.model.decode_head.in_channels) == [48] * 4 and cfg.model.auxiliary_head.in_channels == 48
    else:
        assert list(cfg.model.decode_head.in_channels) == widths and cfg.model.auxiliary_head.in_channels == widths[2]

    # The trained backbone is the converted one, two small optimiser steps on.
    trained = torch.load(work_dir / "iter_2.pth", map_location="cpu", weights_only=False)["state_dict"]
    for key, value in entries.items():
        assert torch.allclose(trained[key].to(value.dtype), value, atol=TWO_STEPS), key
    if task == "detection" and family != "dino":  # stem and first stage frozen (frozen_stages=1)
        stem = "backbone.conv1.weight" if family == "multigrain" else "backbone.stem.conv.weight"
        assert torch.equal(trained[stem], entries[stem])


# ---- the simple feature pyramid ----------------------------------------------------------------
def test_pyramid_strides_and_widths():
    neck = SimpleFeaturePyramid([32, 64], out_channels=16, num_outs=5)  # builds from the last map
    stride16 = torch.randn(2, 64, 8, 12)
    outs = neck((torch.randn(2, 32, 8, 12), stride16))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 32, 48), (2, 16, 16, 24), (2, 16, 8, 12),
                                              (2, 16, 4, 6), (2, 16, 2, 3)]  # strides 4, 8, 16, 32, 64
    # ViTDet's widths before the 1x1 convs: C/4 after two deconvs, C/2 after one, C for the rest.
    assert [lateral[0].in_channels for lateral in neck.lateral] == [16, 32, 64, 64]
    deconvs = [m for m in neck.resample[0] if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(d.kernel_size, d.stride) for d in deconvs] == [((2, 2), (2, 2))] * 2
    assert isinstance(neck.resample[2], torch.nn.Identity) and isinstance(neck.resample[3], torch.nn.MaxPool2d)
    # The stride-32 level is the max-pooled stride-16 map (then its convs): pooling commutes here.
    pooled = torch.nn.functional.max_pool2d(stride16, 2)
    assert torch.equal(neck.lateral[3](pooled), outs[3])
    assert torch.equal(torch.nn.functional.max_pool2d(outs[3], 1, stride=2), outs[4])


def test_pyramid_other_inputs_and_scales():
    patch8 = SimpleFeaturePyramid(48, out_channels=8, scales=(2, 1, 0.5, 0.25), in_index=0)
    outs = patch8([torch.randn(1, 48, 16, 16), torch.randn(1, 7, 1, 1)])  # in_index picks the first map
    assert [tuple(o.shape) for o in outs] == [(1, 8, 32, 32), (1, 8, 16, 16), (1, 8, 8, 8), (1, 8, 4, 4)]
    with pytest.raises(ValueError, match="powers of two"):
        SimpleFeaturePyramid([64], 16, scales=(3, 1))
    with pytest.raises(ValueError, match="fewer than the scales"):
        SimpleFeaturePyramid([64], 16, num_outs=3)
    with pytest.raises(ValueError, match="is odd"):
        SimpleFeaturePyramid([6], 16, scales=(4, 1))


@pytest.mark.parametrize("scope", ["mmseg", "mmdet"])
def test_pyramid_is_registered(scope):
    import importlib

    registry = importlib.import_module(f"{scope}.registry")
    neck = registry.MODELS.build(dict(type="SimpleFeaturePyramid", in_channels=[64], out_channels=16))
    assert isinstance(neck, SimpleFeaturePyramid) and neck.num_outs == 4


def test_segmentation_hook_passes_widths_through_a_neck():
    from mmengine.config import Config

    from benchmarks.tasks.segmentation import fit_seg_heads

    cfg = Config(dict(model=dict(
        neck=dict(type="SimpleFeaturePyramid", in_channels=[1], out_channels=32, num_outs=4),
        decode_head=dict(in_index=[0, 1, 2, 3], in_channels=[1] * 4),
        auxiliary_head=dict(in_index=2, in_channels=1))))
    fit_seg_heads(cfg, [384])
    assert cfg.model.neck.in_channels == [384]
    assert cfg.model.decode_head.in_channels == [32] * 4 and cfg.model.auxiliary_head.in_channels == 32
    plain = Config(dict(model=dict(decode_head=dict(in_index=[0, 3], in_channels=[1, 1]))))
    fit_seg_heads(plain, [8, 16, 32, 64])  # no neck: the backbone's widths, as before
    assert plain.model.decode_head.in_channels == [8, 64]
