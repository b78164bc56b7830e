"""TCB Info and QE Identity documents: their parsed form, and the TCB level a platform meets.

The documents are Intel PCS API v4's: TCB Info version 3 (SGX or TDX) and QE Identity (enclave
identity) version 2. :class:`~ppml.attestation.dcap.collateral.Collateral` checks their signatures
before they are parsed here; every field is type- and range-checked, and a malformed document
raises :class:`~ppml.errors.AttestationFailed` naming the field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ppml.attestation.dcap._common import _fail
from ppml.attestation.dcap.pck import PckCertificateExtensions
from ppml.attestation.quote import SgxReportBody
from ppml.core.evidence import TEE_SGX, TEE_TDX

__all__ = ["EnclaveTcbLevel", "QeIdentity", "TcbInfo", "TcbLevel", "TdxModuleIdentity"]

#: TCB statuses that Intel's TCB Info may give a TCB level (TcbStatus of ppml.core.evidence).
_PLATFORM_STATUSES = frozenset({
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked",
})
_IDENTITY_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})
_TCB_INFO_ID_FOR_TEE = {TEE_SGX: "SGX", TEE_TDX: "TDX"}
_QE_ID_FOR_TEE = {TEE_SGX: "QE", TEE_TDX: "TD_QE"}


class _Fields:
    """Typed access to one JSON object of a collateral document; errors name the document."""

    def __init__(self, value: Any, what: str) -> None:
        if not isinstance(value, dict):
            _fail(f"{what}: expected a JSON object")
        self._value = value
        self.what = what

    def has(self, key: str) -> bool:
        return key in self._value

    def get(self, key: str) -> Any:
        if key not in self._value:
            _fail(f"{self.what}: missing {key!r}")
        return self._value[key]

    def string(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            _fail(f"{self.what}: {key!r} is not a string")
        return value

    def integer(self, key: str, limit: int = 0xFFFFFFFF) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            _fail(f"{self.what}: {key!r} is not an integer in 0..{limit}")
        return value

    def hex_bytes(self, key: str, size: int) -> bytes:
        value = self.string(key)
        if not re.fullmatch(r"[0-9a-fA-F]*", value) or len(value) != 2 * size:
            _fail(f"{self.what}: {key!r} is not {size} bytes of hex")
        return bytes.fromhex(value)

    def date(self, key: str) -> datetime:
        value = self.string(key)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            _fail(f"{self.what}: {key!r} is not an ISO 8601 date")
        if parsed.tzinfo is None:
            _fail(f"{self.what}: {key!r} has no time zone")
        return parsed

    def objects(self, key: str) -> list[_Fields]:
        value = self.get(key)
        if not isinstance(value, list):
            _fail(f"{self.what}: {key!r} is not a list")
        return [_Fields(item, f"{self.what}: {key}[{index}]") for index, item in enumerate(value)]

    def advisory_ids(self) -> tuple[str, ...]:
        if not self.has("advisoryIDs"):
            return ()
        value = self.get("advisoryIDs")
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            _fail(f"{self.what}: 'advisoryIDs' is not a list of strings")
        return tuple(value)

    def status(self, allowed: frozenset[str]) -> str:
        value = self.string("tcbStatus")
        if value not in allowed:
            _fail(f"{self.what}: unrecognized tcbStatus {value!r}")
        return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnclaveTcbLevel:
    """A TCB level keyed by one ISVSVN (QE Identity levels, TDX module identity levels)."""

    isv_svn: int
    status: str
    tcb_date: datetime | None
    advisory_ids: tuple[str, ...] = ()

    @classmethod
    def _parse(cls, fields: _Fields) -> EnclaveTcbLevel:
        tcb = _Fields(fields.get("tcb"), f"{fields.what}: tcb")
        return cls(
            isv_svn=tcb.integer("isvsvn", 0xFFFF), status=fields.status(_IDENTITY_STATUSES),
            tcb_date=fields.date("tcbDate") if fields.has("tcbDate") else None,
            advisory_ids=fields.advisory_ids(),
        )


def _identity_level(levels: Sequence[EnclaveTcbLevel], isv_svn: int) -> EnclaveTcbLevel | None:
    """The highest level whose ISVSVN the given one meets (levels are sorted highest first)."""
    return next((level for level in levels if isv_svn >= level.isv_svn), None)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TcbLevel:
    """One TCB level of a TCB Info document (version 3)."""

    sgx_components: tuple[int, ...]
    pce_svn: int
    #: TDX only: the 16 SVNs that TEE_TCB_SVN is compared with.
    tdx_components: tuple[int, ...] | None
    status: str
    tcb_date: datetime | None
    advisory_ids: tuple[str, ...] = ()

    def _sort_key(self) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
        # Intel's order (TcbLevel::operator> in QVL): components, then PCESVN, then TDX components
        return self.sgx_components, self.pce_svn, self.tdx_components or ()

    def platform_meets(self, pck: PckCertificateExtensions) -> bool:
        """Every SGX TCB component and the PCESVN of the platform are at least this level's."""
        return pck.pce_svn >= self.pce_svn and all(
            have >= need for have, need in zip(pck.sgx_tcb_components, self.sgx_components)
        )

    def tdx_meets(self, tee_tcb_svn: bytes) -> bool:
        """TEE_TCB_SVN meets this level's tdxtcbcomponents; when byte 1 (the TDX module's major
        version) is non-zero, bytes 0-1 are judged by the TDX module identity instead (QVL
        ``isTdxTcbHigherOrEqual``)."""
        needed = self.tdx_components or ()
        start = 2 if tee_tcb_svn[1] > 0 else 0
        return all(tee_tcb_svn[index] >= needed[index] for index in range(start, len(needed)))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TdxModuleIdentity:
    """The TDX module signer and attributes a TCB Info expects (``tdxModule`` or one of
    ``tdxModuleIdentities``, the latter with TCB levels keyed by the module's ISVSVN)."""

    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    tcb_levels: tuple[EnclaveTcbLevel, ...] = ()

    @classmethod
    def _parse(cls, fields: _Fields, identity_id: str) -> TdxModuleIdentity:
        levels = (tuple(EnclaveTcbLevel._parse(level) for level in fields.objects("tcbLevels"))
                  if fields.has("tcbLevels") else ())
        return cls(
            id=identity_id, mr_signer=fields.hex_bytes("mrsigner", 48),
            attributes=fields.hex_bytes("attributes", 8),
            attributes_mask=fields.hex_bytes("attributesMask", 8),
            tcb_levels=tuple(sorted(levels, key=lambda level: level.isv_svn, reverse=True)),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TcbInfo:
    """A parsed TCB Info document, version 3 (Intel PCS API v4), for SGX or TDX."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_evaluation_data_number: int
    #: Sorted highest first, as Intel's verifier orders them.
    tcb_levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None = None
    tdx_module_identities: tuple[TdxModuleIdentity, ...] = ()

    @classmethod
    def from_json(cls, value: Any) -> TcbInfo:
        """Parse the value of the ``tcbInfo`` key. Raises AttestationFailed if malformed."""
        fields = _Fields(value, "TCB Info")
        tcb_id = fields.string("id")
        if tcb_id not in ("SGX", "TDX"):
            _fail(f"TCB Info: unknown id {tcb_id!r}")
        version = fields.integer("version")
        if version != 3:
            _fail(f"TCB Info: version {version} is not supported (3 is)")
        is_tdx = tcb_id == "TDX"
        levels = []
        for level in fields.objects("tcbLevels"):
            tcb = _Fields(level.get("tcb"), f"{level.what}: tcb")
            sgx = tcb.objects("sgxtcbcomponents")
            tdx = tcb.objects("tdxtcbcomponents") if is_tdx else None
            if len(sgx) != 16 or (tdx is not None and len(tdx) != 16):
                _fail(f"{tcb.what}: 16 TCB components expected")
            levels.append(TcbLevel(
                sgx_components=tuple(component.integer("svn", 255) for component in sgx),
                pce_svn=tcb.integer("pcesvn", 0xFFFF),
                tdx_components=(tuple(component.integer("svn", 255) for component in tdx)
                                if tdx is not None else None),
                status=level.status(_PLATFORM_STATUSES),
                tcb_date=level.date("tcbDate") if level.has("tcbDate") else None,
                advisory_ids=level.advisory_ids(),
            ))
        if not levels:
            _fail("TCB Info: no TCB levels")
        tdx_module = None
        identities: tuple[TdxModuleIdentity, ...] = ()
        if is_tdx:
            tdx_module = TdxModuleIdentity._parse(
                _Fields(fields.get("tdxModule"), "TCB Info: tdxModule"), "tdxModule")
            if fields.has("tdxModuleIdentities"):
                identities = tuple(
                    TdxModuleIdentity._parse(item, item.string("id").upper())
                    for item in fields.objects("tdxModuleIdentities")
                )
        return cls(
            id=tcb_id, version=version, issue_date=fields.date("issueDate"),
            next_update=fields.date("nextUpdate"), fmspc=fields.hex_bytes("fmspc", 6),
            pce_id=fields.hex_bytes("pceId", 2),
            tcb_evaluation_data_number=fields.integer("tcbEvaluationDataNumber"),
            tcb_levels=tuple(sorted(levels, key=TcbLevel._sort_key, reverse=True)),
            tdx_module=tdx_module, tdx_module_identities=identities,
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QeIdentity:
    """A parsed QE Identity (enclave identity, version 2) document: who the Quoting Enclave
    must be, and the TCB status of each of its ISVSVNs."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    tcb_levels: tuple[EnclaveTcbLevel, ...]

    @classmethod
    def from_json(cls, value: Any) -> QeIdentity:
        """Parse the value of the ``enclaveIdentity`` key. Raises AttestationFailed if malformed."""
        fields = _Fields(value, "QE Identity")
        identity_id = fields.string("id")
        if identity_id not in ("QE", "TD_QE"):
            _fail(f"QE Identity: id {identity_id!r} is not a quoting enclave's")
        version = fields.integer("version")
        if version != 2:
            _fail(f"QE Identity: version {version} is not supported (2 is)")
        levels = tuple(EnclaveTcbLevel._parse(level) for level in fields.objects("tcbLevels"))
        if not levels:
            _fail("QE Identity: no TCB levels")
        return cls(
            id=identity_id, version=version, issue_date=fields.date("issueDate"),
            next_update=fields.date("nextUpdate"),
            miscselect=fields.hex_bytes("miscselect", 4),
            miscselect_mask=fields.hex_bytes("miscselectMask", 4),
            attributes=fields.hex_bytes("attributes", 16),
            attributes_mask=fields.hex_bytes("attributesMask", 16),
            mr_signer=fields.hex_bytes("mrsigner", 32),
            isv_prod_id=fields.integer("isvprodid", 0xFFFF),
            tcb_levels=tuple(sorted(levels, key=lambda level: level.isv_svn, reverse=True)),
        )

    def evaluate(self, qe_report: SgxReportBody) -> EnclaveTcbLevel:
        """Match a QE report against this identity and return the TCB level of its ISVSVN.

        Raises:
            AttestationFailed: MISCSELECT, ATTRIBUTES, MRSIGNER or ISVPRODID differ, or the
                ISVSVN is below every level.
        """
        masked = bytes(a & b for a, b in zip(qe_report.misc_select, self.miscselect_mask))
        if masked != self.miscselect:
            _fail("QE identity mismatch: MISCSELECT")
        masked = bytes(a & b for a, b in zip(qe_report.attributes, self.attributes_mask))
        if masked != self.attributes:
            _fail("QE identity mismatch: ATTRIBUTES")
        if qe_report.mr_signer != self.mr_signer:
            _fail(f"QE identity mismatch: MRSIGNER {qe_report.mr_signer.hex()} is not "
                  f"{self.mr_signer.hex()}")
        if qe_report.isv_prod_id != self.isv_prod_id:
            _fail(f"QE identity mismatch: ISVPRODID {qe_report.isv_prod_id} is not "
                  f"{self.isv_prod_id}")
        level = _identity_level(self.tcb_levels, qe_report.isv_svn)
        if level is None:
            _fail(f"QE identity: ISVSVN {qe_report.isv_svn} is below every TCB level "
                  f"(TCB not supported)")
        return level
