"""The anti-entropy Merkle tree: incremental updates agree with a build from a scan, and the sums add up.

DDIA 5.5 ("Read repair and anti-entropy"); the tree of ddia_ray/replication/merkle.py.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from ddia_ray.errors import ConfigError, InvalidArgumentError
from ddia_ray.history.convergence import root_of
from ddia_ray.replication.merkle import MerkleTree, entry_hash, key_hash
from ddia_ray.replication.power_sums import key_id

EXAMPLES = int(os.environ.get("DDIA_MERKLE_EXAMPLES", "60"))
MASK = (1 << 64) - 1

keys = st.binary(min_size=0, max_size=6)
values = st.binary(min_size=0, max_size=8)
ops = st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=60)
shapes = st.sampled_from([{"fanout": 2, "depth": 3}, {"fanout": 4, "depth": 2}, {"fanout": 16, "depth": 1},
                          {"fanout": 4, "depth": 5}])


def _write(tree: MerkleTree, final: dict, writes) -> None:
    """Apply ``writes`` (``(key, value or None)``) to ``tree`` and to the model ``final``."""
    for key, value in writes:
        tree.update(key, value)
        if value is None:
            final.pop(key, None)
        else:
            final[key] = value


@settings(max_examples=EXAMPLES, deadline=None)
@given(ops, shapes)
def test_incremental_updates_equal_a_build_from_the_final_scan(writes, shape):
    tree = MerkleTree(**shape)
    final: dict[bytes, bytes] = {}
    _write(tree, final, writes)
    built = MerkleTree.build(final.items(), **shape)
    assert tree == built
    assert tree.root() == built.root() == root_of(final.items())
    assert len(tree) == len(final)
    for key, value in final.items():
        assert tree.entry(key) == entry_hash(key, value)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(ops, max_size=4), shapes)
def test_reads_between_bursts_of_writes_see_every_write_before_them(bursts, shape):
    # The levels take the noted deltas when read: in a loop for a few, in numpy for a burst of 32 or
    # more (deletes wrap their negative deltas modulo 2**64 and 2**32). Each read must see them all.
    tree = MerkleTree(**shape)
    final: dict[bytes, bytes] = {}
    for burst in bursts:
        _write(tree, final, burst)
        built = MerkleTree.build(final.items(), **shape)
        assert tree.root() == built.root()
        assert len(tree) == len(final)
        for level in range(tree.depth + 1):
            assert list(tree.level_sums(level)) == list(built.level_sums(level))
            assert list(tree.level_counts(level)) == list(built.level_counts(level))
        assert tree.copy() == built


@pytest.mark.parametrize("burst", [1, 31, 32, 500])
def test_a_burst_of_writes_and_deletes_reaches_every_level_when_read(burst):
    # Bursts on both sides of the loop/numpy threshold, half of them deletes of keys written before.
    import random

    rng = random.Random(burst)
    tree = MerkleTree(fanout=4, depth=4)
    final: dict[bytes, bytes] = {}
    for _ in range(4):
        for _ in range(burst):
            key = rng.randbytes(3)
            if final and rng.random() < 0.5:
                key = rng.choice(sorted(final))
                tree.update(key, None)
                del final[key]
            else:
                final[key] = rng.randbytes(5)
                tree.update(key, final[key])
        built = MerkleTree.build(final.items(), fanout=4, depth=4)
        assert tree == built
        assert len(tree) == len(final)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(keys, values, max_size=40), shapes)
def test_every_node_is_the_sum_of_its_children_and_counts_add_up(data, shape):
    tree = MerkleTree.build(data.items(), **shape)
    f = tree.fanout
    for level in range(tree.depth):
        for i in range(f ** level):
            children = range(i * f, (i + 1) * f)
            assert tree.node_hash(level, i) == sum(tree.node_hash(level + 1, c) for c in children) & MASK
            assert tree.node_count_of(level, i) == sum(tree.node_count_of(level + 1, c) for c in children)
    leaves = [tree.segment(leaf) for leaf in range(tree.leaves)]
    assert sorted(k for seg in leaves for k, _ in seg) == sorted(data)
    for leaf, seg in enumerate(leaves):
        assert list(seg) == sorted(seg)
        assert tree.node_hash(tree.depth, leaf) == sum(h for _, h in seg) & MASK
        assert all(tree.leaf_of(k) == leaf for k, _ in seg)


def test_the_root_does_not_depend_on_the_shape():
    data = {b"k%d" % i: b"v%d" % i for i in range(300)}
    roots = {MerkleTree.build(data.items(), fanout=f, depth=d).root() for f, d in [(2, 1), (4, 6), (16, 3), (256, 1)]}
    assert roots == {root_of(data.items())}


def test_a_rewrite_of_the_same_value_or_a_delete_of_an_absent_key_changes_nothing():
    tree = MerkleTree(fanout=4, depth=3)
    tree.update(b"a", b"1")
    before = tree.copy()
    tree.update(b"a", b"1")
    tree.update(b"absent", None)
    assert tree == before
    tree.update(b"a", None)
    assert len(tree) == 0 and tree.root() == bytes(8)
    assert tree != before  # copy() is independent of the original


def test_hashes_reads_levels_as_8_byte_big_endian():
    tree = MerkleTree.build([(b"x", b"1"), (b"y", b"2")], fanout=4, depth=2)
    (root,) = tree.hashes(0, [0])
    assert root == tree.root() and int.from_bytes(root, "big") == tree.root_int()
    assert len(tree.hashes(2, range(16))) == 16
    with pytest.raises(InvalidArgumentError):
        tree.hashes(3, [0])
    with pytest.raises(InvalidArgumentError):
        tree.hashes(1, [4])


def test_entries_with_an_id_are_the_keys_whose_hash_has_it():
    data = {b"k%d" % i: b"v" for i in range(500)}
    for shape in ({"fanout": 4, "depth": 5}, {"fanout": 2, "depth": 12}, {"fanout": 256, "depth": 1}):
        tree = MerkleTree.build(data.items(), **shape)
        for key in list(data)[:20]:
            assert (key, tree.entry(key)) in tree.entries_with_id(key_id(key_hash(key)))
    assert tree.entries_with_id(0) == [] or all(key_id(key_hash(k)) == 0 for k, _ in tree.entries_with_id(0))
    with pytest.raises(InvalidArgumentError):
        tree.entries_with_id(1 << 31)


def test_a_scan_that_repeats_a_key_keeps_its_last_value_in_the_sums_too():
    built = MerkleTree.build([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")], fanout=4, depth=2)
    assert built == MerkleTree.build([(b"b", b"2"), (b"a", b"3")], fanout=4, depth=2)
    assert built.sketch == MerkleTree.build([(b"a", b"3"), (b"b", b"2")], fanout=4, depth=2).sketch


def test_entries_under_a_node_are_those_of_its_leaves():
    data = {b"key%d" % i: b"v" for i in range(200)}
    tree = MerkleTree.build(data.items(), fanout=4, depth=4)
    for level in range(tree.depth + 1):
        total = 0
        for i in range(4 ** level):
            entries = dict(tree.entries_under(level, i))
            assert len(entries) == tree.node_count_of(level, i)
            total += len(entries)
        assert total == 200


def test_keys_spread_over_leaves_by_their_hash():
    tree = MerkleTree.build(((b"k%d" % i, b"") for i in range(4096)), fanout=16, depth=2)
    counts = [tree.node_count_of(2, leaf) for leaf in range(256)]
    assert max(counts) < 40 and min(counts) > 0  # 16 a leaf on average
    assert tree.leaf_of(b"k1") == key_hash(b"k1") >> 56


@pytest.mark.parametrize("shape, error", [
    ({"fanout": 3}, ConfigError), ({"fanout": 1}, ConfigError), ({"depth": 0}, ConfigError),
    ({"fanout": 2, "depth": 33}, ConfigError), ({"fanout": 256, "depth": 9}, ConfigError),
    ({"fanout": 4, "depth": 20}, ConfigError), ({"fanout": True}, InvalidArgumentError),
    ({"depth": 2.0}, InvalidArgumentError)])
def test_impossible_shapes_are_refused(shape, error):
    with pytest.raises(error):
        MerkleTree(**shape)


def test_non_bytes_keys_and_values_are_refused():
    tree = MerkleTree(fanout=4, depth=2)
    with pytest.raises(InvalidArgumentError):
        tree.update("k", b"v")
    with pytest.raises(InvalidArgumentError):
        tree.update(b"k", "v")
    with pytest.raises(InvalidArgumentError):
        MerkleTree.build([(b"k", 1)], fanout=4, depth=2)


def test_shape_for_aims_at_a_few_keys_a_leaf():
    assert MerkleTree.shape_for(1_000_000) == {"fanout": 4, "depth": 10}
    assert MerkleTree.shape_for(10_000) == {"fanout": 4, "depth": 7}
    assert MerkleTree.shape_for(0) == {"fanout": 4, "depth": 1}
    shape = MerkleTree.shape_for(10 ** 12)
    MerkleTree(**shape)  # clamped to what fits NODES_MAX
    with pytest.raises(ConfigError):
        MerkleTree.shape_for(10, fanout=3)


def test_entry_hash_separates_key_from_value():
    assert entry_hash(b"ab", b"c") != entry_hash(b"a", b"bc")
    assert 0 <= entry_hash(b"k", b"v") <= MASK


def _view(tree: MerkleTree) -> tuple:
    """Everything a session reads of a tree: levels, entries per node and per id, the power sums."""
    levels = tuple((bytes(tree.level_sums(level)), bytes(tree.level_counts(level))) for level in range(tree.depth + 1))
    nodes = tuple(tuple(sorted(tree.entries_under(1, i))) for i in range(tree.fanout))
    ids = tuple(tuple(sorted(tree.entries_with_id(kid))) for kid in sorted({key_id(key_hash(k)) for k in tree.keys()}))
    return tree.root(), levels, nodes, ids, tree.sketch.sums(0, 8), tuple(sorted(tree.keys())), len(tree)


_ops = st.lists(st.tuples(st.binary(min_size=1, max_size=2), st.one_of(st.none(), st.binary(max_size=4))),
                max_size=40)


@settings(max_examples=150, deadline=None)
@given(_ops, _ops, _ops, st.booleans())
def test_a_snapshot_reads_as_a_copy_taken_at_the_same_moment_whatever_the_live_tree_does(before, after, batch, many):
    live = MerkleTree(fanout=4, depth=3)
    for key, value in before:
        live.update(key, value)
    snap, copy = live.snapshot(), live.copy()
    assert _view(snap) == _view(copy) and snap == copy
    for key, value in after:
        live.update(key, value)
    puts = [(k, v) for k, v in batch if v is not None]
    if many and puts:
        live.update_many([k for k, _ in puts], [v for _, v in puts])
    assert _view(snap) == _view(copy) and snap == copy  # the live tree's writes did not reach it
    again = MerkleTree(fanout=4, depth=3)
    for key, value in [*before, *after, *(puts if many else ())]:
        again.update(key, value)
    assert live == again  # and the live tree is as if no snapshot had been taken


def test_a_snapshot_is_read_only_and_its_live_tree_forgets_it_once_dropped():
    live = MerkleTree(fanout=4, depth=2)
    live.update(b"a", b"1")
    snap = live.snapshot()
    with pytest.raises(ConfigError):
        snap.update(b"a", b"2")
    with pytest.raises(ConfigError):
        snap.update_many([b"a"], [b"2"])
    with pytest.raises(ConfigError):
        snap.snapshot()
    assert snap.copy() == snap and snap.copy().snapshot() == snap  # a full copy of it is a live tree again
    del snap
    live.update(b"b", b"2")  # prunes the dead snapshot: nothing is kept for it any more
    assert live._frozen == []
