"""Attest, then run: the gate every trusted workload passes before any of its code runs.

``ppml tee run --policy ID -- CMD …``: make a fresh P-256 TEE key, fetch a nonce, bind
SHA-512(nonce ‖ {"tee_public_key": JWK}) into the evidence's report data, send the evidence, and
on a token print ``Attestation Success!`` and start CMD with the session (token and TEE key) on an
inherited pipe, and a key agent (:mod:`ppml.tee.agent`) serving data keys to CMD's processes
through that session for as long as CMD runs. On any failure print
``Attestation Fail! Application killed!`` and exit 1 without starting CMD. There is no switch
that lets a failed attestation continue.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from joserfc.jwk import ECKey

from ppml.attestation.client import AttestationClient
from ppml.core.evidence import report_data_for
from ppml.core.keys import SECRET_ACCESS
from ppml.errors import PpmlError
from ppml.tee.agent import KeyAgent
from ppml.tee.interface import TeeBackend
from ppml.tee.session import SESSION_FD_ENV, TeeSession

__all__ = ["FAIL_MESSAGE", "SUCCESS_MESSAGE", "attest", "attest_or_report", "key_agent_for", "run_attested"]

SUCCESS_MESSAGE = "Attestation Success!"
FAIL_MESSAGE = "Attestation Fail! Application killed!"


def attest(backend: TeeBackend, client: AttestationClient, policy_ids: Sequence[str]) -> TeeSession:
    """Run the attestation protocol once; returns the session or raises a PpmlError."""
    key = ECKey.generate_key("P-256", private=True)
    runtime_data = {"tee_public_key": key.as_dict(private=False)}
    nonce = client.nonce()
    evidence = backend.get_evidence(report_data_for(nonce.encode(), runtime_data))
    result = client.attest(evidence, nonce=nonce, runtime_data=runtime_data, policy_ids=list(policy_ids))
    return TeeSession(token=result["token"], private_key=key, claims=result["claims"],
                      policy_ids=list(result["policy_ids"]), attestation_url=client.base_url)


def attest_or_report(backend: TeeBackend, client: AttestationClient, policy_ids: Sequence[str]) -> TeeSession | None:
    """Attest and print the outcome: ``Attestation Success!`` (and a SIMULATED warning) with the
    session, or the reason and ``Attestation Fail! Application killed!`` with None."""
    try:
        session = attest(backend, client, policy_ids)
    except (PpmlError, OSError, ValueError) as exc:
        detail = exc.diagnostics() if isinstance(exc, PpmlError) else str(exc)
        print(f"ppml: {detail}", file=sys.stderr)
        print(FAIL_MESSAGE, flush=True)
        return None
    print(SUCCESS_MESSAGE, flush=True)
    if session.claims.get("simulated"):
        print("ppml: warning: SIMULATED TEE: the workload runs without hardware protection", file=sys.stderr)
    return session


def key_agent_for(session: TeeSession) -> KeyAgent:
    """A key agent (not yet started) answering through ``session``'s attested KMS clients."""
    from ppml.kms.registry import open_kms

    return KeyAgent(lambda uri: open_kms(uri, attestation=session), tee=str(session.claims.get("tee", "")))


def run_attested(command: Sequence[str], *, backend: TeeBackend, client: AttestationClient,
                 policy_ids: Sequence[str]) -> int:
    """Attest, then run ``command`` with the session and a key agent; returns the exit code to use."""
    session = attest_or_report(backend, client, policy_ids)
    if session is None:
        return 1
    if not command:
        return 0
    read_end, write_end = os.pipe()
    payload = session.export(SECRET_ACCESS)
    try:
        # The session is written before the child starts; it must fit in the pipe buffer.
        if len(payload) > 60_000:
            raise ValueError("TEE session too large for the pipe")
        os.write(write_end, payload)
    finally:
        os.close(write_end)
    # The key agent answers the workload's processes (the JVM, Python workers) through this
    # session: they get data keys without holding the token, the TEE key or KMS credentials.
    agent = key_agent_for(session).start()
    env = {**os.environ, SESSION_FD_ENV: str(read_end), **agent.environment()}
    try:
        completed = subprocess.run(list(command), pass_fds=(read_end,), env=env, check=False)
    except FileNotFoundError:
        print(f"ppml: error: command not found: {command[0]}", file=sys.stderr)
        return 127
    finally:
        os.close(read_end)
        agent.stop()
    return completed.returncode
