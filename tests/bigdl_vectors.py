"""An independent, deliberately plain writer and reader of BigDL PPML 2.x ``AES/CBC/PKCS5Padding``
files, for tests only. It does not import ``ppml.core.legacy``: it follows BigDL's Scala code
(``BigDLEncrypt.genHeader``/``init``/``encryptStream`` and ``KeyLoader.dataKeyCipher``) step by
step, works on whole byte strings, pads by hand and uses the stdlib ``hmac`` module, so that a
shared misunderstanding with the module under test is less likely.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HEADER = 400


def pkcs5_pad(data: bytes) -> bytes:
    n = 16 - len(data) % 16
    return data + bytes([n]) * n


def pkcs5_unpad(data: bytes) -> bytes:
    if not data or len(data) % 16:
        raise ValueError("bad length")
    n = data[-1]
    if not 1 <= n <= 16 or data[-n:] != bytes([n]) * n:
        raise ValueError("bad padding")
    return data[:-n]


def java_copy_of_range(data: bytes, start: int, end: int) -> bytes:
    """``java.util.Arrays.copyOfRange``: zero-fills past the end of ``data``."""
    out = bytearray(end - start)
    piece = data[start:end]
    out[: len(piece)] = piece
    return bytes(out)


def signing_and_encrypt_keys(data_key_text: bytes) -> tuple[bytes, bytes]:
    """``BigDLEncrypt.init``: signingKey = secret[0:16], encryptKey = secret[16:32]."""
    return java_copy_of_range(data_key_text, 0, 16), java_copy_of_range(data_key_text, 16, 32)


def ecb(primary_key: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    """``Cipher.getInstance("AES")`` (Java: AES/ECB/PKCS5Padding), without the padding step."""
    cipher = Cipher(algorithms.AES(primary_key), modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def wrap_data_key_text(primary_key: bytes, data_key_text: bytes) -> str:
    """``KeyLoader.generateDataKeyPlainText``: base64(AES/ECB/PKCS5(primary key, text))."""
    return base64.b64encode(ecb(primary_key, pkcs5_pad(data_key_text))).decode()


def header(
    wrapped_data_key: bytes,
    iv: bytes,
    *,
    key_length: int | None = None,
    iv_length: int | None = None,
    filler: int = 0x80,
) -> bytes:
    """``BigDLEncrypt.genHeader`` (ByteBuffer is big-endian); the overrides forge bad headers."""
    key_length = len(wrapped_data_key) if key_length is None else key_length
    iv_length = len(iv) if iv_length is None else iv_length
    out = bytearray()
    out += key_length.to_bytes(4, "big", signed=True)
    out += iv_length.to_bytes(4, "big", signed=True)
    out += wrapped_data_key
    out += iv
    out += bytes([filler]) * max(0, HEADER - len(out))
    return bytes(out[:HEADER])


def cbc(key: bytes, iv: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


@dataclass
class Vector:
    """A complete file and where its fields are."""

    data: bytes
    key_length: int

    @property
    def key_string(self) -> slice:
        return slice(8, 8 + self.key_length)

    @property
    def iv(self) -> slice:
        return slice(8 + self.key_length, 24 + self.key_length)

    @property
    def filler(self) -> slice:
        return slice(24 + self.key_length, HEADER)

    @property
    def ciphertext(self) -> slice:
        return slice(HEADER, len(self.data) - 32)

    @property
    def tag(self) -> slice:
        return slice(len(self.data) - 32, len(self.data))


def write_bigdl_file(
    plaintext: bytes,
    *,
    primary_key: bytes,
    data_key_text: bytes,
    iv: bytes,
    padded: bool = True,
    wrapped_data_key: str | None = None,
) -> Vector:
    """The bytes BigDL writes for ``plaintext``. ``padded=False`` encrypts a block-aligned
    plaintext as is (to forge a bad PKCS5 padding under a valid tag); ``wrapped_data_key``
    overrides the header's key string."""
    if wrapped_data_key is None:
        wrapped_data_key = wrap_data_key_text(primary_key, data_key_text)
    signing_key, encrypt_key = signing_and_encrypt_keys(data_key_text)
    body = pkcs5_pad(plaintext) if padded else plaintext
    ciphertext = cbc(encrypt_key, iv, body)
    tag = hmac.new(signing_key, ciphertext, hashlib.sha256).digest()
    wrapped = wrapped_data_key.encode()
    return Vector(header(wrapped, iv) + ciphertext + tag, len(wrapped))


def read_bigdl_file(data: bytes, *, primary_key: bytes) -> tuple[bytes, bytes]:
    """(plaintext, data-key text) of a whole file; ValueError if anything is wrong."""
    if len(data) < HEADER + 16 + 32:
        raise ValueError("too short")
    key_length = int.from_bytes(data[0:4], "big", signed=True)
    iv_length = int.from_bytes(data[4:8], "big", signed=True)
    if iv_length != 16 or not 0 < key_length <= HEADER - 24:
        raise ValueError("bad header")
    wrapped = data[8 : 8 + key_length].decode()
    iv = data[8 + key_length : 24 + key_length]
    text = pkcs5_unpad(ecb(primary_key, base64.b64decode(wrapped, validate=True), decrypt=True))
    signing_key, encrypt_key = signing_and_encrypt_keys(text)
    ciphertext, tag = data[HEADER:-32], data[-32:]
    if not hmac.compare_digest(hmac.new(signing_key, ciphertext, hashlib.sha256).digest(), tag):
        raise ValueError("bad tag")
    return pkcs5_unpad(cbc(encrypt_key, iv, ciphertext, decrypt=True)), text
