"""The helpers every DCAP check shares: its failure, certificate names, Intel's r‖s signatures.

Private to :mod:`ppml.attestation.dcap`; the bounded memos are the verifier's caches of work already
done (signatures verified, chains checked, PCK extensions parsed).
"""

from __future__ import annotations

from typing import Any, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from ppml.errors import AttestationFailed

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_CHAIN_CACHE_LIMIT = 4096


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


def _bounded_add(memory: set[Any], key: Any) -> None:
    if len(memory) >= _CHAIN_CACHE_LIMIT:
        memory.clear()
    memory.add(key)


def _bounded_put(memory: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memory) >= _CHAIN_CACHE_LIMIT:
        memory.clear()
    memory[key] = value
