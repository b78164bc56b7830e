"""The KMS's value types: credentials, request contexts, data-key requests, key descriptions."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime
from typing import Any, Final

from ppml.core.keys import DATA_KEY_SIZE, KeyInfo
from ppml.errors import KmsRequestRejected

__all__ = [
    "DATA_KEY_OPERATIONS", "DISABLED", "ENABLED", "KEYSPECS", "MAX_AAD", "MAX_DATA_KEY_LEN", "MAX_PLAINTEXT",
    "ORIGINS", "PENDING_DELETION", "AuditReport", "Credentials", "DataKeyRequest", "KeyDescription",
    "describe_row", "utc",
]

KEYSPECS: Final = {"EH_AES_GCM_128": 16, "EH_AES_GCM_192": 24, "EH_AES_GCM_256": 32}
ORIGINS: Final = ("EH_INTERNAL_KEY",)
ENABLED, DISABLED, PENDING_DELETION = "Enabled", "Disabled", "PendingDeletion"
MAX_DATA_KEY_LEN: Final = 1024
MAX_PLAINTEXT: Final = 64 << 10
MAX_AAD: Final = 8 << 10


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """An app's identity and secret. ``repr`` hides the apikey."""

    appid: str
    apikey: str = dataclasses.field(repr=False)

    def to_json(self) -> str:
        return json.dumps({"appid": self.appid, "apikey": self.apikey})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RequestContext:
    """Who is asking, and the bookkeeping that goes into the same transaction as the operation."""

    appid: str
    request_id: str = ""
    #: A request timestamp/nonce that must not have been used before by this app.
    replay_stamp: str | None = None
    replay_expires: int = 0
    #: Attestation claims presented with the request (recorded in the audit log).
    claims: dict[str, Any] | None = None


DATA_KEY_OPERATIONS: Final = ("GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "Encrypt", "Decrypt")


@dataclasses.dataclass(frozen=True, slots=True)
class DataKeyRequest:
    """One data-key operation for :meth:`KmsService.run_data_key_batch`, checked on creation.

    ``data`` is what the operation works on: the fresh key or plaintext to wrap, or the
    ciphertext to unwrap (``Decrypt``).
    """

    ctx: RequestContext
    operation: str
    key_id: str
    data: bytes = dataclasses.field(repr=False)
    aad: bytes = b""

    def __post_init__(self) -> None:
        if self.operation not in DATA_KEY_OPERATIONS:
            raise ValueError(f"not a data-key operation: {self.operation}")
        if len(self.aad) > MAX_AAD:
            raise KmsRequestRejected(f"aad longer than {MAX_AAD} bytes")

    @classmethod
    def generate(cls, ctx: RequestContext, key_id: str, *, length: int = DATA_KEY_SIZE, aad: bytes = b"",
                 with_plaintext: bool = True) -> DataKeyRequest:
        if not 1 <= length <= MAX_DATA_KEY_LEN:
            raise KmsRequestRejected(f"keylen must be 1..{MAX_DATA_KEY_LEN}")
        operation = "GenerateDataKey" if with_plaintext else "GenerateDataKeyWithoutPlaintext"
        return cls(ctx, operation, key_id, os.urandom(length), aad)

    @classmethod
    def encrypt(cls, ctx: RequestContext, key_id: str, plaintext: bytes, aad: bytes = b"") -> DataKeyRequest:
        if not 1 <= len(plaintext) <= MAX_PLAINTEXT:
            raise KmsRequestRejected(f"plaintext must have 1..{MAX_PLAINTEXT} bytes")
        return cls(ctx, "Encrypt", key_id, plaintext, aad)

    @classmethod
    def decrypt(cls, ctx: RequestContext, key_id: str, ciphertext: bytes, aad: bytes = b"") -> DataKeyRequest:
        return cls(ctx, "Decrypt", key_id, ciphertext, aad)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeyDescription:
    key_id: str
    owner: str
    keyspec: str
    origin: str
    description: str
    state: str
    current_version: int
    created: datetime
    deletion_time: datetime | None
    release_policy: dict[str, Any] | None

    def to_info(self) -> KeyInfo:
        return KeyInfo(
            key_id=self.key_id, created=self.created, enabled=self.state == ENABLED,
            description=self.description,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class AuditReport:
    records: int
    ok: bool
    problem: str = ""
    first_bad_seq: int | None = None


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)



def describe_row(row: Any) -> KeyDescription:
    return KeyDescription(
        key_id=row.key_id, owner=row.owner, keyspec=row.keyspec, origin=row.origin,
        description=row.description, state=row.state, current_version=row.current_version,
        created=utc(row.created) or datetime.fromtimestamp(0, UTC), deletion_time=utc(row.deletion_time),
        release_policy=json.loads(row.release_policy) if row.release_policy else None,
    )


