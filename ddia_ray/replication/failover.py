"""Failover of a leader-follower group: how a follower takes the lapsed lease, and with what history.

Theory of operation
-------------------
The lease is one key in the coordination service whose value is ``(epoch,
holder, renewal, members)`` (:func:`_lease_value`; the leader's renewals and the
fencing: :mod:`.leader_follower`). A follower reads it every ``watch_s``; a
value that has not changed for ``lease_s * (1 + drift)`` of its own time has
lapsed, and the follower becomes a *candidate*:

1. **Probe.** It asks its peers for their log positions and waits ``probe_s``.
   Its probe names the epoch it will claim, and a peer adopts that epoch
   (persisted) before it answers, as a Raft voter adopts a vote's term: from
   then on the peer refuses the old leader's appends, so the position it
   reported stays its last one of the old history.
2. **Quorum.** It goes on only if ``n - k`` replicas (itself included)
   answered, where ``k`` is the mode's follower acknowledgements: a write
   acknowledged by ``k`` followers lives on ``k + 1`` replicas, so such a set
   holds at least one of them. (Async: ``k = 0`` and a quorum of one; it
   protects no write, and what a failover discards is counted as lost.)
3. **Nobody ahead.** A peer that answered with a later last entry holds
   entries the candidate lacks, which may have been acknowledged: the
   candidate never takes the lease past it. It leaves the lease to that peer
   for ``defer_s`` (two leases: long enough for a peer that has just restarted
   to see the lapse itself and win). If no one has taken the lease by then
   (the peer ahead is cut off from the coordination service, restarts again
   and again, or must not lead: its state needs a checkpoint), it *catches
   up*: its next probes name its last entry, a peer whose log holds that
   entry answers with the entries after it, and the candidate appends those
   of the most advanced answer before its round ends (:meth:`Failover._catch_up`).
   A peer with the *same* last entry (the same history) and an earlier place
   in ``members`` is waited for ``defer_s``, then passed over: it holds
   nothing the candidate lacks.
4. **Compare-and-set.** It takes the lease with ``cas(old value -> (epoch,
   itself, 0))``, ``epoch`` above the old value's: exactly one candidate wins
   each epoch. The winner appends an empty entry of its epoch, which marks
   where its history starts, and leads.

Step 3 is what makes a leader's history hold every write the quorum protects
(the argument: :meth:`~.leader_follower.LeaderFollowerReplica._count_lost`).
Its price is liveness in three corners, where no one takes the lease until the
peer ahead can lead itself (or a replica that can catch up from it does): the
candidate's log holds a deposed leader's tail that the peer's history replaced
(its state has applied that tail, so entries cannot fix it; it would need a
checkpoint), the entries it lacks were compacted out of the peer's log, or the
peer runs a version that sends no entries.
"""

from __future__ import annotations


from .. import codec
from .._validate import invariant
from ..errors import CorruptRecordError
from .records import PositionProbe, PositionReport, append_slice
from .replica_parts import ReplicaPart

__all__ = ["Failover", "FOLLOWER", "CANDIDATE", "LEADER"]

FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"


def _lease_value(epoch: int, holder: str, renewal: int, members: tuple = ()) -> bytes:
    """The lease key's value: who holds the lease, under which epoch, at which renewal, for which
    members (see :mod:`.membership`; empty: the members the group was launched with)."""
    return codec.encode((epoch, holder, renewal, tuple(members)))


def _decode_lease(raw: bytes) -> tuple[int, str, int, tuple]:
    """A value written by :func:`_lease_value` (a 3-tuple from before membership changes reads as
    having no member list); anything else under the key is damage, refused."""
    value = codec.decode(raw)
    if isinstance(value, tuple) and len(value) == 3:
        value = (*value, ())
    if not (isinstance(value, tuple) and len(value) == 4 and type(value[0]) is int and value[0] >= 0
            and isinstance(value[1], str) and type(value[2]) is int and isinstance(value[3], tuple)
            and all(isinstance(m, str) and m for m in value[3]) and len(set(value[3])) == len(value[3])):
        raise CorruptRecordError(f"the lease key holds {value!r:.200}, not (epoch, holder, renewal, members)")
    return value


class Failover(ReplicaPart):
    """The lease's watch, the probe round and the takeover: a part of
    :class:`~.leader_follower.LeaderFollowerReplica` (see the module docstring).

    It reads and writes the core's ``role``, ``epoch``, ``leader``, ``_lease_raw``,
    ``_lease_seen_at``, ``_probe`` (None, or the round under way: ``seq``, ``until``, ``answers``,
    and ``last``, the position it asked a tail after), ``_probe_seq`` and ``_deferred_since``, and
    appends to its log as a follower does.
    """

    def _on_probe(self, src: str, probe: PositionProbe) -> None:
        # The candidate's claim is adopted (and persisted) before the answer leaves: from the
        # moment this replica tells a candidate its position, it takes no entry of an older epoch.
        self._adopt_epoch(probe.epoch, "", probing=True)
        self.send(src, PositionReport(probe.seq, self.epoch, self.last_lsn, self.last_epoch, self._tail_after(probe)))

    def _on_position(self, src: str, report: PositionReport) -> None:
        if self._probe is not None and report.seq == self._probe["seq"]:
            self._probe["answers"][src] = report
            self._adopt_epoch(report.epoch, "", probing=True)

    def _on_lease_read(self, values: tuple | None) -> None:
        if values is None or self.role == LEADER:
            return
        raw = values[0]
        if raw != self._lease_raw:
            self._lease_raw, self._lease_seen_at = raw, self.ticks
            self._deferred_since = -1
            if raw is not None:  # a new value: held, and its lapse counts from now
                epoch, holder, _, members = _decode_lease(raw)
                if members and members != self.members:
                    self._set_members(members)
                if holder == self.node_id and epoch > self.epoch and self.role == FOLLOWER \
                        and not self._needs_checkpoint:
                    # The leader handed us the lease (a transfer; it waited until we had every entry).
                    # Count it from when this read was sent: the writer wrote it before it was read.
                    self.counters["transfers"] += 1
                    self._become_leader(epoch, raw, self._watch_sent)
                    return
                self._adopt_epoch(epoch, holder)
                if epoch == self.epoch:
                    self.leader = holder
                return
        if self._needs_checkpoint:
            return  # its state holds a write no log holds: it must not lead
        if self.node_id not in self.members:
            return  # removed, or a newcomer not yet added: never a candidate
        if raw is None or self.ticks - self._lease_seen_at >= self.lease_ticks * (1 + self.drift):
            self._start_probe()

    def _start_probe(self) -> None:
        # The claim: above the lease's epoch (so the compare-and-set from it can win), and at least every
        # epoch this replica has seen, those it adopted from probes included: an epoch a failed round
        # left behind, that nobody leads, is claimed again rather than passed over (safe: one
        # compare-and-set wins each epoch; see docs/replication.md). It adopts the claim itself too.
        old = self._lease_raw
        self._adopt_epoch(max(self.epoch, (_decode_lease(old)[0] if old is not None else 0) + 1), "")
        self._probe_seq += 1
        # After defer_s of deferring to a peer further ahead, ask for the entries after our last one.
        catch_up = self._deferred_since >= 0 and self.ticks - self._deferred_since >= self.defer_ticks
        probe = (PositionProbe(self._probe_seq, self.epoch, True, self.last_lsn, self.last_epoch) if catch_up
                 else PositionProbe(self._probe_seq, self.epoch))
        self._probe = {"seq": self._probe_seq, "until": self.ticks + self.probe_ticks, "answers": {},
                       "last": (self.last_epoch, self.last_lsn) if catch_up else None}
        self.role = CANDIDATE
        for peer in self.members:
            if peer != self.node_id:
                self.send(peer, probe)

    def _rank(self, node: str, last_epoch: int, last_lsn: int) -> tuple:
        place = self.members.index(node) if node in self.members else len(self.members)
        return (last_epoch, last_lsn, -place)

    def _finish_probe(self) -> None:
        """The round is over: take the lease, or leave it (too few answers, a peer ahead, the
        coordination client busy). A catching-up candidate first appends the tail the most
        advanced answer gave, if it continues its log (it does unless this replica moved since)."""
        probe, self._probe = self._probe, None
        assert probe is not None
        answers = probe["answers"]
        heard = 1 + len(answers)
        if heard < self.probe_quorum:
            self.counters["probes_short"] += 1
            self.role = FOLLOWER  # too few answers to be sure no acknowledged write is missing here
            return
        best = max(answers, key=lambda p: self._rank(p, answers[p].last_epoch, answers[p].last_lsn), default=None)
        if best is not None and answers[best].entries and probe["last"] == (self.last_epoch, self.last_lsn):
            self._catch_up(answers[best].entries)
        mine = self._rank(self.node_id, self.last_epoch, self.last_lsn)
        ahead = [p for p, a in answers.items() if self._rank(p, a.last_epoch, a.last_lsn) > mine]
        if self._deferred_since < 0 and ahead:
            self._deferred_since = self.ticks
        # A peer with a later last entry holds entries this replica lacks, which may have been
        # acknowledged: it is never passed over (only caught up with). One with the same last entry
        # (the same history) and an earlier place in members is waited for defer_s.
        behind = any((a.last_epoch, a.last_lsn) > mine[:2] for a in answers.values())
        if behind or (ahead and self.ticks - self._deferred_since < self.defer_ticks):
            self.counters["deferrals"] += 1
            self.role = FOLLOWER
            return
        if self.coord.busy:
            self.role = FOLLOWER
            return
        # Claim the newest epoch known: the probe's, or a higher one another candidate claimed during
        # the round (both then claim it from the same lease value, and the compare-and-set picks one).
        old, epoch = self._lease_raw, self.epoch
        invariant(epoch > (_decode_lease(old)[0] if old is not None else 0), "a claim is above the lease's epoch")
        new = _lease_value(epoch, self.node_id, 0, self.members)
        sent = self.ticks
        self.coord.call([("cas", self.lease_key, new, old)], lambda v: self._on_acquired(v, epoch, new, sent))

    def _tail_after(self, probe: PositionProbe) -> tuple:
        """The entries after a catching-up candidate's last entry, if this log holds that entry (so
        they continue the candidate's log), from the log (none if compacted away), at most
        ``max_append_entries`` and ``max_append_bytes``."""
        lsn = probe.last_lsn
        if not probe.catch_up or not self.base_lsn <= lsn < self.last_lsn or self.epoch_at(lsn) != probe.last_epoch:
            return ()
        start = lsn - self.base_lsn
        return append_slice(self.log, start, self.max_append_entries, self.max_append_bytes)

    def _catch_up(self, entries: tuple) -> None:
        """Append the entries a peer ahead gave after our last entry, as a follower appends a
        leader's (persisted before anything is sent: before the lease's compare-and-set)."""
        invariant(entries[0][1] == self.last_lsn + 1, "a peer's tail continues the candidate's log")
        for e in entries:
            self._append_entry(e)
        self._persist_entries(entries)
        self.counters["caught_up_entries"] += len(entries)

    def _on_acquired(self, values: tuple | None, epoch: int, raw: bytes, sent: int) -> None:
        if self.role != CANDIDATE or values is None or not values[0] or epoch != self.epoch:
            if self.role == CANDIDATE:
                self.role = FOLLOWER
            return
        self._become_leader(epoch, raw, sent)
