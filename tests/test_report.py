"""benchmarks/report.py: grouping over seeds, gains with the metric's direction, the reference
check and its exit codes, the plots, and curves read from the logs of real tiny runs."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report, results
from benchmarks.datasets.scene_classification import generate_scene_dataset

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_row(run_id: str, value: float, **overrides: object) -> dict[str, object]:
    """A results row of a pretrained segmentation run; overrides change any column."""
    row: dict[str, object] = {
        "run_id": run_id, "schema_version": results.SCHEMA_VERSION, "timestamp": "2025-01-01T00:00:00+00:00",
        "task": "segmentation", "dataset": "potsdam", "split": "val", "train_ratio": "", "protocol": "finetune",
        "backbone": "ringmoe-tiny", "modality": "optical", "expert_reduction": "", "checkpoint": "tiny.pth",
        "checkpoint_sha256": "ab" * 32, "config_hash": "0" * 64, "seed": 0, "primary_metric": "mIoU",
        "primary_value": value, "metrics_json": {"mIoU": value, "aAcc": 90.0}, "versions_json": {},
        "host": "node", "wall_time_s": 1.0, "work_dir": f"/nonexistent/{run_id}", "status": "ok"}
    row.update(overrides)
    return row


SCRATCH = {"backbone": "ringmoe-random-init", "checkpoint": "", "checkpoint_sha256": ""}
DEPTH = {"task": "depth", "dataset": "nyu", "primary_metric": "rmse"}


def write_table(path: Path, rows: list[dict[str, object]]) -> Path:
    for row in rows:
        results.append_row(path, row)
    return path


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    """Segmentation: 3 pretrained seeds, 2 scratch, a failed run, a repeated run_id; depth (rmse,
    lower is better): pretrained 2 seeds vs scratch 1; and a group with no scratch baseline."""
    return write_table(tmp_path / "results.csv", [
        make_row("p0", 70.0, seed=0), make_row("p1", 72.0, seed=1), make_row("p2", 74.0, seed=2),
        make_row("p2", 74.0, seed=2),  # the same run recorded twice
        make_row("s0", 60.0, seed=0, **SCRATCH), make_row("s1", 64.0, seed=1, **SCRATCH),
        make_row("bad", 0.0, seed=3, status="failed"),
        make_row("d0", 0.5, seed=0, metrics_json={"rmse": 0.5, "d1": 0.8}, **DEPTH),
        make_row("d1", 0.7, seed=1, metrics_json={"rmse": 0.7, "d1": 0.9}, **DEPTH),
        make_row("ds", 0.9, seed=0, metrics_json={"rmse": 0.9, "d1": 0.6}, **DEPTH, **SCRATCH),
        make_row("l0", 40.0, seed=0, protocol="linear_probe"),
    ])


def _groups(path: Path) -> dict[tuple[str, str, str], report.Group]:
    groups = report.group_rows(report.select_rows(results.read_rows(path)).rows)
    return {(g.key["task"], g.key["protocol"], g.key["backbone"]): g for g in groups}


# ---- grouping ------------------------------------------------------------------------------
def test_groups_mean_std_and_gain(table):
    groups = _groups(table)
    assert len(groups) == 5
    pre = groups["segmentation", "finetune", "ringmoe-tiny"]
    scr = groups["segmentation", "finetune", "ringmoe-random-init"]
    assert (pre.n, pre.seeds, pre.mean, pre.std) == (3, ["0", "1", "2"], 72.0, 2.0)
    assert (scr.n, scr.mean, scr.gain) == (2, 62.0, None)
    assert scr.std == pytest.approx(math.sqrt(8), rel=1e-12)
    assert (pre.gain, pre.baseline) == (10.0, "ringmoe-random-init")
    linear = groups["segmentation", "linear_probe", "ringmoe-tiny"]  # no scratch run of that protocol
    assert (linear.n, linear.std, linear.gain) == (1, None, None)


def test_the_baseline_is_the_random_backbone_of_the_same_family(tmp_path):
    """A from-scratch ResNet baseline beside the random RingMoE: RingMoE is compared with RingMoE."""
    table = write_table(tmp_path / "r.csv", [
        make_row("p", 70.0), make_row("s", 60.0, **SCRATCH),
        make_row("r", 65.0, **{**SCRATCH, "backbone": "resnet18-random-init"})])
    pre = _groups(table)["segmentation", "finetune", "ringmoe-tiny"]
    assert (pre.gain, pre.baseline) == (10.0, "ringmoe-random-init")


def test_lower_is_better_flips_the_gain(table):
    assert report.lower_is_better("rmse") and report.lower_is_better("depth/abs_rel")
    assert not report.lower_is_better("mIoU") and not report.lower_is_better("accuracy/top1")
    depth = _groups(table)["depth", "finetune", "ringmoe-tiny"]
    assert depth.mean == pytest.approx(0.6)
    assert depth.gain == pytest.approx(0.3)  # rmse 0.6 against 0.9: lower, so pretraining helped: +0.3


def test_duplicate_run_id_once_and_failed_rows_ignored(table):
    selection = report.select_rows(results.read_rows(table))
    assert selection.total == 11 and selection.duplicates == 1 and selection.not_ok == {"failed": 1}
    assert [r["run_id"] for r in selection.rows].count("p2") == 1 and "bad" not in {r["run_id"] for r in selection.rows}
    only = report.select_rows(results.read_rows(table), tasks=["depth"])
    assert {r["task"] for r in only.rows} == {"depth"} and only.total == 3


def test_markdown_shows_the_numbers_and_the_direction(table, tmp_path):
    assert report.main(["--results", str(table), "--reference", "none", "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    seg = "| segmentation | potsdam | val | - | finetune |"
    assert f"{seg} ringmoe-tiny | optical | - | mIoU | 3 | 72 | 2 | +10 |" in text
    assert f"{seg} ringmoe-random-init | optical | - | mIoU | 2 | 62 | 2.828 | - |" in text
    assert "| depth | nyu | val | - | finetune | ringmoe-tiny | optical | - | rmse ↓ | 2 | 0.6 | 0.1414 | +0.3 |" in text
    assert "sign flipped for lower-is-better" in text
    assert "1 with status 'failed'" in text and "1 repeated run_id (counted once)" in text
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {g["backbone"] for g in data["groups"]} == {"ringmoe-tiny", "ringmoe-random-init"}


def test_a_seed_repeated_in_a_group_is_a_warning(tmp_path):
    path = write_table(tmp_path / "r.csv", [make_row("a", 1.0, seed=0),
                                            make_row("b", 2.0, seed=0, checkpoint_sha256="cd" * 32)])
    warnings = report.group_warnings(report.group_rows(results.read_rows(path)))
    assert len(warnings) == 2
    assert "seed 0 appears in several runs" in warnings[0] and "2 different checkpoints" in warnings[1]


# ---- reference -----------------------------------------------------------------------------
def _reference(path: Path, entries: list[dict]) -> Path:
    base = {"task": "segmentation", "dataset": "potsdam", "protocol": "finetune", "metric": "mIoU",
            "source": "test", "notes": ""}
    path.write_text(json.dumps([base | e for e in entries]))
    return path


def test_reference_pass_fail_missing(table, tmp_path):
    ref = _reference(tmp_path / "ref.json", [
        {"backbone": "ringmoe-tiny", "expected": 71.0, "tolerance": 1.0},       # 72 - 71 = 1: PASS at the edge
        {"backbone": "ringmoe-random-init", "expected": 65.0, "tolerance": 2.5},  # 62: FAIL
        {"backbone": "ringmoe-base", "expected": 80.0, "tolerance": 1.0},       # no runs: MISSING
        {"backbone": "ringmoe-*", "metric": "aAcc", "expected": 90.0, "tolerance": 0.0},  # both groups, metrics_json
        {"backbone": "ringmoe-tiny", "task": "depth", "dataset": "nyu", "metric": "d1", "expected": 0.85,
         "tolerance": 0.01},
    ])
    selection = report.select_rows(results.read_rows(table))
    out = report.compare_reference(report.load_reference(ref), selection.rows)
    assert [(r["backbone"], r["status"]) for r in out] == [
        ("ringmoe-tiny", "PASS"), ("ringmoe-random-init", "FAIL"), (None, "MISSING"),
        ("ringmoe-random-init", "PASS"), ("ringmoe-tiny", "PASS"), ("ringmoe-tiny", "PASS")]
    assert (out[0]["measured"], out[0]["delta"], out[0]["n"]) == (72.0, 1.0, 3)
    assert (out[1]["measured"], out[1]["delta"]) == (62.0, -3.0)
    assert out[5]["measured"] == pytest.approx(0.85)
    (only,) = report.compare_reference(report.load_reference(ref), selection.rows, tasks=["depth"])
    assert only["entry"]["metric"] == "d1"


def test_check_exit_codes(table, tmp_path, capsys):
    failing = _reference(tmp_path / "fail.json", [{"backbone": "ringmoe-tiny", "expected": 50.0, "tolerance": 1.0}])
    passing = _reference(tmp_path / "pass.json", [{"backbone": "ringmoe-tiny", "expected": 72.5, "tolerance": 1.0},
                                                   {"backbone": "nothing", "expected": 1.0, "tolerance": 1.0}])
    common = ["--results", str(table), "--out", str(tmp_path / "out")]
    assert report.main(common + ["--reference", str(failing), "--check"]) == 1
    assert "report: FAIL segmentation/potsdam/finetune/ringmoe-tiny mIoU: measured 72" in capsys.readouterr().out
    assert "**FAIL**" in (tmp_path / "out" / "report.md").read_text()  # written all the same
    assert report.main(common + ["--reference", str(failing)]) == 0  # without --check a failure is reported only
    assert report.main(common + ["--reference", str(passing), "--check"]) == 0  # MISSING does not fail
    text = (tmp_path / "out" / "report.md").read_text()
    assert "**PASS**" in text and "**MISSING**" in text


@pytest.mark.parametrize("content, message", [
    ("{not json", "not readable JSON"),
    ('{"a": 1}', "JSON list"),
    ('[{"task": "x"}]', "lacks"),
    ('[{"task": "segmentation", "dataset": "d", "protocol": "p", "backbone": "b", "metric": "m", '
     '"expected": "high", "tolerance": 1, "source": "s"}]', "finite number"),
])
def test_a_malformed_reference_is_one_line_exit_2(table, tmp_path, capsys, content, message):
    ref = tmp_path / "ref.json"
    ref.write_text(content)
    assert report.main(["--results", str(table), "--reference", str(ref), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("report: error:") and message in err and err.count("\n") == 1


def test_the_shipped_reference_file_is_well_formed():
    entries = report.load_reference(report.DEFAULT_REFERENCE)
    assert entries and all(e["source"] and e["tolerance"] > 0 for e in entries)


# ---- bad tables ----------------------------------------------------------------------------
def _v1_table(path: Path) -> Path:
    path.write_text(",".join(results.SCHEMA_HISTORY[1]) + "\n")
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "absent.csv", "does not exist"),
    (lambda p: p, "is a directory"),
    (lambda p: _v1_table(p / "v1.csv"), "schema version 1"),
    (lambda p: (p / "junk.csv").write_bytes(b"\xff\xfe\x00garbage") and p / "junk.csv", "cannot read"),
    (lambda p: (p / "other.csv").write_text("a,b\n1,2\n") and p / "other.csv", "header"),
])
def test_a_bad_table_is_one_line_exit_2(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert report.main(["--results", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("report: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "report.md").exists()


def test_help_imports_nothing_heavy():
    code = ("import sys; sys.argv = ['report', '--help']; import benchmarks.report as r\n"
            "try:\n    r.main()\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('matplotlib', 'torch', 'mmengine') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("[]") and "--check" in done.stdout


# ---- real runs: curves and the plots -------------------------------------------------------
@pytest.fixture(scope="module")
def real_runs(tiny_converted, tmp_path_factory):
    """Two seeds of a 4-iteration linear probe into one table, each iteration logged; then seed 1
    resumed to 6 iterations (a second mmengine launch folder in its work dir)."""
    from benchmarks.run import main

    root = tmp_path_factory.mktemp("report_runs")
    data = generate_scene_dataset("nwpu_resisc45", root / "nwpu", per_class=3, size=32)
    table = root / "results.csv"
    common = ["--task", "classification", "--checkpoint", str(tiny_converted), "--data-root", str(data),
              "--results", str(table), "--cfg-options", "default_hooks.logger.interval=1",
              "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
              "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False"]
    for seed in (0, 1):
        assert main(["--iters", "4", "--seed", str(seed), "--work-dir", str(root / f"seed{seed}")] + common) == 0
    return {"table": table, "root": root}


def test_curves_have_the_logged_iterations(real_runs):
    rows = results.read_rows(real_runs["table"])
    assert [r["seed"] for r in rows] == ["0", "1"]
    for row in rows:
        curves = report.read_curves(Path(row["work_dir"]), row["primary_metric"])
        assert [i for i, _ in curves.loss] == [1, 2, 3, 4] and all(math.isfinite(v) for _, v in curves.loss)
        assert curves.metric == [(4, pytest.approx(float(row["primary_value"]), abs=1e-4))]
        assert curves.launches == 1


def test_resumed_launches_merge_by_iteration(real_runs, tmp_path):
    """A second launch folder (as --resume makes) that repeats iteration 4 and goes on to 6."""
    work_dir = tmp_path / "wd"
    shutil.copytree(real_runs["root"] / "seed0", work_dir)
    (first,) = report.log_dirs(work_dir)
    second = work_dir / "29991231_235959" / "vis_data"
    second.mkdir(parents=True)
    lines = [{"loss": 9.0 + i, "lr": 0.1, "iter": i, "step": i} for i in (4, 5, 6)]
    lines.append({"accuracy/top1": 50.0, "step": 6})
    (second / "scalars.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (work_dir / "20000101_000000").mkdir()  # a launch that died before logging: ignored
    curves = report.read_curves(work_dir, "accuracy/top1")
    old = dict(report.read_curves(real_runs["root"] / "seed0", "accuracy/top1").loss)
    assert curves.launches == 2 and report.log_dirs(work_dir) == [first, second.parent]
    assert curves.loss == [(1, old[1]), (2, old[2]), (3, old[3]), (4, 13.0), (5, 14.0), (6, 15.0)]
    assert [i for i, _ in curves.metric] == [4, 6] and curves.metric[-1][1] == 50.0
    with pytest.raises(FileNotFoundError):
        report.read_curves(tmp_path / "nowhere", "accuracy/top1")


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000, path


def test_cli_writes_report_and_plots(real_runs, table, tmp_path, capsys):
    # The real runs' table plus the hand-made rows, whose work dirs do not exist.
    merged = write_table(tmp_path / "merged.csv", results.read_rows(real_runs["table"]) + results.read_rows(table))
    out = tmp_path / "report"
    assert report.main(["--results", str(merged), "--reference", "none", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "report: warning: run p0 (segmentation/potsdam/finetune/ringmoe-tiny/optical, seed 0): work dir " \
           "/nonexistent/p0 not found: no curves" in err
    for name in ("classification_bars", "classification_curves", "segmentation_bars", "depth_bars"):
        _assert_png(out / f"{name}.png")
    assert not (out / "segmentation_curves.png").exists()  # none of its runs has logs
    text = (out / "report.md").read_text()
    assert "![classification_curves](classification_curves.png)" in text and "## Warnings" in text
    line = next(t for t in text.splitlines() if t.startswith("| classification | nwpu_resisc45_train10% |"))
    assert "| 0.1 | linear_probe | ringmoe-tiny | optical | - | accuracy/top1 | 2 |" in line
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_tasks_option_limits_the_report(real_runs, table, tmp_path):
    merged = write_table(tmp_path / "merged.csv", results.read_rows(real_runs["table"]) + results.read_rows(table))
    out = tmp_path / "report"
    args = ["--results", str(merged), "--reference", "none", "--out", str(out), "--tasks", "classification"]
    assert report.main(args) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["classification_bars.png", "classification_curves.png"]
    assert "segmentation" not in (out / "report.md").read_text()
