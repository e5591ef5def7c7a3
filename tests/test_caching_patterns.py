"""CacheFront and CacheAside against an in-process store double (no Ray): coherence under races."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ddia_ray import codec
from ddia_ray.caching import CacheAside, CacheFront, CacheStats, LRUCache, make_policy
from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.storage.engine import MemoryEngine, Op, WriteBatch
from raywait import wait_for


class FakeStore:
    """A StorageClient look-alike over MemoryEngine that records calls and can pause or refuse."""

    def __init__(self):
        self.engine = MemoryEngine()
        self.lock = threading.Lock()
        self.get_calls: list[tuple] = []
        self.write_calls = 0
        self.read_done = threading.Event()   # set once a get_many has read the engine
        self.gate: threading.Event | None = None  # when set, get_many waits on it after reading
        self.refuse_prefix: bytes | None = None

    def get_many(self, keys):
        values = [self.engine.get(k) for k in keys]
        with self.lock:
            self.get_calls.append(tuple(keys))
        self.read_done.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test never opened the gate"
        return values

    def write(self, batch: WriteBatch) -> int:
        with self.lock:
            self.write_calls += 1
        if self.refuse_prefix is not None and any(op.key.startswith(self.refuse_prefix) for op in batch.ops):
            raise PermissionError("store refused the write")
        self.engine.write(batch)
        return len(batch)

    def loaded_keys(self) -> list:
        return [k for call in self.get_calls for k in call]


class FakeClock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_cache_aside_loads_misses_once_then_hits():
    store = FakeStore()
    store.engine.put(b"a", b"1")
    cache = CacheAside(store, capacity=10)
    assert cache.get_many(["a", "b", "a"]) == [b"1", None, b"1"]
    assert store.get_calls == [(b"a", b"b")]           # one call, duplicates and all misses together
    assert cache.get_many([b"a", b"b"]) == [b"1", None]  # absent keys are cached too
    assert len(store.get_calls) == 1
    s = cache.stats()
    assert (s.hits, s.loads, s.loaded_keys) == (2, 1, 2)


def test_cache_aside_write_invalidates_and_the_next_read_reloads():
    store = FakeStore()
    store.engine.put(b"k", b"old")
    cache = CacheAside(store, capacity=10)
    assert cache.get("k") == b"old"
    cache.put("k", b"new")
    assert b"k" not in cache.front.core
    assert cache.get("k") == b"new"
    cache.delete("k")
    assert cache.get("k") is None and store.engine.get(b"k") is None


def test_a_load_racing_a_write_never_puts_the_old_value_back():
    """The memcache "stale set": reader reads old, writer writes + invalidates, reader fills old."""
    store = FakeStore()
    store.engine.put(b"k", b"old")
    cache = CacheAside(store, capacity=10)
    gate = store.gate = threading.Event()
    reader = ThreadPoolExecutor(1).submit(cache.get, "k")
    assert store.read_done.wait(10)       # the reader holds the old value, not yet filled
    cache.put("k", b"new")                # store updated, key invalidated, the reader's lease revoked
    gate.set()
    assert reader.result(10) == b"old"    # it answers what it read (concurrent with the write)...
    assert b"k" not in cache.front.core   # ...but does not cache it
    store.gate = None
    assert cache.get("k") == b"new"


def test_concurrent_readers_load_each_missing_key_once():
    store = FakeStore()
    keys = [f"k{i}".encode() for i in range(20)]
    store.engine.write(WriteBatch([Op("put", k, k.upper()) for k in keys]))
    cache = CacheAside(store, capacity=100)
    gate = store.gate = threading.Event()
    barrier = threading.Barrier(6)

    def reader(i):
        barrier.wait()
        return cache.get_many(keys[i:] + keys[:i])  # same keys, different orders

    pool = ThreadPoolExecutor(6)
    futures = [pool.submit(reader, i) for i in range(6)]
    flight = cache.front._flight
    # nothing can be filled while the gate is closed, so every reader must claim or join every key
    wait_for(lambda: flight.loads + flight.shared == 6 * 20, 10, what="every reader claimed or joined every key")
    gate.set()
    for i, f in enumerate(futures):
        assert f.result(10) == [k.upper() for k in keys[i:] + keys[:i]]
    pool.shutdown()
    assert sorted(store.loaded_keys()) == sorted(keys)   # each key loaded exactly once
    s = cache.stats()
    assert (s.loaded_keys, s.shared_loads, s.hits) == (20, 100, 0)


def test_a_failed_load_reaches_every_waiter_and_caches_nothing():
    store = FakeStore()
    cache = CacheAside(store, capacity=10)

    def broken(keys):
        raise ConnectionError("store down")

    with pytest.raises(ConnectionError):
        cache.front.get_many([b"x"], broken)
    assert len(cache.front.core) == 0 and not cache.front._leases
    assert cache.get("x") is None  # recovers: the key was forgotten


def _write_through(front: CacheFront, store: FakeStore, batch: WriteBatch):
    return front.write(tuple(batch.ops), lambda: store.write(batch), fill=True)


def test_write_through_fills_only_after_the_store_acknowledged():
    store = FakeStore()
    front = CacheFront(LRUCache(10))
    _write_through(front, store, WriteBatch().put(b"a", b"1").delete(b"b"))
    assert front.core.get(b"a") == b"1" and front.core.get(b"b", default="MISS") is None
    store.refuse_prefix = b"bad"
    front.core.put(b"bad1", b"stale")
    with pytest.raises(PermissionError):
        _write_through(front, store, WriteBatch().put(b"bad1", b"x").put(b"ok", b"y"))
    # refused: nothing cached, and what was cached for those keys is dropped (the write may be ambiguous)
    assert b"bad1" not in front.core and b"ok" not in front.core
    assert front.get_many([b"bad1", b"ok"], store.get_many) == [None, None]
    s = front.stats()
    assert (s.writes, s.write_failures) == (4, 2)


def test_overlapping_writes_of_one_key_invalidate_instead_of_filling():
    store = FakeStore()
    front = CacheFront(LRUCache(10))
    first = (Op("put", b"k", b"1"),)
    second = (Op("put", b"k", b"2"),)
    front.begin_write(first)
    front.begin_write(second)             # the store may apply these in either order
    store.engine.write(WriteBatch(second))
    store.engine.write(WriteBatch(first))
    front.end_write(second, ok=True, fill=True)
    front.end_write(first, ok=True, fill=True)
    assert b"k" not in front.core
    assert front.get_many([b"k"], store.get_many) == [b"1"]
    front.begin_write(second)             # no overlap any more: filled again
    front.end_write(second, ok=True, fill=True)
    assert front.core.get(b"k") == b"2"


def test_delete_range_drops_the_cached_keys_of_the_range():
    store = FakeStore()
    front = CacheFront(LRUCache(10))
    _write_through(front, store, WriteBatch().put(b"a", b"1").put(b"b", b"2").put(b"c", b"3"))
    _write_through(front, store, WriteBatch().delete_range(b"a", b"c"))
    assert list(front.core.keys()) == [b"c"]
    assert front.get_many([b"a", b"b", b"c"], store.get_many) == [None, None, b"3"]


def test_ttl_policy_reloads_after_expiry_with_a_fake_clock():
    store = FakeStore()
    store.engine.put(b"k", b"v1")
    clock = FakeClock()
    cache = CacheAside(store, policy="ttl", capacity=10, default_ttl_s=5.0, clock=clock)
    assert cache.get("k") == b"v1"
    store.engine.put(b"k", b"v2")          # another writer, unseen by this cache
    clock.now_s = 4.9
    assert cache.get("k") == b"v1"
    clock.now_s = 5.0
    assert cache.get("k") == b"v2"
    assert cache.stats().expirations == 1


def test_byte_weighing_counts_key_and_value_bytes():
    store = FakeStore()
    store.engine.write(WriteBatch().put(b"k1", b"x" * 8).put(b"k2", b"y" * 8))
    cache = CacheAside(store, capacity=15, weigh="bytes")
    cache.get_many(["k1", "k2"])            # 10 bytes each: only one fits
    assert cache.stats().size == 10 and cache.stats().entries == 1


def test_configuration_errors():
    with pytest.raises(ConfigError):
        make_policy("fifo", 10)
    with pytest.raises(ConfigError):
        make_policy("lru", 10, default_ttl_s=1.0)
    with pytest.raises(ConfigError):
        CacheFront(LRUCache(3), weigh="pages")
    with pytest.raises(InvalidArgumentError):
        CacheAside(object())
    with pytest.raises(InvalidArgumentError):
        CacheStats("lru", -1, 0, 0, 0, 0, 0, 1)


def test_cache_stats_round_trip_through_the_codec():
    store = FakeStore()
    cache = CacheAside(store, policy="tinylfu", capacity=10)
    cache.get_many(["a", "b"])
    s = cache.stats()
    assert codec.decode(codec.encode(s), CacheStats) == s
    assert s.policy == "tinylfu" and s.misses == 2 and s.hit_rate == 0.0
