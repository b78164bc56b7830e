"""The one Protocol every key management service implements, local or remote."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ppml.core.keys import DataKeyProvider, KeyInfo

__all__ = ["KeyManagementService"]


@runtime_checkable
class KeyManagementService(DataKeyProvider, Protocol):
    """Envelope-encryption key service: primary keys stay inside, data keys come out wrapped.

    Implementations: ``local:`` (:class:`ppml.kms.local.LocalKeyStore`); the network KMS adds
    remote ones behind the same methods. ``generate_data_key`` and ``unwrap_data_key`` come from
    :class:`ppml.core.keys.DataKeyProvider`; an unwrap that fails to authenticate raises
    ``InvalidCiphertext`` and an unknown (or foreign) key id ``KeyNotFound``.
    """

    def create_primary_key(self, *, description: str = "") -> KeyInfo: ...

    def list_keys(self) -> list[KeyInfo]: ...
