"""``ppml doctor``: check a deployment from the outside, one line per check with what to do
(wiring only: the checks are :mod:`ppml.deploy.doctor`).

Defaults come from the environment a ppml workload reads ($PPML_KMS, $PPML_AS_URL, $PPML_KMS_CA,
$PPML_AS_CA, $PPML_KMS_CREDENTIALS, $PPML_TEE_BACKEND, and the Spark RPC secret where ppml's pod
templates mount it), so inside a pod ``ppml doctor`` checks what the workload would use. Exits 0
only when every check passed (or was skipped with ``--skip``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ppml.cli._args import integer

__all__ = ["add_commands"]


def cmd_doctor(args: argparse.Namespace) -> int:
    from ppml.deploy.doctor import DoctorOptions, as_json, run_checks, summary
    from ppml.deploy.k8s import RPC_SECRET_PATH

    environ = os.environ
    spark_secret = args.spark_secret
    if spark_secret is None and Path(RPC_SECRET_PATH).exists():
        spark_secret = RPC_SECRET_PATH
    skip = {name.strip() for value in args.skip for name in value.split(",") if name.strip()}
    options = DoctorOptions(
        kms=args.kms or environ.get("PPML_KMS") or None,
        attestation_url=args.attestation_url or environ.get("PPML_AS_URL") or None,
        ca=Path(args.ca) if args.ca else None,
        credentials=Path(args.credentials) if args.credentials else None,
        spark_secret=Path(spark_secret) if spark_secret else None,
        tee=args.tee or environ.get("PPML_TEE_BACKEND") or None,
        dcap_collateral=tuple((Path(a), Path(b)) for a, b in args.dcap_collateral),
        pccs=args.pccs, fmspc=args.fmspc, pccs_ca=Path(args.pccs_ca) if args.pccs_ca else None,
        skip=frozenset(skip), max_clock_skew=args.max_clock_skew, cert_warn_days=args.cert_warn_days,
        collateral_warn_days=args.collateral_warn_days, timeout=args.timeout,
    )
    results = run_checks(options)
    if args.json:
        print(as_json(results))
    else:
        for result in results:
            print(result.line())
        print(summary(results))
    return 0 if all(r.passed for r in results) else 1


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600 seconds")
    return value


def add_commands(commands: Any) -> None:
    from ppml.deploy.doctor import CERT_WARN_DAYS, CHECKS, COLLATERAL_WARN_DAYS, MAX_CLOCK_SKEW, TEES

    p = commands.add_parser(
        "doctor", help="check a deployment: KMS/AS over verified TLS, clock, collateral, secrets' files, TEE device",
        description="Check a deployment from the outside and print one line per check (PASS, WARN, FAIL or "
        "SKIP) with what to do: the KMS and the attestation service reachable with verified TLS, clock skew "
        "against them, DCAP collateral freshness, the KMS credentials file's owner and mode, the Spark RPC "
        "secret file, and the SGX/TDX device of this host or pod. Exit code 0 only when all pass; a check "
        "whose input is missing fails unless --skip names it. Secrets are never printed, only paths and modes.",
    )
    p.add_argument("--kms", metavar="URI", help="the KMS (ppml+https://HOST:PORT?ca=FILE&credentials=FILE); "
                   "default $PPML_KMS")
    p.add_argument("--as", dest="attestation_url", metavar="URL",
                   help="the attestation service (https://HOST:PORT[?ca=FILE]); default $PPML_AS_URL")
    p.add_argument("--ca", metavar="FILE", help="CA bundle for both services (default: the URIs' ca=, "
                   "$PPML_KMS_CA / $PPML_AS_CA, else the system trust store)")
    p.add_argument("--credentials", metavar="FILE", help="the KMS credentials file (admin or app; default the "
                   "KMS URI's credentials= or $PPML_KMS_CREDENTIALS)")
    p.add_argument("--spark-secret", metavar="FILE", help="the Spark RPC secret file (ppml submit --secret-file; "
                   "default the pod templates' mount, when present)")
    p.add_argument("--tee", choices=TEES, help="the TEE this deployment uses (default $PPML_TEE_BACKEND)")
    p.add_argument("--dcap-collateral", action="append", default=[], nargs=2, metavar=("TCB_INFO", "QE_IDENTITY"),
                   help="collateral files as given to ppml serve (repeatable)")
    p.add_argument("--pccs", metavar="URL", help="fetch the collateral from this PCCS or Intel PCS (API v4)")
    p.add_argument("--fmspc", metavar="HEX", help="with --pccs: the platform's FMSPC (12 hex digits)")
    p.add_argument("--pccs-ca", metavar="FILE", help="with --pccs: its CA bundle (default the system store)")
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   help=f"do not run these checks (comma-separated or repeated): {', '.join(CHECKS)}")
    p.add_argument("--max-clock-skew", type=_seconds, default=MAX_CLOCK_SKEW, metavar="SECONDS",
                   help=f"fail beyond this skew (default {MAX_CLOCK_SKEW:g}: what token verifiers tolerate)")
    p.add_argument("--cert-warn-days", type=integer(0), default=CERT_WARN_DAYS, metavar="DAYS",
                   help=f"warn when a server certificate expires within DAYS (default {CERT_WARN_DAYS})")
    p.add_argument("--collateral-warn-days", type=integer(0), default=COLLATERAL_WARN_DAYS, metavar="DAYS",
                   help=f"warn when collateral's nextUpdate is within DAYS (default {COLLATERAL_WARN_DAYS})")
    p.add_argument("--timeout", type=_seconds, default=5.0, metavar="SECONDS", help="per request (default 5)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON array instead")
    p.set_defaults(func=cmd_doctor)
