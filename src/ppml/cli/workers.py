"""``ppml serve --workers N``: N forked worker processes on one port (the pre-fork model of
gunicorn), so that the service uses more than one core; Python runs one thread of request
handling per process at a time.

Each worker listens on its own socket bound to the port with ``SO_REUSEPORT`` (Linux), and the
kernel spreads new connections across them. One socket shared by all workers was measured to
give one worker nearly every connection: clients keep connections alive, they arrive in a burst,
and whichever worker wakes first accepts the whole backlog (16 of 16 benchmark connections on one
of two workers, the other idle). Linux lets only processes of the same user join a
``SO_REUSEPORT`` group. Where the option is missing the workers share one socket as before.

The workers share nothing but the socket and the database, exactly like replicas of the service:
every state that matters (keys, apps, replay stamps, attestation nonces, the audit chain) lives in
the database, and SQLite writers from several processes are serialised (see :mod:`ppml.store`).
The parent only supervises: SIGTERM/SIGINT stop every worker gracefully; a worker that dies on its
own stops the others and the parent exits 1, so that whatever supervises ``ppml serve`` (systemd,
Kubernetes) restarts it whole; a parent killed outright takes its workers with it (Linux:
``PR_SET_PDEATHSIG``).

Metrics: each worker counts into ``PROMETHEUS_MULTIPROC_DIR`` (set by :func:`prepare_metrics`
before prometheus_client is imported) and ``/metrics`` answers for all of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

__all__ = ["listening_sockets", "prepare_metrics", "run_workers"]

log = logging.getLogger("ppml.kms")
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics(data_dir: Path) -> None:
    """An empty private directory for the workers' metrics; call before importing prometheus_client."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prepare_metrics must run before prometheus_client is imported")
    directory = data_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    os.environ[METRICS_ENV] = str(directory)


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` (one port even when ``port`` is 0), each with
    ``SO_REUSEPORT``; a single shared socket where the platform has no such option. All are bound
    before any worker starts, so a port in use fails the start."""
    if count == 1 or not hasattr(socket, "SO_REUSEPORT"):
        return [socket.create_server((host, port), backlog=2048)]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(socket.create_server((host, port), backlog=2048, reuse_port=True))
            port = sockets[0].getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def run_workers(host: str, port: int, count: int, target: Callable[[socket.socket], int]) -> int:
    """Bind ``host:port``, fork ``count`` workers each running ``target(socket)``, supervise them."""
    sockets = listening_sockets(host, port, count)
    parent = os.getpid()
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                _die_with(parent)
                own = sockets[index % len(sockets)]
                for other in sockets:
                    if other is not own:
                        other.close()
                os.environ["PPML_WORKER_INDEX"] = str(index)
                code = target(own)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children[pid] = index
    for sock in sockets:
        sock.close()
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        if not stopping:
            log.error("ppml kms: worker %s (pid %d) exited with %d: stopping the service", index, pid,
                      os.waitstatus_to_exitcode(wait_status))
            status = 1
            stop()
    return status


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM to this worker when the parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
