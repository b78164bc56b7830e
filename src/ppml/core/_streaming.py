"""HAZMAT: Tink's AES-GCM-HKDF streaming AEAD, segment by segment.

Do not call this module from outside ``ppml.core``: it performs no framing checks beyond its own
format and leaves key handling, header binding and output atomicity to
:mod:`ppml.core.envelope`. Misusing it (reusing a stream header, mislabelling the last segment,
skipping a segment) silently loses the guarantees the envelope format gives.

The ciphertext this produces is byte for byte Tink's ``AesGcmHkdfStreaming`` (key size 32,
HKDF-SHA256, ciphertext offset 0), so Tink in any language decrypts it given the same 32-byte key
and associated data::

    stream header (H = 1 + 32 + 7 = 40 bytes)
      0   1   header length H (0x28)
      1  32   salt            random per stream
     33   7   nonce prefix    random per stream
    segment 0   (S - H bytes when not last): AES-256-GCM(k, nonce(0), pt[0:S-H-16])   ‖ tag
    segment i>0 (S bytes when not last):     AES-256-GCM(k, nonce(i), next S-16 bytes) ‖ tag
    the last segment is shorter (or full), never empty unless the plaintext is empty

    k        = HKDF-SHA256(ikm=data key, salt=salt, info=associated data, length=32)
    nonce(i) = nonce prefix (7) ‖ uint32_be(i) ‖ 0x01 if segment i is the last else 0x00

Segment boundaries follow from the total ciphertext length alone, so a reader can decrypt any
segment independently (random access) while truncation, extension and reordering still fail:
the final segment is bound by its flag and every segment by its index.
"""

from __future__ import annotations

import os
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppml.errors import InvalidCiphertext

KEY_SIZE: Final = 32
NONCE_PREFIX_SIZE: Final = 7
TAG_SIZE: Final = 16
HEADER_SIZE: Final = 1 + KEY_SIZE + NONCE_PREFIX_SIZE
MAX_SEGMENTS: Final = 2**32
_SEGMENT_INDEX = struct.Struct(">IB")


def derive_key(ikm: bytes, salt: bytes, associated_data: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=associated_data)
    return AESGCM(hkdf.derive(ikm))


class Layout:
    """Where segments lie for one ciphertext segment size ``S``."""

    __slots__ = ("first_plaintext", "plaintext", "segment_size")

    def __init__(self, segment_size: int) -> None:
        if segment_size <= HEADER_SIZE + TAG_SIZE:
            raise ValueError("segment size too small")
        self.segment_size = segment_size
        self.first_plaintext = segment_size - HEADER_SIZE - TAG_SIZE
        self.plaintext = segment_size - TAG_SIZE

    def ciphertext_size(self, plaintext_size: int) -> int:
        return HEADER_SIZE + plaintext_size + TAG_SIZE * self.segment_count_for_plaintext(
            plaintext_size
        )

    def segment_count_for_plaintext(self, plaintext_size: int) -> int:
        if plaintext_size <= self.first_plaintext:
            return 1
        rest = plaintext_size - self.first_plaintext
        return 1 + -(-rest // self.plaintext)

    def segment_count(self, ciphertext_size: int) -> int:
        """Number of segments in a ciphertext of this size, or raise InvalidCiphertext."""
        if ciphertext_size < HEADER_SIZE + TAG_SIZE:
            raise InvalidCiphertext()
        full, remainder = divmod(ciphertext_size, self.segment_size)
        if remainder == 0:
            count = full
        else:
            if remainder < TAG_SIZE or (full == 0 and remainder < HEADER_SIZE + TAG_SIZE):
                raise InvalidCiphertext()
            count = full + 1
        if count > MAX_SEGMENTS:
            raise InvalidCiphertext()
        return count

    def segment_span(self, index: int, ciphertext_size: int) -> tuple[int, int]:
        """(start, length) of segment ``index``'s ciphertext within the stream."""
        start = HEADER_SIZE if index == 0 else index * self.segment_size
        end = min((index + 1) * self.segment_size, ciphertext_size)
        return start, end - start

    def plaintext_start(self, index: int) -> int:
        return 0 if index == 0 else self.first_plaintext + (index - 1) * self.plaintext

    def segment_of(self, plaintext_offset: int) -> int:
        if plaintext_offset < self.first_plaintext:
            return 0
        return 1 + (plaintext_offset - self.first_plaintext) // self.plaintext


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + _SEGMENT_INDEX.pack(index, 1 if last else 0)


class SegmentEncrypter:
    """Encrypts the segments of one stream, in order. Not reusable."""

    def __init__(self, ikm: bytes, associated_data: bytes, segment_size: int) -> None:
        self.layout = Layout(segment_size)
        salt = os.urandom(KEY_SIZE)
        self._prefix = os.urandom(NONCE_PREFIX_SIZE)
        self._aead = derive_key(ikm, salt, associated_data)
        self.stream_header = bytes([HEADER_SIZE]) + salt + self._prefix
        self._next = 0
        self._closed = False

    def capacity(self, index: int) -> int:
        return self.layout.first_plaintext if index == 0 else self.layout.plaintext

    @property
    def next_index(self) -> int:
        return self._next

    def seal_into(self, plaintext: memoryview, last: bool, out: memoryview) -> memoryview:
        """Encrypt the next segment into ``out``; returns the part of ``out`` written."""
        if self._closed:
            raise ValueError("stream already finished")
        index = self._next
        if len(plaintext) > self.capacity(index) or (not last and len(plaintext) != self.capacity(index)):
            raise ValueError("segment of wrong size")
        if index >= MAX_SEGMENTS:
            raise ValueError("too many segments")
        sealed = out[: len(plaintext) + TAG_SIZE]
        self._aead.encrypt_into(_nonce(self._prefix, index, last), plaintext, None, sealed)
        self._next = index + 1
        self._closed = last
        return sealed


class SegmentDecrypter:
    """Decrypts any segment of one stream, given the stream header and total ciphertext size."""

    def __init__(
        self, ikm: bytes, associated_data: bytes, segment_size: int, stream_header: bytes,
        ciphertext_size: int,
    ) -> None:
        self.layout = Layout(segment_size)
        if len(stream_header) != HEADER_SIZE or stream_header[0] != HEADER_SIZE:
            raise InvalidCiphertext()
        self.ciphertext_size = ciphertext_size
        self.segment_count = self.layout.segment_count(ciphertext_size)
        self._prefix = bytes(stream_header[1 + KEY_SIZE :])
        self._aead = derive_key(ikm, bytes(stream_header[1 : 1 + KEY_SIZE]), associated_data)
        _last_start, last_length = self.layout.segment_span(self.segment_count - 1, ciphertext_size)
        self.plaintext_size = (
            self.layout.plaintext_start(self.segment_count - 1) + last_length - TAG_SIZE
        )

    def open_into(self, index: int, sealed: memoryview, out: memoryview) -> memoryview:
        """Decrypt segment ``index`` from ``sealed`` into ``out``; returns the plaintext view.
        On failure the plaintext part of ``out`` is zeroed: decryption writes before the tag is
        checked, and unverified plaintext must not be left where a caller might read it."""
        if not 0 <= index < self.segment_count:
            raise InvalidCiphertext()
        length = len(sealed) - TAG_SIZE
        if length < 0:
            raise InvalidCiphertext()
        plain = out[:length]
        try:
            self._aead.decrypt_into(
                _nonce(self._prefix, index, index == self.segment_count - 1), sealed, None, plain
            )
        except InvalidTag:
            plain[:] = bytes(length)
            raise InvalidCiphertext() from None
        return plain
