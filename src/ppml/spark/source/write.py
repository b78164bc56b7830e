"""Writes as jobs: checks and a temporary directory on the driver, one encrypted part file per
task, and the driver's commit that publishes them (or abort that drops them)."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pyarrow as pa
from pyspark.sql.datasource import DataSourceArrowWriter, WriterCommitMessage
from pyspark.sql.types import StructType

from ppml.core.envelope import EnvelopeHeader, EnvelopeWriter
from ppml.errors import InputError, OutputExists, UsageError
from ppml.filesystem import Storage, publish
from ppml.spark.source.encode import encode_csv, encode_json, encode_parquet, encode_text
from ppml.spark.source.options import WriteOptions
from ppml.spark.source.process import freeze_loaded_objects, pme_keys
from ppml.spark.source.types import arrow_schema
from ppml.tee.keys import kms_for

__all__ = ["PpmlCommitMessage", "PpmlWriter", "start_job"]


@dataclasses.dataclass(frozen=True)
class PpmlCommitMessage(WriterCommitMessage):
    """What a task wrote: the file's name in the output (None: nothing), and the name it has in
    the job's temporary directory until the job commits."""

    file_name: str | None
    rows: int
    staged_name: str | None = None


def _job_dir(storage: Storage, path: str, job_id: str) -> str:
    return storage.join(path, "_temporary", job_id)


def start_job(options: WriteOptions, schema: StructType, *, overwrite: bool) -> PpmlWriter:
    """On the driver, before any task: check that ``schema`` suits the format and the output
    path the save mode, and make the job's temporary directory (unless the job writes nothing).

    Raises:
        UsageError: the data does not suit the format or the options.
        InputError: the output path is a file.
        OutputExists: ``saveMode`` errorifexists, and the path holds data files.
    """
    target = arrow_schema(schema)
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
    storage = options.storage()
    kind = storage.kind(options.path)
    if kind == "file":
        raise InputError(options.path, "is a file; the output of a Spark write is a directory")
    has_data = kind == "directory" and bool(storage.list_files(options.path))
    if options.save_mode == "errorifexists" and has_data:
        raise OutputExists(options.path)
    skip = options.save_mode == "ignore" and has_data
    job_id = uuid.uuid4().hex
    if not skip:
        storage.make_dirs(_job_dir(storage, options.path, job_id))
    return PpmlWriter(
        options, schema, overwrite=overwrite, skip=skip, created_output=kind is None,
        job_id=job_id,
    )


class PpmlWriter(DataSourceArrowWriter):
    """Writes one encrypted part file per task into the job's temporary directory; the
    driver's commit publishes them (on S3 by copying each object: see ppml.filesystem)."""

    def __init__(
        self,
        options: WriteOptions,
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

        freeze_loaded_objects()
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
        kms = kms_for(options.kms)
        generated = kms.generate_data_key(options.key_id)
        header = EnvelopeHeader(
            kms=kms.uri,
            key_id=generated.key_id,
            wrapped_data_key=generated.wrapped,
            segment_size=options.segment_size,
        )

        def encode(raw: BinaryIO) -> int:
            envelope = EnvelopeWriter(raw, header=header, data_key=generated.data_key)
            if options.format == "csv":
                rows = encode_csv(envelope, iterator, arrow_schema(self._schema), options)
            elif options.format == "json":
                rows = encode_json(envelope, iterator)
            else:
                rows = encode_text(envelope, iterator)
            envelope.close()
            return rows

        return self._stage(name, attempt, encode)

    def _write_parquet(
        self, iterator: Iterator[pa.RecordBatch], partition: int, attempt: int
    ) -> PpmlCommitMessage:
        options = self._options
        schema = arrow_schema(self._schema)
        batches = (
            batch if batch.schema.equals(schema) else batch.cast(schema)
            for batch in iterator if batch.num_rows
        )
        first = next(batches, None)
        if first is None and partition != 0:
            return PpmlCommitMessage(file_name=None, rows=0)
        keys = pme_keys(options.kms)
        everything = itertools.chain([first] if first is not None else [], batches)
        return self._stage(
            f"part-{partition:05d}-{self.job_id}.parquet", attempt,
            lambda raw: encode_parquet(raw, everything, schema, keys, options),
        )

    def _stage(self, name: str, attempt: int, encode: Callable[[BinaryIO], int]) -> PpmlCommitMessage:
        """Write ``name`` through ``encode`` into the job's temporary directory, under a name of
        this attempt's own (a speculative or retried attempt never clobbers it); a failure
        removes it. Locally, a missing directory (the job was aborted) means no file at all."""
        storage = self._options.storage()
        staged_name = f"{attempt}-{name}"
        output = storage.staged_output(storage.join(_job_dir(storage, self._options.path, self.job_id), staged_name))
        try:
            rows = encode(output.file)
            output.commit()
        except BaseException:
            output.discard()
            raise
        return PpmlCommitMessage(file_name=name, rows=rows, staged_name=staged_name)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        freeze_loaded_objects()
        if self._skip:
            return
        options = self._options
        storage = options.storage()
        job_dir = _job_dir(storage, options.path, self.job_id)
        staged: list[tuple[str, str]] = []
        for message in messages:
            if not isinstance(message, PpmlCommitMessage):
                raise UsageError(f"job {self.job_id}: a task reported no commit message")
            if message.file_name is not None and message.staged_name is not None:
                staged.append((message.staged_name, message.file_name))
        publish(storage, job_dir, options.path, staged, replace=self._overwrite)
        storage.write_bytes(storage.join(options.path, "_SUCCESS"), b"")
        self._remove_job_dir(storage)

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        freeze_loaded_objects()
        if self._skip:
            return
        storage = self._options.storage()
        self._remove_job_dir(storage)
        if self._created_output:
            storage.remove_if_empty(self._options.path)

    def _remove_job_dir(self, storage: Storage) -> None:
        job_dir = _job_dir(storage, self._options.path, self.job_id)
        # A task that was still running may add a file while the tree is removed: retry once.
        storage.delete_tree(job_dir)
        storage.delete_tree(job_dir)
        storage.remove_if_empty(storage.join(self._options.path, "_temporary"))
