"""The attestation service: policies, single-use nonces, evidence verification, tokens.

Protocol (DESIGN.md, step 6)::

    TEE                                   attestation service
    GET  nonce                  ───────▶  fresh 32-byte nonce, single use, expires in 5 minutes
    report_data = SHA-512(nonce ‖ canonical JSON of runtime data, e.g. {"tee_public_key": JWK})
    POST evidence, runtime data, nonce, policy ids
                                ───────▶  consume nonce; verify evidence (per-TEE verifier, at
                                          `now`); check report data; evaluate the policies
                                ◀───────  ES256 JWT with the claims, nonce and matched policy ids

Tables (in the shared database, see :mod:`ppml.store`)::

    attestation_policies  policy_id PK, owner appid, created, body (JSON of Policy)
    attestation_nonces    nonce PK, expires (unix seconds)   deleted when used or expired
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from joserfc.jwk import ECKey
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
)

from ppml.attestation.tokens import DEFAULT_TOKEN_TTL, AttestationToken, TokenSigner, TokenVerifier
from ppml.core.evidence import Claims, Evidence, EvidenceVerifier, report_data_for
from ppml.core.policy import ClaimsPolicy, parse_policy
from ppml.core.rootkey import RootKey
from ppml.errors import AttestationFailed, NonceRejected, PolicyNotFound, QuoteFormatError, UsageError
from ppml.store import Storage

__all__ = ["NONCE_TTL", "AttestationResult", "AttestationService"]

NONCE_TTL: Final = 300
MAX_EVIDENCE: Final = 64 << 10
MAX_RUNTIME_DATA: Final = 16 << 10

metadata = MetaData()
policies = Table(
    "attestation_policies", metadata,
    Column("policy_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
)
nonces = Table(
    "attestation_nonces", metadata,
    Column("nonce", String(64), primary_key=True),
    Column("expires", BigInteger, nullable=False, index=True),
)


def _migrate_to_1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


MIGRATIONS = {1: _migrate_to_1}


class AttestationResult:
    """What a successful attestation yields: the token and what it says."""

    def __init__(self, token: str, claims: Claims, policy_ids: tuple[str, ...]) -> None:
        self.token = token
        self.claims = claims
        self.policy_ids = policy_ids


class AttestationService:
    """Thread-safe; one per process. ``verifiers`` maps a TEE type to its verifier."""

    def __init__(self, storage: Storage, signer: TokenSigner, verifiers: Mapping[str, EvidenceVerifier], *,
                 now: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.signer = signer
        self.verifiers = dict(verifiers)
        self._now = now

    @classmethod
    def open(cls, storage: Storage, root: RootKey, verifiers: Mapping[str, EvidenceVerifier], *,
             issuer: str, token_ttl: int = DEFAULT_TOKEN_TTL,
             now: Callable[[], float] = time.time) -> AttestationService:
        """Migrate the tables and load (or create, sealed by the root key) the signing key."""
        storage.migrate("attestation", MIGRATIONS)
        with storage.transaction() as conn:
            sealed = storage.get_meta(conn, "as_signing_key")
            if sealed is None:
                signer = TokenSigner.generate(issuer=issuer, ttl=token_ttl)
                storage.set_meta(conn, "as_signing_key", root.seal(signer.private_pem(), "meta", "as_signing_key"))
            else:
                pem = root.open(sealed, "meta", "as_signing_key")
                signer = TokenSigner(ECKey.import_key(pem), issuer=issuer, ttl=token_ttl)
        return cls(storage, signer, verifiers, now=now)

    def token_verifier(self) -> TokenVerifier:
        return TokenVerifier(self.signer.jwks(), issuer=self.signer.issuer)

    # -- policies ------------------------------------------------------------------------------

    def register_policy(self, owner: str, policy: ClaimsPolicy) -> str:
        """Store ``policy`` for ``owner``; returns its id."""
        if policy.uses_policy_ids():
            raise UsageError("policy_ids belong in a key's release policy, not in an attestation policy")
        policy_id = str(uuid.uuid4())
        with self.storage.transaction() as conn:
            conn.execute(insert(policies).values(
                policy_id=policy_id, owner=owner, created=datetime.fromtimestamp(self._now(), UTC),
                body=json.dumps(policy.to_dict(), sort_keys=True),
            ))
        return policy_id

    def get_policy(self, policy_id: str, *, owner: str | None = None) -> ClaimsPolicy:
        """A policy by id; with ``owner``, only that app's (another's looks unknown)."""
        with self.storage.transaction(durable=False) as conn:
            row = conn.execute(select(policies).where(policies.c.policy_id == policy_id)).first()
        if row is None or (owner is not None and row.owner != owner):
            raise PolicyNotFound(policy_id)
        return parse_policy(json.loads(row.body))

    # -- nonces --------------------------------------------------------------------------------

    def new_nonce(self) -> tuple[str, int]:
        """A fresh nonce (base64url, 32 random bytes) and its expiry (unix seconds)."""
        nonce = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        expires = int(self._now()) + NONCE_TTL
        with self.storage.transaction(durable=False) as conn:
            conn.execute(delete(nonces).where(nonces.c.expires < int(self._now())))
            conn.execute(insert(nonces).values(nonce=nonce, expires=expires))
        return nonce, expires

    def _consume_nonce(self, nonce: str) -> None:
        if not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
            raise NonceRejected("malformed nonce")
        with self.storage.transaction(durable=False) as conn:
            row = conn.execute(select(nonces.c.expires).where(nonces.c.nonce == nonce)).first()
            if row is None:
                raise NonceRejected("unknown or already used nonce")
            conn.execute(delete(nonces).where(nonces.c.nonce == nonce))
        if row.expires < self._now():
            raise NonceRejected("nonce expired")

    # -- attestation ---------------------------------------------------------------------------

    def verify_evidence(self, evidence: Evidence) -> Claims:
        if len(evidence.data) > MAX_EVIDENCE:
            raise QuoteFormatError("evidence larger than 64 KiB")
        verifier = self.verifiers.get(evidence.tee)
        if verifier is None:
            raise AttestationFailed(f"this service does not verify {evidence.tee} evidence")
        return verifier.verify(evidence, now=datetime.fromtimestamp(self._now(), UTC))

    def attest(self, evidence: Evidence, *, nonce: str, runtime_data: Mapping[str, Any],
               policy_ids: Sequence[str], owner: str | None = None) -> AttestationResult:
        """Verify evidence bound to ``nonce`` and ``runtime_data`` against ``policy_ids``.

        Every named policy must match (a workload asks for the policies it needs); the token
        lists them. Raises AttestationFailed (or a subclass) naming the first failed check.
        """
        if not policy_ids:
            raise AttestationFailed("name at least one policy to attest against")
        if len(json.dumps(runtime_data)) > MAX_RUNTIME_DATA:
            raise AttestationFailed("runtime data larger than 16 KiB")
        self._consume_nonce(nonce)
        claims = self.verify_evidence(evidence)
        expected = report_data_for(nonce.encode(), dict(runtime_data)).hex()
        if not hmac.compare_digest(claims.report_data, expected):
            raise AttestationFailed("report data does not bind this nonce and runtime data")
        for policy_id in policy_ids:
            reasons = self.get_policy(policy_id, owner=owner).mismatches(claims)
            if reasons:
                raise AttestationFailed(f"policy {policy_id}: " + "; ".join(reasons))
        token = self.signer.issue(claims=claims, nonce=nonce, policy_ids=list(policy_ids),
                                  runtime_data=runtime_data, now=self._now())
        return AttestationResult(token, claims, tuple(policy_ids))

    def verify_token(self, token: str) -> AttestationToken:
        return self.token_verifier().verify(token, now=self._now())
