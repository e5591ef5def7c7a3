"""Seeded runs of a partitioned store's splits, merges and moves under faults, with their checks.

Theory of operation
-------------------
:func:`simulate` puts ``groups`` replica groups on one :class:`~ddia_ray.runtime.SimNetwork`: Raft
groups (:class:`~ddia_ray.replication.raft_replica.RaftReplica` cores over a dict state; the
default) or, with ``protocol="leader_follower"``, leader-follower groups (see below). The
partition map is held by the simulation, a coordination service with compare-and-set. Simulated
partition-aware clients route as :mod:`.client` does: a cached map, stored keys, the map's
version as every request's fence; when a group refuses (the map changed) they read the map again
and send a new request, and after a silence or a NotLeader answer they send the same request
again (the same session sequence number: it applies once). Every written value is unique. An
operator runs random splits, merges and moves one after another with :class:`~.mover.Mover`, the
protocol of :mod:`.changes`, while a seeded schedule drops, delays and duplicates messages,
isolates, crashes (some in the middle of a write), restarts and pauses replicas, and takes a
majority of one group down now and then; every fault ends within 1.5 s, so each group has a
majority again. The
coordinator fails a compare-and-set now and then with an unknown outcome (applied or not). The
clients, the operator and the fault schedule are in :mod:`.sim_actors`, the groups and the way
each protocol names a group's record in :mod:`.sim_groups`.

(b), checked after every event of the network:

* no key is owned *writable* by two groups. Under Raft a group's record is the one in the state
  of the replica that has applied the most of its log: applied entries are committed and the
  record at a log position never changes, so a record applied anywhere is the group's, for good
  (it never goes back to an older version);
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

Leader-follower groups
----------------------
Each group is ``replicas`` :class:`~ddia_ray.replication.leader_follower.LeaderFollowerReplica` cores
over a dict state (lease 0.5 s, heartbeats every 30 ms, a 60 ms position probe, logs compacted past
300 entries so lagging replicas install checkpoints); their leases live in one coordination
service of three RaftKV members that all groups share, each group under its own key. The fault
schedule is the same and hits only the groups' replicas: the coordination service is never
crashed or paused, but its links are as lossy as the rest, and an isolated replica loses it too.
In the simulator a paused node's ticks stop, so a leader paused past its lease resumes believing
the lease still holds: a *deposed* leader, until an append refused with a newer epoch or the
lease key tells it. What changes:

* the clients send the same request again after ``WriteOutcomeUnknownError`` (the leader stopped
  leading with the write unacknowledged), as the replicated client does; ownership records are
  acknowledged as :meth:`~ddia_ray.replication.store.ReplicatedStore.set_ownership` asks: by the
  mode's acknowledgements, and in async mode by every follower;
* (b): the leader checks a write when it orders it, against its own state, so a group's record is
  its *current leader's*: the replica leading the group's newest epoch while its lease holds by
  its own ticks (none: the group takes no write). A deposed leader's older record is not the
  group's; its refusal of a key at the client's map version is not counted as a disagreement
  (the client asks the group's leader again). A published map is checked against each group's
  newest *acknowledged* record. Records may go back (a new leader lacks a record its predecessor
  ordered and no one acknowledged), so instead: no two replicas lead, or acknowledge writes in,
  one epoch of a group, and a replica that starts to lead holds every entry its group
  acknowledged;
* after healing, every replica catches up with its group's leader and holds the leader's state,
  each final leader holds every acknowledged entry, and no entry a replica reported lost is in
  its group's final history.

Modes (``mode=``): ``"sync"``, the default: every check, under the whole fault schedule (a
write is acknowledged once every member has it, so any replica that can lead holds it, however
many are faulty). ``"semi-sync"`` (one follower): every check, with one fault at a time (each
fault ends before the next begins, and an outage takes one replica, not two), the setting in
which the mode promises to lose no acknowledged write (as ``single_failure`` in
:mod:`ddia_ray.replication.simulation`): with overlapping faults a candidate that has deferred for
two leases to a peer ahead takes the lease without that peer's entries, a documented choice of
the core. One gap of the core is known even so, not met by the seeds the tests run (a seed that
meets it fails the acknowledged-entry check): a deposed leader's write, acknowledged by a follower
that has not yet heard of the newer epoch (the probe that elected the new leader does not fence
it), is then dropped by the new leader's history without a lost-write report; sync mode has no
such gap, since every follower, the new leader among them, must acknowledge a write. ``"async"``, under the whole
schedule: a write is acknowledged once the leader alone has it, so a failover loses
acknowledged writes by design, reported by the replica that discards them (the mover's copies
too: the store moves data with the group's mode). Check (a) then leaves out the keys of reported
lost writes: their final value must still be one written and not refused, but not the last
acknowledged one; "holds every acknowledged entry" covers only the ownership records, which
every follower acknowledges.

Any violation raises :class:`PartitionViolation`; run through :func:`~ddia_ray.runtime.simnet.run_seeds`,
a failing seed prints its replay command.
"""

from __future__ import annotations

import collections
import math
import random
from typing import Any

from ..errors import ConfigError
from ..replication.leader_follower import MODES
from ..replication.ownership import ReplOwnership
from ..replication.records import ReplScan
from ..runtime import SimNetwork
from .keyspace import stored_key, user_key
from .partition_map import PartitionMap, initial_map, ownership_of
from .sim_actors import (STORE, Call, FaultSchedule, GroupCalls, Operator, PartitionSimReport, PartitionViolation,
                         RoutedClient, Write, base_links)
from .sim_groups import Groups, add_groups

__all__ = ["simulate", "PartitionSimReport", "PartitionViolation"]

_STEP_S = 0.005  # clients, operator and fault schedule look at the network this often


class _Coordinator:
    """The map's coordination service: reads and compare-and-set, each publish checked."""

    def __init__(self, pmap: PartitionMap, owners: Groups):
        self.map, self.owners = pmap, owners

    def cas(self, old: PartitionMap, new: PartitionMap) -> bool:
        if self.map != old:
            return False
        self.owners.check_published(old, new)
        self.map = new
        return True


def simulate(seed: int, *, protocol: str = "raft", mode: str | None = None, groups: int = 3, replicas: int = 3,
             scheme: str = "range", clients: int = 4, keys: int = 24, duration_s: float = 4.0,
             faults: bool = True) -> PartitionSimReport:
    """One seeded run (see the module docstring); raises :class:`PartitionViolation` on any violation.

    ``protocol``: ``"raft"`` (the default) or ``"leader_follower"``, whose ``mode`` is ``"sync"``
    (the default), ``"semi-sync"`` (one follower) or ``"async"``."""
    mode = _mode(protocol, mode)
    rng = random.Random(seed)
    sim = SimNetwork(seed, tick_s=0.01)
    base_links(sim)
    names = {f"g{i}": [f"g{i}r{j}" for j in range(1, replicas + 1)] for i in range(1, groups + 1)}
    owners = add_groups(sim, names, seed, protocol, mode)
    # As the store does (ReplicatedStore.set_ownership): an async group's records are acknowledged by
    # every follower, so that no failover loses one; otherwise the mode's acknowledgements suffice.
    record_acks = replicas - 1 if mode == "async" else -1
    user_keys = [b"k%03d" % i for i in range(keys)]
    cuts = [user_keys[len(user_keys) * i // groups] for i in range(1, groups)]
    pmap = initial_map(scheme, tuple(names), **({"boundaries": cuts} if scheme == "range" else
                                                {"partitions": 2 * groups}))
    report = PartitionSimReport(seed, scheme, protocol, mode)
    coord = _Coordinator(pmap, owners)
    net = GroupCalls(sim, names, random.Random(rng.getrandbits(32)), owners.deposed)

    def run(seconds: float) -> None:
        sim.run_until(owners.observe, seconds)

    for g in names:  # every group learns its partitions before any client can see the map
        first = net.call("setup", g, ReplOwnership(ownership_of(pmap, g, STORE), record_acks), 10.0)
        while not net.poll(first):
            run(_STEP_S)
        if not first.ok:
            raise PartitionViolation(f"group {g} did not take its first record: {first.error!r}")
    history: dict[bytes, dict[bytes, Write]] = {}
    cls = [RoutedClient(f"c{i}", net, coord, user_keys, random.Random(rng.getrandbits(32)), history, report)
           for i in range(clients)]
    operator = Operator(net, coord, random.Random(rng.getrandbits(32)), user_keys, report, faults, record_acks)
    # Semi-sync promises to lose no acknowledged write only while one replica at most is faulty.
    schedule = FaultSchedule(sim, random.Random(rng.getrandbits(32)), names, report, owners.is_leader,
                             single=mode == "semi-sync")
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
    owners.settle(run)
    lost = owners.check_end(report)
    _check_final(sim, run, net, coord, history, user_keys, report, {k for k in user_keys
                                                                   if stored_key(scheme, k) in lost})
    report.map_version, report.partitions = coord.map.version, len(coord.map.partitions)
    return report


def _mode(protocol: str, mode: str | None) -> str:
    """The replication mode a run uses (``"raft"`` for Raft groups)."""
    if protocol == "raft":
        if mode not in (None, "raft"):
            raise ConfigError(f"Raft groups have no replication mode; got mode={mode!r}")
        return "raft"
    if protocol != "leader_follower":
        raise ConfigError(f"unknown replication protocol {protocol!r}; use 'raft' or 'leader_follower'")
    if mode is None:
        return "sync"
    if mode not in MODES:
        raise ConfigError(f"unknown leader-follower mode {mode!r}; use one of {MODES}")
    return mode


def _check_final(sim: SimNetwork, run, net: GroupCalls, coord: _Coordinator, history: dict, keys: list,
                 report: PartitionSimReport, excused: set) -> None:
    """Checks (a), (c) and (d) of the module docstring, through a routing client; (a) does not hold
    the keys in ``excused`` (their acknowledged writes were reported lost) to the last write."""
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
        if key in excused:
            acked = []  # a lost write, reported: only what a read returns is checked (written, not refused)
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
