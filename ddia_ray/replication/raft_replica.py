"""The Raft protocol of the replicated store: RaftKV's member over an engine-backed state.

Theory of operation
-------------------
There is one Raft key-value core in ddia-ray, :class:`~ddia_ray.kv.member.RaftMember`.
:class:`RaftReplica` is that member with a different state machine and the
replicated store's requests: the log entries it proposes are whole client write
batches (:class:`~.records.ReplWrite`), applied by :class:`~.raft_state_machine.ReplStateMachine` to
a :class:`~.state.ReplicaState` (a storage engine, or a dict), so the Raft log
is the write-ahead log of record and the engine says which index it reflects
(:mod:`.engine_state`). Snapshots are engine checkpoints: when the member
compacts its log, the snapshot's data names a checkpoint of the engine's
files, and a lagging follower that receives it copies those files through
fsspec instead of decoding the state from the message.

Writes: one entry per ``ReplWrite`` (:mod:`.raft_entries`). The leader decides the batch's cas
and procedure calls when it proposes it, against its state as of the entry's place in the log
(:mod:`.speculation`), and the entry carries the decided puts and deletes and the answers: every
member, the leader included, only applies them, so a procedure runs once, not once per member.
Where the leader cannot know that state (an entry before it whose effects only apply reveals: a
fenced write, an ownership change, an ingest), the entry goes undecided and every member decides
it when applying it, where each has the same state at the same index. The client session's answer
is kept with the data, so a retry of an applied write returns its first answer (exactly once;
Raft thesis 6.3). The answer is a :class:`~.records.WriteAck` whose position
is ``(term, index)``. ``acks`` above what a majority gives makes the leader
wait until that many followers have the entry.

Reads (``ReplRead.read``):

* ``linearizable`` (the default under Raft): ReadIndex (thesis 6.4): the leader
  confirms with a quorum that it still leads, then answers once it has applied
  everything committed before the read began;
* ``leader``: a lease read, served by the leader at once. Offered only with
  check-quorum, under which a leader steps down when it has not heard from a
  quorum within an election timeout, so no other leader can exist while it
  answers (assuming clock rates differ by less than the election timeout's
  slack, as etcd's lease-based reads do);
* ``follower``: any member's own state, possibly stale, optionally within
  ``max_staleness_s`` of the last time it heard from the leader;
* ``session``: any member that has applied the session's position. Every
  acknowledged Raft write is committed, so a session's position can never be
  lost in a failover.

A follower copies and opens a snapshot's checkpoint before its Raft core takes
the snapshot (:meth:`RaftReplica._prepared`): a checkpoint that is gone, damaged
or at another position drops the message with nothing changed, and the leader
sends a newer one after an election timeout. A follower whose snapshot fails
once taken stops serving and taking part (fail-stop, ``failed`` in its status)
rather than run with a state behind its log; restarting it recovers from its
own log, and the leader sends a newer snapshot.
"""

from __future__ import annotations

from typing import Any

from ..consensus.raft import LEADER, NORMAL, ConfChange
from ..consensus.raft.progress import SNAPSHOT
from .._validate import seconds_to_ticks
from ..errors import (ConfigError, ConsensusError, InvalidArgumentError, NotLeaderError,
                      PartitionError, ReplicaBehindError, ScanExpiredError, StaleEpochError, StalenessBoundError,
                      StorageError, UnknownNodeError, WriteOutcomeUnknownError)
from ..kv.commands import KVCall
from ..kv.member import RaftMember
from .ownership import (OWNERSHIP_KEY, ReplOwnership, check_fenced_read)
from .indexing import ReplIndexScan, ReplOutboxScan, index_page
from .leader_services import LeaderServices, ReplServiceCall
from .parking import ParkedQueries, is_empty
from .pins import ScanPins
from .procedures import run_query
from .raft_entries import (OWNERSHIP_FENCE, REFUSED, decode_write, encode_ownership, encode_write, refusal,
                           refused_error)
from .records import (QueryResult, ReadResult, ReplAdmin, ReplQuery, ReplRead, ReplScan, ReplStatus, ReplWrite,
                      ScanResult, WriteAck)
from .raft_state_machine import ReplStateMachine
from .speculation import FRESH, Speculation, stops_view
from .state import MapState, ReplicaState

# The entry format lives in raft_entries.py; its names are kept here for the modules that import them from here.
__all__ = ["RaftReplica", "build", "encode_write", "encode_ownership", "decode_write", "refusal",
           "refused_error", "OWNERSHIP_FENCE", "REFUSED"]

_REPL = -1  # the "position in batch" of a replicated-store request (RaftMember's bookkeeping slot)


class RaftReplica(RaftMember):
    """A member of a replicated store under the Raft protocol (see the module docstring)."""

    def __init__(self, node_id: str, *, recovered=(), tick_s: float = 0.01, group: str = "",
                 state: ReplicaState | None = None, max_scan_rows: int = 10_000, pin_ttl_s: float = 60.0,
                 service_checkpoint_s: float = 0.2, service_checkpoint_changes: int = 10_000, **options):
        # Set before RaftMember's constructor, which may already apply committed entries.
        self.group = group
        self.max_scan_rows = max(1, max_scan_rows)
        self._acks_waiting: dict[int, tuple] = {}  # index -> (request id, WriteAck, followers needed)
        self._repl_writes: dict[int, tuple] = {}  # index -> (request id, client, seq, acks, term proposed in)
        self._heard_at = -1  # tick this member last heard from its leader
        self.failed = ""
        self.snapshots_dropped = 0  # leader snapshots whose checkpoint could not be copied (see _prepared)
        self.last_snapshot_error = ""
        self.state = state if state is not None else MapState()
        self.pins = ScanPins(self.state, ttl_ticks=max(1, round(pin_ttl_s / tick_s)))
        self.machine = ReplStateMachine(self.state, node_id, self.pins)
        self.parked = ParkedQueries(tick_s)  # blocking queries waiting for a write (parking.py)
        self.spec = Speculation()  # the leader's view of its log's end: writes decided once (speculation.py)
        self._view_stop = -1  # the index of the entry the view stopped at (-1: none)
        self._view_open: bool | None = None  # whether the view may run (None: to be checked)
        self._proposed: dict[int, tuple] = {}  # index -> (term, entry fields) of decided proposals
        if type(service_checkpoint_changes) is not int or service_checkpoint_changes < 1:
            raise ConfigError(f"service_checkpoint_changes must be an int >= 1, got {service_checkpoint_changes!r}")
        every = seconds_to_ticks("service_checkpoint_s", service_checkpoint_s, tick_s)
        self.services = LeaderServices(every_ticks=every, every_changes=service_checkpoint_changes)
        super().__init__(node_id, recovered=recovered, tick_s=tick_s, state_machine=self.machine, **options)
        self.machine.sending = self._snapshots_sent

    # --- inputs ---------------------------------------------------------------------------------

    def on_tick(self) -> None:
        """Time passes (nothing happens on a failed member)."""
        if not self.failed:
            super().on_tick()
            if self.pins and self.ticks % 100 == 0:
                self.pins.expire(self.ticks)

    def on_message(self, src: str, payload: Any) -> None:
        """A Raft message; remembers when the leader was last heard from (for bounded staleness)."""
        if self.failed:
            return
        if isinstance(payload, KVCall):  # the replicated store's entries are write batches, never KV commands
            raise InvalidArgumentError(f"{self.node_id} is a replica of {self.group!r}, not a RaftKV member")
        if getattr(payload, "type", None) == "snap" and not self._prepared(payload):
            return
        super().on_message(src, payload)
        if src == self.node.lead:
            self._heard_at = self.ticks

    def _prepared(self, m: Any) -> bool:
        """Copy a snapshot's checkpoint before the Raft core takes the snapshot; False (the message
        dropped) if the copy failed. Once the core has taken a snapshot its log starts after it, so a
        copy failing then leaves a state behind its log and the member must stop (fail-stop);
        failing before, the member keeps its state and log as they were, and its leader, hearing
        nothing back, probes again after an election timeout and sends a newer snapshot (the
        checkpoint named can vanish when the member that exported it stops leading and prunes it)."""
        snap = m.snapshot
        log = self.node.log
        if snap is None or snap.meta.index <= log.committed or log.match_term(snap.meta.index, snap.meta.term):
            return True  # the core will not install it (stale, or the entries are here)
        try:
            self.machine.prepare(snap.data)
        except StorageError as e:
            self.snapshots_dropped += 1
            self.last_snapshot_error = f"snapshot at index {snap.meta.index} from {m.src}: {e}"[:500]
            return False
        return True

    def on_request(self, request_id: int, payload: Any) -> None:
        """A client's write, read, scan, status or leadership request."""
        try:
            if isinstance(payload, ReplStatus):
                self.reply(request_id, self.status())
                return
            if self.failed:
                raise ReplicaBehindError(f"{self.node_id} stopped: {self.failed}", 0, self.state.applied)
            if isinstance(payload, ReplWrite):
                self._on_write(request_id, payload)
            elif isinstance(payload, (ReplRead, ReplScan, ReplQuery)):
                self._on_read(request_id, payload)
            elif isinstance(payload, ReplServiceCall):
                self._on_service(request_id, payload)
            elif isinstance(payload, ReplAdmin):
                self._on_repl_admin(request_id, payload)
            elif isinstance(payload, ReplOwnership):
                self._on_ownership(request_id, payload)
            elif isinstance(payload, (ReplIndexScan, ReplOutboxScan)):  # a leader read, as the "leader" read mode
                if self.node.role != LEADER:
                    raise self._not_leader()
                own = self.machine.ownership()
                self.reply(request_id, index_page(self.state, own, payload))
            else:
                raise InvalidArgumentError(f"a replica takes ReplWrite, ReplRead, ReplScan, ReplServiceCall, "
                                           f"ReplAdmin, ReplOwnership or ReplStatus, not {type(payload).__name__}")
        except (ConsensusError, ConfigError, InvalidArgumentError, ReplicaBehindError, StalenessBoundError,
                StaleEpochError, UnknownNodeError, PartitionError, ScanExpiredError) as e:
            self.reply(request_id, error=e)
        self._drain()

    def _on_repl_admin(self, rid: int, req: ReplAdmin) -> None:
        if req.action == "transfer":
            # The leader services' state goes into the log first: the target catches up with the
            # log before it takes over, so it resumes from what this leader holds now.
            self.services.flush()
            if self.node.role == LEADER and self.services.busy:
                self._tend_services()  # sent with this input's drain, ahead of the transfer's messages
            self.node.transfer_leadership(req.target)
            self.reply(rid, None)
            return
        # A membership change: one member at a time, answered when applied (RaftMember's _admin).
        index = self.node.propose_conf_change(ConfChange(req.action, req.target))
        self._admin[index] = rid

    def _not_leader(self) -> NotLeaderError:
        return NotLeaderError(f"{self.node_id} is not the leader of {self.group!r}", self.node.lead or None)

    def _on_write(self, rid: int, req: ReplWrite) -> None:
        node = self.node
        if req.epoch and req.epoch < node.term:
            raise StaleEpochError(f"the write carries term {req.epoch}; {self.group!r} is at term {node.term}",
                                  req.epoch, node.term)
        if node.role != LEADER:
            raise self._not_leader()
        followers = len(node.conf.voters) - 1
        if req.acks > followers:
            raise ConfigError(f"a write asked for {req.acks} follower acknowledgements; "
                              f"{self.group!r} has {followers} followers")
        index = self._propose(req)
        self._repl_writes[index] = (rid, req.client, req.seq, req.acks, node.term)

    def _propose(self, req: ReplWrite) -> int:
        """Propose ``req`` as one entry, decided here when the leader's view allows; its index."""
        node = self.node
        stamp = self._clock.stamp(node.term, self.ticks, self.state.sessions.clock) if req.client else -1
        spec = self.spec
        outcome = None
        if not stops_view(req.ops, req.fence) and self._view_reaches_end():
            outcome = spec.outcome(self.state.sessions, req.client, req.seq, stamp)
        if outcome == FRESH:  # decided once, here, against the state as of the entry's place
            ops, results = spec.decide(req.ops, self.state.get, self.state.scan, self.state.get_many)
            entry = encode_write(req, stamp, ops, results)
            spec.decided += 1
        else:
            ops, entry = (), encode_write(req, stamp)
            spec.undecided += 1
        (index,) = node.propose_many([entry])
        if outcome is not None:
            spec.account(index, req.client, req.seq, req.acked_below, stamp, ops, outcome)
        if outcome == FRESH:  # applied here from these fields, not decoded again (same index, same term)
            self._proposed[index] = (node.term, (req.client, req.seq, req.acked_below, ops, stamp, 0, results))
        return index

    def _view_reaches_end(self) -> bool:
        """Whether the leader's view (:mod:`.speculation`) accounts for its whole log, moving it
        over the entries it can account for first."""
        node, spec, state = self.node, self.spec, self.state
        applied = max(node.log.applied, state.applied)
        if spec.term != node.term:
            spec.reset(node.term, applied)
            self._view_stop, self._view_open = -1, None
        spec.forget(applied)
        if self._view_stop >= 0:
            if self._view_stop > applied:
                return False  # stopped at an entry not applied yet
            self._view_stop, self._view_open = -1, None  # passed it: it may have changed the ownership
        if self._view_open is None:
            # Local index rows are written at apply, in reserved keys the view does not hold. Only
            # an ownership entry changes this, and one stops the view.
            own = self.machine.ownership()
            self._view_open = own is None or not own.indexes
        if not self._view_open:
            return False
        last = node.log.last_index()
        if spec.last >= last:
            # Past the log's end only if the state is ahead of the log (its tail lost after the
            # state had it): decide at apply then, rather than guess.
            return spec.last == last
        for e in node.log.slice(spec.last + 1, last + 1, last - spec.last):
            if not (e.kind == NORMAL and isinstance(e.data, bytes) and e.data):
                spec.skip(e.index)
                continue
            client, seq, acked_below, ops, stamp, fence, results = decode_write(e.data)
            outcome = None if stops_view(ops, fence) else spec.outcome(state.sessions, client, seq, stamp)
            if outcome is None:
                self._view_stop = e.index
                return False
            if outcome == FRESH and results is None:  # proposed undecided: decide it as apply will
                ops, _ = spec.decide(ops, state.get, state.scan, state.get_many)
            spec.account(e.index, client, seq, acked_below, stamp, ops if outcome == FRESH else (), outcome)
        return True

    # --- leader services (leader_services.py) ------------------------------------------------------

    def _on_service(self, rid: int, req: ReplServiceCall) -> None:
        """A leader service's call, served in this input's drain (:meth:`_tend_services`)."""
        if self.node.role != LEADER:
            raise self._not_leader()
        self.services.submit(rid, req)

    def _tend_services(self) -> bool:
        """After an input: the host serves, checkpoints or drops its services (see
        :meth:`~.leader_services.LeaderServices.tend`); whether it proposed a checkpoint."""
        node = self.node
        # Served once this leader has applied an entry of its term: the state its services load
        # from then holds every checkpoint an earlier leader committed.
        return self.services.tend(
            leading=node.role == LEADER, term=node.term, caught_up=node.log.term(node.log.applied) == node.term,
            applied=node.log.applied, ticks=self.ticks, state=self.state,
            propose=lambda ops: self._propose(ReplWrite(ops)), answer=self._service_answer,
            refuse=lambda rid: self.reply(rid, error=self._not_leader()),
            can_propose=not node.transferee)  # a transferring leader's proposals are refused

    def _service_answer(self, rid: int, result: Any) -> None:
        applied = self.node.log.applied
        self.reply(rid, QueryResult(result, self.node.log.term(applied) or self.node.term, applied, self.node_id))

    def _on_ownership(self, rid: int, req: ReplOwnership) -> None:
        """Propose a new ownership record; it is checked as a successor when applied (every member alike)."""
        node = self.node
        if node.role != LEADER:
            raise self._not_leader()
        if req.acks > len(node.conf.voters) - 1:
            raise ConfigError(f"an ownership update asked for {req.acks} follower acknowledgements; "
                              f"{self.group!r} has {len(node.conf.voters) - 1} followers")
        (index,) = node.propose_many([encode_ownership(req.ownership)])
        self._repl_writes[index] = (rid, "", 0, req.acks, node.term)

    def _on_read(self, rid: int, req: ReplRead | ReplScan | ReplQuery) -> None:
        node = self.node
        mode = req.read
        if isinstance(req, ReplScan) and req.pin > 0:  # a pinned view's next page: a past state, served here
            self.reply(rid, self.pins.serve(req, min(req.limit, self.max_scan_rows), self.ticks, self.node_id, None))
            return
        if mode == "linearizable":
            if node.role != LEADER:
                raise self._not_leader()
            self._read_ctx += 1
            node.read_index(self._read_ctx)
            self._reads[self._read_ctx] = [(rid, _REPL, req)]  # served by _serve_read at the read index
            return
        if mode == "leader":
            if node.role != LEADER:
                raise self._not_leader()
            if not node.config.check_quorum:  # no lease without check-quorum: confirm with a quorum instead
                self._read_ctx += 1
                node.read_index(self._read_ctx)
                self._reads[self._read_ctx] = [(rid, _REPL, req)]
                return
        elif node.role != LEADER:
            if req.max_staleness_s >= 0:
                lag_s = (self.ticks - self._heard_at) * self.tick_s if self._heard_at >= 0 else float("inf")
                if lag_s > req.max_staleness_s:
                    raise StalenessBoundError(f"{self.node_id} last heard from its leader {lag_s:.3f} s ago, more "
                                              f"than the {req.max_staleness_s} s bound", lag_s, req.max_staleness_s)
        if mode == "session" and req.after_lsn > self.node.log.applied:
            raise ReplicaBehindError(f"{self.node_id} has applied index {self.node.log.applied}, the session "
                                     f"needs {req.after_lsn}", req.after_lsn, self.node.log.applied)
        self._answer_read(rid, req)

    def _answer_read(self, rid: int, req: ReplRead | ReplScan | ReplQuery) -> None:
        """Answer a read now, or park a blocking query whose result is still empty (parking.py)."""
        result = self._local_read(req)
        if isinstance(req, ReplQuery) and req.wait_s > 0 and isinstance(result, QueryResult) \
                and is_empty(result.result) and self.parked.park(rid, req, self.ticks, self.node.log.applied):
            return
        self.reply(rid, result)

    def _wake_parked(self) -> None:
        """After an input: refuse parked leader reads if this member stopped leading, answer the rest
        that a newly applied write (or their deadline) made due."""
        if self.node.role != LEADER:
            self.parked.drop(lambda req: req.read not in ("leader", "linearizable"),
                             lambda rid: self.reply(rid, error=self._not_leader()))
        self.parked.wake(self.ticks, self.node.log.applied, self._local_read, self.reply)

    def _local_read(self, req: ReplRead | ReplScan | ReplQuery) -> ReadResult | ScanResult | QueryResult:
        applied = self.node.log.applied
        term = self.node.log.known_term(applied)
        if isinstance(req, ReplQuery):
            return QueryResult(run_query(req.name, req.args, self.state), term, applied, self.node_id)
        if req.fence:  # routed by a partition map: only what this group owns at that version (ownership.py)
            check_fenced_read(self.machine.ownership(), req, self.machine.load, self.group)
        if isinstance(req, ReplRead):
            return ReadResult(self.state.get_many(req.keys), term, applied, self.node_id)
        return self.pins.serve(req, min(req.limit, self.max_scan_rows), self.ticks, self.node_id, (term, applied))

    # --- RaftMember's hooks -------------------------------------------------------------------------

    def _serve_read(self, rid: int, pos: int, key: Any) -> None:
        if pos == _REPL:
            try:
                self._answer_read(rid, key)
            except PartitionError as e:  # the read's fence, checked at the read index
                self.reply(rid, error=e)
        else:
            super()._serve_read(rid, pos, key)

    def _retry(self, rid: int, pos: int) -> None:
        if pos == _REPL:  # the read lost its leader: the client asks the new one
            self.reply(rid, error=self._not_leader())
        else:
            super()._retry(rid, pos)

    def _snapshots_sent(self) -> frozenset:
        """The indexes of the snapshots this leader sent and its followers have not acknowledged: a
        snapshot names a checkpoint's files, which a follower copies while the leader goes on, so
        those checkpoints stay (read only when a snapshot is taken)."""
        node = self.node
        if node.role != LEADER:
            return frozenset()
        return frozenset(p.pending_snapshot for p in node.progress.values() if p.state == SNAPSHOT)

    def _install_snapshot(self, snap) -> None:
        try:
            super()._install_snapshot(snap)
        except (StorageError, OSError) as e:
            # Running on would apply the entries after the snapshot to a state that lacks it.
            self.failed = f"could not install the leader's snapshot at index {snap.meta.index}: {e}"
            raise

    def _apply(self, e) -> None:
        if not (e.kind == NORMAL and isinstance(e.data, bytes) and e.data):
            super()._apply(e)
            return
        proposed = self._proposed.pop(e.index, None) if self._proposed else None
        # Log matching: the entry at this index with the term it was proposed in is the one proposed.
        fields = proposed[1] if proposed is not None and proposed[0] == e.term else decode_write(e.data)
        client, seq, acked_below, ops, stamp, fence, decided = fields
        applied = self.machine.apply_write(e.index, e.term, client, seq, acked_below, ops, stamp, fence, decided)
        if self.observer is not None:
            self.observer(self.node_id, "apply", e.index, (e.term, e.data))
        if self.services.held:  # a leader service's checkpoint answers the durable calls it holds
            self.services.saved(e.index, self._service_answer)
        waiting = self._repl_writes.pop(e.index, None)
        if waiting is None:
            return
        rid, w_client, w_seq, acks, w_term = waiting
        # Raft's log matching: the entry at this index is the one proposed iff its term is the
        # proposal's. (client, seq) alone cannot tell two unsessioned entries apart, nor two
        # ownership updates: those carry ("", 0), and answering the wrong one would report a
        # freeze that never applied.
        if e.term != w_term or (client, seq) != (w_client, w_seq):
            self.reply(rid, error=self._not_leader())  # another entry won this index: the session makes a retry safe
            return
        if applied is None:  # a retry the client had acknowledged already: nothing left to answer
            self.reply(rid, error=InvalidArgumentError(f"write {seq} of session {client!r} was acknowledged "
                                                       f"already (the session said so with acked_below)"))
            return
        lsn, results = applied
        refused = refused_error(results)
        if refused is not None:
            self.reply(rid, error=refused)
            return
        term = self.node.log.term(lsn) if lsn != e.index else e.term  # None once compacted away
        ack = WriteAck(term or e.term, lsn, tuple(results))
        if acks > (len(self.node.conf.voters) // 2):  # more followers than a majority brings
            self._acks_waiting[e.index] = (rid, ack, acks)
        else:
            self.reply(rid, ack)

    def _drain(self) -> None:
        super()._drain()
        if self._proposed and self.node.role != LEADER:
            self._proposed.clear()  # what a deposed leader proposed is decoded from its log, if it stays
        if self._repl_writes and self.node.role != LEADER:
            self._answer_deposed()
        if self._acks_waiting:
            self._release_acks()
        if self.parked:
            self._wake_parked()
        if self.services.busy and self._tend_services():
            super()._drain()  # send the checkpoint proposed

    def _answer_deposed(self) -> None:
        """Answer the session writes this member proposed as leader and has not applied: the
        client sends each again at once, with its sequence number, to the new leader, which
        answers it from the session if the entry survived (so it never applies twice).

        Waiting for the index to be applied instead left the client without an answer until
        its call timed out (2 s by default) whenever the new leader wrote nothing at that
        index, as when the lost entry was the client's only write (docs/replication.md).
        Ownership updates carry no session: they keep waiting for their index, where a retry
        could not tell whether the first one applied."""
        for index in [i for i, w in self._repl_writes.items() if w[1]]:
            rid = self._repl_writes.pop(index)[0]
            self.reply(rid, error=WriteOutcomeUnknownError(
                f"{self.node_id} stopped leading {self.group!r} before write {index} committed; "
                f"the write may or may not survive"))

    def _release_acks(self) -> None:
        node = self.node
        if node.role != LEADER:
            waiting, self._acks_waiting = self._acks_waiting, {}
            for rid, _, _ in waiting.values():
                self.reply(rid, error=self._not_leader())  # the retry is answered by the session
            return
        for index in sorted(self._acks_waiting):
            rid, ack, acks = self._acks_waiting[index]
            have = sum(1 for n, p in node.progress.items() if n != self.node_id and p.match >= index)
            if have >= acks:
                del self._acks_waiting[index]
                self.reply(rid, ack)

    # --- status --------------------------------------------------------------------------------------

    def status(self) -> dict:
        """RaftMember's status plus the fields every replica of the store reports."""
        st = super().status()
        node = self.node
        lag = {}
        if node.role == LEADER:
            last = node.log.last_index()
            lag = {n: last - p.match for n, p in node.progress.items() if n != self.node_id}
        staleness = 0.0 if node.role == LEADER else (
            (self.ticks - self._heard_at) * self.tick_s if self._heard_at >= 0 else None)
        return {**st, "group": self.group, "epoch": node.term, "last_lsn": node.log.last_index(),
                "lag_entries": lag, "staleness_s": staleness, "lost_writes": 0, "lost": (),
                "needs_checkpoint": bool(self.failed), "failed": self.failed, "mode": "raft",
                "snapshots_dropped": self.snapshots_dropped, "last_snapshot_error": self.last_snapshot_error,
                "partitions": self.machine.load.figures(), "ownership": self.state.get(OWNERSHIP_KEY),
                **self.machine.indexer.figures(), **self.spec.figures(), **self.services.figures}

    def close(self) -> None:
        """Release the state (an engine closes its files); the shell calls it on a clean stop."""
        self.pins.close_all()
        self.state.close()


def build(node_id: str, *, recovered=(), tick_s: float = 0.01, engine: str = "map", data_url: str = "",
          engine_options: dict | None = None, sync: bool = False, session_ttl_s: float = 0.0,
          procedures: tuple = (), **options) -> RaftReplica:
    """The :class:`~ddia_ray.runtime.core.CoreSpec` factory of a Raft replica (state as in
    :func:`~.leader_follower.build`)."""
    from .leader_follower import open_state

    from .procedures import load

    load(procedures)  # before the state: a replica that could not run its log's procedures must not start
    state = open_state(node_id, engine, data_url, engine_options, sync, session_ttl_s)
    try:
        return RaftReplica(node_id, recovered=recovered, tick_s=tick_s, state=state, **options)
    except BaseException:
        state.close()
        raise
