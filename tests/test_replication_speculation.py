"""Decide once (ddia_ray/replication/speculation.py): the leader's view of its log's end, and a Raft
group whose leader decides write batches when it proposes them and whose members only apply them.
(The protocol's safety with the view under faults: tests/test_replication_simulation.py, whose
Raft runs decide writes this way.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray import codec
from ddia_ray.consensus.sessions import Sessions
from ddia_ray.replication.procedures import call_op, procedure
from ddia_ray.replication.raft_replica import RaftReplica, decode_write
from ddia_ray.replication.records import CAS, DELETE, DELETE_RANGE, PUT, ReplWrite, WriteAck
from ddia_ray.replication.speculation import FRESH, REPEAT, Speculation
from ddia_ray.replication.state import MapState

# --- the view against a model ----------------------------------------------------------------------

_KEYS = [bytes([c]) for c in b"abcdefgh"]
_op = st.one_of(
    st.tuples(st.just(PUT), st.sampled_from(_KEYS), st.binary(min_size=1, max_size=2)),
    st.tuples(st.just(DELETE), st.sampled_from(_KEYS), st.just(b"")),
    st.tuples(st.just(DELETE_RANGE), st.sampled_from(_KEYS), st.sampled_from(_KEYS + [b"z"])),
)


def _apply(data: dict, ops: tuple) -> None:
    for op in ops:
        if op[0] == PUT:
            data[op[1]] = op[2]
        elif op[0] == DELETE:
            data.pop(op[1], None)
        else:
            for k in [k for k in data if op[1] <= k < op[2]]:
                del data[k]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_op, max_size=4), st.integers(0, 8)), max_size=25), st.integers(1, 4))
def test_the_view_reads_as_the_state_with_every_accounted_entry_applied(entries, limit):
    """Entries are accounted for, then applied to the state some steps later (``lag``): at every
    step, a get and a scan of every range through the view read what the state would hold with
    every accounted entry applied."""
    state = MapState()
    model: dict = {}
    view = Speculation()
    view.reset(1, 0)
    log: list[tuple] = []
    for i, (ops, lag) in enumerate(entries, start=1):
        ops = tuple(ops)
        view.account(i, "", 0, 0, -1, ops, FRESH)
        log.append(ops)
        _apply(model, ops)
        while state.applied < i - lag:  # the state catches up to within ``lag`` entries
            state.apply(state.applied + 1, log[state.applied])
        view.forget(state.applied)
        get, scan, many = view.reader(state.get, state.scan, state.get_many)
        assert {k: get(k) for k in _KEYS} == {k: model.get(k) for k in _KEYS}
        assert many(tuple(_KEYS)) == [model.get(k) for k in _KEYS]
        for start in _KEYS:
            for end in (*_KEYS, None):
                want = sorted(k for k in model if k >= start and (end is None or k < end))[:limit]
                assert scan(start, end, limit) == (tuple(want), tuple(model[k] for k in want))


def test_a_decision_through_the_view_sees_the_entries_not_yet_applied():
    state = MapState()
    state.apply(1, ((PUT, b"n", b"1"),))
    view = Speculation()
    view.reset(1, 1)
    view.account(2, "", 0, 0, -1, ((PUT, b"n", b"2"),), FRESH)  # not applied yet
    ops, results = view.decide(((CAS, b"n", b"3", b"2"), (CAS, b"n", b"9", b"1")), state.get, state.scan)
    assert ops == ((PUT, b"n", b"3"),) and results == (True, False)
    with pytest.raises(ValueError):
        view.account(4, "", 0, 0, -1, (), FRESH)  # entry 3 was skipped
    with pytest.raises(ValueError):
        view.account(3, "", 0, 0, -1, ((CAS, b"n", b"3", b"2"),), FRESH)  # undecided ops


# --- what apply will make of a client's entry --------------------------------------------------------

def test_repeats_are_known_from_the_state_and_from_entries_not_yet_applied():
    sessions = Sessions()
    sessions.remember(5, ("c", 3, 2, (None,), 100))  # seq 3 answered; floor 2
    view = Speculation()
    view.reset(1, 5)
    assert view.outcome(sessions, "c", 3, 110) == REPEAT  # answered by the state
    assert view.outcome(sessions, "c", 1, 110) == REPEAT  # below the state's floor
    assert view.outcome(sessions, "c", 4, 110) == FRESH
    assert view.outcome(sessions, "", 0, -1) == FRESH  # unsessioned writes always apply
    view.account(6, "c", 4, 4, 110, (), FRESH)  # seq 4 pending, floor 4
    assert view.outcome(sessions, "c", 4, 120) == REPEAT  # the pending entry answers it
    assert view.outcome(sessions, "c", 3, 120) == REPEAT  # below the pending entry's floor
    assert view.outcome(sessions, "c", 5, 120) == FRESH
    view.forget(6)  # applied: the state knows it now
    assert view.outcome(sessions, "c", 5, 120) == FRESH


def test_a_repeat_whose_session_may_expire_first_is_not_predicted():
    sessions = Sessions(ttl_ms=1000)
    sessions.remember(5, ("c", 3, 0, (None,), 100))
    view = Speculation()
    view.reset(1, 5)
    assert view.outcome(sessions, "c", 3, 1100) == REPEAT  # the session lives at least until 1100
    assert view.outcome(sessions, "c", 3, 1101) is None  # an entry before it may expire the session
    assert view.outcome(sessions, "c", 3, -1) is None  # no stamp: no bound
    assert view.outcome(sessions, "c", 4, 5000) == FRESH  # expiry only makes writes fresher
    view.account(6, "d", 1, 0, 2000, (), FRESH)
    assert view.outcome(sessions, "d", 1, 3000) == REPEAT
    assert view.outcome(sessions, "d", 1, 3001) is None


# --- a Raft group that decides once --------------------------------------------------------------------

RUNS: list = []


@procedure("test.speculation.bump")
def _bump(get, args):
    """Add ``args`` to the counter at ``n`` (counting every run, wherever it runs)."""
    RUNS.append(args)
    old = get(b"n")
    new = (int(old) if old is not None else 0) + args
    return ((PUT, b"n", str(new).encode()),), new


class _Group:
    """Three members delivering each other's messages in memory; ``held`` keeps the messages of
    the members named in it (to a member, or from one) until released."""

    def __init__(self) -> None:
        ids = ("r1", "r2", "r3")
        self.cores = {i: RaftReplica(i, voters=ids, group="g", state=MapState()) for i in ids}
        self.replies: dict = {}
        self.held: list = []
        for _ in range(300):
            for c in self.cores.values():
                c.tick()
            self.pump()
            if self.leader() is not None and self.leader().state.applied >= 0 and self.leader().node.log.applied \
                    >= self.leader().node.log.last_index():
                break
        assert self.leader() is not None

    def leader(self) -> RaftReplica | None:
        leaders = [c for c in self.cores.values() if c.node.role == "leader"]
        return leaders[0] if leaders else None

    def pump(self, hold=lambda env: False) -> None:
        moved = True
        while moved:
            moved = False
            for c in self.cores.values():
                rd = c.ready()
                c.advance(rd)
                for r in rd.replies:
                    self.replies[r.request_id] = r
                for env in rd.messages:
                    moved = True
                    if hold(env):
                        self.held.append(env)
                    else:
                        self.cores[env.dst].step(env)

    def release(self) -> None:
        held, self.held = self.held, []
        for env in held:
            self.cores[env.dst].step(env)
        self.pump()

    def write(self, rid: int, ops: tuple, seq: int, **kw) -> None:
        self.leader().request(rid, ReplWrite(ops, client="w", seq=seq, acked_below=1, **kw))

    def answer(self, rid: int):
        r = self.replies[rid]
        assert r.ok, r.error
        assert isinstance(r.payload, WriteAck)
        return r.payload.results

    def entry(self, index: int) -> tuple:
        (e,) = self.leader().node.log.slice(index, index + 1, 1)
        return decode_write(e.data)


def test_the_leader_runs_a_procedure_once_and_the_members_apply_its_rows():
    g = _Group()
    RUNS.clear()
    for seq in range(1, 6):
        g.write(seq, (call_op("test.speculation.bump", 10),), seq)
    g.pump()
    assert [g.answer(seq) for seq in range(1, 6)] == [(10,), (20,), (30,), (40,), (50,)]
    assert len(RUNS) == 5  # once per write, by the leader: not once per member
    leader = g.leader()
    last = leader.node.log.last_index()
    assert g.entry(last) == ("w", 5, 1, ((PUT, b"n", b"50"),), g.entry(last)[4], 0, (50,))
    for c in g.cores.values():
        assert c.state.get(b"n") == b"50"
    assert leader.status()["decided_at_proposal"] == 5


def test_the_view_stops_at_a_fenced_write_and_passes_it_once_applied():
    g = _Group()
    leader = g.leader()
    followers = {n for n in g.cores if n != leader.node_id}
    g.write(1, ((PUT, b"n", b"1"),), 1)
    g.pump()
    RUNS.clear()
    # A fenced write (this group owns no partition: apply refuses it) reaches the followers, and
    # their acknowledgements are held back: it is in the log, not applied.
    g.write(2, ((PUT, b"x", b"1"),), 2, fence=7)
    g.pump(hold=lambda env: env.dst == leader.node_id)
    fenced_at = leader.node.log.last_index()
    # Two writes behind it cannot be decided yet (apply alone knows what the fenced one does).
    g.write(3, ((CAS, b"n", b"2", b"1"),), 3)
    g.write(4, (call_op("test.speculation.bump", 1),), 4)
    g.pump(hold=lambda env: env.src == leader.node_id and env.dst in followers or env.dst == leader.node_id)
    assert g.entry(fenced_at + 1)[6] is None and g.entry(fenced_at + 2)[6] is None
    # The acknowledgements of the fenced write arrive: it applies (refused); the two behind it
    # have not reached the followers.
    acks, g.held = [e for e in g.held if e.dst == leader.node_id], [e for e in g.held if e.dst != leader.node_id]
    for env in acks:
        leader.step(env)
    g.pump(hold=lambda env: True)
    assert leader.state.applied >= fenced_at and leader.state.applied < fenced_at + 2
    # The next write passes the fenced entry, decides the two undecided ones in the view (the cas
    # and the bump), and is decided against them.
    g.write(5, (call_op("test.speculation.bump", 100),), 5)
    assert g.entry(fenced_at + 3)[6] == (103,)
    g.release()
    assert g.replies[2].ok is False  # the fenced write was refused
    assert [g.answer(rid) for rid in (3, 4, 5)] == [(True,), (3,), (103,)]
    for c in g.cores.values():
        assert c.state.get(b"n") == b"103" and c.state.get(b"x") is None


def test_a_retry_is_answered_once_whether_its_first_copy_is_applied_or_in_flight():
    g = _Group()
    RUNS.clear()
    leader = g.leader()
    g.write(1, (call_op("test.speculation.bump", 1),), 1)
    g.write(2, (call_op("test.speculation.bump", 1),), 1)  # the same write again, before it commits
    g.pump()
    g.write(3, (call_op("test.speculation.bump", 1),), 1)  # and once it has applied
    g.write(4, (call_op("test.speculation.bump", 5),), 2)
    g.pump()
    assert [g.answer(rid) for rid in (1, 2, 3, 4)] == [(1,), (1,), (1,), (6,)]
    assert len(RUNS) == 2  # the first copy and seq 2: repeats are answered from the session table
    for c in g.cores.values():
        assert c.state.get(b"n") == b"6"
    assert leader.status()["decided_at_proposal"] == 2 and leader.status()["proposed_undecided"] == 2


def test_a_new_leader_accounts_for_its_predecessors_entries():
    g = _Group()
    old = g.leader()
    g.write(1, (call_op("test.speculation.bump", 1),), 1)
    g.pump()
    # Decided entries reach the followers but nothing commits: the leader's acks are held.
    g.write(2, (call_op("test.speculation.bump", 10),), 2)
    g.write(3, ((CAS, b"n", b"11", b"1"),), 3)
    g.pump(hold=lambda env: env.dst == old.node_id)
    g.held.clear()  # the old leader never hears back; it is cut off
    others = [c for n, c in g.cores.items() if n != old.node_id]
    for _ in range(400):
        for c in others:
            c.tick()
        g.pump(hold=lambda env: old.node_id in (env.src, env.dst))
        g.held.clear()
        if any(c.node.role == "leader" for c in others):
            break
    new = next(c for c in others if c.node.role == "leader")
    # The new leader's log holds entries 2 and 3 from the old term, not applied: it decides the
    # next write as of after them.
    new.request(4, ReplWrite(((CAS, b"n", b"12", b"11"),), client="v", seq=1, acked_below=1))
    (e,) = new.node.log.slice(new.node.log.last_index(), new.node.log.last_index() + 1, 1)
    assert decode_write(e.data)[6] == (True,)
    g.pump(hold=lambda env: old.node_id in (env.src, env.dst))
    assert g.replies[4].ok and g.replies[4].payload.results == (True,)
    for c in others:
        assert c.state.get(b"n") == b"12"
    assert codec.decode(codec.encode(new.status()["decided_at_proposal"])) >= 1
