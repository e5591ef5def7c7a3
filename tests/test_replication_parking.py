"""Blocking queries (ddia_ray.replication.parking): held while their result is empty, answered by the
first write that changes it or when their wait runs out, refused when a parked leader read's member
stops leading; on the Raft core, the leader-follower core and Ray."""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.errors import InvalidArgumentError, NotLeaderError
from ddia_ray.kv.member import RaftMember
from ddia_ray.replication import LeaderFollowerReplica
from ddia_ray.replication.parking import MAX_PARKED, ParkedQueries, is_empty
from ddia_ray.replication.procedures import query
from ddia_ray.replication.raft_replica import RaftReplica
from ddia_ray.replication.records import PUT, QUERY_WAIT_MAX_S, QueryResult, ReplQuery, ReplWrite
from ddia_ray.runtime import SimNetwork


@query("test.parking.get")
def _get(state, args):
    return state.get(args)  # None until the key is written: "nothing yet"


def _q(key: bytes, wait_s: float = 1.0, read: str = "leader") -> ReplQuery:
    return ReplQuery("test.parking.get", codec.encode(key), read, wait_s=wait_s)


def test_empty_results_and_the_wait_bound():
    assert is_empty(None) and is_empty(()) and is_empty([]) and is_empty({})
    assert not is_empty(0) and not is_empty(b"") and not is_empty((None,))
    for bad in (-1, QUERY_WAIT_MAX_S + 1, "1"):
        with pytest.raises(InvalidArgumentError, match="a query waits"):
            _q(b"k", wait_s=bad)
    q = _q(b"k", wait_s=2.5)
    assert codec.decode(codec.encode(q)) == q


def test_parked_queries_run_again_when_the_position_moves_and_end_at_their_deadline():
    parked = ParkedQueries(tick_s=0.01)
    answers: list = []
    results = {"a": None, "b": None}

    class Req:
        def __init__(self, name, wait_s):
            self.name, self.wait_s, self.read = name, wait_s, "leader"

    assert parked.park(1, Req("a", 0.05), now=0, applied=7)
    assert parked.park(2, Req("b", 1.0), now=0, applied=7)
    runs: list = []

    def run(req):
        runs.append(req.name)
        return QueryResult(results[req.name], 1, 0)

    def answer(rid, r):
        answers.append((rid, r.result))

    parked.wake(1, 7, run, answer)
    assert runs == [] and answers == []  # nothing applied, nothing due: no query runs
    parked.wake(2, 8, run, answer)
    assert sorted(runs) == ["a", "b"] and answers == [] and len(parked) == 2  # ran again, still empty
    results["b"] = b"x"
    parked.wake(3, 9, run, answer)
    assert answers == [(2, b"x")] and len(parked) == 1
    parked.wake(5, 9, run, answer)
    assert answers[-1] == (1, None) and len(parked) == 0  # a's 5 ticks ran out: answered empty
    parked.park(3, Req("a", 1.0), 0, 0)
    refused: list = []
    parked.drop(lambda req: False, refused.append)
    assert refused == [3] and len(parked) == 0


def test_a_replica_holds_at_most_max_parked():
    parked = ParkedQueries(tick_s=0.01)
    req = _q(b"k")
    assert all(parked.park(i, req, 0, 0) for i in range(MAX_PARKED))
    assert parked.park(MAX_PARKED, req, 0, 0) is False


# --- the Raft core ----------------------------------------------------------------------------------


def _raft_leader() -> RaftReplica:
    core = RaftReplica("r1", voters=("r1",), group="g")
    for _ in range(50):
        core.tick()
        if core.node.role == "leader":
            break
    core.advance(core.ready())
    return core


def _replies(core) -> dict:
    rd = core.ready()
    core.advance(rd)
    return {r.request_id: r for r in rd.replies}


def test_raft_a_blocking_query_is_answered_by_the_write_that_fills_it():
    core = _raft_leader()
    core.request(1, _q(b"k", wait_s=5.0))
    assert 1 not in _replies(core)  # empty: held
    core.request(2, _q(b"k", wait_s=0.0))
    assert _replies(core)[2].payload.result is None  # wait_s=0: answered at once, empty
    core.request(3, ReplWrite(((PUT, b"other", b"1"),)))
    assert 1 not in _replies(core)  # a write that does not fill it: still held
    core.request(4, ReplWrite(((PUT, b"k", b"v"),)))
    got = _replies(core)
    assert isinstance(got[1].payload, QueryResult) and got[1].payload.result == b"v"
    core.request(5, _q(b"k", wait_s=5.0))
    assert _replies(core)[5].payload.result == b"v"  # not empty: no wait


def test_raft_a_blocking_query_ends_empty_when_its_wait_runs_out():
    core = _raft_leader()
    core.request(1, _q(b"k", wait_s=0.05))
    assert 1 not in _replies(core)
    for _ in range(4):
        core.tick()
        assert 1 not in _replies(core)
    core.tick()
    assert _replies(core)[1].payload.result is None


def test_raft_a_parked_leader_read_is_refused_when_its_member_stops_leading():
    sim = SimNetwork(3, tick_s=0.01)
    members = ("r1", "r2", "r3")
    for m in members:
        sim.add(m, lambda n, recovered=(), tick_s=0.01: RaftReplica(n, recovered=recovered, tick_s=tick_s,
                                                                   voters=members, group="g"))
    assert sim.run_until(lambda: _sim_leader(sim, members) is not None, 5.0)
    leader = _sim_leader(sim, members)
    follower = next(m for m in members if m != leader)
    parked_leader = sim.request(leader, _q(b"k", wait_s=30.0))
    parked_follower = sim.request(follower, _q(b"k", wait_s=30.0, read="follower"))
    sim.run_for(0.2)
    assert not parked_leader.done and not parked_follower.done
    sim.core(leader).node.transfer_leadership(follower)  # the leader steps down, alive: its parked read is refused
    assert sim.run_until(lambda: parked_leader.done, 10.0)
    assert not parked_leader.ok and isinstance(parked_leader.error.exception(), NotLeaderError)
    assert sim.run_until(lambda: _other_leader(sim, members, leader) is not None, 10.0)
    new = _other_leader(sim, members, leader)
    write = sim.request(new, ReplWrite(((PUT, b"k", b"v"),)))
    assert sim.run_until(lambda: write.done and parked_follower.done, 10.0)
    assert parked_follower.ok and parked_follower.result.result == b"v"  # answered by the new leader's write


def _sim_leader(sim, members):
    return next((m for m in members if sim.nodes[m].alive and sim.core(m).node.role == "leader"), None)


def _other_leader(sim, members, old):
    return next((m for m in members if m != old and sim.nodes[m].alive and sim.core(m).node.role == "leader"), None)


# --- the leader-follower core -------------------------------------------------------------------------


def test_leader_follower_a_blocking_query_is_answered_by_a_write():
    reps, coords = ("r1", "r2", "r3"), ("c1", "c2", "c3")
    sim = SimNetwork(5, tick_s=0.01)
    for c in coords:
        sim.add(c, lambda n, recovered=(), tick_s=0.01: RaftMember(
            n, recovered=recovered, tick_s=tick_s, voters=coords, raft={"election_ticks": 10, "heartbeat_ticks": 2}))
    for r in reps:
        sim.add(r, lambda n, recovered=(), tick_s=0.01: LeaderFollowerReplica(
            n, recovered=recovered, tick_s=tick_s, group="g", members=reps, coordinators=coords, mode="sync",
            lease_s=0.5))
    assert sim.run_until(lambda: any(sim.core(r).role == "leader" for r in reps), 5.0)
    leader = next(r for r in reps if sim.core(r).role == "leader")
    follower = next(r for r in reps if r != leader)
    on_leader = sim.request(leader, _q(b"k", wait_s=20.0))
    on_follower = sim.request(follower, _q(b"k", wait_s=20.0, read="follower"))
    timed = sim.request(leader, _q(b"nothing", wait_s=0.1))
    sim.run_for(0.3)
    assert not on_leader.done and not on_follower.done
    assert timed.done and timed.ok and timed.result.result is None  # its wait ran out: answered empty
    write = sim.request(leader, ReplWrite(((PUT, b"k", b"v"),)))
    assert sim.run_until(lambda: write.done and on_leader.done and on_follower.done, 5.0)
    assert on_leader.result.result == b"v" and on_follower.result.result == b"v"
