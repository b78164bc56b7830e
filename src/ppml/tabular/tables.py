"""Encrypted CSV tables to and from Arrow without Spark: the input and output of single-node
training and inference inside the TEE (LightGBM, an XGBoost booster, scikit-learn).

A table is one ppml envelope, or a directory of them as ppml's Spark source writes (``part-*.ppml``;
names starting with ``_`` or ``.`` are Spark's and staging files, skipped). Each file is decrypted
segment by segment straight into PyArrow's CSV parser, so no plaintext touches the disk; any
altered, truncated or foreign-key file fails the whole read with ppml's error, never part of a table.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from ppml.core._files import AtomicOutput, atomic_directory
from ppml.core.envelope import EnvelopeReader, encrypt_stream
from ppml.core.keys import DataKeyProvider
from ppml.errors import InputNotFound, UsageError

__all__ = ["read_csv_table", "table_files", "write_csv_table"]


def table_files(path: Path | str) -> list[Path]:
    """The envelope files of the table at ``path``, in name order (Spark's part order).

    Raises:
        InputNotFound: ``path`` is missing.
        UsageError: a directory holding no ``.ppml`` file.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFound(path)
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.name.endswith(".ppml") and not p.name.startswith(("_", ".")))
    if not files:
        raise UsageError(f"{path} holds no .ppml file")
    return files


class _Plaintext(io.RawIOBase):
    """The plaintext of one envelope as a read-only stream, one verified segment at a time."""

    def __init__(self, reader: EnvelopeReader) -> None:
        self._segments: Iterator[memoryview] = reader.iter_segments()
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            segment = next(self._segments, None)
            if segment is None:
                return 0
            self._pending = segment  # a view of the reader's buffer, used up before the next segment
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def read_csv_table(path: Path | str, *, kms: DataKeyProvider,
                   column_types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """The CSV table (with a header) at ``path``, decrypted with keys from ``kms``.

    Raises:
        InputNotFound, UsageError: see :func:`table_files`.
        InvalidCiphertext: the wrong key, or a file was altered or truncated.
        NotAnEnvelope: a file is not a ppml envelope.
    """
    convert = pacsv.ConvertOptions(column_types=dict(column_types or {}))
    tables = []
    for file in table_files(path):
        with EnvelopeReader(file, kms=kms) as reader:
            tables.append(pacsv.read_csv(io.BufferedReader(_Plaintext(reader), 1 << 20), convert_options=convert))
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def write_csv_table(table: pa.Table, path: Path | str, *, kms: DataKeyProvider, key_id: str,
                    overwrite: bool = False) -> Path:
    """Write ``table`` as CSV with a header into the directory ``path`` (one ``part-00000.csv.ppml``
    under a fresh data key wrapped by ``key_id``), which appears whole or not at all.

    Raises:
        OutputExists: ``path`` exists and ``overwrite`` is false.
        KeyServiceError: the key service failed or does not know ``key_id``.
    """
    path = Path(path)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    plaintext = io.BytesIO(sink.getvalue().to_pybytes())
    with atomic_directory(path, overwrite=overwrite) as staging:
        part = staging / "part-00000.csv.ppml"
        encrypt_stream(plaintext, lambda: AtomicOutput(part, overwrite=False), kms=kms, key_id=key_id)
    return path
