"""A Flower deployment's files and processes, driven from ppml's venv: the Flower App, the
``flwr`` CLI's configuration, SuperNode authentication keys, and ``flwr run``.

Flower 1.42 serves its Fleet, Control and Runtime APIs over HTTPS on one SuperLink port; every
process here gets TLS (``--ssl-*`` on the SuperLink, ``--root-certificates`` on SuperNodes and in
the CLI's connection), and the SuperLink runs with ``--enable-supernode-auth``: a SuperNode connects
only with an ECDSA P-384 key whose public half the operator registered (``flwr supernode
register``). Runtime dependency installation is off (the Flower venv already holds everything).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ppml.errors import PpmlError, UsageError
from ppml.fl.flower.env import executable
from ppml.fl.flower.params import SecAggPlusParams

__all__ = ["APP_CONFIG", "FlowerRunFailed", "flwr_environment", "free_port", "node_key", "register_supernode",
           "run_app", "runtime_tls", "superlink_argv", "supernode_argv", "write_app", "write_cli_config"]

_CONNECTION: Final = "ppml"

APP_CONFIG: Final[Mapping[str, str | int | float | bool]] = {
    "clients": 3, "min-clients": 2, "num-rounds": 1, "model": "mlp", "features": 4, "classes": 2, "hidden": 16,
    "seed": 0, "local-epochs": 1, "batch-size": 32, "learning-rate": 0.1, "secagg": True, "num-shares": 3,
    "threshold": 2, "clipping-range": 8.0, "quantization-range": 1 << 22, "modulus-range": 1 << 32,
    "max-weight": 1_000.0, "secagg-timeout": 60.0, "record-dir": "", "result-dir": "", "model-path": "",
    "model-kms": "", "model-key": "",
}


class FlowerRunFailed(PpmlError):
    """``flwr run`` did not end with a model (its output says why)."""

    exit_code = 9

    def __init__(self, detail: str) -> None:
        super().__init__(f"the Flower run failed: {detail}")


def _toml_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def write_app(directory: Path, *, config: Mapping[str, str | int | float | bool],
              clientapp: str = "ppml.fl.flower.client_app:client_app",
              serverapp: str = "ppml.fl.flower.server_app:server_app") -> Path:
    """The Flower App (``pyproject.toml``) ``flwr run`` bundles: its components live in ppml,
    which the Flower venv imports; ``config`` overrides :data:`APP_CONFIG`.

    Raises:
        UsageError: an unknown key, or SecAgg+ parameters :class:`SecAggPlusParams` refuses (an
            even ``num-shares``), before any Flower process sees them.
    """
    unknown = set(config) - set(APP_CONFIG)
    if unknown:
        raise UsageError(f"unknown Flower run config keys {sorted(unknown)}")
    values = {**APP_CONFIG, **config}
    if values["secagg"]:
        # Flower's own checks come later, in the ServerApp, and miss an even num_shares.
        SecAggPlusParams(clients=int(values["clients"]), num_shares=int(values["num-shares"]),
                         threshold=int(values["threshold"]), clipping_range=float(values["clipping-range"]),
                         quantization_range=int(values["quantization-range"]),
                         modulus_range=int(values["modulus-range"]), max_weight=float(values["max-weight"]),
                         timeout=float(values["secagg-timeout"]))
    directory.mkdir(parents=True, exist_ok=True)
    lines = ['[build-system]', 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', '',
             '[project]', 'name = "ppmlhfl"', 'version = "1.0.0"', 'description = "ppml horizontal FL"',
             'license = "Apache-2.0"', 'dependencies = []', '', '[tool.hatch.build.targets.wheel]',
             'packages = ["."]', '', '[tool.flwr.app]', 'publisher = "ppml"', '', '[tool.flwr.app.components]',
             f'serverapp = "{serverapp}"', f'clientapp = "{clientapp}"', '', '[tool.flwr.app.config]',
             *[f"{key} = {_toml_value(value)}" for key, value in values.items()]]
    (directory / "pyproject.toml").write_text("\n".join(lines) + "\n")
    if not (directory / "__init__.py").exists():
        (directory / "__init__.py").write_text("")
    return directory


def write_cli_config(home: Path, *, superlink: str, root_certificate: Path) -> Path:
    """``$FLWR_HOME/config.toml`` naming the SuperLink's Control API and the certificate to trust."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{_CONNECTION}"\n\n[superlink.{_CONNECTION}]\n'
                    f'address = "{superlink}"\nroot-certificates = "{root_certificate.absolute()}"\n')
    return path


def flwr_environment(env: Path, home: Path) -> dict[str, str]:
    """The environment Flower's processes run with: the Flower venv first on PATH, its own home."""
    return {**os.environ, "PATH": f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(home),
            "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's authentication key pair (ECDSA P-384, OpenSSH format as Flower reads it):
    ``(private, public)``; the private file is 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}.node.key", directory / f"{name}.node.pub"
    if not private.exists():
        key = ec.generate_private_key(ec.SECP384R1())
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                         serialization.PublicFormat.OpenSSH))
    return private, public


def superlink_argv(env: Path, *, port: int, certificate: Path, private_key: Path, state: Path) -> list[str]:
    return [str(executable(env, "flower-superlink")), "--ssl-ca-certfile", str(certificate), "--ssl-certfile",
            str(certificate), "--ssl-keyfile", str(private_key), "--enable-supernode-auth",
            "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(port),
            "--database", str(state)]


def runtime_tls(directory: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's certificate and key for its own Runtime API (which its ClientApp processes
    call on loopback): self-signed for 127.0.0.1, made here; ``(certificate, private key)``."""
    from ppml.fl.service.identity import CoordinatorCertificate

    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / f"{name}.runtime.pem", directory / f"{name}.runtime.key"
    if not key.exists():
        made = CoordinatorCertificate.generate()
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(made.private_key_pem)
        certificate.write_bytes(made.certificate_pem)
    return certificate, key


def supernode_argv(env: Path, *, superlink: str, root_certificate: Path, auth_key: Path, port: int,
                   node_config: Mapping[str, str | int], runtime: tuple[Path, Path]) -> list[str]:
    """``flower-supernode`` with TLS to the SuperLink (trusting ``root_certificate``) and on its own
    Runtime API (``runtime``: :func:`runtime_tls`), authenticated by ``auth_key``."""
    config = " ".join(f"{key}={_toml_value(value)}" for key, value in node_config.items())
    certificate, key = runtime
    return [str(executable(env, "flower-supernode")), "--root-certificates", str(root_certificate), "--superlink",
            superlink, "--auth-supernode-private-key", str(auth_key), "--port", str(port), "--node-config", config,
            "--ssl-certfile", str(certificate), "--ssl-keyfile", str(key), "--ssl-ca-certfile", str(certificate),
            "--max-retries", "5"]


def register_supernode(env: Path, home: Path, public_key: Path) -> str:
    """Register a SuperNode's public key with the SuperLink (over the Control API); its node id."""
    result = subprocess.run([str(executable(env, "flwr")), "supernode", "register", str(public_key), _CONNECTION,
                             "--format", "json"], capture_output=True, text=True, env=flwr_environment(env, home))
    if result.returncode:
        raise FlowerRunFailed(f"registering {public_key.name}: {(result.stdout + result.stderr)[-1500:]}")
    return result.stdout.strip()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise FlowerRunFailed(f"a process exited ({process.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise FlowerRunFailed(f"nothing listened on port {port} within {timeout:.0f} s")


def run_app(env: Path, home: Path, app: Path, *, log: Path, timeout: float = 600.0,
            extra: Sequence[str] = ()) -> dict[str, object]:
    """``flwr run APP`` against the configured SuperLink, streaming its logs to ``log`` until the
    run ends; returns the ServerApp's summary (``result-dir/summary.json``).

    Raises:
        FlowerRunFailed: the run ended without a summary (the log says why) or timed out.
    """
    argv = [str(executable(env, "flwr")), "run", str(app), _CONNECTION, "--stream", *extra]
    with log.open("ab") as handle:
        try:
            result = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, env=flwr_environment(env, home),
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FlowerRunFailed(f"no result within {timeout:.0f} s; see {log}") from None
    if result.returncode:
        raise FlowerRunFailed(f"flwr run exited with {result.returncode}; see {log}")
    text = log.read_text(errors="replace")
    marker = "ppml: federated training done: "
    if marker not in text:
        raise FlowerRunFailed(f"the ServerApp did not finish; see {log}")
    summary: dict[str, object] = json.loads(text.rsplit(marker, 1)[1].splitlines()[0])
    return summary
