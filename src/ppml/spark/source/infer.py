"""Schema inference, on the driver: the Spark schema of a read without ``.schema(...)``, from a
sample of the first non-empty file (or the first Parquet file's footer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pyspark.sql.types import StringType, StructField, StructType

from ppml.errors import UsageError
from ppml.spark.source.envelope import envelope_head
from ppml.spark.source.legacy import legacy_head
from ppml.spark.source.options import ReadOptions
from ppml.spark.source.parquet import parquet_file_schema
from ppml.spark.source.parse import csv_options
from ppml.spark.source.types import inferred_schema
from ppml.tabular.parse import infer_table
from ppml.tabular.splits import input_files

__all__ = ["SAMPLE_BYTES", "NoInput", "infer_schema", "row_count_data_schema"]

SAMPLE_BYTES: Final = 1 << 20
"""How much plaintext schema inference reads from the first non-empty file."""


class NoInput(UsageError):
    """Schema inference found nothing to read."""


def _sample(options: ReadOptions, files: Sequence[str]) -> bytes:
    """The first ~MiB of the first non-empty file, cut after its last whole line."""
    for path in files:
        if options.legacy:
            # One byte more: a line that ends exactly at the MiB stays in the sample.
            data, size = legacy_head(options, path, SAMPLE_BYTES + 1)
        else:
            data, size = envelope_head(options, path, SAMPLE_BYTES)
        if not data:
            continue
        if size > SAMPLE_BYTES:
            data = data[: data.rfind(b"\n") + 1] or data
        return data
    raise NoInput(
        f"cannot infer a schema for {options.path}: no non-empty input file; "
        "pass one with .schema(...)"
    )


def infer_schema(options: ReadOptions) -> StructType:
    """The schema of the read, from its input (see docs/spark-source.md).

    Raises:
        NoInput: there is no (non-empty) input file.
        InputError: the sample is not data of the format that PyArrow parses.
    """
    if options.format == "text":
        return StructType([StructField("value", StringType(), True)])
    if options.format == "parquet":
        files = input_files(options.path, options.storage())
        if not files:
            raise NoInput(
                f"cannot infer a schema for {options.path}: no input file; "
                "pass one with .schema(...)"
            )
        return parquet_file_schema(options, files[0])
    data = _sample(options, input_files(options.path, options.storage()))
    table = infer_table(data, options.format, csv_options(options), header=options.header, source=options.path,
                        remedy="pass one with .schema(...)")
    return inferred_schema(table)


def row_count_data_schema(options: ReadOptions) -> StructType:
    """The schema a read without ``.schema(...)`` would use; for an input with no records, any
    (there is nothing to parse: the count is 0)."""
    try:
        return infer_schema(options)
    except NoInput:
        return StructType([StructField("value", StringType(), True)])
