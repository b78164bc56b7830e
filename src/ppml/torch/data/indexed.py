"""Datasets over envelopes whose records sit at offsets a reader can compute (arrays, raw records:
see :mod:`.layouts`): the map-style base reads a record from the segments that hold it, through a
per-process cache of decrypted segments; the iterable base streams a shard's segment ranges."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, IterableDataset

from ppml.core import _streaming
from ppml.core.keys import DataKeyProvider
from ppml.errors import InvalidCiphertext
from ppml.torch.data.base import Epochs, Transform, check_batch_size, emit, key_source
from ppml.torch.data.cache import CacheInfo, LruCache
from ppml.torch.data.convert import Block
from ppml.torch.data.files import FileInfo, FileOpener, Segments, dataset_files
from ppml.torch.data.spans import Bounds, iter_record_blocks

__all__ = ["DEFAULT_BLOCK_BYTES", "IndexedDataset", "IndexedFiles", "IterableIndexedDataset"]

DEFAULT_BLOCK_BYTES = 4 << 20
"""About how many bytes of records an iterable dataset decrypts and converts at a time."""

BoundsReader = Callable[[Segments, str], tuple[Bounds, Any]]
"""Reads where the records of an open file lie (and what the file says of them, its layout)."""


class IndexedFiles:
    """The files of a dataset of indexed records, each opened where the dataset is built: its key
    unwrapped, its layout read and checked (the segments holding it decrypted), so a plaintext file,
    a wrong or refused key or a malformed layout fails before any batch.

    Raises:
        NotAnEnvelope: a file is not a ppml envelope.
        InvalidCiphertext: a file does not authenticate, or names a key the KMS does not know.
        KeyServiceError: the KMS refused a key.
        InputError: a file's layout is not the one expected.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kms: DataKeyProvider | str | None,
                 unsafe_plaintext: bool, read_bounds: BoundsReader) -> None:
        self.opener = FileOpener(key_source(kms, unsafe_plaintext))
        self.files: list[FileInfo] = []
        self.bounds: list[Bounds] = []
        self.layouts: list[Any] = []
        for path in dataset_files(paths):
            source = self.opener.open_new(path)
            with contextlib.closing(source):
                bounds, layout = read_bounds(source, path)
                self.files.append(self.opener.info(source, path))
            self.bounds.append(bounds)
            self.layouts.append(layout)
        self.counts = np.array([bounds.count for bounds in self.bounds], dtype=np.int64)
        self.ends = np.cumsum(self.counts)

    def units(self) -> tuple[list[tuple[int, int]], list[int]]:
        """Every segment of the files, ``(file, segment)`` in order, weighing its plaintext bytes + 1."""
        units, weights = [], []
        for index, file in enumerate(self.files):
            for segment, (start, end) in enumerate(file.segments()):
                units.append((index, segment))
                weights.append(end - start + 1)
        return units, weights

    def locate(self, index: int) -> tuple[int, int]:
        """``(file, record in file)`` of record ``index`` of the dataset."""
        file = int(np.searchsorted(self.ends, index, "right"))
        return file, index - (int(self.ends[file - 1]) if file else 0)

    def read_record(self, file: int, record: int, cache: LruCache[tuple[int, int], bytearray]) -> bytearray:
        """The bytes of ``record`` of ``file``, from its segments, decrypted through ``cache``."""
        info = self.files[file]
        bounds = self.bounds[file]
        start, end = bounds.offset(record), bounds.offset(record + 1)
        out = bytearray(end - start)
        layout = _streaming.Layout(info.segment_size)
        position = start
        while position < end:
            segment = layout.segment_of(position)
            plain = cache.get((file, segment), lambda: self._segment(info, segment))
            low = layout.plaintext_start(segment)
            take = min(end, low + len(plain)) - position
            if take <= 0:
                raise InvalidCiphertext(info.path)  # the file ends before its records do
            out[position - start : position - start + take] = plain[position - low : position - low + take]
            position += take
        return out

    def _segment(self, info: FileInfo, segment: int) -> bytearray:
        source = self.opener.open(info)
        low, high = source.segment_plaintext_range(segment)
        plain = bytearray(high - low)
        source.read_segment_into(segment, memoryview(plain))
        return plain


class IndexedDataset(Dataset[Any], abc.ABC):
    """Map-style: ``dataset[i]`` decrypts only the segments holding record ``i`` (a file's layout
    says where it is), keeping the last ``cache_segments`` decrypted segments per process."""

    def __init__(self, files: IndexedFiles, *, transform: Transform | None, cache_segments: int) -> None:
        self.files = files
        self.transform = transform
        self.cache_segments = cache_segments
        self._cache: LruCache[tuple[int, int], bytearray] = LruCache(cache_segments)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = LruCache(self.cache_segments)

    def __len__(self) -> int:
        return int(self.files.ends[-1]) if len(self.files.ends) else 0

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        file, record = self.files.locate(index)
        sample = self._decode(file, self.files.read_record(file, record, self._cache))
        return sample if self.transform is None else self.transform(sample)

    @abc.abstractmethod
    def _decode(self, file: int, data: bytearray) -> Any:
        """One record's bytes as a sample."""

    def cache_info(self) -> CacheInfo:
        """This process's cache of decrypted segments: ``size`` never exceeds ``cache_segments``."""
        return self._cache.info()


class IterableIndexedDataset(IterableDataset[Any], abc.ABC):
    """A stream of records, each process reading its shard's segment ranges (see
    :mod:`.sharding` and :func:`~ppml.torch.data.spans.iter_record_blocks`)."""

    def __init__(self, files: IndexedFiles, *, transform: Transform | None, batch_size: int | None,
                 drop_last: bool, shuffle: bool, seed: int, rank: int | None, world_size: int | None,
                 block_bytes: int) -> None:
        check_batch_size(batch_size)
        self.files = files
        self.transform = transform
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.block_bytes = block_bytes
        self.epochs = Epochs(rank=rank, world_size=world_size, shuffle=shuffle, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shuffled order to read (no effect without ``shuffle``)."""
        self.epochs.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        shard = self.epochs.shard()
        units, weights = self.files.units()
        chunk = max(1, self.block_bytes // (self.files.files[0].segment_size if self.files.files else 1))
        pieces = self.epochs.pieces(shard, units, weights, chunk)
        blocks = self.epochs.shuffled(self._blocks(pieces), shard)
        try:
            yield from emit(blocks, batch_size=self.batch_size, drop_last=self.drop_last, transform=self.transform)
        finally:
            self.files.opener.close()

    def _blocks(self, pieces: Sequence[Any]) -> Iterator[Block]:
        for piece in pieces:
            source = self.files.opener.open(self.files.files[piece.file])
            for first, count, data in iter_record_blocks(source, piece.first, piece.stop,
                                                         self.files.bounds[piece.file], block_bytes=self.block_bytes):
                yield self._block(piece.file, first, count, data)

    @abc.abstractmethod
    def _block(self, file: int, first: int, count: int, data: bytearray) -> Block:
        """Records ``first`` .. ``first + count``-1 of ``file``, their bytes back to back, as a block."""
