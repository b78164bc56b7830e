"""Tabular datasets over encrypted files: csv, json lines and text in ppml envelopes, parsed as the
Spark source parses them (:mod:`ppml.tabular.parse`), and PME Parquet (:mod:`ppml.tabular.parquet`),
as a map-style :class:`TableDataset` and an :class:`IterableTableDataset`. The manual is
docs/torch.md."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, IterableDataset

from ppml.core.keys import DataKeyProvider
from ppml.errors import InputError, UsageError
from ppml.filesystem import storage_for
from ppml.tabular.parquet import fetch_column_keys, open_encrypted, read_row_groups
from ppml.tabular.parse import LINE_FORMATS, CsvOptions, LineParser, check_schema, infer_table
from ppml.tabular.splits import iter_owned_blocks
from ppml.torch.data.base import Epochs, Transform, check_batch_size, emit, key_source
from ppml.torch.data.cache import CacheInfo, LruCache
from ppml.torch.data.convert import Block, TableOutput
from ppml.torch.data.files import FileInfo, FileOpener, Segments, dataset_files
from ppml.torch.data.sharding import Piece

__all__ = ["DEFAULT_BLOCK_BYTES", "SAMPLE_BYTES", "IterableTableDataset", "TableDataset", "TableFiles"]

FORMATS: Final = (*LINE_FORMATS, "parquet")
SAMPLE_BYTES: Final = 1 << 20
"""How much plaintext schema inference reads from the first non-empty file (as the Spark source)."""
DEFAULT_BLOCK_BYTES: Final = 4 << 20
"""About how much plaintext an iterable dataset parses at a time: enough for PyArrow's threads,
small enough that a DataLoader worker holds little."""


class TableFiles:
    """The files of a tabular dataset: every file opened and checked where the dataset is built,
    and read, in any process, by units (envelope segments; Parquet row groups).

    Building it opens each file: a plaintext file, a wrong or refused key, or a first segment
    (csv/json/text) or footer (Parquet) that does not authenticate fails here, before any batch.
    ``schema`` is the files' Arrow schema: given (csv, json, text), or for csv and json inferred
    from the first ~MiB of the first non-empty file (csv with a header: named by it), or the first
    Parquet file's.

    Raises:
        UsageError: an unknown format or options that do not suit it.
        NotAnEnvelope: a csv/json/text file is not a ppml envelope.
        InputError: a Parquet file is plaintext or not Parquet; the sample cannot be parsed.
        InvalidCiphertext: a file does not authenticate, or names a key the KMS does not know.
        KeyServiceError: the KMS refused a key.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kms: DataKeyProvider | str | None,
                 format: str, schema: pa.Schema | None, header: bool, csv: CsvOptions | None,
                 unsafe_plaintext: bool, block_bytes: int) -> None:
        if format not in FORMATS:
            raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if block_bytes <= 0:
            raise UsageError("block_bytes must be positive")
        self.format = format
        self.csv = csv or CsvOptions()
        self.skip_header = format == "csv" and header
        self.block_bytes = block_bytes
        self.opener = FileOpener(key_source(kms, unsafe_plaintext))
        paths = dataset_files(paths)
        self.row_groups: list[list[int]] = []
        if format == "parquet":
            if schema is not None:
                raise UsageError("Parquet files carry their schema: choose columns with columns= or features=")
            self.files, self.schema = self._open_parquet(paths)
        else:
            self.files, self.schema = self._open_lines(paths, schema, header)
        self._parser: LineParser | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_parser": None}

    def _open_lines(self, paths: list[str], schema: pa.Schema | None,
                    header: bool) -> tuple[list[FileInfo], pa.Schema]:
        files = []
        sample: tuple[bytes, str] | None = None
        for path in paths:
            source = self.opener.open_new(path)
            with contextlib.closing(source):
                first_segment = bytearray(source.segment_plaintext_range(0)[1])
                source.read_segment_into(0, memoryview(first_segment))  # authenticates the header too
                files.append(self.opener.info(source, path))
                if sample is None and source.plaintext_size and schema is None and self.format != "text":
                    data = source.read_range(0, SAMPLE_BYTES)
                    if source.plaintext_size > SAMPLE_BYTES:
                        data = data[: data.rfind(b"\n") + 1] or data
                    sample = data, path
        if self.format == "text":
            schema = schema or pa.schema([pa.field("value", pa.string())])
        elif schema is None:
            if sample is None:
                raise UsageError("no records to infer a schema from: pass schema=")
            schema = infer_table(sample[0], self.format, self.csv, header=header, source=sample[1]).schema
        check_schema(self.format, schema, self.csv)
        return files, schema

    @contextlib.contextmanager
    def _parquet(self, path: str) -> Iterator[pq.ParquetFile]:
        if self.opener.unsafe_plaintext:
            source = storage_for(path).open_arrow_file(path)
            try:
                yield pq.ParquetFile(source)
            finally:
                source.close()
        else:
            with open_encrypted(path, keys=self.opener.pme_keys(), storage=storage_for(path)) as parquet_file:
                yield parquet_file

    def _open_parquet(self, paths: list[str]) -> tuple[list[FileInfo], pa.Schema]:
        files = []
        schema: pa.Schema | None = None
        for path in paths:
            with self._parquet(path) as parquet_file:
                metadata = parquet_file.metadata
                self.row_groups.append([metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
                schema = schema or parquet_file.schema_arrow
                files.append(FileInfo(path=path, plaintext_size=0))
        assert schema is not None
        return files, schema

    def check_columns(self, names: Sequence[str]) -> None:
        """For Parquet: every file has the columns ``names``, and their keys unwrap (a one-row read
        of each file's first non-empty row group), so a refused column key fails before any batch.

        Raises:
            InputError: a file lacks a column.
            InvalidCiphertext, KeyServiceError: a column key does not unwrap.
        """
        if self.format != "parquet":
            return
        for file, rows in zip(self.files, self.row_groups, strict=True):
            with self._parquet(file.path) as parquet_file:
                missing = [name for name in names if parquet_file.schema_arrow.get_field_index(name) < 0]
                if missing:
                    raise InputError(file.path, f"has no column {', '.join(map(repr, missing))}")
                first = next((index for index, count in enumerate(rows) if count), None)
                if first is not None and not self.opener.unsafe_plaintext:
                    fetch_column_keys(parquet_file, file.path, first, names)

    def parser(self) -> LineParser:
        if self._parser is None:
            self._parser = LineParser(self.format, self.schema, self.csv)
        return self._parser

    def units(self) -> tuple[list[tuple[int, int]], list[int]]:
        """Every unit of the files, ``(file, unit)`` in order, and its weight (plaintext bytes or
        rows, plus one, so an empty unit still goes to some shard)."""
        units, weights = [], []
        for index, file in enumerate(self.files):
            sizes = (self.row_groups[index] if self.format == "parquet"
                     else [end - start for start, end in file.segments()])
            units += [(index, unit) for unit in range(len(sizes))]
            weights += [size + 1 for size in sizes]
        return units, weights

    def chunk_units(self) -> int:
        """How many units make about one block (what a shuffled epoch deals out at a time)."""
        if self.format == "parquet" or not self.files:
            return 1
        return max(1, self.block_bytes // self.files[0].segment_size)

    def read(self, piece: Piece, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The rows that units ``piece.first`` .. ``piece.stop``-1 of its file own, table by table:
        csv/json/text blocks of whole lines, or Parquet row groups (only ``columns``)."""
        file = self.files[piece.file]
        if self.format == "parquet":
            with self._parquet(file.path) as parquet_file:
                yield from read_row_groups(parquet_file, file.path, range(piece.first, piece.stop),
                                           columns=columns)
            return
        source: Segments = self.opener.open(file)
        split = file.split(piece.first, piece.stop)
        parser = self.parser()
        for block in iter_owned_blocks(source, split, skip_first_line=split.start > 0 or self.skip_header,
                                       block_bytes=self.block_bytes):
            table = parser.parse(block, file.path)
            del block  # freed before the next decrypt: one block at a time
            if table is not None:
                yield table

    def unit_rows(self) -> list[int]:
        """The rows each unit owns (in :meth:`units` order). csv/json/text: a pass over every file,
        decrypting and tokenizing (csv) or parsing it, one segment at a time."""
        if self.format == "parquet":
            return [rows for file_rows in self.row_groups for rows in file_rows]
        parser = self.parser()
        counts = []
        for file in self.files:
            source = self.opener.open(file)
            for segment in range(len(file.segments())):
                split = file.split(segment, segment + 1)
                counts.append(sum(parser.count(block, file.path) for block in iter_owned_blocks(
                    source, split, skip_first_line=split.start > 0 or self.skip_header,
                    block_bytes=self.block_bytes)))
        return counts


class TableDataset(Dataset[Any]):
    """A map-style dataset of the rows of encrypted tabular files (csv with or without a header,
    json lines, text: ppml envelopes; Parquet: PME with an encrypted footer).

    ``paths`` is a file, a directory (its files, skipping names that start with ``_`` or ``.``) or
    a list of them; ``kms`` a KMS URI (resolved in each process: see docs/torch.md) or a
    ``DataKeyProvider``. Samples are shaped by ``columns`` or ``features``/``label`` (see
    :mod:`ppml.torch.data.convert`), then passed through ``transform``.

    Building it opens every file (see :class:`TableFiles`) and counts the rows of each unit
    (csv/json/text: one pass over the data, a segment at a time; Parquet: from the footers).
    ``dataset[i]`` decrypts and parses only the unit (segment or row group) that holds row ``i``,
    and keeps the last ``cache_blocks`` converted units per process: memory is about that many
    segments' (or row groups') worth of rows.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kms: DataKeyProvider | str | None = None,
                 format: str = "csv", schema: pa.Schema | None = None, header: bool = True,
                 csv: CsvOptions | None = None, columns: Sequence[str] | None = None,
                 features: Sequence[str] | None = None, label: str | None = None,
                 dtype: torch.dtype = torch.float32, transform: Transform | None = None,
                 cache_blocks: int = 4, unsafe_plaintext: bool = False) -> None:
        self.files = TableFiles(paths, kms=kms, format=format, schema=schema, header=header, csv=csv,
                                unsafe_plaintext=unsafe_plaintext, block_bytes=DEFAULT_BLOCK_BYTES)
        self.output = TableOutput(self.files.schema, columns=columns, features=features, label=label, dtype=dtype)
        self.files.check_columns(self.output.names)
        self.transform = transform
        units, _ = self.files.units()
        rows = self.files.unit_rows()
        self._units = [unit for unit, count in zip(units, rows, strict=True) if count]
        self._ends = np.cumsum([count for count in rows if count], dtype=np.int64)
        self.cache_blocks = cache_blocks
        self._cache: LruCache[int, Block] = LruCache(cache_blocks)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = LruCache(self.cache_blocks)

    @property
    def schema(self) -> pa.Schema:
        return self.files.schema

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        position = int(np.searchsorted(self._ends, index, "right"))
        block = self._cache.get(position, lambda: self._load(position))
        start = int(self._ends[position - 1]) if position else 0
        sample = block.sample(index - start)
        return sample if self.transform is None else self.transform(sample)

    def _load(self, position: int) -> Block:
        file, unit = self._units[position]
        tables = list(self.files.read(Piece(file, unit, unit + 1), self.output.names))
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return self.output.convert(table, self.files.files[file].path)

    def cache_info(self) -> CacheInfo:
        """This process's cache of converted units: ``size`` never exceeds ``cache_blocks``."""
        return self._cache.info()


class IterableTableDataset(IterableDataset[Any]):
    """The rows of encrypted tabular files as a stream, each process reading only its shard.

    Arguments as :class:`TableDataset`, and: ``batch_size`` yields batches of that many rows
    (dicts of 1-d tensors, or ``(features, label)`` of 2-d and 1-d tensors) built from whole
    blocks, the fast path (use ``DataLoader(dataset, batch_size=None)``); without it samples come
    one by one for the DataLoader's own batching. ``rank``/``world_size`` default to
    ``torch.distributed``'s when it is initialised (build the dataset after
    ``init_process_group``). Each DataLoader worker of each rank reads its own run of segments
    (Parquet: row groups): every row exactly once per epoch across all of them. ``shuffle``
    deals blocks to shards in a new order each epoch (:meth:`set_epoch`) and permutes rows
    within blocks. Memory per process: about one block of ``block_bytes`` (Parquet: one row
    group) and its tensors.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *, kms: DataKeyProvider | str | None = None,
                 format: str = "csv", schema: pa.Schema | None = None, header: bool = True,
                 csv: CsvOptions | None = None, columns: Sequence[str] | None = None,
                 features: Sequence[str] | None = None, label: str | None = None,
                 dtype: torch.dtype = torch.float32, transform: Transform | None = None,
                 batch_size: int | None = None, drop_last: bool = False, shuffle: bool = False, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, unsafe_plaintext: bool = False) -> None:
        check_batch_size(batch_size)
        self.files = TableFiles(paths, kms=kms, format=format, schema=schema, header=header, csv=csv,
                                unsafe_plaintext=unsafe_plaintext, block_bytes=block_bytes)
        self.output = TableOutput(self.files.schema, columns=columns, features=features, label=label, dtype=dtype)
        self.files.check_columns(self.output.names)
        self.transform = transform
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epochs = Epochs(rank=rank, world_size=world_size, shuffle=shuffle, seed=seed)

    @property
    def schema(self) -> pa.Schema:
        return self.files.schema

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shuffled order to read (no effect without ``shuffle``)."""
        self.epochs.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        shard = self.epochs.shard()
        units, weights = self.files.units()
        pieces = self.epochs.pieces(shard, units, weights, self.files.chunk_units())
        blocks = self.epochs.shuffled(self._blocks(pieces), shard)
        try:
            yield from emit(blocks, batch_size=self.batch_size, drop_last=self.drop_last, transform=self.transform)
        finally:
            self.files.opener.close()

    def _blocks(self, pieces: Sequence[Piece]) -> Iterator[Block]:
        for piece in pieces:
            path = self.files.files[piece.file].path
            for table in self.files.read(piece, self.output.names):
                yield self.output.convert(table, path)

