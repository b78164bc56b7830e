"""Schema inference, on the driver: the Spark schema of a read without ``.schema(...)``, from a
sample of the first non-empty file (or the first Parquet file's footer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
from pyspark.sql.types import StringType, StructField, StructType

from ppml.errors import InputError, UsageError
from ppml.spark.source.envelope import envelope_head
from ppml.spark.source.legacy import legacy_head
from ppml.spark.source.options import ReadOptions
from ppml.spark.source.parquet import parquet_file_schema
from ppml.spark.source.parse import FALSE_VALUES, TRUE_VALUES
from ppml.spark.source.splits import input_files
from ppml.spark.source.types import inferred_schema

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
    try:
        if options.format == "csv":
            table = pa_csv.read_csv(
                pa.BufferReader(data),
                read_options=pa_csv.ReadOptions(autogenerate_column_names=not options.header),
                parse_options=pa_csv.ParseOptions(
                    delimiter=options.delimiter, quote_char=options.quote,
                    escape_char=options.escape or False, ignore_empty_lines=True,
                ),
                convert_options=pa_csv.ConvertOptions(
                    null_values=[options.null_value], strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    true_values=TRUE_VALUES, false_values=FALSE_VALUES,
                ),
            )
            if not options.header:
                table = table.rename_columns([f"_c{i}" for i in range(table.num_columns)])
        else:
            table = pa_json.read_json(pa.BufferReader(data))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            options.path,
            f"cannot infer a schema: the first MiB of data is not {options.format} that PyArrow "
            "parses (pass one with .schema(...))",
        ) from None
    return inferred_schema(table)


def row_count_data_schema(options: ReadOptions) -> StructType:
    """The schema a read without ``.schema(...)`` would use; for an input with no records, any
    (there is nothing to parse: the count is 0)."""
    try:
        return infer_schema(options)
    except NoInput:
        return StructType([StructField("value", StringType(), True)])
