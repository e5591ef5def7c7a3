"""Least-recently-used caches: open SSTables (by count) and decoded row groups (by bytes).

Theory of operation
-------------------
Both caches are one :class:`ChargedLRU`, an ``OrderedDict`` whose entries carry
a *charge*; entries are evicted from the cold end until the total charge fits
the capacity. The open-file cache charges 1 per table (its parsed Parquet
footer). The row-group cache charges :attr:`RowGroup.nbytes`: the Arrow
allocations the entry holds plus a measured constant for the objects around
them, this cache's own entry included, so its capacity bounds the memory
actually held, even for row groups of a single row. An entry larger than the
whole capacity is not kept at all. A lock makes every method safe to call from any thread; values
are immutable, so a reader may keep using one after it was evicted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

from ..._validate import non_negative

__all__ = ["ChargedLRU"]


class ChargedLRU:
    """A thread-safe LRU map bounded by the sum of its entries' charges."""

    def __init__(self, capacity: float):
        self.capacity = non_negative("capacity", capacity)
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.charge = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, count_miss: bool = True) -> Any:
        """The cached value (marking it recently used), or None (a miss, counted if ``count_miss``)."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += count_miss
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: Any, charge: int = 1) -> None:
        """Insert (or replace) ``key``, evicting cold entries to stay within capacity."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.charge -= old[1]
            if charge > self.capacity:
                return
            self._items[key] = (value, charge)
            self.charge += charge
            while self.charge > self.capacity:
                _, (_, c) = self._items.popitem(last=False)
                self.charge -= c
                self.evictions += 1

    def discard_if(self, predicate: Callable[[Any], bool]) -> int:
        """Drop every entry whose key satisfies ``predicate``; returns how many.

        ``predicate`` gets the keys as their owner put them (the tree's row cache: ``(file, row
        group)`` pairs; its file cache: file numbers), hence ``Any`` rather than ``Hashable``.
        """
        with self._lock:
            doomed = [k for k in self._items if predicate(k)]
            for k in doomed:
                self.charge -= self._items.pop(k)[1]
            return len(doomed)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
            self.charge = 0
