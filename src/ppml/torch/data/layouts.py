"""The layouts of arrays and raw records inside ppml envelopes: each lets a reader compute where
record ``i`` lies in the plaintext, so any record (or a segment range's worth of them) is read by
decrypting only the segments that hold it.

**Arrays** are NumPy's ``.npy`` format (version 1.0 or 2.0) as the envelope's plaintext: the
``.npy`` header (magic ``\\x93NUMPY``, version, header length, the dict of ``descr``,
``fortran_order`` and ``shape``), then the array's bytes in C order. A record is one row along the
first axis: record ``i`` starts at ``header_size + i × record_bytes``, with ``record_bytes`` the
product of the other dimensions times the item size. The format was chosen over a layout of our
own because it describes itself (dtype and shape travel with the data) and ``ppml decrypt``
gives a file that ``numpy.load`` reads as it is. What ppml refuses in it: object dtypes (they are
pickles, and nothing stored is ever unpickled), Fortran order for more than one dimension (rows
would not be contiguous), 0-d arrays and empty records. Write with :func:`save_array`.

**Records** (any bytes: an encoded image, a serialized example) use ppml's records layout, version
1. The envelope's plaintext is (integers unsigned 64-bit little-endian)::

    record 0 ‖ record 1 ‖ … ‖ record n-1      the records' bytes, back to back
    offsets   (n + 1) × u64                   offsets[k] = where record k starts (offsets[0] = 0),
                                              offsets[n] = where this table starts
    count     u64                             n
    magic     8 bytes                         b"PPMLREC1"

The index sits at the end so records are written in one pass (the writer keeps 8 bytes per
record until it closes); a reader decrypts the last segments once to learn every record's
place. Every value is checked: the magic, ``count`` against the size, ``offsets`` starting at 0,
never decreasing and ending where the table starts. Write with :class:`RecordWriter` or
:func:`write_records`. (Text records, one per line, need no index: they are the ``text`` format
of :class:`~ppml.torch.data.TableDataset`.)
"""

from __future__ import annotations

import dataclasses
import io
import math
import struct
import sys
from array import array as _array
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Final

import numpy as np

from ppml.core._files import AtomicOutput
from ppml.core.envelope import DEFAULT_SEGMENT_SIZE, EnvelopeHeader, EnvelopeWriter
from ppml.core.keys import DataKeyProvider, GeneratedDataKey
from ppml.errors import InputError, UsageError
from ppml.torch.data.files import Segments

__all__ = [
    "RECORDS_MAGIC",
    "ArrayLayout",
    "RecordIndex",
    "RecordWriter",
    "save_array",
    "write_records",
]

RECORDS_MAGIC: Final = b"PPMLREC1"
_TRAILER = struct.Struct("<Q8s")
_NPY_MAGIC: Final = b"\x93NUMPY"
_NPY_PREFIX = 12  # magic (6), version (2), header length (2 in v1.0, 4 in v2.0)
_MAX_NPY_HEADER: Final = 1 << 20


def _fresh_key(kms: DataKeyProvider, key_id: str, segment_size: int) -> tuple[EnvelopeHeader, GeneratedDataKey]:
    generated = kms.generate_data_key(key_id)
    header = EnvelopeHeader(kms=kms.uri, key_id=generated.key_id, wrapped_data_key=generated.wrapped,
                            segment_size=segment_size)
    return header, generated


def _check_array(array: np.ndarray) -> None:
    if array.dtype.hasobject:
        raise UsageError("an array of Python objects cannot be stored: it would be a pickle")
    if array.ndim == 0:
        raise UsageError("a 0-d array has no records: give it a first axis")
    if array.dtype.itemsize == 0 or math.prod(array.shape[1:]) == 0:
        raise UsageError("the records of this array are empty (zero bytes each)")


def save_array(array: np.ndarray, path: Path | str, *, kms: DataKeyProvider, key_id: str,
               segment_size: int = DEFAULT_SEGMENT_SIZE, overwrite: bool = False) -> EnvelopeHeader:
    """Write ``array`` as ``.npy`` (C order) inside a ppml envelope at ``path`` (see the module
    docstring), under a fresh data key wrapped by ``key_id``; the file appears whole or not at all.
    A ``numpy.memmap`` is streamed from disk without a copy. Records are rows: ``array[i]``.
    A small ``segment_size`` (64 KiB, say) makes random access to single records cheaper.

    Raises:
        UsageError: an object dtype, a 0-d array, or empty records.
        OutputExists: ``path`` exists and ``overwrite`` is false.
        KeyServiceError: the key service failed or does not know ``key_id``.
    """
    _check_array(array)
    contiguous = np.ascontiguousarray(array)
    header, generated = _fresh_key(kms, key_id, segment_size)
    out = AtomicOutput(Path(path), overwrite=overwrite)
    try:
        with EnvelopeWriter(out.file, header=header, data_key=generated.data_key) as writer:
            np.lib.format.write_array(writer, contiguous, version=None, allow_pickle=False)
        out.commit()
    except BaseException:
        out.discard()
        raise
    return header


@dataclasses.dataclass(frozen=True, slots=True)
class ArrayLayout:
    """Where the records of one ``.npy`` plaintext lie: ``count`` records of ``record_shape`` and
    ``dtype``, the first at ``header_size``."""

    dtype: np.dtype
    record_shape: tuple[int, ...]
    count: int
    header_size: int

    @property
    def record_bytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.record_shape)

    def offset(self, index: int) -> int:
        """Where record ``index`` starts (``index == count``: where the data ends)."""
        return self.header_size + index * self.record_bytes

    @classmethod
    def read(cls, source: Segments, path: str) -> ArrayLayout:
        """The layout of the ``.npy`` plaintext of ``source`` (its first segment decrypted).

        Raises:
            InputError: not ``.npy``, a version other than 1.0 and 2.0, an object dtype, Fortran
                order, a 0-d array, empty records, or a size that does not match the header.
            InvalidCiphertext: the segments holding the header do not authenticate.
        """
        prefix = source.read_range(0, _NPY_PREFIX)
        if len(prefix) < _NPY_PREFIX or prefix[:6] != _NPY_MAGIC:
            raise InputError(path, "the decrypted data is not a NumPy .npy array")
        major = prefix[6]
        if major not in (1, 2):
            raise InputError(path, f".npy format version {major}.{prefix[7]}: ppml reads versions 1.0 and 2.0")
        length = int.from_bytes(prefix[8:10] if major == 1 else prefix[8:12], "little")
        header_size = (10 if major == 1 else 12) + length
        if header_size > _MAX_NPY_HEADER or header_size > source.plaintext_size:
            raise InputError(path, "the .npy header is longer than the data or than 1 MiB")
        stream = io.BytesIO(source.read_range(0, header_size))
        try:
            np.lib.format.read_magic(stream)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read_header(stream, max_header_size=_MAX_NPY_HEADER)
        except (ValueError, SyntaxError, TypeError):
            raise InputError(path, "the .npy header is malformed") from None
        if dtype.hasobject:
            raise InputError(path, "the array holds Python objects (a pickle): ppml never unpickles")
        if fortran_order and len(shape) > 1:
            raise InputError(path, "the array is in Fortran order: its rows are not contiguous records")
        if not shape or dtype.itemsize == 0 or math.prod(shape[1:]) == 0:
            raise InputError(path, "the array has no records (0-d) or empty ones")
        layout = cls(dtype=dtype, record_shape=tuple(shape[1:]), count=shape[0], header_size=header_size)
        if layout.offset(layout.count) != source.plaintext_size:
            raise InputError(path, "the .npy header does not match the size of the data")
        return layout


@dataclasses.dataclass(frozen=True, slots=True)
class RecordIndex:
    """Where the records of one records-layout plaintext lie: ``offsets`` (``count + 1`` values)."""

    offsets: np.ndarray

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def read(cls, source: Segments, path: str) -> RecordIndex:
        """The index of the records plaintext of ``source`` (its last segments decrypted).

        Raises:
            InputError: not the records layout, or an index that does not hold together.
            InvalidCiphertext: the segments holding the index do not authenticate.
        """
        size = source.plaintext_size
        if size < _TRAILER.size:
            raise InputError(path, "the decrypted data is not in ppml's records layout")
        count, magic = _TRAILER.unpack(source.read_range(size - _TRAILER.size, _TRAILER.size))
        if magic != RECORDS_MAGIC:
            raise InputError(path, "the decrypted data is not in ppml's records layout")
        index_size = (count + 1) * 8
        if count > (size - _TRAILER.size) // 8 - 1:
            raise InputError(path, "the records index is longer than the data")
        start = size - _TRAILER.size - index_size
        offsets = np.frombuffer(source.read_range(start, index_size), dtype="<u8").astype(np.int64)
        if offsets[0] != 0 or offsets[-1] != start or (count and bool(np.any(np.diff(offsets) < 0))):
            raise InputError(path, "the records index does not hold together")
        return cls(offsets=offsets)


class RecordWriter:
    """Writes byte records into one envelope in ppml's records layout (see the module docstring),
    under a fresh data key wrapped by ``key_id``. The file appears at ``path`` when the writer is
    closed, whole, or not at all if the ``with`` block fails.

    Raises (opening):
        OutputExists: ``path`` exists and ``overwrite`` is false.
        KeyServiceError: the key service failed or does not know ``key_id``.
    """

    def __init__(self, path: Path | str, *, kms: DataKeyProvider, key_id: str,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, overwrite: bool = False) -> None:
        self.header, generated = _fresh_key(kms, key_id, segment_size)
        self._out = AtomicOutput(Path(path), overwrite=overwrite)
        self._writer = EnvelopeWriter(self._out.file, header=self.header, data_key=generated.data_key)
        self._offsets = _array("Q", [0])
        self._closed = False

    @property
    def count(self) -> int:
        """Records written so far."""
        return len(self._offsets) - 1

    def write(self, record: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ValueError("write to a closed RecordWriter")
        self._writer.write(record)
        self._offsets.append(self._writer.plaintext_written)

    def close(self) -> None:
        """Write the index, seal the envelope and publish the file."""
        if self._closed:
            return
        self._closed = True
        try:
            offsets = self._offsets
            if sys.byteorder == "big":
                offsets = _array("Q", offsets)
                offsets.byteswap()
            self._writer.write(memoryview(offsets).cast("B"))
            self._writer.write(_TRAILER.pack(self.count, RECORDS_MAGIC))
            self._writer.close()
            self._out.commit()
        except BaseException:
            self._out.discard()
            raise

    def discard(self) -> None:
        """Drop what was written: no file appears."""
        if not self._closed:
            self._closed = True
            self._out.discard()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


def write_records(records: Iterable[bytes | bytearray | memoryview], path: Path | str, *,
                  kms: DataKeyProvider, key_id: str, segment_size: int = DEFAULT_SEGMENT_SIZE,
                  overwrite: bool = False) -> int:
    """Write ``records`` into one envelope in the records layout (see :class:`RecordWriter`);
    returns how many were written."""
    with RecordWriter(path, kms=kms, key_id=key_id, segment_size=segment_size, overwrite=overwrite) as writer:
        for record in records:
            writer.write(record)
        return writer.count
