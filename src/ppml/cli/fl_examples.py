"""``ppml example fl-psi|fl-vfl-lr|fl-vfl-nn``: a coordinator and two parties, each in its own
process behind the (simulated) TEE gate, on loopback, end to end.

``ppml serve`` (KMS + attestation service) → an enclave and its policy → per party: its own data
(generated offline), encrypted under its own gated key → a federation CA and party certificates →
``ppml tee run … -- ppml fl server`` (prints ``Attestation Success!``, proves it to every party) →
``ppml tee run … -- ppml fl client …`` per party (attests itself, verifies the coordinator, reads
its encrypted table, runs the job, writes its result encrypted) → the label party prints the
held-out metric; the example prints the centralized model's beside it.

One KMS serves every party here for brevity; in a federation each party brings its own (the
client's ``--kms``), and nothing in the protocol crosses between them.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ppml.cli.deployment import LocalDeployment, Steps, local_deployment, ppml_command, stop_process

__all__ = ["FL_EXAMPLES", "run_fl_example"]

GUEST, HOST = "guest", "host"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FlExample:
    name: str
    job: str
    summary: str
    parties: tuple[str, ...]
    job_args: tuple[str, ...] = ()


FL_EXAMPLES = {
    example.name: example for example in (
        FlExample(name="fl-psi", job="psi", parties=("alice", "bob"),
                  summary="two parties find the ids they share (ECDH-PSI), learning nothing else"),
        FlExample(name="fl-vfl-lr", job="vfl-lr", parties=(GUEST, HOST),
                  summary="vertical logistic regression with Paillier-encrypted gradients, the arbiter in the "
                  "attested coordinator",
                  job_args=("--epochs", "3", "--batch-size", "64", "--learning-rate", "0.3", "--l2", "0.001",
                            "--seed", "42")),
        FlExample(name="fl-fgboost", job="fgboost", parties=(GUEST, HOST),
                  summary="FGBoost: SecureBoost-style vertical gradient-boosted trees, Paillier-encrypted "
                  "gradients, each split's threshold kept by the party owning the feature",
                  job_args=("--max-depth", "3", "--learning-rate", "0.3", "--bins", "16")),
        FlExample(name="fl-vfl-nn", job="vfl-nn", parties=(GUEST, HOST),
                  summary="a split neural network: each party a bottom model, the label party the top model",
                  job_args=("--epochs", "10", "--batch-size", "32", "--learning-rate", "0.01", "--seed", "1")),
    )
}


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w") as handle:
        handle.write(",".join(header) + "\n")
        for row in rows:
            handle.write(",".join(str(value) for value in row) + "\n")


def psi_data(directory: Path, rows: int, seed: int) -> tuple[dict[str, Path], int]:
    """Two parties with ``rows`` customer ids each, half of them shared; returns the files and the
    true overlap."""
    rng = np.random.default_rng(seed)
    universe = rng.permutation(10 * rows + 10)
    overlap = rows // 2
    alice = universe[:rows]
    bob = np.concatenate([alice[:overlap], universe[rows:2 * rows - overlap]])
    files = {}
    for party, ids in (("alice", alice), ("bob", bob)):
        order = rng.permutation(len(ids))
        path = directory / f"{party}.csv"
        _write_csv(path, ["id", "spend"], [[f"cust-{ids[i]:08d}", round(float(rng.gamma(2.0, 40.0)), 2)]
                                           for i in order])
        files[party] = path
    return files, overlap


@dataclasses.dataclass(frozen=True, slots=True)
class VerticalSplit:
    files: dict[str, Path]
    common_ids: list[str]
    features: dict[str, np.ndarray]
    labels: np.ndarray


def vertical_data(directory: Path, seed: int) -> VerticalSplit:
    """scikit-learn's bundled breast-cancer set (569 people, 30 features), split by columns: the
    guest holds 10 features and the label, the host 20; each also misses a different 3 % of the
    people, so PSI alignment matters."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    ids = [f"person-{value:06d}" for value in rng.choice(1_000_000, size=len(y), replace=False)]
    missing = rng.permutation(len(y))[: 2 * (len(y) * 3 // 100)]
    absent = {GUEST: set(missing[: len(missing) // 2].tolist()), HOST: set(missing[len(missing) // 2:].tolist())}
    columns = {GUEST: list(range(10)), HOST: list(range(10, 30))}
    files = {}
    for party in (GUEST, HOST):
        header = ["id"] + [f"x{c}" for c in columns[party]] + (["label"] if party == GUEST else [])
        rows = [[ids[i]] + [float(v) for v in x[i, columns[party]]] + ([int(y[i])] if party == GUEST else [])
                for i in rng.permutation(len(y)) if i not in absent[party]]
        files[party] = directory / f"{party}.csv"
        _write_csv(files[party], header, rows)
    keep = [i for i in range(len(y)) if i not in absent[GUEST] and i not in absent[HOST]]
    order = sorted(keep, key=lambda i: ids[i])
    return VerticalSplit(files=files, common_ids=[ids[i] for i in order],
                         features={p: x[order][:, columns[p]] for p in (GUEST, HOST)}, labels=y[order])


def centralized_auc(split: VerticalSplit, job: str, test_fraction: float, seed: int, trees: int = 5) -> float:
    """The same aligned rows, split and standardised the same way, every column in one place:
    scikit-learn's LogisticRegression (vfl-lr), an MLP of the split NN's total shape (vfl-nn) or
    XGBoost with FGBoost's trees, depth, learning rate and bins (fgboost)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from ppml.datagen import ranking_auc

    x = np.hstack([split.features[GUEST], split.features[HOST]])
    cut = len(x) - round(len(x) * test_fraction)
    mean, std = x[:cut].mean(axis=0), x[:cut].std(axis=0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    model: Any
    if job == "fgboost":
        from xgboost import XGBClassifier

        model = XGBClassifier(n_estimators=trees, max_depth=3, learning_rate=0.3, max_bin=16, tree_method="hist",
                              reg_lambda=1.0, min_child_weight=1.0, base_score=float(split.labels[:cut].mean()))
    elif job == "vfl-lr":
        model = LogisticRegression(max_iter=1000)
    else:
        model = MLPClassifier(hidden_layer_sizes=(16, 16), max_iter=500, random_state=seed)
    model.fit(x[:cut], split.labels[:cut])
    return ranking_auc(split.labels[cut:], model.predict_proba(x[cut:])[:, 1])


class Gate:
    """``ppml tee run`` lines for the deployment's enclave and policy (simulated TEE)."""

    def __init__(self, deployment: LocalDeployment) -> None:
        self.deployment = deployment

    def argv(self, *command: str) -> list[str]:
        d = self.deployment
        return [sys.executable, "-m", "ppml.cli.main", "tee", "run", "--backend", "simulated", "--policy", d.policy_id,
                "--enclave-manifest", str(d.manifest), "--enclave-sig", str(d.sig), "--platform-key",
                str(d.platform_key), "--attestation-url", d.server.url, "--ca", str(d.server.ca), "--",
                sys.executable, "-m", "ppml.cli.main", *command]

    def start(self, log: Path, *command: str) -> subprocess.Popen[bytes]:
        with log.open("wb") as handle:
            return subprocess.Popen(self.argv(*command), stdout=handle, stderr=subprocess.STDOUT,
                                    env=self.deployment.env)


def _wait_for_port(path: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        if process.poll() is not None:
            raise SystemExit(f"the coordinator exited ({process.returncode}) before listening; see {log}")
        time.sleep(0.1)
    raise SystemExit(f"the coordinator did not listen within {timeout:.0f} s; see {log}")


def _shown(log: Path, prefixes: tuple[str, ...]) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.startswith(prefixes)]


def run_fl_example(name: str, *, workdir: Path, rows: int = 10_000, seed: int = 7, he: str = "paillier",
                   trees: int = 5, timeout: float = 900.0) -> int:
    example = FL_EXAMPLES[name]
    if example.job == "fgboost":
        example = dataclasses.replace(example, job_args=(*example.job_args, "--trees", str(trees)))
    steps = Steps()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)
    split: VerticalSplit | None = None
    overlap = 0

    def generate() -> str:
        nonlocal split, overlap
        if example.job == "psi":
            _, overlap = psi_data(data_dir, rows, seed)
            return f"{rows:,} ids per party, {overlap:,} shared (known)"
        split = vertical_data(data_dir, seed)
        return (f"breast-cancer set split by columns: guest 10 features + label, host 20; "
                f"{len(split.common_ids)} people held by both")

    steps.run(f"generate each party's data ({example.summary})", generate, str)
    files = {party: data_dir / f"{party}.csv" for party in example.parties}
    import ppml.cli.main as entry

    with local_deployment(workdir, steps, entrypoint=Path(entry.__file__)) as deployment:
        gate = Gate(deployment)
        kms = deployment.kms_uri
        keys = steps.run("create each party's data and result keys (released to the policy only)",
                         lambda: {party: (deployment.create_key(f"{party} data", gated=True),
                                          deployment.create_key(f"{party} results", gated=True))
                                  for party in example.parties},
                         lambda k: ", ".join(f"{p}: {d[:8]}…" for p, (d, _) in k.items()))

        def encrypt() -> str:
            for party, plain in files.items():
                ppml_command("encrypt", str(plain), f"{plain}.ppml", "--key", keys[party][0], "--kms", kms,
                             "--force", env=deployment.env)
                plain.unlink()
            return ", ".join(f"{p}.csv.ppml" for p in files) + " (plaintext removed)"

        steps.run("encrypt each party's table under its own key", encrypt, str)
        federation = workdir / "federation"

        def certificates() -> str:
            from ppml.fl.service import issue_federation

            if not (federation / "ca.pem").exists():
                issue_federation(federation, list(example.parties))
            return f"CA and client certificates for {', '.join(example.parties)} in {federation.name}/"

        steps.run("issue the federation CA and each party's client certificate", certificates, str)
        round_id = f"{name}-{int(time.time())}"
        port_file = workdir / "coordinator.port"
        port_file.unlink(missing_ok=True)
        leader = [] if example.job == "psi" else ["--leader", GUEST, "--member", HOST]
        server_log = workdir / "coordinator.log"
        server = gate.start(server_log, "fl", "server", "--job", example.job, "--round-id", round_id,
                            *[arg for party in example.parties for arg in ("--party", party)],
                            "--ca", str(federation / "ca.pem"), "--port-file", str(port_file), *leader,
                            *example.job_args, *(["--he", he] if example.job == "vfl-lr" else []))
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            port = steps.run("start the coordinator behind the TEE gate (ppml tee run … -- ppml fl server)",
                             lambda: _wait_for_port(port_file, server, server_log),
                             lambda p: f"gRPC+TLS on 127.0.0.1:{p}; " + " ".join(_shown(server_log, ("Attestation",))))

            def run_parties() -> str:
                for party in example.parties:
                    peer = [p for p in example.parties if p != party]
                    job_args = (["--peer", peer[0]] if example.job == "psi" else
                                [*leader, "--label-column", "label", *example.job_args,
                                 *(["--he", he] if example.job == "vfl-lr" else [])])
                    processes[party] = gate.start(
                        workdir / f"{party}.log", "fl", "client", example.job, "--coordinator", f"127.0.0.1:{port}",
                        "--round-id", round_id, "--coordinator-policy", deployment.policy_id,
                        "--cert", str(federation / f"{party}.pem"), "--key", str(federation / f"{party}.key"),
                        "--ca", str(federation / "ca.pem"), "--kms", kms, "--input", f"{files[party]}.ppml",
                        "--output", str(workdir / f"{party}-result"), "--output-key", keys[party][1], "--force",
                        *job_args)
                deadline = time.monotonic() + timeout
                for party, process in processes.items():
                    process.wait(max(1.0, deadline - time.monotonic()))
                server.wait(max(1.0, deadline - time.monotonic()))
                failed = {p: proc.returncode for p, proc in processes.items() if proc.returncode}
                if failed or server.returncode:
                    raise SystemExit(f"the round failed: parties {failed}, coordinator {server.returncode}; see "
                                     f"{', '.join(str(workdir / (p + '.log')) for p in processes)} and {server_log}")
                return "every party: " + "; ".join(
                    f"{p}: " + ", ".join(_shown(workdir / f"{p}.log", ("Attestation", "aligned", "intersection")))
                    for p in processes)

            steps.run("each party, in its own attested process: verify the coordinator, run the job, write its "
                      "result encrypted", run_parties, str)
        finally:
            for process in [*processes.values(), server]:
                if process.poll() is None:
                    stop_process(process)
    return _report(name, example, workdir, split, overlap, seed, steps, trees)


def _report(name: str, example: FlExample, workdir: Path, split: VerticalSplit | None, overlap: int, seed: int,
            steps: Steps, trees: int) -> int:
    if example.job == "psi":
        counts = {party: _shown(workdir / f"{party}.log", ("intersection:",)) for party in example.parties}
        lines = {line for shown in counts.values() for line in shown}
        if lines != {f"intersection: {overlap}"}:
            print(f"FAILED: expected intersection: {overlap}, the parties printed {counts}")
            return 1
        print(f"\nboth parties learned the same {overlap:,} shared ids (written encrypted under their own keys)")
        print(f"({steps.elapsed:.1f} s in all)")
        print(f"intersection: {overlap}")
        return 0
    assert split is not None
    metric = _shown(workdir / f"{GUEST}.log", ("AUC:",))
    if not metric:
        print(f"FAILED: the label party printed no AUC; see {workdir / (GUEST + '.log')}")
        return 1
    central = centralized_auc(split, example.job, 0.25, seed, trees)
    print(f"\nmodel shares written encrypted: {', '.join(str(workdir / (p + '-result')) for p in example.parties)}")
    print(f"({steps.elapsed:.1f} s in all)")
    baseline = "centralized XGBoost" if example.job == "fgboost" else "centralized"
    print(f"{metric[-1]} ({baseline}: {central:.4f})")
    return 0
