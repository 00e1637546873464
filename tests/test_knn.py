"""DINO's k-NN protocol (benchmarks/models/knn.py): the weighted vote on hand-made features, the
bank (keyed by dataset index: rebuilt, never appended), the frozen model, and a real run of the
k-NN classification configs through benchmarks/run.py."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks import results
from benchmarks.datasets.scene_classification import generate_scene_dataset
from benchmarks.run import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "benchmarks" / "classification"
NO_WORKERS = ["train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
              "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"]


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def _cosine_bank(cosines: list[float]) -> torch.Tensor:
    """Unit vectors in 2-D whose cosine with the query (1, 0) are the given values."""
    return torch.tensor([[c, math.sqrt(1 - c * c)] for c in cosines], dtype=torch.float32)


# ---- the vote ------------------------------------------------------------------------------
def test_weighted_vote_beats_the_majority_at_t_0_07():
    from benchmarks.models.knn import knn_vote

    query = torch.tensor([[1.0, 0.0]])
    bank = _cosine_bank([0.9, 0.5, 0.45, -0.2])  # one close class-0 image, two farther class-1 ones
    labels = torch.tensor([0, 1, 1, 2])
    scores = knn_vote(query, bank, labels, num_classes=3, k=3, temperature=0.07)
    w = [math.exp(c / 0.07) for c in (0.9, 0.5, 0.45)]  # the fourth image is not among the 3 nearest
    expected = torch.tensor([[w[0], w[1] + w[2], 0.0]]) / sum(w)
    torch.testing.assert_close(scores, expected)
    assert scores.argmax().item() == 0
    # A hot vote is nearly a plain majority of the k nearest: class 1 wins 2 to 1.
    hot = knn_vote(query, bank, labels, num_classes=3, k=3, temperature=100.0)
    assert hot.argmax().item() == 1 and hot[0, 1].item() == pytest.approx(2 / 3, abs=0.01)
    # k larger than the bank: every image votes, class 2 too.
    everyone = knn_vote(query, bank, labels, num_classes=3, k=20, temperature=0.07)
    assert everyone[0, 2] > 0 and everyone.sum().item() == pytest.approx(1.0)


# ---- the bank ------------------------------------------------------------------------------
def test_bank_rows_are_keyed_by_dataset_index():
    from benchmarks.models.knn import KNNHead

    head = KNNHead(num_classes=3, in_channels=2, k=1)
    head.memorise(torch.tensor([[3.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]), torch.tensor([4, 1]))
    assert head.size == 2 and head.bank.shape[0] >= 5  # rows grow to the largest index seen
    torch.testing.assert_close(head.bank[4], torch.tensor([1.0, 0.0]))  # stored L2-normalised
    # A second epoch writes the same rows again: replaced, not appended.
    head.memorise(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([2, 0]), torch.tensor([4, 1]))
    assert head.size == 2
    assert head.bank_labels[4].item() == 2 and head.bank_labels[1].item() == 0
    assert head.scores(_unit([0.1, 1.0])).argmax().item() == 2  # nearest is now row 4, class 2
    assert head.state_dict() == {}  # non-persistent: never in a checkpoint


def test_bank_without_in_channels_takes_the_first_width_and_grows():
    from benchmarks.models.knn import KNNHead

    head = KNNHead(num_classes=2)
    head.memorise(torch.ones(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]))
    head.memorise(torch.ones(2, 3), torch.tensor([1, 0]), torch.tensor([9, 5]))  # rows kept while growing
    assert head.filled.nonzero().squeeze(1).tolist() == [0, 1, 5, 9]
    assert head.bank_labels[[0, 1, 5, 9]].tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="the bank holds 3"):
        head.memorise(torch.ones(1, 4), torch.tensor([0]), torch.tensor([2]))


def test_bank_refuses_what_it_cannot_vote_on():
    from benchmarks.models.knn import KNNHead

    head = KNNHead(num_classes=3, in_channels=2)
    with pytest.raises(RuntimeError, match="bank is empty"):
        head.scores(_unit([1.0, 0.0]))
    with pytest.raises(ValueError, match="in_channels=2"):
        head.memorise(torch.ones(1, 5), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="pooling neck"):
        head.memorise(torch.ones(1, 2, 3, 3), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        head.memorise(torch.ones(1, 2), torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="temperature"):
        KNNHead(num_classes=3, temperature=0.0)


# ---- the frozen model ----------------------------------------------------------------------
class _NoOptimizer:
    """Any use of the optimizer wrapper fails the test: train_step must never step it."""

    def __getattr__(self, name):
        raise AssertionError(f"train_step used optim_wrapper.{name}")


def _knn_model(num_classes: int = 3):
    """A KNNClassifier on a small mmpretrain ResNet (BatchNorm: train mode would move its statistics)."""
    from mmengine.registry import DefaultScope

    import benchmarks.models.knn  # noqa: F401  registers KNNClassifier and KNNHead
    from mmpretrain.registry import MODELS

    cfg = dict(type="KNNClassifier", backbone=dict(type="ResNet", depth=18, out_indices=(3,)),
               neck=dict(type="GlobalAveragePooling"),
               head=dict(type="KNNHead", num_classes=num_classes, in_channels=512, k=2, temperature=0.07),
               data_preprocessor=dict(type="ClsDataPreprocessor", mean=[127.5] * 3, std=[64.0] * 3))
    with DefaultScope.overwrite_default_scope("mmpretrain"):  # an mmseg run may have left its scope
        return MODELS.build(cfg)


def _batch(indices: list[int], labels: list[int] | None, seed: int = 0) -> dict:
    from mmpretrain.structures import DataSample

    generator = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=generator) for _ in indices]
    samples = []
    for i, index in enumerate(indices):
        sample = DataSample(metainfo={"sample_idx": index})
        samples.append(sample.set_gt_label(labels[i]) if labels is not None else sample)
    return {"inputs": images, "data_samples": samples}


def test_train_step_memorises_without_gradients_or_optimizer_steps():
    torch.manual_seed(0)
    model = _knn_model()
    model.train()  # what the Runner does before each training iteration
    assert not model.backbone.training and not model.neck.training and model.head.training
    assert not any(p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}  # weights and BN statistics
    log = model.train_step(_batch([0, 1, 2], [0, 1, 2]), optim_wrapper=_NoOptimizer())
    assert log == {"bank_size": torch.tensor(3.0)}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert all(p.grad is None for p in model.parameters())
    # The same images again (a second epoch): the same bank, not a longer one.
    bank = model.head.bank[:3].clone()
    model.train_step(_batch([2, 0, 1], [2, 0, 1]), optim_wrapper=_NoOptimizer())
    assert model.head.size == 3 and not torch.allclose(model.head.bank[:3], bank)  # rows rewritten
    model.train_step(_batch([0, 1, 2], [0, 1, 2]), optim_wrapper=_NoOptimizer())
    torch.testing.assert_close(model.head.bank[:3], bank)

    model.eval()
    with torch.no_grad():
        (pred,) = model.val_step(_batch([0], None))  # the first training image, as a test image
    assert pred.pred_label.item() == 0 and pred.pred_score.sum().item() == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="no loss"):
        model.loss(torch.zeros(1, 3, 32, 32), [])


def test_a_model_without_the_knn_head_is_refused():
    from mmengine.registry import DefaultScope

    import benchmarks.models.knn  # noqa: F401
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope("mmpretrain"), pytest.raises(TypeError, match="KNNHead"):
        MODELS.build(dict(type="KNNClassifier", backbone=dict(type="ResNet", depth=18),
                          head=dict(type="LinearClsHead", num_classes=3, in_channels=512)))


# ---- through the runner --------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scene")
    for name in ("nwpu_resisc45", "aid"):
        generate_scene_dataset(name, root / name, per_class=3, size=32)
    return root


def _val_lines(work_dir: Path) -> list[str]:
    log = next(work_dir.glob("*/*.log")).read_text()
    return re.findall(r"Iter\(val\) \[\d+/\d+\]\s+(accuracy/top1: \S+\s+accuracy/top5: \S+)", log)


def test_knn_run_on_nwpu_writes_a_row(scene_data, tmp_path):
    """Random weights (--checkpoint none) and the default tiny RingMoE: the machinery, not the score."""
    args = ["--task", "classification", "--config", str(CONFIGS / "knn_ringmoe_tiny_nwpu.py"),
            "--checkpoint", "none", "--work-dir", str(tmp_path / "wd"), "--data-root", str(scene_data),
            "--results", str(tmp_path / "r.csv"), "--cfg-options", *NO_WORKERS]
    assert main(args) == 0
    (row,) = results.read_rows(tmp_path / "r.csv")
    assert (row["task"], row["dataset"], row["protocol"], row["backbone"]) == (
        "classification", "nwpu_resisc45_train10%", "knn", "ringmoe-random-init")
    assert row["primary_metric"] == "accuracy/top1" and math.isfinite(float(row["primary_value"]))
    assert "accuracy/top5" in json.loads(row["metrics_json"])
    cov = json.loads((tmp_path / "wd" / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["head_new"] == 0  # the bank is no parameter
    assert all(k.startswith("backbone.") for k in cov["new"])
    log = next((tmp_path / "wd").glob("*/*.log")).read_text()
    assert "k-NN: 45 training features of 256 channels in the bank, k=20, T=0.07" in log  # 1 per class
    assert len(_val_lines(tmp_path / "wd")) == 1
    assert not list((tmp_path / "wd").glob("*.pth"))  # nothing to checkpoint


def test_a_second_epoch_rebuilds_the_bank(scene_data, tmp_path):
    """AID, two epochs, a validation after each: the same bank, so the same votes."""
    args = ["--task", "classification", "--config", str(CONFIGS / "knn_ringmoe_tiny_aid.py"),
            "--checkpoint", "none", "--work-dir", str(tmp_path / "wd"), "--data-root", str(scene_data),
            "--results", str(tmp_path / "r.csv"), "--cfg-options", *NO_WORKERS, "train_cfg.max_epochs=2",
            "train_ratio=0.5"]
    assert main(args) == 0
    (row,) = results.read_rows(tmp_path / "r.csv")
    assert row["dataset"] == "aid_train50%" and row["protocol"] == "knn"
    first, second = _val_lines(tmp_path / "wd")
    assert first == second  # an appended bank (each image twice) would change the 20 neighbours
    log = next((tmp_path / "wd").glob("*/*.log")).read_text()
    assert log.count("k-NN: 60 training features") == 1  # 2 of 3 per class; the size never changed
    assert re.findall(r"bank_size: (\S+)", log)[-1] == "60.0000"


def test_knn_of_a_converted_single_model_checkpoint(scene_data, tmp_path):
    """knn_converted_nwpu.py on a mindcv ResNet-18 (ms2torch --family, the seed-zoo path): the
    checkpoint's backbone and pooling, loaded with the coverage check, vote over 512-d features."""
    import mindspore as ms
    from mindcv.models import create_model

    from converters.ms2torch import main as convert_main

    ms.set_seed(0)
    ms.save_checkpoint(create_model("resnet18", num_classes=10), str(tmp_path / "resnet18.ckpt"))
    pth = tmp_path / "resnet18.pth"
    assert convert_main([str(tmp_path / "resnet18.ckpt"), "-o", str(pth), "--family", "resnet:resnet18"]) == 0
    args = ["--task", "classification", "--config", str(CONFIGS / "knn_converted_nwpu.py"), "--checkpoint", str(pth),
            "--work-dir", str(tmp_path / "wd"), "--data-root", str(scene_data), "--results", str(tmp_path / "r.csv"),
            "--cfg-options", *NO_WORKERS]
    assert main(args) == 0
    (row,) = results.read_rows(tmp_path / "r.csv")
    assert (row["protocol"], row["backbone"]) == ("knn", "resnet18") and math.isfinite(float(row["primary_value"]))
    cov = json.loads((tmp_path / "wd" / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["backbone_mapped"] > 0 and cov["summary"]["backbone_new"] == 0
    log = next((tmp_path / "wd").glob("*/*.log")).read_text()
    assert "k-NN: 45 training features of 512 channels in the bank" in log
