"""The ``ppml`` Spark data source: encrypted csv, json lines and text (ppml envelopes, or BigDL
legacy files to read) and Parquet with column encryption, read and written through Spark's
Python Data Source API as Arrow record batches. :func:`register` makes ``format("ppml")``
available in a session and :func:`count_rows` counts records inside the source. How to use it
(options, how reads and writes run, save modes, limits) is the manual docs/spark-source.md.
"""

try:
    from ppml.spark.source.datasource import PpmlDataSource, count_rows, register
    from ppml.spark.source.partitions import PpmlParquetPartition, PpmlPartition
    from ppml.spark.source.read import PpmlPushdownReader, PpmlReader, PpmlRowCountReader
    from ppml.spark.source.write import PpmlCommitMessage, PpmlWriter
except ImportError as exc:  # pragma: no cover - depends on the installation
    if (exc.name or "").partition(".")[0] == "ppml":
        raise
    raise ImportError(f"ppml.spark needs `pip install ppml[spark]` ({exc})") from exc

__all__ = [
    "PpmlCommitMessage",
    "PpmlDataSource",
    "PpmlParquetPartition",
    "PpmlPartition",
    "PpmlPushdownReader",
    "PpmlReader",
    "PpmlRowCountReader",
    "PpmlWriter",
    "count_rows",
    "register",
]
