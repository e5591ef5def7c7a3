"""Plain unit tests of the Raft core's data and edges: codec round trips of every raft record,
Message and RaftConfig validation, recover() from persisted records, and regression tests for
core bugs the transcripts led to (each names the rule it protects)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddia_ray.codec import FORMAT_1, decode, encode
from ddia_ray.consensus.raft import (CONF_CHANGE, LEADER, NOOP, NORMAL, ConfChange, ConfState, Entry, HardState,
                                     LogAppend, Message, RaftConfig, RaftNode, ReadState, RaftSnapshot, SnapshotMeta,
                                     recover)
from ddia_ray.consensus.raft.messages import MESSAGE_TYPES
from ddia_ray.errors import (ConfigError, CorruptRecordError, InvalidArgumentError, NotLeaderError,
                             ProposalDroppedError, UnknownVersionError)

from raft_transcript import InteractionEnv

# --- strategies ---------------------------------------------------------------------------

ids = st.sampled_from(["1", "2", "3", "4", "5", "n-a"])
small = st.integers(0, 2**40)
confs = st.builds(lambda v, l: ConfState(tuple(sorted(set(v))), tuple(sorted(set(l) - set(v)))),
                  st.lists(ids, max_size=4), st.lists(ids, max_size=3))
changes = st.builds(ConfChange, st.sampled_from(["add_voter", "add_learner", "remove"]), ids)
data = st.none() | st.text(max_size=10) | st.binary(max_size=10) | st.integers(-1000, 1000) | \
    st.lists(st.text(max_size=3), max_size=3).map(tuple)
normal_entries = st.builds(Entry, small, small, st.just(NORMAL), data)
entries = normal_entries | st.builds(Entry, small, small, st.just(NOOP)) | \
    st.builds(Entry, small, small, st.just(CONF_CHANGE), changes)
metas = st.builds(SnapshotMeta, small, small, confs)
snapshots = st.builds(RaftSnapshot, metas, st.binary(max_size=20))
messages = st.builds(Message, st.sampled_from(sorted(MESSAGE_TYPES)), ids, ids, small, log_term=small, index=small,
                     entries=st.lists(entries, max_size=3).map(tuple), commit=small, reject=st.booleans(),
                     reject_hint=small, context=small, snapshot=st.none() | snapshots)
records = st.one_of(entries, confs, changes, st.builds(HardState, small, ids | st.just(""), small), metas, snapshots,
                    st.builds(ReadState, small, small), messages,
                    st.lists(entries, min_size=1, max_size=3).map(lambda es: LogAppend(tuple(es))))


# --- codec ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(rec=records)
def test_every_raft_record_round_trips_through_the_codec(rec):
    """What a member persists or sends decodes to an equal record of the same type."""
    back = decode(encode(rec))
    assert back == rec and type(back) is type(rec)


def _frame(tag: str, version: int, fields: dict) -> bytes:
    return msgpack.packb({"t": tag, "v": version, "f": fields})


def test_a_message_from_an_unknown_newer_record_version_is_refused():
    """A peer running a newer raft.message schema is refused before the core sees it: its new fields
    could change what the message means, and silently dropping them could break safety."""
    fields = {"type": "heartbeat", "src": "1", "dst": "2", "term": 3, "lease_ms": 50}
    raw = msgpack.packb(msgpack.ExtType(FORMAT_1, _frame("raft.message", 2, fields)))
    with pytest.raises(UnknownVersionError) as info:
        decode(raw)
    assert info.value.tag == "raft.message" and info.value.version == 2


def test_a_message_in_an_unknown_wire_format_is_refused():
    """An ext code other than the codec's format 1 is a newer wire format."""
    good = encode(Message("heartbeat", "1", "2", 3))
    assert decode(good) == Message("heartbeat", "1", "2", 3)
    fields = {"type": "heartbeat", "src": "1", "dst": "2", "term": 3}
    raw = msgpack.packb(msgpack.ExtType(FORMAT_1 + 1, _frame("raft.message", 1, fields)))
    with pytest.raises(UnknownVersionError):
        decode(raw)


@pytest.mark.parametrize("fields, complaint", [
    ({"type": "gossip", "src": "1", "dst": "2", "term": 1}, "unknown raft message type"),
    ({"type": "app", "src": "1", "dst": "2", "term": -1}, "non-negative int"),
    ({"type": "app", "src": "1", "dst": "2", "term": 1, "entries": ("x",)}, "tuple of Entry"),
])
def test_a_malformed_encoded_message_is_a_corrupt_record(fields, complaint):
    """Validation runs on decode too, so garbage from the wire never reaches the core."""
    raw = msgpack.packb(msgpack.ExtType(FORMAT_1, _frame("raft.message", 1, fields)), use_bin_type=True)
    with pytest.raises(CorruptRecordError, match=complaint):
        decode(raw)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error", [
    ({"type": "append"}, InvalidArgumentError),
    ({"src": 1}, InvalidArgumentError),
    ({"dst": None}, InvalidArgumentError),
    ({"term": -1}, InvalidArgumentError),
    ({"term": True}, InvalidArgumentError),
    ({"index": 1.5}, InvalidArgumentError),
    ({"commit": "3"}, InvalidArgumentError),
    ({"entries": [Entry(1, 1)]}, InvalidArgumentError),
    ({"entries": ("noop",)}, InvalidArgumentError),
    ({"snapshot": b"state"}, InvalidArgumentError),
])
def test_message_validation_names_the_bad_field(kwargs, error):
    """Each malformed field is refused at construction with a specific error."""
    base = {"type": "app", "src": "1", "dst": "2", "term": 1}
    with pytest.raises(error):
        Message(**{**base, **kwargs})
    assert Message(**base).type == "app"


def test_record_validation():
    """Entries, configurations and changes refuse what they cannot mean."""
    with pytest.raises(InvalidArgumentError, match="entry kind"):
        Entry(1, 1, kind=7)
    with pytest.raises(InvalidArgumentError, match="ConfChange"):
        Entry(1, 1, CONF_CHANGE, "add 4")
    with pytest.raises(ConfigError, match="both voter and learner"):
        ConfState(("1", "2"), ("2",))
    with pytest.raises(InvalidArgumentError):
        ConfState(["1"], ())
    with pytest.raises(ConfigError, match="unknown membership change"):
        ConfChange("promote", "4")
    with pytest.raises(InvalidArgumentError):
        ConfChange("remove", "")
    with pytest.raises(InvalidArgumentError):
        HardState(1, None, 0)
    with pytest.raises(InvalidArgumentError):
        LogAppend(())


@settings(max_examples=60, deadline=None)
@given(conf=confs, change=changes)
def test_a_conf_change_touches_only_its_member(conf, change):
    """ConfState.apply moves exactly one member and never makes it both voter and learner."""
    after = conf.apply(change)
    others = lambda c: (set(c.voters) - {change.node}, set(c.learners) - {change.node})  # noqa: E731
    assert others(after) == others(conf)
    assert (change.node in after.voters) == (change.op == "add_voter")
    assert (change.node in after.learners) == (change.op == "add_learner")


@pytest.mark.parametrize("kwargs, error", [
    ({"election_ticks": 0}, ConfigError),
    ({"election_ticks": -3}, ConfigError),
    ({"heartbeat_ticks": 0}, ConfigError),
    ({"election_ticks": 5, "heartbeat_ticks": 5}, ConfigError),
    ({"max_entries_per_msg": 0}, ConfigError),
    ({"max_inflight_msgs": 0}, ConfigError),
    ({"max_apply_per_ready": 0}, ConfigError),
    ({"election_ticks": 10.0}, InvalidArgumentError),
    ({"max_inflight_msgs": True}, InvalidArgumentError),
])
def test_raft_config_validation(kwargs, error):
    """Out-of-range tuning is a ConfigError, a wrong type an InvalidArgumentError."""
    with pytest.raises(error):
        RaftConfig(**kwargs)


def test_raft_config_defaults_turn_pre_vote_and_check_quorum_on():
    """Both safety features are on by default: without them a partitioned member disrupts the group (Raft thesis 9.6)."""
    cfg = RaftConfig()
    assert cfg.pre_vote and cfg.check_quorum and cfg.heartbeat_ticks < cfg.election_ticks


def test_node_input_validation():
    """Wrong types at the core's API are refused with specific errors."""
    with pytest.raises(InvalidArgumentError):
        RaftNode("")
    node = RaftNode("1", voters=("1", "2", "3"))
    with pytest.raises(InvalidArgumentError, match="raft Message"):
        node.step({"type": "app"})
    with pytest.raises(InvalidArgumentError, match="ConfChange"):
        node.propose_conf_change(("add_voter", "4"))
    with pytest.raises(NotLeaderError):
        node.propose("x")


# --- recover --------------------------------------------------------------------------------

_CONF = ConfState(("1", "2", "3"))


def _ents(term: int, lo: int, hi: int) -> tuple:
    return tuple(Entry(term, i, NORMAL, f"{term}.{i}") for i in range(lo, hi + 1))


def test_recover_truncates_then_appends():
    """A LogAppend replaces the durable log from its first index on (a follower repairing a conflict)."""
    hs, snap, log = recover([LogAppend(_ents(1, 1, 5)), HardState(2, "1", 3), LogAppend(_ents(2, 4, 6)),
                             HardState(2, "1", 5)])
    assert snap is None and hs == HardState(2, "1", 5)
    assert [(e.term, e.index) for e in log] == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]


def test_recover_lets_a_snapshot_replace_the_log():
    """A snapshot record drops every entry before it; later appends continue after its index."""
    snap = RaftSnapshot(SnapshotMeta(7, 2, _CONF), b"state")
    hs, got, log = recover([LogAppend(_ents(1, 1, 4)), snap, LogAppend(_ents(2, 8, 9)), HardState(2, "", 9)])
    assert got == snap and [e.index for e in log] == [8, 9] and hs.commit == 9


def test_recover_detects_a_gap():
    """An append that does not continue the log means the durable log lost records."""
    with pytest.raises(ConfigError, match="gap before index 5"):
        recover([LogAppend(_ents(1, 1, 3)), LogAppend(_ents(1, 5, 6))])
    with pytest.raises(ConfigError, match="gap"):
        recover([RaftSnapshot(SnapshotMeta(7, 2, _CONF)), LogAppend(_ents(2, 9, 9))])


def test_recover_of_nothing_is_a_blank_member():
    """A member that never persisted anything starts blank (and bootstraps if it is a founder)."""
    assert recover([]) == (HardState(), None, [])


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 4)), min_size=1, max_size=12))
def test_recover_matches_a_model_of_the_log(ops):
    """Any sequence of (term, length) appends, each truncating at a legal point, recovers like a list."""
    model: list[Entry] = []
    written = []
    for term, length in ops:
        start = len(model) // 2 + 1  # a legal truncation point: anywhere up to one past the end
        batch = tuple(Entry(term, i, NORMAL, None) for i in range(start, start + length))
        del model[start - 1:]
        model += batch
        written.append(LogAppend(batch))
    assert recover(written)[2] == model


def test_a_node_rebuilt_from_recover_resumes_where_it_was():
    """recover() feeds RaftNode: term, vote, commit and log survive a restart."""
    env = InteractionEnv()
    for line in ("add-nodes 3", "tick-election 1", "stabilize", "propose 1 x", "stabilize", "crash 2", "restart 2"):
        env.handle(line)
    node = env.members["2"].node
    assert (node.term, node.vote, node.log.committed, node.log.last_index()) == (2, "1", 5, 5)
    assert node.log.entries[-1].data == "x"


# --- regressions found while writing the transcripts ------------------------------------------


def _elect(env: InteractionEnv, *lines: str) -> None:
    for line in lines:
        out = env.handle(line)
        assert not out.startswith("error"), out


def test_a_new_leader_refuses_a_membership_change_until_its_own_term_has_a_commit():
    """Ongaro's 2015 single-server-change bug: a new leader must commit an entry of its own term before
    it appends a configuration change, or a stale leader's uncommitted change can combine with it into
    two disjoint majorities. Before the fix, a leader whose log was fully committed at election time
    accepted a change at once."""
    env = InteractionEnv()
    _elect(env, "add-nodes 3", "tick-election 1", "process-ready 1", "deliver-msgs 2 3", "process-ready 2 3",
           "deliver-msgs 1", "process-ready 1", "deliver-msgs 2 3", "process-ready 2 3", "deliver-msgs 1")
    node = env.members["1"].node
    assert node.role == LEADER and node.log.committed == 3  # its term-2 noop (index 4) is not committed yet
    with pytest.raises(ProposalDroppedError):
        node.propose_conf_change(ConfChange("add_learner", "4"))
    _elect(env, "process-ready 1", "stabilize")
    assert node.log.committed == 4
    assert node.propose_conf_change(ConfChange("add_learner", "4")) == 5


def test_a_snapshot_that_matches_the_log_acknowledges_only_what_is_known_to_match():
    """A follower whose log already holds the snapshot's last entry keeps its log, but entries after
    that point may conflict with the leader's (they are uncommitted leftovers of an older term), so it
    may only acknowledge up to its commit index (etcd does the same). Acknowledging its last index
    told the leader that a conflicting entry matched: the leader could count it for a commit, and,
    once in replicate state, it ignored the follower's rejections as stale, so the follower was never
    repaired."""
    conf = tuple(Entry(1, i, CONF_CHANGE, ConfChange("add_voter", v)) for i, v in ((1, "1"), (2, "2"), (3, "3")))
    leftovers = (Entry(2, 4, NOOP), Entry(2, 5, NORMAL, "old"))  # 5 was never committed
    follower = RaftNode("2", hard_state=HardState(2, "1", 3), entries=conf + leftovers)
    snap = RaftSnapshot(SnapshotMeta(4, 2, _CONF), b"")  # the leader of term 3 holds (4, term 2) then (5, term 3)
    follower.step(Message("snap", "1", "2", 3, snapshot=snap))
    (resp,) = follower.ready().messages
    assert resp.type == "app_resp" and not resp.reject
    assert resp.index == 4 and follower.log.committed == 4


def test_demoting_the_last_voter_is_refused_like_removing_it():
    """A group whose only voter becomes a learner has no voter left: it could never commit or elect
    again, exactly as if the last voter were removed."""
    env = InteractionEnv()
    _elect(env, "add-nodes 2 learners=2", "tick-election 1", "stabilize")
    leader = env.members["1"].node
    assert leader.role == LEADER
    with pytest.raises(ConfigError, match="last voter"):
        leader.propose_conf_change(ConfChange("add_learner", "1"))
    with pytest.raises(ConfigError, match="last voter"):
        leader.propose_conf_change(ConfChange("remove", "1"))
    assert leader.propose_conf_change(ConfChange("add_voter", "2")) == 4  # promoting the learner is fine


def test_read_contexts_must_increase_even_after_earlier_reads_completed():
    """A heartbeat acknowledgement confirms every read round with a context up to its own, which is only
    safe if contexts increase: a reused or smaller context could be confirmed by a delayed ack of a
    heartbeat sent before the read started. Before the fix the check only looked at rounds still in
    flight, so a completed read's context could be reused."""
    env = InteractionEnv()
    _elect(env, "add-nodes 3", "tick-election 1", "stabilize", "read-index 1 5", "stabilize")
    leader = env.members["1"].node
    assert not leader.read_rounds  # the read with context 5 is complete
    with pytest.raises(InvalidArgumentError, match="increase"):
        leader.read_index(5)
    with pytest.raises(InvalidArgumentError, match="increase"):
        leader.read_index(3)
    leader.read_index(6)
    assert [r.context for r in leader.read_rounds] == [6]


def test_a_follower_whose_appends_were_all_lost_catches_up_after_a_heartbeat():
    """A leader in the replicate state with its whole window of appends lost (the follower was down)
    gets no answer that frees the window; a heartbeat answer must free a slot (as etcd does), or the
    follower never catches up after it comes back."""
    import random

    ids = ("1", "2", "3")
    nodes = {i: RaftNode(i, voters=ids, config=RaftConfig(max_inflight_msgs=2, max_entries_per_msg=1),
                         rng=random.Random(int(i))) for i in ids}
    down = set()

    def pump(rounds: int, tick: bool) -> None:
        for _ in range(rounds):
            for n in nodes.values():
                if tick:
                    n.tick()
            for n in nodes.values():
                while n.has_ready():
                    rd = n.ready()
                    n.advance(rd)
                    for m in rd.messages:
                        if m.dst not in down and m.src not in down:
                            nodes[m.dst].step(m)

    pump(40, tick=True)
    leader = next(n for n in nodes.values() if n.role == LEADER)
    follower = next(i for i in ids if i != leader.id)
    pump(5, tick=True)  # the follower is in the replicate state now
    down.add(follower)
    for i in range(10):  # five windows' worth of appends, every one lost
        leader.propose_many([b"x%d" % i])
        pump(1, tick=False)
    assert leader.progress[follower].is_paused()
    down.clear()
    pump(30, tick=True)
    assert nodes[follower].log.last_index() == leader.log.last_index()


def test_a_follower_that_catches_up_a_burst_of_ticks_does_not_depose_a_live_leader():
    """A shell delivers every tick its member's event loop woke too late for (RaftMember.clock_ticks),
    so a follower stalled longer than its election timeout (a memtable flush, a long step) wakes up
    to a burst of ticks before it reads the heartbeats that arrived meanwhile. With pre-vote and
    check-quorum the burst costs no term: the others heard the leader within the timeout and ignore
    the pre-vote, and the follower takes the leader's next heartbeat. Without pre-vote, the same
    burst deposes the leader (a new term), which is why the paced ticks rest on it."""
    terms = {}
    for pre_vote in ("true", "false"):
        env = InteractionEnv()
        _elect(env, f"add-nodes 3 election=50 heartbeat=2 pre-vote={pre_vote} check-quorum={pre_vote}",
               "tick-election 1", "stabilize")
        leader = env.members["1"].node
        assert leader.role == LEADER
        term = leader.term
        _elect(env, "tick 1 2", "stabilize")  # heartbeats: every member heard the leader just now
        _elect(env, "tick 2 120", "process-ready 2", "deliver-msgs 1 3", "process-ready 1 3")  # the burst
        _elect(env, "tick 1 2", "stabilize")  # the leader's next heartbeat reaches the follower
        nodes = [env.members[n].node for n in ("1", "2", "3")]
        terms[pre_vote] = ({n.term for n in nodes}, {n.lead for n in nodes}, leader.role, term)
    same_terms, leads, role, term = terms["true"]
    assert same_terms == {term} and leads == {"1"} and role == LEADER, terms
    disrupted_terms, _, _, term = terms["false"]
    assert max(disrupted_terms) > term, terms  # the burst alone would have cost an election
