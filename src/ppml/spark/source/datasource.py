"""The data source Spark instantiates for ``format("ppml")``, and its registration in a session:
options in, a schema, a reader or a writer out."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceReader
from pyspark.sql.types import StructType

from ppml.errors import UsageError
from ppml.spark.source.infer import infer_schema, row_count_data_schema
from ppml.spark.source.options import ReadOptions, WriteOptions
from ppml.spark.source.process import freeze_loaded_objects
from ppml.spark.source.read import (
    ROW_COUNT_SCHEMA,
    PpmlPushdownReader,
    PpmlReader,
    PpmlRowCountReader,
)
from ppml.spark.source.write import PpmlWriter, start_job

__all__ = ["PpmlDataSource", "count_rows", "register"]


def register(spark: Any, *, min_partitions: int | None = None) -> None:
    """Make ``format("ppml")`` available in ``spark`` (a SparkSession).

    Reads in this session split their input for at least ``min_partitions`` tasks unless they
    say otherwise (option ``minPartitions``, see docs/spark-source.md); by default the session's
    ``defaultParallelism`` now, which is what Spark's own file sources divide by. (Python data
    sources are planned in a separate Python process that cannot ask Spark, hence the value is
    taken here and registered with the source.)
    """
    if min_partitions is None:
        min_partitions = _default_parallelism(spark)
    elif min_partitions <= 0:
        raise UsageError(f"min_partitions must be positive, got {min_partitions}")
    # A subclass made here is pickled with its attribute (by value), unlike PpmlDataSource,
    # which Spark's Python workers import by name.
    source = type(
        "PpmlDataSource",
        (PpmlDataSource,),
        {"__module__": __name__, "__doc__": PpmlDataSource.__doc__,
         "session_min_partitions": min_partitions},
    )
    spark.dataSource.register(source)


def count_rows(spark: Any, path: str, **options: str) -> int:
    """The number of records ``spark.read.format("ppml")`` with these options reads from
    ``path``, counted inside the source (``option("rowCount", "true")``, see
    :class:`~ppml.spark.source.read.PpmlRowCountReader`) instead of by ``count()`` on every row
    in the JVM."""
    reader = spark.read.format("ppml").option("rowCount", "true")
    for name, value in options.items():
        reader = reader.option(name, value)
    total = reader.load(path).agg({"rows": "sum"}).first()[0]
    return int(total or 0)


def _default_parallelism(spark: Any) -> int | None:
    try:
        parallelism = int(spark.sparkContext.defaultParallelism)
    except Exception:
        return None
    return parallelism if parallelism > 0 else None


class PpmlDataSource(DataSource):
    """``format("ppml")``: encrypted files through the KMS (see docs/spark-source.md)."""

    @classmethod
    def name(cls) -> str:
        return "ppml"

    session_min_partitions: int | None = None
    """The default of option ``minPartitions``: set by :func:`register` for its session."""

    def __init__(self, options: MutableMapping[str, str]) -> None:
        super().__init__(options)
        freeze_loaded_objects()  # Spark's planner workers make one and call it once or twice

    def schema(self) -> StructType:
        options = ReadOptions.parse(self.options)
        if options.row_count:
            return ROW_COUNT_SCHEMA
        return infer_schema(options)

    def reader(self, schema: StructType) -> DataSourceReader:
        options = ReadOptions.parse(self.options, self.session_min_partitions)
        if options.row_count:
            if schema != ROW_COUNT_SCHEMA:
                raise UsageError("option rowCount reads one column, rows BIGINT NOT NULL: "
                                 "do not pass .schema(...) with it")
            if options.filter_pushdown:
                raise UsageError(
                    "option rowCount counts every record: it does not take filterPushdown"
                )
            return PpmlRowCountReader(options, schema, row_count_data_schema(options))
        if options.filter_pushdown:
            return PpmlPushdownReader(options, schema)
        return PpmlReader(options, schema)

    def writer(self, schema: StructType, overwrite: bool) -> PpmlWriter:
        return start_job(WriteOptions.parse(self.options, overwrite), schema, overwrite=overwrite)
