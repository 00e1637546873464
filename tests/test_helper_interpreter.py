"""converters.util.in_subprocess: jobs run in one helper interpreter, in order, and come back as
results or exceptions; without a helper (none can start, or it died) they run in a thread."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from converters import util


@pytest.fixture
def fresh_helper(monkeypatch):
    """A helper of this test's own, stopped afterwards (others keep theirs)."""
    monkeypatch.setattr(util, "_helper", None)
    yield
    helper = util._helper
    if helper is not None and helper.alive():
        helper._process.kill()
        helper._process.wait()


def test_jobs_run_in_one_other_process_in_order(fresh_helper):
    first = util.in_subprocess(os.getpid)
    slow = util.in_subprocess(time.sleep, 0.3)
    second = util.in_subprocess(os.getpid)
    assert first.result(timeout=60) == second.result(timeout=60) != os.getpid()
    assert slow.done() and slow.result() is None  # replies come in the order the jobs were sent


def test_a_failing_job_raises_its_own_exception(fresh_helper):
    with pytest.raises(ValueError, match="math domain error"):
        util.in_subprocess(math.sqrt, -1).result(timeout=60)
    assert util.in_subprocess(math.sqrt, 4).result(timeout=60) == 2.0  # the helper goes on


def test_a_job_that_prints_does_not_corrupt_the_replies(fresh_helper, capfd):
    assert util.in_subprocess(print, "from the helper").result(timeout=60) is None
    assert util.in_subprocess(math.sqrt, 9).result(timeout=60) == 3.0
    assert "from the helper" in capfd.readouterr().err


def test_a_job_whose_helper_dies_runs_again_in_a_thread(fresh_helper):
    pid = util.in_subprocess(os.getpid).result(timeout=60)
    sleeping = util.in_subprocess(time.sleep, 1.0)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    assert sleeping.result(timeout=60) is None  # retried here
    assert util.in_subprocess(os.getpid).result(timeout=60) not in (pid, os.getpid())  # a new helper


def test_without_a_process_jobs_run_in_a_thread(fresh_helper, monkeypatch):
    def no_processes(*args, **kwargs):
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", no_processes)
    assert util.in_subprocess(os.getpid).result(timeout=60) == os.getpid()
    with pytest.raises(ValueError):
        util.in_subprocess(math.sqrt, -1).result(timeout=60)


def test_the_helper_leaves_when_its_process_exits(tmp_path):
    """The CLI leaves with os._exit while the helper may still be importing torch: the helper
    must not outlive it (nor write a traceback into the terminal afterwards)."""
    code = ("import os, time; from converters import util; "
            "print(util.in_subprocess(os.getpid).result(), flush=True); "
            "util.in_subprocess(time.sleep, 60); time.sleep(0.3); os._exit(0)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=120)
    assert done.returncode == 0, done.stderr
    helper = int(done.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{helper}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{helper}"), "the helper outlived its process"
    assert done.stderr == ""
