"""Synthetic NWPU-RESISC45 and AID: the real folder-per-class layouts, deterministic and learnable."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.datasets import scene_classification as scene
from benchmarks.datasets.scene_classification import (AID_CLASSES, MARKER_NAME, NWPU_CLASSES,
                                                      generate_aid, generate_nwpu_resisc45)

SIZE = 32


@pytest.fixture(scope="module")
def nwpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_nwpu_resisc45(tmp_path_factory.mktemp("data") / "NWPU-RESISC45", per_class=3,
                                  size=SIZE, seed=7)


@pytest.fixture(scope="module")
def aid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_aid(tmp_path_factory.mktemp("data") / "AID", per_class=3, size=SIZE, seed=7)


def class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_real_class_names() -> None:
    assert len(NWPU_CLASSES) == len(set(NWPU_CLASSES)) == 45
    assert len(AID_CLASSES) == len(set(AID_CLASSES)) == 30
    assert {"airplane", "baseball_diamond", "wetland", "thermal_power_station"} <= set(NWPU_CLASSES)
    assert {"Airport", "BareLand", "StorageTanks", "Viaduct"} <= set(AID_CLASSES)


def test_nwpu_layout(nwpu: Path) -> None:
    assert class_dirs(nwpu) == sorted(NWPU_CLASSES)
    for name in NWPU_CLASSES:
        assert sorted(p.name for p in (nwpu / name).iterdir()) == [f"{name}_{i:03d}.jpg" for i in (1, 2, 3)]
    assert (nwpu / "airplane" / "airplane_001.jpg").is_file()
    assert not [p for p in nwpu.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_aid_layout(aid: Path) -> None:
    assert class_dirs(aid) == sorted(AID_CLASSES)
    pattern = re.compile(r"^([a-z]+)_(\d+)\.jpg$")
    for name in AID_CLASSES:
        for path in (aid / name).iterdir():
            stem, index = pattern.match(path.name).groups()
            assert stem == name.lower() and 1 <= int(index) <= 3
    assert (aid / "BareLand" / "bareland_1.jpg").is_file()


def test_images_are_rgb_jpeg(nwpu: Path, aid: Path) -> None:
    for root in (nwpu, aid):
        for path in root.rglob("*.jpg"):
            with Image.open(path) as image:
                assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))


def _mean_colours(root: Path, classes: tuple[str, ...], indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    layout_name = scene.LAYOUTS["aid" if classes == AID_CLASSES else "nwpu_resisc45"].file_name
    x, y = [], []
    for label, name in enumerate(classes):
        for i in indices:
            x.append(np.asarray(Image.open(root / name / layout_name(name, i)), float).mean((0, 1)))
            y.append(label)
    return np.array(x), np.array(y)


@pytest.mark.parametrize("which", ["nwpu", "aid"])
def test_classes_are_learnable_from_one_image_each(which: str, request: pytest.FixtureRequest) -> None:
    """A nearest-mean-colour classifier fitted on image 1 of each class beats chance by far."""
    root = request.getfixturevalue(which)
    classes = NWPU_CLASSES if which == "nwpu" else AID_CLASSES
    train_x, train_y = _mean_colours(root, classes, [1])
    val_x, val_y = _mean_colours(root, classes, [2, 3])
    pred = train_y[np.argmin(((val_x[:, None] - train_x[None]) ** 2).sum(-1), axis=1)]
    assert (pred == val_y).mean() > 0.6  # chance is 1/45 or 1/30


def test_deterministic_and_seed_dependent(tmp_path: Path, aid: Path) -> None:
    again = generate_aid(tmp_path / "again", per_class=3, size=SIZE, seed=7)
    other = generate_aid(tmp_path / "other", per_class=3, size=SIZE, seed=8)
    files = sorted(p.relative_to(aid) for p in aid.rglob("*.jpg"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.jpg"))
    assert all((aid / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((aid / f).read_bytes() != (other / f).read_bytes() for f in files)


def test_marker_and_idempotence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = generate_aid(tmp_path / "a", per_class=2, size=SIZE, seed=1)
    marker = json.loads((root / MARKER_NAME).read_text())
    assert {k: marker[k] for k in ("dataset", "per_class", "size", "seed")} == {
        "dataset": "aid", "per_class": 2, "size": SIZE, "seed": 1}

    def must_not_write(*_args: object) -> None:
        raise AssertionError("a complete dataset was regenerated")

    with monkeypatch.context() as patch:
        patch.setattr(scene, "_write_dataset", must_not_write)
        assert generate_aid(root, per_class=2, size=SIZE, seed=1) == root
    generate_aid(root, per_class=3, size=SIZE, seed=1)  # other parameters: replaced entirely
    assert len(list((root / "Airport").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging or old copies left


def test_incomplete_dataset_is_rebuilt(tmp_path: Path) -> None:
    root = generate_aid(tmp_path / "a", per_class=2, size=SIZE)
    next((root / "Viaduct").iterdir()).unlink()
    generate_aid(root, per_class=2, size=SIZE)
    assert len(list((root / "Viaduct").iterdir())) == 2


def test_refuses_to_replace_foreign_data(tmp_path: Path) -> None:
    real = tmp_path / "NWPU-RESISC45"
    (real / "airplane").mkdir(parents=True)
    (real / "airplane" / "airplane_001.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_nwpu_resisc45(real, per_class=2, size=SIZE)
    assert (real / "airplane" / "airplane_001.jpg").read_bytes() == b"precious"


@pytest.mark.parametrize("kwargs", [dict(per_class=1), dict(size=8), dict(seed=-1)])
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_aid(tmp_path / "a", **kwargs)
    with pytest.raises(ValueError, match="unknown dataset"):
        scene.generate_scene_dataset("ucmerced", tmp_path / "u")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert scene.main(["aid", "--root", str(tmp_path / "c"), "--per-class", "2", "--size", str(SIZE)]) == 0
    assert (tmp_path / "c" / MARKER_NAME).is_file() and "synthetic aid ready" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        scene.main(["--help"])
    assert "<classname>_N.jpg" in capsys.readouterr().out


def test_readable_by_mmpretrain_custom_dataset(nwpu: Path) -> None:
    """mmpretrain's own CustomDataset reads the folders: classes are the sorted real names."""
    from mmpretrain.datasets import CustomDataset

    ds = CustomDataset(data_root=str(nwpu), pipeline=[dict(type="LoadImageFromFile")])
    assert ds.metainfo["classes"] == tuple(sorted(NWPU_CLASSES))
    assert len(ds) == 45 * 3
    sample = ds[0]
    assert sample["img"].shape == (SIZE, SIZE, 3) and sample["gt_label"] == 0
    assert Path(sample["img_path"]).parent.name == "airplane"
    labels = {Path(ds.get_data_info(i)["img_path"]).parent.name: ds.get_data_info(i)["gt_label"]
              for i in range(len(ds))}
    assert labels == {name: i for i, name in enumerate(sorted(NWPU_CLASSES))}
