"""Horizontal FL on Flower: one SecAgg+ round against one plain FedAvg round, same clients and model.

Usage::

    PPML_FLOWER_VENV=.venv-flower PYTHONPATH=src .venv/bin/python bench/flower.py [--rounds 2]
        [--model mlp] [--rows 2000] [--features 32] [--hidden 64]

One Flower deployment on loopback, as ``ppml example fl-hfl`` runs it minus the TEE gate: a
SuperLink (TLS, SuperNode authentication on) and 3 SuperNodes, processes in the Flower venv
(``ppml fl flower-env``), each SuperNode reading its own ppml-encrypted table. The same federation
runs ``--rounds`` rounds of plain FedAvg (Flower's ``DefaultWorkflow``, a ClientApp without
``secaggplus_mod``) and then ``--rounds`` rounds with SecAgg+ (num_shares 3, threshold 2), same
model, data, seeds and local epochs. Reported per mode: seconds per round as the ServerApp measured
its workflow, and ``flwr run``'s wall time (which adds submitting the app and starting the
ServerApp); the ratio SecAgg+/plain per round against the issue's target (<= 3x, PASS/FAIL). Flower
starts a ClientApp process per message and a SuperNode polls every 3 s when idle, so a round's time
is mostly stages × (poll + process start): SecAgg+ has four stages (setup, share keys, collect masked
vectors, unmask) to plain FedAvg's one. The load average is printed first and last.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ppml.fl.flower import deployment as fd
from ppml.fl.flower.attest import superlink_certificate
from ppml.fl.flower.env import create, default_path
from ppml.tabular.tables import write_csv_table
from ppml.tee.keys import kms_for

TARGET = 3.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", choices=["mlp", "logreg"], default="mlp")
    parser.add_argument("--rows", type=int, default=2000, help="rows per client")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    print(f"Flower bench: {load()}", flush=True)
    env = create(default_path())
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ppml-flower-bench-") as tmp:
        base = Path(tmp)
        kms_uri = f"local:{base / 'keys'}"
        kms = kms_for(kms_uri)
        key = kms.create_primary_key(description="bench").key_id
        rng = np.random.default_rng(0)
        for index in range(3):
            x = rng.normal(size=(args.rows, args.features))
            y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
            write_csv_table(pa.table({**{f"x{j}": x[:, j] for j in range(args.features)}, "label": y}),
                            base / f"party{index}.csv.ppml", kms=kms, key_id=key)
        certificate = superlink_certificate()
        cert, cert_key = base / "superlink.pem", base / "superlink.key"
        cert.write_bytes(certificate.certificate_pem)
        cert_key.write_bytes(certificate.private_key_pem)
        port = fd.free_port()
        home = base / "home"
        fd.write_cli_config(home, superlink=f"127.0.0.1:{port}", root_certificate=cert)
        environment = fd.flwr_environment(env, home)

        def spawn(argv: list[str], log: str) -> subprocess.Popen[bytes]:
            process = subprocess.Popen(argv, stdout=(base / log).open("wb"), stderr=subprocess.STDOUT,
                                       env=environment, start_new_session=True)
            processes.append(process)
            return process

        try:
            superlink = spawn(fd.superlink_argv(env, port=port, certificate=cert, private_key=cert_key,
                                                state=base / "state.db"), "superlink.log")
            fd.wait_for_port(port, process=superlink)
            for index in range(3):
                private, public = fd.node_key(base / "nodes", f"node{index}")
                fd.register_supernode(env, home, public)
                spawn(fd.supernode_argv(env, superlink=f"127.0.0.1:{port}", root_certificate=cert, auth_key=private,
                                        port=fd.free_port(),
                                        node_config={"data-path": str(base / f"party{index}.csv.ppml"),
                                                     "kms": kms_uri, "seed": index},
                                        runtime=fd.runtime_tls(base / "nodes", f"node{index}")), f"node{index}.log")
            results = {}
            for mode in ("plain", "secagg"):
                app = fd.write_app(base / f"app-{mode}", clientapp=(
                    "ppml.fl.flower.client_app:client_app" if mode == "secagg"
                    else "ppml.fl.flower.client_app:plain_client_app"), config={
                    "num-rounds": args.rounds, "model": args.model, "features": args.features, "hidden": args.hidden,
                    "secagg": mode == "secagg", "max-weight": float(args.rows), "secagg-timeout": 120.0})
                started = time.perf_counter()
                summary = fd.run_app(env, home, app, log=base / f"run-{mode}.log", timeout=1800)
                wall = time.perf_counter() - started
                per_round = float(summary["seconds"]) / args.rounds  # type: ignore[arg-type]
                results[mode] = per_round
                print(f"{mode:>6}: {per_round:6.2f} s per round (ServerApp workflow, {args.rounds} rounds); "
                      f"flwr run wall {wall:.1f} s", flush=True)
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
    ratio = results["secagg"] / results["plain"]
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"SecAgg+/plain per round: {ratio:.2f}x (target <= {TARGET:.0f}x): {verdict}")
    print(f"Flower bench done: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
