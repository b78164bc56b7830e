"""Parsing decrypted csv, json lines and text with PyArrow into tables of one Arrow schema: the one
parser of ppml's line formats. The Spark source wraps it with Spark's types and option names
(``ppml.spark.source.parse``); the PyTorch datasets use it as it is.

A parser is handed blocks of whole lines (see :mod:`ppml.tabular.splits`) and parses every block
with the same column names and types, so the blocks of one file, cut anywhere on line ends, parse
to the rows the whole file would. Parsing follows PyArrow (docs/spark-source.md, "Parsing"): a
record cannot span lines, only ``\\n`` ends a line (``\\r\\n`` is one line end), in csv only the
null value reads as null and a quoted empty string stays an empty string, timestamps without a
zone offset are read as UTC.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from ppml.errors import InputError, UsageError

__all__ = [
    "FALSE_VALUES",
    "LINE_FORMATS",
    "TRUE_VALUES",
    "CsvOptions",
    "LineParser",
    "check_schema",
    "conform",
    "infer_table",
    "parsed_as",
]

TRUE_VALUES: Final = ["true", "True", "TRUE"]
FALSE_VALUES: Final = ["false", "False", "FALSE"]
LINE_FORMATS: Final = ("csv", "json", "text")
"""The formats of records one to a line, which split on segment ranges (Parquet splits on row groups)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CsvOptions:
    """How csv is written: the field delimiter, the quote character (doubled inside a quoted
    field), an optional escape character, and the text that reads as null. Spark's defaults."""

    delimiter: str = ","
    quote: str = '"'
    escape: str | None = None
    null_value: str = ""


def _schema_text(schema: pa.Schema) -> str:
    return "struct<" + ",".join(f"{field.name}:{field.type}" for field in schema) + ">"


def check_schema(fmt: str, schema: pa.Schema, csv: CsvOptions) -> None:
    """Check that ``schema`` and ``csv`` suit the format, so that a :class:`LineParser` can be
    built for them (where a job is planned, before its tasks build theirs).

    Raises:
        UsageError: an unknown format, text with a schema other than one string column, csv with
            a nested column, or a csv delimiter, quote or escape that is not one ASCII character.
    """
    if fmt not in LINE_FORMATS:
        raise UsageError(f"format must be one of {', '.join(LINE_FORMATS)}, got {fmt!r}")
    if fmt == "text" and (len(schema) != 1 or not pa.types.is_string(schema[0].type)):
        raise UsageError("format text reads one string column; its schema must be 'value STRING'")
    if fmt == "csv":
        for field in schema:
            if pa.types.is_nested(field.type):
                raise UsageError(f"format csv cannot read nested column {field.name!r}")
        for name, char in (("sep", csv.delimiter), ("quote", csv.quote), ("escape", csv.escape)):
            if char is not None and (len(char) != 1 or not char.isascii()):
                raise UsageError(f"option {name} must be one ASCII character, got {char!r}")


def parsed_as(target: pa.DataType, fmt: str) -> pa.DataType:
    """What PyArrow parses a column as before :func:`conform` makes it ``target``: zoned
    timestamps (and json dates) go through strings, which PyArrow cannot parse into them."""
    if pa.types.is_timestamp(target) and target.tz is not None:
        return pa.string()
    if fmt == "json" and pa.types.is_date(target):
        return pa.string()
    return target


def _convert(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    if column.type == target:
        return column
    if pa.types.is_timestamp(target) and pa.types.is_string(column.type):
        try:
            return pc.cast(column, target)
        except pa.ArrowInvalid:
            # No zone offset in the text: the value is taken as UTC.
            return pc.cast(pc.cast(column, pa.timestamp(target.unit)), target)
    return pc.cast(column, target)


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """A parsed table (columns as :func:`parsed_as` says) with exactly the types of ``target``."""
    columns = [_convert(table.column(i), field.type) for i, field in enumerate(target)]
    return pa.Table.from_arrays(columns, schema=target)


class LineParser:
    """Parses blocks of whole lines of one format into tables of exactly ``schema``.

    The schema must have passed :func:`check_schema`. csv columns are named by the schema, in
    order (a header line is the caller's to skip); json fields are matched by name (missing ones
    are null, unknown ones ignored); text is one string column of the lines without their ends.
    ``schema_text`` is how errors name the schema (Spark's ``simpleString``, say).

    csv blocks take a faster PyArrow configuration when it cannot change the result: a block
    without the quote (and escape) character is parsed with quoting off, and a block that is
    all ASCII without UTF-8 validation (every field of it is valid UTF-8). Measured on people
    csv, each saves 15-25 % of the parse.
    """

    def __init__(self, fmt: str, schema: pa.Schema, csv: CsvOptions | None = None, *,
                 schema_text: str | None = None) -> None:
        csv = csv or CsvOptions()
        self.format = fmt
        self.schema = schema
        self._schema_text = schema_text or _schema_text(schema)
        self._names = schema.names
        self._parse_schema = pa.schema(
            [pa.field(f.name, parsed_as(f.type, fmt), nullable=True) for f in schema]
        )
        self._csv_special = [c.encode() for c in (csv.quote, csv.escape) if c]
        self._csv_parse = {
            quoting: pa_csv.ParseOptions(
                delimiter=csv.delimiter,
                quote_char=csv.quote if quoting else False,
                escape_char=(csv.escape or False) if quoting else False,
                double_quote=True,
                newlines_in_values=False,
                ignore_empty_lines=True,
            )
            for quoting in (False, True)
        }
        self._csv_convert = {
            check_utf8: pa_csv.ConvertOptions(
                column_types=self._parse_schema,
                null_values=[csv.null_value],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=TRUE_VALUES,
                false_values=FALSE_VALUES,
                check_utf8=check_utf8,
            )
            for check_utf8 in (False, True)
        }
        self._csv_read = pa_csv.ReadOptions(column_names=self._names, use_threads=True)
        # Counting: one column converted, as text, without UTF-8 validation.
        self._csv_count_convert = pa_csv.ConvertOptions(
            include_columns=self._names[:1], column_types={self._names[0]: pa.string()},
            check_utf8=False,
        ) if self._names else None

    def parse(self, data: bytearray, source: str) -> pa.Table | None:
        """The records of ``data`` (whole lines), or None for an empty block.

        Raises:
            InputError: a value does not fit its column's type, or a row has the wrong number of
                fields (PyArrow's message is withheld: it may quote plaintext).
        """
        if not len(data):
            return None
        with self._withheld_errors(source):
            if self.format == "csv":
                table = self._csv(data)
            elif self.format == "json":
                table = self._json(memoryview(data))
            else:
                table = self._text(memoryview(data))
            return conform(table, self.schema)

    def count(self, data: bytearray, source: str) -> int:
        """The number of records ``parse`` would return, without converting their values: csv
        tokenizes every field (a row with the wrong number of fields still fails) and converts
        none, like Spark's csv reader counting with every column pruned."""
        if self.format != "csv" or self._csv_count_convert is None:
            table = self.parse(data, source)
            return 0 if table is None else table.num_rows
        if not len(data):
            return 0
        with self._withheld_errors(source):
            return self._csv(data, self._csv_count_convert).num_rows

    @contextlib.contextmanager
    def _withheld_errors(self, source: str) -> Iterator[None]:
        try:
            yield
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # PyArrow's message may quote the offending plaintext: it is not passed on.
            raise InputError(
                source,
                f"cannot parse the decrypted {self.format} data with the schema "
                f"{self._schema_text}: a value does not fit its column type, or a row "
                "has the wrong number of fields (details withheld: they would quote plaintext)",
            ) from None

    def _csv(self, data: bytearray, convert: pa_csv.ConvertOptions | None = None) -> pa.Table:
        quoting = any(data.find(special) >= 0 for special in self._csv_special)
        return pa_csv.read_csv(
            pa.BufferReader(pa.py_buffer(data)),
            read_options=self._csv_read,
            parse_options=self._csv_parse[quoting],
            convert_options=convert or self._csv_convert[not data.isascii()],
        )

    def _json(self, view: memoryview) -> pa.Table:
        # With an explicit schema every column is present, in order; missing fields are null.
        return pa_json.read_json(
            pa.BufferReader(pa.py_buffer(view)),
            read_options=pa_json.ReadOptions(use_threads=True),
            parse_options=pa_json.ParseOptions(
                explicit_schema=self._parse_schema, unexpected_field_behavior="ignore"
            ),
        )

    def _text(self, view: memoryview) -> pa.Table:
        offsets = pa.array([0, len(view)], pa.int64()).buffers()[1]
        whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(view)])
        lines = pc.split_pattern(whole, pattern="\n").flatten()
        if view[-1] == 0x0A:
            lines = lines.slice(0, len(lines) - 1)
        values = lines.cast(pa.large_string()).cast(pa.string())
        crlf = pc.ends_with(values, "\r")
        if pc.any(crlf).as_py():
            values = pc.if_else(crlf, pc.utf8_slice_codeunits(values, 0, -1), values)
        return pa.Table.from_arrays([values], names=self._names)


def infer_table(sample: bytes, fmt: str, csv: CsvOptions | None = None, *, header: bool, source: Path | str,
                remedy: str = "pass a schema") -> pa.Table:
    """``sample`` (whole lines from the start of a file) parsed with the types PyArrow infers: what
    a schema is inferred from. csv without a header names its columns ``_c0``, ``_c1``, … as Spark
    does; text is not inferred (it is always one string column).

    Raises:
        InputError: the sample is not ``fmt`` that PyArrow parses (the message ends with ``remedy``).
    """
    csv = csv or CsvOptions()
    try:
        if fmt == "csv":
            table = pa_csv.read_csv(
                pa.BufferReader(sample),
                read_options=pa_csv.ReadOptions(autogenerate_column_names=not header),
                parse_options=pa_csv.ParseOptions(
                    delimiter=csv.delimiter, quote_char=csv.quote,
                    escape_char=csv.escape or False, ignore_empty_lines=True,
                ),
                convert_options=pa_csv.ConvertOptions(
                    null_values=[csv.null_value], strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    true_values=TRUE_VALUES, false_values=FALSE_VALUES,
                ),
            )
            if not header:
                table = table.rename_columns([f"_c{i}" for i in range(table.num_columns)])
            return table
        if fmt == "json":
            return pa_json.read_json(pa.BufferReader(sample))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            source, f"cannot infer a schema: the sample is not {fmt} that PyArrow parses ({remedy})",
        ) from None
    raise UsageError(f"no schema inference for format {fmt!r}")
