"""Reading BigDL legacy ``AES/CBC/PKCS5Padding`` files: one partition per file (one CBC stream
and one HMAC cannot be split), verified whole before any plaintext is read, then decrypted into
blocks of whole lines."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ppml.core import legacy
from ppml.spark.source.options import ReadOptions
from ppml.spark.source.partitions import PpmlPartition
from ppml.tabular.splits import FileSplit, iter_owned_blocks

__all__ = ["legacy_blocks", "legacy_head", "legacy_partitions"]


def legacy_partitions(files: Sequence[str]) -> list[PpmlPartition]:
    """One partition per file."""
    return [PpmlPartition(legacy_file=str(path)) for path in files]


def _open(options: ReadOptions, path: Path | str) -> legacy.LegacyReader:
    """``path`` opened, its tag verified (see :class:`~ppml.core.legacy.LegacyReader`)."""
    assert options.bigdl_primary_key is not None
    primary_key = legacy.BigDLPrimaryKey.load(options.bigdl_primary_key)
    return legacy.LegacyReader(
        path, primary_key=primary_key, allow_weak_keys=options.allow_weak_legacy_keys
    )


def legacy_blocks(options: ReadOptions, path: str) -> Iterator[bytearray]:
    """The records of ``path`` (a csv header skipped), in blocks of whole lines, as an envelope
    split hands them out; the file is the one split."""
    with _open(options, path) as reader:
        whole_file = FileSplit(
            path=path, start=0, end=reader.plaintext_size, first_segment=0,
            stop_segment=reader.segment_count, file_size=reader.plaintext_size,
        )
        yield from iter_owned_blocks(reader, whole_file, skip_first_line=options.skip_header)


def legacy_head(options: ReadOptions, path: str, length: int) -> tuple[bytes, int]:
    """The first ``length`` plaintext bytes of ``path`` (fewer if it is shorter), and its
    plaintext size."""
    with _open(options, path) as reader:
        return reader.read_range(0, length), reader.plaintext_size
