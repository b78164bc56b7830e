"""``local:`` — a file-backed key store for one user, with no server.

Layout of the store directory (created 0700)::

    DIR/<key_id>.key    one primary key per file, mode 0600, JSON:
                        {"format": "ppml-local-key/1", "key_id", "created", "description",
                         "enabled", "material": base64 of 32 random bytes}

Wrapped data key (what the envelope header carries), version 1::

    0   1   version 0x01
    1  12   nonce        random
   13  48   AES-256-GCM(primary key, nonce, data key) ‖ tag
    associated data = b"ppml-local-wrap/1" ‖ u16 len ‖ key id ‖ u32 len ‖ caller's associated data

Binding the key id means a wrapped key moved under another key id fails to unwrap. The store
refuses key files readable by group or others, as ssh does for private keys.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import struct
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml.core._files import write_private
from ppml.core.keys import DATA_KEY_SIZE, SECRET_ACCESS, DataKey, GeneratedDataKey, KeyInfo
from ppml.errors import InvalidCiphertext, KeyDisabled, KeyNotFound, KeyStoreUnreadable

__all__ = ["LocalKeyStore", "default_local_store_path"]

_FORMAT: Final = "ppml-local-key/1"
_WRAP_VERSION: Final = 1
_NONCE: Final = 12
_WRAPPED_SIZE: Final = 1 + _NONCE + DATA_KEY_SIZE + 16
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def default_local_store_path() -> Path:
    """``$PPML_HOME/keys``, by default ``~/.ppml/keys``."""
    home = os.environ.get("PPML_HOME")
    return (Path(home) if home else Path.home() / ".ppml") / "keys"


def _wrap_aad(key_id: str, associated_data: bytes | None) -> bytes:
    kid = key_id.encode()
    extra = associated_data or b""
    return b"ppml-local-wrap/1" + struct.pack(">H", len(kid)) + kid + struct.pack(">I", len(extra)) + extra


class LocalKeyStore:
    """Primary keys in a local directory; implements ``KeyManagementService``."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory).expanduser().absolute()

    @property
    def uri(self) -> str:
        return f"local:{self.directory}"

    def __repr__(self) -> str:
        return f"LocalKeyStore({str(self.directory)!r})"

    # -- primary keys -------------------------------------------------------------------------

    def create_primary_key(self, *, description: str = "") -> KeyInfo:
        self._ensure_directory()
        key_id = str(uuid.uuid4())
        info = KeyInfo(key_id=key_id, created=datetime.now(UTC), description=description)
        record = {
            "format": _FORMAT,
            "key_id": key_id,
            "created": info.created.isoformat(),
            "description": description,
            "enabled": True,
            "material": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode(),
        }
        write_private(self._path(key_id), json.dumps(record).encode(), durable=True)
        return info

    def list_keys(self) -> list[KeyInfo]:
        if not self.directory.exists():
            return []
        infos = []
        for path in sorted(self.directory.glob("*.key")):
            record = self._load(path.stem, path)
            infos.append(_info(record))
        return sorted(infos, key=lambda i: i.created)

    # -- data keys ----------------------------------------------------------------------------

    def generate_data_key(
        self, key_id: str, *, associated_data: bytes | None = None
    ) -> GeneratedDataKey:
        primary = self._primary(key_id)
        data_key = DataKey.generate()
        nonce = os.urandom(_NONCE)
        sealed = primary.encrypt(
            nonce, data_key.export(SECRET_ACCESS), _wrap_aad(key_id, associated_data)
        )
        wrapped = bytes([_WRAP_VERSION]) + nonce + sealed
        return GeneratedDataKey(key_id=key_id, data_key=data_key, wrapped=wrapped)

    def unwrap_data_key(
        self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None
    ) -> DataKey:
        primary = self._primary(key_id)
        if len(wrapped) != _WRAPPED_SIZE or wrapped[0] != _WRAP_VERSION:
            raise InvalidCiphertext()
        try:
            material = primary.decrypt(
                wrapped[1 : 1 + _NONCE], wrapped[1 + _NONCE :], _wrap_aad(key_id, associated_data)
            )
        except InvalidTag:
            raise InvalidCiphertext() from None
        return DataKey(material)

    # -- storage ------------------------------------------------------------------------------

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyStoreUnreadable(self.directory, f"cannot create: {exc.strerror}") from None

    def _path(self, key_id: str) -> Path:
        return self.directory / f"{key_id}.key"

    def _primary(self, key_id: str) -> AESGCM:
        # Key ids arrive from file headers: validate before they touch a path.
        if not _KEY_ID.fullmatch(key_id):
            raise KeyNotFound(key_id, self.uri)
        if not self.directory.is_dir():
            raise KeyStoreUnreadable(
                self.directory, "no such key store (create a key with `ppml key create`)"
            )
        record = self._load(key_id, self._path(key_id))
        if not record.get("enabled", True):
            raise KeyDisabled(key_id, "disabled")
        return AESGCM(base64.b64decode(record["material"]))

    def _load(self, key_id: str, path: Path) -> dict:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise KeyNotFound(key_id, self.uri) from None
        except OSError as exc:
            raise KeyStoreUnreadable(path, exc.strerror or "cannot open") from None
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise KeyStoreUnreadable(path, "not a regular file")
            if mode & 0o077:
                raise KeyStoreUnreadable(
                    path, f"permissions {stat.S_IMODE(mode):04o} are too open; run chmod 600"
                )
            try:
                record = json.loads(f.read(64 << 10))
                material = base64.b64decode(record["material"], validate=True)
                valid = (
                    record.get("format") == _FORMAT
                    and record.get("key_id") == key_id
                    and len(material) == 32
                )
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                raise KeyStoreUnreadable(path, "malformed key file")
        return record


def _info(record: dict) -> KeyInfo:
    return KeyInfo(
        key_id=record["key_id"],
        created=datetime.fromisoformat(record["created"]),
        enabled=bool(record.get("enabled", True)),
        description=record.get("description", ""),
    )
