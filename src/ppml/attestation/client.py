"""Client for the attestation service's native API (used by the TEE runtime and operators)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ppml.core.evidence import Evidence
from ppml.errors import AttestationFailed, PolicyNotFound, ServiceUnavailable, UsageError
from ppml.transport import HttpClient, decode

__all__ = ["AttestationClient"]

CA_ENV = "PPML_AS_CA"


class AttestationClient:
    """``https://HOST:PORT[?ca=FILE]`` of an attestation service (``ppml serve``)."""

    def __init__(self, url: str, *, ca_path: Path | None = None, transport: httpx.BaseTransport | None = None,
                 signer: Any = None) -> None:
        import os

        parts = urlsplit(url)
        if parts.scheme not in ("https", "ppml+https") or not parts.hostname:
            raise UsageError(f"attestation service URL must be https://HOST:PORT, not {url!r}")
        query = parse_qs(parts.query)
        ca = query.get("ca", [str(ca_path) if ca_path else os.environ.get(CA_ENV, "")])[0]
        self.base_url = f"https://{parts.netloc}"
        self.uri = self.base_url
        self._http = HttpClient(self.base_url, uri=self.uri, ca_path=Path(ca) if ca else None,
                                ca_hint=f"?ca=PATH or ${CA_ENV}", transport=transport)
        #: Optional callable(method, path, body) -> headers, for authenticated calls.
        self._signer = signer

    def _json(self, method: str, path: str, payload: Any = None, *, auth: bool = False) -> Any:
        body = json.dumps(payload).encode() if payload is not None else b""
        headers = {"Content-Type": "application/json"} if body else {}
        if auth:
            if self._signer is None:
                raise UsageError("this call needs app credentials")
            headers.update(self._signer(method, path, body))
        response = self._http.send(method, path, body=body, headers=headers)
        reply = decode(response)
        if not reply.is_json_object:
            raise ServiceUnavailable(self.uri, f"HTTP {response.status_code}, not JSON")
        data = reply.body
        if response.status_code >= 500:
            raise ServiceUnavailable(self.uri, reply.message or str(response.status_code))
        if response.status_code == 404 and reply.error == "PolicyNotFound":
            raise PolicyNotFound(path.rsplit("/", 1)[-1])
        if response.status_code >= 400:
            raise AttestationFailed(str(data.get("reason") or reply.message or f"HTTP {response.status_code}"))
        return data

    def nonce(self) -> str:
        return str(self._json("GET", "/v1/attestation/nonce")["nonce"])

    def attest(self, evidence: Evidence, *, nonce: str, runtime_data: dict[str, Any],
               policy_ids: list[str]) -> dict[str, Any]:
        payload = {"evidence": {"tee": evidence.tee, "data": base64.b64encode(evidence.data).decode()},
                   "nonce": nonce, "runtime_data": runtime_data, "policy_ids": policy_ids}
        return dict(self._json("POST", "/v1/attestation/attest", payload))

    def register_policy(self, policy: dict[str, Any]) -> str:
        return str(self._json("POST", "/v1/attestation/policies", policy, auth=True)["policy_id"])

    def verify(self, evidence: Evidence, *, policy_id: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"evidence": {"tee": evidence.tee, "data": base64.b64encode(evidence.data).decode()}}
        if policy_id:
            payload["policy_id"] = policy_id
        return dict(self._json("POST", "/v1/attestation/verify", payload, auth=True))

    def jwks(self) -> dict[str, Any]:
        return dict(self._json("GET", "/.well-known/jwks.json"))

    def close(self) -> None:
        self._http.close()
