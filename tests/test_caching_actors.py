"""The cache actors on real Ray, in front of a storage node or a store double that can stall and fail."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pathlib

import pytest

from ddia_ray.caching import CacheStats, ReadThroughCache, WriteBehindCache, WriteThroughCache
from ddia_ray.errors import ActorUnavailableError, BackpressureError, ConfigError, InvalidArgumentError, RemoteError
from ddia_ray.runtime import NodeGroup
from ddia_ray.runtime.service import ServiceRef, ServiceSpec
from ddia_ray.storage.engine import Op, WriteBatch
from ddia_ray.storage.node import StorageClient, StorageNode
from raywait import wait_for

pytestmark = pytest.mark.ray

_TESTS = str(pathlib.Path(__file__).parent)  # the store double's module, for the actor's interpreter


@pytest.fixture
def spawn(ray_session):
    """Launch helpers with unique names; every actor is killed at the end of the test."""
    handles = []

    class Spawner:
        def name(self, prefix: str) -> str:
            return f"test-caching-{prefix}-{uuid.uuid4().hex[:8]}"

        def double(self) -> ServiceRef:
            name = self.name("double")
            group = NodeGroup.launch(name, {name: ServiceSpec("cache_store_double:StoreDouble", threads=32)},
                                     actor_options={"runtime_env": {"env_vars": {"PYTHONPATH": _TESTS}}})
            handles.append(group)
            return ServiceRef(name, name, owner=group)

        def node(self) -> StorageClient:
            node = StorageNode.launch(self.name("node"), None, engine="memory")
            handles.append(node)
            self.nodes[node.name] = node
            return node.client()

        def cache(self, cls, store, **options):
            if isinstance(store, StorageClient):
                store = store.target
            handle = cls.launch(self.name(cls.__name__), store, **options)
            handles.append(handle)
            self.caches.append(handle)
            return handle.client()

    spawner = Spawner()
    spawner.nodes, spawner.caches = {}, []
    yield spawner
    for h in reversed(handles):
        h.shutdown()


def _report(double) -> dict:
    return double.call("report")


# --- read-through --------------------------------------------------------------------

@pytest.mark.parametrize("policy, options", [("lru", {}), ("ttl", {"default_ttl_s": 600.0}), ("tinylfu", {})])
def test_read_through_loads_each_missing_key_once_under_concurrent_readers(spawn, policy, options):
    store = spawn.double()
    keys = [f"key-{i:02d}".encode() for i in range(30)]
    from ddia_ray.storage.engine import encode_ops

    store.call("write", encode_ops(WriteBatch(tuple(Op("put", k, k[::-1]) for k in keys))))
    cache = spawn.cache(ReadThroughCache, store, policy=policy, capacity=100, policy_options=options)
    store.call("gate", False, None)
    readers = 6
    barrier = threading.Barrier(readers)

    def read(i):
        barrier.wait()
        order = keys[i * 5:] + keys[:i * 5]
        return order, cache.get_many(order)

    with ThreadPoolExecutor(readers) as pool:
        futures = [pool.submit(read, i) for i in range(readers)]
        # reads are held at the store: every reader must lead or join a load of every key first
        wait_for(lambda: len(_report(store)["requested"]) + cache.stats().shared_loads == readers * len(keys),
                 30, what="every reader claimed or joined every key")
        store.call("gate", True, None)
        for f in futures:
            order, values = f.result(30)
            assert values == [k[::-1] for k in order]
    requested = _report(store)["requested"]
    assert sorted(requested) == sorted(keys)           # each key loaded from the store exactly once
    assert cache.get_many(keys[:3]) == [k[::-1] for k in keys[:3]]
    stats = cache.stats()
    assert isinstance(stats, CacheStats) and stats.policy == policy
    assert stats.loaded_keys == 30 and stats.hits == 3 and len(_report(store)["requested"]) == 30


def test_read_through_in_front_of_a_storage_node_and_write_invalidation(spawn):
    node = spawn.node()
    node.put_many({b"a": b"1", b"b": b"2"})
    cache = spawn.cache(ReadThroughCache, node, capacity=10)
    assert cache.get_many(["a", "b", "missing"]) == [b"1", b"2", None]
    assert cache.put("a", b"11") == 1                   # store first, then invalidate
    assert node.get(b"a") == b"11"
    assert cache.get("a") == b"11"
    futures = [cache.get_future(k) for k in ("a", "b", "missing")]
    assert [f.result(10) for f in futures] == [b"11", b"2", None]
    assert cache.delete_many(["b"]) == 1 and cache.get("b") is None
    assert cache.invalidate_many(["a"]) == 1
    s = cache.stats()
    assert s.loads == 3 and s.writes == 2     # initial batch, a after its write, b after its delete


def test_launch_refuses_bad_settings_before_starting_an_actor(spawn):
    node = spawn.node()
    with pytest.raises(ConfigError):
        ReadThroughCache.launch(spawn.name("bad"), node, policy="fifo")
    with pytest.raises(ConfigError):
        ReadThroughCache.launch(spawn.name("bad"), node, capacity=0)
    with pytest.raises(InvalidArgumentError):
        ReadThroughCache.launch(spawn.name("bad"), node, queue_capacity_keys=3)
    with pytest.raises(ConfigError):
        WriteBehindCache.launch(spawn.name("bad"), node, queue_capacity_keys=0)


# --- write-through ---------------------------------------------------------------------

def test_write_through_never_caches_a_refused_write(spawn):
    store = spawn.double()
    store.call("set", "refuse_prefix", b"bad")
    cache = spawn.cache(WriteThroughCache, store, capacity=10)
    assert cache.put_many({b"good": b"g"}) == 1
    assert cache.get("good") == b"g" and cache.stats().loads == 0   # filled by the write: no load
    assert cache.get("bad-1") is None                                # cached as absent (one load)
    loads_before = cache.stats().loads
    with pytest.raises(RemoteError, match="refused") as refused:  # not a ddia-ray error: relayed by name
        cache.put_many({b"bad-1": b"x", b"other": b"y"})
    assert refused.value.kind == "PermissionError" and refused.value.node == store.node
    s = cache.stats()
    assert s.write_failures == 2
    # neither key of the refused batch is cached: reading them goes back to the store
    assert cache.get_many(["bad-1", "other"]) == [None, None]
    assert cache.stats().loads == loads_before + 1
    assert _report(store)["data"] == {b"good": b"g"}
    with pytest.raises(RemoteError):
        cache.put_future("bad-2", b"z").result(10)


# --- write-behind ----------------------------------------------------------------------

def test_write_behind_coalesces_many_writes_of_one_key_into_one_store_write(spawn):
    node = spawn.node()
    cache = spawn.cache(WriteBehindCache, node, capacity=100, flush_interval_s=60.0, flush_batch_ops=1000)
    for i in range(50):
        cache.put("hot", f"v{i}".encode())
    cache.put_many({"x": b"1", "y": b"2"})
    cache.delete("y")                                    # deletes coalesce too
    assert cache.get_many(["hot", "x", "y"]) == [b"v49", b"1", None]   # reads see pending writes
    assert node.get(b"hot") is None                      # nothing flushed yet (interval: 60 s)
    s = cache.stats()
    assert (s.queue_depth, s.coalesced_writes, s.flushes) == (3, 50, 0)
    assert cache.flush(timeout_s=10) == 3
    assert node.get_many([b"hot", b"x", b"y"]) == [b"v49", b"1", None]
    assert node.stats()["versions"] == 3                 # one operation per key, from 53 writes
    s = cache.stats()
    assert (s.queue_depth, s.flushes, s.flushed_ops) == (0, 1, 3)


def test_write_behind_applies_backpressure_when_the_queue_is_full(spawn):
    store = spawn.double()
    store.call("gate", None, False)             # the store hangs on writes
    cache = spawn.cache(WriteBehindCache, store, capacity=100, queue_capacity_keys=3, put_timeout_s=1.0,
                        flush_interval_s=0.01)
    cache.put_many({b"k1": b"1", b"k2": b"2", b"k3": b"3"})
    wait_for(lambda: _report(store)["write_attempts"] == 1, 10, what="the flusher is stuck in the store")
    assert cache.put("k1", b"1b") == 1                   # a queued key still coalesces: needs no room
    with pytest.raises(BackpressureError):
        cache.put("k4", b"4")                            # needs room: refused after put_timeout_s
    assert cache.get("k4") is None                       # the refused write was not acknowledged, not cached
    late = ThreadPoolExecutor(1).submit(cache.put, "k5", b"5")  # will block until there is room
    store.call("gate", None, True)
    assert late.result(10) == 1
    cache.flush(timeout_s=10)
    assert _report(store)["data"] == {b"k1": b"1b", b"k2": b"2", b"k3": b"3", b"k5": b"5"}


def test_write_behind_loses_nothing_when_the_store_fails_then_recovers(spawn):
    store = spawn.double()
    store.call("set", "failing", True)
    cache = spawn.cache(WriteBehindCache, store, capacity=8, flush_interval_s=0.01,
                        retry_backoff_s=0.01, retry_backoff_max_s=0.05)
    expected = {f"k{i:02d}".encode(): f"v{i}".encode() for i in range(20)}
    cache.put_many(expected)
    wait_for(lambda: cache.stats().flush_failures >= 3, 20, what="several failed flushes")
    assert cache.get_many(sorted(expected)) == [expected[k] for k in sorted(expected)]  # still readable
    assert cache.stats().queue_depth == 20
    store.call("set", "failing", False)
    cache.flush(timeout_s=20)
    assert _report(store)["data"] == expected
    s = cache.stats()
    assert s.flushed_ops == 20 and s.queue_depth == 0 and s.flush_failures >= 3


def test_write_behind_close_drains_the_queue_first(spawn):
    store = spawn.double()
    cache = spawn.cache(WriteBehindCache, store, capacity=10, flush_interval_s=60.0)
    futures = [cache.put_future(f"k{i}", b"x") for i in range(10)]
    assert all(f.result(10) is None for f in futures)
    assert _report(store)["data"] == {}
    spawn.caches[-1].shutdown()  # the shell closes the cache, which drains its queue, before the kill
    assert _report(store)["data"] == {f"k{i}".encode(): b"x" for i in range(10)}
    with pytest.raises(ActorUnavailableError):
        cache.put_many({b"late": b"x"})


def test_write_behind_refuses_range_deletes(spawn):
    node = spawn.node()
    cache = spawn.cache(WriteBehindCache, node, capacity=10)
    with pytest.raises(InvalidArgumentError, match="delete_range"):
        cache.write(WriteBatch().delete_range(b"a", b"z"))
