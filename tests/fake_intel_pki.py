"""A hermetic fake of Intel's DCAP attestation PKI, built at test time.

It mirrors the real hierarchy with fresh P-256 keys::

    Fake Intel SGX Root CA ─┬─ Fake Intel SGX PCK Platform CA ── Intel SGX PCK Certificate
                            │                                    (SGX extension: FMSPC, TCB, ...)
                            └─ Fake Intel SGX TCB Signing ── signs TCB Info and QE Identity JSON

and writes complete SGX v3 and TDX v4/v5 quotes the way a platform does: a fresh attestation key,
a QE report binding it (report data = SHA-256(attestation key ‖ auth data) ‖ zeros) signed by the
PCK key, and the quote signed by the attestation key. Every step has a knob to break it, so the
tests can check that the verifier notices. The byte layouts are written here independently of
``ppml.attestation.quote`` (from the same Intel documents), so the parser is checked against a
second reading of the format, not against itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ppml.attestation.dcap import Collateral

#: The instant the fake PKI is built for: everything below is valid then.
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CERT_NOT_BEFORE = datetime(2020, 1, 1, tzinfo=UTC)
CERT_NOT_AFTER = datetime(2040, 1, 1, tzinfo=UTC)
COLLATERAL_ISSUE_DATE = datetime(2025, 5, 15, tzinfo=UTC)
COLLATERAL_NEXT_UPDATE = datetime(2025, 6, 14, tzinfo=UTC)
#: CRLs outlive the collateral on both sides, so each expiry can be tested on its own.
CRL_LAST_UPDATE = datetime(2025, 5, 1, tzinfo=UTC)
CRL_NEXT_UPDATE = datetime(2025, 7, 1, tzinfo=UTC)

FMSPC = bytes.fromhex("00906ed50000")
PCE_ID = bytes.fromhex("0000")
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
QE_MR_SIGNER = hashlib.sha256(b"fake quoting enclave signer").digest()
#: QE report ATTRIBUTES as real QEs have them (INIT | MODE64BIT | PROVISIONKEY; XFRM 0xe7).
QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
SGX_QE_PROD_ID, TDX_QE_PROD_ID = 1, 2
QE_ISV_SVN = 8

#: The platform defaults: TCB components 5,5,5,5,0..., PCESVN 13 → the UpToDate level.
UP_TO_DATE_COMPONENTS = (5, 5, 5, 5) + (0,) * 12
OUT_OF_DATE_COMPONENTS = (4, 4, 4, 4) + (0,) * 12
REVOKED_COMPONENTS = (2, 2, 2, 2) + (0,) * 12
PCE_SVN = 13
#: TEE_TCB_SVN of the default TD: TDX module SVN 5, major version 0, then 5.
TEE_TCB_SVN = bytes([5, 0, 5]) + bytes(13)
TDX_MODULE_MR_SIGNER = bytes(48)
OUT_OF_DATE_ADVISORY = "INTEL-SA-00001"


# --- DER for the SGX extension ------------------------------------------------------------------

def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        encoded = bytes([length])
    else:
        size = (length.bit_length() + 7) // 8
        encoded = bytes([0x80 | size]) + length.to_bytes(size, "big")
    return bytes([tag]) + encoded + content


def _sgx_oid(*arcs: int) -> bytes:
    return _der(0x06, bytes.fromhex("2a864886f84d010d01") + bytes(arcs))


def _der_int(value: int) -> bytes:
    content = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return _der(0x02, content)


def sgx_extension(*, fmspc: bytes, pce_id: bytes, components: Sequence[int], pce_svn: int,
                  ppid: bytes = b"\x11" * 16) -> bytes:
    """The DER of an Intel SGX extension as a PCK certificate carries it."""
    tcb = b"".join(_der(0x30, _sgx_oid(2, index + 1) + _der_int(svn))
                   for index, svn in enumerate(components))
    tcb += _der(0x30, _sgx_oid(2, 17) + _der_int(pce_svn))
    tcb += _der(0x30, _sgx_oid(2, 18) + _der(0x04, bytes(components)))
    entries = [
        _der(0x30, _sgx_oid(1) + _der(0x04, ppid)),
        _der(0x30, _sgx_oid(2) + _der(0x30, tcb)),
        _der(0x30, _sgx_oid(3) + _der(0x04, pce_id)),
        _der(0x30, _sgx_oid(4) + _der(0x04, fmspc)),
        _der(0x30, _sgx_oid(5) + _der(0x0A, b"\x01")),
    ]
    return _der(0x30, b"".join(entries))


# --- certificates and CRLs ----------------------------------------------------------------------

def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake Intel Corporation"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(*, subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, ca: bool, path_length: int | None,
                 not_before: datetime = CERT_NOT_BEFORE, not_after: datetime = CERT_NOT_AFTER,
                 extra: Sequence[x509.ExtensionType] = ()) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def raw_signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA-SHA256 as Intel writes it: 32-byte big-endian r ‖ s."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


# --- report bodies ------------------------------------------------------------------------------

def sgx_report_body(*, mr_enclave: bytes = b"\xe1" * 32, mr_signer: bytes = b"\x51" * 32,
                    isv_prod_id: int = 0, isv_svn: int = 0, debug: bool = False,
                    attributes: bytes | None = None, misc_select: bytes = bytes(4),
                    report_data: bytes = bytes(64), cpu_svn: bytes = bytes(16)) -> bytes:
    """A 384-byte SGX report body (offsets of Intel's sgx_report_body_t)."""
    if attributes is None:
        # flags: INIT | MODE64BIT, and DEBUG (bit 1) if asked; XFRM 0xe7
        attributes = bytes([0x05 | (0x02 if debug else 0)]) + bytes(7) + bytes([0xE7]) + bytes(7)
    body = bytearray(384)
    body[0:16] = cpu_svn
    body[16:20] = misc_select
    body[48:64] = attributes
    body[64:96] = mr_enclave
    body[128:160] = mr_signer
    struct.pack_into("<HH", body, 256, isv_prod_id, isv_svn)
    body[320:384] = report_data
    return bytes(body)


def td_report_body(*, tee_tcb_svn: bytes = TEE_TCB_SVN, mr_seam: bytes = b"\x5e" * 48,
                   mr_signer_seam: bytes = TDX_MODULE_MR_SIGNER, seam_attributes: bytes = bytes(8),
                   debug: bool = False, xfam: bytes = bytes.fromhex("e742060000000000"),
                   mr_td: bytes = b"\x7d" * 48, rtmrs: Sequence[bytes] = (b"\x00" * 48,) * 4,
                   report_data: bytes = bytes(64), td15: bool = False) -> bytes:
    """A TD report body: 584 bytes (TD 1.0), or 648 with TEE_TCB_SVN2 and MRSERVICETD (1.5)."""
    td_attributes = bytes([0x01 if debug else 0x00, 0, 0, 0x10]) + bytes(4)
    body = (tee_tcb_svn + mr_seam + mr_signer_seam + seam_attributes + td_attributes + xfam
            + mr_td + b"\xc0" * 48 + b"\x0a" * 48 + b"\x0c" * 48 + b"".join(rtmrs) + report_data)
    if td15:
        body += tee_tcb_svn + b"\x5d" * 48
    return body


# --- the fake Intel -----------------------------------------------------------------------------

@dataclasses.dataclass
class FakePlatform:
    """One machine: its PCK key and certificate (from the fake PCK CA), and its QE."""

    intel: FakeIntel
    pck_key: ec.EllipticCurvePrivateKey
    pck_certificate: x509.Certificate

    def pck_chain_pem(self) -> bytes:
        """Leaf, PCK CA, root, NUL-terminated, as real quotes carry it."""
        return pem(self.pck_certificate, self.intel.pck_ca, self.intel.root) + b"\0"

    def quote(self, body: bytes, *, version: int, td15: bool = False,
              qe_mr_signer: bytes = QE_MR_SIGNER, qe_isv_prod_id: int | None = None,
              qe_isv_svn: int = QE_ISV_SVN, qe_attributes: bytes = QE_ATTRIBUTES,
              qe_report_data: bytes | None = None, qe_report_data_tail: bytes = bytes(32),
              qe_report_signer: ec.EllipticCurvePrivateKey | None = None,
              quote_signer: ec.EllipticCurvePrivateKey | None = None,
              pck_chain: bytes | None = None) -> bytes:
        """A complete quote around ``body``. Each keyword breaks one link when changed:
        ``qe_report_data`` / ``qe_report_data_tail`` (binding), ``qe_report_signer`` (QE report
        signature),
        ``quote_signer`` (quote signature), ``pck_chain`` (certification data)."""
        attestation_key = new_key()
        numbers = attestation_key.public_key().public_numbers()
        attestation_public = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
        auth_data = bytes(range(32))
        if qe_report_data is None:
            qe_report_data = (hashlib.sha256(attestation_public + auth_data).digest()
                              + qe_report_data_tail)
        if qe_isv_prod_id is None:
            qe_isv_prod_id = SGX_QE_PROD_ID if version == 3 else TDX_QE_PROD_ID
        qe_report = sgx_report_body(
            mr_enclave=b"\x9e" * 32, mr_signer=qe_mr_signer, isv_prod_id=qe_isv_prod_id,
            isv_svn=qe_isv_svn, attributes=qe_attributes, report_data=qe_report_data,
        )
        qe_signature = raw_signature(qe_report_signer or self.pck_key, qe_report)
        chain = self.pck_chain_pem() if pck_chain is None else pck_chain
        certification = struct.pack("<HI", 5, len(chain)) + chain
        qe_part = (qe_report + qe_signature + struct.pack("<H", len(auth_data)) + auth_data
                   + certification)

        if version == 3:
            header = struct.pack("<HHIHH", 3, 2, 0, QE_ISV_SVN, PCE_SVN)
            signed = header + INTEL_QE_VENDOR_ID + bytes(20) + body
        else:
            header = struct.pack("<HHIHH", version, 2, 0x81, 0, 0) + INTEL_QE_VENDOR_ID + bytes(20)
            if version == 5:
                body_type = 3 if td15 else 2
                signed = header + struct.pack("<HI", body_type, len(body)) + body
            else:
                signed = header + body
            qe_part = struct.pack("<HI", 6, len(qe_part)) + qe_part
        quote_signature = raw_signature(quote_signer or attestation_key, signed)
        signature_data = quote_signature + attestation_public + qe_part
        return signed + struct.pack("<I", len(signature_data)) + signature_data

    def sgx_quote(self, **fields: Any) -> bytes:
        """An SGX v3 quote; ``fields`` go to :func:`sgx_report_body` or :meth:`quote`."""
        quote_fields = {k: fields.pop(k) for k in list(fields) if k.startswith(("qe_", "quote_"))
                        or k == "pck_chain"}
        return self.quote(sgx_report_body(**fields), version=3, **quote_fields)

    def tdx_quote(self, *, version: int = 4, **fields: Any) -> bytes:
        """A TDX v4 (or v5) quote; ``fields`` go to :func:`td_report_body` or :meth:`quote`."""
        quote_fields = {k: fields.pop(k) for k in list(fields) if k.startswith(("qe_", "quote_"))
                        or k == "pck_chain"}
        td15 = bool(fields.get("td15"))
        return self.quote(td_report_body(**fields), version=version, td15=td15, **quote_fields)


def tcb_level(components: Sequence[int], pce_svn: int, status: str, *,
              tdx_components: Sequence[int] | None = None,
              advisory_ids: Sequence[str] = (), tcb_date: str = "2025-01-01T00:00:00Z"
              ) -> dict[str, Any]:
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": svn} for svn in components],
                           "pcesvn": pce_svn}
    if tdx_components is not None:
        tcb["tdxtcbcomponents"] = [{"svn": svn} for svn in tdx_components]
    level: dict[str, Any] = {"tcb": tcb, "tcbDate": tcb_date, "tcbStatus": status}
    if advisory_ids:
        level["advisoryIDs"] = list(advisory_ids)
    return level


def default_tcb_levels(tee: str) -> list[dict[str, Any]]:
    """UpToDate at components 5/PCESVN 13, OutOfDate at 3/11, Revoked at 2/10 (and for TDX
    the matching tdxtcbcomponents 5,0,5 / 3,0,3 / 0)."""
    tdx = tee == "tdx"
    return [
        tcb_level(UP_TO_DATE_COMPONENTS, 13, "UpToDate",
                  tdx_components=(5, 0, 5) + (0,) * 13 if tdx else None),
        tcb_level((3, 3, 3, 3) + (0,) * 12, 11, "OutOfDate", advisory_ids=[OUT_OF_DATE_ADVISORY],
                  tdx_components=(3, 0, 3) + (0,) * 13 if tdx else None),
        tcb_level(REVOKED_COMPONENTS, 10, "Revoked", advisory_ids=["INTEL-SA-00002"],
                  tdx_components=(0,) * 16 if tdx else None),
    ]


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class FakeIntel:
    """The fake root, PCK CA and TCB signing certificates with their keys."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey
    pck_ca: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey
    tcb_signing: x509.Certificate

    @classmethod
    def create(cls, *, root_name: str = "Fake Intel SGX Root CA") -> FakeIntel:
        root_key, pck_ca_key, tcb_signing_key = new_key(), new_key(), new_key()
        root = _certificate(subject=root_name, key=root_key, issuer=_name(root_name),
                            issuer_key=root_key, ca=True, path_length=1)
        pck_ca = _certificate(subject="Fake Intel SGX PCK Platform CA", key=pck_ca_key,
                              issuer=root.subject, issuer_key=root_key, ca=True, path_length=0)
        tcb_signing = _certificate(subject="Fake Intel SGX TCB Signing", key=tcb_signing_key,
                                   issuer=root.subject, issuer_key=root_key, ca=False,
                                   path_length=None)
        return cls(root_key, root, pck_ca_key, pck_ca, tcb_signing_key, tcb_signing)

    def platform(self, *, fmspc: bytes = FMSPC, pce_id: bytes = PCE_ID,
                 components: Sequence[int] = UP_TO_DATE_COMPONENTS, pce_svn: int = PCE_SVN,
                 not_after: datetime = CERT_NOT_AFTER) -> FakePlatform:
        """A machine with a PCK certificate for this FMSPC and TCB."""
        key = new_key()
        extension = x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.2.840.113741.1.13.1"),
            sgx_extension(fmspc=fmspc, pce_id=pce_id, components=components, pce_svn=pce_svn),
        )
        certificate = _certificate(
            subject="Intel SGX PCK Certificate", key=key, issuer=self.pck_ca.subject,
            issuer_key=self.pck_ca_key, ca=False, path_length=None, not_after=not_after,
            extra=[extension],
        )
        return FakePlatform(self, key, certificate)

    def crl(self, issuer: str, *, revoked: Sequence[x509.Certificate] = (),
            last_update: datetime = CRL_LAST_UPDATE, next_update: datetime = CRL_NEXT_UPDATE,
            signer: ec.EllipticCurvePrivateKey | None = None) -> x509.CertificateRevocationList:
        """A CRL from ``issuer`` ("root" or "pck_ca") listing ``revoked``."""
        certificate, key = ((self.root, self.root_key) if issuer == "root"
                            else (self.pck_ca, self.pck_ca_key))
        builder = (x509.CertificateRevocationListBuilder().issuer_name(certificate.subject)
                   .last_update(last_update).next_update(next_update))
        for item in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(item.serial_number)
                .revocation_date(last_update).build())
        return builder.sign(signer or key, hashes.SHA256())

    def signing_chain(self) -> list[x509.Certificate]:
        return [self.tcb_signing, self.root]

    def sign_document(self, key_name: str, body: dict[str, Any], *,
                      signer: ec.EllipticCurvePrivateKey | None = None,
                      indent: int | None = None) -> bytes:
        """``{"<key_name>": body, "signature": hex(r‖s)}``, the signature over the body's text
        exactly as it stands in the document (compact, or indented to test that)."""
        separators = (",", ":") if indent is None else (",", ": ")
        text = json.dumps(body, separators=separators, indent=indent).encode()
        signature = raw_signature(signer or self.tcb_signing_key, text)
        return (b'{"' + key_name.encode() + b'":' + text + b',"signature":"'
                + signature.hex().encode() + b'"}')

    def tcb_info(self, tee: str, *, fmspc: bytes = FMSPC, pce_id: bytes = PCE_ID,
                 levels: list[dict[str, Any]] | None = None,
                 issue_date: datetime = COLLATERAL_ISSUE_DATE,
                 next_update: datetime = COLLATERAL_NEXT_UPDATE,
                 module_identities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": "TDX" if tee == "tdx" else "SGX", "version": 3,
            "issueDate": _date(issue_date), "nextUpdate": _date(next_update),
            "fmspc": fmspc.hex().upper(), "pceId": pce_id.hex().upper(), "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
        }
        if tee == "tdx":
            body["tdxModule"] = {"mrsigner": TDX_MODULE_MR_SIGNER.hex().upper(),
                                 "attributes": "0000000000000000",
                                 "attributesMask": "FFFFFFFFFFFFFFFF"}
            body["tdxModuleIdentities"] = module_identities if module_identities is not None else [{
                "id": "TDX_01", "mrsigner": TDX_MODULE_MR_SIGNER.hex().upper(),
                "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": [
                    {"tcb": {"isvsvn": 4}, "tcbDate": "2025-01-01T00:00:00Z",
                     "tcbStatus": "UpToDate"},
                    {"tcb": {"isvsvn": 2}, "tcbDate": "2024-01-01T00:00:00Z",
                     "tcbStatus": "OutOfDate", "advisoryIDs": ["INTEL-SA-00003"]},
                ],
            }]
        body["tcbLevels"] = levels if levels is not None else default_tcb_levels(tee)
        return body

    def qe_identity(self, tee: str, *, mr_signer: bytes = QE_MR_SIGNER,
                    issue_date: datetime = COLLATERAL_ISSUE_DATE,
                    next_update: datetime = COLLATERAL_NEXT_UPDATE) -> dict[str, Any]:
        return {
            "id": "TD_QE" if tee == "tdx" else "QE", "version": 2,
            "issueDate": _date(issue_date), "nextUpdate": _date(next_update),
            "tcbEvaluationDataNumber": 17, "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": mr_signer.hex().upper(),
            "isvprodid": TDX_QE_PROD_ID if tee == "tdx" else SGX_QE_PROD_ID,
            "tcbLevels": [
                {"tcb": {"isvsvn": QE_ISV_SVN}, "tcbDate": "2025-01-01T00:00:00Z",
                 "tcbStatus": "UpToDate"},
                {"tcb": {"isvsvn": 6}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "OutOfDate",
                 "advisoryIDs": ["INTEL-SA-00004"]},
                {"tcb": {"isvsvn": 4}, "tcbDate": "2023-01-01T00:00:00Z", "tcbStatus": "Revoked"},
            ],
        }

    def collateral(self, tee: str, *, tcb_info: dict[str, Any] | None = None,
                   qe_identity: dict[str, Any] | None = None,
                   signer: ec.EllipticCurvePrivateKey | None = None,
                   signing_chain: Sequence[x509.Certificate] | None = None,
                   **tcb_fields: Any) -> Collateral:
        """Signed TCB Info and QE Identity for ``tee``, loaded into a :class:`Collateral`."""
        tcb_body = tcb_info if tcb_info is not None else self.tcb_info(tee, **tcb_fields)
        qe_body = qe_identity if qe_identity is not None else self.qe_identity(tee)
        chain = list(signing_chain) if signing_chain is not None else self.signing_chain()
        return Collateral(
            tcb_info=self.sign_document("tcbInfo", tcb_body, signer=signer),
            tcb_info_signing_chain=chain,
            qe_identity=self.sign_document("enclaveIdentity", qe_body, signer=signer),
            qe_identity_signing_chain=chain,
        )


__all__ = [
    "NOW",
    "FakeIntel",
    "FakePlatform",
    "new_key",
    "pem",
    "raw_signature",
    "sgx_report_body",
    "tcb_level",
    "td_report_body",
]
