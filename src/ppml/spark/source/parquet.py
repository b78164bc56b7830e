"""Reading PME Parquet files: partitions of whole row groups planned from the decrypted footers,
each task reading its row groups with statistics pruning and the pushed filters.

The PME primitives (the KMS client, opening a file, reading row groups) are
:mod:`ppml.tabular.parquet`'s; this module applies them to the source's partitions and schema.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
from pyspark.sql.types import StructType

from ppml.errors import InputError
from ppml.spark.source.filters import filter_expression
from ppml.spark.source.options import ReadOptions
from ppml.spark.source.partitions import PpmlParquetPartition
from ppml.spark.source.process import pme_keys
from ppml.spark.source.types import arrow_schema, conform_parquet, parquet_columns, parquet_schema
from ppml.tabular.parquet import Predicate, open_encrypted, plan_row_groups, read_row_groups
from ppml.tabular.splits import DEFAULT_OPEN_COST_BYTES

__all__ = ["parquet_batches", "parquet_file_schema", "parquet_partitions", "parquet_rows"]


def parquet_file_schema(options: ReadOptions, path: str) -> StructType:
    """The Spark schema of the Parquet file ``path`` (its footer decrypted)."""
    with open_encrypted(path, keys=pme_keys(options.kms), storage=options.storage()) as parquet_file:
        return parquet_schema(parquet_file.schema_arrow, path)


def parquet_partitions(
    options: ReadOptions, schema: StructType, files: Sequence[str]
) -> list[PpmlParquetPartition]:
    """The read's partitions, of whole row groups. Every footer is opened here: a wrong KMS, a
    refused footer key, a plaintext or altered footer or a missing column fails the job before
    any task."""
    keys = pme_keys(options.kms)
    storage = options.storage()
    row_group_sizes = []
    for path in files:
        with open_encrypted(path, keys=keys, storage=storage) as parquet_file:
            parquet_columns(schema, parquet_file.schema_arrow, path)
            metadata = parquet_file.metadata
            row_group_sizes.append((path, [
                metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)
            ]))
    groups = plan_row_groups(row_group_sizes, options.max_split_bytes, DEFAULT_OPEN_COST_BYTES)
    return [PpmlParquetPartition(slices=tuple(group)) for group in groups]


def parquet_batches(
    options: ReadOptions, schema: StructType, pushed: Sequence[Predicate],
    partition: PpmlParquetPartition,
) -> Iterator[pa.RecordBatch]:
    """The partition's rows that pass the ``pushed`` filters, as batches of ``schema``."""
    keys = pme_keys(options.kms)
    storage = options.storage()
    target = arrow_schema(schema)
    expression = filter_expression(pushed, target)
    for piece in partition.slices:
        with open_encrypted(piece.path, keys=keys, storage=storage) as parquet_file:
            if parquet_file.metadata.num_row_groups != piece.row_group_count:
                raise InputError(piece.path, "changed since the read was planned")
            columns = parquet_columns(schema, parquet_file.schema_arrow, piece.path)
            file_column = dict(zip(schema.fieldNames(), columns, strict=True))
            predicates = [(operation, file_column[name], value)
                          for operation, name, value in pushed]
            for table in read_row_groups(parquet_file, piece.path, piece.row_groups,
                                         columns=columns, predicates=predicates):
                table = conform_parquet(table, columns, target, piece.path)
                if expression is not None:
                    table = table.filter(expression)
                for batch in table.to_batches():
                    if batch.num_rows:
                        yield batch


def parquet_rows(options: ReadOptions, partition: PpmlParquetPartition) -> int:
    """The number of rows in the partition, from the decrypted footers."""
    keys = pme_keys(options.kms)
    storage = options.storage()
    rows = 0
    for piece in partition.slices:
        with open_encrypted(piece.path, keys=keys, storage=storage) as parquet_file:
            metadata = parquet_file.metadata
            if metadata.num_row_groups != piece.row_group_count:
                raise InputError(piece.path, "changed since the read was planned")
            rows += sum(metadata.row_group(i).num_rows for i in piece.row_groups)
    return rows
