"""The readers Spark plans and runs a read with: partitions on the driver, then each task's
record batches (or, with ``rowCount``, its record count)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final

import pyarrow as pa
from pyspark.sql.datasource import DataSourceReader, Filter, InputPartition
from pyspark.sql.types import LongType, StructField, StructType

from ppml.spark.source.envelope import envelope_blocks, envelope_partitions
from ppml.spark.source.filters import filter_expression, pushable
from ppml.spark.source.legacy import legacy_blocks, legacy_partitions
from ppml.spark.source.options import ReadOptions
from ppml.spark.source.parquet import parquet_batches, parquet_partitions, parquet_rows
from ppml.spark.source.parse import Parser, check_schema
from ppml.spark.source.partitions import PpmlParquetPartition, PpmlPartition
from ppml.spark.source.process import freeze_loaded_objects
from ppml.spark.source.types import arrow_schema
from ppml.tabular.parquet import Predicate
from ppml.tabular.splits import input_files

__all__ = ["ROW_COUNT_SCHEMA", "PpmlPushdownReader", "PpmlReader", "PpmlRowCountReader"]


class PpmlReader(DataSourceReader):
    """Plans and reads partitions; :class:`PpmlPushdownReader` adds filter pushdown."""

    def __init__(self, options: ReadOptions, schema: StructType) -> None:
        self._options = options
        self._schema = schema
        if options.format != "parquet":
            check_schema(options, schema)
        self._pushed: list[Predicate] = []

    def partitions(self) -> Sequence[InputPartition]:
        options = self._options
        files = input_files(options.path, options.storage())
        if options.format == "parquet":
            return parquet_partitions(options, self._schema, files)
        if options.legacy:
            return legacy_partitions(files)
        return envelope_partitions(options, files)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        freeze_loaded_objects()
        if isinstance(partition, PpmlParquetPartition):
            return parquet_batches(self._options, self._schema, self._pushed, partition)
        if not isinstance(partition, PpmlPartition):
            # Spark reads one placeholder partition when partitions() returned none.
            return iter(())
        return self._batches(partition)

    def _plaintexts(self, partition: PpmlPartition) -> Iterator[tuple[bytearray, str]]:
        """The partition's owned plaintext, in blocks of whole records (header skipped), with
        the file each came from."""
        if partition.legacy_file is not None:
            for block in legacy_blocks(self._options, partition.legacy_file):
                yield block, partition.legacy_file
                del block  # the consumer is done with it: freed before the next decrypt
            return
        yield from envelope_blocks(self._options, partition.splits)

    def _tables(self, partition: PpmlPartition, parser: Parser) -> Iterator[pa.Table]:
        for block, source in self._plaintexts(partition):
            table = parser.parse(block, source)
            del block  # freed as soon as nothing needs it: one block at a time
            if table is not None:
                yield table

    def _batches(self, partition: PpmlPartition) -> Iterator[pa.RecordBatch]:
        parser = Parser(self._options, self._schema)
        expression = filter_expression(self._pushed, arrow_schema(self._schema))
        for table in self._tables(partition, parser):
            if expression is not None:
                table = table.filter(expression)
            for batch in table.to_batches():
                if batch.num_rows:
                    yield batch


class PpmlPushdownReader(PpmlReader):
    """The reader with filter pushdown (see docs/spark-source.md for what is pushed, and why it
    is opt-in)."""

    def pushFilters(self, filters: list[Filter]) -> Iterable[Filter]:  # noqa: N802 (Spark's name)
        target = arrow_schema(self._schema)
        for spark_filter in filters:
            pushed = pushable(spark_filter, target)
            if pushed is None:
                yield spark_filter
            else:
                self._pushed.append(pushed)


ROW_COUNT_SCHEMA: Final = StructType([StructField("rows", LongType(), nullable=False)])


class PpmlRowCountReader(PpmlReader):
    """``option("rowCount", "true")``: one row per partition, ``rows`` = the records in it.

    Spark 4.3 hands a Python data source neither the columns a query needs nor its aggregates,
    so ``count()`` turns every record into a JVM row (measured: over a second per 8 M rows even
    for a source that yields empty batches). This mode counts inside the source instead, as
    Spark's own csv reader does when every column is pruned: csv rows are tokenized but not
    converted, json and text are parsed, Parquet counts come from the decrypted footers.
    """

    def __init__(self, options: ReadOptions, schema: StructType, data_schema: StructType) -> None:
        super().__init__(options, data_schema)
        self._output = schema

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        freeze_loaded_objects()
        if isinstance(partition, PpmlParquetPartition):
            rows = parquet_rows(self._options, partition)
        elif isinstance(partition, PpmlPartition):
            parser = Parser(self._options, self._schema)
            rows = 0
            for block, source in self._plaintexts(partition):
                rows += parser.count(block, source)
                del block
        else:  # Spark's placeholder partition for an input without files
            rows = 0
        yield pa.RecordBatch.from_arrays(
            [pa.array([rows], pa.int64())], schema=arrow_schema(self._output)
        )
