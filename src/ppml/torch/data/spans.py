"""The records a range of segments owns, read in blocks: how an iterable dataset over arrays or raw
records reads its pieces, decrypting each segment once.

A range of segments ``[first, stop)`` covers plaintext ``[start, end)`` and owns the records whose
first byte lies in it, so consecutive ranges own disjoint records whose union is every record
(the rule :mod:`ppml.tabular.splits` applies to lines). The range's segments are all decrypted
(each is verified, whether or not a record starts in it), then the following ones only until its
last record ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from ppml.errors import InvalidCiphertext
from ppml.torch.data.files import Segments
from ppml.torch.data.layouts import ArrayLayout, RecordIndex

__all__ = ["Bounds", "FixedBounds", "IndexedBounds", "iter_record_blocks"]


class Bounds(Protocol):
    """Where the records of one file lie in its plaintext."""

    @property
    def count(self) -> int: ...

    def offset(self, index: int) -> int:
        """Where record ``index`` starts; ``offset(count)`` is where the last one ends."""
        ...

    def owned(self, start: int, end: int) -> tuple[int, int]:
        """``(first, stop)``: the records whose first byte lies in ``[start, end)``."""
        ...

    def complete(self, end: int) -> int:
        """How many records end at or before ``end``."""
        ...


class FixedBounds:
    """Records of ``record_bytes`` each, the first at ``header_size`` (an array's rows)."""

    def __init__(self, layout: ArrayLayout) -> None:
        self.count = layout.count
        self._header = layout.header_size
        self._size = layout.record_bytes

    def offset(self, index: int) -> int:
        return self._header + index * self._size

    def _records_before(self, position: int) -> int:
        """Records starting before ``position``."""
        return min(max(-(-(position - self._header) // self._size), 0), self.count)

    def owned(self, start: int, end: int) -> tuple[int, int]:
        return self._records_before(start), self._records_before(end)

    def complete(self, end: int) -> int:
        return min(max((end - self._header) // self._size, 0), self.count)


class IndexedBounds:
    """Records where an index says (raw records)."""

    def __init__(self, index: RecordIndex) -> None:
        self.count = index.count
        self._offsets = index.offsets

    def offset(self, index: int) -> int:
        return int(self._offsets[index])

    def owned(self, start: int, end: int) -> tuple[int, int]:
        starts = self._offsets[:-1]
        return int(np.searchsorted(starts, start, "left")), int(np.searchsorted(starts, end, "left"))

    def complete(self, end: int) -> int:
        return int(np.searchsorted(self._offsets[1:], end, "right"))


def iter_record_blocks(source: Segments, first: int, stop: int, bounds: Bounds, *,
                       block_bytes: int) -> Iterator[tuple[int, int, bytearray]]:
    """``(first record, record count, their bytes)`` for the records that segments ``first`` ..
    ``stop``-1 of ``source`` own, in blocks of about ``block_bytes`` (at least one record each).
    Each block is a ``bytearray`` of its own; memory is about one block and two segments.

    Segments are decrypted straight onto the end of a buffer; a block is that buffer, cut after
    its last whole record, and only the bytes after the cut (less than a segment) are copied on.

    Raises:
        InvalidCiphertext: a segment does not authenticate.
    """
    start = source.segment_plaintext_range(first)[0]
    end = source.segment_plaintext_range(stop - 1)[1]
    owned_first, owned_stop = bounds.owned(start, end)
    # Segment `first + 1` is full-size unless it is the last, and then nothing follows it.
    largest = max(hi - lo for lo, hi in map(source.segment_plaintext_range,
                                            range(first, min(first + 2, source.segment_count))))
    capacity = block_bytes + 2 * largest
    buffer = bytearray(capacity)
    filled = 0
    base = start  # the plaintext offset of buffer[0]
    next_record = owned_first
    segment = first
    while segment < stop or next_record < owned_stop:
        if segment >= source.segment_count:
            raise InvalidCiphertext(source.name)  # shorter than its records say
        low, high = source.segment_plaintext_range(segment)
        if filled + high - low > len(buffer):
            grown = bytearray(max(2 * len(buffer), filled + high - low))
            grown[:filled] = memoryview(buffer)[:filled]
            buffer = grown
        with memoryview(buffer) as view:
            length = source.read_segment_into(segment, view[filled : filled + high - low])
        if length != high - low:
            raise InvalidCiphertext(source.name)
        filled += length
        wanted = bounds.offset(next_record)
        if base < wanted:  # bytes before the next record (a header, or a record another piece owns)
            drop = min(filled, wanted - base)
            buffer[: filled - drop] = buffer[drop:filled]
            filled -= drop
            base += drop
        done = min(owned_stop, bounds.complete(high))
        if done > next_record and (done == owned_stop or bounds.offset(done) - base >= block_bytes):
            cut = bounds.offset(done) - base
            block, tail = buffer, filled - cut
            buffer = bytearray(max(capacity, tail))
            buffer[:tail] = memoryview(block)[cut:filled]
            del block[cut:]
            yield next_record, done - next_record, block
            next_record, base, filled = done, base + cut, tail
        segment += 1
