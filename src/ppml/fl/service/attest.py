"""The coordinator proves its TEE to every party, bound to the TLS connection the party holds.

Statement (what the coordinator signs with the TEE key its attestation token names)::

    "ppml-fl-attest-v1\\0" || nonce (32, the party's, fresh) || SHA-256(DER of the coordinator's TLS certificate)

A party (:class:`CoordinatorVerifier`) accepts the coordinator only when (1) the token verifies
against the attestation service's JWKS and issuer and is within its validity window, (2) it was
issued for the policy the party expects (the policy decides, as everywhere in ppml, whether a
simulated TEE is acceptable), (3) the signature verifies under the token's ``tee_public_key`` over
the party's own nonce, and (4) the certificate hash is that of the certificate the party's
connection pinned. (3) and (4) together mean the TLS key was chosen by the attested TEE, which made
it in memory and never exports it; a replayed response fails (3), a relayed one (another server
showing this token) fails (4).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from ppml.attestation.tokens import AttestationToken, TokenVerifier
from ppml.errors import CoordinatorNotAttested, PpmlError, UsageError

__all__ = ["NONCE_BYTES", "CoordinatorAttestation", "CoordinatorVerifier", "statement"]

NONCE_BYTES: Final = 32
_DOMAIN: Final = b"ppml-fl-attest-v1\x00"


def statement(nonce: bytes, certificate_sha256: bytes) -> bytes:
    return _DOMAIN + nonce + certificate_sha256


class CoordinatorAttestation:
    """The coordinator's side: its attested session (token + TEE key) answering Attest."""

    def __init__(self, session: Any) -> None:
        if session is None:
            raise UsageError("the coordinator has no attested session")
        self._session = session

    def answer(self, nonce: bytes, certificate_der: bytes) -> tuple[str, bytes, bytes]:
        """``(token, certificate_sha256, signature)`` for a party's nonce."""
        if len(nonce) != NONCE_BYTES:
            raise UsageError(f"an attestation nonce is {NONCE_BYTES} bytes")
        digest = hashlib.sha256(certificate_der).digest()
        return self._session.token, digest, self._session.sign(statement(nonce, digest))


class CoordinatorVerifier:
    """A party's side: what a coordinator must prove before the party sends anything.

    ``jwks`` and ``issuer`` are the attestation service's (fetch them with
    :meth:`from_service`); ``policy_id`` is the policy the coordinator must have been attested
    under. ``now`` is injectable for tests.
    """

    def __init__(self, *, jwks: dict[str, Any], issuer: str, policy_id: str,
                 now: Callable[[], float] = time.time) -> None:
        if not policy_id:
            raise UsageError("name the policy the coordinator must satisfy")
        self._tokens = TokenVerifier(jwks, issuer=issuer)
        self.policy_id = policy_id
        self._now = now

    @classmethod
    def from_service(cls, attestation_url: str, *, policy_id: str, ca: Path | None = None) -> CoordinatorVerifier:
        """Fetch the attestation service's JWKS (over TLS, verified with ``ca``)."""
        from ppml.attestation.client import AttestationClient

        client = AttestationClient(attestation_url, ca_path=ca)
        try:
            jwks = client.jwks()
        finally:
            client.close()
        return cls(jwks=jwks, issuer=attestation_url.rstrip("/"), policy_id=policy_id)

    def verify(self, *, token: str, certificate_sha256: bytes, signature: bytes, nonce: bytes,
               certificate_der: bytes) -> AttestationToken:
        """Raises CoordinatorNotAttested naming the check that failed."""
        if not token:
            raise CoordinatorNotAttested("it presented no attestation token (not running behind the TEE gate)")
        try:
            verified = self._tokens.verify(token, now=self._now())
        except PpmlError as exc:
            raise CoordinatorNotAttested(f"its token was refused: {exc}") from None
        if self.policy_id not in verified.policy_ids:
            raise CoordinatorNotAttested(f"its token was issued for policies {list(verified.policy_ids)}, "
                                         f"not {self.policy_id!r}")
        if certificate_sha256 != hashlib.sha256(certificate_der).digest():
            raise CoordinatorNotAttested("its statement names another TLS certificate than this connection's")
        jwk = verified.tee_public_key
        if jwk is None:
            raise CoordinatorNotAttested("its token binds no TEE public key")
        try:
            public_key = ECKey.import_key(jwk).public_key
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise TypeError
            public_key.verify(signature, statement(nonce, certificate_sha256), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, TypeError):
            raise CoordinatorNotAttested("its TLS binding is not signed by the attested TEE key") from None
        if verified.simulated:
            print("ppml: warning: the FL coordinator runs in a SIMULATED TEE (accepted by policy "
                  f"{self.policy_id!r}): no hardware protection", file=sys.stderr)
        return verified
