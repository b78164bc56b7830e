"""Positional reads of one stored file: what the envelope reader needs of storage.

:class:`RandomAccessInput` is the seam between the envelope format and where its bytes live. A
local file (:class:`LocalInput`) reads with ``os.preadv`` straight into the caller's buffer;
object storage (``ppml.filesystem``, which may use the network) implements the same three
methods with ranged reads. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ppml.core._files import open_input

__all__ = ["LocalInput", "RandomAccessInput", "SequentialView"]


class RandomAccessInput(Protocol):
    """A readable file of known size. ``name`` says where it is, for error messages (a path,
    or a URL such as ``s3://bucket/key``)."""

    @property
    def name(self) -> str: ...

    def size(self) -> int: ...

    def read_into(self, buffer: memoryview, offset: int) -> int:
        """Fill ``buffer`` from byte ``offset``; fewer bytes only at the end of the file."""
        ...

    def close(self) -> None: ...


class LocalInput:
    """A local file read with ``os.preadv``: no seek, no copy, one reader for many ranges.

    Raises (opening):
        InputNotFound, NotAFile: ``path`` is missing or not a regular file.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._file = open_input(self.path)

    @property
    def name(self) -> str:
        return str(self.path)

    def size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def read_into(self, buffer: memoryview, offset: int) -> int:
        return os.preadv(self._file.fileno(), [buffer], offset)

    def close(self) -> None:
        self._file.close()


class SequentialView:
    """``read(n)`` from a :class:`RandomAccessInput`, starting at byte 0: how a header parser
    that reads a stream reads a random-access file."""

    def __init__(self, source: RandomAccessInput) -> None:
        self._source = source
        self.position = 0

    def read(self, size: int) -> bytes:
        buffer = bytearray(size)
        got = self._source.read_into(memoryview(buffer), self.position)
        self.position += got
        return bytes(buffer[:got])
