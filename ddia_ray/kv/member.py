"""A RaftKV member: the pure core a node shell (or the simulator) drives.

Theory of operation
-------------------
:class:`RaftMember` is a :class:`~ddia_ray.runtime.core.BaseCore` around a
:class:`~ddia_ray.consensus.raft.RaftNode` and a
:class:`~.state_machine.KVStateMachine`. After every input it drains the
node's ready in etcd's order: the snapshot, new entries (:class:`LogAppend`)
and hard state go to ``persist``; Raft messages to ``send``; committed
entries are applied and the clients waiting for them answered. The shell
writes ``persist`` to the durable log *before* it sends anything, which is
the durability rule Raft needs; a restart rebuilds the member from those
records with :func:`~ddia_ray.consensus.raft.recover`.

Client batches: writes are proposed together (one append round); reads of a
batch share one ReadIndex round and are served once the read index is
applied. An answered write is matched by index *and* by ``(client, seq)``: if
another entry was committed at its index (the leader lost its term), the
client is told to retry, which the session makes safe.

Log compaction: every ``snapshot_entries`` applied entries the member takes
a state-machine snapshot and persists a :class:`~ddia_ray.runtime.core.Rewrite`
(snapshot, hard state, the entries after it), so the durable log stays short.
The log in memory keeps ``catch_up_entries`` before the snapshot's index, as
etcd does: a follower that installs a snapshot then continues from the log, even
when newer snapshots were taken while it copied (without it, a follower
bootstrapping under steady writes needed snapshot after snapshot).
"""

from __future__ import annotations

import random
import zlib
from typing import Any, Callable

from ..consensus.sessions import ClusterClock, session_ttl_ms
from ..consensus.raft import CONF_CHANGE, LEADER, NORMAL, ConfChange, LogAppend, Message, RaftConfig, RaftNode, \
    recover
from ..errors import ConfigError, ConsensusError, InvalidArgumentError, UnknownNodeError
from ..error_record import ErrorRecord
from ..runtime.core import BaseCore, Rewrite
from .commands import OK, RETRY, WRITE_KINDS, KVAdmin, KVBatch, KVCall, KVCallResult, KVResults, decode_command, \
    encode_command
from .state_machine import KVStateMachine

__all__ = ["RaftMember", "build"]


class _Batch:
    __slots__ = ("results", "remaining")

    def __init__(self, n: int):
        self.results: list = [None] * n
        self.remaining = n


class RaftMember(BaseCore):
    """One RaftKV member (see the module docstring)."""

    # Raft's timeouts are promises about wall time: a follower campaigns after an election timeout
    # without a leader, and a leader under check-quorum steps down after one without a quorum,
    # which is what lets it serve lease reads (Raft thesis 6.4.1). Counted in ticks that fall
    # behind the clock whenever the event loop runs late, an election timeout stretched to seconds
    # under load (so a dead leader went unreplaced for seconds), and a leader's lease outlived the
    # followers' patience. The shell delivers every tick it woke too late for (runtime/ticks.py);
    # a burst after a stall is safe: a follower's pre-vote is refused by members that heard the
    # leader within the timeout, and it turns follower again at the leader's next message.
    clock_ticks = True

    def __init__(self, node_id: str, *, recovered=(), tick_s: float = 0.01, voters=(), learners=(),
                 seed: int = 0, raft: dict | None = None, snapshot_entries: int = 10_000,
                 catch_up_entries: int | None = None, session_ttl_s: float = 0,
                 observer: Callable[[str, str, int, Any], None] | None = None, state_machine: Any = None):
        super().__init__(node_id, tick_s=tick_s)
        ttl_ms = session_ttl_ms(session_ttl_s)
        if type(snapshot_entries) is not int or snapshot_entries < 1:
            raise ConfigError("snapshot_entries must be a positive int")
        if catch_up_entries is None:
            catch_up_entries = min(5_000, snapshot_entries)
        if type(catch_up_entries) is not int or catch_up_entries < 0:
            raise ConfigError("catch_up_entries must be an int >= 0")
        # Entries kept before each snapshot's index (etcd's SnapshotCatchUpEntries): a follower that
        # installs the snapshot continues from the log even if newer snapshots were taken meanwhile.
        self.catch_up_entries = catch_up_entries
        hs, snap, entries = recover(recovered)
        self.node = RaftNode(node_id, voters=tuple(voters), learners=tuple(learners),
                             config=RaftConfig(**(raft or {})),
                             rng=random.Random(seed ^ zlib.crc32(node_id.encode())),
                             hard_state=hs, snapshot=snap, entries=entries)
        # The dict with sessions by default; the replicated store gives its engine-backed machine
        # (replication.raft_replica): the Raft member around it is the same.
        self.sm = state_machine if state_machine is not None else KVStateMachine(ttl_ms)
        self._clock = ClusterClock(tick_s)  # the leader's stamps on writes, for session expiry
        if snap is not None:
            self.sm.restore(snap.data)
        self.snapshot_entries = snapshot_entries
        # The simulator's safety checks: observer(node, "apply", index, (term, data)) for every applied
        # entry and observer(node, "leader", term, None) whenever this member becomes leader.
        self.observer = observer
        self._batches: dict[int, _Batch] = {}
        self._writes: dict[int, tuple] = {}  # log index -> (request id, position, client, seq)
        self._reads: dict[int, list] = {}  # read context -> [(request id, position, key)]
        self._confirmed: list = []  # (read index, items) waiting for apply to reach the index
        self._read_ctx = 0
        self._admin: dict[int, int] = {}  # log index of a membership change -> request id
        # Batches that came as KVCall messages: their (negative) request id -> (sender, call id).
        self._calls: dict[int, tuple[str, int]] = {}
        self._call_ids = 0
        self.timeline: list = []  # (ticks, term, role, leader, commit) at every change of term or role
        self._last_seen: tuple[int, str, str] | None = None
        self._drain()

    # --- inputs -------------------------------------------------------------

    def on_tick(self) -> None:
        """Time passes for Raft."""
        self.node.tick()
        self._drain()

    def on_message(self, src: str, payload: Any) -> None:
        """A Raft message from another member, or a :class:`KVCall` from another core (anything else is
        refused loudly)."""
        if isinstance(payload, KVCall):
            # Served like a client's batch under a request id of its own (negative: never a client's);
            # reply() turns the answer into a message back to the caller.
            self._call_ids -= 1
            self._calls[self._call_ids] = (src, payload.call_id)
            self._on_batch(self._call_ids, payload.batch)
            self._drain()
            return
        if not isinstance(payload, Message):
            raise InvalidArgumentError(f"{self.node_id}: expected a raft Message from {src!r}, "
                                       f"got {type(payload).__name__}")
        self.node.step(payload)
        self._drain()

    def on_request(self, request_id: int, payload: Any) -> None:
        """A client batch or an admin request."""
        if isinstance(payload, KVBatch):
            self._on_batch(request_id, payload)
        elif isinstance(payload, KVAdmin):
            self._on_admin(request_id, payload)
        else:
            self.reply(request_id, error=InvalidArgumentError(
                f"RaftKV takes KVBatch or KVAdmin requests, not {type(payload).__name__}"))
        self._drain()

    def _on_batch(self, rid: int, batch: KVBatch) -> None:
        node = self.node
        self._batches[rid] = _Batch(len(batch.ops))
        for i, op in enumerate(batch.ops):
            if op[0] == "get_local":  # from this member's own state: possibly stale, by request
                self._finish(rid, i, OK, self.sm.read(op[1]))
        if rid not in self._batches:
            return
        if node.role != LEADER:
            for i in range(len(batch.ops)):
                self._finish(rid, i, RETRY, node.lead)
            return
        writes = [(i, op) for i, op in enumerate(batch.ops) if op[0] in WRITE_KINDS]
        reads = [(i, op) for i, op in enumerate(batch.ops) if op[0] == "get"]
        if writes:
            try:
                # Commands enter the log encoded: Raft treats them as opaque bytes, and encoding once
                # here (not once per follower message and once per persist) was measured 6x cheaper.
                client, acked = batch.client, batch.acked_below
                stamp = self._clock.stamp(node.term, self.ticks, self.sm.sessions.clock)
                indexes = node.propose_many([encode_command(client, acked, op, stamp) for _, op in writes])
            except ConsensusError:
                for i, _ in writes:
                    self._finish(rid, i, RETRY, node.lead)
            else:
                for index, (i, op) in zip(indexes, writes):
                    self._writes[index] = (rid, i, batch.client, op[2])
        if reads:
            self._read_ctx += 1
            node.read_index(self._read_ctx)
            self._reads[self._read_ctx] = [(rid, i, op[1]) for i, op in reads]

    def _on_admin(self, rid: int, req: KVAdmin) -> None:
        node = self.node
        if req.action == "status":
            self.reply(rid, self.status())
            return
        try:
            if req.action == "transfer":
                node.transfer_leadership(req.node)
                self.reply(rid, True)
                return
            index = node.propose_conf_change(ConfChange(req.action, req.node))
        except (ConsensusError, ConfigError, UnknownNodeError) as e:  # NotLeaderError keeps its leader_hint
            self.reply(rid, error=e)
            return
        self._admin[index] = rid

    # --- outputs ------------------------------------------------------------

    def reply(self, request_id: int, payload: Any = None, *, error: BaseException | None = None) -> None:
        """Answer a client request, or send a :class:`KVCallResult` to the core whose call it was."""
        call = self._calls.pop(request_id, None)
        if call is None:
            super().reply(request_id, payload, error=error)
            return
        src, call_id = call
        self.send(src, KVCallResult(call_id, payload if error is None else None,
                                    None if error is None else ErrorRecord.of(error, self.node_id)))

    def _finish(self, rid: int, pos: int, code: int, value: Any) -> None:
        tracker = self._batches.get(rid)
        if tracker is None or tracker.results[pos] is not None:
            return
        tracker.results[pos] = (code, value)
        tracker.remaining -= 1
        if tracker.remaining == 0:
            del self._batches[rid]
            self.reply(rid, KVResults(tuple(tracker.results), self.node.lead))

    def _drain(self) -> None:
        node = self.node
        while node.has_ready():
            rd = node.ready()
            if rd.snapshot is not None:
                # Installed before it is persisted: a restart after a failed install recovers the
                # state it really has, and the leader sends its snapshot again.
                self._install_snapshot(rd.snapshot)
                self.persist(rd.snapshot)
                for index in [i for i in self._writes if i <= rd.snapshot.meta.index]:
                    rid, pos, _, _ = self._writes.pop(index)
                    self._retry(rid, pos)  # the session answers the retry
            if rd.entries:
                self.persist(LogAppend(rd.entries))
            if rd.hard_state is not None:
                self.persist(rd.hard_state)
            for m in rd.messages:
                self.send(m.dst, m)
            for e in rd.committed:
                self._apply(e)
            for ctx in rd.dropped_reads:
                for rid, pos, _ in self._reads.pop(ctx, ()):
                    self._retry(rid, pos)
            for rs in rd.read_states:
                items = self._reads.pop(rs.context, None)
                if items:
                    self._confirmed.append((rs.index, items))
            node.advance(rd)
            self._serve_reads()
            self._note_timeline()
        self._maybe_compact()

    def _apply(self, e) -> None:
        result = cmd = None
        if e.kind == NORMAL and isinstance(e.data, bytes):
            cmd = decode_command(e.data)
            result = self.sm.apply(cmd, e.index)
        if self.observer is not None:
            self.observer(self.node_id, "apply", e.index, (e.term, e.data))
        waiting = self._writes.pop(e.index, None)
        if waiting is not None:
            rid, pos, client, seq = waiting
            if cmd is not None and cmd.client == client and cmd.seq == seq:
                self._finish(rid, pos, OK, result)
            else:
                self._retry(rid, pos)  # another entry won this index
        if e.kind == CONF_CHANGE:
            rid = self._admin.pop(e.index, None)
            if rid is not None:
                self.reply(rid, True)

    def _serve_reads(self) -> None:
        if not self._confirmed:
            return
        applied = self.node.log.applied
        keep = []
        for index, items in self._confirmed:
            if index <= applied:
                for rid, pos, key in items:
                    self._serve_read(rid, pos, key)
            else:
                keep.append((index, items))
        self._confirmed = keep

    def _install_snapshot(self, snap) -> None:
        """Replace the state machine by a leader's snapshot (a state machine with ``install`` copies
        files there; the dict simply decodes it)."""
        install = getattr(self.sm, "install", None)
        (install or self.sm.restore)(snap.data)

    def _retry(self, rid: int, pos: int) -> None:
        """Tell the client to send operation ``pos`` of request ``rid`` again (its session makes that safe)."""
        self._finish(rid, pos, RETRY, self.node.lead)

    def _serve_read(self, rid: int, pos: int, key: Any) -> None:
        """Answer a read whose read index has been applied."""
        self._finish(rid, pos, OK, self.sm.read(key))

    def _maybe_compact(self) -> None:
        log = self.node.log
        last_snapshot = self.node.snapshot.meta.index if self.node.snapshot is not None else log.snap_index
        if log.applied - last_snapshot < self.snapshot_entries or log.unstable <= log.last_index():
            return
        snap = self.node.compact(self.sm.snapshot(), keep_entries=self.catch_up_entries)
        records = [snap, self.node.hard_state]
        after = tuple(e for e in log.entries if e.index > snap.meta.index)  # the catch-up tail stays in memory
        if after:
            records.append(LogAppend(after))
        # Derived: the snapshot sums up applied entries this member persisted, and the hard state
        # and the entries kept are in its log already, so the shell may write the compacted log in
        # the background while the member goes on (a snapshot installed from a leader is new, and is
        # persisted as a record of its own). Not when the snapshot names files the state machine
        # prunes as it takes later ones (the replicated store's engine checkpoints): the log on disk
        # would go on naming an older snapshot until the swap, whose files a later compaction could
        # remove before it.
        self.persist(Rewrite(tuple(records), derived=not getattr(self.sm, "snapshot_files", False)))

    def _note_timeline(self) -> None:
        node = self.node
        seen = (node.term, node.role, node.lead)
        if seen != self._last_seen:
            self._last_seen = seen
            if node.role == LEADER and self.observer is not None:
                self.observer(self.node_id, "leader", node.term, None)
            self.timeline.append((self.ticks, node.term, node.role, node.lead, node.log.committed))
            del self.timeline[:-1000]

    def status(self) -> dict:
        """Raft status plus state-machine and timeline data."""
        return {**super().status(), **self.node.status(), **self.sm.figures(), "timeline": tuple(self.timeline)}


def build(node_id: str, *, recovered=(), tick_s: float = 0.01, **options) -> RaftMember:
    """The :class:`~ddia_ray.runtime.core.CoreSpec` factory of a RaftKV member."""
    return RaftMember(node_id, recovered=recovered, tick_s=tick_s, **options)
