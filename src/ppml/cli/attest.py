"""``ppml attest …`` and ``ppml tee run``: wiring for the attestation service and the TEE gate."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppml.errors import AttestationFailed, InputError, PpmlError, QuoteFormatError, UnsafeWarning, UsageError

__all__ = ["add_commands"]

if TYPE_CHECKING:
    from ppml.core.evidence import Evidence

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


def _read_evidence(path: Path) -> bytes:
    """The file's bytes, refused past the size any evidence may have (64 KiB, padding included)."""
    from ppml.attestation.quote import MAX_QUOTE_SIZE

    with open(path, "rb") as file:
        data = file.read(MAX_QUOTE_SIZE + 1)
    if len(data) > MAX_QUOTE_SIZE:
        raise InputError(path, f"larger than {MAX_QUOTE_SIZE >> 10} KiB: not a quote")
    return data


def _evidence_from_file(path: Path, tee: str | None) -> Evidence:
    from ppml.attestation.describe import detect_tee
    from ppml.core.evidence import Evidence

    data = _read_evidence(path)
    return Evidence(tee=tee or detect_tee(data), data=data)


def cmd_show(args: argparse.Namespace) -> int:
    """Print what a quote (or simulated evidence) states, verifying nothing."""
    from ppml.attestation.describe import describe_evidence

    path = Path(args.quote_file)
    try:
        description = describe_evidence(_read_evidence(path))
    except QuoteFormatError as exc:
        raise InputError(path, f"not an SGX/TDX quote or simulated evidence ({exc.reason})") from exc
    if args.json:
        print(json.dumps(description.to_dict(), indent=2))
    else:
        print("\n".join(description.lines()))
    return 0


def _print_refusal(reason: str, data: bytes) -> None:
    """The reason of a refusal, and beside it what the evidence states (read locally, unverified),
    so the operator sees which measurement to compare."""
    from ppml.attestation.describe import describe_evidence

    print(f"ppml: error: {reason}", file=sys.stderr)
    try:
        lines = describe_evidence(data).lines()
    except QuoteFormatError as exc:
        print(f"  (the file cannot be read as evidence: {exc.reason})", file=sys.stderr)
        return
    print("  the evidence states (read from the file, not verified):", file=sys.stderr)
    print("\n".join(f"    {line}" for line in lines[:-1]), file=sys.stderr)


def _parse_time(text: str) -> datetime:
    """ISO 8601 with a time zone (``2025-06-01T12:00:00Z``), or seconds since the epoch."""
    try:
        if re.fullmatch(r"\d{1,12}(\.\d{1,9})?", text):
            return datetime.fromtimestamp(float(text), UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"--at {text!r}: give an ISO 8601 time (2025-06-01T12:00:00Z) or epoch seconds") from None
    if moment.tzinfo is None:
        raise UsageError(f"--at {text!r} has no time zone: add Z (UTC) or an offset such as +02:00")
    return moment


_OFFLINE_ONLY = (("at", "--at"), ("crl", "--crl"), ("collateral_chain", "--collateral-chain"),
                 ("unsafe_root_ca", "--unsafe-root-ca"))


def cmd_verify(args: argparse.Namespace) -> int:
    evidence = _evidence_from_file(Path(args.quote_file), args.tee)
    if args.collateral:
        return _verify_offline(args, evidence)
    for name, flag in _OFFLINE_ONLY:
        if getattr(args, name):
            raise UsageError(f"{flag} goes with --collateral (offline verification); the service verifies "
                             "with its own collateral at its current time")
    try:
        result = _client(args, auth=True).verify(evidence, policy_id=args.policy)
    except AttestationFailed as exc:
        _print_refusal(str(exc), evidence.data)
        return exc.exit_code
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.policy and not result.get("match"):
        reasons = "; ".join(str(reason) for reason in result.get("mismatches") or ())
        _print_refusal(f"evidence does not match policy {args.policy}: {reasons}", evidence.data)
        return AttestationFailed.exit_code
    return 0


def _verify_offline(args: argparse.Namespace, evidence: Evidence) -> int:
    """DCAP verification here, against collateral recorded in files, at ``--at`` (default now)."""
    from cryptography import x509

    from ppml.attestation.dcap import verifier_from_files

    if args.policy:
        raise UsageError("--policy is evaluated by the service; offline verification (--collateral) "
                         "prints the verified claims to compare yourself")
    if evidence.tee not in ("sgx", "tdx"):
        raise UsageError(f"--collateral verifies SGX and TDX quotes, not {evidence.tee} evidence")
    at = _parse_time(args.at) if args.at else datetime.now(UTC)
    root = None
    if args.unsafe_root_ca:
        try:
            root = x509.load_pem_x509_certificate(Path(args.unsafe_root_ca).read_bytes())
        except ValueError:
            raise UsageError(f"--unsafe-root-ca {args.unsafe_root_ca}: not a PEM certificate") from None
        warnings.warn(f"--unsafe-root-ca: trusting {root.subject.rfc4514_string()} instead of Intel's pinned "
                      "SGX Root CA; a success proves nothing about Intel hardware", UnsafeWarning, stacklevel=1)
    try:
        verifier = verifier_from_files(
            [(Path(tcb_info), Path(qe_identity)) for tcb_info, qe_identity in args.collateral],
            crls=[Path(crl) for crl in args.crl or ()], trusted_root=root,
            signing_chain=Path(args.collateral_chain) if args.collateral_chain else None)
        claims = verifier.verify(evidence, now=at)
    except AttestationFailed as exc:
        _print_refusal(f"{exc} (verifying offline at {at.isoformat()})", evidence.data)
        return exc.exit_code
    print(json.dumps({"claims": claims.to_dict(), "verified_at": at.isoformat(), "offline": True},
                     indent=2, sort_keys=True))
    revocation = "with revocation checked against the CRLs" if args.crl else "revocation NOT checked (no --crl)"
    print(f"ppml: verified offline at {at.isoformat()} against the recorded collateral: signatures, PCK chain "
          f"to the {'given' if root is not None else 'pinned Intel'} root, TCB status {claims.tcb_status}; "
          f"{revocation}", file=sys.stderr)
    return 0


def cmd_verify_service(args: argparse.Namespace) -> int:
    """GenerateQuote with a fresh challenge, then verify the service's evidence locally."""
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


def cmd_simulated_platform(args: argparse.Namespace) -> int:
    from ppml.tee.simulated import load_or_create_platform_key

    key_file = Path(args.key_file)
    if not key_file.parent.is_dir():
        raise UsageError(f"{key_file.parent} does not exist: create it first (mkdir -p {key_file.parent})")
    load_or_create_platform_key(key_file)
    print(key_file.with_name("platform-public.pem"))
    print("ppml: warning: a SIMULATED platform: its evidence proves nothing about hardware", file=sys.stderr)
    return 0


def cmd_tee_run(args: argparse.Namespace) -> int:
    from ppml.tee.registry import open_backend
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


def cmd_tee_launch(args: argparse.Namespace) -> int:
    from ppml.spark.jvm import library_jar
    from ppml.tee.launcher import main as launch

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    # Spark's image entrypoint appends SPARK_EXTRA_CLASSPATH to the executor's class path.
    extra = [p for p in (os.environ.get("SPARK_EXTRA_CLASSPATH", ""), str(library_jar())) if p]
    os.environ["SPARK_EXTRA_CLASSPATH"] = os.pathsep.join(extra)
    return launch(command)


def cmd_tee_gramine_run(args: argparse.Namespace) -> int:
    from ppml.tee.gramine.launch import run_under_gramine

    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    return run_under_gramine(args.app, [args.entry, *rest], os.environ)


def cmd_tee_gramine_entry(args: argparse.Namespace) -> int:
    from ppml.deploy.images import SPARK_ENTRYPOINT
    from ppml.tee.gramine.launch import args_from_environment, inside_gramine

    if not inside_gramine():
        raise UsageError("`ppml tee gramine-entry` runs inside a Gramine enclave only (no /dev/attestation here); "
                         "start it with `ppml tee gramine-run` or `ppml submit --tee sgx-gramine`")
    entry, *rest = args_from_environment(os.environ)
    if entry == "submit":
        from ppml.cli.main import main

        return main(["submit", *rest])
    # spark-pod: Spark's entrypoint with Spark's args, after attestation, under a key agent.
    return cmd_tee_launch(argparse.Namespace(command=[SPARK_ENTRYPOINT, *rest]))


def add_commands(commands: Any) -> None:
    attest = commands.add_parser("attest", help="attestation policies and evidence",
                                 description="Register policies, show and verify evidence, verify the service itself.")
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

    p = sub.add_parser("show", help="print what a quote states (offline; verifies nothing)",
                       description="Print the parsed quote: type and version; SGX MRENCLAVE, MRSIGNER, ISV "
                       "prod id/SVN, attributes and debug; TDX MRTD, RTMR0-3, TD attributes, MRSEAM; report "
                       "data; the PCK certificate's subject, FMSPC and validity; trailing bytes. Reads SGX v3 "
                       "and TDX v4/v5 quotes and simulated evidence. Offline: no service, no credentials, "
                       "and NOTHING is verified.")
    p.add_argument("quote_file", metavar="QUOTE_FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("verify", help="verify a quote file with the service, or offline against collateral",
                       description="Verify a quote (SGX, TDX or simulated) with the service and optionally match "
                       "a policy; or, with --collateral, verify an SGX/TDX quote here, offline, against "
                       "recorded TCB Info and QE Identity at a stated time (--at). A refusal prints the "
                       "reason and the measurements the quote states.")
    _common(p, credentials=True)
    p.add_argument("quote_file", metavar="QUOTE_FILE")
    p.add_argument("--policy", metavar="ID", help="a registered policy to match (service only)")
    p.add_argument("--tee", choices=["sgx", "tdx", "simulated"], help="evidence type (default: detect)")
    offline = p.add_argument_group("offline verification (no service, no credentials)")
    offline.add_argument("--collateral", action="append", nargs=2, metavar=("TCB_INFO", "QE_IDENTITY"),
                         help="Intel TCB Info and QE Identity JSON as PCS/PCCS served them; verify here "
                         "against them (repeat per FMSPC)")
    offline.add_argument("--at", metavar="TIME", help="verify as of TIME: ISO 8601 with a time zone "
                         "(2025-06-01T12:00:00Z) or epoch seconds (default: now)")
    offline.add_argument("--crl", action="append", metavar="FILE",
                         help="Intel SGX Root CA / PCK CA CRL (PEM or DER); with any, revocation is enforced")
    offline.add_argument("--collateral-chain", metavar="PEM", help="the collateral's issuer chain (TCB Signing "
                         "certificate, root), if not Intel's pinned one")
    offline.add_argument("--unsafe-root-ca", metavar="PEM", help="trust this root instead of Intel's pinned SGX "
                         "Root CA (tests, private PKIs): a success then proves nothing about Intel hardware; warns")
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
    p = sub.add_parser("simulated-platform", help="create the SIMULATED TEE's platform key (machines without SGX/TDX)",
                       description="Create (once) the simulated TEE platform's P-256 key (0600) and its public "
                       "half beside it (platform-public.pem), which `ppml serve --trust-simulated-platform` takes. "
                       "Simulated evidence proves nothing about hardware.")
    p.add_argument("key_file", metavar="KEY_FILE", help="where the private key goes (kept if it exists)")
    p.set_defaults(func=cmd_simulated_platform)
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
    p = sub.add_parser("launch", help="a Spark pod's TEE runtime: attest from PPML_TEE_*, run CMD under a key "
                       "agent", description="What a Spark driver or executor pod runs (its container command): "
                       "attest as the PPML_TEE_* environment says (none: the app's credentials), then run CMD (Spark's "
                       "entrypoint) with a key agent, and ppml's JVM library on Spark's class path "
                       "(SPARK_EXTRA_CLASSPATH).")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p.set_defaults(func=cmd_tee_launch)
    from ppml.tee.gramine.launch import ARGV_VARIABLE, ENTRY_COMMANDS

    p = sub.add_parser("gramine-run", help="start the image's enclave under gramine-sgx with ENTRY ARGS (outside it)",
                       description=f"Outside the enclave: run `gramine-sgx APP` with ENTRY and ARGS in {ARGV_VARIABLE} "
                       "(the manifest fixes argv; this variable is how a job's arguments reach it). A Spark pod's "
                       "command under --tee sgx-gramine; Spark appends its args.")
    p.add_argument("--app", required=True, metavar="APP", help="what gramine-sgx runs (APP.manifest.sgx, APP.sig)")
    p.add_argument("entry", choices=ENTRY_COMMANDS, help="what the enclave runs: ppml submit, or a Spark pod's "
                   "entrypoint")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    p.set_defaults(func=cmd_tee_gramine_run)
    p = sub.add_parser("gramine-entry", help="inside the enclave: run what gramine-run asked for, attesting first",
                       description=f"The fixed argv of the image's Gramine manifest: read {ARGV_VARIABLE} and run "
                       "`ppml submit …` or Spark's pod entrypoint under `ppml tee launch`; both attest first.")
    p.set_defaults(func=cmd_tee_gramine_entry)
