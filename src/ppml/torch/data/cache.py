"""A small least-recently-used cache: what bounds the memory of random access to encrypted data
(decrypted segments, parsed blocks, decoded row groups: a few at a time, per process)."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["CacheInfo", "LruCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclasses.dataclass(frozen=True, slots=True)
class CacheInfo:
    """How a cache has done (as ``functools.lru_cache`` reports it): ``loads`` counts the misses,
    each of which decrypted (or parsed, or decoded) one entry; ``size`` entries are alive now."""

    hits: int
    loads: int
    size: int
    capacity: int


class LruCache(Generic[K, V]):
    """At most ``capacity`` values, the least recently used evicted first (and handed to ``evict``,
    which closes what needs closing). Not thread-safe: each process (each DataLoader worker) has
    its own."""

    def __init__(self, capacity: int, evict: Callable[[V], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("a cache holds at least one entry")
        self.capacity = capacity
        self._evict = evict
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._hits = 0
        self._loads = 0

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The value of ``key``, made by ``load()`` if it is not cached (then cached)."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
            self._hits += 1
            return value
        value = load()
        self._loads += 1
        self._entries[key] = value
        while len(self._entries) > self.capacity:
            _, evicted = self._entries.popitem(last=False)
            if self._evict is not None:
                self._evict(evicted)
        return value

    def clear(self) -> None:
        while self._entries:
            _, evicted = self._entries.popitem(last=False)
            if self._evict is not None:
                self._evict(evicted)

    def info(self) -> CacheInfo:
        return CacheInfo(hits=self._hits, loads=self._loads, size=len(self._entries), capacity=self.capacity)
