"""Least-recently-used eviction in O(1) per operation.

Theory of operation
-------------------
An ``OrderedDict`` keeps the entries in recency order: the first entry is
the least recently used. ``get`` and ``put`` move their key to the end;
when the total size exceeds the capacity, entries are removed from the front
until it fits. LRU is the baseline every other policy is measured against:
it adapts instantly to recency but a single scan larger than the cache
flushes out the whole working set (the weakness W-TinyLFU fixes).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Iterator

from .base import _MISSING, _Core

__all__ = ["LRUCache"]


class LRUCache(_Core):
    """A bounded LRU map; capacity in entries (``size=1``) or in any weight unit."""

    __slots__ = ("_data",)

    def __init__(self, capacity: int):
        super().__init__(capacity)
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable, now_s: float = 0.0, default: Any = None) -> Any:
        """The value of ``key`` (marking it most recently used), or ``default``."""
        item = self._data.get(key, _MISSING)
        if item is _MISSING:
            self._misses += 1
            return default
        self._data.move_to_end(key)
        self._hits += 1
        return item[0]

    def put(self, key: Hashable, value: Any, now_s: float = 0.0, size: int = 1) -> bool:
        """Store ``key = value`` of weight ``size``, evicting LRU entries; False if it cannot fit at all."""
        size = self._check_size(size)
        old = self._data.pop(key, None)
        if old is not None:
            self._weight -= old[1]
        if size > self.capacity:
            return False
        self._data[key] = (value, size)
        self._weight += size
        self._evict()
        return True

    def reconfigure(self, now_s: float = 0.0, *, capacity: int | None = None) -> int:
        """Change the capacity (None: keep it); a smaller one evicts LRU entries at once. Returns how many."""
        if capacity is None:
            return 0
        self.capacity = self._check_capacity(capacity)
        return self._evict()

    def _evict(self) -> int:
        evicted = 0
        while self._weight > self.capacity:
            _, (_, evicted_size) = self._data.popitem(last=False)
            self._weight -= evicted_size
            evicted += 1
        self._evictions += evicted
        return evicted

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove ``key`` without counting an eviction; its value, or ``default``."""
        item = self._data.pop(key, None)
        if item is None:
            return default
        self._weight -= item[1]
        return item[0]

    def keys(self) -> Iterator[Hashable]:
        """Keys from least to most recently used (a copy: safe to mutate while iterating)."""
        return iter(list(self._data))

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._data.clear()
        self._weight = 0

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def _entry_count(self) -> int:
        return len(self._data)
