"""ppml.core.measurement: the enclave signing key, MRSIGNER, SIGSTRUCT and MRENCLAVE.

External vectors (public sources, copied here as data):

* MRSIGNER: Open Enclave's default debug signing key (the public key, as published in
  microsoft/onnx-server-openenclave ``external/confmsg/confmsg/test/openenclave_debug_key.h``)
  and its MRSIGNER as Open Enclave's oesign tests hard-code it
  (``OE_DEFAULT_DEBUG_SIGNED_MRSIGNER``, openenclave ``tests/.../oesign_test`` enclave).
* MRENCLAVE: the answers of enarx/sgx ``src/crypto/mod.rs`` tests (ECREATE with 1 SSA page and
  the next power of two of the content size; pages of 0x7B bytes with TCS/REG SECINFO), which
  enarx obtained by matching the Linux kernel SGX selftest enclave's SIGSTRUCT.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml.core.measurement import (
    DEFAULT_ATTRIBUTE_MASK,
    DEFAULT_MISC_MASK,
    PAGE_SIZE,
    SECINFO_PT_REG,
    SECINFO_PT_TCS,
    SECINFO_R,
    SECINFO_W,
    SECINFO_X,
    SGX_FLAGS_DEBUG,
    SGX_FLAGS_MODE64BIT,
    SIGSTRUCT_SIZE,
    EnclaveMeasurement,
    SgxAttributes,
    Sigstruct,
    enclave_attributes,
    generate_enclave_key,
    load_enclave_key,
    measure_manifest,
    mr_signer,
    sign_sigstruct,
    verify_sigstruct,
    write_enclave_key,
)
from ppml.errors import AttestationFailed, InputNotFound, OutputExists, QuoteFormatError, UsageError

DATE = datetime.date(2024, 1, 15)
ENCLAVE_HASH = hashlib.sha256(b"ppml test enclave").digest()

# -- external vectors ---------------------------------------------------------------------------

OE_DEBUG_SIGN_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MIIBoDANBgkqhkiG9w0BAQEFAAOCAY0AMIIBiAKCAYEAukAt/kn+T5FG64MM2dDv
R26WSrDjGu8XDjYisFwBbktinVUFE05mFO9X1GDBlOqS8lqZuq8fhwm4lZFSc01i
m6LlLRp4l+EOAHkhfRl+y4SDPlLbJX2yl5DMJjjTbWLH+Wiu5BzzWZ85Z2tPeS8d
aMnisrv3ZuyVGl+aJPC3x1SCtL4G4yk5+svrGwYemefSBV8sLviVaPmRcmeBV2x6
BLUc8/jgVVt3L9e0fWM3wnb9o9ZxJoIoAX1bFwXRnuP6N2xezEpfSWLgK41scmsN
AkCmsp0WvoeiaD9nsOGfRxZnBpHbZBC0IyzTEPiOI+5NhRQ3QFbdy1kFuJxOoFiZ
4leKZOwLqG264HwPmiTTWA7XXhP4+d/osb4F4BaEXZ7+4EYfbo5yxbjngcVI1oNN
drCZIy9spWXxqfrG3XMfReWteVlYr6GLcbB5fNE8qm9AiX+fAyw5/ACajPAduKqU
+7Q7ZoMNReay/Zkj9VPCAHeGZzLG/MUOC3Xtdjo3IJ/BAgED
-----END PUBLIC KEY-----
"""
OE_DEFAULT_DEBUG_SIGNED_MRSIGNER = bytes([
    0xca, 0x9a, 0xd7, 0x33, 0x14, 0x48, 0x98, 0x0a, 0xa2, 0x88, 0x90,
    0xce, 0x73, 0xe4, 0x33, 0x63, 0x83, 0x77, 0xf1, 0x79, 0xab, 0x44,
    0x56, 0xb2, 0xfe, 0x23, 0x71, 0x93, 0x19, 0x3a, 0x8d, 0x0a,
])

ENARX_DATA = bytes([123]) * PAGE_SIZE
ENARX_VECTORS = [  # (pages: [(content, SECINFO flags)], expected MRENCLAVE)
    ([], [252, 149, 215, 52, 58, 111, 14, 95, 207, 19, 57, 38, 97, 120, 23, 26, 207, 44, 152, 5,
          72, 202, 97, 25, 204, 94, 10, 197, 188, 89, 246, 246]),
    ([(ENARX_DATA, SECINFO_PT_TCS)],
     [230, 83, 134, 171, 179, 130, 94, 239, 114, 13, 202, 111, 173, 126, 101, 185, 44, 96, 129, 56,
      92, 7, 246, 99, 17, 85, 245, 207, 201, 9, 51, 65]),
    ([(ENARX_DATA, SECINFO_PT_REG | SECINFO_R)],
     [0, 117, 112, 212, 9, 215, 100, 12, 99, 30, 102, 236, 187, 103, 39, 144, 251, 33, 191, 112,
      25, 95, 140, 251, 201, 209, 113, 187, 15, 71, 15, 242]),
    ([(ENARX_DATA, SECINFO_PT_REG | SECINFO_R | SECINFO_W)],
     [129, 184, 53, 91, 133, 145, 39, 205, 176, 182, 220, 37, 36, 198, 139, 91, 148, 181, 98, 116,
      22, 122, 174, 173, 173, 59, 39, 209, 165, 47, 8, 219]),
    ([(ENARX_DATA, SECINFO_PT_REG | SECINFO_R | SECINFO_W | SECINFO_X)],
     [175, 209, 233, 45, 48, 189, 118, 146, 139, 110, 63, 192, 56, 119, 66, 69, 246, 116, 142, 206,
      58, 97, 186, 173, 59, 110, 122, 19, 171, 237, 80, 6]),
    ([(ENARX_DATA, SECINFO_PT_REG | SECINFO_R | SECINFO_X)],
     [76, 207, 169, 240, 107, 1, 166, 236, 108, 53, 91, 107, 135, 238, 123, 132, 35, 246, 230, 31,
      254, 6, 3, 175, 35, 2, 39, 175, 114, 254, 73, 55]),
    ([(ENARX_DATA, SECINFO_PT_TCS), (ENARX_DATA, SECINFO_PT_REG | SECINFO_R),
      (ENARX_DATA, SECINFO_PT_REG | SECINFO_R)],
     [233, 11, 17, 35, 117, 163, 196, 106, 142, 137, 169, 130, 108, 108, 51, 5, 29, 241, 152, 190,
      9, 245, 27, 16, 85, 173, 17, 90, 43, 124, 46, 84]),
]


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    """The one RSA-3072/e=3 key of this module (generation takes about a second)."""
    return generate_enclave_key()


@pytest.fixture(scope="module")
def signed(key: rsa.RSAPrivateKey) -> Sigstruct:
    return sign_sigstruct(
        key, enclave_hash=ENCLAVE_HASH, isv_prod_id=0x1234, isv_svn=0x0042,
        attributes=enclave_attributes(debug=False), date=DATE,
    )


# -- the key ------------------------------------------------------------------------------------


def test_generated_key_is_what_sgx_accepts(key: rsa.RSAPrivateKey) -> None:
    assert key.key_size == 3072
    assert key.public_key().public_numbers().e == 3


def test_key_file_is_0600_round_trips_and_is_never_overwritten(
    key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "enclave-key.pem"
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        write_enclave_key(key, path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    loaded = load_enclave_key(path)
    assert loaded.private_numbers() == key.private_numbers()
    before = path.read_bytes()
    with pytest.raises(OutputExists, match="already exists"):
        write_enclave_key(key, path)
    assert path.read_bytes() == before


def _pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_load_rejects_keys_sgx_cannot_use(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    small = tmp_path / "small.pem"
    small.write_bytes(_pem(rsa.generate_private_key(public_exponent=3, key_size=2048)))
    with pytest.raises(UsageError, match="2048 bits; SGX requires RSA-3072"):
        load_enclave_key(small)

    # Same primes, exponent 65537: a 3072-bit key SGX still refuses.
    numbers = key.private_numbers()
    p, q = numbers.p, numbers.q
    lam = (p - 1) * (q - 1) // _gcd(p - 1, q - 1)
    d = pow(65537, -1, lam)
    f4 = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=d % (p - 1), dmq1=d % (q - 1), iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(65537, p * q),
    ).private_key()
    wrong_exponent = tmp_path / "f4.pem"
    wrong_exponent.write_bytes(_pem(f4))
    with pytest.raises(UsageError, match="public exponent 65537; SGX requires 3"):
        load_enclave_key(wrong_exponent)

    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    with pytest.raises(UsageError, match="not a PEM private key"):
        load_enclave_key(garbage)

    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))
    with pytest.raises(UsageError, match="encrypted"):
        load_enclave_key(encrypted)

    with pytest.raises(InputNotFound):
        load_enclave_key(tmp_path / "missing.pem")


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


# -- MRSIGNER -----------------------------------------------------------------------------------


def test_mr_signer_matches_open_enclave_published_value() -> None:
    public_key = serialization.load_pem_public_key(OE_DEBUG_SIGN_PUBLIC_KEY)
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 3072 and public_key.public_numbers().e == 3
    assert mr_signer(public_key) == OE_DEFAULT_DEBUG_SIGNED_MRSIGNER


def test_mr_signer_is_sha256_of_the_little_endian_modulus(key: rsa.RSAPrivateKey) -> None:
    big_endian = key.public_key().public_numbers().n.to_bytes(384, "big")
    expected = hashlib.sha256(big_endian[::-1]).digest()
    assert mr_signer(key.public_key()) == expected
    assert mr_signer(key) == expected
    assert mr_signer(key) != hashlib.sha256(big_endian).digest()


# -- SIGSTRUCT ----------------------------------------------------------------------------------


def test_sigstruct_fields_sit_at_the_sdm_offsets(key: rsa.RSAPrivateKey, signed: Sigstruct) -> None:
    raw = signed.to_bytes()
    n = key.public_key().public_numbers().n
    assert len(raw) == SIGSTRUCT_SIZE == 1808
    assert raw[0:16] == bytes.fromhex("06000000E10000000000010000000000")
    assert raw[16:20] == bytes(4)  # VENDOR: non-Intel
    assert raw[20:24] == struct.pack("<I", 0x20240115)  # DATE, yyyymmdd BCD
    assert raw[24:40] == bytes.fromhex("01010000600000006000000001000000")
    assert raw[40:128] == bytes(88)  # SWDEFINED 0 + reserved
    assert raw[128:512] == n.to_bytes(384, "little")
    assert raw[512:516] == struct.pack("<I", 3)
    assert struct.unpack("<II", raw[900:908]) == (0, DEFAULT_MISC_MASK)
    assert raw[908:928] == bytes(20)
    assert struct.unpack("<QQ", raw[928:944]) == (SGX_FLAGS_MODE64BIT, 0x3)
    assert struct.unpack("<QQ", raw[944:960]) == (DEFAULT_ATTRIBUTE_MASK.flags, DEFAULT_ATTRIBUTE_MASK.xfrm)
    assert raw[960:992] == ENCLAVE_HASH
    assert raw[992:1024] == bytes(32)
    assert struct.unpack("<HH", raw[1024:1028]) == (0x1234, 0x0042)
    assert raw[1028:1040] == bytes(12)


def test_signature_and_q1_q2_recomputed_independently(key: rsa.RSAPrivateKey, signed: Sigstruct) -> None:
    raw = signed.to_bytes()
    n = key.public_key().public_numbers().n
    s = int.from_bytes(raw[516:900], "little")
    # RSA with e = 3 by hand: s³ mod n is the EMSA-PKCS1-v1_5 block over SHA-256 of the two regions.
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    digest = hashlib.sha256(raw[0:128] + raw[900:1028]).digest()
    block = b"\x00\x01" + b"\xff" * (384 - 3 - len(digest_info) - 32) + b"\x00" + digest_info + digest
    assert pow(s, 3, n).to_bytes(384, "big") == block
    q1 = s * s // n
    q2 = (s * s * s - q1 * s * n) // n
    assert raw[1040:1424] == q1.to_bytes(384, "little")
    assert raw[1424:1808] == q2.to_bytes(384, "little")


def test_round_trip_parse_and_verify(key: rsa.RSAPrivateKey, signed: Sigstruct) -> None:
    parsed = Sigstruct.from_bytes(signed.to_bytes())
    assert parsed == signed
    assert parsed.to_bytes() == signed.to_bytes()
    assert verify_sigstruct(parsed) == mr_signer(key)
    assert parsed.enclave_hash == ENCLAVE_HASH
    assert (parsed.isv_prod_id, parsed.isv_svn, parsed.date) == (0x1234, 0x42, DATE)


def test_debug_attribute_and_gramine_binary_date(key: rsa.RSAPrivateKey) -> None:
    sig = sign_sigstruct(
        key, enclave_hash=ENCLAVE_HASH, isv_prod_id=0, isv_svn=0,
        attributes=enclave_attributes(debug=True), date=DATE, date_format="binary",
    )
    raw = sig.to_bytes()
    assert raw[20:24] == struct.pack("<HBB", 2024, 1, 15)  # how gramine-sgx-sign writes DATE
    assert struct.unpack("<Q", raw[928:936])[0] == SGX_FLAGS_MODE64BIT | SGX_FLAGS_DEBUG
    parsed = Sigstruct.from_bytes(raw)
    assert (parsed.date, parsed.date_format) == (DATE, "binary")
    assert parsed.to_bytes() == raw
    assert verify_sigstruct(parsed) == mr_signer(key)


@settings(max_examples=150)
@given(bit=st.integers(min_value=0, max_value=SIGSTRUCT_SIZE * 8 - 1))
def test_any_flipped_bit_is_rejected(signed: Sigstruct, bit: int) -> None:
    raw = bytearray(signed.to_bytes())
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AttestationFailed):
        verify_sigstruct(Sigstruct.from_bytes(bytes(raw)))


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (961, "signature does not verify"),  # ENCLAVEHASH (signed region 2)
        (20, "signature does not verify"),  # DATE (signed region 1): 0x15 -> 0x14 stays BCD
        (600, "Q1/Q2"),  # SIGNATURE: Q1/Q2 no longer match it
        (1100, "Q1/Q2"),  # Q1
        (1500, "Q1/Q2"),  # Q2
    ],
)
def test_flipped_bits_say_which_check_failed(signed: Sigstruct, offset: int, reason: str) -> None:
    raw = bytearray(signed.to_bytes())
    raw[offset] ^= 0x01
    with pytest.raises(AttestationFailed, match=reason):
        verify_sigstruct(Sigstruct.from_bytes(bytes(raw)))


def test_malformed_sigstructs_are_format_errors(signed: Sigstruct) -> None:
    raw = signed.to_bytes()
    for bad, reason in [
        (raw[:-1], "1808 bytes"),
        (raw + b"\0", "1808 bytes"),
        (b"\x07" + raw[1:], "HEADER"),
        (raw[:30] + b"\x01" + raw[31:], "HEADER"),
        (raw[:50] + b"\x01" + raw[51:], "reserved bytes at offset 44"),
        (raw[:1030] + b"\x01" + raw[1031:], "reserved bytes at offset 1028"),
        (raw[:512] + struct.pack("<I", 65537) + raw[516:], "EXPONENT"),
        (raw[:16] + struct.pack("<I", 0x1234) + raw[20:], "VENDOR"),
        (raw[:20] + struct.pack("<I", 0x20241399) + raw[24:], "DATE"),
    ]:
        with pytest.raises(QuoteFormatError, match=reason):
            Sigstruct.from_bytes(bad)


def test_signing_refuses_a_key_sgx_cannot_use() -> None:
    small = rsa.generate_private_key(public_exponent=3, key_size=2048)
    with pytest.raises(UsageError, match="RSA-3072"):
        sign_sigstruct(small, enclave_hash=ENCLAVE_HASH, isv_prod_id=0, isv_svn=0,
                       attributes=SgxAttributes(flags=4, xfrm=3), date=DATE)


# -- MRENCLAVE ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pages", "expected"), ENARX_VECTORS)
def test_enclave_measurement_matches_enarx_vectors(
    pages: list[tuple[bytes, int]], expected: list[int]
) -> None:
    size = 1
    while size < len(pages) * PAGE_SIZE:
        size <<= 1
    measurement = EnclaveMeasurement()
    measurement.ecreate(size, 1)
    for index, (content, flags) in enumerate(pages):
        measurement.add_page(index * PAGE_SIZE, flags, content)
    assert measurement.digest() == bytes(expected)


def test_enclave_measurement_follows_the_sdm_record_definitions() -> None:
    page = bytes(range(256)) * 16
    expected = hashlib.sha256()
    expected.update(b"ECREATE\0" + struct.pack("<I", 4) + struct.pack("<Q", 1 << 20) + bytes(44))
    expected.update(b"EADD\0\0\0\0" + struct.pack("<Q", 0x2000) + struct.pack("<Q", 0x203) + bytes(40))
    for chunk in range(16):
        expected.update(b"EEXTEND\0" + struct.pack("<Q", 0x2000 + 256 * chunk) + bytes(48))
        expected.update(page[256 * chunk : 256 * (chunk + 1)])
    expected.update(b"EADD\0\0\0\0" + struct.pack("<Q", 0x3000) + struct.pack("<Q", 0x207) + bytes(40))

    measurement = EnclaveMeasurement()
    measurement.ecreate(1 << 20, 4)
    measurement.eadd(0x2000, SECINFO_PT_REG | SECINFO_R | SECINFO_W)
    for chunk in range(16):
        measurement.eextend(0x2000 + 256 * chunk, page[256 * chunk : 256 * (chunk + 1)])
    measurement.add_page(0x3000, SECINFO_PT_REG | SECINFO_R | SECINFO_W | SECINFO_X, measured=False)
    assert measurement.digest() == expected.digest()
    assert measurement.digest() == expected.digest()  # digest() does not finalise


def test_enclave_measurement_enforces_the_hardware_ordering() -> None:
    fresh = EnclaveMeasurement()
    with pytest.raises(ValueError, match="ECREATE must come first"):
        fresh.eadd(0, SECINFO_PT_TCS)
    measurement = EnclaveMeasurement()
    measurement.ecreate(1 << 16, 1)
    with pytest.raises(ValueError, match="once"):
        measurement.ecreate(1 << 16, 1)
    with pytest.raises(ValueError, match="not a page"):
        measurement.eadd(100, SECINFO_PT_REG)
    with pytest.raises(ValueError, match="not a page"):
        measurement.eadd(1 << 16, SECINFO_PT_REG)
    with pytest.raises(ValueError, match="before its page"):
        measurement.eextend(0, bytes(256))
    measurement.eadd(0, SECINFO_PT_REG)
    with pytest.raises(ValueError, match="twice"):
        measurement.eadd(0, SECINFO_PT_REG)
    with pytest.raises(ValueError, match="exactly 256"):
        measurement.eextend(0, bytes(255))
    with pytest.raises(ValueError, match="256-byte chunk"):
        measurement.eextend(128, bytes(256))


def test_measure_manifest_is_the_documented_layout() -> None:
    manifest = b"libos.entrypoint = \"/usr/bin/python3\"\n" * 200  # spans two pages
    content = manifest + b"\0"
    expected = EnclaveMeasurement()
    expected.ecreate(1 << 30, 1)
    pages = [content[i : i + PAGE_SIZE].ljust(PAGE_SIZE, b"\0") for i in range(0, len(content), PAGE_SIZE)]
    assert len(pages) == 2
    for index, page in enumerate(pages):
        expected.add_page(index * PAGE_SIZE, SECINFO_PT_REG | SECINFO_R, page)
    for thread in range(3):
        expected.add_page((2 + thread) * PAGE_SIZE, SECINFO_PT_TCS, bytes(PAGE_SIZE))
    assert measure_manifest(manifest, enclave_size=1 << 30, max_threads=3) == expected.digest()


def test_measure_manifest_commits_to_bytes_size_and_threads() -> None:
    base = measure_manifest(b"sgx.max_threads = 4\n", enclave_size=1 << 33, max_threads=4)
    assert measure_manifest(b"sgx.max_threads = 4\n", enclave_size=1 << 33, max_threads=4) == base
    assert measure_manifest(b"sgx.max_threads = 5\n", enclave_size=1 << 33, max_threads=4) != base
    assert measure_manifest(b"sgx.max_threads = 4\n ", enclave_size=1 << 33, max_threads=4) != base
    assert measure_manifest(b"sgx.max_threads = 4\n", enclave_size=1 << 32, max_threads=4) != base
    assert measure_manifest(b"sgx.max_threads = 4\n", enclave_size=1 << 33, max_threads=5) != base


def test_measure_manifest_rejects_impossible_enclaves() -> None:
    with pytest.raises(UsageError, match="power of two"):
        measure_manifest(b"x", enclave_size=3 << 30, max_threads=1)
    with pytest.raises(UsageError, match="too small"):
        measure_manifest(b"x" * PAGE_SIZE, enclave_size=2 * PAGE_SIZE, max_threads=1)
    with pytest.raises(UsageError, match="at least 1"):
        measure_manifest(b"x", enclave_size=1 << 20, max_threads=0)
