"""The replica's side of partitioning: ownership records, the fence check, both protocols' cores
refusing keys they do not own (through their logs), and pinned scans (a partition's snapshot read)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.errors import (CorruptionError, InvalidArgumentError, MapVersionError, ScanExpiredError, StaleMapError,
                             WrongPartitionError)
from ddia_ray.kv.member import RaftMember
from ddia_ray.replication import DELETE_RANGE, PUT, LeaderFollowerReplica, ReplRead, ReplScan, ReplWrite
from ddia_ray.replication.ownership import (OWNERSHIP_KEY, OwnedRange, Ownership, ReplOwnership, check_fenced_ops,
                                            decode_ownership)
from ddia_ray.replication.raft_replica import RaftReplica
from ddia_ray.replication.records import RESERVED_PREFIX, around_reserved, check_ops
from ddia_ray.replication.state import MapState
from ddia_ray.runtime import SimNetwork


def _own(version=5, *ranges):
    return Ownership("s", version, tuple(ranges) or (OwnedRange(1, b"b", b"m", 3), OwnedRange(4, b"m", None, 5)))


# --- the record and its check ----------------------------------------------------------------------


def test_records_refuse_overlaps_bad_fields_and_survive_the_codec():
    own = _own()
    assert codec.decode(codec.encode(own)) == own
    with pytest.raises(InvalidArgumentError, match="overlap"):
        Ownership("s", 5, (OwnedRange(1, b"b", b"n", 3), OwnedRange(4, b"m", None, 5)))
    with pytest.raises(InvalidArgumentError, match="changed after"):
        Ownership("s", 2, (OwnedRange(1, b"b", b"m", 3),))
    with pytest.raises(InvalidArgumentError, match="not after"):
        OwnedRange(1, b"m", b"b", 1)
    with pytest.raises(InvalidArgumentError, match="names its store"):
        Ownership("", 1, ())
    with pytest.raises(CorruptionError):
        decode_ownership(b"\x93garbage")
    with pytest.raises(CorruptionError, match="not repl.ownership"):
        decode_ownership(codec.encode((1, 2)))
    assert decode_ownership(None) is None


def test_the_fence_check_tells_stale_wrong_and_future_maps_apart():
    own = _own()
    assert own.check_keys(5, (b"c", b"x", b"zz"), write=True) == {1: 1, 4: 2}
    assert own.check_keys(3, (b"c",), write=True) == {1: 1}  # an older map, right about an unchanged range
    with pytest.raises(StaleMapError) as e:
        own.check_keys(4, (b"x",), write=True)  # range 4 changed at version 5
    assert (e.value.version, e.value.current) == (4, 5)
    with pytest.raises(StaleMapError):
        own.check_keys(4, (b"a",), write=False)  # not ours, and the request's map is older than ours
    with pytest.raises(WrongPartitionError):
        own.check_keys(5, (b"a",), write=False)  # the same version says we own it: a routing bug
    with pytest.raises(MapVersionError) as e:
        own.check_keys(9, (b"a",), write=False)  # a version we never saw
    assert type(e.value) is MapVersionError and e.value.current == 5
    assert own.check_range(5, b"c", b"d", write=False) == 1
    with pytest.raises(StaleMapError):
        own.check_range(4, b"c", b"x", write=False)  # crosses two ranges
    with pytest.raises(MapVersionError, match="no partition yet"):
        check_fenced_ops(None, 3, ((PUT, b"c", b"v"),))


def test_a_frozen_range_serves_reads_and_refuses_writes():
    own = Ownership("s", 6, (OwnedRange(1, b"b", b"m", 3, writable=False),))
    assert own.check_keys(5, (b"c",), write=False) == {1: 1}
    with pytest.raises(StaleMapError, match="frozen"):
        check_fenced_ops(own, 5, ((PUT, b"c", b"v"),))
    with pytest.raises(StaleMapError):
        check_fenced_ops(own, 5, ((DELETE_RANGE, b"c", b"d"),))


def test_updates_only_go_forward_and_stay_in_their_store():
    own = _own()
    own.check_successor(_own(5))
    own.check_successor(_own(7))
    with pytest.raises(StaleMapError):
        own.check_successor(_own(4, OwnedRange(1, b"b", None, 3)))
    with pytest.raises(InvalidArgumentError, match="serves store"):
        own.check_successor(Ownership("t", 6, ()))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=4), min_size=1, max_size=6, unique=True), st.binary(max_size=5),
       st.integers(1, 8))
def test_a_key_is_accepted_exactly_when_an_owned_range_holds_it(cuts, key, version):
    cuts = sorted(cuts)
    ranges = tuple(OwnedRange(i, s, e, 1) for i, (s, e) in enumerate(zip(cuts, [*cuts[1:], None])) if i % 2 == 0)
    own = Ownership("s", 8, ranges)
    held = any(r.start <= key and (r.end is None or key < r.end) for r in ranges)
    try:
        own.check_keys(version, (key,), write=True)
        accepted = True
    except (StaleMapError, WrongPartitionError, MapVersionError):
        accepted = False
    assert accepted == held


def test_client_range_deletes_never_cover_the_replicas_own_keys():
    ops = ((DELETE_RANGE, b"", b"\xff"),)
    with pytest.raises(InvalidArgumentError, match="reserved"):
        check_ops(ops, client=True)
    cut = around_reserved(ops)
    check_ops(cut, client=True)
    assert all(not (s <= OWNERSHIP_KEY < e) for _, s, e in cut) and len(cut) == 2
    assert around_reserved(((DELETE_RANGE, b"a", b"b"),)) == ((DELETE_RANGE, b"a", b"b"),)
    state = MapState()
    state.apply(1, ((PUT, OWNERSHIP_KEY, b"x"), (PUT, b"k", b"v")))
    state.apply(2, cut)
    assert state.get(OWNERSHIP_KEY) == b"x" and state.get(b"k") is None
    assert state.scan(b"", None, 10) == ((), ())  # reserved keys never show in a scan
    assert RESERVED_PREFIX < OWNERSHIP_KEY


# --- both protocols' cores -------------------------------------------------------------------------

REPS, COORDS = ["r1", "r2", "r3"], ["c1", "c2", "c3"]


def _lf_group(mode="async"):
    sim = SimNetwork(3, tick_s=0.01)
    for c in COORDS:
        sim.add(c, lambda n, recovered=(), tick_s=0.01: RaftMember(
            n, recovered=recovered, tick_s=tick_s, voters=COORDS, raft={"election_ticks": 10, "heartbeat_ticks": 2}))
    for r in REPS:
        sim.add(r, lambda n, recovered=(), tick_s=0.01: LeaderFollowerReplica(
            n, recovered=recovered, tick_s=tick_s, group="g", members=REPS, coordinators=COORDS, mode=mode,
            lease_s=0.5))
    assert sim.run_until(lambda: _lf_leader(sim) is not None, 5.0)
    return sim, _lf_leader(sim)


def _lf_leader(sim):
    return next((r for r in REPS if sim.nodes[r].alive and sim.core(r).role == "leader"), None)


def _raft_group():
    sim = SimNetwork(3, tick_s=0.01)
    for r in REPS:
        sim.add(r, lambda n, recovered=(), tick_s=0.01: RaftReplica(
            n, recovered=recovered, tick_s=tick_s, group="g", voters=REPS,
            raft={"election_ticks": 10, "heartbeat_ticks": 2}))

    def leader():
        return next((r for r in REPS if sim.nodes[r].alive and sim.core(r).node.role == "leader"), None)

    assert sim.run_until(lambda: leader() is not None, 5.0)
    return sim, leader()


def _ask(sim, node, payload, timeout_s=3.0):
    call = sim.request(node, payload)
    assert sim.run_until(lambda: call.done, timeout_s)
    if not call.ok:
        raise call.error.exception()
    return call.result


@pytest.mark.parametrize("protocol", ["leader-follower", "raft"])
def test_a_group_refuses_what_it_does_not_own_through_its_log(protocol):
    sim, leader = _lf_group() if protocol == "leader-follower" else _raft_group()
    with pytest.raises(MapVersionError, match="no partition yet"):
        _ask(sim, leader, ReplWrite(((PUT, b"c", b"v"),), fence=1))
    _ask(sim, leader, ReplWrite(((PUT, b"a", b"unfenced"),)))  # the store's own writes are not checked
    _ask(sim, leader, ReplOwnership(_own(5, OwnedRange(1, b"b", b"m", 3)), acks=2))
    _ask(sim, leader, ReplWrite(((PUT, b"c", b"v1"),), client="k", seq=1, fence=5))
    with pytest.raises(StaleMapError):
        _ask(sim, leader, ReplWrite(((PUT, b"c", b"v2"), (PUT, b"x", b"v2")), client="k", seq=2, fence=4))
    with pytest.raises(WrongPartitionError):
        _ask(sim, leader, ReplRead((b"x",), fence=5))
    assert _ask(sim, leader, ReplRead((b"c",), fence=5)).values == (b"v1",)
    assert _ask(sim, leader, ReplScan(b"b", b"m", fence=5)).keys == (b"c",)
    with pytest.raises(StaleMapError):
        _ask(sim, leader, ReplScan(b"", None, fence=4))
    # Freeze the range: reads go on, writes stop, and an older record cannot come back.
    _ask(sim, leader, ReplOwnership(_own(6, OwnedRange(1, b"b", b"m", 3, writable=False)), acks=2))
    assert _ask(sim, leader, ReplRead((b"c",), fence=5)).values == (b"v1",)
    with pytest.raises(StaleMapError, match="frozen"):
        _ask(sim, leader, ReplWrite(((PUT, b"c", b"v3"),), client="k", seq=3, fence=5))
    with pytest.raises(StaleMapError, match="out of date"):
        _ask(sim, leader, ReplOwnership(_own(5, OwnedRange(1, b"b", b"m", 3)), acks=2))
    # Every replica holds the same record at the same position, and the refused writes changed nothing.
    assert sim.run_until(lambda: all(sim.core(r).state.get(b"c") == b"v1" and
                                     decode_ownership(sim.core(r).state.get(OWNERSHIP_KEY)).version == 6
                                     for r in REPS), 3.0)
    assert all(sim.core(r).state.get(b"x") is None for r in REPS)
    status = sim.core(leader).status()
    assert status["partitions"]["1"]["writes"] >= 1 and status["partitions"]["1"]["reads"] >= 2


# --- pinned scans (a partition's snapshot read for Ray Data) ----------------------------------------


@pytest.mark.parametrize("protocol", ["leader-follower", "raft"])
def test_a_pinned_scan_reads_every_page_from_one_view_and_then_lets_it_go(protocol):
    sim, leader = _lf_group() if protocol == "leader-follower" else _raft_group()
    _ask(sim, leader, ReplWrite(tuple((PUT, b"k%d" % i, b"old") for i in range(5))))
    first = _ask(sim, leader, ReplScan(b"k", b"l", limit=2, pin=-1))
    assert first.keys == (b"k0", b"k1") and first.more and first.pin > 0
    _ask(sim, leader, ReplWrite(((PUT, b"k2", b"new"), (PUT, b"k25", b"new"), (1, b"k4", b""))))
    follower = next(r for r in REPS if r != leader)
    with pytest.raises(ScanExpiredError):
        _ask(sim, follower, ReplScan(b"k2", b"l", limit=2, pin=first.pin))  # only the holder has the view
    second = _ask(sim, leader, ReplScan(b"k2", b"l", limit=2, pin=first.pin))
    assert second.keys == (b"k2", b"k3") and second.values == (b"old", b"old")  # as of the pin
    assert (second.epoch, second.lsn) == (first.epoch, first.lsn)
    third = _ask(sim, leader, ReplScan(b"k3\x00", b"l", limit=2, pin=first.pin))
    assert third.keys == (b"k4",) and not third.more and third.pin == 0  # done: the pin is released
    with pytest.raises(ScanExpiredError):
        _ask(sim, leader, ReplScan(b"k", b"l", limit=2, pin=first.pin))
    assert _ask(sim, leader, ReplScan(b"k", b"l")).keys == (b"k0", b"k1", b"k2", b"k25", b"k3")
    # An abandoned pin expires after its TTL (60 s by default) and frees what it held.
    abandoned = _ask(sim, leader, ReplScan(b"k", b"l", limit=1, pin=-1))
    assert len(sim.core(leader).pins) == 1
    sim.run_for(61.0)
    assert len(sim.core(leader).pins) == 0 and sim.core(leader).pins.expired >= 1
    with pytest.raises(ScanExpiredError):
        _ask(sim, leader, ReplScan(b"k", b"l", pin=abandoned.pin))


def test_an_engine_pin_is_an_engine_snapshot(tmp_path):
    from ddia_ray.replication.engine_state import EngineState

    state = EngineState(f"file://{tmp_path}/e", engine="lsm")
    try:
        state.apply(1, ((PUT, b"a", b"1"), (PUT, b"b", b"1")))
        view = state.pin()
        state.apply(2, ((PUT, b"a", b"2"), (1, b"b", b"")))
        assert state.scan(b"", None, 10, view) == ((b"a", b"b"), (b"1", b"1"))
        assert state.scan(b"", None, 10) == ((b"a",), (b"2",))
        state.unpin(view)
        state.unpin(view)  # twice is harmless
    finally:
        state.close()


# --- local secondary indexes ----------------------------------------------------------------------


def test_index_rows_follow_puts_overwrites_deletes_and_range_deletes():
    from ddia_ray.replication.indexing import IndexDef, Indexer, index_row, index_rows

    state = MapState()
    defs = (IndexDef("w", "ddia_ray.partitioning.index_functions:words"),)
    ix = Indexer()

    def apply(lsn, ops):
        state.apply(lsn, index_rows(ix, defs, state, ops))

    apply(1, ((PUT, b"a", b"red fox"), (PUT, b"b", b"red hen")))
    assert state.get(index_row("w", b"red", b"a")) == b"" and state.get(index_row("w", b"fox", b"a")) == b""
    apply(2, ((PUT, b"a", b"blue fox"),))  # leaves red, joins blue
    assert state.get(index_row("w", b"red", b"a")) is None and state.get(index_row("w", b"blue", b"a")) == b""
    apply(3, ((1, b"b", b""),))
    assert state.get(index_row("w", b"hen", b"b")) is None
    apply(4, ((PUT, b"c", b"red"), (DELETE_RANGE, b"a", b"b")))
    assert state.get(index_row("w", b"fox", b"a")) is None and state.get(index_row("w", b"red", b"c")) == b""
    assert state.scan(b"", None, 10) == ((b"c",), (b"red",))  # index rows are reserved: never scanned
    bad = Indexer()
    rows = index_rows(bad, (IndexDef("f", "ddia_ray.partitioning.index_functions:field", {"name": "x"}),), state,
                      ((PUT, b"d", b"not msgpack of a map"),))
    assert rows == ((PUT, b"d", b"not msgpack of a map"),) and bad.errors == {"f": 1} and "f" in bad.last_error
    missing = Indexer()
    index_rows(missing, (IndexDef("m", "no_such_module:fn"),), state, ((PUT, b"e", b"v"),))
    assert missing.errors == {"m": 1} and "not importable" in missing.last_error
    with pytest.raises(InvalidArgumentError):
        IndexDef("x", "no-colon")
