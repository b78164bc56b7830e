"""Input splits of ppml envelope files, and which lines each split owns. Pure functions, no Spark.

Planning. A file is cut into plaintext byte ranges ``[start, end)`` that fall on segment
boundaries of its envelope (see :mod:`ppml.core.envelope`), about ``max_split_bytes`` each. Only
the header and the file size are needed: the plaintext size follows from the ciphertext size and
the segment size, so the driver plans without unwrapping a key. Every segment of a file lies in
exactly one split, and every split is decrypted (an empty file gives one empty split whose only
segment is still verified), so a truncated or tampered file cannot go unnoticed by skipping it.

Lines. Records of line-oriented formats (csv, json lines, text) may cross split boundaries. A
split owns the lines that *start* in it, following Hadoop's ``LineRecordReader``: with
``p`` a line start (0, or one past a ``\\n``, and before the end of the file)::

    split [s, e), s == 0, no header      owns lines with  0 <= p <= e
    split [s, e), s > 0 (or a header)    owns lines with  s <  p <= e

that is, a split that starts inside the file skips up to and including the first ``\\n`` at or
after ``s``, then reads every line that starts at or before ``e``, past ``e`` to finish the
last one. Consecutive splits ``[s, e)``, ``[e, f)`` therefore own disjoint line sets whose union
is every line: each record is read exactly once. Only ``\\n`` ends a line; a ``\\r`` before it
stays in the bytes (the parsers treat ``\\r\\n`` as one line end). The CSV header is the first
line of split 0, which skips it like any later split skips its partial first line.

Blocks. :func:`iter_owned_blocks` hands a split's lines over in blocks of about
``block_bytes`` (16 MiB by default), each cut after a ``\\n``, so a task parses and ships one
block while it holds only that block, not its whole split; :func:`read_owned_lines` is the same
lines in one buffer.

Split size. :func:`max_split_bytes` is Spark's rule for its own file sources
(``FilePartition.maxSplitBytes``): ``min(maxPartitionBytes, max(openCost, bytesPerCore))`` with
``bytesPerCore = (input bytes + openCost per file) / minPartitions``, so a 145 MiB file read by
2 cores gives 2 tasks of about 75 MiB rather than one of 128 MiB and one of 17 MiB.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from ppml.core import _streaming
from ppml.core.envelope import EnvelopeHeader
from ppml.core.random_access import SequentialView
from ppml.errors import InvalidCiphertext, NotAnEnvelope
from ppml.filesystem import LocalStorage, Storage

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_MAX_SPLIT_BYTES",
    "DEFAULT_OPEN_COST_BYTES",
    "FileSplit",
    "SegmentSource",
    "envelope_plaintext_size",
    "input_files",
    "iter_owned_blocks",
    "list_input_files",
    "max_split_bytes",
    "pack_splits",
    "plan_envelope_splits",
    "plan_ranges",
    "read_owned_lines",
]

DEFAULT_MAX_SPLIT_BYTES = 128 << 20
"""Spark's ``spark.sql.files.maxPartitionBytes`` default."""
DEFAULT_OPEN_COST_BYTES = 4 << 20
"""Spark's ``spark.sql.files.openCostInBytes`` default: what packing charges per file."""
DEFAULT_BLOCK_BYTES = 16 << 20
"""About how much plaintext :func:`iter_owned_blocks` puts in one block: enough for PyArrow to
parse in parallel, and (with a segment or two of slack) below glibc's largest mmap threshold
(32 MiB), so block buffers come from the heap rather than fresh, page-faulted mappings (measured:
16 MiB buffers cost 8 ms per 128 MiB, 32 MiB ones 100 ms)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FileSplit:
    """Plaintext bytes ``[start, end)`` of ``path``, covering segments ``first_segment`` ..
    ``stop_segment``-1; ``file_size`` is the file's plaintext size as planned."""

    path: str
    start: int
    end: int
    first_segment: int
    stop_segment: int
    file_size: int

    @property
    def size(self) -> int:
        return self.end - self.start


class SegmentSource(Protocol):
    """What :func:`iter_owned_blocks` needs of a file: :class:`~ppml.core.envelope.EnvelopeReader`
    and :class:`~ppml.core.legacy.LegacyReader` are two; tests use an in-memory fake."""

    @property
    def plaintext_size(self) -> int: ...

    @property
    def segment_count(self) -> int: ...

    def segment_plaintext_range(self, index: int) -> tuple[int, int]: ...

    def read_segment_into(self, index: int, out: memoryview) -> int: ...


def list_input_files(path: Path | str) -> list[Path]:
    """``path`` itself if it is a file; else every regular file below it, sorted, skipping any
    name (file or directory) that starts with ``.`` or ``_`` (``_SUCCESS``, ``_temporary``,
    hidden in-progress files), as Spark's file sources do. Local paths; :func:`input_files`
    lists any storage.

    Raises:
        InputNotFound: ``path`` does not exist.
    """
    return [Path(entry.path) for entry in LocalStorage().list_files(str(path))]


def input_files(path: str, storage: Storage) -> list[str]:
    """The data files of ``path`` in ``storage`` (local or S3), as :func:`list_input_files`
    picks them."""
    return [entry.path for entry in storage.list_files(path)]


def envelope_plaintext_size(path: Path | str, storage: Storage | None = None) -> tuple[EnvelopeHeader, int]:
    """The envelope header of ``path`` (in ``storage``, local by default) and its plaintext
    size, from the header and the file size alone (nothing is decrypted, no key is unwrapped).

    Raises:
        InputNotFound: there is no such file.
        NotAnEnvelope: the file is not a ppml envelope.
        InvalidCiphertext: the header is malformed or the size is impossible for its segments.
    """
    source = (storage or LocalStorage()).open_random_access(str(path))
    with contextlib.closing(source):
        try:
            header, header_bytes = EnvelopeHeader.read_from(SequentialView(source))
        except NotAnEnvelope:
            raise NotAnEnvelope(source.name) from None
        except InvalidCiphertext:
            raise InvalidCiphertext(source.name) from None
        file_size = source.size()
    layout = _streaming.Layout(header.segment_size)
    ciphertext_size = file_size - len(header_bytes)
    try:
        count = layout.segment_count(ciphertext_size)
    except InvalidCiphertext:
        raise InvalidCiphertext(source.name) from None
    _, last_length = layout.segment_span(count - 1, ciphertext_size)
    return header, layout.plaintext_start(count - 1) + last_length - _streaming.TAG_SIZE


def plan_ranges(
    plaintext_size: int, segment_size: int, max_split_bytes: int
) -> list[tuple[int, int, int, int]]:
    """``(start, end, first_segment, stop_segment)`` of each split of one file.

    Each split holds ``max(1, max_split_bytes // segment plaintext)`` whole segments; a remainder
    of at most 10 % more joins the last split instead of making a tiny one (Spark's rule). An
    empty file gets one empty split over its single segment, so that segment is verified too.
    """
    if max_split_bytes <= 0:
        raise ValueError("max_split_bytes must be positive")
    layout = _streaming.Layout(segment_size)
    count = layout.segment_count_for_plaintext(plaintext_size)
    per_split = max(1, max_split_bytes // layout.plaintext)
    ranges = []
    first = 0
    while first < count:
        remaining = count - first
        stop = count if remaining * 10 <= per_split * 11 else first + per_split
        start = layout.plaintext_start(first)
        end = plaintext_size if stop == count else layout.plaintext_start(stop)
        ranges.append((start, end, first, stop))
        first = stop
    return ranges


def plan_envelope_splits(path: Path | str, max_split_bytes: int) -> list[FileSplit]:
    """The splits of one envelope file (see :func:`plan_ranges`), planned from its header."""
    header, size = envelope_plaintext_size(path)
    return [
        FileSplit(path=str(path), start=start, end=end, first_segment=first, stop_segment=stop,
                  file_size=size)
        for start, end, first, stop in plan_ranges(size, header.segment_size, max_split_bytes)
    ]


def max_split_bytes(
    file_sizes: Sequence[int],
    *,
    max_partition_bytes: int,
    min_partitions: int | None,
    open_cost: int = DEFAULT_OPEN_COST_BYTES,
) -> int:
    """How many bytes one split may hold, by Spark's rule for its file sources: at most
    ``max_partition_bytes``, and small enough that ``min_partitions`` tasks (Spark: the default
    parallelism, that is the cores) share the input, but not below ``open_cost``. With
    ``min_partitions`` None, ``max_partition_bytes``."""
    if max_partition_bytes <= 0:
        raise ValueError("max_partition_bytes must be positive")
    if min_partitions is None:
        return max_partition_bytes
    if min_partitions <= 0:
        raise ValueError("min_partitions must be positive")
    bytes_per_core = sum(size + open_cost for size in file_sizes) // min_partitions
    return min(max_partition_bytes, max(open_cost, bytes_per_core))


def pack_splits(
    splits: Sequence[FileSplit],
    max_bytes: int,
    open_cost: int = DEFAULT_OPEN_COST_BYTES,
) -> list[list[FileSplit]]:
    """Group splits, in order, into partitions of about ``max_bytes``, charging ``open_cost``
    per split as Spark does, so many small files do not each cost a task."""
    groups: list[list[FileSplit]] = []
    current: list[FileSplit] = []
    filled = 0
    for split in splits:
        if current and filled + split.size > max_bytes:
            groups.append(current)
            current, filled = [], 0
        current.append(split)
        filled += split.size + open_cost
    if current:
        groups.append(current)
    return groups


def read_owned_lines(source: SegmentSource, split: FileSplit, *, skip_first_line: bool) -> memoryview:
    """The bytes of the lines ``split`` owns (see the module docstring), in one buffer: the
    blocks of :func:`iter_owned_blocks`, joined.

    ``skip_first_line`` must be true for every split with ``start > 0``; for split 0 it skips
    the CSV header. The result is empty or whole lines, each ending in ``\\n`` except possibly
    the file's last.
    """
    blocks = iter_owned_blocks(source, split, skip_first_line=skip_first_line)
    return memoryview(bytearray().join(blocks))


def iter_owned_blocks(
    source: SegmentSource,
    split: FileSplit,
    *,
    skip_first_line: bool,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[bytearray]:
    """The lines ``split`` owns (see the module docstring), decrypted and handed over in blocks
    of about ``block_bytes`` (more when a line is longer): the split's segments, then the
    following segments only until its last line ends. Each block is a ``bytearray`` of its own
    (the caller may keep it) holding whole lines, non-empty; only the file's last line may lack
    its ``\\n``. Concatenated, the blocks are the owned lines.

    ``skip_first_line`` must be true for every split with ``start > 0``; for split 0 it skips
    the CSV header.
    """
    if split.start > 0 and not skip_first_line:
        raise ValueError("a split that starts inside the file must skip its first partial line")
    if block_bytes <= 0:
        raise ValueError("block_bytes must be positive")
    blocks = _Blocks(block_bytes)
    seen = 0
    skipping = skip_first_line
    for index in range(split.first_segment, split.stop_segment):
        start, length = blocks.read_segment(source, index)
        seen += length
        if skipping:
            newline = blocks.find_newline(start)
            if newline < 0:
                blocks.clear()
                continue
            blocks.drop_before(newline + 1)
            skipping = False
        yield from blocks.full()
    if seen != split.end - split.start:
        raise ValueError("the split does not match the file's segments")
    if skipping:
        return  # no line starts in this split
    if split.end < source.plaintext_size:
        # The line that starts at or before `end` runs to the first newline at or after it.
        for index in range(split.stop_segment, source.segment_count):
            start, _ = blocks.read_segment(source, index)
            newline = blocks.find_newline(start)
            if newline >= 0:
                blocks.truncate(newline + 1)
                break
    yield from blocks.rest()


class _Blocks:
    """Plaintext gathered in a buffer and cut, after a newline, into blocks of whole lines.

    A block handed out is its buffer, trimmed to the block; the bytes after the cut move to a new
    buffer. No buffer is reused once handed out.
    """

    def __init__(self, block_bytes: int) -> None:
        self._block_bytes = block_bytes
        self._buffer = bytearray()
        self._begin = 0
        self._filled = 0

    def read_segment(self, source: SegmentSource, index: int) -> tuple[int, int]:
        """Decrypt segment ``index`` of ``source`` straight onto the end of the buffer; returns
        where its plaintext starts in the buffer, and its length."""
        first, stop = source.segment_plaintext_range(index)
        size = stop - first
        if self._filled + size > len(self._buffer):
            kept = self._filled - self._begin
            grown = bytearray(max(self._block_bytes + 2 * size, 2 * (kept + size)))
            grown[:kept] = memoryview(self._buffer)[self._begin : self._filled]
            self._buffer, self._begin, self._filled = grown, 0, kept
        start = self._filled
        with memoryview(self._buffer) as view:
            length = source.read_segment_into(index, view[start : start + size])
        if length != size:
            raise ValueError("a segment does not hold the plaintext its position says")
        self._filled += length
        return start, length

    def find_newline(self, start: int) -> int:
        return self._buffer.find(b"\n", start, self._filled)

    def clear(self) -> None:
        self._begin = self._filled = 0

    def drop_before(self, index: int) -> None:
        self._begin = index

    def truncate(self, end: int) -> None:
        self._filled = end

    def full(self) -> Iterator[bytearray]:
        """The gathered lines, if there are at least ``block_bytes``, as a block."""
        if self._filled - self._begin < self._block_bytes:
            return
        cut = self._buffer.rfind(b"\n", self._begin, self._filled) + 1
        if not cut:
            return  # one long line so far: keep gathering
        block, begin, tail = self._buffer, self._begin, self._filled - cut
        self._buffer = bytearray(max(len(block), 2 * tail))
        self._buffer[:tail] = memoryview(block)[cut : self._filled]
        self._begin, self._filled = 0, tail
        yield _trimmed(block, begin, cut)

    def rest(self) -> Iterator[bytearray]:
        """What is left, as the last block."""
        if self._filled > self._begin:
            block, begin, end = self._buffer, self._begin, self._filled
            self._buffer, self._begin, self._filled = bytearray(), 0, 0
            yield _trimmed(block, begin, end)


def _trimmed(buffer: bytearray, begin: int, end: int) -> bytearray:
    """``buffer[begin:end]``, in place: shrinking the end costs nothing, moving the start (first
    block of a split only) one memmove."""
    del buffer[end:]
    if begin:
        del buffer[:begin]
    return buffer
