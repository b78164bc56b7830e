"""BigDL PPML 2.x AES/CBC/PKCS5Padding files (ppml.core.legacy), against the independent writer
and reader in tests/bigdl_vectors.py: the file-to-file recipes, then the stream reader."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import pickle
import random
import tracemalloc
import warnings
from pathlib import Path

import pytest

import bigdl_vectors as bigdl
from ppml.core.legacy import (
    MODE,
    BigDLPrimaryKey,
    LegacyReader,
    decrypt_bigdl_file,
    encrypt_bigdl_file,
    is_bigdl_file,
)
from ppml.errors import (
    InputError,
    InputNotFound,
    InvalidCiphertext,
    KeyStoreUnreadable,
    NotAFile,
    OutputExists,
    UnsafeWarning,
    WeakLegacyKey,
)

MiB = 1 << 20
PRIMARY_KEY = bytes(range(32))
OTHER_PRIMARY_KEY = bytes(range(100, 132))
# A strong data-key text: base64 of 32 bytes, 44 characters.
STRONG_TEXT = base64.b64encode(bytes(range(200, 232)))
IV = bytes(range(16, 32))
PLAINTEXT = b"name,age,job\n" + b"gdni,1,Engineer\npglyal,2,Engineer\n" * 50


def data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def write(
    path: Path,
    plaintext: bytes = PLAINTEXT,
    *,
    text: bytes = STRONG_TEXT,
    primary_key: bytes = PRIMARY_KEY,
) -> bigdl.Vector:
    vector = bigdl.write_bigdl_file(plaintext, primary_key=primary_key, data_key_text=text, iv=IV)
    path.write_bytes(vector.data)
    return vector


@pytest.fixture
def key() -> BigDLPrimaryKey:
    return BigDLPrimaryKey.from_bytes(PRIMARY_KEY)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An output directory holding nothing else, so leftover temp files are visible."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def assert_failed_cleanly(src: Path, src_before: bytes, dst: Path) -> None:
    assert src.read_bytes() == src_before
    assert not dst.exists()
    assert list(dst.parent.iterdir()) == []


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 15, 16, 17, MiB - 1, MiB, MiB + 1, 3 * MiB + 5], ids=lambda s: f"{s}B"
)
def test_decrypts_what_the_independent_writer_wrote(
    tmp_path: Path, out_dir: Path, key: BigDLPrimaryKey, size: int
) -> None:
    plaintext = data(size, seed=size)
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    write(src, plaintext)
    seen: list[int] = []

    decrypt_bigdl_file(src, dst, primary_key=key, progress=seen.append)

    assert dst.read_bytes() == plaintext
    assert sum(seen) == size
    assert os.stat(dst).st_mode & 0o077 == 0, "plaintext output must be private (0600)"
    assert sorted(p.name for p in out_dir.iterdir()) == ["plain"]


def test_decrypts_a_data_key_text_longer_than_32_bytes(
    tmp_path: Path, key: BigDLPrimaryKey
) -> None:
    # BigDL uses only the first 32 bytes; the rest of the text must be ignored, not rejected.
    src, dst = tmp_path / "in.cbc", tmp_path / "plain"
    write(src, text=base64.b64encode(data(64, seed=1)))
    decrypt_bigdl_file(src, dst, primary_key=key)
    assert dst.read_bytes() == PLAINTEXT


@pytest.mark.parametrize("primary_key_size", [16, 24, 32])
def test_all_aes_primary_key_sizes(tmp_path: Path, primary_key_size: int) -> None:
    primary = data(primary_key_size, seed=primary_key_size)
    src, dst = tmp_path / "in.cbc", tmp_path / "plain"
    write(src, primary_key=primary)
    decrypt_bigdl_file(src, dst, primary_key=BigDLPrimaryKey.from_bytes(primary))
    assert dst.read_bytes() == PLAINTEXT


@pytest.mark.parametrize("size", [0, 17, MiB + 3], ids=lambda s: f"{s}B")
def test_encrypt_is_read_by_the_independent_reader(
    tmp_path: Path, key: BigDLPrimaryKey, size: int
) -> None:
    plaintext = data(size, seed=7)
    src, enc = tmp_path / "plain", tmp_path / "out.cbc"
    src.write_bytes(plaintext)
    seen: list[int] = []

    with pytest.warns(UnsafeWarning, match="legacy format"):
        encrypt_bigdl_file(src, enc, primary_key=key, progress=seen.append)

    decrypted, text = bigdl.read_bigdl_file(enc.read_bytes(), primary_key=PRIMARY_KEY)
    assert decrypted == plaintext
    assert sum(seen) == size
    assert len(text) == 44 and len(base64.b64decode(text, validate=True)) == 32
    assert src.read_bytes() == plaintext


def test_encrypt_then_decrypt_and_fresh_keys_each_time(
    tmp_path: Path, key: BigDLPrimaryKey
) -> None:
    src = tmp_path / "plain"
    src.write_bytes(PLAINTEXT)
    with pytest.warns(UnsafeWarning):
        encrypt_bigdl_file(src, tmp_path / "a.cbc", primary_key=key)
    with pytest.warns(UnsafeWarning):
        encrypt_bigdl_file(src, tmp_path / "b.cbc", primary_key=key)
    a, b = (tmp_path / "a.cbc").read_bytes(), (tmp_path / "b.cbc").read_bytes()
    assert a[:400] != b[:400], "each file needs its own data key and IV"
    assert a[400:] != b[400:]

    decrypt_bigdl_file(tmp_path / "a.cbc", tmp_path / "a.txt", primary_key=key)
    assert (tmp_path / "a.txt").read_bytes() == PLAINTEXT


def test_encrypted_header_has_bigdls_shape(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    src, enc = tmp_path / "plain", tmp_path / "out.cbc"
    src.write_bytes(b"x" * 33)
    with pytest.warns(UnsafeWarning):
        encrypt_bigdl_file(src, enc, primary_key=key)
    raw = enc.read_bytes()
    key_length = int.from_bytes(raw[:4], "big")
    assert key_length == 64  # base64 of the 48-byte ECB wrap of a 44-character text
    assert int.from_bytes(raw[4:8], "big") == 16
    assert raw[24 + key_length : 400] == b"\x80" * (376 - key_length)
    assert len(raw) == 400 + 48 + 32
    assert MODE == "AES/CBC/PKCS5Padding"


# --- tampering: every failure is the same opaque InvalidCiphertext, and leaves nothing --------


@pytest.mark.parametrize(
    "where",
    [
        "key_string_first",
        "key_string_last",
        "ciphertext_first",
        "ciphertext_middle",
        "ciphertext_last",
        "tag_first",
        "tag_last",
        "filler",
        "key_length_field",
        "iv_length_field",
    ],
)
def test_flipped_bit_is_rejected(
    tmp_path: Path, out_dir: Path, key: BigDLPrimaryKey, where: str
) -> None:
    vector = write(tmp_path / "orig.cbc", data(2 * MiB + 100, seed=3))
    index = {
        "key_string_first": vector.key_string.start,
        "key_string_last": vector.key_string.stop - 3,  # the last block of the wrap, not '='
        "ciphertext_first": vector.ciphertext.start,
        "ciphertext_middle": vector.ciphertext.start + MiB + 5,
        "ciphertext_last": vector.ciphertext.stop - 1,
        "tag_first": vector.tag.start,
        "tag_last": vector.tag.stop - 1,
        "filler": vector.filler.start + 10,
        "key_length_field": 3,
        "iv_length_field": 7,
    }[where]
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    tampered = flip(vector.data, index)
    src.write_bytes(tampered)

    with pytest.raises(InvalidCiphertext) as caught:
        decrypt_bigdl_file(src, dst, primary_key=key)

    assert type(caught.value) is InvalidCiphertext
    assert_failed_cleanly(src, tampered, dst)


def test_flipped_iv_bit_is_not_detected_because_bigdl_does_not_authenticate_the_iv(
    tmp_path: Path, key: BigDLPrimaryKey
) -> None:
    """BigDL's tag covers the ciphertext only, so the IV is malleable: flipping one of its bits
    flips the same bit of the first plaintext block and nothing else. This pins down that known
    weakness of the format (see the module docstring); no reader of this format can detect it."""
    vector = write(tmp_path / "orig.cbc")
    src, dst = tmp_path / "in.cbc", tmp_path / "plain"
    src.write_bytes(flip(vector.data, vector.iv.start + 4, bit=3))

    decrypt_bigdl_file(src, dst, primary_key=key)

    assert dst.read_bytes() == flip(PLAINTEXT, 4, bit=3)


@pytest.mark.parametrize(
    "cut", [1, 16, 32, 33, 48], ids=lambda n: f"minus{n}"
)
def test_truncated_file_is_rejected(
    tmp_path: Path, out_dir: Path, key: BigDLPrimaryKey, cut: int
) -> None:
    vector = write(tmp_path / "orig.cbc", data(1000))
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    src.write_bytes(vector.data[:-cut])
    with pytest.raises(InvalidCiphertext):
        decrypt_bigdl_file(src, dst, primary_key=key)
    assert_failed_cleanly(src, vector.data[:-cut], dst)


@pytest.mark.parametrize("length", [0, 100, 399, 400, 432, 447])
def test_file_too_short_for_header_ciphertext_and_tag(
    tmp_path: Path, out_dir: Path, key: BigDLPrimaryKey, length: int
) -> None:
    vector = write(tmp_path / "orig.cbc", b"")
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    src.write_bytes(vector.data[:length])
    with pytest.raises(InvalidCiphertext):
        decrypt_bigdl_file(src, dst, primary_key=key)
    assert_failed_cleanly(src, vector.data[:length], dst)


@pytest.mark.parametrize("extra", [b"\0", b"\0" * 16, b"\0" * 32, os.urandom(48)])
def test_appended_bytes_are_rejected(
    tmp_path: Path, out_dir: Path, key: BigDLPrimaryKey, extra: bytes
) -> None:
    vector = write(tmp_path / "orig.cbc", data(1000))
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    src.write_bytes(vector.data + extra)
    with pytest.raises(InvalidCiphertext):
        decrypt_bigdl_file(src, dst, primary_key=key)
    assert_failed_cleanly(src, vector.data + extra, dst)


@pytest.mark.parametrize("other", [OTHER_PRIMARY_KEY, bytes(16), bytes(range(24))])
def test_wrong_primary_key_is_rejected(
    tmp_path: Path, out_dir: Path, other: bytes
) -> None:
    vector = write(tmp_path / "in.cbc", data(5000))
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    with pytest.raises(InvalidCiphertext):
        decrypt_bigdl_file(src, dst, primary_key=BigDLPrimaryKey.from_bytes(other))
    assert_failed_cleanly(src, vector.data, dst)


def _forge(case: str) -> bytes:
    """A file that is wrong in exactly one way, built with the independent writer."""
    wrapped = bigdl.wrap_data_key_text(PRIMARY_KEY, STRONG_TEXT).encode()
    ciphertext_and_tag = bigdl.write_bigdl_file(
        PLAINTEXT, primary_key=PRIMARY_KEY, data_key_text=STRONG_TEXT, iv=IV
    ).data[400:]
    if case == "key_length_zero":
        return bigdl.header(wrapped, IV, key_length=0) + ciphertext_and_tag
    if case == "key_length_negative":
        return bigdl.header(wrapped, IV, key_length=-1) + ciphertext_and_tag
    if case == "key_length_past_header":  # 8 + 377 + 16 > 400
        return bigdl.header(wrapped, IV, key_length=377) + ciphertext_and_tag
    if case == "key_length_huge":
        return bigdl.header(wrapped, IV, key_length=2**31 - 1) + ciphertext_and_tag
    if case in ("iv_length_15", "iv_length_17", "iv_length_0"):
        iv_length = int(case.rsplit("_", 1)[1])
        return bigdl.header(wrapped, IV, iv_length=iv_length) + ciphertext_and_tag
    if case == "key_string_not_utf8":
        return bigdl.header(b"\xff\xfe" + wrapped[2:], IV) + ciphertext_and_tag
    if case == "key_string_not_base64":
        return bigdl.header(b"!!" + wrapped[2:], IV) + ciphertext_and_tag
    if case == "key_string_wrap_not_whole_blocks":
        short = base64.b64encode(base64.b64decode(wrapped)[:-1])
        return bigdl.header(short, IV) + ciphertext_and_tag
    if case == "wrap_bad_ecb_padding":  # ECB of 32 bytes that end in 0x00: no valid padding
        text = STRONG_TEXT[:31] + b"\0"
        raw = base64.b64encode(bigdl.ecb(PRIMARY_KEY, text))
        return bigdl.header(raw, IV) + ciphertext_and_tag
    if case == "data_key_text_not_utf8":
        text = b"\xff" * 40
        return bigdl.write_bigdl_file(
            PLAINTEXT, primary_key=PRIMARY_KEY, data_key_text=text, iv=IV
        ).data
    if case == "bad_pkcs5_padding_under_a_valid_tag":
        return bigdl.write_bigdl_file(
            b"A" * 64, primary_key=PRIMARY_KEY, data_key_text=STRONG_TEXT, iv=IV, padded=False
        ).data
    raise AssertionError(case)


FORGED = [
    "key_length_zero",
    "key_length_negative",
    "key_length_past_header",
    "key_length_huge",
    "iv_length_15",
    "iv_length_17",
    "iv_length_0",
    "key_string_not_utf8",
    "key_string_not_base64",
    "key_string_wrap_not_whole_blocks",
    "wrap_bad_ecb_padding",
    "data_key_text_not_utf8",
    "bad_pkcs5_padding_under_a_valid_tag",
]


@pytest.mark.parametrize("case", FORGED)
def test_malformed_files_are_rejected(
    tmp_path: Path, out_dir: Path, key: BigDLPrimaryKey, case: str
) -> None:
    forged = _forge(case)
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    src.write_bytes(forged)
    with pytest.raises(InvalidCiphertext) as caught:
        decrypt_bigdl_file(src, dst, primary_key=key)
    assert type(caught.value) is InvalidCiphertext
    assert caught.value.source == str(src)
    assert_failed_cleanly(src, forged, dst)


def test_failures_are_indistinguishable(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    """No message, hint or cause says which check failed."""
    seen = set()
    for i, case in enumerate(FORGED):
        src = tmp_path / "in.cbc"
        src.write_bytes(_forge(case))
        with pytest.raises(InvalidCiphertext) as caught:
            decrypt_bigdl_file(src, tmp_path / f"out{i}", primary_key=key)
        error = caught.value
        seen.add((str(error), error.diagnostics(), repr(error.__cause__), error.hint))
    assert len(seen) == 1


def test_tampered_file_with_a_weak_key_still_fails_when_weak_keys_are_allowed(
    tmp_path: Path, out_dir: Path, key: BigDLPrimaryKey
) -> None:
    vector = write(tmp_path / "orig.cbc", text=b"1234567890123456")
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    tampered = flip(vector.data, vector.tag.start)
    src.write_bytes(tampered)
    with pytest.warns(UnsafeWarning), pytest.raises(InvalidCiphertext):
        decrypt_bigdl_file(src, dst, primary_key=key, allow_weak_keys=True)
    assert_failed_cleanly(src, tampered, dst)


# --- weak keys ----------------------------------------------------------------------------

WEAK = {
    # BigDL's SimpleKeyManagementService hands out 16 decimal digits: the AES key is all zero.
    "simple_kms_16_digits": (b"1234567890123456", "16 characters, so the AES key"),
    "shorter_than_16": (b"abc", "3 characters, so the AES key"),
    "all_nul_after_16": (b"A" * 16 + b"\0" * 16, "is all zero bytes"),
    # BigDL's KeyLoader base64s a 128-bit key: 24 characters.
    "keyloader_24_chars": (base64.b64encode(bytes(range(16))), "24 characters, so 8 of the 32"),
    "twenty_chars": (b"abcdefghijklmnopqrst", "20 characters, so 12 of the 32"),
    "thirty_one_chars": (b"a" * 31, "31 characters, so 1 of the 32"),
}


@pytest.mark.parametrize("case", WEAK)
def test_weak_key_is_refused_without_the_flag(
    tmp_path: Path, out_dir: Path, key: BigDLPrimaryKey, case: str
) -> None:
    text, reason = WEAK[case]
    vector = write(tmp_path / "in.cbc", text=text)
    src, dst = tmp_path / "in.cbc", out_dir / "plain"
    with pytest.raises(WeakLegacyKey) as caught:
        decrypt_bigdl_file(src, dst, primary_key=key)
    assert reason in caught.value.reason
    assert text.decode() not in str(caught.value) or len(text) < 4
    assert_failed_cleanly(src, vector.data, dst)


@pytest.mark.parametrize("case", WEAK)
def test_weak_key_decrypts_with_the_flag_and_warns_every_time(
    tmp_path: Path, key: BigDLPrimaryKey, case: str
) -> None:
    text, reason = WEAK[case]
    src = tmp_path / "in.cbc"
    write(src, text=text)
    for attempt in range(2):
        dst = tmp_path / f"plain{attempt}"
        with pytest.warns(UnsafeWarning, match="weak BigDL legacy key") as record:
            decrypt_bigdl_file(src, dst, primary_key=key, allow_weak_keys=True)
        assert any(reason in str(w.message) for w in record)
        assert dst.read_bytes() == PLAINTEXT


def test_strong_key_does_not_warn(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    src = tmp_path / "in.cbc"
    write(src)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decrypt_bigdl_file(src, tmp_path / "plain", primary_key=key, allow_weak_keys=True)
    assert (tmp_path / "plain").read_bytes() == PLAINTEXT


# --- the primary key ----------------------------------------------------------------------


def test_primary_key_file_loads_with_whitespace_and_without_padding(tmp_path: Path) -> None:
    src = tmp_path / "in.cbc"
    write(src)
    encoded = base64.b64encode(PRIMARY_KEY).decode()
    for i, text in enumerate([
        encoded + "\n",
        "  " + encoded[:20] + "\n" + encoded[20:] + "\r\n",
        encoded.rstrip("="),
    ]):
        key_file = tmp_path / f"primary{i}.key"
        key_file.write_text(text)
        dst = tmp_path / f"plain{i}"
        decrypt_bigdl_file(src, dst, primary_key=BigDLPrimaryKey.load(key_file))
        assert dst.read_bytes() == PLAINTEXT


def test_primary_key_file_missing(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound) as caught:
        BigDLPrimaryKey.load(tmp_path / "nope.key")
    assert caught.value.path == tmp_path / "nope.key"


def test_primary_key_file_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotAFile):
        BigDLPrimaryKey.load(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not base64!!",
        b"\xff\xfe\x00binary",
        b"",
        b"QUJD",  # 3 bytes
        base64.b64encode(bytes(20)),  # not an AES key size
        base64.b64encode(bytes(64)),
        b"A" * 5000,  # too large for a key file
    ],
    ids=["garbage", "binary", "empty", "3_bytes", "20_bytes", "64_bytes", "huge"],
)
def test_primary_key_file_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "primary.key"
    path.write_bytes(content)
    with pytest.raises(KeyStoreUnreadable) as caught:
        BigDLPrimaryKey.load(path)
    assert caught.value.path == path
    assert caught.value.reason


def test_primary_key_file_whose_read_fails() -> None:
    # A regular file that opens but fails to read (EIO at offset 0), even for root.
    with pytest.raises(KeyStoreUnreadable) as caught:
        BigDLPrimaryKey.load("/proc/self/mem")
    assert "cannot read" in caught.value.reason


def test_primary_key_never_shows_itself() -> None:
    key = BigDLPrimaryKey.from_bytes(PRIMARY_KEY)
    shown = repr(key) + str(key) + f"{key}"
    assert "redacted" in shown
    for leak in (PRIMARY_KEY.hex(), base64.b64encode(PRIMARY_KEY).decode(), repr(PRIMARY_KEY)):
        assert leak not in shown
    with pytest.raises(TypeError):
        pickle.dumps(key)


@pytest.mark.parametrize("size", [0, 15, 20, 33])
def test_primary_key_from_bytes_needs_an_aes_key_size(size: int) -> None:
    with pytest.raises(ValueError):
        BigDLPrimaryKey.from_bytes(bytes(size))


# --- files and outputs --------------------------------------------------------------------


def test_source_missing_or_a_directory(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    with pytest.raises(InputNotFound):
        decrypt_bigdl_file(tmp_path / "nope", tmp_path / "plain", primary_key=key)
    with pytest.raises(NotAFile):
        decrypt_bigdl_file(tmp_path, tmp_path / "plain", primary_key=key)
    assert not (tmp_path / "plain").exists()


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    src, dst = tmp_path / "in.cbc", tmp_path / "plain"
    write(src)
    dst.write_bytes(b"keep me")
    with pytest.raises(OutputExists):
        decrypt_bigdl_file(src, dst, primary_key=key)
    assert dst.read_bytes() == b"keep me"
    decrypt_bigdl_file(src, dst, primary_key=key, overwrite=True)
    assert dst.read_bytes() == PLAINTEXT


def test_failed_decrypt_keeps_an_existing_output(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    vector = write(tmp_path / "orig.cbc")
    src, dst = tmp_path / "in.cbc", tmp_path / "plain"
    src.write_bytes(flip(vector.data, vector.tag.start))
    dst.write_bytes(b"previous")
    with pytest.raises(InvalidCiphertext):
        decrypt_bigdl_file(src, dst, primary_key=key, overwrite=True)
    assert dst.read_bytes() == b"previous"


def test_output_may_not_be_the_source(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    vector = write(tmp_path / "in.cbc")
    src = tmp_path / "in.cbc"
    with pytest.raises(InputError):
        decrypt_bigdl_file(src, src, primary_key=key, overwrite=True)
    assert src.read_bytes() == vector.data
    with pytest.warns(UnsafeWarning), pytest.raises(InputError):
        encrypt_bigdl_file(src, src, primary_key=key, overwrite=True)
    assert src.read_bytes() == vector.data


def test_decrypt_streams_in_bounded_memory(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    size = 12 * MiB
    src, dst = tmp_path / "in.cbc", tmp_path / "plain"
    write(src, data(size, seed=11))
    tracemalloc.start()
    try:
        decrypt_bigdl_file(src, dst, primary_key=key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dst.stat().st_size == size
    assert peak < 5 * MiB, f"peak {peak} bytes for a {size}-byte file"


def test_encrypt_streams_in_bounded_memory(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    size = 12 * MiB
    src, enc = tmp_path / "plain", tmp_path / "out.cbc"
    src.write_bytes(data(size, seed=12))
    tracemalloc.start()
    try:
        with pytest.warns(UnsafeWarning):
            encrypt_bigdl_file(src, enc, primary_key=key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert enc.stat().st_size == 400 + size + 16 + 32
    assert peak < 5 * MiB, f"peak {peak} bytes for a {size}-byte file"


# --- sniffing -----------------------------------------------------------------------------


def test_is_bigdl_file(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    vector = write(tmp_path / "bigdl.cbc")
    assert is_bigdl_file(tmp_path / "bigdl.cbc")

    plain = tmp_path / "plain"
    plain.write_bytes(PLAINTEXT)
    with pytest.warns(UnsafeWarning):
        encrypt_bigdl_file(plain, tmp_path / "ours.cbc", primary_key=key)
    assert is_bigdl_file(tmp_path / "ours.cbc")

    not_bigdl = {
        "plaintext": PLAINTEXT,
        "ppml_envelope": b"PPML\x01" + bytes(600),
        "short": vector.data[:447],
        "not_whole_blocks": vector.data[:-1],
        "bad_filler": flip(vector.data, vector.filler.start),
        "bad_iv_length": _forge("iv_length_15"),
        "key_length_past_header": _forge("key_length_past_header"),
        "empty": b"",
    }
    for name, content in not_bigdl.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert not is_bigdl_file(path), name


def test_is_bigdl_file_missing(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound):
        is_bigdl_file(tmp_path / "nope")


# --- the stream reader --------------------------------------------------------------------


STREAM_CASES = [
    (size, chunk_size)
    for size in (0, 1, 15, 16, 17, 4095, 4096, 4097, MiB - 1, MiB, MiB + 1, 3 * MiB + 5)
    for chunk_size in (16, 4096, MiB)
    if chunk_size > 16 or size < 8192  # one-block chunks: small files are enough
]


@pytest.mark.parametrize(
    ("size", "chunk_size"), STREAM_CASES, ids=[f"{s}B-chunk{c}" for s, c in STREAM_CASES]
)
def test_stream_reader_reads_what_the_independent_writer_wrote(
    tmp_path: Path, key: BigDLPrimaryKey, size: int, chunk_size: int
) -> None:
    plaintext = data(size, seed=size)
    src = tmp_path / "in.cbc"
    write(src, plaintext)

    with LegacyReader(src, primary_key=key, chunk_size=chunk_size) as reader:
        assert reader.plaintext_size == size
        assert reader.segment_count == max(1, -(-(size // 16 + 1) * 16 // chunk_size))
        ranges = [reader.segment_plaintext_range(i) for i in range(reader.segment_count)]
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert b"".join(bytes(view) for view in reader.iter_segments()) == plaintext
        sink = io.BytesIO()
        seen: list[int] = []
        assert reader.copy_to(sink, progress=seen.append) == size
        assert sink.getvalue() == plaintext and sum(seen) == size
        third, half = size // 3, size // 2
        assert reader.read_range(third, half) == plaintext[third : third + half]
        assert reader.read_range(size, 10) == b""


def test_stream_reader_reads_chunks_in_any_order(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    plaintext = data(10 * 4096 + 7, seed=5)
    src = tmp_path / "in.cbc"
    write(src, plaintext)
    with LegacyReader(src, primary_key=key, chunk_size=4096) as reader:
        out = memoryview(bytearray(4096))
        for index in [7, 2, 2, 10, 0, 9, 3]:
            start, end = reader.segment_plaintext_range(index)
            assert reader.read_segment_into(index, out) == end - start
            assert out[: end - start] == plaintext[start:end]
        with pytest.raises(ValueError):
            reader.read_segment_into(0, memoryview(bytearray(4095)))
        with pytest.raises(IndexError):
            reader.segment_plaintext_range(11)


@pytest.mark.parametrize(
    "where", ["ciphertext_first", "ciphertext_middle", "ciphertext_last", "tag_first", "tag_last",
              "key_string_first", "filler"],
)
def test_stream_reader_refuses_tampering_before_any_plaintext(
    tmp_path: Path, key: BigDLPrimaryKey, where: str
) -> None:
    """The tag is checked while the reader opens: a tampered file gives no reader at all, so
    not one plaintext byte (the first chunk included) is handed out."""
    vector = write(tmp_path / "orig.cbc", data(3 * MiB + 100, seed=3))
    index = {
        "ciphertext_first": vector.ciphertext.start,
        "ciphertext_middle": vector.ciphertext.start + MiB + 5,
        "ciphertext_last": vector.ciphertext.stop - 1,
        "tag_first": vector.tag.start,
        "tag_last": vector.tag.stop - 1,
        "key_string_first": vector.key_string.start,
        "filler": vector.filler.start + 10,
    }[where]
    src = tmp_path / "in.cbc"
    src.write_bytes(flip(vector.data, index))
    with pytest.raises(InvalidCiphertext) as caught:
        LegacyReader(src, primary_key=key)
    assert type(caught.value) is InvalidCiphertext
    assert caught.value.source == str(src)


@pytest.mark.parametrize("case", FORGED)
def test_stream_reader_refuses_malformed_files(
    tmp_path: Path, key: BigDLPrimaryKey, case: str
) -> None:
    src = tmp_path / "in.cbc"
    src.write_bytes(_forge(case))
    with pytest.raises(InvalidCiphertext) as caught:
        LegacyReader(src, primary_key=key)
    assert type(caught.value) is InvalidCiphertext


@pytest.mark.parametrize("cut", [1, 16, 32, 48])
def test_stream_reader_refuses_truncated_or_extended_files(
    tmp_path: Path, key: BigDLPrimaryKey, cut: int
) -> None:
    vector = write(tmp_path / "orig.cbc", data(5000))
    src = tmp_path / "in.cbc"
    for content in (vector.data[:-cut], vector.data + bytes(cut)):
        src.write_bytes(content)
        with pytest.raises(InvalidCiphertext):
            LegacyReader(src, primary_key=key)
    with pytest.raises(InvalidCiphertext):
        LegacyReader(src, primary_key=BigDLPrimaryKey.from_bytes(OTHER_PRIMARY_KEY))


def test_stream_reader_refuses_a_file_changed_after_it_was_verified(
    tmp_path: Path, key: BigDLPrimaryKey
) -> None:
    """Untrusted storage may serve other bytes on the second pass: a chunk that changed fails
    before any of its plaintext exists, and the chunks before it read as verified."""
    chunk = 4096
    plaintext = data(6 * chunk, seed=9)
    src = tmp_path / "in.cbc"
    vector = write(src, plaintext)
    with LegacyReader(src, primary_key=key, chunk_size=chunk) as reader:
        out = memoryview(bytearray(chunk))
        assert reader.read_segment_into(0, out) == chunk and out == plaintext[:chunk]
        # A valid file of its own: same keys and IV, chunk 3 different. The tag is not the
        # issue: the reader holds the checkpoints of the bytes it verified.
        other = bytearray(plaintext)
        other[3 * chunk + 10] ^= 1
        swapped = write(tmp_path / "other.cbc", bytes(other))
        with open(src, "r+b") as f:
            f.write(swapped.data)
        assert swapped.data != vector.data
        assert reader.read_segment_into(1, out) == chunk and out == plaintext[chunk : 2 * chunk]
        assert reader.read_segment_into(2, out) == chunk
        out[:] = b"\xee" * chunk
        with pytest.raises(InvalidCiphertext):
            reader.read_segment_into(3, out)
        assert out == b"\xee" * chunk, "no plaintext of the changed chunk may be written"
        with pytest.raises(InvalidCiphertext):
            reader.read_range(0, len(plaintext))
        with pytest.raises(InvalidCiphertext):
            b"".join(reader.iter_segments(3))


def test_stream_reader_reads_in_bounded_memory(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    size = 24 * MiB
    src = tmp_path / "in.cbc"
    plaintext = data(size, seed=13)
    write(src, plaintext)
    expected = hashlib.sha256(plaintext).digest()
    del plaintext
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with LegacyReader(src, primary_key=key) as reader:
            for view in reader.iter_segments():
                digest.update(view)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.digest() == expected
    # Two chunk buffers (1 MiB each) and 32 bytes of checkpoint per chunk, not the file.
    assert peak < 3 * MiB, f"peak {peak} bytes for a {size}-byte file"


def test_stream_reader_refuses_weak_keys_unless_allowed_and_then_warns(
    tmp_path: Path, key: BigDLPrimaryKey
) -> None:
    text, reason = WEAK["simple_kms_16_digits"]
    src = tmp_path / "in.cbc"
    write(src, text=text)
    with pytest.raises(WeakLegacyKey) as caught:
        LegacyReader(src, primary_key=key)
    assert reason in caught.value.reason
    with pytest.warns(UnsafeWarning, match="weak BigDL legacy key") as record:
        reader = LegacyReader(src, primary_key=key, allow_weak_keys=True)
    assert record[0].filename == __file__, "the warning points at the caller"
    with reader:
        assert reader.read_range(0, len(PLAINTEXT)) == PLAINTEXT


def test_stream_reader_source_missing_or_a_directory(tmp_path: Path, key: BigDLPrimaryKey) -> None:
    with pytest.raises(InputNotFound):
        LegacyReader(tmp_path / "nope", primary_key=key)
    with pytest.raises(NotAFile):
        LegacyReader(tmp_path, primary_key=key)
    with pytest.raises(ValueError):
        LegacyReader(tmp_path / "nope", primary_key=key, chunk_size=100)
