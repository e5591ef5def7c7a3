"""Where a versioned replica keeps its states: encoded, with the states read lately kept decoded.

ddia_ray/replication/version_store.py: a model-based test of MemoryVersions against a dict, and the
cache's rules (reads enter it, writes only refresh it, a sweep's peek leaves it alone).
"""

from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ddia_ray.clocks import DVVSet
from ddia_ray.replication.resolvers import Sibling
from ddia_ray.replication.version_store import MemoryVersions
from ddia_ray.replication.state_format import encode_state


def _state(value: bytes, counter: int = 1) -> DVVSet:
    return DVVSet((("n", counter, (Sibling(value, counter, "n", 0),)),), ())


keys = st.sampled_from([b"a", b"b", b"c", b"d", b"e"])


class MemoryVersionsModel(RuleBasedStateMachine):
    """Random writes, reads, peeks, removals and offers against a dict of the same states."""

    def __init__(self):
        super().__init__()
        self.mapping = MemoryVersions(cache_keys=2)
        self.model: dict[bytes, DVVSet] = {}

    @rule(key=keys, value=st.binary(max_size=4), counter=st.integers(1, 5))
    def write(self, key, value, counter):
        state = _state(value, counter)
        self.mapping[key] = state
        self.model[key] = state
        assert self.mapping.encoded_as(key, state) == encode_state(state)

    @rule(key=keys, value=st.binary(max_size=4))
    def write_offered(self, key, value):
        state = _state(value)
        data = encode_state(state)
        self.mapping.offer(key, state, data)
        self.mapping[key] = state
        self.model[key] = state
        assert self.mapping.encoded_as(key, state) is data  # the very bytes offered

    @rule(key=keys)
    def read(self, key):
        assert self.mapping.get(key) == self.model.get(key)
        assert (key in self.mapping) == (key in self.model)

    @rule(key=keys)
    def peek(self, key):
        cached = set(self.mapping._cache)
        assert self.mapping.peek(key) == self.model.get(key)
        assert set(self.mapping._cache) == cached

    @rule(key=keys)
    def remove(self, key):
        if key in self.model:
            assert self.mapping.pop(key) == self.model.pop(key)
        else:
            with pytest.raises(KeyError):
                del self.mapping[key]

    @invariant()
    def same_contents(self):
        assert len(self.mapping) == len(self.model)
        assert dict(self.mapping.items()) == self.model
        assert dict(self.mapping.raw_items()) == {k: encode_state(v) for k, v in self.model.items()}
        assert len(self.mapping._cache) <= 2


TestMemoryVersions = MemoryVersionsModel.TestCase
TestMemoryVersions.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_reads_enter_the_cache_and_writes_only_refresh_it():
    m = MemoryVersions(cache_keys=4)
    m[b"new"] = _state(b"1")
    assert b"new" not in m._cache  # a stream of new keys leaves nothing decoded behind
    first = m.get(b"new")
    assert m._cache[b"new"] is first  # read: decoded once, kept
    again = _state(b"2", 2)
    m[b"new"] = again
    assert m._cache[b"new"] is again  # a read-modify-write keeps the key decoded
    assert m.get(b"new") is again
    m.clear()
    assert len(m) == 0 and not m._cache and m.get(b"new") is None


def test_an_offer_is_taken_only_by_the_write_of_that_state_under_that_key():
    m = MemoryVersions()
    offered, other = _state(b"x"), _state(b"x")
    m.offer(b"k", offered, b"not what encoding gives")
    m[b"k"] = other  # an equal state, not the one offered: encoded afresh
    assert m.raw(b"k") == encode_state(other)
    m.offer(b"k", offered, b"bogus")
    m[b"j"] = offered  # another key: encoded afresh, and the offer is spent
    m[b"k"] = offered
    assert m.raw(b"j") == m.raw(b"k") == encode_state(offered)
    m.offer(b"k", offered, b"taken as is")
    m[b"k"] = offered
    assert m.raw(b"k") == b"taken as is"  # trusted: the sender encoded this very state
