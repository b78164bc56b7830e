"""``ppml attest …`` and ``ppml tee run``: wiring for the attestation service and the TEE gate."""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from ppml.errors import AttestationFailed, PpmlError, UsageError

AS_URL_ENV = "PPML_AS_URL"


def _client(args: argparse.Namespace, *, auth: bool):  # type: ignore[no-untyped-def]
    from ppml.attestation.client import AttestationClient
    from ppml.core.signing import native_headers
    from ppml.kms.remote import CREDENTIALS_ENV, load_credentials

    url = args.attestation_url or os.environ.get(AS_URL_ENV)
    if not url:
        raise UsageError(f"give --attestation-url https://HOST:PORT (or ${AS_URL_ENV})")
    signer = None
    if auth:
        path = args.credentials or os.environ.get(CREDENTIALS_ENV)
        if not path:
            raise UsageError(f"this command needs app credentials: --credentials FILE or ${CREDENTIALS_ENV}")
        credentials = load_credentials(path)

        def signer(method: str, request_path: str, body: bytes) -> dict[str, str]:
            return native_headers(credentials.appid, credentials.apikey, method=method, path=request_path, body=body)

    return AttestationClient(url, ca_path=Path(args.ca) if args.ca else None, signer=signer)


def cmd_register(args: argparse.Namespace) -> int:
    policy: dict[str, Any] = {"allow_simulated": args.allow_simulated, "allow_debug": args.allow_debug}
    for name in ("mr_enclave", "mr_signer", "mr_td", "isv_prod_id", "min_isv_svn"):
        value = getattr(args, name)
        if value is not None:
            policy[name] = value
    if args.tcb_status:
        policy["accepted_tcb_statuses"] = args.tcb_status
    if args.allow_simulated:
        print("ppml: warning: this policy accepts SIMULATED TEE evidence, which proves nothing about hardware",
              file=sys.stderr)
    print(_client(args, auth=True).register_policy(policy))
    return 0


def _evidence_from_file(path: Path, tee: str | None):  # type: ignore[no-untyped-def]
    from ppml.core.evidence import Evidence

    data = path.read_bytes()
    if tee is None:
        if data.startswith(b"PPMLSIM1"):
            tee = "simulated"
        elif len(data) >= 8 and int.from_bytes(data[4:8], "little") == 0x81:
            tee = "tdx"
        else:
            tee = "sgx"
    return Evidence(tee=tee, data=data)


def cmd_verify(args: argparse.Namespace) -> int:
    evidence = _evidence_from_file(Path(args.quote_file), args.tee)
    result = _client(args, auth=True).verify(evidence, policy_id=args.policy)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.policy and not result.get("match"):
        print(f"ppml: evidence does not match policy {args.policy}", file=sys.stderr)
        return AttestationFailed.exit_code
    return 0


def cmd_verify_service(args: argparse.Namespace) -> int:
    """GenerateQuote with a fresh challenge, then verify the service's evidence locally."""
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from ppml.attestation.simulated import SimulatedVerifier
    from ppml.core.evidence import Evidence, report_data_for
    from ppml.kms.ehsm_client import EhsmKms
    from ppml.kms.remote import KmsEndpoint

    challenge = base64.b64encode(secrets.token_bytes(32)).decode()
    client = EhsmKms(KmsEndpoint.parse(args.url))
    try:
        result = client.call("GenerateQuote", {"challenge": challenge})
        if result.get("challenge") != challenge:
            raise AttestationFailed("the service echoed another challenge")
        evidence = Evidence(tee=str(result.get("tee", "sgx")), data=base64.b64decode(result["quote"]))
        if evidence.tee == "simulated":
            if not args.trust_simulated_platform:
                raise AttestationFailed("the service attested with the SIMULATED TEE; pass "
                                        "--trust-simulated-platform PEM to accept that (no hardware protection)")
            keys = [load_pem_public_key(Path(p).read_bytes()) for p in args.trust_simulated_platform]
            verifier: Any = SimulatedVerifier(keys)  # type: ignore[arg-type]
        else:
            from ppml.attestation.dcap import DcapVerifier, fetch_from_pccs

            if not args.pccs_url:
                raise AttestationFailed("the service sent a hardware quote; pass --pccs-url URL to fetch the "
                                        "collateral needed to verify it")
            fmspc = DcapVerifier().verify_signatures(evidence, now=datetime.now(UTC)).pck.fmspc
            verifier = DcapVerifier(collateral=fetch_from_pccs(args.pccs_url, fmspc, tee=evidence.tee))
        claims = verifier.verify(evidence, now=datetime.now(UTC))
        if claims.report_data != report_data_for(challenge.encode(), {}).hex():
            raise AttestationFailed("the service's evidence does not bind our challenge")
        if args.mr_enclave and claims.mr_enclave != args.mr_enclave.lower():
            raise AttestationFailed(f"the service runs mr_enclave {claims.mr_enclave}, not {args.mr_enclave}")
    except PpmlError as exc:
        print(f"ppml: {exc.diagnostics()}", file=sys.stderr)
        print("Attestation Fail! The service could not prove its identity.")
        return AttestationFailed.exit_code
    finally:
        client.close()
    print(json.dumps(claims.to_dict(), indent=2, sort_keys=True))
    print("Attestation Success! The service's evidence verifies and binds our challenge.")
    return 0


def _detect_backend() -> str:
    if Path("/dev/attestation/quote").exists():
        return "sgx-gramine"
    if Path("/sys/kernel/config/tsm/report").is_dir():
        return "tdx"
    raise UsageError("no TEE found (no /dev/attestation, no configfs-tsm); for the SIMULATED TEE, which "
                     "protects nothing, pass --backend simulated")


def cmd_tee_run(args: argparse.Namespace) -> int:
    from ppml.tee.backends import open_backend
    from ppml.tee.runtime import FAIL_MESSAGE, run_attested

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    try:
        backend_name = args.backend or _detect_backend()
        options: dict[str, Any] = {}
        if backend_name == "simulated":
            if not (args.enclave_manifest and args.enclave_sig):
                raise UsageError("--backend simulated needs --enclave-manifest and --enclave-sig (from `ppml enclave`)")
            options = {"manifest": Path(args.enclave_manifest), "sigstruct": Path(args.enclave_sig)}
            if args.platform_key:
                options["platform_key_path"] = Path(args.platform_key)
        backend = open_backend(backend_name, **options)
        client = _client(args, auth=False)
    except PpmlError as exc:
        print(f"ppml: {exc.diagnostics()}", file=sys.stderr)
        print(FAIL_MESSAGE, flush=True)
        return 1
    return run_attested(command, backend=backend, client=client, policy_ids=args.policy)


def _common(p: argparse.ArgumentParser, *, credentials: bool) -> None:
    p.add_argument("--attestation-url", metavar="URL", help=f"https://HOST:PORT of ppml serve (or ${AS_URL_ENV})")
    p.add_argument("--ca", metavar="FILE", help="CA certificate to verify the service (or $PPML_AS_CA)")
    if credentials:
        p.add_argument("--credentials", metavar="FILE", help="app credentials (or $PPML_KMS_CREDENTIALS)")


def add_commands(commands: Any) -> None:
    attest = commands.add_parser("attest", help="attestation policies and evidence",
                                 description="Register policies, verify evidence, verify the service itself.")
    sub = attest.add_subparsers(dest="attest_command", metavar="ACTION", required=True)
    p = sub.add_parser("register", help="register an enclave measurement as a policy; print its id",
                       description="Register measurements (from `ppml enclave measure`) as a policy.")
    _common(p, credentials=True)
    p.add_argument("--mr-enclave", metavar="HEX")
    p.add_argument("--mr-signer", metavar="HEX")
    p.add_argument("--mr-td", metavar="HEX", help="TDX MRTD (96 hex)")
    p.add_argument("--isv-prod-id", type=int)
    p.add_argument("--min-isv-svn", type=int)
    p.add_argument("--allow-debug", action="store_true", help="accept debug enclaves (insecure)")
    p.add_argument("--allow-simulated", action="store_true",
                   help="accept evidence from the SIMULATED TEE (no hardware protection; demos and tests)")
    p.add_argument("--tcb-status", action="append", metavar="STATUS",
                   help="an accepted TCB status (repeat); default UpToDate only")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("verify", help="verify a quote file with the service",
                       description="Verify a quote (SGX, TDX or simulated) and optionally match a policy.")
    _common(p, credentials=True)
    p.add_argument("quote_file", metavar="QUOTE_FILE")
    p.add_argument("--policy", metavar="ID")
    p.add_argument("--tee", choices=["sgx", "tdx", "simulated"], help="evidence type (default: detect)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("verify-service", help="make the service attest itself (GenerateQuote) and verify it",
                       description="The equivalent of BigDL's verify-attestation-service.sh, with the "
                       "challenge bound into the evidence.")
    p.add_argument("url", metavar="URL", help="ehsm+https://HOST:PORT?credentials=FILE&ca=FILE")
    p.add_argument("--mr-enclave", metavar="HEX", help="the measurement the service must have")
    p.add_argument("--trust-simulated-platform", action="append", metavar="PEM",
                   help="accept SIMULATED evidence from this platform public key")
    p.add_argument("--pccs-url", metavar="URL", help="PCCS/PCS to fetch DCAP collateral from (hardware quotes)")
    p.set_defaults(func=cmd_verify_service)

    tee = commands.add_parser("tee", help="run a command inside the TEE gate", description="TEE runtime.")
    sub = tee.add_subparsers(dest="tee_command", metavar="ACTION", required=True)
    p = sub.add_parser("run", help="attest, then run CMD (or print the failure and exit 1)",
                       description="Attest before anything else runs. On success print 'Attestation Success!' "
                       "and run CMD with the session on an inherited pipe; on failure print "
                       "'Attestation Fail! Application killed!' and exit 1.")
    _common(p, credentials=False)
    p.add_argument("--backend", choices=["sgx-gramine", "tdx", "simulated"], help="default: detect the hardware")
    p.add_argument("--policy", action="append", required=True, metavar="ID", help="policy to attest against")
    p.add_argument("--enclave-manifest", metavar="FILE", help="simulated backend: the enclave's manifest")
    p.add_argument("--enclave-sig", metavar="FILE", help="simulated backend: its SIGSTRUCT")
    p.add_argument("--platform-key", metavar="FILE", help="simulated backend: platform key (default in PPML_HOME)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p.set_defaults(func=cmd_tee_run)
