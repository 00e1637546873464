"""The synthetic Potsdam generator writes mmseg's converted layout, deterministically and learnably."""
from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.datasets import potsdam
from benchmarks.datasets.potsdam import MARKER_NAME, TRAIN_TILES, VAL_TILES, generate_potsdam

SIZE = 64
NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)\.png$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "potsdam"
    return generate_potsdam(root, num_train=6, num_val=3, size=SIZE, seed=7)


def load_labels(root: Path) -> list[np.ndarray]:
    return [np.array(Image.open(p)) for p in sorted((root / "ann_dir").rglob("*.png"))]


def test_layout_and_names(dataset: Path) -> None:
    for split, count, tiles in (("train", 6, TRAIN_TILES), ("val", 3, VAL_TILES)):
        images = sorted(p.name for p in (dataset / "img_dir" / split).iterdir())
        labels = sorted(p.name for p in (dataset / "ann_dir" / split).iterdir())
        assert images == labels and len(images) == count  # mmseg pairs them by name
        for name in images:
            row, col, x0, y0, x1, y1 = map(int, NAME.match(name).groups())
            assert f"{row}_{col}" in tiles
            assert (x1 - x0, y1 - y0) == (SIZE, SIZE) and x0 % SIZE == 0 and y0 % SIZE == 0
    assert f"2_10_0_0_{SIZE}_{SIZE}.png" in images_of(dataset, "train")
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no staging left


def images_of(root: Path, split: str) -> list[str]:
    return [p.name for p in (root / "img_dir" / split).iterdir()]


def test_pixel_formats(dataset: Path) -> None:
    for path in (dataset / "img_dir").rglob("*.png"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.size == (SIZE, SIZE)
            assert np.asarray(image).dtype == np.uint8
    for path in (dataset / "ann_dir").rglob("*.png"):
        with Image.open(path) as label:
            assert label.mode == "L" and label.size == (SIZE, SIZE)  # single channel, like mmcv.imwrite


def test_label_values_follow_the_converter(dataset: Path) -> None:
    values = np.concatenate([lab.ravel() for lab in load_labels(dataset)])
    assert set(np.unique(values)) == {0, 1, 2, 3, 4, 5, 6}  # every class and the boundary appear
    # What PotsdamDataset's reduce_zero_label=True turns them into: 0 -> 255, others minus one.
    reduced = np.where(values == 0, 255, values.astype(np.int16) - 1)
    assert set(np.unique(reduced)) == {0, 1, 2, 3, 4, 5, 255}
    # The ignored band is two pixels wide whatever the crop size: ~17% at 64px, ~4% at 256px.
    assert (values == 0).mean() < 0.25


def test_classes_are_learnable(dataset: Path) -> None:
    """A nearest-colour-mean classifier fitted on train beats chance by far on val."""
    def pixels(split: str) -> tuple[np.ndarray, np.ndarray]:
        names = sorted(images_of(dataset, split))
        x = np.concatenate([np.asarray(Image.open(dataset / "img_dir" / split / n), float).reshape(-1, 3)
                            for n in names])
        y = np.concatenate([np.asarray(Image.open(dataset / "ann_dir" / split / n)).ravel() for n in names])
        return x[y > 0], y[y > 0]

    x, y = pixels("train")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    xv, yv = pixels("val")
    pred = classes[np.argmin(((xv[:, None, :] - means[None]) ** 2).sum(-1), axis=1)]
    assert (pred == yv).mean() > 0.8  # chance with 6 classes is far lower


def test_deterministic_and_seed_dependent(tmp_path: Path, dataset: Path) -> None:
    again = generate_potsdam(tmp_path / "again", num_train=6, num_val=3, size=SIZE, seed=7)
    other = generate_potsdam(tmp_path / "other", num_train=6, num_val=3, size=SIZE, seed=8)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((dataset / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((dataset / f).read_bytes() != (other / f).read_bytes() for f in files)


def test_marker_and_idempotence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = generate_potsdam(tmp_path / "p", num_train=1, num_val=1, size=SIZE, seed=1)
    marker = json.loads((root / MARKER_NAME).read_text())
    assert {k: marker[k] for k in ("num_train", "num_val", "size", "seed")} == {
        "num_train": 1, "num_val": 1, "size": SIZE, "seed": 1}
    stamp = (root / "img_dir" / "train").stat().st_mtime_ns

    def must_not_write(*_args: object) -> None:
        raise AssertionError("a complete dataset was regenerated")

    with monkeypatch.context() as patch:
        patch.setattr(potsdam, "_write_dataset", must_not_write)
        assert generate_potsdam(root, num_train=1, num_val=1, size=SIZE, seed=1) == root
    assert (root / "img_dir" / "train").stat().st_mtime_ns == stamp
    # Other parameters replace the old synthetic dataset entirely.
    generate_potsdam(root, num_train=2, num_val=1, size=SIZE, seed=1)
    assert len(images_of(root, "train")) == 2
    assert json.loads((root / MARKER_NAME).read_text())["num_train"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no staging or old copies left


def test_incomplete_dataset_is_rebuilt(tmp_path: Path) -> None:
    root = generate_potsdam(tmp_path / "p", num_train=2, num_val=1, size=SIZE)
    next((root / "ann_dir" / "train").iterdir()).unlink()
    generate_potsdam(root, num_train=2, num_val=1, size=SIZE)
    assert len(list((root / "ann_dir" / "train").iterdir())) == 2


def _generate_same(root: str) -> None:
    generate_potsdam(root, num_train=3, num_val=2, size=SIZE, seed=3)


def test_concurrent_generators_publish_one_dataset(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_generate_same, args=(str(tmp_path / "p"),)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    assert len(images_of(tmp_path / "p", "train")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # losers cleaned their staging


def test_refuses_to_replace_foreign_data(tmp_path: Path) -> None:
    real = tmp_path / "real_potsdam"
    (real / "img_dir").mkdir(parents=True)
    (real / "precious.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_potsdam(real, num_train=1, num_val=1, size=SIZE)
    assert (real / "precious.txt").read_text() == "not ours"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_potsdam(tmp_path / "p", num_train=0)
    with pytest.raises(ValueError):
        generate_potsdam(tmp_path / "p", size=8)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert potsdam.main(["--root", str(tmp_path / "c"), "--num-train", "1", "--num-val", "1",
                         "--size", str(SIZE)]) == 0
    assert (tmp_path / "c" / MARKER_NAME).is_file()
    with pytest.raises(SystemExit):
        potsdam.main(["--help"])
    assert "ann_dir" in capsys.readouterr().out


def test_readable_by_mmseg_potsdam_dataset(dataset: Path) -> None:
    """mmseg's own PotsdamDataset and LoadAnnotations read it with the expected classes."""
    import benchmarks  # noqa: F401  applies benchmarks/compat.py (torchvision shim) before mmseg
    from mmseg.datasets import PotsdamDataset
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    ds = PotsdamDataset(
        data_root=str(dataset),
        data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train"),
        pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")])
    assert len(ds) == 6
    assert ds.metainfo["classes"] == ("impervious_surface", "building", "low_vegetation", "tree",
                                      "car", "clutter")
    seen: set[int] = set()
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["img"].shape == (SIZE, SIZE, 3)
        seen |= set(np.unique(sample["gt_seg_map"]).tolist())
    assert seen == {0, 1, 2, 3, 4, 5, 255}  # reduce_zero_label applied: boundary -> 255
