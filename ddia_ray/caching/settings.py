"""The settings of a running cache that can change while it serves: capacity and default TTL.

Theory of operation: :class:`CacheSettings` is a codec record, checked at
construction and so at decode too, so a setting that reaches a cache actor
is already known valid. It is a whole description (a field left out takes
its default), applied by :meth:`CacheFront.reconfigure
<ddia_ray.caching.patterns.CacheFront.reconfigure>` under the cache's lock:
readers see the old settings or the new ones, never a mix. The eviction
policy and the weigher are not settings: changing them would mean a new
cache, not a reconfigured one.
"""

from __future__ import annotations

from .._validate import integer, positive
from ..codec import record

__all__ = ["CacheSettings"]


@record("caching.settings", version=1)
class CacheSettings:
    """A cache's live settings.

    ``capacity`` is in the cache's weight unit (entries, or bytes with ``weigh="bytes"``);
    ``default_ttl_s`` is the time to live of entries cached from now on and of those already
    cached with the default (None: they never expire); only the ``"ttl"`` policy takes one.
    """

    capacity: int = 10_000
    default_ttl_s: float | None = None

    def __post_init__(self):
        positive("capacity", integer("capacity", self.capacity))
        if self.default_ttl_s is not None:
            positive("default_ttl_s", self.default_ttl_s)
