"""``ehsm+https://``: a ``KeyManagementService`` client for eHSM-KMS servers (and ``ppml serve``).

Speaks eHSM's wire protocol (docs/ehsm-api.md): signed ``POST /ehsm?Action=…`` with a fresh
13-digit millisecond timestamp per request. eHSM accepts each timestamp once per app, so the
client never reuses one: it waits for the next millisecond when two requests would share it.
Unlike eHSM's own clients, this one verifies the server's TLS certificate, and it signs a random
``nonce`` into every request (current eHSM and ``ppml serve`` accept it; eHSM revisions before
the nonce field would reject such signatures). eHSM keys carry no description: ``list_keys``
shows descriptions as empty.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from typing import Any

import httpx

from ppml.core.keys import DATA_KEY_SIZE, DataKey, GeneratedDataKey, KeyInfo
from ppml.errors import (
    AuthenticationFailed,
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    KmsRequestRejected,
    KmsUnavailable,
    ReplayedRequest,
    UsageError,
)
from ppml.core import signing
from ppml.kms.remote import ClientCredentials, HttpTransport, KmsEndpoint, load_credentials

__all__ = ["EhsmKms"]

_UUID = re.compile(r"^[a-z\d]{8}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{12}$")


class _Clock:
    """Strictly increasing millisecond timestamps (eHSM rejects a repeated one)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            current = int(time.time() * 1000)
            if current <= self._last:
                current = self._last + 1
                time.sleep(max(0.0, current / 1000 - time.time()))
            self._last = current
            return str(current)


class EhsmKms:
    """eHSM client implementing ``KeyManagementService`` (keys: AES-GCM-256 by default)."""

    def __init__(self, endpoint: KmsEndpoint, credentials: ClientCredentials | None = None, *,
                 keyspec: str = "EH_AES_GCM_256", transport: httpx.BaseTransport | None = None) -> None:
        if credentials is None:
            if endpoint.credentials_path is None:
                raise UsageError(f"no credentials for {endpoint.uri}: set credentials=PATH or $PPML_KMS_CREDENTIALS")
            credentials = load_credentials(endpoint.credentials_path)
        self._endpoint = endpoint
        self._credentials = credentials
        self._keyspec = keyspec
        self._http = HttpTransport(endpoint, transport=transport)
        self._clock = _Clock()

    @classmethod
    def from_uri(cls, uri: str) -> EhsmKms:
        return cls(KmsEndpoint.parse(uri))

    @property
    def uri(self) -> str:
        return self._endpoint.uri

    def __repr__(self) -> str:
        return f"EhsmKms({self.uri!r}, appid={self._credentials.appid!r})"

    def call(self, action: str, payload: dict[str, Any] | None = None, *, key_id: str | None = None) -> dict[str, Any]:
        if key_id is not None and not _UUID.fullmatch(key_id):
            raise KeyNotFound(key_id, self.uri)  # eHSM key ids are lower-case UUIDs; nothing else exists
        timestamp = self._clock.next()
        # A random nonce (signed, as current eHSM does) keeps two clients of one app that pick the
        # same millisecond from rejecting each other as replays.
        nonce = secrets.token_hex(16)
        body: dict[str, Any] = {"appid": self._credentials.appid, "nonce": nonce, "timestamp": timestamp}
        if payload is not None:
            body["payload"] = payload
        body["sign"] = signing.ehsm_sign(self._credentials.apikey, appid=self._credentials.appid,
                                         payload=payload, timestamp=timestamp, nonce=nonce)
        response = self._http.send("POST", "/ehsm", body=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"}, params={"Action": action})
        return _result(response, self.uri, key_id)

    def create_primary_key(self, *, description: str = "") -> KeyInfo:
        from datetime import UTC, datetime

        result = self.call("CreateKey", {"keyspec": self._keyspec, "origin": "EH_INTERNAL_KEY"})
        return KeyInfo(key_id=result["keyid"], created=datetime.now(UTC), description=description)

    def list_keys(self) -> list[KeyInfo]:
        from datetime import UTC, datetime

        result = self.call("ListKey")
        return [
            KeyInfo(key_id=k["keyid"], created=datetime.fromtimestamp(k.get("creationDate", 0) / 1000, UTC),
                    enabled=k.get("keyState", 1) == 1, description=k.get("alias", ""))
            for k in result.get("list", [])
        ]

    def generate_data_key(self, key_id: str, *, associated_data: bytes | None = None) -> GeneratedDataKey:
        payload: dict[str, Any] = {"keyid": key_id, "keylen": DATA_KEY_SIZE}
        if associated_data:
            payload["aad"] = base64.b64encode(associated_data).decode()
        result = self.call("GenerateDataKey", payload, key_id=key_id)
        return GeneratedDataKey(key_id=key_id, data_key=DataKey(_unb64(result["plaintext"])),
                                wrapped=_unb64(result["ciphertext"]))

    def unwrap_data_key(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> DataKey:
        payload: dict[str, Any] = {"keyid": key_id, "ciphertext": base64.b64encode(wrapped).decode()}
        if associated_data:
            payload["aad"] = base64.b64encode(associated_data).decode()
        plaintext = _unb64(self.call("Decrypt", payload, key_id=key_id)["plaintext"])
        if len(plaintext) != DATA_KEY_SIZE:
            raise InvalidCiphertext()
        return DataKey(plaintext)

    def close(self) -> None:
        self._http.close()


def _unb64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise KmsRequestRejected("the key service answered with invalid base64") from None


def _result(response: httpx.Response, uri: str, key_id: str | None) -> dict[str, Any]:
    try:
        body = response.json()
        code, message = int(body.get("code", 0)), str(body.get("message", ""))
    except (ValueError, TypeError, AttributeError):
        raise KmsUnavailable(uri, f"HTTP {response.status_code}, not an eHSM reply") from None
    if code == 200:
        result = body.get("result")
        return result if isinstance(result, dict) else {}
    if code >= 500 or response.status_code >= 500:
        raise KmsUnavailable(uri, message or f"code {code}")
    if message in ("keyid error", "appid error", "not find this keyid") or "keyid format wrong" in message:
        raise KeyNotFound(key_id or "?", uri)
    if message == "keyid is disabled":
        raise KeyDisabled(key_id or "?", "disabled")
    if message.startswith("Decryption failed"):
        raise InvalidCiphertext()
    if message == "sign error":
        raise AuthenticationFailed(f"{uri}: the server rejected the request signature (check the credentials)")
    if message.startswith("Timestamp"):
        raise ReplayedRequest(f"{uri}: {message} (check the clock)")
    raise KmsRequestRejected(f"{uri}: eHSM code {code}: {message}")
