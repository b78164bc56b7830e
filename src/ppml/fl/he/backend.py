"""The one interface every homomorphic-encryption scheme (Paillier, later CKKS) offers FL protocols.

A protocol (vertical FL, FGBoost) is written against :class:`HEBackend` and handed a backend by
whoever wires the run. The active party holds a backend with the secret key; a passive party builds
one from the public key bytes alone and can encrypt, add and multiply by plaintexts, never decrypt.
Everything crossing the wire goes through the ``*_bytes`` methods: no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy.typing as npt

__all__ = ["HEBackend"]

C = TypeVar("C")


class HEBackend(Protocol[C]):
    """Additively homomorphic encryption of float vectors, element-wise.

    ``C`` is the backend's ciphertext-vector type; it is opaque to callers, who combine ciphertexts
    only through the backend that made them.
    """

    @property
    def name(self) -> str:
        """The scheme, as a registry would key it (``"paillier"``)."""
        ...

    @property
    def can_decrypt(self) -> bool:
        """Whether this backend holds the secret key (the active party) or the public key only."""
        ...

    def encrypt(self, values: Sequence[float]) -> C:
        """Encrypt each value.

        Raises:
            PlaintextOverflow: a value is not finite or outside the encoding's range.
        """
        ...

    def decrypt(self, ciphertext: C) -> list[float]:
        """Decrypt each element.

        Raises:
            HeKeyMismatch: this backend has no secret key, or the ciphertext is under another key.
            PlaintextOverflow: a homomorphic result wrapped around the plaintext range.
        """
        ...

    def add(self, left: C, right: C) -> C:
        """Element-wise sum of two ciphertext vectors of the same length."""
        ...

    def add_plain(self, ciphertext: C, values: Sequence[float]) -> C:
        """Element-wise sum of a ciphertext vector and a plaintext vector of the same length."""
        ...

    def multiply_plain(self, ciphertext: C, factors: float | Sequence[float]) -> C:
        """Element-wise product with one plaintext scalar or a plaintext vector of the same length."""
        ...

    def matmul_plain(self, ciphertext: C, matrix: npt.ArrayLike) -> C:
        """``ciphertext`` (length n) times a plaintext n x k matrix: the encrypted length-k vector
        ``sum_i c_i * M[i, j]`` (vertical LR's ``X^T [[d]]``: pass X, n x f).

        Raises:
            UsageError: the matrix is not n x k for the ciphertext's length n.
            PlaintextOverflow: a factor or a result leaves the encoding's range.
        """
        ...

    def public_key_bytes(self) -> bytes:
        """The public key, for a passive party (the format is the backend's, versioned)."""
        ...

    def ciphertext_to_bytes(self, ciphertext: C) -> bytes:
        """A ciphertext vector's wire form (versioned, bound to this public key)."""
        ...

    def ciphertext_from_bytes(self, data: bytes) -> C:
        """Parse :meth:`ciphertext_to_bytes` output.

        Raises:
            MalformedHeData: the bytes do not parse, or belong to another key.
        """
        ...
