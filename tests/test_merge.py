"""Tests for converters.merge: merging per-rank MindSpore checkpoint slices with a strategy file.

Test vectors: full tensors are cut into per-rank slices by a slicer written here from the
runtime semantics (``DeviceMatrix::GetDevicesByTensorMap`` and
``OperatorInfo::CreateGroupForOptShard``: the optimizer-sharding group is the ascending list
of ranks holding the same model-parallel slice, cut into consecutive chunks of
``opt_weight_shard_size``), saved with ``mindspore.save_checkpoint`` into ``rank_<r>/`` and
described by a strategy file written with MindSpore's own ``node_strategy_pb2`` (or as JSON,
or by a hand encoder using packed fields). Each merge is checked (a) against the original
full tensors, bit for bit, and (b) against ``mindspore.transform_checkpoints(..., None)``.

Known MindSpore 2.10 failures, kept as expectations in ``MS_EXPECTED`` below:

* optimizer sharding whose only repeated device axis is the outermost one, with a tensor map
  that uses the other axes out of order (``optperm``: dev [2,2,2], map [0,1], shard 2):
  ``_construct_tensor_layout_for_opt_shard``'s fast path rebuilds the device matrix from the
  tensor strategy and so swaps the two model-parallel axes: its output is scrambled.
"""

from __future__ import annotations

import json
import math
import shutil
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from converters.ckpt_io import read_tensor, scan_checkpoint
from converters.merge import load_strategy, open_merged
from converters.util import ConversionError

import mindspore as ms  # noqa: E402  test vectors are cut and written with MindSpore itself
from mindspore.train import node_strategy_pb2 as pb  # noqa: E402


# --------------------------------------------------------------------------- test vectors


@dataclass
class P:
    """One parameter: its full value and layout. ``bits`` holds bf16 as uint16 words."""

    name: str
    full: np.ndarray
    dev: list[int]
    tmap: list  # ints or lists of ints (nested)
    opt: int = 0
    stage: int = 0
    bf16: bool = False
    field_size: int = 0
    split_shape: list[int] = field(default_factory=list)

    @property
    def nested(self) -> bool:
        return any(isinstance(v, list) for v in self.tmap)


def _values(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-1000, 1000, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _bf16_bits(shape, seed):
    """bf16 words of random normal floats (truncated, so exactly representable)."""
    f = _values(shape, np.float32, seed)
    return (f.view(np.uint32) >> 16).astype(np.uint16)


def _coord(rank, dev):
    out = []
    for size in reversed(dev):
        out.append(rank % size)
        rank //= size
    return out[::-1]


def _axes(entry, dev):
    values = entry if isinstance(entry, list) else [entry]
    return [len(dev) - 1 - k for k in values if k != -1]


def cut(p: P, local_rank: int) -> np.ndarray:
    """The slice ``local_rank`` holds, following MindSpore's runtime semantics."""
    dev = p.dev
    c = _coord(local_rank, dev)
    index = []
    for axis, entry in enumerate(p.tmap):
        dims = _axes(entry, dev)
        n = math.prod(dev[d] for d in dims)
        piece = 0
        for d in dims:
            piece = piece * dev[d] + c[d]
        step = p.full.shape[axis] // n
        index.append(slice(piece * step, (piece + 1) * step))
    part = p.full[tuple(index)]
    if p.opt:
        used = {d for entry in p.tmap for d in _axes(entry, dev)}
        group = [r for r in range(math.prod(dev))
                 if all(_coord(r, dev)[d] == c[d] for d in used)]  # ascending, like C++
        size = len(group) if p.opt == -1 else p.opt
        pos = group.index(local_rank) % size
        step = part.shape[0] // size
        part = part[pos * step:(pos + 1) * step]
    return np.ascontiguousarray(part)


def opt_step(p: P) -> int:
    """opt_weight_shard_step as CreateGroupForOptShard computes it (for rank 0's group)."""
    if not p.opt:
        return 0
    used = {d for entry in p.tmap for d in _axes(entry, p.dev)}
    group = [r for r in range(math.prod(p.dev)) if all(_coord(r, p.dev)[d] == 0 for d in used)]
    return (group[-1] - group[0]) // (len(group) - 1)


def ms_tensor(p: P, array: np.ndarray):
    if p.bf16:
        as_f32 = (array.astype(np.uint32) << 16).view(np.float32)
        return ms.Tensor(as_f32, dtype=ms.bfloat16)
    return ms.Tensor(array)


def write_ranks(root: Path, params: list[P], copies: dict[str, np.ndarray], n_dev: int,
                n_stages: int = 1, prefix: str = "net") -> None:
    for stage in range(n_stages):
        for local in range(n_dev):
            rank = stage * n_dev + local
            items = [{"name": p.name, "data": ms_tensor(p, cut(p, local))}
                     for p in params if p.stage == stage]
            items += [{"name": k, "data": ms.Tensor(v)} for k, v in copies.items()]
            d = root / f"rank_{rank}"
            d.mkdir(parents=True, exist_ok=True)
            # An older file first: the lexicographically last one must win.
            (d / f"{prefix}-0_1.ckpt").write_bytes(b"garbage, not a checkpoint")
            ms.save_checkpoint(items, str(d / f"{prefix}-1_8.ckpt"))


def layout_name(p: P, pipelined: bool) -> str:
    return f"{p.stage}-{p.name}" if pipelined else p.name


def write_pb(path: Path, params: list[P], pipelined: bool = False) -> Path:
    """A strategy file through MindSpore's own protobuf module, laid out as its C++ writes it."""
    sm = pb.ParallelStrategyMap()
    sm.current_stage = 1
    for p in params:
        item = sm.parallel_layout_item.add()
        item.param_name = layout_name(p, pipelined)
        lay = item.parallel_layouts
        lay.dev_matrix.add().dim.extend(p.dev)
        if p.nested:
            for entry in p.tmap:
                lay.tensor_map.add().dim.extend(entry if isinstance(entry, list) else [entry])
            if len(p.tmap) == 1:
                lay.tensor_map.add()
        else:
            lay.tensor_map.add().dim.extend(p.tmap)
        lay.param_split_shape.add().dim.extend(p.split_shape)
        lay.indices_offset.add().dim.extend([0] * len(p.split_shape))
        lay.field = p.field_size
        lay.opt_weight_shard_step = opt_step(p)
        lay.opt_weight_shard_size = p.opt
    path.write_bytes(sm.SerializeToString())
    return path


def write_json(path: Path, params: list[P], pipelined: bool = False) -> Path:
    """The JSON form (StrategyCheckpointInfo::to_json); nested maps as lists."""
    items = {}
    for p in params:
        items[layout_name(p, pipelined)] = {
            "dev_matrix": p.dev, "tensor_map": p.tmap, "tensor_shape": list(p.full.shape),
            "field": p.field_size, "opt_weight_shard_step": opt_step(p),
            "opt_weight_shard_size": p.opt}
    doc = {"current_stage": 1, "parallel_strategy_item": {"Default/MatMul-op0": {
        "stage": 0, "parallel_strategy": [[1, 1]]}}, "parallel_layout_item": items}
    path.write_text(json.dumps(doc))
    return path


# Hand encoder: packed repeated fields (proto3 style), to show the walker accepts them.
from converters.pb_encode import length_delimited as _ld  # noqa: E402
from converters.pb_encode import varint as _varint  # noqa: E402
from converters.pb_encode import varint_field as _vf  # noqa: E402


def write_packed_pb(path: Path, params: list[P]) -> Path:
    out = bytearray(_vf(1, 1))
    for p in params:
        packed = lambda values: _ld(1, b"".join(_varint(v) for v in values))  # noqa: E731
        lay = _ld(1, packed(p.dev))
        if p.nested:
            for entry in p.tmap:
                lay += _ld(2, packed(entry if isinstance(entry, list) else [entry]))
        else:
            lay += _ld(2, packed(p.tmap))
        lay += _ld(3, b"") + _ld(4, b"") + _vf(5, 0) + _vf(6, opt_step(p)) + _vf(7, p.opt)
        lay += _vf(99, 7)  # an unknown field is skipped
        out += _ld(3, _ld(1, p.name.encode()) + _ld(2, lay))
    path.write_bytes(bytes(out))
    return path


def truth(p: P) -> np.ndarray:
    return p.full


# --------------------------------------------------------------------------- layouts

N = 8  # devices per stage


def layouts() -> dict[str, P]:
    cases = [
        P("rep.w", _values((4, 6), np.float32, 1), [8], [-1, -1]),
        P("mp0.w", _values((8, 6), np.float32, 2), [4, 2], [0, -1]),
        P("mp1.w", _bf16_bits((6, 8), 3), [2, 4], [-1, 0], bf16=True),
        P("experts.w", _values((4, 6, 8), np.float16, 4), [2, 2, 2], [1, -1, 0]),
        P("ids", _values((8, 4), np.int64, 5), [4, 2], [1, -1]),
        P("nested.w", _values((8, 4), np.float32, 6), [2, 2, 2], [[2, 1], 0]),
        P("nested1.w", _values((4, 8), np.int32, 7), [2, 2, 2], [-1, [0, 2]]),
        P("opt2.w", _values((16, 6), np.float32, 8), [4, 2], [0, -1], opt=2),
        P("optall.w", _values((8, 4), np.float32, 9), [2, 2, 2], [-1, 1], opt=-1),
        P("optbf16.w", _bf16_bits((16, 4), 10), [8], [-1, -1], opt=4, bf16=True),
        P("perm.w", _values((8, 8), np.float32, 13), [2, 2, 2], [0, 1]),
        P("optperm.w", _values((8, 8), np.float32, 11), [2, 2, 2], [0, 1], opt=2),
        P("optnested.w", _values((16, 4), np.float32, 12), [2, 2, 2], [[1, 0], -1], opt=2),
    ]
    return {p.name: p for p in cases}


COPIES = {"global_step": np.array([42], np.int32), "learning_rate": np.array(0.125, np.float32)}

# What mindspore.transform_checkpoints does with each layout, where it is not bit-exact.
MS_EXPECTED = {"optperm.w": "wrong"}


def build(root: Path, params: list[P], copies=COPIES, fmt: str = "pb") -> tuple[Path, Path]:
    src = root / "src"
    write_ranks(src, params, copies, N)
    writer = {"pb": write_pb, "json": write_json, "packed": write_packed_pb}[fmt]
    strategy = writer(root / ("strategy.json" if fmt == "json" else "strategy.ckpt"), params)
    return src, strategy


def merged_all(src: Path, strategy: Path, **kwargs) -> dict[str, np.ndarray]:
    source = open_merged(src, strategy, **kwargs)
    try:
        return {name: source.read(name) for name in source.shapes()}
    finally:
        source.close()


def ms_merge(src: Path, strategy: Path, out: Path) -> dict[str, np.ndarray]:
    """MindSpore's own merge (transform to one device), read back with our reader."""
    ms.transform_checkpoints(str(src), str(out), "merged", str(strategy), None)
    path = out / "rank_0" / "merged0.ckpt"
    index = scan_checkpoint(path)
    return {name: read_tensor(path, record) for name, record in index.items()}


def assert_bits(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.tobytes() == b.tobytes(), f"{what}: values differ"


# --------------------------------------------------------------------------- merge vs truth and MindSpore


@pytest.mark.parametrize("name", list(layouts()))
def test_layout_matches_truth_and_mindspore(name, tmp_path):
    p = layouts()[name]
    src, strategy = build(tmp_path, [p])
    ours = merged_all(src, strategy)
    assert set(ours) == {name, *COPIES}
    assert_bits(ours[name], truth(p), f"{name} vs full tensor")
    for key, value in COPIES.items():
        assert_bits(ours[key], value, key)

    theirs = ms_merge(src, strategy, tmp_path / "ms")
    assert set(theirs) == set(ours)
    for key in COPIES:
        assert_bits(theirs[key], ours[key], f"{key} vs MindSpore")
    if MS_EXPECTED.get(name) == "wrong":
        assert theirs[name].shape == ours[name].shape
        assert theirs[name].tobytes() != ours[name].tobytes(), (
            f"MindSpore now merges {name} correctly: drop it from MS_EXPECTED")
    else:
        assert_bits(theirs[name], ours[name], f"{name} vs MindSpore")


def test_slicer_agrees_with_mindspore_load_tensor():
    """Our test slicer cuts flat, non-optimizer-sharded layouts as MindSpore's _load_tensor."""
    from mindspore.parallel._tensor import _load_tensor

    for p in layouts().values():
        if p.nested or p.opt:
            continue
        for rank in range(N):
            expected = _load_tensor(ms.Tensor(p.full), p.dev, p.tmap, rank_id=rank)
            assert_bits(cut(p, rank), np.asarray(expected), f"{p.name} rank {rank}")


def test_all_layouts_together_protobuf_json_packed(tmp_path):
    params = list(layouts().values())
    src, strategy = build(tmp_path, params)
    ours = merged_all(src, strategy)
    for p in params:
        assert_bits(ours[p.name], truth(p), p.name)

    json_strategy = write_json(tmp_path / "strategy.json", params)
    packed_strategy = write_packed_pb(tmp_path / "packed.ckpt", params)
    for other in (json_strategy, packed_strategy):
        again = merged_all(src, other)
        assert list(again) == list(ours)
        for key in ours:
            assert_bits(again[key], ours[key], f"{key} with {other.name}")

    # Layouts parsed from all three forms agree.
    forms = [load_strategy(s).layouts for s in (strategy, json_strategy, packed_strategy)]
    for name in layouts():
        a, b, c = (f[name] for f in forms)
        assert (a.dev_matrix, a.tensor_map, a.opt_shard_size, a.opt_shard_step) == \
               (b.dev_matrix, b.tensor_map, b.opt_shard_size, b.opt_shard_step) == \
               (c.dev_matrix, c.tensor_map, c.opt_shard_size, c.opt_shard_step)


def test_json_strategy_matches_mindspore(tmp_path):
    """MindSpore's JSON reader takes flat tensor maps only; compare on those."""
    params = [p for p in layouts().values() if not p.nested and p.name not in MS_EXPECTED]
    src, _ = build(tmp_path, params, fmt="json")
    strategy = tmp_path / "strategy.json"
    ours = merged_all(src, strategy)
    theirs = ms_merge(src, strategy, tmp_path / "ms")
    assert set(theirs) == set(ours)
    for key in ours:
        assert_bits(theirs[key], ours[key], key)


def test_pipeline_stages(tmp_path):
    n_dev = 4
    embed = P("embed.w", _values((8, 4), np.float32, 20), [2, 2], [0, -1], stage=0)
    head = P("head.w", _bf16_bits((4, 8), 21), [4], [-1, 0], stage=1, bf16=True)
    moe = P("moe.w", _values((4, 4, 2), np.float32, 22), [2, 2], [1, -1, -1], opt=2, stage=1)
    shared0 = P("shared.w", _values((4, 4), np.float32, 23), [2, 2], [1, -1], stage=0)
    shared1 = P("shared.w", shared0.full, [4], [-1, -1], stage=1)
    params = [embed, head, moe, shared0, shared1]
    src = tmp_path / "src"
    write_ranks(src, params, COPIES, n_dev, n_stages=2)
    strategy = write_pb(tmp_path / "merged_strategy.ckpt", params, pipelined=True)

    source = open_merged(src, strategy)
    assert source.strategy.pipelined and source.strategy.stages == (0, 1)
    assert source.layout("shared.w").stage == 0
    assert len(source.files) == 2 * n_dev + 1
    ours = {name: source.read(name) for name in source.shapes()}
    source.close()
    for p in (embed, head, moe, shared0):
        assert_bits(ours[p.name], p.full, p.name)

    theirs = ms_merge(src, strategy, tmp_path / "ms")
    assert set(theirs) == set(ours)
    for key in ours:
        assert_bits(theirs[key], ours[key], f"{key} vs MindSpore")

    # The per-stage strategy (unprefixed, one stage) does not cover ranks 4..7.
    stage1 = write_pb(tmp_path / "stage1.ckpt", [head, moe, shared1])
    with pytest.raises(ConversionError, match="merge_pipeline_strategys"):
        open_merged(src, stage1)


def test_shapes_order_label_files_and_bounded_memory(tmp_path):
    big = P("big.w", _values((256, 512), np.float32, 30), [2, 4], [1, 0])
    src, strategy = build(tmp_path, [layouts()["mp0.w"], big])
    with open_merged(src, strategy) as source:
        assert source.shapes() == {"mp0.w": (8, 6), "big.w": (256, 512),
                                   "global_step": (1,), "learning_rate": ()}
        assert str(src) in source.label
        assert [f.parent.name for f in source.files[:-1]] == [f"rank_{r}" for r in range(N)]
        assert all(f.name == "net-1_8.ckpt" for f in source.files[:-1])
        assert source.files[-1] == strategy
        tracemalloc.start()
        try:
            value = source.read("big.w")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert_bits(value, big.full, "big.w")
        slice_bytes = big.full.nbytes // N
        assert peak < big.full.nbytes + 2 * slice_bytes + (1 << 16), peak


# --------------------------------------------------------------------------- refusals


@pytest.fixture()
def small(tmp_path):
    params = [layouts()[k] for k in ("rep.w", "mp0.w", "opt2.w")]
    src, strategy = build(tmp_path, params)
    return tmp_path, src, strategy, params


def test_missing_rank_dir(small):
    _, src, strategy, _ = small
    shutil.rmtree(src / "rank_3")
    with pytest.raises(ConversionError, match=r"missing rank_3"):
        open_merged(src, strategy)


def test_extra_rank_dir(small):
    _, src, strategy, _ = small
    shutil.copytree(src / "rank_0", src / "rank_8")
    with pytest.raises(ConversionError, match=r"rank\(s\) 8 .*covers only ranks 0\.\.7"):
        open_merged(src, strategy)


def test_mismatched_slice_shape(small):
    _, src, strategy, params = small
    items = [{"name": p.name, "data": ms.Tensor(cut(p, 2))} for p in params if p.name != "mp0.w"]
    items.append({"name": "mp0.w", "data": ms.Tensor(np.zeros((3, 6), np.float32))})
    ms.save_checkpoint(items, str(src / "rank_2" / "net-1_8.ckpt"))
    with pytest.raises(ConversionError, match=r"'mp0\.w'.*rank 2"):
        open_merged(src, strategy)


def test_json_tensor_shape_mismatch(small):
    root, src, _, params = small
    strategy = write_json(root / "s.json", params)
    doc = json.loads(strategy.read_text())
    doc["parallel_layout_item"]["mp0.w"]["tensor_shape"] = [16, 6]
    strategy.write_text(json.dumps(doc))
    with pytest.raises(ConversionError, match=r"'mp0\.w'.*does not match the strategy"):
        open_merged(src, strategy)
    doc["parallel_layout_item"]["mp0.w"]["tensor_shape"] = [9, 6]
    strategy.write_text(json.dumps(doc))
    with pytest.raises(ConversionError, match=r"'mp0\.w'.*uneven"):
        open_merged(src, strategy)


def test_disagreeing_replicas(small):
    _, src, strategy, params = small
    items = []
    for p in params:
        part = cut(p, 5)
        if p.name == "rep.w":
            part = part.copy()
            part.view(np.uint32)[0, 0] ^= 1  # one bit
        items.append({"name": p.name, "data": ms.Tensor(part)})
    items += [{"name": k, "data": ms.Tensor(v)} for k, v in COPIES.items()]
    ms.save_checkpoint(items, str(src / "rank_5" / "net-1_8.ckpt"))
    with open_merged(src, strategy) as source:
        source.read("mp0.w")
        with pytest.raises(ConversionError, match=r"'rep\.w'.*rank 0 vs rank 5"):
            source.read("rep.w")
        assert_bits(source.read("rep.w", check_replicas=False), params[0].full, "rep.w unchecked")
    with open_merged(src, strategy, check_replicas=False) as source:
        source.read("rep.w")


def test_disagreeing_per_rank_copies(small):
    _, src, strategy, params = small
    items = [{"name": p.name, "data": ms.Tensor(cut(p, 6))} for p in params]
    items += [{"name": "global_step", "data": ms.Tensor(np.array([41], np.int32))},
              {"name": "learning_rate", "data": ms.Tensor(COPIES["learning_rate"])}]
    ms.save_checkpoint(items, str(src / "rank_6" / "net-1_8.ckpt"))
    with open_merged(src, strategy) as source:
        with pytest.raises(ConversionError, match=r"'global_step'.*rank 0 vs rank 6"):
            source.read("global_step")
        source.read("learning_rate")


def test_field_split_and_manual_split(tmp_path):
    p = layouts()["mp0.w"]
    p.field_size = 2
    src, strategy = build(tmp_path, [p])
    with pytest.raises(ConversionError, match=r"'mp0\.w'.*field split"):
        open_merged(src, strategy)
    p.field_size, p.split_shape = 0, [4, 4]
    write_pb(strategy, [p])
    with pytest.raises(ConversionError, match=r"'mp0\.w'.*param_split_shape"):
        open_merged(src, strategy)


def test_redundancy_removed_save(small):
    _, src, strategy, params = small
    items = [{"name": p.name, "data": ms.Tensor(cut(p, 1))} for p in params if p.name != "rep.w"]
    ms.save_checkpoint(items, str(src / "rank_1" / "net-1_8.ckpt"))
    with pytest.raises(ConversionError, match=r"'rep\.w' is missing from rank\(s\) 1.*remove_redundancy"):
        open_merged(src, strategy)


def test_bad_strategy_files(small):
    root, src, _, _ = small
    bad = root / "bad.ckpt"
    bad.write_bytes(b"\x1a\x05\x0a\x03ab")  # truncated ParallelLayoutItem
    with pytest.raises(ConversionError, match="not a valid protobuf"):
        open_merged(src, bad)
    bad.write_bytes(b"\x08\x01")  # current_stage only
    with pytest.raises(ConversionError, match="no parameter layouts"):
        open_merged(src, bad)
    bad_json = root / "bad.json"
    bad_json.write_text('{"parallel_layout_item": {"w": {"dev_matrix": "x", "tensor_map": []}}}')
    with pytest.raises(ConversionError, match="dev_matrix"):
        open_merged(src, bad_json)
    with pytest.raises(ConversionError, match="no such strategy file"):
        open_merged(src, root / "absent.ckpt")


def test_negative_int32_is_ten_byte_varint(tmp_path):
    p = layouts()["optall.w"]
    path = write_pb(tmp_path / "s.ckpt", [p])
    data = path.read_bytes()
    assert b"\xff" * 9 + b"\x01" in data  # -1 as written by protobuf
    layout = load_strategy(path).layouts["optall.w"]
    assert layout.opt_shard_size == -1 and layout.tensor_map == ((), (1,))


def test_sliced_ringmoe_converts_exactly_like_the_whole_checkpoint(tiny_ms_checkpoint, tmp_path):
    """The tiny RingMoE cut over 4 ranks (experts over one device axis, q/k and shared FFN over
    the other, optimizer-sharded norms) merges and converts bit for bit like the single file."""
    import torch

    from converters.ms2torch import main
    from converters.ringmoe import convert

    index = scan_checkpoint(tiny_ms_checkpoint)
    params, copies = [], {}
    for name, record in index.items():
        if name == "ringmoe_meta":
            continue  # a str entry: per-rank metadata, not sliced (the converter then uses defaults)
        value = read_tensor(tiny_ms_checkpoint, record)
        if name == "step_num":
            copies[name] = value
        elif value.ndim == 3 and ("special_ffn" in name or "cross_ffn" in name):
            params.append(P(name, value, [2, 2], [1, -1, -1]))  # expert parallel
        elif name.endswith(("attn.q.weight", "attn.k.weight", "public_ffn.mapping.weight")):
            params.append(P(name, value, [2, 2], [0, -1] if "attn" in name else [-1, 0]))  # model parallel
        elif name.endswith("norm1.gamma"):
            params.append(P(name, value, [2, 2], [-1], opt=2))  # optimizer sharding
        else:
            params.append(P(name, value, [2, 2], [-1] * value.ndim))
    src = tmp_path / "ranks"
    write_ranks(src, params, copies, 4)
    strategy = write_pb(tmp_path / "strategy.ckpt", params)
    assert sorted(p.name for p in src.iterdir()) == ["rank_0", "rank_1", "rank_2", "rank_3"]

    merged = convert(src, "tiny", strategy=strategy).state_dict
    whole = convert(tiny_ms_checkpoint, "tiny").state_dict
    assert merged.keys() == whole.keys()
    assert all(torch.equal(merged[k], whole[k]) for k in whole)
    out = tmp_path / "out"
    assert main([str(src), "--strategy", str(strategy), "-o", str(out / "m.pth"), "--verify"]) == 0
    assert main([str(src), "-o", str(out / "n.pth")]) == 2  # a directory without --strategy
