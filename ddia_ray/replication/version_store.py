"""Where a multi-leader or leaderless replica keeps its versions: in memory, or in a storage engine.

Theory of operation
-------------------
:class:`~.versions.KeyVersions` reads and writes its versions through a mapping
``key -> state`` (a :class:`~ddia_ray.clocks.dotted.DVVSet` or a CRDT). Two
mappings serve it:

* a plain ``dict`` (engine ``"map"``): the versions live in memory and the
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

This module is the replica's shell side: the factory opens the engine (I/O), and
the core only calls the mapping.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from typing import Any, Iterator

from ..errors import ConfigError
from .versions import decode_state, encode_state

__all__ = ["EngineVersions", "open_versions", "VERSION_ENGINES"]

#: The storage engines a versioned replica can keep its versions in (besides "map").
VERSION_ENGINES = ("lsm", "btree")


class EngineVersions:
    """``key -> state`` in a storage engine (see the module docstring); ``cache_keys`` decoded states cached."""

    durable = True

    def __init__(self, engine: Any, *, cache_keys: int = 65_536):
        self.engine = engine
        self.cache_keys = int(cache_keys)
        self._cache: OrderedDict[bytes, Any] = OrderedDict()
        self._count = sum(1 for _ in engine.scan())
        self.last_encoded: tuple | None = None  # (key, state, bytes) of the last write

    def get(self, key: bytes, default: Any = None) -> Any:
        """The state of ``key`` (``default`` if the engine has none)."""
        cache = self._cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        raw = self.engine.get(key)
        if raw is None:
            return default
        state = decode_state(raw)
        self._remember(key, state)
        return state

    def _remember(self, key: bytes, state: Any) -> None:
        self._cache[key] = state
        if len(self._cache) > self.cache_keys:
            self._cache.popitem(last=False)

    def __getitem__(self, key: bytes) -> Any:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    def __setitem__(self, key: bytes, state: Any) -> None:
        if key not in self._cache and self.engine.get(key) is None:
            self._count += 1
        encoded = encode_state(state)
        self.engine.put(key, encoded)
        # The replica's Merkle tree and its answers need these bytes right after (``encoded_as``):
        # one encoding per change serves the engine, the tree and the wire.
        self.last_encoded = (key, state, encoded)
        self._remember(key, state)

    def encoded_as(self, key: bytes, state: Any) -> bytes | None:
        """The bytes the last :meth:`__setitem__` stored, if it stored ``state`` (the same object) under ``key``."""
        last = self.last_encoded
        return last[2] if last is not None and last[0] == key and last[1] is state else None

    def __delitem__(self, key: bytes) -> None:
        if key not in self:
            raise KeyError(key)
        self.engine.delete(key)
        self._cache.pop(key, None)
        self._count -= 1
        self.last_encoded = None

    def pop(self, key: bytes, default: Any = None) -> Any:
        """Remove ``key`` and return its state (``default`` if it had none)."""
        state = self.get(key)
        if state is None:
            return default
        del self[key]
        return state

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

    def items(self) -> Iterator[tuple[bytes, Any]]:
        """Every ``(key, state)``, in key order (decoded as they are read)."""
        for key, raw in self.engine.scan():
            yield key, (self._cache[key] if key in self._cache else decode_state(raw))

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
    """The mapping a replica keeps its versions in: a dict for ``"map"``, else :class:`EngineVersions` over
    ``engine`` at ``data_url``/``node_id`` (its write-ahead log fsync'd per batch when ``sync``)."""
    if engine == "map":
        return {}
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
