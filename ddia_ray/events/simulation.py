"""Seeded, single-process runs of the event store's Raft group under faults, with its checkers.

Theory of operation
-------------------
:func:`simulate` runs the replicated store's Raft members (the same
:class:`~ddia_ray.replication.raft_replica.RaftReplica` and the same procedures
as on Ray) on a :class:`~ddia_ray.runtime.SimNetwork` under the Raft simulation's
fault schedule (:func:`ddia_ray.replication.simulation.simulate_raft`: dropped,
delayed, duplicated and reordered messages, partitions, pauses, crashes in the
middle of a write), whose Raft checks (election safety, log matching, state
machine safety, liveness after healing) run too. Its clients here speak the event
store: each one appends (expected version ``any`` or the version it last saw),
follows ``$all`` as a catch-up subscriber that restarts now and then from its
stored checkpoint, reading in a random read mode (``follower`` included), and
consumes a consumer group (through its leader service, :mod:`.group_service`,
whose state goes back to its last checkpoint when the leader changes),
sometimes crashing between a pull and its ack. After healing, every client
drains its subscription and the group, and the run checks:

* **no acknowledged append lost**: each acknowledged append's events are in the
  final ``$all`` at the positions its answer named, with its ids;
* **``$all`` unique and gap-free**: positions ``0..n-1``, each event id once,
  each stream's versions ``0..k-1`` in position order;
* **catch-up exactly once, in order**: each subscriber (one follows all of
  ``$all``, one a stream-prefix filter, one an event-type filter) received
  exactly the matching events of the final ``$all``, across failovers and its
  own restarts;
* **consumer group at least once, nothing parked silently**: every event of
  ``$all`` was handed to a consumer and settled, and nothing is parked (no
  handler fails here) or left in flight.

Any violation raises :class:`EventStoreViolation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import codec
from ..error_record import ErrorRecord
from ..replication.leader_services import ReplServiceCall
from ..replication.procedures import call_op
from ..replication.records import QueryResult, ReplQuery, WriteAck
from ..replication.service_simulation import (READ_MODES, ServiceSimClient, ServiceSimReport, ServiceViolation,
                                               run_service)
from . import procedures as _procedures  # registers the procedures the members run

__all__ = ["simulate", "EventStoreViolation", "EventSimReport"]

assert _procedures
_STREAMS = ("order-1", "order-2", "user-1")
_GROUP = "sim-group"


class EventStoreViolation(ServiceViolation):
    """A run broke one of the event store's guarantees (see the module docstring)."""


@dataclass
class EventSimReport(ServiceSimReport):
    """What one run did: the Raft run's report, and the event store's figures."""

    appends_acked: int = 0
    events: int = 0
    restarts: int = 0
    group_redelivered: int = 0


class _Shared:
    """What the run's clients share: the group's creation, and the appends acknowledged."""

    def __init__(self) -> None:
        self.acked: list[tuple[tuple, tuple]] = []  # (events appended, answer)
        self.group_created = False
        self.clients: list = []


def _client_class(shared: _Shared):
    class EventClient(ServiceSimClient):
        """A simulated event-store client (see the module docstring)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.versions: dict[str, int] = {}
            self.checkpoint = 0          # the catch-up subscriber's stored checkpoint
            self.delivered: list = []    # (position, id) in delivery order
            self.restarts = 0
            self.batch: tuple = ()       # positions pulled from the group, not acked yet
            self.group_seen: set = set()
            self.redelivered = 0
            # The subscribers differ: all of $all, a stream-prefix filter, an event-type filter.
            self.filter = [(None, ""), ("stream", "order-"), ("type", "User")][len(shared.clients) % 3]
            shared.clients.append(self)

        def _next_op(self, now_s: float) -> tuple:
            r = self.rng.random()
            op: tuple
            if not shared.group_created:
                op = ("create", _group_call("create", (_GROUP, (None, "", 50, 1000, 200), 0)))
            elif self.batch:
                op = ("ack", _group_call("ack", (_GROUP, self.batch)))
            elif r < 0.35 or (self.draining and r < 0.6):
                if self.rng.random() < 0.05 and not self.draining:
                    # A subscriber restart: a new reader that knows only the stored checkpoint (the
                    # handled events and the checkpoint are what a real subscriber keeps durably).
                    self.restarts += 1
                mode = self.rng.choice(READ_MODES)
                query = (self.checkpoint, False, self.rng.randint(1, 5), *self.filter)
                op = ("follow", ReplQuery("events.read_all", codec.encode(query), mode))
            elif (r < 0.55 and not self.draining) or self.name == "final":
                stream = self.rng.choice(_STREAMS)
                n = self.rng.randint(1, 3)
                kind = "UserChanged" if stream.startswith("user") else "OrderPlaced"
                events = tuple((f"{self.name}-{self.seq}-{i}", kind, b"", b"") for i in range(n))
                exp = "any" if self.rng.random() < 0.7 else self.versions.get(stream, "no_stream")
                if exp == -1:
                    exp = "no_stream"
                op = ("append", call_op("events.append", (stream, exp, events, int(now_s * 1000))), events)
            else:
                op = ("pull", _group_call("pull", (_GROUP, self.name, 4, int(now_s * 1000))))
            return op

        def _answered(self, op: tuple, res: Any) -> tuple[bool, Any, str]:
            if isinstance(res, QueryResult) and op[0] == "follow":
                if type(res.result) is ErrorRecord:
                    return False, None, ""
                rows, nxt, _ = res.result
                for row in rows:
                    self.delivered.append((row[2], row[3]))
                    self.checkpoint = row[2] + 1  # stored after each event: exactly once across restarts
                self.checkpoint = max(self.checkpoint, nxt)
                return True, None, ""
            if op[0] in ("create", "ack", "pull"):
                return self._group_answered(op, res)
            if not isinstance(res, WriteAck):
                return False, None, ""
            result = res.results[0]
            if op[0] == "append":
                if type(result) is not ErrorRecord:
                    shared.acked.append((op[2], result))
                    self.versions[result[0]] = result[2]
                elif result.kind == "WrongExpectedVersionError" and result.attrs:
                    self.versions[result.attrs["stream"]] = result.attrs["actual"]
            return True, None, ""

        def _group_answered(self, op: tuple, res: Any) -> tuple[bool, Any, str]:
            """A consumer group call's answer (a leader service's: a QueryResult)."""
            if not isinstance(res, QueryResult) or type(res.result) is ErrorRecord:
                return False, None, ""  # refused (not the leader, or gone): sent again elsewhere
            if op[0] == "create":
                shared.group_created = True
            elif op[0] == "pull":
                _, handed, _ = res.result
                positions = tuple(p for first, last, _ in handed for p in range(first, last + 1))
                self.redelivered += sum(last - first + 1 for first, last, a in handed if a > 1)
                self.group_seen.update(positions)
                # A crash between the pull and the ack: the batch times out and goes to someone else.
                self.batch = () if (self.rng.random() < 0.1 and not self.draining) else positions
            else:
                self.batch = ()
            return True, None, ""

    return EventClient


def _group_call(method: str, args: tuple) -> ReplServiceCall:
    """A call of the consumer groups' leader service (:mod:`.group_service`)."""
    from .group_service import SERVICE

    return ReplServiceCall(SERVICE, method, codec.encode(args))


def simulate(seed: int, *, duration_s: float = 2.0, **options: Any) -> EventSimReport:
    """One seeded run (see the module docstring); raises :class:`EventStoreViolation` on a violation."""
    shared = _Shared()
    raft, clients, state = run_service(seed, _client_class(shared), shared.clients, caught_up=_drained,
                                       violation=EventStoreViolation, lagging="the subscribers or the group did "
                                       "not drain", duration_s=duration_s, **options)
    report = EventSimReport(seed, raft)
    _check(state, clients, shared, report)
    return report


def _drained(state, clients: list) -> bool:
    """Whether every client caught up its subscription and the group is empty (the drain's end)."""
    info = _group_state(state)
    end = _end(state)
    return info is not None and info["checkpoint"] >= end and all(c.checkpoint >= end and not c.batch
                                                                  for c in clients)


def _end(state) -> int:
    from .keys import next_position

    return next_position(state.get)


def _group_state(state) -> dict | None:
    from .consumer_groups import Group, _group_key

    row = state.get(_group_key(_GROUP))
    if row is None:
        return None
    g = Group(row)
    return {"checkpoint": g.checkpoint, "in_flight": len(g.inflight), "retry": len(g.retry), **g.counters,
            "parked": g.parked}


def _check(state, clients: list, shared: _Shared, report: EventSimReport) -> None:
    from .consumer_groups import group_parked
    from .queries import read_all

    rows, position = [], 0
    while True:
        page, position, at_end = read_all(state, (position, False, 1000, None, ""))
        rows.extend(page)
        if at_end:
            break
    positions = [r[2] for r in rows]
    if positions != list(range(len(rows))):
        raise EventStoreViolation(f"seed {report.seed}: $all is not gap-free: {positions[:50]}")
    by_id = {r[3]: r for r in rows}
    if len(by_id) != len(rows):
        raise EventStoreViolation(f"seed {report.seed}: an event id appears twice in $all")
    for events, (stream, first_version, _, first_position, _) in shared.acked:
        for i, e in enumerate(events):
            got = by_id.get(e[0])
            if got is None or (got[0], got[1], got[2]) != (stream, first_version + i, first_position + i):
                raise EventStoreViolation(f"seed {report.seed}: acknowledged event {e[0]} lost or moved: {got}")
    versions: dict[str, int] = {}
    for r in rows:
        if r[1] != versions.get(r[0], -1) + 1:
            raise EventStoreViolation(f"seed {report.seed}: stream {r[0]} skips from {versions.get(r[0])} to {r[1]}")
        versions[r[0]] = r[1]
    for c in clients:
        kind, prefix = c.filter
        expected = [(r[2], r[3]) for r in rows
                    if kind is None or (r[0] if kind == "stream" else r[4]).startswith(prefix)]
        if c.delivered != expected[:len(c.delivered)] or len(c.delivered) != len(expected):
            raise EventStoreViolation(f"seed {report.seed}: subscriber {c.name} got {len(c.delivered)} events, "
                                      f"not exactly $all once in order ({len(expected)})")
        report.delivered[c.name] = len(c.delivered)
    g = _group_state(state)
    seen = set().union(*(c.group_seen for c in clients))
    if g is None or seen != set(range(len(rows))) or g["in_flight"] or g["parked"] or \
            group_parked(state, (_GROUP, 0, 10)):
        raise EventStoreViolation(f"seed {report.seed}: the consumer group did not deliver every event at least "
                                  f"once, or parked some: {g}, {len(seen)} of {len(rows)} seen")
    report.appends_acked = len(shared.acked)
    report.events = len(rows)
    report.restarts = sum(c.restarts for c in clients)
    report.group_redelivered = sum(c.redelivered for c in clients)
