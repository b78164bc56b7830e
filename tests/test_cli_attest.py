"""``ppml attest show`` and offline ``ppml attest verify --collateral … --at …``: real quotes, quotes
from the fake Intel PKI, padded quotes and garbage, run through the real command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fake_intel_pki import COLLATERAL_NEXT_UPDATE, NOW, FakeIntel, pem
from ppml.attestation.describe import NOT_VERIFIED
from ppml.cli.main import main
from ppml.core.simulated import SimulatedReport, sign_report

VECTORS = Path(__file__).parent / "vectors" / "attestation"
PPML = [sys.executable, "-m", "ppml.cli.main"]
MR_TD = b"\x7a" * 48
RTMRS = [bytes([index]) * 48 for index in range(1, 5)]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PPML, *args], capture_output=True, text=True, check=False, timeout=120)


def show(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["attest", "show", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def field(text: str, name: str) -> str:
    """The value of one ``name  value`` line of the text output."""
    match = re.search(rf"^{re.escape(name)} +(.+)$", text, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{text}"
    return match.group(1)


def embedded_pck_leaf(quote: bytes) -> x509.Certificate:
    """The PCK leaf certificate, found in the raw quote bytes independently of the parser."""
    start = quote.index(b"-----BEGIN CERTIFICATE-----")
    end = quote.index(b"-----END CERTIFICATE-----", start) + len(b"-----END CERTIFICATE-----")
    return x509.load_pem_x509_certificate(quote[start:end])


# -- attest show: real quotes -----------------------------------------------------------------


def test_show_real_tdx_quote_matches_trustees_parse(capsys: pytest.CaptureFixture[str]) -> None:
    path = VECTORS / "tdx_quote_4.dat"
    expected = json.loads((VECTORS / "parse_tdx_claims_expected.json").read_text())
    body = expected["quote"]["body"]
    code, out, err = show(capsys, path, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["tee"], shown["version"], shown["format"]) == ("tdx", 4, "TDX quote v4 (TD report 1.0)")
    ours = {"mr_td": "mr_td", "rtmr0": "rtmr_0", "rtmr1": "rtmr_1", "rtmr2": "rtmr_2", "rtmr3": "rtmr_3",
            "mr_seam": "mr_seam", "mr_signer_seam": "mrsigner_seam", "td_attributes": "td_attributes",
            "tee_tcb_svn": "tcb_svn", "xfam": "xfam", "seam_attributes": "seam_attributes",
            "mr_config_id": "mr_config_id", "mr_owner": "mr_owner", "mr_owner_config": "mr_owner_config",
            "report_data": "report_data"}
    assert {name: shown[name] for name in ours} == {name: body[theirs] for name, theirs in ours.items()}
    assert shown["report_data"] == expected["report_data"]
    assert shown["debug"] is expected["td_attributes"]["debug"] is True
    leaf = embedded_pck_leaf(path.read_bytes())
    pck = shown["pck_certificate"]
    assert pck["fmspc"] == "50806f000000" and pck["pce_id"] == "0000"
    assert pck["subject"] == leaf.subject.rfc4514_string() and "Intel SGX PCK Certificate" in pck["subject"]
    assert pck["not_before"] == leaf.not_valid_before_utc.isoformat()
    assert pck["not_after"] == leaf.not_valid_after_utc.isoformat()
    assert shown["trailing_bytes"] == 0 and shown["verified"] is False and shown["note"] == NOT_VERIFIED

    code, text, _ = show(capsys, path)
    assert code == 0
    assert field(text, "evidence") == "TDX quote v4 (TD report 1.0), 4936 bytes"
    for name in ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mr_seam", "td_attributes", "report_data"):
        assert field(text, name) == shown[name]
    assert field(text, "debug") == "yes"
    assert field(text, "PCK certificate") == pck["subject"]
    assert field(text, "  FMSPC") == "50806f000000"
    assert field(text, "  valid") == f"{pck['not_before']} to {pck['not_after']}"
    assert "trailing bytes" not in text
    assert text.rstrip("\n").splitlines()[-1] == NOT_VERIFIED


def test_show_real_sgx_quote(capsys: pytest.CaptureFixture[str]) -> None:
    quote = (VECTORS / "occlum_quote.dat").read_bytes()
    code, out, err = show(capsys, VECTORS / "occlum_quote.dat", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["tee"], shown["version"], shown["format"]) == ("sgx", 3, "SGX ECDSA quote v3")
    assert shown["mr_enclave"] == quote[112:144].hex()
    assert shown["mr_signer"] == quote[176:208].hex()
    assert shown["report_data"] == quote[368:432].hex()
    assert shown["isv_prod_id"] == int.from_bytes(quote[48 + 256:48 + 258], "little")
    assert shown["isv_svn"] == int.from_bytes(quote[48 + 258:48 + 260], "little")
    assert shown["attributes"] == quote[48 + 48:48 + 64].hex()
    assert shown["debug"] is bool(quote[48 + 48] & 0x02) is True
    assert shown["pck_certificate"]["fmspc"] == "00606a000000"
    code, text, _ = show(capsys, VECTORS / "occlum_quote.dat")
    assert field(text, "mr_enclave") == quote[112:144].hex()
    assert field(text, "isv_prod_id") == str(shown["isv_prod_id"])
    assert field(text, "debug") == "yes"
    assert text.rstrip("\n").splitlines()[-1] == NOT_VERIFIED


@pytest.mark.parametrize("name", ["occlum_quote.dat", "tdx_quote_4.dat", "tdx_quote_5.dat"])
def test_show_padded_and_appended_quotes(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          name: str) -> None:
    quote = (VECTORS / name).read_bytes()
    _, exact, _ = show(capsys, VECTORS / name, "--json")
    for tail in (bytes((8 << 10) - len(quote)), b"appended by some tool\n"):
        path = tmp_path / f"{name}.arrived"
        path.write_bytes(quote + tail)
        code, out, err = show(capsys, path, "--json")
        assert code == 0, err
        arrived = json.loads(out)
        assert arrived.pop("trailing_bytes") == len(tail)
        assert arrived == {key: value for key, value in json.loads(exact).items() if key != "trailing_bytes"}
        _, text, _ = show(capsys, path)
        assert field(text, "trailing bytes").startswith(f"{len(tail)} after the signed quote")
        assert text.rstrip("\n").splitlines()[-1] == NOT_VERIFIED


def test_show_simulated_evidence(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    platform = ec.generate_private_key(ec.SECP256R1())
    report = SimulatedReport(mr_enclave=b"\x0e" * 32, mr_signer=b"\x05" * 32, report_data=b"\x44" * 64,
                             isv_prod_id=3, isv_svn=9)
    path = tmp_path / "simulated.bin"
    path.write_bytes(sign_report(report, platform))
    code, text, err = show(capsys, path)
    assert code == 0, err
    assert field(text, "evidence").startswith("ppml simulated TEE evidence v1")
    assert "SIMULATED TEE: no hardware protection" in text
    assert field(text, "mr_enclave") == "0e" * 32 and field(text, "isv_svn") == "9"
    assert field(text, "debug") == "no"
    assert text.rstrip("\n").splitlines()[-1] == NOT_VERIFIED
    code, out, _ = show(capsys, path, "--json")
    assert json.loads(out)["simulated"] is True and json.loads(out)["verified"] is False


@pytest.mark.parametrize("content", [b"", b"garbage, not a quote" * 40, bytes(5000),
                                     (VECTORS / "tdx_quote_4.dat").read_bytes()[:3000],
                                     b"PPMLSIM1" + bytes(100), bytes(70 << 10)],
                         ids=["empty", "text", "zeros", "truncated-tdx", "short-simulated", "oversized"])
def test_show_garbage_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "quote.bin"
    path.write_bytes(content)
    result = run("attest", "show", str(path))
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(f"ppml: error: {path}: ")
    assert "not a quote" in result.stderr or "not an SGX/TDX quote or simulated evidence" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_show_a_missing_file(tmp_path: Path) -> None:
    result = run("attest", "show", str(tmp_path / "nope.dat"))
    assert result.returncode == 1 and "No such file" in result.stderr and "Traceback" not in result.stderr


# -- attest verify, offline, against recorded collateral ---------------------------------------


class Recorded:
    """A fake Intel PKI written to files as an auditor would have them: the quote, the TCB Info and
    QE Identity documents, the collateral's issuer chain, the root and the CRLs."""

    def __init__(self, base: Path) -> None:
        self.intel = intel = FakeIntel.create()
        platform = intel.platform()
        self.quote_bytes = platform.tdx_quote(mr_td=MR_TD, rtmrs=RTMRS, report_data=b"\x33" * 64)
        self.quote = base / "quote.dat"
        self.quote.write_bytes(self.quote_bytes)
        self.tcb_info = base / "tcbInfo.json"
        self.tcb_info.write_bytes(intel.sign_document("tcbInfo", intel.tcb_info("tdx")))
        self.qe_identity = base / "qeIdentity.json"
        self.qe_identity.write_bytes(intel.sign_document("enclaveIdentity", intel.qe_identity("tdx")))
        self.chain = base / "tcb-signing-chain.pem"
        self.chain.write_bytes(pem(*intel.signing_chain()))
        self.root = base / "root.pem"
        self.root.write_bytes(pem(intel.root))
        self.crls = []
        for issuer in ("root", "pck_ca"):
            crl = base / f"{issuer}.crl"
            crl.write_bytes(intel.crl(issuer).public_bytes(serialization.Encoding.PEM))
            self.crls.append(crl)

    def args(self, quote: Path | None = None, *, at: str | None = NOW.isoformat(),
             root: bool = True) -> list[str]:
        args = ["attest", "verify", str(quote or self.quote), "--collateral", str(self.tcb_info),
                str(self.qe_identity), "--collateral-chain", str(self.chain)]
        for crl in self.crls:
            args += ["--crl", str(crl)]
        if root:
            args += ["--unsafe-root-ca", str(self.root)]
        if at is not None:
            args += ["--at", at]
        return args


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return Recorded(tmp_path_factory.mktemp("recorded"))


def verify(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_measurements_beside_the_reason(err: str, reason: str) -> None:
    lines = [line for line in err.splitlines() if not line.startswith("ppml: warning:")]
    assert lines[0].startswith("ppml: error: attestation failed:") and reason in lines[0], err
    assert "the evidence states (read from the file, not verified):" in err
    assert re.search(rf"^ +mr_td +{MR_TD.hex()}$", err, re.MULTILINE), err
    for index, rtmr in enumerate(RTMRS):
        assert re.search(rf"^ +rtmr{index} +{rtmr.hex()}$", err, re.MULTILINE), err
    assert re.search(r"^ +report_data +" + "33" * 64 + "$", err, re.MULTILINE), err


@pytest.mark.parametrize("at", [NOW.isoformat(), "2025-06-01T12:00:00Z", str(int(NOW.timestamp())),
                                "2025-06-14T00:00:00+00:00", "2025-05-15T02:00:00+02:00"])
def test_offline_verify_inside_the_collateral_window(capsys: pytest.CaptureFixture[str], recorded: Recorded,
                                                     at: str) -> None:
    code, out, err = verify(capsys, recorded.args(at=at))
    assert code == 0, err
    assert err.startswith("ppml: warning: --unsafe-root-ca: trusting ")
    result = json.loads(out)
    claims = result["claims"]
    assert claims["tee"] == "tdx" and claims["tcb_status"] == "UpToDate" and claims["mr_td"] == MR_TD.hex()
    assert [claims[f"rtmr{index}"] for index in range(4)] == [rtmr.hex() for rtmr in RTMRS]
    assert claims["trailing_bytes"] == 0 and result["offline"] is True
    moment = datetime.fromtimestamp(float(at), UTC) if at.isdigit() else datetime.fromisoformat(at)
    assert datetime.fromisoformat(result["verified_at"]) == moment
    assert "verified offline" in err and "TCB status UpToDate" in err and "revocation checked" in err


def test_offline_verify_of_a_padded_quote(capsys: pytest.CaptureFixture[str], recorded: Recorded,
                                          tmp_path: Path) -> None:
    padded = tmp_path / "padded.dat"
    padded.write_bytes(recorded.quote_bytes + bytes((8 << 10) - len(recorded.quote_bytes)))
    code, out, err = verify(capsys, recorded.args(padded))
    assert code == 0, err
    claims = json.loads(out)["claims"]
    assert claims["trailing_bytes"] == (8 << 10) - len(recorded.quote_bytes) and claims["tcb_status"] == "UpToDate"


@pytest.mark.parametrize(("at", "reason"), [
    ("2025-06-14T00:00:01Z", "collateral: TCB Info expired at 2025-06-14T00:00:00+00:00"),
    ("2025-05-14T23:59:59Z", "collateral: TCB Info is not valid before 2025-05-15T00:00:00+00:00"),
    ("1735689600", "is not valid"),  # 2025-01-01: before the CRLs' lastUpdate too
])
def test_offline_verify_outside_the_collateral_window(capsys: pytest.CaptureFixture[str], recorded: Recorded,
                                                      at: str, reason: str) -> None:
    code, out, err = verify(capsys, recorded.args(at=at))
    assert code == 8 and out == ""
    assert_measurements_beside_the_reason(err, reason)
    assert "verifying offline at" in err.splitlines()[1]


def test_offline_verify_defaults_to_now(capsys: pytest.CaptureFixture[str], recorded: Recorded) -> None:
    """Without --at the recorded collateral and CRLs are judged now: long after they expired."""
    assert datetime.now(UTC) > COLLATERAL_NEXT_UPDATE
    code, _, err = verify(capsys, recorded.args(at=None))
    assert code == 8
    assert_measurements_beside_the_reason(err, "is not valid at")
    stated = re.search(r"verifying offline at (\S+)\)", err)
    assert stated and abs((datetime.fromisoformat(stated.group(1)) - datetime.now(UTC)).total_seconds()) < 60


def test_offline_verify_of_a_tampered_quote(capsys: pytest.CaptureFixture[str], recorded: Recorded,
                                            tmp_path: Path) -> None:
    tampered = bytearray(recorded.quote_bytes)
    tampered[48 + 520] ^= 0x01  # REPORTDATA, under the quote signature
    path = tmp_path / "tampered.dat"
    path.write_bytes(bytes(tampered))
    code, out, err = verify(capsys, recorded.args(path))
    assert code == 8 and out == ""
    assert "quote signature is not valid" in err.splitlines()[1]
    assert re.search(rf"^ +mr_td +{MR_TD.hex()}$", err, re.MULTILINE)
    assert re.search(r"^ +report_data +32" + "33" * 63 + "$", err, re.MULTILINE), err


def test_offline_verify_trusts_only_the_pinned_intel_root_by_default(
        capsys: pytest.CaptureFixture[str], recorded: Recorded) -> None:
    code, _, err = verify(capsys, recorded.args(root=False))
    assert code == 8
    assert_measurements_beside_the_reason(err, "not at the pinned root")


def test_offline_verify_of_a_real_quote_against_real_collateral(capsys: pytest.CaptureFixture[str]) -> None:
    """Intel's pinned root and TCB signing certificate, no overrides: the real collateral verifies
    but belongs to another platform than the real quote, and the refusal says so."""
    code, out, err = verify(capsys, ["attest", "verify", str(VECTORS / "tdx_quote_4.dat"), "--collateral",
                                     str(VECTORS / "tcbInfo.json"), str(VECTORS / "enclaveIdentity.json"),
                                     "--at", "2025-11-01T00:00:00Z"])
    assert code == 8 and out == ""
    assert "FMSPC mismatch" in err.splitlines()[0] and "50806f000000" in err.splitlines()[0]
    expected = json.loads((VECTORS / "parse_tdx_claims_expected.json").read_text())["quote"]["body"]
    assert re.search(rf"^ +mr_td +{expected['mr_td']}$", err, re.MULTILINE)


@pytest.mark.parametrize(("extra", "message"), [
    (["--at", "2025-06-01T12:00:00"], "has no time zone"),
    (["--at", "yesterday"], "ISO 8601"),
    (["--at", "999999999999"], "ISO 8601"),  # past year 9999
    (["--policy", "p-1"], "--policy is evaluated by the service"),
])
def test_offline_verify_usage_errors(capsys: pytest.CaptureFixture[str], recorded: Recorded,
                                     extra: list[str], message: str) -> None:
    args = [arg for arg in recorded.args(root=False, at=None)] + extra
    code, _, err = verify(capsys, args)
    assert code == 2 and message in err


def test_offline_options_need_collateral(capsys: pytest.CaptureFixture[str], recorded: Recorded) -> None:
    for extra in (["--at", "2025-06-01T12:00:00Z"], ["--crl", str(recorded.crls[0])],
                  ["--unsafe-root-ca", str(recorded.root)], ["--collateral-chain", str(recorded.chain)]):
        code, _, err = verify(capsys, ["attest", "verify", str(recorded.quote), *extra])
        assert code == 2 and "goes with --collateral" in err, err


def test_offline_verify_refuses_simulated_evidence(capsys: pytest.CaptureFixture[str], recorded: Recorded,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "simulated.bin"
    report = SimulatedReport(mr_enclave=bytes(32), mr_signer=bytes(32), report_data=bytes(64))
    path.write_bytes(sign_report(report, ec.generate_private_key(ec.SECP256R1())))
    code, _, err = verify(capsys, [*recorded.args(path, root=False)])
    assert code == 2 and "not simulated evidence" in err


def test_offline_verify_with_a_file_that_is_no_crl(capsys: pytest.CaptureFixture[str], recorded: Recorded) -> None:
    code, _, err = verify(capsys, [*recorded.args(root=False), "--crl", str(recorded.tcb_info)])
    assert code == 2 and "not a CRL" in err


def test_offline_verify_from_the_shell_prints_no_traceback(recorded: Recorded, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"\x04\x00\x02\x00" + bytes(600))
    result = run(*recorded.args(garbage))
    assert result.returncode == 8 and "Traceback" not in result.stderr
    assert "ppml: warning: --unsafe-root-ca" in result.stderr
    assert "the file cannot be read as evidence" in result.stderr


def test_serve_loads_recorded_collateral_with_the_shared_loader(tmp_path: Path) -> None:
    """`ppml serve --dcap-collateral` and `--dcap-crl` go through the same loader as offline
    verification: Intel's pinned signing chain for the real recorded collateral."""
    from ppml.attestation.dcap import DcapVerifier
    from ppml.cli.serve import ServeOptions, open_attestation
    from ppml.core.evidence import Evidence
    from ppml.errors import AttestationFailed
    from ppml.store import open_database

    options = ServeOptions(data_dir=tmp_path / "kms", tls_dev=True,
                           dcap_collateral=((VECTORS / "tcbInfo.json", VECTORS / "enclaveIdentity.json"),))
    storage, root = open_database(data_dir=options.data_dir)
    try:
        attestation = open_attestation(storage, root, options)
        assert isinstance(attestation.verifiers["tdx"], DcapVerifier)
        assert attestation.verifiers["sgx"] is attestation.verifiers["tdx"]
        quote = Evidence(tee="tdx", data=(VECTORS / "tdx_quote_4.dat").read_bytes())
        with pytest.raises(AttestationFailed, match=r"FMSPC mismatch: .* 50806f000000 .* 00a06d080000"):
            attestation.verifiers["tdx"].verify(quote, now=datetime(2025, 11, 1, tzinfo=UTC))
    finally:
        storage.dispose()


def test_the_token_issuer_is_the_public_url_when_given(tmp_path: Path) -> None:
    """Bound to 0.0.0.0 in a pod, the service is reached at its Service's name: tokens must name that
    (parties compare the issuer with the URL they attest against)."""
    from ppml.cli.serve import ServeOptions, issuer_url
    from ppml.errors import UsageError

    bound = ServeOptions(data_dir=tmp_path, tls_dev=True, host="0.0.0.0", port=9000)
    assert issuer_url(bound) == "https://0.0.0.0:9000"
    public = ServeOptions(data_dir=tmp_path, tls_dev=True, host="0.0.0.0", public_url="https://kms.example.org:9000/")
    assert issuer_url(public) == "https://kms.example.org:9000"
    for bad in ("http://kms.example.org:9000", "https://", "https://kms.example.org/?x=1", "kms.example.org"):
        with pytest.raises(UsageError, match="public-url"):
            ServeOptions(data_dir=tmp_path, tls_dev=True, public_url=bad)
