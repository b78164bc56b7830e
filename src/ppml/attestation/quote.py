"""Parsers for Intel DCAP quotes: SGX ECDSA quote v3, TDX quote v4 and v5.

A quote is what a TEE hands out as evidence: a header, a report body (the measurements of the
enclave or trust domain, and 64 bytes of caller data), and signature data that chains the body to
Intel (attestation key → Quoting Enclave report → PCK certificate → Intel SGX Root CA). This module
only *reads* the bytes; :mod:`ppml.attestation.dcap` checks the signatures.

All integers are little-endian. Every length is checked against what is left before anything is
sliced, and every length-delimited part of the quote (signature data, certification data) must be
consumed exactly: any malformed input raises :class:`~ppml.errors.QuoteFormatError` and nothing
else. Sources for the layouts: Intel "SGX ECDSA Quote Library API" (quote v3), Intel "TDX DCAP
Quoting Library API" (quote v4/v5), and the ``Quote`` parser of Intel's
SGX-TDX-DCAP-QuoteVerificationLibrary.

**Trailing bytes.** The quote proper ends with its signature data: header ‖ body ‖ 4-byte
signature data length L ‖ L bytes. Quotes often arrive with more after that: TDX guests hand them
out in fixed-size buffers (zero padding after the quote) and some tools append bytes of their own.
What follows the quote is covered by no signature, so it is ignored: it is never parsed, never
influences a claim, and is only counted (``trailing_bytes`` on the quote and in its claims) so a
reader can see it was there. The whole input, trailing bytes included, is still bounded by
:data:`MAX_QUOTE_SIZE`.

Quote v3 (SGX)::

    offset  size  field
    ------  ----  ---------------------------------------------------------------
         0    48  header                  (see QuoteHeader)
        48   384  SGX report body         (see SgxReportBody; MRENCLAVE at quote byte 112,
                                           MRSIGNER at 176, REPORT_DATA at 368)
       432     4  signature data length L
       436     L  ECDSA signature data:
                     0    64  quote signature     ECDSA P-256 r‖s over bytes 0..431
                    64    64  attestation key     P-256 public key x‖y
                   128   384  QE report           SGX report body of the Quoting Enclave
                   512    64  QE report signature ECDSA P-256 r‖s by the PCK key
                   576   2+a  QE auth data        uint16 length a, then a bytes
                     .   2+4+c certification data uint16 type, uint32 size c, c bytes
                                                  (type 5: PEM PCK certificate chain)

Quote v4 (TDX)::

         0    48  header                  (tee type 0x81)
        48   584  TD report body 1.0      (see TdReportBody; MRTD at quote byte 184,
                                           RTMR0 at 376, REPORTDATA at 568)
       632     4  signature data length L
       636     L  ECDSA signature data:
                     0    64  quote signature     ECDSA P-256 r‖s over bytes 0..631
                    64    64  attestation key
                   128  2+4+n certification data  type 6 (QE report certification data),
                                                  size n, then n bytes:
                                 0   384  QE report
                               384    64  QE report signature
                               448   2+a  QE auth data
                                 .  2+4+c certification data type 5: PEM PCK chain

Quote v5 (TDX) puts a body descriptor between header and body; the quote signature covers
header, descriptor and body::

         0    48  header
        48     2  body type               2 = TD report 1.0 (584 bytes), 3 = TD report 1.5 (648)
        50     4  body size B             must equal the size of that body type
        54     B  TD report body          (1.5 appends TEE_TCB_SVN2 and MRSERVICETD)
    54 + B     4  signature data length, then the same signature data as v4
"""

from __future__ import annotations

import dataclasses
import struct
from typing import ClassVar, Final

from ppml.core.evidence import TEE_SGX, TEE_TDX, Claims
from ppml.errors import QuoteFormatError

__all__ = [
    "ATTESTATION_KEY_TYPE_ECDSA_P256",
    "CERTIFICATION_DATA_PCK_CHAIN",
    "CERTIFICATION_DATA_QE_REPORT",
    "MAX_QUOTE_SIZE",
    "UNVERIFIED_TCB_STATUS",
    "QuoteHeader",
    "QuoteSignatureData",
    "SgxQuote",
    "SgxReportBody",
    "TdReportBody",
    "TdxQuote",
    "parse_quote",
]

#: Larger input (trailing bytes included) is refused before it is looked at: real quotes are
#: about 5 KiB, and Linux's tdx-guest driver hands them out in buffers of 16 KiB.
MAX_QUOTE_SIZE: Final = 64 * 1024
#: The only attestation key type ppml verifies: ECDSA-256-with-P-256.
ATTESTATION_KEY_TYPE_ECDSA_P256: Final = 2
#: Certification data type 5: the PCK leaf certificate, intermediate CA and root, as PEM.
CERTIFICATION_DATA_PCK_CHAIN: Final = 5
#: Certification data type 6: QE report, its signature and auth data, then nested type 5 data.
CERTIFICATION_DATA_QE_REPORT: Final = 6
#: What :meth:`SgxQuote.to_claims` puts in ``tcb_status`` when no verifier has filled it in.
UNVERIFIED_TCB_STATUS: Final = "Unverified"

TEE_TYPE_SGX: Final = 0x00000000
TEE_TYPE_TDX: Final = 0x00000081
HEADER_SIZE: Final = 48
SGX_REPORT_BODY_SIZE: Final = 384
TD_REPORT_BODY_10_SIZE: Final = 584
TD_REPORT_BODY_15_SIZE: Final = 648
BODY_TYPE_TD_REPORT_10: Final = 2
BODY_TYPE_TD_REPORT_15: Final = 3
_ECDSA_SIGNATURE_SIZE = 64
_ECDSA_PUBLIC_KEY_SIZE = 64
_TD_BODY_SIZES = {BODY_TYPE_TD_REPORT_10: TD_REPORT_BODY_10_SIZE,
                  BODY_TYPE_TD_REPORT_15: TD_REPORT_BODY_15_SIZE}


class _Reader:
    """Reads a byte string front to back; every read is bounds-checked first."""

    __slots__ = ("_data", "_end", "_offset", "_what")

    def __init__(self, data: bytes, what: str, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._offset = start
        self._end = len(data) if end is None else end
        self._what = what

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def remaining(self) -> int:
        return self._end - self._offset

    def take(self, size: int, field: str) -> bytes:
        if size < 0 or size > self.remaining:
            raise QuoteFormatError(
                f"{self._what} truncated: {field} needs {size} bytes at offset {self._offset}, "
                f"{self.remaining} left"
            )
        chunk = self._data[self._offset:self._offset + size]
        self._offset += size
        return chunk

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")

    def sub(self, size: int, what: str) -> _Reader:
        """A reader over the next ``size`` bytes, which this reader then skips."""
        if size < 0 or size > self.remaining:
            raise QuoteFormatError(
                f"{self._what}: {what} claims {size} bytes at offset {self._offset}, "
                f"{self.remaining} left"
            )
        reader = _Reader(self._data, what, self._offset, self._offset + size)
        self._offset += size
        return reader

    def expect_end(self) -> None:
        if self.remaining:
            raise QuoteFormatError(f"{self._what}: {self.remaining} unexpected bytes at the end")


def _hex(data: bytes) -> str:
    return data.hex()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QuoteHeader:
    """The 48-byte quote header.

    ::

        offset  size  field
             0     2  version             3, 4 or 5
             2     2  attestation key     2 = ECDSA-256-with-P-256 (the only one accepted)
             4     4  TEE type            v4/v5: 0x00 SGX, 0x81 TDX; v3: reserved, must be 0
             8     2  v3: QE SVN; v4/v5: reserved
            10     2  v3: PCE SVN; v4/v5: reserved
            12    16  QE vendor id        939a7233f79c4ca9940a0db3957f0607 for Intel's QE
            28    20  user data           first 16 bytes: the platform's QE id
    """

    version: int
    attestation_key_type: int
    tee_type: int
    reserved: bytes  # bytes 8..11: QE SVN and PCE SVN in v3, reserved in v4/v5
    qe_vendor_id: bytes
    user_data: bytes
    raw: bytes = dataclasses.field(repr=False)

    @classmethod
    def parse(cls, reader: _Reader) -> QuoteHeader:
        raw = reader.take(HEADER_SIZE, "header")
        version, key_type, tee_type = struct.unpack_from("<HHI", raw, 0)
        if version not in (3, 4, 5):
            raise QuoteFormatError(f"unsupported quote version {version}")
        if key_type != ATTESTATION_KEY_TYPE_ECDSA_P256:
            raise QuoteFormatError(f"unsupported attestation key type {key_type}")
        if version == 3 and tee_type != TEE_TYPE_SGX:
            raise QuoteFormatError(f"quote v3 with TEE type {tee_type:#x}: v3 is SGX only")
        if version >= 4 and tee_type != TEE_TYPE_TDX:
            raise QuoteFormatError(
                f"unsupported TEE type {tee_type:#x} in quote v{version} (ppml reads TDX 0x81)"
            )
        return cls(
            version=version, attestation_key_type=key_type, tee_type=tee_type,
            reserved=raw[8:12], qe_vendor_id=raw[12:28], user_data=raw[28:48], raw=raw,
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SgxReportBody:
    """An SGX enclave report body (384 bytes): the quoted enclave's, or the Quoting Enclave's.

    ::

        offset  size  field                      quote offset (v3 enclave body)
             0    16  CPUSVN
            16     4  MISCSELECT
            20    12  reserved
            32    16  ISVEXTPRODID
            48    16  ATTRIBUTES                 flags (8) ‖ XFRM (8); flags bit 1 = DEBUG
            64    32  MRENCLAVE                  112
            96    32  reserved
           128    32  MRSIGNER                   176
           160    32  reserved
           192    64  CONFIGID
           256     2  ISVPRODID
           258     2  ISVSVN
           260     2  CONFIGSVN
           262    42  reserved
           304    16  ISVFAMILYID
           320    64  REPORTDATA                 368
    """

    cpu_svn: bytes
    misc_select: bytes
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes
    raw: bytes = dataclasses.field(repr=False)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SgxReportBody:
        if len(raw) != SGX_REPORT_BODY_SIZE:
            raise QuoteFormatError(f"SGX report body must be {SGX_REPORT_BODY_SIZE} bytes")
        isv_prod_id, isv_svn, config_svn = struct.unpack_from("<HHH", raw, 256)
        return cls(
            cpu_svn=raw[0:16], misc_select=raw[16:20], isv_ext_prod_id=raw[32:48],
            attributes=raw[48:64], mr_enclave=raw[64:96], mr_signer=raw[128:160],
            config_id=raw[192:256], isv_prod_id=isv_prod_id, isv_svn=isv_svn,
            config_svn=config_svn, isv_family_id=raw[304:320], report_data=raw[320:384], raw=raw,
        )

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.DEBUG (flags bit 1): the enclave's memory can be read by a debugger."""
        return bool(self.attributes[0] & 0x02)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TdReportBody:
    """A TDX TD report body: 584 bytes (TD 1.0) or 648 bytes (TD 1.5).

    ::

        offset  size  field                      quote offset (v4)
             0    16  TEE_TCB_SVN                byte 0 TDX module SVN, byte 1 module version
            16    48  MRSEAM
            64    48  MRSIGNERSEAM
           112     8  SEAMATTRIBUTES
           120     8  TDATTRIBUTES               bit 0 = DEBUG
           128     8  XFAM
           136    48  MRTD                       184
           184    48  MRCONFIGID
           232    48  MROWNER
           280    48  MROWNERCONFIG
           328    48  RTMR0                      376
           376    48  RTMR1
           424    48  RTMR2
           472    48  RTMR3
           520    64  REPORTDATA                 568
        TD 1.5 only:
           584    16  TEE_TCB_SVN2
           600    48  MRSERVICETD
    """

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None
    raw: bytes = dataclasses.field(repr=False)

    @classmethod
    def from_bytes(cls, raw: bytes) -> TdReportBody:
        if len(raw) not in (TD_REPORT_BODY_10_SIZE, TD_REPORT_BODY_15_SIZE):
            raise QuoteFormatError(f"TD report body of {len(raw)} bytes (584 or 648 expected)")
        is_15 = len(raw) == TD_REPORT_BODY_15_SIZE
        return cls(
            tee_tcb_svn=raw[0:16], mr_seam=raw[16:64], mr_signer_seam=raw[64:112],
            seam_attributes=raw[112:120], td_attributes=raw[120:128], xfam=raw[128:136],
            mr_td=raw[136:184], mr_config_id=raw[184:232], mr_owner=raw[232:280],
            mr_owner_config=raw[280:328], rtmr0=raw[328:376], rtmr1=raw[376:424],
            rtmr2=raw[424:472], rtmr3=raw[472:520], report_data=raw[520:584],
            tee_tcb_svn2=raw[584:600] if is_15 else None,
            mr_service_td=raw[600:648] if is_15 else None,
            raw=raw,
        )

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES.DEBUG (bit 0): the host VMM can read and write the TD's state."""
        return bool(self.td_attributes[0] & 0x01)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QuoteSignatureData:
    """The ECDSA signature data of a quote, flattened: for v4/v5 the QE report, its signature
    and auth data come out of the type-6 certification data they are nested in."""

    quote_signature: bytes
    attestation_key: bytes
    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    #: Type of the innermost certification data (5 for a PEM PCK chain).
    certification_data_type: int
    #: The innermost certification data: for type 5 the PEM PCK chain, leaf first.
    certification_data: bytes = dataclasses.field(repr=False)

    @classmethod
    def _parse_qe_part(cls, reader: _Reader, quote_signature: bytes,
                       attestation_key: bytes) -> QuoteSignatureData:
        qe_report = SgxReportBody.from_bytes(reader.take(SGX_REPORT_BODY_SIZE, "QE report"))
        qe_report_signature = reader.take(_ECDSA_SIGNATURE_SIZE, "QE report signature")
        qe_auth_data = reader.take(reader.u16("QE auth data length"), "QE auth data")
        cert_type = reader.u16("certification data type")
        cert_data = reader.sub(reader.u32("certification data size"), "certification data")
        if cert_type == CERTIFICATION_DATA_QE_REPORT:
            raise QuoteFormatError("nested QE report certification data inside itself")
        if not 1 <= cert_type <= 7:
            raise QuoteFormatError(f"unknown certification data type {cert_type}")
        return cls(
            quote_signature=quote_signature, attestation_key=attestation_key,
            qe_report=qe_report, qe_report_signature=qe_report_signature,
            qe_auth_data=qe_auth_data, certification_data_type=cert_type,
            certification_data=cert_data.take(cert_data.remaining, "certification data"),
        )

    @classmethod
    def parse(cls, reader: _Reader, version: int) -> QuoteSignatureData:
        quote_signature = reader.take(_ECDSA_SIGNATURE_SIZE, "quote signature")
        attestation_key = reader.take(_ECDSA_PUBLIC_KEY_SIZE, "attestation key")
        if version == 3:
            result = cls._parse_qe_part(reader, quote_signature, attestation_key)
        else:
            outer_type = reader.u16("certification data type")
            if outer_type != CERTIFICATION_DATA_QE_REPORT:
                raise QuoteFormatError(
                    f"quote v{version} certification data type {outer_type} "
                    f"(6, QE report certification data, expected)"
                )
            outer = reader.sub(reader.u32("certification data size"),
                               "QE report certification data")
            result = cls._parse_qe_part(outer, quote_signature, attestation_key)
            outer.expect_end()
        reader.expect_end()
        return result


def _read_signature_data(reader: _Reader, version: int) -> tuple[QuoteSignatureData, int]:
    """The signature data, which ends the quote, and the count of bytes after it (ignored: see
    "Trailing bytes" in the module docstring)."""
    signature_reader = reader.sub(reader.u32("signature data length"), "signature data")
    signature_data = QuoteSignatureData.parse(signature_reader, version)
    return signature_data, reader.remaining


def _check_size(data: bytes) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise QuoteFormatError(f"a quote is bytes, not {type(data).__name__}")
    if len(data) > MAX_QUOTE_SIZE:
        raise QuoteFormatError(f"quote of {len(data)} bytes exceeds {MAX_QUOTE_SIZE}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SgxQuote:
    """An SGX ECDSA quote, version 3 (layout in the module docstring)."""

    header: QuoteHeader
    body: SgxReportBody
    signature_data: QuoteSignatureData
    #: header ‖ body: the bytes the attestation key signed.
    signed_bytes: bytes = dataclasses.field(repr=False)
    #: Bytes after the signature data (padding, or appended by a tool): covered by no signature
    #: and ignored; only counted.
    trailing_bytes: int = 0

    tee: ClassVar[str] = TEE_SGX

    @classmethod
    def parse(cls, data: bytes) -> SgxQuote:
        """Parse a v3 quote. Raises :class:`QuoteFormatError` for anything malformed."""
        quote = parse_quote(data)
        if not isinstance(quote, SgxQuote):
            raise QuoteFormatError(f"expected an SGX quote, got TDX quote v{quote.header.version}")
        return quote

    @classmethod
    def _parse(cls, data: bytes, reader: _Reader, header: QuoteHeader) -> SgxQuote:
        body = SgxReportBody.from_bytes(reader.take(SGX_REPORT_BODY_SIZE, "SGX report body"))
        signed_bytes = data[:reader.offset]
        signature_data, trailing_bytes = _read_signature_data(reader, header.version)
        return cls(header=header, body=body, signed_bytes=signed_bytes,
                   signature_data=signature_data, trailing_bytes=trailing_bytes)

    def to_claims(self, *, tcb_status: str = UNVERIFIED_TCB_STATUS,
                  advisory_ids: tuple[str, ...] = ()) -> Claims:
        """The normalised claims of this quote. Parsing proves nothing: only a verifier that has
        checked the signatures and collateral may fill in a real ``tcb_status``."""
        return Claims(
            tee=TEE_SGX, report_data=_hex(self.body.report_data), debug=self.body.debug,
            tcb_status=tcb_status, mr_enclave=_hex(self.body.mr_enclave),
            mr_signer=_hex(self.body.mr_signer), isv_prod_id=self.body.isv_prod_id,
            isv_svn=self.body.isv_svn, advisory_ids=advisory_ids,
            trailing_bytes=self.trailing_bytes,
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TdxQuote:
    """A TDX quote, version 4 or 5 (layouts in the module docstring)."""

    header: QuoteHeader
    #: 2 (TD report 1.0) or 3 (TD report 1.5); v4 quotes are always 2.
    body_type: int
    body: TdReportBody
    signature_data: QuoteSignatureData
    #: header (‖ v5 body descriptor) ‖ body: the bytes the attestation key signed.
    signed_bytes: bytes = dataclasses.field(repr=False)
    #: Bytes after the signature data (see :attr:`SgxQuote.trailing_bytes`).
    trailing_bytes: int = 0

    tee: ClassVar[str] = TEE_TDX

    @classmethod
    def parse(cls, data: bytes) -> TdxQuote:
        """Parse a v4 or v5 quote. Raises :class:`QuoteFormatError` for anything malformed."""
        quote = parse_quote(data)
        if not isinstance(quote, TdxQuote):
            raise QuoteFormatError("expected a TDX quote, got an SGX quote v3")
        return quote

    @classmethod
    def _parse(cls, data: bytes, reader: _Reader, header: QuoteHeader) -> TdxQuote:
        if header.version == 4:
            body_type, body_size = BODY_TYPE_TD_REPORT_10, TD_REPORT_BODY_10_SIZE
        else:
            body_type = reader.u16("body type")
            body_size = reader.u32("body size")
            expected = _TD_BODY_SIZES.get(body_type)
            if expected is None:
                raise QuoteFormatError(f"unsupported quote v5 body type {body_type}")
            if body_size != expected:
                raise QuoteFormatError(
                    f"quote v5 body type {body_type} with size {body_size} ({expected} expected)"
                )
        body = TdReportBody.from_bytes(reader.take(body_size, "TD report body"))
        signed_bytes = data[:reader.offset]
        signature_data, trailing_bytes = _read_signature_data(reader, header.version)
        return cls(header=header, body_type=body_type, body=body, signed_bytes=signed_bytes,
                   signature_data=signature_data, trailing_bytes=trailing_bytes)

    def to_claims(self, *, tcb_status: str = UNVERIFIED_TCB_STATUS,
                  advisory_ids: tuple[str, ...] = ()) -> Claims:
        """The normalised claims of this quote (see :meth:`SgxQuote.to_claims`)."""
        body = self.body
        return Claims(
            tee=TEE_TDX, report_data=_hex(body.report_data), debug=body.debug,
            tcb_status=tcb_status, mr_td=_hex(body.mr_td), rtmr0=_hex(body.rtmr0),
            rtmr1=_hex(body.rtmr1), rtmr2=_hex(body.rtmr2), rtmr3=_hex(body.rtmr3),
            advisory_ids=advisory_ids, trailing_bytes=self.trailing_bytes,
        )


def parse_quote(data: bytes) -> SgxQuote | TdxQuote:
    """Parse an SGX v3 or TDX v4/v5 quote, whichever ``data`` is. Bytes after the quote's
    signature data are ignored and counted in ``trailing_bytes`` (see the module docstring).

    Raises:
        QuoteFormatError: truncated, oversized input (> 64 KiB, trailing bytes included),
            inconsistent lengths inside the quote, unknown version, TEE type, attestation key
            type, body or certification data type.
    """
    _check_size(data)
    data = bytes(data)
    reader = _Reader(data, "quote")
    header = QuoteHeader.parse(reader)
    if header.version == 3:
        return SgxQuote._parse(data, reader, header)
    return TdxQuote._parse(data, reader, header)
