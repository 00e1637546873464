#!/usr/bin/env python
"""Time and size the conversion of a multi-GB RingMoE checkpoint against cp and MindSpore.

Generates (or reuses) a RingMoE-layout MindSpore .ckpt with random weights, written record by
record with bounded memory, then measures, each in a fresh process with the input's page
cache evicted first:

  cp           cp of the .ckpt to the same disk, then fsync (the I/O floor)
  safetensors  python converters/ms2torch.py SRC -o OUT --format safetensors (the CLI itself,
               in-process: start-up, planning, hashing, the twin check in its helper
               interpreter, report included)
  pth          the same with --format pth
  mindspore    mindspore.load_checkpoint, rename/transform by the same rules, torch.save

Reports wall time, throughput (input bytes / wall time), peak RSS (of the whole process tree:
the converter and its helper interpreter), and the targets: safetensors >= 0.8x cp throughput
(the median over rounds of cp's time / safetensors' time in the same round); safetensors peak
RSS <= 1 GiB + the largest tensor; safetensors >= 3x faster and >= 5x less memory than the
MindSpore path.

Examples:
  python benchmarks/perf/convert_perf.py                      # base config, ~4.8 GB
  python benchmarks/perf/convert_perf.py --arch tiny --keep   # quick, keeps the files
  python benchmarks/perf/convert_perf.py --size 3 --only cp safetensors
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a plain clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from converters.pb_encode import ckpt_record_prefix  # noqa: E402
from pretrain.models.arch import RingMoEArch, get_arch  # noqa: E402  (plain Python, no frameworks)

MODES = ("cp", "safetensors", "pth", "mindspore")
MS_CUT = 512 * 2**20  # MindSpore splits records of larger tensors at 512 MiB
MiB = 2**20


# --------------------------------------------------------------------------- the layout


def ringmoe_layout(arch: RingMoEArch) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, MindSpore dtype) of every parameter of ``RingMoESimMIM(arch)``, in the
    order MindSpore saves them (a cell's own parameters, then its child cells, depth first).

    Names follow the authors' layout that ``converters/rules/ringmoe.py`` maps; dimensions
    come from ``pretrain/models/arch.py``. Checked against the real MindSpore model in
    tests/test_writers.py.
    """
    out: list[tuple[str, tuple[int, ...], str]] = []

    def add(name: str, *shape: int, dtype: str = "Float32") -> None:
        out.append((name, tuple(shape), dtype))

    def layer_norm(prefix: str, dim: int) -> None:
        add(f"{prefix}.gamma", dim)
        add(f"{prefix}.beta", dim)

    def experts(prefix: str, e: int, dim: int, hidden: int) -> None:
        add(f"{prefix}.mapping.weight", e, dim, hidden)
        add(f"{prefix}.mapping.bias", 1, e, 1, hidden)
        add(f"{prefix}.projection.weight", e, hidden, dim)
        add(f"{prefix}.projection.bias", 1, e, 1, dim)

    c0, p, e = arch.embed_dim, arch.patch_size, arch.num_experts
    add("encoder.mask_token", 1, 1, c0)
    for m, modality in enumerate(arch.modalities):
        add(f"encoder.patch_embed{m}.projection.weight", c0, modality.channels, p, p)
        add(f"encoder.patch_embed{m}.projection.bias", c0)
        layer_norm(f"encoder.patch_embed{m}.norm", c0)
    for s, depth in enumerate(arch.depths):
        c, w = arch.stage_dim(s), arch.stage_window(s)
        hidden, n = c * arch.mlp_ratio, w * w
        for b in range(depth):
            block = f"encoder.layers.{s}.blocks.{b}"
            if b % 2 == 1 and arch.stage_shifts(s):
                add(f"{block}.attn_mask", (arch.stage_resolution(s) // w) ** 2, n, n)
            layer_norm(f"{block}.norm1", c)
            for part in ("q", "k", "v", "proj"):
                add(f"{block}.attn.{part}.weight", c, c)
                add(f"{block}.attn.{part}.bias", c)
            add(f"{block}.attn.relative_position_bias.relative_position_bias_table", (2 * w - 1) ** 2,
                arch.num_heads[s])
            add(f"{block}.attn.relative_position_bias.relative_position_index", n, n, dtype="Int32")
            layer_norm(f"{block}.norm2", c)
            for m in range(len(arch.modalities)):
                experts(f"{block}.mlp.special_ffn.{m}", e, c, hidden)
            for m in range(len(arch.modalities)):
                add(f"{block}.mlp.special_router.{m}.dense.weight", e, c)
            experts(f"{block}.mlp.cross_ffn", e, c, hidden)
            add(f"{block}.mlp.cross_router.dense.weight", e, c)
            add(f"{block}.mlp.public_ffn.mapping.weight", c, hidden)
            add(f"{block}.mlp.public_ffn.mapping.bias", hidden)
            add(f"{block}.mlp.public_ffn.projection.weight", hidden, c)
            add(f"{block}.mlp.public_ffn.projection.bias", c)
        if s < arch.num_stages - 1:
            add(f"encoder.layers.{s}.downsample.reduction.weight", 2 * c, 4 * c)
            layer_norm(f"encoder.layers.{s}.downsample.norm", 2 * c)
    layer_norm("encoder.norm", arch.num_features)
    stride = arch.patch_size * 2 ** (arch.num_stages - 1)
    for m in range(len(arch.modalities)):
        add(f"decoder_{m}.weight", stride**2 * arch.reconstructed_channels(m), arch.num_features, 1, 1)
        add(f"decoder_{m}.bias", stride**2 * arch.reconstructed_channels(m))
    return out


def arch_for_size(gigabytes: float) -> RingMoEArch:
    """The smallest base-shaped arch (depths 2-2-18-2, head dim 32) whose checkpoint is that big."""
    embed = 32
    while True:
        arch = get_arch("base").replace(embed_dim=embed, num_heads=tuple(embed // 32 * k for k in (1, 2, 4, 8)))
        if layout_bytes(arch) >= gigabytes * 1e9:
            return arch
        embed += 32


_ITEMSIZE = {"Float32": 4, "Int32": 4, "Int64": 8}


def layout_bytes(arch: RingMoEArch) -> int:
    return sum(math.prod(shape) * _ITEMSIZE[dtype] for _, shape, dtype in ringmoe_layout(arch))


# --------------------------------------------------------------------------- writing a .ckpt



def _write_tensor(f, name: str, dims: tuple[int, ...], dtype: str, data: memoryview) -> None:
    """One tensor as MindSpore writes it: records cut at 512 MiB, each with the full dims."""
    data = data.cast("B")
    for start in range(0, max(len(data), 1), MS_CUT):
        piece = data[start:start + MS_CUT]
        f.write(ckpt_record_prefix(name, dims, dtype, len(piece)))
        f.write(piece)


def write_fake_checkpoint(path: Path, arch: RingMoEArch, config: str, seed: int = 0) -> Path:
    """A RingMoE .ckpt with random weights, as pretrain/checkpoint.py saves it; one tensor in memory."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb", buffering=MiB) as f:
        for name, shape, dtype in ringmoe_layout(arch):
            count = math.prod(shape)
            if dtype == "Int32":
                array = (np.arange(count, dtype=np.int32) % 97).reshape(shape)
            else:
                array = rng.random(count, dtype=np.float32)
                array -= 0.5
                array *= 0.04
            _write_tensor(f, name, shape, dtype, memoryview(array))
            del array
        meta = json.dumps({"arch": arch.to_dict(), "config": config, "step": 0})
        _write_tensor(f, "ringmoe_meta", (0,), "str", memoryview(meta.encode("utf-32-le")))
        _write_tensor(f, "step_num", (), "Int64", memoryview(np.zeros((), np.int64).tobytes()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- measured children


def _child(mode: str, src: str, out: str) -> None:
    """The work of one measurement (runs in its own process)."""
    if mode == "safetensors" or mode == "pth":
        from converters.ms2torch import exit_now, main as convert

        report = f"{out}.report.json"
        code = convert([src, "-o", out, "--format", mode, "--report", report])
        Path(report).unlink(missing_ok=True)
        exit_now(code)  # as the CLI leaves: everything is fsynced, unloading torch is not waited for
    elif mode == "mindspore":
        import mindspore as ms
        import numpy as np
        import torch

        from converters.rules import ringmoe as rules
        from pretrain.models.arch import DEFAULT_MODALITIES

        params = ms.load_checkpoint(src)
        names = [m.name for m in DEFAULT_MODALITIES]
        state_dict = {}
        for key in list(params):
            target, how = rules.map_key(key, names)
            value = params.pop(key)  # release MindSpore's copy as we go (kind to this baseline)
            if target is not None:
                array = np.ascontiguousarray(rules.TRANSFORMS[how](value.asnumpy()))
                state_dict[target] = torch.from_numpy(array)
            del value
        meta = {"format": "ringmoe-bench/converted-v1", "architecture": "ringmoe"}
        with open(out, "wb") as f:
            torch.save({"state_dict": state_dict, "meta": meta}, f)
            f.flush()
            os.fsync(f.fileno())
    else:
        raise SystemExit(f"unknown child mode {mode!r}")


def _meter(argv: list[str]) -> None:
    """Evict ``src`` from the page cache, run the command, print wall time and its peak RSS."""
    src, fsync_path, *command = argv
    os.sync()
    fd = os.open(src, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    start = time.perf_counter()
    child = subprocess.Popen(command)
    tree_peak = 0
    helpers_cpu: dict[int, float] = {}  # descendants outlive the child (then init reaps them): sampled
    while child.poll() is None:
        tree_peak = max(tree_peak, tree_rss(child.pid))  # the converter and its helper interpreter together
        for pid in process_tree(child.pid)[1:]:
            helpers_cpu[pid] = max(helpers_cpu.get(pid, 0.0), cpu_seconds(pid))
        time.sleep(0.02)
    if child.returncode == 0 and fsync_path != "-":
        fd = os.open(fsync_path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # ru_maxrss: the largest single process (KiB)
    print(json.dumps({"rc": child.returncode, "wall_s": wall,
                      "peak_rss_mib": max(usage.ru_maxrss * 1024, tree_peak) / MiB,
                      "cpu_s": usage.ru_utime + usage.ru_stime + sum(helpers_cpu.values())}))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants that are alive now."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            children = []
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    children.extend(int(child) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited while we looked
        found.append(current)
        pending.extend(children)
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants now (pages they share count in each).

    Why sampled: getrusage reports only the largest single process, and the converter runs its
    twin checks in a second interpreter whose memory counts too.
    """
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for current in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            with open(f"/proc/{current}/statm") as f:
                total += int(f.read().split()[1]) * page
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one live process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def touch_and_free(gib: float) -> None:
    """Write to every page of ``gib`` GiB in a child process, which then exits and frees them."""
    if gib > 0:
        code = f"import mmap; m = mmap.mmap(-1, {int(gib * 2**30)}); [m.write(bytes(2**24)) for _ in range(len(m) >> 24)]"
        subprocess.run([sys.executable, "-c", code], check=True)


def measure(mode: str, src: Path, out: Path, log: Path) -> dict:
    """Run one measurement in a fresh meter process (so RUSAGE_CHILDREN is this child's alone)."""
    me = str(Path(__file__).resolve())
    if mode == "cp":
        command = [src, out, "cp", src, out]
    else:
        command = [src, "-", sys.executable, me, "_child", mode, src, out]
    with open(log, "a") as errors:
        errors.write(f"\n==== {mode}\n")
        errors.flush()
        done = subprocess.run([sys.executable, me, "_meter", *map(str, command)], stdout=subprocess.PIPE,
                              stderr=errors, text=True)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"rc": done.returncode or 1, "wall_s": math.nan, "peak_rss_mib": math.nan, "cpu_s": math.nan}
    if result["rc"] != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"{mode} failed (rc {result['rc']}); last lines of {log}:\n{tail}")
    return result


def _outputs_agree(results: dict[str, Path], samples: list[str]) -> str:
    """Spot-check that the outputs hold the same tensors (by name and value)."""
    import torch

    from safetensors import safe_open

    loaded = {}
    if "pth" in results:
        loaded["pth"] = torch.load(results["pth"], map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    if "mindspore" in results:
        loaded["mindspore"] = torch.load(results["mindspore"], map_location="cpu", weights_only=True,
                                         mmap=True)["state_dict"]
    if "safetensors" in results:
        with safe_open(str(results["safetensors"]), framework="pt") as f:
            loaded["safetensors"] = {k: f.get_tensor(k) for k in samples if k in set(f.keys())}
            loaded["safetensors_keys"] = set(f.keys())
    names = [k for k in ("safetensors", "pth", "mindspore") if k in loaded]
    if len(names) < 2:
        return "output check skipped (fewer than two outputs)"
    ref = loaded[names[0]]
    for other in names[1:]:
        for key in samples:
            if not torch.equal(ref[key], loaded[other][key]):
                return f"OUTPUTS DIFFER: {key} in {names[0]} vs {other}"
    keysets = [set(loaded[n]) if n != "safetensors" else loaded["safetensors_keys"] for n in names]
    if any(k != keysets[0] for k in keysets):
        return "OUTPUTS DIFFER in their key sets"
    return f"outputs agree ({', '.join(names)}: same {len(keysets[0])} keys, {len(samples)} tensors compared)"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="convert_perf", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("tiny", "base", "giant"), default="base",
                        help="config whose layout the generated checkpoint has (default: base, ~4.8 GB)")
    parser.add_argument("--size", type=float, metavar="GB",
                        help="instead of --arch: the smallest base-shaped model (depths 2-2-18-2, "
                             "embed_dim a multiple of 32) whose checkpoint has at least GB gigabytes")
    parser.add_argument("--workdir", default="work_dirs/convert_perf",
                        help="where the checkpoint and outputs go (default: %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated checkpoint and the outputs (default: delete them; "
                             "a kept checkpoint is reused by the next run)")
    parser.add_argument("--only", nargs="+", choices=MODES, default=list(MODES), help="measurements to run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of measurements; the table shows the median wall time and the largest "
                             "peak RSS (default: %(default)s; disk speed on shared machines varies)")
    parser.add_argument("--free-memory", type=float, default=0.0, metavar="GIB",
                        help="before each measurement, a process touches GIB of memory and exits. On a "
                             "virtual machine whose host takes free memory back (free-page reporting), "
                             "page-cache copies such as cp run at their fastest right after memory was "
                             "freed: use this to compare against cp at its best (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=10.0, metavar="SECONDS",
                        help="pause after a sync before each measurement, so that the previous one's "
                             "deleted output (its blocks discarded under the mount option discard, its "
                             "metadata written back) does not slow the next (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in ("_child", "_meter"):
        if sys.argv[1] == "_child":
            _child(*sys.argv[2:5])
        else:
            _meter(sys.argv[2:])
        return 0
    args = parse_args(argv)
    if args.size is not None:
        arch = arch_for_size(args.size)
        config = f"base-like embed_dim={arch.embed_dim}"
    else:
        arch, config = get_arch(args.arch), args.arch
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    layout = ringmoe_layout(arch)
    expected = layout_bytes(arch)
    src = workdir / f"ringmoe-{arch.embed_dim}-{'-'.join(map(str, arch.depths))}.ckpt"
    log = workdir / "convert_perf.log"
    log.write_text("")

    if src.is_file() and expected < src.stat().st_size < expected + 10 * MiB:
        print(f"reusing {src} ({src.stat().st_size / 1e9:.2f} GB)")
    else:
        free = shutil.disk_usage(workdir).free
        if free < 4.2 * expected:  # the input, and the three outputs kept for the agreement check
            raise SystemExit(f"{workdir} has {free / 1e9:.1f} GB free; needs about {4.2 * expected / 1e9:.1f} GB")
        start = time.perf_counter()
        write_fake_checkpoint(src, arch, config)
        print(f"generated {src} ({src.stat().st_size / 1e9:.2f} GB, {len(layout)} parameters) "
              f"in {time.perf_counter() - start:.0f}s")
    size = src.stat().st_size
    from converters.rules import ringmoe as rules

    names = [m.name for m in arch.modalities]
    largest = max(math.prod(shape) * _ITEMSIZE[dtype] for name, shape, dtype in layout
                  if rules.map_key(name, names)[0] is not None)

    suffix = {"cp": ".ckpt", "safetensors": ".safetensors", "pth": ".pth", "mindspore": ".ms.pth"}
    outputs = {mode: workdir / f"out-{mode}{suffix[mode]}" for mode in MODES}
    modes = [m for m in MODES if m in args.only]
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    kept = {}
    try:
        for round_ in range(1, args.repeat + 1):
            for mode in modes:
                print(f"round {round_}/{args.repeat}: {mode} ...", end=" ", flush=True)
                os.sync()
                time.sleep(args.settle)
                touch_and_free(args.free_memory)
                result = measure(mode, src, outputs[mode], log)
                runs[mode].append(result)
                print(f"{result['wall_s']:.1f}s, CPU {result['cpu_s']:.1f}s, peak RSS "
                      f"{result['peak_rss_mib']:.0f} MiB", flush=True)
                if mode == "cp" or round_ < args.repeat:
                    outputs[mode].unlink()
                else:
                    kept[mode] = outputs[mode]  # the last round's outputs are compared below
        samples = [rules.map_key(n, names)[0] for n, _, _ in layout if rules.map_key(n, names)[0] is not None]
        samples = [samples[0], samples[len(samples) // 2], samples[-1]]
        check = _outputs_agree(kept, samples)
    finally:
        if not args.keep:
            for path in list(outputs.values()) + [src]:
                path.unlink(missing_ok=True)
    results = {mode: {"wall_s": statistics.median(r["wall_s"] for r in rs),
                      "walls": [r["wall_s"] for r in rs],
                      "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                      "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)} for mode, rs in runs.items()}
    _report(results, size, largest, arch, config, check)
    return 0


def _report(results: dict, size: int, largest: int, arch: RingMoEArch, config: str, check: str) -> None:
    print()
    print(f"input: {size / 1e9:.2f} GB RingMoE .ckpt ({config}: embed_dim {arch.embed_dim}, "
          f"depths {list(arch.depths)}), largest converted tensor {largest / MiB:.0f} MiB; "
          f"{os.cpu_count()} CPUs")
    # CPU s: user + system time of the process tree (median); above wall s means it used both cores.
    print(f"{'path':<13}{'wall s':>9}{'MB/s':>9}{'CPU s':>8}{'peak RSS MiB':>14}   runs (s)")
    for mode, r in results.items():
        walls = " ".join(f"{w:.1f}" for w in r["walls"])
        print(f"{mode:<13}{r['wall_s']:>9.1f}{size / 1e6 / r['wall_s']:>9.0f}{r['cpu_s']:>8.1f}"
              f"{r['peak_rss_mib']:>14.0f}   {walls}")
    print(check)
    st = results.get("safetensors")
    if st is None:
        return
    checks = []
    if "cp" in results:
        # Paired by round (cp, then safetensors, minutes apart): the disk's speed drifts between
        # rounds more than between the two runs of one round.
        ratios = [c / t for c, t in zip(results["cp"]["walls"], st["walls"])]
        ratio = statistics.median(ratios)
        each = " ".join(f"{r:.2f}" for r in ratios)
        checks.append((f"safetensors throughput {ratio:.2f}x cp (median of the rounds' ratios: {each})",
                       ratio >= 0.8, ">= 0.8x"))
    limit = 1024 + largest / MiB
    checks.append((f"safetensors peak RSS {st['peak_rss_mib']:.0f} MiB", st["peak_rss_mib"] <= limit,
                   f"<= 1 GiB + largest tensor = {limit:.0f} MiB"))
    if "mindspore" in results:
        ms = results["mindspore"]
        faster = ms["wall_s"] / st["wall_s"]
        smaller = ms["peak_rss_mib"] / st["peak_rss_mib"]
        checks.append((f"vs MindSpore path: {faster:.1f}x faster", faster >= 3, ">= 3x"))
        checks.append((f"vs MindSpore path: {smaller:.1f}x less memory", smaller >= 5, ">= 5x"))
    for text, ok, target in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text} (target {target})")


if __name__ == "__main__":
    sys.exit(main())
