"""The pretraining input pipeline (pretrain/data/pipeline.py, augment.py): augmentations, masks,
power target, the zip of the modalities, determinism and resume with parallel workers, both
sources, and rank sharding."""
from __future__ import annotations

import gc
import math
from pathlib import Path

import numpy as np
import pytest

from pretrain.data.augment import Augmentation, MaskGenerator, resize_box, sample_box
from pretrain.data.folder import ModalityFolder
from pretrain.data.modalities import sar_l1_total_power
from pretrain.data.pipeline import (
    PipelineOptions, SlotLayout, build_dataset, modality_samples, multimodal_batches,
)
from pretrain.models.arch import get_arch

ARCH = get_arch("tiny").replace(sar_l1_power_target=True)
SERIAL = PipelineOptions(num_workers=0)
PROCESSES = PipelineOptions(num_workers=2, python_multiprocessing=True)
THREADS = PipelineOptions(num_workers=2, python_multiprocessing=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from pretrain.data.synthetic import generate_pretrain_data

    return generate_pretrain_data(tmp_path_factory.mktemp("pipe") / "data", num_per_modality=6, size=224, seed=0)


def _steps(root, batch_size=2, seed=3, start=0, num_steps=3, options=SERIAL, **kwargs) -> list[dict]:
    return list(multimodal_batches(root, ARCH, batch_size, seed, True, start, num_steps=num_steps, options=options,
                                   **kwargs))


def _assert_same_steps(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        for key in ("images", "masks", "targets"):
            for x, y in zip(a[key], b[key]):
                assert (x is None and y is None) or (x.dtype == y.dtype and np.array_equal(x, y)), key


def test_crop_boxes_honour_scale_and_ratio():
    rng = np.random.default_rng(0)
    for height, width in ((224, 224), (192, 192), (300, 200)):
        boxes = np.array([sample_box(rng, height, width) for _ in range(3000)])
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
        area = h * w / (height * width)
        # sides are rounded to whole pixels: allow half a pixel on each side
        slack = (h + w) / 2 / (height * width) + 1e-9
        assert (area >= 0.2 - slack).all() and (area <= 0.5 + slack).all()
        assert area.min() < 0.21 and area.max() > 0.49  # the whole range is drawn, not one size
        aspect = w / h
        assert (aspect >= 0.75 * (1 - 1 / h.min()) - 1e-9).all() and (aspect <= 4 / 3 * (1 + 1 / h.min())).all()
        assert len({(int(t), int(x)) for t, x, _, _ in boxes}) > 1000  # positions vary too


def test_resize_is_pil_bilinear_for_float_multiband_data():
    from PIL import Image

    tile = np.random.default_rng(1).standard_normal((230, 170, 8)).astype(np.float32)
    for box in ((10, 20, 90, 120), (0, 0, 230, 170)):  # enlarging, and shrinking one axis
        top, left, h, w = box
        out = resize_box(tile, box, 192)
        assert out.shape == (192, 192, 8) and out.dtype == np.float32
        for band in (0, 7):
            pil = Image.fromarray(np.ascontiguousarray(tile[top : top + h, left : left + w, band]), mode="F")
            np.testing.assert_allclose(out[..., band], np.asarray(pil.resize((192, 192), Image.BILINEAR)), atol=1e-5)
    square = np.random.default_rng(2).standard_normal((192, 192, 8)).astype(np.float32)
    assert np.array_equal(resize_box(square, (0, 0, 192, 192), 192), square)  # same size: untouched


def test_flip_about_half_the_time_and_power_target_follows_the_image(root):
    modality = ARCH.modalities[1]  # sar_l1
    tile = ModalityFolder(root, modality, 192).raw(0)[:192, :192]
    whole = Augmentation(modality, 192, scale=(1.0, 1.0), ratio=(1.0, 1.0), power_target=True)  # box = tile
    unflipped = Augmentation(modality, 192, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0)
    plain, _ = unflipped(tile, np.random.default_rng(0))
    target = sar_l1_total_power(tile)
    rng, flips = np.random.default_rng(2), 0
    for _ in range(200):
        image, power = whole(tile, rng)
        flipped = np.array_equal(image, plain[..., ::-1])
        assert flipped or np.array_equal(image, plain)
        np.testing.assert_array_equal(power, target[..., ::-1] if flipped else target)
        flips += flipped
    assert 70 <= flips <= 130  # binomial(200, 0.5): 5 standard deviations


def test_steps_have_the_modalities_shapes_ranges_masks_and_power(root):
    step = _steps(root, batch_size=3, num_steps=1)[0]
    for images, masks, target, modality in zip(step["images"], step["masks"], step["targets"], ARCH.modalities):
        assert images.shape == (3, modality.channels, 192, 192) and images.dtype == np.float32
        mean, std = np.array(modality.mean)[:, None, None], np.array(modality.std)[:, None, None]
        unit = images * std + mean  # back to [0, 1]: the modality's conversion and normalisation
        assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5 and unit.std() > 0.05
        assert masks.shape == (3, 48, 48) and masks.dtype == np.float32
        units = masks[:, ::8, ::8]
        assert np.array_equal(np.kron(units, np.ones((1, 8, 8), np.float32)), masks)  # 32 px units
        assert (units.reshape(3, -1).sum(1) == math.ceil(36 * ARCH.mask_ratio)).all()
        if modality.name == "sar_l1":
            assert target.shape == (3, 1, 192, 192) and target.dtype == np.float32
            assert (target.min(axis=(1, 2, 3)) == 0).all() and np.allclose(target.max(axis=(1, 2, 3)), 1)
        else:
            assert target is None
    assert not np.array_equal(step["masks"][0][0], step["masks"][0][1])


def test_mask_generator_ratio_and_granularity():
    masks = MaskGenerator(192, 32, 4, 0.6)
    draws = np.stack([masks(np.random.default_rng(i)) for i in range(50)])
    assert draws.shape == (50, 48, 48) and set(np.unique(draws)) == {0.0, 1.0}
    assert (draws[:, ::8, ::8].reshape(50, -1).sum(1) == 22).all()
    assert 0.3 < draws[:, ::8, ::8].mean(0).min() and draws[:, ::8, ::8].mean(0).max() < 0.9  # every unit varies


def test_parallel_workers_repeat_runs_and_resume_give_the_same_batches(root):
    reference = _steps(root, num_steps=4)  # in-process numpy
    first = _steps(root, num_steps=4, options=PROCESSES)
    second = _steps(root, num_steps=4, options=THREADS)
    resumed = _steps(root, start=2, num_steps=2, options=PROCESSES)
    for run in (first, second):
        _assert_same_steps(run, reference)
    _assert_same_steps(resumed, reference[2:])
    assert not np.array_equal(reference[0]["images"][0], reference[1]["images"][0])
    other_seed = _steps(root, seed=4, num_steps=1)
    assert not np.array_equal(other_seed[0]["images"][2], reference[0]["images"][2])


def test_zip_gives_one_row_per_step_with_equal_batches(root):
    dataset = build_dataset(root, ARCH, 2, 0, True, num_steps=2, options=THREADS)
    names = [m.name for m in ARCH.modalities]
    expected = [f"{n}_{c}" for n in names for c in ("image", "mask")] + ["sar_l1_power"]
    assert sorted(dataset.get_col_names()) == sorted(expected)
    rows = list(dataset.create_dict_iterator(output_numpy=True, num_epochs=1))
    assert len(rows) == 2
    assert {row[c].shape[0] for row in rows for c in expected} == {2}


def test_an_epoch_visits_every_tile_once_and_ranks_read_disjoint_shares(root):
    count = 6
    single = modality_samples(root, ARCH, 3, SlotLayout(4), True)
    for sample in single:
        tiles = [sample.tile(step, slot) for step in range(3) for slot in range(4)]  # 12 = two epochs
        assert sorted(tiles[:count]) == sorted(tiles[count:]) == list(range(count))
        assert tiles[:count] != tiles[count:]  # a new order each epoch
    global_step = _steps(root, batch_size=4, num_steps=2)
    shares = [_steps(root, batch_size=2, num_steps=2, rank=r, group_size=2) for r in (0, 1)]
    for rank, share in enumerate(shares):
        for whole, part in zip(global_step, share):  # rank r holds slots r, r + 2 of the global batch
            for key in ("images", "masks"):
                for x, y in zip(whole[key], part[key]):
                    np.testing.assert_array_equal(x[rank::2], y)
    layouts = [SlotLayout(2, r, 2) for r in (0, 1)]
    for sample in single:  # within an epoch, ranks read different tiles
        first, second = ({sample.tile(0, s) for s in layout.slots()} for layout in layouts)
        assert not first & second
    with pytest.raises(ValueError, match="rank"):
        SlotLayout(2, 2, 2)


def test_mindrecord_and_folder_sources_give_identical_batches(root, tmp_path):
    """The same tiles in both layouts (the folder written from the shards' tiles) -> same steps."""
    import tifffile
    from PIL import Image

    from pretrain.data.mindrecord import MindRecordFolder
    from pretrain.tools.make_dataset import BuildOptions, build_from_root

    shards = tmp_path / "shards"
    build_from_root(root, shards, BuildOptions(progress=False), echo=lambda *a: None)
    folder = tmp_path / "folder"
    for modality in ARCH.modalities:
        source = MindRecordFolder(shards, modality, 192)
        (folder / modality.name).mkdir(parents=True)
        for i in range(len(source)):
            tile = source.raw(i)
            if tile.dtype == np.uint8 and (tile.ndim == 2 or tile.shape[-1] == 3):  # optical, sar_l2
                Image.fromarray(tile).save(folder / modality.name / f"{i:04d}.png")
            else:
                tifffile.imwrite(folder / modality.name / f"{i:04d}.tif", tile, photometric="minisblack")
    from_folder = _steps(folder, num_steps=2)
    _assert_same_steps(_steps(shards, num_steps=2, kind="mindrecord"), from_folder)
    _assert_same_steps(_steps(shards, num_steps=2, kind="mindrecord", options=PROCESSES), from_folder)


def test_dropping_an_endless_stream_leaves_no_worker_processes(root):
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    stream = multimodal_batches(root, ARCH, 1, 0, options=PROCESSES)
    next(stream)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before  # workers ran as processes
    stream.close()
    del stream
    gc.collect()
    _, alive = psutil.wait_procs([p for p in psutil.Process().children(recursive=True) if p.pid not in before],
                                 timeout=20)
    assert not alive


def test_options_from_the_config_file():
    from pretrain.config import load_config

    data = load_config(Path(__file__).resolve().parents[1] / "configs/pretrain/_base_simmim.py")["data"]
    options = PipelineOptions.from_config(data)
    assert options.crop_scale == (0.2, 0.5) and options.crop_ratio == (0.75, 4 / 3) and options.flip_prob == 0.5
    assert options.num_workers == data["num_workers"] >= 1
    assert options.position() == {"crop_scale": [0.2, 0.5], "crop_ratio": [0.75, 4 / 3], "flip_prob": 0.5}
