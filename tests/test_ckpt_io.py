"""Tests for converters.ckpt_io against files written by the real MindSpore and by hand."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.ckpt_io import (
    CheckpointError,
    CheckpointIndex,
    has_crc_footer,
    iter_tensors,
    read_tensor,
    scan_checkpoint,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- protobuf by hand


from converters.pb_encode import length_delimited as ld  # noqa: E402
from converters.pb_encode import varint  # noqa: E402


def tensor_proto(dims, dtype: str, content: bytes, packed: bool = False, extra: bytes = b"") -> bytes:
    if packed:
        dims_bytes = ld(1, b"".join(varint(d) for d in dims))
    else:
        dims_bytes = b"".join(varint(1 << 3) + varint(d) for d in dims)
    return dims_bytes + ld(2, dtype.encode()) + extra + ld(3, content)


def record(tag: str, dims, dtype: str, content: bytes, **kwargs) -> bytes:
    """One top-level Checkpoint message holding one Value."""
    return ld(1, ld(1, tag.encode()) + ld(2, tensor_proto(dims, dtype, content, **kwargs)))


def with_crc(data: bytes) -> bytes:
    return data + b"crc_num" + zlib.crc32(data).to_bytes(10, "big")


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    body = b""
    names = {np.dtype("float32"): "F32", np.dtype("int8"): "I8", np.dtype("bool"): "BOOL",
             np.dtype("uint16"): "BF16", np.dtype("int64"): "I64"}
    for name, arr in tensors.items():
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [len(body), len(body) + arr.nbytes]}
        body += arr.tobytes()
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read_all(path) -> dict[str, np.ndarray]:
    return dict(iter_tensors(path))


def assert_one_line(exc: CheckpointError, path) -> None:
    text = str(exc)
    assert "\n" not in text
    assert str(path) in text


# --------------------------------------------------------------------------- MindSpore files


@pytest.fixture(scope="module")
def ms():
    import mindspore

    return mindspore


def _int4_unpacked(raw: np.ndarray) -> np.ndarray:
    """Reference unpack: low nibble first, each nibble sign-extended."""
    out = []
    for byte in raw.astype(np.uint8).ravel().tolist():
        for nibble in (byte & 0xF, byte >> 4):
            out.append(nibble - 16 if nibble >= 8 else nibble)
    return np.array(out, dtype=np.int8).reshape(raw.shape[:-1] + (2 * raw.shape[-1],))


def _sources() -> dict[str, tuple[np.ndarray, str]]:
    """name -> (numpy data, mindspore dtype attribute)."""
    rng = np.random.default_rng(0)
    floats = rng.standard_normal((3, 5))
    floats[0, :4] = [np.inf, -np.inf, -0.0, 1e-30]
    bf16 = (rng.standard_normal((4, 3)).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    src = {
        "f16": (floats.astype(np.float16), "float16"),
        "f32": (floats.astype(np.float32), "float32"),
        "f64": (floats, "float64"),
        "bf16": (bf16, "bfloat16"),
        "bool": (rng.integers(0, 2, (2, 3, 2)).astype(bool), "bool_"),
        "int4": (rng.integers(-128, 128, (3, 4)).astype(np.int8), "qint4x2"),
    }
    for bits in (8, 16, 32, 64):
        info = np.iinfo(f"int{bits}")
        src[f"i{bits}"] = (rng.integers(info.min, info.max, (4, 2), dtype=f"int{bits}", endpoint=True),
                           f"int{bits}")
        uinfo = np.iinfo(f"uint{bits}")
        src[f"u{bits}"] = (rng.integers(0, uinfo.max, (2, 4), dtype=f"uint{bits}", endpoint=True),
                           f"uint{bits}")
    src["scalar_f32"] = (np.array(3.25, dtype=np.float32), "float32")
    src["scalar_i64"] = (np.array(-7, dtype=np.int64), "int64")
    return src


def _expected(name: str, data: np.ndarray) -> np.ndarray:
    if name == "bf16":
        return (data.view(np.uint32) >> 16).astype(np.uint16)
    if name == "int4":
        return _int4_unpacked(data)
    return data


@pytest.fixture(scope="module")
def ms_tensors(ms):
    """(save list, expected arrays) covering every dtype MindSpore 2.10 can save."""
    items, expected = [], {}
    for name, (data, ms_dtype) in _sources().items():
        dtype = getattr(ms, ms_dtype)
        if ms_dtype == "qint4x2":  # raw packed bytes, no value conversion
            tensor = ms.Tensor(data.view(np.int8), dtype=dtype)
        elif ms_dtype == "bfloat16":
            tensor = ms.Tensor(data, dtype=dtype)
        else:
            tensor = ms.Tensor(data)
        items.append({"name": name, "data": tensor})
        expected[name] = _expected(name, data)
    items.append({"name": "param0d", "data": ms.Parameter(ms.Tensor(np.float32(2.5)), name="param0d")})
    expected["param0d"] = np.array(2.5, dtype=np.float32)
    return items, expected


@pytest.fixture(scope="module")
def ms_ckpt(ms, ms_tensors, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ms") / "all.ckpt"
    ms.save_checkpoint(ms_tensors[0], str(path))
    return path


def assert_bit_exact(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()
    assert actual.flags.c_contiguous


def test_every_dtype_round_trips(ms_ckpt, ms_tensors):
    expected = ms_tensors[1]
    index = scan_checkpoint(ms_ckpt)
    assert list(index) == list(expected)
    assert index.format == "ckpt" and not index.has_crc and index.maptensor_names == []
    dtypes = {name: rec.dtype for name, rec in index.items()}
    assert dtypes["bf16"] == "BFloat16" and dtypes["int4"] == "Int4" and dtypes["bool"] == "Bool"
    assert index["int4"].shape == (3, 4)  # MindSpore stores the packed shape
    for name, array in iter_tensors(ms_ckpt):
        assert_bit_exact(array, expected[name])
    assert index["scalar_f32"].shape == () and index["param0d"].shape == ()


def test_bfloat16_views_as_torch(ms_ckpt, ms_tensors):
    import torch

    words = read_tensor(ms_ckpt, scan_checkpoint(ms_ckpt)["bf16"])
    values = torch.from_numpy(words).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(values, _sources()["bf16"][0])


def test_read_tensor_accepts_file_object(ms_ckpt, ms_tensors):
    index = scan_checkpoint(ms_ckpt)
    with open(ms_ckpt, "rb") as f:
        for name in ("f64", "u8", "scalar_i64"):
            assert_bit_exact(read_tensor(f, index[name]), ms_tensors[1][name])


def test_append_dict_entries(ms, tmp_path):
    path = tmp_path / "append.ckpt"
    append = {"epoch_num": 3, "big": -(2**40), "lr": 0.125, "flag": True, "note": "héllo ✓", "empty": ""}
    ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.ones((2, 2), np.float32))}], str(path),
                       append_dict=append)
    index = scan_checkpoint(path)
    assert {k: (r.dtype, r.shape) for k, r in index.items() if k != "w"} == {
        "epoch_num": ("Int64", ()), "big": ("Int64", ()), "lr": ("Float32", ()),
        "flag": ("Bool", ()), "note": ("str", ()), "empty": ("str", ())}
    values = read_all(path)
    assert values["epoch_num"].dtype == np.int64 and values["epoch_num"] == 3
    assert values["big"] == -(2**40)
    assert values["lr"].dtype == np.float32 and values["lr"] == 0.125
    assert values["flag"].dtype == np.bool_ and values["flag"].shape == () and values["flag"]
    assert values["note"].shape == () and str(values["note"]) == "héllo ✓"
    assert str(values["empty"]) == ""


def test_crc_footer_valid(ms, ms_tensors, tmp_path):
    path = tmp_path / "crc.ckpt"
    ms.save_checkpoint(ms_tensors[0], str(path), crc_check=True)
    data = path.read_bytes()
    assert data[-17:-10] == b"crc_num"
    assert int.from_bytes(data[-10:], "big") == zlib.crc32(data[:-17])
    assert has_crc_footer(path)
    index = scan_checkpoint(path)
    assert index.has_crc and list(index) == list(ms_tensors[1])
    for name, array in iter_tensors(path):
        assert_bit_exact(array, ms_tensors[1][name])


def test_crc_footer_detects_flipped_bit(ms, ms_tensors, tmp_path):
    path = tmp_path / "crc.ckpt"
    ms.save_checkpoint(ms_tensors[0], str(path), crc_check=True)
    offset = scan_checkpoint(path)["f32"].offsets[0][0] + 5
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    bad = write(tmp_path / "bad.ckpt", bytes(data))
    with pytest.raises(CheckpointError, match="CRC mismatch") as info:
        scan_checkpoint(bad)
    assert_one_line(info.value, bad)
    with pytest.raises(CheckpointError, match="CRC mismatch"):
        list(iter_tensors(bad))
    # The structure is intact, so skipping verification reads the damaged value.
    assert not np.array_equal(read_all_unverified(bad)["f32"], ms_tensors[1]["f32"])


def read_all_unverified(path) -> dict[str, np.ndarray]:
    return dict(iter_tensors(path, verify_crc=False))


def test_no_footer_without_crc_check(ms_ckpt):
    assert not has_crc_footer(ms_ckpt)


def test_safetensors_format(ms, ms_tensors, tmp_path):
    path = tmp_path / "all.safetensors"
    ms.save_checkpoint(ms_tensors[0], str(path), format="safetensors")
    index = scan_checkpoint(path)
    assert index.format == "safetensors" and index.metadata["format"] == "ms"
    assert not index.has_crc and not has_crc_footer(path)
    assert sorted(index) == sorted(ms_tensors[1])
    assert index["int4"].dtype == "Int4" and index["bf16"].dtype == "BFloat16"
    for name, array in iter_tensors(path):
        assert_bit_exact(array, ms_tensors[1][name])


def test_safetensors_crc(ms, ms_tensors, tmp_path):
    # MindSpore 2.10 cannot CRC float16 arrays ("cannot include dtype 'E' in a buffer") or
    # negative 0-d integers in safetensors, and CRCs a 0-d integer n as n zero bytes.
    items = [item for item in ms_tensors[0] if item["name"] not in ("f16", "bf16", "scalar_i64")]
    items.append({"name": "step", "data": ms.Tensor(np.int64(12))})
    path = tmp_path / "crc.safetensors"
    ms.save_checkpoint(items, str(path), format="safetensors", crc_check=True)
    assert scan_checkpoint(path).has_crc
    expected = dict(ms_tensors[1], step=np.array(12, np.int64))
    for name, array in iter_tensors(path):
        assert_bit_exact(array, expected[name])
    record = scan_checkpoint(path)["f64"]
    data = bytearray(path.read_bytes())
    data[record.offsets[0][0]] ^= 1
    bad = write(tmp_path / "bad.safetensors", bytes(data))
    with pytest.raises(CheckpointError, match="CRC mismatch"):
        scan_checkpoint(bad)


def test_mindspore_split_records(ms, tmp_path, monkeypatch):
    """Shrink MindSpore's 512 MiB slice size to 1 KiB so it splits records itself."""
    import mindspore.train.serialization as serialization

    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)
    data = np.arange(3 * 700, dtype=np.float32).reshape(3, 700)  # 8.2 KiB -> 9 pieces
    items = [{"name": "big", "data": ms.Tensor(data)}, {"name": "small", "data": ms.Tensor(data[:1, :4])}]
    plain = tmp_path / "plain.ckpt"
    ms.save_checkpoint(items, str(plain))  # byte cuts every 1024 bytes
    asyn = tmp_path / "async.ckpt"
    ms.save_checkpoint(items, str(asyn), async_save=True)  # np.array_split: 3 rows, 6 empty
    for thread in threading.enumerate():
        if thread.name == "asyn_save_ckpt":
            thread.join()
    plain_index, async_index = scan_checkpoint(plain), scan_checkpoint(asyn)
    assert len(plain_index["big"].offsets) == 9
    assert [n for _, n in async_index["big"].offsets].count(0) == 6
    for path in (plain, asyn):
        values = read_all(path)
        assert_bit_exact(values["big"], data)
        assert_bit_exact(values["small"], data[:1, :4])


@pytest.mark.parametrize("mode", ["AES-GCM", "AES-CBC", "SM4-CBC"])
def test_encrypted_file_is_refused(ms, tmp_path, mode):
    path = tmp_path / "enc.ckpt"
    ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.ones(4, np.float32))}], str(path),
                       enc_key=b"0123456789abcdef", enc_mode=mode)
    with pytest.raises(CheckpointError, match="encrypted") as info:
        scan_checkpoint(path)
    assert_one_line(info.value, path)


def test_truncated_files(ms_ckpt, ms_tensors, tmp_path):
    data = ms_ckpt.read_bytes()
    index = scan_checkpoint(ms_ckpt)
    first, second = list(index.values())[:2]
    boundary = first.offsets[-1][0] + first.offsets[-1][1]  # content is the last field written
    cut = write(tmp_path / "cut.ckpt", data[:boundary])
    assert list(scan_checkpoint(cut)) == [first.name]
    assert_bit_exact(read_all(cut)[first.name], ms_tensors[1][first.name])
    for size in (boundary + 3, second.offsets[0][0] + 2, len(data) - 1):
        mid = write(tmp_path / f"mid{size}.ckpt", data[:size])
        with pytest.raises(CheckpointError, match=r"truncated.*at byte \d+") as info:
            scan_checkpoint(mid)
        assert_one_line(info.value, mid)


# --------------------------------------------------------------------------- hand-made files


def test_split_record_with_empty_piece(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(2, 6)
    pieces = np.array_split(data, 3)  # rows 1, 1, 0
    assert pieces[-1].size == 0
    blob = b"".join(record("w", [2, 6], "Float32", p.tobytes()) for p in pieces)
    blob += record("b", [3], "Int16", np.array([1, -2, 3], np.int16).tobytes())
    path = write(tmp_path / "split.ckpt", blob)
    index = scan_checkpoint(path)
    assert [n for _, n in index["w"].offsets] == [24, 24, 0]
    assert index["w"].nbytes == 48 and index["w"].shape == (2, 6)
    assert_bit_exact(read_tensor(path, index["w"]), data)
    assert read_all(path)["b"].tolist() == [1, -2, 3]


def test_split_pieces_must_agree(tmp_path):
    blob = record("w", [2, 2], "Float32", b"\0" * 8) + record("w", [4], "Float32", b"\0" * 8)
    path = write(tmp_path / "bad.ckpt", blob)
    with pytest.raises(CheckpointError, match="disagree"):
        scan_checkpoint(path)


def test_non_consecutive_duplicate_is_refused(tmp_path):
    blob = record("w", [1], "Int8", b"\1") + record("x", [1], "Int8", b"\1") + record("w", [1], "Int8", b"\1")
    with pytest.raises(CheckpointError, match="twice"):
        scan_checkpoint(write(tmp_path / "dup.ckpt", blob))


def test_packed_dims_and_unknown_fields(tmp_path):
    unknown = varint(9 << 3 | 0) + varint(300) + varint(10 << 3 | 1) + b"8bytes!!" \
        + varint(11 << 3 | 5) + b"4byt" + ld(12, b"whatever")
    data = np.arange(6, dtype=np.int32).reshape(3, 2)
    value = ld(1, b"w") + unknown + ld(2, tensor_proto([3, 2], "Int32", data.tobytes(), packed=True,
                                                        extra=unknown))
    blob = ld(7, b"top-level junk") + ld(1, value) + varint(8 << 3) + varint(5)
    path = write(tmp_path / "packed.ckpt", blob)
    assert_bit_exact(read_all(path)["w"], data)


def test_zero_dim_old_writer_and_empty(tmp_path):
    blob = record("old0d", [0], "Float64", np.float64(1.5).tobytes()) + record("empty", [0], "Float32", b"")
    path = write(tmp_path / "old.ckpt", blob)
    index = scan_checkpoint(path)
    assert index["old0d"].shape == () and index["empty"].shape == (0,)
    values = read_all(path)
    assert values["old0d"].shape == () and values["old0d"] == 1.5
    assert values["empty"].shape == (0,) and values["empty"].dtype == np.float32


def test_int4_nibble_order(tmp_path):
    blob = record("q", [2], "Int4", bytes([0x21, 0x8F]))
    assert read_all(write(tmp_path / "q.ckpt", blob))["q"].tolist() == [1, 2, -1, -8]


def test_maptensor_is_listed_not_indexed(tmp_path):
    maptensor = ld(1, ld(1, b"table") + ld(3, ld(1, tensor_proto([1], "Int64", b"\0" * 8))))
    blob = record("w", [1], "Int8", b"\7") + maptensor
    index = scan_checkpoint(write(tmp_path / "map.ckpt", blob))
    assert list(index) == ["w"] and index.maptensor_names == ["table"]


def test_unknown_dtype_scans_but_does_not_read(tmp_path):
    path = write(tmp_path / "f8.ckpt", record("f8", [2], "Float8E4M3", b"\1\2"))
    index = scan_checkpoint(path)
    with pytest.raises(CheckpointError, match="unsupported dtype"):
        read_tensor(path, index["f8"])


@pytest.mark.parametrize("blob, pattern", [
    (record("w", [2, 3], "Float32", b"\0" * 20), "should have 24 bytes"),
    (record("w", [2**31, 2**31], "Float32", b"\0" * 4), "should have"),
    (record("w", [-1], "Float32", b"\0" * 4), "negative dimension"),
    (record("s", [0], "str", b"abc"), "multiple of 4"),
    (record("s", [0], "str", b"\xff\xff\xff\xff"), "UTF-32"),
    (ld(1, ld(1, b"\xff\xfe") + ld(2, tensor_proto([1], "Int8", b"\1"))), "UTF-8"),
    (ld(1, ld(2, tensor_proto([1], "Int8", b"\1"))), "no tag"),
    (b"\xff" * 20, "varint"),
    (b"\x0b\x00", "wire type 3"),
    (with_crc(record("w", [1], "Int8", b"\1"))[:-3], "CRC footer"),
])
def test_malformed_files(tmp_path, blob, pattern):
    path = write(tmp_path / "bad.ckpt", blob)
    with pytest.raises(CheckpointError, match=pattern) as info:
        list(iter_tensors(path))
    assert_one_line(info.value, path)


def _forged_files() -> dict[str, bytes]:
    huge = 2**62
    good = record("w", [1], "Int8", b"\1")
    return {
        "top-level length": varint(1 << 3 | 2) + varint(huge) + b"\0" * 64,
        "content length": ld(1, ld(1, b"w") + ld(2, ld(2, b"Float32") + varint(3 << 3 | 2)
                                                  + varint(huge))) + b"\0" * 64,
        "tag length": good + varint(1 << 3 | 2) + varint(40) + varint(1 << 3 | 2) + varint(huge) + b"\0" * 64,
        "huge tag": ld(1, ld(1, b"x" * 70000) + ld(2, tensor_proto([1], "Int8", b"\1"))),
        "max varint": good + varint(1 << 3 | 2) + b"\xff" * 9 + b"\x01",
    }


@pytest.mark.parametrize("name", list(_forged_files()))
def test_forged_lengths_do_not_allocate(tmp_path, name):
    path = write(tmp_path / "forged.ckpt", _forged_files()[name])
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError):
            scan_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_scan_does_not_read_tensor_bytes(tmp_path):
    data = np.arange(2**20, dtype=np.float32)  # 4 MiB
    path = write(tmp_path / "big.ckpt", with_crc(record("big", [2**20], "Float32", data.tobytes())))
    tracemalloc.start()
    try:
        index = scan_checkpoint(path)  # CRC is checked in 1 MiB chunks
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20
    assert read_tensor(path, index["big"])[-1] == 2**20 - 1


def test_safetensors_by_hand_and_bad_headers(tmp_path):
    arrays = {"a": np.arange(4, dtype=np.float32).reshape(2, 2), "q": np.array([0x21], np.int8)}
    path = write(tmp_path / "ok.safetensors", safetensors_bytes(arrays, {"format": "ms", "q": "Int4"}))
    values = read_all(path)
    assert_bit_exact(values["a"], arrays["a"])
    assert values["q"].tolist() == [1, 2]
    header = {"__metadata__": {"format": "ms"},
              "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    cases = {
        "data_offsets": {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 9999999999]}},
        "should have": {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}},
        "bad safetensors header entry": {"a": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}},
        "string-to-string": {"__metadata__": {"format": 1}},
    }
    for pattern, change in cases.items():
        raw = json.dumps(dict(header, **change)).encode()
        bad = write(tmp_path / "bad.safetensors", struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
        with pytest.raises(CheckpointError, match=pattern):
            scan_checkpoint(bad)
    raw = b"{" + b"\xff" * 15
    bad = write(tmp_path / "bad.safetensors", struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    with pytest.raises(CheckpointError, match="JSON"):
        scan_checkpoint(bad)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        scan_checkpoint(tmp_path / "nope.ckpt")
    assert len(scan_checkpoint(write(tmp_path / "empty.ckpt", b""))) == 0


def test_index_is_a_mapping(tmp_path):
    index = scan_checkpoint(write(tmp_path / "m.ckpt", record("w", [1], "Int8", b"\1")))
    assert isinstance(index, CheckpointIndex) and "w" in index and len(index) == 1
    assert index.size == os.path.getsize(tmp_path / "m.ckpt")


def test_module_imports_no_mindspore_or_protobuf():
    code = ("import sys; import converters.ckpt_io; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mindspore', 'google', 'torch')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


# --------------------------------------------------------------------------- fuzzing


def _fuzz_bases() -> list[bytes]:
    rng = np.random.default_rng(1)
    ckpt = (record("f32", [2, 3], "Float32", rng.standard_normal(6).astype(np.float32).tobytes())
            + record("bf16", [3], "BFloat16", b"\x80\x3f" * 3)
            + record("w", [4], "Int16", b"\1\0" * 2) + record("w", [4], "Int16", b"\2\0" * 2)
            + record("q", [2], "Int4", b"\x21\x43")
            + record("flag", [], "Bool", b"\1")
            + record("s", [0], "str", "hi".encode("utf-32-le")))
    st_file = safetensors_bytes({"a": np.ones((2, 2), np.float32), "b": np.array([True, False])},
                                {"format": "ms"})
    return [ckpt, with_crc(ckpt), st_file]


_BASES = _fuzz_bases()
_mutation = st.tuples(st.sampled_from(["flip", "truncate", "insert", "overwrite"]),
                      st.integers(min_value=0, max_value=1 << 20),
                      st.binary(min_size=1, max_size=12))


def _mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for kind, where, payload in mutations:
        at = where % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[where % len(buf)] ^= 1 << (where % 8)
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = payload
        else:
            buf[at:at + len(payload)] = payload
    return bytes(buf)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(range(len(_BASES))), mutations=st.lists(_mutation, min_size=1, max_size=4),
       verify=st.booleans())
def test_fuzz_only_checkpoint_errors(fuzz_dir, base, mutations, verify):
    path = write(fuzz_dir / "fuzz.ckpt", _mutate(_BASES[base], mutations))
    try:
        index = scan_checkpoint(path, verify_crc=verify)
        for record_ in index.values():
            assert isinstance(read_tensor(path, record_), np.ndarray)
        for _, array in iter_tensors(path, verify_crc=verify):
            assert isinstance(array, np.ndarray)
    except CheckpointError as exc:
        assert_one_line(exc, path)
