"""What a piece of evidence says about itself, read without verifying anything.

``ppml attest show`` prints it, and ``ppml attest verify`` prints it next to the reason of a
refusal. No signature, certificate chain or collateral is checked here: every value is what the
bytes state, which anyone could have written, and every description says so
(:data:`NOT_VERIFIED`). The layouts are those of :mod:`ppml.attestation.quote` (SGX v3, TDX v4/v5)
and :mod:`ppml.core.simulated`; this module only reads their parses.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from cryptography import x509

from ppml.attestation.dcap import parse_pck_extensions
from ppml.attestation.quote import (
    CERTIFICATION_DATA_PCK_CHAIN,
    MAX_QUOTE_SIZE,
    QuoteSignatureData,
    SgxQuote,
    TdxQuote,
    parse_quote,
)
from ppml.core.evidence import TEE_SGX, TEE_SIMULATED, TEE_TDX
from ppml.core.simulated import MAGIC as SIMULATED_MAGIC
from ppml.core.simulated import read_unverified_report
from ppml.errors import AttestationFailed, QuoteFormatError

__all__ = [
    "NOT_VERIFIED",
    "EvidenceDescription",
    "PckCertificateDescription",
    "describe_evidence",
    "detect_tee",
]

#: The last word of every description.
NOT_VERIFIED: Final = "not verified: this is what the quote claims, checked by nothing"
_TEE_TYPE_TDX = b"\x81\x00\x00\x00"
_MAX_CHAIN_SHOWN = 8

Value = str | int | bool


def detect_tee(data: bytes) -> str:
    """The TEE type evidence declares: ``simulated`` for ppml's magic, ``tdx`` for TEE type 0x81
    in a quote header (bytes 4..7), ``sgx`` otherwise. A guess from unverified bytes, for picking
    a parser or verifier, which then checks the rest."""
    if data.startswith(SIMULATED_MAGIC):
        return TEE_SIMULATED
    if data[4:8] == _TEE_TYPE_TDX:
        return TEE_TDX
    return TEE_SGX


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PckCertificateDescription:
    """The PCK leaf certificate carried in a quote's certification data (type 5), as stated."""

    subject: str
    issuer: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    #: From the certificate's SGX extension; None when it cannot be read (see ``problem``).
    fmspc: str | None
    pce_id: str | None
    #: Subjects of the whole chain as carried, leaf first.
    chain: tuple[str, ...]
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(not_before=self.not_before.isoformat(), not_after=self.not_after.isoformat(),
                    chain=list(self.chain))
        return {key: value for key, value in data.items() if value is not None}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceDescription:
    """Evidence as it describes itself. Nothing in it was verified."""

    tee: str
    #: e.g. "TDX quote v4 (TD report 1.0)".
    format: str
    version: int
    #: Bytes of the evidence proper, without trailing bytes.
    size: int
    #: Measurements and attributes in display order, named as in the claims where they exist.
    fields: Mapping[str, Value]
    #: Certification data type of a quote (5: PEM PCK chain); None for simulated evidence.
    certification_data_type: int | None = None
    pck_certificate: PckCertificateDescription | None = None
    #: Why no PCK certificate is described, when a quote has none that can be read.
    pck_problem: str | None = None
    trailing_bytes: int = 0
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, ``"verified": false`` included."""
        data: dict[str, Any] = {"tee": self.tee, "format": self.format, "version": self.version,
                                "size": self.size, **self.fields}
        if self.certification_data_type is not None:
            data["certification_data_type"] = self.certification_data_type
        if self.pck_certificate is not None:
            data["pck_certificate"] = self.pck_certificate.to_dict()
        if self.pck_problem is not None:
            data["pck_problem"] = self.pck_problem
        data.update(trailing_bytes=self.trailing_bytes, simulated=self.simulated,
                    verified=False, note=NOT_VERIFIED)
        return data

    def lines(self) -> list[str]:
        """The text form: one ``name  value`` line each, ending with :data:`NOT_VERIFIED`."""
        rows: list[tuple[str, str]] = [("evidence", f"{self.format}, {self.size} bytes")]
        if self.simulated:
            rows.append(("", "SIMULATED TEE: no hardware protection at all"))
        for name, value in self.fields.items():
            shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
            rows.append((name, shown))
        pck = self.pck_certificate
        if pck is not None:
            rows += [("PCK certificate", pck.subject), ("  issuer", pck.issuer),
                     ("  serial", pck.serial_number),
                     ("  valid", f"{pck.not_before.isoformat()} to {pck.not_after.isoformat()}"),
                     ("  FMSPC", pck.fmspc or "unreadable"), ("  PCE-ID", pck.pce_id or "unreadable"),
                     ("  chain", " <- ".join(pck.chain))]
            if pck.problem:
                rows.append(("  problem", pck.problem))
        elif self.pck_problem is not None:
            rows.append(("PCK certificate", self.pck_problem))
        if self.trailing_bytes:
            rows.append(("trailing bytes", f"{self.trailing_bytes} after the signed quote "
                                           "(covered by no signature; ignored)"))
        width = max(len(name) for name, _ in rows) + 2
        return [f"{name:<{width}}{value}".rstrip() for name, value in rows] + [NOT_VERIFIED]


def describe_evidence(data: bytes) -> EvidenceDescription:
    """Read SGX/TDX quotes and simulated evidence, verifying nothing.

    Raises:
        QuoteFormatError: ``data`` is neither a well-formed quote nor simulated evidence (or
            larger than 64 KiB).
    """
    if len(data) > MAX_QUOTE_SIZE:
        raise QuoteFormatError(f"evidence of {len(data)} bytes exceeds {MAX_QUOTE_SIZE}")
    if detect_tee(data) == TEE_SIMULATED:
        return _describe_simulated(data)
    quote = parse_quote(data)
    if isinstance(quote, SgxQuote):
        fields = _sgx_fields(quote)
        kind = "SGX ECDSA quote v3"
    else:
        fields = _tdx_fields(quote)
        report = "TD report 1.5" if quote.body.mr_service_td is not None else "TD report 1.0"
        kind = f"TDX quote v{quote.header.version} ({report})"
    pck, problem = _describe_pck(quote.signature_data)
    return EvidenceDescription(
        tee=quote.tee, format=kind, version=quote.header.version,
        size=len(data) - quote.trailing_bytes, fields=fields,
        certification_data_type=quote.signature_data.certification_data_type,
        pck_certificate=pck, pck_problem=problem, trailing_bytes=quote.trailing_bytes,
    )


def _sgx_fields(quote: SgxQuote) -> dict[str, Value]:
    body, header = quote.body, quote.header
    return {
        "mr_enclave": body.mr_enclave.hex(), "mr_signer": body.mr_signer.hex(),
        "isv_prod_id": body.isv_prod_id, "isv_svn": body.isv_svn,
        "attributes": body.attributes.hex(), "debug": body.debug,
        "misc_select": body.misc_select.hex(), "cpu_svn": body.cpu_svn.hex(),
        "config_svn": body.config_svn, "config_id": body.config_id.hex(),
        "report_data": body.report_data.hex(),
        "qe_svn": int.from_bytes(header.reserved[0:2], "little"),
        "pce_svn": int.from_bytes(header.reserved[2:4], "little"),
        "qe_vendor_id": header.qe_vendor_id.hex(),
    }


def _tdx_fields(quote: TdxQuote) -> dict[str, Value]:
    body = quote.body
    fields: dict[str, Value] = {
        "mr_td": body.mr_td.hex(), "rtmr0": body.rtmr0.hex(), "rtmr1": body.rtmr1.hex(),
        "rtmr2": body.rtmr2.hex(), "rtmr3": body.rtmr3.hex(),
        "td_attributes": body.td_attributes.hex(), "debug": body.debug,
        "xfam": body.xfam.hex(), "mr_seam": body.mr_seam.hex(),
        "mr_signer_seam": body.mr_signer_seam.hex(), "seam_attributes": body.seam_attributes.hex(),
        "tee_tcb_svn": body.tee_tcb_svn.hex(), "mr_config_id": body.mr_config_id.hex(),
        "mr_owner": body.mr_owner.hex(), "mr_owner_config": body.mr_owner_config.hex(),
    }
    if body.tee_tcb_svn2 is not None and body.mr_service_td is not None:
        fields.update(tee_tcb_svn2=body.tee_tcb_svn2.hex(), mr_service_td=body.mr_service_td.hex())
    fields.update(report_data=body.report_data.hex(), qe_vendor_id=quote.header.qe_vendor_id.hex())
    return fields


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def _describe_pck(signature_data: QuoteSignatureData
                  ) -> tuple[PckCertificateDescription | None, str | None]:
    kind = signature_data.certification_data_type
    if kind != CERTIFICATION_DATA_PCK_CHAIN:
        return None, f"not in the quote (certification data type {kind}, not 5)"
    unreadable = "the certification data is not a readable PEM certificate chain"
    try:
        chain = x509.load_pem_x509_certificates(signature_data.certification_data.rstrip(b"\0"))
        if not chain:
            return None, unreadable
        leaf = chain[0]
        fmspc = pce_id = problem = None
        try:
            extensions = parse_pck_extensions(leaf)
            fmspc, pce_id = extensions.fmspc.hex(), extensions.pce_id.hex()
        except AttestationFailed as exc:
            problem = exc.reason
        subjects = [_common_name(certificate.subject) for certificate in chain[:_MAX_CHAIN_SHOWN]]
        if len(chain) > _MAX_CHAIN_SHOWN:
            subjects.append(f"... {len(chain) - _MAX_CHAIN_SHOWN} more")
        return PckCertificateDescription(
            subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
            serial_number=f"{leaf.serial_number:x}", not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc, fmspc=fmspc, pce_id=pce_id, chain=tuple(subjects),
            problem=problem,
        ), None
    except ValueError:  # cryptography parses names and extensions lazily: any of them may fail
        return None, unreadable


def _describe_simulated(data: bytes) -> EvidenceDescription:
    report, platform_key = read_unverified_report(data)
    fields: dict[str, Value] = {
        "mr_enclave": report.mr_enclave.hex(), "mr_signer": report.mr_signer.hex(),
        "isv_prod_id": report.isv_prod_id, "isv_svn": report.isv_svn, "debug": report.debug,
        "report_data": report.report_data.hex(),
        "platform_key_sha256": hashlib.sha256(platform_key).hexdigest(),
    }
    return EvidenceDescription(tee=TEE_SIMULATED, format="ppml simulated TEE evidence v1",
                               version=1, size=len(data), fields=fields, simulated=True)
