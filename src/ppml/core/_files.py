"""File plumbing shared by the file formats: opening inputs with clear errors, atomic outputs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from ppml.errors import InputNotFound, NotAFile, OutputDirectoryMissing, OutputExists


def open_input(path: Path) -> BinaryIO:
    try:
        if path.is_dir():
            raise NotAFile(path)
        return open(path, "rb")
    except FileNotFoundError:
        raise InputNotFound(path) from None
    except IsADirectoryError:
        raise NotAFile(path) from None
    except PermissionError:
        raise NotAFile(path, "permission denied") from None


def require_output_directory(path: Path) -> Path:
    """The directory ``path`` will be written into; :class:`OutputDirectoryMissing` if it does
    not exist."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputDirectoryMissing(parent)
    return parent


class AtomicSink(Protocol):
    """An output that becomes visible only on :meth:`commit`: :class:`AtomicOutput` for a local
    file, a staged object for object storage (``ppml.filesystem``)."""

    @property
    def file(self) -> BinaryIO: ...

    def commit(self) -> None:
        """Close the output and make it visible under its final name."""
        ...

    def discard(self) -> None:
        """Close and remove whatever was written (called while another error propagates)."""
        ...


class AtomicOutput:
    """A temporary file beside ``dst`` that becomes ``dst`` only on :meth:`commit`.

    ``durable`` waits for the data on disk before the rename and for the rename after it, so that
    a power loss never leaves ``dst`` empty or short where a complete file stood (what a
    checkpoint overwritten every epoch needs); it costs an fsync or two per file.
    """

    def __init__(self, dst: Path, *, overwrite: bool, durable: bool = False) -> None:
        self.dst = dst
        self.durable = durable
        if dst.is_dir():
            raise NotAFile(dst, "is a directory, expected a file path for the output")
        if not overwrite and dst.exists():
            raise OutputExists(dst)
        parent = require_output_directory(dst)
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=parent)
        self.tmp = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> None:
        if self.durable:
            self.file.flush()
            os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.dst)
        if self.durable:
            directory = os.open(self.tmp.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def discard(self) -> None:
        """Remove the temporary file, whatever closing it does.

        Called while another error propagates, typically a failed write (a full disk): closing
        flushes what is still buffered, which fails the same way, and that second error must
        neither keep the temporary file (it would hold the disk full) nor hide the first one.
        """
        try:
            self.file.close()
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(
    dst: Path, *, overwrite: bool, replace: Callable[[Path, Path], None] = os.replace
) -> Iterator[Path]:
    """A staging directory beside ``dst`` that becomes ``dst`` only if the block succeeds.

    On any failure, the block's or the final move's, the staging directory is removed and a
    ``dst`` that existed before is left as it was. ``replace`` is the rename (injectable so the
    failure of the final move can be tested).
    """
    if dst.exists() and not overwrite:
        raise OutputExists(dst)
    if dst.exists() and not dst.is_dir():
        raise NotAFile(dst, "exists and is not a directory")
    parent = require_output_directory(dst.absolute())
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=parent))
    try:
        yield staging
        if not dst.exists():
            replace(staging, dst)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=parent))
        replace(dst, old / "d")
        try:
            replace(staging, dst)
        except BaseException:
            replace(old / "d", dst)
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class Readable(Protocol):
    """Anything with ``read(size)``: a binary file, or a view of a random-access input."""

    def read(self, size: int, /) -> bytes: ...


def read_exactly(raw: Readable, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at end of file (``read`` may return short counts)."""
    chunks = []
    remaining = size
    while remaining:
        chunk = raw.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def write_private(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = False) -> None:
    """Replace ``path`` atomically with ``data``, created with ``mode`` (default 0600);
    ``durable`` waits for the data on disk before the rename.

    A stale temporary file is removed first: reusing one would keep whatever mode it had.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    _write_new(tmp, data, mode, durable)
    os.replace(tmp, path)


def create_private(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Create ``path`` (which must not exist: FileExistsError) with ``data``, mode 0600 whatever
    the umask, not following a symlink planted at ``path``; durable by default (keys)."""
    _write_new(path, data, 0o600, durable)


def _write_new(path: Path, data: bytes, mode: int, durable: bool) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileNotFoundError:
        require_output_directory(path)
        raise
    try:
        os.fchmod(fd, mode)  # the umask may have cleared bits of mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
