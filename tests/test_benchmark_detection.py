"""benchmarks/run.py on the detection task: short real runs of each config, and the task's hooks."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import results
from benchmarks.datasets.dior import generate_dior
from benchmarks.run import main
from benchmarks.tasks import get_task
from benchmarks.tasks.detection import fit_det_heads, prepare_detection

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "benchmarks" / "detection"
NO_WORKERS = ["train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
              "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"]


def short(iters: int) -> list[str]:
    """A few iterations, no worker processes: the whole pipeline, as fast as it goes on a CPU."""
    return ["--cfg-options", f"train_cfg.max_iters={iters}", *NO_WORKERS]


@pytest.fixture(scope="module")
def small_dior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dior(tmp_path_factory.mktemp("data") / "dior", num_train=4, num_val=1, num_test=2,
                         size=128, seed=1)


def _run(tmp: Path, checkpoint: Path, *args: str) -> dict:
    argv = ["--task", "detection", "--checkpoint", str(checkpoint), "--work-dir", str(tmp / "wd"),
            "--results", str(tmp / "results.csv"), "--seed", "3", *args]
    assert main(argv) == 0
    (row,) = results.read_rows(tmp / "results.csv")
    return {"row": row, "metrics": json.loads(row["metrics_json"]), "work_dir": tmp / "wd",
            "coverage": json.loads((tmp / "wd" / "coverage.json").read_text())}


def _assert_clean_coverage(cov: dict, heads: tuple[str, ...]) -> None:
    assert cov["unexplained"] == [] and cov["summary"]["unexplained"] == 0
    assert cov["summary"]["backbone_mapped"] > 0
    new_heads = [k for k in cov["new"] if not k.startswith("backbone.")]
    assert {k.split(".")[0] for k in new_heads} == set(heads)
    assert all("downstream head" in cov["new"][k] for k in new_heads)
    assert not any(k.startswith(heads) for k in cov["mapped"])


@pytest.fixture(scope="module")
def faster_rcnn_dior(tiny_converted, small_dior, tmp_path_factory) -> dict:
    return _run(tmp_path_factory.mktemp("frcnn"), tiny_converted, "--data-root", str(small_dior), *short(2))


def test_faster_rcnn_dior_row_coverage_and_config(faster_rcnn_dior, tiny_converted):
    row, metrics = faster_rcnn_dior["row"], faster_rcnn_dior["metrics"]
    assert (row["task"], row["dataset"], row["modality"], row["status"]) == ("detection", "dior", "optical", "ok")
    assert row["primary_metric"] == "pascal_voc/AP50" and math.isfinite(float(row["primary_value"]))
    assert metrics["pascal_voc/AP50"] == float(row["primary_value"])
    assert {"pascal_voc/mAP", "pascal_voc/AP75", "pascal_voc/AP95"} <= set(metrics)  # mAP over 0.50:0.95
    assert row["checkpoint_sha256"] == results.sha256_file(tiny_converted)
    assert set(json.loads(row["versions_json"])) == {"torch", "mmengine", "mmcv", "mmdet", "numpy"}
    cov = faster_rcnn_dior["coverage"]
    _assert_clean_coverage(cov, ("neck", "rpn_head", "roi_head"))
    assert "backbone.patch_embed.optical.proj.weight" in cov["mapped"]
    from mmengine.config import Config

    dumped = Config.fromfile(str(faster_rcnn_dior["work_dir"] / "faster_rcnn_ringmoe_tiny_dior.py"))
    assert dumped.model.backbone.type == "RingMoE" and dumped.model.backbone.embed_dim == 32  # from the meta
    assert dumped.model.neck.in_channels == [32, 64, 128, 256]  # fit to the stage widths


def test_hrsid_demo_uses_the_sar_l2_modality(tiny_converted, tmp_path):
    """No --data-root: the HRSID config gets generated HRSID data, sar_l2 weights and mean/std."""
    run = _run(tmp_path, tiny_converted, "--config", str(CONFIGS / "faster_rcnn_ringmoe_tiny_hrsid.py"), *short(2))
    row, metrics = run["row"], run["metrics"]
    assert (row["dataset"], row["modality"], row["primary_metric"]) == ("hrsid", "sar_l2", "coco/bbox_mAP")
    assert math.isfinite(float(row["primary_value"])) and "coco/bbox_mAP_50" in metrics
    cov = run["coverage"]
    _assert_clean_coverage(cov, ("neck", "rpn_head", "roi_head"))
    assert "backbone.patch_embed.sar_l2.proj.weight" in cov["mapped"]
    assert not any(".optical." in k for k in cov["mapped"])
    assert any(reason.startswith("another modality (optical)") for reason in cov["dropped"].values())

    from mmengine.config import Config

    cfg = Config.fromfile(str(run["work_dir"] / "faster_rcnn_ringmoe_tiny_hrsid.py"))
    assert cfg.model.data_preprocessor.mean == [127.5] * 3  # sar_l2: 0.5 x 255
    assert cfg.model.data_preprocessor.std == [63.75] * 3  # sar_l2: 0.25 x 255
    hrsid_root = tmp_path / "data" / "hrsid"
    assert cfg.train_dataloader.dataset.data_root == str(hrsid_root.resolve())
    assert cfg.val_evaluator.ann_file == str(hrsid_root.resolve() / "annotations" / "test2017.json")


def test_retinanet_dior_runs(tiny_converted, small_dior, tmp_path):
    run = _run(tmp_path, tiny_converted, "--config", str(CONFIGS / "retinanet_ringmoe_tiny_dior.py"),
               "--data-root", str(small_dior), *short(1))
    assert run["row"]["primary_metric"] == "pascal_voc/AP50" and math.isfinite(float(run["row"]["primary_value"]))
    _assert_clean_coverage(run["coverage"], ("neck", "bbox_head"))
    assert not any(k.startswith("backbone.out_norms.0.") for k in run["coverage"]["new"])  # stages 2-4 only


# ---- the task's hooks, without training ------------------------------------------------------
def _config(name: str, data_root: Path):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / name))
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = str(data_root)
    return cfg


def test_spec_and_fit_heads():
    spec = get_task("detection")
    assert (spec.dataset, spec.metric, spec.package) == ("dior", "pascal_voc/AP50", "mmdet")
    assert (REPO / spec.config).is_file()
    cfg = _config("retinanet_ringmoe_tiny_dior.py", Path("data/dior"))
    fit_det_heads(cfg, [64, 128, 256])
    assert cfg.model.neck.in_channels == [64, 128, 256]


def test_prepare_leaves_real_data_and_resolves_the_coco_ann_file(tmp_path):
    real = tmp_path / "HRSID_JPG"  # no generator marker: treated as real data
    (real / "annotations").mkdir(parents=True)
    cfg = _config("faster_rcnn_ringmoe_tiny_hrsid.py", real)
    prepare_detection(cfg, real, tmp_path / "wd")
    assert cfg.train_dataloader.dataset.data_root == str(real)
    assert cfg.val_evaluator.ann_file == str(real / "annotations" / "test2017.json")
    assert not (tmp_path / "hrsid").exists()  # nothing generated


def test_demo_data_is_the_configs_dataset(tmp_path):
    """Without --data-root each config gets the demo of its own dataset_name, beside the others."""
    demo = get_task("detection").demo_data
    hrsid_root = demo(tmp_path, _config("faster_rcnn_ringmoe_tiny_hrsid.py", Path("unused")))
    assert hrsid_root == tmp_path / "hrsid" and (hrsid_root / "annotations" / "train2017.json").is_file()
    cfg = _config("faster_rcnn_ringmoe_tiny_dior.py", Path("unused"))
    cfg.dataset_name = "dior-r"  # a dataset this task has no generator for
    with pytest.raises(ValueError, match="no demo data for dataset 'dior-r'"):
        demo(tmp_path, cfg)
