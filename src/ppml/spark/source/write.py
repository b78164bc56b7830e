"""Writes as jobs: checks and a temporary directory on the driver, one encrypted part file per
task, and the driver's commit that publishes them (or abort that drops them)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark.sql.datasource import DataSourceArrowWriter, WriterCommitMessage
from pyspark.sql.types import StructType

from ppml.core.envelope import EnvelopeHeader, EnvelopeWriter
from ppml.errors import InputError, OutputExists, UsageError
from ppml.spark.keys import kms_for
from ppml.spark.source.encode import encode_csv, encode_json, encode_parquet, encode_text
from ppml.spark.source.options import WriteOptions
from ppml.spark.source.process import freeze_loaded_objects, pme_keys
from ppml.spark.source.splits import list_input_files
from ppml.spark.source.types import arrow_schema

__all__ = ["PpmlCommitMessage", "PpmlWriter", "start_job"]


@dataclasses.dataclass(frozen=True)
class PpmlCommitMessage(WriterCommitMessage):
    """What a task wrote: the file's name in the job's temporary directory (None: nothing)."""

    file_name: str | None
    rows: int


def _job_dir(path: str, job_id: str) -> Path:
    return Path(path) / "_temporary" / job_id


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


class PpmlWriter(DataSourceArrowWriter):
    """Writes one encrypted part file per task; the driver's commit publishes them."""

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
                    rows = encode_csv(envelope, iterator, arrow_schema(self._schema), options)
                elif options.format == "json":
                    rows = encode_json(envelope, iterator)
                else:
                    rows = encode_text(envelope, iterator)
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
        schema = arrow_schema(self._schema)
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
        keys = pme_keys(options.kms)
        # "x": no directory (the job was aborted) or a clash means no file, not a stray one.
        everything = itertools.chain([first] if first is not None else [], batches)
        with open(in_progress, "xb") as raw:
            try:
                rows = encode_parquet(raw, everything, schema, keys, options)
            except BaseException:
                in_progress.unlink(missing_ok=True)
                raise
        os.replace(in_progress, job_dir / name)
        return PpmlCommitMessage(file_name=name, rows=rows)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        freeze_loaded_objects()
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
        freeze_loaded_objects()
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
