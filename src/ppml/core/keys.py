"""Key value types shared by every layer.

A :class:`DataKey` holds secret bytes and refuses to show them: its ``repr``/``str`` are redacted,
it cannot be pickled, and the only way out is :meth:`DataKey.export`, which needs the
:data:`SECRET_ACCESS` token. ``grep -rn SECRET_ACCESS src/`` therefore lists every place a
plaintext key can leave ppml's control (after Tink's ``secret_key_access``).
"""

from __future__ import annotations

import dataclasses
import hmac
import os
from datetime import datetime
from typing import Final, NoReturn, Protocol, runtime_checkable

__all__ = [
    "DATA_KEY_SIZE",
    "SECRET_ACCESS",
    "DataKey",
    "DataKeyProvider",
    "GeneratedDataKey",
    "KeyInfo",
    "SecretAccess",
]

DATA_KEY_SIZE: Final = 32


class SecretAccess:
    """Proof that the caller means to export secret material. Only :data:`SECRET_ACCESS` exists."""

    _created = False

    def __init__(self) -> None:
        if SecretAccess._created:
            raise TypeError("use ppml.core.keys.SECRET_ACCESS")
        SecretAccess._created = True

    def __repr__(self) -> str:
        return "SECRET_ACCESS"


SECRET_ACCESS: Final = SecretAccess()


class DataKey:
    """A plaintext symmetric data key (32 bytes for AES-256) that does not reveal itself."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if len(material) != DATA_KEY_SIZE:
            # The length is not secret; the bytes are.
            raise ValueError(f"a data key has {DATA_KEY_SIZE} bytes, got {len(material)}")
        self._material = bytes(material)

    @classmethod
    def generate(cls) -> DataKey:
        return cls(os.urandom(DATA_KEY_SIZE))

    def export(self, access: SecretAccess) -> bytes:
        """Return the raw key bytes. ``access`` must be :data:`SECRET_ACCESS`."""
        if access is not SECRET_ACCESS:
            raise PermissionError("exporting a data key needs ppml.core.keys.SECRET_ACCESS")
        return self._material

    def __repr__(self) -> str:
        return "DataKey(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    def __hash__(self) -> int:  # pragma: no cover - keys are not dict keys
        raise TypeError("DataKey is not hashable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a DataKey cannot be pickled; send the wrapped key instead")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GeneratedDataKey:
    """A fresh data key and the same key wrapped by a primary key of a key service."""

    key_id: str
    data_key: DataKey
    wrapped: bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    """Public metadata of a primary key."""

    key_id: str
    created: datetime
    enabled: bool = True
    description: str = ""


@runtime_checkable
class DataKeyProvider(Protocol):
    """What the envelope format needs from a key service: issue and unwrap data keys.

    ``ppml.kms.KeyManagementService`` extends this; every KMS implementation satisfies it.
    ``uri`` names the service in file headers (without credentials).
    """

    @property
    def uri(self) -> str: ...

    def generate_data_key(
        self, key_id: str, *, associated_data: bytes | None = None
    ) -> GeneratedDataKey: ...

    def unwrap_data_key(
        self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None
    ) -> DataKey: ...
