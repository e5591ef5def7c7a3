"""The client of the cache actors: batch calls, and per-key futures coalesced into batches.

Theory of operation
-------------------
A cache actor speaks the storage node's wire protocol (``get_many`` and
``write`` take and return codec-encoded tuples), plus ``put_many``,
``delete_many``, ``invalidate_many``, ``flush``, ``stats`` and ``close``.
:class:`CacheClient` turns Python values into those encoded batches, and its
``*_future`` methods reuse :class:`~ddia_ray.storage.node.StorageClient`'s
background coalescer, so code written one key at a time still crosses the
actor boundary one batch per ``max_batch`` operations or ``linger_s``.
Errors raised inside the actor (a refused store write, a
:class:`~ddia_ray.errors.BackpressureError`) reach the caller as their own
type; a dead actor is an :class:`~ddia_ray.errors.ActorUnavailableError`.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Iterable, Mapping

from .. import codec
from .._validate import positive
from ..errors import InvalidArgumentError
from ..storage.engine import WriteBatch, encode_ops, to_key, to_value
from ..storage.node import StorageClient
from ..runtime.calls import get_result
from .patterns import CacheStats

__all__ = ["CacheClient"]


class CacheClient:
    """What :meth:`ReadThroughCache.launch` and friends return; thread-safe."""

    def __init__(self, handle, *, timeout_s: float = 60.0, max_batch: int = 1000, linger_s: float = 0.002):
        self.handle = handle
        self.timeout_s = positive("timeout_s", timeout_s)
        # Same wire protocol as a storage node, so its coalescing machinery works unchanged.
        self._batcher = StorageClient(handle, timeout_s=timeout_s, max_batch=max_batch, linger_s=linger_s)

    def _call(self, ref, timeout_s: float | None = None):
        return get_result(ref, self.timeout_s if timeout_s is None else timeout_s, "cache actor")

    # --- batches --------------------------------------------------------------------

    def get_many(self, keys: Iterable[Any]) -> list:
        """Values of ``keys`` (None where absent), in one actor call."""
        ks = tuple(to_key(k) for k in keys)
        return list(codec.decode(self._call(self.handle.get_many.remote(codec.encode(ks))), tuple))

    def get(self, key: Any) -> bytes | None:
        """One value (prefer :meth:`get_many` or :meth:`get_future` in loops)."""
        return self.get_many([key])[0]

    def write(self, batch: WriteBatch) -> int:
        """Apply ``batch`` through the cache in one actor call; returns how many operations it held."""
        if not isinstance(batch, WriteBatch):
            raise InvalidArgumentError("write() takes a WriteBatch")
        return self._call(self.handle.write.remote(encode_ops(batch)))

    def put_many(self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> int:
        """Set many keys in one actor call."""
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded = codec.encode(tuple((to_key(k), to_value(v)) for k, v in pairs))
        return self._call(self.handle.put_many.remote(encoded))

    def put(self, key: Any, value: Any) -> int:
        """Set one key."""
        return self.put_many([(key, value)])

    def delete_many(self, keys: Iterable[Any]) -> int:
        """Delete many keys in one actor call."""
        return self._call(self.handle.delete_many.remote(codec.encode(tuple(to_key(k) for k in keys))))

    def delete(self, key: Any) -> int:
        """Delete one key."""
        return self.delete_many([key])

    def invalidate_many(self, keys: Iterable[Any]) -> int:
        """Drop keys from the cache only (the store is untouched); returns how many were cached."""
        return self._call(self.handle.invalidate_many.remote(codec.encode(tuple(to_key(k) for k in keys))))

    def stats(self) -> CacheStats:
        """The actor's counters (immutable)."""
        return codec.decode(self._call(self.handle.stats.remote()), CacheStats)

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until every acknowledged write reached the store (write-behind); returns ops flushed meanwhile."""
        wait_s = self.timeout_s if timeout_s is None else positive("timeout_s", timeout_s)
        return self._call(self.handle.flush.remote(wait_s), timeout_s=wait_s + self.timeout_s)

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

    def close(self, timeout_s: float | None = None) -> None:
        """Send queued futures, then close the actor (a write-behind cache drains first)."""
        self._batcher.close()
        wait_s = self.timeout_s if timeout_s is None else positive("timeout_s", timeout_s)
        self._call(self.handle.close.remote(wait_s), timeout_s=wait_s + self.timeout_s)
