"""Gradient/hessian packing for FGBoost: g and h of one row in one Paillier plaintext, and the
process-parallel Paillier work (obfuscators, decryption, encrypted histograms).

Layout. With F = :data:`FRACTION_BITS` fixed-point bits, the label party quantises each row's
gradient and hessian to integers ``g_i = round(g · 2^F)`` (signed) and ``v_i = max(1, round(h · 2^F))``
(positive: h ≥ 0 for both losses, and a floor of one unit makes every row count in H). It picks the
smallest integer offset ``K ≥ 0`` with ``g_i + K · v_i ≥ 0`` for every row and packs::

    plaintext_i = u_i · 2^B_h + v_i          u_i = g_i + K · v_i ≥ 0

    bit  0 ............ B_h-1 | B_h ............. B_h+B_u-1 | (zero up to |n|)
         v (hessian slot)      | u (offset gradient slot)

    B_h = bitlen(R · max v)     B_u = bitlen(R · max u)     R = rows of the tree

Sums of packed plaintexts (products of ciphertexts) never carry from the h slot into the u slot, since
a sum over at most R rows is below 2^B_h; the whole sum stays below n as long as
``R · max u · 2^B_h + 2^B_h ≤ n − 1``, which :meth:`GhPacking.plan` checks against the key and refuses
with :class:`~ppml.errors.PlaintextOverflow` otherwise (rows × magnitude too large for the key). A
decrypted bin sum S gives ``H = S mod 2^B_h`` and ``G = (S >> B_h) − K · H`` exactly, as integers: the
offset comes out through H, so no per-bin row count is needed (and none is revealed). Because the
sums are exact, the label party checks that every passive feature's bins add up to the node's totals.

The worker functions run in a process pool (gmpy2 holds the GIL): they take and return Python ints
(local IPC, never wire data) and are module-level so that the pool can import them.
"""

from __future__ import annotations

import dataclasses
import secrets
import warnings
from collections.abc import Sequence
from typing import Any, Final

import gmpy2
import numpy as np
import numpy.typing as npt

from ppml.errors import InvalidPeerMessage, PlaintextOverflow, UnsafeWarning
from ppml.fl.he.paillier import PaillierPrivateKey, PaillierPublicKey

__all__ = ["FRACTION_BITS", "GhPacking", "decrypt_chunk", "histogram_chunk", "obfuscator_chunk", "quantise"]

#: Fixed-point bits of g and h: a resolution of 2^-40 ≈ 9e-13.
FRACTION_BITS: Final = 40
_MAX_GRADIENT: Final = float(1 << 20)


def quantise(gradients: npt.NDArray[np.float64], hessians: npt.NDArray[np.float64]) -> tuple[list[int], list[int]]:
    """``(g_i, v_i)`` as Python ints (see the module docstring).

    Raises:
        PlaintextOverflow: a non-finite value, a negative hessian or |g| ≥ 2^20 (scale the labels).
    """
    if not (np.isfinite(gradients).all() and np.isfinite(hessians).all()):
        raise PlaintextOverflow("a gradient or hessian is not finite")
    if (hessians < 0).any():
        raise PlaintextOverflow("a hessian is negative")
    if (np.abs(gradients) >= _MAX_GRADIENT).any() or (hessians >= _MAX_GRADIENT).any():
        raise PlaintextOverflow("a gradient or hessian is 2^20 or larger: scale the regression labels down")
    scale = float(1 << FRACTION_BITS)
    g_int = [int(v) for v in np.rint(gradients * scale)]
    v_int = [max(1, int(v)) for v in np.rint(hessians * scale)]
    return g_int, v_int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GhPacking:
    """One tree's packing parameters: offset K and the two slot widths (bits)."""

    offset: int
    h_bits: int
    u_bits: int

    @classmethod
    def plan(cls, g_int: Sequence[int], v_int: Sequence[int], n: int) -> GhPacking:
        """The packing of these rows under modulus ``n``.

        Raises:
            PlaintextOverflow: rows × magnitude does not fit below n.
        """
        rows = len(g_int)
        offset = max(0, max(-(g // v) for g, v in zip(g_int, v_int, strict=True)))  # ceil(-g / v)
        max_u = max(g + offset * v for g, v in zip(g_int, v_int, strict=True))
        h_bits = (rows * max(v_int)).bit_length()
        u_bits = max(1, (rows * max_u).bit_length())
        if ((rows * max_u) << h_bits) + (1 << h_bits) > n - 1:
            raise PlaintextOverflow(
                f"{rows} rows of packed gradients need {h_bits + u_bits} bits, the key holds "
                f"{n.bit_length() - 1}: use fewer rows per round or a larger key")
        return cls(offset=offset, h_bits=h_bits, u_bits=u_bits)

    def pack(self, g_int: Sequence[int], v_int: Sequence[int]) -> list[int]:
        return [((g + self.offset * v) << self.h_bits) | v for g, v in zip(g_int, v_int, strict=True)]

    def unpack(self, total: int) -> tuple[int, int]:
        """``(G, H)`` in fixed point from a decrypted sum.

        Raises:
            InvalidPeerMessage: the sum does not fit the layout (a forged or corrupted histogram).
        """
        if total >> (self.h_bits + self.u_bits):
            raise InvalidPeerMessage("a histogram sum lies outside the packing layout")
        hessian = total & ((1 << self.h_bits) - 1)
        return (total >> self.h_bits) - self.offset * hessian, hessian


# -- process-pool workers (ints in, ints out) -----------------------------------------------------


def obfuscator_chunk(n: int, count: int, p: int | None = None, q: int | None = None) -> list[int]:
    """``count`` fresh r^n mod n² (r uniform in Z_n^*). With the factors p, q (the key holder
    computing its own obfuscators) each power is taken modulo p² and q² with the exponent reduced
    modulo p(p − 1) and q(q − 1), the orders of those groups, and recombined by the CRT: the same
    value, about twice as fast (half-size moduli; the exponents stay full length)."""
    modulus, nsquare = gmpy2.mpz(n), gmpy2.mpz(n) * n
    crt: tuple[Any, ...] | None = None
    if p is not None and q is not None:
        psquare, qsquare = gmpy2.mpz(p) ** 2, gmpy2.mpz(q) ** 2
        crt = (psquare, qsquare, modulus % (psquare - p), modulus % (qsquare - q), gmpy2.invert(psquare, qsquare))
    out: list[int] = []
    while len(out) < count:
        r = secrets.randbelow(n)
        if r <= 0 or gmpy2.gcd(r, modulus) != 1:
            continue
        if crt is None:
            out.append(int(gmpy2.powmod(r, modulus, nsquare)))
        else:
            psquare, qsquare, exponent_p, exponent_q, p_inverse = crt
            mod_p = gmpy2.powmod(r, exponent_p, psquare)
            mod_q = gmpy2.powmod(r, exponent_q, qsquare)
            out.append(int(mod_p + psquare * ((mod_q - mod_p) * p_inverse % qsquare)))
    return out


_PRIVATE: dict[tuple[int, int], PaillierPrivateKey] = {}


def decrypt_chunk(p: int, q: int, ciphertexts: Sequence[int]) -> list[int]:
    """Paillier decryptions (the key's factors travel over local IPC to this worker only)."""
    key = _PRIVATE.get((p, q))
    if key is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnsafeWarning)  # the parent warned when the key was made
            key = PaillierPrivateKey(PaillierPublicKey(p * q, unsafe_small_keys=True), p, q)
        _PRIVATE[(p, q)] = key
    return [key.raw_decrypt(gmpy2.mpz(c)) for c in ciphertexts]


def histogram_chunk(nsquare: int, ciphertexts: Sequence[Any], bins: npt.NDArray[np.int64],
                    n_bins: int) -> tuple[list[int], int]:
    """Per-bin products of ``ciphertexts`` (one per row) for each column of ``bins`` (rows x
    features): ``features × n_bins`` ints, 1 (an encryption of 0) for an empty bin; and the number
    of ciphertext multiplications done."""
    modulus = gmpy2.mpz(nsquare)
    cts = [gmpy2.mpz(c) for c in ciphertexts]
    out: list[int] = []
    multiplications = 0
    for column in bins.T.tolist():
        acc: list[Any] = [None] * n_bins
        for b, c in zip(column, cts, strict=True):
            current = acc[b]
            if current is None:
                acc[b] = c
            else:
                acc[b] = current * c % modulus
                multiplications += 1
        out.extend(1 if value is None else int(value) for value in acc)
    return out, multiplications
