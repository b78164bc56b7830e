"""Evidence from the SIMULATED TEE: the fields of an SGX report, signed by a software key.

There is no hardware here and so no protection of data in use: the simulated TEE exists so that
the whole workflow runs and is tested on any machine. Its evidence says so in its magic, every
verifier labels its claims ``simulated`` with TCB status ``Simulated``, and no policy accepts it
unless the policy sets ``allow_simulated``.

Layout (version 1; integers little-endian as in SGX structures, except the signature length)::

    offset  size  field
         0     8  magic                 b"PPMLSIM1"
         8     2  version               1
        10     2  reserved              0
        12   384  report body           the SGX REPORTBODY layout:
                      +0   16 cpusvn          +16   4 miscselect     +48  16 attributes
                      +64  32 mr_enclave      +128 32 mr_signer      +256  2 isv_prod_id
                      +258  2 isv_svn         +320 64 report_data    (all else zero)
       396    65  platform public key   P-256, uncompressed SEC1 point
       461     2  signature length L    big-endian, 64 ≤ L ≤ 80
       463     L  signature             ECDSA-P256-SHA256 (DER) over bytes [0, 461)

Attributes bit 1 (value 2 in the first byte) is SGX's DEBUG flag.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ppml.core.evidence import REPORT_DATA_SIZE, TEE_SIMULATED, Claims
from ppml.errors import AttestationFailed, QuoteFormatError

__all__ = ["MAGIC", "SimulatedReport", "read_unverified_report", "sign_report", "verify_report"]

MAGIC: Final = b"PPMLSIM1"
VERSION: Final = 1
BODY_SIZE: Final = 384
_PREFIX = struct.Struct("<8sHH")
_KEY_OFFSET: Final = _PREFIX.size + BODY_SIZE
_KEY_SIZE: Final = 65
_SIGNED_END: Final = _KEY_OFFSET + _KEY_SIZE
_MAX_SIGNATURE: Final = 80
ATTRIBUTE_DEBUG: Final = 0x02


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedReport:
    mr_enclave: bytes
    mr_signer: bytes
    report_data: bytes
    isv_prod_id: int = 0
    isv_svn: int = 0
    debug: bool = False

    def __post_init__(self) -> None:
        if len(self.mr_enclave) != 32 or len(self.mr_signer) != 32:
            raise ValueError("mr_enclave and mr_signer have 32 bytes")
        if len(self.report_data) != REPORT_DATA_SIZE:
            raise ValueError("report data has 64 bytes")

    def body(self) -> bytes:
        body = bytearray(BODY_SIZE)
        body[48] = ATTRIBUTE_DEBUG if self.debug else 0
        body[64:96] = self.mr_enclave
        body[128:160] = self.mr_signer
        struct.pack_into("<HH", body, 256, self.isv_prod_id, self.isv_svn)
        body[320:384] = self.report_data
        return bytes(body)

    @classmethod
    def from_body(cls, body: bytes) -> SimulatedReport:
        isv_prod_id, isv_svn = struct.unpack_from("<HH", body, 256)
        return cls(mr_enclave=bytes(body[64:96]), mr_signer=bytes(body[128:160]),
                   report_data=bytes(body[320:384]), isv_prod_id=isv_prod_id, isv_svn=isv_svn,
                   debug=bool(body[48] & ATTRIBUTE_DEBUG))

    def claims(self) -> Claims:
        return Claims(
            tee=TEE_SIMULATED, simulated=True, tcb_status="Simulated", debug=self.debug,
            mr_enclave=self.mr_enclave.hex(), mr_signer=self.mr_signer.hex(),
            isv_prod_id=self.isv_prod_id, isv_svn=self.isv_svn, report_data=self.report_data.hex(),
        )


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def sign_report(report: SimulatedReport, platform_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Produce simulated evidence for ``report`` with the simulated platform's key."""
    if not isinstance(platform_key.curve, ec.SECP256R1):
        raise ValueError("the simulated platform key is P-256")
    signed = _PREFIX.pack(MAGIC, VERSION, 0) + report.body() + _point(platform_key.public_key())
    signature = platform_key.sign(signed, ec.ECDSA(hashes.SHA256()))
    return signed + struct.pack(">H", len(signature)) + signature


def _split(evidence: bytes) -> tuple[SimulatedReport, bytes]:
    """The report and the platform key point of well-formed evidence (layout checked only)."""
    if len(evidence) < _SIGNED_END + 2 or len(evidence) > _SIGNED_END + 2 + _MAX_SIGNATURE:
        raise QuoteFormatError("simulated evidence has the wrong length")
    magic, version, _ = _PREFIX.unpack_from(evidence)
    if magic != MAGIC or version != VERSION:
        raise QuoteFormatError("not simulated-TEE evidence (magic or version)")
    (length,) = struct.unpack_from(">H", evidence, _SIGNED_END)
    if len(evidence) != _SIGNED_END + 2 + length:
        raise QuoteFormatError("simulated evidence signature length is inconsistent")
    report = SimulatedReport.from_body(evidence[_PREFIX.size : _KEY_OFFSET])
    return report, bytes(evidence[_KEY_OFFSET:_SIGNED_END])


def read_unverified_report(evidence: bytes) -> tuple[SimulatedReport, bytes]:
    """The report and platform public key (uncompressed SEC1 point) that simulated evidence
    *states*, with its layout checked and its signature NOT verified: for display only.

    Raises:
        QuoteFormatError: not well-formed simulated evidence.
    """
    return _split(evidence)


def verify_report(evidence: bytes, trusted_platform_keys: list[ec.EllipticCurvePublicKey]) -> SimulatedReport:
    """Check the layout, that a trusted platform key signed it, and return the report."""
    report, point = _split(evidence)
    trusted = next((k for k in trusted_platform_keys if _point(k) == point), None)
    if trusted is None:
        raise AttestationFailed("simulated evidence from a platform key this service does not trust")
    try:
        trusted.verify(evidence[_SIGNED_END + 2 :], evidence[:_SIGNED_END], ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AttestationFailed("simulated evidence signature invalid") from None
    return report
