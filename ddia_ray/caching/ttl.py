"""Time-to-live expiry on top of LRU eviction.

Theory of operation
-------------------
Every entry carries ``expires_at_s = now_s + ttl_s`` (the cache's
``default_ttl_s`` or the ``ttl_s`` given to that ``put``; ``None`` means it
never expires). An entry is expired once ``now_s >= expires_at_s``.

Expiry is lazy: ``get`` notices an expired entry, removes it and reports a
miss, so a stale value is never returned. :meth:`TTLCache.expire` sweeps
eagerly in expiry order using a min-heap of ``(expires_at_s, seq, key)``;
heap items of overwritten or removed entries are skipped by comparing the
entry's ``seq`` (lazy deletion), and the heap is rebuilt when the dead items
outnumber the live ones, so it stays O(entries).

When a ``put`` makes the cache overflow, expired entries are swept first
(they count as expirations, not evictions) and only then are live entries
evicted in LRU order. ``__contains__`` and ``__len__`` cannot know the time:
they include entries that are expired but not yet swept.

A new ``default_ttl_s`` (:meth:`TTLCache.reconfigure`) applies to the entries
already held that took the default, measured from their last write, as
Caffeine's ``expireAfterWrite`` does when its duration changes: shortening
the TTL bounds the staleness of what is cached now, not only of what is
cached next. Entries put with their own ``ttl_s`` keep it. What had expired
under the old TTL is swept first (a longer TTL revives nothing), then the
heap is rebuilt (O(entries), once per change) and the entries the new TTL
expires are swept at once.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from typing import Any, Hashable, Iterator

from .._validate import number, positive
from .base import _MISSING as _KEEP
from .base import _Core, _Missing

__all__ = ["TTLCache"]

_MISSING = object()
_HEAP_SLACK = 64  # dead heap items tolerated before a rebuild, beyond one per live entry


class _Entry:
    __slots__ = ("value", "size", "expires_at_s", "seq", "written_at_s", "own_ttl")

    def __init__(self, value: Any, size: int, expires_at_s: float, seq: int, written_at_s: float, own_ttl: bool):
        self.value = value
        self.size = size
        self.expires_at_s = expires_at_s
        self.seq = seq
        self.written_at_s = written_at_s
        self.own_ttl = own_ttl  # put with its own ttl_s: a new default_ttl_s leaves it alone


class TTLCache(_Core):
    """A bounded map whose entries expire; LRU eviction when full (see the module docstring)."""

    __slots__ = ("default_ttl_s", "_data", "_heap", "_seq")

    def __init__(self, capacity: int, default_ttl_s: float | None = None):
        super().__init__(capacity)
        self.default_ttl_s = self._check_ttl(default_ttl_s)
        self._data: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = 0

    def get(self, key: Hashable, now_s: float, default: Any = None) -> Any:
        """The live value of ``key`` (marking it recently used), or ``default`` if absent or expired."""
        entry = self._data.get(key)
        if entry is None:
            self._misses += 1
            return default
        if now_s >= entry.expires_at_s:
            self._remove(key, entry)
            self._expirations += 1
            self._misses += 1
            return default
        self._data.move_to_end(key)
        self._hits += 1
        return entry.value

    def put(self, key: Hashable, value: Any, now_s: float, size: int = 1, ttl_s: float | None = None) -> bool:
        """Store ``key = value`` for ``ttl_s`` (default: the cache's); False if it cannot fit at all."""
        size = self._check_size(size)
        ttl = self.default_ttl_s if ttl_s is None else positive("ttl_s", ttl_s)
        old = self._data.pop(key, None)
        if old is not None:
            self._weight -= old.size
        if size > self.capacity:
            return False
        self._seq += 1
        expires_at_s = math.inf if ttl is None else now_s + ttl
        self._data[key] = _Entry(value, size, expires_at_s, self._seq, now_s, ttl_s is not None)
        self._weight += size
        if expires_at_s != math.inf:
            heapq.heappush(self._heap, (expires_at_s, self._seq, key))
        self._make_room(now_s)
        if len(self._heap) > 2 * len(self._data) + _HEAP_SLACK:
            self._rebuild_heap()
        return True

    def reconfigure(self, now_s: float, *, capacity: int | None = None,
                    default_ttl_s: float | None | _Missing = _KEEP) -> int:
        """Change the capacity and/or the default TTL while running (left out: kept).

        ``default_ttl_s=None`` means entries that take the default never expire. Everything
        is checked before anything changes. Entries expired by a shorter TTL are swept and a
        smaller capacity evicts (expired entries first, then LRU), at ``now_s``. Returns how
        many entries were removed.
        """
        number("now_s", now_s)
        new_capacity = self.capacity if capacity is None else self._check_capacity(capacity)
        new_ttl = self.default_ttl_s if default_ttl_s is _KEEP else self._check_ttl(default_ttl_s)
        before = self._evictions + self._expirations
        self.capacity = new_capacity
        if new_ttl != self.default_ttl_s:
            self.expire(now_s)  # what expired under the old TTL stays expired: a longer one revives nothing
            self.default_ttl_s = new_ttl
            for entry in self._data.values():
                if not entry.own_ttl:
                    entry.expires_at_s = math.inf if new_ttl is None else entry.written_at_s + new_ttl
            self._rebuild_heap()  # the old heap items carry the old expiry times
            self.expire(now_s)
        self._make_room(now_s)
        return self._evictions + self._expirations - before

    @staticmethod
    def _check_ttl(ttl_s: Any) -> float | None:
        return None if ttl_s is None else float(positive("default_ttl_s", ttl_s))

    def _make_room(self, now_s: float) -> None:
        if self._weight > self.capacity:
            self.expire(now_s)  # reclaim dead entries before evicting live ones
        while self._weight > self.capacity:
            evicted_key, entry = self._data.popitem(last=False)
            self._weight -= entry.size
            self._evictions += 1

    def expire(self, now_s: float) -> int:
        """Remove every entry expired at ``now_s``, earliest first; returns how many."""
        heap, data = self._heap, self._data
        removed = 0
        while heap and heap[0][0] <= now_s:
            _, seq, key = heapq.heappop(heap)
            entry = data.get(key)
            if entry is not None and entry.seq == seq:  # else: a dead item of an overwritten entry
                self._remove(key, entry)
                self._expirations += 1
                removed += 1
        return removed

    def expires_at(self, key: Hashable) -> float | None:
        """When ``key`` expires (``math.inf`` if never), or None if it is not held."""
        entry = self._data.get(key)
        return None if entry is None else entry.expires_at_s

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove ``key`` without counting; its value (even if expired), or ``default``."""
        entry = self._data.get(key)
        if entry is None:
            return default
        self._remove(key, entry)
        return entry.value

    def keys(self) -> Iterator[Hashable]:
        """Keys from least to most recently used, expired-but-unswept ones included (a copy)."""
        return iter(list(self._data))

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._data.clear()
        self._heap.clear()
        self._weight = 0

    def _remove(self, key: Hashable, entry: _Entry) -> None:
        del self._data[key]
        self._weight -= entry.size

    def _rebuild_heap(self) -> None:
        self._heap = [(e.expires_at_s, e.seq, k) for k, e in self._data.items() if e.expires_at_s != math.inf]
        heapq.heapify(self._heap)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def _entry_count(self) -> int:
        return len(self._data)
