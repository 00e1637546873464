"""converters/seqread.py: one pass over a file for its sha256 and for positional reads, with a
bounded pool of chunks; reads outside the pool fall back to ordinary reads."""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest

from converters import seqread
from converters.seqread import ReaderFile, SequentialReader

CHUNK = 4096  # small chunks (a page each), so a small file spans many


def _blob(tmp_path, size: int, seed: int = 0):
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / f"blob{size}.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 5 * CHUNK, 5 * CHUNK + 17])
def test_sha256_of_any_size(tmp_path, size):
    path, data = _blob(tmp_path, size)
    for keep in (True, False):
        reader = SequentialReader(path, keep=keep, chunk=CHUNK, depth=2)
        try:
            assert reader.sha256() == hashlib.sha256(data).hexdigest()
        finally:
            reader.close()


def _read(reader, offset: int, length: int) -> bytes:
    out = bytearray(length)
    view, done = memoryview(out), 0
    while done < length:
        got = reader.pread_into(view[done:], offset + done)
        assert got > 0
        done += got
    return bytes(out)


def test_in_order_reads_with_releases_come_from_the_pool_and_equal_the_file(tmp_path):
    path, data = _blob(tmp_path, 40 * CHUNK + 123)
    reader = SequentialReader(path, chunk=CHUNK, depth=4)
    fallbacks = []
    plain = reader._read_plain
    reader._read_plain = lambda view, offset: fallbacks.append(offset) or plain(view, offset)
    try:
        for offset in range(0, len(data), 3001):
            reader.release_before(offset)
            assert _read(reader, offset, min(2000, len(data) - offset)) == data[offset:offset + 2000]
        assert reader.sha256() == hashlib.sha256(data).hexdigest()
        assert fallbacks == []  # every byte came out of the one pass
    finally:
        reader.close()


def test_several_reading_threads_finish_out_of_order_and_the_pass_stays_in_order(tmp_path, monkeypatch):
    """Reads in flight complete in any order; the hash and the consumer still see the file."""
    path, data = _blob(tmp_path, 30 * CHUNK + 5)
    real_read = SequentialReader._read_chunk
    finished = []

    def slow_even_chunks(self, buffer, offset):
        if (offset // CHUNK) % 2 == 0:
            time.sleep(0.002)  # the next (odd) chunk's read overtakes this one
        got = real_read(self, buffer, offset)
        finished.append(offset // CHUNK)
        return got

    monkeypatch.setattr(SequentialReader, "_read_chunk", slow_even_chunks)  # before the threads start
    reader = SequentialReader(path, chunk=CHUNK, depth=6, readers=3)
    try:
        for offset in range(0, len(data), 1500):
            reader.release_before(offset)
            assert _read(reader, offset, min(1000, len(data) - offset)) == data[offset:offset + 1000]
        assert reader.sha256() == hashlib.sha256(data).hexdigest()
    finally:
        reader.close()
    assert sorted(finished) == list(range(31))  # each chunk read once
    assert finished != sorted(finished)  # and some did finish out of order


def test_reads_out_of_order_or_outside_the_window_fall_back_and_stay_correct(tmp_path):
    path, data = _blob(tmp_path, 30 * CHUNK + 5)
    reader = SequentialReader(path, chunk=CHUNK, depth=3)
    try:
        # Far ahead of the window (a record read while planning): an ordinary read, no waiting.
        assert _read(reader, 25 * CHUNK + 3, 100) == data[25 * CHUNK + 3:25 * CHUNK + 103]
        reader.release_before(20 * CHUNK)  # frees chunks as they are hashed
        assert _read(reader, 21 * CHUNK, CHUNK) == data[21 * CHUNK:22 * CHUNK]
        # Behind the released point: read again from the file.
        assert _read(reader, 2 * CHUNK + 1, 50) == data[2 * CHUNK + 1:2 * CHUNK + 51]
        assert _read(reader, len(data) - 5, 5) == data[-5:]
        assert reader.sha256() == hashlib.sha256(data).hexdigest()
    finally:
        reader.close()


def test_the_pool_is_bounded_until_the_consumer_releases(tmp_path):
    path, data = _blob(tmp_path, 50 * CHUNK)
    reader = SequentialReader(path, chunk=CHUNK, depth=4)
    try:
        time.sleep(0.3)  # ample time to read the whole (cached) file, were it unbounded
        assert reader._read_upto == 4 and len(reader._buffers) == 4
        reader.release_before(10 * CHUNK)
        deadline = time.monotonic() + 5
        while reader._read_upto < 14 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader._read_upto == 14 and len(reader._buffers) <= 4
    finally:
        reader.close()  # joins its threads even while they wait


def test_reader_file_reads_records_like_a_file(tmp_path):
    path, data = _blob(tmp_path, 7 * CHUNK)
    reader = SequentialReader(path, chunk=CHUNK, depth=2)
    try:
        handle = ReaderFile(reader)
        handle.seek(CHUNK - 10)
        out = np.empty(30, np.uint8)
        assert handle.readinto(memoryview(out)) == 10  # stops at the chunk's end, like a short read
        assert handle.tell() == CHUNK
        assert out[:10].tobytes() == data[CHUNK - 10:CHUNK]
    finally:
        reader.close()


def test_a_file_that_shrinks_while_read_is_an_error(tmp_path):
    path, _ = _blob(tmp_path, 10 * CHUNK)
    reader = SequentialReader(path, chunk=CHUNK, depth=8)  # holds 8 of the 10 chunks at most
    os.truncate(path, 3 * CHUNK + 7)  # so chunks 8 and 9 are read after this
    try:
        reader.release_before(10 * CHUNK)
        with pytest.raises(OSError, match="file ended at byte"):
            reader.sha256()
    finally:
        reader.close()


def test_module_defaults_are_read_at_construction(tmp_path, monkeypatch):
    path, data = _blob(tmp_path, 3 * CHUNK)
    monkeypatch.setattr(seqread, "CHUNK", CHUNK)
    reader = SequentialReader(path)
    try:
        assert reader._count == 3 and reader.sha256() == hashlib.sha256(data).hexdigest()
    finally:
        reader.close()


def test_an_attached_consumer_keeps_its_bytes_while_the_hash_is_asked_for(tmp_path):
    """The converter's meta thread asks for the hash while the tensors stream: the pool must
    still serve the consumer, and the last owner closes the reader."""
    import threading

    path, data = _blob(tmp_path, 12 * CHUNK)
    reader = SequentialReader(path, chunk=CHUNK, depth=3)
    consumer = reader.attach()
    fallbacks = []
    plain = reader._read_plain
    reader._read_plain = lambda view, offset: fallbacks.append(offset) or plain(view, offset)
    digest = {}
    hashing = threading.Thread(target=lambda: digest.setdefault("hex", reader.sha256()))
    hashing.start()
    for offset in range(0, len(data), CHUNK):
        consumer.release_before(offset)
        assert _read(consumer, offset, CHUNK) == data[offset:offset + CHUNK]
    consumer.detach()
    hashing.join(5)
    assert digest["hex"] == hashlib.sha256(data).hexdigest() and fallbacks == []
    assert not reader._closed
    reader.close()
    assert reader._closed


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_a_cli_conversion_reads_the_source_once(tiny_ms_checkpoint, tmp_path, monkeypatch, fmt):
    """ms2torch's one pass feeds the hash and every tensor: with a pool far smaller than the file
    (so a consumer that fell behind or ran ahead would show), almost nothing is read twice.

    The writer copies slices while the plan's generator runs ahead in a prefetch thread; a
    promise made by that generator instead of the writer would free chunks before they are copied.
    """
    from converters.ms2torch import main

    monkeypatch.setattr(seqread, "CHUNK", 64 << 10)
    monkeypatch.setattr(seqread, "DEPTH", 80)  # 5 MiB: more than the largest tensor (4 MiB)
    again = []
    plain = SequentialReader._read_plain
    monkeypatch.setattr(SequentialReader, "_read_plain",
                        lambda self, view, offset: again.append(len(view)) or plain(self, view, offset))
    size = tiny_ms_checkpoint.stat().st_size
    assert size > 25 * 80 * (64 << 10)
    out = tmp_path / f"out.{fmt}"
    assert main([str(tiny_ms_checkpoint), "-o", str(out), "--format", fmt]) == 0
    # Allowed: records read while planning (metadata strings) and the last slices the writer
    # copies after the generator has ended.
    assert sum(again) < 0.1 * size, (sum(again), size)
