"""W-TinyLFU: a small LRU window in front of a frequency-guarded segmented LRU.

Theory of operation
-------------------
Window TinyLFU (Einziger, Friedman & Manes, ACM ToS 2017, section 4; the
policy of Caffeine) splits the capacity into:

* a *window* LRU (``window_fraction``, 1 % by default) that admits every
  new key, so bursts of fresh keys get a chance to build up frequency;
* a *main* segmented LRU (Karedla et al. 1994): ``probation`` (20 % of main)
  for keys seen once in main and ``protected`` (80 %) for keys hit again
  while on probation. A protected overflow demotes its LRU key back to
  probation's MRU end.

When the window overflows, its LRU keys move to probation as *candidates*.
While the cache is over capacity, the oldest candidate duels the victim at
probation's LRU end: the one with the higher :class:`FrequencySketch`
estimate stays, the other is evicted (ties keep the victim, as Caffeine
does: an incumbent has already proved useful). A scan therefore passes
through the window and is refused at the door instead of flushing the
frequent keys out, which is what plain LRU does.

Frequencies are recorded on every hit and every ``put`` (not on misses,
like Caffeine: an application that misses then fills counts one access).
Weighted entries work the same way; an entry bigger than the window goes
straight into the duel.

A new capacity (:meth:`WTinyLFUCache.reconfigure`) re-derives the window and
protected sizes from the same fractions, as Caffeine's ``setMaximum`` does:
protected overflow is demoted, window overflow duels its way into main, and
whatever is still over capacity is evicted in SLRU order. The sketch keeps its
width (its counts stay meaningful; a much larger cache simply sees more
collisions until it is rebuilt with a wider sketch).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Iterator

from .._validate import integer, probability
from ..errors import ConfigError
from .base import _MISSING, _Core
from .sketch import FrequencySketch

__all__ = ["WTinyLFUCache"]


class WTinyLFUCache(_Core):
    """W-TinyLFU over window LRU + probation/protected SLRU (see the module docstring)."""

    __slots__ = ("window_capacity", "protected_capacity", "sketch", "_window", "_probation",
                 "_protected", "_window_weight", "_protected_weight", "_fractions")

    def __init__(self, capacity: int, *, window_fraction: float = 0.01, protected_fraction: float = 0.8,
                 doorkeeper: bool = False, sketch_width: int | None = None, seed: int = 0):
        super().__init__(capacity)
        probability("window_fraction", window_fraction)
        probability("protected_fraction", protected_fraction)
        if window_fraction >= 1:
            raise ConfigError("window_fraction must be < 1: the main space cannot be empty")
        self._fractions = (window_fraction, protected_fraction)
        self._size_segments()
        # One counter per expected entry is the paper's sizing; the cap keeps byte-weighted caches small.
        width = sketch_width if sketch_width is not None else min(capacity, 1 << 20)
        self.sketch = FrequencySketch(integer("sketch_width", width), doorkeeper=doorkeeper, seed=seed)
        self._window: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._probation: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._protected: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._window_weight = 0
        self._protected_weight = 0

    # --- reads --------------------------------------------------------------------

    def get(self, key: Hashable, now_s: float = 0.0, default: Any = None) -> Any:
        """The value of ``key`` (recording the access), or ``default``."""
        item = self._window.get(key, _MISSING)
        if item is not _MISSING:
            self._window.move_to_end(key)
        else:
            item = self._protected.get(key, _MISSING)
            if item is not _MISSING:
                self._protected.move_to_end(key)
            else:
                item = self._probation.pop(key, _MISSING)
                if item is _MISSING:
                    self._misses += 1
                    return default
                # A second access in main earns protection (SLRU promotion).
                self._protected[key] = item
                self._protected_weight += item[1]
                self._demote_protected()
        self._hits += 1
        self.sketch.increment(key)
        return item[0]

    # --- writes -------------------------------------------------------------------

    def put(self, key: Hashable, value: Any, now_s: float = 0.0, size: int = 1) -> bool:
        """Store ``key = value``; False if it cannot fit or lost the admission duel at once."""
        size = self._check_size(size)
        self.sketch.increment(key)
        for segment in (self._window, self._protected, self._probation):
            old = segment.get(key, _MISSING)
            if old is not _MISSING:
                if size > self.capacity:
                    self._pop_from(segment, key)
                    return False
                segment[key] = (value, size)  # an update keeps the key where it is
                segment.move_to_end(key)
                self._adjust(segment, size - old[1])
                self._demote_protected()
                self._evict()
                return key in self
        if size > self.capacity:
            return False
        self._window[key] = (value, size)
        self._window_weight += size
        self._weight += size
        self._evict()
        return key in self

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove ``key`` without counting an eviction; its value, or ``default``."""
        for segment in (self._window, self._probation, self._protected):
            if key in segment:
                return self._pop_from(segment, key)[0]
        return default

    def keys(self) -> Iterator[Hashable]:
        """Every key held: window, then probation, then protected (a copy)."""
        return iter([*self._window, *self._probation, *self._protected])

    def clear(self) -> None:
        """Drop every entry (counters and the sketch are kept)."""
        for segment in (self._window, self._probation, self._protected):
            segment.clear()
        self._weight = self._window_weight = self._protected_weight = 0

    def segment_of(self, key: Hashable) -> str | None:
        """``"window"``, ``"probation"``, ``"protected"`` or None (for tests and introspection)."""
        for name, segment in (("window", self._window), ("probation", self._probation),
                              ("protected", self._protected)):
            if key in segment:
                return name
        return None

    def reconfigure(self, now_s: float = 0.0, *, capacity: int | None = None) -> int:
        """Change the capacity (None: keep it); the segments follow (module doc). Returns entries evicted."""
        if capacity is None:
            return 0
        self.capacity = self._check_capacity(capacity)
        before = self._evictions
        self._size_segments()
        self._demote_protected()
        self._evict()
        return self._evictions - before

    # --- internals ----------------------------------------------------------------

    def _size_segments(self) -> None:
        window_fraction, protected_fraction = self._fractions
        # At least one unit of window, so a brand-new key survives until its next access.
        self.window_capacity = max(1.0, self.capacity * window_fraction)
        self.protected_capacity = max(0.0, self.capacity - self.window_capacity) * protected_fraction

    def _adjust(self, segment: OrderedDict, delta: int) -> None:
        self._weight += delta
        if segment is self._window:
            self._window_weight += delta
        elif segment is self._protected:
            self._protected_weight += delta

    def _pop_from(self, segment: OrderedDict, key: Hashable) -> tuple[Any, int]:
        item = segment.pop(key)
        self._adjust(segment, -item[1])
        return item

    def _demote_protected(self) -> None:
        while self._protected_weight > self.protected_capacity and self._protected:
            key, item = self._protected.popitem(last=False)
            self._protected_weight -= item[1]
            self._probation[key] = item

    def _evict(self) -> None:
        candidates = []
        while self._window_weight > self.window_capacity and self._window:
            key, item = self._window.popitem(last=False)
            self._window_weight -= item[1]
            self._probation[key] = item  # enters at probation's MRU end
            candidates.append(key)
        next_candidate = 0
        while self._weight > self.capacity:
            while next_candidate < len(candidates) and candidates[next_candidate] not in self._probation:
                next_candidate += 1
            if next_candidate < len(candidates) and self._probation:
                candidate = candidates[next_candidate]
                victim = next(iter(self._probation))
                if victim == candidate:
                    loser = candidate
                elif self.sketch.frequency(candidate) > self.sketch.frequency(victim):
                    loser = victim
                else:
                    loser = candidate
                self._evict_from(self._probation, loser)
            else:
                # No duel left to fight (e.g. an update grew an entry): plain SLRU order.
                for segment in (self._probation, self._protected, self._window):
                    if segment:
                        self._evict_from(segment, next(iter(segment)))
                        break

    def _evict_from(self, segment: OrderedDict, key: Hashable) -> None:
        self._pop_from(segment, key)
        self._evictions += 1

    def __contains__(self, key: object) -> bool:
        return key in self._window or key in self._probation or key in self._protected

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    def _entry_count(self) -> int:
        return len(self)
