"""Fuzzing the converter CLI with corrupted checkpoints (hypothesis).

Every corrupted input must end in one of two ways: exit 2 with one line on stderr and nothing
written, or exit 0 with a complete output. With a CRC footer every corruption is an error; without
one, a flipped bit inside tensor data cannot be detected (the docs say so) but must still never
crash the converter. Allocation stays bounded by the file size.
"""
from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.ms2torch import main


def _micro_checkpoint(path: Path, crc: bool) -> Path:
    import mindspore as ms

    from pretrain.checkpoint import META_KEY
    from pretrain.models.arch import get_arch
    from pretrain.models.ringmoe import RingMoESimMIM

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    arch = get_arch("tiny").replace(embed_dim=8, num_heads=(1, 1, 1, 1))
    net = RingMoESimMIM(arch)
    ms.save_checkpoint(net, str(path), crc_check=crc, append_dict={META_KEY: json.dumps({"arch": arch.to_dict()})})
    return path


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    return {crc: _micro_checkpoint(root / f"micro_crc{int(crc)}.ckpt", crc).read_bytes() for crc in (True, False)}


def _run(data: bytes, workdir: Path) -> tuple[int, str, list[str]]:
    src = workdir / "in.ckpt"
    src.write_bytes(data)
    out = workdir / "out"
    out.mkdir()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(src), "-o", str(out / "x.pth")])
    return code, stderr.getvalue(), sorted(p.name for p in out.iterdir())


corruption = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
)


def _corrupt(data: bytes, kind: str, where: float, value: int) -> bytes:
    i = int(where * len(data))
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (1 << value)]) + data[i + 1 :]
    if kind == "truncate":
        return data[:i]
    return data[:i] + bytes([value]) + data[i:]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=corruption, crc=st.booleans())
def test_corrupted_checkpoints_fail_cleanly_or_convert_completely(micro, tmp_path_factory, change, crc):
    data = _corrupt(micro[crc], *change)
    workdir = tmp_path_factory.mktemp("case")
    tracemalloc.start()
    try:
        code, stderr, written = _run(data, workdir)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * len(micro[crc]) + (64 << 20), f"allocated {peak} bytes for a {len(data)}-byte file"
    if code == 2:
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("ms2torch: error:"), stderr
        assert written == []
    else:
        assert code == 0, stderr
        assert written == ["x.pth", "x.report.json"]
        assert not crc, "a CRC-protected file converted after corruption"


def test_a_flipped_bit_is_caught_with_the_crc_footer(micro, tmp_path):
    data = micro[True]
    flipped = _corrupt(data, "flip", 0.5, 3)
    code, stderr, written = _run(flipped, tmp_path)
    assert code == 2 and "CRC" in stderr and written == []
