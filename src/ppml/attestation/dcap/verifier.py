"""DcapVerifier: the quote's signatures, then its TCB judged against the collateral.

The order of the checks, with the sections of Intel's Quote Verification Library they follow, is
drawn in :mod:`ppml.attestation.dcap`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ppml.attestation.dcap._common import _bounded_put, _fail, _p256_key, _verify_raw_ecdsa
from ppml.attestation.dcap.chain import CertificateChain, _ChainVerifier, _load_chain, load_crls
from ppml.attestation.dcap.collateral import Collateral
from ppml.attestation.dcap.pck import PckCertificateExtensions, parse_pck_extensions
from ppml.attestation.dcap.tcb import (
    _TCB_INFO_ID_FOR_TEE,
    EnclaveTcbLevel,
    TcbInfo,
    _identity_level,
)
from ppml.attestation.intel_root import intel_sgx_root_ca, intel_tcb_signing_chain
from ppml.attestation.quote import (
    CERTIFICATION_DATA_PCK_CHAIN,
    SgxQuote,
    TdxQuote,
    parse_quote,
)
from ppml.core.evidence import Claims, Evidence
from ppml.errors import QuoteFormatError

__all__ = ["DcapVerifier", "VerifiedQuote", "verifier_from_files"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedQuote:
    """A quote whose PCK chain, QE report signature, attestation-key binding and quote signature
    have been verified; its TCB is not yet judged (that needs collateral)."""

    quote: SgxQuote | TdxQuote
    pck_chain: tuple[x509.Certificate, ...] = dataclasses.field(repr=False)
    pck: PckCertificateExtensions


_OUT_OF_DATE_CONVERGENCE = {
    "UpToDate": "OutOfDate",
    "SWHardeningNeeded": "OutOfDate",
    "ConfigurationNeeded": "OutOfDateConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded": "OutOfDateConfigurationNeeded",
}


def _converge(status: str, other: str) -> str:
    """Combine a platform TCB status with a QE or TDX module status (QVL
    ``convergeTcbStatusWithQeTcbStatus`` / ``…WithTdxModuleStatus``)."""
    if other == "OutOfDate":
        return _OUT_OF_DATE_CONVERGENCE.get(status, status)
    if other == "Revoked":
        return "Revoked"
    return status


def _merge_advisories(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(advisory for group in groups for advisory in group))


class DcapVerifier:
    """Verifies SGX and TDX DCAP quotes (an :class:`~ppml.core.evidence.EvidenceVerifier`).

    ``collateral`` holds one :class:`Collateral` per TEE type and FMSPC the verifier should
    accept; ``trusted_root`` defaults to the pinned Intel SGX Root CA; with ``crls`` (the Intel SGX
    Root CA CRL and the PCK CA CRLs), every certificate below the root must be covered by a valid
    CRL from its issuer and not be on it.
    """

    def __init__(self, *, collateral: Collateral | Iterable[Collateral] = (),
                 trusted_root: x509.Certificate | None = None,
                 crls: Sequence[x509.CertificateRevocationList] | None = None) -> None:
        self.trusted_root = trusted_root if trusted_root is not None else intel_sgx_root_ca()
        items = [collateral] if isinstance(collateral, Collateral) else list(collateral)
        self._collateral: dict[tuple[str, bytes], Collateral] = {}
        for item in items:
            key = (item.tee, item.fmspc)
            if key in self._collateral:
                raise ValueError(f"two collaterals for {item.tee} FMSPC {item.fmspc.hex()}")
            self._collateral[key] = item
        self._chains = _ChainVerifier(self.trusted_root, crls)
        self._pck_extensions: dict[x509.Certificate, PckCertificateExtensions] = {}

    def verify(self, evidence: Evidence, *, now: datetime) -> Claims:
        """Verify a quote completely and return its claims, with the TCB status and advisories.

        Raises:
            QuoteFormatError: the evidence is not a well-formed quote of its TEE type.
            AttestationFailed: any signature, chain, revocation or collateral check fails, the
                TCB is below every level, or the TCB status is ``Revoked``.
        """
        verified = self.verify_signatures(evidence, now=now)
        status, advisories = self._evaluate_tcb(verified, now)
        return verified.quote.to_claims(tcb_status=status, advisory_ids=advisories)

    def verify_signatures(self, evidence: Evidence, *, now: datetime) -> VerifiedQuote:
        """The collateral-free part of :meth:`verify`: PCK chain (and CRLs), QE report
        signature, attestation-key binding and quote signature. The result proves the quote came
        from a genuine Intel platform, not how current that platform's TCB is."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if evidence.tee not in _TCB_INFO_ID_FOR_TEE:
            raise QuoteFormatError(f"DCAP verifies SGX and TDX evidence, not {evidence.tee!r}")
        quote = parse_quote(evidence.data)
        if quote.tee != evidence.tee:
            raise QuoteFormatError(f"evidence of tee {evidence.tee!r} holds a {quote.tee} quote")
        signature_data = quote.signature_data
        if signature_data.certification_data_type != CERTIFICATION_DATA_PCK_CHAIN:
            _fail(f"certification data type {signature_data.certification_data_type}: "
                  f"a PCK certificate chain (type 5) is needed")
        chain = self._chains.verify(
            _load_chain(signature_data.certification_data, "PCK chain"), now=now,
            what="PCK chain", leaf_phrase="SGX PCK Certificate",
            ca_phrases=("SGX PCK Platform CA", "SGX PCK Processor CA"))
        pck_key = _p256_key(chain[0], "PCK chain")
        if not _verify_raw_ecdsa(pck_key, signature_data.qe_report_signature,
                                 signature_data.qe_report.raw):
            _fail("QE report signature is not valid under the PCK certificate's key")
        expected = hashlib.sha256(signature_data.attestation_key
                                  + signature_data.qe_auth_data).digest() + bytes(32)
        if signature_data.qe_report.report_data != expected:
            _fail("QE report does not bind the attestation key: its report data is not "
                  "SHA-256(attestation key ‖ QE auth data) ‖ zeros")
        try:
            attestation_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + signature_data.attestation_key)
        except ValueError:
            _fail("the attestation key is not a P-256 point")
        if not _verify_raw_ecdsa(attestation_key, signature_data.quote_signature,
                                 quote.signed_bytes):
            _fail("quote signature is not valid under the attestation key")
        return VerifiedQuote(quote=quote, pck_chain=chain, pck=self._pck_extensions_of(chain[0]))

    def _pck_extensions_of(self, certificate: x509.Certificate) -> PckCertificateExtensions:
        extensions = self._pck_extensions.get(certificate)
        if extensions is None:
            extensions = parse_pck_extensions(certificate)
            _bounded_put(self._pck_extensions, certificate, extensions)
        return extensions

    def check_collateral(self, collateral: Collateral, *, now: datetime) -> None:
        """Check that ``collateral`` is trusted and current at ``now``: both signing chains lead to
        the pinned root (and pass the CRLs, if configured), and ``now`` lies inside both
        documents' issueDate..nextUpdate. :meth:`verify` does this for the collateral it uses;
        call it directly to vet collateral when loading it.

        Raises:
            AttestationFailed: expired or not yet valid documents, or an untrusted signing chain.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        for document, chain, what in (
            (collateral.tcb_info, collateral.tcb_info_signing_chain, "TCB Info"),
            (collateral.qe_identity, collateral.qe_identity_signing_chain, "QE Identity"),
        ):
            if now > document.next_update:
                _fail(f"collateral: {what} expired at {document.next_update.isoformat()} "
                      f"(nextUpdate), verifying at {now.isoformat()}")
            if now < document.issue_date:
                _fail(f"collateral: {what} is not valid before "
                      f"{document.issue_date.isoformat()} (issueDate)")
            self._chains.verify(chain, now=now, what=f"collateral: {what} signing chain",
                                leaf_phrase="SGX TCB Signing", ca_phrases=())

    def _evaluate_tcb(self, verified: VerifiedQuote, now: datetime) -> tuple[str, tuple[str, ...]]:
        quote, pck = verified.quote, verified.pck
        collateral = self._collateral.get((quote.tee, pck.fmspc))
        if collateral is None:
            have = sorted(fmspc.hex() for tee, fmspc in self._collateral if tee == quote.tee)
            _fail(f"FMSPC mismatch: the PCK certificate's FMSPC {pck.fmspc.hex()} has no "
                  f"{_TCB_INFO_ID_FOR_TEE[quote.tee]} TCB Info (collateral for: "
                  f"{', '.join(have) or 'none'})")
        self.check_collateral(collateral, now=now)
        tcb_info = collateral.tcb_info
        if pck.pce_id != tcb_info.pce_id:
            _fail(f"PCE-ID mismatch: PCK certificate {pck.pce_id.hex()}, "
                  f"TCB Info {tcb_info.pce_id.hex()}")

        module_level: EnclaveTcbLevel | None = None
        if isinstance(quote, TdxQuote):
            module_level = self._check_tdx_module(quote, tcb_info)
        qe_level = collateral.qe_identity.evaluate(quote.signature_data.qe_report)
        if qe_level.status == "Revoked":
            _fail(f"TCB status Revoked: the QE's ISVSVN {quote.signature_data.qe_report.isv_svn}"
                  f" is revoked by the QE Identity")

        if isinstance(quote, TdxQuote):
            level = next((level for level in tcb_info.tcb_levels if level.platform_meets(pck)
                          and level.tdx_meets(quote.body.tee_tcb_svn)), None)
        else:
            level = next((level for level in tcb_info.tcb_levels if level.platform_meets(pck)),
                         None)
        if level is None:
            _fail("TCB level: the platform's TCB is below every level of the TCB Info "
                  "(TCB not supported)")
        if level.status == "Revoked":
            _fail(f"TCB status Revoked: the platform's TCB level of "
                  f"{level.tcb_date.isoformat() if level.tcb_date else 'unknown date'} is revoked")
        status = level.status
        if module_level is not None:
            if module_level.status == "Revoked":
                _fail("TCB status Revoked: the TDX module's ISVSVN is revoked")
            status = _converge(status, module_level.status)
        status = _converge(status, qe_level.status)
        advisories = _merge_advisories(level.advisory_ids,
                                       module_level.advisory_ids if module_level else (),
                                       qe_level.advisory_ids)
        return status, advisories

    def _check_tdx_module(self, quote: TdxQuote, tcb_info: TcbInfo) -> EnclaveTcbLevel | None:
        """Match MRSIGNERSEAM and SEAMATTRIBUTES (QVL 4.1.2.4.11); for a TDX module with a major
        version (TEE_TCB_SVN byte 1 > 0) return the module identity's TCB level for its SVN."""
        tee_tcb_svn = quote.body.tee_tcb_svn
        module_version, module_svn = tee_tcb_svn[1], tee_tcb_svn[0]
        identity = tcb_info.tdx_module
        if module_version > 0:
            wanted = f"TDX_{module_version:02X}"
            identity = next((item for item in tcb_info.tdx_module_identities
                             if item.id == wanted), None)
            if identity is None:
                _fail(f"TDX module mismatch: the TCB Info has no identity {wanted}")
        if identity is None:
            _fail("TDX module mismatch: the TCB Info has no tdxModule")
        if quote.body.mr_signer_seam != identity.mr_signer:
            _fail(f"TDX module mismatch: MRSIGNERSEAM {quote.body.mr_signer_seam.hex()}")
        masked = bytes(a & b for a, b in zip(quote.body.seam_attributes, identity.attributes_mask))
        if masked != identity.attributes:
            _fail(f"TDX module mismatch: SEAMATTRIBUTES {quote.body.seam_attributes.hex()}")
        if module_version == 0:
            return None
        level = _identity_level(identity.tcb_levels, module_svn)
        if level is None:
            _fail(f"TDX module: SVN {module_svn} is below every level of {identity.id} "
                  f"(TCB not supported)")
        return level


def verifier_from_files(collateral: Iterable[tuple[Path, Path]], *, crls: Iterable[Path] = (),
                        trusted_root: x509.Certificate | None = None,
                        signing_chain: CertificateChain | Path | None = None) -> DcapVerifier:
    """A :class:`DcapVerifier` for collateral recorded in files: (TCB Info, QE Identity) JSON pairs
    exactly as PCS/PCCS served them, one pair per TEE type and FMSPC.

    Files lose the issuer chain that PCS sends in response headers, so the documents are checked
    against ``signing_chain`` (PEM file or certificates; default Intel's pinned TCB Signing
    certificate and root). ``trusted_root`` replaces the pinned Intel SGX Root CA (tests, private
    PKIs). With ``crls`` (files, PEM or DER), revocation is enforced; without, it is not checked.

    Raises:
        AttestationFailed: a document that is malformed or not signed by the signing chain.
        UsageError: a CRL file that is no CRL.
    """
    chain = intel_tcb_signing_chain() if signing_chain is None else signing_chain
    loaded = [Collateral.from_files(tcb_info, qe_identity, tcb_info_signing_chain=chain,
                                    qe_identity_signing_chain=chain)
              for tcb_info, qe_identity in collateral]
    return DcapVerifier(collateral=loaded, trusted_root=trusted_root,
                        crls=load_crls(crls) or None)
