"""The attested session a workload holds after ``ppml tee run``: its token and its TEE key.

``ppml tee run`` hands the session to the command it starts through an inherited pipe (the
descriptor number is in ``PPML_TEE_SESSION_FD``), not through environment variables or files a
host could read; inside Gramine that pipe is the LibOS's, encrypted between enclave processes.
The session is read once, and the descriptor closed.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Final

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ppml.errors import InvalidCiphertext, UsageError

__all__ = ["SESSION_FD_ENV", "TeeSession", "current_session"]

SESSION_FD_ENV: Final = "PPML_TEE_SESSION_FD"
_MAX: Final = 256 << 10


class TeeSession:
    """An attestation token and the TEE private key it names. ``repr`` shows neither."""

    def __init__(self, *, token: str, private_key: ECKey, claims: dict[str, Any], policy_ids: list[str],
                 attestation_url: str) -> None:
        self.token = token
        self._key = private_key
        self.claims = claims
        self.policy_ids = policy_ids
        self.attestation_url = attestation_url

    def __repr__(self) -> str:
        return f"TeeSession(policy_ids={self.policy_ids!r}, simulated={self.claims.get('simulated', False)})"

    def decrypt_jwe(self, token: str) -> bytes:
        """Open a key the KMS released to this TEE."""
        try:
            return bytes(jwe.decrypt_compact(token, self._key).plaintext or b"")
        except (JoseError, ValueError, KeyError, TypeError):
            raise InvalidCiphertext() from None

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 (DER) by the TEE key the token names: lets a relying party check
        that a statement (e.g. "this TLS certificate is mine") comes from the attested TEE."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        private_key = self._key.private_key
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise UsageError("this session holds no private TEE key")
        return private_key.sign(message, ec.ECDSA(hashes.SHA256()))

    def export(self, secret_access: object) -> bytes:
        """Serialise (token and private key) for the child process. Needs SECRET_ACCESS."""
        from ppml.core.keys import SECRET_ACCESS

        if secret_access is not SECRET_ACCESS:
            raise PermissionError("exporting a TEE session needs ppml.core.keys.SECRET_ACCESS")
        return json.dumps({"token": self.token, "key": self._key.as_dict(private=True), "claims": self.claims,
                           "policy_ids": self.policy_ids, "attestation_url": self.attestation_url}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TeeSession:
        record = json.loads(data)
        return cls(token=record["token"], private_key=ECKey.import_key(record["key"]), claims=record["claims"],
                   policy_ids=record["policy_ids"], attestation_url=record["attestation_url"])


_lock = threading.Lock()
_session: TeeSession | None = None
_loaded = False


def current_session() -> TeeSession | None:
    """The session inherited from ``ppml tee run``, or None outside one."""
    global _session, _loaded
    with _lock:
        if _loaded:
            return _session
        _loaded = True
        fd_text = os.environ.pop(SESSION_FD_ENV, None)
        if fd_text is None:
            return None
        try:
            fd = int(fd_text)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
                if sum(map(len, chunks)) > _MAX:
                    raise UsageError("TEE session too large")
            os.close(fd)
            _session = TeeSession.from_bytes(b"".join(chunks))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"cannot read the TEE session from descriptor {fd_text}: {exc}") from None
        return _session
