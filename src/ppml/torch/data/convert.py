"""Rows of Arrow tables as PyTorch samples: which columns, as what, per sample or per batch.

Two shapes of output, chosen when a dataset is built:

* ``columns`` (default: every column): a sample is a ``dict`` from column name to value: a 0-d
  tensor for integer, floating point and boolean columns (their Arrow type's dtype), the Python
  value for anything else (strings, dates, …), which the default collate gathers into lists.
* ``features`` and ``label``: a sample is ``(features, label)``, ``features`` a 1-d tensor of the
  feature columns in order, as ``dtype`` (float32 by default), ``label`` a 0-d tensor of the label
  column's own dtype (or ``features`` alone without a label). Feature and label columns must be
  numeric or boolean.

Nulls: a null in a floating point column reads as NaN; a null in an integer or boolean column
fails (no tensor holds it), with an :class:`~ppml.errors.InputError` that names the column, not
the value. Conversion is done per block of rows (a parsed block, a row group), column by column,
so a sample costs an index into tensors that already exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ppml.errors import InputError, UsageError

__all__ = ["Block", "TableOutput"]

Column = torch.Tensor | list[Any]


def _numeric(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_boolean(data_type))


def _numpy(column: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    if column.null_count and not pa.types.is_floating(column.type):
        raise InputError(source, f"column {name!r} has nulls, which a {column.type} tensor cannot hold")
    return column.to_numpy()


def _tensor(values: np.ndarray) -> torch.Tensor:
    if not values.flags.writeable or not values.flags.c_contiguous:
        values = np.array(values, copy=True, order="C")
    return torch.from_numpy(values)


class Block:
    """Rows of one block as tensors (and lists): samples and batches are views into them.

    ``kind`` says what a sample is: ``dict`` (column name to value), ``pair`` (``features`` and,
    if there is one, ``label``: a tuple) or ``single`` (the one column ``value``).
    """

    def __init__(self, columns: dict[str, Column], rows: int, *, kind: str) -> None:
        self.columns = columns
        self.rows = rows
        self.kind = kind

    def __len__(self) -> int:
        return self.rows

    def _shaped(self, part: dict[str, Any]) -> Any:
        if self.kind == "single":
            return part["value"]
        if self.kind == "pair":
            return part["features"] if "label" not in part else (part["features"], part["label"])
        return part

    def sample(self, index: int) -> Any:
        return self._shaped({name: values[index] for name, values in self.columns.items()})

    def batch(self, start: int, stop: int) -> Any:
        return self._shaped({name: values[start:stop] for name, values in self.columns.items()})

    def take(self, order: np.ndarray) -> Block:
        """The rows in ``order`` (a permutation, when shuffling)."""
        index = torch.from_numpy(order)
        columns: dict[str, Column] = {
            name: values[index] if isinstance(values, torch.Tensor) else [values[i] for i in order.tolist()]
            for name, values in self.columns.items()
        }
        return Block(columns, len(order), kind=self.kind)

    def slice(self, start: int, stop: int) -> Block:
        columns: dict[str, Column] = {name: values[start:stop] for name, values in self.columns.items()}
        return Block(columns, stop - start, kind=self.kind)

    @staticmethod
    def concat(blocks: Sequence[Block]) -> Block:
        if len(blocks) == 1:
            return blocks[0]
        columns: dict[str, Column] = {}
        for name, first in blocks[0].columns.items():
            if isinstance(first, torch.Tensor):
                columns[name] = torch.cat([block.columns[name] for block in blocks])  # type: ignore[misc]
            else:
                columns[name] = [value for block in blocks for value in block.columns[name]]
        return Block(columns, sum(block.rows for block in blocks), kind=blocks[0].kind)


class TableOutput:
    """How the rows of tables with ``schema`` become samples (see the module docstring).

    Raises:
        UsageError: both ``columns`` and ``features``, a label without features, a column that is
            not in ``schema``, or a feature or label column that is not numeric.
    """

    def __init__(self, schema: pa.Schema, *, columns: Sequence[str] | None = None,
                 features: Sequence[str] | None = None, label: str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        if features is not None and columns is not None:
            raise UsageError("pass either columns (dict samples) or features/label ((features, label) samples)")
        if label is not None and features is None:
            raise UsageError("a label needs features")
        self.pair = features is not None
        self.features = list(features) if features is not None else []
        self.label = label
        self.dtype = dtype
        self.names = (self.features + ([label] if label is not None else []) if self.pair
                      else list(columns) if columns is not None else list(schema.names))
        unknown = [name for name in self.names if schema.get_field_index(name) < 0]
        if unknown:
            raise UsageError(f"no column {', '.join(map(repr, unknown))} (the columns are {', '.join(schema.names)})")
        if self.pair:
            if not self.features:
                raise UsageError("features names no column")
            not_numeric = [name for name in self.names if not _numeric(schema.field(name).type)]
            if not_numeric:
                raise UsageError(f"features and label must be numeric or boolean: {', '.join(not_numeric)} are not")
        self._numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype

    def convert(self, table: pa.Table, source: str) -> Block:
        """The rows of ``table`` (which has at least the output's columns) as a block."""
        rows = table.num_rows
        if self.pair:
            features = np.empty((rows, len(self.features)), dtype=self._numpy_dtype)
            for index, name in enumerate(self.features):
                features[:, index] = _numpy(table.column(name), name, source)
            columns: dict[str, Column] = {"features": torch.from_numpy(features)}
            if self.label is not None:
                columns["label"] = _tensor(_numpy(table.column(self.label), self.label, source))
            return Block(columns, rows, kind="pair")
        columns = {}
        for name in self.names:
            column = table.column(name)
            columns[name] = (_tensor(_numpy(column, name, source)) if _numeric(column.type)
                             else column.to_pylist())
        return Block(columns, rows, kind="dict")
