"""Reading BigDL legacy ``AES/CBC/PKCS5Padding`` files: one partition per file (one CBC stream
and one HMAC cannot be split), decrypted and verified whole."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ppml.core import legacy
from ppml.spark.source.options import ReadOptions
from ppml.spark.source.partitions import PpmlPartition

__all__ = ["legacy_blocks", "legacy_head", "legacy_partitions"]


def legacy_partitions(files: Sequence[Path]) -> list[PpmlPartition]:
    """One partition per file."""
    return [PpmlPartition(legacy_file=str(path)) for path in files]


def _read_legacy(options: ReadOptions, path: str) -> bytearray:
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


def legacy_blocks(options: ReadOptions, path: str) -> Iterator[bytearray]:
    """The records of ``path`` (a csv header skipped), in one block."""
    plaintext = _read_legacy(options, path)
    if options.skip_header:
        del plaintext[: plaintext.find(b"\n") + 1 or len(plaintext)]
    yield plaintext


def legacy_head(options: ReadOptions, path: Path, length: int) -> tuple[bytes, int]:
    """The first ``length`` plaintext bytes of ``path`` (fewer if it is shorter), and its
    plaintext size."""
    plaintext = _read_legacy(options, str(path))
    return bytes(plaintext[:length]), len(plaintext)
