"""The synthetic DOTA / DIOR-R / HRSC2016 generator: real layouts that mmrotate's readers parse, right boxes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import benchmarks  # noqa: F401  compat shims before mmrotate
from benchmarks.datasets import rotated
from benchmarks.datasets.rotated import (DIOR_CLASSES, DOTA_CLASSES, MARKER_NAME, RotatedObject,
                                         dior_ids, generate_rotated, hrsc_ids, synthesize_image)

SIZE = 128
NUM_TRAIN, NUM_TEST = 4, 2
LOAD = [dict(type="mmdet.LoadImageFromFile"),
        dict(type="mmdet.LoadAnnotations", with_bbox=True, box_type="qbox"),
        dict(type="ConvertBoxType", box_type_mapping=dict(gt_bboxes="rbox"))]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_rotated(tmp_path_factory.mktemp("data") / "rot", num_train=NUM_TRAIN,
                            num_test=NUM_TEST, size=SIZE, seed=5)


@pytest.fixture(scope="module")
def mmrotate_scope():
    from mmengine.registry import init_default_scope

    import benchmarks.datasets.rotated_loaders  # noqa: F401  registers DOTATxtDataset
    import mmrotate.datasets  # noqa: F401
    import mmrotate.structures  # noqa: F401

    init_default_scope("mmrotate")


def expected(fmt: str, split: str, count: int) -> list[list[RotatedObject]]:
    return [synthesize_image(5, fmt, split, i, SIZE)[1] for i in range(count)]


def assert_same_boxes(rboxes: np.ndarray, objects: list[RotatedObject]) -> None:
    """mmrotate's rboxes (le90 after qbox->rbox) describe the generated rectangles."""
    assert len(rboxes) == len(objects)
    for (cx, cy, w, h, a), obj in zip(rboxes, objects):
        assert (cx, cy) == pytest.approx((obj.cx, obj.cy), abs=0.15)
        assert sorted((w, h)) == pytest.approx(sorted((obj.w, obj.h)), abs=0.2)
        long_angle = a if w >= h else a + math.pi / 2  # the angle of the long side, mod pi
        diff = (long_angle - obj.angle + math.pi / 2) % math.pi - math.pi / 2
        assert abs(diff) < 0.01


def test_layouts(root: Path) -> None:
    for split, count in (("train", NUM_TRAIN), ("val", NUM_TEST)):
        images = sorted(p.stem for p in (root / split / "images").glob("*.png"))
        labels = sorted(p.stem for p in (root / split / "labelTxt").glob("*.txt"))
        assert images == labels and len(images) == count
    ids = dior_ids(NUM_TRAIN, NUM_TEST)
    assert (ids["train"], ids["val"], ids["test"]) == (["00001", "00002", "00003"], ["00004"], ["11726", "11727"])
    for split, folder in (("train", "JPEGImages-trainval"), ("val", "JPEGImages-trainval"), ("test", "JPEGImages-test")):
        assert (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split() == ids[split]
        for name in ids[split]:
            assert (root / folder / f"{name}.jpg").is_file()
            assert (root / "Annotations" / "Oriented Bounding Boxes" / f"{name}.xml").is_file()
    for split, names in hrsc_ids(NUM_TRAIN, NUM_TEST).items():
        assert (root / "ImageSets" / f"{split}.txt").read_text().split() == names
        for name in names:
            with Image.open(root / "FullDataSet" / "AllImages" / f"{name}.bmp") as image:
                assert image.format == "BMP" and image.size == (SIZE, SIZE) and image.mode == "RGB"
            assert (root / "FullDataSet" / "Annotations" / f"{name}.xml").is_file()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_dota_txt_read_by_dotatxtdataset(root: Path, mmrotate_scope) -> None:
    from benchmarks.datasets.rotated_loaders import DOTATxtDataset

    first = (root / "train" / "labelTxt" / "P0000.txt").read_text().splitlines()
    assert first[:2] == ["imagesource:GoogleEarth", "gsd:0.5"]  # raw DOTA v1.0 header lines
    ds = DOTATxtDataset(data_root=str(root), ann_file="train/labelTxt/", data_prefix=dict(img_path="train/images/"),
                        pipeline=LOAD)
    assert len(ds) == NUM_TRAIN and ds.metainfo["classes"][0] == "plane"
    for i, objects in enumerate(expected("dota", "train", NUM_TRAIN)):
        info = ds.get_data_info(i)
        assert info["img_id"] == f"P{i:04d}" and (info["height"], info["width"]) == (SIZE, SIZE)
        labels = [ds.metainfo["classes"][inst["bbox_label"]] for inst in info["instances"]]
        assert labels == [DOTA_CLASSES[o.label] for o in objects]
        sample = ds[i]
        assert sample["img"].shape == (SIZE, SIZE, 3)
        assert_same_boxes(sample["gt_bboxes"].tensor.numpy(), objects)


def test_mmrotate_dotadataset_fails_on_raw_headers(root: Path, mmrotate_scope) -> None:
    """Why DOTATxtDataset exists: mmrotate's reader takes only header-less split patches."""
    from mmrotate.datasets import DOTADataset

    with pytest.raises(ValueError, match="imagesource"):
        DOTADataset(data_root=str(root), ann_file="train/labelTxt/", data_prefix=dict(img_path="train/images/"))


def test_parse_dota_txt_rejects_malformed_lines() -> None:
    from benchmarks.datasets.rotated_loaders import parse_dota_txt

    text = "imagesource:GoogleEarth\ngsd:null\n1 2 3 4 5 6 7 8 plane 1\n\n"
    assert parse_dota_txt(text) == [([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], "plane", 1)]
    with pytest.raises(ValueError, match="line 2"):
        parse_dota_txt("1 2 3 4 5 6 7 8 plane 0\n1 2 3 4 5 6 7 8 plane\n")


def test_dior_read_by_mmrotate_diordataset(root: Path, mmrotate_scope) -> None:
    from mmrotate.datasets import DIORDataset

    ds = DIORDataset(data_root=str(root), ann_file="ImageSets/Main/test.txt",
                     data_prefix=dict(img_path="JPEGImages-test"), test_mode=True, pipeline=LOAD)
    assert len(ds) == NUM_TEST and len(ds.metainfo["classes"]) == 20
    for i, objects in enumerate(expected("dior", "test", NUM_TEST)):
        sample = ds[i]
        names = [ds.metainfo["classes"][k] for k in sample["gt_bboxes_labels"]]
        assert names == [DIOR_CLASSES[o.label] for o in objects]
        assert_same_boxes(sample["gt_bboxes"].tensor.numpy(), objects)


def test_hrsc_read_by_mmrotate_hrscdataset(root: Path, mmrotate_scope) -> None:
    from mmrotate.datasets import HRSCDataset

    for classwise in (False, True):  # one class 'ship', or the 31-class ids (ours: 'ship', 01)
        ds = HRSCDataset(data_root=str(root), ann_file="ImageSets/trainval.txt",
                         data_prefix=dict(sub_data_root="FullDataSet/"), classwise=classwise, pipeline=LOAD)
        assert len(ds) == NUM_TRAIN
        for i, objects in enumerate(expected("hrsc", "train", NUM_TRAIN)):
            sample = ds[i]
            assert sample["gt_bboxes_labels"].tolist() == [0] * len(objects)
            assert_same_boxes(sample["gt_bboxes"].tensor.numpy(), objects)


def test_objects_are_drawn_where_annotated_in_class_colours(root: Path) -> None:
    """Pixels at each box centre have their class colour: colour alone separates the classes."""
    colours = {}
    for i, objects in enumerate(expected("dota", "train", NUM_TRAIN)):
        image = np.asarray(Image.open(root / "train" / "images" / f"P{i:04d}.png"), float)
        for obj in objects:
            colours.setdefault(obj.label, []).append(image[int(obj.cy), int(obj.cx)])
    means = {k: np.mean(v, axis=0) for k, v in colours.items()}
    assert len(means) >= 2
    for label, samples in colours.items():
        for colour in samples:
            nearest = min(means, key=lambda k: np.linalg.norm(colour - means[k]))
            assert nearest == label


def test_corners_match_mmrotate_rbox2qbox() -> None:
    import torch
    from mmrotate.structures.bbox import rbox2qbox

    obj = RotatedObject(0, 60.0, 40.0, 50.0, 20.0, 0.7)
    ours = obj.corners()
    theirs = rbox2qbox(torch.tensor([[60.0, 40.0, 50.0, 20.0, 0.7]])).numpy().reshape(4, 2)
    assert np.allclose(sorted(map(tuple, ours)), sorted(map(tuple, theirs)), atol=1e-3)  # same points


def test_deterministic_and_seed_dependent(tmp_path: Path, root: Path) -> None:
    again = generate_rotated(tmp_path / "again", num_train=NUM_TRAIN, num_test=NUM_TEST, size=SIZE, seed=5)
    other = generate_rotated(tmp_path / "other", num_train=NUM_TRAIN, num_test=NUM_TEST, size=SIZE, seed=6)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((root / f).read_bytes() != (other / f).read_bytes() for f in files if f.name != MARKER_NAME)


def test_marker_reuse_and_replacement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = generate_rotated(tmp_path / "r", formats=["hrsc"], num_train=1, num_test=1, size=SIZE)
    marker = json.loads((path / MARKER_NAME).read_text())
    assert marker["formats"] == ["hrsc"] and marker["generator_version"] == rotated.GENERATOR_VERSION
    assert not (path / "train").exists() and (path / "FullDataSet").is_dir()

    def must_not_write(*_args: object) -> None:
        raise AssertionError("a complete dataset was regenerated")

    with monkeypatch.context() as patch:
        patch.setitem(rotated._WRITERS, "hrsc", must_not_write)
        assert generate_rotated(path, formats=["hrsc"], num_train=1, num_test=1, size=SIZE) == path
    generate_rotated(path, formats=["dota"], num_train=2, num_test=1, size=SIZE)
    assert not (path / "FullDataSet").exists() and len(list((path / "train" / "images").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_refuses_foreign_data_and_bad_arguments(tmp_path: Path) -> None:
    real = tmp_path / "DOTA"
    (real / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_rotated(real, num_train=1, num_test=1, size=SIZE)
    assert (real / "train").is_dir()
    for kwargs in (dict(formats=["coco"]), dict(num_train=0), dict(size=32), dict(seed=-1)):
        with pytest.raises(ValueError):
            generate_rotated(tmp_path / "x", **kwargs)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rotated.main(["--root", str(tmp_path / "c"), "--formats", "dota", "--num-train", "1",
                         "--num-test", "1", "--size", str(SIZE)]) == 0
    assert (tmp_path / "c" / MARKER_NAME).is_file() and "ready at" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rotated.main(["--help"])
    assert "labelTxt" in capsys.readouterr().out
