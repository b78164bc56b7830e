"""The attestation service and key release, in process, with simulated evidence and real crypto.

Every rejection here must also leave no key released: the KMS's release calls are made after
each failure and must fail too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from fake_intel_pki import NOW, OUT_OF_DATE_COMPONENTS, FakeIntel
from ppml.attestation.dcap import DcapVerifier
from ppml.attestation.service import NONCE_TTL, AttestationService
from ppml.attestation.simulated import SimulatedVerifier
from ppml.attestation.tokens import TokenSigner, TokenVerifier
from ppml.core.evidence import Claims, Evidence, report_data_for
from ppml.core.policy import Measurements
from ppml.core.simulated import SimulatedReport, sign_report
from ppml.errors import (
    AttestationFailed,
    InvalidCiphertext,
    NonceRejected,
    PermissionDenied,
    PolicyNotFound,
    QuoteFormatError,
    TokenRejected,
)
from ppml.kms.service import KmsService
from ppml.kms.types import RequestContext
from ppml.store import open_database
from ppml.tee.session import TeeSession

MR_ENCLAVE = hashlib.sha256(b"the approved enclave").digest()
MR_SIGNER = hashlib.sha256(b"the approved signer").digest()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def platform() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture()
def services(tmp_path: Path, clock: Clock,
             platform: ec.EllipticCurvePrivateKey) -> Iterator[tuple[KmsService, AttestationService, str]]:
    storage, root = open_database(data_dir=tmp_path / "kms")
    attestation = AttestationService.open(storage, root, {"simulated": SimulatedVerifier([platform.public_key()])},
                                          issuer="https://as.test", now=clock)
    kms, admin = KmsService.attach(storage, root, data_dir=tmp_path / "kms", now=clock,
                                   release_gate=attestation.token_verifier())
    assert admin is not None
    app = kms.enroll(RequestContext(appid=admin.appid))
    yield kms, attestation, app.appid
    kms.close()


def _evidence(platform: ec.EllipticCurvePrivateKey, report_data: bytes, **overrides: Any) -> Evidence:
    fields: dict[str, Any] = {"mr_enclave": MR_ENCLAVE, "mr_signer": MR_SIGNER, "report_data": report_data}
    fields.update(overrides)
    return Evidence(tee="simulated", data=sign_report(SimulatedReport(**fields), platform))


def _attest(attestation: AttestationService, platform: ec.EllipticCurvePrivateKey, policy_ids: list[str],
            *, key: ECKey | None = None, **overrides: Any) -> tuple[str, ECKey]:
    key = key or ECKey.generate_key("P-256", private=True)
    runtime = {"tee_public_key": key.as_dict(private=False)}
    nonce, _ = attestation.new_nonce()
    evidence = _evidence(platform, report_data_for(nonce.encode(), runtime), **overrides)
    result = attestation.attest(evidence, nonce=nonce, runtime_data=runtime, policy_ids=policy_ids)
    return result.token, key


def _policy(attestation: AttestationService, owner: str, **fields: Any) -> str:
    base: dict[str, Any] = {"mr_enclave": MR_ENCLAVE.hex(), "mr_signer": MR_SIGNER.hex(), "allow_simulated": True}
    base.update(fields)
    return attestation.register_policy(owner, Measurements(**base))


# -- the protocol ------------------------------------------------------------------------------


def test_attest_issues_a_token_with_the_claims(services: Any, platform: Any, clock: Clock) -> None:
    _kms, attestation, appid = services
    policy_id = _policy(attestation, appid)
    token, key = _attest(attestation, platform, [policy_id])
    verified = attestation.verify_token(token)
    assert verified.policy_ids == (policy_id,)
    assert verified.claims.mr_enclave == MR_ENCLAVE.hex()
    assert verified.claims.simulated and verified.simulated
    assert verified.claims.tcb_status == "Simulated"
    assert verified.tee_public_key == key.as_dict(private=False)
    assert verified.expires_at - verified.issued_at == 300
    jwks = attestation.signer.jwks()
    assert len(jwks["keys"]) == 1 and "d" not in jwks["keys"][0]


@pytest.mark.parametrize(
    ("policy_fields", "overrides", "reason"),
    [
        ({"allow_simulated": False}, {}, "allow_simulated"),
        ({}, {"mr_enclave": hashlib.sha256(b"other").digest()}, "mr_enclave"),
        ({}, {"mr_signer": hashlib.sha256(b"other").digest()}, "mr_signer"),
        ({}, {"debug": True}, "allow_debug"),
        ({"isv_prod_id": 7}, {"isv_prod_id": 8}, "isv_prod_id"),
        ({"min_isv_svn": 3}, {"isv_svn": 2}, "isv_svn"),
    ],
)
def test_policy_mismatch_is_rejected(services: Any, platform: Any, policy_fields: dict[str, Any],
                                     overrides: dict[str, Any], reason: str) -> None:
    _kms, attestation, appid = services
    policy_id = _policy(attestation, appid, **policy_fields)
    with pytest.raises(AttestationFailed) as caught:
        _attest(attestation, platform, [policy_id], **overrides)
    assert reason in caught.value.reason


def test_debug_enclave_accepted_only_with_allow_debug(services: Any, platform: Any) -> None:
    _, attestation, appid = services
    policy_id = _policy(attestation, appid, allow_debug=True)
    token, _ = _attest(attestation, platform, [policy_id], debug=True)
    assert attestation.verify_token(token).claims.debug


def test_tcb_status_policy() -> None:
    claims = Claims(tee="sgx", report_data="00" * 64, debug=False, tcb_status="OutOfDate",
                    mr_enclave=MR_ENCLAVE.hex(), mr_signer=MR_SIGNER.hex())
    strict = Measurements(mr_enclave=MR_ENCLAVE.hex())
    assert any("TCB status OutOfDate" in r for r in strict.mismatches(claims))
    lenient = Measurements(mr_enclave=MR_ENCLAVE.hex(), accepted_tcb_statuses=("UpToDate", "OutOfDate"))
    assert lenient.mismatches(claims) == []


def test_report_data_must_bind_the_nonce(services: Any, platform: Any) -> None:
    _, attestation, appid = services
    policy_id = _policy(attestation, appid)
    key = ECKey.generate_key("P-256", private=True)
    runtime = {"tee_public_key": key.as_dict(private=False)}
    nonce, _ = attestation.new_nonce()
    other_nonce, _ = attestation.new_nonce()
    evidence = _evidence(platform, report_data_for(other_nonce.encode(), runtime))
    with pytest.raises(AttestationFailed, match="report data"):
        attestation.attest(evidence, nonce=nonce, runtime_data=runtime, policy_ids=[policy_id])


def test_report_data_must_bind_the_runtime_key(services: Any, platform: Any) -> None:
    """A token cannot name a TEE key other than the one the evidence committed to."""
    _, attestation, appid = services
    policy_id = _policy(attestation, appid)
    committed = ECKey.generate_key("P-256", private=True)
    substituted = ECKey.generate_key("P-256", private=True)
    nonce, _ = attestation.new_nonce()
    committed_runtime = {"tee_public_key": committed.as_dict(private=False)}
    evidence = _evidence(platform, report_data_for(nonce.encode(), committed_runtime))
    with pytest.raises(AttestationFailed, match="report data"):
        attestation.attest(evidence, nonce=nonce, runtime_data={"tee_public_key": substituted.as_dict(private=False)},
                           policy_ids=[policy_id])


def test_nonce_is_single_use(services: Any, platform: Any) -> None:
    _, attestation, appid = services
    policy_id = _policy(attestation, appid)
    key = ECKey.generate_key("P-256", private=True)
    runtime = {"tee_public_key": key.as_dict(private=False)}
    nonce, _ = attestation.new_nonce()
    evidence = _evidence(platform, report_data_for(nonce.encode(), runtime))
    attestation.attest(evidence, nonce=nonce, runtime_data=runtime, policy_ids=[policy_id])
    with pytest.raises(NonceRejected):
        attestation.attest(evidence, nonce=nonce, runtime_data=runtime, policy_ids=[policy_id])


def test_nonce_expires(services: Any, platform: Any, clock: Clock) -> None:
    _, attestation, appid = services
    policy_id = _policy(attestation, appid)
    runtime = {"tee_public_key": ECKey.generate_key("P-256", private=True).as_dict(private=False)}
    nonce, _ = attestation.new_nonce()
    clock.now += NONCE_TTL + 1
    evidence = _evidence(platform, report_data_for(nonce.encode(), runtime))
    with pytest.raises(NonceRejected, match="expired"):
        attestation.attest(evidence, nonce=nonce, runtime_data=runtime, policy_ids=[policy_id])


def test_unknown_nonce(services: Any, platform: Any) -> None:
    _, attestation, appid = services
    policy_id = _policy(attestation, appid)
    runtime: dict[str, Any] = {}
    evidence = _evidence(platform, report_data_for(b"made-up", runtime))
    with pytest.raises(NonceRejected):
        attestation.attest(evidence, nonce="made-up", runtime_data=runtime, policy_ids=[policy_id])


def test_untrusted_simulated_platform(services: Any) -> None:
    _, attestation, appid = services
    policy_id = _policy(attestation, appid)
    stranger = ec.generate_private_key(ec.SECP256R1())
    nonce, _ = attestation.new_nonce()
    evidence = _evidence(stranger, report_data_for(nonce.encode(), {}))
    with pytest.raises(AttestationFailed, match="does not trust"):
        attestation.attest(evidence, nonce=nonce, runtime_data={}, policy_ids=[policy_id])


@pytest.mark.parametrize("cut", [0, 10, 400, -1])
def test_truncated_or_forged_simulated_evidence(services: Any, platform: Any, cut: int) -> None:
    _, attestation, appid = services
    policy_id = _policy(attestation, appid)
    nonce, _ = attestation.new_nonce()
    data = bytearray(_evidence(platform, report_data_for(nonce.encode(), {})).data)
    if cut == -1:
        data[100] ^= 1  # inside the signed report body
        expected: type[AttestationFailed] = AttestationFailed
    else:
        data = data[:cut]
        expected = QuoteFormatError
    with pytest.raises(expected):
        attestation.attest(Evidence(tee="simulated", data=bytes(data)), nonce=nonce, runtime_data={},
                           policy_ids=[policy_id])


def test_unknown_tee_type_and_policy(services: Any, platform: Any) -> None:
    _, attestation, _appid = services
    nonce, _ = attestation.new_nonce()
    with pytest.raises(AttestationFailed, match="does not verify tdx"):
        attestation.attest(Evidence(tee="tdx", data=b"x" * 100), nonce=nonce, runtime_data={}, policy_ids=["p"])
    nonce, _ = attestation.new_nonce()
    with pytest.raises(PolicyNotFound):
        attestation.attest(_evidence(platform, report_data_for(nonce.encode(), {})), nonce=nonce,
                           runtime_data={}, policy_ids=["no-such-policy"])


def test_policies_are_private_to_their_owner(services: Any) -> None:
    _kms, attestation, appid = services
    policy_id = _policy(attestation, appid)
    assert attestation.get_policy(policy_id, owner=appid).mr_enclave == MR_ENCLAVE.hex()
    with pytest.raises(PolicyNotFound):
        attestation.get_policy(policy_id, owner="someone-else")


def test_signing_key_survives_restart(tmp_path: Path, clock: Clock, platform: Any) -> None:
    kms, _admin = KmsService.open(data_dir=tmp_path / "kms", now=clock)
    first = AttestationService.open(kms.storage, kms.root_key, {}, issuer="https://as.test", now=clock)
    kms.close()
    kms, _ = KmsService.open(data_dir=tmp_path / "kms", now=clock)
    second = AttestationService.open(kms.storage, kms.root_key, {}, issuer="https://as.test", now=clock)
    assert first.signer.jwks() == second.signer.jwks()
    kms.close()


# -- key release gated on attestation ----------------------------------------------------------


def _gated_key(kms: KmsService, appid: str, policy_id: str) -> tuple[str, bytes, bytes]:
    ctx = RequestContext(appid=appid)
    key = kms.create_key(ctx, release_policy={"policy_ids": [policy_id], "allow_simulated": True})
    plaintext, wrapped = kms.generate_data_key(ctx, key.key_id)
    assert plaintext is not None
    return key.key_id, plaintext, wrapped


def _session(token: str, key: ECKey) -> TeeSession:
    return TeeSession(token=token, private_key=key, claims={}, policy_ids=[], attestation_url="https://as.test")


def test_release_to_an_attested_tee(services: Any, platform: Any) -> None:
    kms, attestation, appid = services
    policy_id = _policy(attestation, appid)
    key_id, plaintext, wrapped = _gated_key(kms, appid, policy_id)
    token, tee_key = _attest(attestation, platform, [policy_id])
    jwe = kms.release_to_tee(RequestContext(appid=appid), key_id, wrapped, token=token)
    assert plaintext.hex() not in jwe and len(jwe.split(".")) == 5
    assert _session(token, tee_key).decrypt_jwe(jwe) == plaintext
    # another TEE key cannot open it
    with pytest.raises(InvalidCiphertext):
        _session(token, ECKey.generate_key("P-256", private=True)).decrypt_jwe(jwe)
    # fresh data keys for the TEE arrive the same way
    jwe2, wrapped2 = kms.generate_data_key_for_tee(RequestContext(appid=appid), key_id, token=token)
    released = _session(token, tee_key).decrypt_jwe(jwe2)
    assert len(released) == 32
    assert _session(token, tee_key).decrypt_jwe(kms.release_to_tee(RequestContext(appid=appid), key_id, wrapped2,
                                                                    token=token)) == released
    # the audit log recorded the presented claims, and no key material
    records = kms.audit_records(limit=10)
    tee_records = [r for r in records if r["operation"] == "DecryptForTee" and r["outcome"] == "ok"]
    assert tee_records and MR_ENCLAVE.hex() in tee_records[-1]["claims"]
    assert all(plaintext.hex() not in str(r) for r in records)
    assert kms.verify_audit().ok


def test_gated_key_never_releases_without_a_token(services: Any) -> None:
    kms, attestation, appid = services
    policy_id = _policy(attestation, appid)
    key_id, _, wrapped = _gated_key(kms, appid, policy_id)
    with pytest.raises(PermissionDenied, match="attested TEEs"):
        kms.decrypt(RequestContext(appid=appid), key_id, wrapped)


def test_token_for_another_policy_is_refused(services: Any, platform: Any) -> None:
    kms, attestation, appid = services
    gate_policy = _policy(attestation, appid)
    other_policy = _policy(attestation, appid, isv_prod_id=0)
    key_id, _, wrapped = _gated_key(kms, appid, gate_policy)
    token, _ = _attest(attestation, platform, [other_policy])
    with pytest.raises(TokenRejected, match="none of the policies"):
        kms.release_to_tee(RequestContext(appid=appid), key_id, wrapped, token=token)


def test_expired_token_is_refused(services: Any, platform: Any, clock: Clock) -> None:
    kms, attestation, appid = services
    policy_id = _policy(attestation, appid)
    key_id, _, wrapped = _gated_key(kms, appid, policy_id)
    token, _ = _attest(attestation, platform, [policy_id])
    clock.now += 301 + 5
    with pytest.raises(TokenRejected, match="expired"):
        kms.release_to_tee(RequestContext(appid=appid), key_id, wrapped, token=token)


def test_resigned_token_is_refused(services: Any, platform: Any, clock: Clock) -> None:
    """A token with the same content signed by another key (an attacker's 'AS') is worthless."""
    kms, attestation, appid = services
    policy_id = _policy(attestation, appid)
    key_id, _, wrapped = _gated_key(kms, appid, policy_id)
    genuine = attestation.verify_token(_attest(attestation, platform, [policy_id])[0])
    forger = TokenSigner.generate(issuer="https://as.test")
    forged = forger.issue(claims=genuine.claims, nonce=genuine.nonce, policy_ids=list(genuine.policy_ids),
                          runtime_data=dict(genuine.runtime_data), now=clock.now)
    with pytest.raises(TokenRejected, match="signature"):
        kms.release_to_tee(RequestContext(appid=appid), key_id, wrapped, token=forged)
    # even with the forger's key id copied into the header, the JWKS does not hold it
    assert TokenVerifier(forger.jwks(), issuer="https://as.test").verify(forged, now=clock.now).policy_ids


@pytest.mark.parametrize("damage", ["payload", "signature", "garbage", "empty"])
def test_tampered_token_is_refused(services: Any, platform: Any, damage: str) -> None:
    kms, attestation, appid = services
    policy_id = _policy(attestation, appid)
    key_id, _, wrapped = _gated_key(kms, appid, policy_id)
    token, _ = _attest(attestation, platform, [policy_id])
    head, payload, signature = token.split(".")
    if damage == "payload":
        token = ".".join([head, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), signature])
    elif damage == "signature":
        token = ".".join([head, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    elif damage == "garbage":
        token = "not.a.token"
    else:
        token = ""
    with pytest.raises(TokenRejected):
        kms.release_to_tee(RequestContext(appid=appid), key_id, wrapped, token=token)


def test_claim_constraints_in_the_release_policy(services: Any, platform: Any) -> None:
    kms, attestation, appid = services
    policy_id = _policy(attestation, appid)
    ctx = RequestContext(appid=appid)
    key = kms.create_key(ctx, release_policy={"policy_ids": [policy_id], "claims": {"min_isv_svn": 5},
                                              "allow_simulated": True})
    _, wrapped = kms.generate_data_key(ctx, key.key_id)
    token, _ = _attest(attestation, platform, [policy_id], isv_svn=4)
    with pytest.raises(TokenRejected, match="isv_svn"):
        kms.release_to_tee(ctx, key.key_id, wrapped, token=token)
    token, tee_key = _attest(attestation, platform, [policy_id], isv_svn=5)
    assert len(_session(token, tee_key).decrypt_jwe(kms.release_to_tee(ctx, key.key_id, wrapped, token=token))) == 32


def test_kms_without_attestation_service_never_releases(tmp_path: Path, clock: Clock) -> None:
    kms, admin = KmsService.open(data_dir=tmp_path / "solo", now=clock)
    ctx = RequestContext(appid=admin.appid)
    key = kms.create_key(ctx, release_policy={"policy_ids": ["p"]})
    _, wrapped = kms.generate_data_key(ctx, key.key_id)
    with pytest.raises(PermissionDenied, match="no attestation service"):
        kms.release_to_tee(ctx, key.key_id, wrapped, token="x.y.z")
    kms.close()


def test_session_never_shows_its_key() -> None:
    key = ECKey.generate_key("P-256", private=True)
    session = _session("header.payload.sig", key)
    assert key.as_dict(private=True)["d"] not in repr(session)
    with pytest.raises(PermissionError):
        session.export(object())



# -- quotes as they arrive: trailing bytes ----------------------------------------------------


def test_claims_round_trip_through_a_token_with_their_trailing_bytes() -> None:
    claims = Claims(tee="tdx", report_data="11" * 64, debug=False, tcb_status="UpToDate",
                    mr_td="22" * 48, trailing_bytes=3259)
    assert claims.to_dict()["trailing_bytes"] == 3259
    assert Claims.from_dict(claims.to_dict()) == claims
    signer = TokenSigner.generate(issuer="https://as.test")
    token = signer.issue(claims=claims, nonce="n", policy_ids=["p"], runtime_data={}, now=1000.0)
    verifier = TokenVerifier(signer.jwks(), issuer="https://as.test")
    assert verifier.verify(token, now=1000.0).claims == claims
    # claims written before the field existed read as "nothing trailed"
    older = {key: value for key, value in claims.to_dict().items() if key != "trailing_bytes"}
    assert Claims.from_dict(older).trailing_bytes == 0
    for bad in (-1, "7", True, 1.5):
        with pytest.raises(ValueError, match="trailing_bytes"):
            Claims.from_dict({**older, "trailing_bytes": bad})


def test_a_padded_dcap_quote_attests_and_its_token_says_what_trailed(tmp_path: Path) -> None:
    """The whole service path with a quote in a zero-padded 8 KiB buffer, as a TDX guest hands
    it out: the signed quote is verified, the padding ignored and counted in the claims."""
    intel = FakeIntel.create()
    platform = intel.platform()
    verifier = DcapVerifier(collateral=[intel.collateral("tdx")], trusted_root=intel.root)
    kms, admin = KmsService.open(data_dir=tmp_path / "kms", now=NOW.timestamp)
    assert admin is not None
    try:
        attestation = AttestationService.open(kms.storage, kms.root_key, {"tdx": verifier},
                                              issuer="https://as.test", now=NOW.timestamp)
        appid = kms.enroll(RequestContext(appid=admin.appid)).appid
        policy_id = attestation.register_policy(appid, Measurements(mr_td="7d" * 48))
        key = ECKey.generate_key("P-256", private=True)
        runtime = {"tee_public_key": key.as_dict(private=False)}
        nonce, _ = attestation.new_nonce()
        quote = platform.tdx_quote(report_data=report_data_for(nonce.encode(), runtime))
        padded = quote + bytes((8 << 10) - len(quote))
        result = attestation.attest(Evidence(tee="tdx", data=padded), nonce=nonce,
                                    runtime_data=runtime, policy_ids=[policy_id])
        claims = attestation.verify_token(result.token).claims
        assert claims.trailing_bytes == len(padded) - len(quote)
        assert claims.mr_td == "7d" * 48 and claims.tcb_status == "UpToDate"
        # the evidence is still bounded as a whole, padding included
        nonce, _ = attestation.new_nonce()
        with pytest.raises(QuoteFormatError, match="64 KiB"):
            attestation.attest(Evidence(tee="tdx", data=quote + bytes(64 << 10)), nonce=nonce,
                               runtime_data=runtime, policy_ids=[policy_id])
    finally:
        kms.close()


def test_release_refuses_an_out_of_date_tcb_unless_the_key_accepts_it(tmp_path: Path) -> None:
    """Real DCAP evidence (fake Intel PKI) from a platform whose TCB is OutOfDate: the attestation
    policy accepts it, but a key's release policy refuses it by default and releases only when it
    names the status in accepted_tcb_statuses (the release gate's own safe default)."""
    intel = FakeIntel.create()
    platform = intel.platform(components=OUT_OF_DATE_COMPONENTS)
    verifier = DcapVerifier(collateral=[intel.collateral("sgx")], trusted_root=intel.root)
    storage, root = open_database(data_dir=tmp_path / "kms")
    attestation = AttestationService.open(storage, root, {"sgx": verifier}, issuer="https://as.test",
                                          now=NOW.timestamp)
    kms, admin = KmsService.attach(storage, root, data_dir=tmp_path / "kms", now=NOW.timestamp,
                                   release_gate=attestation.token_verifier())
    assert admin is not None
    try:
        ctx = RequestContext(appid=kms.enroll(RequestContext(appid=admin.appid)).appid)
        key = ECKey.generate_key("P-256", private=True)
        runtime = {"tee_public_key": key.as_dict(private=False)}
        nonce, _ = attestation.new_nonce()
        quote = platform.sgx_quote(report_data=report_data_for(nonce.encode(), runtime))
        mr_enclave = attestation.verify_evidence(Evidence(tee="sgx", data=quote)).mr_enclave
        policy_id = attestation.register_policy(ctx.appid, Measurements(
            mr_enclave=mr_enclave, accepted_tcb_statuses=("UpToDate", "OutOfDate")))
        token = attestation.attest(Evidence(tee="sgx", data=quote), nonce=nonce, runtime_data=runtime,
                                   policy_ids=[policy_id]).token
        assert attestation.verify_token(token).claims.tcb_status == "OutOfDate"
        strict = kms.create_key(ctx, release_policy={"policy_ids": [policy_id]}).key_id
        lenient = kms.create_key(ctx, release_policy={"policy_ids": [policy_id],
                                                      "accepted_tcb_statuses": ["UpToDate", "OutOfDate"]}).key_id
        _, wrapped = kms.generate_data_key(ctx, strict)
        with pytest.raises(TokenRejected, match="TCB status OutOfDate"):
            kms.release_to_tee(ctx, strict, wrapped, token=token)
        plaintext, wrapped = kms.generate_data_key(ctx, lenient)
        session = TeeSession(token=token, private_key=key, claims={}, policy_ids=[policy_id],
                             attestation_url="https://as.test")
        assert session.decrypt_jwe(kms.release_to_tee(ctx, lenient, wrapped, token=token)) == plaintext
    finally:
        kms.close()
