"""Datasets of raw byte records stored in ppml's records layout (see :mod:`.layouts`):
:class:`RecordDataset` (map-style) and :class:`IterableRecordDataset`. A sample is the record's
``bytes`` (a batch: a list of them); ``transform`` decodes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppml.core.keys import DataKeyProvider
from ppml.torch.data.base import Transform
from ppml.torch.data.convert import Block
from ppml.torch.data.files import Segments
from ppml.torch.data.indexed import DEFAULT_BLOCK_BYTES, IndexedDataset, IndexedFiles, IterableIndexedDataset
from ppml.torch.data.layouts import RecordIndex
from ppml.torch.data.spans import Bounds, IndexedBounds

__all__ = ["IterableRecordDataset", "RecordDataset"]


def _read_bounds(source: Segments, path: str) -> tuple[Bounds, None]:
    return IndexedBounds(RecordIndex.read(source, path)), None


class RecordDataset(IndexedDataset):
    """Map-style: ``dataset[i]`` is record ``i`` of the files in ``paths`` (in file order), as
    ``bytes``, read from the segments that hold it; the last ``cache_segments`` decrypted segments
    are kept per process. Built by opening every file (its key unwrapped, its index read and
    checked: 8 bytes per record stay in memory)."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kms: DataKeyProvider | str | None = None,
                 transform: Transform | None = None, cache_segments: int = 4,
                 unsafe_plaintext: bool = False) -> None:
        super().__init__(IndexedFiles(paths, kms=kms, unsafe_plaintext=unsafe_plaintext, read_bounds=_read_bounds),
                         transform=transform, cache_segments=cache_segments)

    def _decode(self, file: int, data: bytearray) -> Any:
        return bytes(data)


class IterableRecordDataset(IterableIndexedDataset):
    """The records of the files in ``paths`` as a stream of ``bytes`` (``batch_size``: lists of
    them), each DataLoader worker of each rank reading only its shard's segment ranges (every record
    exactly once per epoch). Other arguments as :class:`~ppml.torch.data.IterableTableDataset`."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kms: DataKeyProvider | str | None = None,
                 transform: Transform | None = None, batch_size: int | None = None, drop_last: bool = False,
                 shuffle: bool = False, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, unsafe_plaintext: bool = False) -> None:
        super().__init__(IndexedFiles(paths, kms=kms, unsafe_plaintext=unsafe_plaintext, read_bounds=_read_bounds),
                         transform=transform, batch_size=batch_size, drop_last=drop_last, shuffle=shuffle,
                         seed=seed, rank=rank, world_size=world_size, block_bytes=block_bytes)

    def _block(self, file: int, first: int, count: int, data: bytearray) -> Block:
        bounds = self.files.bounds[file]
        base = bounds.offset(first)
        view = memoryview(data)
        values = [bytes(view[bounds.offset(k) - base : bounds.offset(k + 1) - base])
                  for k in range(first, first + count)]
        return Block({"value": values}, count, kind="single")
