"""What the encrypted datasets share: where keys come from (or, unsafely, none), the shard of an
epoch that an iterable dataset reads in a process, and how blocks of rows leave as samples or
batches."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ppml.core.keys import DataKeyProvider
from ppml.errors import UnsafeWarning, UsageError
from ppml.torch.data.convert import Block
from ppml.torch.data.files import KeySource
from ppml.torch.data.sharding import Piece, Shard, current_shard, pieces, process_group

__all__ = ["Epochs", "emit", "key_source"]

Transform = Callable[[Any], Any]


def key_source(kms: DataKeyProvider | str | None, unsafe_plaintext: bool) -> KeySource | None:
    """The key source of a dataset; None (and a warning, each time) for one that reads plaintext.

    Raises:
        UsageError: no ``kms`` for encrypted files, or one with ``unsafe_plaintext``.
    """
    if unsafe_plaintext:
        if kms is not None:
            raise UsageError("unsafe_plaintext reads plaintext files: pass no kms")
        warnings.warn("unsafe_plaintext: this dataset reads PLAINTEXT files; nothing is decrypted or authenticated "
                      "(meant for baselines, never for protected data)", UnsafeWarning, stacklevel=3)
        return None
    if kms is None:
        raise UsageError("kms is required: a KMS URI (local:DIR, ppml+https://…) or a DataKeyProvider")
    return KeySource(kms)


class Epochs:
    """The sharding and shuffling state of an iterable dataset (see :mod:`.sharding`).

    Without ``shuffle`` a shard reads its contiguous run of units in file order. With it, units are
    grouped into chunks of ``chunk_units`` (consecutive units of one file), the chunks are dealt to
    shards in an order drawn from ``(seed, epoch)`` (the same in every process, so the shards still
    partition the epoch), and the rows of each block are permuted with ``(seed, epoch, shard)``.
    Call :meth:`set_epoch` before each epoch, in the process that makes the DataLoader's iterator.
    """

    def __init__(self, *, rank: int | None, world_size: int | None, shuffle: bool, seed: int) -> None:
        self.rank, self.world_size = process_group(rank, world_size)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self) -> Shard:
        return current_shard(self.rank, self.world_size)

    def pieces(self, shard: Shard, units: Sequence[tuple[int, int]], weights: Sequence[int],
               chunk_units: int) -> list[Piece]:
        if not self.shuffle:
            return pieces(units, weights, shard)
        return pieces(units, weights, shard, chunk_units=chunk_units, order_seed=(self.seed, self.epoch))

    def shuffled(self, blocks: Iterator[Block], shard: Shard) -> Iterator[Block]:
        if not self.shuffle:
            yield from blocks
            return
        rng = np.random.default_rng((self.seed, self.epoch, shard.index))
        for block in blocks:
            yield block.take(rng.permutation(block.rows))


def emit(blocks: Iterator[Block], *, batch_size: int | None, drop_last: bool,
         transform: Transform | None) -> Iterator[Any]:
    """Samples of ``blocks`` one by one, or (``batch_size``) batches of exactly that many rows,
    gathered across blocks, the last one shorter unless ``drop_last``; each through ``transform``."""
    if batch_size is None:
        for block in blocks:
            for index in range(block.rows):
                sample = block.sample(index)
                yield sample if transform is None else transform(sample)
        return
    carry: Block | None = None  # fewer than batch_size rows left over from earlier blocks
    for block in blocks:
        start = 0
        if carry is not None:
            # Only the batch that straddles two blocks is copied; the others are views.
            start = min(batch_size - carry.rows, block.rows)
            carry = Block.concat([carry, block.slice(0, start)])
            if carry.rows < batch_size:
                continue
            batch = carry.batch(0, batch_size)
            yield batch if transform is None else transform(batch)
            carry = None
        while block.rows - start >= batch_size:
            batch = block.batch(start, start + batch_size)
            yield batch if transform is None else transform(batch)
            start += batch_size
        if start < block.rows:
            carry = block.slice(start, block.rows)
    if carry is not None and not drop_last:
        batch = carry.batch(0, carry.rows)
        yield batch if transform is None else transform(batch)


def check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
