"""RaftReplica, the replicated store's Raft protocol, driven directly: its entries, its requests and
its refusals. (Its safety under faults: tests/test_replication_simulation.py; on Ray:
tests/test_replication_store.py and tests/test_replication_jepsen.py.)"""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.errors import (ConfigError, CorruptRecordError, InvalidArgumentError, NotLeaderError,
                             ReplicaBehindError, StaleEpochError)
from ddia_ray.kv.commands import KVBatch, KVCall
from ddia_ray.replication.raft_replica import RaftReplica, decode_write, encode_write
from ddia_ray.replication.records import CAS, PUT, ReadResult, ReplRead, ReplScan, ReplWrite, ScanResult, WriteAck


def _leader(recovered=(), state=None) -> RaftReplica:
    core = RaftReplica("r1", voters=("r1",), group="g", recovered=recovered, state=state)
    for _ in range(50):
        core.tick()
        if core.node.role == "leader":
            break
    assert core.node.role == "leader"
    rd = core.ready()
    core.advance(rd)
    _LOGS[id(core)] = list(rd.persist)  # what a shell would have written: a restart recovers from it
    return core


_LOGS: dict = {}


def _ask(core: RaftReplica, payload, rid: int = 1):
    core.request(rid, payload)
    rd = core.ready()
    core.advance(rd)
    _LOGS.setdefault(id(core), []).extend(rd.persist)
    (reply,) = [r for r in rd.replies if r.request_id == rid]
    if reply.error is not None:
        raise reply.error.exception()
    return reply.payload


def test_write_entries_round_trip_and_damage_is_refused():
    req = ReplWrite(((PUT, b"k", b"v"), (CAS, b"k", b"w", b"v")), client="c", seq=3, acked_below=2)
    assert decode_write(encode_write(req, 1234)) == ("c", 3, 2, req.ops, 1234, 0, None)
    fenced = ReplWrite(req.ops, client="c", seq=3, acked_below=2, fence=9)
    assert decode_write(encode_write(fenced, 1234)) == ("c", 3, 2, req.ops, 1234, 9, None)
    # A batch the leader decided carries its decided ops and one answer per op.
    decided = ((PUT, b"k", b"v"), (PUT, b"k", b"w"))
    assert decode_write(encode_write(req, 1234, decided, (None, True))) == ("c", 3, 2, decided, 1234, 0, (None, True))
    # An entry written before stamps (format 1) is read with stamp -1 (unknown), before fences with
    # fence 0, and before decisions (formats 1 to 3) undecided.
    assert decode_write(codec.encode(("repl", 1, "c", 3, 2, req.ops))) == ("c", 3, 2, req.ops, -1, 0, None)
    assert decode_write(codec.encode(("repl", 2, "c", 3, 2, req.ops, 7))) == ("c", 3, 2, req.ops, 7, 0, None)
    assert decode_write(codec.encode(("repl", 3, "c", 3, 2, req.ops, 7, 9))) == ("c", 3, 2, req.ops, 7, 9, None)
    for bad in (codec.encode(("repl", 2, "c", 1, 1, ())), codec.encode(("repl", 4, "c", 1, 1, (), 5, 0)),
                codec.encode(("repl", 5, "c", 1, 1, (), 5, 0, None)),
                codec.encode(("repl", 3, "c", 1, 1, (), 5, -2)), codec.encode(("repl", 3, "c", 1, 1, (), 5, "f")),
                codec.encode(("repl", 2, "c", 1, 1, (), "t")), codec.encode(("kv", 1)), codec.encode(7),
                # decided entries: results not a tuple, an undecided op left in, a fence
                codec.encode(("repl", 4, "c", 1, 1, (), 5, 0, "decided")),
                codec.encode(("repl", 4, "c", 1, 1, ((CAS, b"k", b"w", b"v"),), 5, 0, (True,))),
                codec.encode(("repl", 4, "c", 1, 1, ((PUT, b"k", b"v"),), 5, 3, (None,)))):
        with pytest.raises(CorruptRecordError):
            decode_write(bad)


def test_the_leader_stamps_writes_and_idle_sessions_expire_at_the_same_entry_on_recovery():
    from ddia_ray.replication.state import MapState

    core = _leader(state=MapState(session_ttl_ms=1000))
    _ask(core, ReplWrite(((PUT, b"a", b"1"),), client="idle", seq=1, acked_below=1))
    for _ in range(150):  # 1.5 s of 10 ms ticks: longer than the TTL
        core.tick()
    core.advance(core.ready())
    _ask(core, ReplWrite(((PUT, b"b", b"1"),), client="busy", seq=1, acked_below=1))
    assert set(core.state.sessions.table) == {"busy"} and core.state.sessions.expired == 1
    assert core.status()["sessions_expired"] == 1
    # A restart replays the log: the stamps are in the entries, so the same session expires again.
    again = RaftReplica("r1", voters=("r1",), group="g", recovered=tuple(_LOGS[id(core)]),
                        state=MapState(session_ttl_ms=1000))
    for _ in range(50):
        again.tick()
        again.advance(again.ready())
    assert set(again.state.sessions.table) == {"busy"} and again.state.sessions.expired == 1


def test_a_single_member_group_writes_reads_and_answers_retries_once():
    core = _leader()
    ack = _ask(core, ReplWrite(((PUT, b"a", b"1"), (CAS, b"a", b"2", b"1")), client="c", seq=1, acked_below=1))
    assert isinstance(ack, WriteAck) and ack.results == (None, True) and ack.epoch == core.node.term
    again = _ask(core, ReplWrite(((PUT, b"a", b"1"), (CAS, b"a", b"2", b"1")), client="c", seq=1, acked_below=1),
                 rid=2)
    assert again.results == (None, True) and again.lsn == ack.lsn  # the first answer, not a second apply
    for mode in ("linearizable", "leader", "follower", "session"):
        got = _ask(core, ReplRead((b"a",), mode, ack.epoch, ack.lsn), rid=3)
        assert isinstance(got, ReadResult) and got.values == (b"2",) and got.lsn >= ack.lsn
    page = _ask(core, ReplScan(b"", None, 10), rid=4)
    assert isinstance(page, ScanResult) and page.keys == (b"a",) and page.more is False


def test_refusals():
    core = _leader()
    with pytest.raises(ConfigError, match="followers"):
        _ask(core, ReplWrite(((PUT, b"a", b"1"),), acks=1))
    old_term = core.node.term
    _ask(core, ReplWrite(((PUT, b"a", b"1"),)))
    restarted = _leader(recovered=tuple(_LOGS[id(core)]))  # re-elected after a restart: a higher term
    assert restarted.node.term > old_term
    with pytest.raises(StaleEpochError):  # a writer still holding the old term is fenced off
        _ask(restarted, ReplWrite(((PUT, b"a", b"2"),), epoch=old_term), rid=2)
    with pytest.raises(ReplicaBehindError):
        _ask(core, ReplRead((b"a",), "session", 1, 10**6), rid=3)
    with pytest.raises(InvalidArgumentError):
        _ask(core, KVBatch("c", (("put", b"a", 1, b"v", None),), 1), rid=4)
    with pytest.raises(InvalidArgumentError):
        core.on_message("r2", KVCall(1, KVBatch("c", (("put", b"a", 1, b"v", None),), 1)))
    follower = RaftReplica("r2", voters=("r1", "r2", "r3"), group="g")
    with pytest.raises(NotLeaderError):
        _ask(follower, ReplWrite(((PUT, b"a", b"1"),)))
    with pytest.raises(NotLeaderError):
        _ask(follower, ReplRead((b"a",), "linearizable"), rid=2)


def _pump(cores: dict, cut: frozenset = frozenset(), replies: list | None = None, rounds: int = 50) -> None:
    """Deliver the cores' messages to each other until none is left (messages to or from a
    member in ``cut`` are lost); their replies are added to ``replies``."""
    for _ in range(rounds):
        moved = False
        for core in cores.values():
            rd = core.ready()
            core.advance(rd)
            if replies is not None:
                replies.extend(rd.replies)
            for env in rd.messages:
                moved = True
                if env.src not in cut and env.dst not in cut and env.dst in cores:
                    cores[env.dst].step(env)
        if not moved:
            return


def test_a_deposed_leader_answers_its_uncommitted_session_writes_at_once():
    """A leader that loses its leadership with a session write proposed but not committed answers
    it with WriteOutcomeUnknownError as it steps down: the client sends it again to the new leader
    (the session answers it there if it survived). Before, the answer waited for an entry at the
    same index to be applied, and none came while the client kept retrying that same write: the
    client waited out its call timeout, leader after leader (docs/replication.md)."""
    from ddia_ray.errors import WriteOutcomeUnknownError

    voters = ("r1", "r2", "r3")
    cores = {n: RaftReplica(n, voters=voters, group="g", seed=i) for i, n in enumerate(voters)}
    for _ in range(200):  # r1 times out first and wins: the others only tick once it leads
        cores["r1"].tick()
        _pump(cores)
        if cores["r1"].node.role == "leader":
            break
    assert cores["r1"].node.role == "leader"
    replies: list = []
    cores["r1"].request(7, ReplWrite(((PUT, b"k", b"v"),), client="c", seq=1, acked_below=1))
    _pump(cores, cut=frozenset({"r1"}), replies=replies)  # its followers never see the entry
    assert [r for r in replies if r.request_id == 7] == []  # proposed, not committed: no answer yet
    for _ in range(400):  # the others elect one of them; r1 hears of the new term
        for n in ("r2", "r3"):
            cores[n].tick()
        _pump(cores, cut=frozenset({"r1"}))
        if any(cores[n].node.role == "leader" for n in ("r2", "r3")):
            break
    new = next(n for n in ("r2", "r3") if cores[n].node.role == "leader")
    cores[new].tick()  # its heartbeats reach r1 now that the partition heals
    for _ in range(5):
        cores[new].tick()
        _pump(cores, replies=replies)
    assert cores["r1"].node.role == "follower"
    (reply,) = [r for r in replies if r.request_id == 7]
    assert isinstance(reply.error.exception(), WriteOutcomeUnknownError)


def _engine_replicas_with_r3_behind(tmp_path):
    """Three Raft replicas on the LSM engine, r1 leading, after 30 writes r3 did not get: the leader
    has compacted past everything r3 has, so r3 needs a snapshot. Returns the cores and
    ``write(i, cut)``, which writes key ``k<i>`` through the leader with the members in ``cut`` away."""
    from ddia_ray.replication.engine_state import EngineState

    voters = ("r1", "r2", "r3")
    cores = {n: RaftReplica(n, voters=voters, group="g", seed=i, snapshot_entries=5, catch_up_entries=0,
                            state=EngineState(f"file://{tmp_path}/{n}", engine="lsm",
                                              checkpoints_url=f"file://{tmp_path}/cps-{n}"))
             for i, n in enumerate(voters)}
    for _ in range(200):
        cores["r1"].tick()
        _pump(cores)
        if cores["r1"].node.role == "leader":
            break
    leader = cores["r1"]
    assert leader.node.role == "leader"

    def write(i: int, cut: frozenset) -> None:
        leader.request(100 + i, ReplWrite(((PUT, b"k%03d" % i, b"v"),), client="c", seq=i + 1, acked_below=i + 1))
        _pump(cores, cut=cut)

    for i in range(30):  # r3 is away: the leader compacts past everything r3 has
        write(i, frozenset({"r3"}))
    return cores, write


def test_a_follower_installs_the_checkpoint_it_was_sent_after_the_leader_exported_newer_ones(tmp_path):
    """A leader's snapshot names a checkpoint's files, which the follower copies while the leader goes
    on writing and exporting. The leader used to keep only its newest two checkpoints, so a copy
    slower than two more exports (a loaded machine, a slow store) found its files gone, and the
    follower stopped (fail-stop): the far-behind follower's test timed out that way in a loaded CI
    run. The checkpoints a follower was sent and has not acknowledged now stay."""
    cores, write = _engine_replicas_with_r3_behind(tmp_path)
    leader = cores["r1"]
    held = []
    for _ in range(10):  # heartbeats reach r3; its answer makes the leader send a snapshot, held here
        leader.tick()
        for core in cores.values():
            rd = core.ready()
            core.advance(rd)
            for env in rd.messages:
                if held and "r3" in (env.src, env.dst):
                    continue  # r3 is busy copying: it hears and says nothing until it is done
                if env.dst == "r3" and env.payload.type == "snap":
                    held.append(env)
                elif env.dst in cores:
                    cores[env.dst].step(env)
        if held:
            break
    assert held, "the leader sent r3 no snapshot"
    for i in range(30, 60):  # six more exports while r3 copies
        write(i, frozenset({"r3"}))
    cores["r3"].step(held[0])  # the copy: the checkpoint it names must still be there
    _pump(cores)
    assert not cores["r3"].failed, cores["r3"].failed
    for _ in range(4):
        leader.tick()
        _pump(cores)
    assert cores["r3"].state.get(b"k059") == b"v" and cores["r3"].state.get(b"k000") == b"v"
    for core in cores.values():
        core.close()


def test_a_follower_drops_a_snapshot_whose_checkpoint_is_gone_and_installs_the_next_one(tmp_path):
    """The checkpoint a snapshot names can vanish before the follower copies it: the member that
    exported it stopped leading and pruned it (only a leader keeps what its followers copy). The
    follower used to take the snapshot into its Raft log first and copy after, so a failed copy left
    a state behind its log, and it stopped (fail-stop) until restarted. It now copies first: a copy
    that fails drops the message with nothing changed, and the leader, hearing nothing back, probes
    again after an election timeout and sends a newer snapshot, which the follower installs."""
    import shutil

    from ddia_ray import codec
    cores, write = _engine_replicas_with_r3_behind(tmp_path)
    leader = cores["r1"]
    snaps_sent = []
    for _ in range(10):  # heartbeats reach r3; the snapshot the leader sends loses its files on the way
        leader.tick()
        for core in cores.values():
            rd = core.ready()
            core.advance(rd)
            for env in rd.messages:
                if env.dst == "r3" and env.payload.type == "snap":
                    named = codec.decode(env.payload.snapshot.data)[2]
                    shutil.rmtree(named.removeprefix("file://"))
                    snaps_sent.append(env.payload.snapshot.meta.index)
                if env.dst in cores:
                    cores[env.dst].step(env)
        if snaps_sent:
            break
    assert snaps_sent, "the leader sent r3 no snapshot"
    r3 = cores["r3"]
    assert not r3.failed, r3.failed
    assert r3.snapshots_dropped == 1 and "could not be copied" in r3.status()["last_snapshot_error"]
    assert r3.node.log.committed < snaps_sent[0]  # its Raft log did not take the snapshot
    for i in range(30, 40):  # the leader goes on; r3 is back in reach
        write(i, frozenset())
    for _ in range(200):  # after an election timeout the leader probes r3 again and sends a newer one
        leader.tick()
        _pump(cores)
        if r3.state.get(b"k039") == b"v":
            break
    assert not r3.failed, r3.failed
    assert r3.state.get(b"k039") == b"v" and r3.state.get(b"k000") == b"v"
    assert r3.state.installs == 1 and r3.snapshots_dropped == 1
    assert r3.node.role == "follower" and leader.node.role == "leader"
    for core in cores.values():
        core.close()


def test_a_follower_drops_a_snapshot_whose_copied_checkpoint_does_not_open(tmp_path, monkeypatch):
    """A checkpoint copied whole can still fail to open (damaged in a way the copy did not see, or
    at another position than its record). The follower used to open it only when installing, after
    its Raft core had taken the snapshot, so that failure stopped the member. It now opens the copy
    before the core takes the snapshot: the message is dropped with nothing changed, and the next
    snapshot installs."""
    from ddia_ray.errors import CorruptionError
    from ddia_ray.replication import engine_state

    cores, write = _engine_replicas_with_r3_behind(tmp_path)
    real = engine_state.open_engine
    refused: list = []

    def damaged_once(url, *args, **kwargs):
        if "/r3" in url and not refused:
            refused.append(url)
            raise CorruptionError(f"{url}: a damaged table")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(engine_state, "open_engine", damaged_once)
    leader, r3 = cores["r1"], cores["r3"]
    for i in range(30, 40):
        write(i, frozenset())
    for _ in range(300):  # r3 is sent a snapshot, drops it, and installs a later one
        leader.tick()
        _pump(cores)
        if r3.state.get(b"k039") == b"v":
            break
    assert refused, "r3 never opened a copied checkpoint"
    assert not r3.failed, r3.failed
    assert r3.snapshots_dropped == 1 and "does not open" in r3.status()["last_snapshot_error"]
    assert r3.state.get(b"k039") == b"v" and r3.state.get(b"k000") == b"v" and r3.state.installs == 1
    for core in cores.values():
        core.close()
