"""The source's read and write options, parsed and checked once, on the driver.

Spark hands a data source its options as a case-insensitive map of strings; :class:`ReadOptions`
and :class:`WriteOptions` turn them into typed values or fail with a :class:`UsageError` that
names the option. Every option is described in docs/spark-source.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Final

from ppml.core import legacy
from ppml.core.envelope import DEFAULT_SEGMENT_SIZE
from ppml.errors import UsageError
from ppml.filesystem import S3Settings, Storage, is_object_url, storage_for
from ppml.tabular.splits import DEFAULT_MAX_SPLIT_BYTES

__all__ = ["ENVELOPE_MODE", "FORMATS", "ROW_GROUP_ROWS", "ReadOptions", "WriteOptions"]

FORMATS: Final = ("csv", "json", "text", "parquet")
ENVELOPE_MODE: Final = "ppml"
ROW_GROUP_ROWS: Final = 1 << 20
"""Default ``rowGroupSize`` of Parquet writes: PyArrow's default maximum row group length."""
_SAVE_MODES = ("errorifexists", "error", "ignore")


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
    if "://" in path and not is_object_url(path):
        raise UsageError(
            f"{path!r}: the ppml data source reads and writes local paths and s3:// URLs "
            "(s3a:// is the JVM's scheme: see docs/spark-source.md)"
        )
    return path


def _format(options: Mapping[str, str]) -> str:
    fmt = options.get("format", "csv").lower()
    if fmt not in FORMATS:
        raise UsageError(f"option format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def _single_char(
    options: Mapping[str, str], names: Sequence[str], default: str | None
) -> str | None:
    for name in names:
        value = options.get(name.lower())
        if value is not None:
            if len(value) != 1:
                raise UsageError(f"option {name} must be one character, got {value!r}")
            return value
    return default


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReadOptions:
    """The options of ``spark.read.format("ppml")``."""

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
    s3: S3Settings

    def storage(self) -> Storage:
        """Where ``path`` lives (local files, or S3 with :attr:`s3`)."""
        return storage_for(self.path, self.s3)

    @property
    def skip_header(self) -> bool:
        """Whether the first line of each file is a csv header, not a record."""
        return self.format == "csv" and self.header

    @classmethod
    def parse(cls, raw: Mapping[str, str], min_partitions: int | None = None) -> ReadOptions:
        options = _lower(raw)
        mode = options.get("mode", ENVELOPE_MODE)
        if mode not in (ENVELOPE_MODE, legacy.MODE):
            raise UsageError(
                f"option mode must be {ENVELOPE_MODE!r} or {legacy.MODE!r}, got {mode!r}"
            )
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
        path = _path(options)
        if is_legacy and is_object_url(path):
            raise UsageError(f"mode {legacy.MODE} reads local files only")
        return cls(
            path=path,
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
            s3=S3Settings.from_options(options),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WriteOptions:
    """The options of ``df.write.format("ppml")``."""

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
    s3: S3Settings

    def storage(self) -> Storage:
        """Where ``path`` lives (local files, or S3 with :attr:`s3`)."""
        return storage_for(self.path, self.s3)

    @classmethod
    def parse(cls, raw: Mapping[str, str], overwrite: bool) -> WriteOptions:
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
                raise UsageError(
                    f"option saveMode={save_mode} needs .mode('append'), not overwrite"
                )
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
            s3=S3Settings.from_options(options),
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
