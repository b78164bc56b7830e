"""Intel's public trust anchors for DCAP attestation, pinned.

**Intel SGX Root CA** — the root of every PCK certificate chain embedded in SGX and TDX quotes,
and of the TCB Signing certificate that signs the TCB Info and QE Identity collateral.

- Subject and issuer ``CN=Intel SGX Root CA, O=Intel Corporation, L=Santa Clara, ST=CA, C=US``,
  serial ``22650cd65a9d3489f383b49552bf501b392706ac``, valid 2018-05-21 10:45:10 to
  2049-12-31 23:59:59 UTC, P-256 key.
- SHA-256 fingerprint of the DER:
  ``44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3``.
- Published by Intel at
  https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.pem;
  the copy below was taken from public code (edgelesssys/go-tdx-qpl ``verification/pcs/pcs.go``,
  Phala-Network/dcap-qvl ``sample/*_collateral.json``) and is byte-for-byte the root that ends the
  PCK chains of the three real quotes in ``tests/vectors/attestation/`` (three different
  platforms). google/asylo pins an earlier issue of the same key (valid 2018–2033).

**Intel SGX TCB Signing** certificate — signs TCB Info and QE Identity documents. PCS/PCCS send
it in the ``TCB-Info-Issuer-Chain`` / ``SGX-Enclave-Identity-Issuer-Chain`` response headers;
collateral saved to files has lost them, so it is pinned here for that case.

- Subject ``CN=Intel SGX TCB Signing, O=Intel Corporation, L=Santa Clara, ST=CA, C=US``, issuer the
  root above, serial ``7e3882d5fb55294a40498e458403e91491bdf455``, valid 2025-05-06 09:25:00 to
  2032-05-06 09:25:00 UTC (Intel re-issued it in May 2025; the previous issue expired 2025-05-21).
- SHA-256 fingerprint of the DER:
  ``c0575e76d0303b61d09cde8cbdb70db34a74f38318300d7c0e6ba8cf4bf45aea``.
- Taken from the ``tcb_info_issuer_chain`` of Phala-Network/dcap-qvl
  ``sample/tdx_quote_td15ex_collateral.json`` (as served by Intel PCS). Its signature verifies under
  the root above, and its key verifies the signatures of the real ``tcbInfo.json`` and
  ``enclaveIdentity.json`` in ``tests/vectors/attestation/``.

The fingerprints are checked when the certificates are first loaded, so an edit to a PEM below
fails loudly instead of silently moving the trust anchor.
"""

from __future__ import annotations

import functools
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

__all__ = [
    "INTEL_SGX_ROOT_CA_PEM",
    "INTEL_SGX_ROOT_CA_SHA256",
    "INTEL_SGX_TCB_SIGNING_PEM",
    "INTEL_SGX_TCB_SIGNING_SHA256",
    "intel_sgx_root_ca",
    "intel_tcb_signing_chain",
]

INTEL_SGX_ROOT_CA_SHA256: Final = (
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)

INTEL_SGX_ROOT_CA_PEM: Final = b"""-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
"""

INTEL_SGX_TCB_SIGNING_SHA256: Final = (
    "c0575e76d0303b61d09cde8cbdb70db34a74f38318300d7c0e6ba8cf4bf45aea"
)

INTEL_SGX_TCB_SIGNING_PEM: Final = b"""-----BEGIN CERTIFICATE-----
MIICjTCCAjKgAwIBAgIUfjiC1ftVKUpASY5FhAPpFJG99FUwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTI1MDUwNjA5MjUwMFoXDTMyMDUwNjA5MjUwMFowbDEeMBwG
A1UEAwwVSW50ZWwgU0dYIFRDQiBTaWduaW5nMRowGAYDVQQKDBFJbnRlbCBDb3Jw
b3JhdGlvbjEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMQswCQYD
VQQGEwJVUzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABENFG8xzydWRfK92bmGv
P+mAh91PEyV7Jh6FGJd5ndE9aBH7R3E4A7ubrlh/zN3C4xvpoouGlirMba+W2lju
ypajgbUwgbIwHwYDVR0jBBgwFoAUImUM1lqdNInzg7SVUr9QGzknBqwwUgYDVR0f
BEswSTBHoEWgQ4ZBaHR0cHM6Ly9jZXJ0aWZpY2F0ZXMudHJ1c3RlZHNlcnZpY2Vz
LmludGVsLmNvbS9JbnRlbFNHWFJvb3RDQS5kZXIwHQYDVR0OBBYEFH44gtX7VSlK
QEmORYQD6RSRvfRVMA4GA1UdDwEB/wQEAwIGwDAMBgNVHRMBAf8EAjAAMAoGCCqG
SM49BAMCA0kAMEYCIQDdmmRuAo3qCO8TC1IoJMITAoOEw4dlgEBHzSz1TuMSTAIh
AKVTqOkt59+co0O3m3hC+v5Fb00FjYWcgeu3EijOULo5
-----END CERTIFICATE-----
"""


def _load_pinned(pem: bytes, sha256: str) -> x509.Certificate:
    certificate = x509.load_pem_x509_certificate(pem)
    if certificate.fingerprint(hashes.SHA256()).hex() != sha256:
        raise RuntimeError("a pinned Intel certificate does not match its recorded fingerprint")
    return certificate


@functools.cache
def intel_sgx_root_ca() -> x509.Certificate:
    """The pinned Intel SGX Root CA certificate (fingerprint checked)."""
    return _load_pinned(INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SHA256)


@functools.cache
def _intel_tcb_signing() -> x509.Certificate:
    return _load_pinned(INTEL_SGX_TCB_SIGNING_PEM, INTEL_SGX_TCB_SIGNING_SHA256)


def intel_tcb_signing_chain() -> list[x509.Certificate]:
    """``[Intel SGX TCB Signing, Intel SGX Root CA]``: the issuer chain of Intel's TCB Info and QE
    Identity documents, for collateral loaded from files without their PCS response headers."""
    return [_intel_tcb_signing(), intel_sgx_root_ca()]
