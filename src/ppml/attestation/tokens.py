"""Attestation tokens: short-lived ES256 JWTs that the attestation service signs and relying
parties (the KMS) verify against its JWKS.

Payload::

    iss, iat, nbf, exp, jti      standard; exp - iat is the service's token lifetime (5 minutes)
    nonce                        the single-use nonce the evidence was bound to
    policy_ids                   every policy of the caller's request that the claims matched
    claims                       the normalised claims (ppml.core.evidence.Claims.to_dict())
    runtime_data                 what the TEE bound into its report data, e.g. tee_public_key (JWK)
    simulated                    true when the evidence came from the simulated TEE

A token from the simulated TEE says so in ``simulated`` and in ``claims.tcb_status``; no policy
accepts one unless it allows simulated evidence.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from ppml.core.evidence import Claims
from ppml.errors import TokenRejected

__all__ = ["DEFAULT_TOKEN_TTL", "NOT_BEFORE_MARGIN", "TOKEN_LEEWAY", "AttestationToken", "TokenSigner", "TokenVerifier"]

DEFAULT_TOKEN_TTL: Final = 300
#: Seconds a token's ``nbf`` lies before its ``iat``, and the verifier's default leeway: together
#: the clock skew a verifier may trail the attestation service by (``ppml doctor`` checks it).
NOT_BEFORE_MARGIN: Final = 5
TOKEN_LEEWAY: Final = 5
_ALGORITHM: Final = "ES256"
_MAX_TOKEN: Final = 32 << 10


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AttestationToken:
    """A verified token's contents."""

    raw: str = dataclasses.field(repr=False)
    issuer: str
    token_id: str
    issued_at: int
    expires_at: int
    nonce: str
    policy_ids: tuple[str, ...]
    claims: Claims
    runtime_data: Mapping[str, Any]
    simulated: bool

    @property
    def tee_public_key(self) -> dict[str, Any] | None:
        key = self.runtime_data.get("tee_public_key")
        return dict(key) if isinstance(key, Mapping) else None


class TokenSigner:
    """Issues tokens with the service's P-256 key; publishes the public half as a JWKS."""

    def __init__(self, key: ECKey, *, issuer: str, ttl: int = DEFAULT_TOKEN_TTL) -> None:
        self._key = key
        self.issuer = issuer
        self.ttl = ttl
        self.kid = key.thumbprint()

    @classmethod
    def generate(cls, *, issuer: str, ttl: int = DEFAULT_TOKEN_TTL) -> TokenSigner:
        return cls(ECKey.generate_key("P-256", private=True), issuer=issuer, ttl=ttl)

    def private_pem(self) -> bytes:
        return self._key.as_pem(private=True)

    def issue(self, *, claims: Claims, nonce: str, policy_ids: Sequence[str],
              runtime_data: Mapping[str, Any], now: float) -> str:
        issued = int(now)
        payload = {
            "iss": self.issuer, "iat": issued, "nbf": issued - NOT_BEFORE_MARGIN, "exp": issued + self.ttl,
            "jti": uuid.uuid4().hex, "nonce": nonce, "policy_ids": list(policy_ids),
            "claims": claims.to_dict(), "runtime_data": dict(runtime_data), "simulated": claims.simulated,
        }
        return jwt.encode({"alg": _ALGORITHM, "kid": self.kid, "typ": "JWT"}, payload, self._key,
                          algorithms=[_ALGORITHM])

    def jwks(self) -> dict[str, Any]:
        public = self._key.as_dict(private=False)
        public.update({"kid": self.kid, "use": "sig", "alg": _ALGORITHM})
        return {"keys": [public]}


class TokenVerifier:
    """Verifies tokens against a JWKS (ES256 only), the issuer and the validity window."""

    def __init__(self, jwks: Mapping[str, Any], *, issuer: str, leeway: int = TOKEN_LEEWAY) -> None:
        self._keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        self.issuer = issuer
        self.leeway = leeway

    def verify(self, token: str, *, now: float) -> AttestationToken:
        """Raises TokenRejected naming the failed check."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
            raise TokenRejected("no token, or an oversized one")
        try:
            decoded = jwt.decode(token, self._keys, algorithms=[_ALGORITHM])
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise TokenRejected(f"token signature or format invalid ({type(exc).__name__})") from None
        payload = decoded.claims
        if decoded.header.get("alg") != _ALGORITHM:
            raise TokenRejected("token algorithm must be ES256")
        if payload.get("iss") != self.issuer:
            raise TokenRejected(f"token issuer {payload.get('iss')!r} is not {self.issuer!r}")
        try:
            expires, not_before, issued = int(payload["exp"]), int(payload["nbf"]), int(payload["iat"])
            claims = Claims.from_dict(payload["claims"])
            policy_ids = tuple(str(p) for p in payload["policy_ids"])
            nonce, token_id = str(payload["nonce"]), str(payload["jti"])
            runtime_data = payload.get("runtime_data") or {}
            if not isinstance(runtime_data, dict):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise TokenRejected("token payload malformed") from None
        if now > expires + self.leeway:
            raise TokenRejected("token expired")
        if now + self.leeway < not_before:
            raise TokenRejected("token not yet valid")
        return AttestationToken(
            raw=token, issuer=self.issuer, token_id=token_id, issued_at=issued, expires_at=expires,
            nonce=nonce, policy_ids=policy_ids, claims=claims, runtime_data=runtime_data,
            simulated=bool(payload.get("simulated", claims.simulated)),
        )
