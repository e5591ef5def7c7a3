"""Hypothesis properties of the eviction cores and the write-behind queue."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.caching import CoalescingQueue, LRUCache, TTLCache, WTinyLFUCache
from ddia_ray.storage.engine import Op

KEYS = st.integers(min_value=0, max_value=12)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("get"), KEYS, st.floats(0, 2)),
        st.tuples(st.just("put"), KEYS, st.floats(0, 2), st.integers(1, 6), st.none() | st.floats(0.1, 5)),
        st.tuples(st.just("pop"), KEYS),
        st.tuples(st.just("expire"), st.floats(0, 2)),
    ),
    max_size=80,
)
MAKERS = {
    "lru": lambda cap: LRUCache(cap),
    "ttl": lambda cap: TTLCache(cap, default_ttl_s=3.0),
    "tinylfu": lambda cap: WTinyLFUCache(cap, sketch_width=16),
    "tinylfu-door": lambda cap: WTinyLFUCache(cap, doorkeeper=True, window_fraction=0.2),
}


def _check_core(name: str, capacity: int, ops: list) -> None:
    cache = MAKERS[name](capacity)
    latest: dict = {}       # key -> (value, size, expires_at_s) of its newest put
    now_s, gets, serial = 0.0, 0, 0
    for op in ops:
        kind = op[0]
        if kind == "get":
            _, key, dt = op
            now_s += dt
            gets += 1
            got = cache.get(key, now_s, default="MISS")
            if got != "MISS":
                value, _, expires_at_s = latest[key]
                assert got == value, "a hit must return the newest value"
                assert now_s < expires_at_s, "a hit must never return an expired value"
        elif kind == "put":
            _, key, dt, size, ttl_s = op
            now_s += dt
            serial += 1
            value = (key, serial)
            if name == "ttl":
                stored = cache.put(key, value, now_s, size=size, ttl_s=ttl_s)
                expires_at_s = now_s + (ttl_s if ttl_s is not None else 3.0)
            else:
                stored = cache.put(key, value, now_s, size=size)
                expires_at_s = float("inf")
            latest[key] = (value, size, expires_at_s)
            if stored:  # a get right after a successful put returns the value
                assert cache.get(key, now_s, default="MISS") == value
                gets += 1
            else:
                assert key not in cache
        elif kind == "pop":
            cache.pop(op[1])
        else:
            now_s += op[1]
            if name == "ttl":
                cache.expire(now_s)
                assert all(latest[k][2] > now_s for k in cache.keys())
        # invariants after every step
        held = list(cache.keys())
        assert cache.weight <= capacity
        assert cache.weight == sum(latest[k][1] for k in held)
        assert len(held) == len(set(held)) == len(cache)
        s = cache.stats()
        assert s.hits + s.misses == gets
        assert (s.size, s.entries, s.capacity) == (cache.weight, len(cache), capacity)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(MAKERS)), st.integers(1, 20), OPS)
def test_core_invariants(name, capacity, ops):
    _check_core(name, capacity, ops)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.lists(st.tuples(st.booleans(), KEYS), max_size=60))
def test_lru_matches_a_reference_model(capacity, ops):
    cache, model = LRUCache(capacity), OrderedDict()
    for is_put, key in ops:
        if is_put:
            cache.put(key, key)
            model[key] = key
            model.move_to_end(key)
            while len(model) > capacity:
                model.popitem(last=False)
        else:
            assert cache.get(key) == model.get(key)
            if key in model:
                model.move_to_end(key)
        assert list(cache.keys()) == list(model)


QUEUE_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.lists(st.tuples(st.booleans(), st.integers(0, 9)), min_size=1, max_size=4)),
        st.tuples(st.just("take"), st.integers(1, 5)),
        st.tuples(st.just("ack")),
        st.tuples(st.just("requeue")),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), QUEUE_STEPS)
def test_coalescing_queue_never_loses_an_acknowledged_write(capacity, steps):
    queue = CoalescingQueue(capacity)
    store: dict = {}        # what the store holds after the acked batches
    acked: dict = {}        # newest acknowledged op per key (what reads must see)
    in_flight: tuple = ()
    serial = 0
    for step in steps:
        if step[0] == "offer":
            ops = []
            for is_put, k in step[1]:
                serial += 1
                key = bytes([k])
                ops.append(Op("put", key, str(serial).encode()) if is_put else Op("delete", key))
            if queue.room_needed(ops) <= queue.room:
                queue.offer(ops, float(serial))
                for op in ops:
                    acked[op.key] = op
        elif step[0] == "take" and not in_flight:
            in_flight = queue.take(step[1])
            assert len({op.key for op in in_flight}) == len(in_flight)
        elif step[0] == "ack" and in_flight:
            for op in in_flight:
                store[op.key] = op.value if op.kind == "put" else None
            queue.ack()
            in_flight = ()
        elif step[0] == "requeue" and in_flight:
            queue.requeue()
            in_flight = ()
        assert 0 <= len(queue) <= capacity
        assert len(queue) == len(set(queue._pending) | set(queue._in_flight))
        for key, op in acked.items():  # reads see the newest acknowledged write, or the store has it
            queued = queue.lookup(key)
            if queued is not None:
                assert queued == op
            else:
                assert store.get(key) == (op.value if op.kind == "put" else None)
    # drain: everything acknowledged reaches the store, newest value per key
    if in_flight:
        queue.requeue()
    while queue.pending:
        for op in queue.take(3):
            store[op.key] = op.value if op.kind == "put" else None
        queue.ack()
    assert len(queue) == 0
    assert {k: v for k, v in store.items() if k in acked} == {
        k: (op.value if op.kind == "put" else None) for k, op in acked.items()}
