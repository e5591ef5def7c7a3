"""The cache components users launch: read-through, write-through and write-behind.

Theory of operation: each ``launch`` validates every setting in the caller
(an error in an actor's constructor would otherwise reach the caller as
"actor died"), then starts one runtime shell hosting the cache's service
(:mod:`ddia_ray.caching.actors`, :mod:`ddia_ray.caching.write_behind`) under
the component's name, and returns the handle of the one handle convention
(:class:`~ddia_ray.runtime.component.Component`): ``client()`` gives a
batching :class:`~ddia_ray.caching.client.CacheClient`, ``nemesis`` breaks
the cache on purpose, ``shutdown()`` drains (write-behind) and stops it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from .._validate import positive
from ..errors import InvalidArgumentError
from ..runtime.component import ServiceComponent
from ..runtime.service import ServiceRef
from .actors import ReadThroughService, WriteThroughService
from .client import CacheClient
from .patterns import CacheFront, make_policy
from .write_behind import WriteBehindService

__all__ = ["ReadThroughCache", "WriteThroughCache", "WriteBehindCache"]


def _store_address(store: Any) -> tuple[str, str]:
    """``(group, node)`` of a store given as a StorageNode handle, a ServiceRef or a component name."""
    from ..storage.node import StorageNode

    if isinstance(store, StorageNode):
        return store.name, store.node
    if isinstance(store, ServiceRef):
        return store.group, store.node
    if isinstance(store, str) and store:
        return store, store
    raise InvalidArgumentError(f"store must be a StorageNode, a ServiceRef or a storage node's name, got "
                               f"{type(store).__name__}")


class ReadThroughCache(ServiceComponent):
    """A running read-through cache (writes invalidate); start it with :meth:`launch`."""

    service: ClassVar[type[ReadThroughService]] = ReadThroughService
    factories = ("ddia_ray.caching.actors:ReadThroughService",)

    @classmethod
    def launch(cls, name: str, store: Any, *, policy: str = "lru", capacity: int = 10_000, weigh: str = "entries",
               policy_options: Mapping[str, Any] | None = None, store_timeout_s: float = 60.0,
               threads: int = 16, detached: bool = False, config=None,
               actor_options: Mapping[str, Any] | None = None, **options):
        """Start the cache ``name`` in front of ``store`` (a StorageNode, its ServiceRef or its name).

        ``options`` are the kind's own settings (the write-behind queue); bad settings raise here,
        before any actor starts. ``threads`` calls run at once.
        """
        CacheFront(make_policy(policy, capacity, **dict(policy_options or {})), weigh=weigh)
        positive("store_timeout_s", store_timeout_s)
        cls.service.check_options(**options)
        group_name, node = _store_address(store)
        return cls._launch_service(name, {
            "store": group_name, "store_node": node, "policy": policy, "capacity": capacity, "weigh": weigh,
            "policy_options": dict(policy_options or {}), "store_timeout_s": store_timeout_s, **options}, threads,
            detached=detached, config=config, actor_options=actor_options)

    def client(self, *, src: str = "client", **options) -> CacheClient:
        """A new batching client (see :class:`CacheClient` for the options), calling as ``src``."""
        return CacheClient(self._ref(src), **options)


class WriteThroughCache(ReadThroughCache):
    """A running write-through cache: writes reach the store first, then fill the cache."""

    service = WriteThroughService
    factories = ("ddia_ray.caching.actors:WriteThroughService",)


class WriteBehindCache(ReadThroughCache):
    """A running write-behind cache: writes are acknowledged once queued, flushed in batches.

    ``shutdown()`` drains the queue into the store before the actor stops; ``nemesis.kill``
    loses what was not flushed (see :mod:`ddia_ray.caching.write_behind`).
    """

    service = WriteBehindService
    factories = ("ddia_ray.caching.write_behind:WriteBehindService",)
