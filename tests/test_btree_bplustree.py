"""The in-memory B+tree against a dict: every operation sequence, invariants after every step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray._validate import InvariantViolation
from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.storage.btree import BPlusTree

KEYS = st.integers(min_value=0, max_value=200)
OPS = st.lists(st.one_of(
    st.tuples(st.just("insert"), KEYS, st.integers()),
    st.tuples(st.just("delete"), KEYS, st.none()),
), max_size=300)


def _expected_scan(model: dict, start, end, reverse):
    keys = sorted(k for k in model if (start is None or k >= start) and (end is None or k < end))
    if reverse:
        keys.reverse()
    return [(k, model[k]) for k in keys]


@settings(max_examples=60, deadline=None)
@given(order=st.integers(min_value=3, max_value=8), ops=OPS)
def test_matches_a_dict_with_invariants_after_every_step(order, ops):
    tree, model = BPlusTree(order), {}
    for kind, key, value in ops:
        if kind == "insert":
            tree.insert(key, value)
            model[key] = value
        else:
            assert tree.delete(key) == (key in model)
            model.pop(key, None)
        tree.check_invariants()
        assert len(tree) == len(model)
    for key in range(0, 201, 7):
        assert tree.get(key) == model.get(key)
        assert (key in tree) == (key in model)
    assert tree.items() == sorted(model.items())


@settings(max_examples=60, deadline=None)
@given(order=st.integers(min_value=3, max_value=6), keys=st.sets(KEYS, max_size=120),
       start=st.none() | KEYS, end=st.none() | KEYS, reverse=st.booleans())
def test_range_scans_in_both_directions(order, keys, start, end, reverse):
    if start is not None and end is not None and start > end:
        start, end = end, start
    tree = BPlusTree(order)
    model = {}
    for k in keys:
        tree[k] = -k
        model[k] = -k
    assert list(tree.scan(start, end, reverse=reverse)) == _expected_scan(model, start, end, reverse)


@settings(max_examples=60, deadline=None)
@given(order=st.integers(min_value=3, max_value=9), keys=st.sets(KEYS, max_size=300),
       fill=st.floats(min_value=0.5, max_value=1.0), deletes=st.lists(KEYS, max_size=80))
def test_bulk_load_equals_inserting_one_by_one(order, keys, fill, deletes):
    items = [(k, str(k)) for k in sorted(keys)]
    bulk = BPlusTree.bulk_load(items, order=order, fill_factor=fill)
    bulk.check_invariants()
    assert bulk.items() == items and len(bulk) == len(items)
    model = dict(items)
    for k in deletes:  # the bulk-built tree must also stay valid under later changes
        assert bulk.delete(k) == (k in model)
        model.pop(k, None)
        bulk.check_invariants()
    assert bulk.items() == sorted(model.items())


def test_bulk_load_packs_leaves_and_grows_height_logarithmically():
    tree = BPlusTree.bulk_load(((i, i) for i in range(10_000)), order=16, fill_factor=1.0)
    tree.check_invariants()
    assert tree.height() == 4  # 15 keys per leaf: 667 leaves, 42 branches, 3, 1 root
    assert list(tree.scan(5000, 5003)) == [(5000, 5000), (5001, 5001), (5002, 5002)]


def test_deleting_everything_shrinks_the_root_to_an_empty_leaf():
    tree = BPlusTree(4)
    for i in range(500):
        tree.insert(i, i)
    assert tree.height() > 3
    for i in range(500):
        assert tree.delete(i)
        tree.check_invariants()
    assert tree.height() == 1 and len(tree) == 0 and tree.items() == []
    with pytest.raises(KeyError):
        del tree[3]


def test_check_invariants_catches_a_damaged_tree():
    tree = BPlusTree(4)
    for i in range(50):
        tree.insert(i, i)
    leaf = tree._first_leaf()
    leaf.keys[0], leaf.keys[1] = leaf.keys[1], leaf.keys[0]
    with pytest.raises(InvariantViolation):
        tree.check_invariants()


def test_bad_configuration_is_refused():
    with pytest.raises(ConfigError):
        BPlusTree(2)
    with pytest.raises(InvalidArgumentError):
        BPlusTree(4.5)
    with pytest.raises(ConfigError):
        BPlusTree.bulk_load([(2, 0), (1, 0)])
    with pytest.raises(ConfigError):
        BPlusTree.bulk_load([(1, 0)], fill_factor=0.3)
    with pytest.raises(ConfigError):
        list(BPlusTree().scan(5, 1))
