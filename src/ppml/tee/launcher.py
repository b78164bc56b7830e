"""The TEE runtime of a process started by someone else (a Spark executor): configuration from
the environment, attestation, then the command under a key agent.

Spark's standalone worker starts each executor itself (``$JAVA_HOME/bin/java …``), so no ppml
process is its parent. ``ppml submit`` points the executors' ``JAVA_HOME`` at a launcher whose
``bin/java`` runs ``python -m ppml.tee.launcher REAL_JAVA ARGS…``: this module attests the
executor's TEE (backend, attestation service and policies from ``PPML_TEE_BACKEND``,
``PPML_AS_URL``, ``PPML_TEE_POLICY`` …, none of them secret), prints the verdict, and runs the
JVM with a key agent serving it and its Python workers through the session: one agent per
executor TEE, stopped with it. With no TEE backend (``--tee none``) the agent answers with the
application's own KMS credentials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from ppml.errors import UsageError
from ppml.tee.agent import KeyAgent

if TYPE_CHECKING:
    from ppml.attestation.client import AttestationClient
    from ppml.tee.interface import TeeBackend

__all__ = ["TEE_ENV", "attestation_for", "attestation_from_environment", "main", "run_under_agent"]

#: The environment a process reads to attest itself (paths, URLs and policy ids: no secret).
TEE_ENV: Final = ("PPML_TEE_BACKEND", "PPML_AS_URL", "PPML_AS_CA", "PPML_TEE_POLICY", "PPML_ENCLAVE_MANIFEST",
                  "PPML_ENCLAVE_SIG", "PPML_SIM_PLATFORM_KEY")


def attestation_for(
    tee: str,
    *,
    attestation_url: str | None,
    policy_ids: Sequence[str],
    attestation_ca: Path | None = None,
    enclave_manifest: Path | None = None,
    enclave_sig: Path | None = None,
    platform_key: Path | None = None,
) -> tuple[TeeBackend, AttestationClient, list[str]]:
    """``(backend, attestation client, policy ids)`` for the TEE backend named ``tee``: what
    :func:`~ppml.tee.runtime.attest` takes, resolved once for every command that attests (``ppml
    submit``, ``ppml serve-model``, a process started under this launcher).

    Raises:
        UsageError: no attestation service or policy, an unknown backend, or ``simulated``
            without the enclave's manifest and SIGSTRUCT.
    """
    from ppml.attestation.client import AttestationClient
    from ppml.tee.registry import open_backend

    if not attestation_url or not policy_ids:
        raise UsageError(f"the {tee} TEE needs an attestation service (--attestation-url, $PPML_AS_URL) and a "
                         "policy (--policy ID from `ppml attest register`)")
    options: dict[str, Any] = {}
    if tee == "simulated":
        if not (enclave_manifest and enclave_sig):
            raise UsageError("the simulated TEE needs the enclave's manifest and SIGSTRUCT (--enclave-manifest, "
                             "--enclave-sig from `ppml enclave`)")
        options = {"manifest": enclave_manifest, "sigstruct": enclave_sig}
        if platform_key:
            options["platform_key_path"] = platform_key
    backend = open_backend(tee, **options)
    return backend, AttestationClient(attestation_url, ca_path=attestation_ca), list(policy_ids)


def attestation_from_environment(environ: Mapping[str, str]) -> tuple[TeeBackend, AttestationClient, list[str]] | None:
    """``(backend, attestation client, policy ids)`` from ``PPML_TEE_*`` variables, or None when
    the environment names no TEE backend (or ``none``).

    Raises:
        UsageError: a backend is named without an attestation service or a policy.
    """
    backend_name = environ.get("PPML_TEE_BACKEND", "")
    if not backend_name or backend_name == "none":
        return None
    url, policy = environ.get("PPML_AS_URL"), environ.get("PPML_TEE_POLICY")
    if not url or not policy:
        raise UsageError("PPML_TEE_BACKEND is set but PPML_AS_URL or PPML_TEE_POLICY is not")

    def path(name: str) -> Path | None:
        value = environ.get(name)
        return Path(value) if value else None

    return attestation_for(backend_name, attestation_url=url, policy_ids=policy.split(","),
                           attestation_ca=path("PPML_AS_CA"), enclave_manifest=path("PPML_ENCLAVE_MANIFEST"),
                           enclave_sig=path("PPML_ENCLAVE_SIG"), platform_key=path("PPML_SIM_PLATFORM_KEY"))


def run_under_agent(command: Sequence[str], agent: KeyAgent) -> int:
    """Run ``command`` with ``agent`` serving it; signals to this process go to the command."""
    with agent:
        env = {**os.environ, **agent.environment()}
        try:
            process = subprocess.Popen(list(command), env=env)
        except FileNotFoundError:
            print(f"ppml: error: command not found: {command[0]}", file=sys.stderr)
            return 127

        def forward(signum: int, _frame: FrameType | None) -> None:
            process.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)
        return process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ppml.tee.launcher CMD ARGS…``: attest as the environment says, then run CMD."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m ppml.tee.launcher CMD [ARGS…]", file=sys.stderr)
        return 2
    from ppml.tee.runtime import attest_or_report, key_agent_for

    try:
        attestation = attestation_from_environment(os.environ)
    except UsageError as exc:
        print(f"ppml: error: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    if attestation is None:
        from ppml.kms.registry import open_kms

        return run_under_agent(command, KeyAgent(open_kms, tee="none"))
    session = attest_or_report(*attestation)
    if session is None:
        return 1
    return run_under_agent(command, key_agent_for(session))


if __name__ == "__main__":
    sys.exit(main())
