"""Attestation policies: which measured workloads a data owner approves.

A policy matches claims when every constraint it sets holds. Unset constraints are not checked,
but a policy must set at least one identity (``mr_enclave``, ``mr_signer`` or ``mr_td``), and the
safe defaults apply unless the policy says otherwise: no debug enclaves, TCB status UpToDate only,
no simulated evidence.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

from ppml.core.evidence import Claims
from ppml.errors import UsageError

__all__ = ["DEFAULT_TCB_STATUSES", "Policy"]

DEFAULT_TCB_STATUSES: Final = ("UpToDate",)
KNOWN_TCB_STATUSES: Final = (
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded",
)
def _hex(value: str | None, digits: int, name: str) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(f"[0-9a-f]{{{digits}}}", value):
        raise UsageError(f"{name} must be {digits} hex characters")
    return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    mr_enclave: str | None = None
    mr_signer: str | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    mr_td: str | None = None
    rtmr0: str | None = None
    rtmr1: str | None = None
    rtmr2: str | None = None
    rtmr3: str | None = None
    allow_debug: bool = False
    accepted_tcb_statuses: tuple[str, ...] = DEFAULT_TCB_STATUSES
    allow_simulated: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mr_enclave", _hex(self.mr_enclave, 64, "mr_enclave"))
        object.__setattr__(self, "mr_signer", _hex(self.mr_signer, 64, "mr_signer"))
        for name in ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3"):
            object.__setattr__(self, name, _hex(getattr(self, name), 96, name))
        if not (self.mr_enclave or self.mr_signer or self.mr_td):
            raise UsageError("a policy needs at least one of mr_enclave, mr_signer or mr_td")
        unknown = set(self.accepted_tcb_statuses) - set(KNOWN_TCB_STATUSES)
        if unknown:
            raise UsageError(f"unknown TCB status(es): {', '.join(sorted(unknown))}")
        for name in ("isv_prod_id", "min_isv_svn"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 0xFFFF:
                raise UsageError(f"{name} must be in 0..65535")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["accepted_tcb_statuses"] = list(self.accepted_tcb_statuses)
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise UsageError(f"unknown policy field(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "accepted_tcb_statuses" in values:
            values["accepted_tcb_statuses"] = tuple(values["accepted_tcb_statuses"])
        return cls(**values)

    def mismatches(self, claims: Claims) -> list[str]:
        """Every reason these claims fail this policy (empty: they match)."""
        reasons = []
        if claims.simulated and not self.allow_simulated:
            reasons.append("simulated evidence, and the policy does not allow_simulated")
        for name in ("mr_enclave", "mr_signer", "mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3"):
            expected = getattr(self, name)
            if expected is not None and getattr(claims, name) != expected:
                reasons.append(f"{name} {getattr(claims, name)} is not the registered {expected}")
        if self.isv_prod_id is not None and claims.isv_prod_id != self.isv_prod_id:
            reasons.append(f"isv_prod_id {claims.isv_prod_id} is not {self.isv_prod_id}")
        if self.min_isv_svn is not None and (claims.isv_svn is None or claims.isv_svn < self.min_isv_svn):
            reasons.append(f"isv_svn {claims.isv_svn} is below {self.min_isv_svn}")
        if claims.debug and not self.allow_debug:
            reasons.append("debug enclave, and the policy does not allow_debug")
        if not claims.simulated and claims.tcb_status not in self.accepted_tcb_statuses:
            reasons.append(f"TCB status {claims.tcb_status} is not accepted "
                           f"({', '.join(self.accepted_tcb_statuses)})")
        return reasons
