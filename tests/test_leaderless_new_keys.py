"""Blind writes of new keys in columns (leaderless ``_write_new`` and ``LLStoreNew``): the same states,
bytes, Merkle sums and logs as the general write path, at a fraction of its cost per key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.clocks import HybridClock
from ddia_ray.errors import ClockDriftError, CorruptRecordError, InvalidArgumentError
from ddia_ray.replication.leaderless import LeaderlessReplica
from ddia_ray.replication.leaderless_messages import LLStoreNew
from ddia_ray.replication.merkle import MerkleTree
from ddia_ray.replication.resolvers import Sibling
from ddia_ray.replication.state_format import decode_state, encode_state, new_states
from ddia_ray.replication.versioned_records import V_DELETE, V_PUT, V_UPDATE, VRead, VWrite
from ddia_ray.replication.versioned_replica import KeyChange, KeyChanges
from ddia_ray.replication.versions import _new_state

from test_leaderless import _call, _held, _net, _ok

_nodes = st.text(alphabet="abcxyz019-", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(_nodes, st.lists(st.binary(max_size=300), min_size=1, max_size=20),
       st.integers(0, 2 ** 63 - 1), st.integers(0, 2 ** 40))
def test_new_states_are_the_bytes_encode_state_gives_a_first_write(node, values, wall_ns, logical):
    built = new_states(node, values, wall_ns, logical)
    for i, (value, data) in enumerate(zip(values, built)):
        state = _new_state(node, Sibling(value, wall_ns, node, logical + i))
        assert data == encode_state(state)
        assert decode_state(data) == state


_keys = st.binary(min_size=1, max_size=3)  # a small key space: repeats and overwrites are common


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_keys, st.binary(max_size=8)), max_size=30),
       st.lists(st.tuples(_keys, st.binary(max_size=8)), min_size=1, max_size=30),
       st.lists(_keys, max_size=5))
def test_update_many_is_update_of_each_in_order(before, batch, removed):
    one, many = MerkleTree(fanout=4, depth=3), MerkleTree(fanout=4, depth=3)
    for tree in (one, many):
        for key, value in before:
            tree.update(key, value)
        for key in removed:
            tree.update(key, None)
    for key, value in batch:
        one.update(key, value)
    many.update_many([k for k, _ in batch], [v for _, v in batch])
    assert many.root() == one.root()
    assert many.sketch.sums() == one.sketch.sums()
    for level in range(4):
        assert bytes(many.level_sums(level)) == bytes(one.level_sums(level))
        assert bytes(many.level_counts(level)) == bytes(one.level_counts(level))
    assert sorted(many.entries_under(0, 0)) == sorted(one.entries_under(0, 0))


def test_update_many_refuses_columns_that_are_not_bytes_or_not_aligned():
    tree = MerkleTree(fanout=4, depth=2)
    with pytest.raises(InvalidArgumentError):
        tree.update_many([b"a"], [b"1", b"2"])
    with pytest.raises(InvalidArgumentError):
        tree.update_many([b"a", "b"], [b"1", b"2"])
    with pytest.raises(InvalidArgumentError):
        tree.update_many([b"a"], [None])
    assert tree.root() == MerkleTree(fanout=4, depth=2).root()  # nothing was taken


def test_now_pairs_reserves_readings_that_now_pair_then_follows():
    wall = [1_000]
    clock = HybridClock("n", physical_clock=lambda: wall[0])
    first = clock.now_pair()
    start = clock.now_pairs(5)
    assert start == (1_000, first[1] + 1)
    assert clock.now_pair() == (1_000, first[1] + 6)  # after the five reserved
    wall[0] = 2_000
    assert clock.now_pairs(3) == (2_000, 0) and clock.now_pair() == (2_000, 3)
    with pytest.raises(InvalidArgumentError):
        clock.now_pairs(0)


def test_now_pairs_past_the_logical_limit_refuses_and_leaves_the_clock():
    clock = HybridClock("n", physical_clock=lambda: 5, logical_limit=10)
    clock.now_pair()
    with pytest.raises(ClockDriftError):
        clock.now_pairs(20)
    assert clock.now_pair() == (5, 1)  # unchanged by the refusal


# --- the write path ---------------------------------------------------------------------------------


def _general(monkeypatch):
    """Make every leaderless replica take the general path for every write."""
    monkeypatch.setattr(LeaderlessReplica, "_new_writes", lambda self, items, n: {})


def _state_of(net, members=("r1", "r2", "r3")):
    out = {}
    for m in members:
        core = net.core(m)
        out[m] = (dict(core.versions.data.raw_items()), core.tree.root(),
                  [r for r in net.nodes[m].log if isinstance(r, (KeyChange, KeyChanges))])
    return out


def _run(batches, *, body=False, spec="siblings"):
    net = _net(w=1, r=1, spec=spec)
    answers = [_ok(net, "r1", VWrite(batch, body=body), 0.3) for batch in batches]
    return net, answers


_BATCH = tuple((V_PUT, b"k%03d" % i, b"v%d" % i, b"") for i in range(50))


@pytest.mark.parametrize("body", [False, True])
def test_a_batch_of_new_keys_stores_what_the_general_path_stores(monkeypatch, body):
    fast, fast_answers = _run([_BATCH], body=body)
    with monkeypatch.context() as m:
        _general(m)
        slow, slow_answers = _run([_BATCH], body=body)
    # The simulated clock stands still within a step, so both stamp the keys alike: equal bytes,
    # equal Merkle roots, equal logs, equal answers.
    assert _state_of(fast) == _state_of(slow)
    assert fast_answers == slow_answers
    assert len({root for _, root, _ in _state_of(fast).values()}) == 1
    logged = [r for r in fast.nodes["r2"].log if isinstance(r, KeyChanges)]
    assert logged and logged[0].keys == tuple(k for _, k, _, _ in _BATCH)


def test_the_batch_path_is_taken_for_new_keys_and_the_columns_cross(monkeypatch):
    sent = []
    real = LeaderlessReplica.send

    def spy(self, dst, payload):
        sent.append(type(payload).__name__)
        return real(self, dst, payload)

    monkeypatch.setattr(LeaderlessReplica, "send", spy)
    _run([_BATCH])
    assert sent.count("LLStoreNew") == 2 and "LLStore" not in sent
    sent.clear()
    with monkeypatch.context() as m:
        _general(m)
        _run([_BATCH])
    assert "LLStoreNew" not in sent and sent.count("LLStore") == 2  # so the comparison above compared two paths


def test_a_mixed_batch_takes_the_batch_path_for_its_new_keys_only():
    net, _ = _run([tuple((V_PUT, b"old%d" % i, b"first", b"") for i in range(3))])
    got = _ok(net, "r1", VRead((b"old0",)), 0.0)
    context = got[0].context
    batch = (*_BATCH[:10], (V_PUT, b"old0", b"second", context), (V_PUT, b"old1", b"blind", b""),
             (V_DELETE, b"old2", b"", b""))
    _ok(net, "r1", VWrite(batch, w=3), 0.3)
    for m in ("r1", "r2", "r3"):
        assert _held(net, m, b"old0") == (b"second",)  # the context replaced what it saw
        assert _held(net, m, b"old1") == (b"blind", b"first")  # a blind write beside it: siblings
        assert all(_held(net, m, k) == (v,) for _, k, v, _ in _BATCH[:10])
    assert len({net.core(m).tree.root() for m in ("r1", "r2", "r3")}) == 1


def test_a_key_named_twice_in_a_batch_keeps_both_writes_as_the_general_path_does():
    net, _ = _run([(_BATCH[0], (V_PUT, b"k000", b"again", b""))])
    for m in ("r1", "r2", "r3"):
        assert _held(net, m, b"k000") == (b"again", b"v0")


def test_a_receiver_that_already_holds_a_key_merges_the_first_write_as_a_sibling():
    net = _net(w=2, r=3)
    net.partition([["r1"], ["r2", "r3", "client"]])
    _ok(net, "r2", VWrite(((V_PUT, b"k000", b"from-r2", b""),)), 0.3)
    net.heal()
    assert _held(net, "r1", b"k000") == ()  # new to r1: its batch takes the batch path
    _ok(net, "r1", VWrite(_BATCH[:5], w=3), 0.3)
    assert _held(net, "r1", b"k000") == (b"v0",)
    for m in ("r2", "r3"):
        assert _held(net, m, b"k000") == (b"from-r2", b"v0")  # concurrent: both kept
    read = _ok(net, "r1", VRead((b"k000",)), 0.3)
    assert sorted(s.value for s in read[0].siblings) == [b"from-r2", b"v0"]


@pytest.mark.parametrize("bad", [(V_PUT, b"c:x", b"1", b""), (V_UPDATE, b"k999", ("increment", (1,)), b"")])
def test_a_batch_with_a_write_of_the_wrong_kind_is_refused_before_any_key_is_written(bad):
    net = _net(w=1, r=1, spec={"": "siblings", "c:": "crdt:gcounter"})
    call = _call(net, "r1", VWrite((*_BATCH[:3], bad), body=False), 0.3)
    assert not call.ok and call.error.kind == "CRDTTypeError"
    assert all(_held(net, m, k) == () for m in ("r1", "r2", "r3") for _, k, _, _ in _BATCH[:3])


def test_a_replica_restarted_after_a_batch_replays_the_same_states():
    net, _ = _run([_BATCH, tuple((V_PUT, b"j%03d" % i, b"w", b"") for i in range(20))])
    before = _state_of(net)["r2"][:2]
    net.crash("r2")
    net.restart("r2")
    assert _state_of(net)["r2"][:2] == before


# --- the message --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    dict(keys=(b"a", b"a"), values=(b"1", b"2")),  # a key twice
    dict(keys=(b"a",), values=(b"1", b"2")),  # not aligned
    dict(keys=(), values=()),  # empty
    dict(keys=(b"a", "b"), values=(b"1", b"2")),  # a str key
    dict(keys=(b"a",), values=(None,)),  # a deletion has no place here
    dict(wall_ns=-1), dict(logical=2 ** 63), dict(node=""), dict(node="x" * 10_000), dict(op=-1),
])
def test_a_malformed_store_of_new_keys_is_refused(fields):
    base = dict(op=1, node="r1", wall_ns=5, logical=0, keys=(b"a",), values=(b"1",))
    with pytest.raises(InvalidArgumentError):
        LLStoreNew(**{**base, **fields})


def test_a_corrupted_store_of_new_keys_fails_to_decode_as_corrupt():
    good = codec.encode(LLStoreNew(1, "r1", 5, 0, (b"a", b"b"), (b"1", b"2")))
    assert codec.decode(good) == LLStoreNew(1, "r1", 5, 0, (b"a", b"b"), (b"1", b"2"))
    bad = good.replace(b"\xc4\x01b", b"\xc4\x01a")  # the second key made equal to the first
    assert bad != good
    with pytest.raises(CorruptRecordError):
        codec.decode(bad)


# --- the coordinator's Merkle hashes ------------------------------------------------------------------


def _roots(net):
    return {m: net.core(m).tree.root() for m in ("r1", "r2", "r3")}


def _rebuilt_root(core):
    return MerkleTree.build(core.versions.data.raw_items(), **core.merkle_shape).root()


def test_receivers_take_the_coordinators_hashes_and_their_trees_are_what_hashing_gives():
    net, _ = _run([_BATCH])
    assert len(set(_roots(net).values())) == 1
    for m in ("r1", "r2", "r3"):
        assert net.core(m).tree.root() == _rebuilt_root(net.core(m))
        assert net.core(m).hash_mismatches == 0


def _lying_hashes(monkeypatch, place):
    """Make coordinators send one wrong entry hash, at ``place`` of each batch."""
    real = LLStoreNew.pack_hashes

    def lying(hashes):
        khs, ehs = hashes
        ehs = list(ehs)
        ehs[place] ^= 1
        return real((khs, ehs))

    monkeypatch.setattr(LLStoreNew, "pack_hashes", staticmethod(lying))


_BATCH130 = tuple((V_PUT, b"h%03d" % i, b"v", b"") for i in range(130))


@pytest.mark.parametrize("place", [0, 64, 129])  # the first, a 64th and the last: checked
def test_a_wrong_hash_at_a_checked_place_is_caught_and_the_batch_hashed_again(monkeypatch, place):
    _lying_hashes(monkeypatch, place)
    net, _ = _run([_BATCH130])
    for m in ("r2", "r3"):
        core = net.core(m)
        assert core.hash_mismatches == 1 and core.status()["hash_mismatches"] == 1
        assert core.tree.root() == _rebuilt_root(core)
    assert len(set(_roots(net).values())) == 1


def test_a_store_of_new_keys_without_hashes_is_hashed_by_the_receiver():
    from ddia_ray.runtime.core import Envelope

    net = _net(w=1, r=1)
    core = net.core("r2")
    keys, values = (b"a", b"b", b"c"), (b"1", b"2", b"3")
    core.step(Envelope("r1", "r2", LLStoreNew(0, "r1", 10, 0, keys, values)))
    assert core.tree.root() == _rebuilt_root(core)
    assert core.hash_mismatches == 0
    assert all(decode_state(core.versions.data.raw(k)).values()[0].value == v for k, v in zip(keys, values))


def test_hash_columns_round_trip():
    khs, ehs = [1, 2 ** 64 - 1, 7], [0, 5, 2 ** 63]
    message = LLStoreNew(1, "r1", 5, 0, (b"a", b"b", b"c"), (b"1", b"2", b"3"), LLStoreNew.pack_hashes((khs, ehs)))
    assert message.hash_columns() == (khs, ehs)
    assert LLStoreNew(1, "r1", 5, 0, (b"a",), (b"1",)).hash_columns() is None
    with pytest.raises(InvalidArgumentError):
        LLStoreNew(1, "r1", 5, 0, (b"a", b"b"), (b"1", b"2"), b"\x00" * 16)  # hashes of one key for two


# --- VWrite, checked column by column -------------------------------------------------------------------


@pytest.mark.parametrize("items", [
    (), ((V_PUT, b"k", b"v"),), ((V_PUT, b"k", b"v", b""), [V_PUT, b"k", b"v", b""]), ((7, b"k", b"v", b""),),
    ((True, b"k", b"v", b""),), ((V_PUT, "k", b"v", b""),), ((V_PUT, b"k", "v", b""),), ((V_PUT, b"k", b"v", None),),
    ((V_UPDATE, b"k", ("incr",), b""),), ((V_UPDATE, b"k", (1, ()), b""),), ((V_UPDATE, b"k", ("incr", [1]), b""),),
])
def test_a_malformed_write_batch_is_refused(items):
    with pytest.raises(InvalidArgumentError):
        VWrite(items)


def test_an_update_whose_arguments_nest_too_deep_is_refused():
    # The batch skips the codec's own walk of its fields (fields_checked): it walks update arguments itself.
    from ddia_ray.codec import FIELD_DEPTH_MAX
    from ddia_ray.errors import CodecError

    deep: tuple = ()
    for _ in range(FIELD_DEPTH_MAX + 2):
        deep = (deep,)
    with pytest.raises(CodecError):
        VWrite(((V_PUT, b"a", b"1", b""), (V_UPDATE, b"k", ("add", deep), b"")))


def test_a_write_batch_round_trips_and_a_corrupted_one_fails_as_corrupt():
    batch = VWrite(((V_PUT, b"a", b"1", b""), (V_DELETE, b"b", b"", b"ctx"), (V_UPDATE, b"c", ("incr", (2,)), b"")),
                   n=3, w=1, body=False)
    data = codec.encode(batch)
    assert codec.decode(data) == batch
    bad = data.replace(b"\xc4\x01a", b"\xa1a")  # the first key as a str
    assert bad != data
    with pytest.raises(CorruptRecordError):
        codec.decode(bad)


def test_a_wrong_hash_the_sample_missed_is_put_right_by_anti_entropy(monkeypatch):
    # Place 5 is not checked: the receivers' trees take the wrong entry, and differ from their data.
    # An anti-entropy exchange then finds the key, merges it to no change, and hashes it again.
    from ddia_ray.replication.leaderless_sync import SyncingLeaderlessReplica

    _lying_hashes(monkeypatch, 5)
    rehashed = []
    real = SyncingLeaderlessReplica.rehash
    monkeypatch.setattr(SyncingLeaderlessReplica, "rehash", lambda self, key: (rehashed.append(key), real(self, key)))
    net = _net(w=1, r=1, anti_entropy_ticks=5)
    _ok(net, "r1", VWrite(_BATCH130, body=False), 0.0)
    net.run_until(lambda: all(net.core(m).tree.root() == _rebuilt_root(net.core(m)) for m in ("r1", "r2", "r3")),
                  10.0)
    assert b"h005" in rehashed and all(net.core(m).hash_mismatches == 0 for m in ("r2", "r3"))
    assert all(net.core(m).tree.root() == _rebuilt_root(net.core(m)) for m in ("r1", "r2", "r3"))
    assert len(set(_roots(net).values())) == 1
