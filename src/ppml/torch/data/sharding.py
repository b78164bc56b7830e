"""Which part of a dataset each process reads: the shards of an epoch across distributed ranks and
DataLoader workers, cut from units of work (envelope segments, Parquet row groups) so that every
unit, and so every record, belongs to exactly one shard.

A process's shard is ``rank × workers + worker`` of ``world_size × workers``: the rank and world
size come from ``torch.distributed`` (or are given) where the dataset is built; the worker id and
count come from ``torch.utils.data.get_worker_info()`` inside the worker that iterates. Units are
cut into contiguous runs of about equal weight (plaintext bytes, rows), so each shard reads long
ranges of few files and decrypts only them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ppml.errors import UsageError

__all__ = ["Piece", "Shard", "current_shard", "pieces", "process_group", "shard_ranges"]


@dataclasses.dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class Piece:
    """Units ``first`` .. ``stop``-1 of file ``file`` (segments, or row groups)."""

    file: int
    first: int
    stop: int


def process_group(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: as given, else ``torch.distributed``'s when it is initialised, else
    ``(0, 1)``. Called where the dataset is built: DataLoader workers are not part of the group.

    Raises:
        UsageError: only one of the two is given, or the rank is outside ``[0, world_size)``.
    """
    if rank is None and world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise UsageError("pass both rank and world_size, or neither (then torch.distributed's are used)")
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    return rank, world_size


def current_shard(rank: int, world_size: int) -> Shard:
    """The shard of the calling process: its DataLoader worker (if any) within its rank."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
    return Shard(index=rank * workers + worker, count=world_size * workers)


def shard_ranges(weights: Sequence[int], count: int) -> list[range]:
    """Items ``0 .. len(weights)-1`` cut into ``count`` contiguous runs (some maybe empty) of
    about equal total weight: item ``i`` goes to the shard its weight's midpoint falls in, so the
    runs are ordered, disjoint and cover every item."""
    if count < 1:
        raise ValueError("count must be positive")
    total = sum(weights)
    owner = []
    before = 0
    for index, weight in enumerate(weights):
        if total > 0:
            owner.append(min(count - 1, (2 * before + weight) * count // (2 * total)))
        else:
            owner.append(index * count // len(weights))
        before += weight
    ranges = []
    position = 0
    for shard in range(count):
        stop = position
        while stop < len(owner) and owner[stop] == shard:
            stop += 1
        ranges.append(range(position, stop))
        position = stop
    return ranges


def pieces(units: Sequence[tuple[int, int]], weights: Sequence[int], shard: Shard, *,
           chunk_units: int | None = None, order_seed: tuple[int, ...] | None = None) -> list[Piece]:
    """The pieces of ``shard``: its run of the epoch's ``units`` (``(file, unit in file)`` in file
    order, each weighing ``weights[i]``) as ranges of consecutive units of one file.

    Without ``order_seed`` the run is contiguous in file order and its pieces as long as they can
    be. With it, units are first grouped into chunks of at most ``chunk_units`` (consecutive units
    of one file), the chunks permuted by a generator seeded with ``order_seed`` (the same
    permutation in every process), and the shard gets its run of the permuted chunks.
    """
    if order_seed is None:
        # A contiguous run of units, cut by unit weight, merged into pieces.
        out: list[Piece] = []
        for position in shard_ranges(weights, shard.count)[shard.index]:
            file, unit = units[position]
            if out and out[-1].file == file and out[-1].stop == unit:
                out[-1] = Piece(file, out[-1].first, unit + 1)
            else:
                out.append(Piece(file, unit, unit + 1))
        return out
    chunks: list[Piece] = []
    chunk_weights: list[int] = []
    for (file, unit), weight in zip(units, weights, strict=True):
        last = chunks[-1] if chunks else None
        if (last is not None and last.file == file and last.stop == unit
                and (chunk_units is None or last.stop - last.first < chunk_units)):
            chunks[-1] = Piece(file, last.first, unit + 1)
            chunk_weights[-1] += weight
        else:
            chunks.append(Piece(file, unit, unit + 1))
            chunk_weights.append(weight)
    order = np.random.default_rng(list(order_seed)).permutation(len(chunks))
    run = shard_ranges([chunk_weights[i] for i in order], shard.count)[shard.index]
    return [chunks[int(order[position])] for position in run]
