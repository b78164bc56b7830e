"""The KMS and the attestation service seen from here: verified TLS, the certificate's expiry,
a cheap unauthenticated endpoint each, and the servers' clocks against this host's."""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from ppml.attestation.tokens import NOT_BEFORE_MARGIN, TOKEN_LEEWAY
from ppml.core.signing import REPLAY_WINDOW_MS
from ppml.deploy.doctor.result import CheckResult, Status
from ppml.transport import client_context

__all__ = [
    "CERT_WARN_DAYS",
    "MAX_CLOCK_SKEW",
    "Probe",
    "check_attestation_service",
    "check_clock",
    "check_kms",
    "probe_service",
]

#: A host whose clock trails the attestation service by more than this rejects fresh tokens as
#: "not yet valid" (``nbf`` is ``iat`` minus the margin, verifiers allow the leeway); the KMS's
#: replay window (±10 minutes on signed requests) is wider, so the tokens set the bound.
MAX_CLOCK_SKEW: Final = float(min(NOT_BEFORE_MARGIN + TOKEN_LEEWAY, REPLAY_WINDOW_MS // 1000))
CERT_WARN_DAYS: Final = 14


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
                  timeout: float = 5.0, now: Callable[[], float] = time.time,
                  label: str | None = None) -> Probe | CheckResult:
    """GET ``base_url + path`` with verified TLS (the CA bundle, else the system store): the
    :class:`Probe`, or a FAIL result naming the fault and the fix. ``label`` names the service
    in the lines (a KMS URI rather than its https base URL)."""
    shown = label or base_url
    parts = urlsplit(base_url)
    if parts.scheme != "https":
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: not an https URL",
                           fix="ppml's services speak HTTPS only: use https:// (ppml serve has no plain HTTP)")
    if ca_path is not None and not ca_path.is_file():
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: CA bundle {ca_path} not found",
                           fix=f"point {ca_hint} at the CA certificate that signed the server's certificate")
    try:
        context = client_context(ca_path)
    except ssl.SSLError as exc:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: CA bundle {ca_path} unusable ({exc})",
                           fix=f"point {ca_hint} at a PEM CA certificate")
    sent = now()
    try:
        with httpx.Client(verify=context, timeout=timeout, headers={"User-Agent": "ppml-doctor/1"}) as client, \
                client.stream("GET", base_url + path) as response:
            ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
            certificate = ssl_object.getpeercert() if ssl_object is not None else None
            response.read()
    except httpx.TransportError as exc:
        detail, fix = _transport_fault(exc, shown, ca_path, ca_hint, timeout)
        return CheckResult(name=name, status=Status.FAIL, detail=detail, fix=fix)
    received = now()
    if not certificate or "notAfter" not in certificate:
        return CheckResult(name=name, status=Status.FAIL, detail=f"{shown}: no verified peer certificate",
                           fix="report this: the TLS layer returned no certificate")
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(certificate["notAfter"]), UTC)
    try:
        body = response.json()
    except ValueError:
        body = None
    return Probe(url=shown, status_code=response.status_code, body=body, certificate_expires=expires,
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


def check_kms(probe: Probe | CheckResult, *, now: float, warn_days: int = CERT_WARN_DAYS) -> CheckResult:
    """The KMS answered /healthz with ``{"status": "ok"}`` over verified TLS."""
    if isinstance(probe, CheckResult):
        return probe
    body = probe.body if isinstance(probe.body, dict) else {}
    if probe.status_code == 503:
        return CheckResult(name="kms", status=Status.FAIL,
                           detail=f"{probe.url}: TLS verified, but the KMS's storage is unavailable "
                                  f"({body.get('reason', 'no reason given')})",
                           fix="check the KMS's database (the --db URL of `ppml serve`) and its logs")
    if probe.status_code != 200 or body.get("status") != "ok":
        return CheckResult(name="kms", status=Status.FAIL,
                           detail=f"{probe.url}: TLS verified, but GET /healthz answered HTTP {probe.status_code}",
                           fix="check that the URI names a ppml KMS (`ppml serve`), not another service")
    return _certificate_result("kms", probe, "TLS verified, /healthz ok",
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

    ``Date`` has whole seconds and servers refresh it about once a second (uvicorn does), so the
    server's time lies in ``[Date, Date + 2)`` at some instant between sending and receiving: the
    skew is judged with that uncertainty, and fails only when it is certainly beyond ``max_skew``.
    """
    dated = [p for p in probes if p.server_date is not None]
    if not dated:
        why = "no service answered" if not probes else "no reply carried a Date header"
        return CheckResult(name="clock", status=Status.FAIL, detail=f"not measured: {why}",
                           fix="make the KMS or attestation service reachable (see the lines above)")
    worst: tuple[float, float, Probe] | None = None
    for probe in dated:
        assert probe.server_date is not None
        skew = probe.server_date.timestamp() + 1 - (probe.sent + probe.received) / 2
        error = 1 + (probe.received - probe.sent) / 2
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
