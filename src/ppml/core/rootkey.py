"""The KMS root key: it seals every stored secret (key material, apikeys) and keys the audit MAC.

Sources, chosen at start:

* a key file (default ``DIR/root.key``): 32 random bytes, base64, created on first start with mode
  0600; refused if group or others can read it;
* a passphrase file (``--root-key-passphrase-file``): scrypt(passphrase, salt stored in the
  database, n=2**15, r=8, p=1) → 32 bytes.

Sealed record layout (version 1)::

    0   1   version 0x01
    1  12   nonce (random)
   13   .   AES-256-GCM(record key, nonce, secret) ‖ 16-byte tag
    record key = HKDF-SHA256(root key, info=b"ppml-kms-seal/1"); associated data = the canonical
    encoding of the record's identity (its table, id, version, owner), so a sealed value copied to
    another row does not open.

A check value sealed at first start lets the server refuse a wrong root key before serving.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import struct
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppml.core._files import create_private
from ppml.errors import InvalidCiphertext, KeyStoreUnreadable, UsageError

__all__ = ["RootKey", "canonical", "from_passphrase_file", "load_or_create_key_file"]

_ROOT_SIZE: Final = 32
_NONCE: Final = 12
_VERSION: Final = 1


def canonical(*fields: str | bytes | int) -> bytes:
    """Unambiguous encoding of a tuple: each field type-tagged and length-prefixed."""
    out = bytearray()
    for field in fields:
        if isinstance(field, int):
            out += b"i" + struct.pack(">q", field)
        else:
            raw = field.encode() if isinstance(field, str) else field
            out += (b"s" if isinstance(field, str) else b"b") + struct.pack(">I", len(raw)) + raw
    return bytes(out)


def _derive(root: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)


class RootKey:
    """Seals and opens stored secrets; computes the audit-chain MAC. Never shows its bytes."""

    __slots__ = ("_audit_key", "_seal")

    def __init__(self, material: bytes) -> None:
        if len(material) != _ROOT_SIZE:
            raise ValueError("a root key has 32 bytes")
        self._seal = AESGCM(_derive(material, b"ppml-kms-seal/1"))
        self._audit_key = _derive(material, b"ppml-kms-audit/1")

    def __repr__(self) -> str:
        return "RootKey(<redacted>)"

    def seal(self, secret: bytes, *identity: str | bytes | int) -> bytes:
        nonce = os.urandom(_NONCE)
        return bytes([_VERSION]) + nonce + self._seal.encrypt(nonce, secret, canonical(*identity))

    def open(self, sealed: bytes, *identity: str | bytes | int) -> bytes:
        if len(sealed) < 1 + _NONCE + 16 or sealed[0] != _VERSION:
            raise InvalidCiphertext()
        try:
            return self._seal.decrypt(sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :], canonical(*identity))
        except InvalidTag:
            raise InvalidCiphertext() from None

    def audit_mac(self, data: bytes) -> bytes:
        return hmac.new(self._audit_key, data, hashlib.sha256).digest()


def load_or_create_key_file(path: Path) -> tuple[RootKey, bool]:
    """Read the root key file, creating it (0600) if absent. Returns (key, created)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        material = os.urandom(_ROOT_SIZE)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_private(path, (base64.b64encode(material).decode() + "\n").encode())
        return RootKey(material), True
    except OSError as exc:
        raise KeyStoreUnreadable(path, exc.strerror or "cannot open") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & 0o077:
            raise KeyStoreUnreadable(path, f"permissions {stat.S_IMODE(mode):04o} are too open; run chmod 600")
        try:
            material = base64.b64decode(f.read(256).strip(), validate=True)
        except ValueError:
            material = b""
    if len(material) != _ROOT_SIZE:
        raise KeyStoreUnreadable(path, "not a root key file (expected 32 bytes, base64)")
    return RootKey(material), False


def from_passphrase_file(path: Path, salt: bytes) -> RootKey:
    """Derive the root key from the first line of a passphrase file with scrypt."""
    try:
        text = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such passphrase file") from None
    except OSError as exc:
        raise KeyStoreUnreadable(path, exc.strerror or "cannot read") from None
    passphrase = text[0].encode() if text else b""
    if len(passphrase) < 12:
        raise UsageError(f"{path}: the passphrase must have at least 12 characters")
    material = hashlib.scrypt(passphrase, salt=salt, n=2**15, r=8, p=1, maxmem=64 << 20, dklen=32)
    return RootKey(material)
