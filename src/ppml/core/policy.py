"""Claims policies: the one language in which data owners say which attested workloads they trust.

The attestation service matches evidence against registered policies, and the KMS release gate
matches a token's claims against a key's release policy; both use these types, so a policy means
the same thing wherever it is written. A policy is a :class:`ClaimsPolicy`:

* :class:`Measurements` — constraints on one workload's claims. Unset constraints are not
  checked, but the **safe defaults always apply** unless the policy opts in by name: debug
  enclaves are refused (``allow_debug``), simulated evidence is refused (``allow_simulated``),
  and only TCB status ``UpToDate`` is accepted (``accepted_tcb_statuses``). It must name at least
  one identity: ``mr_enclave``, ``mr_signer``, ``mr_td`` or (release policies only)
  ``policy_ids``, the attestation policies a token must have matched.
* :class:`AllOf` / :class:`AnyOf` — composition, like sigstore's verification policies. Each
  member applies its own defaults, so ``AllOf`` accepts simulated evidence only if every member
  allows it. An empty ``AllOf`` (it would accept anything) or ``AnyOf`` is refused.

JSON form (what the HTTP APIs, the CLI and the stores take)::

    {"mr_enclave": "<64 hex>", "mr_signer": "<64 hex>", "isv_prod_id": 0, "min_isv_svn": 1,
     "mr_td": "<96 hex>", "rtmr0".."rtmr3": "<96 hex>", "tee": "sgx",
     "policy_ids": ["<attestation policy id>", ...],
     "allow_debug": false, "allow_simulated": false, "accepted_tcb_statuses": ["UpToDate"]}
    {"all_of": [<policy>, ...]}        {"any_of": [<policy>, ...]}

For compatibility, ``{"policy_ids": [...], "claims": {...}}`` (the release-policy form of ppml
0.1) is read as one :class:`Measurements` with the listed claims as its constraints.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from ppml.core.evidence import Claims
from ppml.errors import UsageError

__all__ = [
    "DEFAULT_TCB_STATUSES",
    "KNOWN_TCB_STATUSES",
    "MAX_POLICY_DEPTH",
    "AllOf",
    "AnyOf",
    "ClaimsPolicy",
    "Measurements",
    "parse_policy",
]

DEFAULT_TCB_STATUSES: Final = ("UpToDate",)
KNOWN_TCB_STATUSES: Final = (
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded",
)
#: Composition deeper than this is refused (no policy needs it; a parser must stay bounded).
MAX_POLICY_DEPTH: Final = 8
MAX_MEMBERS: Final = 64
_TEES: Final = ("sgx", "tdx", "simulated")
_MEASUREMENTS: Final = ("mr_enclave", "mr_signer", "mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3")


@runtime_checkable
class ClaimsPolicy(Protocol):
    """Anything that can judge a workload's claims."""

    def mismatches(self, claims: Claims, *, matched_policy_ids: Collection[str] = ()) -> list[str]:
        """Every reason ``claims`` fail this policy (empty: they match). ``matched_policy_ids``
        are the attestation policies a token says the claims matched (release gate only)."""
        ...

    def to_dict(self) -> dict[str, Any]: ...

    def uses_policy_ids(self) -> bool:
        """True if any part of this policy constrains ``policy_ids``."""
        ...


def _hex(value: Any, digits: int, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", value.strip()):
        raise UsageError(f"{name} must be {digits} hex characters")
    return value.strip().lower()


def _u16(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise UsageError(f"{name} must be an integer in 0..65535")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be true or false")
    return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Measurements:
    """Constraints on one workload's claims, with the safe defaults (see the module docstring)."""

    mr_enclave: str | None = None
    mr_signer: str | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    mr_td: str | None = None
    rtmr0: str | None = None
    rtmr1: str | None = None
    rtmr2: str | None = None
    rtmr3: str | None = None
    tee: str | None = None
    policy_ids: tuple[str, ...] = ()
    allow_debug: bool = False
    accepted_tcb_statuses: tuple[str, ...] = DEFAULT_TCB_STATUSES
    allow_simulated: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "mr_enclave", _hex(self.mr_enclave, 64, "mr_enclave"))
        set_(self, "mr_signer", _hex(self.mr_signer, 64, "mr_signer"))
        for name in ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3"):
            set_(self, name, _hex(getattr(self, name), 96, name))
        for name in ("isv_prod_id", "min_isv_svn"):
            set_(self, name, _u16(getattr(self, name), name))
        for name in ("allow_debug", "allow_simulated"):
            _flag(getattr(self, name), name)
        if self.tee is not None and self.tee not in _TEES:
            raise UsageError(f"tee must be one of {', '.join(_TEES)}")
        if isinstance(self.policy_ids, str | bytes) or not all(
                isinstance(p, str) and 0 < len(p) <= 64 for p in self.policy_ids):
            raise UsageError("policy_ids must be a list of policy ids")
        set_(self, "policy_ids", tuple(self.policy_ids))
        if isinstance(self.accepted_tcb_statuses, str | bytes) or not all(
                isinstance(s, str) for s in self.accepted_tcb_statuses):
            raise UsageError("accepted_tcb_statuses must be a list of TCB statuses")
        set_(self, "accepted_tcb_statuses", tuple(self.accepted_tcb_statuses))
        unknown = set(self.accepted_tcb_statuses) - set(KNOWN_TCB_STATUSES)
        if unknown:
            raise UsageError(f"unknown TCB status(es): {', '.join(sorted(unknown))}")
        if not self.accepted_tcb_statuses:
            raise UsageError("accepted_tcb_statuses must name at least one TCB status")
        if not (self.mr_enclave or self.mr_signer or self.mr_td or self.policy_ids):
            raise UsageError("a policy needs at least one of mr_enclave, mr_signer, mr_td or policy_ids")

    def uses_policy_ids(self) -> bool:
        return bool(self.policy_ids)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["accepted_tcb_statuses"] = list(self.accepted_tcb_statuses)
        data["policy_ids"] = list(self.policy_ids)
        if not self.policy_ids:
            del data["policy_ids"]
        return {k: v for k, v in data.items() if v is not None}

    def mismatches(self, claims: Claims, *, matched_policy_ids: Collection[str] = ()) -> list[str]:
        reasons = []
        if claims.simulated and not self.allow_simulated:
            reasons.append("simulated evidence, and the policy does not allow_simulated")
        if self.tee is not None and claims.tee != self.tee:
            reasons.append(f"tee {claims.tee} is not {self.tee}")
        if self.policy_ids and not set(self.policy_ids) & set(matched_policy_ids):
            reasons.append("the token matched none of the policies " + ", ".join(self.policy_ids))
        for name in _MEASUREMENTS:
            expected = getattr(self, name)
            if expected is not None and getattr(claims, name) != expected:
                reasons.append(f"{name} {getattr(claims, name)} is not the registered {expected}")
        if self.isv_prod_id is not None and claims.isv_prod_id != self.isv_prod_id:
            reasons.append(f"isv_prod_id {claims.isv_prod_id} is not {self.isv_prod_id}")
        if self.min_isv_svn is not None and (claims.isv_svn is None or claims.isv_svn < self.min_isv_svn):
            reasons.append(f"isv_svn {claims.isv_svn} is below {self.min_isv_svn}")
        if claims.debug and not self.allow_debug:
            reasons.append("debug enclave, and the policy does not allow_debug")
        # Simulated evidence has no TCB; allow_simulated (checked above) is its opt-in.
        if not claims.simulated and claims.tcb_status not in self.accepted_tcb_statuses:
            reasons.append(f"TCB status {claims.tcb_status} is not accepted "
                           f"({', '.join(self.accepted_tcb_statuses)})")
        return reasons


@dataclasses.dataclass(frozen=True, slots=True)
class AllOf:
    """Matches when every member matches (refused when empty: it would match anything)."""

    members: tuple[ClaimsPolicy, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise UsageError("an all_of policy needs at least one member (an empty one accepts anything)")
        object.__setattr__(self, "members", tuple(self.members))

    def uses_policy_ids(self) -> bool:
        return any(m.uses_policy_ids() for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {"all_of": [m.to_dict() for m in self.members]}

    def mismatches(self, claims: Claims, *, matched_policy_ids: Collection[str] = ()) -> list[str]:
        return [reason for m in self.members
                for reason in m.mismatches(claims, matched_policy_ids=matched_policy_ids)]


@dataclasses.dataclass(frozen=True, slots=True)
class AnyOf:
    """Matches when at least one member matches."""

    members: tuple[ClaimsPolicy, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise UsageError("an any_of policy needs at least one member")
        object.__setattr__(self, "members", tuple(self.members))

    def uses_policy_ids(self) -> bool:
        return any(m.uses_policy_ids() for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {"any_of": [m.to_dict() for m in self.members]}

    def mismatches(self, claims: Claims, *, matched_policy_ids: Collection[str] = ()) -> list[str]:
        reasons: list[str] = []
        for index, member in enumerate(self.members):
            failed = member.mismatches(claims, matched_policy_ids=matched_policy_ids)
            if not failed:
                return []
            reasons.append(f"any_of[{index}]: " + "; ".join(failed))
        return reasons


_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(Measurements))


def parse_policy(data: Any, *, _depth: int = 0) -> ClaimsPolicy:
    """Read a policy from its JSON form (see the module docstring).

    Raises:
        UsageError: unknown fields, bad values, an empty composition, nesting deeper than
            :data:`MAX_POLICY_DEPTH`, or no identity to check.
    """
    if _depth > MAX_POLICY_DEPTH:
        raise UsageError(f"policy nesting deeper than {MAX_POLICY_DEPTH} levels")
    if not isinstance(data, Mapping):
        raise UsageError("a policy must be a JSON object")
    for name, kind in (("all_of", AllOf), ("any_of", AnyOf)):
        if name in data:
            if len(data) != 1:
                raise UsageError(f"{name} must be the policy's only field")
            members = data[name]
            if not isinstance(members, list) or len(members) > MAX_MEMBERS:
                raise UsageError(f"{name} must be a list of at most {MAX_MEMBERS} policies")
            return kind(tuple(parse_policy(m, _depth=_depth + 1) for m in members))
    values = dict(data)
    if "claims" in values:  # the 0.1 release-policy form
        claims = values.pop("claims")
        if not isinstance(claims, Mapping):
            raise UsageError("claims must be an object")
        clash = set(claims) & set(values)
        if clash:
            raise UsageError(f"field(s) given twice: {', '.join(sorted(clash))}")
        values.update(claims)
    unknown = set(values) - _FIELDS
    if unknown:
        raise UsageError(f"unknown policy field(s): {', '.join(sorted(map(str, unknown)))}")
    for name in ("policy_ids", "accepted_tcb_statuses"):
        if name in values:
            if not isinstance(values[name], list | tuple):
                raise UsageError(f"{name} must be a list")
            values[name] = tuple(values[name])
    try:
        return Measurements(**values)
    except TypeError as exc:  # a value of the wrong type where a string was expected
        raise UsageError(f"bad policy value: {exc}") from None
