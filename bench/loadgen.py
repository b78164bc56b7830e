"""A lean HTTPS load generator for the benchmarks (like wrk or h2load): one uvloop process, one
keep-alive TLS connection per client, just enough HTTP/1.1, so that the clients' CPU, on the same
2 cores as the server, is not what gets measured. ``bench/kms.py`` signs its requests itself on a
:class:`Wire`; :func:`run_phase` sends fixed requests (``bench/serving.py``)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import ssl
import statistics
import time
from pathlib import Path

#: (method, target, body, headers): one request, sent as is.
Request = tuple[str, str, bytes, dict[str, str]]


class Wire:
    """One keep-alive TLS connection: the request goes out in one write, the reply is read by its
    Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    async def request(self, method: str, target: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request (a body is JSON unless ``headers`` name a Content-Type); (status, body)."""
        headers = headers or {}
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        if body and not any(name.lower() == "content-type" for name in headers):
            lines.append("Content-Type: application/json")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its threads and its worker processes (Linux /proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # the server or one of its workers
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _client(host: str, port: int, context: ssl.SSLContext, request: Request, deadline: float,
                  latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    wire = Wire(reader, writer, f"{host}:{port}")
    method, target, body, headers = request
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, data = await wire.request(method, target, body, headers)
            if status != 200:
                raise RuntimeError(f"{method} {target}: HTTP {status} {data[:200]!r}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def _clients_process(host: str, port: int, ca: str, request: Request, clients: int, seconds: float,
                     out: mp.Queue) -> None:
    import uvloop

    async def run() -> list[float]:
        context = ssl.create_default_context(cafile=ca)
        deadline = time.perf_counter() + seconds
        latencies: list[list[float]] = [[] for _ in range(clients)]
        await asyncio.gather(*(_client(host, port, context, request, deadline, mine) for mine in latencies))
        return [x for mine in latencies for x in mine]

    try:
        out.put(("ok", uvloop.run(run()), time.process_time()))
    except Exception as exc:
        out.put(("error", repr(exc), 0.0))


def run_phase(host: str, port: int, ca: Path, request: Request, *, clients: int, seconds: float,
              server_pid: int) -> dict[str, float]:
    """``clients`` connections sending ``request`` back to back for ``seconds``: requests/s,
    p50/p99 latency (ms), and the server's and the clients' CPU per request (ms)."""
    queue: mp.Queue = mp.Queue()
    server_cpu = cpu_seconds(server_pid)
    process = mp.Process(target=_clients_process, args=(host, port, str(ca), request, clients, seconds, queue))
    process.start()
    kind, latencies, client_cpu = queue.get(timeout=seconds + 120)
    process.join()
    server_cpu = cpu_seconds(server_pid) - server_cpu
    if kind == "error":
        raise RuntimeError(f"client failed: {latencies}")
    latencies.sort()
    count = max(len(latencies), 1)
    return {
        "requests": len(latencies),
        "requests_s": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000 if latencies else float("nan"),
        "server_cpu_ms": server_cpu * 1000 / count,
        "client_cpu_ms": client_cpu * 1000 / count,
    }
