"""Caching patterns in front of a storage node: the logic they share, and cache-aside.

Theory of operation
-------------------
:class:`CacheFront` is one eviction core plus what keeps it coherent with
the store when reads and writes race (DDIA ch. 5 and 11 on derived data;
Nishtala et al., "Scaling Memcache at Facebook", NSDI 2013, section 3.2.1):

* reads: hits are served from the core (or from an *overlay*: the
  write-behind queue); all misses nobody is loading yet are fetched in ONE
  ``load_many`` call, and misses already being loaded by another caller
  are joined through :class:`~ddia_ray.caching.single_flight.SingleFlight`.
  The core lookup and the flight claim happen under one lock, and a fill
  and its flight's completion under the same lock, so a key is always
  either cached, being loaded, or neither: it is loaded at most once while
  it stays cached.
* leases: each load takes a per-key token; a write of the key (begun or
  ended) revokes it, and a fill only happens while the token is intact and
  no write of the key is in flight. Without this, a reader that fetched the
  old value just before a write would put it back after the write's
  invalidation and serve it for ever (the memcache "stale set").
* writes: :meth:`CacheFront.write` writes the store first. On success it
  fills the cache (write-through) or invalidates (cache-aside); on failure
  it always invalidates, because a timed-out write may still have been
  applied. Two overlapping writes of one key may reach the store in either
  order, so such a key is invalidated instead of filled.

Absent keys are cached too (as ``None``): a miss for a key that does not
exist costs one store read, not one per request. Deletes through the cache
fill ``None``. ``delete_range`` drops every cached key of the range and
blocks fills while it runs.

:class:`CacheAside` is the client-side helper of the cache-aside pattern:
the application process owns the cache and talks to the store itself.

Live settings: :meth:`CacheFront.reconfigure` applies a
:class:`~ddia_ray.caching.settings.CacheSettings` (capacity, default TTL) to
the core under the lock, so a read sees the old settings or the new ones.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .._validate import invariant
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError
from ..storage.engine import Op, WriteBatch, to_key
from .base import EvictionPolicy
from .lru import LRUCache
from .settings import CacheSettings
from .single_flight import SingleFlight
from .tinylfu import WTinyLFUCache
from .ttl import TTLCache

__all__ = ["POLICIES", "WEIGHERS", "CacheStats", "make_policy", "CacheFront", "CacheAside"]

#: Eviction policy names accepted by :func:`make_policy` and the cache actors.
POLICIES = ("lru", "ttl", "tinylfu")
#: How an entry is weighed against the capacity: 1 per entry, or its key + value bytes.
WEIGHERS = ("entries", "bytes")


@record("caching.stats", version=1)
class CacheStats:
    """Counters of one cache: the core's, the loads and writes, and the write-behind queue's."""

    policy: str
    hits: int
    misses: int
    evictions: int
    expirations: int
    size: int
    entries: int
    capacity: int
    loads: int = 0             # store reads (one per batch of misses)
    loaded_keys: int = 0       # keys fetched by those reads
    shared_loads: int = 0      # misses that joined a load already in flight
    writes: int = 0            # operations written through this cache
    write_failures: int = 0    # operations whose store write raised
    flushes: int = 0           # write-behind batches the store acknowledged
    flushed_ops: int = 0
    flush_failures: int = 0
    queue_depth: int = 0       # write-behind keys acknowledged but not yet flushed
    coalesced_writes: int = 0  # write-behind writes superseded before reaching the store

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise InvalidArgumentError(f"CacheStats.policy must be one of {POLICIES}, got {self.policy!r}")
        for name in type(self).__dataclass_fields__:
            value = getattr(self, name)
            if name not in ("policy", "_unknown") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidArgumentError(f"CacheStats.{name} must be an int >= 0, got {value!r}")

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses), 0.0 before the first read."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def make_policy(policy: str, capacity: int, **options) -> EvictionPolicy:
    """A new eviction core: ``"lru"``, ``"ttl"`` (``default_ttl_s=``) or ``"tinylfu"`` (its options)."""
    if policy == "lru":
        if options:
            raise ConfigError(f"the lru policy takes no options, got {sorted(options)}")
        return LRUCache(capacity)
    if policy == "ttl":
        return TTLCache(capacity, **options)
    if policy == "tinylfu":
        return WTinyLFUCache(capacity, **options)
    raise ConfigError(f"unknown eviction policy {policy!r}; choose one of {POLICIES}")


def _policy_name(core: EvictionPolicy) -> str:
    for name, cls in (("ttl", TTLCache), ("tinylfu", WTinyLFUCache), ("lru", LRUCache)):
        if isinstance(core, cls):
            return name
    raise InvalidArgumentError(f"unsupported eviction core {type(core).__name__}; use make_policy()")


def _weigh_entries(key: bytes, value: bytes | None) -> int:
    return 1


def _weigh_bytes(key: bytes, value: bytes | None) -> int:
    return max(1, len(key) + (len(value) if value is not None else 0))


class CacheFront:
    """An eviction core kept coherent with a store (see the module docstring). Thread-safe."""

    #: What an overlay returns for a key it does not hold.
    MISSING = object()

    def __init__(self, core: EvictionPolicy, *, weigh: str = "entries",
                 clock: Callable[[], float] = time.monotonic, lock: threading.RLock | None = None):
        if weigh not in WEIGHERS:
            raise ConfigError(f"weigh must be one of {WEIGHERS}, got {weigh!r}")
        self.core = core
        self.policy = _policy_name(core)
        self._weigh = _weigh_bytes if weigh == "bytes" else _weigh_entries
        self._clock = clock
        #: Guards the core and the coherence state; owners of an overlay share it (it is reentrant).
        self.lock = lock if lock is not None else threading.RLock()
        self._flight = SingleFlight()
        self._leases: dict[bytes, object] = {}
        self._writing: dict[bytes, int] = {}
        self._contended: set[bytes] = set()
        self._range_writes = 0
        self._overlay_hits = 0
        self._loads = 0
        self._loaded_keys = 0
        self._writes = 0
        self._write_failures = 0

    # --- reads --------------------------------------------------------------------

    def get_many(self, keys: Sequence[bytes], load_many: Callable[[tuple], Sequence[bytes | None]],
                 overlay: Callable[[bytes], Any] | None = None) -> list:
        """Values of ``keys`` (None where absent): overlay, then core, then one ``load_many`` of the misses."""
        out: list = [None] * len(keys)
        need: dict[bytes, list[int]] = {}
        missing = self.MISSING
        with self.lock:
            now_s = self._clock()
            for i, key in enumerate(keys):
                if overlay is not None:
                    value = overlay(key)
                    if value is not missing:
                        self._overlay_hits += 1
                        out[i] = value
                        continue
                value = self.core.get(key, now_s, missing)
                if value is missing:
                    need.setdefault(key, []).append(i)
                else:
                    out[i] = value
            if not need:
                return out
            owned, joined = self._flight.claim(need)
            tokens = {key: object() for key in owned}
            self._leases.update(tokens)
        if owned:
            values = self._load(owned, tokens, load_many)
            for key, value in zip(owned, values):
                for i in need[key]:
                    out[i] = value
        for key, fut in joined.items():
            value = fut.result()  # the leader always resolves or fails its keys
            for i in need[key]:
                out[i] = value
        return out

    def _load(self, owned: list, tokens: dict, load_many) -> list:
        try:
            values = list(load_many(tuple(owned)))
            invariant(len(values) == len(owned), "load_many returned the wrong number of values")
        except BaseException as e:
            with self.lock:
                for key in owned:
                    if self._leases.get(key) is tokens[key]:
                        del self._leases[key]
                self._flight.fail(owned, e)
            raise
        with self.lock:
            self._loads += 1
            self._loaded_keys += len(owned)
            try:
                now_s = self._clock()
                for key, value in zip(owned, values):
                    if self._leases.get(key) is tokens[key]:
                        del self._leases[key]
                        if not self._writing.get(key) and not self._range_writes:
                            self.core.put(key, value, now_s, size=self._weigh(key, value))
            finally:
                # Fill and forget under one lock: a key is never neither cached nor in flight in between.
                self._flight.resolve(dict(zip(owned, values)))
        return values

    # --- writes -------------------------------------------------------------------

    def write(self, ops: Sequence[Op], store_write: Callable[[], Any], *, fill: bool) -> Any:
        """Run ``store_write()`` (which applies ``ops``), then fill (``fill=True``) or invalidate their keys."""
        self.begin_write(ops)
        try:
            result = store_write()
        except BaseException:
            self.end_write(ops, ok=False, fill=False)
            raise
        self.end_write(ops, ok=True, fill=fill)
        return result

    def begin_write(self, ops: Sequence[Op]) -> None:
        """Mark ``ops``' keys as being written: loads in flight for them will not fill."""
        with self.lock:
            for op in ops:
                if op.kind == "delete_range":
                    self._range_writes += 1
                    self._leases.clear()
                    continue
                n = self._writing.get(op.key, 0) + 1
                self._writing[op.key] = n
                if n > 1:
                    self._contended.add(op.key)
                self._leases.pop(op.key, None)

    def end_write(self, ops: Sequence[Op], *, ok: bool, fill: bool) -> None:
        """The store write of ``ops`` (begun with :meth:`begin_write`) finished; fill or invalidate."""
        with self.lock:
            now_s = self._clock()
            self._writes += len(ops)
            if not ok:
                self._write_failures += len(ops)
            for op in ops:
                if op.kind == "delete_range":
                    self._range_writes -= 1
                    self._leases.clear()
                    held: Iterator[Any] = self.core.keys()  # this front's keys: bytes, the store's
                    for key in held:
                        if op.key <= key < op.end:
                            self.core.pop(key)
                    continue
                self._leases.pop(op.key, None)
                contended = op.key in self._contended
                n = self._writing[op.key] - 1
                if n:
                    self._writing[op.key] = n
                else:
                    del self._writing[op.key]
                    self._contended.discard(op.key)
                if ok and fill and not contended:
                    value = op.value if op.kind == "put" else None
                    self.core.put(op.key, value, now_s, size=self._weigh(op.key, value))
                else:
                    self.core.pop(op.key)
            invariant(self._range_writes >= 0, "more delete_range ends than begins")

    def fill_acknowledged(self, ops: Sequence[Op]) -> None:
        """Cache writes acknowledged before reaching the store (write-behind); revokes their leases."""
        with self.lock:
            now_s = self._clock()
            self._writes += len(ops)
            for op in ops:
                self._leases.pop(op.key, None)
                value = op.value if op.kind == "put" else None
                self.core.put(op.key, value, now_s, size=self._weigh(op.key, value))

    def invalidate(self, keys: Iterable[bytes]) -> int:
        """Drop ``keys`` from the cache and revoke their leases; returns how many were cached."""
        dropped = 0
        missing = self.MISSING
        with self.lock:
            for key in keys:
                self._leases.pop(key, None)
                if self.core.pop(key, missing) is not missing:
                    dropped += 1
        return dropped

    # --- live settings ------------------------------------------------------------

    def reconfigure(self, settings: CacheSettings) -> CacheSettings:
        """Apply ``settings`` atomically (a smaller capacity evicts at once); returns the settings in force.

        Raises :class:`ConfigError` for a TTL on a policy without one; nothing changes then.
        """
        if not isinstance(settings, CacheSettings):
            raise InvalidArgumentError(f"settings must be CacheSettings, got {type(settings).__name__}")
        core = self.core
        with self.lock:
            if isinstance(core, TTLCache):
                core.reconfigure(self._clock(), capacity=settings.capacity, default_ttl_s=settings.default_ttl_s)
            elif settings.default_ttl_s is not None:
                raise ConfigError(f"default_ttl_s={settings.default_ttl_s} needs the 'ttl' eviction policy; "
                                  f"this cache runs {self.policy!r}")
            else:
                core.reconfigure(self._clock(), capacity=settings.capacity)
            return self.settings()

    def settings(self) -> CacheSettings:
        """The settings in force."""
        with self.lock:
            core = self.core
            return CacheSettings(core.capacity, core.default_ttl_s if isinstance(core, TTLCache) else None)

    # --- statistics ---------------------------------------------------------------

    def stats(self, **extra: int) -> CacheStats:
        """Immutable counters; ``extra`` fills the write-behind fields."""
        with self.lock:
            core = self.core.stats()
            return CacheStats(
                policy=self.policy, hits=core.hits + self._overlay_hits, misses=core.misses,
                evictions=core.evictions, expirations=core.expirations, size=core.size,
                entries=core.entries, capacity=core.capacity, loads=self._loads,
                loaded_keys=self._loaded_keys, shared_loads=self._flight.shared, writes=self._writes,
                write_failures=self._write_failures, **extra)


class CacheAside:
    """Cache-aside in the application process, in front of a :class:`~ddia_ray.storage.node.StorageClient`.

    Reads check the local cache and load the misses from the store in one
    ``get_many`` (filling the cache); writes go to the store and then
    invalidate the keys (the next read reloads them). Invalidating rather
    than updating keeps the store the only writer of truth: two processes
    with their own caches cannot leave one with an older value it put itself.
    Other processes' writes are not seen until eviction or expiry: use the
    ``"ttl"`` policy to bound that staleness.
    """

    def __init__(self, store, core: EvictionPolicy | None = None, *, policy: str = "lru",
                 capacity: int = 10_000, weigh: str = "entries",
                 clock: Callable[[], float] = time.monotonic, **policy_options):
        for method in ("get_many", "write"):
            if not callable(getattr(store, method, None)):
                raise InvalidArgumentError(f"store must offer {method}() (a StorageClient)")
        self.store = store
        self.front = CacheFront(core if core is not None else make_policy(policy, capacity, **policy_options),
                                weigh=weigh, clock=clock)

    def get_many(self, keys: Iterable[Any]) -> list:
        """Values of ``keys`` (None where absent); at most one store call for all misses."""
        return self.front.get_many([to_key(k) for k in keys], self.store.get_many)

    def get(self, key: Any) -> bytes | None:
        """One value."""
        return self.get_many([key])[0]

    def write(self, batch: WriteBatch) -> Any:
        """Apply ``batch`` to the store, then invalidate its keys (also when the store raised)."""
        if not isinstance(batch, WriteBatch):
            raise InvalidArgumentError("write() takes a WriteBatch")
        return self.front.write(tuple(batch.ops), lambda: self.store.write(batch), fill=False)

    def put_many(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> Any:
        """Set many keys in one store write."""
        batch = WriteBatch()
        for k, v in (items.items() if isinstance(items, Mapping) else items):
            batch.put(k, v)
        return self.write(batch)

    def put(self, key: Any, value: Any) -> Any:
        """Set one key."""
        return self.write(WriteBatch().put(key, value))

    def delete_many(self, keys: Iterable[Any]) -> Any:
        """Delete many keys in one store write."""
        batch = WriteBatch()
        for k in keys:
            batch.delete(k)
        return self.write(batch)

    def delete(self, key: Any) -> Any:
        """Delete one key."""
        return self.delete_many([key])

    def invalidate_many(self, keys: Iterable[Any]) -> int:
        """Forget cached keys (e.g. on a change notification from another writer)."""
        return self.front.invalidate(to_key(k) for k in keys)

    def reconfigure(self, settings: CacheSettings) -> CacheSettings:
        """Change the cache's capacity and default TTL while it is used (see :meth:`CacheFront.reconfigure`)."""
        return self.front.reconfigure(settings)

    def stats(self) -> CacheStats:
        """Immutable counters."""
        return self.front.stats()
