"""DCAP collateral freshness: TCB Info and QE Identity signed, and their ``nextUpdate`` ahead."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography import x509

from ppml.deploy.doctor.result import CheckResult, Status
from ppml.transport import client_context

__all__ = ["COLLATERAL_WARN_DAYS", "check_collateral"]

COLLATERAL_WARN_DAYS: Final = 7


def check_collateral(*, tee: str, files: Sequence[tuple[Path, Path]] = (), pccs: str | None = None,
                     fmspc: str | None = None, pccs_ca: Path | None = None, now: float,
                     warn_days: int = COLLATERAL_WARN_DAYS, timeout: float = 5.0,
                     transport: httpx.BaseTransport | None = None,
                     signing_chain: Sequence[x509.Certificate] | None = None) -> CheckResult:
    """TCB Info and QE Identity (files as ``ppml serve --dcap-collateral`` takes them, or fetched
    from a PCCS for ``fmspc``): signatures verified, and ``nextUpdate`` not past (FAIL) nor
    within ``warn_days`` (WARN). Files are checked against ``signing_chain`` (default Intel's
    pinned TCB Signing certificate and root, as ``ppml serve`` does); a PCCS sends its own."""
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
    loaded: list[tuple[str, str, Any]] = []
    try:
        for tcb_info, qe_identity in files:
            chain = list(signing_chain) if signing_chain is not None else intel_tcb_signing_chain()
            loaded.append((str(tcb_info), str(qe_identity),
                           Collateral.from_files(tcb_info, qe_identity, tcb_info_signing_chain=chain,
                                                 qe_identity_signing_chain=chain)))
        if pccs:
            if not fmspc:
                return CheckResult(name="collateral", status=Status.FAIL,
                                   detail=f"PCCS {pccs}: no FMSPC given",
                                   fix="give --fmspc HEX (12 hex digits, from the platform's PCK certificate)")
            kind = "tdx" if tee == "tdx" else "sgx"
            with httpx.Client(verify=client_context(pccs_ca), timeout=timeout, transport=transport) as client:
                loaded.append((f"from PCCS {pccs}", f"from PCCS {pccs}",
                               fetch_from_pccs(pccs, fmspc, tee=kind, client=client)))
    except (AttestationFailed, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, AttestationFailed) else str(exc)
        return CheckResult(name="collateral", status=Status.FAIL, detail=f"cannot load collateral: {reason}",
                           fix="fetch the documents again from your PCCS or Intel PCS "
                               "(…/certification/v4/tcb?fmspc=… and …/qe/identity), unmodified")
    status, parts, fixes = Status.PASS, [], []
    for tcb_source, qe_source, collateral in loaded:
        for what, source, document in (
                (f"{collateral.tcb_info.id} TCB Info", tcb_source, collateral.tcb_info),
                (f"{collateral.qe_identity.id} QE Identity", qe_source, collateral.qe_identity)):
            days = (document.next_update.timestamp() - now) / 86400
            when = f"{what} {source}: nextUpdate {document.next_update:%Y-%m-%dT%H:%MZ}"
            if document.issue_date.timestamp() > now:
                status = Status.FAIL
                parts.append(f"{when}, issued in the future ({document.issue_date:%Y-%m-%d})")
                fixes.append("check this host's clock")
            elif days <= 0:
                status = Status.FAIL
                parts.append(f"{when}, stale for {-days:.0f} days")
                fixes.append("refresh the collateral from the PCCS/Intel PCS and restart `ppml serve` with it "
                             "(attestation fails on stale collateral)")
            elif days < warn_days:
                status = Status.FAIL if status is Status.FAIL else Status.WARN
                parts.append(f"{when}, in {days:.1f} days")
                fixes.append(f"refresh the collateral within {days:.1f} days")
            else:
                parts.append(f"{when}, in {days:.0f} days")
    return CheckResult(name="collateral", status=status, detail="; ".join(parts),
                       fix="; ".join(dict.fromkeys(fixes)))
