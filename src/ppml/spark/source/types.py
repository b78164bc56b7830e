"""Mapping between Arrow and Spark types: what a sample or a Parquet file's columns become in
Spark, and tables read from Parquet conformed to the exact Arrow schema Spark expects (parsed
tables are conformed by :mod:`ppml.tabular.parse`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.errors import PySparkTypeError
from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from ppml.errors import InputError

__all__ = [
    "arrow_schema",
    "conform_parquet",
    "inferred_schema",
    "parquet_columns",
    "parquet_schema",
]


def _spark_type(arrow_type: pa.DataType) -> DataType:
    """The Spark type a column inferred by PyArrow becomes."""
    if pa.types.is_integer(arrow_type):
        return LongType()
    if pa.types.is_floating(arrow_type):
        return DoubleType()
    if pa.types.is_boolean(arrow_type):
        return BooleanType()
    if pa.types.is_timestamp(arrow_type):
        return TimestampType()
    if pa.types.is_date(arrow_type):
        return DateType()
    if pa.types.is_struct(arrow_type):
        return StructType([
            StructField(arrow_type.field(i).name, _spark_type(arrow_type.field(i).type), True)
            for i in range(arrow_type.num_fields)
        ])
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return ArrayType(_spark_type(arrow_type.value_type), True)
    return StringType()


def inferred_schema(table: pa.Table) -> StructType:
    """The Spark schema of a sample PyArrow parsed with inferred types."""
    return StructType([
        StructField(field.name, _spark_type(field.type), True) for field in table.schema
    ])


def _parquet_spark_type(arrow_type: pa.DataType) -> DataType:
    """The Spark type of a Parquet column that PyArrow reads as ``arrow_type``: Spark's own
    mapping, with unsigned integers widened as Spark's Parquet reader widens them and
    dictionaries read as their values."""
    if pa.types.is_dictionary(arrow_type):
        return _parquet_spark_type(arrow_type.value_type)
    # Parquet written by parquet-rs (tpchgen-cli, for one) stores an Arrow schema that makes PyArrow
    # read strings as views, which Spark's Arrow conversion does not take: they are strings to Spark.
    if pa.types.is_string_view(arrow_type):
        return StringType()
    if pa.types.is_binary_view(arrow_type):
        return BinaryType()
    widened = {pa.uint8(): ShortType(), pa.uint16(): IntegerType(), pa.uint32(): LongType(),
               pa.uint64(): DecimalType(20, 0)}
    if arrow_type in widened:
        return widened[arrow_type]
    return from_arrow_type(arrow_type, prefer_timestamp_ntz=True)


def parquet_schema(arrow_schema: pa.Schema, path: Path | str) -> StructType:
    """The Spark schema of a Parquet file whose Arrow schema is ``arrow_schema``."""
    fields = []
    for field in arrow_schema:
        try:
            spark_type = _parquet_spark_type(field.type)
        except (PySparkTypeError, TypeError):
            raise InputError(
                path, f"column {field.name!r} has type {field.type}, which Spark cannot read"
            ) from None
        fields.append(StructField(field.name, spark_type, True))
    return StructType(fields)


def parquet_columns(schema: StructType, file_schema: pa.Schema, path: Path | str) -> list[str]:
    """The file's column for each field of ``schema``: the one with its name, else the one whose
    name differs only in case (Spark resolves names without case by default)."""
    names = file_schema.names
    columns = []
    for name in schema.fieldNames():
        matches = [name] * names.count(name) or [n for n in names if n.lower() == name.lower()]
        if len(matches) != 1:
            reason = f"has {len(matches)} columns named" if matches else "has no column"
            raise InputError(path, f"{reason} {name!r} (the schema is {schema.simpleString()})")
        columns.append(matches[0])
    return columns


def conform_parquet(
    table: pa.Table, columns: Sequence[str], target: pa.Schema, path: str
) -> pa.Table:
    """``columns`` of a table read from Parquet, cast to ``target``."""
    arrays = []
    for name, field in zip(columns, target, strict=True):
        column = table.column(name)
        if column.type != field.type:
            try:
                column = pc.cast(column, field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                # PyArrow's message may quote the offending plaintext: it is not passed on.
                raise InputError(
                    path, f"column {name!r}: its {column.type} values do not fit {field.type} "
                    "(details withheld: they would quote plaintext)",
                ) from None
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=target)


def arrow_schema(schema: StructType) -> pa.Schema:
    """The schema Spark expects of the batches a Python source yields."""
    return to_arrow_schema(schema, timezone="UTC")
