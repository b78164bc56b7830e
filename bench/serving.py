"""Attested model serving under load: requests/s and latency of ``ppml serve-model`` at 8 concurrent
clients over TLS, with JSON and with safetensors bodies.

    .venv/bin/python bench/serving.py [--clients 8] [--seconds 10] [--rows 1] [--repeat 3]
                                      [--workdir DIR]

The deployment is the real one, on loopback (``ppml.cli.deployment``, as ``ppml demo`` builds
it): ``ppml serve`` (KMS and attestation service, development TLS), an enrolled app, a signed
enclave, a policy (the SIMULATED TEE allowed), and a key released only to that policy. A small
MLP (32 -> 256 -> 256 -> 10, ~77 k parameters) is saved as an encrypted checkpoint under the key;
``ppml serve-model --tee simulated`` attests, loads it and serves, with one inference thread and
the access log off. Then N clients, each on one keep-alive TLS connection (``bench/loadgen.py``:
one uvloop process, so the clients' CPU on the same 2 cores is not what gets measured), post a
batch of ``--rows`` rows back to back for ``--seconds`` per phase:

* baseline: ``GET /healthz`` (the same TLS, HTTP and middleware, no token, body or model);
* JSON: ``{"inputs": [[...]]}``, answered ``{"outputs": ...}``;
* safetensors: one ``inputs`` tensor, answered with one ``outputs`` tensor.

Rounds alternate the three phases (this VM's capacity drifts between runs); the median round by
JSON requests/s is summarised. Printed per phase: requests/s, p50 and p99 latency, and the
server's and clients' CPU per request. No target is set by the issue: the numbers say what one
server process does on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from loadgen import Request, run_phase  # noqa: E402

from ppml.cli.deployment import LocalDeployment, Steps, local_deployment  # noqa: E402
from servers import ModelServer  # noqa: E402

MODEL_MODULE = '''
import torch
from ppml.torch.serving import InputSpec


def build_model():
    model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return model, InputSpec(shape=(32,), dtype=torch.float32)
'''


def serve(workdir: Path, steps: Steps, deployment: LocalDeployment) -> ModelServer:
    """Save the MLP under a gated key and start ``ppml serve-model`` on it (ready on return)."""
    import torch

    from ppml.kms.remote import RemoteKms
    from ppml.torch.checkpoint import save

    app_dir = workdir / "app"
    checkpoint = workdir / "mlp.ckpt"

    def save_checkpoint() -> str:
        namespace: dict[str, Any] = {}
        exec(MODEL_MODULE, namespace)
        torch.manual_seed(0)
        model, _ = namespace["build_model"]()
        key_id = deployment.create_key("served MLP weights", gated=True)
        owner = RemoteKms.from_uri(deployment.kms_uri)
        save(model.state_dict(), checkpoint, kms=owner, key_id=key_id, overwrite=True)
        owner.close()
        return f"{checkpoint.stat().st_size:,} bytes under key {key_id}"

    steps.run("save the MLP as an encrypted checkpoint (a key released only to the policy)", save_checkpoint, str)
    d = deployment
    server = ModelServer(workdir / "serve-model", [
        "--model", str(checkpoint), "--module", "bench_model:build_model", "--app-dir", str(app_dir),
        "--kms", d.kms_uri, "--tee", "simulated", "--policy", d.policy_id, "--attestation-url", d.server.url,
        "--attestation-ca", str(d.server.ca), "--enclave-manifest", str(d.manifest), "--enclave-sig", str(d.sig),
        "--platform-key", str(d.platform_key), "--no-access-log",
    ], env=d.env)

    def ready() -> str:
        if not server.wait():
            raise SystemExit(f"ppml serve-model exited:\n{server.stdout()}{server.stderr()}")
        return f"{server.stdout().splitlines()[0]} then listening on {server.base_url}"

    steps.run("ppml serve-model --tee simulated (attest, load the checkpoint, serve)", ready, str)
    return server


def requests(server: ModelServer, rows: int) -> dict[str, Request]:
    import safetensors.torch
    import torch

    inputs = torch.randn(rows, 32, generator=torch.Generator().manual_seed(1))
    auth = {"Authorization": f"Bearer {server.token}"}
    return {
        "baseline GET /healthz": ("GET", "/healthz", b"", {}),
        "JSON POST /v1/predict": ("POST", "/v1/predict", json.dumps({"inputs": inputs.tolist()}).encode(), auth),
        "safetensors POST /v1/predict": ("POST", "/v1/predict", safetensors.torch.save({"inputs": inputs}),
                                         {**auth, "Content-Type": "application/x-safetensors"}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (the batch size)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the three phases; the median is summarised")
    parser.add_argument("--workdir", type=Path, help="keep the deployment here (default: a temporary directory)")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="ppml-bench-serving-") as tmp:
        workdir = (args.workdir or Path(tmp)).absolute()
        (workdir / "app").mkdir(parents=True, exist_ok=True)
        (workdir / "app" / "bench_model.py").write_text(MODEL_MODULE)
        steps = Steps()
        with local_deployment(workdir / "deployment", steps, entrypoint=workdir / "app" / "bench_model.py") as d:
            server = serve(workdir, steps, d)
            try:
                phases = requests(server, args.rows)
                pid, host, port, ca = server.process.pid, "127.0.0.1", server.port, server.ca
                for request in phases.values():  # warm-up: connections, the model's first calls
                    run_phase(host, port, ca, request, clients=args.clients, seconds=1.0, server_pid=pid)
                rounds = [{name: run_phase(host, port, ca, request, clients=args.clients, seconds=args.seconds,
                                           server_pid=pid) for name, request in phases.items()}
                          for _ in range(args.repeat)]
            finally:
                server.stop()
    print(f"\n== ppml serve-model: {args.clients} clients, {args.rows} row(s) of 32 float32 per request, "
          f"{args.seconds:.0f} s per phase, {args.repeat} round(s), TLS, 1 inference thread")
    print(f"{'phase':<36}{'requests/s':>11}{'p50 ms':>8}{'p99 ms':>8}{'server CPU ms/req':>19}"
          f"{'client CPU ms/req':>19}")
    for index, results in enumerate(rounds, 1):
        for name, r in results.items():
            print(f"{f'{index}: {name}':<36}{r['requests_s']:>11.0f}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}"
                  f"{r['server_cpu_ms']:>19.3f}{r['client_cpu_ms']:>19.3f}")
    median = sorted(rounds, key=lambda results: results["JSON POST /v1/predict"]["requests_s"])[len(rounds) // 2]
    summary = "; ".join(f"{name.split(' ')[0]} {r['requests_s']:.0f} req/s, p99 {r['p99_ms']:.1f} ms"
                        for name, r in median.items())
    print(f"median round: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
