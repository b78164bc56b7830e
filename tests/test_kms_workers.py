"""``ppml serve --workers N``: forked workers on one port and one database.

Both workers serve (the access log names the worker), concurrent traffic through them leaves one
verifiable audit chain on SQLite (writers in two processes), ``/metrics`` counts every worker's
requests, and the process tree stops as a whole: SIGTERM stops all, a dead worker stops the
service, and a parent killed outright takes its workers with it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials
from ppml.kms.tls import client_context
from servers import KmsServer

pytestmark = pytest.mark.slow


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def two_workers(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = KmsServer(tmp_path / "kms", extra=["--workers", "2"])
    try:
        yield server
    finally:
        server.stop()


def test_two_workers_serve_one_database_with_one_audit_chain(two_workers: KmsServer, tmp_path: Path) -> None:
    server = two_workers
    assert server.process is not None
    workers = children_of(server.process.pid)
    assert len(workers) == 2
    admin = RemoteKms(KmsEndpoint.parse(server.uri()), load_credentials(server.admin_credentials))
    apps = [admin.enroll() for _ in range(6)]
    admin.close()
    failures: list[BaseException] = []
    operations = [0] * len(apps)

    def traffic(i: int) -> None:
        # A client per thread, each with its own connection: the kernel spreads them over workers.
        client = RemoteKms(KmsEndpoint.parse(server.uri()), apps[i])
        try:
            key_id = client.create_primary_key().key_id
            for n in range(40):
                generated = client.generate_data_key(key_id, associated_data=f"w/{i}/{n}".encode())
                assert client.unwrap_data_key(key_id, generated.wrapped,
                                              associated_data=f"w/{i}/{n}".encode()) == generated.data_key
                operations[i] += 2
            operations[i] += 1
        except BaseException as exc:
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []

    # /metrics answers for both workers: every data-key request is counted once.
    metrics = httpx.get(f"{server.base_url}/metrics", verify=client_context(server.ca), timeout=10).text
    sample = re.compile(r'ppml_kms_requests_total\{route="(/v1/keys/\{key_id\}/(?:generate-data-key|decrypt))",'
                        r'status="200"\} ([0-9.e+]+)')
    counted = sum(float(m[2]) for m in map(sample.fullmatch, metrics.splitlines()) if m)
    assert counted == sum(operations) - len(apps)
    by_action = re.compile(r'ppml_kms_actions_total\{action="(?:generate_data_key|decrypt)",api="native",'
                           r'code="200"\} ([0-9.e+]+)')
    assert sum(float(m[1]) for m in map(by_action.fullmatch, metrics.splitlines()) if m) == counted
    # The audit head comes from the database: one series, whichever worker answers.
    heads = [line for line in metrics.splitlines() if line.startswith("ppml_kms_audit_chain_seq ")]
    assert len(heads) == 1 and float(heads[0].split()[1]) >= counted

    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert {line["worker"] for line in lines if "worker" in line} == {0, 1}
    verify = subprocess.run([sys.executable, "-m", "ppml.cli.main", "kms", "audit", "verify", "--data-dir",
                             str(server.data_dir)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    # Bootstrap + 6 enrollments + per app: CreateKey and 40 x (GenerateDataKey, Decrypt).
    assert f"audit log intact: {1 + 6 + 6 * 81} records" in verify.stdout


@pytest.mark.skipif(not hasattr(__import__("socket"), "SO_REUSEPORT"), reason="the platform has no SO_REUSEPORT")
def test_a_burst_of_connections_is_spread_over_the_workers_sockets() -> None:
    """Each worker has its own SO_REUSEPORT socket on the one port: a burst of keep-alive clients
    does not all land on whichever worker wakes first (measured with one shared socket: 16 of 16
    benchmark connections on one of two workers)."""
    import select
    import socket

    from ppml.cli.workers import listening_sockets

    sockets = listening_sockets("127.0.0.1", 0, 2)
    clients: list[socket.socket] = []
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == 2 and len(ports) == 1
        clients = [socket.create_connection(("127.0.0.1", *ports), timeout=5) for _ in range(32)]
        accepted = [0, 0]
        deadline = time.monotonic() + 5
        while sum(accepted) < len(clients) and time.monotonic() < deadline:
            ready, _, _ = select.select(sockets, [], [], 0.5)
            for sock in ready:
                connection, _ = sock.accept()
                connection.close()
                accepted[sockets.index(sock)] += 1
        assert sum(accepted) == 32
        assert min(accepted) >= 4, accepted  # all on one socket: 2 x 0.5^32; below 4: < 1e-5
    finally:
        for sock in [*sockets, *clients]:
            sock.close()


def test_one_worker_keeps_one_plain_socket_and_a_taken_port_fails_the_start() -> None:
    import socket

    from ppml.cli.workers import listening_sockets

    [single] = listening_sockets("127.0.0.1", 0, 1)
    try:
        assert not single.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_REUSEPORT", socket.SO_REUSEADDR)) \
            or not hasattr(socket, "SO_REUSEPORT")
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", single.getsockname()[1], 2)
    finally:
        single.close()


def test_sigterm_stops_every_worker(two_workers: KmsServer) -> None:
    assert two_workers.process is not None
    workers = children_of(two_workers.process.pid)
    assert len(workers) == 2
    two_workers.process.send_signal(signal.SIGTERM)
    assert two_workers.process.wait(timeout=30) == 0
    assert wait_until(lambda: not any(alive(pid) for pid in workers))


def test_a_dead_worker_stops_the_service(two_workers: KmsServer) -> None:
    assert two_workers.process is not None
    workers = children_of(two_workers.process.pid)
    os.kill(workers[0], signal.SIGKILL)
    assert two_workers.process.wait(timeout=30) == 1
    assert wait_until(lambda: not any(alive(pid) for pid in workers))
    assert "exited with -9: stopping the service" in two_workers.log()


def test_killed_parent_takes_its_workers_with_it(two_workers: KmsServer) -> None:
    assert two_workers.process is not None
    workers = children_of(two_workers.process.pid)
    assert len(workers) == 2
    two_workers.kill()
    assert wait_until(lambda: not any(alive(pid) for pid in workers))


def test_workers_must_be_positive(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ppml.cli.main", "serve", "--data-dir", str(tmp_path / "kms"),
                             "--tls-dev", "--workers", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--workers must be 1..64" in result.stderr
