"""Unit tests of the leader-follower core, its records, its state and its coordination client."""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.errors import (ConfigError, InvalidArgumentError, NotLeaderError, ReplicaBehindError, SessionError,
                             StaleEpochError, StalenessBoundError, WriteOutcomeUnknownError)
from ddia_ray.kv.commands import RETRY, KVBatch, KVCall, KVCallResult, KVResults
from ddia_ray.kv.member import RaftMember
from ddia_ray.replication import CAS, DELETE, DELETE_RANGE, PUT, LeaderFollowerReplica, MapState, ReplRead, \
    ReplWrite, Session
from ddia_ray.replication.ingest import puts_op
from ddia_ray.replication.coordination import CoordinationClient
from ddia_ray.replication.records import Append, AppendAck, Checkpoint, PositionProbe, PositionReport, ReplicaMeta
from ddia_ray.runtime import SimNetwork

REPS, COORDS = ["r1", "r2", "r3"], ["c1", "c2", "c3"]


def _group(mode="sync", seed=1, session_ttl=False, state=None, **options):
    sim = SimNetwork(seed, tick_s=0.01)
    for c in COORDS:
        sim.add(c, lambda n, recovered=(), tick_s=0.01: RaftMember(
            n, recovered=recovered, tick_s=tick_s, voters=COORDS, raft={"election_ticks": 10, "heartbeat_ticks": 2}))
    for r in REPS:
        sim.add(r, lambda n, recovered=(), tick_s=0.01: LeaderFollowerReplica(
            n, recovered=recovered, tick_s=tick_s, group="g", members=REPS, coordinators=COORDS, mode=mode,
            lease_s=0.5, state=state(n) if state else MapState(1000) if session_ttl else None, **options))
    assert sim.run_until(lambda: _leader(sim) is not None, 5.0)
    return sim


def _leader(sim):
    return next((r for r in REPS if sim.nodes[r].alive and sim.core(r).role == "leader"), None)


def _ask(sim, node, payload, timeout_s=2.0):
    call = sim.request(node, payload)
    assert sim.run_until(lambda: call.done, timeout_s)
    if not call.ok:
        raise call.error.exception()
    return call.result


# --- configuration and records --------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (dict(mode="eventual"), "unknown replication mode"),
    (dict(members=("r2", "r3")), "must be distinct and include"),
    (dict(members=("r1", "r1")), "must be distinct"),
    (dict(mode="semi-sync", sync_replicas=3), "semi-sync needs"),
    (dict(drift=1.5), "drift"),
    (dict(group=""), "names its group"),
    (dict(lease_s=0.1, renew_s=0.09), "at most half"),
    (dict(coordinators=()), "at least one coordinator"),
])
def test_bad_configurations_are_refused(options, message):
    base = dict(group="g", members=tuple(REPS), coordinators=tuple(COORDS))
    with pytest.raises(ConfigError, match=message):
        LeaderFollowerReplica("r1", **{**base, **options})


@pytest.mark.parametrize("sync_replicas", [0, 3, 5, "1"])
def test_a_store_refuses_its_semi_sync_count_before_starting_anything(sync_replicas):
    """Checked in launch, before Ray or any actor starts (this test may not start Ray: the suite's guard
    fails it if it does); each replica checks it again as it is built (above)."""
    from ddia_ray.replication import ReplicatedStore

    with pytest.raises(ConfigError, match="semi-sync needs 1 <= sync_replicas <= 2 followers"):
        ReplicatedStore.launch(replicas=3, protocol="leader-follower", mode="semi-sync", sync_replicas=sync_replicas)


@pytest.mark.parametrize("ops, message", [
    (((9, b"k", b"v"),), "unknown operation code"),
    (((PUT, "k", b"v"),), "bytes key"),
    (((DELETE, b"k", b"v"),), "a delete has no value"),
    (((DELETE_RANGE, b"z", b"a"),), "after its end"),
    (((CAS, b"k", 1, None),), "a cas is"),
    ([(PUT, b"k", b"v")], "tuple of tuples"),
])
def test_malformed_writes_are_refused_on_construction(ops, message):
    with pytest.raises(InvalidArgumentError, match=message):
        ReplWrite(ops)


def test_reads_and_sessions_validate_and_travel():
    with pytest.raises(InvalidArgumentError, match="unknown read mode"):
        ReplRead((b"k",), read="eventually")
    with pytest.raises(InvalidArgumentError):
        ReplRead(("k",))
    s = Session("store-a", 2, 10, 3, 12)
    assert Session.decode(s.encode()) == s and s.position() == (3, 12)
    with pytest.raises(SessionError, match="belongs to store 'store-a'"):
        s.check_store("store-b")
    with pytest.raises(InvalidArgumentError):
        Session("")


# --- the state -------------------------------------------------------------------------------------


def test_cas_is_decided_by_the_leader_and_logged_as_its_effect():
    st = MapState()
    st.apply(1, ((PUT, b"a", b"1"),))
    ops, results = st.decide(((CAS, b"a", b"2", b"1"), (CAS, b"a", b"3", b"1"), (CAS, b"b", b"x", None),
                              (CAS, b"a", None, b"2")))
    assert results == (True, False, True, True)
    assert ops == ((PUT, b"a", b"2"), (PUT, b"b", b"x"), (DELETE, b"a", b""))
    st.apply(2, ops)
    assert st.data == {b"b": b"x"} and st.applied == 2
    copy = MapState()
    copy.restore(st.snapshot())
    assert copy.data == st.data and copy.applied == 2


def test_a_damaged_snapshot_is_refused():
    from ddia_ray.errors import CorruptRecordError
    with pytest.raises(CorruptRecordError):
        MapState().restore(codec.encode((1, 0, ((b"k", 5),), ())))
    with pytest.raises(CorruptRecordError):
        MapState().restore(codec.encode("not a snapshot"))


def _origin(client, seq, t, acked_below=None):
    return (client, seq, seq if acked_below is None else acked_below, (None,), t)


def test_sessions_idle_longer_than_the_ttl_expire_in_log_order():
    st = MapState(session_ttl_ms=1000)
    st.apply(1, ((PUT, b"a", b"1"),), _origin("old", 1, 100))
    st.apply(2, ((PUT, b"b", b"1"),), _origin("busy", 1, 600))
    st.apply(3, ((PUT, b"c", b"1"),), _origin("busy", 2, 1100))  # "old" idle 1000 ms: not more than the TTL
    assert st.answered("old", 1) == (1, (None,)) and len(st.sessions) == 2
    st.apply(4, ((PUT, b"d", b"1"),), _origin("busy", 3, 1101))  # now "old" has been idle longer
    assert st.answered("old", 1) is None and st.sessions.expired == 1
    assert st.answered("busy", 3) == (4, (None,)) and st.describe()["sessions_expired"] == 1
    # An entry without a stamp (written before stamps) counts as written at the newest stamp.
    st.apply(5, ((PUT, b"e", b"1"),), _origin("unstamped", 1, -1))
    assert st.sessions.active["unstamped"] == 1101
    # A snapshot keeps the stamps; the copy expires the same sessions at the same entry.
    copy = MapState(session_ttl_ms=1000)
    copy.restore(st.snapshot())
    for s in (st, copy):
        s.apply(6, ((PUT, b"f", b"1"),), _origin("new", 1, 2102))
        assert set(s.sessions.table) == {"new"} and s.sessions.clock == 2102


def test_a_ttl_of_zero_never_expires_and_bad_ttls_are_refused():
    st = MapState()
    st.apply(1, ((PUT, b"a", b"1"),), _origin("c", 1, 0))
    st.apply(2, ((PUT, b"a", b"2"),), _origin("d", 1, 10 ** 12))
    assert st.answered("c", 1) == (1, (None,))
    from ddia_ray.consensus.sessions import Sessions, session_ttl_ms
    for bad in (-1, "60", True, float("nan")):
        with pytest.raises(ConfigError, match="session_ttl_s"):
            session_ttl_ms(bad)
    with pytest.raises(ConfigError, match="session TTL"):
        Sessions(-5)
    assert session_ttl_ms(1.5) == 1500


def test_snapshots_of_the_first_session_format_still_restore():
    old = codec.encode((1, 3, ((b"k", b"v"),), (("c", 2, ((2, 3, (None,)),)),), 1))
    st = MapState(session_ttl_ms=1000)
    st.restore(old)
    assert st.answered("c", 2) == (3, (None,)) and st.sessions.active["c"] == 0


def test_the_cluster_clock_never_runs_ahead_of_the_ticks_of_one_leadership():
    from ddia_ray.consensus.sessions import ClusterClock
    clock = ClusterClock(tick_s=0.01)
    assert clock.stamp(term=1, ticks=100, applied_clock=0) == 0
    assert clock.stamp(1, 150, 0) == 500  # 50 ticks of 10 ms since this leadership began
    # A new term starts from the newest stamp applied, not from this node's earlier leadership:
    # the ticks in between (when another node led) must not count, or sessions would expire early.
    assert clock.stamp(2, 10_000, 700) == 700
    assert clock.stamp(2, 10_010, 700) == 800
    assert clock.stamp(2, 10_011, 5000) == 5000  # never below a stamp already applied


def test_a_leader_stamps_client_writes_and_followers_expire_the_same_sessions():
    sim = _group("sync", session_ttl=True)
    leader = _leader(sim)
    _ask(sim, leader, ReplWrite(((PUT, b"a", b"1"),), client="idle", seq=1, acked_below=1))
    sim.run_until(lambda: False, 1.5)  # longer than the 1 s TTL, in simulated time
    _ask(sim, leader, ReplWrite(((PUT, b"b", b"1"),), client="busy", seq=1, acked_below=1))
    assert sim.run_until(lambda: all(sim.core(r).state.applied == sim.core(leader).state.applied for r in REPS),
                         2.0)
    for r in REPS:
        st = sim.core(r).state
        assert set(st.sessions.table) == {"busy"} and st.sessions.expired == 1, r
    stamps = [e[4][4] for e in sim.core(leader).log if e[4]]
    assert len(stamps) == 2 and 1000 < stamps[1] - stamps[0] <= 1600
    # The forgotten session writes again: a new row, its write applied once.
    ack = _ask(sim, leader, ReplWrite(((PUT, b"a", b"2"),), client="idle", seq=2, acked_below=2))
    assert ack.results == (None,) and sim.core(leader).state.answered("idle", 2) == (ack.lsn, (None,))


# --- the group in the simulator ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "semi-sync", "async"])
def test_writes_replicate_and_followers_serve_reads(mode):
    sim = _group(mode)
    leader = _leader(sim)
    ack = _ask(sim, leader, ReplWrite(((PUT, b"k", b"v"), (CAS, b"k", b"w", b"v"))))
    assert ack.results == (None, True) and ack.epoch == sim.core(leader).epoch
    sim.run_for(0.2)
    for r in REPS:
        assert sim.core(r).state.data == {b"k": b"w"}
        assert _ask(sim, r, ReplRead((b"k",), read="follower")).values == (b"w",)
    assert all(v == 0 for v in sim.core(leader).status()["lag_entries"].values())


def test_a_follower_refuses_leader_reads_and_names_the_leader():
    sim = _group()
    leader = _leader(sim)
    follower = next(r for r in REPS if r != leader)
    with pytest.raises(NotLeaderError) as e:
        _ask(sim, follower, ReplRead((b"k",), read="linearizable"))
    assert e.value.leader_hint == leader
    with pytest.raises(NotLeaderError):
        _ask(sim, follower, ReplWrite(((PUT, b"k", b"v"),)))


def test_a_write_may_ask_for_more_acks_but_not_more_than_there_are_followers():
    sim = _group("async")
    leader = _leader(sim)
    with pytest.raises(ConfigError, match="has 2 followers"):
        _ask(sim, leader, ReplWrite(((PUT, b"k", b"v"),), acks=3))
    follower = next(r for r in REPS if r != leader)
    sim.crash(follower)
    assert _ask(sim, leader, ReplWrite(((PUT, b"k", b"1"),), acks=1)).lsn > 0  # one follower is enough
    call = sim.request(leader, ReplWrite(((PUT, b"k", b"2"),), acks=2))  # needs the crashed one too
    sim.run_for(0.3)
    assert not call.done
    sim.restart(follower)
    assert sim.run_until(lambda: call.done, 3.0) and call.ok


def test_a_stale_fencing_token_is_refused():
    sim = _group()
    leader = _leader(sim)
    epoch = sim.core(leader).epoch
    sim.crash(leader)
    assert sim.run_until(lambda: _leader(sim) is not None, 5.0)
    new = _leader(sim)
    assert sim.core(new).epoch > epoch
    with pytest.raises(StaleEpochError) as e:
        _ask(sim, new, ReplWrite(((PUT, b"k", b"v"),), epoch=epoch))
    assert e.value.epoch == epoch and e.value.current == sim.core(new).epoch


def test_a_replica_refuses_an_append_of_an_older_epoch():
    core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS))
    from ddia_ray.runtime.core import Envelope
    core.step(Envelope("r1", "r2", Append(3, 0, 0, ((3, 1, (), 0, ()),), 1)))
    core.advance(core.ready())
    core.step(Envelope("r3", "r2", Append(2, 0, 0, ((2, 1, ((PUT, b"k", b"v"),), 0, ()),), 1)))
    out = core.ready().messages
    assert [m.payload for m in out] == [AppendAck(3, False, 1, 3)]
    assert core.state.data == {}  # nothing of the deposed leader's was applied
    assert core.counters["stale_refused"] == 1


def test_a_follower_catching_up_gets_appends_of_at_most_max_append_bytes():
    sim = _group("async", max_append_bytes=2_500)
    leader = _leader(sim)
    follower = next(r for r in REPS if r != leader)
    sim.crash(follower)
    for i in range(10):  # 1,002 bytes each: two fit in 2,500 bytes, three do not
        _ask(sim, leader, ReplWrite(((PUT, b"k%d" % i, bytes(1000)),)))
    core = sim.restart(follower)
    appends = []
    step = core.step

    def record(env):
        if isinstance(env.payload, Append) and env.payload.entries:
            appends.append(env.payload.entries)
        return step(env)

    core.step = record
    assert sim.run_until(lambda: core.state.data.keys() >= {b"k%d" % i for i in range(10)}, 5.0)
    sizes = [sum(len(op[1]) + len(op[2]) for e in entries for op in e[2]) for entries in appends]
    # 256 entries were allowed: the bytes cut the catch-up into five Appends of two writes each.
    assert len(appends) == 5 and all(1_000 < size <= 2_500 for size in sizes), sizes


def test_duplicated_and_retried_writes_apply_once():
    sim = _group("sync")
    leader = _leader(sim)
    w = ReplWrite(((PUT, b"k", b"v"),), client="alice", seq=1, acked_below=1)
    first = _ask(sim, leader, w)
    again = _ask(sim, leader, w)
    assert (again.epoch, again.lsn) == (first.epoch, first.lsn)
    assert sim.core(leader).last_lsn == first.lsn
    w2 = ReplWrite(((PUT, b"k", b"x"),), client="alice", seq=2, acked_below=2)
    second = _ask(sim, leader, w2)
    sim.run_for(0.2)
    with pytest.raises(InvalidArgumentError, match="acknowledged already"):
        _ask(sim, leader, w)
    # A new leader knows the session too: the retry after a failover does not apply twice.
    sim.crash(leader)
    assert sim.run_until(lambda: _leader(sim) is not None, 5.0)
    new = _leader(sim)
    sim.restart(leader)  # sync mode waits for every follower
    last = sim.core(new).last_lsn
    retried = _ask(sim, new, w2)  # the client never heard back, say, and retries on the new leader
    assert (retried.epoch, retried.lsn) == (second.epoch, second.lsn) and sim.core(new).last_lsn == last


def test_session_reads_wait_for_the_sessions_position():
    sim = _group("async")
    leader = _leader(sim)
    follower = next(r for r in REPS if r != leader)
    sim.partition([[follower], ["*"]])
    ack = _ask(sim, leader, ReplWrite(((PUT, b"k", b"v"),)))
    sim.heal()
    with pytest.raises(ReplicaBehindError) as e:
        _ask(sim, follower, ReplRead((b"k",), "session", ack.epoch, ack.lsn + 5))
    assert e.value.needed == ack.lsn + 5
    sim.run_for(0.3)
    assert _ask(sim, follower, ReplRead((b"k",), "session", ack.epoch, ack.lsn)).values == (b"v",)
    # A position from another history (an epoch this store never had at that lsn) is refused.
    with pytest.raises(SessionError, match="not in"):
        _ask(sim, leader, ReplRead((b"k",), "session", ack.epoch + 7, ack.lsn))


def test_bounded_staleness_refuses_a_follower_that_lost_touch():
    sim = _group("async")
    leader = _leader(sim)
    follower = next(r for r in REPS if r != leader)
    assert _ask(sim, follower, ReplRead((b"k",), "follower", max_staleness_s=0.5)).values == (None,)
    sim.partition([[follower], ["*"]])
    sim.run_for(1.0)
    sim.heal()
    sim.partition([[follower, "client"], ["*"]])
    with pytest.raises(StalenessBoundError) as e:
        _ask(sim, follower, ReplRead((b"k",), "follower", max_staleness_s=0.5))
    assert e.value.lag_s > 0.5 and e.value.bound_s == 0.5


def test_a_deposed_async_leader_reports_its_lost_writes():
    sim = _group("async")
    old = _leader(sim)
    sim.partition([[old, "client"], ["*"]])  # cut off from followers and the lease, not from the client
    ack = _ask(sim, old, ReplWrite(((PUT, b"lost-key", b"v"),)))  # async: acknowledged at once
    # A client's many puts travel as one ingest (ingest.puts_op): every key of it is listed.
    many = tuple((PUT, b"lost-%03d" % i, b"v") for i in range(100))
    batch = _ask(sim, old, ReplWrite((puts_op(many),)))
    assert sim.run_until(lambda: any(sim.core(r).role == "leader" for r in REPS if r != old), 5.0)
    sim.heal()
    sim.run_for(1.0)
    status = sim.core(old).status()
    assert status["role"] == "follower" and status["lost_writes"] == 2
    assert status["lost"] == ((ack.epoch, ack.lsn, (b"lost-key",)),
                              (batch.epoch, batch.lsn, tuple(op[1] for op in many)))
    # The account survives a restart.
    sim.crash(old)
    sim.restart(old)
    assert sim.core(old).lost_writes == 2


def test_probes_are_answered_and_a_checkpoint_replaces_a_divergent_log():
    core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS))
    from ddia_ray.runtime.core import Envelope
    core.step(Envelope("r1", "r2", PositionProbe(4, 0)))
    assert core.ready().messages[-1].payload == PositionReport(4, 0, 0, 0)
    core.advance(core.ready())
    core.step(Envelope("r1", "r2", Append(1, 0, 0, ((1, 1, (), 0, ()), (1, 2, ((PUT, b"a", b"1"),), 0, ())), 2)))
    core.advance(core.ready())
    donor = MapState()
    donor.apply(2, ((PUT, b"b", b"2"),))
    core.step(Envelope("r3", "r2", Checkpoint(2, 2, 2, ((1, 1), (2, 2)), donor.snapshot())))
    assert core.state.data == {b"b": b"2"} and core.epoch == 2
    assert core.lost_writes == 1 and core.lost[0] == (1, 2, (b"a",))


def test_a_write_reported_lost_that_a_later_leader_still_holds_is_unreported():
    """Seen in the simulation (seed 15 of an async run with idle clients): a follower discards an
    async-acknowledged entry when it installs the checkpoint of a leader that lacks it, but the
    replica that still holds it leads the next epoch and sends it again. It was not lost."""
    from ddia_ray.replication.records import LostWrites
    from ddia_ray.runtime.core import Envelope, Rewrite
    core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS))
    written: list = []

    def step(env):  # what a shell does: persist, and replace everything on a Rewrite
        core.step(env)
        rd = core.ready()
        for rec in rd.persist:
            if isinstance(rec, Rewrite):
                written[:] = rec.records
            else:
                written.append(rec)
        core.advance(rd)

    a, b = (2, 1, ((PUT, b"a", b"1"),), 0, ()), (2, 2, ((PUT, b"b", b"1"),), 0, ())
    step(Envelope("r1", "r2", Append(2, 0, 0, (a, b), 2)))
    donor = MapState()
    donor.apply(1, a[2], epoch=2)
    step(Envelope("r3", "r2", Checkpoint(3, 1, 2, ((2, 1),), donor.snapshot())))  # r3 (epoch 3) lacks lsn 2
    assert core.lost_writes == 1 and core.status()["lost"] == ((2, 2, (b"b",)),)
    step(Envelope("r1", "r2", Append(4, 1, 2, (b,), 2)))  # r1, which kept (2, 2), leads epoch 4
    assert core.lost_writes == 0 and core.status()["lost"] == () and core.state.data[b"b"] == b"1"
    assert any(isinstance(r, LostWrites) and r.found == ((2, 2),) for r in written)
    again = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS),
                                  recovered=tuple(written))
    assert again.lost_writes == 0 and again.status()["lost"] == ()  # the correction is durable


def test_the_log_keeps_every_entry_the_engine_has_not_made_durable(tmp_path):
    """An engine without its own WAL holds its newest writes in memory: the replica's log, the log
    of record, may drop an entry only once the engine has flushed it (and asks it to flush)."""
    from ddia_ray.replication.engine_state import EngineState
    states = {}

    def state(n):
        states[n] = EngineState(f"file://{tmp_path}/{n}", engine="lsm", checkpoints_url=f"file://{tmp_path}/cp",
                                options={"background": False})
        return states[n]

    sim = _group("sync", state=state, retain_entries=4)
    leader = _leader(sim)
    core = sim.core(leader)
    asked = []
    core.state.request_durable = lambda: asked.append(core.last_lsn)  # a flush that takes its time
    for i in range(1, 15):
        _ask(sim, leader, ReplWrite(((PUT, b"k%d" % i, b"v"),)))
    assert asked and core.base_lsn == 0 and len(core.log) == core.last_lsn > 2 * 4  # nothing dropped
    core.state.engine.flush()  # the flush is done
    _ask(sim, leader, ReplWrite(((PUT, b"k15", b"v"),)))
    assert 0 < core.base_lsn <= core.state.durable_lsn() and core.last_lsn - core.base_lsn >= 4
    for st in states.values():
        st.close()


def test_a_late_checkpoint_of_the_same_history_is_not_installed_over_newer_entries():
    from ddia_ray.runtime.core import Envelope
    core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS))
    a, b = (2, 1, ((PUT, b"a", b"1"),), 0, ()), (2, 2, ((PUT, b"b", b"1"),), 0, ())
    core.step(Envelope("r1", "r2", Append(2, 0, 0, (a, b), 2)))
    core.advance(core.ready())
    donor = MapState()
    donor.apply(1, a[2], epoch=2)
    core.step(Envelope("r1", "r2", Checkpoint(2, 1, 2, ((2, 1),), donor.snapshot())))  # sent before lsn 2
    rd = core.ready()
    assert core.counters["checkpoints_installed"] == 0 and core.state.data == {b"a": b"1", b"b": b"1"}
    assert [m.payload for m in rd.messages] == [AppendAck(2, True, 2, 2)]  # where it is, instead


def test_the_leader_keeps_the_log_after_a_checkpoint_it_sent_until_the_follower_has_it():
    """A pin: without it the follower bootstrapping under steady writes needed checkpoint after
    checkpoint (the log after each was compacted away before the copy was done)."""
    sim = _group("async", retain_entries=4)
    leader = _leader(sim)
    core = sim.core(leader)
    follower = next(r for r in REPS if r != leader)
    sim.crash(follower)
    core._send_checkpoint(follower)  # as for a follower too far behind (the message is lost here)
    pin = core._pins[follower][0]
    for i in range(20):
        _ask(sim, leader, ReplWrite(((PUT, b"k%d" % i, b"v"),)))
    assert core.base_lsn <= pin and len(core.log) > 2 * 4  # the tail after the checkpoint is kept
    assert core.counters["checkpoints_sent"] == 1
    sim.restart(follower)
    assert sim.run_until(lambda: follower not in core._pins, 3.0)  # it has the entries: pin released
    _ask(sim, leader, ReplWrite(((PUT, b"last", b"v"),)))
    assert core.base_lsn > pin and len(core.log) <= 2 * 4 + 1


# --- the probe fences: a replica that answered a candidate refuses the old leader -----------------


def test_a_paused_semi_sync_leader_gets_no_acknowledgement_after_a_new_leader_was_probed():
    """The leader pauses past its lease and wakes believing it still holds it. Meanwhile a new leader
    was elected with the answer of a follower that has not heard from it yet (the partition below
    keeps its appends away). Before probes carried the candidate's epoch, that follower acknowledged
    the old leader's semi-sync write, the client was told "done", and the write was dropped when the
    follower installed the new leader's checkpoint, counted nowhere (its entry had acks == 1)."""
    plan: dict = {}

    def on_event(node, event, data):
        if event == "lead" and "old" in plan and "new" not in plan:
            # The new leader's first append is not sent yet: cut the follower that answered its probe
            # off from it (with the old leader and the client) before it is.
            plan["new"] = node
            plan["follower"] = next(r for r in REPS if r not in (node, plan["old"]))
            sim.partition([[plan["follower"], plan["old"], "client"], ["*"]])

    sim = _group("semi-sync", sync_replicas=1, observer=on_event)
    old = plan["old"] = _leader(sim)
    first = _ask(sim, old, ReplWrite(((PUT, b"k", b"v1"),)))
    sim.pause(old)
    sim.partition([[old], ["*"]])  # while it sleeps it hears nothing, the probes included
    assert sim.run_until(lambda: "new" in plan, 5.0)
    new, follower = plan["new"], plan["follower"]
    sim.resume(old)
    assert sim.core(old).role == "leader" and sim.core(old)._leading()  # it believes its lease holds
    call = sim.request(old, ReplWrite(((PUT, b"k", b"v2"),)))
    assert sim.run_until(lambda: call.done, 1.0)
    sim.heal()
    sim.run_for(2.0)
    lead = sim.core(new)
    assert lead.role == "leader" and all(sim.core(r).last_lsn == lead.last_lsn for r in REPS)
    # The loss accounting is exact: every acknowledged write is in the new leader's history, or
    # reported lost by a replica that discarded it.
    acked = [first] + ([call.result] if call.ok else [])
    reported = {(e, lsn) for r in REPS for e, lsn, _ in sim.core(r).lost}
    for ack in acked:
        held = ack.lsn <= lead.last_lsn and lead.epoch_at(ack.lsn) == ack.epoch
        assert held or (ack.epoch, ack.lsn) in reported, f"write {ack} acknowledged, dropped and not reported"
    # And the write was refused: the follower had adopted the new epoch when it answered the probe.
    assert not call.ok and isinstance(call.error.exception(), (WriteOutcomeUnknownError, NotLeaderError))
    assert sim.core(follower).counters["stale_refused"] >= 1
    assert all(sim.core(r).state.data[b"k"] == b"v1" and sim.core(r).lost_writes == 0 for r in REPS)


def _step(core, src, payload):
    """Deliver ``payload`` to ``core`` and return what it wants persisted and sent."""
    from ddia_ray.runtime.core import Envelope
    core.step(Envelope(src, core.node_id, payload))
    rd = core.ready()
    core.advance(rd)
    return rd.persist, [m.payload for m in rd.messages]


def _wire_probe(version: int, fields: dict):
    """A probe as it arrives from a replica that writes ``version`` of the record (codec wire grammar)."""
    import msgpack
    inner = msgpack.packb({"t": "repl.probe", "v": version, "f": fields}, use_bin_type=True)
    return codec.decode(msgpack.packb(msgpack.ExtType(codec.FORMAT_1, inner), use_bin_type=True))


def test_a_replica_adopts_a_probes_epoch_before_it_answers_and_refuses_the_old_leader_after():
    core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS), mode="semi-sync")
    _step(core, "r1", Append(1, 0, 0, ((1, 1, (), 0, ()),), 1))  # r1 leads epoch 1
    persisted, sent = _step(core, "r3", _wire_probe(2, {"seq": 7, "epoch": 2}))  # r3 will claim epoch 2
    assert sent == [PositionReport(7, 2, 1, 1)]
    assert ReplicaMeta(2, core.incarnation) in persisted  # persisted with the answer (the driver: before it)
    assert core.role == "follower" and core.leader == ""  # a claim, not a leader
    persisted, sent = _step(core, "r1", Append(1, 1, 1, ((1, 2, ((PUT, b"k", b"v"),), 1, ()),), 2))
    assert sent == [AppendAck(2, False, 1, 1)] and core.state.data == {}  # refused, naming epoch 2
    # The epoch is durable: a restart still refuses r1.
    again = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS),
                                  recovered=(ReplicaMeta(2, 1),))
    assert again.epoch == 2
    # A probe that claims an older epoch changes nothing; its answer tells the candidate of the newer one.
    persisted, sent = _step(core, "r1", PositionProbe(3, 1))
    assert sent == [PositionReport(3, 2, 1, 1)] and persisted == () and core.epoch == 2
    # The candidate's own leader, once it leads epoch 2, is followed.
    persisted, sent = _step(core, "r3", Append(2, 1, 1, ((2, 2, (), 0, ()),), 2))
    assert sent == [AppendAck(2, True, 2, 2)] and core.leader == "r3"


def test_a_paused_leader_that_wakes_to_a_newer_probe_steps_down_at_once():
    """The probe waits in the paused leader's queue; the new leader's appends never reach it."""
    plan: dict = {}

    def on_event(node, event, data):
        if event == "lead" and "old" in plan and "new" not in plan:
            plan["new"] = node
            sim.partition([[plan["old"]], ["*"]])

    sim = _group("semi-sync", sync_replicas=1, observer=on_event)
    old = plan["old"] = _leader(sim)
    sim.pause(old)
    assert sim.run_until(lambda: "new" in plan, 5.0)
    sim.resume(old)
    sim.run_for(0.001)  # its queue is delivered at once
    assert sim.core(old).role == "follower" and sim.core(old).epoch == sim.core(plan["new"]).epoch
    assert sim.core(old).counters["lease_lapses"] == 0  # it stepped down on the probe, not on its clock


def test_a_candidate_claims_every_epoch_it_has_seen_and_the_newest_heard_during_its_round():
    from ddia_ray.kv.commands import KVCall as Call
    from ddia_ray.replication.failover import _decode_lease, _lease_value
    core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS), mode="semi-sync")
    _step(core, "r1", Append(1, 0, 0, ((1, 1, (), 0, ()),), 1))  # r1 leads epoch 1
    _step(core, "r3", PositionProbe(4, 3))  # a round of r3's claimed epoch 3 and failed: nobody leads it
    # r1's lease, read unchanged until it lapsed: r2 probes, claiming 3 again (above the lease's 1,
    # at least every epoch it has seen: peers that adopted 3 will accept it).
    core._lease_raw = _lease_value(1, "r1", 5)
    core._start_probe()
    rd = core.ready()
    core.advance(rd)
    seq = core._probe["seq"]
    assert sorted((m.dst, m.payload) for m in rd.messages) == [("r1", PositionProbe(seq, 3)),
                                                                ("r3", PositionProbe(seq, 3))]
    # r3, probing at the same time, claimed 4: its answer says so. r2 adopts 4 and goes on.
    persisted, _ = _step(core, "r3", PositionReport(seq, 4, 1, 1))
    assert core.role == "candidate" and core.epoch == 4 and ReplicaMeta(4, core.incarnation) in persisted
    # The old leader is refused during the round too.
    _, sent = _step(core, "r1", Append(1, 1, 1, ((1, 2, ((PUT, b"k", b"v"),), 1, ()),), 2))
    assert sent == [AppendAck(4, False, 1, 1)]
    # The round ends: r2 claims the newest epoch it knows, 4, from the lease value it read.
    cas = []
    for _ in range(core.probe_ticks + 1):
        core.tick()
        rd = core.ready()
        core.advance(rd)
        cas += [m.payload.batch.ops[0] for m in rd.messages if isinstance(m.payload, Call)]
    assert len(cas) == 1 and cas[0][0] == "cas"
    assert _decode_lease(cas[0][3])[:2] == (4, "r2") and cas[0][4] == _lease_value(1, "r1", 5)


def test_a_probe_of_the_first_version_claims_no_epoch():
    """Mixed versions: a probe from a replica of the old version decodes with epoch 0 (adopt nothing)."""
    old = _wire_probe(1, {"seq": 3})
    assert old == PositionProbe(3, 0)
    assert codec.decode(codec.encode(PositionProbe(3, 5))) == PositionProbe(3, 5)
    core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS))
    _step(core, "r1", Append(1, 0, 0, ((1, 1, (), 0, ()),), 1))
    persisted, sent = _step(core, "r3", old)
    assert sent == [PositionReport(3, 1, 1, 1)] and persisted == () and core.epoch == 1 and core.leader == "r1"
    with pytest.raises(InvalidArgumentError):
        PositionProbe(3, -1)


# --- a candidate never takes the lease past a peer ahead; async acks are counted when dropped -----


def _probe_round(core, answer, cas):
    """One probe round of ``core`` (as after a lease read found the lease lapsed): its probes go to
    ``answer(peer, probe)``, which returns the peer's report (or None: no answer); then ``probe_s``
    passes. Lease compare-and-sets the core sends are appended to ``cas``."""
    from ddia_ray.kv.commands import KVCall as Call
    core._next_watch = core.ticks + 10**6  # no lease read meanwhile: the lease stays lapsed
    core._start_probe()
    rd = core.ready()
    core.advance(rd)
    for m in rd.messages:
        report = answer(m.dst, m.payload)
        if report is not None:
            _step(core, m.dst, report)
    for _ in range(core.probe_ticks + 1):
        core.tick()
        rd = core.ready()
        core.advance(rd)
        cas += [m.payload.batch.ops[0] for m in rd.messages if isinstance(m.payload, Call)]


def _peer(core):
    """``core`` answering the probes sent to it as it would over the network; the others go unanswered."""
    def answer(dst, probe):
        return _step(core, "r1", probe)[1][0] if dst == core.node_id else None
    return answer


def test_a_candidate_behind_a_peer_catches_up_from_it_before_it_takes_the_lease():
    """Seeds 268 and 1101 of the semi-sync simulation (single failures; 454 and 1321 with any): the
    peer ahead kept restarting (so it never saw the lease lapse itself), and after defer_s of deferring
    the candidate behind took the lease without the peer's tail. Those entries had been
    acknowledged (acks=1: the old leader and that peer held them); every replica discarded them
    when it installed the new leader's checkpoint, counted nowhere. Now, after defer_s, the
    candidate asks for the entries after its last one, appends the peer's, and only then takes the
    lease."""
    from ddia_ray.replication.failover import _decode_lease, _lease_value
    opts = dict(group="g", members=tuple(REPS), coordinators=tuple(COORDS), mode="semi-sync", defer_s=0.3)
    r1, r2 = LeaderFollowerReplica("r1", **opts), LeaderFollowerReplica("r2", **opts)
    history = ((1, 1, (), 1, ()), (1, 2, ((PUT, b"a", b"1"),), 1, ()),
               (1, 3, ((PUT, b"b", b"2"),), 1, ()), (1, 4, ((PUT, b"c", b"3"),), 1, ()))
    _step(r1, "r3", Append(1, 0, 0, history[:2], 4))  # r3 led epoch 1; r1 has lsn 1..2,
    _step(r2, "r3", Append(1, 0, 0, history, 4))  # r2 all four: 3 and 4 were acknowledged with its ack
    lapsed = _lease_value(1, "r3", 9)
    r1._lease_raw = lapsed  # r3's lease, read unchanged until it lapsed; r3 is gone, r2 never probes
    cas: list = []
    rounds = 0
    while not cas:
        _probe_round(r1, _peer(r2), cas)
        rounds += 1
        assert rounds < 50, "no compare-and-set"
        if not cas:  # deferring to r2, which holds lsn 3 and 4
            assert r1.last_lsn == 2 and r1.role == "follower"
    assert r1.ticks >= r1.defer_ticks  # it waited defer_s for r2 to take the lease itself
    # Then it caught up: r2's tail is in its log, persisted before the compare-and-set was sent.
    assert r1.last_lsn == 4 and r1.state.data == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert r1.counters["caught_up_entries"] == 2
    assert len(cas) == 1 and _decode_lease(cas[0][3])[:2] == (2, "r1") and cas[0][4] == lapsed


def test_a_candidate_never_takes_the_lease_past_a_peer_ahead_that_cannot_catch_it_up():
    """The candidate's log holds a deposed leader's tail (epoch 1, lsn 3) that the peer's history
    replaced (epoch 2 from lsn 3, acknowledged): no entries of the peer's continue its log, so it
    cannot catch up. It must not pass the peer over however long it waits (before: after defer_s,
    and the peer's acknowledged entries were dropped uncounted); the group waits for the peer, or
    a replica that can catch up from it, to lead."""
    from ddia_ray.replication.failover import _lease_value
    from ddia_ray.replication.records import LogEntries
    opts = dict(group="g", members=tuple(REPS), coordinators=tuple(COORDS), mode="semi-sync", defer_s=0.3)
    shared = ((1, 1, (), 1, ()), (1, 2, ((PUT, b"a", b"1"),), 1, ()))
    r1 = LeaderFollowerReplica("r1", **opts)
    _step(r1, "r3", Append(1, 0, 0, (*shared, (1, 3, ((PUT, b"x", b"deposed"),), 1, ())), 3))
    # r2 led epoch 2 from lsn 3 (its log, as a restart reads it back), and its lease lapsed.
    r2 = LeaderFollowerReplica("r2", **opts, recovered=(ReplicaMeta(2, 1), LogEntries(
        (*shared, (2, 3, (), 1, ()), (2, 4, ((PUT, b"b", b"2"),), 1, ())))))
    r1._lease_raw = _lease_value(2, "r2", 40)
    cas: list = []
    for _ in range(10 * r1.defer_ticks // r1.probe_ticks):
        _probe_round(r1, _peer(r2), cas)
    assert cas == [] and r1.role == "follower" and r1.last_lsn == 3 and r2.last_lsn == 4
    assert r1.ticks > 5 * r1.defer_ticks and r1.counters["deferrals"] > 20


def test_a_peer_gives_a_catching_up_candidate_only_entries_that_continue_its_log():
    core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS),
                                 max_append_entries=2)
    history = tuple((1, lsn, ((PUT, b"k%d" % lsn, b"v"),), 0, ()) for lsn in range(1, 6))
    _step(core, "r1", Append(1, 0, 0, history, 5))
    _, sent = _step(core, "r3", PositionProbe(1, 2, True, 2, 1))
    assert sent == [PositionReport(1, 2, 5, 1, history[2:4])]  # after r3's last entry, two at most
    _, sent = _step(core, "r3", PositionProbe(2, 2, False, 0, 0))
    assert sent == [PositionReport(2, 2, 5, 1)]  # not asked
    _, sent = _step(core, "r3", PositionProbe(3, 2, True, 2, 7))
    assert sent == [PositionReport(3, 2, 5, 1)]  # r3's entry at lsn 2 is of another history
    _, sent = _step(core, "r3", PositionProbe(4, 2, True, 5, 1))
    assert sent == [PositionReport(4, 2, 5, 1)]  # nothing after it here
    _, sent = _step(core, "r3", PositionProbe(5, 2, True, 0, 0))
    assert sent == [PositionReport(5, 2, 5, 1, history[:2])]  # an empty log is caught up from the start


def test_a_catching_up_probe_and_its_answer_travel_and_read_older_versions():
    report = PositionReport(3, 2, 4, 1, ((1, 3, ((PUT, b"k", b"v"),), 1, ()),))
    probe = PositionProbe(3, 2, True, 2, 1)
    assert codec.decode(codec.encode(report)) == report and codec.decode(codec.encode(probe)) == probe
    assert _wire_probe(2, {"seq": 3, "epoch": 2}) == PositionProbe(3, 2, False, 0, 0)  # asks for nothing
    import msgpack
    inner = msgpack.packb({"t": "repl.position", "v": 1, "f": {"seq": 3, "epoch": 2, "last_lsn": 4,
                                                              "last_epoch": 1}}, use_bin_type=True)
    old = codec.decode(msgpack.packb(msgpack.ExtType(codec.FORMAT_1, inner), use_bin_type=True))
    assert old == PositionReport(3, 2, 4, 1, ())  # a peer of the old version gives no entries
    with pytest.raises(InvalidArgumentError):
        PositionReport(3, 2, 4, 1, ((1, 3, (), 0, ()), (1, 5, (), 0, ())))  # not consecutive
    with pytest.raises(InvalidArgumentError):
        PositionProbe(3, 2, 1, 2, 1)  # catch_up is a bool


def test_a_candidate_catches_up_from_a_peer_ahead_that_cannot_reach_the_coordination_service():
    """The peer that holds the semi-sync write (its acknowledgement made it "done") is cut off
    from the coordination service when the leader dies: it never sees the lease lapse, but it
    answers probes. The follower behind waits defer_s for it, then catches up from it and leads
    with the write (before: it led without it, and the write was dropped uncounted)."""
    sim = _group("semi-sync", sync_replicas=1)
    old = _leader(sim)
    ahead, behind = [r for r in REPS if r != old]
    sim.cut(old, behind)  # the write reaches only the leader and `ahead`
    ack = _ask(sim, old, ReplWrite(((PUT, b"k", b"v"),)))
    for c in COORDS:
        sim.cut(ahead, c)
        sim.cut(c, ahead)
    sim.crash(old)
    assert sim.run_until(lambda: sim.core(behind).role == "leader", 5.0)
    lead = sim.core(behind)
    assert lead.epoch_at(ack.lsn) == ack.epoch and lead.state.data == {b"k": b"v"}
    assert lead.counters["caught_up_entries"] >= 1 and sim.core(ahead).role == "follower"
    sim.heal()
    sim.restart(old)
    sim.run_for(2.0)
    assert all(sim.core(r).state.data == {b"k": b"v"} and sim.core(r).lost_writes == 0 for r in REPS)


def test_an_async_write_that_asked_for_acks_is_counted_when_a_failover_drops_it():
    """Async's probe quorum is one replica, so a write acknowledged after `acks` followers had it
    survives only a failover to one of them. Dropped, it is counted, as any async write is (before:
    its entry had acks > 0 and was discarded uncounted)."""
    sim = _group("async")
    old = _leader(sim)
    follower, other = [r for r in REPS if r != old]
    sim.partition([[old, follower, "client"], ["*"]])  # `other` alone with the coordination service
    ack = _ask(sim, old, ReplWrite(((PUT, b"k", b"v"),), acks=1))  # the follower has it: "done"
    assert sim.run_until(lambda: sim.core(other).role == "leader", 5.0)  # quorum of one: itself
    sim.heal()
    sim.run_for(2.0)
    lead = sim.core(other)
    assert lead.role == "leader" and all(sim.core(r).last_lsn == lead.last_lsn for r in REPS)
    assert not (ack.lsn <= lead.last_lsn and lead.epoch_at(ack.lsn) == ack.epoch)  # dropped by the failover,
    for r in (old, follower):  # and counted by each replica that discarded it
        assert sim.core(r).lost_writes == 1 and sim.core(r).status()["lost"] == ((ack.epoch, ack.lsn, (b"k",)),)


def test_a_discarded_entry_is_counted_unless_the_failover_quorum_protected_it():
    """The rule in _count_lost, entry by entry: acks == 0 in any mode and every async entry are
    counted; a semi-sync entry (acks >= k >= 1) cannot have been acknowledged if a leader lacks it."""
    for mode, counted in (("async", {2, 3}), ("semi-sync", {2})):
        core = LeaderFollowerReplica("r2", group="g", members=tuple(REPS), coordinators=tuple(COORDS), mode=mode)
        _step(core, "r1", Append(1, 0, 0, ((1, 1, (), 0, ()), (1, 2, ((PUT, b"a", b"1"),), 0, ()),
                                           (1, 3, ((PUT, b"b", b"2"),), 1, ())), 3))
        donor = MapState()
        donor.apply(1, (), epoch=1)
        donor.apply(2, (), epoch=2)
        _step(core, "r3", Checkpoint(2, 2, 2, ((1, 1), (2, 2)), donor.snapshot()))  # r3 led epoch 2 from lsn 2
        assert {lsn for _, lsn, _ in core.lost} == counted and core.lost_writes == len(counted), mode


# --- the coordination client and RaftKV's KVCall -------------------------------------------------------


def test_the_coordination_client_follows_hints_and_retries_after_a_timeout():
    sent = []
    client = CoordinationClient(lambda dst, msg: sent.append((dst, msg)), ("c1", "c2", "c3"), "s", timeout_ticks=3)
    got = []
    client.call([("get", b"k", None, None)], got.append)
    assert sent[-1][0] == "c1" and isinstance(sent[-1][1], KVCall)
    call_id = sent[-1][1].call_id
    client.on_result("c1", KVCallResult(call_id, KVResults(((RETRY, "c3"),))))
    assert sent[-1][0] == "c3"  # the hint, at once
    client.on_result("c3", KVCallResult(call_id, KVResults(((RETRY, ""),))))
    assert len(sent) == 2  # no hint: wait a tick rather than spin
    client.on_tick()
    assert sent[-1][0] == "c1" and sent[-1][1].batch == sent[0][1].batch  # same seqs: applied once
    for _ in range(3):
        client.on_tick()
    assert sent[-1][0] == "c2"  # timed out: the next member
    client.on_result("c2", KVCallResult(call_id, KVResults(((0, b"v"),))))
    assert got == [(b"v",)] and not client.busy


def test_raftkv_serves_batches_sent_as_messages():
    sim = SimNetwork(3, tick_s=0.01)
    for c in COORDS:
        sim.add(c, lambda n, recovered=(), tick_s=0.01: RaftMember(
            n, recovered=recovered, tick_s=tick_s, voters=COORDS, raft={"election_ticks": 10, "heartbeat_ticks": 2}))
    sim.run_for(1.0)
    leader = next(c for c in COORDS if sim.core(c).node.role == "leader")
    from ddia_ray.runtime.core import Envelope
    core = sim.core(leader)
    core.step(Envelope("x", leader, KVCall(9, KVBatch("s", (("put", b"k", 1, b"v", None),), 1))))
    messages = []
    for _ in range(50):
        rd = core.ready()
        messages += [m for m in rd.messages if m.dst == "x"]
        for m in rd.messages:
            if m.dst != "x":
                sim.core(m.dst).step(m)
        core.advance(rd)
        for c in COORDS:
            if c != leader:
                peer = sim.core(c)
                prd = peer.ready()
                for m in prd.messages:
                    sim.core(m.dst).step(m)
                peer.advance(prd)
        if messages:
            break
    assert messages and isinstance(messages[0].payload, KVCallResult)
    assert messages[0].payload.call_id == 9 and messages[0].payload.results.results == ((0, None),)


def test_a_damaged_lease_value_is_refused_not_trusted():
    from ddia_ray.errors import CorruptRecordError
    from ddia_ray.replication.failover import _decode_lease, _lease_value
    assert _decode_lease(_lease_value(3, "r1", 7)) == (3, "r1", 7, ())
    assert _decode_lease(_lease_value(3, "r1", 7, ("r1", "r4"))) == (3, "r1", 7, ("r1", "r4"))
    assert _decode_lease(codec.encode((3, "r1", 7))) == (3, "r1", 7, ())  # written before member lists
    for damaged in (codec.encode((3, "r1")), codec.encode(("3", "r1", 0)), codec.encode((-1, "r1", 0)),
                    codec.encode((3, "r1", 0, ("r1", 2))), codec.encode((3, "r1", 0, ("r1", "r1"))),
                    codec.encode((3, "r1", 0, "r1")), codec.encode((3, "r1", 0, ("",)))):
        with pytest.raises(CorruptRecordError, match="lease key holds"):
            _decode_lease(damaged)
