"""Homomorphic encryption for federated learning: one :class:`HEBackend`; Paillier (gmpy2), CKKS (TenSEAL)."""

from __future__ import annotations

from ppml.fl.he.backend import HEBackend
from ppml.fl.he.ckks import CkksBackend, CkksVector
from ppml.fl.he.paillier import (
    DEFAULT_FRACTION_BITS,
    DEFAULT_KEY_BITS,
    EncryptedVector,
    ObfuscatorPool,
    PaillierBackend,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
)

__all__ = [
    "DEFAULT_FRACTION_BITS",
    "DEFAULT_KEY_BITS",
    "CkksBackend",
    "CkksVector",
    "EncryptedVector",
    "HEBackend",
    "ObfuscatorPool",
    "PaillierBackend",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "generate_paillier_keypair",
]
