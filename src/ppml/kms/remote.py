"""Remote KMS clients over HTTPS: the native API (``ppml+https://`` or ``https://``).

Where the secrets come from (never from argv)::

    credentials  JSON {"appid": …, "apikey": …} in a file with mode 0600, named by the URI's
                 ``credentials=`` query parameter or by $PPML_KMS_CREDENTIALS
    CA bundle    the URI's ``ca=`` parameter or $PPML_KMS_CA; else the system trust store

``uri`` (what goes into file headers) is the URI without its query, so no path to a secret is
recorded with the data. TLS certificates are always verified.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from ppml.core import signing
from ppml.core._files import write_private
from ppml.core.keys import DATA_KEY_SIZE, SECRET_ACCESS, DataKey, GeneratedDataKey, KeyInfo
from ppml.errors import (
    AuthenticationFailed,
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    KeyStoreUnreadable,
    KmsRequestRejected,
    KmsUnavailable,
    PermissionDenied,
    PpmlError,
    ReplayedRequest,
    TokenRejected,
    UsageError,
)
from ppml.kms import wire
from ppml.kms.wire import b64decode, b64encode, data_key_of
from ppml.transport import HttpClient, decode

__all__ = ["ClientCredentials", "KmsEndpoint", "RemoteKms", "load_credentials"]

CREDENTIALS_ENV = "PPML_KMS_CREDENTIALS"
CA_ENV = "PPML_KMS_CA"


@dataclasses.dataclass(frozen=True, slots=True)
class ClientCredentials:
    appid: str
    apikey: bytes = dataclasses.field(repr=False)


def load_credentials(path: Path | str) -> ClientCredentials:
    """Read a credentials file; refuse one that others can read or group can write."""
    path = Path(path).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such credentials file") from None
    except OSError as exc:
        raise KeyStoreUnreadable(path, exc.strerror or "cannot open") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        # Group read is tolerated: Kubernetes mounts a 0400 secret as 0440 when fsGroup is set.
        if mode & 0o037:
            raise KeyStoreUnreadable(path, f"permissions {stat.S_IMODE(mode):04o} are too open; run chmod 600")
        try:
            record = json.loads(f.read(16 << 10))
            return ClientCredentials(str(record["appid"]), str(record["apikey"]).encode())
        except (ValueError, KeyError, TypeError):
            raise KeyStoreUnreadable(path, "not a credentials file (JSON with appid and apikey)") from None


def write_credentials(path: Path, appid: str, apikey: str) -> None:
    """Write credentials with mode 0600 (created so; never widened)."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, (json.dumps({"appid": appid, "apikey": apikey}) + "\n").encode())


@dataclasses.dataclass(frozen=True, slots=True)
class KmsEndpoint:
    """A parsed KMS URI: where to connect, how to verify it, whose credentials to use."""

    scheme: str
    base_url: str
    credentials_path: Path | None
    ca_path: Path | None

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{urlsplit(self.base_url).netloc}"

    @classmethod
    def parse(cls, uri: str, environ: Mapping[str, str] | None = None) -> KmsEndpoint:
        environ = os.environ if environ is None else environ
        parts = urlsplit(uri)
        if parts.username or parts.password:
            raise UsageError("put KMS credentials in a file (credentials=PATH), not in the URI")
        if not parts.hostname:
            raise UsageError(f"no host in KMS URI {uri!r}")
        query = parse_qs(parts.query)
        unknown = set(query) - {"credentials", "ca"}
        if unknown:
            raise UsageError(f"unknown KMS URI parameter(s): {', '.join(sorted(unknown))}")
        credentials = query.get("credentials", [environ.get(CREDENTIALS_ENV, "")])[0]
        ca = query.get("ca", [environ.get(CA_ENV, "")])[0]
        return cls(
            scheme=parts.scheme,
            base_url=f"https://{parts.netloc}{parts.path.rstrip('/')}",
            credentials_path=Path(credentials).expanduser() if credentials else None,
            ca_path=Path(ca).expanduser() if ca else None,
        )


_ERRORS: dict[str, type[PpmlError]] = {
    "TokenRejected": TokenRejected,
    "AuthenticationFailed": AuthenticationFailed,
    "ReplayedRequest": ReplayedRequest,
    "PermissionDenied": PermissionDenied,
    "KeyDisabled": KeyDisabled,
    "KmsRequestRejected": KmsRequestRejected,
    "RequestRejected": KmsRequestRejected,
    "KmsUnavailable": KmsUnavailable,
    "ServiceUnavailable": KmsUnavailable,
}


class HttpTransport(HttpClient):
    """The KMS clients' HTTPS transport (verified TLS; faults become ``KmsUnavailable``)."""

    def __init__(self, endpoint: KmsEndpoint, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        super().__init__(endpoint.base_url, uri=endpoint.uri, ca_path=endpoint.ca_path,
                         ca_hint=f"ca=PATH or ${CA_ENV}", transport=transport, timeout=timeout,
                         unavailable=KmsUnavailable)


class AttestationCredential(Protocol):
    """An attested TEE's session (``ppml.tee.session.TeeSession``): its token, and the key that
    opens data keys released to it."""

    @property
    def token(self) -> str: ...

    def decrypt_jwe(self, token: str) -> bytes: ...


class RemoteKms:
    """``KeyManagementService`` over the native ``/v1`` API of ``ppml serve``.

    With ``attestation`` (inside an attested TEE) data keys are requested with the token and
    arrive as JWE to the TEE's key, which keys with a release policy require.
    """

    def __init__(self, endpoint: KmsEndpoint, credentials: ClientCredentials | None = None, *,
                 transport: httpx.BaseTransport | None = None,
                 attestation: AttestationCredential | None = None) -> None:
        if credentials is None:
            if endpoint.credentials_path is None:
                raise UsageError(f"no credentials for {endpoint.uri}: set credentials=PATH or ${CREDENTIALS_ENV}")
            credentials = load_credentials(endpoint.credentials_path)
        self._endpoint = endpoint
        self._credentials = credentials
        self._http = HttpTransport(endpoint, transport=transport)
        self._attestation = attestation

    @classmethod
    def from_uri(cls, uri: str, *, attestation: AttestationCredential | None = None) -> RemoteKms:
        return cls(KmsEndpoint.parse(uri), attestation=attestation)

    @property
    def uri(self) -> str:
        return self._endpoint.uri

    @property
    def appid(self) -> str:
        return self._credentials.appid

    def __repr__(self) -> str:
        return f"RemoteKms({self.uri!r}, appid={self._credentials.appid!r})"

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None,
                *, key_id: str | None = None, attested: bool = False) -> Any:
        body = json.dumps(payload).encode() if payload is not None else b""
        url = httpx.URL(self._endpoint.base_url + path)
        raw_path = url.raw_path.split(b"?", 1)[0].decode("ascii")
        headers = signing.native_headers(self._credentials.appid, self._credentials.apikey, method=method,
                                         path=raw_path, body=body)
        if attested and self._attestation is not None:
            headers[wire.ATTESTATION_HEADER] = self._attestation.token
        if body:
            headers["Content-Type"] = "application/json"
        response = self._http.send(method, path, body=body, headers=headers)
        return _result(response, self.uri, key_id)

    # -- KeyManagementService --

    def create_primary_key(self, *, description: str = "") -> KeyInfo:
        return _key_info(self.request("POST", "/v1/keys", {"description": description}))

    def list_keys(self) -> list[KeyInfo]:
        return [_key_info(k) for k in self.request("GET", "/v1/keys")]

    def generate_data_key(self, key_id: str, *, associated_data: bytes | None = None) -> GeneratedDataKey:
        result = self.request("POST", f"/v1/keys/{_segment(key_id)}/generate-data-key",
                              {"length": DATA_KEY_SIZE, "aad": b64encode(associated_data or b""),
                               "include_plaintext": True}, key_id=key_id, attested=True)
        data_key = DataKey(data_key_of(result, self._attestation, self.uri))
        return GeneratedDataKey(key_id=key_id, data_key=data_key,
                                wrapped=b64decode(result["ciphertext"], "the key service's reply"))

    def unwrap_data_key(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> DataKey:
        result = self.request("POST", f"/v1/keys/{_segment(key_id)}/decrypt",
                              {"ciphertext": b64encode(wrapped), "aad": b64encode(associated_data or b"")},
                              key_id=key_id, attested=True)
        plaintext = data_key_of(result, self._attestation, self.uri)
        if len(plaintext) != DATA_KEY_SIZE:
            raise InvalidCiphertext()
        return DataKey(plaintext)

    # -- operator operations --

    def rotate(self, key_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/keys/{_segment(key_id)}/rotate", key_id=key_id))

    def rewrap(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> bytes:
        result = self.request("POST", f"/v1/keys/{_segment(key_id)}/rewrap",
                              {"ciphertext": b64encode(wrapped), "aad": b64encode(associated_data or b"")},
                              key_id=key_id)
        return b64decode(result["ciphertext"], "the key service's reply")

    def set_enabled(self, key_id: str, enabled: bool) -> dict[str, Any]:
        action = "enable" if enabled else "disable"
        return dict(self.request("POST", f"/v1/keys/{_segment(key_id)}/{action}", key_id=key_id))

    def schedule_deletion(self, key_id: str, *, days: int = 7) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/keys/{_segment(key_id)}/schedule-deletion", {"days": days},
                                 key_id=key_id))

    def describe_key(self, key_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/keys/{_segment(key_id)}", key_id=key_id))

    def enroll(self) -> ClientCredentials:
        result = self.request("POST", "/v1/apps")
        return ClientCredentials(result["appid"], result["apikey"].encode())

    def close(self) -> None:
        self._http.close()


def enroll_open(endpoint: KmsEndpoint, *, transport: httpx.BaseTransport | None = None) -> ClientCredentials:
    """Enroll without credentials, against a server started with ``--open-enrollment``."""
    http = HttpTransport(endpoint, transport=transport)
    try:
        result = _result(http.send("POST", "/v1/apps"), endpoint.uri, None)
    finally:
        http.close()
    return ClientCredentials(result["appid"], result["apikey"].encode())


def _segment(key_id: str) -> str:
    """A key id as one escaped URL path segment (ids come from file headers: anything goes)."""
    if not key_id or len(key_id) > 128 or key_id in (".", ".."):
        raise KeyNotFound(key_id)
    return quote(key_id, safe="")


def _result(response: httpx.Response, uri: str, key_id: str | None) -> Any:
    if 300 <= response.status_code < 400:
        raise KmsRequestRejected(f"{uri}: unexpected redirect (HTTP {response.status_code})")
    reply = decode(response)
    if response.status_code < 400:
        if reply.body is None:
            raise KmsUnavailable(uri, f"HTTP {response.status_code} without a JSON body")
        return reply.body
    kind, message = reply.error, reply.message
    if response.status_code == 404 or kind == "KeyNotFound":
        raise KeyNotFound(key_id or "?", uri)
    if kind == "InvalidCiphertext":
        raise InvalidCiphertext()
    error = _ERRORS.get(kind)
    if error is KmsUnavailable or response.status_code >= 500:
        raise KmsUnavailable(uri, message or f"HTTP {response.status_code}")
    if error is KeyDisabled:
        raise KeyDisabled(key_id or "?", message.rsplit(" is ", 1)[-1] if " is " in message else "disabled")
    if error is TokenRejected:
        raise TokenRejected(message.removeprefix("attestation failed: "))
    if error is not None:
        raise error(message)
    raise KmsRequestRejected(f"{uri}: HTTP {response.status_code}: {message}")


def _key_info(record: dict[str, Any]) -> KeyInfo:
    from datetime import datetime

    return KeyInfo(key_id=record["key_id"], created=datetime.fromisoformat(record["created"]),
                   enabled=record["state"] == "Enabled", description=record.get("description", ""))


__all__ += ["SECRET_ACCESS", "enroll_open", "write_credentials"]
