"""Streaming writers: .pth and (sharded) safetensors round trips, atomicity, spec checks, loading
into the twin, the mmengine scheme, and the benchmark's RingMoE layout against the real model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from converters.util import ConversionError
from converters.writers import (
    INDEX_NAME,
    read_safetensors_checkpoint,
    register_mmengine_loader,
    write_plan,
    write_pth,
    write_safetensors,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
REPO = Path(__file__).resolve().parents[1]
META = {"format": "test", "nested": {"list": [1, 2.5, "x"], "none": None}, "report": {"a": "b"}}


def sample(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=gen)
    tensors = {
        "layers.0.weight": torch.randn(4, 3, 5, generator=gen),
        "layers.0.bias": torch.randn(7, generator=gen),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
        "row_view": base[2:4],  # a view with an offset into a larger storage
        "column_view": base[:, 1],  # not contiguous
        "big": torch.randn(64, 64, generator=gen),
    }
    out = {k: v.to(dtype) for k, v in tensors.items()}
    out.update(steps=torch.arange(5, dtype=torch.int64), mask=torch.tensor([True, False, True]),
               ids=torch.arange(3, dtype=torch.int32))
    return out


def specs_of(tensors: dict) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}


def assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", DTYPES)
def test_pth_round_trip(tmp_path, dtype):
    tensors = sample(dtype)
    out = write_pth(iter(tensors.items()), META, tmp_path / "model.pth")
    for mmap in (False, True):
        payload = torch.load(out, map_location="cpu", weights_only=True, mmap=mmap)
        assert set(payload) == {"state_dict", "meta"}
        assert payload["meta"] == META
        assert_same(payload["state_dict"], tensors)
    assert leftovers(tmp_path) == ["model.pth"]


def test_pth_meta_may_be_computed_after_the_tensors(tmp_path):
    seen = []
    tensors = sample(torch.float32)

    def stream():
        for item in tensors.items():
            seen.append(item[0])
            yield item

    def meta():
        assert seen == list(tensors)  # called once every tensor is written
        return META

    out = write_pth(stream(), meta, tmp_path / "late.pth")
    assert torch.load(out, weights_only=True)["meta"] == META


@pytest.mark.parametrize("dtype", DTYPES)
def test_safetensors_single_file_round_trip(tmp_path, dtype):
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = sample(dtype)
    files = write_safetensors(iter(tensors.items()), specs_of(tensors), META, tmp_path / "model.safetensors")
    assert files == [tmp_path / "model.safetensors"]
    loaded = load_file(files[0])
    assert set(loaded) == set(tensors) and all(torch.equal(loaded[k], v) for k, v in tensors.items())
    with safe_open(str(files[0]), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "pt" and json.loads(metadata["ringmoe_meta"]) == META
    state_dict, meta = read_safetensors_checkpoint(files[0])
    assert meta == META
    assert_same(state_dict, tensors)  # and in the order they were written
    with open(files[0], "rb") as f:
        assert (8 + int.from_bytes(f.read(8), "little")) % 8 == 0  # data starts 8-byte aligned
    assert leftovers(tmp_path) == ["model.safetensors"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_safetensors_sharded_round_trip_and_index(tmp_path, dtype):
    from safetensors.torch import load_file

    tensors = sample(dtype)
    limit = 64 * 64 * 2  # "big" (64x64) alone overflows it at 4 bytes per element
    out = tmp_path / "ckpt"
    files = write_safetensors(iter(tensors.items()), specs_of(tensors), META, out, max_shard_bytes=limit)
    shards = files[:-1]
    count = len(shards)
    assert count > 1 and files[-1] == out / INDEX_NAME
    assert [p.name for p in shards] == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    assert leftovers(out) == sorted(p.name for p in files)

    index = json.loads((out / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in tensors.values())
    assert json.loads(index["metadata"]["ringmoe_meta"]) == META
    assert list(index["weight_map"]) == list(tensors)
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    for shard in shards:
        part = load_file(shard)
        assert set(part) == {k for k, f in index["weight_map"].items() if f == shard.name}
        size = sum(v.numel() * v.element_size() for v in part.values())
        assert size <= limit or len(part) == 1  # a tensor above the limit gets a shard of its own
        assert all(torch.equal(v, tensors[k]) for k, v in part.items())

    for path in (out, out / INDEX_NAME):
        state_dict, meta = read_safetensors_checkpoint(path)
        assert meta == META
        assert_same(state_dict, tensors)
    assert leftovers(tmp_path) == ["ckpt"]


def test_output_replaces_an_earlier_one_of_the_other_kind(tmp_path):
    tensors = sample(torch.float32)
    out = tmp_path / "out"
    write_safetensors(iter(tensors.items()), specs_of(tensors), {"n": 1}, out)  # a file
    write_safetensors(iter(tensors.items()), specs_of(tensors), {"n": 2}, out, max_shard_bytes=1)
    assert out.is_dir() and read_safetensors_checkpoint(out)[1] == {"n": 2}
    write_safetensors(iter(tensors.items()), specs_of(tensors), {"n": 3}, out)
    assert out.is_file() and read_safetensors_checkpoint(out)[1] == {"n": 3}
    assert leftovers(tmp_path) == ["out"]


# --------------------------------------------------------------------------- failures


def failing_stream(tensors: dict, after: int):
    for i, item in enumerate(tensors.items()):
        if i == after:
            raise RuntimeError("source broke mid-stream")
        yield item


@pytest.mark.parametrize("kind", ["pth", "single", "sharded"])
def test_an_exception_mid_stream_leaves_nothing(tmp_path, kind):
    tensors = sample(torch.float16)
    out = tmp_path / ("model.pth" if kind == "pth" else "model.safetensors")
    with pytest.raises(RuntimeError, match="mid-stream"):
        if kind == "pth":
            write_pth(failing_stream(tensors, 5), META, out)
        else:
            write_safetensors(failing_stream(tensors, 5), specs_of(tensors), META, out,
                              max_shard_bytes=1 if kind == "sharded" else 2**30)
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_output(tmp_path):
    tensors = sample(torch.float32)
    out = tmp_path / "ckpt"
    write_safetensors(iter(tensors.items()), specs_of(tensors), {"n": 1}, out, max_shard_bytes=1)
    with pytest.raises(RuntimeError):
        write_safetensors(failing_stream(tensors, 3), specs_of(tensors), {"n": 2}, out, max_shard_bytes=1)
    assert read_safetensors_checkpoint(out)[1] == {"n": 1}
    assert leftovers(tmp_path) == ["ckpt"]


@pytest.mark.parametrize("problem, message", [
    ("shape", "announced"),
    ("dtype", "announced"),
    ("order", "expected"),
    ("missing", "stream ended after"),
    ("extra", "more tensors than"),
])
@pytest.mark.parametrize("shard", [2**30, 1])
def test_spec_mismatch_is_an_error_and_writes_nothing(tmp_path, problem, message, shard):
    tensors = sample(torch.float32)
    specs = specs_of(tensors)
    items = list(tensors.items())
    if problem == "shape":
        items[1] = (items[1][0], torch.zeros(8))
    elif problem == "dtype":
        items[1] = (items[1][0], items[1][1].half())
    elif problem == "order":
        items[0], items[1] = items[1], items[0]
    elif problem == "missing":
        items = items[:-1]
    else:
        items.append(("surplus", torch.zeros(1)))
    with pytest.raises(ConversionError, match=message):
        write_safetensors(iter(items), specs, META, tmp_path / "x.safetensors", max_shard_bytes=shard)
    assert leftovers(tmp_path) == []


def test_bad_specs_and_unsupported_dtypes(tmp_path):
    with pytest.raises(ConversionError, match="not supported"):
        write_safetensors(iter([]), {"c": ((2,), torch.complex64)}, {}, tmp_path / "c.safetensors")
    with pytest.raises(ConversionError, match="dtype None is not supported"):  # not numpy's default float64
        write_safetensors(iter([]), {"c": ((2,), None)}, {}, tmp_path / "c.safetensors")
    with pytest.raises(ConversionError, match="spec"):
        write_safetensors(iter([]), {"c": "bad"}, {}, tmp_path / "c.safetensors")
    with pytest.raises(ConversionError, match="not supported"):
        write_pth(iter([("c", torch.zeros(2, dtype=torch.complex64))]), {}, tmp_path / "c.pth")
    with pytest.raises(ConversionError, match="twice"):
        write_pth(iter([("a", torch.zeros(2)), ("a", torch.zeros(2))]), {}, tmp_path / "c.pth")
    assert leftovers(tmp_path) == []


def test_reading_bad_inputs_fails_in_one_line(tmp_path):
    with pytest.raises(ConversionError, match="no such file"):
        read_safetensors_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00notjs")
    with pytest.raises(ConversionError, match="not a safetensors file"):
        read_safetensors_checkpoint(tmp_path / "junk.safetensors")
    tensors = sample(torch.float32)
    out = tmp_path / "sharded"
    files = write_safetensors(iter(tensors.items()), specs_of(tensors), META, out, max_shard_bytes=1)
    files[0].unlink()
    with pytest.raises(ConversionError, match="missing"):
        read_safetensors_checkpoint(out)


# --------------------------------------------------------------------------- the converter's outputs


@pytest.fixture(scope="module")
def tiny_outputs(tiny_ms_checkpoint, tmp_path_factory):
    from converters.ringmoe import open_source, plan

    root = tmp_path_factory.mktemp("writers")
    outputs = {}
    for name, fmt, shard in (("single", "safetensors", 2**30), ("sharded", "safetensors", 8 * 2**20),
                             ("pth", "pth", None)):
        source = open_source(tiny_ms_checkpoint)
        try:
            checked = plan(source, "tiny", check_in_background=name == "single")  # as the CLI does
            target = root / ("tiny.pth" if fmt == "pth" else f"tiny-{name}.safetensors")
            files, _ = write_plan(checked, target, fmt, shard) if shard else write_plan(checked, target, fmt)
        finally:
            source.close()
        outputs[name] = target
        if name == "sharded":
            assert len(files) > 2
    return outputs


def test_plan_outputs_equal_the_in_memory_conversion(tiny_outputs, tiny_converted):
    from benchmarks.models.loading import read_converted

    want_sd, want_meta = read_converted(tiny_converted)
    for name, path in tiny_outputs.items():
        state_dict, meta = read_converted(path)
        assert meta == want_meta, name
        assert list(state_dict) == list(want_sd), name
        assert all(torch.equal(state_dict[k], v) for k, v in want_sd.items()), name


def test_safetensors_outputs_load_into_the_twin(tiny_outputs, tiny_converted):
    from benchmarks.models.loading import CoverageError, load_pretrained, read_converted
    from benchmarks.models.ringmoe import RingMoE

    reference = RingMoE(modality="sar_l1")
    want = load_pretrained(reference, tiny_converted).to_dict()
    for path in (tiny_outputs["single"], tiny_outputs["sharded"], tiny_outputs["sharded"] / INDEX_NAME,
                 f"safetensors://{tiny_outputs['single']}"):
        twin = RingMoE(modality="sar_l1")
        assert load_pretrained(twin, path).to_dict() == want
        got = twin.state_dict()
        assert all(torch.equal(got[k], v) for k, v in reference.state_dict().items())
    with pytest.raises(CoverageError, match="does not exist"):
        read_converted(tiny_outputs["single"].with_name("absent.safetensors"))


def test_safetensors_without_converter_meta_is_refused(tmp_path):
    from benchmarks.models.loading import CoverageError, read_converted

    path = tmp_path / "other.safetensors"
    write_safetensors(iter([("w", torch.zeros(2))]), {"w": ((2,), torch.float32)}, {"format": "else"}, path)
    with pytest.raises(CoverageError, match="not a converted RingMoE checkpoint"):
        read_converted(path)


def test_mmengine_scheme(tiny_outputs):
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

    register_mmengine_loader()
    register_mmengine_loader()  # idempotent
    for path in (tiny_outputs["single"], tiny_outputs["sharded"]):
        checkpoint = _load_checkpoint(f"safetensors://{path}", map_location="cpu")
        assert set(checkpoint) == {"state_dict", "meta"}
        assert checkpoint["meta"]["architecture"] == "ringmoe"
        assert "norm.weight" in checkpoint["state_dict"]
    assert CheckpointLoader._get_checkpoint_loader("safetensors:///x").__name__ == "load_from_safetensors"


# --------------------------------------------------------------------------- the benchmark's layout


def test_layout_matches_the_mindspore_model(tiny_simmim, tiny_ms_checkpoint):
    from benchmarks.perf.convert_perf import ringmoe_layout
    from converters.ckpt_io import scan_checkpoint

    layout = ringmoe_layout(tiny_simmim.arch)
    real = [(p.name, tuple(p.shape), str(p.dtype)) for p in tiny_simmim.get_parameters()]
    assert [(n, s, d) for n, s, d in layout] == real
    index = scan_checkpoint(tiny_ms_checkpoint)
    assert [(n, s, d) for n, s, d in layout] == [(r.name, r.shape, r.dtype) for r in index.values()][:len(layout)]


def test_generated_checkpoint_reads_like_a_real_one(tmp_path, monkeypatch):
    """Small config, records cut at 4 KiB: our reader, MindSpore and the converter all accept it."""
    import mindspore as ms

    from benchmarks.perf import convert_perf
    from converters.ckpt_io import iter_tensors
    from converters.ringmoe import open_source, plan
    from pretrain.models.arch import get_arch

    monkeypatch.setattr(convert_perf, "MS_CUT", 4096)
    arch = get_arch("tiny").replace(depths=(2, 2), num_heads=(1, 2), img_size=96)
    path = convert_perf.write_fake_checkpoint(tmp_path / "fake.ckpt", arch, "small")
    layout = convert_perf.ringmoe_layout(arch)
    ours = dict(iter_tensors(path))
    assert list(ours) == [n for n, _, _ in layout] + ["ringmoe_meta", "step_num"]
    assert all(ours[n].shape == s for n, s, _ in layout)
    assert json.loads(str(ours["ringmoe_meta"]))["config"] == "small"
    theirs = ms.load_checkpoint(str(path))
    for name, _, _ in layout:
        assert np.array_equal(theirs[name].asnumpy(), ours[name]), name
    source = open_source(path)
    try:
        checked = plan(source)
        assert checked.arch["depths"] == [2, 2] and checked.pretrain_meta["config"] == "small"
    finally:
        source.close()
    assert os.path.getsize(path) > convert_perf.layout_bytes(arch)


# --------------------------------------------------------------------------- write paths


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("prefetch", [True, False])
def test_direct_and_buffered_io_with_and_without_prefetch(tmp_path, monkeypatch, direct, prefetch):
    from converters import writers

    monkeypatch.setattr(writers, "_DIRECT_IO", direct)
    monkeypatch.setattr(writers, "_STAGE", 8192)  # many staging flushes, and a padded tail
    tensors = sample(torch.bfloat16)
    single = write_safetensors(iter(tensors.items()), specs_of(tensors), META, tmp_path / "a.safetensors",
                               prefetch=prefetch)[0]
    assert_same(read_safetensors_checkpoint(single)[0], tensors)
    sharded = write_safetensors(iter(tensors.items()), specs_of(tensors), META, tmp_path / "b",
                                max_shard_bytes=4096, prefetch=prefetch)
    assert_same(read_safetensors_checkpoint(sharded[-1])[0], tensors)
    pth = write_pth(iter(tensors.items()), META, tmp_path / "c.pth", prefetch=prefetch)
    assert_same(torch.load(pth, weights_only=True)["state_dict"], tensors)


@pytest.mark.parametrize("reserve", [None, 0])
def test_metadata_resolved_after_the_data(tmp_path, monkeypatch, reserve):
    """A callable (or future) meta: header room is reserved, or the file is rewritten if it overflows."""
    from concurrent.futures import ThreadPoolExecutor

    from safetensors.torch import load_file

    from converters import writers
    from converters.ckpt_io import scan_checkpoint

    if reserve is not None:
        monkeypatch.setattr(writers, "_meta_reserve", lambda count: reserve)
    tensors = sample(torch.float16)
    out = write_safetensors(iter(tensors.items()), specs_of(tensors), lambda: META, tmp_path / "late.safetensors")[0]
    state_dict, meta = read_safetensors_checkpoint(out)
    assert meta == META
    assert_same(state_dict, tensors)
    loaded = load_file(out)  # the reference reader accepts the space-padded header
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert set(scan_checkpoint(out)) == set(tensors)  # and so does our MindSpore-side reader
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(lambda: META)
        write_safetensors(iter(tensors.items()), specs_of(tensors), future, tmp_path / "future.safetensors")
    assert read_safetensors_checkpoint(tmp_path / "future.safetensors")[1] == META
    assert sorted(leftovers(tmp_path)) == ["future.safetensors", "late.safetensors"]


def test_a_failing_meta_leaves_nothing(tmp_path):
    def broken():
        raise RuntimeError("hashing failed")

    tensors = sample(torch.float32)
    for out, kwargs in ((tmp_path / "a.safetensors", {}), (tmp_path / "b", {"max_shard_bytes": 1})):
        with pytest.raises(RuntimeError, match="hashing failed"):
            write_safetensors(iter(tensors.items()), specs_of(tensors), broken, out, **kwargs)
    with pytest.raises(RuntimeError, match="hashing failed"):
        write_pth(iter(tensors.items()), broken, tmp_path / "c.pth")
    assert leftovers(tmp_path) == []


def test_atomic_write_publishes_with_the_usual_mode_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    from converters.util import atomic_write

    target = tmp_path / "out.json"
    old = os.umask(0o022)
    try:
        with atomic_write(target, "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert target.read_text() == "{}"
    assert target.stat().st_mode & 0o777 == 0o644  # readable by others, as open() would make it
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


# --------------------------------------------------------------------------- tensors copied from the source file


def raw_file(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> tuple[Path, dict[str, tuple[int, int]]]:
    """The tensors' bytes back to back after a 100-byte preamble; {name: (offset, length)}."""
    path, where, offset = tmp_path / "source.bin", {}, 100
    with open(path, "wb") as f:
        f.write(b"x" * offset)
        for name, tensor in tensors.items():
            data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            f.write(data)
            where[name] = (offset, len(data))
            offset += len(data)
    return path, where


def as_slices(fd: int, path: Path, tensors: dict, where: dict, split: bool = True):
    """Each tensor as FileSlices, in two pieces where it has at least two bytes (like MindSpore's split records)."""
    from converters.writers import FileSlices

    for name, tensor in tensors.items():
        offset, length = where[name]
        half = length // 2 if split and length >= 2 else length
        pieces = ((offset, half), (offset + half, length - half)) if half < length else ((offset, length),)
        yield name, FileSlices(fd, pieces, tuple(tensor.shape), tensor.dtype, str(path))


@pytest.mark.parametrize("direct", [True, False])
def test_file_slices_are_copied_byte_for_byte_across_staging_buffers(tmp_path, monkeypatch, direct):
    from converters import writers

    monkeypatch.setattr(writers, "_DIRECT_IO", direct)
    monkeypatch.setattr(writers, "_STAGE", 8192)  # tensors straddle buffers; every buffer gets queued
    tensors = sample(torch.float32)
    tensors = {k: v for k, v in tensors.items() if v.dtype != torch.bool}
    path, where = raw_file(tmp_path, tensors)
    fd = os.open(path, os.O_RDONLY)
    try:
        mixed = dict(as_slices(fd, path, tensors, where))
        mixed["big"] = tensors["big"]  # slices and tensors interleave in one stream
        out = write_safetensors(iter(mixed.items()), specs_of(tensors), META, tmp_path / "out.safetensors")
        sharded = write_safetensors(as_slices(fd, path, tensors, where), specs_of(tensors), META,
                                    tmp_path / "shards", max_shard_bytes=4096)
    finally:
        os.close(fd)
    assert_same(read_safetensors_checkpoint(out[0])[0], tensors)
    assert_same(read_safetensors_checkpoint(sharded[-1])[0], tensors)


@pytest.mark.parametrize("problem, message", [
    ("truncated", "file ended at byte"),
    ("short", "holds 28 bytes for it"),
])
def test_bad_file_slices_fail_in_one_line_and_write_nothing(tmp_path, problem, message):
    from converters.writers import FileSlices

    tensors = {"a": torch.arange(6, dtype=torch.float32), "b": torch.arange(8, dtype=torch.float32)}
    path, where = raw_file(tmp_path, tensors)
    fd = os.open(path, os.O_RDONLY)
    offset, length = where["b"]
    if problem == "truncated":  # the file is shorter than the record said: cut it under the reader
        os.truncate(path, offset + 4)
        pieces = ((offset, length),)
    else:
        pieces = ((offset, length - 4),)
    stream = [("a", tensors["a"]), ("b", FileSlices(fd, pieces, (8,), torch.float32, str(path)))]
    (tmp_path / "out").mkdir()
    try:
        with pytest.raises(ConversionError, match=message) as caught:
            write_safetensors(iter(stream), specs_of(tensors), META, tmp_path / "out" / "m.safetensors")
    finally:
        os.close(fd)
    assert "\n" not in str(caught.value)
    assert leftovers(tmp_path / "out") == []


def test_a_disk_error_in_the_writer_thread_reaches_the_caller_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import threading

    from converters import writers

    monkeypatch.setattr(writers, "_STAGE", 8192)
    calls = {"n": 0}
    real_pwrite = os.pwrite

    def full_disk(fd, data, offset):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(writers.os, "pwrite", full_disk)
    tensors = {f"t{i}": torch.full((1024,), float(i)) for i in range(8)}  # 32 KiB: four buffers
    before = threading.active_count()
    with pytest.raises(OSError, match="No space left"):
        write_safetensors(iter(tensors.items()), specs_of(tensors), META, tmp_path / "m.safetensors")
    assert leftovers(tmp_path) == []
    assert threading.active_count() == before  # the writer thread was joined


@pytest.mark.parametrize("reserved", ["exact", "more", "less", "none"])
def test_writes_in_flight_finish_in_any_order_into_a_preallocated_file(tmp_path, monkeypatch, reserved):
    """Several writer threads, the first write slowest: the file is still byte-exact, its length
    true whether the blocks reserved up front were exact, too many, too few or none."""
    from converters import writers

    monkeypatch.setattr(writers, "_STAGE", 8192)
    monkeypatch.setattr(writers, "_WRITERS", 3)
    real_pwrite = os.pwrite
    order = []

    def first_write_slow(fd, data, offset):
        if offset == 0:
            time.sleep(0.05)
        order.append(offset)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(writers.os, "pwrite", first_write_slow)
    payload = np.random.default_rng(0).integers(0, 256, 5 * 8192 + 100, dtype=np.uint8).tobytes()
    size = {"exact": len(payload), "more": 10 * len(payload), "less": 100, "none": None}[reserved]
    path = tmp_path / "out.bin"
    path.touch()
    f = writers._SequentialFile(path, size=size)
    try:
        f.write(payload[:3000])
        f.write(payload[3000:])
        f.close()
    finally:
        f.abort()
    assert path.read_bytes() == payload
    assert order[0] != 0  # a later buffer landed first


def test_plan_streams_identity_tensors_straight_from_the_file(tiny_ms_checkpoint):
    from converters.ringmoe import open_source, plan
    from converters.writers import FileSlices

    source = open_source(tiny_ms_checkpoint)
    try:
        kinds = {}
        for dtype in ("fp32", "fp16", "bf16"):
            checked = plan(source, "tiny", dtype)
            items = list(checked.tensors(for_safetensors=True))
            kinds[dtype] = {type(value).__name__ for _, value in items}
            transforms = {checked.mapped[s][0]: checked.mapped[s][1] for s in checked.mapped}
            for target, value in items:  # transposed tensors must still come as converted arrays
                if isinstance(value, FileSlices):
                    assert transforms[target] == "identity" and value.dtype == "float32", target
        assert kinds["fp32"] == {"FileSlices", "ndarray"}  # the rest (transposes) are converted by numpy
        assert kinds["fp16"] == {"ndarray"}  # a dtype change is never a byte copy
        assert kinds["bf16"] == {"Tensor"}  # numpy has no bfloat16: torch casts
        assert all(isinstance(v, torch.Tensor) for _, v in checked.tensors())  # default: torch tensors
    finally:
        source.close()


def test_numpy_casts_give_torch_bytes():
    """The safetensors path casts with numpy; torch's .to() must not have given other bytes."""
    from converters.ringmoe import _numpy_cast

    rng = np.random.default_rng(0)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 1e5, 6.1e-5, 5.96e-8, 2.98e-8, 1e-9,
               np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1.00048828125, 1.0009765625 + 2**-12]
    wide = rng.standard_normal(200_000) * np.exp(rng.uniform(-40, 25, 200_000))
    for source, values in (("Float32", np.float32), ("Float16", np.float16)):
        with np.errstate(over="ignore"):
            array = np.concatenate([np.array(special), -np.array(special), wide]).astype(values)
        for target in ("float32", "float16"):
            got = _numpy_cast(array, source, target)
            want = torch.from_numpy(array).to(getattr(torch, target)).numpy()
            assert got.dtype == want.dtype, (source, target)
            assert np.array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}")), (source, target)
        assert _numpy_cast(array, source, "bfloat16") is None  # left to torch
    # torch rounds float64 to float16 twice (through float32), numpy once: left to torch
    assert _numpy_cast(np.array([-573.7499952047478]), "Float64", "float16") is None
    assert _numpy_cast(np.arange(4, dtype=np.uint16), "BFloat16", "float32") is None  # raw bf16 words
    integers = np.arange(4, dtype=np.int64)
    assert _numpy_cast(integers, "Int64", "float16") is integers  # integers keep their dtype


def test_writing_safetensors_needs_no_torch(tiny_ms_checkpoint, tiny_converted, tmp_path):
    """The CLI's process never imports torch for a safetensors output: plan, numpy transforms and
    casts, header, writes and report run without it; the twin checks run in the helper."""
    from benchmarks.models.loading import read_converted

    out = tmp_path / "free.safetensors"
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch here fails (the helper is a fresh interpreter)
from converters.ms2torch import main
sys.exit(main([{str(tiny_ms_checkpoint)!r}, "-o", {str(out)!r}, "--format", "safetensors"]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "backbone parameters for one modality" in result.stdout  # counted in the helper
    state_dict, meta = read_converted(out)
    want_sd, want_meta = read_converted(tiny_converted)
    assert meta == want_meta and list(state_dict) == list(want_sd)
    assert all(torch.equal(state_dict[k], v) for k, v in want_sd.items())


@pytest.mark.parametrize("fmt, in_helper", [("safetensors", True), ("safetensors", False), ("pth", False)])
def test_a_failing_twin_check_in_the_background_stops_the_writer(tiny_ms_checkpoint, tmp_path, monkeypatch, fmt,
                                                                 in_helper):
    """The check against the twin runs beside the writes; when it fails, nothing is installed."""
    from converters import ringmoe
    from converters.util import in_background

    real = ringmoe.build_twin_shapes

    def twin_with_one_more_parameter(arch, modalities):
        time.sleep(0.2)  # fail while tensors stream, not before
        return {**real(arch, modalities), "head.weight": (10, 32)}

    monkeypatch.setattr(ringmoe, "build_twin_shapes", twin_with_one_more_parameter)
    # The helper interpreter would import the real one: this test's helper is a thread.
    monkeypatch.setattr(ringmoe, "in_subprocess", lambda fn, *args: in_background(lambda: fn(*args), "test-helper"))
    source = ringmoe.open_source(tiny_ms_checkpoint)
    try:
        checked = ringmoe.plan(source, "tiny", check_in_background=True, check_in_helper=in_helper)
        with pytest.raises(ConversionError, match="lacks 1 tensors the model needs.*head.weight"):
            write_plan(checked, tmp_path / f"x.{fmt}", fmt)
    finally:
        source.close()
    assert leftovers(tmp_path) == []


def test_a_failed_twin_check_stops_the_stream_at_the_next_tensor(tiny_ms_checkpoint):
    from concurrent.futures import Future

    from converters import ringmoe

    failed: Future = Future()
    failed.set_exception(ConversionError("checkpoint lacks 1 tensors the model needs"))
    source = ringmoe.open_source(tiny_ms_checkpoint)
    try:
        checked = ringmoe.plan(source, "tiny")
        checked.twin_check = failed
        with pytest.raises(ConversionError, match="lacks"):
            next(checked.tensors(for_safetensors=True))
        with pytest.raises(ConversionError, match="lacks"):
            checked.meta()
    finally:
        source.close()
