"""Caches in front of a storage node: eviction cores, single flight, and the classic patterns.

Theory of operation: the eviction cores (:class:`LRUCache`, :class:`TTLCache`,
:class:`WTinyLFUCache`) are pure bounded maps driven by ``now_s``; no Ray, no
clock. :class:`SingleFlight` makes concurrent loads of one key share one load.
:class:`~ddia_ray.caching.patterns.CacheFront` keeps a core coherent with a store
(single flight, leases against stale fills, fill-or-invalidate after writes) and
is shared by the client-side :class:`CacheAside` and the cache services
(:class:`ReadThroughService`, :class:`WriteThroughService`,
:class:`WriteBehindService`) that the runtime shell hosts. Users start them with
:class:`ReadThroughCache`, :class:`WriteThroughCache` and
:class:`WriteBehindCache` ``.launch``, whose handle's ``client()`` is a batching
:class:`CacheClient`.
"""

from ..codec import register_module
from .actors import ReadThroughService, WriteThroughService
from .base import EvictionPolicy, EvictionStats
from .client import CacheClient
from .handles import ReadThroughCache, WriteBehindCache, WriteThroughCache
from .coalescing import CoalescingQueue
from .lru import LRUCache
from .patterns import POLICIES, CacheAside, CacheFront, CacheStats, make_policy
from .settings import CacheSettings
from .single_flight import AsyncSingleFlight, SingleFlight
from .sketch import FrequencySketch
from .tinylfu import WTinyLFUCache
from .ttl import TTLCache
from .write_behind import WriteBehindService

# A process that decodes a caching record without having imported this package loads it on demand.
register_module("caching", "ddia_ray.caching")

__all__ = [
    "EvictionPolicy", "EvictionStats", "LRUCache", "TTLCache", "WTinyLFUCache", "FrequencySketch",
    "SingleFlight", "AsyncSingleFlight", "CoalescingQueue", "POLICIES", "make_policy", "CacheFront",
    "CacheStats", "CacheSettings", "CacheAside", "CacheClient", "ReadThroughCache", "WriteThroughCache",
    "WriteBehindCache", "ReadThroughService", "WriteThroughService", "WriteBehindService",
]
