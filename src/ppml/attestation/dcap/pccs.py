"""Fetching collateral from a PCCS or Intel PCS (API v4).

The URL layout and the issuer-chain headers are drawn in :func:`fetch_from_pccs`; what comes back
is checked exactly as collateral from files is
(:class:`~ppml.attestation.dcap.collateral.Collateral`).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING

from ppml.attestation.dcap._common import _fail
from ppml.attestation.dcap.collateral import Collateral
from ppml.attestation.dcap.tcb import _TCB_INFO_ID_FOR_TEE
from ppml.core.evidence import TEE_SGX, TEE_TDX
from ppml.errors import AttestationFailed

if TYPE_CHECKING:
    import httpx

__all__ = ["fetch_from_pccs"]


def fetch_from_pccs(url: str, fmspc: str | bytes, *, tee: str = TEE_SGX,
                    client: httpx.Client | None = None, timeout: float = 10.0) -> Collateral:
    """Fetch and check the collateral for ``fmspc`` from a PCCS or Intel PCS (API v4).

    ``GET {url}/{sgx|tdx}/certification/v4/tcb?fmspc=…`` and ``…/qe/identity``; the issuer chains
    come URL-encoded in the ``TCB-Info-Issuer-Chain`` and ``SGX-Enclave-Identity-Issuer-Chain``
    headers. Pass ``client`` to choose TLS trust or a transport; the default client verifies TLS
    against the system's CA store.

    Raises:
        AttestationFailed: the service cannot be reached, answers an error or without issuer chain,
            or the collateral does not verify (see :class:`Collateral`).
    """
    import httpx  # only this function needs the network stack; keep it out of verifier imports

    fmspc_hex = fmspc.hex() if isinstance(fmspc, bytes) else fmspc
    if not re.fullmatch(r"[0-9a-fA-F]{12}", fmspc_hex):
        raise ValueError(f"FMSPC must be 6 bytes (12 hex digits), not {fmspc_hex!r}")
    if tee not in _TCB_INFO_ID_FOR_TEE:
        raise ValueError(f"tee must be {TEE_SGX!r} or {TEE_TDX!r}")
    base = f"{url.rstrip('/')}/{tee}/certification/v4"
    owned = client is None
    http = client if client is not None else httpx.Client(timeout=timeout)
    try:
        tcb_response = http.get(f"{base}/tcb", params={"fmspc": fmspc_hex.upper()})
        qe_response = http.get(f"{base}/qe/identity")
    except httpx.HTTPError as exc:
        raise AttestationFailed(f"collateral: PCCS {url} unreachable ({exc})") from exc
    finally:
        if owned:
            http.close()

    def issuer_chain(response: httpx.Response, *headers: str) -> bytes:
        if response.status_code != 200:
            _fail(f"collateral: PCCS {url} answered {response.status_code} for "
                  f"{response.request.url.path}")
        for header in headers:
            value = response.headers.get(header)
            if value:
                return urllib.parse.unquote(value).encode()
        _fail(f"collateral: PCCS {url} sent no {headers[0]} header")

    return Collateral(
        tcb_info=tcb_response.content,
        tcb_info_signing_chain=issuer_chain(tcb_response, "TCB-Info-Issuer-Chain",
                                            "SGX-TCB-Info-Issuer-Chain"),
        qe_identity=qe_response.content,
        qe_identity_signing_chain=issuer_chain(qe_response, "SGX-Enclave-Identity-Issuer-Chain"),
    )
