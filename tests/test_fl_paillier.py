"""Paillier on gmpy2: a textbook KAT, Hypothesis properties, overflow and malformed-bytes errors."""

from __future__ import annotations

import math
import struct
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml.errors import (
    FederatedLearningError,
    HeKeyMismatch,
    InvalidCiphertext,
    MalformedHeData,
    PlaintextOverflow,
    UnsafeWarning,
    UsageError,
)
from ppml.fl.he import (
    EncryptedVector,
    HEBackend,
    ObfuscatorPool,
    PaillierBackend,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
)

# 512-bit keys keep the properties fast; the size check is exercised separately.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UnsafeWarning)
    PUBLIC, PRIVATE = generate_paillier_keypair(512, unsafe_small_keys=True)

FLOATS = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
PRECISION = 2.0 ** -31  # one unit in the last place of 32 fraction bits, with rounding


def backend() -> PaillierBackend:
    return PaillierBackend(PUBLIC, PRIVATE)


def close(a: float, b: float, tolerance: float = PRECISION) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=tolerance)


def test_textbook_kat() -> None:
    """p = 7, q = 11, n = 77, g = 78, m = 42, r = 23: c = 78^42 · 23^77 mod 5929 = 3840."""
    with pytest.warns(UnsafeWarning):
        public = PaillierPublicKey(77, unsafe_small_keys=True)
    private = PaillierPrivateKey(public, 7, 11)
    c = public.raw_encrypt(42, pow(23, 77, 77 * 77))
    assert c == 3840
    assert private.raw_decrypt(3840) == 42
    assert all(private.raw_decrypt(public.raw_encrypt(m, pow(5, 77, 5929))) == m for m in range(77))


def test_backend_satisfies_the_protocol() -> None:
    instance: HEBackend[EncryptedVector] = backend()
    for method in ("encrypt", "decrypt", "add", "add_plain", "multiply_plain", "public_key_bytes",
                   "ciphertext_to_bytes", "ciphertext_from_bytes"):
        assert callable(getattr(instance, method))
    assert instance.name == "paillier" and instance.can_decrypt


@settings(max_examples=40, deadline=None)
@given(st.lists(FLOATS, max_size=4))
def test_round_trip(values: list[float]) -> None:
    he = backend()
    assert all(close(a, b) for a, b in zip(he.decrypt(he.encrypt(values)), values, strict=True))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(FLOATS, FLOATS), min_size=1, max_size=4))
def test_additive_homomorphism(pairs: list[tuple[float, float]]) -> None:
    he = backend()
    left, right = [a for a, _ in pairs], [b for _, b in pairs]
    total = he.decrypt(he.add(he.encrypt(left), he.encrypt(right)))
    assert all(close(t, a + b, 2 * PRECISION) for t, a, b in zip(total, left, right, strict=True))
    plain = he.decrypt(he.add_plain(he.encrypt(left), right))
    assert all(close(t, a + b, 2 * PRECISION) for t, a, b in zip(plain, left, right, strict=True))


@settings(max_examples=40, deadline=None)
@given(FLOATS, st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), st.integers(-10**6, 10**6))
def test_scalar_multiplication(value: float, factor: float, integer: int) -> None:
    he = backend()
    encrypted = he.encrypt([value])
    by_int = he.multiply_plain(encrypted, integer)
    assert by_int.fraction_bits == he.fraction_bits
    assert close(he.decrypt(by_int)[0], value * integer, PRECISION * abs(integer) + PRECISION)
    by_float = he.multiply_plain(encrypted, factor)
    assert by_float.fraction_bits == 2 * he.fraction_bits
    # Both operands are rounded to 2^-32: the error is bounded by |x|·2^-33 + |f|·2^-33 + tiny.
    assert close(he.decrypt(by_float)[0], value * factor, (abs(value) + abs(factor) + 1) * PRECISION)


def test_negative_values_and_exponent_alignment() -> None:
    he = backend()
    a = he.multiply_plain(he.encrypt([-1.5, 2.25, 0.0]), [0.5, -2.0, 3.0])  # F = 64
    b = he.encrypt([-0.25, -4.5, -7.0])  # F = 32
    assert he.decrypt(he.add(a, b)) == [-1.0, -9.0, -7.0]
    assert he.decrypt(he.multiply_plain(he.encrypt([-3.0, 4.0]), [-2, 5])) == [6.0, 20.0]


def test_overflow_is_an_error_on_encode_and_decode() -> None:
    he = backend()
    limit = PUBLIC.max_int >> he.fraction_bits
    with pytest.raises(PlaintextOverflow):
        he.encrypt([float(limit) * 4])
    with pytest.raises(PlaintextOverflow):
        he.encrypt([math.inf])
    big = he.encrypt([float(limit // 2)])
    doubled = he.add(big, he.add(big, big))  # 1.5 · limit: in the middle third
    with pytest.raises(PlaintextOverflow):
        he.decrypt(doubled)
    assert isinstance(PlaintextOverflow("x"), FederatedLearningError)


def test_pool_precomputes_and_background_fill() -> None:
    pool = ObfuscatorPool(PUBLIC)
    pool.fill(3)
    he = PaillierBackend(PUBLIC, PRIVATE, pool=pool)
    he.encrypt([1.0, 2.0, 3.0])
    assert len(pool) == 0 and pool.misses == 0
    pool.fill_in_background(2).join()
    assert len(pool) == 2
    he.encrypt([1.0, 2.0, 3.0])
    assert pool.misses == 1
    # Same value twice encrypts differently: a fresh obfuscator each time.
    assert len(set(he.encrypt([5.0, 5.0]).ciphertexts)) == 2


def test_passive_party_from_public_key_bytes() -> None:
    active = backend()
    with pytest.warns(UnsafeWarning):
        passive = PaillierBackend.from_public_key_bytes(active.public_key_bytes(), unsafe_small_keys=True)
    assert not passive.can_decrypt
    gradients = passive.ciphertext_from_bytes(active.ciphertext_to_bytes(active.encrypt([0.5, -0.25])))
    weighted = passive.multiply_plain(passive.add_plain(gradients, [1.0, 1.0]), 2)
    assert active.decrypt(active.ciphertext_from_bytes(passive.ciphertext_to_bytes(weighted))) == [3.0, 1.5]
    with pytest.raises(HeKeyMismatch):
        passive.decrypt(gradients)


def test_small_keys_are_refused_unless_unsafe() -> None:
    with pytest.raises(UsageError):
        generate_paillier_keypair(512)
    with pytest.raises(UsageError):
        PaillierPublicKey.from_bytes(PUBLIC.to_bytes())
    with pytest.warns(UnsafeWarning):
        generate_paillier_keypair(256, unsafe_small_keys=True)


def test_keypair_shape() -> None:
    public, private = generate_paillier_keypair(1024)
    assert public.n.bit_length() == 1024
    assert private.raw_decrypt(public.raw_encrypt(12345, public.random_obfuscator())) == 12345


def test_other_key_is_rejected() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeWarning)
        other_public, other_private = generate_paillier_keypair(512, unsafe_small_keys=True)
    other = PaillierBackend(other_public, other_private)
    he = backend()
    with pytest.raises(MalformedHeData):
        other.ciphertext_from_bytes(he.ciphertext_to_bytes(he.encrypt([1.0])))
    with pytest.raises(HeKeyMismatch):
        other.add(other.encrypt([1.0]), he.encrypt([1.0]))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_malformed_ciphertext_bytes(data: st.DataObject) -> None:
    he = backend()
    wire = bytearray(he.ciphertext_to_bytes(he.encrypt([1.0, 2.0])))
    header = struct.calcsize(">B8sHIH")
    kind = data.draw(st.sampled_from(["truncate", "extend", "header", "zero", "too_big"]))
    if kind == "truncate":
        wire = wire[:data.draw(st.integers(0, len(wire) - 1))]
    elif kind == "extend":
        wire += b"\x00"
    elif kind == "header":
        index = data.draw(st.integers(0, header - 1).filter(lambda i: not 9 <= i < 11))  # fraction_bits may vary
        wire[index] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "zero":
        wire[header:header + (len(wire) - header) // 2] = bytes((len(wire) - header) // 2)
    else:
        width = (len(wire) - header) // 2
        wire[header:header + width] = b"\xff" * width  # 2^(8·width) − 1 ≥ n²
    with pytest.raises(MalformedHeData) as raised:
        he.ciphertext_from_bytes(bytes(wire))
    assert isinstance(raised.value, InvalidCiphertext)


@pytest.mark.parametrize("wire", [b"", b"\x02\x00\x01\x05", b"\x01\x00\x02\x00\x05", b"\x01\x00\x01\x04",
                                  b"\x01\x00\x03\x01\x00", b"\x01\xff\xff" + b"\x01" * 10])
def test_malformed_public_key_bytes(wire: bytes) -> None:
    with pytest.raises(MalformedHeData):
        PaillierPublicKey.from_bytes(wire, unsafe_small_keys=True)
