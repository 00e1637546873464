"""The twin is registered with mmseg, mmdet and mmpretrain, and each can build it from a config."""
from __future__ import annotations

import importlib

import pytest
import torch


@pytest.mark.parametrize("package", ["mmseg", "mmdet", "mmpretrain"])
def test_each_framework_builds_the_backbone(package, tiny_converted):
    from benchmarks.models import registry

    assert package in registry.REGISTERED
    models = importlib.import_module(f"{package}.registry").MODELS
    backbone = models.build(dict(type="RingMoE", modality="msi", out_indices=(1, 3),
                                 init_cfg=dict(type="Pretrained", checkpoint=str(tiny_converted))))
    backbone.init_weights()
    assert backbone.load_report is not None and not backbone.load_report.new.keys() - {
        k for k in backbone.state_dict() if k.startswith("out_norms.")}
    feats = backbone(torch.randn(1, 4, 96, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 12, 12), (1, 256, 3, 3)]
