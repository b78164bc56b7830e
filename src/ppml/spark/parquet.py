"""Parquet with column-level encryption (Parquet Modular Encryption) through PyArrow, keyed by
the ppml KMS.

PME encrypts each column chunk (and the footer) with AES-GCM under data keys that PyArrow wraps
through a ``KmsClient``; the master key identifiers are ppml primary key ids. ppml's client wraps
a PME key by envelope: it asks the KMS for a fresh data key under the master key, encrypts the PME
key with it (AES-256-GCM, the master key id as associated data), and stores both::

    wrapped = base64(JSON {"v": 1, "wdk": base64(KMS-wrapped data key),
                           "n": base64(12-byte nonce), "c": base64(AES-GCM(data key, PME key))})

Unwrapping goes through ``unwrap_data_key``, so a primary key with a release policy releases PME
keys only to attested TEEs, exactly like envelope files. Files stay standard PME: any PME reader
that can unwrap the keys the same way reads them.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml.core.keys import SECRET_ACCESS, DataKeyProvider
from ppml.errors import InvalidCiphertext

__all__ = ["PpmlKmsClient", "crypto_factory", "read_encrypted_table", "write_encrypted_table"]

_CACHE = timedelta(minutes=10)


class PpmlKmsClient(pe.KmsClient):
    """PyArrow ``KmsClient`` over a ppml ``DataKeyProvider`` (see the module docstring)."""

    def __init__(self, kms: DataKeyProvider) -> None:
        super().__init__()
        self._kms = kms

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        generated = self._kms.generate_data_key(master_key_identifier)
        nonce = os.urandom(12)
        sealed = AESGCM(generated.data_key.export(SECRET_ACCESS)).encrypt(
            nonce, bytes(key_bytes), master_key_identifier.encode())
        record = {"v": 1, "wdk": base64.b64encode(generated.wrapped).decode(),
                  "n": base64.b64encode(nonce).decode(), "c": base64.b64encode(sealed).decode()}
        return base64.b64encode(json.dumps(record, separators=(",", ":")).encode()).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        try:
            record = json.loads(base64.b64decode(wrapped_key))
            if record.get("v") != 1:
                raise ValueError
            wrapped_dk, nonce, sealed = (base64.b64decode(record[k]) for k in ("wdk", "n", "c"))
        except (ValueError, KeyError, TypeError):
            raise InvalidCiphertext() from None
        data_key = self._kms.unwrap_data_key(master_key_identifier, wrapped_dk)
        try:
            return AESGCM(data_key.export(SECRET_ACCESS)).decrypt(nonce, sealed, master_key_identifier.encode())
        except InvalidTag:
            raise InvalidCiphertext() from None


def crypto_factory(kms: DataKeyProvider) -> pe.CryptoFactory:
    return pe.CryptoFactory(lambda _config: PpmlKmsClient(kms))


def _connection(kms: DataKeyProvider) -> pe.KmsConnectionConfig:
    return pe.KmsConnectionConfig(kms_instance_id=kms.uri)


def write_encrypted_table(table: pa.Table, where: Path | str | Any, *, kms: DataKeyProvider, footer_key: str,
                          column_keys: Mapping[str, Sequence[str]] | None = None,
                          plaintext_footer: bool = False, row_group_size: int | None = None) -> None:
    """Write ``table`` as PME Parquet with EVERY column encrypted: under ``footer_key`` unless
    ``column_keys`` maps other master key ids to some columns (``{key_id: [column, …]}``).

    (Plain PME leaves columns that ``column_keys`` does not name in the clear; ppml does not.)
    """
    if column_keys:
        keys = {k: list(v) for k, v in column_keys.items()}
        named = {c for cols in keys.values() for c in cols}
        unknown = named - set(table.column_names)
        if unknown:
            raise ValueError(f"column_keys names unknown column(s): {', '.join(sorted(unknown))}")
        rest = [c for c in table.column_names if c not in named]
        if rest:
            keys.setdefault(footer_key, []).extend(rest)
        config = pe.EncryptionConfiguration(
            footer_key=footer_key, column_keys=keys,
            encryption_algorithm="AES_GCM_V1", plaintext_footer=plaintext_footer, cache_lifetime=_CACHE,
            data_key_length_bits=256)
    else:
        config = pe.EncryptionConfiguration(
            footer_key=footer_key, uniform_encryption=True, encryption_algorithm="AES_GCM_V1",
            plaintext_footer=plaintext_footer, cache_lifetime=_CACHE, data_key_length_bits=256)
    properties = crypto_factory(kms).file_encryption_properties(_connection(kms), config)
    pq.write_table(table, where, encryption_properties=properties, row_group_size=row_group_size)


def decryption_properties(kms: DataKeyProvider) -> Any:
    return crypto_factory(kms).file_decryption_properties(
        _connection(kms), pe.DecryptionConfiguration(cache_lifetime=_CACHE))


def read_encrypted_table(where: Path | str | Any, *, kms: DataKeyProvider, columns: Sequence[str] | None = None,
                         filters: Any = None) -> pa.Table:
    """Read PME Parquet; ``columns`` prunes (only those columns' keys are unwrapped) and
    ``filters`` uses row-group statistics to skip row groups."""
    return pq.read_table(where, columns=list(columns) if columns else None, filters=filters,
                         decryption_properties=decryption_properties(kms))
