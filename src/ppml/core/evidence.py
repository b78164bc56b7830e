"""Attestation value types shared by the TEE side and the verifiers: evidence in, claims out.

Every verifier turns :class:`Evidence` into :class:`Claims` (the ``Evidence → Claims`` contract of
DESIGN.md). Claims are normalised across TEEs; hex strings are lower case.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from typing import Any, Final, Literal, Protocol

__all__ = [
    "REPORT_DATA_SIZE",
    "TEE_SGX",
    "TEE_SIMULATED",
    "TEE_TDX",
    "Claims",
    "Evidence",
    "EvidenceVerifier",
    "TcbStatus",
    "report_data_for",
]

TEE_SGX: Final = "sgx"
TEE_TDX: Final = "tdx"
TEE_SIMULATED: Final = "simulated"
REPORT_DATA_SIZE: Final = 64

TcbStatus = Literal[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
    "Simulated",
]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Raw evidence from a TEE: an SGX or TDX quote, or a simulated report."""

    tee: str
    data: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if self.tee not in (TEE_SGX, TEE_TDX, TEE_SIMULATED):
            raise ValueError(f"unknown TEE type {self.tee!r}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Claims:
    """What a verified piece of evidence says about the workload and its platform."""

    tee: str
    report_data: str
    debug: bool
    tcb_status: str
    mr_enclave: str | None = None
    mr_signer: str | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None
    mr_td: str | None = None
    rtmr0: str | None = None
    rtmr1: str | None = None
    rtmr2: str | None = None
    rtmr3: str | None = None
    advisory_ids: tuple[str, ...] = ()
    #: True for evidence from the simulated TEE: no hardware protection at all.
    simulated: bool = False
    #: Bytes that followed the signed quote in the evidence (zero padding of a fixed-size buffer,
    #: or appended by a tool). No signature covers them, so they were ignored and influence no
    #: other claim; the count only says that they were there.
    trailing_bytes: int = 0

    def __post_init__(self) -> None:
        if (isinstance(self.trailing_bytes, bool) or not isinstance(self.trailing_bytes, int)
                or self.trailing_bytes < 0):
            raise ValueError("trailing_bytes must be a non-negative integer")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["advisory_ids"] = list(self.advisory_ids)
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Claims:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["advisory_ids"] = tuple(values.get("advisory_ids", ()))
        return cls(**values)


class EvidenceVerifier(Protocol):
    """Checks evidence of one TEE type and returns its claims, or raises ``AttestationFailed``.

    ``now`` is an argument so that tests verify at a fixed instant (collateral is time-bound).
    """

    def verify(self, evidence: Evidence, *, now: datetime) -> Claims: ...


def report_data_for(nonce: bytes, runtime_data: dict[str, Any]) -> bytes:
    """The 64 report-data bytes that bind evidence to a nonce and the TEE's runtime data:
    ``SHA-512(nonce ‖ canonical JSON of runtime_data)`` (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(runtime_data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha512(nonce + canonical.encode()).digest()
