"""Which replica of a leader-follower group may serve which read, and from what state.

Theory of operation
-------------------
A read names its consistency (``ReplRead.read``; DDIA 5.2, "Problems with Replication Lag"):

* ``leader`` and ``linearizable``: served by the leader while its lease holds. Every write it
  acknowledged is applied there, and no other replica can have acknowledged a newer one while
  the lease is valid (the drift bound: :mod:`.leadership`), so a lease read is linearizable.
* ``follower``: served by any replica, within ``max_staleness_s`` when the read gives one. A
  follower is as stale as the time since it last held the leader's last entry
  (``_caught_up_at``); past the bound it refuses with :class:`~ddia_ray.errors.StalenessBoundError`
  and the client asks another.
* ``session``: served by any replica that has applied the session's position (read-your-writes
  and monotonic reads, :class:`~.records.Session`). A replica behind it answers
  :class:`~ddia_ray.errors.ReplicaBehindError`; a position no longer in the history (a failover
  discarded the write it saw) is :class:`~ddia_ray.errors.SessionError`, from the leader, which
  is the one replica that can tell.

A replica waiting for a checkpoint (:mod:`.divergence`) serves no read. Scans pin a view of the
state, and later pages of a pinned view are served whatever the replica's role is by then.
"""

from __future__ import annotations

from ..errors import ReplicaBehindError, SessionError, StalenessBoundError
from .ownership import check_fenced_read
from .records import ReadResult, ReplQuery, ReplRead, ReplScan, ScanResult
from .replica_parts import ReplicaPart

__all__ = ["ReplicaReads"]


class ReplicaReads(ReplicaPart):
    """Point reads, scans and the checks every read passes: a part of
    :class:`~.leader_follower.LeaderFollowerReplica` (see the module docstring).

    It reads the core's ``state``, ``pins``, ``ticks``, ``_caught_up_at``, ``_needs_checkpoint``
    and its ownership of partitions (``_ownership()``, ``partition_load``).
    """

    def _read(self, req: ReplRead) -> ReadResult:
        self._check_readable(req)
        if req.fence:
            check_fenced_read(self._ownership(), req, self.partition_load, self.group)
        applied = self.state.applied
        return ReadResult(self.state.get_many(req.keys), self.epoch_at(applied), applied, self.node_id)

    def _scan(self, req: ReplScan) -> ScanResult:
        limit = min(req.limit, self.max_scan_rows)
        position = None
        if req.pin <= 0:  # a pinned view's next page is a past state: served whatever this role is now
            self._check_readable(req)
            if req.fence:
                check_fenced_read(self._ownership(), req, self.partition_load, self.group)
            applied = self.state.applied
            position = (self.epoch_at(applied), applied)
        return self.pins.serve(req, limit, self.ticks, self.node_id, position)

    def _check_readable(self, req: ReplRead | ReplScan | ReplQuery) -> None:
        """Refuse a read this replica may not serve as ``req.read`` asks."""
        mode = req.read
        if self._needs_checkpoint:
            raise ReplicaBehindError(f"{self.node_id} waits for a checkpoint; ask another replica",
                                     req.after_lsn, self.state.applied)
        if mode in ("leader", "linearizable"):
            if not self._leading():
                raise self._not_leader()
        else:
            if req.max_staleness_s >= 0 and not self._leading():
                lag_s = (self.ticks - self._caught_up_at) * self.tick_s if self._caught_up_at >= 0 else float("inf")
                if lag_s > req.max_staleness_s:
                    raise StalenessBoundError(f"{self.node_id} may be {lag_s:.3f} s behind the leader, more than "
                                              f"the {req.max_staleness_s} s bound", lag_s, req.max_staleness_s)
            if mode == "session" and req.after_lsn:
                self._check_session_position(req.after_epoch, req.after_lsn)

    def _check_session_position(self, epoch: int, lsn: int) -> None:
        applied = self.state.applied
        if lsn > applied and self._leading():  # the leader has every acknowledged write of its history
            raise SessionError(f"the session's position (epoch {epoch}, lsn {lsn}) is beyond {self.group!r}'s "
                               f"history (lsn {applied}): a write it saw was lost in a failover")
        if lsn > applied:
            raise ReplicaBehindError(f"{self.node_id} has applied lsn {applied}, the session needs {lsn}", lsn, applied)
        if self.epoch_at(lsn) != epoch:
            if self._leading():
                raise SessionError(f"the session's position (epoch {epoch}, lsn {lsn}) is not in {self.group!r}'s "
                                   f"history: a write it saw was lost in a failover")
            raise ReplicaBehindError(f"{self.node_id} holds another history at lsn {lsn}; ask the leader",
                                     lsn, applied)
