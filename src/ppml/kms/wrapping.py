"""Wrapped data keys: the ciphertext format of the KMS's primary keys.

Wrapped data key / ciphertext layout (version 1)::

    0   1   version 0x01
    1   4   primary key version (uint32, big-endian)
    5  12   nonce (random)
   17   .   AES-GCM(primary key version, nonce, plaintext) ‖ 16-byte tag
    associated data = canonical("ppml-kms-wrap/1", key id, owner appid, key version, caller aad)

Every failure to open is the one opaque ``InvalidCiphertext``.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml.core.rootkey import canonical
from ppml.errors import InvalidCiphertext

__all__ = ["MAX_WRAPPED", "seal", "unseal", "version_of", "wrapped_version"]

_WRAP_VERSION: Final = 1
_WRAP_PREFIX = struct.Struct(">BI")
_NONCE: Final = 12
_TAG: Final = 16
#: A wrapped value longer than this is refused unopened (plaintexts are at most 64 KiB).
MAX_WRAPPED: Final = (64 << 10) + 64


def _aad(key_id: str, owner: str, version: int, aad: bytes) -> bytes:
    return canonical("ppml-kms-wrap/1", key_id, owner, version, aad)


def seal(aead: AESGCM, *, key_id: str, owner: str, version: int, plaintext: bytes, aad: bytes) -> bytes:
    """``plaintext`` wrapped under primary key ``key_id`` version ``version`` (its ``aead``)."""
    nonce = os.urandom(_NONCE)
    return _WRAP_PREFIX.pack(_WRAP_VERSION, version) + nonce + aead.encrypt(
        nonce, plaintext, _aad(key_id, owner, version, aad))


def wrapped_version(ciphertext: bytes, *, newest: int) -> int:
    """The primary key version a wrapped value names (checked against 1..``newest``).

    Raises:
        InvalidCiphertext: too short or long, another format version, or no such key version.
    """
    if len(ciphertext) < _WRAP_PREFIX.size + _NONCE + _TAG or len(ciphertext) > MAX_WRAPPED:
        raise InvalidCiphertext()
    wrap_version, version = _WRAP_PREFIX.unpack_from(ciphertext)
    if wrap_version != _WRAP_VERSION or not 1 <= version <= newest:
        raise InvalidCiphertext()
    return int(version)


def unseal(aead: AESGCM, ciphertext: bytes, *, key_id: str, owner: str, version: int, aad: bytes) -> bytes:
    """Open a wrapped value whose version (:func:`wrapped_version`) is ``version``.

    Raises:
        InvalidCiphertext: the tag does not verify (wrong key, aad, owner or a changed byte).
    """
    start = _WRAP_PREFIX.size
    try:
        return aead.decrypt(ciphertext[start : start + _NONCE], ciphertext[start + _NONCE :],
                            _aad(key_id, owner, version, aad))
    except InvalidTag:
        raise InvalidCiphertext() from None


def version_of(wrapped: Any) -> int | None:
    """The key version in a wrapped value, for the audit log (None if it is not one)."""
    if isinstance(wrapped, bytes | bytearray) and len(wrapped) >= _WRAP_PREFIX.size:
        return int(_WRAP_PREFIX.unpack_from(wrapped)[1])
    return None
