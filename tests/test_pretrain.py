"""Pretraining pieces: configs, SimMIM masks, DCR decoder order, the loss, data formats, counts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pretrain.config import ConfigError, apply_overrides, load_config
from pretrain.data.folder import MaskGenerator, multimodal_batches, read_raw
from pretrain.data.synthetic import generate_pretrain_data
from pretrain.models.arch import get_arch

REPO = Path(__file__).resolve().parents[1]


def test_config_inherits_and_overrides():
    cfg = load_config(REPO / "configs/pretrain/giant.py")
    assert cfg["model"]["arch"] == "giant" and cfg["train"]["device"] == "Ascend"
    assert cfg["train"]["seed"] == 0  # from the base
    cfg = apply_overrides(cfg, ["train.steps=5", "optim.betas=(0.8,0.9)", "data.root=/x"])
    assert cfg["train"]["steps"] == 5 and cfg["optim"]["betas"] == (0.8, 0.9) and cfg["data"]["root"] == "/x"
    with pytest.raises(ConfigError, match="unknown section"):
        apply_overrides(cfg, ["trian.steps=1"])


@pytest.mark.parametrize("name,low,high", [("giant", 14.7e9, 14.8e9), ("base", 1.0e9, 1.3e9)])
def test_count_params_cli(name, low, high):
    result = subprocess.run([sys.executable, str(REPO / "pretrain/train.py"), "--config",
                             str(REPO / f"configs/pretrain/{name}.py"), "--count-params"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    numbers = [int(tok.replace(",", "")) for tok in result.stdout.split() if tok.replace(",", "").isdigit()]
    assert low <= numbers[0] <= high
    if name == "giant":
        assert 1.05e9 <= numbers[1] <= 1.07e9  # one FFN per block: the paper's "1B"
        assert 2.3e9 <= numbers[2] <= 2.5e9  # activated per token


def test_mask_generator_masks_60_percent_of_32px_units():
    mask = MaskGenerator(192, 32, 4, 0.6)(np.random.default_rng(0))
    assert mask.shape == (48, 48)
    units = mask[::8, ::8]
    assert units.sum() == 22  # ceil(36 * 0.6)
    assert np.array_equal(np.kron(units, np.ones((8, 8))), mask)


def test_depth_to_space_is_tensorflow_dcr():
    import mindspore as ms

    from pretrain.models.ringmoe import depth_to_space_dcr

    block, c = 3, 2
    x = np.random.default_rng(0).standard_normal((1, block * block * c, 2, 2)).astype(np.float32)
    out = depth_to_space_dcr(ms.Tensor(x), block).asnumpy()
    for h in range(2):
        for w in range(2):
            for i in range(block):
                for j in range(block):
                    for ch in range(c):
                        assert out[0, ch, block * h + i, block * w + j] == x[0, (i * block + j) * c + ch, h, w]


def test_simmim_loss_is_masked_l1_per_modality(tiny_simmim):
    import mindspore as ms
    from mindspore import ops

    rng = np.random.default_rng(1)
    arch = tiny_simmim.arch
    images = [rng.standard_normal((1, m.channels, 192, 192)).astype(np.float32) for m in arch.modalities]
    masks = [MaskGenerator()(rng)[None] for _ in arch.modalities]
    total, per, aux = tiny_simmim(tuple(map(ms.Tensor, images)), tuple(map(ms.Tensor, masks)))
    tokens = [tiny_simmim.encoder.embed(ms.Tensor(i), m, ms.Tensor(k)) for m, (i, k) in enumerate(zip(images, masks))]
    _, z, _ = tiny_simmim.encoder.forward_tokens(ops.concat(tokens, axis=0), None)
    for m, (image, mask) in enumerate(zip(images, masks)):
        rec = tiny_simmim.reconstruct(z[m : m + 1], m).asnumpy()
        pixels = np.kron(mask, np.ones((4, 4)))[:, None]
        expected = (np.abs(image - rec) * pixels).sum() / (pixels.sum() + 1e-5) / image.shape[1]
        assert float(per[m]) == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(float(per.sum()) + float(aux), rel=1e-6)


def test_power_target_adds_a_ninth_reconstructed_channel():
    import mindspore as ms

    from pretrain.models.ringmoe import RingMoESimMIM

    arch = get_arch("tiny").replace(sar_l1_power_target=True)
    net = RingMoESimMIM(arch)
    assert net.decoder_1.weight.shape[0] == 32 * 32 * 9
    assert net.decoder_0.weight.shape[0] == 32 * 32 * 3


def test_generated_data_is_in_sensor_formats(tmp_path):
    root = generate_pretrain_data(tmp_path / "d", num_per_modality=2, size=200, seed=0)
    expected = {"optical": ((200, 200, 3), np.uint8), "sar_l1": ((200, 200, 8), np.float32),
                "sar_l2": ((200, 200), np.uint8), "msi": ((200, 200, 4), np.uint16)}
    for modality, (shape, dtype) in expected.items():
        files = sorted((root / modality).iterdir())
        assert len(files) == 2
        raw = read_raw(files[0])
        assert raw.shape == shape and raw.dtype == dtype
    assert generate_pretrain_data(tmp_path / "d", num_per_modality=2, size=200, seed=0) == root  # reused
    step = next(multimodal_batches(root, get_arch("tiny").replace(sar_l1_power_target=True), 2, seed=0,
                                   power_target=True))
    assert [x.shape for x in step["images"]] == [(2, c, 192, 192) for c in (3, 8, 3, 4)]
    assert [m.shape for m in step["masks"]] == [(2, 48, 48)] * 4
    assert step["targets"][1].shape == (2, 1, 192, 192) and step["targets"][0] is None
    assert all(np.isfinite(x).all() for x in step["images"])


def test_train_cli_rejects_a_bad_config(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "pretrain/train.py"), "--config", str(tmp_path / "no.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"train: error: config {tmp_path / 'no.py'} does not exist"]


def test_a_resumed_stream_sees_the_same_batches(tmp_path):
    root = generate_pretrain_data(tmp_path / "d", num_per_modality=2, size=200, seed=0)
    arch = get_arch("tiny")
    whole = multimodal_batches(root, arch, 1, seed=5)
    for _ in range(3):
        next(whole)
    expected = next(whole)
    resumed = next(multimodal_batches(root, arch, 1, seed=5, start=3))
    for a, b in zip(expected["images"] + expected["masks"], resumed["images"] + resumed["masks"]):
        np.testing.assert_array_equal(a, b)
    other = next(multimodal_batches(root, arch, 1, seed=5, start=4))
    assert not np.array_equal(other["masks"][0], resumed["masks"][0])
