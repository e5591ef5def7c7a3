"""Seeded, single-process runs of a leader-follower group and its coordination service, under faults.

Theory of operation
-------------------
:func:`simulate` puts three RaftKV members (the coordination service that holds
the leader lease) and the replicas of one leader-follower group on one
:class:`~ddia_ray.runtime.SimNetwork`. Simulated clients write unique values,
and read in every mode (``leader``, ``follower``, ``session``, bounded
staleness), while a seeded fault schedule drops, delays, duplicates and
reorders messages, partitions nodes, pauses them and crashes them (some in
the middle of a write). With ``single_failure=True`` at most one replica is
faulty at a time (each fault is healed before the next), the setting in which
the synchronous modes promise to lose nothing. With ``membership=True`` the
run also adds replicas (up to two) and removes followers while it goes on, by
asking the leader as ``add_replica`` and ``remove_replica`` do
(:mod:`.membership`); a removed replica stays running, and must never lead.
Then every fault is healed, every replica restarted, the group settles, and
the run checks (the members being those of the final leader's list):

* **one leader per epoch**: no two replicas lead, or acknowledge writes, in one epoch;
* **prefix**: every member's log is a prefix of the final leader's (same entry
  at every lsn), and its state is the leader's state at its applied lsn;
* **durability**: in ``sync`` and ``semi-sync`` runs with ``single_failure``, every
  acknowledged write is in the final history; so too in ``async`` runs whose writes ask
  every follower's acknowledgement (``acks = replicas - 1``, as the store's ownership
  records do), under any faults, in runs without membership changes;
* **lost writes reported exactly**: an acknowledged write missing from the final
  history is one the replicas reported as lost (async, also with ``acks``), or one
  of an epoch led by a replica whose forced removal the group declared uncounted,
  and every reported one is missing from it;
* **session guarantees**: read-your-writes and monotonic reads per client session
  (:func:`ddia_ray.history.check_sessions`);
* **liveness after healing**: a final write is acknowledged.
* **exactly once**: no client write appears twice in the final history (every
  written value is unique), also with ``session_ttl_s`` set, when clients now and
  then idle for longer than the TTL and the replicas forget their sessions.

Any violation raises :class:`ReplicationViolation`; with
:func:`~ddia_ray.runtime.run_seeds` a failing seed prints its replay command.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, NotLeaderError, ReplicaBehindError, SessionError, StalenessBoundError
from ..history import HistoryRecorder, check_sessions, describe_sessions
from ..kv.member import RaftMember
from ..runtime import SimCall, SimNetwork
from .leader_follower import LEADER, LeaderFollowerReplica
from ..kv.simulation import SimClient, SimReport
from ..kv.simulation import simulate as simulate_kv
from .raft_replica import RaftReplica
from ..consensus.sessions import session_ttl_ms
from .state import MapState
from .records import CAS, PUT, ReadResult, ReplAdmin, ReplRead, ReplWrite, Session, WriteAck

__all__ = ["simulate", "simulate_raft", "LFSimReport", "ReplicationViolation"]


class ReplicationViolation(AssertionError):
    """A replication invariant failed in a simulated run."""


@dataclass
class LFSimReport:
    """What one simulated run did and found."""

    seed: int
    mode: str
    writes_acked: int = 0
    reads_ok: int = 0
    lost_reported: int = 0
    lost_in_history: int = 0
    epochs: int = 0
    faults: list = field(default_factory=list)
    session_reads: int = 0
    sessions_expired: int = 0  # by the final leader's state (with session_ttl_s)
    changes_made: int = 0  # membership changes that were answered "done"
    members: tuple = ()  # the final leader's member list


class _Observer:
    """Collects the replicas' events and checks the per-event invariants as they happen."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.ackers: dict[int, str] = {}
        self.applied: dict[tuple[int, int], tuple] = {}  # (epoch, lsn) -> ops, as first applied anywhere

    def __call__(self, node: str, event: str, data: Any) -> None:
        if event == "lead":
            other = self.leaders.setdefault(data, node)
            if other != node:
                raise ReplicationViolation(f"{other} and {node} both led epoch {data}")
        elif event == "ack":
            epoch, _ = data
            other = self.ackers.setdefault(epoch, node)
            if other != node:
                raise ReplicationViolation(f"{other} and {node} both acknowledged writes in epoch {epoch}")
        elif event == "apply":
            epoch, lsn, ops = data
            seen = self.applied.setdefault((epoch, lsn), ops)
            if seen != ops:
                raise ReplicationViolation(f"{node} applied {ops!r} as entry ({epoch}, {lsn}); another "
                                           f"replica applied {seen!r} there")


#: Refusals that come before anything is applied: the client may ask another replica.
_REFUSED = (NotLeaderError, ReplicaBehindError, StalenessBoundError)


class _Client:
    """One client session: one operation at a time, reads in a random mode, no blind write retries."""

    def __init__(self, name: str, sim: SimNetwork, rec: HistoryRecorder, replicas: list, keys: list,
                 rng: random.Random, store: str, timeout_s: float, idle_s: float = 0.0, acks: int = -1):
        self.name, self.sim, self.rec, self.rng = name, sim, rec, rng
        self.acks = acks  # the follower acknowledgements each write asks for (-1: the mode's)
        self.replicas, self.keys = replicas, keys
        self.session = Session(store)
        self.session_no = 0  # a session told that a write it saw was lost starts anew, as the workload's do
        self.timeout_s = timeout_s
        self.idle_s = idle_s  # > 0: now and then pause this long (longer than the session TTL)
        self.process = 0
        self.target = rng.choice(replicas)
        self.op: tuple | None = None  # (op id, f, request, started_s, tries)
        self.call: SimCall | None = None
        self.next_at_s = 0.0
        self.n = self.seq = 0

    def poll(self, now_s: float, stop: bool) -> None:
        if self.op is None:
            if not stop and now_s >= self.next_at_s:
                self._start()
            return
        op_id, f, req, started, tries = self.op
        call = self.call
        assert call is not None
        if not call.done:
            if now_s - call.sent_at_s > self.timeout_s:
                self._unknown(op_id, f, "timed out", now_s)
            return
        if call.ok:
            self._answered(op_id, f, req, call.result, now_s)
            return
        err = call.error.exception() if call.error is not None else None
        if isinstance(err, SessionError):
            self.session = Session(self.session.store)
            self.session_no += 1
        if isinstance(err, _REFUSED) and tries < 4:
            hint = getattr(err, "leader_hint", None)
            self.target = hint if hint in self.replicas else self.rng.choice(self.replicas)
            self.op = (op_id, f, req, started, tries + 1)
            self.call = self.sim.request(self.target, req, src=self.name)
            return
        if f == "write":
            # Unknown even after refusals: the network may have delivered the request twice (a
            # duplicate, or a redelivery to a restarted leader), and a refusal of one delivery says
            # nothing of another that a leader applied before it crashed (found by seed 312 of a
            # membership run).
            self._unknown(op_id, f, type(err).__name__ if err else "refused", now_s)
            return
        self.rec.fail(op_id, type(err).__name__ if err else "refused")
        self._done(now_s)

    def _start(self) -> None:
        self.n += 1
        key = self.rng.choice(self.keys)
        value: Any
        r = self.rng.random()
        if r < 0.45:
            value = f"{self.name}-{self.n}".encode()
            self.seq += 1
            req: Any = ReplWrite(((PUT, key, value),), acks=self.acks, client=self.name, seq=self.seq,
                                 acked_below=self.seq)
            f = "write"
        else:
            mode = self.rng.choice(["leader", "follower", "session", "session"])
            f, value = "read", mode  # the mode in the history: only session reads promise session guarantees
            epoch, lsn = self.session.position()
            bound = self.rng.choice([-1.0, -1.0, 0.3])
            req = ReplRead((key,), mode, epoch if mode == "session" else 0, lsn if mode == "session" else 0, bound)
            if mode in ("follower", "session"):
                self.target = self.rng.choice(self.replicas)
        op_id = self.rec.invoke(f"{self.name}.{self.session_no}/{self.process}", f, key, value)
        self.op = (op_id, f, req, self.sim.now_s, 0)
        self.call = self.sim.request(self.target, req, src=self.name)

    def _answered(self, op_id: int, f: str, req: Any, result: Any, now_s: float) -> None:
        s = self.session
        if f == "write":
            assert isinstance(result, WriteAck)
            self.rec.ok(op_id, (result.epoch, result.lsn))
            self.session = s.saw(True, result.epoch, result.lsn)
        else:
            assert isinstance(result, ReadResult)
            self.rec.ok(op_id, result.values[0])
            if req.read == "session":
                self.session = s.saw(False, result.epoch, result.lsn)
        self._done(now_s)

    def _unknown(self, op_id: int, f: str, why: str, now_s: float) -> None:
        if f == "read":
            self.rec.fail(op_id, why)  # a read changes nothing
        else:
            self.rec.info(op_id, why)
            self.process += 1  # Jepsen: a process with an unknown outcome is crashed; the session goes on
        self.target = self.rng.choice(self.replicas)
        self._done(now_s)

    def _done(self, now_s: float) -> None:
        self.op = self.call = None
        idle = self.idle_s and self.rng.random() < 0.03
        self.next_at_s = now_s + (self.rng.uniform(2 * self.idle_s, 3 * self.idle_s) if idle else
                                  self.rng.uniform(0, 0.02))


def simulate(seed: int, *, mode: str = "sync", replicas: int = 3, sync_replicas: int = 1, clients: int = 3,
             keys: int = 3, duration_s: float = 6.0, faults: bool = True, single_failure: bool = False,
             membership: bool = False, tick_s: float = 0.01, lease_s: float = 0.5,
             session_ttl_s: float = 0.0, acks: int = -1) -> LFSimReport:
    """One seeded run (see the module docstring); raises :class:`ReplicationViolation` on any violation.

    ``acks``: the follower acknowledgements every client write asks for (-1: the mode's; more than
    the mode asks raises the write's durability, as ``ReplWrite.acks`` does).

    ``session_ttl_s`` > 0: the replicas expire client sessions idle that long, and clients now
    and then idle longer than that (their writes give up, after retries, well within the TTL).
    """
    ttl_ms = session_ttl_ms(session_ttl_s)
    rng = random.Random(seed)
    sim = SimNetwork(seed, tick_s=tick_s)
    obs = _Observer()
    report = LFSimReport(seed, mode)
    coords = ["c1", "c2", "c3"]
    reps = [f"r{i}" for i in range(1, replicas + 1)]
    raft = {"election_ticks": 10, "heartbeat_ticks": 2}
    for cid in coords:
        sim.add(cid, lambda n, recovered=(), tick_s=tick_s: RaftMember(
            n, recovered=recovered, tick_s=tick_s, voters=coords, seed=seed, raft=raft, snapshot_entries=200))
    options: dict[str, Any] = dict(group="sim", members=tuple(reps), coordinators=tuple(coords), mode=mode,
                   sync_replicas=sync_replicas, lease_s=lease_s, heartbeat_s=0.03, probe_s=0.06)
    def add_replica(name: str, members: tuple) -> None:
        sim.add(name, lambda n, recovered=(), tick_s=tick_s: LeaderFollowerReplica(
            n, recovered=recovered, tick_s=tick_s, observer=obs, state=MapState(ttl_ms),
            **{**options, "members": members}))

    for rep in reps:
        add_replica(rep, tuple(reps))
    rec = HistoryRecorder(clock=lambda: sim.now_s)
    names = [f"client{i}" for i in range(clients)]
    cls = [_Client(n, sim, rec, reps, [b"k%d" % j for j in range(keys)], random.Random(rng.getrandbits(32)),
                   "sim", timeout_s=0.4, idle_s=session_ttl_s, acks=acks) for n in names]
    crashed: dict[str, float] = {}
    next_fault_s = rng.uniform(0.5, 1.0)
    changes = _Changes(sim, rng, reps, add_replica, mode, sync_replicas, replicas + 2, report) if membership else None
    step_s = 0.005
    while sim.now_s < duration_s:
        sim.run_for(step_s)
        now = sim.now_s
        for c in cls:
            c.poll(now, stop=False)
        if changes is not None:
            changes.poll(now)
        if faults and now >= next_fault_s:
            next_fault_s = now + rng.uniform(0.3, 0.8)
            if single_failure:
                _heal(sim, crashed, report)
            _fault(sim, rng, reps, names, crashed, report, single_failure)
        for n, at in list(crashed.items()):
            if now >= at:
                sim.restart(n)
                del crashed[n]
                report.faults.append((round(now, 3), f"restart {n}"))
    _heal(sim, crashed, report)
    settle_end = sim.now_s + 4.0
    while sim.now_s < settle_end and any(c.op is not None for c in cls):
        sim.run_for(step_s)
        for c in cls:
            c.poll(sim.now_s, stop=True)
    for c in cls:
        if c.op is not None:
            rec.info(c.op[0], "run ended")
            c.op = None
    leader = _final_write(sim, reps, seed)
    members = list(sim.core(leader).members)
    report.members = tuple(members)
    _settle(sim, members, leader)
    # Durability is promised across single failures by the synchronous modes, and across any by a write
    # that every replica holds once acknowledged (acks from every follower, the members fixed).
    durable = ("across single failures" if mode != "async" and single_failure else
               "that every follower acknowledged" if acks >= replicas - 1 and not membership else "")
    _check(sim, members, reps, leader, rec, obs, report, mode, durable)
    return report


def _check_exactly_once(lead: LeaderFollowerReplica, obs: _Observer) -> None:
    """No written value in two entries of the final history (each client write has its own value)."""
    where: dict[tuple, int] = {}
    for (epoch, lsn), ops in obs.applied.items():
        if lsn > lead.last_lsn or lead.epoch_at(lsn) != epoch:
            continue  # an entry of a discarded tail
        for op in ops:
            if op[0] == PUT:
                other = where.setdefault((op[1], op[2]), lsn)
                if other != lsn:
                    raise ReplicationViolation(f"the write of {op[2]!r} to {op[1]!r} applied twice, at lsn {other} "
                                               f"and at lsn {lsn}")


class _Changes:
    """The operator of a ``membership=True`` run: now and then asks the leader to add or remove a replica."""

    def __init__(self, sim: SimNetwork, rng: random.Random, reps: list, add_replica, mode: str, sync_replicas: int,
                 max_replicas: int, report: LFSimReport):
        self.sim, self.rng, self.reps, self.add_replica = sim, rng, reps, add_replica
        self.mode, self.sync_replicas, self.max_replicas, self.report = mode, sync_replicas, max_replicas, report
        self.next_at_s = rng.uniform(0.5, 1.5)
        self.call: SimCall | None = None

    def poll(self, now_s: float) -> None:
        if self.call is not None:
            if not self.call.done:
                return
            self.report.changes_made += self.call.ok
            self.call = None
        if now_s < self.next_at_s:
            return
        self.next_at_s = now_s + self.rng.uniform(0.5, 1.5)
        leader = _leader(self.sim, self.reps)
        if leader is None:
            return
        members = self.sim.core(leader).members
        followers = [m for m in members if m != leader]
        can_remove = len(followers) > (self.sync_replicas if self.mode == "semi-sync" else 0) and len(members) > 2
        if len(self.reps) < self.max_replicas and (not can_remove or self.rng.random() < 0.5):
            node = f"r{len(self.reps) + 1}"
            self.add_replica(node, (*members, node))
            self.reps.append(node)  # the clients' list too: a newcomer may serve follower reads
            req = ReplAdmin("add", node, timeout_s=2.0)
        elif can_remove:
            node = self.rng.choice(followers)
            # Async: now and then forced (a replica given up for good); what it held alone is declared.
            forced = self.mode == "async" and self.rng.random() < 0.5
            req = ReplAdmin("remove_forced" if forced else "remove", node, timeout_s=2.0)
        else:
            return
        self.report.faults.append((round(now_s, 3), f"ask {req.action} {node}"))
        self.call = self.sim.request(leader, req, src="operator")


def _leader(sim: SimNetwork, reps: list) -> str | None:
    live = [r for r in reps if sim.nodes[r].alive and sim.core(r).role == LEADER]
    return max(live, key=lambda r: sim.core(r).epoch) if live else None


def _heal(sim: SimNetwork, crashed: dict, report: LFSimReport) -> None:
    sim.heal()
    sim.reset_links()
    for n in list(sim.config.paused):
        sim.resume(n)
    for n in list(crashed):
        sim.restart(n)
        del crashed[n]
        report.faults.append((round(sim.now_s, 3), f"restart {n}"))


def _fault(sim: SimNetwork, rng: random.Random, reps: list, clients: list, crashed: dict, report: LFSimReport,
           single: bool) -> None:
    leader = _leader(sim, reps)
    alive = [n for n in reps if sim.nodes[n].alive]
    victim = leader if (leader and rng.random() < 0.6) else rng.choice(alive)
    r = rng.random()
    if r < 0.3:
        # The victim loses the rest of the group and the coordination service; some clients keep it.
        with_it = [c for c in clients if rng.random() < 0.3]
        sim.partition([[victim] + with_it, ["*"]])
        what = f"isolate {victim} with {with_it}"
    elif r < 0.6:
        torn = rng.random() < 0.5
        sim.crash(victim, during_write=torn)
        crashed[victim] = sim.now_s + rng.uniform(0.1, 0.6)
        what = f"crash {victim}" + (" during a write" if torn else "")
    elif r < 0.8:
        sim.pause(victim)
        what = f"pause {victim}"
    else:
        sim.link(drop=rng.choice([0.02, 0.1]), delay_s=0.001, jitter_s=rng.choice([0.0, 0.01]),
                 duplicate=rng.choice([0.0, 0.05]), reorder=rng.choice([0.0, 0.1]))
        what = "lossy links"
    report.faults.append((round(sim.now_s, 3), what))


def _final_write(sim: SimNetwork, reps: list, seed: int) -> str:
    """Liveness after healing: a write is acknowledged within a few seconds; returns the leader."""
    end = sim.now_s + 8.0
    while sim.now_s < end:
        leader = _leader(sim, reps)
        if leader is not None:
            call = sim.request(leader, ReplWrite(((PUT, b"final", b"done"),)))
            sim.run_until(functools.partial(getattr, call, "done"), 1.0)
            if call.done and call.ok:
                return leader
        sim.run_for(0.1)
    raise ReplicationViolation(f"no progress: no write was acknowledged within 8 s of healing (seed {seed})")


def _settle(sim: SimNetwork, reps: list, leader: str) -> None:
    def caught_up() -> bool:
        lead = sim.core(leader)
        # The same last entry (lsn and epoch: followers check the entry before each append, so the logs
        # match up to there), not only the same count: a diverged log can be just as long.
        return all(sim.core(r).state.applied == lead.last_lsn and sim.core(r).last_epoch == lead.last_epoch
                   for r in reps)
    if not sim.run_until(caught_up, 5.0):
        got = {r: sim.core(r).state.applied for r in reps}
        raise ReplicationViolation(f"replicas did not catch up with {leader} after healing: {got}")


def _check(sim: SimNetwork, members: list, reps: list, leader: str, rec: HistoryRecorder, obs: _Observer,
           report: LFSimReport, mode: str, durable: str) -> None:
    """The end-of-run checks (the module docstring); ``members`` are the final leader's, ``reps`` every replica
    that ever ran (a removed one keeps its lost-write reports); ``durable`` (empty: none): why no acknowledged
    write may be missing."""
    lead = sim.core(leader)
    history = {e[1]: e for e in lead.log}
    for r in members:
        core = sim.core(r)
        for e in core.log:
            if history.get(e[1]) != e and e[1] > lead.base_lsn:
                raise ReplicationViolation(f"{r}'s entry at lsn {e[1]} is {e!r}; the leader {leader} has "
                                           f"{history.get(e[1])!r}")
        if core.state.data != lead.state.data:
            raise ReplicationViolation(f"{r}'s state differs from the leader {leader}'s at the same lsn")
    ops = rec.operations()
    acked = {op.output: op for op in ops if op.f == "write" and op.status == "ok"}
    unknown = [op for op in ops if op.f == "write" and op.status == "info"]
    missing = {pos for pos in acked if lead.epoch_at(pos[1]) != pos[0] or pos[1] > lead.last_lsn}
    reported = set()
    for r in reps:
        reported |= {(e, lsn) for e, lsn, _ in sim.core(r).lost}
    report.writes_acked = len(acked)
    report.reads_ok = sum(1 for op in ops if op.f == "read" and op.status == "ok")
    report.lost_in_history, report.lost_reported = len(missing), len(reported)
    report.epochs = len(obs.leaders)
    if durable and missing:
        raise ReplicationViolation(f"{mode}: {len(missing)} acknowledged writes lost {durable}, "
                                   f"e.g. {sorted(missing)[:3]}")
    # A write missing uncounted is allowed only where the group declared it could not count: an epoch
    # led by a replica removed by force before it compared its log (its status lists it).
    uncounted = {node for node, _, _ in lead.uncounted_removals()}
    hidden = {pos for pos in missing - reported if obs.leaders.get(pos[0]) not in uncounted}
    if hidden:
        raise ReplicationViolation(f"acknowledged writes lost but not reported: {sorted(hidden)[:5]}")
    for pos in reported:
        if lead.epoch_at(pos[1]) == pos[0] and pos[1] <= lead.last_lsn:
            raise ReplicationViolation(f"entry {pos} was reported lost but is in the final history")
    if reported - missing and not unknown:
        raise ReplicationViolation(f"lost writes reported that no client was told of: {sorted(reported - missing)[:5]}")
    # Versions of the writes whose outcome was unknown, from the final history (values are unique).
    versions = {}
    by_value = {(op[1], op[2]): (e[0], e[1]) for e in lead.log for op in e[2] if op[0] == PUT}
    for op in unknown:
        found = by_value.get((op.key, op.value))
        if found is not None:
            versions[(op.key, op.value)] = found
    session_ops = [op for op in ops if op.f == "write" or (op.f == "read" and op.value == "session")]
    try:
        verdict = check_sessions(session_ops, session_of=_session_of, versions=versions)
    except ConfigError as e:  # one position given to two writes: the history itself is broken
        raise ReplicationViolation(f"the final history is inconsistent: {e}") from e
    report.session_reads = verdict.reads_checked
    report.sessions_expired = lead.state.sessions.expired
    _check_exactly_once(lead, obs)
    if not verdict.ok and mode != "async":
        raise ReplicationViolation(describe_sessions(verdict))
    if not verdict.ok:
        # Async: a session whose write was lost may read older data; that is the loss already counted.
        lost_keys = {op.key for pos, op in acked.items() if pos in missing}
        real = [v for v in verdict.violations if v.key not in lost_keys]
        if real:
            raise ReplicationViolation(describe_sessions(verdict))


def _session_of(op) -> str:
    """A client's processes are named ``client.session/n``: the session spans its processes."""
    return str(op.process).split("/")[0]


# --- the Raft protocol ----------------------------------------------------------------------------


class _RaftStoreClient(SimClient):
    """RaftKV's simulated client, speaking the replicated store's requests to its Raft replicas."""

    def _send(self, op: tuple) -> None:
        kind, key, seq, value, expected = op
        if kind == "get":
            payload: Any = ReplRead((key,), "linearizable")
        else:
            ops = ((PUT, key, value),) if kind == "put" else ((CAS, key, value, expected),)
            payload = ReplWrite(ops, client=self.name, seq=seq, acked_below=self.acked_below)
        self.call = self.sim.request(self.leader, payload, src=self.name)

    def _answer(self, res) -> tuple[bool, Any, str]:
        if isinstance(res, ReadResult):
            return True, res.values[0], ""
        if isinstance(res, WriteAck):
            return True, (res.results[0] if self.op is not None and self.op[1][0] == "cas" else None), ""
        return False, None, ""


def simulate_raft(seed: int, **options) -> SimReport:
    """One seeded run of the replicated store's Raft protocol (:class:`~.raft_replica.RaftReplica` over a
    dict state), under the faults of RaftKV's simulation and with its checks: election safety, leader
    completeness, state-machine safety, log matching, liveness after healing and linearizability
    (see :mod:`ddia_ray.kv.simulation`). Membership changes are RaftKV's alone, so they are off."""
    options.setdefault("client_class", _RaftStoreClient)  # a store built on this one brings its own clients
    return simulate_kv(seed, membership=False, member_class=RaftReplica,
                       member_options=lambda node: {"group": "sim"}, **options)
