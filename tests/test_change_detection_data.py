"""The synthetic LEVIR-CD / CDD generators: real layouts, real changes, nuisances that are not
changes, deterministic; mmseg's LEVIRCDDataset and our loaders read them back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.datasets import change_detection as cd
from benchmarks.datasets.change_detection import (CDD, CDD_MARKER, LEVIR, LEVIR_MARKER, generate_cdd,
                                                  generate_levir_cd, synthesize_pair, synthesize_scene)

SIZE = 64
COUNTS = dict(num_train=3, num_val=2, num_test=1)


@pytest.fixture(scope="module")
def levir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_levir_cd(tmp_path_factory.mktemp("data") / "levir_cd", size=SIZE, seed=5, **COUNTS)


@pytest.fixture(scope="module")
def cdd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cdd(tmp_path_factory.mktemp("data") / "cdd", size=SIZE, seed=5, **COUNTS)


def test_levir_cd_layout_and_formats(levir: Path) -> None:
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        names = [sorted(p.name for p in (levir / split / folder).iterdir()) for folder in ("A", "B", "label")]
        assert names[0] == names[1] == names[2] == [f"{split}_{k}.png" for k in range(1, count + 1)]
    for path in levir.rglob("*.png"):
        with Image.open(path) as image:
            assert image.size == (SIZE, SIZE)
            assert image.mode == ("L" if path.parent.name == "label" else "RGB")
            if path.parent.name == "label":
                assert set(np.unique(np.asarray(image))) <= {0, 255}
    assert (levir / LEVIR_MARKER).is_file()
    assert not [p for p in levir.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_cdd_layout_and_formats(cdd: Path) -> None:
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for folder in ("A", "B", "OUT"):
            assert sorted(p.name for p in (cdd / split / folder).iterdir()) == [
                f"{k:05d}.jpg" for k in range(count)]
    for path in cdd.rglob("*.jpg"):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (SIZE, SIZE)
    # JPEG blurs the mask edges, but thresholding at 127 recovers the true mask almost exactly.
    _, _, mask = synthesize_pair(5, "train", 0, SIZE, CDD)
    stored = np.asarray(Image.open(cdd / "train" / "OUT" / "00000.jpg").convert("L"))
    assert ((stored > 127) == (mask > 0)).mean() > 0.99


@pytest.mark.parametrize("style", [LEVIR, CDD])
def test_labels_are_the_changed_buildings(style: cd.Style) -> None:
    """Changed pixels differ between dates far more than unchanged ones (after each date's own
    colour normalisation); unchanged pixels still differ (nuisance), so the task is not a diff."""
    inside, outside, raw_outside = [], [], []
    for index in range(6):
        a, b, mask = synthesize_pair(0, "train", index, 128, style)
        changed = mask == 255
        assert 0.01 < changed.mean() < 0.4 and set(np.unique(mask)) == {0, 255}

        def norm(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float64)
            return (x - x.mean((0, 1))) / x.std((0, 1))

        diff = np.abs(norm(a) - norm(b)).sum(-1)
        inside.append(diff[changed].mean())
        outside.append(diff[~changed].mean())
        raw_outside.append(np.abs(a.astype(int) - b.astype(int))[~changed].mean())
    assert min(inside) > 3 * max(outside)
    assert min(raw_outside) > 3  # colour, brightness, season and noise differ between the dates


def test_changes_are_buildings_appearing_or_disappearing() -> None:
    """The mask is exactly the roofs in one date only (built or demolished); roofs in both dates
    are unchanged, and their pixels differ between the dates only by the per-date nuisance."""
    seen_built = seen_demolished = 0
    for index in range(6):
        scene = synthesize_scene(1, "train", index, 128, LEVIR)
        built = [b for b in scene.after if b not in scene.before]
        demolished = [b for b in scene.before if b not in scene.after]
        expected = np.zeros((128, 128), bool)
        for b in built + demolished:
            expected |= b.mask(128)
        np.testing.assert_array_equal(scene.mask == 255, expected)
        seen_built += len(built)
        seen_demolished += len(demolished)
        for b in scene.after:
            if b in scene.before:  # kept roof: the same colour in both dates, up to gain and noise
                box = (slice(b.y0, b.y1), slice(b.x0, b.x1))
                a, bb = (np.median(img[box].reshape(-1, 3), axis=0) for img in (scene.image_a, scene.image_b))
                assert np.abs(a - bb).max() < 0.25 * max(a.max(), bb.max()) + 15
    assert seen_built >= 6 and seen_demolished >= 6


def test_deterministic_and_seed_dependent(tmp_path: Path, levir: Path) -> None:
    again = generate_levir_cd(tmp_path / "again", size=SIZE, seed=5, **COUNTS)
    other = generate_levir_cd(tmp_path / "other", size=SIZE, seed=6, **COUNTS)
    files = sorted(p.relative_to(levir) for p in levir.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((levir / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((levir / f).read_bytes() != (other / f).read_bytes() for f in files)
    a1, b1, m1 = synthesize_pair(5, "val", 1, SIZE, LEVIR)
    a2, b2, m2 = synthesize_pair(5, "val", 1, SIZE, CDD)  # the styles draw different scenes
    assert not np.array_equal(m1, m2) or not np.array_equal(a1, a2)


def test_marker_reuse_and_foreign_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = generate_cdd(tmp_path / "c", size=SIZE, num_train=1, num_val=1, num_test=1)
    marker = json.loads((root / CDD_MARKER).read_text())
    assert (marker["num_train"], marker["size"], marker["generator_version"]) == (1, SIZE, cd.GENERATOR_VERSION)
    monkeypatch.setattr(cd, "_save", lambda *args: pytest.fail("a complete dataset was regenerated"))
    assert generate_cdd(root, size=SIZE, num_train=1, num_val=1, num_test=1) == root
    monkeypatch.undo()

    real = tmp_path / "LEVIR-CD"
    (real / "train" / "A").mkdir(parents=True)
    (real / "precious.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_levir_cd(real, size=SIZE)
    assert (real / "precious.txt").read_text() == "not ours"
    with pytest.raises(ValueError):
        generate_levir_cd(tmp_path / "x", num_val=0)
    with pytest.raises(ValueError):
        generate_levir_cd(tmp_path / "x", size=16)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cd.main(["--dataset", "cdd", "--root", str(tmp_path / "c"), "--num-train", "1", "--num-val", "1",
                    "--num-test", "1", "--size", str(SIZE)]) == 0
    assert (tmp_path / "c" / CDD_MARKER).is_file() and (tmp_path / "c" / "test" / "OUT" / "00000.jpg").is_file()
    with pytest.raises(SystemExit):
        cd.main(["--help"])
    assert "A,B,label" in capsys.readouterr().out


def _dataset(root: Path, split: str, jpg: bool):
    """mmseg's own LEVIRCDDataset with the change pipeline's loaders (what the configs use)."""
    import benchmarks  # noqa: F401  compat shims before mmseg
    import benchmarks.models.change_detection  # noqa: F401  registers the loaders
    from mmseg.datasets import LEVIRCDDataset
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    suffixes = dict(img_suffix=".jpg", img_suffix2=".jpg", seg_map_suffix=".jpg") if jpg else {}
    label = "OUT" if jpg else "label"
    return LEVIRCDDataset(
        data_root=str(root), **suffixes,
        data_prefix=dict(img_path=f"{split}/A", img_path2=f"{split}/B", seg_map_path=f"{split}/{label}"),
        pipeline=[dict(type="LoadImagePairFromFile"), dict(type="LoadAnnotations"),
                  dict(type="BinarizeChangeMask"), dict(type="ConcatCDInput")])


@pytest.mark.parametrize("which", ["levir", "cdd"])
def test_readable_by_mmseg_levircd_dataset(which: str, levir: Path, cdd: Path) -> None:
    jpg = which == "cdd"
    root, style = (cdd, CDD) if jpg else (levir, LEVIR)
    ds = _dataset(root, "train", jpg)
    assert len(ds) == 3 and ds.metainfo["classes"] == ("background", "changed")
    for index in range(len(ds)):
        sample = ds[index]
        a, b, mask = synthesize_pair(5, "train", index, SIZE, style)
        assert sample["img"].shape == (SIZE, SIZE, 6)  # date A's R, G, B then date B's
        labels = sample["gt_seg_map"]
        assert set(np.unique(labels)) <= {0, 1}  # 255 became 1 (not mmseg's "ignore")
        if jpg:  # lossy: colours and mask edges move by a few levels / pixels
            assert np.abs(sample["img"][..., :3] - a).mean() < 8 and (labels == (mask > 0)).mean() > 0.99
        else:
            np.testing.assert_array_equal(sample["img"][..., :3], a)
            np.testing.assert_array_equal(sample["img"][..., 3:], b)
            np.testing.assert_array_equal(labels, (mask > 0).astype(np.uint8))


def test_binarize_accepts_three_channel_masks() -> None:
    from benchmarks.models.change_detection import BinarizeChangeMask

    mask = np.zeros((4, 4, 3), np.uint8)
    mask[1, 2] = (250, 251, 249)
    mask[3, 3] = (30, 20, 25)  # JPEG ringing, not a change
    out = BinarizeChangeMask()({"gt_seg_map": mask})["gt_seg_map"]
    assert out.shape == (4, 4) and out.sum() == 1 and out[1, 2] == 1
