"""``ppml doctor``: every check against a real ``ppml serve`` over TLS on loopback, fake device
trees, collateral from the fake Intel PKI and Intel's real documents, and files in each mode."""

from __future__ import annotations

import os
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fake_intel_pki import FakeIntel, pem
from ppml.cli.main import main
from ppml.deploy.doctor import (
    CHECKS,
    MAX_CLOCK_SKEW,
    MIN_SPARK_SECRET_CHARS,
    CheckResult,
    DoctorOptions,
    FileIdentity,
    Probe,
    Status,
    check_clock,
    check_collateral,
    check_credentials,
    check_spark_secret,
    check_tee,
    run_checks,
)
from ppml.errors import KeyStoreUnreadable, UsageError
from ppml.spark.session import read_secret_file, write_secret_file
from servers import KmsServer, free_port

VECTORS = Path(__file__).parent / "vectors" / "attestation"
#: Inside the real Intel TDX collateral's window (issued 2025-10-27/28, nextUpdate 2025-11-26/27).
INTEL_FRESH = datetime(2025, 11, 10, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsServer]:
    kms = KmsServer(tmp_path_factory.mktemp("doctor") / "data")
    yield kms
    kms.stop()


@pytest.fixture(scope="module")
def intel() -> FakeIntel:
    return FakeIntel.create()


def _collateral_files(directory: Path, intel: FakeIntel, *, tee: str = "sgx", issued: datetime,
                      next_update: datetime) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    tcb_info, qe_identity = directory / f"{tee}-tcbInfo.json", directory / f"{tee}-qeIdentity.json"
    tcb_info.write_bytes(intel.sign_document("tcbInfo", intel.tcb_info(tee, issue_date=issued,
                                                                        next_update=next_update)))
    qe_identity.write_bytes(intel.sign_document("enclaveIdentity", intel.qe_identity(tee, issue_date=issued,
                                                                                      next_update=next_update)))
    return tcb_info, qe_identity


def _sgx_host(root: Path) -> Path:
    (root / "dev").mkdir(parents=True)
    (root / "dev/sgx_enclave").touch()
    (root / "var/run/aesmd").mkdir(parents=True)
    (root / "var/run/aesmd/aesm.socket").touch()
    return root


def _secret(path: Path, mode: int = 0o600) -> Path:
    write_secret_file(path)
    path.chmod(mode)
    return path


def _deployment(server: KmsServer, tmp_path: Path, intel: FakeIntel, **changes: object) -> DoctorOptions:
    now = datetime.now(UTC)
    collateral = _collateral_files(tmp_path / "collateral", intel, issued=now - timedelta(days=10),
                                   next_update=now + timedelta(days=20))
    fields: dict[str, object] = {
        "kms": server.uri(), "attestation_url": f"{server.base_url}?ca={server.ca}",
        "credentials": server.admin_credentials, "spark_secret": _secret(tmp_path / "spark.secret"),
        "tee": "sgx-gramine", "dcap_collateral": (collateral,), "timeout": 2.0,
    }
    fields.update(changes)
    return DoctorOptions(**fields)  # type: ignore[arg-type]


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    assert [r.name for r in results] == list(CHECKS)
    return {r.name: r for r in results}


# -- a whole deployment ---------------------------------------------------------------------------


def test_a_healthy_deployment_passes_every_check(server: KmsServer, tmp_path: Path, intel: FakeIntel) -> None:
    results = _by_name(run_checks(_deployment(server, tmp_path, intel), environ={},
                                  device_root=_sgx_host(tmp_path / "root"),
                                  collateral_signing_chain=intel.signing_chain()))
    assert all(r.status is Status.PASS for r in results.values()), [r.line() for r in results.values()]
    assert "TLS verified, /healthz ok; certificate expires" in results["kms"].detail
    assert results["kms"].detail.startswith(f"ppml+https://127.0.0.1:{server.port}:")
    assert "JWKS has 1 signing key(s)" in results["as"].detail
    assert "within 10 s" in results["clock"].detail
    assert "SGX TCB Info" in results["collateral"].detail and "QE QE Identity" in results["collateral"].detail
    assert "mode 0600" in results["credentials"].detail and "appid" in results["credentials"].detail
    assert "64 characters" in results["spark-secret"].detail
    assert results["tee"].detail.startswith("SGX: ")


def test_the_command_prints_one_line_per_check_and_exits_0_only_when_all_pass(
        server: KmsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = _secret(tmp_path / "spark.secret")
    argv = ["doctor", "--kms", server.uri(credentials=server.admin_credentials), "--as", server.base_url,
            "--ca", str(server.ca), "--spark-secret", str(secret), "--tee", "simulated", "--timeout", "2"]
    assert main([*argv, "--skip", "tee"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["PASS", "kms"], ["PASS", "as"], ["PASS", "clock"], ["SKIP", "collateral"], ["PASS", "credentials"],
        ["PASS", "spark-secret"], ["SKIP", "tee"]]
    assert lines[-1] == "all 7 checks passed"
    # The simulated TEE protects nothing: it is a WARN, and no WARN is a pass.
    assert main(argv) == 1
    output = capsys.readouterr().out
    tee_line = next(line for line in output.splitlines() if line.startswith("WARN tee"))
    assert "SIMULATED TEE: no hardware protection" in tee_line and "— fix: " in tee_line
    assert output.splitlines()[-1] == "1 of 7 checks did not pass: tee"
    # Never a secret: neither the Spark secret nor the apikey shows, only paths and modes.
    apikey = server.admin()["apikey"]
    assert secret.read_text().strip() not in output and apikey not in output


def test_the_command_refuses_an_unknown_check_to_skip(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--skip", "kms,dns"]) == UsageError.exit_code
    assert "unknown check(s) to skip: dns" in capsys.readouterr().err


def test_unconfigured_checks_fail_and_say_what_to_give(tmp_path: Path) -> None:
    results = _by_name(run_checks(DoctorOptions(tee="tdx"), environ={}, device_root=tmp_path))
    assert all(r.status is Status.FAIL for r in results.values())
    assert "--kms" in results["kms"].fix and "--as" in results["as"].fix
    assert "--dcap-collateral" in results["collateral"].fix and "--skip collateral" in results["collateral"].fix
    assert "--credentials" in results["credentials"].fix and "--spark-secret" in results["spark-secret"].fix


def test_defaults_come_from_the_workload_environment(server: KmsServer, tmp_path: Path) -> None:
    environ = {"PPML_KMS_CA": str(server.ca), "PPML_AS_CA": str(server.ca),
               "PPML_KMS_CREDENTIALS": str(server.admin_credentials)}
    options = DoctorOptions(kms=f"ppml+https://127.0.0.1:{server.port}", attestation_url=server.base_url,
                            skip=frozenset({"collateral", "spark-secret", "tee"}), timeout=2.0)
    results = _by_name(run_checks(options, environ=environ))
    assert all(r.passed for r in results.values()), [r.line() for r in results.values()]


# -- services: TLS and clock ----------------------------------------------------------------------


def test_a_wrong_ca_fails_with_the_fix(server: KmsServer, tmp_path: Path, intel: FakeIntel) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(pem(intel.root))
    options = DoctorOptions(kms=server.uri(), attestation_url=server.base_url, ca=other_ca, timeout=2.0,
                            skip=frozenset({"collateral", "credentials", "spark-secret", "tee"}))
    results = _by_name(run_checks(options, environ={}))
    for name, variable in (("kms", "$PPML_KMS_CA"), ("as", "$PPML_AS_CA")):
        assert results[name].status is Status.FAIL
        assert f"TLS certificate not trusted by the CA {other_ca}" in results[name].detail
        assert "give the CA that signed the server's certificate" in results[name].fix
        assert variable in results[name].fix
    assert results["clock"].status is Status.FAIL and "not measured" in results["clock"].detail


def test_plain_http_fails_with_the_fix(server: KmsServer) -> None:
    options = DoctorOptions(kms=f"ppml+https://127.0.0.1:{server.port}", attestation_url=f"http://127.0.0.1:{server.port}",
                            skip=frozenset({"clock", "collateral", "credentials", "spark-secret", "tee"}), timeout=2.0)
    results = _by_name(run_checks(options, environ={"PPML_KMS_CA": str(server.ca)}))
    assert results["kms"].status is Status.PASS
    assert results["as"].status is Status.FAIL and "not an https URL" in results["as"].detail
    assert "HTTPS only" in results["as"].fix


def test_a_server_that_does_not_speak_tls_fails_with_the_fix(tmp_path: Path) -> None:
    import http.server
    import threading

    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=plain.serve_forever, daemon=True)
    thread.start()
    try:
        options = DoctorOptions(kms=f"ppml+https://127.0.0.1:{plain.server_address[1]}", timeout=2.0,
                                skip=frozenset(set(CHECKS) - {"kms"}))
        result = _by_name(run_checks(options, environ={}))["kms"]
    finally:
        plain.shutdown()
        plain.server_close()
    assert result.status is Status.FAIL and "does not speak TLS" in result.detail
    assert "point at the TLS port" in result.fix


def test_a_server_that_is_down_fails_fast_with_the_fix() -> None:
    port = free_port()
    options = DoctorOptions(kms=f"ppml+https://127.0.0.1:{port}", attestation_url=f"https://127.0.0.1:{port}",
                            skip=frozenset({"collateral", "credentials", "spark-secret", "tee"}), timeout=1.0)
    started = time.monotonic()
    results = _by_name(run_checks(options, environ={}))
    assert time.monotonic() - started < 3
    for name in ("kms", "as"):
        assert results[name].status is Status.FAIL and "cannot connect" in results[name].detail
        assert "start the service (`ppml serve`)" in results[name].fix


def test_a_certificate_near_its_end_warns(server: KmsServer) -> None:
    options = DoctorOptions(kms=server.uri(), skip=frozenset(set(CHECKS) - {"kms"}), cert_warn_days=100_000,
                            timeout=2.0)
    result = _by_name(run_checks(options, environ={}))["kms"]
    assert result.status is Status.WARN and "renew the server's TLS certificate" in result.fix
    later = time.time() + 100 * 365 * 86400
    expired = _by_name(run_checks(options, environ={}, now=lambda: later))["kms"]
    assert expired.status is Status.FAIL and "certificate expired" in expired.detail


@pytest.mark.parametrize(("offset", "word"), [(-95.0, "ahead of"), (95.0, "behind")])
def test_a_skewed_clock_fails(server: KmsServer, offset: float, word: str) -> None:
    options = DoctorOptions(kms=server.uri(), timeout=2.0,
                            skip=frozenset({"as", "collateral", "credentials", "spark-secret", "tee"}))
    result = _by_name(run_checks(options, environ={}, now=lambda: time.time() + offset))["clock"]
    assert result.status is Status.FAIL
    assert f"127.0.0.1:{server.port} is 9" in result.detail and word in result.detail
    assert "chrony" in result.fix


def _probe(server_date: datetime, sent: float, received: float) -> Probe:
    return Probe(url="https://kms:9000", status_code=200, body={}, certificate_expires=server_date,
                 server_date=server_date, sent=sent, received=received)


def test_clock_skew_is_judged_with_the_date_headers_uncertainty() -> None:
    assert MAX_CLOCK_SKEW == 10  # the tokens' nbf margin plus the verifiers' leeway
    at = datetime(2026, 1, 1, tzinfo=UTC)
    # Date "12:00:00" means 12:00:00.000 up to two seconds later (whole seconds, refreshed once a
    # second): 10.9 s measured ±1 s is not certainly beyond 10 s, 12.5 s is.
    assert check_clock([_probe(at, at.timestamp() - 9.9, at.timestamp() - 9.9)]).status is Status.PASS
    assert check_clock([_probe(at, at.timestamp() - 11.5, at.timestamp() - 11.5)]).status is Status.FAIL
    # A slow round trip widens the uncertainty.
    slow = check_clock([_probe(at, at.timestamp() - 14, at.timestamp() - 6)])
    assert slow.status is Status.PASS and "±5.0 s" in slow.detail
    # The worst of several servers counts.
    results = check_clock([_probe(at, at.timestamp(), at.timestamp()),
                           _probe(at, at.timestamp() + 30, at.timestamp() + 30)])
    assert results.status is Status.FAIL and "behind this host" in results.detail


# -- collateral -------------------------------------------------------------------------------------


def test_intels_real_collateral_is_fresh_inside_its_window_and_stale_after() -> None:
    files = ((VECTORS / "tcbInfo.json", VECTORS / "enclaveIdentity.json"),)
    fresh = check_collateral(tee="tdx", files=files, now=INTEL_FRESH)
    assert fresh.status is Status.PASS, fresh.line()
    assert f"TDX TCB Info {files[0][0]}: nextUpdate 2025-11-26T13:07Z, in 17 days" in fresh.detail
    near = check_collateral(tee="tdx", files=files, now=datetime(2025, 11, 24, tzinfo=UTC).timestamp())
    assert near.status is Status.WARN and "in 2.5 days" in near.detail
    stale = check_collateral(tee="tdx", files=files, now=datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    assert stale.status is Status.FAIL and "stale for 35 days" in stale.detail
    assert "refresh the collateral" in stale.fix


def test_collateral_that_is_not_intels_or_was_altered_fails(tmp_path: Path, intel: FakeIntel) -> None:
    now = datetime.now(UTC)
    files = _collateral_files(tmp_path, intel, issued=now - timedelta(days=1), next_update=now + timedelta(days=30))
    foreign = check_collateral(tee="sgx-gramine", files=(files,), now=now.timestamp())  # Intel's chain by default
    assert foreign.status is Status.FAIL and "cannot load collateral" in foreign.detail
    files[0].write_bytes(files[0].read_bytes().replace(b'"pceId"', b'"pceId" '))
    altered = check_collateral(tee="sgx-gramine", files=(files,), now=now.timestamp(),
                               signing_chain=intel.signing_chain())
    assert altered.status is Status.FAIL


def test_collateral_from_a_pccs(intel: FakeIntel) -> None:
    now = datetime.now(UTC)
    tcb = intel.sign_document("tcbInfo", intel.tcb_info("sgx", issue_date=now - timedelta(days=1),
                                                         next_update=now + timedelta(days=3)))
    qe = intel.sign_document("enclaveIdentity", intel.qe_identity("sgx", issue_date=now - timedelta(days=1),
                                                                   next_update=now + timedelta(days=30)))
    chain = urllib.parse.quote(pem(*intel.signing_chain()).decode())

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/sgx/certification/v4/tcb":
            return httpx.Response(200, content=tcb, headers={"TCB-Info-Issuer-Chain": chain})
        assert request.url.path == "/sgx/certification/v4/qe/identity"
        return httpx.Response(200, content=qe, headers={"SGX-Enclave-Identity-Issuer-Chain": chain})

    result = check_collateral(tee="sgx-gramine", pccs="https://pccs.example:8081", fmspc="00906ed50000",
                              now=now.timestamp(), transport=httpx.MockTransport(handler))
    assert result.status is Status.WARN, result.line()
    assert "PCCS https://pccs.example:8081" in result.detail and "in 3.0 days" in result.detail
    no_fmspc = check_collateral(tee="sgx-gramine", pccs="https://pccs.example:8081", now=now.timestamp())
    assert no_fmspc.status is Status.FAIL and "--fmspc" in no_fmspc.fix


def test_collateral_does_not_apply_to_the_simulated_tee() -> None:
    result = check_collateral(tee="simulated", now=time.time())
    assert result.status is Status.SKIP and "not applicable" in result.detail


# -- files --------------------------------------------------------------------------------------------

ME = FileIdentity.current()


def test_credentials_must_be_private_and_ours(server: KmsServer, tmp_path: Path) -> None:
    path = tmp_path / "app.credentials"
    path.write_bytes(server.admin_credentials.read_bytes())
    for mode in (0o600, 0o400):
        path.chmod(mode)
        assert check_credentials(path, identity=ME).status is Status.PASS
    path.chmod(0o644)
    result = check_credentials(path, identity=ME)
    assert result.status is Status.FAIL and "mode 0644" in result.detail
    assert "readable or writable by others" in result.detail
    assert result.fix.startswith(f"chmod 600 {path}")
    path.chmod(0o640)
    assert "group bits set" in check_credentials(path, identity=ME).detail
    path.chmod(0o600)
    stranger = FileIdentity(uid=ME.uid + 4242, gids=frozenset({4242}))
    result = check_credentials(path, identity=stranger)
    assert result.status is Status.FAIL and "not owned by this user" in result.detail
    assert server.admin()["apikey"] not in result.line()


@pytest.mark.skipif(os.geteuid() != 0, reason="a Secret volume's file is root's: only root can make one here")
def test_a_kubernetes_secret_volume_passes(server: KmsServer, tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_bytes(server.admin_credentials.read_bytes())
    os.chown(path, 0, 185)
    path.chmod(0o440)
    pod_user = FileIdentity(uid=185, gids=frozenset({185}))
    result = check_credentials(path, identity=pod_user)
    assert result.status is Status.PASS and "read-only Secret volume read through fsGroup" in result.detail
    path.chmod(0o460)
    assert check_credentials(path, identity=pod_user).status is Status.FAIL


def test_a_file_that_is_not_credentials_fails(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text("not json")
    path.chmod(0o600)
    result = check_credentials(path, identity=ME)
    assert result.status is Status.FAIL and "not a credentials file" in result.detail
    missing = check_credentials(tmp_path / "nope", identity=ME)
    assert missing.status is Status.FAIL and "no such file" in missing.detail


def test_the_spark_secret_must_exist_be_private_and_long_enough(tmp_path: Path) -> None:
    good = _secret(tmp_path / "secret")
    assert check_spark_secret(good, identity=ME).status is Status.PASS
    missing = check_spark_secret(tmp_path / "missing", identity=ME)
    assert missing.status is Status.FAIL and "no such file" in missing.detail
    good.chmod(0o644)
    loose = check_spark_secret(good, identity=ME)
    assert loose.status is Status.FAIL and "mode 0644" in loose.detail
    short = tmp_path / "short"
    short.write_text("s3cr3t-" * 4 + "\n")
    short.chmod(0o600)
    result = check_spark_secret(short, identity=ME)
    assert result.status is Status.FAIL and "28 characters, fewer than 32" in result.detail
    assert "s3cr3t" not in result.line() and "openssl rand -hex 32" in result.fix


def test_the_spark_secret_floor_is_the_one_ppml_submit_enforces(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    for length, accepted in ((MIN_SPARK_SECRET_CHARS - 1, False), (MIN_SPARK_SECRET_CHARS, True)):
        path.write_text(secrets.token_hex(32)[:length])
        path.chmod(0o600)
        assert (check_spark_secret(path, identity=ME).status is Status.PASS) is accepted
        if accepted:
            read_secret_file(path)
        else:
            with pytest.raises(KeyStoreUnreadable):
                read_secret_file(path)


# -- the TEE device -------------------------------------------------------------------------------------


def test_sgx_needs_the_enclave_device_and_the_aesm_socket(tmp_path: Path) -> None:
    root = _sgx_host(tmp_path)
    assert check_tee("sgx-gramine", root=root).status is Status.PASS
    (root / "var/run/aesmd/aesm.socket").unlink()
    result = check_tee("sgx-gramine", root=root)
    assert result.status is Status.FAIL and "no AESM socket" in result.detail and "aesmd" in result.fix
    (root / "dev/sgx_enclave").unlink()
    result = check_tee("sgx-gramine", root=root)
    assert result.status is Status.FAIL and "sgx_enclave not found" in result.detail
    assert "sgx.intel.com/enclave" in result.fix


def test_inside_gramine_the_attestation_pseudo_files_count(tmp_path: Path) -> None:
    (tmp_path / "dev/attestation").mkdir(parents=True)
    (tmp_path / "dev/attestation/attestation_type").write_text("dcap")
    assert check_tee("sgx-gramine", root=tmp_path).status is Status.PASS
    (tmp_path / "dev/attestation/attestation_type").write_text("epid")
    result = check_tee("sgx-gramine", root=tmp_path)
    assert result.status is Status.FAIL and "'epid'" in result.detail


def test_tdx_needs_configfs_tsm(tmp_path: Path) -> None:
    assert "not a TDX guest" in check_tee("tdx", root=tmp_path).detail
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/tdx_guest").touch()
    result = check_tee("tdx", root=tmp_path)
    assert result.status is Status.FAIL and "no configfs-tsm" in result.detail and "configfs" in result.fix
    (tmp_path / "sys/kernel/config/tsm/report").mkdir(parents=True)
    result = check_tee("tdx", root=tmp_path)
    assert result.status is Status.PASS and "tdx_guest" in result.detail


def test_no_tee_or_a_simulated_one_is_never_a_pass() -> None:
    assert check_tee("simulated").status is Status.WARN and "SIMULATED" in check_tee("simulated").detail
    assert check_tee("none").status is Status.WARN
    unnamed = check_tee(None)
    assert unnamed.status is Status.FAIL and "--tee" in unnamed.fix
