"""The PCK certificate's SGX extension: what Intel's certificate says of the platform.

The extension's ASN.1 layout is drawn in :func:`parse_pck_extensions`, which reads it with a small
bounds-checked DER walker (``cryptography`` leaves Intel's extension undecoded).
"""

from __future__ import annotations

import dataclasses
from typing import Final

from cryptography import x509

from ppml.attestation.dcap._common import _fail
from ppml.errors import AttestationFailed

__all__ = ["SGX_EXTENSION_OID", "PckCertificateExtensions", "parse_pck_extensions"]

#: The Intel SGX extension of PCK certificates (FMSPC, PCE-ID, TCB components, ...).
SGX_EXTENSION_OID: Final = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX_OID_DER = bytes.fromhex("2a864886f84d010d01")  # DER content octets of the OID above


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
