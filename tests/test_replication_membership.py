"""Membership changes of a leader-follower group, in the seeded simulator (see replication/membership.py).

Each test drives the pure cores through a SimNetwork: a newcomer catches up while writes go on and
then counts for the mode's acknowledgements; a removal waits until the remaining followers hold what
the mode promised; a failover after either change keeps every acknowledged write; the refusals name
their reason.
"""

from __future__ import annotations

import pytest

from ddia_ray.errors import ConfigError, NotLeaderError, ReplicaBehindError
from ddia_ray.kv.member import RaftMember
from ddia_ray.replication import PUT, LeaderFollowerReplica, ReplRead, ReplWrite
from ddia_ray.replication.records import ReplAdmin
from ddia_ray.runtime import SimNetwork

REPS, COORDS = ("r1", "r2", "r3"), ("c1", "c2", "c3")


def _replica(members, mode, **options):
    return lambda n, recovered=(), tick_s=0.01: LeaderFollowerReplica(
        n, recovered=recovered, tick_s=tick_s, group="g", members=members, coordinators=COORDS, mode=mode,
        lease_s=0.5, **options)


def _group(mode, seed=1, **options):
    sim = SimNetwork(seed, tick_s=0.01)
    for c in COORDS:
        sim.add(c, lambda n, recovered=(), tick_s=0.01: RaftMember(
            n, recovered=recovered, tick_s=tick_s, voters=COORDS, raft={"election_ticks": 10, "heartbeat_ticks": 2}))
    for r in REPS:
        sim.add(r, _replica(REPS, mode, **options))
    assert sim.run_until(lambda: _leader(sim) is not None, 5.0)
    return sim


def _leader(sim, among=None):
    nodes = among or [n for n in sim.node_ids() if n.startswith("r")]
    return next((r for r in nodes if sim.nodes[r].alive and sim.core(r).role == "leader"), None)


def _ask(sim, node, payload, timeout_s=3.0):
    call = sim.request(node, payload)
    assert sim.run_until(lambda: call.done, timeout_s)
    if not call.ok:
        raise call.error.exception()
    return call.result


def _write_while(sim, leader, call, prefix):
    """Keep writing to ``leader`` until ``call`` is done; the keys whose writes were acknowledged."""
    acked, pending, i = [], [], 0
    while not call.done:
        key = b"%s-%05d" % (prefix, i)
        pending.append((key, sim.request(leader, ReplWrite(((PUT, key, b"v"),)))))
        i += 1
        sim.run_for(0.02)
    sim.run_for(0.5)
    for key, w in pending:
        if w.done and w.ok:
            acked.append(key)
    return acked


def _new_leader(sim, old, timeout_s=10.0):
    assert sim.run_until(lambda: (_leader(sim) or old) != old, timeout_s), "no replica took over"
    return _leader(sim)


@pytest.mark.parametrize("mode", ["sync", "semi-sync"])
def test_a_newcomer_catches_up_under_writes_then_counts(mode):
    sim = _group(mode)
    leader = _leader(sim)
    for i in range(50):
        _ask(sim, leader, ReplWrite(((PUT, b"before-%03d" % i, b"v"),)))
    sim.add("r4", _replica((*REPS, "r4"), mode))
    add = sim.request(leader, ReplAdmin("add", "r4", timeout_s=10.0))
    acked = _write_while(sim, leader, add, b"during")
    assert add.ok, add.error
    assert acked, "writes stopped while the newcomer caught up"
    assert sim.core(leader).members == (*REPS, "r4")
    assert sim.core(leader).status()["membership_change"] is None
    sim.run_for(0.5)
    for r in (*REPS, "r4"):  # every replica, the newcomer included, adopted the list from the lease
        assert sim.core(r).members == (*REPS, "r4")
    assert set(sim.core("r4").state.data) >= {b"before-%03d" % i for i in range(50)} | set(acked)
    if mode == "sync":  # the newcomer's acknowledgement is now required
        sim.partition([["r4"], ["*"]])
        blocked = sim.request(leader, ReplWrite(((PUT, b"needs-r4", b"v"),)))
        sim.run_for(0.3)
        assert not blocked.done
        sim.heal()
        assert sim.run_until(lambda: blocked.done, 3.0) and blocked.ok
    # A failover now counts with four members, and keeps every acknowledged write.
    sim.crash(leader)
    new = _new_leader(sim, leader)
    assert sim.core(new).members == (*REPS, "r4")
    got = _ask(sim, new, ReplRead(tuple(acked), read="leader")).values
    assert all(v == b"v" for v in got)


def test_a_removal_waits_until_the_remaining_followers_hold_what_was_promised():
    sim = _group("semi-sync", sync_replicas=1)
    leader = _leader(sim)
    holder, behind = [r for r in REPS if r != leader]
    sim.partition([[behind], ["*"]])
    _ask(sim, leader, ReplWrite(((PUT, b"promised", b"v"),)))  # on the leader and `holder` only
    # Removing `holder` now would leave the write on the leader alone; the change must wait for `behind`.
    with pytest.raises(ReplicaBehindError):
        _ask(sim, leader, ReplAdmin("remove", holder, timeout_s=0.5))
    assert sim.core(leader).members == REPS  # abandoned: nothing changed
    sim.heal()
    _ask(sim, leader, ReplAdmin("remove", holder, timeout_s=5.0))
    assert sim.core(leader).members == tuple(r for r in REPS if r != holder)
    assert sim.core(behind).state.data.get(b"promised") == b"v"
    sim.crash(leader)
    new = _new_leader(sim, leader)
    assert new == behind  # the removed replica never runs for leader
    assert _ask(sim, new, ReplRead((b"promised",), read="leader")).values == (b"v",)
    sim.run_for(2.0)
    assert sim.core(holder).role == "follower" and holder not in sim.core(holder).members


def test_a_newcomer_that_cannot_catch_up_is_abandoned_without_holding_writes_up():
    sim = _group("sync")
    leader = _leader(sim)
    sim.add("r4", _replica((*REPS, "r4"), "sync"))
    sim.partition([["r4"], ["*"]])
    add = sim.request(leader, ReplAdmin("add", "r4", timeout_s=1.0))
    acked = _write_while(sim, leader, add, b"k")
    assert len(acked) > 10  # not joined yet: sync writes never waited for the newcomer
    assert not add.ok and isinstance(add.error.exception(), ReplicaBehindError)
    assert sim.core(leader).members == REPS and "r4" not in sim.core(leader).lag()


def test_a_restarted_replica_adopts_the_members_from_the_lease():
    sim = _group("sync")
    leader = _leader(sim)
    sim.add("r4", _replica((*REPS, "r4"), "sync"))
    _ask(sim, leader, ReplAdmin("add", "r4", timeout_s=5.0))
    follower = next(r for r in REPS if r != leader)
    sim.crash(follower)
    core = sim.restart(follower)  # its spec still names the launch list
    assert core.members == REPS
    assert sim.run_until(lambda: sim.core(follower).members == (*REPS, "r4"), 3.0)


def test_membership_requests_are_checked():
    sim = _group("semi-sync", sync_replicas=2)
    leader = _leader(sim)
    follower = next(r for r in REPS if r != leader)
    with pytest.raises(NotLeaderError):
        _ask(sim, follower, ReplAdmin("add", "r4"))
    with pytest.raises(ConfigError, match="transfer leadership"):
        _ask(sim, leader, ReplAdmin("remove", leader))
    with pytest.raises(ConfigError, match="semi-sync needs 2"):
        _ask(sim, leader, ReplAdmin("remove", follower))
    with pytest.raises(ConfigError, match="Raft protocol action"):
        _ask(sim, leader, ReplAdmin("add_voter", "r4"))
    with pytest.raises(ConfigError, match="needs the replica's name"):
        _ask(sim, leader, ReplAdmin("add", ""))
    assert _ask(sim, leader, ReplAdmin("add", follower)) is None  # already a member: done
    assert _ask(sim, leader, ReplAdmin("remove", "r9")) is None  # not a member: done
    sim.add("r4", _replica((*REPS, "r4"), "semi-sync", sync_replicas=2))
    sim.partition([["r4"], ["*"]])
    first = sim.request(leader, ReplAdmin("add", "r4", timeout_s=2.0))
    sim.run_for(0.1)
    again = sim.request(leader, ReplAdmin("add", "r4", timeout_s=2.0))  # the same change: joins it
    with pytest.raises(ConfigError, match="one change at a time"):
        _ask(sim, leader, ReplAdmin("add", "r5", timeout_s=2.0))
    with pytest.raises(ConfigError, match="under way"):
        _ask(sim, leader, ReplAdmin("transfer", follower))
    sim.heal()
    assert sim.run_until(lambda: first.done and again.done, 5.0) and first.ok and again.ok
    assert sim.core(leader).members == (*REPS, "r4")


def test_an_async_removal_waits_until_the_replica_has_compared_its_log():
    """A deposed async leader holds a write acknowledged by it alone; removing it before it compares its
    log with the new leader's would make that loss vanish uncounted."""
    sim = _group("async")
    old = _leader(sim)
    sim.partition([[old, "client"], ["*"]])
    _ask(sim, old, ReplWrite(((PUT, b"only-here", b"v"),)))  # acknowledged by the old leader alone
    new = _new_leader(sim, old)
    sim.partition([[old], ["*"]])  # the deposed leader stays cut off: it cannot compare its log
    with pytest.raises(ReplicaBehindError, match="has not answered this leader"):
        _ask(sim, new, ReplAdmin("remove", old, timeout_s=1.0))
    assert old in sim.core(new).members
    sim.heal()
    _ask(sim, new, ReplAdmin("remove", old, timeout_s=5.0))  # answered: it counted its lost write first
    assert old not in sim.core(new).members
    assert sim.core(old).lost_writes == 1 and sim.core(old).lost[0][2] == (b"only-here",)


def test_a_forced_async_removal_declares_what_it_cannot_count():
    """A replica gone for good can be removed with remove_forced; the group then says, on every member
    and across a failover, that the lost-write count may be short by what that replica alone held."""
    sim = _group("async")
    old = _leader(sim)
    sim.partition([[old, "client"], ["*"]])
    _ask(sim, old, ReplWrite(((PUT, b"only-here", b"v"),)))  # acknowledged by the old leader alone
    new = _new_leader(sim, old)
    sim.crash(old)  # gone for good: it will never compare its log
    sim.heal()
    _ask(sim, new, ReplAdmin("remove_forced", old, timeout_s=5.0))
    assert old not in sim.core(new).members
    rest = [r for r in REPS if r != old]
    sim.run_for(0.5)
    for r in rest:
        ((node, epoch, _),) = sim.core(r).status()["uncounted_removals"]
        assert node == old and epoch == sim.core(new).epoch
        assert sim.core(r).lost_writes == 0  # the write is gone, uncounted: the record above declares it
    sim.crash(new)
    survivor = next(r for r in rest if r != new)
    assert sim.run_until(lambda: sim.core(survivor).role == "leader", 10.0)
    assert sim.core(survivor).status()["uncounted_removals"][0][0] == old


def test_a_forced_removal_of_a_replica_that_compared_its_log_records_nothing():
    sim = _group("async")
    leader = _leader(sim)
    follower = next(r for r in REPS if r != leader)
    _ask(sim, leader, ReplWrite(((PUT, b"k", b"v"),)))
    sim.run_for(0.3)  # the follower has answered this leader
    _ask(sim, leader, ReplAdmin("remove_forced", follower, timeout_s=5.0))
    assert follower not in sim.core(leader).members
    assert sim.core(leader).status()["uncounted_removals"] == ()
