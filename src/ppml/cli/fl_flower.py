"""``ppml fl flower-env|flower-superlink|flower-supernode`` and ``ppml example fl-hfl``: horizontal FL
on Flower with SecAgg+ (ppml.fl.flower), the SuperLink behind the TEE gate, every SuperNode checking
its attestation first. Flower itself runs in its own venv; nothing here imports ``flwr``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ppml.cli._args import integer
from ppml.errors import UsageError

__all__ = ["add_commands", "add_example", "run_hfl_example"]


def _env(args: argparse.Namespace) -> Path:
    from ppml.fl.flower.env import default_path, is_ready

    env = Path(args.env) if args.env else default_path()
    if not is_ready(env):
        raise UsageError(f"no Flower venv at {env}: create it with `ppml fl flower-env --path {env}`")
    return env


def cmd_flower_env(args: argparse.Namespace) -> int:
    from ppml.fl.flower.env import create, default_path

    env = create(Path(args.path) if args.path else default_path(), force=args.force)
    print(f"Flower venv ready at {env}: {(env / '.ppml-flower-ready').read_text().strip()}")
    return 0


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def cmd_flower_superlink(args: argparse.Namespace) -> int:
    """Behind the gate: make the SuperLink's TLS key here, start flower-superlink with it, answer
    Attest for that certificate until the SuperLink exits."""
    from ppml.fl.flower.attest import superlink_certificate
    from ppml.fl.flower.deployment import superlink_argv, wait_for_port
    from ppml.fl.service import Coordinator, CoordinatorAttestation, RoundSpec
    from ppml.tee.keys import tee_session

    session = tee_session()
    if session is None:
        raise UsageError("ppml fl flower-superlink proves its TEE to every SuperNode: run it behind the TEE gate "
                         "(ppml tee run --policy ID … -- ppml fl flower-superlink …)")
    env = _env(args)
    certificate = superlink_certificate()
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    # Flower reads its key from a file: a private directory inside the TEE's file system, removed on exit.
    with tempfile.TemporaryDirectory(prefix="ppml-superlink-") as private:
        key_file, cert_file = Path(private) / "superlink.key", state / "superlink.pem"
        _write_private(key_file, certificate.private_key_pem)
        cert_file.write_bytes(certificate.certificate_pem)
        spec = RoundSpec(round_id="flower-attest", job="flower-attest", parties=tuple(args.party),
                         join_timeout=float(1 << 30))
        endpoint = Coordinator(spec, attestation=CoordinatorAttestation(session), certificate=certificate)
        attest_port = endpoint.start(host=args.host, port=args.attest_port, client_ca_pem=Path(args.ca).read_bytes())
        superlink = subprocess.Popen(superlink_argv(env, port=args.port, certificate=cert_file, private_key=key_file,
                                                    state=state / "state.db"),
                                     env={**os.environ, "PATH": f"{env / 'bin'}{os.pathsep}{os.environ['PATH']}"})
        signal.signal(signal.SIGTERM, lambda *_: superlink.terminate())
        try:
            wait_for_port(args.port, process=superlink)
            print(f"Flower SuperLink on {args.host}:{args.port} (TLS, SuperNode authentication on); its attestation "
                  f"on {args.host}:{attest_port}; certificate {cert_file}", flush=True)
            return superlink.wait()
        finally:
            if superlink.poll() is None:
                superlink.terminate()
                superlink.wait(10)
            endpoint.stop()


def cmd_flower_supernode(args: argparse.Namespace) -> int:
    """Verify the SuperLink's attestation, then exec flower-supernode pinned to its certificate."""
    from ppml.fl.flower.attest import verify_superlink
    from ppml.fl.flower.deployment import runtime_tls, supernode_argv
    from ppml.fl.service import CoordinatorVerifier, PartyIdentity

    env = _env(args)
    url = args.attestation_url or os.environ.get("PPML_AS_URL")
    ca = args.attestation_ca or os.environ.get("PPML_AS_CA")
    if not url:
        raise UsageError("--attestation-url (or $PPML_AS_URL): the service that attested the SuperLink")
    identity = PartyIdentity.from_files(certificate=Path(args.cert), private_key=Path(args.key), ca=Path(args.ca))
    verifier = CoordinatorVerifier.from_service(url, policy_id=args.superlink_policy, ca=Path(ca) if ca else None)
    pem, token = verify_superlink(args.superlink, args.attest, identity=identity, verifier=verifier)
    pinned = Path(args.state_dir) / f"{identity.name}-superlink.pem"
    pinned.parent.mkdir(parents=True, exist_ok=True)
    pinned.write_bytes(pem)
    node_config = dict(item.split("=", 1) for item in args.node_config)
    print(f"SuperLink attested (policy {args.superlink_policy}, simulated TEE: {token.simulated}); "
          f"{identity.name} joins pinned to its certificate", flush=True)
    runtime = runtime_tls(Path(args.state_dir), identity.name)
    argv = supernode_argv(env, superlink=args.superlink, root_certificate=pinned, auth_key=Path(args.auth_key),
                          port=args.port, node_config=node_config, runtime=runtime)
    os.environ["PATH"] = f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


def cmd_example_hfl(args: argparse.Namespace) -> int:
    return run_hfl_example(workdir=Path(args.workdir or ".example-fl-hfl"), model=args.model, rounds=args.rounds,
                           seed=args.seed)


PARTIES = ("org0", "org1", "org2")
LOCAL_EPOCHS, LEARNING_RATE = 5, 0.2  # the centralized baseline trains rounds × LOCAL_EPOCHS epochs


def _digits_split(directory: Path, seed: int) -> tuple[dict[str, Path], Any, Any, Any, Any]:
    """scikit-learn's bundled digits (1,797 8×8 images, 10 classes), pixels scaled by their fixed
    maximum (16, so no party needs another's statistics); a quarter held out; the rest split
    horizontally into three parties of unequal size."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = np.asarray(data.data, dtype=np.float64) / 16.0, np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = len(y) - len(y) // 4
    train, test = order[:cut], order[cut:]
    shares = np.split(train, [int(len(train) * 0.25), int(len(train) * 0.55)])
    files = {}
    for party, rows in zip(PARTIES, shares):
        files[party] = directory / f"{party}.csv"
        with files[party].open("w") as handle:
            handle.write(",".join([*(f"p{i}" for i in range(x.shape[1])), "label"]) + "\n")
            for i in rows:
                handle.write(",".join([*(repr(float(v)) for v in x[i]), str(int(y[i]))]) + "\n")
    return files, x[train], y[train], x[test], y[test]


def _stop_group(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM to the process group ``process`` leads (Flower's programs start children of their
    own: the SuperExec, the ServerApp), then SIGKILL to what is left after ``timeout``."""
    import contextlib

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(5)


def run_hfl_example(*, workdir: Path, model: str = "mlp", rounds: int = 3, seed: int = 7) -> int:
    """``ppml example fl-hfl``: a SuperLink behind the (simulated) TEE gate and three SuperNodes that
    verify it first, FedAvg with SecAgg+ on each party's encrypted digits, the global model saved
    encrypted; prints its held-out accuracy beside the same model trained centrally."""
    import time

    import ppml.cli.main as entry
    from ppml.cli.deployment import Steps, local_deployment, ppml_command
    from ppml.cli.fl_examples import Gate
    from ppml.fl.flower import SecAggPlusParams
    from ppml.fl.flower import deployment as fd
    from ppml.fl.flower import model as models
    from ppml.fl.flower.env import create, default_path
    from ppml.fl.service import issue_federation

    steps = Steps()
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)
    env = steps.run("the Flower venv (Flower's pins apart from ppml's)", lambda: create(default_path()), str)
    files, x_train, y_train, x_test, y_test = steps.run(
        "generate the data offline: scikit-learn's digits, a quarter held out, the rest split across 3 parties",
        lambda: _digits_split(data_dir, seed),
        lambda r: ", ".join(f"{p}: {sum(1 for _ in p_file.open()) - 1} rows" for p, p_file in r[0].items()))
    params = SecAggPlusParams(clients=len(PARTIES), num_shares=3, threshold=2,
                              max_weight=float(max(len(y_train) // 2, 1)))
    processes: list[subprocess.Popen[bytes]] = []
    with local_deployment(workdir, steps, entrypoint=Path(entry.__file__)) as deployment:
        kms = deployment.kms_uri
        keys = steps.run("create each party's data key and the model owner's key",
                         lambda: {name: deployment.create_key(f"{name} data", gated=False)
                                  for name in (*PARTIES, "model")},
                         lambda k: ", ".join(f"{p}: {v[:8]}…" for p, v in k.items()))

        def encrypt() -> str:
            for party, plain in files.items():
                ppml_command("encrypt", str(plain), f"{plain}.ppml", "--key", keys[party], "--kms", kms, "--force",
                             env=deployment.env)
                plain.unlink()
            return ", ".join(f"{p}.csv.ppml" for p in files) + " (plaintext removed)"

        steps.run("encrypt each party's rows under its own key", encrypt, str)
        federation = workdir / "federation"
        if not (federation / "ca.pem").exists():
            issue_federation(federation, list(PARTIES))
        node_keys = {party: fd.node_key(workdir / "nodes", party) for party in PARTIES}
        from ppml.fl.flower.deployment import free_port

        port, attest_port = free_port(), free_port()
        state = workdir / "superlink"
        log = workdir / "superlink.log"
        gate = Gate(deployment)
        try:
            def start_superlink() -> str:
                with log.open("wb") as handle:
                    processes.append(subprocess.Popen(
                        gate.argv("fl", "flower-superlink", "--env", str(env), "--port", str(port), "--attest-port",
                                  str(attest_port), *[a for p in PARTIES for a in ("--party", p)],
                                  "--ca", str(federation / "ca.pem"), "--state-dir", str(state)),
                        stdout=handle, stderr=subprocess.STDOUT, env=deployment.env, start_new_session=True))
                deadline = time.monotonic() + 120
                while "Flower SuperLink on" not in log.read_text(errors="replace"):
                    if processes[0].poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"the SuperLink did not start; see {log}")
                    time.sleep(0.2)
                shown = [line for line in log.read_text().splitlines() if line.startswith("Attestation")]
                return f"127.0.0.1:{port} (TLS), attest endpoint :{attest_port}; {' '.join(shown)}"

            steps.run("start the Flower SuperLink behind the TEE gate (its TLS key made inside)", start_superlink,
                      str)
            home = workdir / "flwr-home"
            fd.write_cli_config(home, superlink=f"127.0.0.1:{port}", root_certificate=state / "superlink.pem")
            steps.run("register each SuperNode's P-384 key (SuperNode authentication on)",
                      lambda: [fd.register_supernode(env, home, public) for _, public in node_keys.values()],
                      lambda ids: f"{len(ids)} SuperNodes")

            def start_supernodes() -> str:
                for index, party in enumerate(PARTIES):
                    with (workdir / f"{party}.log").open("wb") as handle:
                        processes.append(subprocess.Popen(
                            [sys.executable, "-m", "ppml.cli.main", "fl", "flower-supernode", "--env", str(env),
                             "--superlink", f"127.0.0.1:{port}", "--attest", f"127.0.0.1:{attest_port}",
                             "--superlink-policy", deployment.policy_id, "--attestation-url", deployment.server.url,
                             "--attestation-ca", str(deployment.server.ca), "--cert", str(federation / f"{party}.pem"),
                             "--key", str(federation / f"{party}.key"), "--ca", str(federation / "ca.pem"),
                             "--auth-key", str(node_keys[party][0]), "--port", str(free_port()),
                             "--node-config", f"data-path={files[party]}.ppml", "--node-config", f"kms={kms}",
                             "--node-config", f"seed={index}", "--state-dir", str(workdir / "nodes")],
                            stdout=handle, stderr=subprocess.STDOUT, env=deployment.env, start_new_session=True))
                deadline = time.monotonic() + 60
                for party in PARTIES:
                    while "SuperLink attested" not in (workdir / f"{party}.log").read_text(errors="replace"):
                        if time.monotonic() > deadline:
                            raise SystemExit(f"{party} did not accept the SuperLink; see {workdir / party}.log")
                        time.sleep(0.2)
                return "each verified the SuperLink's attestation and pinned its certificate"

            steps.run("start 3 SuperNodes, each checking the SuperLink's attestation first", start_supernodes, str)
            model_path = workdir / "global-model.ckpt.ppml"
            app = fd.write_app(workdir / "app", config={
                "clients": len(PARTIES), "min-clients": 2, "num-rounds": rounds, "model": model, "features": 64,
                "classes": 10, "hidden": 32, "seed": seed, "local-epochs": LOCAL_EPOCHS, "batch-size": 32,
                "learning-rate": LEARNING_RATE,
                **params.run_config(), "model-path": str(model_path), "model-kms": kms, "model-key": keys["model"]})
            summary = steps.run(f"flwr run: {rounds} rounds of FedAvg with SecAgg+ (num_shares 3, threshold 2)",
                                lambda: fd.run_app(env, home, app, log=workdir / "run.log", timeout=900),
                                lambda s: f"{s['seconds']:.1f} s in the ServerApp; rounds {s['rounds']}")
        finally:
            for process in reversed(processes):
                _stop_group(process)
        from ppml.tee.keys import kms_for
        from ppml.torch.checkpoint import load

        global_model = models.build(model, features=64, classes=10, hidden=32, seed=seed)
        global_model.load_state_dict(load(model_path, kms=kms_for(kms)))
    accuracy = models.accuracy(global_model, x_test, y_test)
    central = models.build(model, features=64, classes=10, hidden=32, seed=seed)
    models.train(central, x_train, y_train, epochs=LOCAL_EPOCHS * rounds, batch_size=32,
                 learning_rate=LEARNING_RATE, seed=seed)
    print(f"\nglobal model written encrypted: {model_path} ({summary['seconds']:.1f} s of federated training)")
    print(f"({steps.elapsed:.1f} s in all)")
    print(f"accuracy: {accuracy:.4f} (centralized: {models.accuracy(central, x_test, y_test):.4f})")
    return 0


def add_commands(sub: Any) -> None:
    """The ``flower-*`` commands under ``ppml fl``."""
    p = sub.add_parser("flower-env", help="create the Flower venv (Flower's pins kept apart from ppml's)")
    p.add_argument("--path", metavar="DIR", help="default: $PPML_FLOWER_VENV or .venv-flower beside ppml's venv")
    p.add_argument("--force", action="store_true", help="reinstall even if it is ready")
    p.set_defaults(func=cmd_flower_env)

    p = sub.add_parser("flower-superlink", help="the Flower SuperLink with its attestation (behind the TEE gate)",
                       description="Make the SuperLink's TLS key in this attested process, start flower-superlink "
                       "with it (TLS, SuperNode authentication on) and answer Attest for that certificate.")
    p.add_argument("--env", metavar="DIR", help="the Flower venv (default: see flower-env)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=integer(1), required=True, help="the SuperLink's port (Fleet, Control, Runtime)")
    p.add_argument("--attest-port", type=integer(0), required=True, help="the attest endpoint's port")
    p.add_argument("--party", action="append", required=True, metavar="NAME",
                   help="a SuperNode operator's certificate common name (repeat)")
    p.add_argument("--ca", required=True, metavar="FILE", help="the federation CA the operators' certificates chain to")
    p.add_argument("--state-dir", required=True, metavar="DIR", help="SuperLink state and its public certificate")
    p.set_defaults(func=cmd_flower_superlink)

    p = sub.add_parser("flower-supernode", help="verify the SuperLink's attestation, then start a Flower SuperNode")
    p.add_argument("--env", metavar="DIR", help="the Flower venv (default: see flower-env)")
    p.add_argument("--superlink", required=True, metavar="HOST:PORT")
    p.add_argument("--attest", required=True, metavar="HOST:PORT", help="the SuperLink's attest endpoint")
    p.add_argument("--superlink-policy", required=True, metavar="ID",
                   help="the attestation policy the SuperLink must have been attested under")
    p.add_argument("--attestation-url", metavar="URL", help="the attestation service (default $PPML_AS_URL)")
    p.add_argument("--attestation-ca", metavar="FILE", help="its CA certificate (default $PPML_AS_CA)")
    p.add_argument("--cert", required=True, metavar="FILE", help="this operator's federation certificate")
    p.add_argument("--key", required=True, metavar="FILE", help="its private key")
    p.add_argument("--ca", required=True, metavar="FILE", help="the federation CA")
    p.add_argument("--auth-key", required=True, metavar="FILE", help="the SuperNode's registered P-384 key (OpenSSH)")
    p.add_argument("--port", type=integer(1), required=True, help="the SuperNode's own Runtime API port")
    p.add_argument("--node-config", action="append", default=[], metavar="KEY=VALUE",
                   help='Flower node config, e.g. data-path="…" (repeat)')
    p.add_argument("--state-dir", required=True, metavar="DIR", help="where the pinned certificate is written")
    p.set_defaults(func=cmd_flower_supernode)


def add_example(example_commands: Any) -> None:
    """``ppml example fl-hfl``."""
    summary = "horizontal FL on Flower: FedAvg with SecAgg+ across 3 SuperNodes, the SuperLink attested"
    p = example_commands.add_parser(
        "fl-hfl", help=summary,
        description=f"{summary}: the SuperLink behind the simulated TEE gate, each SuperNode verifying it, TLS "
        "and SuperNode authentication on loopback; data generated offline and encrypted per party; the global "
        "model written encrypted.")
    p.add_argument("--workdir", help="where the example keeps its files (default .example-fl-hfl)")
    p.add_argument("--model", choices=["mlp", "logreg"], default="mlp")
    p.add_argument("--rounds", type=integer(1), default=3)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_example_hfl)
