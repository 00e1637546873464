"""ms2torch --verify: the numeric check before writing, and what it does without MindSpore."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from converters.ms2torch import main
from converters.rules import ringmoe as rules

REPO = Path(__file__).resolve().parents[1]


def test_verify_passes_and_prints_per_stage_errors(tiny_ms_checkpoint, tmp_path, capsys):
    assert main([str(tiny_ms_checkpoint), "-o", str(tmp_path / "x.pth"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert out.count("rel. error per stage+final") == 4
    assert "verify: passed" in out and (tmp_path / "x.pth").is_file()


def test_verify_catches_a_mapping_that_passes_every_structural_check(tiny_ms_checkpoint, tmp_path, monkeypatch,
                                                                       capsys):
    """q and k have the same shapes: swapping them fools coverage and shape checks, not --verify."""
    swapped = []
    for pattern, template, transform in rules.RENAMES:
        if "attn.{l}" in template:
            swapped += [(pattern.replace("(?P<l>q|k|v|proj)", "(?P<l>v|proj)"), template, transform),
                        (pattern.replace("(?P<l>q|k|v|proj)", "q"), template.replace("{l}", "k"), transform),
                        (pattern.replace("(?P<l>q|k|v|proj)", "k"), template.replace("{l}", "q"), transform)]
        else:
            swapped.append((pattern, template, transform))
    monkeypatch.setattr(rules, "_RENAMES", [(re.compile(p), t, f) for p, t, f in swapped])
    code = main([str(tiny_ms_checkpoint), "-o", str(tmp_path / "x.pth"), "--verify"])
    captured = capsys.readouterr()
    assert code == 1
    assert "verify: FAILED" in captured.out and "nothing written" in captured.err
    assert list(tmp_path.iterdir()) == []


def test_without_mindspore_verify_says_it_ran_structural_checks_only(tiny_ms_checkpoint, tmp_path):
    code = ("import sys\nsys.modules['mindspore'] = None\nfrom converters.ms2torch import main\n"
            f"sys.exit(main([{str(tiny_ms_checkpoint)!r}, '-o', {str(tmp_path / 'x.pth')!r}, '--verify']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "MindSpore is not installed: only the structural checks ran" in result.stdout
