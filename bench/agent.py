"""The key agent's unwrap throughput and latency from the JVM, beside the KMS's own.

    .venv/bin/python bench/agent.py [--seconds 5] [--threads 1,8] [--local]

Starts a real ``ppml serve --tls-dev`` (SQLite, in a temp dir), enrolls an app, creates a primary
key and generates one wrapped data key. Then, for each thread count:

* baseline, the KMS's own unwraps/s: that many Python threads in this process, each with its own
  ppml client (one verified TLS connection), unwrap the key in a loop;
* the agent: a key agent in this process (the app's credentials, no TEE: what ``ppml submit --tee
  none`` runs) serves ``org.ppml.agent.AgentBench`` in a JVM child, whose threads each open their
  own agent connection, as Spark task threads do, and unwrap the same key in a loop.

It prints unwraps/s, p50 and p99 for both and the agent/KMS ratio. ``--local`` uses a local key
store instead of the server (no network, no KMS work to speak of): what the agent itself costs.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def kms_baseline(open_client: Callable[[], Any], key_id: str, wrapped: bytes, threads: int,
                 seconds: float) -> dict[str, float]:
    """Unwraps/s and latency of ``threads`` Python threads, each with its own KMS client."""
    clients = [open_client() for _ in range(threads)]
    for client in clients:
        client.unwrap_data_key(key_id, wrapped)  # connect outside the clock
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = time.perf_counter() + 0.1
    deadline = start + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < start:
            time.sleep(0.001)
        mine = latencies[index]
        while (before := time.perf_counter()) < deadline:
            clients[index].unwrap_data_key(key_id, wrapped)
            mine.append(time.perf_counter() - before)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    for client in clients:
        close = getattr(client, "close", None)
        if close:
            close()
    every = sorted(x for mine in latencies for x in mine)
    return {"per_second": len(every) / elapsed, "p50_ms": every[len(every) // 2] * 1000,
            "p99_ms": every[max(0, int(len(every) * 0.99) - 1)] * 1000}


def jvm_bench(agent_env: dict[str, str], kms_uri: str, key_id: str, wrapped: bytes, threads: int,
              seconds: float) -> dict[str, float]:
    from ppml.spark import jvm
    from ppml.spark.launch import spark_home

    jars = spark_home() / "jars"
    classpath = os.pathsep.join([str(jvm.library_jar()), *(str(p) for p in sorted(jars.glob("jackson-*.jar")))])
    result = subprocess.run(
        ["java", "-cp", classpath, "org.ppml.agent.AgentBench", kms_uri, key_id,
         base64.b64encode(wrapped).decode(), str(threads), str(seconds)],
        env={**os.environ, **agent_env}, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if result.returncode != 0:
        raise SystemExit(f"AgentBench failed:\n{result.stdout}{result.stderr}")
    fields = dict(item.split("=", 1) for item in result.stdout.split())
    if int(fields["errors"]):
        raise SystemExit(f"AgentBench had errors: {result.stdout}{result.stderr}")
    return {name: float(fields[name]) for name in ("per_second", "p50_ms", "p99_ms")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--local", action="store_true", help="a local key store instead of ppml serve")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]

    from ppml.kms.local import LocalKeyStore
    from ppml.kms.registry import open_kms
    from ppml.tee.agent import KeyAgent

    with tempfile.TemporaryDirectory(prefix="ppml-bench-agent-") as tmp:
        work = Path(tmp)
        server = None
        if args.local:
            store = LocalKeyStore(work / "keys")
            kms_uri = store.uri
            key_id = store.create_primary_key(description="bench").key_id
            open_client: Callable[[], Any] = lambda: store  # noqa: E731
            label = "local key store"
        else:
            from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials, write_credentials
            from servers import KmsServer

            server = KmsServer(work / "kms", extra=["--no-access-log"])
            admin = RemoteKms(KmsEndpoint.parse(server.uri()), load_credentials(server.admin_credentials))
            creds = admin.enroll()
            credentials = work / "app.json"
            write_credentials(credentials, creds.appid, creds.apikey.decode())
            kms_uri = server.uri(credentials=credentials)
            key_id = RemoteKms(KmsEndpoint.parse(server.uri()), creds).create_primary_key(description="bench").key_id
            open_client = lambda: open_kms(kms_uri)  # noqa: E731
            label = "ppml serve --tls-dev (SQLite), over TLS"
        try:
            wrapped = open_client().generate_data_key(key_id).wrapped
            agent = KeyAgent(open_kms, tee="none").start()
            try:
                print(f"\nunwraps of one data key, {args.seconds:.0f} s per phase, KMS: {label} "
                      f"(load {os.getloadavg()[0]:.1f})")
                print(f"{'threads':>7}  {'path':<34}{'unwraps/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>7}")
                for threads in thread_counts:
                    base = kms_baseline(open_client, key_id, wrapped, threads, args.seconds)
                    through = jvm_bench(agent.environment(), kms_uri, key_id, wrapped, threads, args.seconds)
                    for path, r in (("KMS client (Python, baseline)", base), ("JVM -> agent -> KMS", through)):
                        print(f"{threads:>7}  {path:<34}{r['per_second']:>10.0f}{r['p50_ms']:>9.2f}"
                              f"{r['p99_ms']:>9.2f}{r['per_second'] / base['per_second']:>7.2f}")
            finally:
                agent.stop()
        finally:
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
