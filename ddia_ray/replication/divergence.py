"""Divergence in a leader-follower group: a follower resynced from a checkpoint, and the writes it discards.

Theory of operation
-------------------
A follower checks that the entry before an append is the one the leader has there (epoch and
lsn, Raft's log matching; :meth:`~.leader_follower.LeaderFollowerReplica._on_append`). When it is
not, the follower's log holds entries that the current history does not: the tail of a deposed
leader. Those entries are already applied to its state, so rather than undo them it asks the
leader for a :class:`~.records.Checkpoint` of its state and installs it, as a new follower does
(PostgreSQL's ``pg_rewind`` and a fresh base backup are the two ways out of the same corner; this
one is the base backup). A follower whose state is damaged asks the same way.

What the install discards is reported. Entries that may have been acknowledged are *lost
writes*, counted and listed with their keys in the replica's status (the GitHub incident of
DDIA 5.1); which entries those are, and why sync and semi-sync never lose an acknowledged one, is
:meth:`Divergence._count_lost`'s argument. A write reported lost that a later leader still held
and sent again was not lost: the report is corrected (:meth:`Divergence._found_again`), so the
count is only of writes no history holds.

The leader pins the log tail after each checkpoint it sends, so that a follower installing it
under steady writes continues from the log rather than needing checkpoint after checkpoint
(:meth:`~.leader_follower.LeaderFollowerReplica._compact`).
"""

from __future__ import annotations

import bisect

from .._validate import invariant
from ..errors import StorageError
from ..runtime.core import Rewrite
from .failover import LEADER
from .ingest import ingest_puts
from .records import AppendAck, Base, Checkpoint, CheckpointRequest, LostWrites, ReplicaMeta
from .replica_parts import ReplicaPart

__all__ = ["Divergence", "epoch_in"]


def epoch_in(epochs: list, lsn: int) -> int:
    """The epoch of ``lsn`` in an epoch history ``[(epoch, first lsn), ...]`` (0 before the first)."""
    i = bisect.bisect_right(epochs, lsn, key=lambda p: p[1]) - 1
    return epochs[i][0] if i >= 0 else 0


class Divergence(ReplicaPart):
    """Checkpoints sent and installed, and the lost writes an install finds: a part of
    :class:`~.leader_follower.LeaderFollowerReplica` (see the module docstring).

    It reads and writes the core's log (``log``, ``base_lsn``, ``base_epoch``, ``epochs``), its
    ``state`` and ``pins``, the resync flags (``_resyncing``, ``_resync_asked_at``,
    ``_needs_checkpoint``), the leader's ``_next`` and ``_pins``, and the lost-write report
    (``lost``, ``lost_writes``, ``_lost_index``).
    """

    # --- leader: checkpoints for followers -------------------------------------------------------

    def _send_checkpoint(self, peer: str) -> None:
        lsn = self.state.applied
        try:
            data = self.state.export(f"{self.node_id}-{self.epoch}-{lsn}")
        except (StorageError, OSError) as e:  # the follower asks again; the leader keeps serving
            self.counters["checkpoint_failures"] += 1
            self.last_checkpoint_error = f"export: {e}"
            return
        self.counters["checkpoints_sent"] += 1
        self.send(peer, Checkpoint(self.epoch, lsn, self.epoch_at(lsn), tuple(self.epochs), data))
        self._next[peer] = lsn + 1
        pin = self._pins.get(peer)
        self._pins[peer] = [min(lsn, pin[0]) if pin else lsn, self.ticks]  # the oldest it may still install

    def _on_checkpoint_request(self, src: str, req: CheckpointRequest) -> None:
        if self._leading() and req.epoch <= self.epoch:
            self._send_checkpoint(src)

    # --- follower: resync from a checkpoint --------------------------------------------------

    def _request_resync(self, leader: str) -> None:
        self._resyncing = True
        self._resync_asked_at = self.ticks
        self.send(leader, CheckpointRequest(self.epoch))

    def _on_checkpoint(self, src: str, cp: Checkpoint) -> None:
        if cp.epoch < self.epoch or self.role == LEADER:
            return
        self._adopt_epoch(cp.epoch, src)
        if not (self._resyncing or self._needs_checkpoint) and self.base_lsn <= cp.lsn <= self.last_lsn \
                and self.epoch_at(cp.lsn) == cp.lsn_epoch \
                and (cp.lsn == self.last_lsn or self.epoch_at(cp.lsn + 1) >= cp.epoch):
            # Already past it in the same history (a newer checkpoint, or the log, got here first):
            # installing it would only move this replica back. Say where it is instead. (Entries
            # after it of an older epoch than the checkpoint's are a deposed leader's tail, which
            # the install must replace: the new leader's history after cp.lsn is its own epoch's.)
            self.send(src, AppendAck(self.epoch, True, self.last_lsn, self.last_epoch))
            return
        try:
            self.pins.close_all()  # their views belong to the state being replaced
            self.state.install(cp.data)
        except (StorageError, OSError) as e:  # gone or damaged on the way: asked again next watch period
            self.counters["checkpoint_failures"] += 1
            self.last_checkpoint_error = f"install: {e}"
            return
        self._count_lost(cp)
        theirs = [tuple(p) for p in cp.epochs]
        self._found_again(lambda e, lsn: lsn <= cp.lsn and epoch_in(theirs, lsn) == e)
        invariant(self.state.applied == cp.lsn, "a checkpoint's state is at its lsn")
        self._needs_checkpoint = False
        self.log.clear()
        self.base_lsn, self.base_epoch = cp.lsn, cp.lsn_epoch
        self.epochs = [tuple(p) for p in cp.epochs]
        self._resyncing = False
        self.counters["checkpoints_installed"] += 1
        self.persist(Rewrite((ReplicaMeta(self.epoch, self.incarnation), self._lost_record(),
                              Base(cp.lsn, cp.lsn_epoch, tuple(self.epochs), self.state.snapshot()))))
        if self.observer is not None:
            self.observer(self.node_id, "install", (cp.epoch, cp.lsn))
        self.send(src, AppendAck(self.epoch, True, self.last_lsn, self.last_epoch))

    def _count_lost(self, cp: Checkpoint) -> None:
        """Entries of ours that the leader's history does not hold: discarded now, and counted and
        listed as lost writes (they may have been acknowledged) unless the failover quorum
        protected them, so that no acknowledged write is dropped uncounted.

        *Counted:* an entry written with ``acks == 0`` (answered on the leader's own persist), and
        in async mode every entry, whatever its ``acks``: async's ``k`` is 0, its probe quorum one
        replica, so it protects no write; a write that asked for ``acks`` followers was answered
        once they had it, and a failover to a replica without it discards it (see "Leadership" in
        docs/replication.md). An entry discarded so may also be one never answered (its leader
        stopped first): the count errs on that side, never the other.

        *Not counted, because it cannot have been acknowledged:* an entry of a mode with ``k >= 1``
        (sync, semi-sync; its ``acks >= k``). Acknowledged, it lived on ``k + 1`` replicas, and each
        later leader's probe quorum (``n - k``; membership changes keep this, :mod:`.membership`)
        held one of them that had it when it answered: it adopted the candidate's epoch first, so
        no old leader gathered an acknowledgement behind the probe's back. The candidate led only
        if no answer had a later last entry than its own (a peer ahead is waited for or caught up
        with, never passed over: :meth:`~.failover.Failover._finish_probe`), so its history held
        the entry; a leader by transfer was handed the lease only once it had every entry. By
        induction every later leader's history holds it, so one the leader's history lacks was
        never answered.
        """
        theirs = [tuple(p) for p in cp.epochs]
        for epoch, lsn, ops, acks, _ in self.log:
            if lsn <= cp.lsn and epoch_in(theirs, lsn) == epoch:
                continue
            if epoch >= cp.epoch:
                continue  # the leader's own epoch: it has or will send these (cannot differ)
            if ops and (acks == 0 or self.default_acks == 0):
                self.lost_writes += 1
                # Every key the write held: a client's many puts travel as one ingest (ingest.puts_op).
                self.lost.append((epoch, lsn, tuple(op[1] for op in ingest_puts(ops))))
                if self.observer is not None:
                    self.observer(self.node_id, "lost", (epoch, lsn))

    # --- lost writes --------------------------------------------------------------------------

    def _lost_record(self) -> LostWrites:
        return LostWrites(self.lost_writes, tuple(self.lost))

    @property
    def _lost_at(self) -> set:
        """The positions listed as lost (rebuilt only when the list changed)."""
        if self._lost_index is None or self._lost_index[0] != (len(self.lost), self.lost_writes):
            self._lost_index = ((len(self.lost), self.lost_writes), {(e, lsn) for e, lsn, _ in self.lost})
        return self._lost_index[1]

    def _drop_lost(self, held, count: bool = True) -> list:
        """Remove the listed lost writes at positions ``held(epoch, lsn)`` says a history holds; their
        positions. The count drops with them (unless ``count`` is False: a replayed record's did)."""
        found = [(e, lsn) for e, lsn, _ in self.lost if held(e, lsn)]
        if found:
            kept = [x for x in self.lost if (x[0], x[1]) not in set(found)]
            self.lost.clear()
            self.lost.extend(kept)
            self.lost_writes -= len(found) if count else 0
            self._lost_index = None
        return found

    def _found_again(self, held) -> None:
        """Writes reported lost are in this replica's history after all: a follower discarded them
        when it installed the checkpoint of a leader that lacked them, and a later leader that
        still held them sent them again. They were not lost; the report is corrected and the
        correction persisted, so "lost" counts only writes no history holds (the simulation checks
        that no write reported lost is in the final history)."""
        found = self._drop_lost(held)
        if found:
            self.persist(LostWrites(-len(found), (), tuple(found)))
            if self.observer is not None:
                for pos in found:
                    self.observer(self.node_id, "found", pos)
