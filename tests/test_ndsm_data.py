"""The synthetic Vaihingen/Potsdam nDSM generator: layout, the real mmseg loader, learnable heights."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.datasets import ndsm
from benchmarks.datasets.ndsm import (VAIHINGEN_TRAIN_AREAS, VAIHINGEN_VAL_AREAS, generate_potsdam_ndsm,
                                      generate_vaihingen_ndsm, read_height)
from benchmarks.datasets.potsdam import TRAIN_TILES, VAL_TILES

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
VAIHINGEN_NAME = re.compile(r"^top_mosaic_09cm_area(\d+)_(\d+)_(\d+)$")
POTSDAM_NAME = re.compile(r"^top_potsdam_(\d+_\d+)_RGB_(\d+)_(\d+)$")


@pytest.fixture(scope="module")
def vaihingen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_vaihingen_ndsm(tmp_path_factory.mktemp("v") / "vaihingen_ndsm", num_train=6, num_val=3,
                                   size=SIZE, seed=7)


@pytest.fixture(scope="module")
def potsdam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_potsdam_ndsm(tmp_path_factory.mktemp("p") / "potsdam_ndsm", num_train=6, num_val=3,
                                 size=SIZE, seed=7)


def stems(root: Path, folder: str, split: str) -> list[str]:
    return sorted(p.stem for p in (root / folder / split).iterdir())


def test_layout_names_and_formats(vaihingen: Path, potsdam: Path) -> None:
    for split, count, areas in (("train", 6, VAIHINGEN_TRAIN_AREAS), ("val", 3, VAIHINGEN_VAL_AREAS)):
        names = stems(vaihingen, "img_dir", split)
        assert names == stems(vaihingen, "ndsm_dir", split) and len(names) == count  # paired by stem
        assert all(int(VAIHINGEN_NAME.match(n).group(1)) in areas for n in names)
        assert all(p.suffix == ".tif" for p in (vaihingen / "ndsm_dir" / split).iterdir())
    for split, count, tiles in (("train", 6, TRAIN_TILES), ("val", 3, VAL_TILES)):
        names = stems(potsdam, "img_dir", split)
        assert names == stems(potsdam, "ndsm_dir", split) and len(names) == count
        assert all(POTSDAM_NAME.match(n).group(1) in tiles for n in names)
    assert "top_potsdam_2_10_RGB_0_0" in stems(potsdam, "img_dir", "train")
    with Image.open(next((vaihingen / "ndsm_dir" / "train").iterdir())) as tif:
        assert tif.mode == "F" and tif.size == (SIZE, SIZE)  # float32 metres
    with Image.open(next((potsdam / "ndsm_dir" / "train").iterdir())) as png:
        assert png.mode == "I;16" and png.size == (SIZE, SIZE)  # uint16 centimetres
    with Image.open(next((potsdam / "img_dir" / "train").iterdir())) as image:
        assert image.mode == "RGB"
    assert not [p for p in vaihingen.parent.iterdir() if p.name.startswith(".")]  # no staging left


def _load_with_mmseg(config: str, root: Path, split: str = "val") -> list[tuple[str, np.ndarray]]:
    """(image path, gt height) of every sample, through the config's mmseg dataset and pipeline."""
    import benchmarks  # noqa: F401  compat shims first
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(REPO / "configs/benchmarks/depth/_base_" / config))
    dataset_cfg = cfg[f"{split}_dataloader"].dataset
    dataset_cfg.data_root = str(root)
    dataset = DATASETS.build(dataset_cfg)
    out = []
    for i in range(len(dataset)):
        sample = dataset[i]["data_samples"]
        out.append((sample.img_path, sample.gt_depth_map.data.numpy()[0]))
    return out


@pytest.mark.parametrize("config, fixture", [("vaihingen_ndsm.py", "vaihingen"), ("potsdam_ndsm.py", "potsdam")])
def test_mmseg_reads_heights_in_metres(config: str, fixture: str, request: pytest.FixtureRequest) -> None:
    """NYUDataset + LoadDepthAnnotation give float32 metres equal to what the generator drew."""
    root = request.getfixturevalue(fixture)
    flavour = ndsm.FLAVOURS[fixture]
    loaded = _load_with_mmseg(config, root)
    assert len(loaded) == 3
    index_of = {stem: i for i, stem in enumerate(ndsm.tile_stems(flavour, "val", 3))}
    assert sorted(Path(path).stem for path, _ in loaded) == sorted(index_of)
    for img_path, gt in loaded:
        index = index_of[Path(img_path).stem]
        _, drawn = ndsm.synthesize_tile(flavour, 7, "val", index, SIZE)
        assert gt.dtype == np.float32 and gt.shape == (SIZE, SIZE)
        np.testing.assert_allclose(gt, drawn, atol=1e-4)  # the PNG16 cm scale is undone exactly


def test_png16_and_tif_hold_the_same_heights(tmp_path: Path) -> None:
    tif = generate_vaihingen_ndsm(tmp_path / "tif", num_train=1, num_val=2, size=SIZE, seed=1, height_format="tif")
    png = generate_vaihingen_ndsm(tmp_path / "png", num_train=1, num_val=2, size=SIZE, seed=1, height_format="png")
    for a, b in zip(sorted((tif / "ndsm_dir" / "val").iterdir()), sorted((png / "ndsm_dir" / "val").iterdir())):
        assert (a.stem, a.suffix, b.suffix) == (b.stem, ".tif", ".png")
        assert np.asarray(Image.open(b)).dtype == np.uint16
        np.testing.assert_allclose(read_height(a), read_height(b), atol=1e-4)
        assert read_height(a).max() > 3.0  # metres, not centimetres
    for image in (png / "img_dir" / "val").iterdir():  # only the height encoding differs
        assert (tif / "img_dir" / "val" / image.name).read_bytes() == image.read_bytes()


def test_ground_is_low_but_positive(vaihingen: Path) -> None:
    """Every pixel is above DepthMetric's min_depth_eval (1e-3), so the ground is scored too."""
    heights = np.stack([read_height(p) for p in (vaihingen / "ndsm_dir" / "train").iterdir()])
    assert heights.min() >= 0.05 and heights.max() <= ndsm.ROOF_HEIGHTS[1] + 0.01
    assert 0.3 < (heights < 0.5).mean() < 0.9  # mostly ground, with plenty above it


def test_heights_follow_the_content() -> None:
    """Roof and crown shade encode height; cars are 1.5 m; lawns and pavement stay low."""
    flavour = ndsm.POTSDAM  # RGB bands, so colours read directly
    roofs, crowns = [], []
    for index in range(6):
        image, height = ndsm.synthesize_tile(flavour, 0, "train", index, 128)
        red, green = image[..., 0].astype(float), image[..., 1].astype(float)
        roof = (red > green + 50) & (height >= ndsm.ROOF_HEIGHTS[0])
        roofs.append((red[roof], height[roof]))
        crown = (green > red + 30) & (height >= 3.0)
        crowns.append((green[crown], height[crown]))
        lawn = (green > 160) & (red > 110) & (red < 170) & (height < 3.0)  # light green
        assert lawn.any() and height[lawn].max() < 0.5
    shade, h = map(np.concatenate, zip(*roofs))
    assert np.corrcoef(shade, h)[0, 1] < -0.9  # darker roofs are taller
    shade, h = map(np.concatenate, zip(*crowns))
    assert np.corrcoef(shade, h)[0, 1] < -0.5  # darker crowns are taller (plus the dome profile)


def test_heights_are_learnable_from_colour(vaihingen: Path) -> None:
    """A per-pixel quadratic fit on the colours beats the constant mean on val by far."""
    def pixels(split: str) -> tuple[np.ndarray, np.ndarray]:
        names = stems(vaihingen, "img_dir", split)
        x = np.concatenate([np.asarray(Image.open(vaihingen / "img_dir" / split / f"{n}.png"), float).reshape(-1, 3)
                            for n in names]) / 255.0
        y = np.concatenate([read_height(vaihingen / "ndsm_dir" / split / f"{n}.tif").ravel() for n in names])
        features = np.concatenate([np.ones((len(x), 1)), x, x**2, x[:, [0]] * x[:, [1]], x[:, [1]] * x[:, [2]]], 1)
        return features, y

    x, y = pixels("train")
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    xv, yv = pixels("val")
    fitted = np.sqrt(np.mean((xv @ coef - yv) ** 2))
    constant = np.sqrt(np.mean((y.mean() - yv) ** 2))
    assert fitted < 0.6 * constant


def test_constant_baseline(vaihingen: Path) -> None:
    result = ndsm.constant_baseline(vaihingen)
    train = np.concatenate([read_height(p).ravel() for p in (vaihingen / "ndsm_dir" / "train").iterdir()])
    assert result["mean_height"] == pytest.approx(train.mean(), rel=1e-5)
    first = read_height(sorted((vaihingen / "ndsm_dir" / "val").iterdir())[0])
    assert result["rmse"] > 1.0 and np.sqrt(np.mean((first - train.mean()) ** 2)) > 0


def test_deterministic_and_seeded(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    a = files(generate_potsdam_ndsm(tmp_path / "a", num_train=2, num_val=1, size=SIZE, seed=5))
    b = files(generate_potsdam_ndsm(tmp_path / "b", num_train=2, num_val=1, size=SIZE, seed=5))
    c = files(generate_potsdam_ndsm(tmp_path / "c", num_train=2, num_val=1, size=SIZE, seed=6))
    assert a == b
    assert a.keys() == c.keys() and any(a[k] != c[k] for k in a if k.endswith(".png"))
    v = files(generate_vaihingen_ndsm(tmp_path / "v", num_train=2, num_val=1, size=SIZE, seed=5,
                                      height_format="png"))
    heights_a = [a[k] for k in sorted(a) if k.startswith("ndsm_dir")]
    heights_v = [v[k] for k in sorted(v) if k.startswith("ndsm_dir")]
    assert heights_a[0] != heights_v[0]  # the two datasets draw different scenes from one seed


def test_reuse_and_foreign_folders(tmp_path: Path) -> None:
    root = generate_vaihingen_ndsm(tmp_path / "v", num_train=1, num_val=1, size=SIZE)
    marker = root / ndsm.VAIHINGEN.marker
    stamp = marker.stat().st_mtime_ns
    assert generate_vaihingen_ndsm(root, num_train=1, num_val=1, size=SIZE) == root
    assert marker.stat().st_mtime_ns == stamp  # reused, not rewritten
    foreign = tmp_path / "real"
    (foreign / "img_dir").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        generate_vaihingen_ndsm(foreign, num_train=1, num_val=1, size=SIZE)
    with pytest.raises(ValueError, match="height_format"):
        generate_vaihingen_ndsm(tmp_path / "x", height_format="jpg")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert ndsm.main(["potsdam", "--root", str(tmp_path / "p"), "--num-train", "1", "--num-val", "1",
                      "--size", "32", "--height-format", "tif"]) == 0
    assert "synthetic potsdam nDSM ready" in capsys.readouterr().out
    assert len(list((tmp_path / "p" / "ndsm_dir" / "val").glob("*.tif"))) == 1
