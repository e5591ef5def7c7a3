"""The leader's and followers' side of log replication, commitment, ReadIndex and configuration tracking.

Theory of operation
-------------------
A mixin of :class:`~.node.RaftNode` (split out to keep each file to one concern):
followers check an append against their log and answer with how far they
match (:meth:`_Replication._handle_append`, :meth:`_Replication._handle_snapshot`);
the leader turns those answers into per-follower progress (see :mod:`.progress`),
sends more (batched, pipelined, or a snapshot when the entries are gone),
commits what a quorum holds in its current term, and confirms ReadIndex rounds
with heartbeat acknowledgements. See :mod:`.node` for the whole picture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import NotLeaderError, ProposalDroppedError
from .messages import CONF_CHANGE, Message, ReadState
from .progress import PROBE, REPLICATE, SNAPSHOT, Progress
from .roles import LEADER

if TYPE_CHECKING:
    from .log import RaftLog
    from .messages import ConfState, RaftSnapshot
    from .node import RaftConfig

__all__: list[str] = []


class _ReadRound:
    __slots__ = ("context", "index", "acks")

    def __init__(self, context: int, index: int, me: str):
        self.context, self.index, self.acks = context, index, {me}


class _Replication:
    """Mixin of :class:`~.node.RaftNode`: replication, commitment, reads and configuration tracking."""

    # --- state owned by RaftNode (set in its __init__), shared with this mixin ---
    id: str
    config: RaftConfig
    term: int
    role: str
    lead: str
    log: RaftLog
    snapshot: RaftSnapshot | None
    progress: dict[str, Progress]
    transferee: str
    pending_reads: list[int]
    read_rounds: list[_ReadRound]
    stats: dict[str, int]
    _read_states: list[ReadState]
    _pending_snapshot: RaftSnapshot | None
    if TYPE_CHECKING:  # members of RaftNode
        @property
        def conf(self) -> ConfState: ...
        def _send(self, m: Message) -> None: ...

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(Message("app_resp", self.id, m.src, self.term, index=log.committed))
            return
        last = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self._send(Message("app_resp", self.id, m.src, self.term, index=last))
        else:
            hint = log.conflict_hint(m.index, m.log_term)
            self._send(Message("app_resp", self.id, m.src, self.term, index=m.index, reject=True,
                               reject_hint=hint, log_term=log.term(hint) or 0))

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot.meta
        if meta.index <= self.log.committed:
            self._send(Message("app_resp", self.id, m.src, self.term, index=self.log.committed))
            return
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)  # we have the entries: just fast-forward
        else:
            self.log.restore(meta)
            self.snapshot = m.snapshot
            self._pending_snapshot = m.snapshot
        # Only up to the commit index is known to match the leader: entries after the snapshot point may be
        # uncommitted leftovers of an older term (etcd acknowledges the commit index too).
        self._send(Message("app_resp", self.id, m.src, self.term, index=self.log.committed))

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return  # not (or no longer) a member
        if m.type == "app_resp":
            pr.recent_active = True
            if m.reject:
                if pr.maybe_decrease(m.index, m.reject_hint):
                    if pr.state == REPLICATE:
                        pr.become_probe()
                    self._send_append(m.src)
                return
            was_paused = pr.is_paused()
            if pr.maybe_update(m.index):
                if pr.state == PROBE:
                    pr.become_replicate()
                elif pr.state == SNAPSHOT and pr.match >= pr.pending_snapshot:
                    pr.become_probe()
                    pr.become_replicate()
                if self._maybe_commit():
                    self._bcast_append()
                elif was_paused or pr.next <= self.log.last_index():
                    self._send_append(m.src)
                while pr.state == REPLICATE and pr.next <= self.log.last_index() and not pr.is_paused():
                    self._send_append(m.src)
                if m.src == self.transferee and pr.match == self.log.last_index():
                    self._send(Message("timeout_now", self.id, m.src, self.term))
        elif m.type == "heartbeat_resp":
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.is_paused():
                # Every append in flight may have been lost (the follower restarted, or the network
                # dropped them) and no answer will ever free the window: free one slot, so the next
                # append goes out and its answer (or refusal) resumes replication. etcd does the same.
                pr.free_first()
            if pr.state == SNAPSHOT and pr.match < pr.pending_snapshot \
                    and pr.snapshot_ticks >= self.config.election_ticks:
                # No acknowledgement within an election timeout: the snapshot may have been lost,
                # so probe again. Not sooner: a heartbeat answered before the follower got the
                # snapshot arrives after it was sent, and reverting then made the leader send a
                # newer snapshot while the follower was still copying the first one's files.
                pr.become_probe()
            if pr.match < self.log.last_index():
                self._send_append(m.src)
            if m.context and m.src in self.conf.voters:
                self._ack_read(m.src, m.context)

    # --- replication ----------------------------------------------------------

    def _check_proposals(self) -> None:
        if self.role != LEADER:
            raise NotLeaderError(f"{self.id} is not the leader", self.lead or None)
        if self.transferee:
            raise ProposalDroppedError(f"leadership is being transferred to {self.transferee!r}; retry there")

    def _append(self, ents) -> None:
        self.log.append(ents)
        if any(e.kind == CONF_CHANGE for e in ents):
            self._conf_changed()
        self._maybe_commit()  # a single voter commits at once
        self._bcast_append()

    def _bcast_append(self) -> None:
        for n in self.progress:
            self._send_append(n)

    def _send_append(self, to: str) -> None:
        pr = self.progress[to]
        if pr.is_paused():
            return
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None or pr.next < log.first_index():
            if self.snapshot is None:
                return
            pr.become_snapshot(self.snapshot.meta.index)
            self.stats["snapshots_sent"] += 1
            self._send(Message("snap", self.id, to, self.term, snapshot=self.snapshot))
            return
        ents = log.slice(pr.next, log.last_index() + 1, self.config.max_entries_per_msg)
        self._send(Message("app", self.id, to, self.term, log_term=prev_term, index=prev, entries=ents,
                           commit=log.committed))
        pr.sent(prev + len(ents), len(ents))

    def _bcast_heartbeat(self, context: int) -> None:
        for n, pr in self.progress.items():
            self._send(Message("heartbeat", self.id, n, self.term, commit=min(pr.match, self.log.committed),
                               context=context))

    def _maybe_commit(self) -> bool:
        matches = sorted((self.log.last_index() if v == self.id else self.progress[v].match
                          for v in self.conf.voters), reverse=True)
        if not matches:
            return False
        index = matches[len(matches) // 2]
        # Only entries of the current term are committed by counting replicas (§5.4.2).
        if index > self.log.committed and self.log.term(index) == self.term:
            self.log.commit_to(index)
            if self.pending_reads:
                pending, self.pending_reads = self.pending_reads, []
                for ctx in pending:
                    self._start_read(ctx)
            return True
        return False

    def _is_quorum(self, ids) -> bool:
        voters = self.conf.voters
        return sum(1 for v in voters if v in ids) > len(voters) // 2

    # --- reads ----------------------------------------------------------------

    def _start_read(self, context: int) -> None:
        if self._is_quorum({self.id}):
            self._read_states.append(ReadState(context, self.log.committed))
            return
        self.read_rounds.append(_ReadRound(context, self.log.committed, self.id))
        self._bcast_heartbeat(context)

    def _ack_read(self, voter: str, context: int) -> None:
        confirmed = -1
        for i, r in enumerate(self.read_rounds):
            if r.context <= context:  # an ack of a later round confirms the earlier ones too
                r.acks.add(voter)
                if self._is_quorum(r.acks):
                    confirmed = i
        if confirmed >= 0:
            done, self.read_rounds = self.read_rounds[:confirmed + 1], self.read_rounds[confirmed + 1:]
            self._read_states += [ReadState(r.context, r.index) for r in done]

    # --- membership -----------------------------------------------------------

    def _conf_changed(self) -> None:
        """The leader appended a configuration change: track the members it adds, forget removed ones."""
        last = self.log.last_index()
        for n in self.conf.members:
            if n != self.id and n not in self.progress:
                self.progress[n] = Progress(last + 1, self.config.max_inflight_msgs)
        for n in list(self.progress):
            if n not in self.conf.members:
                del self.progress[n]
        if self.transferee and self.transferee not in self.conf.voters:
            self.transferee = ""
        for r in self.read_rounds:
            r.acks &= set(self.conf.voters) | {self.id}  # acks from removed voters no longer count

