"""Intel DCAP verification of SGX (quote v3) and TDX (quote v4/v5) evidence, in Python.

What :meth:`DcapVerifier.verify` checks, in this order (section numbers are those of Intel's
Quote Verification Library, ``QuoteVerifier.cpp``, which this follows)::

    quote bytes ──parse──▶ header, body, signature data            (ppml.attestation.quote)
    PCK chain   leaf "SGX PCK Certificate" → "SGX PCK Platform/Processor CA" → pinned root:
                signatures, validity at `now`, CA flags and path length, CRLs if given
    QE report   ECDSA-SHA256 by the PCK leaf's P-256 key over the 384-byte QE report (4.1.2.4.12)
    binding     QE report_data = SHA-256(attestation key ‖ QE auth data) ‖ 32 zeros  (4.1.2.4.13)
    quote       ECDSA-SHA256 by the attestation key over header (‖ v5 descriptor) ‖ body
                                                                                   (4.1.2.4.16)
    collateral  TCB Info and QE Identity for this TEE and the PCK's FMSPC: signed by a
                "SGX TCB Signing" certificate that chains to the pinned root, inside
                issueDate..nextUpdate at `now`; FMSPC and PCE-ID match          (4.1.2.4.9-10)
    TDX module  MRSIGNERSEAM / SEAMATTRIBUTES match the TCB Info's TDX module identity (4.1.2.4.11)
    QE identity MISCSELECT, ATTRIBUTES (masked), MRSIGNER, ISVPRODID; ISVSVN → QE TCB status
                                                                                   (4.1.2.4.15)
    TCB level   first level whose SGX components and PCESVN (and, for TDX, TEE_TCB_SVN against
                tdxtcbcomponents) the platform meets; its status, converged with the TDX module's
                and the QE's, becomes ``Claims.tcb_status``                         (4.1.2.4.17)

Every failed check raises :class:`~ppml.errors.AttestationFailed` whose ``reason`` names the
check. A TCB status is *reported*, not judged (accepting ``OutOfDate`` is a policy decision), except
``Revoked``, which is refused here. Not implemented: the TD 1.5 "TD relaunch advised" statuses
(a TD 1.5 quote gets the TD 1.0 evaluation) and TCB Info v2 (PCS API v3).

Collateral is parsed and its signatures verified once, when a :class:`Collateral` is built.
Certificate and CRL signatures, once verified, are remembered by the verifier (keyed by the exact
DER of issuer and subject), so a quote from a platform seen before costs two ECDSA verifications
(QE report, quote) and some parsing; a new platform adds the signature on its PCK certificate.

The package follows DCAP's own seams (each module imports only those listed before it)::

    _common     the failure every check raises, certificate names, Intel's r‖s ECDSA signatures
    pck         the PCK certificate's SGX extension (FMSPC, PCE-ID, TCB components)
    chain       certificate chains to the pinned root, CRLs (and reading CRL files)
    tcb         TCB Info and QE Identity documents, and the TCB level a platform meets
    collateral  the signed documents for one TEE type and FMSPC, signatures checked once
    pccs        fetching collateral from a PCCS or Intel PCS
    verifier    DcapVerifier (signatures, then TCB), and a verifier from collateral files
"""

from __future__ import annotations

from ppml.attestation.dcap.chain import CertificateChain, load_crls
from ppml.attestation.dcap.collateral import Collateral
from ppml.attestation.dcap.pccs import fetch_from_pccs
from ppml.attestation.dcap.pck import (
    SGX_EXTENSION_OID,
    PckCertificateExtensions,
    parse_pck_extensions,
)
from ppml.attestation.dcap.tcb import (
    EnclaveTcbLevel,
    QeIdentity,
    TcbInfo,
    TcbLevel,
    TdxModuleIdentity,
)
from ppml.attestation.dcap.verifier import DcapVerifier, VerifiedQuote, verifier_from_files

__all__ = [
    "SGX_EXTENSION_OID",
    "CertificateChain",
    "Collateral",
    "DcapVerifier",
    "EnclaveTcbLevel",
    "PckCertificateExtensions",
    "QeIdentity",
    "TcbInfo",
    "TcbLevel",
    "TdxModuleIdentity",
    "VerifiedQuote",
    "fetch_from_pccs",
    "load_crls",
    "parse_pck_extensions",
    "verifier_from_files",
]
