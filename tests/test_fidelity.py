"""benchmarks/fidelity.py: the comparison it prints, and its command line's bad input."""
from __future__ import annotations

import pytest

from benchmarks.fidelity import format_margins, main, margins

ARMS = {"pretrained": "/w/pre.pth", "ms-init": "/w/init.pth", "scratch": ""}


def _rows(values: dict[str, list[float]], task: str = "classification") -> list[dict]:
    return [{"task": task, "status": "ok", "seed": str(seed), "checkpoint": ARMS[arm],
             "primary_value": str(value), "primary_metric": "accuracy/top1",
             "work_dir": f"/w/runs/{task}/default/{arm}-seed{seed}"}
            for arm, per_seed in values.items() for seed, value in enumerate(per_seed)]


def test_margins_are_the_pretrained_mean_minus_each_other_arm():
    rows = _rows({"pretrained": [60.0, 70.0], "ms-init": [50.0, 72.0], "scratch": [40.0, 40.0]})
    rows.append({**rows[0], "task": "detection"})  # other tasks' rows are ignored
    rows.append({**rows[0], "primary_value": "0", "work_dir": "/w/runs/classification/finetune/pretrained-seed0"})
    result = margins(rows, ["classification"], [0, 1], ARMS)["classification"]
    assert result["means"] == {"pretrained": 65.0, "ms-init": 61.0, "scratch": 40.0}
    assert result["margins"] == {"ms-init": 4.0, "scratch": 25.0}
    assert result["seeds_won"] == {"ms-init": 1, "scratch": 2}
    table = format_margins({"classification": result})
    assert "+4.00" in table and "+25.00" in table and "1/2 vs ms-init" in table
    with pytest.raises(ValueError, match="ms-init seed 0"):  # another protocol's runs are kept apart
        margins(rows, ["classification"], [0], ARMS, {"classification": "finetune"})


def test_margins_of_a_lower_is_better_metric_are_flipped():
    rows = _rows({"pretrained": [2.0, 3.0], "ms-init": [2.5, 2.5], "scratch": [4.0, 4.0]}, task="depth")
    for row in rows:
        row["primary_metric"] = "rmse"
    result = margins(rows, ["depth"], [0, 1], ARMS)["depth"]
    assert result["margins"] == {"ms-init": 0.0, "scratch": 1.5}  # 1.5 m less error: +1.5
    assert result["seeds_won"] == {"ms-init": 1, "scratch": 2}


def test_an_unfinished_study_names_what_is_missing():
    rows = _rows({"pretrained": [60.0, 70.0], "ms-init": [50.0], "scratch": [40.0, 40.0]})
    with pytest.raises(ValueError, match="ms-init seed 1"):
        margins(rows, ["classification"], [0, 1], ARMS)


def test_bad_arguments_are_one_line_exit_2(tmp_path, capsys):
    assert main(["--tasks", "nope", "--work-dir", str(tmp_path)]) == 2
    assert "unknown task" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--pretrain-steps", "0"])
    assert exit_info.value.code == 2
