"""``ppml doctor``: checks of a ppml deployment from the outside, each returning one
:class:`CheckResult` that says what it saw and, when it did not pass, what to do.

The package follows the checks' seams (each module imports only those listed before it)::

    result      Status, CheckResult, FileIdentity; the summary line
    services    the KMS and the attestation service over verified TLS; clock skew from their Date
    collateral  TCB Info / QE Identity signatures and nextUpdate
    files       the KMS credentials file and the Spark RPC secret file (owner, mode, length)
    tee         the SGX/TDX device of this host or pod
    checks      DoctorOptions and run_checks: all of the above, in order
"""

from __future__ import annotations

from ppml.deploy.doctor.checks import CHECKS, DoctorOptions, run_checks
from ppml.deploy.doctor.collateral import COLLATERAL_WARN_DAYS, check_collateral
from ppml.deploy.doctor.files import (
    MIN_SPARK_SECRET_CHARS,
    check_credentials,
    check_private_file,
    check_spark_secret,
)
from ppml.deploy.doctor.result import CheckResult, FileIdentity, Status, as_json, summary
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

__all__ = [
    "CERT_WARN_DAYS",
    "CHECKS",
    "COLLATERAL_WARN_DAYS",
    "MAX_CLOCK_SKEW",
    "MIN_SPARK_SECRET_CHARS",
    "TEES",
    "CheckResult",
    "DoctorOptions",
    "FileIdentity",
    "Probe",
    "Status",
    "as_json",
    "check_attestation_service",
    "check_clock",
    "check_collateral",
    "check_credentials",
    "check_kms",
    "check_private_file",
    "check_spark_secret",
    "check_tee",
    "probe_service",
    "run_checks",
    "summary",
]
