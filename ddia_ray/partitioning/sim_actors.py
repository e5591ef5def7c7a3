"""The simulated parts of :mod:`.simulation`: group requests, partition-aware clients, the
operator that runs changes with the mover, and the fault schedule.

Theory of operation
-------------------
:class:`GroupCalls` sends a request to a replica group as the replicated client does: to the
leader it believes in, following NotLeader hints, to another replica after a silence or a
leader-follower leader's WriteOutcomeUnknown, the same request (same session sequence number)
until an answer or its deadline. :class:`RoutedClient` routes as :mod:`.client` does (cached
map, stored keys, the map's version as fence, a new request after a refusal, the map read again
first) and records every write it tries. :class:`Operator` runs one :class:`~.mover.Mover` after
another and sends its requests; the coordinator's answers come one poll later, and under faults
a compare-and-set now and then has an unknown outcome. :class:`FaultSchedule` makes faults that
each end within 1.5 s (one at a time, if asked).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
from typing import Any, Callable

from ..errors import (CallTimeoutError, ConfigError, ConsensusError, MapVersionError, ReplicaBehindError,
                      WriteOutcomeUnknownError, WrongPartitionError)
from ..replication.records import PUT, ReplRead, ReplWrite
from ..runtime import SimNetwork
from .keyspace import stored_key
from .mover import ABANDONED, DONE, FAILED, MIDDLE, READ_MAP, CasMap, GroupRequest, Mover, ReadMap
from .partition_map import Locator

__all__ = ["STORE", "PartitionViolation", "PartitionSimReport", "Write", "Call", "GroupCalls", "RoutedClient",
           "Operator", "FaultSchedule", "base_links"]

STORE = "sim"
_ATTEMPT_S = 0.25  # a request unanswered this long goes to another replica
# Ask another replica: refused before anything applied, or (leader-follower) the leader stopped leading with
# the write unacknowledged; the same request again applies at most once (a write's session remembers it).
_RETRY = (ConsensusError, ReplicaBehindError, WriteOutcomeUnknownError)
_REROUTE = (MapVersionError, WrongPartitionError)  # the map changed (StaleMapError is a MapVersionError)


class PartitionViolation(AssertionError):
    """A partitioning invariant failed in a simulated run."""


@dataclasses.dataclass
class PartitionSimReport:
    """What one simulated run did: changes by outcome and kind, client operations, faults."""

    seed: int
    scheme: str
    protocol: str = "raft"
    mode: str = "raft"
    changes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    writes_acked: int = 0
    writes_unknown: int = 0
    writes_refused: int = 0
    reads_ok: int = 0
    reroutes: int = 0
    cas_unknown: int = 0
    map_version: int = 0
    partitions: int = 0
    faults: list = dataclasses.field(default_factory=list)
    epochs: int = 0  # leader-follower: epochs led, over all groups
    lost_reported: int = 0  # leader-follower: writes the replicas reported lost (async)
    stale_refusals: int = 0  # leader-follower: refusals by a leader that had been replaced


@dataclasses.dataclass
class Write:
    """A write a client tried: its unique value, when it began and was acknowledged, how it ended."""

    value: bytes
    invoked_s: float
    acked_s: float | None = None
    status: str = "pending"  # then "ok", "unknown" or "refused"


class Call:
    """One request to a replica group, sent as the replicated client sends it (see :class:`GroupCalls`)."""

    def __init__(self, src: str, group: str, payload: Any, deadline_s: float):
        self.src, self.group, self.payload, self.deadline_s = src, group, payload, deadline_s
        self.sim_call: Any = None
        self.target = ""
        self.sent_s = self.wait_until_s = 0.0
        self.done = self.ok = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCalls:
    """Requests to groups' leaders: NotLeader hints followed, another replica after a silence, the
    same request again until an answer or the deadline (then: outcome unknown). ``deposed(group,
    replica)`` says whether an answer came from a replaced leader (leader-follower; see :mod:`.sim_groups`)."""

    def __init__(self, sim: SimNetwork, groups: dict[str, list[str]], rng: random.Random,
                 deposed: Callable[[str, str], bool] = lambda group, replica: False):
        self.sim, self.groups, self.rng, self.deposed = sim, groups, rng, deposed
        self.leaders: dict[str, str] = {}

    def call(self, src: str, group: str, payload: Any, timeout_s: float) -> Call:
        """Send ``payload`` from ``src`` to ``group``; :meth:`poll` the call until it is done."""
        c = Call(src, group, payload, self.sim.now_s + timeout_s)
        self._send(c, self.leaders.get(group) or self.rng.choice(self.groups[group]))
        return c

    def _send(self, c: Call, target: str) -> None:
        c.target, c.sent_s = target, self.sim.now_s
        c.sim_call = self.sim.request(target, c.payload, src=c.src)

    def _other(self, c: Call) -> str:
        self.leaders.pop(c.group, None)
        return self.rng.choice([r for r in self.groups[c.group] if r != c.target])

    def poll(self, c: Call) -> bool:
        """Move ``c`` on; True once it is done."""
        now, sc = self.sim.now_s, c.sim_call
        if c.done or now < c.wait_until_s:
            return c.done
        if sc is None:  # its wait is over: ask another replica
            self._send(c, self._other(c))
            return False
        if sc.done and sc.ok:
            c.done, c.ok, c.result = True, True, sc.result
            self.leaders[c.group] = c.target
            return True
        err = sc.error.exception() if sc.done else None
        if err is not None and not isinstance(err, _RETRY):
            c.done, c.error = True, err  # the group's answer: the caller's to handle
            return True
        if now > c.deadline_s:
            c.done, c.error = True, CallTimeoutError(f"no answer from group {c.group} in time; outcome unknown")
            return True
        if err is not None:
            hint = getattr(err, "leader_hint", None)
            if hint in self.groups[c.group] and hint != c.target:
                self._send(c, hint)
            else:
                c.wait_until_s, c.sim_call = now + 0.02, None  # an election is under way: ask again in a moment
        elif now - c.sent_s > _ATTEMPT_S:
            self._send(c, self._other(c))
        return False


class RoutedClient:
    """A partition-aware client (:mod:`.client`): one operation at a time."""

    def __init__(self, name: str, net: GroupCalls, coord: Any, keys: list, rng: random.Random,
                 history: dict, report: PartitionSimReport):
        self.name, self.net, self.coord, self.keys, self.rng = name, net, coord, keys, rng
        self.history, self.report = history, report
        self.map, self.loc = coord.map, Locator(coord.map)
        self.seq = self.n = 0
        self.op: dict | None = None
        self.next_s = 0.0
        self.last: tuple = ()  # (status, result) of the last operation

    def begin(self, kind: str, key: bytes, value: bytes | None = None) -> None:
        """Start a ``"read"`` or a ``"write"`` of ``value`` (unique) to ``key``."""
        now = self.net.sim.now_s
        w = Write(value, now) if value is not None else None
        if w is not None:
            self.history.setdefault(key, {})[value] = w
        self.op = {"kind": kind, "key": key, "write": w, "call": None, "deadline": now + 1.0, "wait": 0.0}

    def poll(self, now: float, stop: bool) -> None:
        """Move the operation on, or start the next one (unless ``stop``)."""
        op = self.op
        if op is None:
            if not stop and now >= self.next_s:
                self.n += 1
                key = self.rng.choice(self.keys)
                if self.rng.random() < 0.55:
                    self.begin("write", key, f"{self.name}-{self.n}".encode())
                else:
                    self.begin("read", key)
            return
        if op["call"] is None:
            if now >= op["wait"]:
                self._send(op)
            return
        c = op["call"]
        if not self.net.poll(c):
            return
        if c.ok:
            self._end(op, "ok", c.result)
        elif isinstance(c.error, _REROUTE):
            stale = self.net.deposed(c.group, c.target)
            if stale:  # a replaced leader's older record: ask the group's leader, whoever it is now
                self.net.leaders.pop(c.group, None)
            if isinstance(c.error, WrongPartitionError) and stale:
                self.report.stale_refusals += 1
            elif isinstance(c.error, WrongPartitionError):
                raise PartitionViolation(f"group {c.group} says key {op['key']!r} is not its own at map version "
                                         f"{c.payload.fence}, the version it was routed with: {c.error}")
            self.report.reroutes += 1
            if self.coord.map.version > self.map.version:
                self.map, self.loc = self.coord.map, Locator(self.coord.map)
            else:
                op["wait"] = now + 0.02  # the change is not published yet: give it a moment
            op["call"] = None
            if now > op["deadline"]:
                self._end(op, "refused", c.error)
        elif isinstance(c.error, CallTimeoutError):
            self._end(op, "unknown", c.error)
        else:
            raise PartitionViolation(f"{self.name}: unexpected refusal of {c.payload}: {c.error!r}")

    def _send(self, op: dict) -> None:
        key, fence = op["key"], self.map.version
        group = self.loc.locate(key).group
        stored = stored_key(self.map.scheme, key)
        if op["kind"] == "write":
            self.seq += 1  # a new request: the refused one's answer stays with its sequence number
            req: Any = ReplWrite(((PUT, stored, op["write"].value),), client=self.name, seq=self.seq,
                                 acked_below=self.seq, fence=fence)
        else:
            req = ReplRead((stored,), "linearizable", fence=fence)
        op["call"] = self.net.call(self.name, group, req, max(0.05, op["deadline"] - self.net.sim.now_s))

    def _end(self, op: dict, status: str, result: Any) -> None:
        now, w = self.net.sim.now_s, op["write"]
        if w is not None:
            w.status = status
            w.acked_s = now if status == "ok" else None
            counter = {"ok": "writes_acked", "unknown": "writes_unknown", "refused": "writes_refused"}[status]
            setattr(self.report, counter, getattr(self.report, counter) + 1)
        elif status == "ok":
            value = result.values[0]
            if value is not None and value not in self.history.get(op["key"], {}):
                raise PartitionViolation(f"a read of {op['key']!r} returned {value!r}, never written to it")
            self.report.reads_ok += 1
        self.last = (status, result)
        self.op = None
        self.next_s = now + self.rng.uniform(0, 0.01)


class Operator:
    """Runs one change after another with a :class:`~.mover.Mover`, sending its requests;
    ``ownership_acks`` as the mover's option (the store's choice for its groups' protocol and mode)."""

    def __init__(self, net: GroupCalls, coord: Any, rng: random.Random, keys: list, report: PartitionSimReport,
                 faults: bool, ownership_acks: int = -1):
        self.net, self.coord, self.rng, self.keys, self.report, self.faults = net, coord, rng, keys, report, faults
        self.ownership_acks = ownership_acks
        self.mover: Mover | None = None
        self.calls: dict[int, Call] = {}
        self.answers: list[tuple[int, bool, Any]] = []  # the coordinator's, given at the next poll
        self.seqs: dict[int, int] = {}  # token -> the write session's sequence number
        self.next_s, self.n = 0.2, 0

    def poll(self, now: float, stop: bool) -> None:
        """Hand the mover its answers and a tick, send what it asks; start the next change (unless ``stop``)."""
        m = self.mover
        if m is None:
            if not stop and now >= self.next_s:
                self.mover = self._pick()
            return
        answers, self.answers = self.answers, []
        for token, ok, result in answers:
            if ok:
                m.on_reply(token, result)
            else:
                m.on_failure(token, result)
        for token, c in list(self.calls.items()):
            if self.net.poll(c):
                del self.calls[token]
                if c.ok:
                    m.on_reply(token, c.result)
                else:
                    assert c.error is not None
                    m.on_failure(token, c.error)
        m.tick()
        for out in m.ready():
            self._send(out)
        if m.outcome is not None:
            o = m.outcome
            if o.state == FAILED and o.phase not in (READ_MAP, MIDDLE):
                raise PartitionViolation(f"a {o.kind} could neither finish nor be abandoned: {o.error}")
            self.report.changes[{DONE: o.kind, ABANDONED: "abandoned", FAILED: "refused"}[o.state]] += 1
            self.report.faults.append((round(now, 3), f"{o.kind} {m.pid} {o.state} in phase {o.phase}"))
            self.mover, self.calls, self.answers = None, {}, []
            self.next_s = now + self.rng.uniform(0.05, 0.4)

    def _send(self, out: Any) -> None:
        rng = self.rng
        if isinstance(out, ReadMap):
            ok = not (self.faults and rng.random() < 0.05)
            self.answers.append((out.token, ok, self.coord.map if ok else CallTimeoutError("map read failed")))
        elif isinstance(out, CasMap):
            if self.faults and rng.random() < 0.15:  # lost on the way there or back: outcome unknown
                self.report.cas_unknown += 1
                if rng.random() < 0.5:
                    self.coord.cas(out.old, out.new)
                self.answers.append((out.token, False, CallTimeoutError("compare-and-set outcome unknown")))
            else:
                self.answers.append((out.token, True, self.coord.cas(out.old, out.new)))
        else:
            assert isinstance(out, GroupRequest) and self.mover is not None
            req = out.request
            if isinstance(req, ReplWrite):  # a session, so that a resend applies once
                seq = self.seqs.setdefault(out.token, len(self.seqs) + 1)
                waiting = [self.seqs[t] for t in self.calls if t in self.seqs]
                req = dataclasses.replace(req, client=f"mover{self.n}", seq=seq, acked_below=min([seq, *waiting]))
            self.calls[out.token] = self.net.call("operator", out.group, req, 0.4)

    def _pick(self) -> Mover | None:
        pmap, rng = self.coord.map, self.rng
        parts = pmap.partitions
        self.n += 1
        self.seqs = {}
        options = {"page_rows": rng.choice([2, 3, 5, 50]), "max_in_flight": rng.choice([1, 3]), "retries": 1,
                   "settle_retries": 200, "retry_ticks": 20, "ownership_acks": self.ownership_acks}
        r = rng.random()
        pairs = [(a.id, b.id) for a, b in zip(parts, parts[1:]) if a.group == b.group]
        if r < 0.3 and len(parts) < 10:
            p = rng.choice(parts)
            inside = [stored_key(pmap.scheme, k) for k in self.keys]
            inside = [k for k in inside if p.start < k and (p.end is None or k < p.end)]
            at = rng.choice(inside)[:8 if pmap.scheme == "hash" else None] if inside and rng.random() < 0.5 else None
            if at is not None and at <= p.start:
                at = None
            return Mover.split(STORE, p.id, at, **options)
        if r < 0.5 and pairs:
            return Mover.merge(STORE, *rng.choice(pairs), **options)
        p = rng.choice(parts)
        return Mover.move(STORE, p.id, rng.choice([g for g in self.net.groups if g != p.group]), **options)


class FaultSchedule:
    """The fault schedule: each fault ends within 1.5 s, so every group gets its majority back;
    ``is_leader(replica)`` names the leaders, the favourite victims. ``single``: one fault at a time
    (every fault ends before the next begins, and an outage takes one replica, not two)."""

    def __init__(self, sim: SimNetwork, rng: random.Random, groups: dict, report: PartitionSimReport,
                 is_leader: Callable[[str], bool], single: bool = False):
        self.sim, self.rng, self.groups, self.report, self.is_leader = sim, rng, groups, report, is_leader
        self.single = single
        self.ends: list[tuple[Any, ...]] = []  # (when, action, node)
        self.next_s = rng.uniform(0.2, 0.6)

    def poll(self, now: float) -> None:
        """End the faults whose time is up; start a new one when it is time."""
        for end in [e for e in self.ends if e[0] <= now]:
            self.ends.remove(end)
            self._end(end[1], end[2])
        if now < self.next_s:
            return
        self.next_s = now + self.rng.uniform(0.2, 0.6)
        if self.single:
            self.heal_all()
        rng, sim = self.rng, self.sim
        g = rng.choice(sorted(self.groups))
        alive = [n for n in self.groups[g] if sim.nodes[n].alive]
        if not alive:
            return
        lead = [n for n in alive if self.is_leader(n)]
        victim = lead[0] if lead and rng.random() < 0.6 else rng.choice(alive)
        r = rng.random()
        if r < 0.25:
            sim.partition([[victim], ["*"]])
            what, end = f"isolate {victim}", ("heal", victim)
        elif r < 0.5:
            sim.crash(victim, during_write=rng.random() < 0.5)
            what, end = f"crash {victim}", ("restart", victim)
        elif r < 0.65:
            sim.pause(victim)
            what, end = f"pause {victim}", ("resume", victim)
        elif r < 0.8:
            sim.link(drop=rng.choice([0.02, 0.1]), delay_s=0.001, jitter_s=0.01, duplicate=rng.choice([0.0, 0.05]),
                     reorder=rng.choice([0.0, 0.1]))
            what, end = "lossy links", ("links", "")
        else:
            down = alive[:1 if self.single else 2]
            for n in down:
                sim.crash(n)
                self.ends.append((now + rng.uniform(0.5, 1.5), "restart", n))
            what, end = f"outage of {g}: crash {down}", ("", "")
        if end[0]:
            self.ends.append((now + rng.uniform(0.1, 0.8), *end))
        self.report.faults.append((round(now, 3), what))

    def _end(self, action: str, node: str) -> None:
        sim = self.sim
        if action == "restart":
            with contextlib.suppress(ConfigError):  # it runs: restarted already (a crash during a write too)
                sim.restart(node)
        elif action == "heal":
            sim.heal()
        elif action == "resume" and sim.config.is_paused(node):
            sim.resume(node)
        elif action == "links":
            sim.reset_links()
            base_links(sim)

    def heal_all(self) -> None:
        """End every fault now."""
        for _, action, node in self.ends:
            self._end(action, node)
        self.ends = []
        self.sim.heal()


def base_links(sim: SimNetwork) -> None:
    """Links with a real network's round trips (a few ms), so that every step of a change takes time."""
    sim.link(delay_s=0.001, jitter_s=0.002)
