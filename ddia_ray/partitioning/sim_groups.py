"""The replica groups of :mod:`.simulation`, Raft or leader-follower, and each protocol's check (b).

Theory of operation
-------------------
:func:`add_groups` puts a store's replica groups on a :class:`~ddia_ray.runtime.SimNetwork` and
returns the object that watches them after every event of the network (its :meth:`Groups.observe`
is ``run_until``'s condition). Check (b) asks of every group *the* ownership record that decides
which writes it takes, and the two protocols decide at different places:

* **Raft** (:class:`RaftGroups`): every member checks a write when it applies the entry, and an
  applied entry is committed. So a group's record is the one in the state of the replica that
  has applied the most of its log; the record at a log position never changes, so a record
  applied anywhere is the group's for good, and it may never go back to an older version.
* **Leader-follower** (:class:`LeaderFollowerGroups`): the leader checks a write when it orders it,
  against its own state, which already holds every entry it ordered, acknowledged or not. So a
  group's record is its *current leader's*: the replica that leads the group's newest epoch (the
  last lease the coordination service granted, seen through the cores' ``lead`` events) while
  its lease holds by its own ticks. With no current leader, the group takes no write and has no
  record. A replica that leads an older epoch has been deposed without knowing it yet (a paused
  leader resumes believing its lease holds): it may still order writes against its older record,
  but they cannot be acknowledged in sync mode, since the newest epoch's leader, a member, has
  persisted its epoch and refuses its appends (semi-sync: see :mod:`.simulation`). A new leader
  may hold an older record than the last leader did, when that leader ordered a record no one
  acknowledged; what may never go is an *acknowledged* entry: when a replica starts to lead, its
  history must hold every write its group acknowledged (in async mode: every acknowledged
  ownership record, which the store asks every follower to acknowledge). A published map is
  checked against each group's newest acknowledged record, the one every later leader holds.
  The coordination service is three RaftKV members shared by the groups, each group's lease under
  its own key.
"""

from __future__ import annotations

from typing import Any, Callable

from ..kv.member import RaftMember
from ..replication.leader_follower import LEADER, LeaderFollowerReplica
from ..replication.ownership import OWNERSHIP_KEY, Ownership, OwnershipCache, decode_ownership
from ..replication.raft_replica import RaftReplica
from ..replication.records import PUT
from ..runtime import SimNetwork
from .partition_map import PartitionMap
from .sim_actors import PartitionSimReport, PartitionViolation

__all__ = ["Groups", "RaftGroups", "LeaderFollowerGroups", "add_groups", "COORDINATORS"]

#: The coordination service of leader-follower groups (their leases), shared by every group.
COORDINATORS = ("coord1", "coord2", "coord3")
_LEASE_S = 0.5  # a failover takes about 1.1 leases: well within a fault's 1.5 s
_SETTLE_S = 10.0


class Groups:
    """What both protocols' watchers share: check (b) over the records each one names."""

    def __init__(self, sim: SimNetwork, groups: dict[str, list[str]]):
        self.sim, self.groups = sim, groups

    def observe(self) -> bool:
        """Look at every replica after an event (``run_until``'s condition); always False."""
        raise NotImplementedError

    def records(self) -> dict[str, Ownership | None]:
        """Each group's record for the disjointness check."""
        raise NotImplementedError

    def record(self, group: str) -> Ownership | None:
        """The record of ``group`` that a published map must agree with."""
        raise NotImplementedError

    def is_leader(self, node: str) -> bool:
        """Whether the running replica ``node`` believes it leads (the fault schedule's favourite victim)."""
        raise NotImplementedError

    def deposed(self, group: str, node: str) -> bool:
        """Whether an answer of ``node`` comes from a leader of ``group`` that has been replaced."""
        return False

    def settle(self, run: Callable[[float], None]) -> None:
        """After healing: wait until the groups are in a state the final checks can read."""

    def check_end(self, report: PartitionSimReport) -> set[bytes]:
        """The protocol's own end-of-run checks; returns the stored keys whose acknowledged writes
        the protocol reported lost (async leader-follower), which check (a) then excuses."""
        return set()

    def check_disjoint(self) -> None:
        """No key is owned writable by two groups."""
        spans = sorted((r.start, r.end, g, r.pid, rec.version) for g, rec in self.records().items() if rec
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
            rec = self.record(p.group)
            r = rec.range(p.id) if rec else None
            if r is None or (r.start, r.end) != (p.start, p.end) or not r.writable:
                raise PartitionViolation(f"map version {new.version} gives partition {p.id} [{p.start!r}, {p.end!r}) "
                                         f"to group {p.group}, whose record {rec} does not own it writable")


class RaftGroups(Groups):
    """Raft groups: a group's record is its most advanced replica's (applied = committed)."""

    def __init__(self, sim: SimNetwork, groups: dict[str, list[str]], seed: int):
        super().__init__(sim, groups)
        self.best: dict[str, tuple[int, Any]] = {g: (-1, None) for g in groups}
        for g, reps in groups.items():
            for r in reps:
                sim.add(r, lambda n, recovered=(), tick_s=0.01, g=g, reps=reps: RaftReplica(
                    n, recovered=recovered, tick_s=tick_s, group=g, voters=reps, seed=seed, snapshot_entries=300,
                    raft={"election_ticks": 10, "heartbeat_ticks": 2}))

    def observe(self) -> bool:
        """See :meth:`Groups.observe`; a record that goes back to an older version is a violation."""
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

    def records(self) -> dict[str, Ownership | None]:
        """See :meth:`Groups.records`."""
        return {g: rec for g, (_, rec) in self.best.items()}

    def record(self, group: str) -> Ownership | None:
        """See :meth:`Groups.record`."""
        return self.best[group][1]

    def is_leader(self, node: str) -> bool:
        """See :meth:`Groups.is_leader`."""
        return self.sim.core(node).node.role == "leader"


class LeaderFollowerGroups(Groups):
    """Leader-follower groups and their coordination service: a group's record is its current
    leader's; every acknowledged entry (async: ownership record) outlives failovers."""

    def __init__(self, sim: SimNetwork, groups: dict[str, list[str]], seed: int, mode: str):
        super().__init__(sim, groups)
        self.mode = mode
        self.group_of = {r: g for g, reps in groups.items() for r in reps}
        self.newest = {g: 0 for g in groups}  # the newest epoch led in each group
        self.led: dict[tuple[str, int], str] = {}  # (group, epoch) -> the replica that led it
        self.ackers: dict[tuple[str, int], str] = {}  # (group, epoch) -> the replica that acknowledged in it
        # Per group: epoch -> the highest lsn of that epoch acknowledged (a history holding that entry
        # holds every earlier entry of the epoch: an epoch's entries are one leader's consecutive ones).
        self.acked: dict[str, dict[int, int]] = {g: {} for g in groups}
        self.acked_records: dict[str, dict[int, int]] = {g: {} for g in groups}
        self.newest_record: dict[str, tuple[int, Ownership | None]] = {g: (0, None) for g in groups}
        self.current: dict[str, tuple[str, Ownership | None]] = {g: ("", None) for g in groups}
        self._caches = {g: OwnershipCache() for g in groups}
        raft = {"election_ticks": 10, "heartbeat_ticks": 2}
        for c in COORDINATORS:
            sim.add(c, lambda n, recovered=(), tick_s=0.01: RaftMember(
                n, recovered=recovered, tick_s=tick_s, voters=COORDINATORS, seed=seed, raft=raft,
                snapshot_entries=300))
        for g, reps in groups.items():
            for r in reps:
                sim.add(r, lambda n, recovered=(), tick_s=0.01, g=g, reps=reps: LeaderFollowerReplica(
                    n, recovered=recovered, tick_s=tick_s, group=g, members=tuple(reps), coordinators=COORDINATORS,
                    mode=mode, sync_replicas=1, lease_s=_LEASE_S, heartbeat_s=0.03, probe_s=0.06,
                    retain_entries=300, observer=self._on_event))

    # --- the cores' events -------------------------------------------------------------------------

    def _on_event(self, node: str, event: str, data: Any) -> None:
        if event == "lead":
            self._on_lead(node, data)
        elif event == "ack":
            self._on_ack(node, data[0], data[1])

    def _on_lead(self, node: str, epoch: int) -> None:
        g = self.group_of[node]
        other = self.led.setdefault((g, epoch), node)
        if other != node:
            raise PartitionViolation(f"{other} and {node} both led epoch {epoch} of group {g}")
        self.newest[g] = max(self.newest[g], epoch)
        self._check_holds(g, node, f"starts to lead epoch {epoch}")

    def _on_ack(self, node: str, epoch: int, lsn: int) -> None:
        g = self.group_of[node]
        other = self.ackers.setdefault((g, epoch), node)
        if other != node:
            raise PartitionViolation(f"{other} and {node} both acknowledged writes in epoch {epoch} of group {g}")
        core = self.sim.nodes[node].core
        at = core.epoch_at(lsn)  # a retried write is answered at its first position, maybe of an older epoch
        if lsn > self.acked[g].get(at, 0):
            self.acked[g][at] = lsn
        entry = core.log[lsn - core.base_lsn - 1] if core.base_lsn < lsn <= core.last_lsn else None
        raw = next((op[2] for op in entry[2] if op[0] == PUT and op[1] == OWNERSHIP_KEY), None) if entry else None
        if raw is not None:
            if lsn > self.acked_records[g].get(at, 0):
                self.acked_records[g][at] = lsn
            if lsn > self.newest_record[g][0]:
                self.newest_record[g] = (lsn, decode_ownership(raw))

    def _check_holds(self, g: str, node: str, when: str) -> None:
        """``node``'s history holds every entry its group acknowledged (async: every record)."""
        core = self.sim.nodes[node].core
        for epoch, lsn in (self.acked_records if self.mode == "async" else self.acked)[g].items():
            if lsn > core.last_lsn or core.epoch_at(lsn) != epoch:
                raise PartitionViolation(f"{node} {when} without the entry group {g} acknowledged at (epoch {epoch}, "
                                         f"lsn {lsn}): its history has epoch {core.epoch_at(lsn)} there and ends "
                                         f"at lsn {core.last_lsn}")

    # --- check (b) ---------------------------------------------------------------------------------

    def _leader(self, g: str) -> str:
        """The replica leading ``g``'s newest epoch with a lease that holds by its own ticks, or ''."""
        node = self.led.get((g, self.newest[g]))
        if node is None:
            return ""
        n = self.sim.nodes[node]
        core = n.core
        ok = n.alive and core.role == LEADER and core.epoch == self.newest[g] and core.ticks <= core.valid_until
        return node if ok else ""

    def observe(self) -> bool:
        """See :meth:`Groups.observe`."""
        changed = False
        for g in self.groups:
            lead = self._leader(g)
            rec = self._caches[g].of(self.sim.nodes[lead].core.state.get(OWNERSHIP_KEY)) if lead else None
            if (lead, rec) != self.current[g]:
                self.current[g], changed = (lead, rec), True
        if changed:
            self.check_disjoint()
        return False

    def records(self) -> dict[str, Ownership | None]:
        """See :meth:`Groups.records`: each current leader's."""
        return {g: rec for g, (_, rec) in self.current.items()}

    def record(self, group: str) -> Ownership | None:
        """See :meth:`Groups.record`: the newest acknowledged one."""
        return self.newest_record[group][1]

    def is_leader(self, node: str) -> bool:
        """See :meth:`Groups.is_leader`."""
        return self.sim.core(node).role == LEADER

    def deposed(self, group: str, node: str) -> bool:
        """See :meth:`Groups.deposed`: ``node`` is not its group's current leader (any more)."""
        return self.current[group][0] != node

    # --- the end of a run --------------------------------------------------------------------------

    def settle(self, run: Callable[[float], None]) -> None:
        """Every group has a current leader, and every replica has that leader's last entry (so a
        deposed leader has compared its log and reported what it lost) and its state."""
        end_s = self.sim.now_s + _SETTLE_S
        while not all(self._caught_up(g) for g in self.groups):
            if self.sim.now_s > end_s:
                behind = {g: {r: self.sim.nodes[r].core.state.applied for r in reps}
                          for g, reps in self.groups.items() if not self._caught_up(g)}
                raise PartitionViolation(f"replicas did not catch up with their leaders within {_SETTLE_S} s of "
                                         f"healing: {behind} (leaders {self.current})")
            run(0.05)
        for g, reps in self.groups.items():
            lead = self.sim.nodes[self.current[g][0]].core
            for r in reps:
                if self.sim.nodes[r].core.state.data != lead.state.data:
                    raise PartitionViolation(f"{r}'s state differs from its leader {self.current[g][0]}'s at the "
                                             f"same lsn {lead.last_lsn}")

    def _caught_up(self, g: str) -> bool:
        lead = self.current[g][0]
        if not lead:
            return False
        core = self.sim.nodes[lead].core
        return all(self.sim.nodes[r].alive and self.sim.nodes[r].core.state.applied == core.last_lsn
                   and self.sim.nodes[r].core.last_epoch == core.last_epoch for r in self.groups[g])

    def check_end(self, report: PartitionSimReport) -> set[bytes]:
        """Every final leader holds every acknowledged entry, and no entry reported lost is in its
        history (the report is exact); returns the keys of the writes reported lost."""
        keys: set[bytes] = set()
        for g, reps in self.groups.items():
            lead = self.current[g][0]
            self._check_holds(g, lead, "leads at the end")
            core = self.sim.nodes[lead].core
            lost = {(epoch, lsn): k for r in reps for epoch, lsn, k in self.sim.nodes[r].core.lost}
            for (epoch, lsn), k in sorted(lost.items()):
                if lsn <= core.last_lsn and core.epoch_at(lsn) == epoch:
                    raise PartitionViolation(f"group {g} reported the entry at (epoch {epoch}, lsn {lsn}) lost, "
                                             f"but its final leader {lead} holds it")
                keys.update(k)
            report.lost_reported += len(lost)
        report.epochs = len(self.led)
        return keys


def add_groups(sim: SimNetwork, groups: dict[str, list[str]], seed: int, protocol: str, mode: str) -> Groups:
    """Add ``groups`` (group -> its replicas) of ``protocol`` (``"raft"``, or ``"leader_follower"``
    in ``mode``) to ``sim``; returns their watcher."""
    if protocol == "raft":
        return RaftGroups(sim, groups, seed)
    return LeaderFollowerGroups(sim, groups, seed, mode)
