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


class NeedsTwoArguments(Exception):
    """An exception that pickles but does not rebuild (its __init__ wants two arguments)."""

    def __init__(self, first: str, second: str):
        super().__init__(first + second)


def raise_needs_two_arguments() -> None:
    raise NeedsTwoArguments("a", "b")


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


def test_a_reply_that_will_not_unpickle_fails_its_job_only(fresh_helper):
    with pytest.raises(RuntimeError, match="reply could not be read.*NeedsTwoArguments"):
        util.in_subprocess(raise_needs_two_arguments).result(timeout=60)
    assert util.in_subprocess(math.sqrt, 16).result(timeout=60) == 4.0


def test_a_job_the_helper_cannot_import_fails_its_job_only(fresh_helper, tmp_path, monkeypatch):
    pid = util.in_subprocess(os.getpid).result(timeout=60)  # the helper's sys.path is fixed from here
    (tmp_path / "only_here.py").write_text("def answer():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here

    with pytest.raises(ModuleNotFoundError, match="only_here"):
        util.in_subprocess(only_here.answer).result(timeout=60)
    assert util.in_subprocess(os.getpid).result(timeout=60) == pid  # the same helper goes on


def test_ctrl_c_is_for_the_parent_not_the_helper(fresh_helper):
    pid = util.in_subprocess(os.getpid).result(timeout=60)
    os.kill(pid, signal.SIGINT)  # what the terminal sends the whole process group
    time.sleep(0.3)
    assert util.in_subprocess(os.getpid).result(timeout=60) == pid


def test_a_forked_child_gets_a_helper_of_its_own(fresh_helper):
    parents = util.in_subprocess(os.getpid).result(timeout=60)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its helper's pid, whatever happens
        try:
            signal.alarm(60)
            os.write(write_end, str(util.in_subprocess(os.getpid).result(timeout=50)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reply:
        childs = reply.read()
    os.waitpid(child, 0)
    assert childs and int(childs) not in (parents, child)
    assert util.in_subprocess(os.getpid).result(timeout=60) == parents  # the parent's helper is untouched
