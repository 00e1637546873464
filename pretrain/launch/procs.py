"""Run launcher children and never leave them behind: each child gets its own process group,
and on failure, timeout or a signal every group this launcher started is ended (by its id)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class LaunchError(ValueError):
    """A one-line problem with launcher input (exit status 2)."""


@dataclass
class Child:
    """One command to start: argv, extra environment, and a log file (None: inherit stdout)."""

    argv: list[str]
    env: dict[str, str]
    log: Path | None = None
    name: str = ""


def shell_line(child: Child) -> str:
    """The command as one shell line with its environment, for --dry-run."""
    import shlex

    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in child.env.items())
    line = " ".join(shlex.quote(a) for a in child.argv)
    return f"{env} {line}".strip() + (f" > {shlex.quote(str(child.log))} 2>&1" if child.log else "")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc), so that children which left our process
    group (msrun starts its workers with setsid) can still be ended by their ids."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _running(pid: int) -> bool:
    """Alive and not yet a zombie."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop(procs: list[subprocess.Popen], grace_s: float = 10.0, first: int = signal.SIGTERM) -> None:
    """End ``procs`` and everything they started: ``first`` to each group, then SIGKILL after
    ``grace_s`` to whatever is left (groups, and descendants that made their own sessions);
    returns once they are gone."""
    live = [p for p in procs if p.poll() is None]
    for p in live:  # frozen, a child starts nothing new while its descendants are listed
        _signal_group(p.pid, signal.SIGSTOP)
    below = {pid for p in live for pid in descendants(p.pid)}
    for p in live:
        _signal_group(p.pid, first)
        _signal_group(p.pid, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p.poll() is None for p in live):
        below.update(pid for p in live if p.poll() is None for pid in descendants(p.pid))
        time.sleep(0.2)
    for pid in below:  # a setsid child leads its own group; msrun may have ended them already
        if _running(pid):
            _signal_group(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for p in live:
        if p.poll() is None:
            _signal_group(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
    deadline = time.monotonic() + 5  # SIGKILL is asynchronous: wait until they are really gone
    while time.monotonic() < deadline and any(_running(pid) for pid in below):
        time.sleep(0.05)


def run_children(children: list[Child], timeout_s: float | None = None, first_signal: int = signal.SIGTERM,
                 echo=print) -> int:
    """Start every child, wait for all; the first failure, a timeout or SIGINT/SIGTERM ends the rest.

    Returns 0 if all succeeded, else the first non-zero exit status (124 on timeout, 130/143 on a
    signal). ``first_signal`` is what each child is asked to stop with (msrun wants SIGINT, the
    one signal it forwards to its workers).
    """
    procs: list[subprocess.Popen] = []
    stopping: list[int] = []

    def on_signal(signum, _frame):
        stopping.append(128 + signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    files = []
    try:
        for child in children:
            out = None
            if child.log is not None:
                child.log.parent.mkdir(parents=True, exist_ok=True)
                out = child.log.open("ab")
                files.append(out)
            procs.append(subprocess.Popen(child.argv, env={**os.environ, **child.env}, stdout=out,
                                          stderr=subprocess.STDOUT if out else None, start_new_session=True))
            echo(f"started {child.name or child.argv[0]} (pid {procs[-1].pid})"
                 + (f", log {child.log}" if child.log else ""))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                echo(f"a process exited with status {failed[0]}: stopping the others")
                stop(procs, first=first_signal)
                return failed[0] if failed[0] > 0 else 128 - failed[0]
            if all(c == 0 for c in codes):
                return 0
            if stopping:
                echo("interrupted: stopping every process")
                stop(procs, first=first_signal)
                return stopping[0]
            if deadline is not None and time.monotonic() > deadline:
                echo(f"timed out after {timeout_s:g} s: stopping every process")
                stop(procs, first=first_signal)
                return 124
            time.sleep(0.2)
    finally:
        stop([p for p in procs if p.poll() is None], first=first_signal)
        for f in files:
            f.close()
        for s, handler in old.items():
            signal.signal(s, handler)


def fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
