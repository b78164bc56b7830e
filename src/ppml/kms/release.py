"""Key release gated on attestation: what the KMS needs from a token, and the JWE it answers with.

A primary key may carry a release policy, written in the claims-policy language of
:mod:`ppml.core.policy` (the one the attestation service uses), e.g.::

    {"policy_ids": ["<attestation policy id>"]}        # the token must have matched this policy
    {"mr_enclave": "<hex>", "allow_simulated": true}   # or constrain the token's claims directly

Unwrapping (or generating, for a TEE) a data key under such a key needs a token that a
:class:`ReleaseGate` accepts and that satisfies the policy; the data key then leaves the KMS only
as a compact JWE (ECDH-ES+A256KW, A256GCM) to the TEE public key named in the token, so nothing
between the KMS and the TEE — proxies, logs, Spark RPC — sees it in the clear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ppml.core.evidence import Claims
from ppml.core.policy import parse_policy
from ppml.errors import TokenRejected, UsageError

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
    """Parse a release policy when a key is created; returns its normalised JSON form.

    Raises:
        UsageError: the policy is not one :func:`ppml.core.policy.parse_policy` accepts.
    """
    if policy is None:
        return None
    return parse_policy(policy).to_dict()


def check_release(policy: Mapping[str, Any], caller: AttestedCaller) -> None:
    """Raise TokenRejected unless the token satisfies the key's release policy.

    The policy is the one claims-policy language of :mod:`ppml.core.policy`, with its safe
    defaults: debug, simulated or out-of-date evidence is refused unless the policy opts in.
    """
    try:
        parsed = parse_policy(policy)
    except UsageError as exc:  # a stored policy this version cannot read: fail closed
        raise TokenRejected(f"the key's release policy cannot be read: {exc}") from None
    claims = caller.claims if isinstance(caller.claims, Claims) else Claims.from_dict(dict(caller.claims))
    if caller.simulated and not claims.simulated:
        claims = dataclasses.replace(claims, simulated=True)
    reasons = parsed.mismatches(claims, matched_policy_ids=caller.policy_ids)
    if reasons:
        raise TokenRejected("the key's release policy refuses this workload: " + "; ".join(reasons))
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
