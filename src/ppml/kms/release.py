"""Key release gated on attestation: what the KMS needs from a token, and the JWE it answers with.

A primary key may carry a release policy::

    {"policy_ids": ["<attestation policy id>", ...],   # the token must have matched one of these
     "claims": {"mr_enclave": "<hex>", ...}}           # optional exact-match claim constraints

Unwrapping (or generating, for a TEE) a data key under such a key needs a token that a
:class:`ReleaseGate` accepts and that satisfies the policy; the data key then leaves the KMS only
as a compact JWE (ECDH-ES+A256KW, A256GCM) to the TEE public key named in the token, so nothing
between the KMS and the TEE — proxies, logs, Spark RPC — sees it in the clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ppml.errors import PermissionDenied, TokenRejected

__all__ = ["AttestedCaller", "ReleaseGate", "check_release", "seal_for_tee", "validate_release_policy"]

JWE_HEADER = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}


class AttestedCaller(Protocol):
    """What a verified attestation token tells the KMS."""

    @property
    def policy_ids(self) -> tuple[str, ...]: ...

    @property
    def tee_public_key(self) -> dict[str, Any] | None: ...

    @property
    def token_id(self) -> str: ...

    @property
    def simulated(self) -> bool: ...

    @property
    def claims(self) -> Any: ...


class ReleaseGate(Protocol):
    """Verifies attestation tokens (e.g. ``ppml.attestation.tokens.TokenVerifier``)."""

    def verify(self, token: str, *, now: float) -> AttestedCaller: ...


def validate_release_policy(policy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check a release policy's shape when a key is created; returns it normalised."""
    if policy is None:
        return None
    unknown = set(policy) - {"policy_ids", "claims"}
    if unknown:
        raise PermissionDenied(f"unknown release policy field(s): {', '.join(sorted(unknown))}")
    policy_ids = policy.get("policy_ids") or []
    claims = policy.get("claims") or {}
    if not isinstance(policy_ids, list) or not all(isinstance(p, str) for p in policy_ids):
        raise PermissionDenied("release policy policy_ids must be a list of policy ids")
    if not isinstance(claims, dict):
        raise PermissionDenied("release policy claims must be an object")
    if not policy_ids and not claims:
        raise PermissionDenied("a release policy needs policy_ids or claims")
    return {"policy_ids": policy_ids, "claims": claims}


def check_release(policy: Mapping[str, Any], caller: AttestedCaller) -> None:
    """Raise TokenRejected unless the token satisfies the key's release policy."""
    wanted = set(policy.get("policy_ids") or [])
    if wanted and not wanted & set(caller.policy_ids):
        raise TokenRejected("the token matched none of the policies this key releases to")
    claims = caller.claims.to_dict() if hasattr(caller.claims, "to_dict") else dict(caller.claims)
    for name, expected in (policy.get("claims") or {}).items():
        if claims.get(name) != expected:
            raise TokenRejected(f"claim {name} does not satisfy the key's release policy")
    if caller.tee_public_key is None:
        raise TokenRejected("the token names no TEE public key to release the key to")


def seal_for_tee(plaintext: bytes, tee_public_key: Mapping[str, Any]) -> str:
    """Compact JWE of ``plaintext`` to the TEE's P-256 public key."""
    try:
        key = ECKey.import_key(dict(tee_public_key))
    except (JoseError, ValueError, TypeError, KeyError):
        raise TokenRejected("the token's TEE public key is not a P-256 JWK") from None
    if key.is_private:
        raise TokenRejected("the token carries a private key")
    return jwe.encrypt_compact(dict(JWE_HEADER), plaintext, key)
