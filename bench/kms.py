"""KMS throughput and latency over TLS: GenerateDataKeyWithoutPlaintext + Decrypt.

    .venv/bin/python bench/kms.py [--clients 8] [--seconds 10] [--backends sqlite,postgres]
                                  [--surface native|ehsm]

For each backend it starts a real ``ppml serve --tls-dev`` (SQLite in a temp dir; PostgreSQL in a
throwaway cluster from the distribution's binaries), enrolls one app per client, and runs N
client processes for a fixed time. Each client keeps one TLS connection open and loops: generate
a data key without plaintext, then decrypt it (2 operations). It prints ops/s, p50 and p99.

Baseline, measured in the same run on the same server and TLS connections: ``GetVersion`` (the
same HTTP/TLS/JSON path with no authentication, database or crypto), so the ratio shows what the
KMS work costs on top of the HTTP stack. Target on 2 cores: >= 2,000 ops/s with p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from ppml.kms import signing  # noqa: E402

TARGET_OPS, TARGET_P99_MS = 2000, 20.0


def _client(args: tuple[str, int, str, str, str, str, float, str, mp.Queue]) -> None:
    host, port, ca, appid, apikey, key_id, seconds, mode, out = args
    context = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(host, port, context=context)
    key = apikey.encode()
    latencies: list[float] = []
    last_ts = 0

    def post_native(path: str, payload: dict) -> dict:
        body = json.dumps(payload).encode()
        headers = signing.native_headers(appid, key, method="POST", path=path, body=body)
        headers["Content-Type"] = "application/json"
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status} {data[:200]!r}")
        return json.loads(data)

    def post_ehsm(action: str, payload: dict) -> dict:
        nonlocal last_ts
        ts = max(int(time.time() * 1000), last_ts + 1)
        while ts > time.time() * 1000 + 1:
            time.sleep(0.0002)
        last_ts = ts
        timestamp = str(ts)
        body = {"appid": appid, "payload": payload, "timestamp": timestamp,
                "sign": signing.ehsm_sign(key, appid=appid, payload=payload, timestamp=timestamp)}
        conn.request("POST", f"/ehsm?Action={action}", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = json.loads(response.read())
        if data.get("code") != 200:
            raise RuntimeError(f"{action}: {data}")
        return data["result"]

    def version() -> None:
        conn.request("GET", "/ehsm?Action=GetVersion")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError("GetVersion failed")

    deadline = time.perf_counter() + seconds
    errors = 0
    while time.perf_counter() < deadline:
        try:
            if mode == "baseline":
                t0 = time.perf_counter()
                version()
                latencies.append(time.perf_counter() - t0)
            elif mode == "native":
                t0 = time.perf_counter()
                wrapped = post_native(f"/v1/keys/{key_id}/generate-data-key",
                                      {"length": 32, "include_plaintext": False})["ciphertext"]
                t1 = time.perf_counter()
                post_native(f"/v1/keys/{key_id}/decrypt", {"ciphertext": wrapped})
                t2 = time.perf_counter()
                latencies += [t1 - t0, t2 - t1]
            else:
                t0 = time.perf_counter()
                wrapped = post_ehsm("GenerateDataKeyWithoutPlaintext", {"keyid": key_id, "keylen": 32})["ciphertext"]
                t1 = time.perf_counter()
                post_ehsm("Decrypt", {"keyid": key_id, "ciphertext": wrapped})
                t2 = time.perf_counter()
                latencies += [t1 - t0, t2 - t1]
        except (RuntimeError, OSError, http.client.HTTPException) as exc:
            errors += 1
            if errors > 10:
                out.put(("error", repr(exc)))
                return
            conn.close()
            conn = http.client.HTTPSConnection(host, port, context=context)
    out.put((len(latencies), latencies[:: max(1, len(latencies) // 20000)], errors))


def _run_phase(server, apps, key_ids, seconds: float, mode: str) -> dict:
    queue: mp.Queue = mp.Queue()
    procs = [
        mp.Process(target=_client, args=(("127.0.0.1", server.port, str(server.ca), appid, apikey, key_id,
                                          seconds, mode, queue),))
        for (appid, apikey), key_id in zip(apps, key_ids)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    failures = [r for r in results if r[0] == "error"]
    if failures:
        raise RuntimeError(f"client failed: {failures[0][1]}")
    total = sum(r[0] for r in results)
    sample = sorted(x for r in results for x in r[1])
    return {
        "ops": total,
        "ops_s": total / seconds,
        "p50_ms": statistics.median(sample) * 1000 if sample else float("nan"),
        "p99_ms": sample[int(len(sample) * 0.99) - 1] * 1000 if sample else float("nan"),
        "errors": sum(r[2] for r in results),
        "wall": elapsed,
    }


def bench_backend(name: str, clients: int, seconds: float, surface: str, work: Path, access_log: bool) -> None:
    from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials
    from servers import KmsServer, PostgresCluster

    cluster = None
    db_url = None
    if name == "postgres":
        cluster = PostgresCluster()
        db_url = cluster.create_database("bench")
    server = KmsServer(work / f"kms-{name}", db_url=db_url, extra=[] if access_log else ["--no-access-log"])
    try:
        admin = RemoteKms(KmsEndpoint.parse(server.uri()), load_credentials(server.admin_credentials))
        apps, key_ids = [], []
        for _ in range(clients):
            creds = admin.enroll()
            app = RemoteKms(KmsEndpoint.parse(server.uri()), creds)
            key_ids.append(app.create_primary_key(description="bench").key_id)
            apps.append((creds.appid, creds.apikey.decode()))
        _run_phase(server, apps, key_ids, 1.0, surface)  # warm-up: connections, caches
        base = _run_phase(server, apps, key_ids, seconds, "baseline")
        kms = _run_phase(server, apps, key_ids, seconds, surface)
        print(f"\n== {name} ({surface} API, {clients} clients, {seconds:.0f} s each, TLS, 2 ops per iteration)")
        print(f"{'phase':<34}{'ops/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        for label, r in (("baseline: GetVersion (no auth/db)", base),
                         ("GenerateDataKeyWithoutPlaintext+Decrypt", kms)):
            print(f"{label:<34}{r['ops_s']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
        print(f"ratio kms/baseline ops/s: {kms['ops_s'] / base['ops_s']:.2f}")
        ok = kms["ops_s"] >= TARGET_OPS and kms["p99_ms"] <= TARGET_P99_MS
        print(f"target: >= {TARGET_OPS} ops/s with p99 <= {TARGET_P99_MS:.0f} ms: {'PASS' if ok else 'BELOW'}")
    finally:
        server.stop()
        if cluster is not None:
            cluster.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--surface", choices=["native", "ehsm"], default="native")
    parser.add_argument("--access-log", action="store_true", help="keep the server's access log on")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="ppml-bench-kms-") as tmp:
        for backend in args.backends.split(","):
            bench_backend(backend.strip(), args.clients, args.seconds, args.surface, Path(tmp), args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
