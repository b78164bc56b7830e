"""Encoding a write task's record batches as csv, json lines, text (into an envelope) or PME
Parquet; each encoder returns the number of rows it wrote."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ppml.core.envelope import EnvelopeWriter
from ppml.spark.source.options import WriteOptions
from ppml.tabular.parquet import PmeKeys

__all__ = ["ROW_GROUP_BUFFER_BYTES", "encode_csv", "encode_json", "encode_parquet", "encode_text"]

ROW_GROUP_BUFFER_BYTES: Final = 128 << 20
"""A Parquet write task writes its buffered rows as a row group once they take this much memory
(Spark's ``parquet.block.size``)."""


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _csv_field(text: str, delimiter: str) -> str:
    if not text or any(c in text for c in (delimiter, '"', "\n", "\r")):
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_rows(batch: pa.RecordBatch, delimiter: str) -> pa.Buffer:
    """The batch as csv lines, unquoted (as Spark writes csv) unless a value needs quotes.

    PyArrow either quotes every string or refuses values that need quotes, so a batch is
    written unquoted first and again, all strings quoted, if that fails. An empty string must
    be quoted to read back as itself rather than as null.
    """
    empty_strings = any(
        (pa.types.is_string(column.type) or pa.types.is_large_string(column.type))
        and pc.any(pc.equal(column, "")).as_py()
        for column in batch.columns
    )
    styles = ("needed",) if empty_strings else ("none", "needed")
    for style in styles:
        sink = pa.BufferOutputStream()
        try:
            pa_csv.write_csv(batch, sink, pa_csv.WriteOptions(
                include_header=False, delimiter=delimiter, quoting_style=style))
        except pa.ArrowInvalid:
            if style == styles[-1]:
                raise
            continue
        return sink.getvalue()
    raise AssertionError("unreachable")


def encode_csv(envelope: EnvelopeWriter, batches: Iterator[pa.RecordBatch],
               schema: pa.Schema, options: WriteOptions) -> int:
    delimiter = options.delimiter
    if options.header:
        line = delimiter.join(_csv_field(name, delimiter) for name in schema.names) + "\n"
        envelope.write(line.encode("utf-8"))
    rows = 0
    for batch in batches:
        if batch.num_rows:
            envelope.write(memoryview(_csv_rows(batch, delimiter)))
            rows += batch.num_rows
    return rows


def encode_json(envelope: EnvelopeWriter, batches: Iterator[pa.RecordBatch]) -> int:
    rows = 0
    encoder = json.JSONEncoder(default=_json_value, separators=(",", ":"), ensure_ascii=False)
    for batch in batches:
        lines = [
            encoder.encode({k: v for k, v in row.items() if v is not None}) + "\n"
            for row in batch.to_pylist()
        ]
        envelope.write("".join(lines).encode("utf-8"))
        rows += batch.num_rows
    return rows


def encode_text(envelope: EnvelopeWriter, batches: Iterator[pa.RecordBatch]) -> int:
    rows = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        lines = pc.binary_join_element_wise(pc.fill_null(batch.column(0), ""), "", "\n")
        lines = lines.cast(pa.large_string())
        # The joined values lie back to back in the data buffer: write them in one piece.
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
        first, last = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
        envelope.write(memoryview(lines.buffers()[2])[first:last])
        rows += batch.num_rows
    return rows


def encode_parquet(raw: Any, batches: Iterable[pa.RecordBatch], schema: pa.Schema, keys: PmeKeys,
                   options: WriteOptions) -> int:
    """Write ``batches`` as one PME file with every column encrypted, in row groups of
    ``rowGroupSize`` rows (the last one, or one that reached ROW_GROUP_BUFFER_BYTES, fewer)."""
    properties = keys.encryption_properties(
        schema.names, footer_key=options.key_id, column_keys=options.column_keys
    )
    size = options.row_group_size
    rows = 0
    pending: list[pa.RecordBatch] = []
    pending_rows = pending_bytes = 0
    writer = pq.ParquetWriter(raw, schema, encryption_properties=properties)
    try:
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            pending_bytes += batch.nbytes
            rows += batch.num_rows
            if pending_rows >= size:
                table = pa.Table.from_batches(pending, schema)
                whole = pending_rows - pending_rows % size
                writer.write_table(table.slice(0, whole), row_group_size=size)
                rest = table.slice(whole)
                pending, pending_rows, pending_bytes = rest.to_batches(), rest.num_rows, rest.nbytes
            elif pending_bytes >= ROW_GROUP_BUFFER_BYTES:
                table = pa.Table.from_batches(pending, schema)
                writer.write_table(table, row_group_size=pending_rows)
                pending, pending_rows, pending_bytes = [], 0, 0
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=size)
    finally:
        writer.close()
    return rows
