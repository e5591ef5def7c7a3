"""Where a multi-leader or leaderless replica keeps its versions: in memory, or in a storage engine.

Theory of operation
-------------------
:class:`~.versions.KeyVersions` reads and writes its versions through a mapping
``key -> state`` (a :class:`~ddia_ray.clocks.dotted.DVVSet` or a CRDT). Two
mappings serve it:

* :class:`MemoryVersions` (engine ``"map"``): the versions live in memory, each
  kept as the bytes it is encoded to (:func:`~.versions.encode_state`), and the
  replica rebuilds them on restart from its durable log;
* :class:`EngineVersions` (engines ``"lsm"`` and ``"btree"``): the versions live in
  the storage engine, encoded (:func:`~.versions.encode_state`), so a replica holds
  more than its memory and restarts without replaying every change. The decoded
  states of the keys used most recently stay in a bounded cache, so the
  read-modify-write of a hot key decodes nothing. On open the replica rebuilds its
  Merkle trees with one scan of the engine (the storage scan the anti-entropy of
  DDIA 5.5 compares).

Writes go straight to the engine: a write is acknowledged once the engine has it in
its write-ahead log (fsync'd when the store runs with ``sync=True``), as a replica
on the ``map`` engine acknowledges once its log has the change.

Both keep a state *encoded* and decode it when it is read, with the states read
most recently kept decoded in a bounded cache (a write refreshes a cached key's
state, and does not add one: a hot key is read before each write, so it stays, and
a stream of new keys leaves nothing behind). Encoded, a key costs one bytes object,
where its decoded state is five or more objects that Python's cycle collector walks
on every full collection; and decoded states that outlive the young generations
and then die are what sets those full collections off. With every state decoded in
memory, full collections took a third of the time of three replicas under a stream
of new keys (measured 2026-12-06, docs/conflicts.md). And a replica takes a state another
replica sent as the bytes it came in (:meth:`EncodedVersions.offer`), so the
Merkle tree, the log and the mapping share one encoding.

This module is the replica's shell side: the factory opens the engine (I/O), and
the core only calls the mapping.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from typing import Any, Iterator

from ..errors import ConfigError
from .state_format import decode_state, encode_state

__all__ = ["EncodedVersions", "EngineVersions", "MemoryVersions", "open_versions", "VERSION_ENGINES"]

#: The storage engines a versioned replica can keep its versions in (besides "map").
VERSION_ENGINES = ("lsm", "btree")
#: Decoded states a mapping keeps by default (the rest stay encoded until read).
CACHE_KEYS = 16_384


class EncodedVersions:
    """``key -> state`` kept encoded, with the ``cache_keys`` states read most recently kept decoded (see
    the module docstring). Subclasses say where the bytes live: :meth:`_raw_get`, :meth:`_raw_put`,
    :meth:`_raw_delete` and :meth:`_raw_contains`."""

    durable = False

    def __init__(self, *, cache_keys: int = CACHE_KEYS):
        self.cache_keys = int(cache_keys)
        self._cache: OrderedDict[bytes, Any] = OrderedDict()
        self.last_encoded: tuple | None = None  # (key, state, bytes) of the last write
        self._offered: tuple | None = None  # (key, state, bytes) the next write of that state may take as is

    # --- where the bytes live ------------------------------------------------------------------------

    def _raw_get(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def _raw_put(self, key: bytes, data: bytes) -> None:
        raise NotImplementedError

    def _raw_delete(self, key: bytes) -> None:
        raise NotImplementedError

    def _raw_contains(self, key: bytes) -> bool:
        return self._raw_get(key) is not None

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, encoded state)`` (the subclass says in which order)."""
        raise NotImplementedError

    # --- the mapping ----------------------------------------------------------------------------------

    def get(self, key: bytes, default: Any = None) -> Any:
        """The state of ``key`` (``default`` if there is none)."""
        cache = self._cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        raw = self._raw_get(key)
        if raw is None:
            return default
        state = decode_state(raw)
        self._remember(key, state)
        return state

    def peek(self, key: bytes) -> Any:
        """The state of ``key`` (None if there is none), read without entering the cache: for a sweep
        over every key, which would otherwise push the hot keys out."""
        cache = self._cache
        if key in cache:
            return cache[key]
        raw = self._raw_get(key)
        return decode_state(raw) if raw is not None else None

    def items(self) -> Iterator[tuple[bytes, Any]]:
        """Every ``(key, state)``, in :meth:`raw_items`' order, decoded as they are read (cached states
        as they are)."""
        cache = self._cache
        for key, raw in self.raw_items():
            yield key, (cache[key] if key in cache else decode_state(raw))

    def raw(self, key: bytes) -> bytes | None:
        """The encoded state of ``key`` (None if there is none), as stored: nothing is decoded."""
        return self._raw_get(key)

    def _remember(self, key: bytes, state: Any) -> None:
        cache = self._cache
        cache[key] = state
        if len(cache) > self.cache_keys:
            cache.popitem(last=False)

    def __getitem__(self, key: bytes) -> Any:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and (key in self._cache or self._raw_contains(key))

    def offer(self, key: bytes, state: Any, encoded: bytes) -> None:
        """``encoded`` is ``state`` encoded (it came so from another replica, which encoded it with this
        code): if the next write stores that very state under ``key``, it stores these bytes."""
        self._offered = (key, state, encoded)

    def __setitem__(self, key: bytes, state: Any) -> None:
        offered, self._offered = self._offered, None
        if offered is not None and offered[1] is state and offered[0] == key:
            encoded = offered[2]
        else:
            encoded = encode_state(state)
        self._raw_put(key, encoded)
        # The replica's Merkle tree and its answers need these bytes right after (``encoded_as``):
        # one encoding per change serves the mapping, the tree, the log and the wire.
        self.last_encoded = (key, state, encoded)
        cache = self._cache
        if key in cache:  # a key read before this write (a read-modify-write): it stays decoded
            cache[key] = state
            cache.move_to_end(key)

    def absent(self, keys: tuple | list) -> list[bool]:
        """Whether each of ``keys`` has no state here."""
        return [key not in self for key in keys]

    def put_new(self, keys: tuple | list, encoded: tuple | list) -> None:
        """Store ``encoded[i]`` under ``keys[i]``, keys that :meth:`absent` just found absent (a batch
        of new keys, :meth:`~.versioned_replica.VersionedReplica.store_new`): no decoded state kept."""
        for key, data in zip(keys, encoded):
            self._raw_put(key, data)
        self.last_encoded = self._offered = None

    def encoded_as(self, key: bytes, state: Any) -> bytes | None:
        """The bytes the last :meth:`__setitem__` stored, if it stored ``state`` (the same object) under ``key``."""
        last = self.last_encoded
        return last[2] if last is not None and last[0] == key and last[1] is state else None

    def __delitem__(self, key: bytes) -> None:
        if key not in self:
            raise KeyError(key)
        self._raw_delete(key)
        self._cache.pop(key, None)
        self.last_encoded = None

    def pop(self, key: bytes, default: Any = None) -> Any:
        """Remove ``key`` and return its state (``default`` if it had none)."""
        state = self.get(key)
        if state is None:
            return default
        del self[key]
        return state


class MemoryVersions(EncodedVersions):
    """``key -> state`` in memory, encoded (engine ``"map"``; see the module docstring). Not durable: the
    replica's log holds every change and rebuilds it."""

    def __init__(self, *, cache_keys: int = CACHE_KEYS):
        super().__init__(cache_keys=cache_keys)
        self._data: dict[bytes, bytes] = {}

    def _raw_get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def _raw_put(self, key: bytes, data: bytes) -> None:
        self._data[key] = data

    def _raw_delete(self, key: bytes) -> None:
        del self._data[key]

    def _raw_contains(self, key: bytes) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._data)

    def keys(self) -> Iterator[bytes]:
        """Every key, in no particular order (the tombstone sweep sorts them once a pass)."""
        return iter(self._data)

    def absent(self, keys: tuple | list) -> list[bool]:
        """Whether each of ``keys`` has no state here (one dict lookup each)."""
        data = self._data
        return [key not in data for key in keys]

    def put_new(self, keys: tuple | list, encoded: tuple | list) -> None:
        """Store ``encoded[i]`` under ``keys[i]``, keys just found absent: one C-level update."""
        self._data.update(zip(keys, encoded))
        cache = self._cache
        if cache and not cache.keys().isdisjoint(keys):  # none should be cached; if one is, it is stale now
            for key in keys:
                cache.pop(key, None)
        self.last_encoded = self._offered = None

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, encoded state)``, in no particular order."""
        return iter(self._data.items())

    def raw_columns(self) -> tuple[tuple, tuple]:
        """``(keys, encoded states)``, two tuples in the same order (insertion order: the same history
        gives the same order), taken in two C-level passes: what a log compaction writes."""
        return tuple(self._data), tuple(self._data.values())

    def clear(self) -> None:
        """Forget every state (a compacted log is replayed from its start)."""
        self._data.clear()
        self._cache.clear()
        self.last_encoded = self._offered = None


class EngineVersions(EncodedVersions):
    """``key -> state`` in a storage engine (see the module docstring); ``cache_keys`` decoded states cached."""

    durable = True

    def __init__(self, engine: Any, *, cache_keys: int = 65_536):
        super().__init__(cache_keys=cache_keys)
        self.engine = engine
        self._count = sum(1 for _ in engine.scan())

    def _raw_get(self, key: bytes) -> bytes | None:
        return self.engine.get(key)

    def _raw_put(self, key: bytes, data: bytes) -> None:
        if key not in self._cache and self.engine.get(key) is None:
            self._count += 1
        self.engine.put(key, data)

    def _raw_delete(self, key: bytes) -> None:
        self.engine.delete(key)
        self._count -= 1

    def keys_after(self, key: bytes | None, limit: int) -> list[bytes]:
        """Up to ``limit`` keys after ``key`` (from the first when None), in order: a bounded scan, so a
        sweep over the keys holds no engine snapshot between its rounds."""
        start = None if key is None else key + b"\x00"  # the smallest key after ``key``
        scan = self.engine.scan(start)
        try:
            return [k for k, _ in islice(scan, limit)]
        finally:
            close = getattr(scan, "close", None)
            if close is not None:
                close()

    def __len__(self) -> int:
        return self._count

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, encoded state)``, in key order: one scan of the engine."""
        return iter(self.engine.scan())

    def keys(self) -> Iterator[bytes]:
        """Every key, in order."""
        for key, _ in self.engine.scan():
            yield key

    def clear(self) -> None:
        """Refused: the engine's versions are the replica's state of record, not a cache of its log."""
        raise ConfigError("the versions in a storage engine are not rebuilt from the log")

    def close(self) -> None:
        """Close the engine."""
        self._cache.clear()
        self.engine.close()


def open_versions(engine: str, data_url: str, node_id: str, *, options: dict | None = None,
                  sync: bool = False) -> Any:
    """The mapping a replica keeps its versions in: :class:`MemoryVersions` for ``"map"``, else
    :class:`EngineVersions` over ``engine`` at ``data_url``/``node_id`` (its write-ahead log fsync'd
    per batch when ``sync``)."""
    if engine == "map":
        return MemoryVersions()
    if engine not in VERSION_ENGINES:
        raise ConfigError(f"unknown storage engine {engine!r}; use 'map' or one of {VERSION_ENGINES}")
    if not data_url:
        raise ConfigError(f"a replica on the {engine!r} engine needs a data_url (the store's root)")
    from ..storage.engine import open_engine

    opts = dict(options or {})
    if engine == "lsm" and sync:
        opts.setdefault("sync", "batch")
    elif engine == "btree":
        opts.setdefault("sync", bool(sync))  # the B-tree fsyncs every commit unless told otherwise
    return EngineVersions(open_engine(f"{data_url.rstrip('/')}/{node_id}", engine, **opts))
