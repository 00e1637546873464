"""Pretraining data tools: tiling, per-modality conversion, nodata filter, MindRecord shards, reader, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pretrain.data.modalities import TO_UNIT
from pretrain.models.arch import DEFAULT_MODALITIES
from pretrain.tools.convert import ConvertParams, SceneError, convert_scene, read_scene
from pretrain.tools.make_dataset import main
from pretrain.tools.tiling import axis_positions, tile_grid

REPO = Path(__file__).resolve().parents[1]
MODALITY = {m.name: m for m in DEFAULT_MODALITIES}


@pytest.mark.parametrize("length,tile,stride,expected", [
    (400, 192, 160, [0, 160, 208]),  # overlap 32, last tile aligned to the border
    (384, 192, 192, [0, 192]),  # exact fit: no extra tile
    (500, 192, 192, [0, 192, 308]),
    (192, 192, 96, [0]),
    (191, 192, 192, []),  # too small
])
def test_axis_positions(length, tile, stride, expected):
    assert axis_positions(length, tile, stride) == expected


def test_tile_grid_covers_scene_without_padding():
    grid = tile_grid(300, 520, 192, 150)
    assert len(grid) == 2 * 4 and grid[0] == (0, 0) and grid[-1] == (108, 328)
    covered = np.zeros((300, 520), int)
    for y, x in grid:
        assert y + 192 <= 300 and x + 192 <= 520
        covered[y : y + 192, x : x + 192] += 1
    assert covered.min() >= 1


def test_optical_conversion():
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 256, (20, 30, 3), dtype=np.uint8)
    out, valid = convert_scene("optical", rgb, ConvertParams())
    assert out.dtype == np.uint8 and np.array_equal(out, rgb) and valid.all()
    grey, _ = convert_scene("optical", rgb[..., 0], ConvertParams())
    assert grey.shape == (20, 30, 3) and np.array_equal(grey[..., 2], rgb[..., 0])
    deep = rng.integers(100, 4000, (20, 30, 5), dtype=np.uint16)  # 12-bit, 5 bands: pick 3
    out, _ = convert_scene("optical", deep, ConvertParams(bands=[3, 2, 1]))
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    assert out.min() == 0 and out.max() == 255  # stretched per band
    assert np.corrcoef(out[..., 0].ravel(), deep[..., 3].ravel())[0, 1] > 0.95


def test_sar_l1_complex_to_eight_iq_channels():
    rng = np.random.default_rng(1)
    slc = (rng.standard_normal((16, 16, 4)) + 1j * rng.standard_normal((16, 16, 4))).astype(np.complex64)
    out, valid = convert_scene("sar_l1", slc, ConvertParams())
    assert out.shape == (16, 16, 8) and out.dtype == np.float32 and valid.all()
    for p in range(4):  # HH, HV, VH, VV as (I, Q) pairs, raw values
        assert np.array_equal(out[..., 2 * p], slc[..., p].real)
        assert np.array_equal(out[..., 2 * p + 1], slc[..., p].imag)
    iq, _ = convert_scene("sar_l1", out, ConvertParams())  # 8 real bands pass through
    assert np.array_equal(iq, out)
    unit = TO_UNIT["sar_l1"](out)  # the training transform accepts the stored form
    assert unit.shape == (8, 16, 16) and 0 <= unit.min() and unit.max() <= 1
    with pytest.raises(SceneError, match="4 complex"):
        convert_scene("sar_l1", slc[..., :2], ConvertParams())


def test_sar_l2_clip_percentiles():
    rng = np.random.default_rng(2)
    intensity = rng.gamma(1.0, 0.1, (100, 100)).astype(np.float32)
    out, _ = convert_scene("sar_l2", intensity, ConvertParams())
    assert out.shape == (100, 100) and out.dtype == np.uint8
    db = 10 * np.log10(intensity.astype(np.float64))
    low, high = np.percentile(db, [0.1, 99.9])
    assert (out[db <= low] == 0).all() and (out[db >= high] == 255).all()
    assert 10 <= (db <= low).sum() <= 11 and 10 <= (db >= high).sum() <= 11  # 0.1 % of 10 000 each side
    expected = np.round(255 * np.clip((db - low) / (high - low), 0, 1))
    assert np.abs(out - expected).max() <= 1  # linear in dB between the clip points
    assert TO_UNIT["sar_l2"](out).shape == (3, 100, 100)  # replicated to 3 channels at training time
    wide, _ = convert_scene("sar_l2", intensity, ConvertParams(sar_l2_clip=(5, 95)))
    assert (wide == 0).sum() > 400


def test_msi_stretch_and_nodata_pixels():
    rng = np.random.default_rng(3)
    bands = rng.integers(200, 3000, (50, 50, 4), dtype=np.uint16)
    bands[:10] = 0  # nodata rows: excluded from the percentiles, stored as 0
    out, valid = convert_scene("msi", bands, ConvertParams())
    assert out.dtype == np.uint8 and out.shape == (50, 50, 4)
    assert not valid[:10].any() and valid[10:].all() and (out[:10] == 0).all()
    data = bands[10:].astype(float)
    for c in range(4):
        low, high = np.percentile(data[..., c], [2, 98])
        expected = np.round(255 * np.clip((data[..., c] - low) / (high - low), 0, 1))
        assert np.abs(out[10:, :, c] - expected).max() <= 1  # percentiles of valid pixels only
        assert (out[10:, :, c][data[..., c] <= low] == 0).all() and (out[10:, :, c][data[..., c] >= high] == 255).all()
    with pytest.raises(SceneError, match="msi needs 4 bands"):
        convert_scene("msi", bands[..., :3], ConvertParams())


def _write_scenes(root: Path) -> None:
    """Small scenes in the formats the tool reads, plus a too-small and an unreadable one."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(4)
    (root / "optical").mkdir(parents=True)
    rgb = rng.integers(1, 256, (300, 400, 3), dtype=np.uint8)
    rgb[:, :260] = 0  # nodata on the left: tiles at x=0 (100 %) and x=128 (69 %) are dropped
    Image.fromarray(rgb).save(root / "optical" / "a.png")
    Image.fromarray(rgb[:100, :100]).save(root / "optical" / "small.png")
    (root / "optical" / "broken.tif").write_bytes(b"not a tiff")
    (root / "sar_l1").mkdir()
    slc = rng.standard_normal((2, 4, 200, 260)).astype(np.float32)
    tifffile.imwrite(root / "sar_l1" / "slc.tif", (slc[0] + 1j * slc[1]).astype(np.complex64),
                     photometric="minisblack", planarconfig="separate")  # planar [4, H, W] complex
    (root / "msi").mkdir()
    tifffile.imwrite(root / "msi" / "ms.tif", rng.integers(1, 4000, (250, 250, 4), dtype=np.uint16),
                     photometric="minisblack", planarconfig="contig")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    _write_scenes(root)
    out = root.parent / "shards"
    rc = main(["build", "--root", str(root), "--out", str(out), "--overlap", "64", "--num-shards", "2", "--quiet"])
    assert rc == 0
    return root, out


def test_build_manifest_counts_and_checksums(built):
    from pretrain.tools.shards import sha256

    root, out = built
    optical = json.loads((out / "optical" / "manifest.json").read_text())
    # 300x400, stride 128: rows [0, 108], columns [0, 128, 208]; x=208 is 27 % zero: kept
    assert optical["counts"] == {"written": 2, "skipped_nodata": 4, "scenes": 3, "scenes_too_small": 1,
                                 "scenes_unreadable": 1}
    assert {s["reason"] for s in optical["skipped_scenes"]} == {"too small", "unreadable"}
    assert optical["stored"] == {"shape": [192, 192, 3], "dtype": "uint8", "channels": 3, "layout": "HWC"}
    sar = json.loads((out / "sar_l1" / "manifest.json").read_text())
    assert sar["counts"]["written"] == 2 * 2 and [s["count"] for s in sar["shards"]] == [2, 2]
    assert sar["stored"]["shape"] == [192, 192, 8] and sar["stored"]["dtype"] == "float32"
    for shard in sar["shards"]:
        assert shard["sha256"] == sha256(out / "sar_l1" / shard["file"])
        assert shard["db_sha256"] == sha256(out / "sar_l1" / shard["db"])
    assert not (out / "sar_l2").exists()  # no source folder, nothing built
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_reader_returns_the_converted_tiles(built):
    from pretrain.data.mindrecord import MindRecordFolder, iter_raw_tiles

    root, out = built
    for name, scene_file in (("sar_l1", "slc.tif"), ("msi", "ms.tif"), ("optical", "a.png")):
        stored, _ = convert_scene(name, read_scene(root / name / scene_file), ConvertParams())
        tiles = dict(iter_raw_tiles(out, name, with_keys=True))
        assert tiles and all(k[0] == scene_file for k in tiles)
        for (_, y, x), tile in tiles.items():
            assert tile.dtype == stored.dtype and np.array_equal(tile, stored[y : y + 192, x : x + 192])
        folder = MindRecordFolder(out, MODALITY[name], 192)
        assert len(folder) == len(tiles)
        by_index = [folder.raw(i) for i in range(len(folder))]
        assert sorted(t.tobytes() for t in by_index) == sorted(t.tobytes() for t in tiles.values())
        image, extra = folder.sample(np.random.default_rng(0))  # the ModalityFolder transforms apply
        assert image.shape == (MODALITY[name].channels, 192, 192) and extra is None and np.isfinite(image).all()
    slc = read_scene(root / "sar_l1" / "slc.tif")  # planar complex TIFF read band-last
    assert slc.shape == (200, 260, 4) and slc.dtype == np.complex64


def test_verify_ok_then_catches_corruption(built, tmp_path, capsys):
    import shutil

    _, out = built
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.count("checksums match") == 3
    copy = tmp_path / "msi"
    shutil.copytree(out / "msi", copy)
    shard = copy / json.loads((copy / "manifest.json").read_text())["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sha256 mismatch" in err and shard.name in err


def test_cli_help_and_bad_input(built, tmp_path):
    _, out = built
    run = [sys.executable, "-m", "pretrain.tools.make_dataset"]
    result = subprocess.run(run + ["--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "verify" in result.stdout
    cases = [
        ["build", "--modality", "optical", "--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        ["build", "--root", str(built[0]), "--out", str(out)],  # exists, no --overwrite
        ["build", "--root", str(built[0]), "--out", str(tmp_path / "o"), "--overlap", "192"],
        ["verify", str(tmp_path)],
    ]
    for argv in cases:
        result = subprocess.run(run + argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, argv
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("make_dataset: error:")
    assert not (tmp_path / "o").exists()


def test_training_batches_from_shards(tmp_path):
    """data.type='mindrecord': multimodal_batches reads the shards of generated demo scenes."""
    from pretrain.data.folder import multimodal_batches
    from pretrain.data.synthetic import generate_pretrain_data
    from pretrain.models.arch import get_arch

    scenes = generate_pretrain_data(tmp_path / "scenes", num_per_modality=2, size=192, seed=0)
    assert main(["build", "--root", str(scenes), "--out", str(tmp_path / "shards"), "--quiet"]) == 0
    arch = get_arch("tiny")
    step = next(multimodal_batches(tmp_path / "shards", arch, 2, seed=0, kind="mindrecord"))
    for images, modality in zip(step["images"], arch.modalities):
        assert images.shape == (2, modality.channels, arch.img_size, arch.img_size) and np.isfinite(images).all()
    with pytest.raises(ValueError, match="data.type"):
        next(multimodal_batches(tmp_path / "shards", arch, 2, seed=0, kind="lmdb"))
