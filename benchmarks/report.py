#!/usr/bin/env python
"""Turn the results table into a report: grouped means over seeds, pretraining gains, reference checks, plots.

Reads the rows that benchmarks/run.py appended (only status 'ok'; a run_id present twice counts
once) and writes into --out:

  report.md     one line per group of runs that differ only in their seed: n, mean, sample std
                and the pretrained-minus-scratch gain; then expected versus measured for every
                entry of the reference file; then the plots and any warnings
  report.json   the same numbers, for scripts
  <task>_bars.png    mean +- std per group, each seed a dot, pretrained and scratch side by side
  <task>_curves.png  training loss and the validation metric against the iteration, read from
                     each run's mmengine logs (<work_dir>/<timestamp>/vis_data/scalars.json)

The gain is the pretrained group's mean minus the scratch group's mean (the '-random-init' backbone
with the same task, dataset, split, train ratio, protocol, modality and metric). For metrics where
lower is better (depth errors: rmse, abs_rel, ...; see LOWER_IS_BETTER) the sign is flipped, so a
positive gain always means that pretraining helped.

The reference file (JSON, a list) holds expected numbers measured by earlier runs, each with a
tolerance and the command that measured it; a group whose mean lies further from the expected value
than the tolerance (either way: an unexplained improvement is a change too) FAILs.

Examples:
  python benchmarks/report.py                                   # results/results.csv -> results/report
  python benchmarks/report.py --results work_dirs/demo/results.csv --out /tmp/report --tasks segmentation
  python benchmarks/report.py --check                           # exit 1 if a reference entry fails

Exit codes: 0 written; 1 with --check, a reference entry FAILed (the report is still written);
2 bad input (a missing, unreadable or wrong-schema table, a malformed reference file): one line
on stderr.
"""
from __future__ import annotations

import fnmatch
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

if __package__ in (None, ""):  # run as a script from a plain clone: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import BadInput, Parser  # noqa: E402
from benchmarks.results import LOWER_IS_BETTER, lower_is_better  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO / "benchmarks" / "reference" / "demo.json"


# Runs that differ only in seed (and so in config hash and run_id) form one group.
GROUP_KEYS = ("task", "dataset", "split", "train_ratio", "protocol", "backbone", "modality",
              "expert_reduction", "primary_metric")
# A pretrained group and its scratch baseline agree on these.
PAIR_KEYS = ("task", "dataset", "split", "train_ratio", "protocol", "modality", "primary_metric")
SCRATCH_SUFFIX = "-random-init"  # run.py's backbone name for --checkpoint none
REFERENCE_REQUIRED = ("task", "dataset", "protocol", "backbone", "metric", "expected", "tolerance", "source")
REFERENCE_OPTIONAL = ("split", "train_ratio", "modality", "expert_reduction", "notes")
LOG_DIR = re.compile(r"^\d{8}_\d{6}$")  # mmengine's per-launch folder: <work_dir>/YYYYmmdd_HHMMSS


def is_scratch(backbone: str) -> bool:
    return backbone.endswith(SCRATCH_SUFFIX)


# ---- rows ----------------------------------------------------------------------------------
@dataclass
class Selection:
    """The rows that count, and what was left out and why (shown in the report)."""

    rows: list[dict[str, str]]
    total: int = 0
    duplicates: int = 0
    not_ok: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def select_rows(rows: Sequence[Mapping[str, str]], tasks: Sequence[str] | None = None) -> Selection:
    """The status-'ok' rows of ``tasks`` (all if None), one per run_id (its last row).

    A run_id is a hash of task, config, checkpoint and seed, so two rows with one id are the
    same run recorded twice (a copied table, a run repeated without --resume): counting both
    would shrink the std for no reason.
    """
    picked: dict[str, dict[str, str]] = {}
    selection = Selection(rows=[])
    for row in rows:
        if tasks is not None and row["task"] not in tasks:
            continue
        selection.total += 1
        if row["status"] != "ok":
            selection.not_ok[row["status"]] = selection.not_ok.get(row["status"], 0) + 1
            continue
        try:
            float(row["primary_value"])
        except ValueError:
            selection.unreadable.append(row["run_id"])
            continue
        if row["run_id"] in picked:
            selection.duplicates += 1
            del picked[row["run_id"]]  # the last row wins, in its own place in the table order
        picked[row["run_id"]] = dict(row)
    selection.rows = list(picked.values())
    return selection


def _seed_order(seed: str) -> tuple[int, float | str]:
    try:
        return (0, float(seed))
    except ValueError:
        return (1, seed)


# ---- groups --------------------------------------------------------------------------------
@dataclass
class Group:
    """Runs that differ only in their seed, with their statistics and the gain over scratch."""

    key: dict[str, str]
    rows: list[dict[str, str]]
    gain: float | None = None
    baseline: str = ""  # the scratch backbone the gain is measured against

    @property
    def values(self) -> list[float]:
        return [float(r["primary_value"]) for r in self.rows]

    @property
    def seeds(self) -> list[str]:
        return [r["seed"] for r in self.rows]

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n-1); None for a single seed."""
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def scratch(self) -> bool:
        return is_scratch(self.key["backbone"])

    @property
    def pair_key(self) -> tuple[str, ...]:
        return tuple(self.key[k] for k in PAIR_KEYS)


def _group_sort_key(group: Group) -> tuple:
    k = group.key
    return (*group.pair_key, group.scratch, k["backbone"], k["expert_reduction"])


def group_rows(rows: Iterable[Mapping[str, str]]) -> list[Group]:
    """Groups of rows by GROUP_KEYS, their rows in seed order, with the gains filled in."""
    groups: dict[tuple[str, ...], Group] = {}
    for row in rows:
        key = tuple(row[k] for k in GROUP_KEYS)
        groups.setdefault(key, Group(dict(zip(GROUP_KEYS, key)), [])).rows.append(dict(row))
    for group in groups.values():
        group.rows.sort(key=lambda r: _seed_order(r["seed"]))
    ordered = sorted(groups.values(), key=_group_sort_key)
    add_gains(ordered)
    return ordered


def _family(backbone: str) -> str:
    return backbone.split("-", 1)[0]


def add_gains(groups: Sequence[Group]) -> None:
    """Set each pretrained group's gain over its scratch group (sign: positive = better).

    The baseline is a scratch group with the same PAIR_KEYS, narrowed while more than one is
    left: to the same backbone family (the name before the first '-': a RingMoE is compared with
    a random RingMoE, not with a from-scratch ResNet baseline), then to the same expert
    reduction. If several are still left, there is no unambiguous baseline and the gain stays unset.
    """
    for group in groups:
        if group.scratch:
            continue
        candidates = [g for g in groups if g.scratch and g.pair_key == group.pair_key]
        for same in (lambda g: _family(g.key["backbone"]) == _family(group.key["backbone"]),
                     lambda g: g.key["expert_reduction"] == group.key["expert_reduction"]):
            if len(candidates) > 1:
                candidates = [g for g in candidates if same(g)] or candidates
        baseline = candidates[0] if len(candidates) == 1 else None
        if baseline is None:
            continue
        sign = -1.0 if lower_is_better(group.key["primary_metric"]) else 1.0
        group.gain = sign * (group.mean - baseline.mean)
        group.baseline = baseline.key["backbone"]


def group_warnings(groups: Sequence[Group]) -> list[str]:
    """What makes a group's mean doubtful: a seed counted twice, several checkpoints mixed."""
    warnings = []
    for group in groups:
        label = _label(group.key)
        repeated = sorted({s for s in group.seeds if group.seeds.count(s) > 1}, key=_seed_order)
        if repeated:
            warnings.append(f"{label}: seed {', '.join(repeated)} appears in several runs (another config "
                            "or checkpoint under the same group?); all are counted")
        shas = {r["checkpoint_sha256"] for r in group.rows}
        if len(shas) > 1:
            warnings.append(f"{label}: the mean mixes {len(shas)} different checkpoints")
    return warnings


def _label(key: Mapping[str, str]) -> str:
    parts = [key["task"], key["dataset"], key.get("protocol", ""), key.get("backbone", ""),
             key.get("modality", ""), key.get("expert_reduction", "")]
    return "/".join(p for p in parts if p)


# ---- reference numbers ---------------------------------------------------------------------
def load_reference(path: Path) -> list[dict]:
    """The reference entries, checked for their fields; BadInput on anything malformed."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"reference file {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise BadInput(f"reference file {path} is not readable JSON ({type(err).__name__}: {err})") from None
    if not isinstance(entries, list):
        raise BadInput(f"reference file {path} must hold a JSON list of entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BadInput(f"{path}: entry {i} is not an object")
        missing = [k for k in REFERENCE_REQUIRED if k not in entry]
        unknown = sorted(set(entry) - set(REFERENCE_REQUIRED) - set(REFERENCE_OPTIONAL))
        if missing or unknown:
            raise BadInput(f"{path}: entry {i} lacks {missing} / has unknown {unknown}")
        for number in ("expected", "tolerance"):
            value = entry[number]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadInput(f"{path}: entry {i}: {number} must be a finite number, got {value!r}")
        if entry["tolerance"] < 0:
            raise BadInput(f"{path}: entry {i}: tolerance must not be negative")
    return entries


def _metric_value(row: Mapping[str, str], metric: str) -> float | None:
    """The row's value of ``metric``: its primary value, else from metrics_json (None: absent)."""
    if row["primary_metric"] == metric:
        return float(row["primary_value"])
    try:
        metrics = json.loads(row["metrics_json"] or "{}")
    except ValueError:
        return None
    if not isinstance(metrics, dict) or metric not in metrics:
        return None
    value = metrics[metric]
    return math.nan if value is None else float(value)  # run.py writes NaN as null (strict JSON)


def _matches(entry: Mapping, row: Mapping[str, str]) -> bool:
    if not all(row[k] == str(entry[k]) for k in ("task", "dataset", "protocol")):
        return False
    if not all(row[k] == str(entry[k]) for k in ("split", "train_ratio", "modality", "expert_reduction")
               if k in entry):
        return False
    return fnmatch.fnmatchcase(row["backbone"], entry["backbone"])


def compare_reference(entries: Sequence[Mapping], rows: Sequence[Mapping[str, str]],
                      tasks: Sequence[str] | None = None) -> list[dict]:
    """Expected versus measured: one result per entry and matching group (MISSING: none matches).

    A backbone pattern (fnmatch: 'ringmoe-*') can match several groups; each is checked on its own
    rather than averaged together, since they are different models.
    """
    out = []
    for entry in entries:
        if tasks is not None and entry["task"] not in tasks:
            continue
        groups: dict[tuple[str, ...], list[float]] = {}
        for row in rows:
            value = _metric_value(row, entry["metric"]) if _matches(entry, row) else None
            if value is not None:
                groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(value)
        base = {"entry": dict(entry), "backbone": None, "n": 0, "measured": None, "std": None, "delta": None}
        if not groups:
            out.append(base | {"status": "MISSING"})
        for key, values in sorted(groups.items()):
            mean = statistics.fmean(values)
            delta = mean - entry["expected"]
            # A hair of slack: a value typed into JSON with fewer digits than the run printed.
            ok = math.isfinite(delta) and abs(delta) <= entry["tolerance"] + 1e-9
            out.append(base | {"backbone": key[GROUP_KEYS.index("backbone")], "n": len(values), "measured": mean,
                               "std": statistics.stdev(values) if len(values) > 1 else None, "delta": delta,
                               "status": "PASS" if ok else "FAIL"})
    return out


# ---- curves from the mmengine logs ---------------------------------------------------------
@dataclass
class Curves:
    loss: list[tuple[int, float]]
    metric: list[tuple[int, float]]
    launches: int  # timestamp folders merged (more than one: the run was resumed)


def log_dirs(work_dir: Path) -> list[Path]:
    """The work dir's mmengine launch folders that hold scalars, oldest first."""
    if not work_dir.is_dir():
        return []
    return sorted(d for d in work_dir.iterdir()
                  if LOG_DIR.match(d.name) and (d / "vis_data" / "scalars.json").is_file())


def read_curves(work_dir: Path, metric: str) -> Curves:
    """Training loss per logged iteration and ``metric`` per validation, across resumed launches.

    Launches are merged by iteration, later ones winning: a resumed run repeats the iterations
    after its last checkpoint, and the repeat is what the final weights came from. Raises
    FileNotFoundError when the work dir has no logs.
    """
    dirs = log_dirs(work_dir)
    if not dirs:
        raise FileNotFoundError(f"no mmengine logs (<timestamp>/vis_data/scalars.json) in {work_dir}")
    loss: dict[int, float] = {}
    values: dict[int, float] = {}
    for directory in dirs:
        for line in (directory / "vis_data" / "scalars.json").read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a blank line, or the last line of a launch that was killed mid-write
            if "loss" in record and "iter" in record:
                loss[int(record["iter"])] = float(record["loss"])
            elif metric in record and "step" in record:
                values[int(record["step"])] = float(record[metric])
    return Curves(sorted(loss.items()), sorted(values.items()), len(dirs))


def resolve_work_dir(work_dir: str, results_path: Path) -> Path | None:
    """A row's work dir: as written (absolute, or relative to where the run ran), else found
    relative to the results table or the repository; None when it is nowhere."""
    path = Path(work_dir)
    candidates = [path] if path.is_absolute() else [path, results_path.parent / path, REPO / path]
    return next((p for p in candidates if p.is_dir()), None)


def collect_curves(rows: Sequence[Mapping[str, str]], results_path: Path) -> tuple[dict[str, Curves], list[str]]:
    """Curves per run_id, and one warning per run whose logs are not there."""
    curves, warnings = {}, []
    for row in rows:
        work_dir = resolve_work_dir(row["work_dir"], results_path) if row["work_dir"] else None
        if work_dir is None:
            warnings.append(f"run {row['run_id']} ({_label(row)}, seed {row['seed']}): work dir "
                            f"{row['work_dir'] or '(none)'} not found: no curves")
            continue
        try:
            curves[row["run_id"]] = read_curves(work_dir, row["primary_metric"])
        except (OSError, ValueError) as err:
            warnings.append(f"run {row['run_id']} ({_label(row)}, seed {row['seed']}): {err}: no curves")
    return curves, warnings


# ---- plots ---------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI toolkit imported
    import matplotlib.pyplot as plt

    return plt


def _publish(path: Path, data: bytes) -> None:
    """Write data to path atomically (a reader never sees half a file)."""
    from converters.util import atomic_write

    with atomic_write(path, "wb") as f:
        f.write(data)


def _save_png(fig, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _publish(path, buffer.getvalue())


def _varying(keys: Sequence[Mapping[str, str]], fields: Sequence[str]) -> list[str]:
    """The fields that take more than one value across keys (the rest need no axis label)."""
    return [f for f in fields if len({k[f] for k in keys}) > 1]


def _comparison_label(key: Mapping[str, str], fields: Sequence[str]) -> str:
    shown = [key["dataset"]] + [f"{f}={key[f] or '-'}" if f in ("split", "train_ratio") else key[f]
                                for f in fields if f != "dataset"]
    return "\n".join(shown)


def _colours(backbones: Sequence[str]) -> dict[str, str]:
    """Scratch baselines in greys, pretrained backbones in the usual cycle: the same in every plot."""
    cycle = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    greys = ["0.55", "0.35", "0.7"]
    pre = [b for b in backbones if not is_scratch(b)]
    scr = [b for b in backbones if is_scratch(b)]
    return {b: cycle[i % len(cycle)] for i, b in enumerate(pre)} | {b: greys[i % len(greys)] for i, b in enumerate(scr)}


def plot_bars(groups: Sequence[Group], task: str, path: Path) -> None:
    """Per metric of the task: the comparisons on the x axis, one bar per backbone (mean, std
    error bar), each seed's value a dot on its bar."""
    plt = _pyplot()
    groups = [g for g in groups if g.key["task"] == task]
    metrics = sorted({g.key["primary_metric"] for g in groups})
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.5, 3.2 * len(metrics) + 1.5), 3.6), squeeze=False)
    backbone_names = sorted({g.key["backbone"] for g in groups}, key=lambda b: (is_scratch(b), b))
    colours = _colours(backbone_names)
    for ax, metric in zip(axes[0], metrics):
        mine = [g for g in groups if g.key["primary_metric"] == metric]
        comparisons = sorted({g.pair_key for g in mine})
        keys = [dict(zip(PAIR_KEYS, c)) for c in comparisons]
        fields = _varying(keys, ("dataset", "split", "train_ratio", "protocol", "modality"))
        backbones = [b for b in backbone_names if any(g.key["backbone"] == b for g in mine)]
        width = 0.8 / len(backbones)
        labelled = set()
        for i, comparison in enumerate(comparisons):
            present = [g for b in backbones for g in mine if g.pair_key == comparison and g.key["backbone"] == b]
            for j, g in enumerate(present):  # the bars of one comparison centred on its tick
                backbone = g.key["backbone"]
                x = i + width * (j - (len(present) - 1) / 2)
                ax.bar(x, g.mean, width * 0.9, yerr=g.std or 0.0, capsize=3, color=colours[backbone],
                       label=None if backbone in labelled else backbone, edgecolor="black", linewidth=0.5,
                       error_kw=dict(elinewidth=1, ecolor="0.15"))
                labelled.add(backbone)
                ax.scatter([x] * g.n, g.values, s=12, color="white", edgecolors="black", linewidths=0.6, zorder=3)
        ax.set_xticks(range(len(comparisons)))
        ax.set_xticklabels([_comparison_label(k, fields or ["protocol"]) for k in keys], fontsize=8)
        better = "lower" if lower_is_better(metric) else "higher"
        ax.set_title(f"{metric} ({better} is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{task}: mean ± std over seeds (dots: seeds)", fontsize=10)
    _save_png(fig, path)
    plt.close(fig)


def plot_curves(rows: Sequence[Mapping[str, str]], curves: Mapping[str, Curves], task: str, path: Path) -> bool:
    """Training loss, then each validation metric, against the iteration: a thin line per run,
    the colour of its backbone (as in the bar chart), a line style per comparison (dataset,
    protocol, ...) where the task has several. Returns False (and writes nothing) when no run of
    the task has logs."""
    rows = [r for r in rows if r["task"] == task and r["run_id"] in curves]
    if not rows:
        return False
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    metrics = sorted({r["primary_metric"] for r in rows})
    # sharex: a validation at the last iteration alone would otherwise get an axis of its own scale
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(4.2 * (1 + len(metrics)), 3.4), squeeze=False,
                             sharex=True)
    fields = _varying(rows, ("dataset", "split", "train_ratio", "protocol", "modality"))
    comparisons = sorted({tuple(r[f] for f in fields) for r in rows})
    styles = dict(zip(comparisons, ["-", "--", ":", "-."] * len(comparisons)))
    colours = _colours(sorted({r["backbone"] for r in rows}, key=lambda b: (is_scratch(b), b)))
    labelled: set[tuple[int, str]] = set()
    for row in sorted(rows, key=lambda r: (is_scratch(r["backbone"]), r["backbone"], _seed_order(r["seed"]))):
        comparison = tuple(row[f] for f in fields)
        name = " ".join((row["backbone"], *comparison))
        c = curves[row["run_id"]]
        for panel, points, marker in ((0, c.loss, ""), (1 + metrics.index(row["primary_metric"]), c.metric, "o")):
            if not points:
                continue
            xs, ys = zip(*points)
            axes[0][panel].plot(xs, ys, marker=marker, linestyle=styles[comparison], color=colours[row["backbone"]],
                                linewidth=0.9, markersize=3.5, alpha=0.85,
                                label=None if (panel, name) in labelled else name)
            labelled.add((panel, name))
    axes[0][0].set_title("training loss", fontsize=9)
    for i, metric in enumerate(metrics, start=1):
        better = "lower" if lower_is_better(metric) else "higher"
        axes[0][i].set_title(f"validation {metric} ({better} is better)", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel("iteration", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{task}: one line per run; the seeds of a group share colour and style", fontsize=10)
    _save_png(fig, path)
    plt.close(fig)
    return True


# ---- the report ----------------------------------------------------------------------------
def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _md_table(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|") or "-"

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def groups_markdown(groups: Sequence[Group]) -> str:
    if not groups:
        return "(no runs)"
    headers = ["task", "dataset", "split", "train ratio", "protocol", "backbone", "modality", "expert reduction",
               "metric", "n", "mean", "std", "gain vs scratch"]
    lines = [[*(g.key[k] for k in GROUP_KEYS[:-1]), g.key["primary_metric"] + (" ↓" if lower_is_better(
        g.key["primary_metric"]) else ""), str(g.n), _number(g.mean), _number(g.std), _number(g.gain, signed=True)]
        for g in groups]
    lower = ", ".join(sorted(LOWER_IS_BETTER))
    caption = ("Mean and sample standard deviation (n-1) over seeds; '-' for std with one seed. "
               "Gain = pretrained mean minus the mean of the scratch ('-random-init') group with the same task, "
               "dataset, split, train ratio, protocol, modality and metric, **sign flipped for lower-is-better "
               f"metrics (marked ↓: {lower})**, so a positive gain always means the pretrained backbone did "
               "better; '-' where no scratch group exists.")
    return caption + "\n\n" + _md_table(headers, lines)


def reference_markdown(results: Sequence[Mapping], reference: Path | None) -> str:
    if reference is None:
        return "(no reference file)"
    if not results:
        return f"(no entries in {reference} for these tasks)"
    headers = ["task", "dataset", "protocol", "backbone", "metric", "expected", "tolerance", "n", "measured",
               "delta", "status"]
    lines = []
    for r in results:
        e = r["entry"]
        backbone = e["backbone"] if r["backbone"] in (None, e["backbone"]) else f"{r['backbone']} (`{e['backbone']}`)"
        lines.append([e["task"], e["dataset"], e["protocol"], backbone, e["metric"], _number(e["expected"]),
                      f"±{e['tolerance']:.4g}", str(r["n"]), _number(r["measured"]),
                      _number(r["delta"], signed=True), f"**{r['status']}**"])
    caption = (f"Expected values from `{_shown_path(reference)}` (each entry's `source` says which command "
               "measured it); PASS when |measured mean - expected| <= tolerance.")
    return caption + "\n\n" + _md_table(headers, lines)


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def render_markdown(results_path: Path, selection: Selection, groups: Sequence[Group], ref_results: Sequence[Mapping],
                    reference: Path | None, images: Sequence[str], warnings: Sequence[str]) -> str:
    left_out = [f"{n} with status '{s}'" for s, n in sorted(selection.not_ok.items())]
    if selection.duplicates:
        left_out.append(f"{selection.duplicates} repeated run_id (counted once)")
    if selection.unreadable:
        left_out.append(f"{len(selection.unreadable)} without a numeric primary value")
    parts = ["# RingMoE Bench report", "",
             f"From `{results_path}`: {selection.total} rows, {len(selection.rows)} runs counted"
             + (f"; left out: {'; '.join(left_out)}" if left_out else "") + ".", "",
             "## Results over seeds", "", groups_markdown(groups), "",
             "## Expected versus measured", "", reference_markdown(ref_results, reference), ""]
    if images:
        parts += ["## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    if warnings:
        parts += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(parts)


def report_json(groups: Sequence[Group], ref_results: Sequence[Mapping]) -> dict:
    return {"groups": [g.key | {"n": g.n, "seeds": g.seeds, "values": g.values, "mean": g.mean, "std": g.std,
                                "gain": g.gain, "baseline": g.baseline, "run_ids": [r["run_id"] for r in g.rows]}
                       for g in groups],
            "reference": list(ref_results)}


def read_table(path: Path) -> list[dict[str, str]]:
    """The table's rows; BadInput (one line) when it is missing, unreadable or of another schema."""
    import csv

    from benchmarks import results

    if path.is_dir():
        raise BadInput(f"{path} is a directory, not a results table")
    if not path.is_file():
        raise BadInput(f"results table {path} does not exist")
    try:
        return results.read_rows(path)
    except (OSError, ValueError, csv.Error) as err:  # SchemaMismatchError is a ValueError
        raise BadInput(f"cannot read {path}: {err}") from None


def build(results_path: Path, reference: Path | None, out: Path, tasks: Sequence[str] | None = None) -> list[dict]:
    """Write the report into ``out``; return the reference results (for --check)."""
    selection = select_rows(read_table(results_path), tasks)
    entries = load_reference(reference) if reference is not None else []
    groups = group_rows(selection.rows)
    ref_results = compare_reference(entries, selection.rows, tasks)
    warnings = [f"run {r} has status 'ok' but no numeric primary value: left out" for r in selection.unreadable]
    warnings += group_warnings(groups)
    for task in tasks or []:
        if not any(g.key["task"] == task for g in groups):
            warnings.append(f"no counted runs of task {task!r}")
    curves, curve_warnings = collect_curves(selection.rows, results_path)
    warnings += curve_warnings
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for task in sorted({g.key["task"] for g in groups}):
        plot_bars(groups, task, out / f"{task}_bars.png")
        images.append(f"{task}_bars.png")
        if plot_curves(selection.rows, curves, task, out / f"{task}_curves.png"):
            images.append(f"{task}_curves.png")
    _publish(out / "report.json", (json.dumps(report_json(groups, ref_results), indent=1) + "\n").encode())
    _publish(out / "report.md", render_markdown(results_path, selection, groups, ref_results, reference, images,
                                                warnings).encode())
    for warning in warnings:
        print(f"report: warning: {warning}", file=sys.stderr)
    return ref_results


def parse_args(argv: list[str] | None = None):
    import argparse

    parser = Parser(prog="report", doc=__doc__)
    parser.add_argument("--results", default="results/results.csv", help="results table (default: %(default)s)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE.relative_to(REPO)),
                        help="expected numbers, JSON; 'none' to skip (default: %(default)s, found from the "
                        "repository root when not in the current directory)")
    parser.add_argument("--out", default="results/report", help="output folder (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (default: all in the table)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a reference entry with runs FAILs")
    return parser.parse_args(argv)


def _reference_path(text: str) -> Path | None:
    if text.lower() == "none":
        return None
    path = Path(text)
    if not path.exists() and not path.is_absolute() and (REPO / path).exists():
        return REPO / path  # the default, from another working directory
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ref_results = build(Path(args.results), _reference_path(args.reference), Path(args.out), args.tasks)
    except BadInput as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    counts = {s: sum(r["status"] == s for r in ref_results) for s in ("PASS", "FAIL", "MISSING")}
    print(f"report: {Path(args.out) / 'report.md'}; reference: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for r in ref_results:
        if r["status"] == "FAIL":
            e = r["entry"]
            print(f"report: FAIL {e['task']}/{e['dataset']}/{e['protocol']}/{r['backbone']} {e['metric']}: "
                  f"measured {r['measured']:.4g}, expected {e['expected']:.4g} ± {e['tolerance']:.4g}")
    return 1 if args.check and counts["FAIL"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
