"""BigDL PPML 2.x ``AES/CBC/PKCS5Padding`` files, read (and, for tests and round trips, written)
so that users can migrate their data to ppml's envelope format.

This is BigDL's ``spark.bigdl.encryter.type=common`` codec (``BigDLEncrypt``, ``CryptoCodec``,
default extension ``.cbc``), with the data key wrapped by a *plaintext primary key*
(``spark.bigdl.primaryKey.<name>.plainText``). Only the 400-byte-header generation is supported;
the earlier 25-byte-header files (version byte 0x80, timestamp, IV) are a different format.

Byte layout (integers are big-endian ``int32``, as Java's ``ByteBuffer`` writes them; every
length is checked against its bound before it is used)::

    offset   size     field
    ------   ------   ----------------------------------------------------------------
         0        4   L                  length of the wrapped data key, 1 ≤ L ≤ 376
         4        4   IV length          always 16
         8        L   wrapped data key   ASCII base64 of AES/ECB/PKCS5Padding(primary key,
                                         data-key text)
     8 + L       16   IV                 random, for the CBC body
    24 + L  376 - L   filler             0x80 bytes up to offset 400
       400        C   ciphertext         AES-128/CBC/PKCS5Padding of the whole plaintext under
                                         the AES key; C = 16·n, n ≥ 1
   400 + C       32   tag                HMAC-SHA256(HMAC key, ciphertext)

Keys. The *data-key text* is the string the KMS hands out (BigDL: base64 of a random key). Its
UTF-8 bytes, cut or zero-padded to 32, give the HMAC key (bytes 0..16) and the AES-128 key
(bytes 16..32); the remaining characters are unused. A text shorter than 32 bytes leaves key bytes
zero, and one of 16 bytes or fewer leaves the whole AES key zero.

The tag covers the ciphertext only: not the header, so **not the IV**. Flipping a bit of the IV
flips the same bit of the first 16 plaintext bytes and nothing detects it; this is a property of
the format that no reader can repair (a changed wrapped key or ciphertext does fail the tag).
BigDL's own reader computes its HMAC over the plaintext and raises only when the two *match*,
so BigDL never authenticated these files; :func:`decrypt_bigdl_file` and :class:`LegacyReader` do,
before any plaintext becomes visible.

Weak keys (see :class:`~ppml.errors.WeakLegacyKey`). BigDL's ``SimpleKeyManagementService`` hands
out 16-digit data-key texts, so the AES key is all zero. BigDL's ``KeyLoader`` with a plaintext
primary key base64s a fresh 128-bit key into 24 characters, so 8 AES key bytes are zero padding and
2 more are ``==``: about 32 bits of AES key entropy. :func:`decrypt_bigdl_file` refuses both
unless told otherwise; :func:`encrypt_bigdl_file` uses a 44-character text instead.

Reading: :func:`decrypt_bigdl_file` decrypts file to file in one pass (its output appears only
once the tag was verified); :class:`LegacyReader` hands the plaintext out in chunks, in bounded
memory, after a first pass verified the tag.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from secrets import compare_digest
from typing import BinaryIO, Final, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ppml.core._files import AtomicOutput, open_input, read_exactly
from ppml.core.envelope import ProgressCallback
from ppml.errors import (
    InputError,
    InputNotFound,
    InvalidCiphertext,
    KeyStoreUnreadable,
    NotAFile,
    UnsafeWarning,
    WeakLegacyKey,
)

__all__ = [
    "MODE",
    "BigDLPrimaryKey",
    "LegacyReader",
    "decrypt_bigdl_file",
    "encrypt_bigdl_file",
    "is_bigdl_file",
]

MODE: Final = "AES/CBC/PKCS5Padding"

HEADER_SIZE: Final = 400
IV_SIZE: Final = 16
TAG_SIZE: Final = 32
BLOCK_SIZE: Final = 16
FILLER: Final = 0x80
CHUNK_SIZE: Final = 1 << 20
_LENGTHS = struct.Struct(">ii")
MAX_WRAPPED_KEY_SIZE: Final = HEADER_SIZE - _LENGTHS.size - IV_SIZE
MIN_FILE_SIZE: Final = HEADER_SIZE + BLOCK_SIZE + TAG_SIZE

_HMAC_KEY_SIZE = 16
_AES_KEY_SIZE = 16
_KEY_TEXT_SIZE = _HMAC_KEY_SIZE + _AES_KEY_SIZE
_PRIMARY_KEY_SIZES = (16, 24, 32)
_MAX_PRIMARY_KEY_FILE_SIZE = 4096
# 32 random bytes give a 44-character base64 text, of which the 32 characters BigDL uses carry
# 96 bits for each key. BigDL itself base64s 16 bytes (24 characters), which is weak.
_NEW_DATA_KEY_BYTES = 32


class BigDLPrimaryKey:
    """A BigDL *plaintext primary key*: the AES key (16, 24 or 32 bytes) that wraps data keys.

    It never shows its bytes: ``repr``/``str`` are redacted and it cannot be pickled.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) not in _PRIMARY_KEY_SIZES:
            # The length is not secret; the bytes are.
            raise ValueError(f"a BigDL primary key has 16, 24 or 32 bytes, got {len(key)}")
        self._key = bytes(key)

    @classmethod
    def from_bytes(cls, key: bytes) -> BigDLPrimaryKey:
        """Wrap raw AES key bytes. Raises ValueError unless there are 16, 24 or 32 of them."""
        return cls(key)

    @classmethod
    def load(cls, path: Path | str) -> BigDLPrimaryKey:
        """Read a primary key file: the key's base64 text, as BigDL's ``plainText`` setting holds
        it (surrounding and embedded whitespace is ignored, missing ``=`` padding tolerated).

        Raises:
            InputNotFound: there is no such file.
            NotAFile: ``path`` is a directory or not a regular file.
            KeyStoreUnreadable: the file cannot be read, is not base64, or does not decode to a
                16-, 24- or 32-byte key.
        """
        path = Path(path)
        try:
            if path.is_dir():
                raise NotAFile(path)
            if path.exists() and not path.is_file():
                raise NotAFile(path, "is not a regular file")
            with open(path, "rb") as f:
                raw = f.read(_MAX_PRIMARY_KEY_FILE_SIZE + 1)
        except FileNotFoundError:
            raise InputNotFound(path) from None
        except IsADirectoryError:
            raise NotAFile(path) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise KeyStoreUnreadable(path, f"cannot read the primary key: {reason}") from None
        if len(raw) > _MAX_PRIMARY_KEY_FILE_SIZE:
            raise KeyStoreUnreadable(path, "too large to be a primary key file")
        key = _decode_base64_key_text(raw)
        if key is None:
            raise KeyStoreUnreadable(path, "the primary key file does not hold base64 text")
        if len(key) not in _PRIMARY_KEY_SIZES:
            raise KeyStoreUnreadable(
                path, f"the primary key has {len(key)} bytes; an AES key has 16, 24 or 32"
            )
        return cls(key)

    def __repr__(self) -> str:
        return "BigDLPrimaryKey(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a BigDLPrimaryKey cannot be pickled")


def _decode_base64_key_text(raw: bytes) -> bytes | None:
    try:
        text = "".join(raw.decode("ascii").split())
    except UnicodeDecodeError:
        return None
    if len(text) % 4 == 1:
        return None
    # Java's Base64 decoder, which BigDL uses, does not require the '=' padding.
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Header:
    """The 400-byte header (see the module docstring for its layout)."""

    wrapped_data_key: str
    iv: bytes

    def to_bytes(self) -> bytes:
        wrapped = self.wrapped_data_key.encode("ascii")
        if not 1 <= len(wrapped) <= MAX_WRAPPED_KEY_SIZE or len(self.iv) != IV_SIZE:
            raise ValueError("wrapped data key or IV out of bounds for the BigDL header")
        head = _LENGTHS.pack(len(wrapped), IV_SIZE) + wrapped + self.iv
        return head + bytes([FILLER]) * (HEADER_SIZE - len(head))

    @classmethod
    def from_bytes(cls, data: bytes) -> _Header:
        """Parse the header; raise InvalidCiphertext() if its shape is wrong."""
        if len(data) != HEADER_SIZE:
            raise InvalidCiphertext()
        wrapped_size, iv_size = _LENGTHS.unpack_from(data)
        if iv_size != IV_SIZE or not 1 <= wrapped_size <= MAX_WRAPPED_KEY_SIZE:
            raise InvalidCiphertext()
        wrapped_end = _LENGTHS.size + wrapped_size
        iv_end = wrapped_end + IV_SIZE
        if data[iv_end:] != bytes([FILLER]) * (HEADER_SIZE - iv_end):
            raise InvalidCiphertext()
        try:
            wrapped = data[_LENGTHS.size : wrapped_end].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCiphertext() from None
        return cls(wrapped_data_key=wrapped, iv=bytes(data[wrapped_end:iv_end]))


def _readinto_exactly(raw: BinaryIO, view: memoryview) -> int:
    filled = 0
    while filled < len(view):
        n = raw.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            break
        filled += n
    return filled


def _wrap_data_key_text(primary_key: BigDLPrimaryKey, text: bytes) -> str:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(text) + padder.finalize()
    encryptor = Cipher(algorithms.AES(primary_key._key), modes.ECB()).encryptor()
    wrapped = encryptor.update(padded) + encryptor.finalize()
    return base64.b64encode(wrapped).decode("ascii")


def _unwrap_data_key_text(primary_key: BigDLPrimaryKey, wrapped_text: str) -> bytes:
    """The data-key text's UTF-8 bytes; raise InvalidCiphertext() on any failure."""
    try:
        wrapped = base64.b64decode(wrapped_text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCiphertext() from None
    if not wrapped or len(wrapped) % BLOCK_SIZE:
        raise InvalidCiphertext()
    decryptor = Cipher(algorithms.AES(primary_key._key), modes.ECB()).decryptor()
    padded = decryptor.update(wrapped) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        text = unpadder.update(padded) + unpadder.finalize()
        text.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise InvalidCiphertext() from None
    return text


def _derive_keys(text: bytes) -> tuple[bytes, bytes]:
    """(HMAC key, AES key) as BigDL derives them: ``Arrays.copyOfRange`` zero-pads."""
    material = text[:_KEY_TEXT_SIZE].ljust(_KEY_TEXT_SIZE, b"\0")
    return material[:_HMAC_KEY_SIZE], material[_HMAC_KEY_SIZE:]


def _weakness(text: bytes) -> str | None:
    """Why the keys derived from this data-key text are weak, or None if they are not."""
    size = len(text)
    unit = "characters" if text.isascii() else "bytes"
    _, aes_key = _derive_keys(text)
    if not any(aes_key):
        if size <= _HMAC_KEY_SIZE:
            return (
                f"the data key text has {size} {unit}, so the AES key (its bytes 16..32) is "
                "all zero padding"
            )
        return "the AES key derived from the data key text (its bytes 16..32) is all zero bytes"
    if size < _KEY_TEXT_SIZE:
        return (
            f"the data key text has {size} {unit}, so {_KEY_TEXT_SIZE - size} of the "
            f"{_KEY_TEXT_SIZE} key bytes are zero padding"
        )
    return None


def _same_file(src: Path, dst: Path) -> bool:
    try:
        return dst.exists() and os.path.samefile(src, dst)
    except OSError:
        return False


def is_bigdl_file(path: Path | str) -> bool:
    """True if the file has the shape of a BigDL ``AES/CBC/PKCS5Padding`` file.

    Reads only the 400-byte header and the file size; nothing is decrypted or verified.

    Raises:
        InputNotFound, NotAFile: ``path`` is missing or not a regular file.
    """
    path = Path(path)
    with open_input(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = read_exactly(f, HEADER_SIZE)
    ciphertext_size = size - HEADER_SIZE - TAG_SIZE
    if ciphertext_size < BLOCK_SIZE or ciphertext_size % BLOCK_SIZE:
        return False
    try:
        header = _Header.from_bytes(head)
    except InvalidCiphertext:
        return False
    return header.wrapped_data_key.isascii()


def decrypt_bigdl_file(
    src: Path | str,
    dst: Path | str,
    *,
    primary_key: BigDLPrimaryKey,
    allow_weak_keys: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> None:
    """Decrypt the BigDL ``AES/CBC/PKCS5Padding`` file ``src`` into ``dst``.

    The body is decrypted in 1 MiB chunks into a private temporary file beside ``dst`` while its
    HMAC is computed; ``dst`` appears only after the tag and the padding were verified. The IV is
    not covered by BigDL's tag (see the module docstring).

    Raises:
        InputNotFound, NotAFile: ``src`` is missing or not a regular file.
        OutputExists: ``dst`` exists and ``overwrite`` is false.
        InputError: ``dst`` is ``src``.
        InvalidCiphertext: wrong primary key, or ``src`` was altered, truncated or extended, or
            is not a BigDL file.
        WeakLegacyKey: the data key is all-zero or zero-padded and ``allow_weak_keys`` is false
            (with it, an :class:`~ppml.errors.UnsafeWarning` is emitted instead).
    """
    src, dst = Path(src), Path(dst)
    with open_input(src) as source:
        if _same_file(src, dst):
            raise InputError(dst, "is the input file; the source is never modified")
        body = _Body.open(source, src, primary_key, allow_weak_keys=allow_weak_keys, stacklevel=2)
        out = AtomicOutput(dst, overwrite=overwrite)
        try:
            _decrypt_body(source, out.file, src, body, progress)
            out.commit()
        except BaseException:
            out.discard()
            raise


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Body:
    """What decrypting a file's body needs, from its header and size."""

    ciphertext_size: int
    iv: bytes
    hmac_key: bytes
    aes_key: bytes

    @classmethod
    def open(
        cls, source: BinaryIO, src: Path, primary_key: BigDLPrimaryKey, *, allow_weak_keys: bool,
        stacklevel: int,
    ) -> _Body:
        """Read the header of ``source`` (positioned at its start) and unwrap its data key;
        ``stacklevel`` is the weak-key warning's, as the caller would pass it.

        Raises:
            InvalidCiphertext: the file has no BigDL shape, or the primary key is wrong.
            WeakLegacyKey: see :func:`decrypt_bigdl_file`.
        """
        size = os.fstat(source.fileno()).st_size
        ciphertext_size = size - HEADER_SIZE - TAG_SIZE
        if ciphertext_size < BLOCK_SIZE or ciphertext_size % BLOCK_SIZE:
            raise InvalidCiphertext(src)
        try:
            header = _Header.from_bytes(read_exactly(source, HEADER_SIZE))
            text = _unwrap_data_key_text(primary_key, header.wrapped_data_key)
        except InvalidCiphertext:
            raise InvalidCiphertext(src) from None
        reason = _weakness(text)
        if reason is not None:
            if not allow_weak_keys:
                raise WeakLegacyKey(reason)
            warnings.warn(
                f"{src}: decrypting with a weak BigDL legacy key ({reason}); the data had little "
                "or no protection. Re-encrypt it with ppml's envelope format.",
                UnsafeWarning,
                stacklevel=stacklevel + 1,
            )
        hmac_key, aes_key = _derive_keys(text)
        return cls(ciphertext_size=ciphertext_size, iv=header.iv, hmac_key=hmac_key,
                   aes_key=aes_key)


def _decrypt_body(
    source: BinaryIO, sink: BinaryIO, src: Path, body: _Body, progress: ProgressCallback | None
) -> None:
    decryptor = Cipher(algorithms.AES(body.aes_key), modes.CBC(body.iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    mac = hmac.HMAC(body.hmac_key, hashes.SHA256())
    buffer = memoryview(bytearray(min(CHUNK_SIZE, body.ciphertext_size)))
    remaining = body.ciphertext_size
    while remaining:
        chunk = buffer[: min(len(buffer), remaining)]
        if _readinto_exactly(source, chunk) != len(chunk):
            raise InvalidCiphertext(src)
        mac.update(chunk)
        plain = unpadder.update(decryptor.update(chunk))
        sink.write(plain)
        if progress is not None and plain:
            progress(len(plain))
        remaining -= len(chunk)
    tag = read_exactly(source, TAG_SIZE)
    if len(tag) != TAG_SIZE:
        raise InvalidCiphertext(src)
    try:
        mac.verify(tag)
    except InvalidSignature:
        raise InvalidCiphertext(src) from None
    try:
        final = decryptor.finalize() + unpadder.finalize()
    except ValueError:
        raise InvalidCiphertext(src) from None
    sink.write(final)
    if progress is not None and final:
        progress(len(final))


class LegacyReader:
    """Verified reads of one BigDL ``AES/CBC/PKCS5Padding`` file, chunk by chunk, in bounded
    memory: the stream counterpart of :func:`decrypt_bigdl_file`, with the interface of
    :class:`~ppml.core.envelope.EnvelopeReader` (its *segments* are the CBC body's chunks of
    ``chunk_size`` ciphertext bytes, 1 MiB by default).

    The format's one HMAC-SHA256 tag covers the whole ciphertext, so no plaintext may leave
    before the last ciphertext byte is authenticated. The reader makes two passes:

    1. *Verify*, when it is opened: the ciphertext is read chunk by chunk and MACed, and after
       each chunk the MAC of the ciphertext so far is kept as that chunk's *checkpoint* (32
       bytes per chunk: 32 KiB per GiB of file). The last checkpoint must equal the tag. Then
       the last block alone is decrypted (CBC needs only the block before it, kept from the same
       pass) to check its PKCS#5 padding, which also gives the plaintext size. Nothing else is
       decrypted, and that block is not handed out.
    2. *Decrypt*, as chunks are read: each chunk is read again and MACed after the chunks
       before it, and the result must equal its checkpoint before the chunk is decrypted. The
       file is untrusted storage that may change between the passes (a host can serve other
       bytes the second time); a changed chunk fails (InvalidCiphertext) before any of its
       plaintext exists, and every chunk read before it was the verified one.

    The price is a second MAC pass (HMAC-SHA256 runs at about 1.7 GB/s per core here) for
    holding at most two chunk buffers whatever the file's size, and no plaintext on disk.
    Chunks read in order cost one MAC each; reading an earlier chunk than the last one restarts
    the MAC from the file's start, and skipping ahead MACs the skipped chunks (without
    decrypting them). The IV is not covered by the tag (see the module docstring).
    :func:`decrypt_bigdl_file` makes a single pass instead: its output is a temporary file that
    becomes visible only once the tag is verified, which gives the same guarantee.

    Raises (opening):
        InputNotFound, NotAFile: ``path`` is missing or not a regular file.
        InvalidCiphertext: wrong primary key, or the file was altered, truncated or extended,
            or is not a BigDL file.
        WeakLegacyKey: see :func:`decrypt_bigdl_file`.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        primary_key: BigDLPrimaryKey,
        allow_weak_keys: bool = False,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if chunk_size <= 0 or chunk_size % BLOCK_SIZE:
            raise ValueError(f"chunk_size must be a positive multiple of {BLOCK_SIZE}")
        self.path = Path(path)
        self._file = open_input(self.path)
        try:
            self._body = _Body.open(
                self._file, self.path, primary_key, allow_weak_keys=allow_weak_keys, stacklevel=2
            )
            self._chunk_size = chunk_size
            self._count = -(-self._body.ciphertext_size // chunk_size)
            self._sealed = memoryview(bytearray(min(chunk_size, self._body.ciphertext_size)))
            self._checkpoints, self._plaintext_size = self._verify()
        except BaseException:
            self._file.close()
            raise
        # update_into wants room for one block more than it writes.
        self._plain = memoryview(bytearray(len(self._sealed) + BLOCK_SIZE - 1))
        self._restart()

    @property
    def plaintext_size(self) -> int:
        return self._plaintext_size

    @property
    def segment_count(self) -> int:
        return self._count

    def segment_plaintext_range(self, index: int) -> tuple[int, int]:
        """(start, end) plaintext offsets covered by chunk ``index``."""
        if not 0 <= index < self._count:
            raise IndexError(f"no chunk {index} in a file of {self._count}")
        start = index * self._chunk_size
        return start, min(start + self._chunk_size, self._plaintext_size)

    def read_segment_into(self, index: int, out: memoryview) -> int:
        """Decrypt chunk ``index`` into the start of ``out`` once it matched its checkpoint;
        returns its plaintext length (see :meth:`segment_plaintext_range`).

        Raises:
            InvalidCiphertext: the file changed since it was verified.
            ValueError: ``out`` is too small for the chunk's plaintext.
        """
        start, end = self.segment_plaintext_range(index)
        if len(out) < end - start:
            raise ValueError("the output buffer is smaller than the segment's plaintext")
        plain = self._decrypt(index)
        out[: len(plain)] = plain
        return len(plain)

    def iter_segments(self, first: int = 0, stop: int | None = None) -> Iterator[memoryview]:
        """Yield the plaintext of chunks ``first`` .. ``stop``-1 (views are reused)."""
        stop = self._count if stop is None else stop
        for index in range(first, stop):
            yield self._decrypt(index)

    def read_range(self, offset: int, length: int) -> bytes:
        """Plaintext bytes ``[offset, offset+length)``, clipped to the plaintext as ``file.read``
        would clip them."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        end = min(offset + length, self._plaintext_size)
        if offset >= end:
            return b""
        first, last = offset // self._chunk_size, (end - 1) // self._chunk_size
        out = bytearray()
        for index, plain in enumerate(self.iter_segments(first, last + 1), start=first):
            chunk_start = index * self._chunk_size
            out += plain[max(offset - chunk_start, 0) : end - chunk_start]
        return bytes(out)

    def copy_to(self, sink: BinaryIO, progress: ProgressCallback | None = None) -> int:
        total = 0
        for plain in self.iter_segments():
            sink.write(plain)
            total += len(plain)
            if progress is not None and plain:
                progress(len(plain))
        return total

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LegacyReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_chunk(self, index: int) -> memoryview:
        start = index * self._chunk_size
        chunk = self._sealed[: min(self._chunk_size, self._body.ciphertext_size - start)]
        if os.preadv(self._file.fileno(), [chunk], HEADER_SIZE + start) != len(chunk):
            raise InvalidCiphertext(self.path)
        return chunk

    def _verify(self) -> tuple[bytes, int]:
        """Pass 1: the checkpoints and the plaintext size, once the tag and padding are valid."""
        mac = hmac.HMAC(self._body.hmac_key, hashes.SHA256())
        checkpoints = bytearray()
        last_two_blocks = bytearray(self._body.iv)  # of IV ‖ ciphertext
        for index in range(self._count):
            chunk = self._read_chunk(index)
            mac.update(chunk)
            checkpoints += mac.copy().finalize()
            last_two_blocks = (last_two_blocks + chunk[-2 * BLOCK_SIZE :])[-2 * BLOCK_SIZE :]
        tag = bytearray(TAG_SIZE)
        got = os.preadv(self._file.fileno(), [tag], HEADER_SIZE + self._body.ciphertext_size)
        if got != TAG_SIZE or not compare_digest(checkpoints[-TAG_SIZE:], tag):
            raise InvalidCiphertext(self.path)
        previous, last = bytes(last_two_blocks[:BLOCK_SIZE]), bytes(last_two_blocks[BLOCK_SIZE:])
        decryptor = Cipher(algorithms.AES(self._body.aes_key), modes.CBC(previous)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            kept = unpadder.update(decryptor.update(last) + decryptor.finalize())
            kept += unpadder.finalize()
        except ValueError:
            raise InvalidCiphertext(self.path) from None
        return bytes(checkpoints), self._body.ciphertext_size - BLOCK_SIZE + len(kept)

    def _restart(self) -> None:
        self._mac = hmac.HMAC(self._body.hmac_key, hashes.SHA256())
        self._next = 0
        self._previous_block = self._body.iv

    def _advance(self) -> tuple[memoryview, bytes]:
        """Pass 2, one chunk: the next chunk, checked against its checkpoint, and its IV."""
        index = self._next
        chunk = self._read_chunk(index)
        self._mac.update(chunk)
        checkpoint = self._checkpoints[index * TAG_SIZE : (index + 1) * TAG_SIZE]
        if not compare_digest(self._mac.copy().finalize(), checkpoint):
            self._restart()
            raise InvalidCiphertext(self.path)
        iv, self._previous_block = self._previous_block, bytes(chunk[-BLOCK_SIZE:])
        self._next = index + 1
        return chunk, iv

    def _decrypt(self, index: int) -> memoryview:
        """The plaintext of chunk ``index``; the view is valid until the next call."""
        start, end = self.segment_plaintext_range(index)
        if index < self._next:
            self._restart()
        while self._next < index:
            self._advance()
        chunk, iv = self._advance()
        decryptor = Cipher(algorithms.AES(self._body.aes_key), modes.CBC(iv)).decryptor()
        decryptor.update_into(chunk, self._plain)
        decryptor.finalize()
        return self._plain[: end - start]


def encrypt_bigdl_file(
    src: Path | str,
    dst: Path | str,
    *,
    primary_key: BigDLPrimaryKey,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> None:
    """Encrypt ``src`` into ``dst`` in BigDL's legacy ``AES/CBC/PKCS5Padding`` format.

    Exists for interoperability with BigDL and for tests; it always emits an
    :class:`~ppml.errors.UnsafeWarning`. The data key is fresh: the base64 text of 32 random
    bytes (44 characters), so neither derived key is zero-padded. New data should use
    :func:`ppml.core.encrypt_file`.

    Raises:
        InputNotFound, NotAFile: ``src`` is missing or not a regular file.
        OutputExists: ``dst`` exists and ``overwrite`` is false.
        InputError: ``dst`` is ``src``.
    """
    warnings.warn(
        "writing BigDL's legacy format (AES/CBC/PKCS5Padding: the IV is not authenticated and "
        "each key has at most 96 bits of entropy); new data should use ppml's envelope format",
        UnsafeWarning,
        stacklevel=2,
    )
    src, dst = Path(src), Path(dst)
    with open_input(src) as source:
        if _same_file(src, dst):
            raise InputError(dst, "is the input file; the source is never modified")
        text = base64.b64encode(os.urandom(_NEW_DATA_KEY_BYTES))
        wrapped = _wrap_data_key_text(primary_key, text)
        header = _Header(wrapped_data_key=wrapped, iv=os.urandom(IV_SIZE))
        hmac_key, aes_key = _derive_keys(text)
        out = AtomicOutput(dst, overwrite=overwrite)
        try:
            out.file.write(header.to_bytes())
            _encrypt_body(source, out.file, header.iv, hmac_key, aes_key, progress)
            out.commit()
        except BaseException:
            out.discard()
            raise


def _encrypt_body(
    source: BinaryIO,
    sink: BinaryIO,
    iv: bytes,
    hmac_key: bytes,
    aes_key: bytes,
    progress: ProgressCallback | None,
) -> None:
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    padder = padding.PKCS7(128).padder()
    mac = hmac.HMAC(hmac_key, hashes.SHA256())
    buffer = memoryview(bytearray(CHUNK_SIZE))
    while True:
        n = source.readinto(buffer)  # type: ignore[attr-defined]
        if not n:
            break
        ciphertext = encryptor.update(padder.update(buffer[:n]))
        mac.update(ciphertext)
        sink.write(ciphertext)
        if progress is not None:
            progress(n)
    ciphertext = encryptor.update(padder.finalize()) + encryptor.finalize()
    mac.update(ciphertext)
    sink.write(ciphertext)
    sink.write(mac.finalize())
