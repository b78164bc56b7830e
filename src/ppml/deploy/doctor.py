"""Checks of a ppml deployment from the outside (``ppml doctor``): each check returns one
:class:`CheckResult` that says what it saw and, when it did not pass, what to do.

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
import enum
import json
import os
import ssl
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import httpx

from ppml.attestation.tokens import NOT_BEFORE_MARGIN, TOKEN_LEEWAY
from ppml.core.signing import REPLAY_WINDOW_MS
from ppml.errors import PpmlError
from ppml.kms.remote import CA_ENV as KMS_CA_ENV
from ppml.kms.remote import CREDENTIALS_ENV, KmsEndpoint, load_credentials
from ppml.transport import client_context

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

CHECKS: Final = ("kms", "as", "clock", "collateral", "credentials", "spark-secret", "tee")
TEES: Final = ("none", "simulated", "sgx-gramine", "tdx")

#: A host whose clock trails the attestation service by more than this rejects fresh tokens as
#: "not yet valid" (``nbf`` is ``iat`` minus the margin, verifiers allow the leeway); the KMS's
#: replay window (±10 minutes on signed requests) is wider, so the tokens set the bound.
MAX_CLOCK_SKEW: Final = float(min(NOT_BEFORE_MARGIN + TOKEN_LEEWAY, REPLAY_WINDOW_MS // 1000))
#: ``ppml.spark.session.read_secret_file`` refuses shorter secrets; ppml generates 64 hex digits.
MIN_SPARK_SECRET_CHARS: Final = 32
CERT_WARN_DAYS: Final = 14
COLLATERAL_WARN_DAYS: Final = 7
_AS_CA_ENV: Final = "PPML_AS_CA"


class Status(enum.StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One check's outcome: ``detail`` says what was seen, ``fix`` what to do (empty on PASS)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def passed(self) -> bool:
        """PASS, or skipped on the operator's say-so."""
        return self.status in (Status.PASS, Status.SKIP)

    def line(self) -> str:
        text = f"{self.status.value} {self.name:<13} {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix else text


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FileIdentity:
    """Who a file is judged for: this process's user and groups, by default."""

    uid: int
    gids: frozenset[int]

    @classmethod
    def current(cls) -> FileIdentity:
        return cls(uid=os.geteuid(), gids=frozenset({os.getegid(), *os.getgroups()}))


# -- services: verified TLS, and the server's clock -------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """One verified-TLS request to a service: what came back and when."""

    url: str
    status_code: int
    body: Any
    certificate_expires: datetime
    #: The reply's ``Date`` header (whole seconds), if it had one.
    server_date: datetime | None
    sent: float
    received: float


def probe_service(name: str, base_url: str, path: str, *, ca_path: Path | None, ca_hint: str,
                  timeout: float = 5.0, now: Callable[[], float] = time.time) -> Probe | CheckResult:
    """GET ``base_url + path`` with verified TLS (the CA bundle, else the system store): the
    :class:`Probe`, or a FAIL result naming the fault and the fix."""
    parts = urlsplit(base_url)
    if parts.scheme != "https":
        return CheckResult(name=name, status=Status.FAIL, detail=f"{base_url}: not an https URL",
                           fix="ppml's services speak HTTPS only: use https:// (ppml serve has no plain HTTP)")
    if ca_path is not None and not ca_path.is_file():
        return CheckResult(name=name, status=Status.FAIL, detail=f"{base_url}: CA bundle {ca_path} not found",
                           fix=f"point {ca_hint} at the CA certificate that signed the server's certificate")
    try:
        context = client_context(ca_path)
    except ssl.SSLError as exc:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{base_url}: CA bundle {ca_path} unusable ({exc})",
                           fix=f"point {ca_hint} at a PEM CA certificate")
    sent = now()
    try:
        with httpx.Client(verify=context, timeout=timeout, headers={"User-Agent": "ppml-doctor/1"}) as client, \
                client.stream("GET", base_url + path) as response:
            ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
            certificate = ssl_object.getpeercert() if ssl_object is not None else None
            response.read()
    except httpx.TransportError as exc:
        detail, fix = _transport_fault(exc, base_url, ca_path, ca_hint, timeout)
        return CheckResult(name=name, status=Status.FAIL, detail=detail, fix=fix)
    received = now()
    if not certificate or "notAfter" not in certificate:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{base_url}: no verified peer certificate",
                           fix="report this: the TLS layer returned no certificate")
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(certificate["notAfter"]), UTC)
    try:
        body = response.json()
    except ValueError:
        body = None
    return Probe(url=base_url, status_code=response.status_code, body=body, certificate_expires=expires,
                 server_date=_http_date(response.headers.get("date")), sent=sent, received=received)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _transport_fault(exc: httpx.TransportError, url: str, ca_path: Path | None, ca_hint: str,
                     timeout: float) -> tuple[str, str]:
    text = str(exc) or type(exc).__name__
    where = urlsplit(url).netloc
    if "CERTIFICATE_VERIFY_FAILED" in text:
        reason = text.split("]")[-1].strip() or text
        if "hostname" in reason.lower() or "IP address mismatch" in reason:
            return (f"{url}: the certificate does not name {where.rsplit(':', 1)[0]} ({reason})",
                    "connect by a name the certificate lists (its subjectAltName), or reissue the certificate")
        trusted = f"the CA {ca_path}" if ca_path else "the system trust store"
        return (f"{url}: TLS certificate not trusted by {trusted} ({reason})",
                f"give the CA that signed the server's certificate: {ca_hint}")
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "http request" in text.lower():
        return (f"{url}: the server at {where} does not speak TLS ({text})",
                "ppml's services are HTTPS only: point at the TLS port of `ppml serve`, or put TLS in front")
    if isinstance(exc, httpx.TimeoutException):
        return (f"{url}: no answer within {timeout:g} s", f"check that {where} is reachable from here "
                "(firewall, NetworkPolicy, service address) and that the server is not stuck")
    if isinstance(exc, httpx.ConnectError):
        return (f"{url}: cannot connect ({text})",
                f"start the service (`ppml serve`) or fix the address: nothing answers at {where}")
    return f"{url}: {text}", f"check the service at {where}"


def _certificate_result(name: str, probe: Probe, what: str, *, now: float, warn_days: int) -> CheckResult:
    days = (probe.certificate_expires.timestamp() - now) / 86400
    expiry = f"certificate expires {probe.certificate_expires:%Y-%m-%d} (in {days:.0f} days)"
    if days <= 0:
        return CheckResult(name=name, status=Status.FAIL,
                           detail=f"{probe.url}: certificate expired on {probe.certificate_expires:%Y-%m-%d}",
                           fix="renew the server's TLS certificate and restart the service")
    if days < warn_days:
        return CheckResult(name=name, status=Status.WARN, detail=f"{probe.url}: {what}; {expiry}",
                           fix=f"renew the server's TLS certificate within {days:.0f} days")
    return CheckResult(name=name, status=Status.PASS, detail=f"{probe.url}: {what}; {expiry}")


def check_kms(probe: Probe | CheckResult, *, uri: str, now: float, warn_days: int = CERT_WARN_DAYS) -> CheckResult:
    """The KMS answered /healthz with ``{"status": "ok"}`` over verified TLS."""
    if isinstance(probe, CheckResult):
        return probe
    body = probe.body if isinstance(probe.body, dict) else {}
    if probe.status_code == 503:
        return CheckResult(name="kms", status=Status.FAIL,
                           detail=f"{uri}: TLS verified, but the KMS's storage is unavailable "
                                  f"({body.get('reason', 'no reason given')})",
                           fix="check the KMS's database (the --db URL of `ppml serve`) and its logs")
    if probe.status_code != 200 or body.get("status") != "ok":
        return CheckResult(name="kms", status=Status.FAIL,
                           detail=f"{uri}: TLS verified, but GET /healthz answered HTTP {probe.status_code}",
                           fix="check that the URI names a ppml KMS (`ppml serve`), not another service")
    return _certificate_result("kms", dataclasses.replace(probe, url=uri), "TLS verified, /healthz ok",
                               now=now, warn_days=warn_days)


def check_attestation_service(probe: Probe | CheckResult, *, now: float,
                              warn_days: int = CERT_WARN_DAYS) -> CheckResult:
    """The attestation service publishes a token-signing key over verified TLS."""
    if isinstance(probe, CheckResult):
        return probe
    keys = probe.body.get("keys") if isinstance(probe.body, dict) else None
    if probe.status_code != 200 or not isinstance(keys, list) or not keys:
        return CheckResult(name="as", status=Status.FAIL,
                           detail=f"{probe.url}: TLS verified, but /.well-known/jwks.json answered "
                                  f"HTTP {probe.status_code} without signing keys",
                           fix="check that the URL names a ppml attestation service (`ppml serve`)")
    return _certificate_result("as", probe, f"TLS verified, JWKS has {len(keys)} signing key(s)",
                               now=now, warn_days=warn_days)


def check_clock(probes: Sequence[Probe], *, max_skew: float = MAX_CLOCK_SKEW) -> CheckResult:
    """This host's clock against each server's ``Date`` header.

    ``Date`` has whole seconds, so the server's time lies in ``[Date, Date + 1)`` at some instant
    between sending and receiving: the skew is judged with that uncertainty, and fails only when
    it is certainly beyond ``max_skew``.
    """
    dated = [p for p in probes if p.server_date is not None]
    if not dated:
        why = "no service answered" if not probes else "no reply carried a Date header"
        return CheckResult(name="clock", status=Status.FAIL, detail=f"not measured: {why}",
                           fix="make the KMS or attestation service reachable (see the lines above)")
    worst: tuple[float, float, Probe] | None = None
    for probe in dated:
        assert probe.server_date is not None
        skew = probe.server_date.timestamp() + 0.5 - (probe.sent + probe.received) / 2
        error = 0.5 + (probe.received - probe.sent) / 2
        if worst is None or abs(skew) > abs(worst[0]):
            worst = (skew, error, probe)
    assert worst is not None
    skew, error, probe = worst
    where = urlsplit(probe.url).netloc
    direction = "ahead of" if skew > 0 else "behind"
    seen = f"{where} is {abs(skew):.1f} s (±{error:.1f} s) {direction} this host"
    if abs(skew) - error > max_skew:
        return CheckResult(name="clock", status=Status.FAIL, detail=f"{seen}; tokens tolerate {max_skew:g} s",
                           fix="synchronise the clocks of this host and the server (chrony or ntpd, "
                               "`chronyc tracking` to check)")
    return CheckResult(name="clock", status=Status.PASS, detail=f"{seen}; within {max_skew:g} s")


# -- collateral ---------------------------------------------------------------------------------


def check_collateral(*, tee: str, files: Sequence[tuple[Path, Path]] = (), pccs: str | None = None,
                     fmspc: str | None = None, pccs_ca: Path | None = None, now: float,
                     warn_days: int = COLLATERAL_WARN_DAYS, timeout: float = 5.0,
                     transport: httpx.BaseTransport | None = None) -> CheckResult:
    """TCB Info and QE Identity (files as ``ppml serve --dcap-collateral`` takes them, or fetched
    from a PCCS for ``fmspc``): signatures verified, and ``nextUpdate`` not past (FAIL) nor
    within ``warn_days`` (WARN)."""
    from ppml.attestation.dcap import Collateral, fetch_from_pccs
    from ppml.attestation.intel_root import intel_tcb_signing_chain
    from ppml.errors import AttestationFailed

    if tee in ("none", "simulated"):
        return CheckResult(name="collateral", status=Status.SKIP,
                           detail=f"not applicable: --tee {tee} uses no DCAP collateral")
    if not files and not pccs:
        return CheckResult(name="collateral", status=Status.FAIL,
                           detail="not checked: no collateral given",
                           fix="give --dcap-collateral TCB_INFO QE_IDENTITY (as to ppml serve) or "
                               "--pccs URL --fmspc HEX, or --skip collateral")
    loaded: list[tuple[str, Any]] = []
    try:
        for tcb_info, qe_identity in files:
            chain = intel_tcb_signing_chain()
            loaded.append((f"{tcb_info.name}+{qe_identity.name}",
                           Collateral.from_files(tcb_info, qe_identity, tcb_info_signing_chain=chain,
                                                 qe_identity_signing_chain=chain)))
        if pccs:
            if not fmspc:
                return CheckResult(name="collateral", status=Status.FAIL,
                                   detail=f"PCCS {pccs}: no FMSPC given",
                                   fix="give --fmspc HEX (12 hex digits, from the platform's PCK certificate)")
            kind = "tdx" if tee == "tdx" else "sgx"
            with httpx.Client(verify=client_context(pccs_ca), timeout=timeout, transport=transport) as client:
                loaded.append((f"PCCS {pccs}", fetch_from_pccs(pccs, fmspc, tee=kind, client=client)))
    except (AttestationFailed, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, AttestationFailed) else str(exc)
        return CheckResult(name="collateral", status=Status.FAIL, detail=f"cannot load collateral: {reason}",
                           fix="fetch the documents again from your PCCS or Intel PCS "
                               "(…/certification/v4/tcb?fmspc=… and …/qe/identity), unmodified")
    status, parts, fixes = Status.PASS, [], []
    for source, collateral in loaded:
        for what, document in ((f"{collateral.tcb_info.id} TCB Info", collateral.tcb_info),
                               (f"{collateral.qe_identity.id} QE Identity", collateral.qe_identity)):
            days = (document.next_update.timestamp() - now) / 86400
            when = f"{what} ({source}) nextUpdate {document.next_update:%Y-%m-%dT%H:%MZ}"
            if document.issue_date.timestamp() > now:
                status = Status.FAIL
                parts.append(f"{when}, issued in the future ({document.issue_date:%Y-%m-%d})")
                fixes.append("check this host's clock")
            elif days <= 0:
                status = Status.FAIL
                parts.append(f"{when}: stale for {-days:.0f} days")
                fixes.append("refresh the collateral from the PCCS/Intel PCS and restart `ppml serve` with it "
                             "(attestation fails on stale collateral)")
            elif days < warn_days:
                status = Status.FAIL if status is Status.FAIL else Status.WARN
                parts.append(f"{when}: expires in {days:.1f} days")
                fixes.append(f"refresh the collateral within {days:.1f} days")
            else:
                parts.append(f"{when} (in {days:.0f} days)")
    return CheckResult(name="collateral", status=status, detail="; ".join(parts),
                       fix="; ".join(dict.fromkeys(fixes)))


# -- files: credentials and the Spark secret ----------------------------------------------------


def check_private_file(name: str, path: Path, *, identity: FileIdentity) -> tuple[CheckResult, bool]:
    """Owner and mode of a secret file; (result, readable by the rules).

    Passes ``0600``/``0400`` owned by ``identity``, and the shape a Kubernetes Secret volume has
    in a non-root pod (``0440`` owned by root, group one of ``identity``'s: the kubelet's fsGroup
    change adds group read, and ppml's own pod templates mount secrets so). Anything readable by
    others, group-writable or owned by someone else fails.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{path}: no such file",
                           fix="create it or point at the right file"), False
    except OSError as exc:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{path}: {exc.strerror}",
                           fix="check the path and its directories' permissions"), False
    if not stat.S_ISREG(info.st_mode):
        return CheckResult(name=name, status=Status.FAIL, detail=f"{path}: not a regular file",
                           fix="point at the file itself"), False
    mode = stat.S_IMODE(info.st_mode)
    shown = f"{path}: mode {mode:04o}, owner uid {info.st_uid}"
    if mode & 0o007:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: readable or writable by others",
                           fix=f"chmod 600 {path} (and rotate the secret: others may have read it)"), False
    kubernetes_shape = (info.st_uid == 0 and mode in (0o440, 0o400)
                        and info.st_gid in identity.gids)
    if kubernetes_shape and info.st_uid != identity.uid:
        return CheckResult(name=name, status=Status.PASS,
                           detail=f"{shown}, group {info.st_gid}: a read-only Secret volume read through fsGroup"), True
    if info.st_uid != identity.uid:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: not owned by this user (uid {identity.uid})",
                           fix=f"chown {identity.uid} {path}, or run as the user the file belongs to"), False
    if mode & 0o070:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: group bits set",
                           fix=f"chmod 600 {path}"), False
    return CheckResult(name=name, status=Status.PASS, detail=shown), True


def check_credentials(path: Path | None, *, identity: FileIdentity) -> CheckResult:
    """The KMS credentials file: private (see :func:`check_private_file`) and a credentials file."""
    if path is None:
        return CheckResult(name="credentials", status=Status.FAIL, detail="not checked: no credentials file given",
                           fix=f"give --credentials FILE (or credentials= in the KMS URI, or ${CREDENTIALS_ENV}), "
                               "or --skip credentials")
    result, readable = check_private_file("credentials", path, identity=identity)
    if not readable:
        return result
    try:
        credentials = load_credentials(path)
    except PpmlError as exc:
        return CheckResult(name="credentials", status=Status.FAIL, detail=f"{path}: {exc}",
                           fix="write it again from `ppml kms enroll` (JSON with appid and apikey, mode 0600)")
    return dataclasses.replace(result, detail=f"{result.detail}; appid {credentials.appid}")


def check_spark_secret(path: Path | None, *, identity: FileIdentity) -> CheckResult:
    """The Spark RPC secret file: private, and at least :data:`MIN_SPARK_SECRET_CHARS` long.
    Its content is read to count it and never shown."""
    if path is None:
        return CheckResult(name="spark-secret", status=Status.FAIL, detail="not checked: no secret file given",
                           fix="give --spark-secret FILE (the --secret-file of `ppml submit`), or --skip "
                               "spark-secret where Spark makes its own (local master)")
    result, readable = check_private_file("spark-secret", path, identity=identity)
    if not readable:
        return result
    try:
        with open(path, "rb") as f:
            length = len(f.read(4096).strip())
    except OSError as exc:
        return CheckResult(name="spark-secret", status=Status.FAIL, detail=f"{path}: {exc.strerror}",
                           fix="make the file readable by this user")
    if length < MIN_SPARK_SECRET_CHARS:
        return CheckResult(name="spark-secret", status=Status.FAIL,
                           detail=f"{path}: secret is {length} characters, fewer than {MIN_SPARK_SECRET_CHARS}",
                           fix=f"make a new one: `ppml submit --new-secret-file {path}` (256 random bits), "
                               "and give it to the cluster too")
    return dataclasses.replace(result, detail=f"{result.detail}; {length} characters")


# -- the TEE device -----------------------------------------------------------------------------


def check_tee(tee: str | None, *, root: Path = Path("/")) -> CheckResult:
    """The device the chosen TEE needs, under ``root`` (``/`` on a real host or pod).

    ``sgx-gramine``: inside Gramine, ``/dev/attestation`` with type ``dcap``; outside it (the pod
    that will start ``gramine-sgx``), ``/dev/sgx_enclave`` readable and writable plus the AESM
    socket (``/var/run/aesmd/aesm.socket``) that Gramine gets quotes from (``/dev/sgx_provision``
    alone does not do: it serves the quoting enclave inside aesmd). ``tdx``: configfs-tsm
    (``/sys/kernel/config/tsm/report``), which ppml's TDX backend uses; ``/dev/tdx_guest`` alone
    is the older ioctl interface.
    """
    if tee is None:
        return CheckResult(name="tee", status=Status.FAIL, detail="not checked: no TEE named",
                           fix="give --tee none|simulated|sgx-gramine|tdx (default $PPML_TEE_BACKEND)")
    if tee == "none":
        return CheckResult(name="tee", status=Status.WARN, detail="--tee none: no TEE, nothing protects data in use",
                           fix="deploy with --tee sgx-gramine or tdx, or --skip tee to accept it")
    if tee == "simulated":
        return CheckResult(name="tee", status=Status.WARN,
                           detail="SIMULATED TEE: no hardware protection; evidence is signed by a software key "
                                  "and data in use is readable by this host",
                           fix="deploy with --tee sgx-gramine or tdx, or --skip tee to accept it (demo only)")
    if tee == "sgx-gramine":
        return _check_sgx(root)
    return _check_tdx(root)


def _check_sgx(root: Path) -> CheckResult:
    attestation = root / "dev/attestation"
    kind_file = attestation / "attestation_type"
    if kind_file.exists():
        kind = kind_file.read_text().strip()
        if kind != "dcap":
            return CheckResult(name="tee", status=Status.FAIL,
                               detail=f"inside Gramine, but {kind_file} says {kind!r}",
                               fix="set sgx.remote_attestation = \"dcap\" in the Gramine manifest and re-sign it")
        return CheckResult(name="tee", status=Status.PASS, detail=f"inside a Gramine SGX enclave ({attestation}, dcap)")
    enclave = root / "dev/sgx_enclave"
    socket_path = root / "var/run/aesmd/aesm.socket"
    if not enclave.exists():
        legacy = root / "dev/isgx"
        hint = (f" ({legacy} is the out-of-tree driver; Gramine needs the in-kernel one)"
                if legacy.exists() else "")
        return CheckResult(name="tee", status=Status.FAIL, detail=f"{enclave} not found{hint}",
                           fix="run on an SGX node (Linux ≥ 5.11 with SGX enabled in BIOS); in Kubernetes request "
                               "sgx.intel.com/enclave from Intel's SGX device plugin")
    if not os.access(enclave, os.R_OK | os.W_OK):
        return CheckResult(name="tee", status=Status.FAIL, detail=f"{enclave}: not readable and writable by this user",
                           fix="add the user to the device's group (sgx), or supplementalGroups in the pod")
    if not socket_path.exists():
        return CheckResult(name="tee", status=Status.FAIL, detail=f"{enclave} present, but no AESM socket {socket_path}",
                           fix="run aesmd (sgx-aesm-service with the DCAP ECDSA plugin) and, in a pod, mount the "
                               "host's /var/run/aesmd")
    return CheckResult(name="tee", status=Status.PASS, detail=f"SGX: {enclave} and {socket_path}")


def _check_tdx(root: Path) -> CheckResult:
    report = root / "sys/kernel/config/tsm/report"
    guest = root / "dev/tdx_guest"
    if report.is_dir():
        extra = f", {guest}" if guest.exists() else ""
        return CheckResult(name="tee", status=Status.PASS, detail=f"TDX guest: configfs-tsm {report}{extra}")
    if guest.exists():
        return CheckResult(name="tee", status=Status.FAIL,
                           detail=f"{guest} present, but no configfs-tsm {report}",
                           fix="mount configfs (mount -t configfs none /sys/kernel/config) on a guest kernel "
                               "≥ 6.7 with CONFIG_TSM_REPORTS")
    return CheckResult(name="tee", status=Status.FAIL, detail=f"not a TDX guest: neither {report} nor {guest}",
                       fix="run inside a TDX trust domain (in Kubernetes, a kata-qemu-tdx runtime class)")


# -- all of them --------------------------------------------------------------------------------


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
        from ppml.errors import UsageError

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


def _attestation_endpoint(options: DoctorOptions, environ: Mapping[str, str]) -> tuple[str, Path | None]:
    assert options.attestation_url is not None
    parts = urlsplit(options.attestation_url)
    ca = options.ca or Path(parse_qs(parts.query).get("ca", [environ.get(_AS_CA_ENV, "")])[0] or ".")
    scheme = "https" if parts.scheme in ("https", "ppml+https") else parts.scheme
    return f"{scheme}://{parts.netloc}", (None if str(ca) == "." else ca)


def run_checks(options: DoctorOptions, *, environ: Mapping[str, str] | None = None,
               now: Callable[[], float] = time.time, device_root: Path = Path("/"),
               identity: FileIdentity | None = None,
               pccs_transport: httpx.BaseTransport | None = None) -> list[CheckResult]:
    """Every check in :data:`CHECKS` order, one result each (SKIP for those in ``options.skip``)."""
    environ = os.environ if environ is None else environ
    identity = identity or FileIdentity.current()
    results: dict[str, CheckResult] = {}
    probes: list[Probe] = []
    credentials = options.credentials

    if "kms" not in options.skip:
        if options.kms is None:
            results["kms"] = CheckResult(name="kms", status=Status.FAIL, detail="not checked: no KMS URI given",
                                         fix="give --kms ppml+https://HOST:PORT (or $PPML_KMS), or --skip kms")
        else:
            endpoint = _kms_endpoint(options, environ)
            if isinstance(endpoint, CheckResult):
                results["kms"] = endpoint
            else:
                credentials = credentials or endpoint.credentials_path
                probe = probe_service("kms", endpoint.base_url, "/healthz", ca_path=endpoint.ca_path,
                                      ca_hint=f"--ca FILE, ?ca=FILE or ${KMS_CA_ENV}", timeout=options.timeout,
                                      now=now)
                if isinstance(probe, Probe):
                    probes.append(probe)
                results["kms"] = check_kms(probe, uri=endpoint.uri, now=now(), warn_days=options.cert_warn_days)
    if "as" not in options.skip:
        if options.attestation_url is None:
            results["as"] = CheckResult(name="as", status=Status.FAIL,
                                        detail="not checked: no attestation service URL given",
                                        fix="give --as https://HOST:PORT (or $PPML_AS_URL), or --skip as")
        else:
            base_url, ca_path = _attestation_endpoint(options, environ)
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
            transport=pccs_transport)
    if "credentials" not in options.skip:
        if credentials is None and environ.get(CREDENTIALS_ENV):
            credentials = Path(environ[CREDENTIALS_ENV])
        results["credentials"] = check_credentials(credentials, identity=identity)
    if "spark-secret" not in options.skip:
        results["spark-secret"] = check_spark_secret(options.spark_secret, identity=identity)
    if "tee" not in options.skip:
        results["tee"] = check_tee(options.tee, root=device_root)
    for name in options.skip:
        results[name] = CheckResult(name=name, status=Status.SKIP, detail=f"skipped (--skip {name})")
    return [results[name] for name in CHECKS]


def summary(results: Iterable[CheckResult]) -> str:
    results = list(results)
    failed = [r.name for r in results if not r.passed]
    if not failed:
        return f"all {len(results)} checks passed"
    return f"{len(failed)} of {len(results)} checks did not pass: {', '.join(failed)}"


def as_json(results: Iterable[CheckResult]) -> str:
    return json.dumps([{"check": r.name, "status": r.status.value, "detail": r.detail, "fix": r.fix}
                       for r in results])
