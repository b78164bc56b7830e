"""The in-process ``KeyManagementService``: one app's view of a :class:`~ppml.kms.service.KmsService`."""

from __future__ import annotations

import uuid

from ppml.core.keys import DATA_KEY_SIZE, DataKey, GeneratedDataKey, KeyInfo
from ppml.errors import InvalidCiphertext
from ppml.kms.service import KmsService
from ppml.kms.types import Credentials, RequestContext

__all__ = ["EmbeddedKms"]


class EmbeddedKms:
    """The in-process ``KeyManagementService``: one app's view of a :class:`KmsService`."""

    def __init__(self, service: KmsService, appid: str, *, uri: str = "embedded:") -> None:
        self._service = service
        self._appid = appid
        self._uri = uri

    @property
    def uri(self) -> str:
        return self._uri

    def _ctx(self) -> RequestContext:
        return RequestContext(appid=self._appid, request_id=uuid.uuid4().hex)

    def create_primary_key(self, *, description: str = "") -> KeyInfo:
        return self._service.create_key(self._ctx(), description=description).to_info()

    def list_keys(self) -> list[KeyInfo]:
        return [k.to_info() for k in self._service.list_keys(self._ctx())]

    def generate_data_key(self, key_id: str, *, associated_data: bytes | None = None) -> GeneratedDataKey:
        plaintext, wrapped = self._service.generate_data_key(
            self._ctx(), key_id, length=DATA_KEY_SIZE, aad=associated_data or b""
        )
        assert plaintext is not None
        return GeneratedDataKey(key_id=key_id, data_key=DataKey(plaintext), wrapped=wrapped)

    def unwrap_data_key(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> DataKey:
        plaintext = self._service.decrypt(self._ctx(), key_id, wrapped, associated_data or b"")
        if len(plaintext) != DATA_KEY_SIZE:
            raise InvalidCiphertext()
        return DataKey(plaintext)

    @classmethod
    def for_app(cls, service: KmsService, credentials: Credentials | str, *, uri: str = "embedded:") -> EmbeddedKms:
        appid = credentials.appid if isinstance(credentials, Credentials) else credentials
        return cls(service, appid, uri=uri)
