"""Parsing decrypted csv, json lines and text into tables of the Spark schema: ppml's one line
parser (:mod:`ppml.tabular.parse`), given Spark's types and the source's option names."""

from __future__ import annotations

from pyspark.sql.types import StructType

from ppml.spark.source.options import ReadOptions
from ppml.spark.source.types import arrow_schema
from ppml.tabular import parse as _core
from ppml.tabular.parse import FALSE_VALUES, TRUE_VALUES, CsvOptions, LineParser

__all__ = ["FALSE_VALUES", "TRUE_VALUES", "Parser", "check_schema", "csv_options"]


def csv_options(options: ReadOptions) -> CsvOptions:
    """The csv dialect the read's options describe."""
    return CsvOptions(delimiter=options.delimiter, quote=options.quote, escape=options.escape,
                      null_value=options.null_value)


def check_schema(options: ReadOptions, schema: StructType) -> None:
    """Check, on the driver, that ``schema`` and the options suit the format, so that a
    :class:`Parser` can be built for them in each task.

    Raises:
        UsageError: text with a schema other than one string column, csv with a nested column,
            or a csv delimiter, quote or escape that is not ASCII.
    """
    _core.check_schema(options.format, arrow_schema(schema), csv_options(options))


class Parser(LineParser):
    """Parses owned lines of one format into tables of exactly the Spark schema's Arrow type
    (see :class:`~ppml.tabular.parse.LineParser`). A task builds one for its partition; the
    schema must have passed :func:`check_schema`."""

    def __init__(self, options: ReadOptions, schema: StructType) -> None:
        super().__init__(options.format, arrow_schema(schema), csv_options(options),
                         schema_text=schema.simpleString())
