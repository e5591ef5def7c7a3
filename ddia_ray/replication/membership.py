"""Membership changes of a leader-follower group: one replica added or removed at a time, under writes.

Theory of operation
-------------------
A group's failover rests on one count: a candidate must hear from ``n - k``
replicas (itself included), ``k`` being the mode's follower acknowledgements,
so that it meets a holder of every acknowledged write (see
:mod:`.leader_follower`). Changing ``n`` must keep that true for every write
acknowledged before, during and after the change.

**Where the member list lives.** In the lease value, ``(epoch, holder,
renewal, members)``, in the coordination service. The leader writes it with
every renewal, followers adopt it with every lease read, and a candidate
probes the members of the lease it read and takes the lease with a
compare-and-set of that same value. So a candidate never acts on a member list
older than the lease it replaces, and a change and a takeover cannot both
succeed: each is a compare-and-set of the same value. A restarted replica
starts from the list its spec names and adopts the lease's before it may
probe (an empty list, written before this module existed, means "the members
the group was launched with").

**The leader's steps** (:meth:`MembershipChanges._advance_change`), in the
spirit of Raft's catch-up rounds and joint consensus (Ongaro's thesis, 4.2
and 4.3) with the coordination service as the one place that decides:

1. *Add*: the newcomer is replicated to as a learner (DDIA 5.1, "Setting up
   new followers": a checkpoint when the log was compacted, then the log
   tail) while writes continue; it counts for nothing yet.
2. *Joint*: once a newcomer has the entries that existed when the change was
   asked for (a removal starts here), the leader records ``joint``, the last
   lsn of that moment. From then on a waiting write is acknowledged only when
   it has the acknowledgements both member lists ask for.
3. *Commit*: when every write up to ``joint`` has the acknowledgements the
   new list asks for (and a newcomer has all of them), the leader writes the
   new list into the lease. Writes before ``joint`` have them by this check,
   writes after it by the joint rule, so a candidate counting with either list
   meets a holder of each of them.

An async removal also waits until the replica has answered the current leader:
a deposed async leader may hold writes acknowledged by it alone, which it
counts as lost when it compares its log with the leader's; removed before
that, they would vanish uncounted (DDIA 5.1's GitHub incident, hidden).

``remove_forced`` does not wait for that: it is for a replica that is gone for
good. If the replica had not compared its log, the leader first appends an
entry adding it to :data:`UNCOUNTED_KEY` and waits until every remaining member
holds it, so that every replica's status says the lost-write count may be
short by what that replica alone held (the loss is declared, never hidden).

A removal of the leader itself is refused (the handle transfers leadership
first), as is one that would leave fewer followers than semi-sync's
``sync_replicas``. A change that does not finish within its timeout is
abandoned (the newcomer may be too slow to catch up), and nothing changes.
Asking for a change that is already made is answered at once: the handle's
retries after a lost answer or a failover are safe.
"""

from __future__ import annotations


from .. import codec
from ..errors import ConfigError, CorruptRecordError, NotLeaderError, ReplicaBehindError
from .records import PUT, RESERVED_PREFIX
from .replica_parts import ReplicaPart

__all__ = ["MembershipChanges", "CHANGE_ACTIONS", "UNCOUNTED_KEY", "decode_uncounted"]

#: The admin actions of a leader-follower group that change its members.
CHANGE_ACTIONS = ("add", "remove", "remove_forced")
#: The replicated key listing forced removals of replicas that had not compared their logs:
#: ``((node, epoch, lsn), ...)``, the epoch and lsn of the leader's log when it wrote the entry.
UNCOUNTED_KEY = RESERVED_PREFIX + b"uncounted-removals"


def decode_uncounted(raw: bytes | None) -> tuple:
    """The value of :data:`UNCOUNTED_KEY` (``()`` when absent); damage raises CorruptRecordError."""
    if raw is None:
        return ()
    value = codec.decode(raw)
    if not (isinstance(value, tuple) and all(
            isinstance(v, tuple) and len(v) == 3 and isinstance(v[0], str) and type(v[1]) is int
            and type(v[2]) is int for v in value)):
        raise CorruptRecordError(f"{UNCOUNTED_KEY!r} holds {value!r:.200}, not ((node, epoch, lsn), ...)")
    return value


class MembershipChanges(ReplicaPart):
    """The member list and its changes: a part of :class:`~.leader_follower.LeaderFollowerReplica`.

    It reads and writes the core's ``members``, ``default_acks``, ``probe_quorum``, ``_match``,
    ``_next``, ``_waiting`` and ``_change`` (None, or the change under way), and uses its lease
    and reply machinery.
    """

    def _set_members(self, members: tuple) -> None:
        """Adopt ``members`` and the counts that follow from them (acknowledgements, probe quorum)."""
        self.members = tuple(members)
        k = self.default_acks = self._acks_for(self.members)
        # A write acknowledged with k follower acks is on k + 1 replicas; a candidate that hears from
        # n - k of them (itself included) meets at least one holder of every such write. Async (k = 0)
        # promises nothing across a failover, so its candidates need to hear from nobody.
        self.probe_quorum = len(self.members) - k if k else 1

    def _acks_for(self, members: tuple) -> int:
        """The follower acknowledgements the mode asks of a write, with ``members`` as the group."""
        return {"sync": len(members) - 1, "semi-sync": self.sync_replicas, "async": 0}[self.mode]

    def _targets(self) -> tuple:
        """Whom the leader replicates to: the members, and a newcomer being added."""
        ch = self._change
        if ch is not None and ch["action"] == "add":
            return (*self.members, ch["target"])
        return self.members

    def _has_acks(self, members: tuple, lsn: int, asked: int) -> bool:
        """Whether entry ``lsn`` has what ``members`` ask of a write that asked for ``asked`` acks."""
        followers = [m for m in members if m != self.node_id]
        needed = min(max(self._acks_for(members), asked), len(followers))
        match = self._match
        return needed <= 0 or sum(1 for f in followers if match.get(f, 0) >= lsn) >= needed

    def _acknowledged_by_all(self, lsn: int, asked: int) -> bool:
        """The acknowledgement rule: the members' count, and during a change the new list's as well."""
        if not self._has_acks(self.members, lsn, asked):
            return False
        ch = self._change
        return ch is None or ch["joint"] is None or self._has_acks(ch["new"], lsn, asked)

    # --- the leader's side ----------------------------------------------------------------------

    def _on_change(self, rid: int, action: str, target: str, timeout_ticks: int) -> None:
        """An operator's ``add`` or ``remove`` of ``target`` (the caller checked that this replica leads)."""
        if not target:
            raise ConfigError(f"{action} needs the replica's name")
        if action == "add":
            if target in self.members:
                self.reply(rid, None)  # done already (a retry after a lost answer or a failover)
                return
            new = (*self.members, target)
        else:  # "remove" or "remove_forced"
            if target not in self.members:
                self.reply(rid, None)
                return
            if target == self.node_id:
                raise ConfigError(f"{target} leads the group: transfer leadership before removing it")
            new = tuple(m for m in self.members if m != target)
            if self.mode == "semi-sync" and len(new) - 1 < self.sync_replicas:
                raise ConfigError(f"removing {target} would leave {len(new) - 1} followers; semi-sync needs "
                                  f"{self.sync_replicas} (sync_replicas)")
        ch = self._change
        if ch is not None:
            if ch["new"] == new:  # the same change, asked again: answered with it
                ch["rids"].append(rid)
                return
            raise ConfigError(f"a membership change ({ch['action']} {ch['target']}) is under way; "
                              f"one change at a time")
        if self._transfer is not None:
            raise ConfigError(f"{self.node_id} is handing leadership to {self._transfer['target']}")
        self._change = {"action": "add" if action == "add" else "remove", "target": target, "rids": [rid],
                        "new": new, "from": self.last_lsn, "until": self.ticks + timeout_ticks, "joint": None,
                        "sent": False, "forced": action == "remove_forced", "recorded": 0}
        if action == "add":
            # Sent from the end of the log: the newcomer's refusal names its position, and the leader
            # goes back from there (or sends a checkpoint when that part of the log is compacted away).
            self._next[target] = self.last_lsn + 1
            self._replicate()
        self._advance_change()

    def _advance_change(self) -> None:
        """Move the change under way one step (see the module docstring); or abandon it at its deadline."""
        ch = self._change
        if ch is None or ch["sent"]:
            return
        target = ch["target"]
        if self.ticks > ch["until"]:
            why = (f"{target} has not answered this leader: in async mode it may hold writes only it has, which it "
                   f"reports once it compares its log with the leader's (restart it, or heal its network)"
                   if ch["action"] == "remove" and self.default_acks == 0 and target not in self._match else
                   f"the group did not reach the acknowledgements the change needs in time ({target} at "
                   f"{self._match.get(target, 0)} of {self.last_lsn})")
            self._end_change(ReplicaBehindError(f"{ch['action']} {target}: {why}; the members are unchanged",
                                                self.last_lsn, self._match.get(target, 0)))
            return
        adding = ch["action"] == "add"
        if not adding and self.default_acks == 0 and target not in self._match:
            # Async: a replica that has not answered this leader may hold a deposed leader's tail of
            # writes acknowledged by it alone. It reports them once it compares its log with the
            # leader's (it answers an append); removed before that, they would vanish uncounted.
            if not ch["forced"]:
                return
            if not ch["recorded"]:  # forced: say so, in the replicated state, before the list changes
                ch["recorded"] = self._record_uncounted(target)
            # The record must outlive any failover among the remaining members: all of them hold it.
            if any(self._match.get(f, 0) < ch["recorded"] for f in ch["new"] if f != self.node_id):
                return
        if ch["joint"] is None:
            if adding and self._match.get(target, 0) < ch["from"]:
                return  # still catching up: joining now would hold up every write until it has
            ch["joint"] = self.last_lsn
        joint = ch["joint"]
        if (adding and self._match.get(target, 0) < joint) or not self._has_acks(ch["new"], joint, 0) \
                or self.coord.busy:
            return
        ch["sent"] = True
        old, epoch, sent = self._lease_raw, self.epoch, self.ticks
        self._renewal += 1
        new_raw = self._lease_bytes(ch["new"])

        def done(values: tuple | None) -> None:
            if self._change is not ch or self.role != "leader" or self.epoch != epoch:
                return
            if values is not None and values[0]:
                self._lease_raw = new_raw
                self.valid_until = max(self.valid_until, sent + int(self.lease_ticks * (1 - self.drift)))
                self._set_members(ch["new"])
                self._change = None
                if not adding:
                    self._next.pop(target, None)
                    self._match.pop(target, None)
                    self._pins.pop(target, None)
                for rid in ch["rids"]:
                    self.reply(rid, None)
                self._release_waiting()
            elif values is not None:
                self._step_down("the lease key changed under it (another replica took the lease)")
            else:
                ch["sent"] = False  # the call failed: asked again on a later tick
        self.coord.call([("cas", self.lease_key, new_raw, old)], done)

    def _record_uncounted(self, target: str) -> int:
        """Append a log entry adding ``target`` to :data:`UNCOUNTED_KEY` (every replica applies it); its lsn."""
        value = (*decode_uncounted(self.state.get(UNCOUNTED_KEY)), (target, self.epoch, self.last_lsn))
        self._append_system_entry(((PUT, UNCOUNTED_KEY, codec.encode(value)),))
        return self.last_lsn

    def uncounted_removals(self) -> tuple:
        """Forced removals of async replicas that had not compared their logs: ``((node, epoch, lsn), ...)``.

        Each may have taken writes acknowledged by it alone (as a deposed leader) out of the group
        uncounted: the count of lost writes is then a lower bound, and this says so.
        """
        try:
            return decode_uncounted(self.state.get(UNCOUNTED_KEY))
        except CorruptRecordError:
            return (("<damaged record>", 0, 0),)

    def _end_change(self, error: BaseException) -> None:
        """Abandon the change under way: its askers get ``error``; the members stay as they are."""
        ch, self._change = self._change, None
        if ch is None:
            return
        if ch["action"] == "add":
            self._next.pop(ch["target"], None)
            self._match.pop(ch["target"], None)
            self._pins.pop(ch["target"], None)
        for rid in ch["rids"]:
            self.reply(rid, error=error)
        if self.role == "leader":
            self._release_waiting()  # the joint rule no longer holds writes back

    def _change_status(self) -> dict | None:
        """The change under way, as plain data (None when there is none)."""
        ch = self._change
        if ch is None:
            return None
        return {"action": ch["action"], "target": ch["target"], "new": ch["new"], "joint": ch["joint"],
                "committing": ch["sent"], "forced": ch["forced"]}

    def _stop_changing(self, why: str) -> None:
        """On losing leadership: the change's askers learn that it did not happen here."""
        if self._change is not None:
            self._end_change(NotLeaderError(f"{self.node_id} stopped leading ({why}) during the change", None))
