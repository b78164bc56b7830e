"""Paillier encryption on gmpy2, with precomputed obfuscators and fixed-point floats.

Scheme (Paillier 1999, with the usual g = n + 1): a public key is n = p·q; a plaintext m ∈ Z_n
encrypts as c = (1 + m·n) · r^n mod n², r random in Z_n^*. Since (n + 1)^m = 1 + m·n (mod n²), the
only costly part of encryption is the obfuscator r^n mod n², which does not depend on m:
:class:`ObfuscatorPool` computes those ahead (explicitly with ``fill(k)`` or in a background thread),
so encrypting from a filled pool costs a multiplication. Decryption uses the CRT (exponents p − 1 and
q − 1 modulo p² and q²), about four times faster than λ modulo n².

Fixed-point encoding. A float x encodes with ``fraction_bits`` F (default 32, a resolution of
2^-32 ≈ 2.3e-10) as the integer round(x · 2^F); the exponent F travels with each ciphertext vector.
Negative integers map to the top third of Z_n: with max_int = ⌊(n − 1) / 3⌋, the plaintext m stands
for m when m ≤ max_int, for m − n when m ≥ n − max_int, and a value in between is an overflow
(:class:`~ppml.errors.PlaintextOverflow`): a sum or product that wrapped around, never garbage.
Exponent alignment: adding vectors with F₁ < F₂ first multiplies the F₁ one by 2^(F₂ − F₁);
multiplying by a float factor encodes it with F bits too and the result carries F₁ + F (so repeated
float products grow the exponent; the range left is max_int / 2^F); multiplying by a Python ``int``
keeps the exponent.

Wire formats (all integers unsigned big-endian)::

    public key   | version 0x01 (1) | len_n (2) | n (len_n bytes, no leading zero byte) |

    ciphertexts  | version 0x01 (1) | key id (8) | fraction_bits (2) | count (4) | width (2) |
                 | count × c (width bytes each) |

The key id is the first 8 bytes of SHA-256 over the public key bytes; width is the byte length of n².
Every length is checked before slicing, n must be odd and at least 1024 bits (unless explicitly
unsafe), and each c must lie in [1, n²) with gcd(c, n) = 1. Failures raise
:class:`~ppml.errors.MalformedHeData`. The secret key has no serializer yet: it never leaves its party.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
import threading
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt

from ppml.errors import HeKeyMismatch, MalformedHeData, PlaintextOverflow, UnsafeWarning, UsageError

__all__ = [
    "DEFAULT_FRACTION_BITS",
    "DEFAULT_KEY_BITS",
    "MIN_KEY_BITS",
    "EncryptedVector",
    "ObfuscatorPool",
    "PaillierBackend",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "generate_paillier_keypair",
]

DEFAULT_KEY_BITS = 2048
#: Smaller moduli are refused unless a caller passes ``unsafe_small_keys=True`` (tests only).
MIN_KEY_BITS = 1024
DEFAULT_FRACTION_BITS = 32

_VERSION = 1
_MAX_N_BYTES = 2048  # 16384-bit n: far above any sensible key, a bound on what a peer can make us parse
_MAX_COUNT = 1 << 24
_MAX_FRACTION_BITS = 4096
_KEY_ID_LEN = 8
_CT_HEADER = struct.Struct(">B8sHIH")


def _warn_small(bits: int) -> None:
    warnings.warn(f"unsafe_small_keys: a {bits}-bit Paillier modulus gives no real protection",
                  UnsafeWarning, stacklevel=3)


def _check_key_size(bits: int, unsafe_small_keys: bool) -> None:
    if bits < MIN_KEY_BITS:
        if not unsafe_small_keys:
            raise UsageError(f"a {bits}-bit Paillier modulus is too small (at least {MIN_KEY_BITS} bits)")
        _warn_small(bits)


class PaillierPublicKey:
    """The public key n (g = n + 1): encrypts and combines ciphertexts, cannot decrypt."""

    def __init__(self, n: int, *, unsafe_small_keys: bool = False) -> None:
        if n < 15 or n % 2 == 0:
            raise UsageError("a Paillier modulus is an odd product of two primes")
        _check_key_size(n.bit_length(), unsafe_small_keys)
        self.n = gmpy2.mpz(n)
        self.nsquare = self.n * self.n
        #: Largest magnitude an encoded integer may have (see the module docstring).
        self.max_int = int((self.n - 1) // 3)
        self._bytes = self._encode()
        self.key_id = hashlib.sha256(self._bytes).digest()[:_KEY_ID_LEN]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"PaillierPublicKey(bits={self.n.bit_length()}, id={self.key_id.hex()})"

    def _encode(self) -> bytes:
        n_bytes = int(self.n).to_bytes((self.n.bit_length() + 7) // 8, "big")
        return struct.pack(">BH", _VERSION, len(n_bytes)) + n_bytes

    def to_bytes(self) -> bytes:
        """``| version 0x01 | len_n (2) | n |`` (see the module docstring)."""
        return self._bytes

    @classmethod
    def from_bytes(cls, data: bytes, *, unsafe_small_keys: bool = False) -> PaillierPublicKey:
        """Parse :meth:`to_bytes`.

        Raises:
            MalformedHeData: wrong version, a length out of bounds, an even or tiny n.
            UsageError: n below 1024 bits without ``unsafe_small_keys``.
        """
        if len(data) < 3 or data[0] != _VERSION:
            raise MalformedHeData("Paillier public key")
        (len_n,) = struct.unpack_from(">H", data, 1)
        if not 1 <= len_n <= _MAX_N_BYTES or len(data) != 3 + len_n or data[3] == 0:
            raise MalformedHeData("Paillier public key")
        n = int.from_bytes(data[3:], "big")
        if n < 15 or n % 2 == 0:
            raise MalformedHeData("Paillier public key")
        return cls(n, unsafe_small_keys=unsafe_small_keys)

    def random_obfuscator(self, randbelow: Callable[[int], int] = secrets.randbelow) -> Any:
        """A fresh r^n mod n² with r uniform in Z_n^* (one full-size modular exponentiation)."""
        while True:
            r = randbelow(int(self.n))
            if r > 0 and gmpy2.gcd(r, self.n) == 1:
                return gmpy2.powmod(r, self.n, self.nsquare)

    def raw_encrypt(self, plaintext: int, obfuscator: Any) -> Any:
        """(1 + m·n) · obfuscator mod n², for m ∈ [0, n): the textbook operation, no encoding."""
        return (1 + gmpy2.mpz(plaintext) * self.n) % self.nsquare * obfuscator % self.nsquare

    def encode_int(self, value: int) -> int:
        """A signed integer as an element of Z_n (negatives in the top third).

        Raises:
            PlaintextOverflow: |value| > max_int.
        """
        if abs(value) > self.max_int:
            raise PlaintextOverflow(f"{value.bit_length()}-bit integer does not fit this key")
        return value % int(self.n)

    def decode_int(self, plaintext: int) -> int:
        """The signed integer an element of Z_n stands for.

        Raises:
            PlaintextOverflow: the element lies in the middle third (a result wrapped around).
        """
        if plaintext <= self.max_int:
            return int(plaintext)
        if plaintext >= self.n - self.max_int:
            return int(plaintext - self.n)
        raise PlaintextOverflow("a homomorphic result wrapped around the modulus")


class PaillierPrivateKey:
    """The factors p, q of n, with the CRT constants for decryption. Never serialized."""

    def __init__(self, public_key: PaillierPublicKey, p: int, q: int) -> None:
        if p == q or p * q != public_key.n:
            raise UsageError("p and q are not two distinct factors of the public key's n")
        self.public_key = public_key
        if q < p:
            p, q = q, p
        self._p, self._q = gmpy2.mpz(p), gmpy2.mpz(q)
        self._psquare, self._qsquare = self._p * self._p, self._q * self._q
        self._q_inverse = gmpy2.invert(self._q, self._p)
        self._hp = self._h(self._p, self._psquare)
        self._hq = self._h(self._q, self._qsquare)

    def __repr__(self) -> str:
        return f"PaillierPrivateKey({self.public_key!r})"

    def _h(self, prime: Any, prime_square: Any) -> Any:
        g = self.public_key.n + 1
        return gmpy2.invert((gmpy2.powmod(g, prime - 1, prime_square) - 1) // prime, prime)

    def raw_decrypt(self, ciphertext: Any) -> int:
        """The plaintext in [0, n) (Paillier decryption through the CRT)."""
        m_p = (gmpy2.powmod(ciphertext, self._p - 1, self._psquare) - 1) // self._p * self._hp % self._p
        m_q = (gmpy2.powmod(ciphertext, self._q - 1, self._qsquare) - 1) // self._q * self._hq % self._q
        return int(m_q + (m_p - m_q) * self._q_inverse % self._p * self._q)


def generate_paillier_keypair(bits: int = DEFAULT_KEY_BITS, *, unsafe_small_keys: bool = False,
                              randbits: Callable[[int], int] = secrets.randbits,
                              ) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """Two distinct primes of ``bits // 2`` bits each whose product has exactly ``bits`` bits.

    Raises:
        UsageError: ``bits`` below 1024 without ``unsafe_small_keys`` (which warns: tests only).
    """
    _check_key_size(bits, unsafe_small_keys)
    if bits < 16 or bits % 2:
        raise UsageError("the Paillier modulus size must be even and at least 16 bits")
    half = bits // 2
    while True:
        # The top two bits set make p·q exactly `bits` long.
        p = gmpy2.next_prime(randbits(half) | (3 << (half - 2)))
        q = gmpy2.next_prime(randbits(half) | (3 << (half - 2)))
        n = p * q
        if (p != q and p.bit_length() == half and q.bit_length() == half and n.bit_length() == bits
                and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1):
            break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeWarning)  # warned once above already
        public_key = PaillierPublicKey(int(n), unsafe_small_keys=unsafe_small_keys)
    return public_key, PaillierPrivateKey(public_key, int(p), int(q))


class ObfuscatorPool:
    """Precomputed r^n mod n² values: encryption's only expensive step, done ahead of time.

    Fill it explicitly (``fill(k)``) or with ``fill_in_background(k)`` while the party waits for the
    network; :meth:`take` pops one and computes a fresh one when the pool is empty (``misses`` counts
    those). Each obfuscator is used once. Thread-safe.
    """

    def __init__(self, public_key: PaillierPublicKey, *,
                 randbelow: Callable[[int], int] = secrets.randbelow) -> None:
        self.public_key = public_key
        self._randbelow = randbelow
        self._ready: deque[Any] = deque()
        self.misses = 0

    def __len__(self) -> int:
        return len(self._ready)

    def fill(self, count: int) -> None:
        """Compute ``count`` more obfuscators now."""
        # GMP may drop the GIL during powmod, so a background fill runs beside the caller's thread.
        with gmpy2.context(gmpy2.get_context(), allow_release_gil=True):
            for _ in range(count):
                self._ready.append(self.public_key.random_obfuscator(self._randbelow))

    def fill_in_background(self, count: int) -> threading.Thread:
        """Start a daemon thread computing ``count`` more; join it to wait."""
        thread = threading.Thread(target=self.fill, args=(count,), name="paillier-obfuscators", daemon=True)
        thread.start()
        return thread

    def add(self, obfuscators: Sequence[int]) -> None:
        """Put obfuscators computed elsewhere (worker processes, as FGBoost does) into the pool.
        The caller vouches that each is a fresh r^n mod n² of this key, used nowhere else."""
        nsquare = self.public_key.nsquare
        for value in obfuscators:
            if not 0 < value < nsquare:
                raise UsageError("an obfuscator lies outside [1, n²)")
            self._ready.append(gmpy2.mpz(value))

    def take(self) -> Any:
        """One unused obfuscator (computed on the spot if none is ready)."""
        try:
            return self._ready.popleft()
        except IndexError:
            self.misses += 1
            return self.public_key.random_obfuscator(self._randbelow)


@dataclass(frozen=True, slots=True)
class EncryptedVector:
    """Paillier ciphertexts of one vector, all with the same fixed-point exponent (fraction bits)."""

    public_key: PaillierPublicKey
    ciphertexts: tuple[Any, ...]
    fraction_bits: int

    def __len__(self) -> int:
        return len(self.ciphertexts)


class PaillierBackend:
    """:class:`~ppml.fl.he.backend.HEBackend` over Paillier.

    The active party passes both keys; a passive party builds one with
    :meth:`from_public_key_bytes` and cannot decrypt. ``pool`` defaults to an empty
    :class:`ObfuscatorPool` (fill it to make encryption cheap).
    """

    name = "paillier"

    def __init__(self, public_key: PaillierPublicKey, private_key: PaillierPrivateKey | None = None, *,
                 pool: ObfuscatorPool | None = None, fraction_bits: int = DEFAULT_FRACTION_BITS) -> None:
        if private_key is not None and private_key.public_key != public_key:
            raise HeKeyMismatch("the private key does not belong to the public key")
        if not 0 <= fraction_bits <= _MAX_FRACTION_BITS:
            raise UsageError(f"fraction_bits must be in [0, {_MAX_FRACTION_BITS}]")
        self.public_key = public_key
        self.private_key = private_key
        self.pool = pool if pool is not None else ObfuscatorPool(public_key)
        if self.pool.public_key != public_key:
            raise HeKeyMismatch("the obfuscator pool belongs to another public key")
        self.fraction_bits = fraction_bits

    @classmethod
    def from_public_key_bytes(cls, data: bytes, *, fraction_bits: int = DEFAULT_FRACTION_BITS,
                              unsafe_small_keys: bool = False) -> PaillierBackend:
        """A passive party's backend: encrypt and combine, never decrypt."""
        key = PaillierPublicKey.from_bytes(data, unsafe_small_keys=unsafe_small_keys)
        return cls(key, fraction_bits=fraction_bits)

    @property
    def can_decrypt(self) -> bool:
        return self.private_key is not None

    # -- encoding ---------------------------------------------------------------------------------

    def _scaled(self, value: float, fraction_bits: int) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value << fraction_bits
        if not math.isfinite(value):
            raise PlaintextOverflow(f"{value!r} is not a finite number")
        scaled = math.ldexp(float(value), fraction_bits)
        if not math.isfinite(scaled):
            raise PlaintextOverflow(f"{value!r} · 2^{fraction_bits} is out of range")
        return round(scaled)

    def _encode(self, value: float, fraction_bits: int) -> int:
        return self.public_key.encode_int(self._scaled(value, fraction_bits))

    def _check(self, *vectors: EncryptedVector) -> None:
        for vector in vectors:
            if vector.public_key != self.public_key:
                raise HeKeyMismatch("a ciphertext is under another public key")

    def _same_length(self, left: int, right: int) -> None:
        if left != right:
            raise UsageError(f"vectors of different lengths ({left} and {right})")

    # -- HEBackend --------------------------------------------------------------------------------

    def encrypt(self, values: Sequence[float]) -> EncryptedVector:
        key = self.public_key
        ciphertexts = tuple(key.raw_encrypt(self._encode(v, self.fraction_bits), self.pool.take())
                            for v in values)
        return EncryptedVector(key, ciphertexts, self.fraction_bits)

    def decrypt(self, ciphertext: EncryptedVector) -> list[float]:
        if self.private_key is None:
            raise HeKeyMismatch("this party holds the public key only and cannot decrypt")
        self._check(ciphertext)
        scale = 1 << ciphertext.fraction_bits
        key = self.public_key
        return [key.decode_int(self.private_key.raw_decrypt(c)) / scale for c in ciphertext.ciphertexts]

    def _rescale(self, vector: EncryptedVector, fraction_bits: int) -> EncryptedVector:
        if vector.fraction_bits == fraction_bits:
            return vector
        factor = 1 << (fraction_bits - vector.fraction_bits)
        nsquare = self.public_key.nsquare
        return EncryptedVector(self.public_key, tuple(gmpy2.powmod(c, factor, nsquare) for c in vector.ciphertexts),
                               fraction_bits)

    def add(self, left: EncryptedVector, right: EncryptedVector) -> EncryptedVector:
        self._check(left, right)
        self._same_length(len(left), len(right))
        bits = max(left.fraction_bits, right.fraction_bits)
        left, right = self._rescale(left, bits), self._rescale(right, bits)
        nsquare = self.public_key.nsquare
        return EncryptedVector(self.public_key,
                               tuple(a * b % nsquare for a, b in zip(left.ciphertexts, right.ciphertexts, strict=True)),
                               bits)

    def add_plain(self, ciphertext: EncryptedVector, values: Sequence[float]) -> EncryptedVector:
        self._check(ciphertext)
        self._same_length(len(ciphertext), len(values))
        key = self.public_key
        # No fresh obfuscator: the ciphertext's own r^n already hides the sum.
        return EncryptedVector(key, tuple(
            key.raw_encrypt(self._encode(v, ciphertext.fraction_bits), c)
            for c, v in zip(ciphertext.ciphertexts, values, strict=True)), ciphertext.fraction_bits)

    def multiply_plain(self, ciphertext: EncryptedVector, factors: float | Sequence[float]) -> EncryptedVector:
        self._check(ciphertext)
        if isinstance(factors, int | float):
            factor_list: Sequence[float] = [factors] * len(ciphertext)
        else:
            factor_list = factors
            self._same_length(len(ciphertext), len(factor_list))
        # Ints keep the exponent; any float makes every factor a fixed-point number with F more bits.
        is_integral = all(isinstance(f, int) and not isinstance(f, bool) for f in factor_list)
        extra_bits = 0 if is_integral else self.fraction_bits
        key = self.public_key
        nsquare = key.nsquare
        out = []
        for c, f in zip(ciphertext.ciphertexts, factor_list, strict=True):
            k = self._scaled(f, extra_bits)
            key.encode_int(k)  # range check
            # c^k with a negative k as (c^-1)^|k|: a short exponent instead of one as long as n.
            out.append(gmpy2.powmod(gmpy2.invert(c, nsquare), -k, nsquare) if k < 0 else gmpy2.powmod(c, k, nsquare))
        return EncryptedVector(key, tuple(out), ciphertext.fraction_bits + extra_bits)

    def matmul_plain(self, ciphertext: EncryptedVector, matrix: npt.ArrayLike) -> EncryptedVector:
        self._check(ciphertext)
        factors = np.asarray(matrix, dtype=np.float64)
        if factors.ndim != 2 or factors.shape[0] != len(ciphertext):
            raise UsageError(f"a {len(ciphertext)}-element ciphertext multiplies an n x k matrix with "
                             f"n = {len(ciphertext)}, not shape {factors.shape}")
        if not np.isfinite(factors).all():
            raise PlaintextOverflow("the matrix holds a non-finite value")
        key = self.public_key
        nsquare = key.nsquare
        bits = self.fraction_bits
        inverses: list[Any] = [None] * len(ciphertext)
        out = []
        for column in factors.T:
            total = gmpy2.mpz(1)
            for index, (c, factor) in enumerate(zip(ciphertext.ciphertexts, column.tolist(), strict=True)):
                k = self._scaled(factor, bits)
                if k == 0:
                    continue
                key.encode_int(k)  # range check
                if k < 0:
                    if inverses[index] is None:
                        inverses[index] = gmpy2.invert(c, nsquare)
                    total = total * gmpy2.powmod(inverses[index], -k, nsquare) % nsquare
                else:
                    total = total * gmpy2.powmod(c, k, nsquare) % nsquare
            out.append(total)
        return EncryptedVector(key, tuple(out), ciphertext.fraction_bits + bits)

    def public_key_bytes(self) -> bytes:
        return self.public_key.to_bytes()

    def _width(self) -> int:
        return (self.public_key.nsquare.bit_length() + 7) // 8

    def ciphertext_to_bytes(self, ciphertext: EncryptedVector) -> bytes:
        """``| 0x01 | key id (8) | fraction_bits (2) | count (4) | width (2) | count × c |``."""
        self._check(ciphertext)
        width = self._width()
        header = _CT_HEADER.pack(_VERSION, self.public_key.key_id, ciphertext.fraction_bits, len(ciphertext), width)
        return header + b"".join(int(c).to_bytes(width, "big") for c in ciphertext.ciphertexts)

    def ciphertext_from_bytes(self, data: bytes) -> EncryptedVector:
        key = self.public_key
        if len(data) < _CT_HEADER.size:
            raise MalformedHeData("Paillier ciphertexts")
        version, key_id, fraction_bits, count, width = _CT_HEADER.unpack_from(data)
        if (version != _VERSION or key_id != key.key_id or fraction_bits > _MAX_FRACTION_BITS
                or count > _MAX_COUNT or width != self._width()
                or len(data) != _CT_HEADER.size + count * width):
            raise MalformedHeData("Paillier ciphertexts")
        ciphertexts = []
        for offset in range(_CT_HEADER.size, len(data), width):
            c = gmpy2.mpz(int.from_bytes(data[offset:offset + width], "big"))
            if not 0 < c < key.nsquare or gmpy2.gcd(c, key.n) != 1:
                raise MalformedHeData("Paillier ciphertexts")
            ciphertexts.append(c)
        return EncryptedVector(key, tuple(ciphertexts), fraction_bits)
