"""Seeded, single-process runs of a RaftKV cluster under faults, with Raft's safety properties checked.

Theory of operation
-------------------
:func:`simulate` builds RaftKV members on a :class:`~ddia_ray.runtime.SimNetwork`
(virtual time, one ``random.Random`` per seed), starts simulated clients that
read, write and cas a few keys with retries and timeouts, and runs a random
fault schedule: lossy, duplicating, reordering links; partitions and isolated
leaders; paused members; crashes whose restart rebuilds a member from what it
had persisted (its unpersisted state, the state machine included, is lost);
and, when asked, a membership change (a spare joins as learner, is promoted,
and a founding member is removed). Then it heals everything, lets the cluster
settle and checks:

* **election safety**: at most one leader per term (every leadership is observed);
* **leader completeness**: a leader of a later term holds every entry committed before it;
* **state-machine safety**: no two members apply different entries at one index;
* **log matching**: two live logs that agree on an entry's term agree on everything before it;
* **liveness after healing**: a final write commits;
* **linearizability** of the clients' history (:mod:`ddia_ray.history`).

Any violation raises :class:`SafetyViolation`; with :func:`~ddia_ray.runtime.run_seeds`
the failing seed is printed with the command that replays it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from ..consensus.raft import LEADER
from ..history import HistoryRecorder, check, describe
from ..runtime import SimCall, SimNetwork
from .commands import OK, KVAdmin, KVBatch, KVResults
from .member import RaftMember

__all__ = ["simulate", "SimReport", "SafetyViolation", "SimClient"]


class SafetyViolation(AssertionError):
    """A Raft safety property or linearizability failed in a simulated run."""


@dataclass
class SimReport:
    """What one simulated run did."""

    seed: int
    ops: int = 0
    ok_ops: int = 0
    leaders: dict = field(default_factory=dict)
    faults: list = field(default_factory=list)
    linearizable: bool | None = None
    committed: int = 0
    torn_writes: int = 0


class _Checker:
    def __init__(self, sim: SimNetwork):
        self.sim = sim
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, tuple] = {}
        self.commit_bound: dict[int, int] = {}  # index -> newest leader term seen when it was first applied

    def __call__(self, node: str, event: str, n: int, data) -> None:
        if event == "apply":
            # An entry is known committed once applied; the leader that committed it led a term no
            # later than the newest term seen so far, so only leaders of later terms must hold it
            # (a stale leader of an older term may legally win an election late and lack it).
            seen = self.committed.setdefault(n, data)
            if n not in self.commit_bound:
                self.commit_bound[n] = max(self.leaders, default=0)
            if seen != data:
                raise SafetyViolation(f"state-machine safety: {node} applied {data!r} at index {n}, "
                                      f"another member applied {seen!r}")
            return
        other = self.leaders.setdefault(n, node)
        if other != node:
            raise SafetyViolation(f"election safety: {other} and {node} both led term {n}")
        log = self.sim.core(node).node.log
        for index, (term, _) in self.committed.items():
            if self.commit_bound[index] < n and index > log.snap_index and log.term(index) != term:
                raise SafetyViolation(f"leader completeness: {node}, leader of term {n}, lacks committed "
                                      f"entry {index} (term {term}); its term there: {log.term(index)}")

    def log_matching(self, nodes) -> None:
        """Raft's Log Matching property between every pair of live logs."""
        logs = [(n, self.sim.core(n).node.log) for n in nodes]
        for (a, la), (b, lb) in itertools.combinations(logs, 2):
            lo = max(la.first_index(), lb.first_index())
            hi = min(la.last_index(), lb.last_index())
            for index in range(hi, lo - 1, -1):
                if la.term(index) == lb.term(index):
                    for i in range(lo, index + 1):
                        ea, eb = la.entries[i - la.snap_index - 1], lb.entries[i - lb.snap_index - 1]
                        if ea != eb:
                            raise SafetyViolation(f"log matching: {a} and {b} agree at {index} "
                                                  f"but differ at {i}: {ea!r} vs {eb!r}")
                    break


class SimClient:
    """One simulated client session: one op at a time, retried until its deadline.

    It speaks RaftKV's :class:`~.commands.KVBatch`; a store with other requests (the replicated
    store's Raft protocol) subclasses it and overrides :meth:`_send` and :meth:`_answer`.
    """

    def __init__(self, name: str, sim: SimNetwork, rec: HistoryRecorder, members, keys, rng: random.Random,
                 process: int, timeout_s: float, deadline_s: float):
        self.name, self.sim, self.rec, self.rng = name, sim, rec, rng
        self.members, self.keys = members, keys
        self.process = process
        self.seq = 0
        self.timeout_s, self.deadline_s = timeout_s, deadline_s
        self.leader = rng.choice(members)
        self.op: tuple[int, tuple, str, float] | None = None  # (op id, operation tuple, f, started_at_s)
        self.call: SimCall | None = None
        self.next_at_s = 0.0
        self.acked_below = 1
        self.ops = 0

    def poll(self, now_s: float, stop: bool) -> None:
        """Advance this client: start an op, record an answer, retry elsewhere or give up."""
        if self.op is None:
            if not stop and now_s >= self.next_at_s:
                self._start(now_s)
            return
        op_id, op, f, started = self.op
        call = self.call
        if call is not None and call.done:
            done, value, hint = self._answer(call.result if call.ok else None)
            if done:
                self.rec.ok(op_id, value)
                self._done(now_s)
                return
            self.leader = hint or self.rng.choice(self.members)
            self.call = None
        elif call is not None and now_s - call.sent_at_s > self.timeout_s:
            self.leader = self.rng.choice(self.members)
            self.call = None
        if self.call is None:
            if now_s - started > self.deadline_s:
                if f == "read":
                    self.rec.fail(op_id, "gave up")  # a read changes nothing: it may safely not have happened
                else:
                    self.rec.info(op_id, "gave up")
                    self.process += 1000  # Jepsen: a process with an unknown outcome is crashed
                self._done(now_s)
                return
            self._send(op)

    def _start(self, now_s: float) -> None:
        self.seq += 1
        key = self.rng.choice(self.keys)
        r = self.rng.random()
        op: tuple
        value: Any
        if r < 0.4:
            op, f, value = ("get", key, self.seq, None, None), "read", None
        elif r < 0.8:
            v = b"%d" % self.rng.randrange(5)  # keys and values are bytes
            op, f, value = ("put", key, self.seq, v, None), "write", v
        else:
            exp, new = b"%d" % self.rng.randrange(5), b"%d" % self.rng.randrange(5)
            op, f, value = ("cas", key, self.seq, new, exp), "cas", (exp, new)
        op_id = self.rec.invoke(self.process, f, key, value)
        self.op = (op_id, op, f, now_s)
        self.ops += 1
        self._send(op)

    def _answer(self, res) -> tuple[bool, Any, str]:
        """``(succeeded, its value, leader hint)`` from a reply's payload (None: an error or no reply)."""
        if isinstance(res, KVResults):
            code, value = res.results[0]
            return code == OK, value, res.leader
        return False, None, ""

    def _send(self, op: tuple) -> None:
        batch = KVBatch(self.name, (op,), self.acked_below)
        self.call = self.sim.request(self.leader, batch, src=self.name)

    def _done(self, now_s: float) -> None:
        self.acked_below = self.seq + 1  # answered, or abandoned: either way never retried again
        self.op = self.call = None
        self.next_at_s = now_s + self.rng.uniform(0, 0.02)


def simulate(seed: int, *, members: int = 3, clients: int = 3, keys: int = 2, duration_s: float = 2.0,
             faults: bool = True, membership: bool = True, snapshot_entries: int = 40,
             tick_s: float = 0.01, raft: dict | None = None, member_class=RaftMember, member_options=None,
             client_class=SimClient) -> SimReport:
    """One seeded run (see the module docstring); raises :class:`SafetyViolation` on any violation.

    ``raft`` overrides :class:`~ddia_ray.consensus.raft.RaftConfig` fields of every member.
    ``member_class`` (a :class:`RaftMember` subclass, with ``member_options(node_id)`` as extra
    keyword arguments) and ``client_class`` let another store on the same Raft core run here: the
    replicated store's Raft protocol does (``ddia_ray.replication.simulation.simulate_raft``).
    """
    rng = random.Random(seed)
    sim = SimNetwork(seed, tick_s=tick_s)
    checker = _Checker(sim)
    report = SimReport(seed)
    ids = [f"n{i}" for i in range(1, members + 1)]
    spare = f"n{members + 1}" if membership else None
    raft = {"election_ticks": 10, "heartbeat_ticks": 2, **(raft or {})}

    def factory(voters):
        def build(node_id, *, recovered=(), tick_s=tick_s):
            extra = member_options(node_id) if member_options is not None else {}
            # A third of the seeds keep no catch-up tail, so lagging members install snapshots often.
            return member_class(node_id, recovered=recovered, tick_s=tick_s, voters=voters, seed=seed, raft=raft,
                                snapshot_entries=snapshot_entries, catch_up_entries=(seed % 3) * 10,
                                observer=checker, **extra)
        return build

    for n in ids:
        sim.add(n, factory(ids))
    if spare:
        sim.add(spare, factory(()))  # joins with no configuration: it learns it from the leader's log
    everyone = ids + ([spare] if spare else [])
    if faults:
        sim.link(drop=rng.choice([0.0, 0.02, 0.1]), delay_s=0.001, jitter_s=rng.choice([0.0, 0.005, 0.02]),
                 duplicate=rng.choice([0.0, 0.05]), reorder=rng.choice([0.0, 0.1]))
    rec = HistoryRecorder(clock=lambda: sim.now_s)
    cls = [client_class(f"c{i}", sim, rec, everyone, [b"k%d" % j for j in range(keys)],
                        random.Random(rng.getrandbits(32)), i, timeout_s=0.15, deadline_s=0.6) for i in range(clients)]
    crashed: dict[str, float] = {}
    admin = []  # membership steps still to do
    if spare:
        admin = [KVAdmin("add_learner", spare), KVAdmin("add_voter", spare), KVAdmin("remove", ids[0])]
    admin_call = None
    next_fault_s = rng.uniform(0.2, 0.4)
    step_s = 0.005
    while sim.now_s < duration_s:
        sim.run_for(step_s)
        now = sim.now_s
        for c in cls:
            c.poll(now, stop=False)
        if faults and now >= next_fault_s:
            next_fault_s = now + rng.uniform(0.15, 0.4)
            _random_fault(sim, rng, everyone, [c.name for c in cls], crashed, report)
        for n, at in list(crashed.items()):
            if now >= at:
                sim.restart(n)
                del crashed[n]
                report.faults.append((round(now, 3), f"restart {n}"))
        if admin and now > 0.5:
            if admin_call is None or (admin_call.done and not admin_call.ok) or \
                    (not admin_call.done and now - admin_call.sent_at_s > 0.3):
                admin_call = sim.request(rng.choice(everyone), admin[0], src="admin")
            elif admin_call.done and admin_call.ok:
                report.faults.append((round(now, 3), f"{admin[0].action} {admin[0].node}"))
                admin.pop(0)
                admin_call = None
    # Heal, restart, and let every client finish its op.
    sim.heal()
    sim.reset_links()
    for n in list(sim.config.paused):
        sim.resume(n)
    for n in crashed:
        sim.restart(n)
    settle_end = sim.now_s + 3.0
    while sim.now_s < settle_end and any(c.op is not None for c in cls):
        sim.run_for(step_s)
        for c in cls:
            c.poll(sim.now_s, stop=True)
    for c in cls:  # anything still open has an unknown outcome
        if c.op is not None:
            rec.info(c.op[0], "run ended")
            c.op = None
    # Liveness: a final write must commit once the network is healthy.
    final = client_class("final", sim, HistoryRecorder(clock=lambda: sim.now_s), everyone, [b"final"],
                    random.Random(seed), 99, timeout_s=0.15, deadline_s=5.0)
    final._start(sim.now_s)
    while final.op is not None and sim.now_s < settle_end + 6.0:
        sim.run_for(step_s)
        final.poll(sim.now_s, stop=True)
    if final.rec.operations()[-1].status != "ok":
        raise SafetyViolation(f"no progress: a write did not commit within 5 s of healing (seed {seed})")
    voters_alive = [n for n in everyone if sim.nodes[n].alive]
    checker.log_matching(voters_alive)
    ops = rec.operations()
    result = check(ops, max_explored_states=2_000_000)
    report.ops = len(ops)
    report.ok_ops = sum(1 for o in ops if o.status == "ok")
    report.leaders = dict(checker.leaders)
    report.committed = len(checker.committed)
    report.torn_writes = sim.torn_writes
    report.linearizable = result.ok
    if result.ok is False:
        raise SafetyViolation(f"not linearizable:\n{describe(result)}")
    return report


def _random_fault(sim: SimNetwork, rng: random.Random, nodes, clients, crashed: dict, report: SimReport) -> None:
    now = sim.now_s
    leader = next((n for n in nodes if sim.nodes[n].alive and sim.core(n).node.role == LEADER), None)
    alive = [n for n in nodes if sim.nodes[n].alive]
    r = rng.random()
    if r < 0.25:
        sim.heal()
        for n in list(sim.config.paused):
            sim.resume(n)
        what = "heal"
    elif r < 0.45 and leader:
        # Clients sit on either side (as in Jepsen, where each client talks to one node): a client
        # cut off with the old leader is how a stale read would show up in the history.
        with_leader = [c for c in clients if rng.random() < 0.3]
        sim.partition([[leader] + with_leader, ["*"]])
        what = f"isolate leader {leader} with {with_leader}"
    elif r < 0.6:
        shuffled = list(nodes)
        rng.shuffle(shuffled)
        k = rng.randrange(1, len(shuffled))
        side = [c for c in clients if rng.random() < 0.5]
        sim.partition([shuffled[:k] + side, shuffled[k:] + ["*"]])
        what = f"partition {shuffled[:k] + side} | {shuffled[k:]}"
    elif r < 0.8 and len(alive) > 1:
        victim = leader if (leader and rng.random() < 0.5) else rng.choice(alive)
        torn = rng.random() < 0.5
        sim.crash(victim, during_write=torn)  # torn: mid-write, losing what was not yet synced
        crashed[victim] = now + rng.uniform(0.05, 0.5)
        what = f"crash {victim}" + (" during a write" if torn else "")
    elif r < 0.9 and alive:
        victim = rng.choice(alive)
        if victim not in sim.config.paused:
            sim.pause(victim)
        what = f"pause {victim}"
    else:
        sim.link(drop=rng.choice([0.0, 0.05, 0.3]), delay_s=0.001, jitter_s=rng.choice([0.0, 0.03]),
                 duplicate=rng.choice([0.0, 0.1]), reorder=rng.choice([0.0, 0.2]))
        what = "links changed"
    report.faults.append((round(now, 3), what))
