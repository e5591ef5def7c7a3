"""Live reconfiguration of the eviction cores and of a cache front: capacity and TTL, while in use."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.caching import CacheAside, CacheFront, CacheSettings, LRUCache, TTLCache, WTinyLFUCache, make_policy
from ddia_ray.codec import decode, encode
from ddia_ray.errors import ConfigError, InvalidArgumentError


class FakeClock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- settings ---------------------------------------------------------------------------


def test_settings_are_validated_at_construction_and_at_decode():
    s = CacheSettings(capacity=5, default_ttl_s=2.5)
    assert decode(encode(s), CacheSettings) == s
    with pytest.raises(ConfigError, match="capacity"):
        CacheSettings(capacity=0)
    with pytest.raises(InvalidArgumentError, match="capacity"):
        CacheSettings(capacity="10")
    with pytest.raises(ConfigError, match="default_ttl_s"):
        CacheSettings(default_ttl_s=-1.0)


# --- cores ------------------------------------------------------------------------------------


def test_shrinking_an_lru_evicts_the_least_recently_used_at_once():
    c = LRUCache(5)
    for k in "abcde":
        c.put(k, k.upper())
    c.get("a")  # a becomes the most recently used
    assert c.reconfigure(capacity=2) == 3
    assert sorted(c.keys()) == ["a", "e"]
    assert c.stats().evictions == 3 and c.stats().capacity == 2
    assert c.reconfigure(capacity=10) == 0 and len(c) == 2, "growing removes nothing"


def test_a_bad_capacity_is_refused_and_the_old_one_stays():
    for core in (LRUCache(3), TTLCache(3, 10.0), WTinyLFUCache(3)):
        with pytest.raises(ConfigError, match="capacity"):
            core.reconfigure(0.0, capacity=0)
        with pytest.raises(InvalidArgumentError, match="capacity"):
            core.reconfigure(0.0, capacity=2.5)
        assert core.capacity == 3


def test_a_shorter_default_ttl_applies_to_entries_already_cached():
    c = TTLCache(10, default_ttl_s=100.0)
    c.put("old", 1, now_s=0.0)
    c.put("newer", 2, now_s=8.0)
    c.put("own", 3, now_s=0.0, ttl_s=100.0)
    removed = c.reconfigure(10.0, default_ttl_s=5.0)  # old expired at 5, newer expires at 13
    assert removed == 1 and "old" not in c
    assert c.expires_at("newer") == 13.0 and c.expires_at("own") == 100.0
    assert c.get("newer", 12.9) == 2 and c.get("newer", 13.0) is None
    assert c.stats().expirations == 2
    c.reconfigure(20.0, default_ttl_s=None)
    c.put("forever", 4, now_s=20.0)
    assert c.expires_at("forever") == math.inf


def test_a_longer_default_ttl_keeps_entries_longer_and_the_heap_stays_right():
    c = TTLCache(10, default_ttl_s=1.0)
    for i in range(5):
        c.put(i, i, now_s=float(i))
    assert c.reconfigure(2.5, default_ttl_s=10.0) == 2, "0 and 1 had expired under the old TTL: not revived"
    assert c.expire(9.0) == 0, "no stale heap item may expire an entry whose TTL was extended"
    assert [c.get(i, 9.5) for i in range(5)] == [None, None, 2, 3, 4]
    assert c.expire(14.0) == 3  # written at 2, 3 and 4: expiring at 12, 13 and 14


def test_a_ttl_core_shrinks_expired_entries_first():
    c = TTLCache(4, default_ttl_s=10.0)
    c.put("a", 1, now_s=0.0, ttl_s=1.0)
    for k in "bcd":
        c.put(k, 1, now_s=0.0)
    c.reconfigure(5.0, capacity=2)
    assert sorted(c.keys()) == ["c", "d"]
    s = c.stats()
    assert (s.expirations, s.evictions) == (1, 1)


def test_an_invalid_ttl_change_leaves_capacity_untouched_too():
    c = TTLCache(4, default_ttl_s=10.0)
    with pytest.raises(ConfigError, match="default_ttl_s"):
        c.reconfigure(0.0, capacity=2, default_ttl_s=0.0)
    assert (c.capacity, c.default_ttl_s) == (4, 10.0)


def test_shrinking_tinylfu_keeps_the_frequent_keys():
    c = WTinyLFUCache(100)
    for _ in range(5):
        for k in range(10):
            c.put(("hot", k), k) if ("hot", k) not in c else c.get(("hot", k))
    for k in range(90):
        c.put(("cold", k), k)
    for k in range(10):
        assert c.get(("hot", k)) == k  # the one a cold key pushed to probation is protected again
    c.reconfigure(capacity=20)
    assert len(c) <= 20 and c.weight <= 20
    assert all(("hot", k) in c for k in range(10)), "the frequent keys survived the shrink"
    assert c.window_capacity == 1.0 and c.protected_capacity == pytest.approx(19 * 0.8)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["lru", "ttl", "tinylfu"]),
       st.lists(st.one_of(st.tuples(st.just("put"), st.integers(0, 30), st.integers(1, 3)),
                          st.tuples(st.just("resize"), st.integers(1, 20), st.just(0))), max_size=60))
def test_capacity_is_never_exceeded_across_resizes(policy, steps):
    core = make_policy(policy, 10, **({"default_ttl_s": 50.0} if policy == "ttl" else {}))
    now = 0.0
    for kind, a, b in steps:
        now += 1.0
        if kind == "put":
            core.put(a, a, now, size=b)
        else:
            core.reconfigure(now, capacity=a)
        assert core.weight <= core.capacity
        assert core.stats().size == core.weight


# --- the front ------------------------------------------------------------------------------


def test_the_front_applies_settings_atomically_and_reports_them():
    clock = FakeClock()
    front = CacheFront(TTLCache(10, default_ttl_s=100.0), clock=clock)
    loads = []

    def load_many(keys):
        loads.append(keys)
        return [b"v" + k for k in keys]

    assert front.get_many([b"a", b"b", b"c"], load_many) == [b"va", b"vb", b"vc"]
    clock.now = 3.0
    assert front.reconfigure(CacheSettings(capacity=2, default_ttl_s=2.0)) == CacheSettings(2, 2.0)
    assert front.stats().entries == 0, "all three were written at 0 and expire at 2 under the new TTL"
    front.get_many([b"a"], load_many)
    assert len(loads) == 2 and front.settings() == CacheSettings(2, 2.0)


def test_the_front_refuses_a_ttl_for_a_policy_without_one_and_changes_nothing():
    front = CacheFront(LRUCache(5))
    with pytest.raises(ConfigError, match="needs the 'ttl' eviction policy"):
        front.reconfigure(CacheSettings(capacity=1, default_ttl_s=5.0))
    assert front.settings() == CacheSettings(5, None)
    with pytest.raises(InvalidArgumentError, match="CacheSettings"):
        front.reconfigure({"capacity": 1})


def test_cache_aside_forwards_reconfigure():
    class Store:
        def get_many(self, keys):
            return [b"x"] * len(keys)

        def write(self, batch):
            return len(batch.ops)

    aside = CacheAside(Store(), capacity=4)
    aside.get_many(["a", "b", "c", "d"])
    aside.reconfigure(CacheSettings(capacity=1))
    assert aside.stats().entries == 1 and aside.stats().evictions == 3
