"""Seeded runs of a partitioned store's splits, merges and moves under faults, with their checks.

Theory of operation
-------------------
:func:`simulate` puts ``groups`` Raft replica groups (:class:`~ddia_ray.replication.raft_replica.RaftReplica`
cores over a dict state) on one :class:`~ddia_ray.runtime.SimNetwork`. The partition map is held
by the simulation, a coordination service with compare-and-set. Simulated partition-aware
clients route as :mod:`.client` does: a cached map, stored keys, the map's version as every
request's fence; when a group refuses (the map changed) they read the map again and send a new
request, and after a silence or a NotLeader answer they send the same request again (the same
session sequence number: it applies once). Every written value is unique. An operator runs
random splits, merges and moves one after another with :class:`~.mover.Mover`, the protocol of
:mod:`.changes`, while a seeded schedule drops, delays and duplicates messages, isolates, crashes
(some in the middle of a write), restarts and pauses replicas, and takes a majority of one group
down now and then; every fault ends within 1.5 s, so each group has a majority again. The
coordinator fails a compare-and-set now and then with an unknown outcome (applied or not). The
clients, the operator and the fault schedule are in :mod:`.sim_actors`.

(b), checked after every event of the network:

* no key is owned *writable* by two groups. A group's record is the one in the state of the
  replica that has applied the most of its log: applied entries are committed and the record at
  a log position never changes, so a record applied anywhere is the group's, for good;
* every published map tiles the key space, is one version above the map it replaced, and each of
  its partitions is owned, writable, by its group's record.

As the run goes, too: a read returns None or a value written to that key, and no group refuses a
key as not its own at the very map version the client routed with (map and records disagree).

After healing, once the last change has ended and every client's operation has an outcome:

* (a) every acknowledged write is readable: a key's final value was written by a write that no
  group refused, and no acknowledged write of the key began after that write was acknowledged
  (it is the last acknowledged write, or a later or concurrent one whose outcome is unknown);
* (c) a scan routed by the final map, partition by partition in small pages, returns each key
  once, the range scheme's in order, with the values the reads gave;
* (d) a final write is acknowledged (liveness), as is every change: one that could neither finish
  nor be abandoned is a violation.

Any violation raises :class:`PartitionViolation`; run through :func:`~ddia_ray.runtime.simnet.run_seeds`,
a failing seed prints its replay command.
"""

from __future__ import annotations

import collections
import math
import random
from typing import Any

from ..replication.ownership import ReplOwnership
from ..replication.raft_replica import RaftReplica
from ..replication.records import ReplScan
from ..runtime import SimNetwork
from .keyspace import user_key
from .partition_map import PartitionMap, initial_map, ownership_of
from .sim_actors import (STORE, Call, FaultSchedule, GroupCalls, Operator, PartitionSimReport, PartitionViolation,
                         RoutedClient, Write, base_links)

__all__ = ["simulate", "PartitionSimReport", "PartitionViolation"]

_STEP_S = 0.005  # clients, operator and fault schedule look at the network this often


class _Coordinator:
    """The map's coordination service: reads and compare-and-set, each publish checked."""

    def __init__(self, pmap: PartitionMap, owners: "_Owners"):
        self.map, self.owners = pmap, owners

    def cas(self, old: PartitionMap, new: PartitionMap) -> bool:
        if self.map != old:
            return False
        self.owners.check_published(old, new)
        self.map = new
        return True


class _Owners:
    """Each group's ownership record, as its most advanced replica applied it; checks (b)."""

    def __init__(self, sim: SimNetwork, groups: dict[str, list[str]]):
        self.sim, self.groups = sim, groups
        self.best: dict[str, tuple[int, Any]] = {g: (-1, None) for g in groups}

    def observe(self) -> bool:
        """Look at every replica (after every event: ``run_until``'s condition); always False."""
        changed = False
        for g, reps in self.groups.items():
            applied, rec = self.best[g]
            for r in reps:
                node = self.sim.nodes[r]
                if node.alive and node.core.state.applied > applied:
                    applied, own = node.core.state.applied, node.core.machine.ownership()
                    if own != rec:
                        if rec is not None and (own is None or own.version < rec.version):
                            raise PartitionViolation(f"group {g}'s record went back from version {rec.version} to "
                                                     f"{own and own.version} (replica {r}, index {applied})")
                        rec, changed = own, True
            self.best[g] = (applied, rec)
        if changed:
            self.check_disjoint()
        return False

    def check_disjoint(self) -> None:
        """No key is owned writable by two groups."""
        spans = sorted((r.start, r.end, g, r.pid, rec.version) for g, (_, rec) in self.best.items() if rec
                       for r in rec.ranges if r.writable)
        for a, b in zip(spans, spans[1:]):
            if a[1] is None or a[1] > b[0]:
                raise PartitionViolation(
                    f"at {self.sim.now_s:.3f} s keys from {b[0]!r} are owned writable by group {a[2]} (partition "
                    f"{a[3]}, record version {a[4]}) and by group {b[2]} (partition {b[3]}, record version {b[4]})")

    def check_published(self, old: PartitionMap, new: PartitionMap) -> None:
        """A map about to be published tiles the key space, follows ``old``, and its groups own it."""
        parts = new.partitions
        if new.version != old.version + 1:
            raise PartitionViolation(f"map version {new.version} published over version {old.version}")
        if parts[0].start != b"" or parts[-1].end is not None or any(a.end != b.start for a, b in zip(parts,
                                                                                                       parts[1:])):
            raise PartitionViolation(f"map version {new.version} does not tile the key space: {parts}")
        for p in parts:
            rec = self.best[p.group][1]
            r = rec.range(p.id) if rec else None
            if r is None or (r.start, r.end) != (p.start, p.end) or not r.writable:
                raise PartitionViolation(f"map version {new.version} gives partition {p.id} [{p.start!r}, {p.end!r}) "
                                         f"to group {p.group}, whose record {rec} does not own it writable")


def simulate(seed: int, *, groups: int = 3, replicas: int = 3, scheme: str = "range", clients: int = 4,
             keys: int = 24, duration_s: float = 4.0, faults: bool = True) -> PartitionSimReport:
    """One seeded run (see the module docstring); raises :class:`PartitionViolation` on any violation."""
    rng = random.Random(seed)
    sim = SimNetwork(seed, tick_s=0.01)
    base_links(sim)
    names = {f"g{i}": [f"g{i}r{j}" for j in range(1, replicas + 1)] for i in range(1, groups + 1)}
    for g, reps in names.items():
        for r in reps:
            sim.add(r, lambda n, recovered=(), tick_s=0.01, g=g, reps=reps: RaftReplica(
                n, recovered=recovered, tick_s=tick_s, group=g, voters=reps, seed=seed, snapshot_entries=300,
                raft={"election_ticks": 10, "heartbeat_ticks": 2}))
    user_keys = [b"k%03d" % i for i in range(keys)]
    cuts = [user_keys[len(user_keys) * i // groups] for i in range(1, groups)]
    pmap = initial_map(scheme, tuple(names), **({"boundaries": cuts} if scheme == "range" else
                                                {"partitions": 2 * groups}))
    report = PartitionSimReport(seed, scheme)
    owners = _Owners(sim, names)
    coord = _Coordinator(pmap, owners)
    net = GroupCalls(sim, names, random.Random(rng.getrandbits(32)))

    def run(seconds: float) -> None:
        sim.run_until(owners.observe, seconds)

    for g in names:  # every group learns its partitions before any client can see the map
        first = net.call("setup", g, ReplOwnership(ownership_of(pmap, g, STORE)), 10.0)
        while not net.poll(first):
            run(_STEP_S)
        if not first.ok:
            raise PartitionViolation(f"group {g} did not take its first record: {first.error!r}")
    history: dict[bytes, dict[bytes, Write]] = {}
    cls = [RoutedClient(f"c{i}", net, coord, user_keys, random.Random(rng.getrandbits(32)), history, report)
           for i in range(clients)]
    operator = Operator(net, coord, random.Random(rng.getrandbits(32)), user_keys, report, faults)
    schedule = FaultSchedule(sim, random.Random(rng.getrandbits(32)), names, report)
    end_s = sim.now_s + duration_s
    while sim.now_s < end_s:
        run(_STEP_S)
        for c in cls:
            c.poll(sim.now_s, stop=False)
        operator.poll(sim.now_s, stop=False)
        if faults:
            schedule.poll(sim.now_s)
    schedule.heal_all()
    settle_s = sim.now_s + 30.0
    while (operator.mover is not None or any(c.op for c in cls)) and sim.now_s < settle_s:
        run(_STEP_S)
        for c in cls:
            c.poll(sim.now_s, stop=True)
        operator.poll(sim.now_s, stop=True)
    if operator.mover is not None:
        raise PartitionViolation(f"the last change ({operator.mover.kind}) did not end within 30 s of healing; it "
                                 f"is in phase {operator.mover.phase}")
    _check_final(sim, run, net, coord, history, user_keys, report)
    report.map_version, report.partitions = coord.map.version, len(coord.map.partitions)
    return report


def _check_final(sim: SimNetwork, run, net: GroupCalls, coord: _Coordinator, history: dict, keys: list,
                 report: PartitionSimReport) -> None:
    """Checks (a), (c) and (d) of the module docstring, through a routing client."""
    checker = RoutedClient("checker", net, coord, keys, random.Random(0), history, report)
    scan: Call

    def sync(kind: str, key: bytes, value: bytes | None = None) -> Any:
        checker.begin(kind, key, value)
        for _ in range(4):  # a few operation deadlines: the groups are healed, they answer
            while checker.op is not None:
                run(_STEP_S)
                checker.poll(sim.now_s, stop=True)
            if checker.last[0] == "ok":
                return checker.last[1]
            checker.begin(kind, key, value)
        raise PartitionViolation(f"no progress after healing: a {kind} of {key!r} ended {checker.last}")

    final = {k: sync("read", k).values[0] for k in keys}
    for key, writes in history.items():
        acked = [w for w in writes.values() if w.status == "ok"]
        v = final[key]
        if v is None:
            if acked:
                raise PartitionViolation(f"key {key!r} lost every write: {len(acked)} were acknowledged, the last "
                                         f"{acked[-1].value!r} at {acked[-1].acked_s:.3f} s; it reads None")
            continue
        w = writes[v]
        if w.status == "refused":
            raise PartitionViolation(f"key {key!r} reads {v!r}, a write every group refused")
        done_s = w.acked_s if w.acked_s is not None else math.inf
        later = [a for a in acked if a.invoked_s > done_s]
        if later:
            lost = later[-1]
            raise PartitionViolation(f"key {key!r} lost an acknowledged write: {lost.value!r} (begun at "
                                     f"{lost.invoked_s:.3f} s, acknowledged at {lost.acked_s:.3f} s) came after "
                                     f"{v!r} (acknowledged at {done_s:.3f} s), yet the key reads {v!r}")
    pmap, cursor, seen = coord.map, b"", []
    while True:
        p = next(q for q in pmap.partitions if q.end is None or cursor < q.end)
        scan = net.call("checker", p.group, ReplScan(cursor, p.end, 3, "linearizable", fence=pmap.version), 5.0)
        while not net.poll(scan):
            run(_STEP_S)
        if not scan.ok:
            raise PartitionViolation(f"the final scan of partition {p.id} in {p.group} failed: {scan.error!r}")
        page = scan.result
        seen += [(user_key(pmap.scheme, k), v) for k, v in zip(page.keys, page.values)]
        if page.more and page.keys:
            cursor = page.keys[-1] + b"\x00"
        elif p.end is None:
            break
        else:
            cursor = p.end
    got = [k for k, _ in seen]
    twice = sorted(k for k, n in collections.Counter(got).items() if n > 1)
    if twice:
        raise PartitionViolation(f"the final scan returned keys more than once: {twice[:5]}")
    if pmap.scheme == "range" and got != sorted(got):
        raise PartitionViolation(f"the final scan of a range-partitioned store is out of key order: {got[:10]}")
    wrong = [(k, v, final.get(k)) for k, v in seen if final.get(k) != v]
    missing = sorted(k for k, v in final.items() if v is not None and k not in set(got))
    if wrong or missing:
        raise PartitionViolation(f"the final scan disagrees with the reads: (key, scanned, read) {wrong[:3]}, "
                                 f"missing {missing[:5]}")
    sync("write", keys[0], b"final")
    if sync("read", keys[0]).values[0] != b"final":
        raise PartitionViolation("the final write was acknowledged but is not read back")
