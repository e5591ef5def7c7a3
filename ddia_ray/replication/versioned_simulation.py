"""Seeded simulation of the multi-leader and leaderless protocols under faults, checked for convergence and loss.

Theory of operation
-------------------
One run (:func:`simulate_versioned`) puts the same cores that run on Ray
(:class:`~.multi_leader.MultiLeaderReplica`, :class:`~.leaderless.LeaderlessReplica`)
on a :class:`~ddia_ray.runtime.SimNetwork`, one region per replica with
``region_delay_s`` between regions, and lets simulated clients run a workload
while a nemesis partitions regions, crashes and restarts replicas, and (for
last-writer-wins) skews their clocks. Everything random comes from the seed, so
a failing seed replays exactly (``run_seeds`` prints the command).

Each client, one operation at a time, either reads a key and writes a new value
with the context it read (so it *knowingly* replaces what it saw), or writes
blind, or applies a CRDT operation. Every value names the writes it stands for
(``(id, ...)`` as a codec tuple), so the final state tells which writes survive.

After the workload the nemesis heals everything and restarts every replica; the
run then waits until every replica holds the same versions (equal Merkle roots)
and checks:

* **convergence**: within :data:`CONVERGE_S` simulated seconds of healing
  (the time it took is reported);
* **lost updates** (:mod:`ddia_ray.history.lost_updates`): none for siblings, a
  merging resolver and CRDTs; for LWW the loss is reported, and it never exceeds
  what the store itself counted as discarded (LWW is never silent);
* **causality** (multi-leader, ``causal=True``): no replica applied an entry
  before one of its causes.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from .. import codec
from ..history.convergence import check_convergence
from ..history.lost_updates import CounterUpdate, RegisterWrite, SetUpdate, check_lost_updates
from ..runtime import CoreSpec, SimNetwork
from ..runtime.faults import NetworkConfig
from .versioned_records import V_PUT, V_UPDATE, VRead, VWrite
from .state_format import encode_state
from .versions import live_siblings, parse_policies

__all__ = ["simulate_versioned", "VSimReport", "VersionedViolation", "CONVERGE_S", "RESOLUTION_CASES"]

#: Simulated seconds after healing within which the replicas must converge.
CONVERGE_S = 30.0
#: The resolutions a run can check, as the store's policy spec.
RESOLUTION_CASES = {"siblings": "siblings", "lww": "lww", "resolver": "resolver:set_union"}
_FACTORY = {"multi-leader": "ddia_ray.replication.multi_leader:build",
            "leaderless": "ddia_ray.replication.leaderless:build"}


class VersionedViolation(AssertionError):
    """A run broke a guarantee of the versioned protocols."""


@dataclass
class VSimReport:
    """What one run did and found."""

    seed: int
    protocol: str
    resolution: str
    writes: int = 0
    acked: int = 0
    reads: int = 0
    lost: int = 0
    lww_discarded: int = 0
    siblings_max: int = 0
    convergence_s: float = 0.0
    causality_violations: int = 0
    crashes: int = 0
    partitions: int = 0
    crdt_ops: int = 0
    details: dict = field(default_factory=dict)


class _Client:
    """A simulated client: one operation at a time, its history kept for the checker."""

    def __init__(self, name: str, rng: random.Random, keys: tuple, crdt_keys: dict, home: str):
        self.name, self.rng, self.keys, self.crdt_keys, self.home = name, rng, keys, crdt_keys, home
        self.call: Any = None  # the SimCall in flight
        self.pending: Any = None  # what the call in flight is
        self.seen: dict[bytes, tuple[frozenset, bytes]] = {}  # key -> (ids read, context)
        self.idle_until = 0.0


def _ids(siblings) -> frozenset:
    out: set = set()
    for s in siblings:
        if s.value is not None:
            out.update(codec.decode(s.value))
    return frozenset(out)


def simulate_versioned(seed: int, *, protocol: str = "multi-leader", resolution: str = "siblings",
                       replicas: int = 3, clients: int = 3, keys: int = 3, ops: int = 40,
                       region_delay_s: float = 0.03, faults: bool = True, skew_s: float = 0.0,
                       causal: bool = True, topology: str = "all-to-all", crdts: bool = True,
                       n: int = 3, r: int = 2, w: int = 2) -> VSimReport:
    """One seeded run (see the module docstring); raises :class:`VersionedViolation` when a check fails
    (run it under :func:`~ddia_ray.runtime.simnet.run_seeds` for many seeds and a replay command)."""
    return _run(seed, protocol, resolution, replicas, clients, keys, ops, region_delay_s, faults, skew_s,
                causal, topology, crdts, n, r, w)


def _run(seed, protocol, resolution, replicas, clients, keys, ops, region_delay_s, faults, skew_s, causal,
         topology, crdts, n, r, w) -> VSimReport:
    rng = random.Random(seed)
    members = tuple(f"r{i}" for i in range(1, replicas + 1))
    config = NetworkConfig()
    for a in members:
        for b in members:
            if a != b:
                config = config.with_link(a, b, delay_s=region_delay_s, jitter_s=region_delay_s / 2)
    net = SimNetwork(seed, config=config)
    spec = {b"": RESOLUTION_CASES[resolution], b"c/": "crdt:pncounter", b"s/": "crdt:orset"}
    policies = tuple({"prefix": p.prefix, "mode": p.mode, "resolver": p.resolver, "on_read": p.on_read,
                      "kind": p.kind} for p in parse_policies(spec))
    base: dict[str, Any] = {"store": f"sim-{seed}", "members": members, "resolution": policies}
    if protocol == "multi-leader":
        base.update(topology=topology, causal=causal)
    else:
        base.update(n=min(n, replicas), r=r, w=w, anti_entropy_ticks=20, handoff_ticks=10)
    for m in members:
        skew = rng.uniform(-skew_s, skew_s) if skew_s else 0.0
        net.add(m, CoreSpec(_FACTORY[protocol], {**base, "clock_skew_s": skew}))
    report = VSimReport(seed, protocol, resolution)
    plain = tuple(f"k{i}".encode() for i in range(keys))
    crdt_keys = {b"c/0": "pncounter", b"s/0": "orset"} if crdts else {}
    history: dict[str, Any] = {}  # op id -> its record (acked once the reply came)
    sim_clients = [_Client(f"c{i}", random.Random(rng.getrandbits(64)), plain, crdt_keys, members[i % replicas])
                   for i in range(clients)]
    net.clients.update(c.name for c in sim_clients)
    next_id = (f"w{i}" for i in range(1, 1 << 30))
    done_ops = 0
    crashed: set[str] = set()
    # Every run meets each kind of fault at least once, at a random moment of the workload, and more at random.
    span = ops * 0.03
    forced = sorted((rng.uniform(0, span), kind) for kind in ("partition", "crash")) if faults else []
    while done_ops < ops * clients:
        net.run_for(0.01)
        for c in sim_clients:
            if c.call is not None and not c.call.done and net.now_s - c.call.sent_at_s < 2.0:
                continue
            if c.call is not None:
                _finish(c, history, report)
                done_ops += 1
                c.idle_until = net.now_s + c.rng.uniform(0.0, 0.04)  # think time: the run spans faults
            if net.now_s >= c.idle_until:
                _next(c, net, members, next_id, history, report, crashed)
        while forced and forced[0][0] <= net.now_s:
            _nemesis(rng, net, members, crashed, report, forced.pop(0)[1])
        if faults and rng.random() < 0.02:
            _nemesis(rng, net, members, crashed, report)
    # heal everything, restart every replica, and wait for the replicas to agree
    net.heal()
    for m in sorted(crashed):
        net.restart(m)
    healed_at = net.now_s

    def converged() -> bool:
        # Cheap first (every replica's Merkle roots and queues), the full comparison of states only then.
        cores = [net.core(m) for m in members]
        if any(getattr(c, "pending", None) or getattr(c, "hints", None) for c in cores):
            return False
        if protocol == "multi-leader":
            if len({c.tree.root() for c in cores}) != 1:
                return False
        elif any(a.tree_for(b.node_id).root() != b.tree_for(a.node_id).root() for a in cores for b in cores
                 if a is not b):
            return False
        return check_convergence({m: _shared(net.core(m), protocol) for m in members}).converged

    if not _run_until(net, converged, CONVERGE_S):
        result = check_convergence({m: _shared(net.core(m), protocol) for m in members})
        raise VersionedViolation(f"the replicas did not converge within {CONVERGE_S}s of healing: "
                                 f"divergent keys {result.divergent_keys[:5]}")
    report.convergence_s = round(net.now_s - healed_at, 3)
    net.run_for(1.0)  # the last calls complete or time out (an outcome never heard of stays unknown)
    for c in sim_clients:
        if c.call is not None:
            _finish(c, history, report)
    if not _run_until(net, converged, CONVERGE_S):  # the writes that landed during the drain spread too
        raise VersionedViolation(f"the replicas did not converge within {CONVERGE_S}s of the last write")
    _check(net, members, history, report, protocol, resolution, causal, crdt_keys)
    return report


def _run_until(net: SimNetwork, condition, timeout_s: float, step_s: float = 0.02) -> bool:
    """Run until ``condition()`` holds, checking it every ``step_s`` simulated seconds (it compares states)."""
    end = net.now_s + timeout_s
    while not condition():
        if net.now_s >= end:
            return False
        net.run_for(step_s)
    return True


def _shared(core, protocol: str) -> dict:
    """What a replica must agree on with the others: every key (multi-leader), or the keys of the store's
    ``n`` it replicates (leaderless: every replica holds all of them when ``n`` is the number of replicas)."""
    return {k: encode_state(v) for k, v in core.versions.data.items()}


def _next(c: _Client, net: SimNetwork, members, next_id, history, report, crashed) -> None:
    rng = c.rng
    target = c.home if c.home not in crashed else rng.choice(members)
    roll = rng.random()
    if c.crdt_keys and roll < 0.25:
        key = rng.choice(sorted(c.crdt_keys))
        kind = c.crdt_keys[key]
        ident = next(next_id)
        if kind == "pncounter":
            amount = rng.randint(1, 5)
            history[ident] = CounterUpdate(ident, key, False, amount)
            payload = (V_UPDATE, key, ("increment", (amount,)), b"")
        else:
            history[ident] = SetUpdate(ident, key, False, "add", ident.encode())
            payload = (V_UPDATE, key, ("add", (ident.encode(),)), b"")
        c.pending = ("crdt", key, ident)
        report.crdt_ops += 1
        c.call = net.request(target, VWrite((payload,)), src=c.name)
        return
    key = rng.choice(c.keys)
    if roll < 0.55 or key not in c.seen:
        c.pending = ("read", key)
        c.call = net.request(target, VRead((key,)), src=c.name)
        return
    ident = next(next_id)
    observed, context = c.seen.pop(key) if rng.random() < 0.8 else (frozenset(), b"")
    c.pending = ("write", key, ident)
    history[ident] = RegisterWrite(ident, key, False, tuple(sorted(observed)))
    report.writes += 1
    c.call = net.request(target, VWrite(((V_PUT, key, codec.encode((ident,)), context),)), src=c.name)


def _finish(c: _Client, history, report) -> None:
    call, what = c.call, c.pending
    c.call = c.pending = None
    if not call.done or not call.ok:
        return
    item = call.result.items[0]
    if item.error is not None and what[0] != "read":
        return  # not acknowledged (a quorum not reached)
    if what[0] == "read":
        report.reads += 1
        c.seen[what[1]] = (_ids(item.siblings), item.context)
    else:
        history[what[2]] = dataclasses.replace(history[what[2]], acked=True)
        report.acked += what[0] == "write"


def _nemesis(rng: random.Random, net: SimNetwork, members, crashed: set, report: VSimReport,
             kind: str = "") -> None:
    """One fault: ``kind`` ("partition", "crash") or a random one (a partition, healing, a crash, a restart)."""
    roll = {"partition": 0.0, "crash": 0.75}.get(kind, rng.random())
    if roll < 0.4:
        cut = rng.choice(members)
        net.partition([[cut], [m for m in members if m != cut] + sorted(net.clients)])
        report.partitions += 1
    elif roll < 0.7:
        net.heal()
    elif roll < 0.85 and len(crashed) < len(members) - 1:
        victim = rng.choice([m for m in members if m not in crashed])
        net.crash(victim, during_write=rng.random() < 0.3)
        crashed.add(victim)
        report.crashes += 1
    elif crashed:
        back = rng.choice(sorted(crashed))
        net.restart(back)
        crashed.discard(back)


def _check(net, members, history, report, protocol, resolution, causal, crdt_keys) -> None:
    core = net.core(members[0])
    final: dict[bytes, Any] = {}
    for key, state in core.versions.data.items():
        final[key] = state.value() if key in crdt_keys else _ids(live_siblings(state))
    statuses = {m: net.core(m).status() for m in members}
    report.lww_discarded = len({tuple(x) for st in statuses.values() for x in st["lww_lost"]})
    report.siblings_max = max(st["siblings_max"] for st in statuses.values())
    report.causality_violations = sum(st.get("causality_violations", 0) for st in statuses.values())
    result = check_lost_updates(history.values(), final)
    report.lost = result.lost
    report.details = {"summary": result.summary()}
    if resolution != "lww" and result.lost:
        raise VersionedViolation(f"{result.lost} acknowledged writes are lost under {resolution!r}: {result.summary()}")
    if resolution == "lww" and result.lost > report.lww_discarded:
        raise VersionedViolation(f"LWW lost {result.lost} acknowledged writes but the store counted only "
                                 f"{report.lww_discarded} discarded: a silent loss")
    if protocol == "multi-leader" and causal and report.causality_violations:
        raise VersionedViolation(f"{report.causality_violations} entries were applied before one of their causes")
