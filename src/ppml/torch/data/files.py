"""The files of an encrypted dataset as one process opens them: keys resolved in that process
(a KMS URI through :func:`ppml.tee.keys.kms_for`, so DataLoader workers in a TEE get them from the
key agent), each data key unwrapped once per process, a few envelopes open at a time, and nothing
secret or decrypted in what is pickled to a worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ppml.core import _streaming
from ppml.core.envelope import DEFAULT_SEGMENT_SIZE, EnvelopeReader
from ppml.core.keys import DataKey, DataKeyProvider, GeneratedDataKey
from ppml.core.random_access import RandomAccessInput
from ppml.errors import InvalidCiphertext, UsageError
from ppml.filesystem import storage_for
from ppml.tabular.parquet import PmeKeys
from ppml.tabular.splits import FileSplit, SegmentSource, plan_ranges
from ppml.tee.keys import kms_for
from ppml.torch.data.cache import LruCache

__all__ = ["FileInfo", "FileOpener", "KeySource", "PlainSegments", "Segments", "dataset_files"]


class Segments(SegmentSource, Protocol):
    """An open file of a dataset, segment by segment: an :class:`~ppml.core.envelope.EnvelopeReader`
    (or, unsafely, :class:`PlainSegments`). ``name`` says where it is, for errors."""

    name: str

    def read_range(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


def dataset_files(paths: str | Path | Sequence[str | Path]) -> list[str]:
    """The data files of ``paths``: each a file, or a directory whose files (recursively, in name
    order) are taken, skipping names that start with ``.`` or ``_`` as Spark's file sources do.
    Local paths or ``s3://`` URLs (S3 settings from the standard AWS environment).

    Raises:
        InputNotFound: a path does not exist.
        UsageError: no data file at all.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = []
    for item in items:
        files += [entry.path for entry in storage_for(str(item)).list_files(str(item))]
    if not files:
        raise UsageError(f"no data files in {', '.join(map(str, items)) or 'an empty list of paths'}")
    return files


class KeySource:
    """The KMS a dataset's keys come from, in the form that travels to DataLoader workers.

    A URI (``local:DIR``, ``ppml+https://…``) is resolved in each process with
    :func:`~ppml.tee.keys.kms_for`: through the key agent or the attested session when the process
    runs in a TEE. A :class:`~ppml.core.keys.DataKeyProvider` object is used as it is: fork workers
    share the parent's (a remote client's connections too: pass its URI instead), spawn workers get
    it pickled (a ``local:`` store pickles as its directory).
    """

    def __init__(self, kms: DataKeyProvider | str) -> None:
        if isinstance(kms, str):
            self.uri: str | None = kms
            self.provider: DataKeyProvider | None = None
        elif isinstance(kms, DataKeyProvider):
            self.uri, self.provider = None, kms
        else:
            raise UsageError(f"kms must be a KMS URI or a DataKeyProvider, got {type(kms).__name__}")

    def resolve(self) -> DataKeyProvider:
        """This process's provider."""
        if self.uri is not None:
            return kms_for(self.uri)
        assert self.provider is not None
        return self.provider


class _UnwrapOnce:
    """A provider that unwraps each wrapped data key once per process (several readers of one file,
    or files under one data key, ask the KMS once); keys live only in this process's memory."""

    def __init__(self, kms: DataKeyProvider) -> None:
        self._kms = kms
        self._keys: dict[tuple[str, bytes, bytes | None], DataKey] = {}

    @property
    def uri(self) -> str:
        return self._kms.uri

    def generate_data_key(self, key_id: str, *, associated_data: bytes | None = None) -> GeneratedDataKey:
        return self._kms.generate_data_key(key_id, associated_data=associated_data)

    def unwrap_data_key(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> DataKey:
        cache_key = (key_id, bytes(wrapped), associated_data)
        key = self._keys.get(cache_key)
        if key is None:
            key = self._keys[cache_key] = self._kms.unwrap_data_key(
                key_id, wrapped, associated_data=associated_data)
        return key


class PlainSegments:
    """UNSAFE: a plaintext file read as if it were the plaintext of an envelope with the default
    segment size (same segments, same splits), for baselines that compare the same loader over
    plaintext files. Nothing is authenticated."""

    def __init__(self, source: RandomAccessInput) -> None:
        self._input = source
        self.name = source.name
        self._size = source.size()
        self._layout = _streaming.Layout(DEFAULT_SEGMENT_SIZE)

    @property
    def plaintext_size(self) -> int:
        return self._size

    @property
    def segment_count(self) -> int:
        return self._layout.segment_count_for_plaintext(self._size)

    def segment_plaintext_range(self, index: int) -> tuple[int, int]:
        start = self._layout.plaintext_start(index)
        length = self._layout.first_plaintext if index == 0 else self._layout.plaintext
        return start, min(start + length, self._size)

    def read_segment_into(self, index: int, out: memoryview) -> int:
        start, end = self.segment_plaintext_range(index)
        return self._input.read_into(out[: end - start], start)

    def read_range(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self._size)
        if offset >= end:
            return b""
        buffer = bytearray(end - offset)
        got = self._input.read_into(memoryview(buffer), offset)
        return bytes(buffer[:got])

    def close(self) -> None:
        self._input.close()


@dataclasses.dataclass(frozen=True, slots=True)
class FileInfo:
    """What a dataset learnt of one file when it was built (checked again when a process opens it)."""

    path: str
    plaintext_size: int
    segment_size: int = DEFAULT_SEGMENT_SIZE

    def segments(self) -> list[tuple[int, int]]:
        """``(start, end)`` of the plaintext of each of the file's segments."""
        return [(start, end) for start, end, _, _ in plan_ranges(self.plaintext_size, self.segment_size, 1)]

    def split(self, first: int, stop: int) -> FileSplit:
        """Segments ``first`` .. ``stop``-1 as a split of the file."""
        layout = _streaming.Layout(self.segment_size)
        count = layout.segment_count_for_plaintext(self.plaintext_size)
        end = self.plaintext_size if stop >= count else layout.plaintext_start(stop)
        return FileSplit(path=self.path, start=layout.plaintext_start(first), end=end, first_segment=first,
                         stop_segment=stop, file_size=self.plaintext_size)


class FileOpener:
    """Opens a dataset's files in the calling process, keeping at most ``open_files`` open.

    Picklable: the pickle holds the key source and the flags; the open files and unwrapped keys
    of a process stay in it (a child made by ``fork`` starts over with its own).
    """

    def __init__(self, keys: KeySource | None, *, open_files: int = 4) -> None:
        self.keys = keys
        self.open_files = open_files
        self._pid = -1
        self._kms: _UnwrapOnce | None = None
        self._pme: PmeKeys | None = None
        self._open: LruCache[str, Segments] = LruCache(open_files, _close)

    @property
    def unsafe_plaintext(self) -> bool:
        """Whether the files are read as plaintext (no key source: see :class:`PlainSegments`)."""
        return self.keys is None

    def __getstate__(self) -> dict[str, Any]:
        return {"keys": self.keys, "open_files": self.open_files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["keys"], open_files=state["open_files"])  # type: ignore[misc]

    def _this_process(self) -> None:
        if self._pid != os.getpid():
            # A forked child: what the parent opened (descriptors, clients, keys) is not its own.
            self._pid = os.getpid()
            self._kms = None
            self._pme = None
            self._open = LruCache(self.open_files, _close)

    def kms(self) -> DataKeyProvider:
        """This process's key provider (unwrapping each data key once)."""
        self._this_process()
        if self.keys is None:
            raise UsageError("this dataset reads plaintext files: it has no key source")
        if self._kms is None:
            self._kms = _UnwrapOnce(self.keys.resolve())
        return self._kms

    def pme_keys(self) -> PmeKeys:
        """This process's PME keys (one PyArrow ``CryptoFactory``: key-encryption keys cached)."""
        kms = self.kms()
        if self._pme is None:
            self._pme = PmeKeys(kms)
        return self._pme

    def info(self, source: Segments, path: str) -> FileInfo:
        """What the dataset keeps of an open file."""
        header = getattr(source, "header", None)
        return FileInfo(path=path, plaintext_size=source.plaintext_size,
                        segment_size=header.segment_size if header is not None else DEFAULT_SEGMENT_SIZE)

    def open_new(self, path: str) -> Segments:
        """``path`` opened now (its key unwrapped), owned by the caller.

        Raises:
            NotAnEnvelope: the file is not a ppml envelope (plaintext).
            InvalidCiphertext: the header is malformed, or names a key the KMS does not know.
            KeyServiceError: the KMS refused the key.
        """
        source = storage_for(path).open_random_access(path)
        if self.keys is None:
            return PlainSegments(source)
        return EnvelopeReader(source, kms=self.kms())

    def open(self, file: FileInfo) -> Segments:
        """``file`` from this process's open files (opened if it is not), owned by the opener.

        Raises:
            InvalidCiphertext: the file's plaintext size changed since the dataset was built.
        """
        self._this_process()

        def load() -> Segments:
            source = self.open_new(file.path)
            if source.plaintext_size != file.plaintext_size:
                source.close()
                raise InvalidCiphertext(file.path)  # changed (truncated, replaced) since planning
            return source

        return self._open.get(file.path, load)

    def close(self) -> None:
        """Close this process's open files."""
        self._this_process()
        self._open.clear()


def _close(source: Segments) -> None:
    with contextlib.suppress(OSError):
        source.close()
