"""Read-through and write-through cache actors in front of a storage node.

Theory of operation
-------------------
Each actor is a thin driver around a :class:`~ddia_ray.caching.patterns.CacheFront`
and a :class:`~ddia_ray.storage.node.StorageClient` of the store. It is a
threaded Ray actor (``max_concurrency`` calls at once), so a reader waiting
on the store never blocks readers served from the cache, and concurrent
misses of one key share one load (single flight).

* :class:`ReadThroughCache`: ``get_many`` serves hits from the core and
  loads every miss nobody is loading yet with ONE store ``get_many``.
  Writes go to the store, then invalidate their keys.
* :class:`WriteThroughCache`: reads as above; a write goes to the store
  first and only after the store acknowledged it are the values put in the
  cache. A write the store refused raises to the caller and is never
  cached (its keys are invalidated: a timed-out write may have applied).

Both take and return codec-encoded batches (the storage node's protocol,
so a :class:`~ddia_ray.storage.node.StorageClient` can talk to them too);
create them with :meth:`ReadThroughCache.launch`, which returns a
:class:`~ddia_ray.caching.client.CacheClient`. The write-behind actor lives
in :mod:`ddia_ray.caching.write_behind`.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import codec
from .._validate import positive
from ..errors import DatabaseClosedError, InvalidArgumentError
from ..runtime.connect import NAMESPACE, ensure_ray
from ..storage.engine import Op, WriteBatch, decode_ops
from ..storage.node import StorageClient
from .client import CacheClient
from .patterns import CacheFront, make_policy

__all__ = ["ReadThroughCache", "WriteThroughCache"]


def _decode_ops(ops: bytes) -> tuple[Op, ...]:
    return tuple(decode_ops(ops).ops)


def _decode_keys(keys: bytes) -> tuple[bytes, ...]:
    decoded = codec.decode(keys, tuple)
    if not all(isinstance(k, bytes) for k in decoded):
        raise InvalidArgumentError("keys must be encoded as a tuple of bytes")
    return decoded


class ReadThroughCache:
    """Ray actor: read-through cache whose writes invalidate; create it with :meth:`launch`."""

    #: Whether an acknowledged store write puts its values in the cache (else it invalidates them).
    fill_on_write = False

    def __init__(self, store, *, policy: str = "lru", capacity: int = 10_000, weigh: str = "entries",
                 policy_options: Mapping[str, Any] | None = None, store_timeout_s: float = 60.0):
        self.store = StorageClient(store, timeout_s=store_timeout_s)
        self.front = CacheFront(make_policy(policy, capacity, **dict(policy_options or {})), weigh=weigh)
        self._closed = False

    @classmethod
    def _check_options(cls, **options) -> None:
        """Raise ConfigError/InvalidArgumentError for bad actor options before starting the actor."""
        if options:
            raise InvalidArgumentError(f"{cls.__name__} got unknown options {sorted(options)}")

    @classmethod
    def launch(cls, name: str, store, *, policy: str = "lru", capacity: int = 10_000, weigh: str = "entries",
               policy_options: Mapping[str, Any] | None = None, store_timeout_s: float = 60.0,
               max_concurrency: int = 16, actor_options: Mapping[str, Any] | None = None,
               client_options: Mapping[str, Any] | None = None, **options) -> CacheClient:
        """Start the named cache actor in front of ``store`` (a StorageClient or node handle).

        ``options`` are the subclass's own settings (e.g. the write-behind
        queue); bad settings raise here, in the caller, before any actor starts.
        """
        handle = getattr(store, "handle", store)
        # Validate eagerly: an exception in an actor's constructor reaches us only as "actor died".
        CacheFront(make_policy(policy, capacity, **dict(policy_options or {})), weigh=weigh)
        positive("store_timeout_s", store_timeout_s)
        cls._check_options(**options)
        ray = ensure_ray()
        opts = {"name": name, "namespace": NAMESPACE, "num_cpus": 0, "max_concurrency": max_concurrency}
        opts.update(actor_options or {})
        actor = ray.remote(cls).options(**opts).remote(
            handle, policy=policy, capacity=capacity, weigh=weigh, policy_options=dict(policy_options or {}),
            store_timeout_s=store_timeout_s, **options)
        client = CacheClient(actor, **dict(client_options or {}))
        client._call(actor.ping.remote())
        return client

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

    def _extra_stats(self) -> dict:
        return {}

    def stats(self) -> bytes:
        """Encoded :class:`~ddia_ray.caching.patterns.CacheStats`."""
        return codec.encode(self.front.stats(**self._extra_stats()))

    def flush(self, timeout_s: float | None = None) -> int:
        """Nothing is buffered here: returns 0 at once (see the write-behind cache)."""
        return 0

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse further calls and stop the store client's thread."""
        self._closed = True
        self.store.close()


class WriteThroughCache(ReadThroughCache):
    """Ray actor: read-through reads; writes reach the store first and are cached only once acknowledged."""

    fill_on_write = True
