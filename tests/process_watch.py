"""Processes a test module leaves behind, found and stopped; CPU hogs named when a test fails.

A server, SuperNode or JVM that outlives its module keeps a core busy and makes every later test
slow or time out (CI saw a 10 s test take 132 s and a 50 s one 347 s, after earlier modules).
Every process the session starts inherits ``PPML_TEST_RUN``; after each module's own fixtures
are torn down, the processes carrying it that the module started and that still run (other than
the session's shared servers) are reported at the end of the session and killed, so one leak
cannot slow the rest. A failing test's report gets the machine's busiest processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_MARK = "PPML_TEST_RUN"
# The session-scoped fixtures' processes (PostgreSQL, moto, the shared SparkSession's JVM and its
# Python workers) and the pytest process's own multiprocessing helpers live for the whole session.
_SESSION_SCOPED = ("postgres", "moto_server", "moto.server", "pyspark-shell", "pyspark.daemon", "pyspark/daemon.py")
_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
_leaks: list[str] = []


def _marked(run: str) -> dict[int, str]:
    """pid → command line of every live process carrying this session's mark."""
    found: dict[int, str] = {}
    needle = f"{_MARK}={run}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _session_scoped(pid: int, command: str) -> bool:
    if any(name in command for name in _SESSION_SCOPED):
        return True
    return _ppid(pid) == os.getpid() and any(name in command for name in _HELPERS)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(_MARK, uuid.uuid4().hex)


@pytest.fixture(scope="module", autouse=True)
def _no_process_outlives_its_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """Autouse and module-scoped, so set up before and torn down after the module's own fixtures."""
    run = os.environ[_MARK]
    before = set(_marked(run))
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = {pid: command for pid, command in _marked(run).items()
                if pid not in before and not _session_scoped(pid, command)}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid, command in left.items():
        _leaks.append(f"{request.module.__name__}: pid {pid}: {command[:300]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        try:
            busiest = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,rss,etimes,args", "--sort=-pcpu"],
                                     capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            busiest = f"(ps failed: {exc})"
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
        report.sections.append(("busiest processes", f"load average {load}\n"
                                + "\n".join(line[:250] for line in busiest.splitlines()[:12])))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _leaks:
        terminalreporter.section("processes that outlived their test module (killed)")
        for line in _leaks:
            terminalreporter.write_line(line)
