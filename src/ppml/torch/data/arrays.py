"""Datasets of the records (rows) of NumPy arrays stored as ``.npy`` inside ppml envelopes (see
:mod:`.layouts`): :class:`ArrayDataset` (map-style) and :class:`IterableArrayDataset`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppml.core.keys import DataKeyProvider
from ppml.errors import InputError
from ppml.torch.data.base import Transform
from ppml.torch.data.convert import Block, Column
from ppml.torch.data.files import Segments
from ppml.torch.data.indexed import DEFAULT_BLOCK_BYTES, IndexedDataset, IndexedFiles, IterableIndexedDataset
from ppml.torch.data.layouts import ArrayLayout
from ppml.torch.data.spans import Bounds, FixedBounds

__all__ = ["ArrayDataset", "IterableArrayDataset"]


def _read_bounds(source: Segments, path: str) -> tuple[Bounds, ArrayLayout]:
    layout = ArrayLayout.read(source, path)
    for name in layout.dtype.names or (None,):
        dtype = layout.dtype if name is None else layout.dtype.fields[name][0]  # type: ignore[index]
        try:
            torch.from_numpy(np.zeros(1, dtype=dtype))
        except TypeError:
            what = "its dtype" if name is None else f"field {name!r}"
            raise InputError(path, f"{what} ({dtype}) has no PyTorch tensor type") from None
    return FixedBounds(layout), layout


def _array_files(paths: str | Path | Sequence[str | Path], kms: DataKeyProvider | str | None,
                 unsafe_plaintext: bool) -> IndexedFiles:
    files = IndexedFiles(paths, kms=kms, unsafe_plaintext=unsafe_plaintext, read_bounds=_read_bounds)
    first = files.layouts[0]
    for info, layout in zip(files.files, files.layouts, strict=True):
        if (layout.dtype, layout.record_shape) != (first.dtype, first.record_shape):
            raise InputError(info.path, f"its records are {layout.dtype} of shape {layout.record_shape}, those of "
                                        f"{files.files[0].path} {first.dtype} of shape {first.record_shape}")
    return files


def _records_block(records: np.ndarray) -> Block:
    """Records (an array whose first axis counts them) as a block: one tensor, or a tensor per field
    of a structured dtype (samples are then dicts)."""
    if records.dtype.names is None:
        return Block({"value": torch.from_numpy(records)}, len(records), kind="single")
    columns: dict[str, Column] = {name: torch.from_numpy(np.ascontiguousarray(records[name]))
                                  for name in records.dtype.names}
    return Block(columns, len(records), kind="dict")


class ArrayDataset(IndexedDataset):
    """Map-style: ``dataset[i]`` is row ``i`` of the arrays in ``paths`` (in file order), a tensor of
    the record shape (a dict of tensors for a structured dtype), read from the segments that hold
    it; the last ``cache_segments`` decrypted segments are kept per process. Every file must hold
    records of one dtype and shape. Built by opening every file (its key unwrapped, its ``.npy``
    header read and checked)."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kms: DataKeyProvider | str | None = None,
                 transform: Transform | None = None, cache_segments: int = 4,
                 unsafe_plaintext: bool = False) -> None:
        super().__init__(_array_files(paths, kms, unsafe_plaintext), transform=transform,
                         cache_segments=cache_segments)
        layout: ArrayLayout = self.files.layouts[0]
        self.dtype = layout.dtype
        self.record_shape = layout.record_shape

    def _decode(self, file: int, data: bytearray) -> Any:
        return _records_block(np.frombuffer(data, dtype=self.dtype).reshape(1, *self.record_shape)).sample(0)


class IterableArrayDataset(IterableIndexedDataset):
    """The rows of the arrays in ``paths`` as a stream, each DataLoader worker of each rank reading
    only its shard's segment ranges (every row exactly once per epoch); ``batch_size`` yields
    tensors of that many rows straight from the decrypted bytes (the fast path: use
    ``DataLoader(dataset, batch_size=None)``). Other arguments as
    :class:`~ppml.torch.data.IterableTableDataset`."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kms: DataKeyProvider | str | None = None,
                 transform: Transform | None = None, batch_size: int | None = None, drop_last: bool = False,
                 shuffle: bool = False, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, unsafe_plaintext: bool = False) -> None:
        super().__init__(_array_files(paths, kms, unsafe_plaintext), transform=transform, batch_size=batch_size,
                         drop_last=drop_last, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                         block_bytes=block_bytes)
        layout: ArrayLayout = self.files.layouts[0]
        self.dtype = layout.dtype
        self.record_shape = layout.record_shape

    def _block(self, file: int, first: int, count: int, data: bytearray) -> Block:
        return _records_block(np.frombuffer(data, dtype=self.dtype).reshape(count, *self.record_shape))
