"""Leader services: the host's checkpoint rules and refusals, and a Raft group's leader serving,
checkpointing and dropping a service across a failover (in the seeded simulator)."""

from __future__ import annotations

import pytest

from ddia_ray import codec
from ddia_ray.error_record import ErrorRecord
from ddia_ray.errors import InvalidArgumentError
from ddia_ray.replication.leader_services import LeaderServices, ReplServiceCall, leader_service
from ddia_ray.replication.records import PUT


@leader_service("tests.counter")
class Counter:
    """A leader service for the tests: counts calls in memory; ``add`` is saved with the next
    checkpoint, ``save`` is durable, ``boom`` fails halfway."""

    def __init__(self) -> None:
        self.n: int | None = None
        self.unsaved = 0

    def call(self, state, method, args):
        if self.n is None:
            row = state.get(b"counter")
            self.n = int(row) if row is not None else 0
        if method == "boom":
            raise ValueError("a bug in the service")
        if method == "refuse":
            raise InvalidArgumentError("refused")
        self.n += args
        self.unsaved += args
        return self.n, method == "save"

    def checkpoint(self):
        self.unsaved = 0
        return ((PUT, b"counter", b"%d" % self.n),)


class _State:
    def __init__(self):
        self.rows: dict = {}

    def get(self, key):
        return self.rows.get(key)


def _call(method, args=1):
    return ReplServiceCall("tests.counter", method, codec.encode(args))


def test_a_checkpoint_is_due_after_its_ticks_its_changes_or_a_durable_call():
    host = LeaderServices(every_ticks=10, every_changes=5)
    state = _State()
    assert not host.due(100)  # no service yet
    assert host.call(_call("add"), state) == (1, False)
    assert not host.due(5) and host.due(10)  # one unsaved change: due after every_ticks
    assert host.checkpoint(10) == ((PUT, b"counter", b"1"),)
    assert host.call(_call("add", 4), state) == (5, False)
    assert not host.due(19) and host.due(20)  # four changes, fewer than every_changes: by ticks only
    host.call(_call("add", 1), state)
    assert host.due(11)  # five unsaved changes: due at once
    host.checkpoint(11)
    assert host.call(_call("save", 0), state) == (6, True) and host.due(11)  # durable: now, even unchanged
    assert host.figures["service_calls"] == 4 and host.figures["service_checkpoints"] == 2


def test_reset_drops_the_services_so_a_new_term_loads_the_last_checkpoint():
    host = LeaderServices()
    state = _State()
    host.reset(1)
    host.call(_call("add", 3), state)
    for _, key, value in host.checkpoint(0):
        state.rows[key] = value
    host.call(_call("add", 4), state)  # unsaved when the term ends: lost, as the design says
    host.reset(2)
    assert host.term == 2 and not host.due(10 ** 6)
    assert host.call(_call("add", 1), state) == (4, False)  # 3 (the checkpoint) + 1
    assert host.figures["service_resets"] == 1


def test_refusals_and_bugs_answer_the_caller_and_unknown_names_are_refused():
    host = LeaderServices()
    state = _State()
    result, durable = host.call(_call("refuse"), state)
    assert type(result) is ErrorRecord and result.kind == "InvalidArgumentError" and not durable
    result, _ = host.call(_call("boom"), state)
    assert type(result) is ErrorRecord and "a bug in the service" in result.message
    result, _ = host.call(ReplServiceCall("tests.nothing", "x", codec.encode(1)), state)
    assert type(result) is ErrorRecord and result.kind == "UnknownProcedureError"
    with pytest.raises(InvalidArgumentError):
        ReplServiceCall("", "x")
    with pytest.raises(InvalidArgumentError):
        ReplServiceCall("tests.counter", "x", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        LeaderServices(every_ticks=0)
    with pytest.raises(InvalidArgumentError):
        leader_service("tests.counter")(type("Other", (), {}))  # the name is taken by another class


def _three_members(**options) -> dict:
    """Three Raft replicas in one process, r1 leading (it times out first and wins)."""
    from ddia_ray.replication.raft_replica import RaftReplica
    from test_replication_raft import _pump

    voters = ("r1", "r2", "r3")
    cores = {n: RaftReplica(n, voters=voters, group="g", seed=i, **options) for i, n in enumerate(voters)}
    for _ in range(200):
        cores["r1"].tick()
        _pump(cores)
        if cores["r1"].node.role == "leader":
            return cores
    raise AssertionError("r1 was not elected")


def _replies(replies: list, rid: int) -> list:
    return [r for r in replies if r.request_id == rid]


def test_a_raft_leader_serves_checkpoints_and_a_new_leader_resumes_from_the_last_checkpoint():
    from ddia_ray.errors import NotLeaderError
    from ddia_ray.replication.records import QueryResult
    from test_replication_raft import _pump

    cores = _three_members()
    r1 = cores["r1"]
    replies: list = []
    r1.request(1, _call("add", 3))  # not durable: answered at once, nothing written
    _pump(cores, replies=replies)
    assert isinstance(_replies(replies, 1)[0].payload, QueryResult) and _replies(replies, 1)[0].payload.result == 3
    assert all(c.state.get(b"counter") is None for c in cores.values())
    r1.request(2, _call("save", 0))  # durable: answered once the checkpoint holding it commits
    _pump(cores, cut=frozenset({"r1"}), replies=replies)  # its followers do not get the checkpoint yet
    assert _replies(replies, 2) == [] and r1.node.role == "leader"
    for _ in range(10):  # the leader sends the entry again; it commits, and the call is answered
        r1.tick()
        _pump(cores, replies=replies)
        if _replies(replies, 2):
            break
    assert _replies(replies, 2)[0].payload.result == 3
    assert [c.state.get(b"counter") for c in cores.values()] == [b"3"] * 3  # replicated like any write
    cores["r2"].request(3, _call("add", 1))  # a follower refuses: the client asks the leader
    _pump(cores, replies=replies)
    assert isinstance(_replies(replies, 3)[0].error.exception(), NotLeaderError)
    r1.request(4, _call("add", 4))  # 7 in r1's memory, never saved
    r1.request(5, _call("save", 0))  # waits for a checkpoint that cannot commit: r1 is cut off
    _pump(cores, cut=frozenset({"r1"}), replies=replies)
    assert _replies(replies, 4)[0].payload.result == 7 and _replies(replies, 5) == []
    for _ in range(400):  # the others elect one of them
        for n in ("r2", "r3"):
            cores[n].tick()
        _pump(cores, cut=frozenset({"r1"}), replies=replies)
        if any(cores[n].node.role == "leader" for n in ("r2", "r3")):
            break
    new = next(n for n in ("r2", "r3") if cores[n].node.role == "leader")
    for _ in range(5):  # its heartbeats reach r1 now: r1 steps down and refuses the call it held
        cores[new].tick()
        _pump(cores, replies=replies)
    assert r1.node.role == "follower" and not r1.services
    assert isinstance(_replies(replies, 5)[0].error.exception(), NotLeaderError)
    cores[new].request(6, _call("add", 1))  # the new leader resumes from the checkpoint: 3 + 1
    _pump(cores, replies=replies)
    assert _replies(replies, 6)[0].payload.result == 4
    assert cores[new].status()["service_calls"] == 1


def test_a_leadership_transfer_checkpoints_first_and_a_transferring_leader_proposes_nothing():
    from ddia_ray.replication.records import ReplAdmin
    from test_replication_raft import _pump

    cores = _three_members()
    r1, replies = cores["r1"], []
    r1.request(1, _call("add", 5))  # in r1's memory only: no checkpoint is due yet
    _pump(cores, replies=replies)
    assert cores["r2"].state.get(b"counter") is None
    r1.request(2, ReplAdmin("transfer", "r2"))
    r1.request(3, _call("save", 1))  # durable, during the transfer: no proposal may be made now
    for _ in range(10):
        _pump(cores, replies=replies)
        if cores["r2"].node.role == "leader":
            break
    assert cores["r2"].node.role == "leader" and r1.node.role == "follower"
    assert _replies(replies, 3)[0].error is not None  # refused as the term ended; the client asks r2
    cores["r2"].request(4, _call("add", 0))
    _pump(cores, replies=replies)
    assert _replies(replies, 4)[0].payload.result == 5  # r2 resumed from the checkpoint taken before the transfer


def test_service_checkpoint_changes_makes_a_checkpoint_due_after_that_many_unsaved_changes():
    from test_replication_raft import _pump

    # A checkpoint interval far beyond the test: only the count of changes can make one due.
    cores = _three_members(service_checkpoint_s=1000.0, service_checkpoint_changes=3)
    r1 = cores["r1"]
    replies: list = []
    for rid in (1, 2):
        r1.request(rid, _call("add", 1))
        _pump(cores, replies=replies)
        r1.tick()
        _pump(cores, replies=replies)
    assert len(replies) == 2 and all(c.state.get(b"counter") is None for c in cores.values())
    r1.request(3, _call("add", 1))  # the third unsaved change: a checkpoint is proposed at once
    _pump(cores, replies=replies)
    r1.tick()
    _pump(cores, replies=replies)
    assert all(c.state.get(b"counter") == b"3" for c in cores.values())


@pytest.mark.parametrize("options", [{"service_checkpoint_changes": 0}, {"service_checkpoint_changes": 2.5},
                                     {"service_checkpoint_s": 0}, {"service_checkpoint_s": "1"}])
def test_bad_service_checkpoint_options_are_refused_with_config_error(options):
    from ddia_ray.errors import ConfigError
    from ddia_ray.replication.raft_replica import RaftReplica

    with pytest.raises(ConfigError, match="service_checkpoint"):
        RaftReplica("r1", voters=("r1",), group="g", **options)
