"""HTTPS clients for ppml's services: verified TLS always, transport faults mapped to one error.

Shared by the KMS clients and the attestation client (which must not import each other).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from ppml.errors import KmsUnavailable

__all__ = ["HttpClient", "client_context"]


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A verifying client context: the given CA bundle, else the system's trust store."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class HttpClient:
    """An httpx client with verified TLS; transport faults become ``KmsUnavailable(uri, reason)``."""

    def __init__(self, base_url: str, *, uri: str, ca_path: Path | None, ca_hint: str = "ca=PATH",
                 transport: httpx.BaseTransport | None = None, timeout: float = 30.0) -> None:
        self.uri = uri
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
            raise KmsUnavailable(self.uri, self._reason(exc)) from None

    def _reason(self, exc: httpx.TransportError) -> str:
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return f"TLS certificate not trusted ({text.split(']')[-1].strip() or text}); pass {self._ca_hint}"
        return text

    def close(self) -> None:
        self.client.close()
