"""DCAP verification: every failure path against a fake Intel PKI, and the real quotes and
collateral against the pinned Intel certificates."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes

from fake_intel_pki import (
    COLLATERAL_ISSUE_DATE,
    COLLATERAL_NEXT_UPDATE,
    FMSPC,
    NOW,
    OUT_OF_DATE_ADVISORY,
    OUT_OF_DATE_COMPONENTS,
    REVOKED_COMPONENTS,
    FakeIntel,
    FakePlatform,
    new_key,
    pem,
    tcb_level,
)
from ppml.attestation import dcap
from ppml.attestation.dcap import (
    Collateral,
    DcapVerifier,
    QeIdentity,
    TcbInfo,
    fetch_from_pccs,
    parse_pck_extensions,
)
from ppml.attestation.dcap import collateral as dcap_collateral
from ppml.attestation.intel_root import (
    INTEL_SGX_ROOT_CA_SHA256,
    INTEL_SGX_TCB_SIGNING_SHA256,
    intel_sgx_root_ca,
    intel_tcb_signing_chain,
)
from ppml.attestation.quote import SgxQuote, TdxQuote, parse_quote
from ppml.core.evidence import Claims, Evidence, EvidenceVerifier
from ppml.errors import AttestationFailed, QuoteFormatError

VECTORS = Path(__file__).parent / "vectors" / "attestation"
#: Inside the real PCK certificates' validity and the real collateral's issueDate..nextUpdate.
REAL_NOW = datetime(2025, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def intel() -> FakeIntel:
    return FakeIntel.create()


@pytest.fixture(scope="module")
def platform(intel: FakeIntel) -> FakePlatform:
    return intel.platform()


@pytest.fixture(scope="module")
def collateral(intel: FakeIntel) -> list[Collateral]:
    return [intel.collateral("sgx"), intel.collateral("tdx")]


@pytest.fixture(scope="module")
def verifier(intel: FakeIntel, collateral: list[Collateral]) -> DcapVerifier:
    """One verifier for many tests: its memory of verified signatures must never hide a failure."""
    return DcapVerifier(collateral=collateral, trusted_root=intel.root,
                        crls=[intel.crl("root"), intel.crl("pck_ca")])


def sgx(data: bytes) -> Evidence:
    return Evidence(tee="sgx", data=data)


def tdx(data: bytes) -> Evidence:
    return Evidence(tee="tdx", data=data)


def fails(verifier: DcapVerifier, evidence: Evidence, reason: str, *,
          now: datetime = NOW) -> AttestationFailed:
    with pytest.raises(AttestationFailed, match=reason) as caught:
        verifier.verify(evidence, now=now)
    return caught.value


# --- success ------------------------------------------------------------------------------------

def test_a_dcap_verifier_is_an_evidence_verifier(verifier: DcapVerifier) -> None:
    contract: EvidenceVerifier = verifier
    assert callable(contract.verify)


def test_sgx_quote_verifies_to_its_claims(verifier: DcapVerifier, platform: FakePlatform) -> None:
    report_data = hashlib.sha512(b"nonce").digest()
    quote = platform.sgx_quote(mr_enclave=b"\x01" * 32, mr_signer=b"\x02" * 32,
                               isv_prod_id=7, isv_svn=3, report_data=report_data)
    claims = verifier.verify(sgx(quote), now=NOW)
    assert claims == Claims(
        tee="sgx", report_data=report_data.hex(), debug=False, tcb_status="UpToDate",
        mr_enclave="01" * 32, mr_signer="02" * 32, isv_prod_id=7, isv_svn=3,
    )


def test_tdx_v4_quote_verifies_to_its_claims(verifier: DcapVerifier,
                                             platform: FakePlatform) -> None:
    rtmrs = [bytes([index]) * 48 for index in range(1, 5)]
    quote = platform.tdx_quote(mr_td=b"\x7a" * 48, rtmrs=rtmrs, report_data=b"\x33" * 64)
    claims = verifier.verify(tdx(quote), now=NOW)
    assert claims == Claims(
        tee="tdx", report_data="33" * 64, debug=False, tcb_status="UpToDate", mr_td="7a" * 48,
        rtmr0="01" * 48, rtmr1="02" * 48, rtmr2="03" * 48, rtmr3="04" * 48,
    )


@pytest.mark.parametrize("td15", [False, True])
def test_tdx_v5_quote_verifies(verifier: DcapVerifier, platform: FakePlatform,
                               td15: bool) -> None:
    quote = platform.tdx_quote(version=5, td15=td15, report_data=b"\x55" * 64)
    parsed = parse_quote(quote)
    assert isinstance(parsed, TdxQuote) and parsed.body_type == (3 if td15 else 2)
    claims = verifier.verify(tdx(quote), now=NOW)
    assert claims.report_data == "55" * 64 and claims.tcb_status == "UpToDate"


def test_debug_enclave_and_debug_td_are_reported(verifier: DcapVerifier,
                                                 platform: FakePlatform) -> None:
    assert verifier.verify(sgx(platform.sgx_quote(debug=True)), now=NOW).debug is True
    assert verifier.verify(tdx(platform.tdx_quote(debug=True)), now=NOW).debug is True


def test_verification_without_crls(intel: FakeIntel, collateral: list[Collateral],
                                   platform: FakePlatform) -> None:
    plain = DcapVerifier(collateral=collateral, trusted_root=intel.root)
    assert plain.verify(sgx(platform.sgx_quote()), now=NOW).tcb_status == "UpToDate"


# --- quotes as they arrive: padded buffers, appended bytes --------------------------------------

def _padded(quote: bytes, size: int = 8 << 10) -> bytes:
    return quote + bytes(size - len(quote))


def _appended(quote: bytes) -> bytes:
    return quote + random.Random(len(quote)).randbytes(1234)


_FAKE_QUOTES = {
    "sgx": lambda p: sgx(p.sgx_quote(mr_enclave=b"\x01" * 32, isv_svn=2, report_data=b"\x44" * 64)),
    "tdx-v4": lambda p: tdx(p.tdx_quote(mr_td=b"\x7a" * 48, report_data=b"\x33" * 64)),
    "tdx-v5-td15": lambda p: tdx(p.tdx_quote(version=5, td15=True, report_data=b"\x55" * 64)),
}


@pytest.mark.parametrize("kind", sorted(_FAKE_QUOTES))
@pytest.mark.parametrize("arrive", [_padded, _appended], ids=["padded-8KiB", "appended-random"])
def test_padded_and_appended_quotes_verify_to_the_same_claims(
        verifier: DcapVerifier, platform: FakePlatform, kind: str, arrive: Any) -> None:
    evidence = _FAKE_QUOTES[kind](platform)
    data = arrive(evidence.data)
    claims = verifier.verify(evidence, now=NOW)
    arrived = verifier.verify(Evidence(tee=evidence.tee, data=data), now=NOW)
    assert claims.trailing_bytes == 0 and claims.tcb_status == "UpToDate"
    assert arrived.trailing_bytes == len(data) - len(evidence.data) > 0
    assert dataclasses.replace(arrived, trailing_bytes=0) == claims


@pytest.mark.parametrize("kind", sorted(_FAKE_QUOTES))
def test_a_padded_quote_cut_short_inside_its_signed_part_is_refused(
        verifier: DcapVerifier, platform: FakePlatform, kind: str) -> None:
    """Zero padding cannot stand in for the end of a quote: cut in the header, body, quote
    signature, QE report, PCK leaf or PCK CA certificate and padded back to 8 KiB, the quote is
    refused (by the parser, or by the check of what the zeros replaced)."""
    quote = _FAKE_QUOTES[kind](platform)
    data = quote.data
    leaf = data.index(b"-----BEGIN CERTIFICATE-----")
    intermediate = data.index(b"-----BEGIN CERTIFICATE-----", leaf + 1)
    signed_end = len(parse_quote(data).signed_bytes)
    for cut in (10, 300, signed_end + 4 + 30, signed_end + 4 + 64 + 64 + 200, leaf + 100,
                intermediate - 40, intermediate + 300):
        for damaged in (data[:cut], _padded(data[:cut])):
            with pytest.raises(AttestationFailed):  # QuoteFormatError is one
                verifier.verify(Evidence(tee=quote.tee, data=damaged), now=NOW)


def test_bytes_appended_to_a_quote_cannot_replace_its_signature_data(
        verifier: DcapVerifier, platform: FakePlatform) -> None:
    """A quote whose signature data was swapped for another's still fails: only the signed
    quote counts, and what follows it is never read."""
    first, second = platform.sgx_quote(), platform.sgx_quote(mr_enclave=b"\x66" * 32)
    forged = second[:432] + first[432:] + second[432:]
    fails(verifier, sgx(forged), "quote signature")


# --- the quote and QE report signatures ---------------------------------------------------------

def test_forged_quote_signature(verifier: DcapVerifier, platform: FakePlatform) -> None:
    fails(verifier, sgx(platform.sgx_quote(quote_signer=new_key())), "quote signature")
    fails(verifier, tdx(platform.tdx_quote(quote_signer=new_key())), "quote signature")


def test_body_changed_after_signing(verifier: DcapVerifier, platform: FakePlatform) -> None:
    quote = bytearray(platform.sgx_quote())
    quote[368] ^= 1  # first byte of REPORT_DATA
    fails(verifier, sgx(bytes(quote)), "quote signature")


def test_qe_report_not_binding_the_attestation_key(verifier: DcapVerifier,
                                                   platform: FakePlatform) -> None:
    other = hashlib.sha256(b"another attestation key").digest() + bytes(32)
    fails(verifier, sgx(platform.sgx_quote(qe_report_data=other)),
          "does not bind the attestation key")
    fails(verifier, tdx(platform.tdx_quote(qe_report_data=other)),
          "does not bind the attestation key")
    # the right hash is not enough: the second half of the report data must be zero
    fails(verifier, sgx(platform.sgx_quote(qe_report_data_tail=b"\x01" + bytes(31))),
          "does not bind the attestation key")


def test_bad_qe_report_signature(verifier: DcapVerifier, platform: FakePlatform) -> None:
    fails(verifier, sgx(platform.sgx_quote(qe_report_signer=new_key())), "QE report signature")
    fails(verifier, tdx(platform.tdx_quote(qe_report_signer=new_key())), "QE report signature")


def test_evidence_of_the_wrong_tee_or_shape(verifier: DcapVerifier,
                                            platform: FakePlatform) -> None:
    with pytest.raises(QuoteFormatError, match="holds a tdx quote"):
        verifier.verify(sgx(platform.tdx_quote()), now=NOW)
    with pytest.raises(QuoteFormatError, match="not 'simulated'"):
        verifier.verify(Evidence(tee="simulated", data=b"x"), now=NOW)
    with pytest.raises(QuoteFormatError):
        verifier.verify(sgx(b"\x03\x00" + bytes(100)), now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        verifier.verify(sgx(platform.sgx_quote()), now=datetime(2025, 6, 1))


# --- the PCK certificate chain ------------------------------------------------------------------

def test_pck_chain_to_a_different_root(verifier: DcapVerifier) -> None:
    impostor = FakeIntel.create()  # same names as the pinned fake root, other keys
    failure = fails(verifier, sgx(impostor.platform().sgx_quote()),
                    "PCK chain: the chain ends at 'Fake Intel SGX Root CA'")
    assert "not at the pinned root" in failure.reason


def test_pck_chain_without_root_still_must_reach_the_pinned_root(
        verifier: DcapVerifier, intel: FakeIntel, platform: FakePlatform) -> None:
    short = pem(platform.pck_certificate, intel.pck_ca)
    assert verifier.verify(sgx(platform.sgx_quote(pck_chain=short)), now=NOW)
    impostor = FakeIntel.create()
    stranger = impostor.platform()
    chain = pem(stranger.pck_certificate, impostor.pck_ca)
    fails(verifier, sgx(stranger.sgx_quote(pck_chain=chain)),
          "'Fake Intel SGX PCK Platform CA' is not signed by 'Fake Intel SGX Root CA'")


def test_pck_chain_with_a_leaf_that_is_not_a_pck_certificate(
        verifier: DcapVerifier, intel: FakeIntel, platform: FakePlatform) -> None:
    chain = pem(intel.tcb_signing, intel.root)
    fails(verifier, sgx(platform.sgx_quote(pck_chain=chain)), "not an 'SGX PCK Certificate'")
    fails(verifier, sgx(platform.sgx_quote(pck_chain=b"garbage")), "not a PEM certificate chain")


def test_expired_pck_certificate(verifier: DcapVerifier, intel: FakeIntel) -> None:
    expired = intel.platform(not_after=NOW - timedelta(days=1))
    fails(verifier, sgx(expired.sgx_quote()), "'Intel SGX PCK Certificate' is not valid at")


def test_revoked_pck_certificate(intel: FakeIntel, collateral: list[Collateral],
                                 platform: FakePlatform) -> None:
    revoking = DcapVerifier(collateral=collateral, trusted_root=intel.root, crls=[
        intel.crl("root"), intel.crl("pck_ca", revoked=[platform.pck_certificate])])
    failure = fails(revoking, sgx(platform.sgx_quote()), "is revoked")
    assert "'Intel SGX PCK Certificate'" in failure.reason
    # other platforms of the same CA are unaffected
    assert revoking.verify(sgx(intel.platform().sgx_quote()), now=NOW)


def test_revoked_pck_ca(intel: FakeIntel, collateral: list[Collateral],
                        platform: FakePlatform) -> None:
    revoking = DcapVerifier(collateral=collateral, trusted_root=intel.root, crls=[
        intel.crl("root", revoked=[intel.pck_ca]), intel.crl("pck_ca")])
    fails(revoking, sgx(platform.sgx_quote()), "'Fake Intel SGX PCK Platform CA'.*is revoked")


def test_crls_must_cover_the_chain_be_signed_and_be_current(
        intel: FakeIntel, collateral: list[Collateral], platform: FakePlatform) -> None:
    quote = sgx(platform.sgx_quote())
    missing = DcapVerifier(collateral=collateral, trusted_root=intel.root,
                           crls=[intel.crl("root")])
    fails(missing, quote, "no CRL from 'Fake Intel SGX PCK Platform CA'")
    forged = DcapVerifier(collateral=collateral, trusted_root=intel.root,
                          crls=[intel.crl("root"), intel.crl("pck_ca", signer=new_key())])
    fails(forged, quote, "the CRL of 'Fake Intel SGX PCK Platform CA' is not signed by it")
    stale = DcapVerifier(collateral=collateral, trusted_root=intel.root, crls=[
        intel.crl("root"), intel.crl("pck_ca", next_update=NOW - timedelta(hours=1))])
    fails(stale, quote, "the CRL of 'Fake Intel SGX PCK Platform CA' is not valid at")


# --- collateral ---------------------------------------------------------------------------------

def test_expired_and_not_yet_valid_collateral(verifier: DcapVerifier,
                                              platform: FakePlatform) -> None:
    later = COLLATERAL_NEXT_UPDATE + timedelta(seconds=1)
    fails(verifier, sgx(platform.sgx_quote()), "collateral: TCB Info expired", now=later)
    earlier = COLLATERAL_ISSUE_DATE - timedelta(seconds=1)
    fails(verifier, tdx(platform.tdx_quote()), "collateral: TCB Info is not valid before",
          now=earlier)


def test_expired_qe_identity(intel: FakeIntel, platform: FakePlatform) -> None:
    short = intel.qe_identity("sgx", next_update=NOW - timedelta(days=1))
    verifier = DcapVerifier(collateral=intel.collateral("sgx", qe_identity=short),
                            trusted_root=intel.root)
    fails(verifier, sgx(platform.sgx_quote()), "collateral: QE Identity expired")


def test_collateral_signed_by_the_wrong_key(intel: FakeIntel) -> None:
    with pytest.raises(AttestationFailed, match="TCB Info signature is not valid"):
        intel.collateral("sgx", signer=new_key())


def test_collateral_signing_chain_to_a_different_root(verifier: DcapVerifier,
                                                      platform: FakePlatform) -> None:
    impostor = FakeIntel.create()
    foreign = DcapVerifier(collateral=impostor.collateral("sgx"),
                           trusted_root=verifier.trusted_root)
    fails(foreign, sgx(platform.sgx_quote()),
          "collateral: TCB Info signing chain: the chain ends at .* not at the pinned root")


def test_collateral_signed_by_a_certificate_that_is_no_tcb_signer(
        intel: FakeIntel, platform: FakePlatform) -> None:
    # the PCK CA chains to the root too, but may not sign collateral
    rogue = intel.collateral("sgx", signer=intel.pck_ca_key,
                             signing_chain=[intel.pck_ca, intel.root])
    verifier = DcapVerifier(collateral=rogue, trusted_root=intel.root)
    fails(verifier, sgx(platform.sgx_quote()), "is not an 'SGX TCB Signing' certificate")


def test_collateral_signature_covers_the_exact_text(intel: FakeIntel) -> None:
    body = intel.tcb_info("sgx")
    indented = intel.sign_document("tcbInfo", body, indent=2)
    qe = intel.sign_document("enclaveIdentity", intel.qe_identity("sgx"))
    chain = intel.signing_chain()
    loaded = Collateral(tcb_info=indented, tcb_info_signing_chain=chain, qe_identity=qe,
                        qe_identity_signing_chain=chain)
    assert loaded.fmspc == FMSPC and loaded.tee == "sgx"
    with pytest.raises(AttestationFailed, match="TCB Info signature is not valid"):
        Collateral(tcb_info=indented.replace(b'"pcesvn": 13', b'"pcesvn": 99'),
                   tcb_info_signing_chain=chain, qe_identity=qe, qe_identity_signing_chain=chain)
    duplicate = indented[:-1] + b',"tcbInfo":{}}'
    with pytest.raises(AttestationFailed, match="duplicate key 'tcbInfo'"):
        Collateral(tcb_info=duplicate, tcb_info_signing_chain=chain, qe_identity=qe,
                   qe_identity_signing_chain=chain)
    with pytest.raises(AttestationFailed, match="malformed JSON"):
        Collateral(tcb_info=indented[:-1], tcb_info_signing_chain=chain, qe_identity=qe,
                   qe_identity_signing_chain=chain)
    with pytest.raises(TypeError, match="exact text"):
        Collateral(tcb_info=body, tcb_info_signing_chain=chain,  # type: ignore[arg-type]
                   qe_identity=qe, qe_identity_signing_chain=chain)


def test_collateral_of_mismatched_tees(intel: FakeIntel) -> None:
    with pytest.raises(AttestationFailed, match="does not go with"):
        intel.collateral("sgx", qe_identity=intel.qe_identity("tdx"))


def test_fmspc_and_pce_id_mismatch(verifier: DcapVerifier, intel: FakeIntel) -> None:
    elsewhere = intel.platform(fmspc=bytes.fromhex("00a06d080000"))
    failure = fails(verifier, sgx(elsewhere.sgx_quote()), "FMSPC mismatch")
    assert "00a06d080000" in failure.reason and FMSPC.hex() in failure.reason
    other_pce = intel.platform(pce_id=b"\x00\x01")
    fails(verifier, sgx(other_pce.sgx_quote()), "PCE-ID mismatch")


# --- TCB levels and the QE identity -------------------------------------------------------------

def test_out_of_date_tcb_is_reported_not_refused(verifier: DcapVerifier,
                                                 intel: FakeIntel) -> None:
    older = intel.platform(components=OUT_OF_DATE_COMPONENTS)
    claims = verifier.verify(sgx(older.sgx_quote()), now=NOW)
    assert claims.tcb_status == "OutOfDate"
    assert claims.advisory_ids == (OUT_OF_DATE_ADVISORY,)


def test_a_lower_pcesvn_selects_a_lower_level(verifier: DcapVerifier, intel: FakeIntel) -> None:
    older_pce = intel.platform(pce_svn=12)  # components UpToDate, PCESVN below 13
    assert verifier.verify(sgx(older_pce.sgx_quote()), now=NOW).tcb_status == "OutOfDate"


def test_revoked_tcb_is_refused(verifier: DcapVerifier, intel: FakeIntel) -> None:
    revoked = intel.platform(components=REVOKED_COMPONENTS, pce_svn=10)
    fails(verifier, sgx(revoked.sgx_quote()), "TCB status Revoked")


def test_tcb_below_every_level(verifier: DcapVerifier, intel: FakeIntel) -> None:
    ancient = intel.platform(components=(1,) * 16, pce_svn=1)
    fails(verifier, sgx(ancient.sgx_quote()), "TCB not supported")


def test_tcb_levels_are_matched_in_intels_order_whatever_the_document_order(
        intel: FakeIntel) -> None:
    levels = [
        tcb_level((3, 3, 3, 3) + (0,) * 12, 11, "OutOfDate"),
        tcb_level((5, 5, 5, 5) + (0,) * 12, 13, "SWHardeningNeeded", advisory_ids=["SA-9"]),
    ]
    verifier = DcapVerifier(collateral=intel.collateral("sgx", levels=levels),
                            trusted_root=intel.root)
    claims = verifier.verify(sgx(intel.platform().sgx_quote()), now=NOW)
    assert (claims.tcb_status, claims.advisory_ids) == ("SWHardeningNeeded", ("SA-9",))


def test_configuration_needed_converges_with_an_out_of_date_qe(intel: FakeIntel) -> None:
    levels = [tcb_level((5, 5, 5, 5) + (0,) * 12, 13, "ConfigurationNeeded")]
    verifier = DcapVerifier(collateral=intel.collateral("sgx", levels=levels),
                            trusted_root=intel.root)
    claims = verifier.verify(sgx(intel.platform().sgx_quote(qe_isv_svn=6)), now=NOW)
    assert claims.tcb_status == "OutOfDateConfigurationNeeded"


def test_out_of_date_quoting_enclave(verifier: DcapVerifier, platform: FakePlatform) -> None:
    claims = verifier.verify(sgx(platform.sgx_quote(qe_isv_svn=6)), now=NOW)
    assert claims.tcb_status == "OutOfDate"
    assert claims.advisory_ids == ("INTEL-SA-00004",)


def test_revoked_or_unsupported_quoting_enclave(verifier: DcapVerifier,
                                                platform: FakePlatform) -> None:
    fails(verifier, sgx(platform.sgx_quote(qe_isv_svn=4)), "TCB status Revoked: the QE's")
    fails(verifier, sgx(platform.sgx_quote(qe_isv_svn=3)),
          "QE identity: ISVSVN 3 is below every TCB level")


def test_wrong_quoting_enclave_identity(verifier: DcapVerifier, platform: FakePlatform) -> None:
    fails(verifier, sgx(platform.sgx_quote(qe_mr_signer=b"\x66" * 32)),
          "QE identity mismatch: MRSIGNER")
    fails(verifier, tdx(platform.tdx_quote(qe_mr_signer=b"\x66" * 32)),
          "QE identity mismatch: MRSIGNER")
    fails(verifier, sgx(platform.sgx_quote(qe_isv_prod_id=9)), "QE identity mismatch: ISVPRODID")
    debug_qe = bytes.fromhex("1700000000000000e700000000000000")  # DEBUG set: masked in
    fails(verifier, sgx(platform.sgx_quote(qe_attributes=debug_qe)),
          "QE identity mismatch: ATTRIBUTES")


def test_tdx_tcb_components_select_the_level(verifier: DcapVerifier,
                                             platform: FakePlatform) -> None:
    older_module = bytes([3, 0, 3]) + bytes(13)
    claims = verifier.verify(tdx(platform.tdx_quote(tee_tcb_svn=older_module)), now=NOW)
    assert claims.tcb_status == "OutOfDate"
    assert claims.advisory_ids == (OUT_OF_DATE_ADVISORY,)


def test_tdx_module_identity_by_major_version(verifier: DcapVerifier,
                                              platform: FakePlatform) -> None:
    # byte 1 = module major version 1 → identity TDX_01; byte 0 = its SVN; bytes 0-1 then no
    # longer count against the tdxtcbcomponents
    current = bytes([4, 1, 5]) + bytes(13)
    assert verifier.verify(tdx(platform.tdx_quote(tee_tcb_svn=current)),
                           now=NOW).tcb_status == "UpToDate"
    older = bytes([3, 1, 5]) + bytes(13)
    claims = verifier.verify(tdx(platform.tdx_quote(tee_tcb_svn=older)), now=NOW)
    assert (claims.tcb_status, claims.advisory_ids) == ("OutOfDate", ("INTEL-SA-00003",))
    fails(verifier, tdx(platform.tdx_quote(tee_tcb_svn=bytes([1, 1, 5]) + bytes(13))),
          "TDX module: SVN 1 is below every level of TDX_01")
    fails(verifier, tdx(platform.tdx_quote(tee_tcb_svn=bytes([4, 2, 5]) + bytes(13))),
          "TDX module mismatch: the TCB Info has no identity TDX_02")


def test_tdx_module_signer_and_attributes_must_match(verifier: DcapVerifier,
                                                     platform: FakePlatform) -> None:
    fails(verifier, tdx(platform.tdx_quote(mr_signer_seam=b"\x01" * 48)),
          "TDX module mismatch: MRSIGNERSEAM")
    fails(verifier, tdx(platform.tdx_quote(seam_attributes=b"\x01" + bytes(7))),
          "TDX module mismatch: SEAMATTRIBUTES")


# --- the verifier remembers signatures, never failures -----------------------------------------

def test_remembered_chains_do_not_hide_later_failures(verifier: DcapVerifier,
                                                      platform: FakePlatform) -> None:
    assert verifier.verify(sgx(platform.sgx_quote()), now=NOW)
    fails(verifier, sgx(platform.sgx_quote(qe_report_signer=new_key())), "QE report signature")
    fails(verifier, sgx(platform.sgx_quote()), "not valid at", now=datetime(2041, 1, 1, tzinfo=UTC))


def test_collateral_is_parsed_and_checked_once(intel: FakeIntel, platform: FakePlatform,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = DcapVerifier(collateral=intel.collateral("sgx"), trusted_root=intel.root)

    def reparsed(*args: object) -> None:
        raise AssertionError("collateral parsed again during verify()")

    monkeypatch.setattr(dcap_collateral, "_signed_json", reparsed)
    monkeypatch.setattr(TcbInfo, "from_json", reparsed)
    monkeypatch.setattr(QeIdentity, "from_json", reparsed)
    for _ in range(3):
        assert verifier.verify(sgx(platform.sgx_quote()), now=NOW).tcb_status == "UpToDate"


# --- fetching collateral from a PCCS -------------------------------------------------------------

def _pccs(intel: FakeIntel, tee: str, *, status: int = 200,
          with_chain: bool = True) -> httpx.Client:
    chain = urllib.parse.quote(pem(intel.tcb_signing, intel.root).decode())
    documents = {
        f"/{tee}/certification/v4/tcb": (
            intel.sign_document("tcbInfo", intel.tcb_info(tee)), "TCB-Info-Issuer-Chain"),
        f"/{tee}/certification/v4/qe/identity": (
            intel.sign_document("enclaveIdentity", intel.qe_identity(tee)),
            "SGX-Enclave-Identity-Issuer-Chain"),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path not in documents:
            return httpx.Response(404)
        if request.url.path.endswith("/tcb"):
            assert request.url.params["fmspc"] == FMSPC.hex().upper()
        body, header = documents[request.url.path]
        headers = {header: chain} if with_chain else {}
        return httpx.Response(status, content=body, headers=headers)

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_fetch_from_pccs(intel: FakeIntel, platform: FakePlatform, tee: str) -> None:
    fetched = fetch_from_pccs("https://pccs.test:8081/", FMSPC, tee=tee, client=_pccs(intel, tee))
    assert fetched.tee == tee and fetched.fmspc == FMSPC
    verifier = DcapVerifier(collateral=fetched, trusted_root=intel.root)
    quote = platform.sgx_quote() if tee == "sgx" else platform.tdx_quote()
    assert verifier.verify(Evidence(tee=tee, data=quote), now=NOW).tcb_status == "UpToDate"


def test_fetch_from_pccs_failures(intel: FakeIntel) -> None:
    with pytest.raises(AttestationFailed, match="answered 503"):
        fetch_from_pccs("https://pccs.test", FMSPC.hex(), client=_pccs(intel, "sgx", status=503))
    with pytest.raises(AttestationFailed, match="no TCB-Info-Issuer-Chain header"):
        fetch_from_pccs("https://pccs.test", FMSPC, client=_pccs(intel, "sgx", with_chain=False))

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(AttestationFailed, match="unreachable"):
        fetch_from_pccs("https://pccs.test", FMSPC,
                        client=httpx.Client(transport=httpx.MockTransport(unreachable)))
    with pytest.raises(ValueError, match="FMSPC"):
        fetch_from_pccs("https://pccs.test", "00906e")


# --- the real quotes and collateral, against the pinned Intel certificates ----------------------

REAL_QUOTES = {
    "occlum_quote.dat": ("sgx", "00606a000000"),
    "tdx_quote_4.dat": ("tdx", "50806f000000"),
    "tdx_quote_5.dat": ("tdx", "90c06f000000"),
}


def _real(name: str) -> Evidence:
    return Evidence(tee=REAL_QUOTES[name][0], data=(VECTORS / name).read_bytes())


def test_the_pinned_certificates_are_the_expected_ones() -> None:
    root = intel_sgx_root_ca()
    assert root.fingerprint(hashes.SHA256()).hex() == INTEL_SGX_ROOT_CA_SHA256
    signing, chained_root = intel_tcb_signing_chain()
    assert chained_root == root
    assert signing.fingerprint(hashes.SHA256()).hex() == INTEL_SGX_TCB_SIGNING_SHA256
    signing.verify_directly_issued_by(root)


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
def test_real_quotes_chain_and_signatures_verify(name: str) -> None:
    verified = DcapVerifier().verify_signatures(_real(name), now=REAL_NOW)
    assert verified.pck.fmspc.hex() == REAL_QUOTES[name][1]
    assert verified.pck.pce_id == b"\x00\x00"
    # the chain embedded in the quote ends at exactly the pinned root
    embedded = verified.quote.signature_data.certification_data
    assert embedded.count(b"-----BEGIN CERTIFICATE-----") == 3
    assert verified.pck_chain[-1] == intel_sgx_root_ca()
    assert pem(verified.pck_chain[-1]) in embedded
    assert isinstance(verified.quote, SgxQuote if REAL_QUOTES[name][0] == "sgx" else TdxQuote)


def test_real_pck_extension_matches_its_cpusvn() -> None:
    verified = DcapVerifier().verify_signatures(_real("tdx_quote_4.dat"), now=REAL_NOW)
    pck = parse_pck_extensions(verified.pck_chain[0])
    assert pck.sgx_tcb_components == tuple(pck.cpu_svn)
    assert pck.pce_svn == 11


def test_real_quotes_fail_when_tampered_or_out_of_time() -> None:
    verifier = DcapVerifier()
    data = bytearray(_real("tdx_quote_4.dat").data)
    data[568] ^= 0x80  # REPORTDATA
    with pytest.raises(AttestationFailed, match="quote signature"):
        verifier.verify_signatures(tdx(bytes(data)), now=REAL_NOW)
    with pytest.raises(AttestationFailed, match="'Intel SGX PCK Certificate' is not valid at"):
        verifier.verify_signatures(_real("tdx_quote_5.dat"), now=datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(AttestationFailed, match="not at the pinned root"):
        DcapVerifier(trusted_root=FakeIntel.create().root).verify_signatures(
            _real("occlum_quote.dat"), now=REAL_NOW)


def _real_collateral() -> Collateral:
    return Collateral.from_files(
        VECTORS / "tcbInfo.json", VECTORS / "enclaveIdentity.json",
        tcb_info_signing_chain=intel_tcb_signing_chain(),
        qe_identity_signing_chain=intel_tcb_signing_chain(),
    )


def test_real_collateral_signatures_verify_under_the_pinned_tcb_signing_certificate() -> None:
    collateral = _real_collateral()
    assert collateral.tee == "tdx" and collateral.fmspc.hex() == "00a06d080000"
    assert [level.status for level in collateral.tcb_info.tcb_levels] == ["UpToDate", "OutOfDate"]
    assert [item.id for item in collateral.tcb_info.tdx_module_identities] == ["TDX_03", "TDX_01"]
    assert collateral.qe_identity.id == "TD_QE"
    DcapVerifier().check_collateral(collateral, now=REAL_NOW)
    with pytest.raises(AttestationFailed, match="TCB Info expired"):
        DcapVerifier().check_collateral(collateral, now=datetime(2025, 12, 1, tzinfo=UTC))
    with pytest.raises(AttestationFailed, match="not at the pinned root"):
        DcapVerifier(trusted_root=FakeIntel.create().root).check_collateral(
            collateral, now=REAL_NOW)
    tampered = (VECTORS / "tcbInfo.json").read_bytes().replace(b'"pcesvn":13', b'"pcesvn":14')
    with pytest.raises(AttestationFailed, match="TCB Info signature is not valid"):
        Collateral(tcb_info=tampered, tcb_info_signing_chain=intel_tcb_signing_chain(),
                   qe_identity=(VECTORS / "enclaveIdentity.json").read_bytes(),
                   qe_identity_signing_chain=intel_tcb_signing_chain())


@pytest.mark.parametrize("name", ["tdx_quote_4.dat", "tdx_quote_5.dat"])
def test_real_tdx_quoting_enclaves_match_the_real_qe_identity(name: str) -> None:
    quote = parse_quote(_real(name).data)
    level = _real_collateral().qe_identity.evaluate(quote.signature_data.qe_report)
    assert level.status == "UpToDate" and level.isv_svn == 4


def test_real_collateral_is_for_another_platform_than_the_real_quotes() -> None:
    verifier = DcapVerifier(collateral=_real_collateral())
    with pytest.raises(AttestationFailed, match=r"FMSPC mismatch: .* 50806f000000"):
        verifier.verify(_real("tdx_quote_4.dat"), now=REAL_NOW)


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
def test_real_quotes_padded_and_appended_still_verify(name: str) -> None:
    evidence = _real(name)
    for data in (_padded(evidence.data), _appended(evidence.data)):
        verified = DcapVerifier().verify_signatures(Evidence(tee=evidence.tee, data=data),
                                                    now=REAL_NOW)
        assert verified.quote.trailing_bytes == len(data) - len(evidence.data)
        assert verified.pck.fmspc.hex() == REAL_QUOTES[name][1]
        claims = verified.quote.to_claims()
        assert dataclasses.replace(claims, trailing_bytes=0) == parse_quote(
            evidence.data).to_claims()


# --- collateral and CRLs recorded in files --------------------------------------------------------

def test_verifier_from_files(intel: FakeIntel, platform: FakePlatform, tmp_path: Path) -> None:
    """Collateral as saved from PCS (no issuer-chain headers), with the chain and CRLs in files,
    PEM or DER: the loader that `ppml serve --dcap-collateral` and offline `attest verify` share."""
    from cryptography.hazmat.primitives import serialization

    from ppml.errors import UsageError

    tcb_info, qe_identity = tmp_path / "tcbInfo.json", tmp_path / "qeIdentity.json"
    tcb_info.write_bytes(intel.sign_document("tcbInfo", intel.tcb_info("sgx")))
    qe_identity.write_bytes(intel.sign_document("enclaveIdentity", intel.qe_identity("sgx")))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pem(*intel.signing_chain()))
    root_crl, pck_crl = tmp_path / "root.crl", tmp_path / "pck.der"
    root_crl.write_bytes(intel.crl("root").public_bytes(serialization.Encoding.PEM))
    pck_crl.write_bytes(intel.crl("pck_ca").public_bytes(serialization.Encoding.DER))

    verifier = dcap.verifier_from_files([(tcb_info, qe_identity)], crls=[root_crl, pck_crl],
                                        trusted_root=intel.root, signing_chain=chain)
    assert verifier.verify(sgx(platform.sgx_quote()), now=NOW).tcb_status == "UpToDate"
    # with CRLs, revocation is enforced
    pck_crl.write_bytes(intel.crl("pck_ca", revoked=[platform.pck_certificate]).public_bytes(
        serialization.Encoding.DER))
    revoking = dcap.verifier_from_files([(tcb_info, qe_identity)], crls=[root_crl, pck_crl],
                                        trusted_root=intel.root, signing_chain=chain)
    fails(revoking, sgx(platform.sgx_quote()), "revoked")
    # the default chain is Intel's pinned TCB signing certificate, which did not sign these
    with pytest.raises(AttestationFailed, match="TCB Info signature is not valid"):
        dcap.verifier_from_files([(tcb_info, qe_identity)], trusted_root=intel.root)
    with pytest.raises(UsageError, match="not a CRL"):
        dcap.load_crls([tcb_info])
