"""Vector clocks: comparison, semilattice laws, immutability, codec, bad input."""

from __future__ import annotations

import pickle

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray.clocks import Ordering, VectorClock
from ddia_ray.codec import FORMAT_1, decode, encode
from ddia_ray.errors import ConfigError, CorruptRecordError, InvalidArgumentError

clocks = st.dictionaries(st.sampled_from("abcde"), st.integers(0, 4), max_size=5).map(VectorClock)


def test_increment_and_get():
    v = VectorClock().increment("a").increment("a").increment("b")
    assert v.get("a") == 2 and v.get("b") == 1 and v.get("zz") == 0
    assert list(v.nodes()) == ["a", "b"]


def test_zero_entries_do_not_matter():
    assert VectorClock({"a": 1, "b": 0}) == VectorClock({"a": 1})
    assert hash(VectorClock({"a": 1, "b": 0})) == hash(VectorClock({"a": 1}))
    assert VectorClock({"b": 0}) == VectorClock()
    assert encode(VectorClock({"b": 2, "a": 1})) == encode(VectorClock({"a": 1, "c": 0, "b": 2}))


def test_compare_cases():
    a1 = VectorClock({"a": 1})
    a1b1 = VectorClock({"a": 1, "b": 1})
    b1 = VectorClock({"b": 1})
    assert a1.compare(a1b1) is Ordering.BEFORE and a1.happened_before(a1b1)
    assert a1b1.compare(a1) is Ordering.AFTER and not a1b1.happened_before(a1)
    assert a1.compare(VectorClock({"a": 1})) is Ordering.EQUAL
    assert a1.compare(b1) is Ordering.CONCURRENT and a1.concurrent_with(b1)
    assert not a1.concurrent_with(a1b1)
    assert VectorClock().compare(a1) is Ordering.BEFORE


def test_merge_is_pointwise_max():
    merged = VectorClock({"a": 3, "b": 1}).merge(VectorClock({"b": 4, "c": 2}))
    assert merged == VectorClock({"a": 3, "b": 4, "c": 2})


def test_clocks_are_immutable_values():
    v = VectorClock({"a": 1})
    w = v.increment("a")
    assert v.get("a") == 1 and w.get("a") == 2
    with pytest.raises(TypeError):
        v.entries["a"] = 5
    with pytest.raises(TypeError):
        v.entries.update({"b": 1})
    with pytest.raises(AttributeError):
        v.entries = {}
    source = {"a": 1}
    v2 = VectorClock(source)
    source["a"] = 9
    assert v2.get("a") == 1  # entries were copied at construction
    assert len({v, VectorClock({"a": 1}), w}) == 2


@settings(max_examples=150)
@given(clocks, clocks)
def test_merge_commutative(x, y):
    assert x.merge(y) == y.merge(x)


@settings(max_examples=150)
@given(clocks, clocks, clocks)
def test_merge_associative(x, y, z):
    assert x.merge(y).merge(z) == x.merge(y.merge(z))


@settings(max_examples=150)
@given(clocks, clocks)
def test_merge_idempotent_and_an_upper_bound(x, y):
    assert x.merge(x) == x
    m = x.merge(y)
    assert x.compare(m) in (Ordering.BEFORE, Ordering.EQUAL)
    assert y.compare(m) in (Ordering.BEFORE, Ordering.EQUAL)


@settings(max_examples=150)
@given(clocks, clocks)
def test_compare_is_antisymmetric(x, y):
    mirror = {
        Ordering.BEFORE: Ordering.AFTER,
        Ordering.AFTER: Ordering.BEFORE,
        Ordering.EQUAL: Ordering.EQUAL,
        Ordering.CONCURRENT: Ordering.CONCURRENT,
    }
    assert y.compare(x) is mirror[x.compare(y)]
    assert (x.compare(y) is Ordering.EQUAL) == (x == y)


@settings(max_examples=100)
@given(clocks)
def test_codec_and_pickle_round_trip(v):
    back = decode(encode(v), expect=VectorClock)
    assert back == v and hash(back) == hash(v)
    assert back.compare(v) is Ordering.EQUAL
    with pytest.raises(TypeError):
        back.entries["a"] = 1  # still immutable after decoding
    assert pickle.loads(pickle.dumps(v)) == v


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: VectorClock({"a": -1}), ConfigError),
        (lambda: VectorClock({"a": 1.5}), InvalidArgumentError),
        (lambda: VectorClock({"a": True}), InvalidArgumentError),
        (lambda: VectorClock({1: 1}), InvalidArgumentError),
        (lambda: VectorClock({"": 1}), ConfigError),
        (lambda: VectorClock([("a", 1)]), InvalidArgumentError),
        (lambda: VectorClock().increment(3), InvalidArgumentError),
        (lambda: VectorClock().get(None), InvalidArgumentError),
        (lambda: VectorClock().merge({"a": 1}), InvalidArgumentError),
        (lambda: VectorClock().compare("a"), InvalidArgumentError),
    ],
)
def test_bad_input_raises_project_errors(make, error):
    with pytest.raises(error):
        make()


def test_decode_rejects_negative_counter():
    body = msgpack.packb({"t": "clock.vector", "v": 1, "f": {"entries": {"a": -3}}})
    with pytest.raises(CorruptRecordError):
        decode(msgpack.packb(msgpack.ExtType(FORMAT_1, body)))
