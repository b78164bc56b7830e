"""Intel DCAP verification of SGX (quote v3) and TDX (quote v4/v5) evidence, in Python.

What :meth:`DcapVerifier.verify` checks, in this order (section numbers are those of Intel's
Quote Verification Library, ``QuoteVerifier.cpp``, which this follows)::

    quote bytes ──parse──▶ header, body, signature data            (ppml.attestation.quote)
    PCK chain   leaf "SGX PCK Certificate" → "SGX PCK Platform/Processor CA" → pinned root:
                signatures, validity at `now`, CA flags and path length, CRLs if given
    QE report   ECDSA-SHA256 by the PCK leaf's P-256 key over the 384-byte QE report (4.1.2.4.12)
    binding     QE report_data = SHA-256(attestation key ‖ QE auth data) ‖ 32 zeros  (4.1.2.4.13)
    quote       ECDSA-SHA256 by the attestation key over header (‖ v5 descriptor) ‖ body
                                                                                   (4.1.2.4.16)
    collateral  TCB Info and QE Identity for this TEE and the PCK's FMSPC: signed by a
                "SGX TCB Signing" certificate that chains to the pinned root, inside
                issueDate..nextUpdate at `now`; FMSPC and PCE-ID match          (4.1.2.4.9-10)
    TDX module  MRSIGNERSEAM / SEAMATTRIBUTES match the TCB Info's TDX module identity (4.1.2.4.11)
    QE identity MISCSELECT, ATTRIBUTES (masked), MRSIGNER, ISVPRODID; ISVSVN → QE TCB status
                                                                                   (4.1.2.4.15)
    TCB level   first level whose SGX components and PCESVN (and, for TDX, TEE_TCB_SVN against
                tdxtcbcomponents) the platform meets; its status, converged with the TDX module's
                and the QE's, becomes ``Claims.tcb_status``                         (4.1.2.4.17)

Every failed check raises :class:`~ppml.errors.AttestationFailed` whose ``reason`` names the
check. A TCB status is *reported*, not judged (accepting ``OutOfDate`` is a policy decision), except
``Revoked``, which is refused here. Not implemented: the TD 1.5 "TD relaunch advised" statuses
(a TD 1.5 quote gets the TD 1.0 evaluation) and TCB Info v2 (PCS API v3).

Collateral is parsed and its signatures verified once, when a :class:`Collateral` is built.
Certificate and CRL signatures, once verified, are remembered by the verifier (keyed by the exact
DER of issuer and subject), so a quote from a platform seen before costs two ECDSA verifications
(QE report, quote) and some parsing; a new platform adds the signature on its PCK certificate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from ppml.attestation.intel_root import intel_sgx_root_ca, intel_tcb_signing_chain
from ppml.attestation.quote import (
    CERTIFICATION_DATA_PCK_CHAIN,
    SgxQuote,
    SgxReportBody,
    TdxQuote,
    parse_quote,
)
from ppml.core.evidence import TEE_SGX, TEE_TDX, Claims, Evidence
from ppml.errors import AttestationFailed, QuoteFormatError, UsageError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "Collateral",
    "DcapVerifier",
    "EnclaveTcbLevel",
    "PckCertificateExtensions",
    "QeIdentity",
    "SGX_EXTENSION_OID",
    "TcbInfo",
    "TcbLevel",
    "TdxModuleIdentity",
    "VerifiedQuote",
    "fetch_from_pccs",
    "load_crls",
    "parse_pck_extensions",
    "verifier_from_files",
]

#: The Intel SGX extension of PCK certificates (FMSPC, PCE-ID, TCB components, ...).
SGX_EXTENSION_OID: Final = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX_OID_DER = bytes.fromhex("2a864886f84d010d01")  # DER content octets of the OID above
_MAX_COLLATERAL_SIZE = 1 << 20
_MAX_CRL_SIZE = 16 << 20
_MAX_CHAIN_LENGTH = 4
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_CHAIN_CACHE_LIMIT = 4096

#: TCB statuses that Intel's TCB Info may give a TCB level (TcbStatus of ppml.core.evidence).
_PLATFORM_STATUSES = frozenset({
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked",
})
_IDENTITY_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})
_TCB_INFO_ID_FOR_TEE = {TEE_SGX: "SGX", TEE_TDX: "TDX"}
_QE_ID_FOR_TEE = {TEE_SGX: "QE", TEE_TDX: "TD_QE"}


def _fail(reason: str) -> NoReturn:
    raise AttestationFailed(reason)


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def _verify_raw_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    """Check a 64-byte r‖s (big-endian) ECDSA-SHA256 signature, the form Intel uses everywhere."""
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, message, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def _p256_key(certificate: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        _fail(f"{what}: {_common_name(certificate.subject)} does not hold a P-256 key")
    return key


# --- the SGX extension of PCK certificates ---------------------------------------------------

def _der_items(data: bytes, what: str) -> list[tuple[int, bytes]]:
    """Split DER content into (tag, value) pairs, bounds-checking every length."""
    items: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 2:
            _fail(f"{what}: truncated DER")
        tag, first = data[offset], data[offset + 1]
        offset += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or count > len(data) - offset:
                _fail(f"{what}: bad DER length")
            length = int.from_bytes(data[offset:offset + count], "big")
            offset += count
        if length > len(data) - offset:
            _fail(f"{what}: DER length past the end")
        items.append((tag, data[offset:offset + length]))
        offset += length
    return items


def _der_unsigned(tag: int, value: bytes, what: str, limit: int) -> int:
    if tag != 0x02 or not value or value[0] & 0x80:
        _fail(f"{what}: not a non-negative INTEGER")
    number = int.from_bytes(value, "big")
    if number > limit:
        _fail(f"{what}: {number} is out of range")
    return number


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PckCertificateExtensions:
    """What the PCK certificate's SGX extension (OID 1.2.840.113741.1.13.1) says of the platform."""

    fmspc: bytes
    pce_id: bytes
    cpu_svn: bytes
    pce_svn: int
    #: SGX TCB components 1..16 (CPUSVN split into its components).
    sgx_tcb_components: tuple[int, ...]
    ppid: bytes | None = None


def parse_pck_extensions(certificate: x509.Certificate) -> PckCertificateExtensions:
    """Read FMSPC, PCE-ID, the TCB components, PCESVN and CPUSVN from a PCK certificate.

    The extension is ``SEQUENCE OF SEQUENCE { OID, value }`` with OIDs under
    1.2.840.113741.1.13.1: .1 PPID, .2 TCB (``SEQUENCE OF SEQUENCE { OID .2.n, INTEGER }`` for
    components n = 1..16, .2.17 PCESVN, .2.18 CPUSVN as OCTET STRING), .3 PCE-ID, .4 FMSPC,
    .5 SGX type, .6 platform instance id, .7 configuration (Intel "SGX PCK Certificate and
    Certificate Revocation List Profile Specification").

    Raises:
        AttestationFailed: the extension is missing or malformed.
    """
    what = "PCK certificate SGX extension"
    try:
        extension = certificate.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        _fail("PCK certificate has no SGX extension")
    except ValueError as exc:  # a duplicated or unparsable standard extension
        raise AttestationFailed(f"PCK certificate extensions unreadable: {exc}") from exc
    if not isinstance(extension, x509.UnrecognizedExtension):
        _fail(f"{what}: unexpected type")
    outer = _der_items(extension.value, what)
    if len(outer) != 1 or outer[0][0] != 0x30:
        _fail(f"{what}: not one SEQUENCE")
    fields: dict[bytes, tuple[int, bytes]] = {}
    for tag, entry in _der_items(outer[0][1], what):
        pair = _der_items(entry, what)
        if tag != 0x30 or len(pair) != 2 or pair[0][0] != 0x06:
            _fail(f"{what}: entry is not SEQUENCE {{ OID, value }}")
        oid = pair[0][1]
        if not oid.startswith(_SGX_OID_DER):
            continue
        key = oid[len(_SGX_OID_DER):]
        if key in fields:
            _fail(f"{what}: duplicate entry {key.hex()}")
        fields[key] = pair[1]

    def octets(key: bytes, name: str, size: int) -> bytes:
        if key not in fields:
            _fail(f"{what}: no {name}")
        tag, value = fields[key]
        if tag != 0x04 or len(value) != size:
            _fail(f"{what}: {name} is not a {size}-byte OCTET STRING")
        return value

    if b"\x02" not in fields or fields[b"\x02"][0] != 0x30:
        _fail(f"{what}: no TCB sequence")
    tcb: dict[int, tuple[int, bytes]] = {}
    for tag, entry in _der_items(fields[b"\x02"][1], what):
        pair = _der_items(entry, what)
        if tag != 0x30 or len(pair) != 2 or pair[0][0] != 0x06:
            _fail(f"{what}: TCB entry is not SEQUENCE {{ OID, value }}")
        oid = pair[0][1]
        if len(oid) != len(_SGX_OID_DER) + 2 or not oid.startswith(_SGX_OID_DER + b"\x02"):
            continue
        index = oid[-1]
        if index in tcb:
            _fail(f"{what}: duplicate TCB entry {index}")
        tcb[index] = pair[1]
    if any(index not in tcb for index in range(1, 19)):
        _fail(f"{what}: incomplete TCB (components 1-16, PCESVN, CPUSVN needed)")
    components = tuple(
        _der_unsigned(*tcb[index], f"{what}: TCB component {index}", 255) for index in range(1, 17)
    )
    pce_svn = _der_unsigned(*tcb[17], f"{what}: PCESVN", 0xFFFF)
    cpu_tag, cpu_svn = tcb[18]
    if cpu_tag != 0x04 or len(cpu_svn) != 16:
        _fail(f"{what}: CPUSVN is not a 16-byte OCTET STRING")
    return PckCertificateExtensions(
        fmspc=octets(b"\x04", "FMSPC", 6), pce_id=octets(b"\x03", "PCE-ID", 2),
        cpu_svn=cpu_svn, pce_svn=pce_svn, sgx_tcb_components=components,
        ppid=octets(b"\x01", "PPID", 16) if b"\x01" in fields else None,
    )


# --- signed JSON collateral --------------------------------------------------------------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _signed_json(document: bytes | str, body_key: str, what: str) -> tuple[bytes, Any, bytes]:
    """Split Intel's ``{"<body_key>": {...}, "signature": "<hex r‖s>"}`` into the exact bytes of
    the body value (what Intel signs: the value's text as it stands in the document), the parsed
    body, and the 64-byte signature. The body is parsed from the very span that is verified, so no
    duplicate key or re-serialisation can make the checked and the used data differ."""
    if isinstance(document, str):
        document = document.encode("utf-8")
    if not isinstance(document, bytes):
        raise TypeError(f"{what}: pass the document's raw bytes or text, not "
                        f"{type(document).__name__}: the signature covers its exact text")
    if len(document) > _MAX_COLLATERAL_SIZE:
        _fail(f"{what}: document of {len(document)} bytes is too large")
    try:
        text = document.decode("utf-8")
    except UnicodeDecodeError:
        _fail(f"{what}: not UTF-8")
    decoder = json.JSONDecoder()
    members: dict[str, tuple[Any, int, int]] = {}

    def skip(position: int) -> int:
        match = _WHITESPACE.match(text, position)
        return match.end() if match else position

    def char(position: int) -> str:
        return text[position] if position < len(text) else ""

    try:
        position = skip(0)
        if char(position) != "{":
            _fail(f"{what}: not a JSON object")
        position = skip(position + 1)
        while char(position) != "}":
            if char(position) != '"':
                _fail(f"{what}: malformed JSON")
            scanstring = json.decoder.scanstring  # type: ignore[attr-defined]
            name, position = scanstring(text, position + 1)
            position = skip(position)
            if char(position) != ":":
                _fail(f"{what}: malformed JSON")
            start = skip(position + 1)
            value, end = decoder.raw_decode(text, start)
            if name in members:
                _fail(f"{what}: duplicate key {name!r}")
            members[name] = (value, start, end)
            position = skip(end)
            if char(position) == ",":
                position = skip(position + 1)
                if char(position) == "}":
                    _fail(f"{what}: malformed JSON")
            elif char(position) != "}":
                _fail(f"{what}: malformed JSON")
        if skip(position + 1) != len(text):
            _fail(f"{what}: data after the JSON object")
    except (ValueError, RecursionError) as exc:
        raise AttestationFailed(f"{what}: malformed JSON ({exc})") from exc
    if body_key not in members or "signature" not in members:
        _fail(f"{what}: needs the keys {body_key!r} and 'signature'")
    body, start, end = members[body_key]
    signature_hex = members["signature"][0]
    if not isinstance(signature_hex, str) or not re.fullmatch(r"[0-9a-fA-F]{128}", signature_hex):
        _fail(f"{what}: signature is not 64 bytes of hex")
    return text[start:end].encode("utf-8"), body, bytes.fromhex(signature_hex)


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


# --- certificate chains ------------------------------------------------------------------------

CertificateChain = Sequence[x509.Certificate] | bytes | str


def _load_chain(chain: CertificateChain, what: str) -> tuple[x509.Certificate, ...]:
    if isinstance(chain, (bytes, str)):
        pem = chain.encode() if isinstance(chain, str) else chain
        try:
            certificates = x509.load_pem_x509_certificates(pem.rstrip(b"\0"))
        except ValueError as exc:
            raise AttestationFailed(f"{what}: not a PEM certificate chain") from exc
    else:
        certificates = list(chain)
    if not certificates:
        _fail(f"{what}: empty certificate chain")
    if len(certificates) > _MAX_CHAIN_LENGTH:
        _fail(f"{what}: certificate chain of {len(certificates)} is too long")
    return tuple(certificates)


def _bounded_add(memory: set[Any], key: Any) -> None:
    if len(memory) >= _CHAIN_CACHE_LIMIT:
        memory.clear()
    memory.add(key)


def _bounded_put(memory: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memory) >= _CHAIN_CACHE_LIMIT:
        memory.clear()
    memory[key] = value


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


@dataclasses.dataclass(frozen=True, slots=True)
class _CheckedChain:
    """A chain that passed every check that does not depend on the time: what is left to check
    at each ``now`` is the validity of its certificates and of the CRLs consulted."""

    certificates: tuple[x509.Certificate, ...]
    crls: tuple[tuple[str, x509.CertificateRevocationList], ...]

    def check_time(self, now: datetime, what: str) -> None:
        for certificate in self.certificates:
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                _fail(f"{what}: {_common_name(certificate.subject)!r} is not valid at "
                      f"{now.isoformat()} (valid {certificate.not_valid_before_utc.isoformat()} "
                      f"to {certificate.not_valid_after_utc.isoformat()})")
        for issuer_name, crl in self.crls:
            next_update = crl.next_update_utc
            if crl.last_update_utc > now or (next_update is not None and next_update < now):
                _fail(f"{what}: the CRL of {issuer_name!r} is not valid at {now.isoformat()} "
                      f"(lastUpdate {crl.last_update_utc.isoformat()}, nextUpdate "
                      f"{next_update.isoformat() if next_update else 'none'})")


class _ChainVerifier:
    """Verifies certificate chains (leaf first) to one pinned root, with optional CRLs.

    A chain must end at the root (which is appended if the chain stops short of a root); every
    issuer must be a CA (basic constraints, keyCertSign, path length) that signed the certificate
    below it; the leaf must be no CA; names must be what Intel issues. With CRLs configured, every
    certificate below the root must be covered by a CRL from its issuer that the issuer signed and
    that does not list it: a missing CRL fails closed instead of skipping the check.

    Chains that pass the time-independent checks are remembered by their exact certificates, so
    the shared intermediates and the collateral chains are verified once, not once per quote; only
    successes are remembered, and the memory is emptied when it reaches its bound.
    """

    def __init__(self, trusted_root: x509.Certificate,
                 crls: Sequence[x509.CertificateRevocationList] | None) -> None:
        self.trusted_root = trusted_root
        self._crls: dict[x509.Name, list[tuple[int, x509.CertificateRevocationList]]] | None = None
        if crls is not None:
            self._crls = {}
            for index, crl in enumerate(crls):
                self._crls.setdefault(crl.issuer, []).append((index, crl))
        self._checked: dict[tuple[Any, ...], _CheckedChain] = {}
        #: (certificate, issuer) and (CRL index, issuer) pairs whose signature verified
        self._signed: set[tuple[Any, ...]] = set()

    def verify(self, chain: Sequence[x509.Certificate], *, now: datetime, what: str,
               leaf_phrase: str, ca_phrases: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
        """Check ``chain`` at ``now``; return it with the root. Raises AttestationFailed."""
        key = (what, tuple(chain))
        checked = self._checked.get(key)
        if checked is None:
            checked = self._check_static(chain, what, leaf_phrase, ca_phrases)
            _bounded_put(self._checked, key, checked)
        checked.check_time(now, what)
        return checked.certificates

    def _check_static(self, chain: Sequence[x509.Certificate], what: str, leaf_phrase: str,
                      ca_phrases: tuple[str, ...]) -> _CheckedChain:
        certificates = list(chain)
        last = certificates[-1]
        if last != self.trusted_root:
            if last.subject == last.issuer:
                _fail(f"{what}: the chain ends at {_common_name(last.subject)!r} (SHA-256 "
                      f"{_fingerprint(last)}), not at the pinned root (SHA-256 "
                      f"{_fingerprint(self.trusted_root)})")
            certificates.append(self.trusted_root)
        if len(certificates) < 2 or len(certificates) > _MAX_CHAIN_LENGTH:
            _fail(f"{what}: a chain of {len(certificates)} certificates")
        leaf = certificates[0]
        if leaf_phrase not in _common_name(leaf.subject):
            _fail(f"{what}: leaf {_common_name(leaf.subject)!r} is not an {leaf_phrase!r} "
                  f"certificate")
        for certificate in certificates[1:-1]:
            if not any(phrase in _common_name(certificate.subject) for phrase in ca_phrases):
                _fail(f"{what}: unexpected intermediate {_common_name(certificate.subject)!r}")
        try:
            if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                _fail(f"{what}: the leaf {_common_name(leaf.subject)!r} is a CA")
        except x509.ExtensionNotFound:
            pass
        except ValueError as exc:
            raise AttestationFailed(f"{what}: unreadable leaf extensions ({exc})") from exc
        crls_used: list[tuple[str, x509.CertificateRevocationList]] = []
        for depth, (child, issuer) in enumerate(zip(certificates, certificates[1:])):
            issuer_name = _common_name(issuer.subject)
            try:
                constraints = issuer.extensions.get_extension_for_class(
                    x509.BasicConstraints).value
                usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
            except x509.ExtensionNotFound:
                _fail(f"{what}: issuer {issuer_name!r} lacks basic constraints or key usage")
            except ValueError as exc:
                raise AttestationFailed(
                    f"{what}: unreadable extensions of {issuer_name!r}") from exc
            if not constraints.ca or not usage.key_cert_sign:
                _fail(f"{what}: issuer {issuer_name!r} is not a CA")
            # ``depth`` intermediate CAs lie between this issuer and the leaf
            if constraints.path_length is not None and depth > constraints.path_length:
                _fail(f"{what}: path length of {issuer_name!r} exceeded")
            if (child, issuer) not in self._signed:
                try:
                    child.verify_directly_issued_by(issuer)
                except (ValueError, TypeError, InvalidSignature):
                    _fail(f"{what}: {_common_name(child.subject)!r} is not signed by "
                          f"{issuer_name!r}")
                _bounded_add(self._signed, (child, issuer))
        # revocation only once the whole path is authentic, so a foreign chain is reported as such
        if self._crls is not None:
            for child, issuer in zip(certificates, certificates[1:]):
                crls_used.extend(self._check_revocation(child, issuer, what))
        return _CheckedChain(tuple(certificates), tuple(crls_used))

    def _check_revocation(self, certificate: x509.Certificate, issuer: x509.Certificate,
                          what: str) -> list[tuple[str, x509.CertificateRevocationList]]:
        assert self._crls is not None
        issuer_name = _common_name(issuer.subject)
        crls = self._crls.get(certificate.issuer)
        if not crls:
            _fail(f"{what}: no CRL from {issuer_name!r} to check "
                  f"{_common_name(certificate.subject)!r} against")
        for index, crl in crls:
            if (index, issuer) not in self._signed:
                try:
                    valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
                except (ValueError, TypeError):
                    valid = False
                if not valid:
                    _fail(f"{what}: the CRL of {issuer_name!r} is not signed by it")
                _bounded_add(self._signed, (index, issuer))
            if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
                _fail(f"{what}: {_common_name(certificate.subject)!r} (serial "
                      f"{certificate.serial_number:x}) is revoked by the CRL of {issuer_name!r}")
        return [(issuer_name, crl) for _, crl in crls]


# --- collateral ----------------------------------------------------------------------------------

class Collateral:
    """The TCB Info and QE Identity for one TEE type and one platform family (FMSPC).

    Built from the documents exactly as Intel PCS or a PCCS serves them (bytes or text: the
    signature covers the raw text of the ``tcbInfo`` / ``enclaveIdentity`` value, so a parsed
    dict cannot be checked and is not accepted) and their issuer chains (the PEM of the
    ``TCB-Info-Issuer-Chain`` / ``SGX-Enclave-Identity-Issuer-Chain`` headers, or certificates;
    for files saved without headers, :func:`ppml.attestation.intel_root.intel_tcb_signing_chain`).

    Both documents are parsed and their signatures verified here, once. What depends on the trust
    anchor and the time (the chains to the pinned root, issueDate..nextUpdate) is checked by
    :class:`DcapVerifier` on each verification.

    Raises:
        AttestationFailed: malformed documents, a signature that the chain's first certificate
            did not make, or a TCB Info and QE Identity for different TEE types.
    """

    __slots__ = ("tcb_info", "qe_identity", "tcb_info_signing_chain", "qe_identity_signing_chain",
                 "tee")

    def __init__(self, *, tcb_info: bytes | str, tcb_info_signing_chain: CertificateChain,
                 qe_identity: bytes | str, qe_identity_signing_chain: CertificateChain) -> None:
        self.tcb_info_signing_chain = _load_chain(tcb_info_signing_chain, "TCB Info signing chain")
        self.qe_identity_signing_chain = _load_chain(qe_identity_signing_chain,
                                                     "QE Identity signing chain")
        signed, body, signature = _signed_json(tcb_info, "tcbInfo", "TCB Info")
        if not _verify_raw_ecdsa(_p256_key(self.tcb_info_signing_chain[0], "TCB Info"),
                                 signature, signed):
            _fail("TCB Info signature is not valid under its signing certificate "
                  f"{_common_name(self.tcb_info_signing_chain[0].subject)!r}")
        self.tcb_info = TcbInfo.from_json(body)
        signed, body, signature = _signed_json(qe_identity, "enclaveIdentity", "QE Identity")
        if not _verify_raw_ecdsa(_p256_key(self.qe_identity_signing_chain[0], "QE Identity"),
                                 signature, signed):
            _fail("QE Identity signature is not valid under its signing certificate "
                  f"{_common_name(self.qe_identity_signing_chain[0].subject)!r}")
        self.qe_identity = QeIdentity.from_json(body)
        self.tee = TEE_SGX if self.tcb_info.id == "SGX" else TEE_TDX
        if self.qe_identity.id != _QE_ID_FOR_TEE[self.tee]:
            _fail(f"collateral: QE Identity {self.qe_identity.id!r} does not go with "
                  f"TCB Info {self.tcb_info.id!r}")

    @classmethod
    def from_files(cls, tcb_info: Path | str, qe_identity: Path | str, *,
                   tcb_info_signing_chain: CertificateChain | Path,
                   qe_identity_signing_chain: CertificateChain | Path) -> Collateral:
        """Load both documents (and chains given as paths to PEM files) from disk."""

        def chain(value: CertificateChain | Path) -> CertificateChain:
            return Path(value).read_bytes() if isinstance(value, Path) else value

        return cls(tcb_info=Path(tcb_info).read_bytes(),
                   tcb_info_signing_chain=chain(tcb_info_signing_chain),
                   qe_identity=Path(qe_identity).read_bytes(),
                   qe_identity_signing_chain=chain(qe_identity_signing_chain))

    @property
    def fmspc(self) -> bytes:
        return self.tcb_info.fmspc

    def __repr__(self) -> str:
        return (f"Collateral(tee={self.tee!r}, fmspc={self.fmspc.hex()!r}, "
                f"nextUpdate={self.tcb_info.next_update.isoformat()!r})")


def fetch_from_pccs(url: str, fmspc: str | bytes, *, tee: str = TEE_SGX,
                    client: httpx.Client | None = None, timeout: float = 10.0) -> Collateral:
    """Fetch and check the collateral for ``fmspc`` from a PCCS or Intel PCS (API v4).

    ``GET {url}/{sgx|tdx}/certification/v4/tcb?fmspc=…`` and ``…/qe/identity``; the issuer chains
    come URL-encoded in the ``TCB-Info-Issuer-Chain`` and ``SGX-Enclave-Identity-Issuer-Chain``
    headers. Pass ``client`` to choose TLS trust or a transport; the default client verifies TLS
    against the system's CA store.

    Raises:
        AttestationFailed: the service cannot be reached, answers an error or without issuer chain,
            or the collateral does not verify (see :class:`Collateral`).
    """
    import httpx  # only this function needs the network stack; keep it out of verifier imports

    fmspc_hex = fmspc.hex() if isinstance(fmspc, bytes) else fmspc
    if not re.fullmatch(r"[0-9a-fA-F]{12}", fmspc_hex):
        raise ValueError(f"FMSPC must be 6 bytes (12 hex digits), not {fmspc_hex!r}")
    if tee not in _TCB_INFO_ID_FOR_TEE:
        raise ValueError(f"tee must be {TEE_SGX!r} or {TEE_TDX!r}")
    base = f"{url.rstrip('/')}/{tee}/certification/v4"
    owned = client is None
    http = client if client is not None else httpx.Client(timeout=timeout)
    try:
        tcb_response = http.get(f"{base}/tcb", params={"fmspc": fmspc_hex.upper()})
        qe_response = http.get(f"{base}/qe/identity")
    except httpx.HTTPError as exc:
        raise AttestationFailed(f"collateral: PCCS {url} unreachable ({exc})") from exc
    finally:
        if owned:
            http.close()

    def issuer_chain(response: httpx.Response, *headers: str) -> bytes:
        if response.status_code != 200:
            _fail(f"collateral: PCCS {url} answered {response.status_code} for "
                  f"{response.request.url.path}")
        for header in headers:
            value = response.headers.get(header)
            if value:
                return urllib.parse.unquote(value).encode()
        _fail(f"collateral: PCCS {url} sent no {headers[0]} header")

    return Collateral(
        tcb_info=tcb_response.content,
        tcb_info_signing_chain=issuer_chain(tcb_response, "TCB-Info-Issuer-Chain",
                                            "SGX-TCB-Info-Issuer-Chain"),
        qe_identity=qe_response.content,
        qe_identity_signing_chain=issuer_chain(qe_response, "SGX-Enclave-Identity-Issuer-Chain"),
    )


# --- the verifier --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedQuote:
    """A quote whose PCK chain, QE report signature, attestation-key binding and quote signature
    have been verified; its TCB is not yet judged (that needs collateral)."""

    quote: SgxQuote | TdxQuote
    pck_chain: tuple[x509.Certificate, ...] = dataclasses.field(repr=False)
    pck: PckCertificateExtensions


_OUT_OF_DATE_CONVERGENCE = {
    "UpToDate": "OutOfDate",
    "SWHardeningNeeded": "OutOfDate",
    "ConfigurationNeeded": "OutOfDateConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded": "OutOfDateConfigurationNeeded",
}


def _converge(status: str, other: str) -> str:
    """Combine a platform TCB status with a QE or TDX module status (QVL
    ``convergeTcbStatusWithQeTcbStatus`` / ``…WithTdxModuleStatus``)."""
    if other == "OutOfDate":
        return _OUT_OF_DATE_CONVERGENCE.get(status, status)
    if other == "Revoked":
        return "Revoked"
    return status


def _merge_advisories(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(advisory for group in groups for advisory in group))


class DcapVerifier:
    """Verifies SGX and TDX DCAP quotes (an :class:`~ppml.core.evidence.EvidenceVerifier`).

    ``collateral`` holds one :class:`Collateral` per TEE type and FMSPC the verifier should
    accept; ``trusted_root`` defaults to the pinned Intel SGX Root CA; with ``crls`` (the Intel SGX
    Root CA CRL and the PCK CA CRLs), every certificate below the root must be covered by a valid
    CRL from its issuer and not be on it.
    """

    def __init__(self, *, collateral: Collateral | Iterable[Collateral] = (),
                 trusted_root: x509.Certificate | None = None,
                 crls: Sequence[x509.CertificateRevocationList] | None = None) -> None:
        self.trusted_root = trusted_root if trusted_root is not None else intel_sgx_root_ca()
        items = [collateral] if isinstance(collateral, Collateral) else list(collateral)
        self._collateral: dict[tuple[str, bytes], Collateral] = {}
        for item in items:
            key = (item.tee, item.fmspc)
            if key in self._collateral:
                raise ValueError(f"two collaterals for {item.tee} FMSPC {item.fmspc.hex()}")
            self._collateral[key] = item
        self._chains = _ChainVerifier(self.trusted_root, crls)
        self._pck_extensions: dict[x509.Certificate, PckCertificateExtensions] = {}

    def verify(self, evidence: Evidence, *, now: datetime) -> Claims:
        """Verify a quote completely and return its claims, with the TCB status and advisories.

        Raises:
            QuoteFormatError: the evidence is not a well-formed quote of its TEE type.
            AttestationFailed: any signature, chain, revocation or collateral check fails, the
                TCB is below every level, or the TCB status is ``Revoked``.
        """
        verified = self.verify_signatures(evidence, now=now)
        status, advisories = self._evaluate_tcb(verified, now)
        return verified.quote.to_claims(tcb_status=status, advisory_ids=advisories)

    def verify_signatures(self, evidence: Evidence, *, now: datetime) -> VerifiedQuote:
        """The collateral-free part of :meth:`verify`: PCK chain (and CRLs), QE report
        signature, attestation-key binding and quote signature. The result proves the quote came
        from a genuine Intel platform, not how current that platform's TCB is."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if evidence.tee not in _TCB_INFO_ID_FOR_TEE:
            raise QuoteFormatError(f"DCAP verifies SGX and TDX evidence, not {evidence.tee!r}")
        quote = parse_quote(evidence.data)
        if quote.tee != evidence.tee:
            raise QuoteFormatError(f"evidence of tee {evidence.tee!r} holds a {quote.tee} quote")
        signature_data = quote.signature_data
        if signature_data.certification_data_type != CERTIFICATION_DATA_PCK_CHAIN:
            _fail(f"certification data type {signature_data.certification_data_type}: "
                  f"a PCK certificate chain (type 5) is needed")
        chain = self._chains.verify(
            _load_chain(signature_data.certification_data, "PCK chain"), now=now,
            what="PCK chain", leaf_phrase="SGX PCK Certificate",
            ca_phrases=("SGX PCK Platform CA", "SGX PCK Processor CA"))
        pck_key = _p256_key(chain[0], "PCK chain")
        if not _verify_raw_ecdsa(pck_key, signature_data.qe_report_signature,
                                 signature_data.qe_report.raw):
            _fail("QE report signature is not valid under the PCK certificate's key")
        expected = hashlib.sha256(signature_data.attestation_key
                                  + signature_data.qe_auth_data).digest() + bytes(32)
        if signature_data.qe_report.report_data != expected:
            _fail("QE report does not bind the attestation key: its report data is not "
                  "SHA-256(attestation key ‖ QE auth data) ‖ zeros")
        try:
            attestation_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + signature_data.attestation_key)
        except ValueError:
            _fail("the attestation key is not a P-256 point")
        if not _verify_raw_ecdsa(attestation_key, signature_data.quote_signature,
                                 quote.signed_bytes):
            _fail("quote signature is not valid under the attestation key")
        return VerifiedQuote(quote=quote, pck_chain=chain, pck=self._pck_extensions_of(chain[0]))

    def _pck_extensions_of(self, certificate: x509.Certificate) -> PckCertificateExtensions:
        extensions = self._pck_extensions.get(certificate)
        if extensions is None:
            extensions = parse_pck_extensions(certificate)
            _bounded_put(self._pck_extensions, certificate, extensions)
        return extensions

    def check_collateral(self, collateral: Collateral, *, now: datetime) -> None:
        """Check that ``collateral`` is trusted and current at ``now``: both signing chains lead to
        the pinned root (and pass the CRLs, if configured), and ``now`` lies inside both
        documents' issueDate..nextUpdate. :meth:`verify` does this for the collateral it uses;
        call it directly to vet collateral when loading it.

        Raises:
            AttestationFailed: expired or not yet valid documents, or an untrusted signing chain.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        for document, chain, what in (
            (collateral.tcb_info, collateral.tcb_info_signing_chain, "TCB Info"),
            (collateral.qe_identity, collateral.qe_identity_signing_chain, "QE Identity"),
        ):
            if now > document.next_update:
                _fail(f"collateral: {what} expired at {document.next_update.isoformat()} "
                      f"(nextUpdate), verifying at {now.isoformat()}")
            if now < document.issue_date:
                _fail(f"collateral: {what} is not valid before "
                      f"{document.issue_date.isoformat()} (issueDate)")
            self._chains.verify(chain, now=now, what=f"collateral: {what} signing chain",
                                leaf_phrase="SGX TCB Signing", ca_phrases=())

    def _evaluate_tcb(self, verified: VerifiedQuote, now: datetime) -> tuple[str, tuple[str, ...]]:
        quote, pck = verified.quote, verified.pck
        collateral = self._collateral.get((quote.tee, pck.fmspc))
        if collateral is None:
            have = sorted(fmspc.hex() for tee, fmspc in self._collateral if tee == quote.tee)
            _fail(f"FMSPC mismatch: the PCK certificate's FMSPC {pck.fmspc.hex()} has no "
                  f"{_TCB_INFO_ID_FOR_TEE[quote.tee]} TCB Info (collateral for: "
                  f"{', '.join(have) or 'none'})")
        self.check_collateral(collateral, now=now)
        tcb_info = collateral.tcb_info
        if pck.pce_id != tcb_info.pce_id:
            _fail(f"PCE-ID mismatch: PCK certificate {pck.pce_id.hex()}, "
                  f"TCB Info {tcb_info.pce_id.hex()}")

        module_level: EnclaveTcbLevel | None = None
        if isinstance(quote, TdxQuote):
            module_level = self._check_tdx_module(quote, tcb_info)
        qe_level = collateral.qe_identity.evaluate(quote.signature_data.qe_report)
        if qe_level.status == "Revoked":
            _fail(f"TCB status Revoked: the QE's ISVSVN {quote.signature_data.qe_report.isv_svn}"
                  f" is revoked by the QE Identity")

        if isinstance(quote, TdxQuote):
            level = next((level for level in tcb_info.tcb_levels if level.platform_meets(pck)
                          and level.tdx_meets(quote.body.tee_tcb_svn)), None)
        else:
            level = next((level for level in tcb_info.tcb_levels if level.platform_meets(pck)),
                         None)
        if level is None:
            _fail("TCB level: the platform's TCB is below every level of the TCB Info "
                  "(TCB not supported)")
        if level.status == "Revoked":
            _fail(f"TCB status Revoked: the platform's TCB level of "
                  f"{level.tcb_date.isoformat() if level.tcb_date else 'unknown date'} is revoked")
        status = level.status
        if module_level is not None:
            if module_level.status == "Revoked":
                _fail("TCB status Revoked: the TDX module's ISVSVN is revoked")
            status = _converge(status, module_level.status)
        status = _converge(status, qe_level.status)
        advisories = _merge_advisories(level.advisory_ids,
                                       module_level.advisory_ids if module_level else (),
                                       qe_level.advisory_ids)
        return status, advisories

    def _check_tdx_module(self, quote: TdxQuote, tcb_info: TcbInfo) -> EnclaveTcbLevel | None:
        """Match MRSIGNERSEAM and SEAMATTRIBUTES (QVL 4.1.2.4.11); for a TDX module with a major
        version (TEE_TCB_SVN byte 1 > 0) return the module identity's TCB level for its SVN."""
        tee_tcb_svn = quote.body.tee_tcb_svn
        module_version, module_svn = tee_tcb_svn[1], tee_tcb_svn[0]
        identity = tcb_info.tdx_module
        if module_version > 0:
            wanted = f"TDX_{module_version:02X}"
            identity = next((item for item in tcb_info.tdx_module_identities
                             if item.id == wanted), None)
            if identity is None:
                _fail(f"TDX module mismatch: the TCB Info has no identity {wanted}")
        if identity is None:
            _fail("TDX module mismatch: the TCB Info has no tdxModule")
        if quote.body.mr_signer_seam != identity.mr_signer:
            _fail(f"TDX module mismatch: MRSIGNERSEAM {quote.body.mr_signer_seam.hex()}")
        masked = bytes(a & b for a, b in zip(quote.body.seam_attributes, identity.attributes_mask))
        if masked != identity.attributes:
            _fail(f"TDX module mismatch: SEAMATTRIBUTES {quote.body.seam_attributes.hex()}")
        if module_version == 0:
            return None
        level = _identity_level(identity.tcb_levels, module_svn)
        if level is None:
            _fail(f"TDX module: SVN {module_svn} is below every level of {identity.id} "
                  f"(TCB not supported)")
        return level


# --- collateral and CRLs recorded in files --------------------------------------------------------

def load_crls(paths: Iterable[Path]) -> list[x509.CertificateRevocationList]:
    """Read CRLs (the Intel SGX Root CA CRL, the PCK CA CRLs) from files, PEM or DER.

    Raises:
        UsageError: a file that is no CRL, or larger than 16 MiB.
    """
    crls = []
    for path in paths:
        with open(path, "rb") as file:
            data = file.read(_MAX_CRL_SIZE + 1)
        if len(data) > _MAX_CRL_SIZE:
            raise UsageError(f"{path}: larger than {_MAX_CRL_SIZE >> 20} MiB, not a CRL")
        try:
            crls.append(x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
                        else x509.load_der_x509_crl(data))
        except ValueError as exc:
            raise UsageError(f"{path}: not a CRL (PEM or DER)") from exc
    return crls


def verifier_from_files(collateral: Iterable[tuple[Path, Path]], *, crls: Iterable[Path] = (),
                        trusted_root: x509.Certificate | None = None,
                        signing_chain: CertificateChain | Path | None = None) -> DcapVerifier:
    """A :class:`DcapVerifier` for collateral recorded in files: (TCB Info, QE Identity) JSON pairs
    exactly as PCS/PCCS served them, one pair per TEE type and FMSPC.

    Files lose the issuer chain that PCS sends in response headers, so the documents are checked
    against ``signing_chain`` (PEM file or certificates; default Intel's pinned TCB Signing
    certificate and root). ``trusted_root`` replaces the pinned Intel SGX Root CA (tests, private
    PKIs). With ``crls`` (files, PEM or DER), revocation is enforced; without, it is not checked.

    Raises:
        AttestationFailed: a document that is malformed or not signed by the signing chain.
        UsageError: a CRL file that is no CRL.
    """
    chain = intel_tcb_signing_chain() if signing_chain is None else signing_chain
    loaded = [Collateral.from_files(tcb_info, qe_identity, tcb_info_signing_chain=chain,
                                    qe_identity_signing_chain=chain)
              for tcb_info, qe_identity in collateral]
    return DcapVerifier(collateral=loaded, trusted_root=trusted_root,
                        crls=load_crls(crls) or None)
