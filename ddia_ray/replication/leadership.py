"""Leadership of a leader-follower group once held: the lease's renewals, stepping down, and handing it over.

Theory of operation
-------------------
A replica that won the lease (:mod:`.failover`) leads for as long as it keeps it. It renews the
lease every ``renew_s`` with a compare-and-set of the value it last wrote, and counts it valid
from the moment it *sent* the renewal that succeeded, shortened by the drift bound:
``valid_until = sent + lease_s * (1 - drift)`` (Gray & Cheriton's leases; DDIA 8.4). A renewal
that finds the key changed means someone else took it: the leader steps down at once.

Stepping down (a newer epoch seen in an append, a probe or a refusal; the key changed; a
handover done) fails every write still waiting for acknowledgements with
:class:`~ddia_ray.errors.WriteOutcomeUnknownError`: the entry may survive in the next leader's
history or not, and only the client can find out which.

**Leadership transfer** (``admin("transfer", target)``): the leader goes on serving, and
hands the lease over only once the target has every entry and no write waits, by writing the
lease with the next epoch and the target as holder (one compare-and-set, so a racing renewal or
takeover makes it fail, never split). The target then leads that epoch with the whole history,
which is why a leader by transfer never needs the failover's probe. A target that does not catch
up within the timeout leaves the old leader leading, with :class:`~ddia_ray.errors.ReplicaBehindError`.
"""

from __future__ import annotations

from .._validate import seconds_to_ticks
from ..errors import ConfigError, NotLeaderError, ReplicaBehindError
from .failover import FOLLOWER, LEADER, _lease_value
from .membership import CHANGE_ACTIONS
from .records import ReplAdmin, ReplicaMeta
from .replica_parts import ReplicaPart

__all__ = ["Leadership"]


class Leadership(ReplicaPart):
    """Becoming leader, renewing the lease, stepping down and handing leadership over: a part of
    :class:`~.leader_follower.LeaderFollowerReplica` (see the module docstring).

    It reads and writes the core's ``role``, ``epoch``, ``leader``, ``valid_until``, ``_lease_raw``,
    ``_renewal``, ``_lease_seen_at``, ``_transfer``, ``_waiting``, ``_match``, ``_next`` and
    ``_pins``, and calls the coordination client ``coord``.
    """

    def _become_leader(self, epoch: int, raw: bytes, sent: int) -> None:
        self.epoch = epoch
        self.persist(ReplicaMeta(self.epoch, self.incarnation))
        self.role, self.leader = LEADER, self.node_id
        self._lease_raw, self._renewal = raw, 0
        self.valid_until = sent + int(self.lease_ticks * (1 - self.drift))
        self._match = {}
        self._pins = {}
        self._next = {p: self.last_lsn + 1 for p in self.members if p != self.node_id}
        self._resyncing = False
        self.counters["failovers_won"] += 1
        if self.observer is not None:
            self.observer(self.node_id, "lead", epoch)
        # An empty entry of the new epoch marks where this leader's history begins.
        entry = (epoch, self.last_lsn + 1, (), 0, ())
        self._append_entry(entry)
        self._persist_entries((entry,))
        self._next_heartbeat = self.ticks
        self._next_watch = self.ticks + self.renew_ticks
        self._replicate(heartbeat=True)

    # --- leadership transfer -------------------------------------------------------------------

    def _on_admin(self, rid: int, req: ReplAdmin) -> None:
        if req.action not in ("transfer", *CHANGE_ACTIONS):
            raise ConfigError(f"a leader-follower group takes {('transfer', *CHANGE_ACTIONS)}; {req.action!r} "
                              f"is a Raft protocol action")
        if not self._leading():
            raise self._not_leader()
        if req.action in CHANGE_ACTIONS:
            self._on_change(rid, req.action, req.target, seconds_to_ticks("timeout_s", req.timeout_s, self.tick_s))
            return
        if self._change is not None:
            raise ConfigError(f"a membership change ({self._change['action']} {self._change['target']}) is under "
                              f"way; transfer leadership after it")
        if req.target not in self.members or req.target == self.node_id:
            raise ConfigError(f"cannot hand leadership of {self.group!r} to {req.target!r}: "
                              f"not another member of {self.members}")
        if self._transfer is not None:
            raise ConfigError(f"{self.node_id} is already handing leadership to {self._transfer['target']}")
        until = self.ticks + seconds_to_ticks("timeout_s", req.timeout_s, self.tick_s)
        self._transfer = {"target": req.target, "rid": rid, "until": until, "sent": False}
        self._replicate()
        self._advance_transfer()

    def _advance_transfer(self) -> None:
        """Hand the lease over once the target has every entry and no write waits; or give up."""
        t = self._transfer
        assert t is not None
        if t["sent"]:
            return
        if self.ticks > t["until"]:
            self._transfer = None
            self.reply(t["rid"], error=ReplicaBehindError(
                f"{t['target']} did not catch up with {self.node_id} in time; {self.node_id} still leads",
                self.last_lsn, self._match.get(t["target"], 0)))
            return
        if self._match.get(t["target"], 0) < self.last_lsn or self._waiting or self.coord.busy:
            return
        t["sent"] = True
        old = self._lease_raw
        epoch = self.epoch + 1
        new = _lease_value(epoch, t["target"], 0, self.members)

        def done(values: tuple | None) -> None:
            self._transfer = None
            if values is not None and values[0]:
                self._step_down(f"it handed leadership to {t['target']}")
                self._adopt_epoch(epoch, t["target"])
                self.reply(t["rid"], None)
            else:  # the key changed (or the call failed): this replica may no longer hold the lease
                self.reply(t["rid"], error=NotLeaderError(f"{self.node_id} could not hand over the lease", None))
        self.coord.call([("cas", self.lease_key, new, old)], done)

    def _lease_bytes(self, members: tuple) -> bytes:
        """The lease value this leader writes at its current renewal, naming ``members``."""
        return _lease_value(self.epoch, self.node_id, self._renewal, members)

    def _renew(self) -> None:
        old = self._lease_raw
        self._renewal += 1
        new = self._lease_bytes(self.members)
        sent, epoch = self.ticks, self.epoch

        def done(values: tuple | None) -> None:
            if self.role != LEADER or self.epoch != epoch:
                return
            if values is not None and values[0]:
                self._lease_raw = new
                self.valid_until = max(self.valid_until, sent + int(self.lease_ticks * (1 - self.drift)))
            elif values is not None:
                self._step_down("the lease key changed under it (another replica took the lease)")
        self.coord.call([("cas", self.lease_key, new, old)], done)

    def _step_down(self, why: str) -> None:
        was_leader = self.role == LEADER
        if was_leader:
            self._caught_up_at = self.ticks  # a leader is caught up with itself until it stops leading
        self.role = FOLLOWER
        self._probe = None
        self.valid_until = -1
        self._lease_raw, self._lease_seen_at = None, self.ticks
        if was_leader:
            if self.observer is not None:
                self.observer(self.node_id, "step_down", (self.epoch, why))
            waiting, self._waiting = self._waiting, {}
            for rids, _, _ in waiting.values():
                for rid in rids:
                    self._outcome_unknown(rid, f"it stopped leading ({why})")
            if self._transfer is not None and not self._transfer["sent"]:
                self.reply(self._transfer["rid"], error=NotLeaderError(f"{self.node_id} stopped leading ({why})",
                                                                        None))
            self._transfer = None
            self._stop_changing(why)
