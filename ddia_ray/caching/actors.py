"""Read-through, write-through and write-behind caches: services in front of a storage node.

Theory of operation
-------------------
A cache is a runtime service (:mod:`ddia_ray.runtime.service`) hosted by the
same shell as every ddia-ray actor: each one is a thin driver around a
:class:`~ddia_ray.caching.patterns.CacheFront` and a
:class:`~ddia_ray.storage.node.StorageClient` of the store. Its calls run in
the shell's worker threads (``threads`` at once), so a reader waiting on the
store never blocks readers served from the cache, and concurrent misses of one
key share one load (single flight).

* :class:`ReadThroughService`: ``get_many`` serves hits from the core and
  loads every miss nobody is loading yet with ONE store ``get_many``.
  Writes go to the store, then invalidate their keys.
* :class:`WriteThroughService`: reads as above; a write goes to the store
  first and only after the store acknowledged it are the values put in the
  cache. A write the store refused raises to the caller and is never
  cached (its keys are invalidated: a timed-out write may have applied).

Both change capacity and default TTL while serving (``reconfigure``, with
:class:`~ddia_ray.caching.settings.CacheSettings`; :mod:`ddia_ray.config.live`
drives it from a watched configuration key).

The cache calls its store as itself: the store's shell sees calls from the
cache's node id, so ``store.nemesis.partition([[cache.name], ["*"]])`` cuts
the cache off from its store while its own clients still reach it, and
``cache.nemesis`` partitions, pauses, kills or restarts the cache (a
restarted cache starts cold; a write-behind cache loses what it had not
flushed, see :mod:`ddia_ray.caching.write_behind`).

Both take and return codec-encoded batches (the storage node's protocol,
so a :class:`~ddia_ray.storage.node.StorageClient` can talk to them too).
Users start them with :class:`ReadThroughCache.launch` and friends
(:mod:`ddia_ray.caching.handles`), which return a handle whose ``client()``
is a :class:`~ddia_ray.caching.client.CacheClient`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .. import codec
from .._validate import positive
from ..errors import DatabaseClosedError, InvalidArgumentError
from ..runtime.service import ServiceRef
from ..storage.engine import Op, WriteBatch, decode_ops
from ..storage.node import StorageClient
from .patterns import CacheFront, make_policy
from .settings import CacheSettings

__all__ = ["ReadThroughService", "WriteThroughService"]


def _decode_ops(ops: bytes) -> tuple[Op, ...]:
    return tuple(decode_ops(ops).ops)


def _decode_keys(keys: bytes) -> tuple[bytes, ...]:
    decoded = codec.decode(keys, tuple)
    if not all(isinstance(k, bytes) for k in decoded):
        raise InvalidArgumentError("keys must be encoded as a tuple of bytes")
    return decoded


class ReadThroughService:
    """The read-through cache service: reads load misses from the store, writes invalidate."""

    component = "cache"
    methods = ("ping", "get_many", "write", "put_many", "delete_many", "invalidate_many", "cache_stats", "flush",
               "stats", "reconfigure", "settings")
    #: Whether an acknowledged store write puts its values in the cache (else it invalidates them).
    fill_on_write = False

    def __init__(self, node_id: str, *, store: str, store_node: str | None = None, policy: str = "lru",
                 capacity: int = 10_000, weigh: str = "entries", policy_options: Mapping[str, Any] | None = None,
                 store_timeout_s: float = 60.0):
        self.node_id = node_id
        # Calls to the store carry this cache's node id: the store's nemesis can cut this cache off.
        target = ServiceRef(store, store_node or store, src=node_id)
        self.store = StorageClient(target, timeout_s=positive("store_timeout_s", store_timeout_s))
        self.front = CacheFront(make_policy(policy, capacity, **dict(policy_options or {})), weigh=weigh)
        self._closed = False

    @classmethod
    def check_options(cls, **options) -> None:
        """Raise ConfigError/InvalidArgumentError for options this cache does not take."""
        if options:
            raise InvalidArgumentError(f"{cls.__name__} got unknown options {sorted(options)}")

    # --- the actor's methods --------------------------------------------------------

    def ping(self) -> str:
        """Liveness probe: the eviction policy's name."""
        return self.front.policy

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseClosedError(f"this {type(self).__name__} is closed")

    def get_many(self, keys: bytes) -> bytes:
        """Encoded tuple of keys in, encoded tuple of values (None where absent) out."""
        self._check_open()
        return codec.encode(tuple(self.front.get_many(_decode_keys(keys), self.store.get_many)))

    def _write_ops(self, ops: tuple[Op, ...]) -> int:
        self._check_open()
        batch = WriteBatch(ops)
        return self.front.write(ops, lambda: self.store.write(batch), fill=self.fill_on_write)

    def write(self, ops: bytes) -> int:
        """Apply an encoded batch (:func:`~ddia_ray.storage.engine.encode_ops`) to the store, then the cache."""
        return self._write_ops(_decode_ops(ops))

    def put_many(self, pairs: bytes) -> int:
        """Encoded tuple of ``(key, value)`` pairs: set them in one store write."""
        batch = WriteBatch()
        for key, value in codec.decode(pairs, tuple):
            batch.put(key, value)
        return self._write_ops(tuple(batch.ops))

    def delete_many(self, keys: bytes) -> int:
        """Encoded tuple of keys: delete them in one store write."""
        return self._write_ops(tuple(Op("delete", k) for k in _decode_keys(keys)))

    def invalidate_many(self, keys: bytes) -> int:
        """Drop keys from the cache only; returns how many were cached."""
        return self.front.invalidate(_decode_keys(keys))

    def _extra_stats(self) -> Mapping[str, int]:
        return {}

    def cache_stats(self) -> bytes:
        """Encoded :class:`~ddia_ray.caching.patterns.CacheStats`."""
        return codec.encode(self.front.stats(**self._extra_stats()))

    def stats(self) -> dict:
        """The counters as plain data (the shell exports them as metrics)."""
        return dataclasses.asdict(self.front.stats(**self._extra_stats()))

    def reconfigure(self, settings: bytes) -> bytes:
        """Encoded :class:`~ddia_ray.caching.settings.CacheSettings` in (applied atomically), the settings
        in force out. The cache keeps serving meanwhile; a restart goes back to the launch settings."""
        self._check_open()
        return codec.encode(self.front.reconfigure(codec.decode(settings, CacheSettings)))

    def settings(self) -> bytes:
        """Encoded :class:`~ddia_ray.caching.settings.CacheSettings` in force."""
        return codec.encode(self.front.settings())

    def flush(self, timeout_s: float | None = None) -> int:
        """Nothing is buffered here: returns 0 at once (see the write-behind cache)."""
        return 0

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse further calls and stop the store client's thread (the shell's clean shutdown)."""
        self._closed = True
        self.store.close()


class WriteThroughService(ReadThroughService):
    """The write-through cache service: writes reach the store first and are cached once acknowledged."""

    fill_on_write = True
