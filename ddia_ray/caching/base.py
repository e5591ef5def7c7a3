"""What every eviction core shares: the interface, the statistics, the size checks.

Theory of operation
-------------------
An eviction core is a bounded map with a replacement policy and nothing
else: no locks, no I/O, no clock. Time is passed in as ``now_s`` (float
seconds from any monotonic origin) so a TTL core can be driven by a fake
clock in tests and by ``time.monotonic`` in an actor.

Capacity is a plain integer in whatever unit the caller gives ``size`` in:
with ``size=1`` (the default) it counts entries, with ``size=len(value)`` it
counts bytes. Invariant of every core: the sum of the sizes it holds never
exceeds ``capacity`` once a call returns. An item larger than the whole
capacity is not stored (``put`` returns False, and an older value of the key
is dropped, so the cache never serves a stale one).

Counters follow the usual definitions: each ``get`` is exactly one hit or
one miss; an eviction is an entry removed to make room (a W-TinyLFU
candidate refused admission counts as one); an expiration is an entry
removed because its time to live ran out. ``pop`` removes without counting.

Every core can be reconfigured while it runs (``reconfigure(now_s,
capacity=...)``, and ``default_ttl_s=`` for the TTL core): the arguments are
all checked before anything changes, and a smaller capacity evicts down to
it at once, in the policy's own order (counted as evictions), so the
invariant above holds when the call returns.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Hashable, Iterator, Protocol, runtime_checkable

from .._validate import integer, positive
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError

__all__ = ["EvictionStats", "EvictionPolicy"]


class _Missing(enum.Enum):
    """The type of :data:`_MISSING`: one member, so ``x is _MISSING`` narrows ``x`` for a type checker."""

    MISSING = "missing"


#: What ``dict.get(key, _MISSING)`` returns for an absent key (a stored entry is never this).
_MISSING: Final = _Missing.MISSING


@record("caching.eviction_stats", version=1)
class EvictionStats:
    """Counters of one eviction core; ``size`` is the total weight held, ``entries`` the entry count."""

    hits: int
    misses: int
    evictions: int
    expirations: int
    size: int
    entries: int
    capacity: int

    def __post_init__(self):
        for name in ("hits", "misses", "evictions", "expirations", "size", "entries", "capacity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"EvictionStats.{name} must be an int >= 0, got {value!r}")

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses), 0.0 before the first get."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@runtime_checkable
class EvictionPolicy(Protocol):
    """The interface of :class:`~ddia_ray.caching.lru.LRUCache`, ``TTLCache`` and ``WTinyLFUCache``."""

    capacity: int

    def get(self, key: Hashable, now_s: float, default: Any = None) -> Any:
        """The live value of ``key`` (one hit), or ``default`` (one miss)."""

    def put(self, key: Hashable, value: Any, now_s: float, size: int = 1) -> bool:
        """Store ``key = value`` weighing ``size``; False if it is not held afterwards."""

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove ``key`` without counting an eviction; its value, or ``default``."""

    def keys(self) -> Iterator[Hashable]:
        """A snapshot of the keys held."""

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""

    def reconfigure(self, now_s: float, *, capacity: int | None = None) -> int:
        """Change the capacity while running (None: keep it); returns how many entries were removed."""

    def stats(self) -> EvictionStats:
        """Immutable counters."""

    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...


class _Core:
    """Counters and checks shared by the cores (private base class)."""

    __slots__ = ("capacity", "_weight", "_hits", "_misses", "_evictions", "_expirations")

    def __init__(self, capacity: int):
        self.capacity = self._check_capacity(capacity)
        self._weight = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0

    @staticmethod
    def _check_size(size: Any) -> int:
        # Called on every put: a type check rather than the generic helpers, to stay cheap.
        if type(size) is not int:
            raise InvalidArgumentError(f"size must be an int, got {type(size).__name__}")
        if size < 1:
            raise ConfigError(f"size must be >= 1, got {size}")
        return size

    @staticmethod
    def _check_capacity(capacity: Any) -> int:
        return positive("capacity", integer("capacity", capacity))

    @property
    def weight(self) -> int:
        """Total size of the entries held (never above ``capacity``)."""
        return self._weight

    def _entry_count(self) -> int:
        raise NotImplementedError

    def stats(self) -> EvictionStats:
        """An immutable snapshot of the counters."""
        return EvictionStats(self._hits, self._misses, self._evictions, self._expirations,
                             self._weight, self._entry_count(), self.capacity)
