"""Filter pushdown: which of Spark's filters the source runs itself, and as what Arrow
expression (see docs/spark-source.md for what is pushed and why it is opt-in)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.datasource import (
    EqualTo,
    Filter,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNotNull,
    IsNull,
    LessThan,
    LessThanOrEqual,
)

from ppml.tabular.parquet import Predicate

__all__ = ["filter_expression", "pushable"]

_COMPARISONS: Final = {
    EqualTo: "eq",
    GreaterThan: "gt",
    GreaterThanOrEqual: "ge",
    LessThan: "lt",
    LessThanOrEqual: "le",
}


def _literal_fits(value: Any, arrow_type: pa.DataType) -> bool:
    """True if comparing ``arrow_type`` with ``value`` in Arrow means what it means in Spark."""
    if value is None:
        return False
    if pa.types.is_integer(arrow_type):
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        try:
            pa.scalar(value, type=arrow_type)
        except (OverflowError, pa.ArrowInvalid):
            return False
        return True
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return isinstance(value, str)
    if pa.types.is_boolean(arrow_type):
        return isinstance(value, bool)
    if pa.types.is_date32(arrow_type):
        return isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)
    return False


def pushable(spark_filter: Filter, target: pa.Schema) -> Predicate | None:
    """The filter as ``(operation, column, value)`` if it can run in the source, else None."""
    attribute = getattr(spark_filter, "attribute", None)
    if not isinstance(attribute, tuple) or len(attribute) != 1:
        return None
    column = attribute[0]
    if target.names.count(column) != 1:
        return None
    arrow_type = target.field(column).type
    if isinstance(spark_filter, IsNull):
        return ("isnull", column, None)
    if isinstance(spark_filter, IsNotNull):
        return ("notnull", column, None)
    if isinstance(spark_filter, In):
        values = tuple(v for v in spark_filter.value if v is not None)
        if values and all(_literal_fits(v, arrow_type) for v in values):
            return ("in", column, values)
        return None
    operation = _COMPARISONS.get(type(spark_filter))
    value = getattr(spark_filter, "value", None)
    if operation is not None and _literal_fits(value, arrow_type):
        return (operation, column, value)
    return None


def filter_expression(pushed: Sequence[Predicate], target: pa.Schema) -> pc.Expression | None:
    """The conjunction of the pushed filters on tables of ``target``; None if there are none."""
    expression = None
    for operation, column, value in pushed:
        field = pc.field(column)
        arrow_type = target.field(column).type
        if operation == "isnull":
            term = field.is_null()
        elif operation == "notnull":
            term = field.is_valid()
        elif operation == "in":
            term = field.isin(pa.array(value, type=arrow_type))
        else:
            literal = pa.scalar(value, type=arrow_type)
            term = {
                "eq": field == literal,
                "gt": field > literal,
                "ge": field >= literal,
                "lt": field < literal,
                "le": field <= literal,
            }[operation]
        expression = term if expression is None else expression & term
    return expression
