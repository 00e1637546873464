"""Protobuf encoding by hand, for writing MindSpore files without MindSpore or a protobuf runtime.

The mirror of the walker in ``converters/ckpt_io.py``: tests build edge-case checkpoints and
strategy files with it, and ``benchmarks/perf`` streams multi-GB checkpoints through it.
"""
from __future__ import annotations


def varint(n: int) -> bytes:
    """A base-128 varint; negative numbers as 64-bit two's complement (10 bytes), as protobuf does."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    """Wire type 2: a string, bytes or embedded message field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    """Wire type 0: an integer field."""
    return varint(field << 3) + varint(value)


def ckpt_record_prefix(name: str, dims: tuple[int, ...], dtype: str, nbytes: int) -> bytes:
    """The bytes of one top-level ``Checkpoint.value`` record up to its ``tensor_content``.

    Writing these bytes and then ``nbytes`` of content gives one record exactly as MindSpore
    writes it (dims unpacked, one varint each), without holding the content in memory.
    """
    tensor = b"".join(varint_field(1, d) for d in dims) + length_delimited(2, dtype.encode())
    tensor += varint(3 << 3 | 2) + varint(nbytes)
    value = length_delimited(1, name.encode()) + varint(2 << 3 | 2) + varint(len(tensor) + nbytes) + tensor
    return varint(1 << 3 | 2) + varint(len(value) + nbytes) + value
