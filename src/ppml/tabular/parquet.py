"""Parquet with column-level encryption (Parquet Modular Encryption) through PyArrow, keyed by
the ppml KMS.

PME encrypts each column chunk (and the footer) with AES-GCM under data keys that PyArrow wraps
through a ``KmsClient``; the master key identifiers are ppml primary key ids. ppml's client wraps
a PME key by envelope: it asks the KMS for a fresh data key under the master key, encrypts the PME
key with it (AES-256-GCM, the master key id as associated data), and stores both::

    wrapped = base64(JSON {"v": 1, "wdk": base64(KMS-wrapped data key),
                           "n": base64(12-byte nonce), "c": base64(AES-GCM(data key, PME key))})

Unwrapping goes through ``unwrap_data_key``, so a primary key with a release policy releases PME
keys only to attested TEEs, exactly like envelope files. Files stay standard PME: any PME reader
that can unwrap the keys the same way reads them.

PyArrow wraps twice (its default): each file's column and footer keys are wrapped by a
key-encryption key (KEK), and only the KEK goes through the ``KmsClient``. A
:class:`PmeKeys` keeps one ``CryptoFactory``, whose caches hold KEKs for ten minutes, so a
process that reads or writes many files asks the KMS once per master key, not once per file
(and a key whose release is revoked keeps working in that process for up to ten minutes).

Reading row groups (:func:`open_encrypted`, :func:`read_row_groups`; the ``ppml`` Spark data
source's ``format("parquet")`` and the PyTorch datasets are built on them):

* Only files with an *encrypted footer* are read: their first and last four bytes are ``PARE``.
  PyArrow reads a plaintext Parquet file through decryption properties without complaint, and
  such a file (or a plaintext-footer one) is not authenticated, so it is refused by its magic
  bytes, checked on the descriptor PyArrow then reads.
* The footer key opens the file (schema, row groups and their sizes). A column's key is
  unwrapped when that column is first read, so reading some columns never needs the keys of
  the others.
* Hazard: PyArrow decrypts the metadata of a column that has its own key (its statistics among
  it) when the metadata is first touched, and its Python metadata accessors cannot report a
  failure there: a key the KMS refuses aborts the whole process. :func:`read_row_groups`
  therefore fetches the filter columns' keys through a small read, which reports failures as
  exceptions, before it looks at statistics. (``pq.read_table(filters=...)``, and so
  :func:`read_encrypted_table` with ``filters``, has no such guard: with a filter on a column
  whose key cannot be unwrapped it aborts or hangs.)
* Limit: PyArrow does not say which columns of a file are encrypted. A PME file written by
  another tool with an encrypted footer but some plaintext columns is read, and those columns
  are not authenticated. Files written by ppml encrypt every column.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml.core.keys import SECRET_ACCESS, DataKeyProvider
from ppml.errors import InputError, InputNotFound, InvalidCiphertext, KeyNotFound, PpmlError, ServiceUnavailable
from ppml.filesystem import LocalStorage, Storage, is_connection_failure

__all__ = [
    "ENCRYPTED_FOOTER_MAGIC",
    "PmeKeys",
    "PpmlKmsClient",
    "Predicate",
    "RowGroupSlice",
    "crypto_factory",
    "decryption_properties",
    "fetch_column_keys",
    "open_encrypted",
    "plan_row_groups",
    "read_encrypted_table",
    "read_row_groups",
    "write_encrypted_table",
]

_CACHE = timedelta(minutes=10)
ENCRYPTED_FOOTER_MAGIC: Final = b"PARE"
"""First and last four bytes of a PME file with an encrypted footer (plaintext Parquet: PAR1)."""
_PLAIN_MAGIC: Final = b"PAR1"

Predicate = tuple[str, str, Any]
"""``(operation, column, value)``: operation ``eq``, ``gt``, ``ge``, ``lt``, ``le`` (value a
scalar), ``in`` (value a tuple of scalars), ``isnull`` or ``notnull`` (value None)."""


class PpmlKmsClient(pe.KmsClient):
    """PyArrow ``KmsClient`` over a ppml ``DataKeyProvider`` (see the module docstring)."""

    def __init__(self, kms: DataKeyProvider) -> None:
        super().__init__()
        self._kms = kms

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        generated = self._kms.generate_data_key(master_key_identifier)
        nonce = os.urandom(12)
        sealed = AESGCM(generated.data_key.export(SECRET_ACCESS)).encrypt(
            nonce, bytes(key_bytes), master_key_identifier.encode())
        record = {"v": 1, "wdk": base64.b64encode(generated.wrapped).decode(),
                  "n": base64.b64encode(nonce).decode(), "c": base64.b64encode(sealed).decode()}
        return base64.b64encode(json.dumps(record, separators=(",", ":")).encode()).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        try:
            record = json.loads(base64.b64decode(wrapped_key))
            if record.get("v") != 1:
                raise ValueError
            wrapped_dk, nonce, sealed = (base64.b64decode(record[k]) for k in ("wdk", "n", "c"))
        except (ValueError, KeyError, TypeError):
            raise InvalidCiphertext() from None
        data_key = self._kms.unwrap_data_key(master_key_identifier, wrapped_dk)
        try:
            return AESGCM(data_key.export(SECRET_ACCESS)).decrypt(nonce, sealed, master_key_identifier.encode())
        except InvalidTag:
            raise InvalidCiphertext() from None


def crypto_factory(kms: DataKeyProvider) -> pe.CryptoFactory:
    return pe.CryptoFactory(lambda _config: PpmlKmsClient(kms))


def _connection(kms: DataKeyProvider) -> pe.KmsConnectionConfig:
    return pe.KmsConnectionConfig(kms_instance_id=kms.uri)


def _encryption_configuration(column_names: Sequence[str], *, footer_key: str,
                              column_keys: Mapping[str, Sequence[str]] | None,
                              plaintext_footer: bool) -> pe.EncryptionConfiguration:
    if not column_keys:
        return pe.EncryptionConfiguration(
            footer_key=footer_key, uniform_encryption=True, encryption_algorithm="AES_GCM_V1",
            plaintext_footer=plaintext_footer, cache_lifetime=_CACHE, data_key_length_bits=256)
    keys = {k: list(v) for k, v in column_keys.items()}
    named = {c for cols in keys.values() for c in cols}
    unknown = named - set(column_names)
    if unknown:
        raise ValueError(f"column_keys names unknown column(s): {', '.join(sorted(unknown))}")
    rest = [c for c in column_names if c not in named]
    if rest:
        keys.setdefault(footer_key, []).extend(rest)
    return pe.EncryptionConfiguration(
        footer_key=footer_key, column_keys=keys,
        encryption_algorithm="AES_GCM_V1", plaintext_footer=plaintext_footer, cache_lifetime=_CACHE,
        data_key_length_bits=256)


class PmeKeys:
    """PME keys through one KMS, for as long as the object lives (a task, a process): one
    PyArrow ``CryptoFactory``, so the key-encryption keys it unwraps or creates are cached for
    ten minutes and shared by every file it reads or writes (see the module docstring)."""

    def __init__(self, kms: DataKeyProvider) -> None:
        self.kms = kms
        self._factory = crypto_factory(kms)
        self._connection = _connection(kms)

    def decryption_properties(self) -> Any:
        return self._factory.file_decryption_properties(
            self._connection, pe.DecryptionConfiguration(cache_lifetime=_CACHE))

    def encryption_properties(self, column_names: Sequence[str], *, footer_key: str,
                              column_keys: Mapping[str, Sequence[str]] | None = None,
                              plaintext_footer: bool = False) -> Any:
        """Properties for ONE new file (PyArrow refuses to reuse them) with every column
        encrypted: see :func:`write_encrypted_table`.

        Raises:
            ValueError: ``column_keys`` names a column that is not in ``column_names``.
            KeyServiceError: the KMS cannot make data keys under a named master key.
        """
        config = _encryption_configuration(
            column_names, footer_key=footer_key, column_keys=column_keys,
            plaintext_footer=plaintext_footer)
        return self._factory.file_encryption_properties(self._connection, config)


def write_encrypted_table(table: pa.Table, where: Path | str | Any, *, kms: DataKeyProvider, footer_key: str,
                          column_keys: Mapping[str, Sequence[str]] | None = None,
                          plaintext_footer: bool = False, row_group_size: int | None = None) -> None:
    """Write ``table`` as PME Parquet with EVERY column encrypted: under ``footer_key`` unless
    ``column_keys`` maps other master key ids to some columns (``{key_id: [column, …]}``).

    (Plain PME leaves columns that ``column_keys`` does not name in the clear; ppml does not.)
    """
    properties = PmeKeys(kms).encryption_properties(
        table.column_names, footer_key=footer_key, column_keys=column_keys,
        plaintext_footer=plaintext_footer)
    pq.write_table(table, where, encryption_properties=properties, row_group_size=row_group_size)


def decryption_properties(kms: DataKeyProvider) -> Any:
    return PmeKeys(kms).decryption_properties()


def read_encrypted_table(where: Path | str | Any, *, kms: DataKeyProvider, columns: Sequence[str] | None = None,
                         filters: Any = None) -> pa.Table:
    """Read PME Parquet; ``columns`` prunes (only those columns' keys are unwrapped) and
    ``filters`` uses row-group statistics to skip row groups.

    ``filters`` goes through PyArrow's dataset reader, which aborts or hangs when a filter
    column's key cannot be unwrapped (see the module docstring); :func:`read_row_groups` does not.
    """
    return pq.read_table(where, columns=list(columns) if columns else None, filters=filters,
                         decryption_properties=decryption_properties(kms))


# -- reading row groups -----------------------------------------------------------------------


@contextlib.contextmanager
def _failures_name(path: Path | str) -> Iterator[None]:
    """Reports a failure to read ``path`` as ppml errors that name it. PyArrow re-raises what
    the ``KmsClient`` raised; its own errors on a PME file mean a wrong key or altered data."""
    try:
        yield
    except KeyNotFound as exc:
        # As for envelopes: an unknown key id is also what altered key metadata looks like.
        error = InvalidCiphertext(path)
        error.hint = (f"no key {exc.key_id!r} in {exc.kms or 'the KMS'}: "
                      "pass the KMS that holds the file's keys")
        error.add_note(error.hint)  # Spark shows the traceback, not the hint
        raise error from None
    except InvalidCiphertext:
        raise InvalidCiphertext(path) from None
    except PpmlError as exc:
        exc.add_note(f"while reading {path}")
        raise
    except FileNotFoundError:
        raise InputNotFound(path) from None
    except OSError as exc:
        if is_connection_failure(exc):
            raise ServiceUnavailable(f"object storage, reading {path}", str(exc).split("; Details:")[0]) from None
        raise InvalidCiphertext(path) from None
    except pa.ArrowInvalid:
        raise InvalidCiphertext(path) from None


@contextlib.contextmanager
def open_encrypted(path: Path | str, *, keys: PmeKeys, storage: Storage | None = None) -> Iterator[pq.ParquetFile]:
    """``path`` (in ``storage``: local files by default) opened with its footer decrypted (the
    footer key is unwrapped now, column keys when their columns are read), closed on exit.

    Raises:
        InputNotFound: there is no such file.
        InputError: it is not Parquet, or not Parquet with an encrypted footer (plaintext).
        InvalidCiphertext: the footer does not decrypt: wrong key, altered or truncated file.
        KeyServiceError: the KMS refused the footer key (a note names the file).
    """
    source = (storage or LocalStorage()).open_arrow_file(str(path))
    try:
        with _failures_name(path):
            size = source.size()
            head = source.read(4)
            source.seek(max(size - 4, 0))
            tail = source.read(4)
            source.seek(0)
        if head not in (ENCRYPTED_FOOTER_MAGIC, _PLAIN_MAGIC):
            raise InputError(path, "not a Parquet file")
        if head == _PLAIN_MAGIC and tail == _PLAIN_MAGIC:
            raise InputError(path, "plaintext Parquet (or PME with a plaintext footer): ppml "
                                   "reads Parquet with an encrypted footer only; read plaintext "
                                   "with spark.read.parquet")
        if head != tail or size < 12:
            raise InvalidCiphertext(path)
        with _failures_name(path):
            properties = keys.decryption_properties()
            parquet_file = pq.ParquetFile(source, decryption_properties=properties)
        yield parquet_file
    finally:
        source.close()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RowGroupSlice:
    """Row groups ``row_groups`` of ``path``, a file that had ``row_group_count`` of them when
    the read was planned."""

    path: str
    row_groups: tuple[int, ...]
    row_group_count: int


def _slices(path: str, row_groups: Sequence[int], count: int) -> list[RowGroupSlice]:
    if not row_groups:
        return []
    return [RowGroupSlice(path=path, row_groups=tuple(row_groups), row_group_count=count)]


def plan_row_groups(files: Iterable[tuple[str, Sequence[int]]], max_bytes: int,
                    open_cost: int) -> list[list[RowGroupSlice]]:
    """Group the row groups of ``files`` (each ``(path, [uncompressed bytes of each row
    group])``), in order, into partitions of about ``max_bytes``, charging ``open_cost`` once per
    file in a partition as Spark does. One row group is never split; one file may span several
    partitions; a file with no row groups is in none."""
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    groups: list[list[RowGroupSlice]] = []
    current: list[RowGroupSlice] = []
    filled = 0
    for path, sizes in files:
        taken: list[int] = []
        for index, size in enumerate(sizes):
            if (current or taken) and filled + size > max_bytes:
                groups.append(current + _slices(path, taken, len(sizes)))
                current, taken, filled = [], [], 0
            if not taken:
                filled += open_cost
            taken.append(index)
            filled += size
        current += _slices(path, taken, len(sizes))
    if current:
        groups.append(current)
    return groups


def _leaf_columns(parquet_file: pq.ParquetFile) -> dict[str, int]:
    """Index of each top-level column that is a single leaf (which has statistics)."""
    schema = parquet_file.schema
    arrow = parquet_file.schema_arrow
    leaves = {}
    for index in range(len(schema)):
        path = schema.column(index).path
        if arrow.get_field_index(path) >= 0 and not pa.types.is_nested(arrow.field(path).type):
            leaves[path] = index
    return leaves


def _statistics_may_match(operation: str, value: Any, statistics: Any, num_rows: int) -> bool:
    """False only if ``statistics`` prove that no row of the row group satisfies the predicate."""
    if operation == "isnull":
        return not (statistics.has_null_count and statistics.null_count == 0)
    if operation == "notnull":
        return not (statistics.has_null_count and statistics.null_count >= num_rows)
    if not statistics.has_min_max:
        return True
    low, high = statistics.min, statistics.max
    values = value if operation == "in" else (value,)
    # Compare only like with like (a user schema may read an int column as a string, say).
    if any(type(v) is not type(low) or type(v) is not type(high) for v in values):
        return True
    try:
        if operation in ("eq", "in"):
            return any(low <= v <= high for v in values)
        if operation == "gt":
            return bool(high > value)
        if operation == "ge":
            return bool(high >= value)
        if operation == "lt":
            return bool(low < value)
        if operation == "le":
            return bool(low <= value)
    except TypeError:
        return True
    return True


def _row_groups_that_may_match(parquet_file: pq.ParquetFile, row_groups: Sequence[int],
                               predicates: Sequence[Predicate]) -> list[int]:
    leaves = _leaf_columns(parquet_file)
    usable = [(op, leaves[column], value) for op, column, value in predicates if column in leaves]
    if not usable:
        return list(row_groups)
    metadata = parquet_file.metadata
    kept = []
    for index in row_groups:
        row_group = metadata.row_group(index)
        if all(
            (statistics := row_group.column(leaf).statistics) is None
            or _statistics_may_match(op, value, statistics, row_group.num_rows)
            for op, leaf, value in usable
        ):
            kept.append(index)
    return kept


def fetch_column_keys(parquet_file: pq.ParquetFile, path: Path | str, row_group: int,
                      columns: Sequence[str]) -> None:
    """Unwrap the keys of ``columns`` now, through a one-row read of ``row_group``, where a refused
    or wrong key is an exception (PyArrow caches them for the reads that follow): a reader checks
    its keys before its first batch, and before it touches column statistics (see the module
    docstring).

    Raises:
        InvalidCiphertext: a column does not decrypt: wrong key, altered or truncated file.
        KeyServiceError: the KMS refused a column key (a note names the file).
    """
    with _failures_name(path):
        for _ in parquet_file.iter_batches(batch_size=1, row_groups=[row_group], columns=list(columns),
                                           use_threads=False):
            break


def read_row_groups(
    parquet_file: pq.ParquetFile, path: Path | str, row_groups: Sequence[int], *,
    columns: Sequence[str], predicates: Sequence[Predicate] = (),
) -> Iterator[pa.Table]:
    """Row group by row group, the ``columns`` of those of ``row_groups`` whose footer
    statistics do not rule out ``predicates`` (a conjunction on columns of ``columns``; rows
    are not filtered here: what remains is the caller's to filter exactly). Only the keys of
    ``columns`` are unwrapped.

    Raises:
        InvalidCiphertext: a column does not decrypt: wrong key, altered or truncated file.
        KeyServiceError: the KMS refused a column key (a note names the file).
    """
    if not row_groups:
        return
    wanted = list(columns)
    # Only the statistics of columns that are read: their keys are needed anyway.
    usable = [predicate for predicate in predicates if predicate[1] in wanted]
    if usable:
        # The filter columns' keys, fetched where a failure is an exception, before the
        # statistics are touched (see the module docstring).
        fetch_column_keys(parquet_file, path, row_groups[0], sorted({column for _, column, _ in usable}))
        row_groups = _row_groups_that_may_match(parquet_file, row_groups, usable)
    for index in row_groups:
        with _failures_name(path):
            table = parquet_file.read_row_group(index, columns=wanted, use_threads=True)
        yield table
