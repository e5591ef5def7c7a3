"""The cache actors on real Ray, in front of a storage node or a store double that can stall and fail."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray

from ddia_ray import codec
from ddia_ray.caching import CacheStats, ReadThroughCache, WriteBehindCache, WriteThroughCache
from ddia_ray.errors import BackpressureError, ConfigError, DatabaseClosedError, InvalidArgumentError
from ddia_ray.storage.engine import MemoryEngine, Op, WriteBatch, decode_ops
from ddia_ray.storage.node import StorageClient, StorageNode
from raywait import wait_for

pytestmark = pytest.mark.ray


@ray.remote(num_cpus=0, max_concurrency=32)
class StoreDouble:
    """Speaks the storage node's protocol over MemoryEngine; can hold reads/writes, fail, or refuse keys."""

    def __init__(self):
        self.engine = MemoryEngine()
        self.lock = threading.Lock()
        self.requested: list[bytes] = []      # keys asked for by get_many (recorded before any gate)
        self.written: dict[bytes, int] = {}   # applied operations per key
        self.write_attempts = 0
        self.failing = False
        self.refuse_prefix: bytes | None = None
        self.reads_open = threading.Event()
        self.reads_open.set()
        self.writes_open = threading.Event()
        self.writes_open.set()

    def ping(self) -> str:
        return "double"

    def get_many(self, keys: bytes) -> bytes:
        ks = codec.decode(keys, tuple)
        with self.lock:
            self.requested.extend(ks)
        assert self.reads_open.wait(30)
        return codec.encode(tuple(self.engine.get(k) for k in ks))

    def write(self, ops: bytes) -> int:
        batch = decode_ops(ops)
        with self.lock:
            self.write_attempts += 1
        if self.failing:
            raise ConnectionError("store is down")
        if self.refuse_prefix is not None and any(op.key.startswith(self.refuse_prefix) for op in batch.ops):
            raise PermissionError("store refused the write")
        assert self.writes_open.wait(30)
        self.engine.write(batch)
        with self.lock:
            for op in batch.ops:
                self.written[op.key] = self.written.get(op.key, 0) + 1
        return len(batch)

    def set(self, **attrs) -> None:
        for name, value in attrs.items():
            setattr(self, name, value)

    def gate(self, reads: bool | None = None, writes: bool | None = None) -> None:
        for event, is_open in ((self.reads_open, reads), (self.writes_open, writes)):
            if is_open is True:
                event.set()
            elif is_open is False:
                event.clear()

    def report(self) -> dict:
        with self.lock:
            return {"requested": list(self.requested), "written": dict(self.written),
                    "write_attempts": self.write_attempts,
                    "data": dict(self.engine.scan())}


@pytest.fixture
def spawn(ray_session):
    """Launch helpers with unique names; every actor is killed at the end of the test."""
    handles = []

    class Spawner:
        def name(self, prefix: str) -> str:
            return f"test-caching-{prefix}-{uuid.uuid4().hex[:8]}"

        def double(self):
            h = StoreDouble.remote()
            ray.get(h.ping.remote())
            handles.append(h)
            return h

        def node(self) -> StorageClient:
            client = StorageNode.launch(self.name("node"), None, engine="memory")
            handles.append(client.handle)
            return client

        def cache(self, cls, store, **options):
            client = cls.launch(self.name(cls.__name__), store, **options)
            handles.append(client.handle)
            return client

    yield Spawner()
    for h in handles:
        ray.kill(h)


def _report(double) -> dict:
    return ray.get(double.report.remote())


# --- read-through --------------------------------------------------------------------

@pytest.mark.parametrize("policy, options", [("lru", {}), ("ttl", {"default_ttl_s": 600.0}), ("tinylfu", {})])
def test_read_through_loads_each_missing_key_once_under_concurrent_readers(spawn, policy, options):
    store = spawn.double()
    keys = [f"key-{i:02d}".encode() for i in range(30)]
    ray.get(store.write.remote(codec.encode(tuple(Op("put", k, k[::-1]) for k in keys))))
    cache = spawn.cache(ReadThroughCache, store, policy=policy, capacity=100, policy_options=options)
    ray.get(store.gate.remote(reads=False))
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
        ray.get(store.gate.remote(reads=True))
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
    ray.get(store.set.remote(refuse_prefix=b"bad"))
    cache = spawn.cache(WriteThroughCache, store, capacity=10)
    assert cache.put_many({b"good": b"g"}) == 1
    assert cache.get("good") == b"g" and cache.stats().loads == 0   # filled by the write: no load
    assert cache.get("bad-1") is None                                # cached as absent (one load)
    loads_before = cache.stats().loads
    with pytest.raises(PermissionError, match="refused"):
        cache.put_many({b"bad-1": b"x", b"other": b"y"})
    s = cache.stats()
    assert s.write_failures == 2
    # neither key of the refused batch is cached: reading them goes back to the store
    assert cache.get_many(["bad-1", "other"]) == [None, None]
    assert cache.stats().loads == loads_before + 1
    assert _report(store)["data"] == {b"good": b"g"}
    with pytest.raises(PermissionError):
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
    ray.get(store.gate.remote(writes=False))             # the store hangs on writes
    cache = spawn.cache(WriteBehindCache, store, capacity=100, queue_capacity_keys=3, put_timeout_s=1.0,
                        flush_interval_s=0.01)
    cache.put_many({b"k1": b"1", b"k2": b"2", b"k3": b"3"})
    wait_for(lambda: _report(store)["write_attempts"] == 1, 10, what="the flusher is stuck in the store")
    assert cache.put("k1", b"1b") == 1                   # a queued key still coalesces: needs no room
    with pytest.raises(BackpressureError):
        cache.put("k4", b"4")                            # needs room: refused after put_timeout_s
    assert cache.get("k4") is None                       # the refused write was not acknowledged, not cached
    late = ThreadPoolExecutor(1).submit(cache.put, "k5", b"5")  # will block until there is room
    ray.get(store.gate.remote(writes=True))
    assert late.result(10) == 1
    cache.flush(timeout_s=10)
    assert _report(store)["data"] == {b"k1": b"1b", b"k2": b"2", b"k3": b"3", b"k5": b"5"}


def test_write_behind_loses_nothing_when_the_store_fails_then_recovers(spawn):
    store = spawn.double()
    ray.get(store.set.remote(failing=True))
    cache = spawn.cache(WriteBehindCache, store, capacity=8, flush_interval_s=0.01,
                        retry_backoff_s=0.01, retry_backoff_max_s=0.05)
    expected = {f"k{i:02d}".encode(): f"v{i}".encode() for i in range(20)}
    cache.put_many(expected)
    wait_for(lambda: cache.stats().flush_failures >= 3, 20, what="several failed flushes")
    assert cache.get_many(sorted(expected)) == [expected[k] for k in sorted(expected)]  # still readable
    assert cache.stats().queue_depth == 20
    ray.get(store.set.remote(failing=False))
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
    cache.close(timeout_s=10)
    assert _report(store)["data"] == {f"k{i}".encode(): b"x" for i in range(10)}
    with pytest.raises(DatabaseClosedError):
        cache.put_many({b"late": b"x"})


def test_write_behind_refuses_range_deletes(spawn):
    node = spawn.node()
    cache = spawn.cache(WriteBehindCache, node, capacity=10)
    with pytest.raises(InvalidArgumentError, match="delete_range"):
        cache.write(WriteBatch().delete_range(b"a", b"z"))
