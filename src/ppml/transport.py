"""HTTPS clients for ppml's services: verified TLS always, transport faults mapped to one error,
and replies decoded in one place (:func:`decode`) for every client.

Shared by the KMS clients and the attestation client (which must not import each other).
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any

import httpx

from ppml.errors import ServiceUnavailable

__all__ = ["HttpClient", "Reply", "client_context", "decode"]


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """A service's reply, decoded once for every client."""

    status: int
    #: The JSON body, or None when the body is not JSON.
    body: Any
    #: ``error`` of a JSON error body (the native API's error name), else "".
    error: str
    #: ``message`` of a JSON body, else the start of the raw body (for error messages).
    message: str

    @property
    def is_json_object(self) -> bool:
        return isinstance(self.body, dict)


def decode(response: httpx.Response) -> Reply:
    """Decode ``response`` (JSON or not) without raising."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error, message = str(body.get("error", "") or ""), str(body.get("message", "") or "")
    else:
        error, message = "", response.text[:200] if body is None else ""
    return Reply(response.status_code, body, error, message)


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A verifying client context: the given CA bundle, else the system's trust store."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class HttpClient:
    """An httpx client with verified TLS; transport faults become ``unavailable(uri, reason)``
    (``ServiceUnavailable``, or a service's own leaf of it)."""

    def __init__(self, base_url: str, *, uri: str, ca_path: Path | None, ca_hint: str = "ca=PATH",
                 transport: httpx.BaseTransport | None = None, timeout: float = 30.0,
                 unavailable: type[ServiceUnavailable] = ServiceUnavailable) -> None:
        self.uri = uri
        self._unavailable = unavailable
        self._ca_hint = ca_hint
        self.client = httpx.Client(
            base_url=base_url, verify=client_context(ca_path), timeout=timeout, transport=transport,
            headers={"User-Agent": "ppml/1"},
        )

    def send(self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
             params: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self.client.request(method, path, content=body or None, headers=headers, params=params)
        except httpx.TransportError as exc:
            raise self._unavailable(self.uri, self._reason(exc)) from None

    def _reason(self, exc: httpx.TransportError) -> str:
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return f"TLS certificate not trusted ({text.split(']')[-1].strip() or text}); pass {self._ca_hint}"
        return text

    def close(self) -> None:
        self.client.close()
