"""Attestation cost: DCAP quote verification, and the attest-then-release round trip over HTTPS.

    .venv/bin/python bench/attestation.py [--seconds 10] [--parts verifier,roundtrip] [--profile]

1. Verifier (single process, in memory, for a fixed time each). Collateral is built once (its JSON
   parsed and signatures checked), as a server holds it between PCCS refreshes:

   * full ``DcapVerifier.verify`` of an SGX v3 and a TDX v4 quote from the hermetic fake Intel PKI
     (tests/fake_intel_pki.py; CRLs for the root and PCK CA configured), at the fake PKI's ``NOW``;
   * ``DcapVerifier.verify_signatures`` of the three real quotes in tests/vectors/attestation
     (pinned Intel root) at 2025-11-01, inside their certificates' validity; round robin. The real
     collateral is for another FMSPC, so a full verify of those quotes cannot succeed.

   The verifier remembers certificate signatures it verified, so a quote from a platform seen
   before costs 2 ECDSA verifications (QE report, quote) and parsing; an informational line shows
   a verifier that remembers nothing (every chain signature, and the collateral chain, each time).
   Baseline, measured in the same run: ``cryptography``'s verify of one ECDSA-P256-SHA256
   signature, times the 4 signature checks a quote needs (quote, QE report, PCK leaf by PCK CA,
   PCK CA by root), so the ratio shows the verifier's cost beyond the unavoidable crypto.
   Target on 2 cores: >= 300 quotes/s for every kind above.

2. Round trip against a real ``ppml serve --tls-dev --trust-simulated-platform PEM`` (SQLite in a
   temp dir, access log off), one client, persistent HTTPS connections, for a fixed time::

       nonce     GET  /v1/attestation/nonce
       evidence  fresh TEE P-256 key; report data = SHA-512(nonce ‖ {"tee_public_key": JWK});
                 SIMULATED TEE evidence (software platform key, no hardware)
       attest    POST /v1/attestation/attest → token (policy with allow_simulated)
       release   POST /v1/keys/{id}/decrypt with X-PPML-Attestation: the data key as JWE to the
                 TEE key (the key's release policy names the attestation policy)
       decrypt   open the JWE with the TEE key; check it is the data key that was wrapped

   It prints mean, p50 and p99 per round trip, round trips/s, and the same per step.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

TARGET_QUOTES_S = 300.0
#: Inside the real quotes' PCK certificate validity (see tests/test_dcap.py).
REAL_NOW = datetime(2025, 11, 1, tzinfo=UTC)
REAL_QUOTES = {"occlum_quote.dat": "sgx", "tdx_quote_4.dat": "tdx", "tdx_quote_5.dat": "tdx"}
VECTORS = ROOT / "tests" / "vectors" / "attestation"
#: ECDSA verifications one quote needs: quote, QE report, PCK leaf ← PCK CA, PCK CA ← root.
SIGNATURE_CHECKS = 4
MR_ENCLAVE = hashlib.sha256(b"ppml bench enclave").digest()
MR_SIGNER = hashlib.sha256(b"ppml bench signer").digest()


def _timed_loop(fn: Callable[[int], Any], seconds: float) -> tuple[int, float]:
    """Call ``fn(i)`` until ``seconds`` have passed; returns (calls, elapsed)."""
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        fn(count)
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count, now - started


def _pct(sample: list[float], q: float) -> float:
    ordered = sorted(sample)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q + 0.5) - 1))]


# --- 1. verifier ---------------------------------------------------------------------------------

def _verifier_fixtures() -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from fake_intel_pki import NOW, FakeIntel
    from ppml.attestation.dcap import DcapVerifier
    from ppml.core.evidence import Evidence

    intel = FakeIntel.create()
    platform = intel.platform()
    started = time.perf_counter()
    collateral = [intel.collateral("sgx"), intel.collateral("tdx")]  # signs, then parses + verifies
    collateral_s = (time.perf_counter() - started) / 2
    crls = [intel.crl("root"), intel.crl("pck_ca")]
    fake = {
        "sgx": Evidence(tee="sgx", data=platform.sgx_quote(report_data=b"\x42" * 64)),
        "tdx": Evidence(tee="tdx", data=platform.tdx_quote(report_data=b"\x43" * 64)),
    }
    real = [Evidence(tee=tee, data=(VECTORS / name).read_bytes()) for name, tee in REAL_QUOTES.items()]

    def fake_verifier() -> DcapVerifier:
        return DcapVerifier(collateral=collateral, trusted_root=intel.root, crls=crls)

    # sanity: every quote verifies before anything is timed
    for tee, evidence in fake.items():
        claims = fake_verifier().verify(evidence, now=NOW)
        if claims.tee != tee or claims.tcb_status != "UpToDate":
            raise RuntimeError(f"fake {tee} quote did not verify as expected: {claims}")
    for evidence in real:
        DcapVerifier().verify_signatures(evidence, now=REAL_NOW)

    # baseline material: one P-256 key, signatures over messages of a QE report's and a quote's size
    key = ec.generate_private_key(ec.SECP256R1())
    qe_report = os.urandom(384)
    signed = fake["tdx"].data[:632]
    signatures = [(key.sign(m, ec.ECDSA(hashes.SHA256())), m) for m in (qe_report, signed)]
    return {"now": NOW, "fake": fake, "real": real, "fake_verifier": fake_verifier,
            "collateral_s": collateral_s, "baseline_key": key.public_key(), "baseline_sigs": signatures}


def bench_verifier(seconds: float) -> bool:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ppml.attestation.dcap import Collateral, DcapVerifier
    from ppml.attestation.intel_root import intel_tcb_signing_chain

    fx = _verifier_fixtures()
    now, fake, real = fx["now"], fx["fake"], fx["real"]

    # baseline: raw cryptography ECDSA-P256-SHA256 verify
    public, sigs = fx["baseline_key"], fx["baseline_sigs"]
    algorithm = ec.ECDSA(hashes.SHA256())

    def raw(i: int) -> None:
        signature, message = sigs[i & 1]
        public.verify(signature, message, algorithm)

    n, elapsed = _timed_loop(raw, max(1.0, seconds / 2))
    raw_s = elapsed / n

    results: list[tuple[str, int, float]] = []
    verifier = fx["fake_verifier"]()
    for tee in ("sgx", "tdx"):
        evidence = fake[tee]

        def full(_i: int, evidence: Any = evidence) -> None:
            verifier.verify(evidence, now=now)

        n, elapsed = _timed_loop(full, seconds)
        results.append((f"full verify, fake-PKI {tee.upper()} quote", n, elapsed))
    real_verifier = DcapVerifier()
    n, elapsed = _timed_loop(lambda i: real_verifier.verify_signatures(real[i % 3], now=REAL_NOW), seconds)
    results.append(("signatures only, 3 real quotes", n, elapsed))

    # informational: no memory of verified certificates (a new platform every time)
    sgx = fake["sgx"]
    make = fx["fake_verifier"]
    n_cold, elapsed_cold = _timed_loop(lambda _i: make().verify(sgx, now=now), max(1.0, seconds / 2))

    # informational: building a Collateral (JSON parse + 1 signature per document), once per refresh
    tcb_info, qe_identity = (VECTORS / "tcbInfo.json").read_bytes(), (VECTORS / "enclaveIdentity.json").read_bytes()
    chain = intel_tcb_signing_chain()
    n_coll, elapsed_coll = _timed_loop(
        lambda _i: Collateral(tcb_info=tcb_info, tcb_info_signing_chain=chain, qe_identity=qe_identity,
                              qe_identity_signing_chain=chain), 1.0)

    crypto_s = SIGNATURE_CHECKS * raw_s
    print(f"\n== DCAP verifier (1 process, collateral built once, {seconds:.0f} s per row)")
    print(f"{'what':<40}{'quotes/s':>10}{'us/quote':>10}{'x 4 sigs':>10}{'ECDSA run':>11}{'x run':>8}")
    ok = True
    rows = [(label, n, elapsed, 2) for label, n, elapsed in results]
    # without memory: PCK leaf and CA certificates, 2 CRLs, the TCB signing certificate, QE report, quote
    rows.append(("(info) full SGX, verifier w/o memory", n_cold, elapsed_cold, 7))
    for label, n, elapsed, run in rows:
        per = elapsed / n
        if not label.startswith("(info)"):
            ok = ok and n / elapsed >= TARGET_QUOTES_S
        print(f"{label:<40}{n / elapsed:>10.0f}{per * 1e6:>10.0f}{per / crypto_s:>10.2f}{run:>11}"
              f"{per / (run * raw_s):>8.2f}")
    print(f"baseline: 1 ECDSA-P256-SHA256 verify (cryptography) = {raw_s * 1e6:.1f} us "
          f"({1 / raw_s:.0f}/s); x{SIGNATURE_CHECKS} per quote (quote, QE report, PCK leaf, PCK CA) = "
          f"{crypto_s * 1e6:.0f} us -> crypto-only ceiling {1 / crypto_s:.0f} quotes/s")
    print("  x 4 sigs = verifier time / the 4 verifications a quote needs; ECDSA run = verifications the")
    print("  verifier actually performs (it remembers verified certificate and CRL signatures);")
    print("  x run = verifier time / those; the rest is parsing, chain and collateral checks")
    print(f"(info) Collateral build from the real tcbInfo.json + enclaveIdentity.json: "
          f"{elapsed_coll / n_coll * 1e3:.2f} ms (fake PKI incl. signing: {fx['collateral_s'] * 1e3:.2f} ms)")
    print(f"target: >= {TARGET_QUOTES_S:.0f} quotes/s on 2 cores, every non-info row: {'PASS' if ok else 'BELOW'}")
    return ok


def profile_verifier(seconds: float) -> None:
    """cProfile over the cached full verifications (SGX and TDX, alternating)."""
    fx = _verifier_fixtures()
    verifier = fx["fake_verifier"]()
    now, quotes = fx["now"], [fx["fake"]["sgx"], fx["fake"]["tdx"]]
    verifier.verify(quotes[0], now=now)
    verifier.verify(quotes[1], now=now)
    profiler = cProfile.Profile()
    profiler.enable()
    n, _ = _timed_loop(lambda i: verifier.verify(quotes[i & 1], now=now), seconds)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    print(f"\n== cProfile: {n} full verifications (SGX/TDX alternating), cached collateral and chain")
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(25)
    print(out.getvalue())


# --- 2. round trip -------------------------------------------------------------------------------

class _CurrentSession:
    """The AttestationCredential a RemoteKms sends: the session of the latest round trip, so one
    client (and one TLS connection) serves every iteration."""

    session: Any = None

    @property
    def token(self) -> str:
        return str(self.session.token)

    def decrypt_jwe(self, token: str) -> bytes:
        return bytes(self.session.decrypt_jwe(token))


def bench_roundtrip(seconds: float, work: Path, access_log: bool) -> None:
    from joserfc.jwk import ECKey

    from ppml.attestation.client import AttestationClient
    from ppml.core.evidence import report_data_for
    from ppml.core.keys import SECRET_ACCESS
    from ppml.errors import UnsafeWarning
    from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials
    from ppml.tee.backends import SimulatedTee, load_or_create_platform_key
    from ppml.tee.session import TeeSession
    from servers import KmsServer

    # the simulated TEE warns on every quote; it is said once here instead
    warnings.simplefilter("ignore", UnsafeWarning)
    platform_key_path = work / "platform" / "platform-key.pem"
    platform_key = load_or_create_platform_key(platform_key_path)
    tee = SimulatedTee(mr_enclave=MR_ENCLAVE, mr_signer=MR_SIGNER, platform_key=platform_key)
    extra = ["--trust-simulated-platform", str(platform_key_path.with_name("platform-public.pem"))]
    if not access_log:
        extra.append("--no-access-log")
    server = KmsServer(work / "kms", extra=extra)
    clients: list[Any] = []
    try:
        endpoint = KmsEndpoint.parse(server.uri())
        admin = RemoteKms(endpoint, load_credentials(server.admin_credentials))
        clients.append(admin)
        credentials = admin.enroll()
        owner = RemoteKms(endpoint, credentials)
        clients.append(owner)
        policy_id = owner.request("POST", "/v1/attestation/policies", {
            "mr_enclave": MR_ENCLAVE.hex(), "mr_signer": MR_SIGNER.hex(), "allow_simulated": True})["policy_id"]
        release_policy = {"policy_ids": [policy_id], "allow_simulated": True}
        key_id = owner.request("POST", "/v1/keys", {"description": "bench attestation",
                                                    "release_policy": release_policy})["key_id"]
        generated = owner.generate_data_key(key_id)
        expected = generated.data_key.export(SECRET_ACCESS)
        release_body = {"ciphertext": base64.b64encode(generated.wrapped).decode(), "aad": ""}

        attestation = AttestationClient(server.base_url, ca_path=server.ca)
        clients.append(attestation)
        current = _CurrentSession()
        tee_kms = RemoteKms(endpoint, credentials, attestation=current)
        clients.append(tee_kms)

        steps = ("nonce", "evidence", "attest", "release", "decrypt")

        def round_trip() -> list[float]:
            t0 = time.perf_counter()
            nonce = attestation.nonce()
            t1 = time.perf_counter()
            tee_key = ECKey.generate_key("P-256", private=True)
            runtime_data = {"tee_public_key": tee_key.as_dict(private=False)}
            evidence = tee.get_evidence(report_data_for(nonce.encode(), runtime_data))
            t2 = time.perf_counter()
            result = attestation.attest(evidence, nonce=nonce, runtime_data=runtime_data, policy_ids=[policy_id])
            t3 = time.perf_counter()
            current.session = TeeSession(token=result["token"], private_key=tee_key, claims=result["claims"],
                                         policy_ids=list(result["policy_ids"]),
                                         attestation_url=attestation.base_url)
            jwe = tee_kms.request("POST", f"/v1/keys/{key_id}/decrypt", release_body, key_id=key_id,
                                  attested=True)["jwe"]
            t4 = time.perf_counter()
            plaintext = current.decrypt_jwe(jwe)
            t5 = time.perf_counter()
            if plaintext != expected:
                raise RuntimeError("the released data key is not the one that was wrapped")
            return [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]

        # the gate really is closed without a token
        from ppml.errors import PermissionDenied
        try:
            owner.unwrap_data_key(key_id, generated.wrapped)
            raise RuntimeError("the gated key was released without attestation")
        except PermissionDenied:
            pass

        warm_until = time.perf_counter() + 1.0
        while time.perf_counter() < warm_until:  # warm-up: TLS sessions, server caches
            round_trip()
        splits: list[list[float]] = []
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            splits.append(round_trip())
        elapsed = time.perf_counter() - started

        totals = [sum(s) for s in splits]
        print(f"\n== attest + release round trip (real `ppml serve`, HTTPS, 1 client, {seconds:.0f} s, "
              f"SIMULATED TEE evidence)")
        print(f"round trips: {len(totals)} in {elapsed:.1f} s = {len(totals) / elapsed:.1f}/s")
        print(f"{'step':<12}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}{'share':>8}")
        total_mean = statistics.fmean(totals)
        for index, name in enumerate(steps):
            sample = [s[index] for s in splits]
            mean = statistics.fmean(sample)
            print(f"{name:<12}{mean * 1e3:>10.2f}{statistics.median(sample) * 1e3:>10.2f}"
                  f"{_pct(sample, 0.99) * 1e3:>10.2f}{mean / total_mean:>8.0%}")
        print(f"{'round trip':<12}{total_mean * 1e3:>10.2f}{statistics.median(totals) * 1e3:>10.2f}"
              f"{_pct(totals, 0.99) * 1e3:>10.2f}{1:>8.0%}")
        print("  (evidence includes the TEE key generation; release is the HTTPS call, decrypt the local JWE open)")
    except BaseException:
        print(f"server log (tail):\n{server.log()[-4000:]}", file=sys.stderr)
        raise
    finally:
        for client in reversed(clients):
            try:
                client.close()
            except Exception:
                pass
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per row (default 10)")
    parser.add_argument("--parts", default="verifier,roundtrip", help="comma list of: verifier, roundtrip")
    parser.add_argument("--profile", action="store_true", help="also cProfile the cached full verification")
    parser.add_argument("--access-log", action="store_true", help="keep the server's access log on")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"verifier", "roundtrip"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    if "verifier" in parts:
        ok = bench_verifier(args.seconds)
        if args.profile or not ok:
            profile_verifier(max(2.0, args.seconds / 2))
    if "roundtrip" in parts:
        with tempfile.TemporaryDirectory(prefix="ppml-bench-attestation-") as tmp:
            bench_roundtrip(args.seconds, Path(tmp), args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
