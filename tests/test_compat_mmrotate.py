"""benchmarks/compat.py's mmrotate shims: mmrotate 1.0.0rc1 imports, mmdet keeps its version, mAP in-process."""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (nothing imported yet), from the repository root."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=180)


def test_import_through_the_shim_leaves_mmdet_and_collections_alone():
    proc = _python(
        "import json, sys, collections, importlib.util\n"
        "import benchmarks\n"
        "importlib.util.find_spec('mmrotate')  # probing for the package must not use up the hook\n"
        "import mmrotate, mmdet\n"
        "import mmrotate.models, mmrotate.datasets, mmrotate.evaluation\n"
        "from mmrotate.models.detectors import RefineSingleStageDetector\n"
        "print(json.dumps({'mmdet': mmdet.__version__, 'mmrotate': mmrotate.__version__,\n"
        "  'sequence_alias': hasattr(collections, 'Sequence'),\n"
        "  'hooks': [type(f).__name__ for f in sys.meta_path if type(f).__module__ == 'benchmarks.compat']}))\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mmdet"] == "3.3.0" and out["mmrotate"] == "1.0.0rc1"
    assert out["sequence_alias"] is False  # only refine_single_stage.py saw the alias
    assert "_MmrotateImports" not in out["hooks"]  # the hook left once every patched module ran


def test_without_the_shim_mmrotate_fails_on_the_mmdet_assert():
    proc = _python("import mmrotate")
    assert proc.returncode != 0
    assert "AssertionError: MMDetection 3.3.0 is incompatible with MMRotate 1.0.0rc1" in proc.stderr


def test_without_the_alias_mmrotate_models_fail_on_collections_sequence():
    """The version shim alone is not enough: mmrotate.models needs collections.Sequence."""
    proc = _python(
        "import sys\n"
        "import benchmarks\n"
        "hook = next(f for f in sys.meta_path if type(f).__name__ == '_MmrotateImports')\n"
        "del hook._pending['mmrotate.models.detectors.refine_single_stage']  # every shim but the alias\n"
        "import mmrotate\n"
        "import mmrotate.models\n")
    assert proc.returncode != 0
    assert "cannot import name 'Sequence' from 'collections'" in proc.stderr


def test_mmrotate_map_runs_in_this_process():
    """DOTAMetric's eval_rbbox_map: spawned workers would die on the mmdet assert and hang."""
    import benchmarks  # noqa: F401
    from mmrotate.evaluation import eval_rbbox_map
    from mmrotate.evaluation.functional import mean_ap

    assert mean_ap.get_context("spawn").Pool.__module__ == "benchmarks.compat"
    # Pools of earlier tests in this process may still be winding down: count only new children.
    before = set(multiprocessing.active_children())
    gt = np.array([[50.0, 50.0, 40.0, 10.0, 0.3], [120.0, 80.0, 30.0, 12.0, -1.0]], np.float32)
    dets = [[np.array([[50.0, 50.0, 40.0, 10.0, 0.3, 0.9],  # a hit
                       [200.0, 200.0, 20.0, 10.0, 0.0, 0.8]], np.float32)]]  # a false positive
    annotations = [dict(bboxes=gt, labels=np.zeros(2, np.int64),
                        bboxes_ignore=np.zeros((0, 5), np.float32), labels_ignore=np.zeros(0, np.int64))]
    mean, results = eval_rbbox_map(dets, annotations, iou_thr=0.5, use_07_metric=False)
    assert results[0]["num_gts"] == 2 and results[0]["recall"][-1] == pytest.approx(0.5)
    assert mean == pytest.approx(0.5)  # precision 1 up to recall 0.5, then nothing
    assert [p for p in multiprocessing.active_children() if p not in before] == []  # no worker pool


def test_registry_builds_ringmoe_in_mmrotate(tiny_converted):
    import torch

    from benchmarks.models import registry

    assert "mmrotate" in registry.REGISTERED
    from mmrotate.registry import MODELS

    backbone = MODELS.build(dict(type="RingMoE", out_indices=(1, 2, 3),
                                 init_cfg=dict(type="Pretrained", checkpoint=str(tiny_converted))))
    backbone.init_weights()
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]
