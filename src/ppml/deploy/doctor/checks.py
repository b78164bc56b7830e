"""All of ``ppml doctor``'s checks in one run: what to check (:class:`DoctorOptions`) and
:func:`run_checks`, one :class:`CheckResult` per check in :data:`CHECKS` order.

The checks and what they need (docs/doctor.md is the manual)::

    kms           the KMS URI: TLS verified against its CA, /healthz answers "ok", the
                  certificate's expiry
    as            the attestation service URL: TLS verified, the JWKS publishes a signing key
    clock         the servers' HTTP ``Date`` against this host's clock (from the two probes above)
    collateral    TCB Info / QE Identity (files or a PCCS): signed, ``nextUpdate`` not past or near
    credentials   the KMS credentials file: owner, mode, and that it parses (its content is never shown)
    spark-secret  the Spark RPC secret file: owner, mode, length (never its content)
    tee           the TEE device of this host or pod for the chosen ``--tee``

A check that cannot run because its input was not given is a FAIL that names the missing input:
"exit 0 only when all pass" must not be earned by configuring less. Only the operator skips a
check (``skip=``), and a skipped check prints a SKIP line saying so. WARN is for what works now
and will break soon (a certificate or collateral near its end) and for a TEE that protects nothing
(``none``, ``simulated``): it is not a pass either.

Time, the filesystem root of the device checks, the user and groups that files are judged
against, and the HTTP timeout are parameters, so tests drive every check without patching.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509

from ppml.deploy.doctor.collateral import COLLATERAL_WARN_DAYS, check_collateral
from ppml.deploy.doctor.files import check_credentials, check_spark_secret
from ppml.deploy.doctor.result import CheckResult, FileIdentity, Status
from ppml.deploy.doctor.services import (
    CERT_WARN_DAYS,
    MAX_CLOCK_SKEW,
    Probe,
    check_attestation_service,
    check_clock,
    check_kms,
    probe_service,
)
from ppml.deploy.doctor.tee import TEES, check_tee
from ppml.errors import PpmlError, UsageError
from ppml.kms.remote import CA_ENV as KMS_CA_ENV
from ppml.kms.remote import CREDENTIALS_ENV, KmsEndpoint

__all__ = ["CHECKS", "DoctorOptions", "run_checks"]

CHECKS: Final = ("kms", "as", "clock", "collateral", "credentials", "spark-secret", "tee")
_AS_CA_ENV: Final = "PPML_AS_CA"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DoctorOptions:
    """What ``ppml doctor`` checks (the CLI fills the defaults from the workload's environment)."""

    kms: str | None = None
    attestation_url: str | None = None
    #: One CA bundle for both services (overrides the URIs' and the environment's).
    ca: Path | None = None
    credentials: Path | None = None
    spark_secret: Path | None = None
    tee: str | None = None
    dcap_collateral: tuple[tuple[Path, Path], ...] = ()
    pccs: str | None = None
    fmspc: str | None = None
    pccs_ca: Path | None = None
    skip: frozenset[str] = frozenset()
    max_clock_skew: float = MAX_CLOCK_SKEW
    cert_warn_days: int = CERT_WARN_DAYS
    collateral_warn_days: int = COLLATERAL_WARN_DAYS
    timeout: float = 5.0

    def __post_init__(self) -> None:
        unknown = self.skip - set(CHECKS)
        if unknown:
            raise UsageError(f"unknown check(s) to skip: {', '.join(sorted(unknown))}; "
                             f"checks are {', '.join(CHECKS)}")
        if self.tee is not None and self.tee not in TEES:
            raise UsageError(f"--tee must be one of {', '.join(TEES)}, not {self.tee!r}")


def _kms_endpoint(options: DoctorOptions, environ: Mapping[str, str]) -> KmsEndpoint | CheckResult:
    assert options.kms is not None
    scheme = urlsplit(options.kms).scheme
    if scheme not in ("ppml+https", "https", "ehsm+https"):
        return CheckResult(name="kms", status=Status.FAIL, detail=f"{options.kms.split('?')[0]}: not a remote KMS URI",
                           fix="give the deployment's KMS: --kms ppml+https://HOST:PORT?ca=FILE (plain HTTP and "
                               "local key stores are not a deployment's KMS)")
    try:
        endpoint = KmsEndpoint.parse(options.kms, environ)
    except PpmlError as exc:
        return CheckResult(name="kms", status=Status.FAIL, detail=str(exc), fix="fix the KMS URI")
    return dataclasses.replace(endpoint, ca_path=options.ca) if options.ca else endpoint


def _attestation_endpoint(url: str, ca: Path | None, environ: Mapping[str, str]) -> tuple[str, Path | None]:
    """(base URL, CA bundle) as :class:`ppml.attestation.client.AttestationClient` reads them:
    ``https://`` or ``ppml+https://``, the CA from ``ca``, else ``?ca=``, else $PPML_AS_CA."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("https", "ppml+https") else parts.scheme
    if ca is None:
        named = parse_qs(parts.query).get("ca", [environ.get(_AS_CA_ENV, "")])[0]
        ca = Path(named).expanduser() if named else None
    return f"{scheme}://{parts.netloc}", ca


def run_checks(options: DoctorOptions, *, environ: Mapping[str, str] | None = None,
               now: Callable[[], float] = time.time, device_root: Path = Path("/"),
               identity: FileIdentity | None = None,
               pccs_transport: httpx.BaseTransport | None = None,
               collateral_signing_chain: Sequence[x509.Certificate] | None = None) -> list[CheckResult]:
    """Every check in :data:`CHECKS` order, one result each (SKIP for those in ``options.skip``).

    ``now``, ``device_root`` (``/``), ``identity`` (this process's user), ``pccs_transport`` and
    ``collateral_signing_chain`` (Intel's) are there for tests and private PKIs."""
    environ = os.environ if environ is None else environ
    identity = identity or FileIdentity.current()
    results: dict[str, CheckResult] = {}
    probes: list[Probe] = []
    endpoint = _kms_endpoint(options, environ) if options.kms is not None else None
    credentials = options.credentials
    if credentials is None and isinstance(endpoint, KmsEndpoint):
        credentials = endpoint.credentials_path
    if credentials is None and environ.get(CREDENTIALS_ENV):
        credentials = Path(environ[CREDENTIALS_ENV]).expanduser()

    if "kms" not in options.skip:
        if endpoint is None:
            results["kms"] = CheckResult(name="kms", status=Status.FAIL, detail="not checked: no KMS URI given",
                                         fix="give --kms ppml+https://HOST:PORT (or $PPML_KMS), or --skip kms")
        elif isinstance(endpoint, CheckResult):
            results["kms"] = endpoint
        else:
            probe = probe_service("kms", endpoint.base_url, "/healthz", ca_path=endpoint.ca_path,
                                  ca_hint=f"--ca FILE, ?ca=FILE or ${KMS_CA_ENV}", timeout=options.timeout,
                                  now=now, label=endpoint.uri)
            if isinstance(probe, Probe):
                probes.append(probe)
            results["kms"] = check_kms(probe, now=now(), warn_days=options.cert_warn_days)
    if "as" not in options.skip:
        if options.attestation_url is None:
            results["as"] = CheckResult(name="as", status=Status.FAIL,
                                        detail="not checked: no attestation service URL given",
                                        fix="give --as https://HOST:PORT (or $PPML_AS_URL), or --skip as")
        else:
            base_url, ca_path = _attestation_endpoint(options.attestation_url, options.ca, environ)
            probe = probe_service("as", base_url, "/.well-known/jwks.json", ca_path=ca_path,
                                  ca_hint=f"--ca FILE, ?ca=FILE or ${_AS_CA_ENV}", timeout=options.timeout, now=now)
            if isinstance(probe, Probe):
                probes.append(probe)
            results["as"] = check_attestation_service(probe, now=now(), warn_days=options.cert_warn_days)
    if "clock" not in options.skip:
        results["clock"] = check_clock(probes, max_skew=options.max_clock_skew)
    if "collateral" not in options.skip:
        results["collateral"] = check_collateral(
            tee=options.tee or "", files=options.dcap_collateral, pccs=options.pccs, fmspc=options.fmspc,
            pccs_ca=options.pccs_ca, now=now(), warn_days=options.collateral_warn_days, timeout=options.timeout,
            transport=pccs_transport, signing_chain=collateral_signing_chain)
    if "credentials" not in options.skip:
        results["credentials"] = check_credentials(credentials, identity=identity)
    if "spark-secret" not in options.skip:
        results["spark-secret"] = check_spark_secret(options.spark_secret, identity=identity)
    if "tee" not in options.skip:
        results["tee"] = check_tee(options.tee, root=device_root)
    for name in options.skip:
        results[name] = CheckResult(name=name, status=Status.SKIP, detail=f"skipped (--skip {name})")
    return [results[name] for name in CHECKS]
