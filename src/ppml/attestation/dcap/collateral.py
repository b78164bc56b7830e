"""Collateral: one TEE type's TCB Info and QE Identity for one FMSPC, signatures checked once.

Intel signs each document as ``{"<body key>": {...}, "signature": "<hex r‖s>"}``: the signature
covers the exact text of the body value as it stands in the document (see :func:`_signed_json`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ppml.attestation.dcap._common import _common_name, _fail, _p256_key, _verify_raw_ecdsa
from ppml.attestation.dcap.chain import CertificateChain, _load_chain
from ppml.attestation.dcap.tcb import _QE_ID_FOR_TEE, QeIdentity, TcbInfo
from ppml.core.evidence import TEE_SGX, TEE_TDX
from ppml.errors import AttestationFailed

__all__ = ["Collateral"]

_MAX_COLLATERAL_SIZE = 1 << 20
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

    __slots__ = (
        "qe_identity",
        "qe_identity_signing_chain",
        "tcb_info",
        "tcb_info_signing_chain",
        "tee",
    )

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
