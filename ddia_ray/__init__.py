"""ddia-ray: the patterns of *Designing Data-Intensive Applications* as building blocks on Ray.

Start with :mod:`ddia_ray.runtime` (cores, shells, networks, the nemesis), then the patterns:
:mod:`ddia_ray.clocks`, :mod:`ddia_ray.membership`, :mod:`ddia_ray.resilience`,
:mod:`ddia_ray.balancing`, and the stores built of them: :mod:`ddia_ray.replication`,
:mod:`ddia_ray.partitioning`, :mod:`ddia_ray.events`, :mod:`ddia_ray.config`. Every error raised on
purpose is in :mod:`ddia_ray.errors`.

The headline names are also reachable from the top, loaded on first use (PEP 562), so
``import ddia_ray`` stays cheap and imports neither Ray nor pyarrow::

    import ddia_ray
    db = ddia_ray.LSMTree.open("memory://example")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Headline name -> the module that defines it (the subpackage that exports it).
_HEADLINES = {
    "LSMTree": "ddia_ray.storage.lsm",
    "BTreeEngine": "ddia_ray.storage.btree",
    "MemoryEngine": "ddia_ray.storage",
    "WriteBatch": "ddia_ray.storage",
    "open_engine": "ddia_ray.storage",
    "StorageNode": "ddia_ray.storage.node",
    "RaftKV": "ddia_ray.kv",
    "NodeGroup": "ddia_ray.runtime",
    "SimNetwork": "ddia_ray.runtime",
    "NetworkConfig": "ddia_ray.runtime",
    "CacheAside": "ddia_ray.caching",
    "ReadThroughCache": "ddia_ray.caching",
    "WriteThroughCache": "ddia_ray.caching",
    "WriteBehindCache": "ddia_ray.caching",
    "ConsistentHashPicker": "ddia_ray.balancing",
    "CircuitBreaker": "ddia_ray.resilience",
    "RetryPolicy": "ddia_ray.resilience",
    "PhiAccrualDetector": "ddia_ray.membership",
    "MembershipView": "ddia_ray.membership",
    "HybridClock": "ddia_ray.clocks",
    "VectorClock": "ddia_ray.clocks",
    "ReplicatedStore": "ddia_ray.replication",
    "PartitionedStore": "ddia_ray.partitioning",
    "EventStore": "ddia_ray.events",
    "EventBus": "ddia_ray.events",
    "ConfigStore": "ddia_ray.config",
    "SchemaRegistry": "ddia_ray.schema",
}

__all__ = ["__version__", *_HEADLINES]  # noqa: PLE0604 - the keys of _HEADLINES, all str


def __getattr__(name: str):
    module = _HEADLINES.get(name)
    if module is None:
        raise AttributeError(f"module 'ddia_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HEADLINES))
