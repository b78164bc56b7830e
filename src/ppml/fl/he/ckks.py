"""CKKS on TenSEAL (Microsoft SEAL): approximate HE of float vectors, SIMD-packed, for long FL vectors.

Why beside Paillier: one CKKS ciphertext holds 4096 floats, so encrypting or adding a 1000-vector
is a handful of polynomial operations instead of 1000 modular exponentiations.

Parameters (fixed; :data:`POLY_MODULUS_DEGREE`, :data:`COEFF_MOD_BIT_SIZES`, scale 2^40 by default):
N = 8192 (4096 slots, ~128-bit security for a 200-bit modulus per the HE standard), a coefficient
modulus of primes [60, 40, 40, 60] bits and a global scale of 2^40.

* Precision: CKKS is approximate. A fresh value is off by about 1e-9; after a plaintext multiply and
  a sum of 1000 products, by about 1e-5 (≈ 1e-5 relative to values of order one). Callers compare with
  a tolerance, never for equality.
* Depth: each plaintext multiply (:meth:`CkksBackend.multiply_plain`, :meth:`CkksBackend.matmul_plain`)
  consumes one 40-bit prime, and there are two, so a fresh ciphertext takes **two** plaintext
  multiplies (additions are free). The third raises :class:`~ppml.errors.FederatedLearningError`
  instead of returning garbage. The level is read from the ciphertext itself
  (its coefficient-modulus size: 3 fresh, 2 after one multiply, 1 after two), not from a header field.
* Range: after two multiplies only the 60-bit prime is left, so a value times 2^40 must stay below
  2^59: inputs and factors are refused beyond ±2^19 (:data:`MAX_MAGNITUDE`,
  :class:`~ppml.errors.PlaintextOverflow`), and a *result* beyond it decrypts to garbage that CKKS
  cannot detect: keep products bounded (FL gradients are).

Ciphertexts. A :class:`CkksVector` is a list of chunks, each one TenSEAL ``CKKSVector`` of at most
4096 values, plus the logical length. :meth:`CkksBackend.encrypt` fills chunks of 4096;
:meth:`CkksBackend.matmul_plain` returns k chunks of length 1 (each chunk's slots all hold the same
sum, so decrypting reveals nothing but the k results). Element-wise operations between two
ciphertexts need the same chunk layout (:class:`~ppml.errors.UsageError` otherwise).

TenSEAL's deserialisers are not safe on hostile bytes: a few flipped bits in the protobuf wrapper of
a serialised ``CKKSVector`` (its ``sizes``/``scale`` fields) kill the process with SIGFPE when the
vector is then used (measured with tenseal 0.3.18; random garbage and truncations only raise).
So TenSEAL's wrapper never crosses the wire: we send the bare SEAL ciphertext, check its SEAL header
and length ourselves, rebuild the wrapper from validated fields, and after loading check the SEAL
ciphertext's degree, size, NTT form, level and scale before the vector is used.

Wire formats (integers unsigned big-endian)::

    public key   | magic "PPCK" (4) | version 0x01 (1) | length (4) | TenSEAL context bytes (length) |

    ciphertexts  | magic "PPCC" (4) | version 0x01 (1) | context id (8) | logical length (4) |
                 | chunk count (4) | chunk count × ( values (4) | seal_length (4) | SEAL ciphertext ) |

The context bytes are a TenSEAL context serialised with public, Galois and relinearisation keys and
**without** the secret key (about 35 MB, mostly Galois keys for the slot rotations ``matmul_plain``
needs). The context id is the first 8 bytes of SHA-256 over those bytes; a ciphertext under another
context is refused with :class:`~ppml.errors.MalformedHeData`. Each chunk's ``values`` is in
[1, 4096] and they sum to the logical length; each SEAL ciphertext starts with SEAL's 16-byte
header (magic 0xA15E, header size 16, version 4.x, compression 0–2, total size equal to
``seal_length``). The secret key has no serializer: it never leaves its party.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts

from ppml.errors import FederatedLearningError, HeKeyMismatch, MalformedHeData, PlaintextOverflow, UsageError

__all__ = [
    "COEFF_MOD_BIT_SIZES",
    "DEFAULT_SCALE_BITS",
    "MAX_MAGNITUDE",
    "POLY_MODULUS_DEGREE",
    "CkksBackend",
    "CkksVector",
]

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 40, 60)
DEFAULT_SCALE_BITS = 40
SLOTS = POLY_MODULUS_DEGREE // 2
#: Inputs and factors beyond this magnitude are refused (see the module docstring's "Range").
MAX_MAGNITUDE = float(2 ** 19)

_PK_MAGIC = b"PPCK"
_CT_MAGIC = b"PPCC"
_VERSION = 1
_ID_LEN = 8
_PK_HEADER = struct.Struct(">4sBI")
_CT_HEADER = struct.Struct(">4sB8sII")
_CHUNK_HEADER = struct.Struct(">II")
_MAX_CONTEXT_BYTES = 256 << 20
_MAX_LENGTH = 1 << 24
_MAX_CHUNKS = _MAX_LENGTH
# A SEAL ciphertext of size 2 at the top level, uncompressed: 2 · 8192 · 3 · 8 bytes plus metadata.
_MAX_SEAL_BYTES = 2 * POLY_MODULUS_DEGREE * (len(COEFF_MOD_BIT_SIZES) - 1) * 8 + 4096
# SEAL's serialization header: magic, header size, major, minor, compression mode, reserved, size.
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_FRESH_LEVEL = len(COEFF_MOD_BIT_SIZES) - 1


def _tenseal_proto(values: int, seal_bytes: bytes, scale: float) -> bytes:
    """TenSEAL's ``CKKSVectorProto { repeated uint32 sizes = 1; repeated bytes ciphertexts = 2;
    double scale = 3; }`` built from fields we validated (protobuf wire format by hand)."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                return bytes(out)

    sizes = varint(values)
    return (b"\x0a" + varint(len(sizes)) + sizes + b"\x12" + varint(len(seal_bytes)) + seal_bytes
            + b"\x19" + struct.pack("<d", scale))


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if offset >= len(data):
            break
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
    raise FederatedLearningError("TenSEAL wrote a CKKS vector this module cannot read")


def _seal_bytes(proto: bytes) -> bytes:
    """The one SEAL ciphertext inside TenSEAL's ``CKKSVectorProto`` (our own output, parsed strictly:
    a single chunk must serialise as exactly sizes, one ciphertext, scale)."""
    seal: bytes | None = None
    offset = 0
    while offset < len(proto):
        tag, offset = _read_varint(proto, offset)
        if tag == 0x19:
            offset += 8
        elif tag in (0x0A, 0x12):
            length, offset = _read_varint(proto, offset)
            if tag == 0x12:
                if seal is not None:
                    break
                seal = proto[offset:offset + length]
            offset += length
        else:
            break
    if seal is None or offset != len(proto):
        raise FederatedLearningError("TenSEAL wrote a CKKS vector this module cannot read")
    return seal


@dataclass(frozen=True, slots=True)
class CkksVector:
    """CKKS ciphertexts of one vector: TenSEAL chunks (each ≤ 4096 values) and the context they are under."""

    context_id: bytes
    chunks: tuple[Any, ...]
    lengths: tuple[int, ...]

    def __len__(self) -> int:
        return sum(self.lengths)


class CkksBackend:
    """:class:`~ppml.fl.he.backend.HEBackend` over CKKS (TenSEAL).

    ``CkksBackend()`` generates a fresh key holder (secret, public, Galois and relinearisation keys);
    a passive party builds one with :meth:`from_public_key_bytes` and cannot decrypt.
    """

    name = "ckks"

    def __init__(self, context: Any | None = None, *, scale_bits: int = DEFAULT_SCALE_BITS) -> None:
        if context is None:
            if not 20 <= scale_bits <= 50:
                raise UsageError("scale_bits must be in [20, 50] for the [60, 40, 40, 60] modulus")
            context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=POLY_MODULUS_DEGREE,
                                 coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES))
            context.global_scale = float(2 ** scale_bits)
            context.generate_galois_keys()
            context.generate_relin_keys()
        self._context = context
        self._public_bytes: bytes = context.serialize(save_public_key=True, save_secret_key=False,
                                                      save_galois_keys=True, save_relin_keys=True)
        self.context_id = hashlib.sha256(self._public_bytes).digest()[:_ID_LEN]

    @classmethod
    def from_public_key_bytes(cls, data: bytes) -> CkksBackend:
        """A passive party's backend: encrypt and combine, never decrypt.

        Raises:
            MalformedHeData: bad header or length, bytes TenSEAL refuses, a context that carries a
                secret key or lacks the Galois/relinearisation keys, or a scale out of range.
        """
        if len(data) < _PK_HEADER.size:
            raise MalformedHeData("CKKS public key")
        magic, version, length = _PK_HEADER.unpack_from(data)
        if (magic != _PK_MAGIC or version != _VERSION or not 1 <= length <= _MAX_CONTEXT_BYTES
                or len(data) != _PK_HEADER.size + length):
            raise MalformedHeData("CKKS public key")
        try:
            context = ts.context_from(data[_PK_HEADER.size:])
        except (ValueError, RuntimeError, TypeError) as exc:
            raise MalformedHeData("CKKS public key") from exc
        scale = context.global_scale
        if (context.is_private() or not context.has_public_key() or not context.has_galois_keys()
                or not context.has_relin_keys() or not math.isfinite(scale)
                or not 2.0 ** 20 <= scale <= 2.0 ** 50):
            raise MalformedHeData("CKKS public key")
        return cls(context)

    @property
    def can_decrypt(self) -> bool:
        return bool(self._context.is_private())

    # -- helpers ----------------------------------------------------------------------------------

    def _check(self, *vectors: CkksVector) -> None:
        for vector in vectors:
            if vector.context_id != self.context_id:
                raise HeKeyMismatch("a ciphertext is under another CKKS context")

    @staticmethod
    def _plain(values: Sequence[float] | npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{what} must be numbers") from exc
        if not np.isfinite(array).all():
            raise PlaintextOverflow(f"{what} hold a non-finite value")
        if array.size and float(np.abs(array).max()) > MAX_MAGNITUDE:
            raise PlaintextOverflow(f"{what} exceed the CKKS range ±2^19")
        return array

    @staticmethod
    def _split(array: npt.NDArray[np.float64], lengths: Sequence[int]) -> list[npt.NDArray[np.float64]]:
        bounds = np.cumsum(lengths)[:-1]
        return list(np.split(array, bounds)) if lengths else []

    @staticmethod
    def _check_depth(vector: CkksVector) -> None:
        for chunk in vector.chunks:
            if chunk.ciphertext()[0].coeff_modulus_size() < 2:
                raise FederatedLearningError(
                    "CKKS multiplicative depth exhausted: this ciphertext has already been multiplied by "
                    "plaintexts twice (the [60, 40, 40, 60] modulus allows two); decrypt and re-encrypt it")

    def _same_layout(self, left: CkksVector, right_lengths: tuple[int, ...]) -> None:
        if left.lengths != right_lengths:
            if len(left) != sum(right_lengths):
                raise UsageError(f"vectors of different lengths ({len(left)} and {sum(right_lengths)})")
            raise UsageError(f"CKKS ciphertexts with different chunk layouts ({left.lengths} and {right_lengths}): "
                             "a matmul_plain result combines only with other matmul_plain results")

    def _op(self, operation: Any, *args: Any) -> Any:
        try:
            return operation(*args)
        except ValueError as exc:  # TenSEAL's own refusals (scale out of bounds, sizes)
            raise FederatedLearningError(f"CKKS operation failed: {exc}") from exc

    # -- HEBackend --------------------------------------------------------------------------------

    def encrypt(self, values: Sequence[float]) -> CkksVector:
        array = self._plain(values, "values")
        chunks = []
        lengths = []
        for start in range(0, len(array), SLOTS):
            part = array[start:start + SLOTS]
            chunks.append(ts.ckks_vector(self._context, part.tolist()))
            lengths.append(len(part))
        return CkksVector(self.context_id, tuple(chunks), tuple(lengths))

    def decrypt(self, ciphertext: CkksVector) -> list[float]:
        if not self.can_decrypt:
            raise HeKeyMismatch("this party holds the public key only and cannot decrypt")
        self._check(ciphertext)
        # Chunks made by a public-only party are linked to its context: pass the key explicitly.
        secret_key = self._context.secret_key()
        out: list[float] = []
        for chunk, length in zip(ciphertext.chunks, ciphertext.lengths, strict=True):
            values = chunk.decrypt(secret_key)
            if len(values) != length:
                raise MalformedHeData("CKKS ciphertexts")
            out.extend(float(v) for v in values)
        return out

    def add(self, left: CkksVector, right: CkksVector) -> CkksVector:
        self._check(left, right)
        self._same_layout(left, right.lengths)
        chunks = tuple(self._op(a.add, b) for a, b in zip(left.chunks, right.chunks, strict=True))
        return CkksVector(self.context_id, chunks, left.lengths)

    def add_plain(self, ciphertext: CkksVector, values: Sequence[float]) -> CkksVector:
        self._check(ciphertext)
        array = self._plain(values, "values")
        if len(array) != len(ciphertext):
            raise UsageError(f"vectors of different lengths ({len(ciphertext)} and {len(array)})")
        parts = self._split(array, ciphertext.lengths)
        chunks = tuple(self._op(c.add, p.tolist()) for c, p in zip(ciphertext.chunks, parts, strict=True))
        return CkksVector(self.context_id, chunks, ciphertext.lengths)

    def multiply_plain(self, ciphertext: CkksVector, factors: float | Sequence[float]) -> CkksVector:
        self._check(ciphertext)
        self._check_depth(ciphertext)
        if isinstance(factors, int | float):
            scalar = self._plain([factors], "factors")
            chunks = tuple(self._op(c.mul, float(scalar[0])) for c in ciphertext.chunks)
        else:
            array = self._plain(factors, "factors")
            if array.ndim != 1 or len(array) != len(ciphertext):
                raise UsageError(f"vectors of different lengths ({len(ciphertext)} and {len(array)})")
            parts = self._split(array, ciphertext.lengths)
            chunks = tuple(self._op(c.mul, p.tolist()) for c, p in zip(ciphertext.chunks, parts, strict=True))
        return CkksVector(self.context_id, chunks, ciphertext.lengths)

    def matmul_plain(self, ciphertext: CkksVector, matrix: npt.ArrayLike) -> CkksVector:
        """One plaintext multiply per chunk and column, then a rotate-and-sum (log2 4096 = 12 rotations):
        k·(chunks) multiplies instead of TenSEAL's ``matmul``, which rotates once per row (measured 4.5 s
        against 0.17 s for 1000 × 3). The result is k chunks of one value each."""
        self._check(ciphertext)
        self._check_depth(ciphertext)
        factors = np.asarray(matrix, dtype=np.float64)
        if factors.ndim != 2 or factors.shape[0] != len(ciphertext):
            raise UsageError(f"a {len(ciphertext)}-element ciphertext multiplies an n x k matrix with "
                             f"n = {len(ciphertext)}, not shape {factors.shape}")
        factors = self._plain(factors, "the matrix's values")
        row_blocks = self._split(factors, ciphertext.lengths)
        out = []
        for column in range(factors.shape[1]):
            total = None
            for chunk, block in zip(ciphertext.chunks, row_blocks, strict=True):
                partial = self._op(lambda c, b: c.mul(b).sum(), chunk, block[:, column].tolist())
                total = partial if total is None else self._op(total.add, partial)
            out.append(total)
        return CkksVector(self.context_id, tuple(out), (1,) * len(out))

    def public_key_bytes(self) -> bytes:
        """``| "PPCK" | 0x01 | length (4) | TenSEAL context without the secret key |``."""
        return _PK_HEADER.pack(_PK_MAGIC, _VERSION, len(self._public_bytes)) + self._public_bytes

    def ciphertext_to_bytes(self, ciphertext: CkksVector) -> bytes:
        """``| "PPCC" | 0x01 | context id (8) | length (4) | chunks (4) | per chunk: values, SEAL bytes |``."""
        self._check(ciphertext)
        parts = [_CT_HEADER.pack(_CT_MAGIC, _VERSION, self.context_id, len(ciphertext), len(ciphertext.chunks))]
        for chunk, length in zip(ciphertext.chunks, ciphertext.lengths, strict=True):
            blob = _seal_bytes(chunk.serialize())
            parts.append(_CHUNK_HEADER.pack(length, len(blob)))
            parts.append(blob)
        return b"".join(parts)

    def ciphertext_from_bytes(self, data: bytes) -> CkksVector:
        if len(data) < _CT_HEADER.size:
            raise MalformedHeData("CKKS ciphertexts")
        magic, version, context_id, length, count = _CT_HEADER.unpack_from(data)
        if (magic != _CT_MAGIC or version != _VERSION or context_id != self.context_id
                or length > _MAX_LENGTH or count > _MAX_CHUNKS or count > length):
            raise MalformedHeData("CKKS ciphertexts")
        offset = _CT_HEADER.size
        blobs: list[tuple[int, bytes]] = []
        for _ in range(count):
            if len(data) - offset < _CHUNK_HEADER.size:
                raise MalformedHeData("CKKS ciphertexts")
            values, seal_length = _CHUNK_HEADER.unpack_from(data, offset)
            offset += _CHUNK_HEADER.size
            if (not 1 <= values <= SLOTS or not _SEAL_HEADER.size < seal_length <= _MAX_SEAL_BYTES
                    or len(data) - offset < seal_length):
                raise MalformedHeData("CKKS ciphertexts")
            blob = data[offset:offset + seal_length]
            offset += seal_length
            seal_magic, header_size, major, _minor, compression, reserved, total = _SEAL_HEADER.unpack_from(blob)
            if (seal_magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size or major != 4 or compression > 2
                    or reserved != 0 or total != seal_length):
                raise MalformedHeData("CKKS ciphertexts")
            blobs.append((values, blob))
        if offset != len(data) or sum(values for values, _ in blobs) != length:
            raise MalformedHeData("CKKS ciphertexts")
        scale = float(self._context.global_scale)
        chunks = []
        for values, blob in blobs:
            try:
                chunk = ts.ckks_vector_from(self._context, _tenseal_proto(values, blob, scale))
                (seal,) = chunk.ciphertext()
                valid = (seal.poly_modulus_degree() == POLY_MODULUS_DEGREE and seal.size() == 2
                         and seal.is_ntt_form() and not seal.is_transparent()
                         and 1 <= seal.coeff_modulus_size() <= _FRESH_LEVEL
                         and math.isclose(seal.scale, scale, rel_tol=1e-9) and chunk.size() == values)
            except (ValueError, RuntimeError, TypeError) as exc:
                raise MalformedHeData("CKKS ciphertexts") from exc
            if not valid:
                raise MalformedHeData("CKKS ciphertexts")
            chunks.append(chunk)
        return CkksVector(self.context_id, tuple(chunks), tuple(values for values, _ in blobs))
