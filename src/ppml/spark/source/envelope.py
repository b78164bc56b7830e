"""Reading ppml envelope files: partitions of segment-aligned splits planned on the driver, and
each task's plaintext decrypted straight into blocks of whole lines."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ppml.core.envelope import EnvelopeReader
from ppml.errors import InvalidCiphertext
from ppml.spark.source.options import ReadOptions
from ppml.spark.source.partitions import PpmlPartition
from ppml.tabular.splits import (
    FileSplit,
    envelope_plaintext_size,
    iter_owned_blocks,
    max_split_bytes,
    pack_splits,
    plan_ranges,
)
from ppml.tee.keys import kms_for

__all__ = ["envelope_blocks", "envelope_head", "envelope_partitions"]


def envelope_partitions(options: ReadOptions, files: Sequence[str]) -> list[PpmlPartition]:
    """The read's partitions: every file's splits (planned from its header and size alone),
    packed as Spark packs its file splits. The first file's key is unwrapped once, so a wrong
    KMS or key fails the job here, before any task."""
    storage = options.storage()
    planned = [(path, *envelope_plaintext_size(path, storage)) for path in files]
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
        EnvelopeReader(storage.open_random_access(files[0]), kms=kms_for(options.kms)).close()
    return [PpmlPartition(splits=tuple(group)) for group in pack_splits(splits, split_bytes)]


def envelope_blocks(
    options: ReadOptions, splits: Sequence[FileSplit]
) -> Iterator[tuple[bytearray, str]]:
    """The lines ``splits`` own, in blocks of whole records (a csv header skipped), with the
    file each came from; one file open at a time."""
    assert options.kms is not None
    kms = kms_for(options.kms)
    storage = options.storage()
    reader: EnvelopeReader | None = None
    try:
        for split in splits:
            if reader is None or reader.name != split.path:
                if reader is not None:
                    reader.close()
                reader = EnvelopeReader(storage.open_random_access(split.path), kms=kms)
            if reader.plaintext_size != split.file_size:
                raise InvalidCiphertext(split.path)  # changed since planning
            blocks = iter_owned_blocks(
                reader, split, skip_first_line=split.start > 0 or options.skip_header
            )
            for block in blocks:
                yield block, split.path
                del block  # the consumer is done with it: freed before the next decrypt
    finally:
        if reader is not None:
            reader.close()


def envelope_head(options: ReadOptions, path: str, length: int) -> tuple[bytes, int]:
    """The first ``length`` plaintext bytes of ``path`` (fewer if it is shorter), and its
    plaintext size."""
    assert options.kms is not None
    with EnvelopeReader(options.storage().open_random_access(path), kms=kms_for(options.kms)) as reader:
        if reader.plaintext_size == 0:
            return b"", 0
        return reader.read_range(0, length), reader.plaintext_size
