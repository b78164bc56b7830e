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

__all__ = ["add_commands", "run_hfl_example"]


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
    from ppml.fl.flower.deployment import supernode_argv
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
    argv = supernode_argv(env, superlink=args.superlink, root_certificate=pinned, auth_key=Path(args.auth_key),
                          port=args.port, node_config=node_config)
    os.environ["PATH"] = f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


def cmd_example_hfl(args: argparse.Namespace) -> int:
    return run_hfl_example(workdir=Path(args.workdir), model=args.model, rounds=args.rounds)


def run_hfl_example(*, workdir: Path, model: str = "mlp", rounds: int = 3) -> int:
    from ppml.cli.fl_hfl_example import run

    return run(workdir=workdir, model=model, rounds=rounds)


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
