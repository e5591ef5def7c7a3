"""The client of the cache actors: batch calls, and per-key futures coalesced into batches.

Theory of operation
-------------------
A cache service speaks the storage node's wire protocol (``get_many`` and
``write`` take and return codec-encoded tuples), plus ``put_many``,
``delete_many``, ``invalidate_many``, ``flush`` and ``cache_stats``.
:class:`CacheClient` turns Python values into those encoded batches, and its
``*_future`` methods reuse :class:`~ddia_ray.storage.node.StorageClient`'s
background coalescer, so code written one key at a time still crosses the
actor boundary one batch per ``max_batch`` operations or ``linger_s``.
Errors raised inside the actor (a refused store write, a
:class:`~ddia_ray.errors.BackpressureError`) reach the caller as their own
type (they travel as error records); a dead actor is an
:class:`~ddia_ray.errors.ActorUnavailableError`.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Iterable, Mapping

from .. import codec
from .._validate import positive
from ..errors import InvalidArgumentError
from ..storage.engine import WriteBatch, encode_ops, to_key, to_value
from ..runtime.service import ServiceRef
from ..storage.node import StorageClient
from .patterns import CacheStats
from .settings import CacheSettings

__all__ = ["CacheClient"]


class CacheClient:
    """A client of a cache (``cache.client()``); thread-safe."""

    def __init__(self, target: ServiceRef, *, timeout_s: float = 60.0, max_batch: int = 1000,
                 linger_s: float = 0.002):
        if not isinstance(target, ServiceRef):
            raise InvalidArgumentError(f"a CacheClient calls a ServiceRef, got {type(target).__name__}")
        self.target = target
        self.timeout_s = positive("timeout_s", timeout_s)
        # Same wire protocol as a storage node, so its coalescing machinery works unchanged.
        self._batcher = StorageClient(target, timeout_s=timeout_s, max_batch=max_batch, linger_s=linger_s)

    def _call(self, method: str, *args: Any, timeout_s: float | None = None):
        return self.target.call(method, *args, timeout_s=self.timeout_s if timeout_s is None else timeout_s)

    # --- batches --------------------------------------------------------------------

    def get_many(self, keys: Iterable[Any]) -> list:
        """Values of ``keys`` (None where absent), in one actor call."""
        ks = tuple(to_key(k) for k in keys)
        return list(codec.decode(self._call("get_many", codec.encode(ks)), tuple))

    def get(self, key: Any) -> bytes | None:
        """One value (prefer :meth:`get_many` or :meth:`get_future` in loops)."""
        return self.get_many([key])[0]

    def write(self, batch: WriteBatch) -> int:
        """Apply ``batch`` through the cache in one actor call; returns how many operations it held."""
        if not isinstance(batch, WriteBatch):
            raise InvalidArgumentError("write() takes a WriteBatch")
        return self._call("write", encode_ops(batch))

    def put_many(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> int:
        """Set many keys in one actor call."""
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded = codec.encode(tuple((to_key(k), to_value(v)) for k, v in pairs))
        return self._call("put_many", encoded)

    def put(self, key: Any, value: Any) -> int:
        """Set one key."""
        return self.put_many([(key, value)])

    def delete_many(self, keys: Iterable[Any]) -> int:
        """Delete many keys in one actor call."""
        return self._call("delete_many", codec.encode(tuple(to_key(k) for k in keys)))

    def delete(self, key: Any) -> int:
        """Delete one key."""
        return self.delete_many([key])

    def invalidate_many(self, keys: Iterable[Any]) -> int:
        """Drop keys from the cache only (the store is untouched); returns how many were cached."""
        return self._call("invalidate_many", codec.encode(tuple(to_key(k) for k in keys)))

    def stats(self) -> CacheStats:
        """The actor's counters (immutable)."""
        return codec.decode(self._call("cache_stats"), CacheStats)

    def reconfigure(self, settings: CacheSettings) -> CacheSettings:
        """Change the cache's capacity and default TTL while it serves; returns the settings in force."""
        if not isinstance(settings, CacheSettings):
            raise InvalidArgumentError(f"settings must be CacheSettings, got {type(settings).__name__}")
        return codec.decode(self._call("reconfigure", codec.encode(settings)), CacheSettings)

    def settings(self) -> CacheSettings:
        """The settings the cache runs with."""
        return codec.decode(self._call("settings"), CacheSettings)

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until every acknowledged write reached the store (write-behind); returns ops flushed meanwhile."""
        wait_s = self.timeout_s if timeout_s is None else positive("timeout_s", timeout_s)
        return self._call("flush", wait_s, timeout_s=wait_s + self.timeout_s)

    # --- futures ------------------------------------------------------------------

    def get_future(self, key: Any) -> concurrent.futures.Future:
        """A future of one value; concurrent calls travel as one ``get_many``."""
        return self._batcher.get_future(key)

    def put_future(self, key: Any, value: Any) -> concurrent.futures.Future:
        """A future completed when the cache acknowledged the write; writes are coalesced in order."""
        return self._batcher.put_future(key, value)

    def delete_future(self, key: Any) -> concurrent.futures.Future:
        """Like :meth:`put_future` for a deletion."""
        return self._batcher.delete_future(key)

    def close(self) -> None:
        """Send queued futures, then stop this client's thread (the cache keeps running).

        To stop the cache itself (a write-behind cache drains first), shut its handle down.
        """
        self._batcher.close()
