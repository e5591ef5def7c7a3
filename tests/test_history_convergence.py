"""The convergence checker: replicas converged iff their Merkle roots are equal (DDIA 5.4, 5.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray import codec
from ddia_ray.errors import CorruptRecordError, InvalidArgumentError
from ddia_ray.history import ConvergenceResult, check_convergence, check_roots
from ddia_ray.replication.merkle import MerkleTree


def test_equal_replicas_converged():
    data = {b"a": b"1", b"b": b"2"}
    result = check_convergence({"r1": data, "r2": dict(data), "r3": dict(data)})
    assert result.converged and result.divergent_keys == () and result.divergent_count == 0
    assert result.keys_checked == 2 and len(set(result.roots.values())) == 1
    assert result.groups == (("r1", "r2", "r3"),)
    assert result.summary().startswith("converged: 3 replicas")


def test_divergent_replicas_name_the_keys_sorted_and_capped():
    r1 = {b"k%02d" % i: b"v" for i in range(30)}
    r2 = dict(r1)
    for i in range(25):
        r2[b"k%02d" % i] = b"other"
    r3 = {**r1, b"extra": b"x"}
    result = check_convergence({"r1": r1, "r2": r2, "r3": r3}, sample_max=10)
    assert not result.converged
    assert result.divergent_count == 26 and len(result.divergent_keys) == 10
    assert list(result.divergent_keys) == sorted(result.divergent_keys)
    assert result.divergent_keys[0] == b"extra"
    assert result.groups == (("r1",), ("r2",), ("r3",))
    assert "26 of 31 keys differ" in result.summary()


def test_a_missing_key_and_an_empty_value_differ():
    result = check_convergence({"a": {b"k": b""}, "b": {}})
    assert not result.converged and result.divergent_keys == (b"k",)


def test_roots_are_the_merkle_roots_of_each_replica():
    data = {b"x%d" % i: b"%d" % i for i in range(100)}
    tree = MerkleTree.build(data.items(), fanout=4, depth=3)
    result = check_convergence({"a": data})
    assert result.roots == {"a": tree.root()}
    other = tree.copy()
    other.update(b"x1", b"changed")
    by_roots = check_roots({"a": tree.root(), "b": other.root(), "c": tree.root()})
    assert not by_roots.converged and by_roots.groups == (("a", "c"), ("b",))
    assert by_roots.divergent_count == -1 and "2 distinct roots among 3 replicas" in by_roots.summary()
    assert check_roots({"a": tree.root(), "b": tree.copy().root()}).converged


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.binary(max_size=3), st.binary(max_size=3), max_size=8), min_size=1, max_size=4))
def test_converged_exactly_when_every_dump_is_equal(dumps):
    result = check_convergence({f"r{i}": d for i, d in enumerate(dumps)})
    assert result.converged == all(d == dumps[0] for d in dumps)
    assert result.divergent_count == len({k for d in dumps for k in d if any(o.get(k) != d.get(k) for o in dumps)})


def test_results_travel_as_records():
    result = check_convergence({"a": {b"k": b"1"}, "b": {b"k": b"2"}})
    assert codec.decode(codec.encode(result)) == result
    with pytest.raises(CorruptRecordError):
        codec.decode(codec.encode(result).replace(b"\xc2", b"\x01", 1))  # converged: false -> 1


@pytest.mark.parametrize("bad", [{}, {"a": [1]}, {1: {}}, "x"])
def test_misuse_is_refused(bad):
    with pytest.raises(InvalidArgumentError):
        check_convergence(bad)


def test_roots_misuse_is_refused():
    with pytest.raises(InvalidArgumentError):
        check_roots({})
    with pytest.raises(InvalidArgumentError):
        check_roots({"a": "root"})
    with pytest.raises(InvalidArgumentError):
        ConvergenceResult(True, {"a": 1})
