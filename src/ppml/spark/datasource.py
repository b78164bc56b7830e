"""The ``ppml`` Spark data source: encrypted csv, json lines and text, and Parquet with column
encryption, through Spark's Python Data Source API, exchanging Arrow record batches with the JVM.

Reading::

    spark.read.format("ppml")
        .option("kms", "local:/keys")       # KMS URI; each process asks ``kms_for(uri)``
        .option("format", "csv")            # csv (default) | json | text | parquet
        .option("header", "true")           # csv: first line of each file is the header
        .schema("name STRING, age INT")     # optional: else inferred from the first ~1 MiB
        .load("/data/people")               # a file, or a directory (recursively)

Options (case-insensitive): ``kms``; ``format``; ``header`` (csv, default false); ``sep`` or
``delimiter`` (csv, default ``,``); ``quote`` (csv, default ``"``); ``escape`` (csv, default
none: quotes are escaped by doubling them); ``nullValue`` (csv, default empty string);
``maxPartitionBytes`` (plaintext bytes per task, at most; default 128 MiB); ``minPartitions``
(csv, json, text: split the input for at least this many tasks, default the session's
``defaultParallelism`` as :func:`register` saw it); ``filterPushdown`` (default false; see
below); ``mode`` (``ppml``, the default, or ``AES/CBC/PKCS5Padding`` for BigDL legacy
files, with ``bigdlPrimaryKey`` naming the primary key file, readable on every executor, and
``unsafeAllowWeakLegacyKeys`` to read files whose keys give no real protection); ``rowCount``
(default false: with it the DataFrame has one column ``rows`` and one row per partition, the
number of records in it, counted inside the source; :func:`count_rows` sums them. Spark 4.3
gives Python sources no column pruning or aggregate pushdown, so ``count()`` would move every
record through the JVM).

How a read runs. The driver lists the input (names starting with ``.`` or ``_`` are skipped),
reads each file's envelope header and size, and plans plaintext ranges on segment boundaries
(:mod:`ppml.spark.splits`) without unwrapping any key, sized as Spark sizes its own file splits:
``min(maxPartitionBytes, max(4 MiB, input bytes / minPartitions))``, so one large file keeps
every core busy and a 150 MB file on 2 cores gives 2 equal tasks. It then unwraps the first
file's key once, so a wrong KMS or key fails the job before any task runs. Each task opens its
files with :class:`~ppml.core.envelope.EnvelopeReader` (its own KMS client: keys never travel
through Spark), decrypts its segments straight into blocks of about 16 MiB of whole lines,
parses each block with PyArrow using the schema's column names and types (so every split parses
alike; the CSV header belongs to split 0 only), applies the pushed filters with
``pyarrow.compute`` and yields the block's record batches before decrypting the next. A csv
block without the quote character is parsed with quoting off, and an all-ASCII one without
UTF-8 validation: both give the same result, faster. Legacy
BigDL files are not splittable (one CBC stream and one HMAC): one task per file.
``format("parquet")`` reads differently: see below.

Schema inference reads at most the first MiB of the first non-empty file and maps PyArrow's
types to Spark's: integers to bigint, floating point to double, then boolean, string, date,
timestamp; a column with no values is a string. Values later in the data that do not fit the
inferred type fail the task (Spark's PERMISSIVE mode, which turns them into nulls, is not
implemented): pass a schema when the sample is not representative.

Parsing follows PyArrow, which differs from Spark's own csv/json/text readers in places: a
record cannot span lines (Spark's ``multiLine=false``); only ``\\n`` ends a line (``\\r\\n`` is
one line end, a lone ``\\r`` is data); in csv only ``nullValue`` reads as null and a quoted empty
string stays an empty string; timestamps without a zone offset are read as UTC (Spark would use
the session time zone); rows with more fields than the schema fail instead of being cut.

Filter pushdown, opt-in with ``option("filterPushdown", "true")`` (it also needs the session
setting ``spark.sql.python.filterPushdown.enabled=true``, else Spark fails the read with
``DATA_SOURCE_PUSHDOWN_DISABLED``). ``=``, ``>``, ``>=``, ``<``, ``<=``, ``IN`` on top-level
integer, string, boolean and date columns, and ``IS NULL``/``IS NOT NULL`` on any top-level
column, then run inside the source with ``pyarrow.compute``; everything else is left to Spark
(floating point comparisons too: Arrow and Spark order NaN differently).

It is off by default because Spark 4.3 caches the planned reader in the DataFrame's relation
and reuses it for a later scan of the same DataFrame when that scan has no filter Spark can
hand to Python: after ``df.filter("job = 'Developer'").count()``, ``df.count()`` on the *same*
``df`` silently counts Developers only. With pushdown on, build a fresh DataFrame
(``spark.read...load()``) for each query. Without it the cached reader carries no filters and
reuse is harmless; the cost is that every row crosses to the JVM before Spark drops it
(measured on a 228 MB people.csv, 2 cores: SimpleQuery took 2.2-3.0 s without pushdown and
1.5-2.2 s with it).

Parquet (``option("format", "parquet")``) is Parquet Modular Encryption through PyArrow, with
ppml's ``KmsClient`` (:mod:`ppml.spark.parquet`): the PME keys are wrapped by ppml primary keys,
so a key with a release policy releases them only to attested TEEs. Files are plain PME files
(no ppml envelope), written with an encrypted footer and every column encrypted; they
interoperate with :func:`~ppml.spark.parquet.write_encrypted_table` and
:func:`~ppml.spark.parquet.read_encrypted_table` both ways.

* Reading: the driver opens each file's footer (unwrapping the footer key only, so a wrong KMS
  or key fails before any task) and plans partitions of whole row groups, grouped in file
  order up to ``maxPartitionBytes`` (counted in the footer's uncompressed row-group bytes, plus
  Spark's 4 MiB open cost per file in a partition): one file may give several partitions, many
  small row groups share one. Without ``.schema(...)``, the schema is the first file's (its
  Arrow types mapped as Spark maps them: int32 is int, timestamps without a zone are
  timestamp_ntz, unsigned integers widen as Spark's Parquet reader widens them). Each task reads
  its row groups with PyArrow, only the schema's columns, so only their keys are unwrapped;
  ``filterPushdown`` (as for csv) skips row groups whose footer statistics rule the pushed
  filters out, then filters rows exactly with ``pyarrow.compute``. A schema column a file lacks
  fails the read (Spark's Parquet reader would give nulls). Files must have an encrypted footer
  (``PARE``): plaintext Parquet is refused, not read as if authenticated.
* Column pruning needs an explicit schema: Spark 4.3 gives Python data sources no required
  columns (its ``PythonScanBuilder`` does not implement ``SupportsPushDownRequiredColumns``), so
  ``df.select("age")`` still reads, and unwraps the keys of, every column of the schema, and
  fails if one of those keys is refused. ``.schema("age BIGINT")`` reads ``age`` alone.
* Writing: ``option("key", KEY_ID)`` is the footer key, which also encrypts every column that
  ``option("columnKeys", "KEY_ID:col1,col2;KEY_ID2:col3")`` does not give another primary key
  (top-level columns; key ids may contain ``:``, column names may not contain ``:``, ``,`` or
  ``;``). Each task writes ``part-<partition>-<job id>.parquet``, with row groups of
  ``rowGroupSize`` rows (default 1,048,576, PyArrow's) or fewer, buffering at most 128 MiB of
  Arrow data; a task with no rows writes no file, except partition 0, so the output always
  holds the schema. Commit and save modes are as below.

Writing::

    df.write.format("ppml").option("kms", "local:/keys").option("key", KEY_ID)
        .option("format", "csv").option("header", "true").mode("overwrite").save("/out")

Each task writes one envelope ``part-<partition>-<job id>.<format>.ppml`` (Parquet: see above)
under a fresh data key from ``kms_for(uri).generate_data_key(key)``, streaming through
:class:`~ppml.core.envelope.EnvelopeWriter`, into ``/out/_temporary/<job id>/``. Only the
driver's commit moves the files into ``/out`` and writes ``_SUCCESS``; an abort deletes the
job's temporary directory, so a failed job leaves no visible output. Write options: ``kms``,
``key``, ``format``, ``header``, ``sep``/``delimiter`` (csv), ``segmentSize`` (envelope segment
size, default 1 MiB). csv columns must be flat; csv values are unquoted, except that a batch
(about 10,000 rows) with a value that needs quotes (delimiter, quote, line break, or an empty
string, which unquoted would read back as null) has all its strings quoted; text needs exactly
one string column; json is written by Python's ``json`` (slower than csv), omitting null fields
as Spark does. Parquet adds ``columnKeys`` and ``rowGroupSize`` (see above).

Save modes. Spark 4.3 hands a Python data source only ``overwrite: bool``, and its planner
rejects ``ErrorIfExists`` (the default of ``df.write``) and ``Ignore`` with
``UNSUPPORTED_DATA_SOURCE_SAVE_MODE`` before the source is asked. So:

* ``mode("append")`` adds new files and never touches existing ones;
* ``mode("overwrite")`` replaces every data file under the path at commit (not before), after
  the new files are in place;
* ``mode("append").option("saveMode", "errorifexists")`` fails on the driver, before any task,
  if the path holds data files; ``option("saveMode", "ignore")`` writes nothing then (the input
  is still computed, and dropped);
* plain ``df.write.format("ppml").save(path)`` fails in Spark with
  ``UNSUPPORTED_DATA_SOURCE_SAVE_MODE``: always say ``mode(...)``.

Limits: paths are local or shared POSIX paths (every executor must see the same directory); a
commit is a sequence of renames, not atomic across files: a driver crash in the middle of it
can leave part of the new files visible (and, for overwrite, old ones not yet deleted). A task
still running when the job aborts may leave a file under ``_temporary``, which readers skip.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import decimal
import functools
import gc
import itertools
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq
    from pyspark.sql.datasource import (
        DataSource,
        DataSourceArrowWriter,
        DataSourceReader,
        EqualTo,
        Filter,
        GreaterThan,
        GreaterThanOrEqual,
        In,
        InputPartition,
        IsNotNull,
        IsNull,
        LessThan,
        LessThanOrEqual,
        WriterCommitMessage,
    )
    from pyspark.errors import PySparkTypeError
    from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
    from pyspark.sql.types import (
        ArrayType,
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
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"ppml.spark needs `pip install ppml[spark]` ({exc})") from exc

from ppml.core import legacy
from ppml.core.envelope import DEFAULT_SEGMENT_SIZE, EnvelopeHeader, EnvelopeReader, EnvelopeWriter
from ppml.errors import InputError, InvalidCiphertext, OutputExists, UsageError
from ppml.spark.keys import kms_for
from ppml.spark.parquet import (
    PmeKeys,
    Predicate,
    RowGroupSlice,
    open_encrypted,
    plan_row_groups,
    read_row_groups,
)
from ppml.spark.splits import (
    DEFAULT_MAX_SPLIT_BYTES,
    DEFAULT_OPEN_COST_BYTES,
    FileSplit,
    envelope_plaintext_size,
    iter_owned_blocks,
    list_input_files,
    max_split_bytes,
    pack_splits,
    plan_ranges,
)

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

FORMATS: Final = ("csv", "json", "text", "parquet")
ENVELOPE_MODE: Final = "ppml"
SAMPLE_BYTES: Final = 1 << 20
"""How much plaintext schema inference reads from the first non-empty file."""
ROW_GROUP_ROWS: Final = 1 << 20
"""Default ``rowGroupSize`` of Parquet writes: PyArrow's default maximum row group length."""
ROW_GROUP_BUFFER_BYTES: Final = 128 << 20
"""A Parquet write task writes its buffered rows as a row group once they take this much memory
(Spark's ``parquet.block.size``)."""
_TRUE_VALUES = ["true", "True", "TRUE"]
_FALSE_VALUES = ["false", "False", "FALSE"]


def register(spark: Any, *, min_partitions: int | None = None) -> None:
    """Make ``format("ppml")`` available in ``spark`` (a SparkSession).

    Reads in this session split their input for at least ``min_partitions`` tasks unless they
    say otherwise (option ``minPartitions``, see the module docstring); by default the session's
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
    :class:`PpmlRowCountReader`) instead of by ``count()`` on every row in the JVM."""
    reader = spark.read.format("ppml").option("rowCount", "true")
    for name, value in options.items():
        reader = reader.option(name, value)
    total = reader.load(path).agg({"rows": "sum"}).first()[0]
    return int(total or 0)


def _default_parallelism(spark: Any) -> int | None:
    try:
        parallelism = int(spark.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext: plan without it
        return None
    return parallelism if parallelism > 0 else None


@functools.cache
def _freeze_loaded_objects() -> None:
    """In a Spark Python worker, once: move the objects alive now (the imported modules of
    pyspark, pyarrow and ppml, mostly) to gc's permanent generation.

    Spark's Python workers and planners run ``gc.collect()`` after every task or call; walking
    those ~80,000 long-lived objects took 30-90 ms each time (pyspark 4.3, 2 cores), and a query
    makes four to seven such calls. Frozen objects are still freed by reference counting; only
    cyclic garbage among them would stay until the worker exits. Outside a Spark worker (a
    driver, a test calling the source directly) nothing is done.
    """
    if os.environ.get("SPARK_PYTHON_RUNTIME") == "PYTHON_WORKER":
        gc.freeze()


# -- options ----------------------------------------------------------------------------------


def _lower(options: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in options.items()}


def _flag(options: Mapping[str, str], name: str, default: bool) -> bool:
    value = options.get(name.lower())
    if value is None:
        return default
    if value.strip().lower() in ("true", "1", "yes"):
        return True
    if value.strip().lower() in ("false", "0", "no"):
        return False
    raise UsageError(f"option {name} must be true or false, got {value!r}")


def _positive_int(options: Mapping[str, str], name: str, default: int) -> int:
    number = _optional_positive_int(options, name)
    return default if number is None else number


def _optional_positive_int(options: Mapping[str, str], name: str) -> int | None:
    value = options.get(name.lower())
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"option {name} must be a whole number, got {value!r}") from None
    if number <= 0:
        raise UsageError(f"option {name} must be positive, got {number}")
    return number


def _path(options: Mapping[str, str]) -> str:
    path = options.get("path")
    if not path:
        raise UsageError("no path: use .load(PATH) or .save(PATH)")
    for prefix in ("file://", "file:"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    if "://" in path:
        raise UsageError(f"{path!r}: the ppml data source reads and writes local paths only")
    return path


def _format(options: Mapping[str, str]) -> str:
    fmt = options.get("format", "csv").lower()
    if fmt not in FORMATS:
        raise UsageError(f"option format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def _single_char(options: Mapping[str, str], names: Sequence[str], default: str | None) -> str | None:
    for name in names:
        value = options.get(name.lower())
        if value is not None:
            if len(value) != 1:
                raise UsageError(f"option {name} must be one character, got {value!r}")
            return value
    return default


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _ReadOptions:
    path: str
    format: str
    kms: str | None
    header: bool
    delimiter: str
    quote: str
    escape: str | None
    null_value: str
    max_split_bytes: int
    min_partitions: int | None
    filter_pushdown: bool
    legacy: bool
    bigdl_primary_key: str | None
    allow_weak_legacy_keys: bool
    row_count: bool

    @classmethod
    def parse(cls, raw: Mapping[str, str], min_partitions: int | None = None) -> _ReadOptions:
        options = _lower(raw)
        mode = options.get("mode", ENVELOPE_MODE)
        if mode not in (ENVELOPE_MODE, legacy.MODE):
            raise UsageError(f"option mode must be {ENVELOPE_MODE!r} or {legacy.MODE!r}, got {mode!r}")
        is_legacy = mode == legacy.MODE
        kms = options.get("kms")
        primary_key = options.get("bigdlprimarykey")
        if is_legacy and not primary_key:
            raise UsageError(f"option mode {legacy.MODE} needs option bigdlPrimaryKey (a file)")
        if not is_legacy and not kms:
            raise UsageError("option kms is required: the KMS URI, for example local:/path/to/keys")
        fmt = _format(options)
        if is_legacy and fmt == "parquet":
            raise UsageError(f"mode {legacy.MODE} reads csv, json or text, not parquet")
        allow_weak = _flag(options, "unsafeAllowWeakLegacyKeys", False)
        if allow_weak and not is_legacy:
            raise UsageError(f"unsafeAllowWeakLegacyKeys applies only to mode {legacy.MODE}")
        return cls(
            path=_path(options),
            format=fmt,
            kms=kms,
            header=_flag(options, "header", False),
            delimiter=_single_char(options, ("sep", "delimiter"), ",") or ",",
            quote=_single_char(options, ("quote",), '"') or '"',
            escape=_single_char(options, ("escape",), None),
            null_value=options.get("nullvalue", ""),
            max_split_bytes=_positive_int(options, "maxPartitionBytes", DEFAULT_MAX_SPLIT_BYTES),
            min_partitions=_optional_positive_int(options, "minPartitions") or min_partitions,
            filter_pushdown=_flag(options, "filterPushdown", False),
            legacy=is_legacy,
            bigdl_primary_key=primary_key,
            allow_weak_legacy_keys=allow_weak,
            row_count=_flag(options, "rowCount", False),
        )


_SAVE_MODES = ("errorifexists", "error", "ignore")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _WriteOptions:
    path: str
    format: str
    kms: str
    key_id: str
    header: bool
    delimiter: str
    segment_size: int
    save_mode: str | None
    column_keys: dict[str, tuple[str, ...]] | None
    row_group_size: int

    @classmethod
    def parse(cls, raw: Mapping[str, str], overwrite: bool) -> _WriteOptions:
        options = _lower(raw)
        kms, key_id = options.get("kms"), options.get("key")
        if not kms:
            raise UsageError("option kms is required: the KMS URI, for example local:/path/to/keys")
        if not key_id:
            raise UsageError("option key is required: the id of the primary key for new data keys")
        save_mode = options.get("savemode")
        if save_mode is not None:
            save_mode = save_mode.lower()
            if save_mode not in _SAVE_MODES:
                raise UsageError(
                    f"option saveMode must be errorifexists or ignore, got {save_mode!r}; "
                    "for append or overwrite use .mode(...)"
                )
            if overwrite:
                raise UsageError(f"option saveMode={save_mode} needs .mode('append'), not overwrite")
        fmt = _format(options)
        column_keys = _column_keys(options.get("columnkeys"))
        if column_keys is not None and fmt != "parquet":
            raise UsageError("option columnKeys applies to format parquet only")
        return cls(
            path=_path(options),
            format=fmt,
            kms=kms,
            key_id=key_id,
            header=_flag(options, "header", False),
            delimiter=_single_char(options, ("sep", "delimiter"), ",") or ",",
            segment_size=_positive_int(options, "segmentSize", DEFAULT_SEGMENT_SIZE),
            save_mode="errorifexists" if save_mode == "error" else save_mode,
            column_keys=column_keys,
            row_group_size=_positive_int(options, "rowGroupSize", ROW_GROUP_ROWS),
        )


def _column_keys(value: str | None) -> dict[str, tuple[str, ...]] | None:
    """``KEY_ID:col1,col2;KEY_ID2:col3`` as ``{key_id: (column, ...)}``; a key id may contain
    ``:`` (the last one ends it)."""
    if value is None:
        return None
    keys: dict[str, list[str]] = {}
    seen: set[str] = set()
    for entry in value.split(";"):
        if not entry.strip():
            continue
        key_id, colon, names = entry.rpartition(":")
        columns = [name.strip() for name in names.split(",")]
        if not colon or not key_id.strip() or not all(columns):
            raise UsageError(
                "option columnKeys must look like KEY_ID:col1,col2;KEY_ID2:col3, "
                f"got {entry.strip()!r}"
            )
        for column in columns:
            if column in seen:
                raise UsageError(f"option columnKeys names column {column!r} twice")
            seen.add(column)
        keys.setdefault(key_id.strip(), []).extend(columns)
    if not keys:
        raise UsageError("option columnKeys is empty")
    return {key_id: tuple(columns) for key_id, columns in keys.items()}


# -- types ------------------------------------------------------------------------------------


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


def _inferred_schema(table: pa.Table) -> StructType:
    return StructType([
        StructField(field.name, _spark_type(field.type), True) for field in table.schema
    ])


def _parquet_spark_type(arrow_type: pa.DataType) -> DataType:
    """The Spark type of a Parquet column that PyArrow reads as ``arrow_type``: Spark's own
    mapping, with unsigned integers widened as Spark's Parquet reader widens them and
    dictionaries read as their values."""
    if pa.types.is_dictionary(arrow_type):
        return _parquet_spark_type(arrow_type.value_type)
    widened = {pa.uint8(): ShortType(), pa.uint16(): IntegerType(), pa.uint32(): LongType(),
               pa.uint64(): DecimalType(20, 0)}
    if arrow_type in widened:
        return widened[arrow_type]
    return from_arrow_type(arrow_type, prefer_timestamp_ntz=True)


def _parquet_schema(arrow_schema: pa.Schema, path: Path | str) -> StructType:
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


def _parquet_columns(schema: StructType, file_schema: pa.Schema, path: Path | str) -> list[str]:
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


def _conform_parquet(
    table: pa.Table, columns: Sequence[str], target: pa.Schema, path: str
) -> pa.Table:
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


def _arrow_schema(schema: StructType) -> pa.Schema:
    """The schema Spark expects of the batches a Python source yields."""
    return to_arrow_schema(schema, timezone="UTC")


def _parsed_as(target: pa.DataType, fmt: str) -> pa.DataType:
    """What PyArrow parses a column as before :func:`_convert` makes it ``target``: zoned
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


def _conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    columns = [_convert(table.column(i), field.type) for i, field in enumerate(target)]
    return pa.Table.from_arrays(columns, schema=target)


# -- parsing ----------------------------------------------------------------------------------


class _Parser:
    """Parses owned lines of one format into tables of exactly the Spark schema's Arrow type.

    csv blocks take a faster PyArrow configuration when it cannot change the result: a block
    without the quote (and escape) character is parsed with quoting off, and a block that is
    all ASCII without UTF-8 validation (every field of it is valid UTF-8). Measured on people
    csv, each saves 15-25 % of the parse.
    """

    def __init__(self, options: _ReadOptions, schema: StructType) -> None:
        self._options = options
        self._schema = schema
        self._target = _arrow_schema(schema)
        self._names = schema.fieldNames()
        fmt = options.format
        if fmt == "text" and (len(self._target) != 1 or not pa.types.is_string(self._target[0].type)):
            raise UsageError("format text reads one string column; its schema must be 'value STRING'")
        if fmt == "csv":
            for field in self._target:
                if pa.types.is_nested(field.type):
                    raise UsageError(f"format csv cannot read nested column {field.name!r}")
            for name, char in (("sep", options.delimiter), ("quote", options.quote),
                               ("escape", options.escape)):
                if char is not None and not char.isascii():
                    raise UsageError(f"option {name} must be an ASCII character, got {char!r}")
        self._parse_schema = pa.schema(
            [pa.field(f.name, _parsed_as(f.type, fmt), nullable=True) for f in self._target]
        )
        self._csv_special = [c.encode() for c in (options.quote, options.escape) if c]
        self._csv_parse = {
            quoting: pa_csv.ParseOptions(
                delimiter=options.delimiter,
                quote_char=options.quote if quoting else False,
                escape_char=(options.escape or False) if quoting else False,
                double_quote=True,
                newlines_in_values=False,
                ignore_empty_lines=True,
            )
            for quoting in (False, True)
        }
        self._csv_convert = {
            check_utf8: pa_csv.ConvertOptions(
                column_types=self._parse_schema,
                null_values=[options.null_value],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=_TRUE_VALUES,
                false_values=_FALSE_VALUES,
                check_utf8=check_utf8,
            )
            for check_utf8 in (False, True)
        }
        self._csv_read = pa_csv.ReadOptions(column_names=self._names, use_threads=True)
        # Counting: one column converted, as text, without UTF-8 validation.
        self._csv_count_convert = pa_csv.ConvertOptions(
            include_columns=self._names[:1], column_types={self._names[0]: pa.string()}, check_utf8=False,
        ) if self._names else None

    def parse(self, data: bytearray, source: str) -> pa.Table | None:
        if not len(data):
            return None
        with self._withheld_errors(source):
            if self._options.format == "csv":
                table = self._csv(data)
            elif self._options.format == "json":
                table = self._json(memoryview(data))
            else:
                table = self._text(memoryview(data))
            return _conform(table, self._target)

    def count(self, data: bytearray, source: str) -> int:
        """The number of records ``parse`` would return, without converting their values: csv
        tokenizes every field (a row with the wrong number of fields still fails) and converts
        none, like Spark's csv reader counting with every column pruned."""
        if self._options.format != "csv" or self._csv_count_convert is None:
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
                f"cannot parse the decrypted {self._options.format} data with the schema "
                f"{self._schema.simpleString()}: a value does not fit its column type, or a row "
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


# -- filters ----------------------------------------------------------------------------------

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


def _pushable(spark_filter: Filter, target: pa.Schema) -> tuple[str, str, Any] | None:
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


def _filter_expression(pushed: Sequence[tuple[str, str, Any]], target: pa.Schema) -> pc.Expression | None:
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


# -- reading ----------------------------------------------------------------------------------


class PpmlParquetPartition(InputPartition):
    """One task's input: whole row groups of one or more Parquet files."""

    def __init__(self, *, slices: tuple[RowGroupSlice, ...]) -> None:
        super().__init__(slices)
        self.slices = slices


class PpmlPartition(InputPartition):
    """One task's input: envelope splits (packed from one or more files) or one legacy file."""

    def __init__(self, *, splits: tuple[FileSplit, ...] = (), legacy_file: str | None = None) -> None:
        super().__init__((splits, legacy_file))
        self.splits = splits
        self.legacy_file = legacy_file


def _read_legacy(options: _ReadOptions, path: str) -> bytearray:
    """The whole plaintext of a BigDL legacy file, verified.

    ``ppml.core.legacy`` only decrypts file to file, so the plaintext passes through a private
    directory (0700, the file 0600), in memory-backed ``/dev/shm`` where there is one, and is
    deleted before this returns.
    """
    assert options.bigdl_primary_key is not None
    primary_key = legacy.BigDLPrimaryKey.load(options.bigdl_primary_key)
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="ppml-legacy-", dir=scratch) as private:
        plain = Path(private) / "plaintext"
        legacy.decrypt_bigdl_file(
            path, plain, primary_key=primary_key, allow_weak_keys=options.allow_weak_legacy_keys
        )
        with open(plain, "rb") as f:
            buffer = bytearray(os.fstat(f.fileno()).st_size)
            with memoryview(buffer) as view:
                filled = 0
                while filled < len(buffer):
                    n = f.readinto(view[filled:])
                    if not n:
                        break
                    filled += n
        del buffer[filled:]
        return buffer


def _sample(options: _ReadOptions, files: Sequence[Path]) -> bytes:
    """The first ~MiB of the first non-empty file, cut after its last whole line."""
    for path in files:
        if options.legacy:
            data = bytes(_read_legacy(options, str(path))[:SAMPLE_BYTES + 1])
            whole = len(data) <= SAMPLE_BYTES
        else:
            assert options.kms is not None
            with EnvelopeReader(path, kms=kms_for(options.kms)) as reader:
                if reader.plaintext_size == 0:
                    continue
                data = reader.read_range(0, SAMPLE_BYTES)
                whole = reader.plaintext_size <= SAMPLE_BYTES
        if not data:
            continue
        if not whole:
            data = data[: data.rfind(b"\n") + 1] or data
        return data
    raise _NoInput(
        f"cannot infer a schema for {options.path}: no non-empty input file; "
        "pass one with .schema(...)"
    )


class _NoInput(UsageError):
    """Schema inference found nothing to read."""


def _row_count_data_schema(options: _ReadOptions) -> StructType:
    """The schema a read without ``.schema(...)`` would use; for an input with no records, any
    (there is nothing to parse: the count is 0)."""
    try:
        return _infer_schema(options)
    except _NoInput:
        return StructType([StructField("value", StringType(), True)])


_pme_keys_by_kms: dict[str, PmeKeys] = {}


def _pme_keys(uri: str | None) -> PmeKeys:
    """This process's PME keys for the KMS ``uri``: one per process, so the key-encryption keys
    PyArrow caches serve every task the process runs (see :mod:`ppml.spark.parquet`)."""
    assert uri is not None
    keys = _pme_keys_by_kms.get(uri)
    if keys is None:
        keys = _pme_keys_by_kms.setdefault(uri, PmeKeys(kms_for(uri)))
    return keys


def _infer_schema(options: _ReadOptions) -> StructType:
    if options.format == "text":
        return StructType([StructField("value", StringType(), True)])
    if options.format == "parquet":
        files = list_input_files(options.path)
        if not files:
            raise _NoInput(
                f"cannot infer a schema for {options.path}: no input file; "
                "pass one with .schema(...)"
            )
        with open_encrypted(files[0], keys=_pme_keys(options.kms)) as parquet_file:
            return _parquet_schema(parquet_file.schema_arrow, files[0])
    data = _sample(options, list_input_files(options.path))
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
                    true_values=_TRUE_VALUES, false_values=_FALSE_VALUES,
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
    return _inferred_schema(table)


class PpmlReader(DataSourceReader):
    """Plans and reads partitions; :class:`PpmlPushdownReader` adds filter pushdown."""

    def __init__(self, options: _ReadOptions, schema: StructType) -> None:
        self._options = options
        self._schema = schema
        if options.format != "parquet":
            _Parser(options, schema)  # validates the schema for the format on the driver
        self._pushed: list[Predicate] = []

    def partitions(self) -> Sequence[InputPartition]:
        options = self._options
        files = list_input_files(options.path)
        if options.format == "parquet":
            return self._parquet_partitions(files)
        if options.legacy:
            return [PpmlPartition(legacy_file=str(path)) for path in files]
        planned = [(str(path), *envelope_plaintext_size(path)) for path in files]
        split_bytes = max_split_bytes(
            [size for _, _, size in planned], max_partition_bytes=options.max_split_bytes,
            min_partitions=options.min_partitions,
        )
        splits = [
            FileSplit(path=path, start=start, end=end, first_segment=first, stop_segment=stop,
                      file_size=size)
            for path, header, size in planned
            for start, end, first, stop in plan_ranges(size, header.segment_size, split_bytes)
        ]
        if files:
            # Fail fast, before any task: unwrap one key with the KMS the job was given.
            assert options.kms is not None
            EnvelopeReader(files[0], kms=kms_for(options.kms)).close()
        return [PpmlPartition(splits=tuple(group)) for group in pack_splits(splits, split_bytes)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        _freeze_loaded_objects()
        if isinstance(partition, PpmlParquetPartition):
            return self._parquet_batches(partition)
        if not isinstance(partition, PpmlPartition):
            # Spark reads one placeholder partition when partitions() returned none.
            return iter(())
        return self._batches(partition)

    def _parquet_partitions(self, files: Sequence[Path]) -> list[PpmlParquetPartition]:
        # Every footer is opened here: a wrong KMS, a refused footer key, a plaintext or altered
        # footer or a missing column fails the job before any task.
        keys = _pme_keys(self._options.kms)
        row_group_sizes = []
        for path in files:
            with open_encrypted(path, keys=keys) as parquet_file:
                _parquet_columns(self._schema, parquet_file.schema_arrow, path)
                metadata = parquet_file.metadata
                row_group_sizes.append((str(path), [
                    metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)
                ]))
        groups = plan_row_groups(
            row_group_sizes, self._options.max_split_bytes, DEFAULT_OPEN_COST_BYTES
        )
        return [PpmlParquetPartition(slices=tuple(group)) for group in groups]

    def _parquet_batches(self, partition: PpmlParquetPartition) -> Iterator[pa.RecordBatch]:
        keys = _pme_keys(self._options.kms)
        target = _arrow_schema(self._schema)
        expression = _filter_expression(self._pushed, target)
        for piece in partition.slices:
            with open_encrypted(piece.path, keys=keys) as parquet_file:
                if parquet_file.metadata.num_row_groups != piece.row_group_count:
                    raise InputError(piece.path, "changed since the read was planned")
                columns = _parquet_columns(self._schema, parquet_file.schema_arrow, piece.path)
                file_column = dict(zip(self._schema.fieldNames(), columns, strict=True))
                predicates = [(operation, file_column[name], value) 
                              for operation, name, value in self._pushed]
                for table in read_row_groups(parquet_file, piece.path, piece.row_groups,
                                             columns=columns, predicates=predicates):
                    table = _conform_parquet(table, columns, target, piece.path)
                    if expression is not None:
                        table = table.filter(expression)
                    for batch in table.to_batches():
                        if batch.num_rows:
                            yield batch

    def _tables(self, partition: PpmlPartition, parser: _Parser) -> Iterator[pa.Table]:
        for block, source in self._plaintexts(partition):
            table = parser.parse(block, source)
            del block  # freed as soon as nothing needs it: one block at a time
            if table is not None:
                yield table

    def _plaintexts(self, partition: PpmlPartition) -> Iterator[tuple[bytearray, str]]:
        """The partition's owned plaintext, in blocks of whole records (header skipped), with
        the file each came from."""
        options = self._options
        skip_header = options.format == "csv" and options.header
        if partition.legacy_file is not None:
            plaintext = _read_legacy(options, partition.legacy_file)
            if skip_header:
                del plaintext[: plaintext.find(b"\n") + 1 or len(plaintext)]
            yield plaintext, partition.legacy_file
            return
        assert options.kms is not None
        kms = kms_for(options.kms)
        reader: EnvelopeReader | None = None
        try:
            for split in partition.splits:
                if reader is None or str(reader.path) != split.path:
                    if reader is not None:
                        reader.close()
                    reader = EnvelopeReader(split.path, kms=kms)
                if reader.plaintext_size != split.file_size:
                    raise InvalidCiphertext(split.path)  # changed since planning
                blocks = iter_owned_blocks(
                    reader, split, skip_first_line=split.start > 0 or skip_header
                )
                for block in blocks:
                    yield block, split.path
                    del block  # the consumer is done with it: freed before the next decrypt
        finally:
            if reader is not None:
                reader.close()

    def _batches(self, partition: PpmlPartition) -> Iterator[pa.RecordBatch]:
        parser = _Parser(self._options, self._schema)
        expression = _filter_expression(self._pushed, _arrow_schema(self._schema))
        for table in self._tables(partition, parser):
            if expression is not None:
                table = table.filter(expression)
            for batch in table.to_batches():
                if batch.num_rows:
                    yield batch


class PpmlPushdownReader(PpmlReader):
    """The reader with filter pushdown (see the module docstring for what is pushed, and why it
    is opt-in)."""

    def pushFilters(self, filters: list[Filter]) -> Iterable[Filter]:  # noqa: N802 (Spark's name)
        target = _arrow_schema(self._schema)
        for spark_filter in filters:
            pushed = _pushable(spark_filter, target)
            if pushed is None:
                yield spark_filter
            else:
                self._pushed.append(pushed)


ROW_COUNT_SCHEMA: Final = StructType([StructField("rows", LongType(), nullable=False)])


class PpmlRowCountReader(PpmlReader):
    """``option("rowCount", "true")``: one row per partition, ``rows`` = the records in it.

    Spark 4.3 hands a Python data source neither the columns a query needs nor its aggregates,
    so ``count()`` turns every record into a JVM row (measured: over a second per 8 M rows even
    for a source that yields empty batches). This mode counts inside the source instead, as
    Spark's own csv reader does when every column is pruned: csv rows are tokenized but not
    converted, json and text are parsed, Parquet counts come from the decrypted footers.
    """

    def __init__(self, options: _ReadOptions, schema: StructType, data_schema: StructType) -> None:
        super().__init__(options, data_schema)
        self._output = schema

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        _freeze_loaded_objects()
        if isinstance(partition, PpmlParquetPartition):
            rows = self._parquet_rows(partition)
        elif isinstance(partition, PpmlPartition):
            parser = _Parser(self._options, self._schema)
            rows = 0
            for block, source in self._plaintexts(partition):
                rows += parser.count(block, source)
                del block
        else:  # Spark's placeholder partition for an input without files
            rows = 0
        yield pa.RecordBatch.from_arrays([pa.array([rows], pa.int64())], schema=_arrow_schema(self._output))

    def _parquet_rows(self, partition: PpmlParquetPartition) -> int:
        keys = _pme_keys(self._options.kms)
        rows = 0
        for piece in partition.slices:
            with open_encrypted(piece.path, keys=keys) as parquet_file:
                metadata = parquet_file.metadata
                if metadata.num_row_groups != piece.row_group_count:
                    raise InputError(piece.path, "changed since the read was planned")
                rows += sum(metadata.row_group(i).num_rows for i in piece.row_groups)
        return rows


# -- writing ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PpmlCommitMessage(WriterCommitMessage):
    """What a task wrote: the file's name in the job's temporary directory (None: nothing)."""

    file_name: str | None
    rows: int


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


def _encode_csv(envelope: EnvelopeWriter, batches: Iterator[pa.RecordBatch],
                schema: pa.Schema, options: _WriteOptions) -> int:
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


def _encode_json(envelope: EnvelopeWriter, batches: Iterator[pa.RecordBatch]) -> int:
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


def _encode_text(envelope: EnvelopeWriter, batches: Iterator[pa.RecordBatch]) -> int:
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


def _encode_parquet(raw: Any, batches: Iterable[pa.RecordBatch], schema: pa.Schema, keys: PmeKeys,
                    options: _WriteOptions) -> int:
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


def _job_dir(path: str, job_id: str) -> Path:
    return Path(path) / "_temporary" / job_id


class PpmlWriter(DataSourceArrowWriter):
    """Writes one encrypted part file per task; the driver's commit publishes them."""

    def __init__(
        self,
        options: _WriteOptions,
        schema: StructType,
        *,
        overwrite: bool,
        skip: bool,
        created_output: bool,
        job_id: str,
    ) -> None:
        self._options = options
        self._schema = schema
        self._overwrite = overwrite
        self._skip = skip
        self._created_output = created_output
        self.job_id = job_id

    def write(self, iterator: Iterator[pa.RecordBatch]) -> PpmlCommitMessage:
        from pyspark import TaskContext

        _freeze_loaded_objects()
        if self._skip:
            for _ in iterator:
                pass
            return PpmlCommitMessage(file_name=None, rows=0)
        options = self._options
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        attempt = context.taskAttemptId() if context is not None else 0
        if options.format == "parquet":
            return self._write_parquet(iterator, partition, attempt)
        name = f"part-{partition:05d}-{self.job_id}.{options.format}.ppml"
        job_dir = _job_dir(options.path, self.job_id)
        in_progress = job_dir / f".{name}.{attempt}.inprogress"
        kms = kms_for(options.kms)
        generated = kms.generate_data_key(options.key_id)
        header = EnvelopeHeader(
            kms=kms.uri,
            key_id=generated.key_id,
            wrapped_data_key=generated.wrapped,
            segment_size=options.segment_size,
        )
        # "x": no directory (the job was aborted) or a clash means no file, not a stray one.
        with open(in_progress, "xb") as raw:
            try:
                envelope = EnvelopeWriter(raw, header=header, data_key=generated.data_key)
                if options.format == "csv":
                    rows = _encode_csv(envelope, iterator, _arrow_schema(self._schema), options)
                elif options.format == "json":
                    rows = _encode_json(envelope, iterator)
                else:
                    rows = _encode_text(envelope, iterator)
                envelope.close()
            except BaseException:
                in_progress.unlink(missing_ok=True)
                raise
        os.replace(in_progress, job_dir / name)
        return PpmlCommitMessage(file_name=name, rows=rows)

    def _write_parquet(
        self, iterator: Iterator[pa.RecordBatch], partition: int, attempt: int
    ) -> PpmlCommitMessage:
        options = self._options
        schema = _arrow_schema(self._schema)
        batches = (
            batch if batch.schema.equals(schema) else batch.cast(schema)
            for batch in iterator if batch.num_rows
        )
        first = next(batches, None)
        if first is None and partition != 0:
            return PpmlCommitMessage(file_name=None, rows=0)
        name = f"part-{partition:05d}-{self.job_id}.parquet"
        job_dir = _job_dir(options.path, self.job_id)
        in_progress = job_dir / f".{name}.{attempt}.inprogress"
        keys = _pme_keys(options.kms)
        # "x": no directory (the job was aborted) or a clash means no file, not a stray one.
        everything = itertools.chain([first] if first is not None else [], batches)
        with open(in_progress, "xb") as raw:
            try:
                rows = _encode_parquet(raw, everything, schema, keys, options)
            except BaseException:
                in_progress.unlink(missing_ok=True)
                raise
        os.replace(in_progress, job_dir / name)
        return PpmlCommitMessage(file_name=name, rows=rows)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        _freeze_loaded_objects()
        if self._skip:
            return
        options = self._options
        job_dir = _job_dir(options.path, self.job_id)
        target = Path(options.path)
        names = []
        for message in messages:
            if not isinstance(message, PpmlCommitMessage):
                raise UsageError(f"job {self.job_id}: a task reported no commit message")
            if message.file_name is not None:
                names.append(message.file_name)
        previous = list_input_files(target) if self._overwrite else []
        for name in names:
            os.replace(job_dir / name, target / name)
        published = {target / name for name in names}
        for old in previous:
            if old not in published:
                old.unlink(missing_ok=True)
        (target / "_SUCCESS").write_bytes(b"")
        self._remove_job_dir()

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        _freeze_loaded_objects()
        if self._skip:
            return
        self._remove_job_dir()
        if self._created_output:
            try:
                Path(self._options.path).rmdir()
            except OSError:
                pass

    def _remove_job_dir(self) -> None:
        job_dir = _job_dir(self._options.path, self.job_id)
        # A task that was still running may add a file while the tree is removed: retry once.
        shutil.rmtree(job_dir, ignore_errors=True)
        shutil.rmtree(job_dir, ignore_errors=True)
        try:
            job_dir.parent.rmdir()
        except OSError:
            pass


# -- the data source --------------------------------------------------------------------------


class PpmlDataSource(DataSource):
    """``format("ppml")``: encrypted files through the KMS (see the module docstring)."""

    @classmethod
    def name(cls) -> str:
        return "ppml"

    session_min_partitions: int | None = None
    """The default of option ``minPartitions``: set by :func:`register` for its session."""

    def __init__(self, options: MutableMapping[str, str]) -> None:
        super().__init__(options)
        _freeze_loaded_objects()  # Spark's planner workers make one and call it once or twice

    def schema(self) -> StructType:
        options = _ReadOptions.parse(self.options)
        if options.row_count:
            return ROW_COUNT_SCHEMA
        return _infer_schema(options)

    def reader(self, schema: StructType) -> DataSourceReader:
        options = _ReadOptions.parse(self.options, self.session_min_partitions)
        if options.row_count:
            if schema != ROW_COUNT_SCHEMA:
                raise UsageError("option rowCount reads one column, rows BIGINT NOT NULL: "
                                 "do not pass .schema(...) with it")
            if options.filter_pushdown:
                raise UsageError("option rowCount counts every record: it does not take filterPushdown")
            return PpmlRowCountReader(options, schema, _row_count_data_schema(options))
        if options.filter_pushdown:
            return PpmlPushdownReader(options, schema)
        return PpmlReader(options, schema)

    def writer(self, schema: StructType, overwrite: bool) -> PpmlWriter:
        options = _WriteOptions.parse(self.options, overwrite)
        target = _arrow_schema(schema)
        if options.format == "text" and (
            len(target) != 1 or not pa.types.is_string(target[0].type)
        ):
            raise UsageError("format text writes exactly one string column")
        if options.format == "csv":
            for field in target:
                if pa.types.is_nested(field.type):
                    raise UsageError(f"format csv cannot write nested column {field.name!r}")
        if options.column_keys:
            named = {c for columns in options.column_keys.values() for c in columns}
            unknown = ", ".join(sorted(named - set(target.names)))
            if unknown:
                raise UsageError(f"option columnKeys names column(s) not in the data: {unknown}")
        output = Path(options.path)
        if output.exists() and not output.is_dir():
            raise InputError(output, "is a file; the output of a Spark write is a directory")
        has_data = output.is_dir() and bool(list_input_files(output))
        if options.save_mode == "errorifexists" and has_data:
            raise OutputExists(output)
        skip = options.save_mode == "ignore" and has_data
        created_output = not output.exists()
        job_id = uuid.uuid4().hex
        if not skip:
            _job_dir(options.path, job_id).mkdir(parents=True)
        return PpmlWriter(
            options, schema, overwrite=overwrite, skip=skip, created_output=created_output,
            job_id=job_id,
        )
