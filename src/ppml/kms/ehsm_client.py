"""``ehsm+https://``: a ``KeyManagementService`` client for eHSM-KMS servers (and ``ppml serve``).

Speaks eHSM's wire protocol (docs/ehsm-api.md): signed ``POST /ehsm?Action=…`` with a fresh
13-digit millisecond timestamp per request. eHSM accepts each timestamp once per app, so the
client never reuses one: it waits for the next millisecond when two requests would share it.
Unlike eHSM's own clients, this one verifies the server's TLS certificate, and it signs a random
``nonce`` into every request (current eHSM and ``ppml serve`` accept it; eHSM revisions before
the nonce field would reject such signatures); the nonce starts with ``<Action>.`` so that
``ppml serve`` can refuse the signed body under any other action. eHSM keys carry no
description: ``list_keys`` shows descriptions as empty. Inside an attested TEE (``attestation=``)
data-key requests carry the session's token, exactly as the native client's do, and the data key
comes back only as a JWE to the TEE's key (a ``ppml serve`` extension; eHSM itself has no such
release and answers as it always does).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from typing import Any

import httpx

from ppml.core import signing
from ppml.core.keys import DATA_KEY_SIZE, DataKey, GeneratedDataKey, KeyInfo
from ppml.errors import (
    AuthenticationFailed,
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    KmsRequestRejected,
    KmsUnavailable,
    ReplayedRequest,
    TokenRejected,
    UsageError,
)
from ppml.kms import wire
from ppml.kms.remote import (
    AttestationCredential,
    ClientCredentials,
    HttpTransport,
    KmsEndpoint,
    load_credentials,
)
from ppml.kms.wire import b64decode, b64encode, data_key_of
from ppml.transport import decode

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
                 keyspec: str = "EH_AES_GCM_256", transport: httpx.BaseTransport | None = None,
                 attestation: AttestationCredential | None = None) -> None:
        if credentials is None:
            if endpoint.credentials_path is None:
                raise UsageError(f"no credentials for {endpoint.uri}: set credentials=PATH or $PPML_KMS_CREDENTIALS")
            credentials = load_credentials(endpoint.credentials_path)
        self._endpoint = endpoint
        self._credentials = credentials
        self._keyspec = keyspec
        self._http = HttpTransport(endpoint, transport=transport)
        self._clock = _Clock()
        self._attestation = attestation

    @classmethod
    def from_uri(cls, uri: str, *, attestation: AttestationCredential | None = None) -> EhsmKms:
        return cls(KmsEndpoint.parse(uri), attestation=attestation)

    @property
    def uri(self) -> str:
        return self._endpoint.uri

    def __repr__(self) -> str:
        return f"EhsmKms({self.uri!r}, appid={self._credentials.appid!r})"

    def call(self, action: str, payload: dict[str, Any] | None = None, *, key_id: str | None = None,
             attested: bool = False) -> dict[str, Any]:
        """One eHSM action. With ``attested`` and an attestation session, the request carries the
        session's token (``ppml serve`` then releases data keys only as JWE to the TEE's key)."""
        if key_id is not None and not _UUID.fullmatch(key_id):
            raise KeyNotFound(key_id, self.uri)  # eHSM key ids are lower-case UUIDs; nothing else exists
        timestamp = self._clock.next()
        # A random nonce (signed, as current eHSM does) keeps two clients of one app that pick the
        # same millisecond from rejecting each other as replays; its "<Action>." prefix binds the
        # signed body to this action (eHSM's signature does not cover Action).
        nonce = f"{action}.{secrets.token_hex(16)}"[-64:]
        body: dict[str, Any] = {"appid": self._credentials.appid, "nonce": nonce, "timestamp": timestamp}
        if payload is not None:
            body["payload"] = payload
        body["sign"] = signing.ehsm_sign(self._credentials.apikey, appid=self._credentials.appid,
                                         payload=payload, timestamp=timestamp, nonce=nonce)
        headers = {"Content-Type": "application/json"}
        if attested and self._attestation is not None:
            headers[wire.ATTESTATION_HEADER] = self._attestation.token
        response = self._http.send("POST", "/ehsm", body=json.dumps(body).encode(), headers=headers,
                                   params={"Action": action})
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
            payload["aad"] = b64encode(associated_data)
        result = self.call("GenerateDataKey", payload, key_id=key_id, attested=True)
        data_key = DataKey(data_key_of(result, self._attestation, self.uri))
        return GeneratedDataKey(key_id=key_id, data_key=data_key,
                                wrapped=b64decode(result["ciphertext"], "the key service's reply"))

    def unwrap_data_key(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> DataKey:
        payload: dict[str, Any] = {"keyid": key_id, "ciphertext": b64encode(wrapped)}
        if associated_data:
            payload["aad"] = b64encode(associated_data)
        result = self.call("Decrypt", payload, key_id=key_id, attested=True)
        plaintext = data_key_of(result, self._attestation, self.uri)
        if len(plaintext) != DATA_KEY_SIZE:
            raise InvalidCiphertext()
        return DataKey(plaintext)

    def close(self) -> None:
        self._http.close()


def _result(response: httpx.Response, uri: str, key_id: str | None) -> dict[str, Any]:
    reply = decode(response)
    try:
        code = int(reply.body.get("code", 0)) if reply.is_json_object else None
    except (ValueError, TypeError):
        code = None
    if code is None:
        raise KmsUnavailable(uri, f"HTTP {response.status_code}, not an eHSM reply")
    message = reply.message
    if code == 200:
        result = reply.body.get("result")
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
    if message.startswith(wire.EHSM_TOKEN_REJECTED):
        raise TokenRejected(message.removeprefix(wire.EHSM_TOKEN_REJECTED))
    if message.startswith("Timestamp"):
        raise ReplayedRequest(f"{uri}: {message} (check the clock)")
    raise KmsRequestRejected(f"{uri}: eHSM code {code}: {message}")
