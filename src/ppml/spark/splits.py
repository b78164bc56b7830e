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
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from ppml.core import _streaming
from ppml.core.envelope import EnvelopeHeader
from ppml.errors import InputNotFound, InvalidCiphertext, NotAnEnvelope

__all__ = [
    "DEFAULT_MAX_SPLIT_BYTES",
    "DEFAULT_OPEN_COST_BYTES",
    "FileSplit",
    "SegmentSource",
    "envelope_plaintext_size",
    "list_input_files",
    "pack_splits",
    "plan_envelope_splits",
    "plan_ranges",
    "read_owned_lines",
]

DEFAULT_MAX_SPLIT_BYTES = 128 << 20
"""Spark's ``spark.sql.files.maxPartitionBytes`` default."""
DEFAULT_OPEN_COST_BYTES = 4 << 20
"""Spark's ``spark.sql.files.openCostInBytes`` default: what packing charges per file."""


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
    """What :func:`read_owned_lines` needs of a file: :class:`~ppml.core.envelope.EnvelopeReader`
    is one; tests use an in-memory fake."""

    @property
    def plaintext_size(self) -> int: ...

    @property
    def segment_count(self) -> int: ...

    def iter_segments(self, first: int = 0, stop: int | None = None) -> Iterator[memoryview]: ...


def list_input_files(path: Path | str) -> list[Path]:
    """``path`` itself if it is a file; else every regular file below it, sorted, skipping any
    name (file or directory) that starts with ``.`` or ``_`` (``_SUCCESS``, ``_temporary``,
    hidden in-progress files), as Spark's file sources do.

    Raises:
        InputNotFound: ``path`` does not exist.
    """
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputNotFound(root)
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
        base = Path(directory)
        found.extend(base / name for name in sorted(files) if not name.startswith((".", "_")))
    return sorted(found)


def envelope_plaintext_size(path: Path | str) -> tuple[EnvelopeHeader, int]:
    """The envelope header of ``path`` and its plaintext size, from the header and the file size
    alone (nothing is decrypted, no key is unwrapped).

    Raises:
        InputNotFound: there is no such file.
        NotAnEnvelope: the file is not a ppml envelope.
        InvalidCiphertext: the header is malformed or the size is impossible for its segments.
    """
    path = Path(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise InputNotFound(path) from None
    with raw:
        try:
            header, header_bytes = EnvelopeHeader.read_from(raw)
        except NotAnEnvelope:
            raise NotAnEnvelope(path) from None
        except InvalidCiphertext:
            raise InvalidCiphertext(path) from None
        file_size = os.fstat(raw.fileno()).st_size
    layout = _streaming.Layout(header.segment_size)
    ciphertext_size = file_size - len(header_bytes)
    try:
        count = layout.segment_count(ciphertext_size)
    except InvalidCiphertext:
        raise InvalidCiphertext(path) from None
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
    """The bytes of the lines ``split`` owns (see the module docstring), decrypted into one
    buffer: the split's segments, then following segments only until its last line ends.

    ``skip_first_line`` must be true for every split with ``start > 0``; for split 0 it skips
    the CSV header. The result is empty or whole lines, each ending in ``\\n`` except possibly
    the file's last.
    """
    if split.start > 0 and not skip_first_line:
        raise ValueError("a split that starts inside the file must skip its first partial line")
    size = source.plaintext_size
    length = split.end - split.start
    segments = split.stop_segment - split.first_segment
    # Room for the split and about one more segment, which usually finishes its last line.
    tail_room = length // segments if split.end < size and segments else 0
    buffer = bytearray(length + tail_room)
    filled = 0
    for plain in source.iter_segments(split.first_segment, split.stop_segment):
        buffer[filled : filled + len(plain)] = plain
        filled += len(plain)
    if filled != length:
        raise ValueError("the split does not match the file's segments")

    begin = 0
    if skip_first_line:
        newline = buffer.find(b"\n", 0, length)
        if newline < 0:
            return memoryview(buffer)[:0]
        begin = newline + 1

    stop = length
    if split.end < size:
        # The line that starts at or before `end` runs to the first newline at or after it.
        for plain in source.iter_segments(split.stop_segment):
            searched = filled
            buffer[filled : filled + len(plain)] = plain
            filled += len(plain)
            newline = buffer.find(b"\n", searched, filled)
            if newline >= 0:
                stop = newline + 1
                break
        else:
            stop = filled
    return memoryview(buffer)[begin:stop]
