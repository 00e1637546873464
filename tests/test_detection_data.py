"""The synthetic DIOR and HRSID generators write the real layouts, read by mmdet's own loaders."""
from __future__ import annotations

import json
import multiprocessing
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.datasets import dior, hrsid
from benchmarks.datasets.dior import CLASSES, DEMO_CLASSES, FIRST_TEST_ID, generate_dior
from benchmarks.datasets.hrsid import generate_hrsid

SIZE = 128
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dior_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dior(tmp_path_factory.mktemp("data") / "dior", num_train=6, num_val=2, num_test=3,
                         size=SIZE, seed=5)


@pytest.fixture(scope="module")
def hrsid_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_hrsid(tmp_path_factory.mktemp("data") / "hrsid", num_train=5, num_test=3, size=SIZE, seed=5)


def _mmdet_dataset(cfg: dict):
    import benchmarks  # noqa: F401  compat shims before mmdet
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    return DATASETS.build(cfg)


def _config(name: str):
    from mmengine.config import Config

    return Config.fromfile(str(REPO / "configs/benchmarks/detection/_base_" / name))


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


# ---- DIOR ------------------------------------------------------------------------------------
def test_dior_layout_ids_and_xml(dior_root: Path) -> None:
    assert _ids(dior_root, "train") == ["00001", "00002", "00003", "00004", "00005", "00006"]
    assert _ids(dior_root, "val") == ["00007", "00008"]
    assert _ids(dior_root, "test") == [f"{i:05d}" for i in range(FIRST_TEST_ID, FIRST_TEST_ID + 3)]
    for split, folder in (("train", "JPEGImages-trainval"), ("val", "JPEGImages-trainval"),
                          ("test", "JPEGImages-test")):
        for image_id in _ids(dior_root, split):
            with Image.open(dior_root / folder / f"{image_id}.jpg") as image:
                assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))
            root = ET.parse(dior_root / "Annotations" / f"{image_id}.xml").getroot()
            assert root.findtext("filename") == f"{image_id}.jpg"
            assert (root.findtext("size/width"), root.findtext("size/height")) == (str(SIZE), str(SIZE))
            objects = root.findall("object")
            assert objects, "every demo image has objects"
            for obj in objects:
                assert obj.findtext("name") in DEMO_CLASSES and obj.findtext("difficult") == "0"
                x0, y0, x1, y1 = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
                assert 1 <= x0 < x1 <= SIZE and 1 <= y0 < y1 <= SIZE  # VOC: 1-based, inclusive


def test_dior_boxes_are_tight_around_the_drawn_objects() -> None:
    """Inside each box the object's colour differs from the ground; just outside it is ground."""
    image, objects = dior.synthesize_image(seed=3, image_id="00001", size=256)
    ground = np.median(image.reshape(-1, 3), axis=0)
    assert objects
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        inside = image[y0:y1 + 1, x0:x1 + 1].astype(float)
        assert np.abs(inside - ground).max() > 60  # a drawn object is there
        top, bottom, left, right = max(y0 - 2, 0), min(y1 + 2, 255), max(x0 - 2, 0), min(x1 + 2, 255)
        ring = np.concatenate([image[top, x0:x1 + 1], image[bottom, x0:x1 + 1],
                               image[y0:y1 + 1, left], image[y0:y1 + 1, right]]).astype(float)
        assert np.abs(ring - ground).mean() < 30  # two pixels out: ground (objects never touch)


def test_dior_read_by_mmdet_xml_dataset_with_the_config_classes(dior_root: Path) -> None:
    cfg = _config("dior.py")
    assert tuple(cfg.classes) == CLASSES and len(CLASSES) == 20
    for loader, count in ((cfg.train_dataloader, 6), (cfg.val_dataloader, 3)):
        dataset_cfg = dict(loader.dataset, data_root=str(dior_root),
                           pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True)])
        ds = _mmdet_dataset(dataset_cfg)
        assert len(ds) == count and ds.metainfo["classes"] == CLASSES
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            xml = ET.parse(info["xml_path"]).getroot()
            names = [o.findtext("name") for o in xml.findall("object")]
            assert [CLASSES[inst["bbox_label"]] for inst in info["instances"]] == names
            sample = ds[i]
            assert sample["img"].shape == (SIZE, SIZE, 3)
            first = xml.find("object/bndbox")
            expected = [int(first.findtext(k)) - 1 for k in ("xmin", "ymin", "xmax", "ymax")]
            assert sample["gt_bboxes"].tensor[0].tolist() == expected  # mmdet's VOC minus-one


def test_dior_demo_classes_are_separable_by_colour() -> None:
    """Mean colour inside each box identifies the class on held-out images (nearest class mean)."""
    def features(ids: range) -> tuple[np.ndarray, list[str]]:
        x, y = [], []
        for i in ids:
            image, objects = dior.synthesize_image(seed=0, image_id=f"{i:05d}", size=256)
            for obj in objects:
                x0, y0, x1, y1 = obj["box"]
                x.append(image[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3).mean(0))
                y.append(obj["name"])
        return np.array(x), y

    x, y = features(range(1, 21))
    means = {c: x[[k for k, n in enumerate(y) if n == c]].mean(0) for c in set(y)}
    assert set(means) == set(DEMO_CLASSES)
    xv, yv = features(range(FIRST_TEST_ID, FIRST_TEST_ID + 10))
    pred = [min(means, key=lambda c: np.sum((f - means[c]) ** 2)) for f in xv]
    assert np.mean([p == t for p, t in zip(pred, yv)]) > 0.8  # chance: 0.2


def test_dior_deterministic_seeded_and_idempotent(tmp_path: Path, dior_root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    again = generate_dior(tmp_path / "again", num_train=6, num_val=2, num_test=3, size=SIZE, seed=5)
    other = generate_dior(tmp_path / "other", num_train=6, num_val=2, num_test=3, size=SIZE, seed=6)
    files = sorted(p.relative_to(dior_root) for p in dior_root.rglob("*.*"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.*"))
    assert all((dior_root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((dior_root / f).read_bytes() != (other / f).read_bytes() for f in files if f.suffix == ".xml")

    def must_not_write(*_args: object) -> None:
        raise AssertionError("a complete dataset was regenerated")

    with monkeypatch.context() as patch:
        patch.setattr(dior, "_write_dataset", must_not_write)
        assert generate_dior(again, num_train=6, num_val=2, num_test=3, size=SIZE, seed=5) == again
    (again / "Annotations" / "00001.xml").unlink()  # incomplete: rebuilt
    generate_dior(again, num_train=6, num_val=2, num_test=3, size=SIZE, seed=5)
    assert (again / "Annotations" / "00001.xml").is_file()
    generate_dior(again, num_train=2, num_val=1, num_test=1, size=SIZE, seed=5)  # new parameters replace
    assert json.loads((again / dior.MARKER_NAME).read_text())["num_train"] == 2
    assert len(_ids(again, "train")) == 2 and not (again / "Annotations" / "00008.xml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]  # no staging left


def _generate_same(root: str) -> None:
    generate_dior(root, num_train=3, num_val=1, num_test=1, size=SIZE, seed=3)


def test_concurrent_generators_publish_one_dataset(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_generate_same, args=(str(tmp_path / "d"),)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    assert _ids(tmp_path / "d", "train") == ["00001", "00002", "00003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.parametrize("generate", [generate_dior, generate_hrsid])
def test_refuses_foreign_data_and_bad_arguments(tmp_path: Path, generate) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "precious.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate(real, size=SIZE)
    assert (real / "precious.txt").read_text() == "not ours"
    with pytest.raises(ValueError):
        generate(tmp_path / "x", num_train=0)
    with pytest.raises(ValueError):
        generate(tmp_path / "x", size=16)


# ---- HRSID -----------------------------------------------------------------------------------
def test_hrsid_coco_json_and_images(hrsid_root: Path) -> None:
    for ann_file, count in (("annotations/train2017.json", 5), ("annotations/test2017.json", 3)):
        coco = json.loads((hrsid_root / ann_file).read_text())
        assert coco["categories"] == [{"id": 1, "name": "ship", "supercategory": "ship"}]
        assert len(coco["images"]) == count and coco["annotations"]
        ids = {im["id"] for im in coco["images"]}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            poly = np.array(ann["segmentation"][0]).reshape(-1, 2)
            assert ann["image_id"] in ids and ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert np.allclose([x, y, x + w, y + h], [*poly.min(0), *poly.max(0)], atol=0.01)
            assert 0 < ann["area"] < w * h and 0 <= x and x + w <= SIZE and y + h <= SIZE
        for im in coco["images"]:
            with Image.open(hrsid_root / "JPEGImages" / im["file_name"]) as image:
                assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))
                pixels = np.asarray(image).astype(int)
            assert np.abs(pixels[..., 0] - pixels[..., 2]).max() <= 3  # one band replicated (JPEG noise)


def test_hrsid_ships_are_bright_on_speckled_sea() -> None:
    amplitude, ships = hrsid.synthesize_tile(seed=1, split="train", index=0, size=256)
    assert ships
    centre_values = [amplitude[int(p[:, 1].mean()), int(p[:, 0].mean())] for p in ships]
    assert min(centre_values) > 2 * np.median(amplitude)
    patches = amplitude.reshape(16, 16, 16, 16).swapaxes(1, 2).reshape(256, -1).astype(float)
    darkest = patches[patches.mean(1).argmin()]  # open sea
    assert darkest.std() / darkest.mean() > 0.2  # speckle: a large coefficient of variation, not flat


def test_hrsid_read_by_mmdet_coco_dataset_and_scored_by_coco_metric(hrsid_root: Path) -> None:
    """CocoDataset loads it; CocoMetric on the ground truth itself gives AP 1 (a perfect detector)."""
    import torch
    from mmdet.evaluation import CocoMetric

    cfg = _config("hrsid.py")
    dataset_cfg = dict(cfg.val_dataloader.dataset, data_root=str(hrsid_root),
                       pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True)])
    ds = _mmdet_dataset(dataset_cfg)
    assert len(ds) == 3 and ds.metainfo["classes"] == ("ship",)
    metric = CocoMetric(ann_file=str(hrsid_root / cfg.val_evaluator.ann_file), metric="bbox")
    metric.dataset_meta = ds.metainfo
    for i in range(len(ds)):
        sample = ds[i]
        boxes = sample["gt_bboxes"].tensor
        assert sample["img"].shape == (SIZE, SIZE, 3) and len(boxes)
        pred = dict(bboxes=boxes, scores=torch.ones(len(boxes)), labels=torch.zeros(len(boxes), dtype=torch.long))
        metric.process({}, [dict(img_id=sample["img_id"], ori_shape=(SIZE, SIZE), pred_instances=pred)])
    results = metric.evaluate(len(ds))
    assert results["coco/bbox_mAP"] == pytest.approx(1.0) and results["coco/bbox_mAP_50"] == pytest.approx(1.0)


def test_clis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dior.main(["--root", str(tmp_path / "d"), "--num-train", "1", "--num-val", "1", "--num-test", "1",
                      "--size", str(SIZE)]) == 0
    assert hrsid.main(["--root", str(tmp_path / "h"), "--num-train", "1", "--num-test", "1", "--size", str(SIZE)]) == 0
    assert (tmp_path / "d" / dior.MARKER_NAME).is_file() and (tmp_path / "h" / hrsid.MARKER_NAME).is_file()
    for main in (dior.main, hrsid.main):
        with pytest.raises(SystemExit):
            main(["--help"])
    out = capsys.readouterr().out
    assert "JPEGImages-trainval" in out and "train2017.json" in out
