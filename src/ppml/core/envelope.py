"""The ppml envelope format, version 1: one data key per file, wrapped by a KMS primary key.

Byte layout (all integers big-endian; every length is checked against its bound before use)::

    offset  size  field
    ------  ----  -----------------------------------------------------------------
         0     4  magic                 b"PPML"
         4     1  version               0x01
         5     4  header length N       total bytes of this header, magic included
         9     1  algorithm             0x01 = AES256_GCM_HKDF_SHA256 (Tink streaming)
        10     4  segment size S        ciphertext bytes per body segment, 4 KiB .. 64 MiB
        14   2+k  kms                   uint16 length k ≤ 2048, UTF-8: the key service's URI,
                                        without credentials (informational: never dialled)
         .   2+i  key id                uint16 length 1 ≤ i ≤ 512, UTF-8: the primary key's id
         .   2+w  wrapped data key      uint16 length 1 ≤ w ≤ 8192: opaque, made by that KMS
         .   2+a  associated data       uint16 length a ≤ 65535: the caller's, authenticated
    N = 22 + k + i + w + a
         N     -  body                  Tink AES-GCM-HKDF streaming ciphertext
                                        (see ppml.core._streaming) keyed by the 32-byte data
                                        key, with the N header bytes as associated data

Because the header is the body's associated data, changing any header byte (the key id, the
algorithm, the segment size, the user's associated data) makes the first segment fail to
authenticate. Any plaintext byte range can be decrypted by reading only the segments covering it
(:meth:`EnvelopeReader.read_range`), which is how one large file splits across Spark tasks.

The public recipes are :func:`encrypt_file` and :func:`decrypt_file`; output is written to a
temporary name beside the destination and renamed into place only after the last segment was
written (encrypt) or verified (decrypt), so a failure leaves no partial output.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from ppml.core import _streaming
from ppml.core._files import AtomicOutput, AtomicSink, Readable, open_input, read_exactly
from ppml.core.keys import SECRET_ACCESS, DataKey, DataKeyProvider, GeneratedDataKey
from ppml.core.random_access import LocalInput, RandomAccessInput, SequentialView
from ppml.errors import InvalidCiphertext, KeyNotFound, NotAnEnvelope

__all__ = [
    "ALGORITHM_AES256_GCM_HKDF_STREAMING",
    "DEFAULT_SEGMENT_SIZE",
    "MAGIC",
    "EnvelopeHeader",
    "EnvelopeReader",
    "EnvelopeWriter",
    "decrypt_bytes",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_file",
    "encrypt_stream",
    "is_envelope",
]

MAGIC: Final = b"PPML"
VERSION: Final = 1
ALGORITHM_AES256_GCM_HKDF_STREAMING: Final = 1
DEFAULT_SEGMENT_SIZE: Final = 1 << 20
MIN_SEGMENT_SIZE: Final = 4 << 10
MAX_SEGMENT_SIZE: Final = 64 << 20
_PREFIX = struct.Struct(">4sBIBI")
_LEN = struct.Struct(">H")
_MAX_KMS, _MAX_KEY_ID, _MAX_WRAPPED, _MAX_AAD = 2048, 512, 8192, 65535
MAX_HEADER_SIZE: Final = _PREFIX.size + 4 * _LEN.size + _MAX_KMS + _MAX_KEY_ID + _MAX_WRAPPED + _MAX_AAD

ProgressCallback = Callable[[int], None]
"""Called with the number of plaintext bytes just processed."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeHeader:
    """The parsed header of a ppml envelope file (see the module docstring for its layout)."""

    kms: str
    key_id: str
    wrapped_data_key: bytes
    segment_size: int = DEFAULT_SEGMENT_SIZE
    associated_data: bytes = b""
    algorithm: int = ALGORITHM_AES256_GCM_HKDF_STREAMING

    def __post_init__(self) -> None:
        if self.algorithm != ALGORITHM_AES256_GCM_HKDF_STREAMING:
            raise ValueError(f"unknown algorithm {self.algorithm}")
        if not MIN_SEGMENT_SIZE <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment size must be in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
        for name, value, low, high in (
            ("kms", self.kms.encode(), 0, _MAX_KMS),
            ("key id", self.key_id.encode(), 1, _MAX_KEY_ID),
            ("wrapped data key", self.wrapped_data_key, 1, _MAX_WRAPPED),
            ("associated data", self.associated_data, 0, _MAX_AAD),
        ):
            if not low <= len(value) <= high:
                raise ValueError(f"{name} must have {low}..{high} bytes, has {len(value)}")

    def to_bytes(self) -> bytes:
        fields = [self.kms.encode(), self.key_id.encode(), self.wrapped_data_key, self.associated_data]
        body = b"".join(_LEN.pack(len(f)) + f for f in fields)
        total = _PREFIX.size + len(body)
        return _PREFIX.pack(MAGIC, VERSION, total, self.algorithm, self.segment_size) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> EnvelopeHeader:
        """Parse a complete header; raise InvalidCiphertext (or NotAnEnvelope) if malformed."""
        if data[:4] != MAGIC:
            raise NotAnEnvelope()
        if len(data) < _PREFIX.size:
            raise InvalidCiphertext()
        _, version, total, algorithm, segment_size = _PREFIX.unpack_from(data)
        if version != VERSION or total != len(data):
            raise InvalidCiphertext()
        fields: list[bytes] = []
        offset = _PREFIX.size
        for _ in range(4):
            if offset + _LEN.size > total:
                raise InvalidCiphertext()
            (length,) = _LEN.unpack_from(data, offset)
            offset += _LEN.size
            if offset + length > total:
                raise InvalidCiphertext()
            fields.append(bytes(data[offset : offset + length]))
            offset += length
        if offset != total:
            raise InvalidCiphertext()
        try:
            return cls(
                kms=fields[0].decode(),
                key_id=fields[1].decode(),
                wrapped_data_key=fields[2],
                associated_data=fields[3],
                segment_size=segment_size,
                algorithm=algorithm,
            )
        except (ValueError, UnicodeDecodeError):
            raise InvalidCiphertext() from None

    @classmethod
    def read_from(cls, raw: Readable) -> tuple[EnvelopeHeader, bytes]:
        """Read and parse the header at the current position; returns it and its exact bytes."""
        prefix = read_exactly(raw, _PREFIX.size)
        if len(prefix) < 4 or prefix[:4] != MAGIC:
            raise NotAnEnvelope()
        if len(prefix) < _PREFIX.size:
            raise InvalidCiphertext()
        total = _PREFIX.unpack(prefix)[2]
        if not _PREFIX.size < total <= MAX_HEADER_SIZE:
            raise InvalidCiphertext()
        data = prefix + read_exactly(raw, total - _PREFIX.size)
        if len(data) != total:
            raise InvalidCiphertext()
        return cls.from_bytes(data), data


def is_envelope(path: Path | str) -> bool:
    """True if the file starts with ppml's magic bytes (nothing is verified)."""
    with open_input(Path(path)) as f:
        return f.read(len(MAGIC)) == MAGIC


class EnvelopeWriter:
    """Encrypts a stream into a ppml envelope, in bounded memory (two segments of buffers).

    Write plaintext with :meth:`write` or, faster (no copy), :meth:`copy_from`; then
    :meth:`close`, which seals the final segment. Closing the writer does not close ``raw``.
    """

    def __init__(self, raw: BinaryIO, *, header: EnvelopeHeader, data_key: DataKey) -> None:
        header_bytes = header.to_bytes()
        self._raw = raw
        self._encrypter = _streaming.SegmentEncrypter(
            data_key.export(SECRET_ACCESS), header_bytes, header.segment_size
        )
        layout = self._encrypter.layout
        self._buffers = (bytearray(layout.plaintext), bytearray(layout.plaintext))
        self._current = 0
        self._filled = 0
        self._capacity = layout.first_plaintext
        self._out = memoryview(bytearray(layout.segment_size))
        self._closed = False
        self.plaintext_written = 0
        raw.write(header_bytes)
        raw.write(self._encrypter.stream_header)

    def _seal_current(self, *, last: bool) -> None:
        view = memoryview(self._buffers[self._current])[: self._filled]
        self._raw.write(self._encrypter.seal_into(view, last, self._out))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed EnvelopeWriter")
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            if self._filled == self._capacity:
                self._seal_current(last=False)
                self._filled = 0
                self._capacity = self._encrypter.layout.plaintext
            n = min(len(view), self._capacity - self._filled)
            self._buffers[self._current][self._filled : self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
        self.plaintext_written += total
        return total

    def copy_from(self, source: BinaryIO, progress: ProgressCallback | None = None) -> int:
        """Encrypt everything ``source`` yields until EOF, reading straight into the buffers."""
        if self._closed:
            raise ValueError("write to a closed EnvelopeWriter")
        readinto = source.readinto  # type: ignore[attr-defined]
        total = 0
        while True:
            if self._filled == self._capacity:
                # The current segment is full; it is the last one only if the source is done,
                # so look ahead into the other buffer before sealing it.
                other = self._buffers[1 - self._current]
                n = readinto(memoryview(other))
                if not n:
                    break
                self._seal_current(last=False)
                self._current = 1 - self._current
                self._filled = n
                self._capacity = self._encrypter.layout.plaintext
            else:
                n = readinto(memoryview(self._buffers[self._current])[self._filled : self._capacity])
                if not n:
                    break
                self._filled += n
            total += n
            if progress is not None:
                progress(n)
        self.plaintext_written += total
        return total

    def close(self) -> None:
        if not self._closed:
            self._seal_current(last=True)
            self._closed = True

    def __enter__(self) -> EnvelopeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


class EnvelopeReader:
    """Random-access, verified reads of one ppml envelope file.

    ``source`` is a local path, or a :class:`~ppml.core.random_access.RandomAccessInput` opened
    by the caller (an object in S3, say), which the reader then owns and closes. Opening reads
    and parses the header and asks ``kms`` to unwrap the data key. A local file is read with
    ``os.preadv`` into reused buffers, so one reader may serve many ranges without seeking.
    """

    def __init__(
        self,
        source: Path | str | RandomAccessInput,
        *,
        kms: DataKeyProvider,
        associated_data: bytes | None = None,
    ) -> None:
        self._input: RandomAccessInput = (
            LocalInput(source) if isinstance(source, (Path, str)) else source
        )
        self.name = self._input.name
        """Where the file is (a path or a URL): what errors name."""
        self.path = Path(self.name)
        """The local path (kept for callers of local files; a URL does not survive ``Path``)."""
        try:
            stream = SequentialView(self._input)
            try:
                self.header, header_bytes = EnvelopeHeader.read_from(stream)
            except InvalidCiphertext as exc:
                raise type(exc)(self.name) from None
            if associated_data is not None and associated_data != self.header.associated_data:
                raise InvalidCiphertext(self.name)
            size = self._input.size()
            self._body_offset = len(header_bytes)
            stream_header = read_exactly(stream, _streaming.HEADER_SIZE)
            data_key = _unwrap(kms, self.header, self.name)
            try:
                self._decrypter = _streaming.SegmentDecrypter(
                    data_key.export(SECRET_ACCESS),
                    header_bytes,
                    self.header.segment_size,
                    stream_header,
                    size - self._body_offset,
                )
            except InvalidCiphertext:
                raise InvalidCiphertext(self.name) from None
        except BaseException:
            self._input.close()
            raise
        layout = self._decrypter.layout
        self._sealed = memoryview(bytearray(layout.segment_size))
        self._plain = memoryview(bytearray(layout.plaintext))

    @property
    def plaintext_size(self) -> int:
        return self._decrypter.plaintext_size

    @property
    def segment_count(self) -> int:
        return self._decrypter.segment_count

    def segment_plaintext_range(self, index: int) -> tuple[int, int]:
        """(start, end) plaintext offsets covered by segment ``index``."""
        layout = self._decrypter.layout
        start = layout.plaintext_start(index)
        end = min(start + (layout.first_plaintext if index == 0 else layout.plaintext), self.plaintext_size)
        return start, end

    def _segment(self, index: int) -> memoryview:
        """Decrypt segment ``index``; the view is valid until the next call."""
        return self._plain[: self.read_segment_into(index, self._plain)]

    def read_segment_into(self, index: int, out: memoryview) -> int:
        """Decrypt and verify segment ``index`` into the start of ``out``; returns its plaintext
        length (see :meth:`segment_plaintext_range`). Decrypting in place saves the copy out of
        :meth:`iter_segments`' buffer. If the segment fails to verify, the bytes it wrote to
        ``out`` are zeroed before InvalidCiphertext is raised.

        Raises:
            InvalidCiphertext: the segment is missing, short, or does not authenticate.
            ValueError: ``out`` is too small for the segment's plaintext.
        """
        start, length = self._decrypter.layout.segment_span(index, self._decrypter.ciphertext_size)
        if len(out) < length - _streaming.TAG_SIZE:
            raise ValueError("the output buffer is smaller than the segment's plaintext")
        sealed = self._sealed[: max(length, 0)]
        got = self._input.read_into(sealed, self._body_offset + start)
        if got != length:
            raise InvalidCiphertext(self.name)
        try:
            return len(self._decrypter.open_into(index, sealed, out))
        except InvalidCiphertext:
            raise InvalidCiphertext(self.name) from None

    def iter_segments(self, first: int = 0, stop: int | None = None) -> Iterator[memoryview]:
        """Yield the verified plaintext of segments ``first`` .. ``stop``-1 (views are reused)."""
        stop = self.segment_count if stop is None else stop
        for index in range(first, stop):
            yield self._segment(index)

    def read_range(self, offset: int, length: int) -> bytes:
        """Plaintext bytes ``[offset, offset+length)``, reading and verifying only their segments.

        A range past the end is clipped to the plaintext, as ``file.read`` would.
        """
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        end = min(offset + length, self.plaintext_size)
        if offset >= end:
            return b""
        layout = self._decrypter.layout
        first, last = layout.segment_of(offset), layout.segment_of(end - 1)
        out = bytearray()
        for index, plain in enumerate(self.iter_segments(first, last + 1), start=first):
            seg_start = layout.plaintext_start(index)
            lo = max(offset - seg_start, 0)
            hi = min(end - seg_start, len(plain))
            out += plain[lo:hi]
        return bytes(out)

    def copy_to(self, sink: BinaryIO, progress: ProgressCallback | None = None) -> int:
        total = 0
        for plain in self.iter_segments():
            sink.write(plain)
            total += len(plain)
            if progress is not None:
                progress(len(plain))
        return total

    def close(self) -> None:
        self._input.close()

    def __enter__(self) -> EnvelopeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unwrap(kms: DataKeyProvider, header: EnvelopeHeader, path: str | None) -> DataKey:
    try:
        return kms.unwrap_data_key(header.key_id, header.wrapped_data_key)
    except KeyNotFound as exc:
        # An unknown key id is what a tampered header looks like too, so it is reported as
        # InvalidCiphertext; the hint still says which key was looked up where.
        error = InvalidCiphertext(path)
        error.hint = (
            f"no key {header.key_id!r} in {exc.kms or kms.uri}; the file names key service "
            f"{header.kms!r}: pass the right --kms"
        )
        raise error from None
    except InvalidCiphertext:
        raise InvalidCiphertext(path) from None


def _fresh_header(
    kms: DataKeyProvider, key_id: str, segment_size: int, associated_data: bytes
) -> tuple[EnvelopeHeader, GeneratedDataKey]:
    """A new data key under ``key_id`` and the header that carries it wrapped."""
    generated = kms.generate_data_key(key_id)
    header = EnvelopeHeader(
        kms=kms.uri,
        key_id=generated.key_id,
        wrapped_data_key=generated.wrapped,
        segment_size=segment_size,
        associated_data=associated_data,
    )
    return header, generated


def encrypt_file(
    src: Path | str,
    dst: Path | str,
    *,
    kms: DataKeyProvider,
    key_id: str,
    associated_data: bytes = b"",
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> EnvelopeHeader:
    """Encrypt ``src`` into ``dst`` under a fresh data key wrapped by ``key_id`` in ``kms``.

    Raises:
        InputNotFound, NotAFile: ``src`` is missing or not a regular file.
        OutputExists: ``dst`` exists and ``overwrite`` is false.
        KeyServiceError: the key service failed or does not know ``key_id``.
    """
    dst = Path(dst)
    with open_input(Path(src)) as source:
        return encrypt_stream(
            source, lambda: AtomicOutput(dst, overwrite=overwrite), kms=kms, key_id=key_id,
            associated_data=associated_data, segment_size=segment_size, progress=progress,
        )


def encrypt_stream(
    source: BinaryIO,
    output: Callable[[], AtomicSink],
    *,
    kms: DataKeyProvider,
    key_id: str,
    associated_data: bytes = b"",
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    progress: ProgressCallback | None = None,
) -> EnvelopeHeader:
    """Encrypt everything ``source`` yields (it needs ``readinto``) into the sink ``output()``
    makes once the data key exists; the sink is committed after the last segment, discarded on
    any failure. :func:`encrypt_file` is this with a local file and a local atomic output.
    """
    header, generated = _fresh_header(kms, key_id, segment_size, associated_data)
    out = output()
    try:
        with EnvelopeWriter(out.file, header=header, data_key=generated.data_key) as writer:
            writer.copy_from(source, progress)
        out.commit()
    except BaseException:
        out.discard()
        raise
    return header


def decrypt_file(
    src: Path | str,
    dst: Path | str,
    *,
    kms: DataKeyProvider,
    associated_data: bytes | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> EnvelopeHeader:
    """Decrypt the ppml envelope ``src`` into ``dst``, which appears only once fully verified.

    Raises:
        InvalidCiphertext: wrong key, or ``src`` was altered, truncated or extended.
        NotAnEnvelope: ``src`` is not a ppml file.
    """
    dst = Path(dst)
    return decrypt_stream(
        LocalInput(src), lambda: AtomicOutput(dst, overwrite=overwrite), kms=kms,
        associated_data=associated_data, progress=progress,
    )


def decrypt_stream(
    source: RandomAccessInput,
    output: Callable[[], AtomicSink],
    *,
    kms: DataKeyProvider,
    associated_data: bytes | None = None,
    progress: ProgressCallback | None = None,
) -> EnvelopeHeader:
    """Decrypt the envelope ``source`` (which this closes) into the sink ``output()`` makes
    once the key is unwrapped; the sink is committed only after the last segment verified,
    discarded on any failure. :func:`decrypt_file` is this with local files.

    Raises:
        InvalidCiphertext: wrong key, or ``source`` was altered, truncated or extended.
        NotAnEnvelope: ``source`` is not a ppml file.
    """
    with EnvelopeReader(source, kms=kms, associated_data=associated_data) as reader:
        out = output()
        try:
            reader.copy_to(out.file, progress)
            out.commit()
        except BaseException:
            out.discard()
            raise
        return reader.header


def encrypt_bytes(
    plaintext: bytes,
    *,
    kms: DataKeyProvider,
    key_id: str,
    associated_data: bytes = b"",
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> bytes:
    """Encrypt an in-memory value into a complete envelope (small data; files use encrypt_file)."""
    header, generated = _fresh_header(kms, key_id, segment_size, associated_data)
    sink = io.BytesIO()
    with EnvelopeWriter(sink, header=header, data_key=generated.data_key) as writer:
        writer.write(plaintext)
    return sink.getvalue()


def decrypt_bytes(
    envelope: bytes, *, kms: DataKeyProvider, associated_data: bytes | None = None
) -> bytes:
    """Decrypt a complete in-memory envelope."""
    raw = io.BytesIO(envelope)
    header, header_bytes = EnvelopeHeader.read_from(raw)
    if associated_data is not None and associated_data != header.associated_data:
        raise InvalidCiphertext()
    data_key = _unwrap(kms, header, None)
    body = memoryview(envelope)[len(header_bytes) :]
    decrypter = _streaming.SegmentDecrypter(
        data_key.export(SECRET_ACCESS),
        header_bytes,
        header.segment_size,
        bytes(body[: _streaming.HEADER_SIZE]),
        len(body),
    )
    layout = decrypter.layout
    out = bytearray(decrypter.plaintext_size)
    view = memoryview(out)
    for index in range(decrypter.segment_count):
        start, length = layout.segment_span(index, len(body))
        pt_start = layout.plaintext_start(index)
        decrypter.open_into(index, body[start : start + length], view[pt_start:])
    return bytes(out)
