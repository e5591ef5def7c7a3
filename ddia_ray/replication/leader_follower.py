"""Leader-follower replication with a fenced leader lease: the pure core of one replica.

Theory of operation
-------------------
DDIA 5.1 ("Leaders and followers"): one replica, the leader, orders every write;
it gives each batch the next log sequence number (lsn), applies it, persists it
and streams it to the followers, which apply the entries in order and
acknowledge the last lsn they have persisted. The mode decides when the client
hears "done": ``async`` as soon as the leader has persisted the entry,
``semi-sync`` once ``sync_replicas`` followers have acknowledged it (PostgreSQL's
``synchronous_standby_names = 'ANY k (...)'``, MySQL's semi-sync), ``sync`` once
every follower has. A write may ask for more acknowledgements than its mode;
in async mode that makes the answer wait for them, but a failover may still
discard the write (the mode's quorum protects none), and then it is counted.

**Leadership is a lease with an epoch** (DDIA 8.4, "The leader and the lock"),
kept in a coordination service (RaftKV; :mod:`.coordination`) under one key
whose value is ``(epoch, holder, renewal, members)`` (the member list and its
changes: :mod:`.membership`). The leader renews it every
``renew_s`` with a compare-and-set. It counts its lease from the moment it
*sent* the renewal that succeeded, shortened by the drift bound:
``valid_until = sent + lease_s * (1 - drift)``. Followers read the key every
``watch_s``; a value that has not changed for ``lease_s * (1 + drift)`` of
their own time has lapsed. So with clocks whose rates differ by less than
``drift``, a holder stops before anyone else may start (Gray & Cheriton's
leases). A process pause is the case clocks cannot cover (DDIA 8.3, "Process
pauses"): the fencing below is what makes it safe.

**Failover** (:mod:`.failover`). A follower that sees the lease lapse (or
vacant) probes its peers for their log positions, claiming an epoch that each
peer adopts (persisted) before it answers. It goes on only if ``n - k``
replicas answered (``k``: the mode's follower acknowledgements; a write
acknowledged by ``k`` followers lives on ``k + 1`` replicas, so such a set
holds one of them), and never while an answer has a later last entry than its
own: it leaves the lease to that peer for ``defer_s``, then catches up from it
(the entries after its own last one) rather than pass it over. Then it takes
the lease with a compare-and-set of the value it read, which exactly one
candidate wins each epoch, and appends an empty entry of its epoch, which
marks where its history starts.

**Fencing.** Every :class:`~.records.Append` carries the leader's epoch, and a
replica that has seen a newer epoch refuses it and answers with that epoch.
A deposed leader learns it was deposed from that refusal, from a newer append
or probe, or from the lease key; it then fails its waiting writes with
:class:`~ddia_ray.errors.WriteOutcomeUnknownError`. A write is acknowledged
only while the lease is valid, so a leader whose lease ran out while the
acknowledgements were on their way does not claim a write that a new leader
may never have seen.

**Divergence** (:mod:`.divergence`). A follower whose log holds a deposed
leader's tail installs a checkpoint of the leader's state, and reports the
writes it discards that may have been acknowledged as *lost writes* (the
GitHub incident of DDIA 5.1); in sync and semi-sync modes none can have been.
**Leadership** once held (renewals, stepping down, transfer): :mod:`.leadership`.

Reads (:mod:`.replica_reads`): ``leader`` and ``linearizable`` by the leader
while its lease holds, ``follower`` by any replica within ``max_staleness_s``,
``session`` by any replica that has applied the session's position.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from .. import codec
from .._validate import invariant, seconds_to_ticks
from ..errors import (ConfigError, InvalidArgumentError, NotLeaderError,
                      PartitionError, ReplicaBehindError, ScanExpiredError, SessionError, StaleEpochError,
                      StalenessBoundError, WriteOutcomeUnknownError)
from ..kv.commands import KVCallResult
from ..runtime.core import BaseCore, Rewrite
from .coordination import CoordinationClient
from .divergence import Divergence, epoch_in
from .failover import FOLLOWER, LEADER, Failover
from .leadership import Leadership
from .membership import MembershipChanges
from .indexing import Indexer, ReplIndexScan, ReplOutboxScan, index_page, index_rows
from .pins import ScanPins
from .replica_reads import ReplicaReads
from .ownership import (OWNERSHIP_KEY, Ownership, OwnershipCache, PartitionLoad, ReplOwnership, check_fenced_ops,
                        check_update)
from .records import (MAX_APPEND_BYTES, Append, AppendAck, Base, Checkpoint, CheckpointRequest, LogEntries,
                      LostWrites, PositionProbe, PositionReport, QueryResult, ReplAdmin, ReplicaMeta,
                      ReplQuery, ReplRead, ReplScan, ReplStatus, append_slice, ReplWrite, WriteAck, PUT)
from .parking import ParkedQueries, is_empty
from .procedures import run_query
from ..consensus.sessions import ClusterClock, session_ttl_ms
from .state import MapState, ReplicaState

__all__ = ["LeaderFollowerReplica", "MODES", "build", "check_sync_replicas", "open_state"]

MODES = ("sync", "semi-sync", "async")
_PIN_LIMIT = 8  # a checkpoint's log tail is kept for at most this many times retain_entries
_LOST_KEYS_KEPT = 1000  # lost writes listed in status (the count is exact; the list is the newest)


def check_sync_replicas(mode: str | None, sync_replicas: Any, followers: int) -> None:
    """Refuse a semi-sync ``sync_replicas`` that is not 1 to ``followers`` (a store of one replica
    counts one): :class:`~ddia_ray.errors.ConfigError`. ``ReplicatedStore.launch`` asks before any
    actor starts, and each replica again as it is built."""
    if mode == "semi-sync" and not (type(sync_replicas) is int and 1 <= sync_replicas <= max(1, followers)):
        raise ConfigError(f"semi-sync needs 1 <= sync_replicas <= {followers} followers, got {sync_replicas!r}")


class LeaderFollowerReplica(BaseCore, MembershipChanges, Failover, Leadership, Divergence, ReplicaReads):
    """One replica of a leader-follower group (see the module docstring)."""

    # The lease is counted in ticks: a leader whose ticks fell behind the clock under load would
    # hold it past the drift bound. The shell delivers every tick it woke too late for.
    clock_ticks = True

    def __init__(self, node_id: str, *, recovered=(), tick_s: float = 0.01, group: str = "", members=(),
                 coordinators=(), mode: str = "async", sync_replicas: int = 1, lease_s: float = 1.0,
                 renew_s: float | None = None, watch_s: float | None = None, drift: float = 0.1,
                 heartbeat_s: float = 0.05, probe_s: float = 0.1, defer_s: float | None = None,
                 retain_entries: int = 10_000, max_append_entries: int = 256,
                 max_append_bytes: int = MAX_APPEND_BYTES, max_scan_rows: int = 10_000,
                 pin_ttl_s: float = 60.0, state: ReplicaState | None = None,
                 observer: Callable[[str, str, Any], None] | None = None):
        super().__init__(node_id, tick_s=tick_s)
        members = tuple(members)
        if node_id not in members or len(set(members)) != len(members):
            raise ConfigError(f"members must be distinct and include {node_id!r}, got {members!r}")
        if mode not in MODES:
            raise ConfigError(f"unknown replication mode {mode!r}; use one of {MODES}")
        check_sync_replicas(mode, sync_replicas, len(members) - 1)
        if not isinstance(drift, (int, float)) or not 0 <= drift < 1:
            raise ConfigError("drift is the clock-rate bound, a fraction in [0, 1)")
        if not group:
            raise ConfigError("a replica names its group (the lease key is the group's)")
        self.group, self.mode, self.sync_replicas = group, mode, sync_replicas
        self._set_members(members)  # the launch list, until a lease read names the current one
        self.lease_ticks = seconds_to_ticks("lease_s", lease_s, tick_s)
        self.renew_ticks = seconds_to_ticks("renew_s", renew_s or lease_s / 3, tick_s)
        self.watch_ticks = seconds_to_ticks("watch_s", watch_s or lease_s / 4, tick_s)
        if self.renew_ticks * 2 > self.lease_ticks:
            raise ConfigError("renew_s must be at most half of lease_s, or one lost renewal ends the lease")
        self.drift = float(drift)
        self.heartbeat_ticks = seconds_to_ticks("heartbeat_s", heartbeat_s, tick_s)
        self.probe_ticks = seconds_to_ticks("probe_s", probe_s, tick_s)
        # Long enough for the peer ahead to see the lapse itself (it may have just restarted) and win.
        self.defer_ticks = seconds_to_ticks("defer_s", defer_s or 2 * lease_s + 2 * probe_s, tick_s)
        self.retain_entries = max(1, retain_entries)
        self.max_append_entries = max(1, max_append_entries)
        self.max_append_bytes = max(1, max_append_bytes)
        # observer(node, event, data): the simulation's invariant checks ("ack", "lead", "apply", "lost").
        self.observer = observer
        self.lease_key = b"ddia/lease/" + group.encode()

        # Durable state (rebuilt from ``recovered``): the newest epoch seen, the log and its base.
        self.epoch = 0
        self.incarnation = 0
        # The data: a dict (MapState) unless the shell's factory gave an engine-backed state.
        self.state: ReplicaState = state if state is not None else MapState()
        self.max_scan_rows = max(1, max_scan_rows)
        self.log: deque = deque()  # (epoch, lsn, ops, acks, origin), consecutive lsns after base_lsn
        self.base_lsn = self.base_epoch = 0
        self.epochs: list[tuple[int, int]] = []  # (epoch, first lsn), ascending: the epoch history
        self.lost_writes = 0
        self.lost: deque = deque(maxlen=_LOST_KEYS_KEPT)  # (epoch, lsn, keys) discarded after an async ack
        self._lost_index: tuple | None = None  # cache of _lost_at
        self._own = OwnershipCache()  # the group's ownership record (ownership.py)
        self.partition_load = PartitionLoad()
        self.indexer = Indexer()
        self.pins = ScanPins(self.state, ttl_ticks=max(1, round(pin_ttl_s / tick_s)))
        self.parked = ParkedQueries(tick_s)  # blocking queries waiting for a write (parking.py)
        self._recover(recovered)
        # A durable state can be ahead of the log (it applied an entry whose log record the crash
        # lost) or at an entry of another history: it then holds a write no log holds, so it may
        # neither lead nor serve reads until it installs the leader's checkpoint.
        st = self.state
        self._needs_checkpoint = st.applied > self.last_lsn or bool(
            st.applied_epoch and st.applied > self.base_lsn and self.epoch_at(st.applied) != st.applied_epoch)
        self.incarnation += 1
        self.persist(ReplicaMeta(self.epoch, self.incarnation))

        # Volatile state.
        self.role = FOLLOWER
        self.leader = ""
        self.valid_until = -1  # leader: tick until which its lease holds
        self.coord = CoordinationClient(self.send, tuple(coordinators), f"{group}/{node_id}#{self.incarnation}",
                                        timeout_ticks=max(2, self.watch_ticks))
        self._lease_raw: bytes | None = None  # the lease value last read or written
        self._lease_seen_at = -1  # tick when _lease_raw was first seen unchanged
        self._renewal = 0
        self._next_watch = 0
        self._next_heartbeat = 0
        self._probe: dict | None = None  # candidate: {"seq", "until", "answers"}
        self._probe_seq = 0
        self._deferred_since = -1  # tick of the first deferral to a peer ahead, since the lease last changed
        self._match: dict[str, int] = {}  # leader: follower -> last lsn it acknowledged
        self._next: dict[str, int] = {}  # leader: follower -> next lsn to send
        self._waiting: dict[int, list] = {}  # leader: lsn -> [request ids, results, acks the write asked for]
        # leader: follower -> [lsn of the checkpoint sent to it, tick sent]; the log keeps the entries after
        # it until the follower has them (PostgreSQL's replication slot, for one bootstrap).
        self._pins: dict[str, list[int]] = {}
        self._resyncing = False
        self._resync_asked_at = 0
        self._clock = ClusterClock(tick_s)  # the leader's stamps for session expiry
        self._caught_up_at = -1  # follower: tick it last knew itself caught up with the leader
        self.last_checkpoint_error = ""
        self._transfer: dict | None = None  # leader: {"target", "rid", "until"} while handing over
        self._change: dict | None = None  # leader: the membership change under way (see .membership)
        self._watch_sent = 0  # tick the last lease read was sent (a transferred lease counts from it)
        self.counters = {"appends_sent": 0, "stale_refused": 0, "checkpoints_sent": 0, "checkpoints_installed": 0,
                         "failovers_won": 0, "deferrals": 0, "caught_up_entries": 0, "probes_short": 0,
                         "outcome_unknown": 0, "lease_lapses": 0, "transfers": 0, "checkpoint_failures": 0}

    # --- recovery ------------------------------------------------------------

    def _recover(self, records) -> None:
        for rec in records:
            if isinstance(rec, ReplicaMeta):
                self.epoch = max(self.epoch, rec.epoch)
                self.incarnation = max(self.incarnation, rec.incarnation)
            elif isinstance(rec, Base):
                self.state.restore(rec.data)
                self.base_lsn, self.base_epoch = rec.lsn, rec.lsn_epoch
                self.epochs = [tuple(p) for p in rec.epochs]
                self.log.clear()
            elif isinstance(rec, LostWrites):
                self.lost_writes += rec.count
                self.lost.extend(tuple(e) for e in rec.entries)
                if rec.found:  # (the record's negative count has corrected the count already)
                    found = {tuple(p) for p in rec.found}
                    self._drop_lost(lambda e, lsn, found=found: (e, lsn) in found, count=False)
            elif isinstance(rec, LogEntries):
                for e in rec.entries:
                    self._append_entry(e, replaying=True)
            else:
                raise ConfigError(f"{self.node_id}: unexpected record {type(rec).__name__} in the replica log")

    # --- the log ---------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        """The lsn of the newest entry in the log."""
        return self.log[-1][1] if self.log else self.base_lsn

    @property
    def last_epoch(self) -> int:
        """The epoch of the newest entry in the log."""
        return self.log[-1][0] if self.log else self.base_epoch

    def epoch_at(self, lsn: int) -> int:
        """The epoch of the entry at ``lsn`` in this replica's history (0 before the first)."""
        return epoch_in(self.epochs, lsn)

    def _entry(self, lsn: int):
        i = lsn - self.base_lsn - 1
        return self.log[i] if 0 <= i < len(self.log) else None

    def _append_entry(self, e: tuple, *, replaying: bool = False) -> None:
        epoch, lsn, ops, _, origin = e
        if lsn <= self.base_lsn:
            return  # already in the base (a log rewritten after a checkpoint keeps some for followers)
        invariant(lsn == self.last_lsn + 1, "replica log entries are consecutive")
        if not self.epochs or epoch > self.epochs[-1][0]:
            self.epochs.append((epoch, lsn))
        self.log.append(e)
        if self.lost and not replaying and (epoch, lsn) in self._lost_at:
            self._found_again(lambda ep, n: (ep, n) == (epoch, lsn))
        if lsn > self.state.applied:
            self.state.apply(lsn, ops, origin, epoch)
            if self.observer is not None and not replaying:
                self.observer(self.node_id, "apply", (epoch, lsn, ops))
        else:  # a durable state applied it before a restart: only the session's answer is rebuilt
            self.state.remember(lsn, origin)

    def _persist_entries(self, entries: tuple) -> None:
        # Every entry was checked on its way in (a client's write, or a leader's Append): not again.
        self.persist(codec.prechecked(LogEntries, entries))
        if len(self.log) > 2 * self.retain_entries:
            self._compact()

    def _compact(self) -> None:
        """Keep the newest ``retain_entries`` entries (for lagging followers); the rest become the base.

        Only entries the state holds durably may go: an engine without its own WAL keeps its
        newest writes in memory until it flushes, and a crash replays them from this log. When
        the durable position lags, the engine is asked to flush and the log waits for it.
        """
        target = self.last_lsn - self.retain_entries
        if self._pins:
            # A follower installing a checkpoint continues from the log after it: keep that tail, or
            # under steady writes it would need checkpoint after checkpoint and never catch up.
            # A pin older than _PIN_LIMIT x retain_entries is dropped (the follower is too slow or gone;
            # it asks for a newer checkpoint).
            oldest = self.last_lsn - _PIN_LIMIT * self.retain_entries
            self._pins = {p: pin for p, pin in self._pins.items() if pin[0] >= oldest}
            target = min([target, *(pin[0] for pin in self._pins.values())])
        durable = self.state.durable_lsn()
        cut = min(target, durable)
        if cut - self.base_lsn < self.retain_entries // 2:  # too little to drop yet
            if durable < target:
                self.state.request_durable()  # the engine's memtable holds us back: have it flushed
            return
        while self.log and self.log[0][1] <= cut:
            self.log.popleft()
        kept = tuple(self.log)
        self.base_lsn = cut
        self.base_epoch = self.epoch_at(self.base_lsn)
        # The base holds the state at its durable position (at least base_lsn): recovery applies
        # only the kept entries after it, and the others serve followers. Derived: the old log
        # replays to the same state, so the shell may write this one in the background (a
        # checkpoint installed from the leader, divergence.py, is new and is not).
        self.persist(Rewrite((ReplicaMeta(self.epoch, self.incarnation), self._lost_record(),
                              Base(self.base_lsn, self.base_epoch, tuple(self.epochs), self.state.snapshot()),
                              codec.prechecked(LogEntries, kept)), derived=True))

    # --- inputs --------------------------------------------------------------

    def on_tick(self) -> None:
        """Time passes: heartbeats, the lease's renewal and watch, a candidate's probe."""
        now = self.ticks
        if self.parked:  # deadlines first: a tick is when a blocking query's wait runs out
            self._wake_parked()
        self.coord.on_tick()
        if self.pins and now % 100 == 0:
            self.pins.expire(now)
        if self.role == LEADER:
            if now > self.valid_until:
                self.counters["lease_lapses"] += 1
                self._step_down("its lease ran out before it could renew it")
            else:
                if now >= self._next_heartbeat:
                    self._next_heartbeat = now + self.heartbeat_ticks
                    self._replicate(heartbeat=True)
                if self._transfer is not None:
                    self._advance_transfer()
                if self._change is not None:
                    self._advance_change()
                if not self.coord.busy and now >= self._next_watch and self.role == LEADER:
                    self._next_watch = now + self.renew_ticks
                    self._renew()
            return
        if self._probe is not None and now >= self._probe["until"]:
            self._finish_probe()
        if not self.coord.busy and self._probe is None and now >= self._next_watch:
            self._next_watch = now + self.watch_ticks
            self._watch_sent = now
            self.coord.call([("get", self.lease_key, None, None)], self._on_lease_read)

    def on_message(self, src: str, payload: Any) -> None:
        """A replication message from a peer, or a coordination answer."""
        if isinstance(payload, Append):
            self._on_append(src, payload)
        elif isinstance(payload, AppendAck):
            self._on_ack(src, payload)
        elif isinstance(payload, KVCallResult):
            self.coord.on_result(src, payload)
        elif isinstance(payload, PositionProbe):
            self._on_probe(src, payload)
        elif isinstance(payload, PositionReport):
            self._on_position(src, payload)
        elif isinstance(payload, CheckpointRequest):
            self._on_checkpoint_request(src, payload)
        elif isinstance(payload, Checkpoint):
            self._on_checkpoint(src, payload)
        else:
            raise InvalidArgumentError(f"{self.node_id}: unexpected message {type(payload).__name__} from {src!r}")
        if self.parked:  # an append from the leader may have given a parked query its answer
            self._wake_parked()

    def on_request(self, request_id: int, payload: Any) -> None:
        """A client's write, read or status request."""
        try:
            if isinstance(payload, ReplWrite):
                self._on_write(request_id, payload)
            elif isinstance(payload, ReplRead):
                self.reply(request_id, self._read(payload))
            elif isinstance(payload, ReplScan):
                self.reply(request_id, self._scan(payload))
            elif isinstance(payload, ReplQuery):
                self._check_readable(payload)
                result = self._run_query(payload)
                if not (payload.wait_s > 0 and is_empty(result.result)
                        and self.parked.park(request_id, payload, self.ticks, self.state.applied)):
                    self.reply(request_id, result)
            elif isinstance(payload, ReplAdmin):
                self._on_admin(request_id, payload)
            elif isinstance(payload, ReplStatus):
                self.reply(request_id, self.status())
            elif isinstance(payload, ReplOwnership):
                self._on_ownership(request_id, payload)
            elif isinstance(payload, (ReplIndexScan, ReplOutboxScan)):
                if not self._leading():
                    raise self._not_leader()
                own = self._ownership()
                self.reply(request_id, index_page(self.state, own, payload))
            else:
                raise InvalidArgumentError(f"a replica takes ReplWrite, ReplRead, ReplScan, ReplAdmin, ReplOwnership "
                                           f"or ReplStatus, not {type(payload).__name__}")
        except (NotLeaderError, StaleEpochError, ReplicaBehindError, StalenessBoundError, SessionError, ConfigError,
                InvalidArgumentError, PartitionError, ScanExpiredError) as e:
            self.reply(request_id, error=e)
        if self.parked:  # a write this request applied (a leader's own) may answer a parked query
            self._wake_parked()

    def _run_query(self, req: ReplQuery) -> QueryResult:
        applied = self.state.applied
        return QueryResult(run_query(req.name, req.args, self.state), self.epoch_at(applied), applied, self.node_id)

    def _wake_parked(self) -> None:
        """Refuse parked leader reads once this replica stops leading; answer the parked queries a newly
        applied write (or their deadline) made due (parking.py)."""
        if not self._leading():
            self.parked.drop(lambda req: req.read not in ("leader", "linearizable"),
                             lambda rid: self.reply(rid, error=self._not_leader()))
        self.parked.wake(self.ticks, self.state.applied, self._run_query, self.reply)

    # --- leader: writes and replication --------------------------------------------------------

    def _leading(self) -> bool:
        return self.role == LEADER and self.ticks <= self.valid_until

    def _not_leader(self) -> NotLeaderError:
        return NotLeaderError(f"{self.node_id} is not the leader of {self.group!r} (role {self.role})",
                              self.leader or None)

    def _check_writable(self, epoch: int, acks: int) -> int:
        """Refuse a write this replica may not order now; returns the acknowledgements it needs."""
        if epoch and epoch < self.epoch:
            raise StaleEpochError(f"the write carries epoch {epoch}; {self.group!r} is at epoch {self.epoch}",
                                  epoch, self.epoch)
        if not self._leading() or epoch > self.epoch:
            raise self._not_leader()
        if self._transfer is not None:  # handing over: the target takes the writes from now on
            raise NotLeaderError(f"{self.node_id} is handing leadership of {self.group!r} to "
                                 f"{self._transfer['target']}", self._transfer["target"])
        followers = len(self.members) - 1
        if acks > followers:
            raise ConfigError(f"a write asked for {acks} follower acknowledgements; "
                              f"{self.group!r} has {followers} followers")
        return max(self.default_acks, acks)

    def _ownership(self) -> Ownership | None:
        """The group's ownership record as of the last entry this replica applied."""
        return self._own.of(self.state.get(OWNERSHIP_KEY))

    def _on_ownership(self, rid: int, req: ReplOwnership) -> None:
        """Order a new ownership record (checked against the current one) like a client's write."""
        needed = self._check_writable(0, req.acks)
        check_update(self._ownership(), req.ownership)
        self._order(rid, ((PUT, OWNERSHIP_KEY, codec.encode(req.ownership)),), (None,), needed, req.acks, ())

    def _on_write(self, rid: int, req: ReplWrite) -> None:
        needed = self._check_writable(req.epoch, req.acks)
        if req.after_lsn:  # the session must not move past a write of its own that was lost
            self._check_session_position(req.after_epoch, req.after_lsn)
        if req.client:
            done = self.state.answered(req.client, req.seq)
            if done == "stale":
                raise InvalidArgumentError(f"write {req.seq} of session {req.client!r} was acknowledged already "
                                           f"(the session said so with acked_below)")
            if done is not None:  # a retry or a duplicate: answer as the first time, apply nothing
                lsn, results = done
                if lsn in self._waiting:
                    self._waiting[lsn][0].append(rid)
                else:
                    self._acknowledge((rid,), lsn, results)
                return
        own = self._ownership()
        if req.fence:  # routed by a partition map: only keys this group owns at that version (ownership.py)
            self.partition_load.wrote(check_fenced_ops(own, req.fence, req.ops))
        ops, results = self.state.decide(req.ops)
        if own is not None and own.indexes:  # local indexes: their rows are logged with the data
            ops = index_rows(self.indexer, own.indexes, self.state, ops)
        origin = (req.client, req.seq, req.acked_below, results,
                  self._clock.stamp(self.epoch, self.ticks, self.state.sessions.clock)) if req.client else ()
        self._order(rid, ops, results, needed, req.acks, origin)

    def _order(self, rid: int, ops: tuple, results: tuple, needed: int, acks: int, origin: tuple) -> None:
        """Append decided ``ops`` as the next entry and answer ``rid`` once ``needed`` followers have it."""
        lsn = self.last_lsn + 1
        entry = (self.epoch, lsn, ops, needed, origin)
        self._append_entry(entry)
        self._persist_entries((entry,))
        if needed == 0:
            self._acknowledge((rid,), lsn, results)
        else:
            self._waiting[lsn] = [[rid], results, acks]
        self._replicate()

    def _append_system_entry(self, ops: tuple) -> None:
        """The leader's own entry (no client waits for it), replicated like any write."""
        entry = (self.epoch, self.last_lsn + 1, ops, self.default_acks, ())
        self._append_entry(entry)
        self._persist_entries((entry,))
        self._replicate()

    def _acknowledge(self, rids, lsn: int, results: tuple) -> None:
        epoch = self.epoch_at(lsn)  # a retry of a write of an earlier epoch keeps its position
        if self.observer is not None:
            self.observer(self.node_id, "ack", (self.epoch, lsn))
        for rid in rids:
            self.reply(rid, WriteAck(epoch, lsn, results))

    def _replicate(self, heartbeat: bool = False) -> None:
        """Send every follower what it lacks (or a heartbeat), from its next lsn."""
        last = self.last_lsn
        for peer in self._targets():
            if peer == self.node_id:
                continue
            nxt = self._next.get(peer, last + 1)
            if nxt > last and not heartbeat:
                continue
            if nxt <= self.base_lsn:  # compacted away: only a checkpoint can bring it up to date
                self._send_checkpoint(peer)
                continue
            prev = nxt - 1
            start = prev - self.base_lsn
            entries = append_slice(self.log, start, self.max_append_entries, self.max_append_bytes)
            self.send(peer, codec.prechecked(Append, self.epoch, prev, self.epoch_at(prev), entries, last))
            self.counters["appends_sent"] += 1
            if entries:
                self._next[peer] = entries[-1][1] + 1

    def _on_ack(self, src: str, ack: AppendAck) -> None:
        if ack.epoch > self.epoch:
            self.counters["stale_refused"] += 1
            self._adopt_epoch(ack.epoch, "")
            return
        if self.role != LEADER or ack.epoch != self.epoch:
            return
        if not ack.ok:
            # A gap, or a log that is not a prefix of ours: continue after the last entry we share.
            if ack.last_lsn <= self.last_lsn and ack.last_lsn >= self.base_lsn \
                    and self.epoch_at(ack.last_lsn) == ack.last_epoch:
                self._next[src] = ack.last_lsn + 1
                self._replicate()
            elif src not in self._pins or self.ticks - self._pins[src][1] >= 2 * self.lease_ticks:
                # Not while a checkpoint is on its way: every append the follower refuses meanwhile
                # would export another (seen: 900 exports for one bootstrap under steady writes).
                self._send_checkpoint(src)
            return
        if ack.last_lsn > self._match.get(src, 0):
            self._match[src] = ack.last_lsn
        self._next[src] = max(self._next.get(src, 0), ack.last_lsn + 1)
        if src in self._pins and ack.last_lsn >= self._pins[src][0]:
            del self._pins[src]  # installed: it follows the log from here
        self._release_waiting()
        if self._transfer is not None:
            self._advance_transfer()
        if self._change is not None:
            self._advance_change()

    def _release_waiting(self) -> None:
        if not self._waiting:
            return
        for lsn in sorted(self._waiting):
            rids, results, asked = self._waiting[lsn]
            if not self._acknowledged_by_all(lsn, asked):
                continue
            del self._waiting[lsn]
            for rid in rids if not self._leading() else ():
                self._outcome_unknown(rid, "the leader's lease ran out before the acknowledgements arrived")
            if self._leading():
                self._acknowledge(rids, lsn, results)

    def _outcome_unknown(self, rid: int, why: str) -> None:
        self.counters["outcome_unknown"] += 1
        self.reply(rid, error=WriteOutcomeUnknownError(f"{self.node_id}: {why}; the write may or may not survive"))

    # --- follower: the stream ------------------------------------------------------------------

    def _adopt_epoch(self, epoch: int, leader: str, *, probing: bool = False) -> None:
        """Learn of epoch ``epoch`` (led by ``leader``, when known): never accept an older one again.
        ``probing``: learned from a probe or its answer, which says someone claims it, not that anyone
        leads it: a candidate whose probe round is under way goes on, and will claim it (_finish_probe)."""
        if epoch > self.epoch:
            if self.role != FOLLOWER and not (probing and self._probe is not None):
                self._step_down(f"it learned of epoch {epoch}")
            self.epoch = epoch
            self.leader = leader
            self.persist(ReplicaMeta(self.epoch, self.incarnation))

    def _on_append(self, src: str, msg: Append) -> None:
        if msg.epoch < self.epoch:
            self.counters["stale_refused"] += 1
            self.send(src, AppendAck(self.epoch, False, self.last_lsn, self.last_epoch))
            return
        invariant(not (self.role == LEADER and msg.epoch == self.epoch), "two leaders in one epoch")
        self._adopt_epoch(msg.epoch, src)
        if self.role != FOLLOWER:
            self._step_down(f"{src} leads epoch {msg.epoch}")
        self.leader = src
        if self._needs_checkpoint and not self._resyncing:
            self._request_resync(src)
            return
        if self._resyncing:
            if self.ticks - self._resync_asked_at >= self.watch_ticks:
                self._request_resync(src)  # the request or the checkpoint was lost: ask again
            return
        if msg.prev_lsn > self.last_lsn:  # a gap: the leader resends from our last entry
            self.send(src, AppendAck(self.epoch, False, self.last_lsn, self.last_epoch))
            return
        if msg.prev_lsn >= self.base_lsn and self.epoch_at(msg.prev_lsn) != msg.prev_epoch:
            self._request_resync(src)  # our entry before the append is of another history
            return
        new = []
        for e in msg.entries:
            if e[1] <= self.last_lsn:
                if e[1] > self.base_lsn and self.epoch_at(e[1]) != e[0]:
                    self._request_resync(src)  # our entry at this lsn is of another history
                    return
                continue
            self._append_entry(e)
            new.append(e)
        if new:
            self._persist_entries(tuple(new))
        if self.last_lsn >= msg.leader_last:
            self._caught_up_at = self.ticks
        self.send(src, AppendAck(self.epoch, True, self.last_lsn, self.last_epoch))

    def close(self) -> None:
        """Release the state (an engine closes its files); the shell calls it on a clean stop."""
        self.pins.close_all()
        self.state.close()

    # --- status ------------------------------------------------------------------------------------

    def lag(self) -> dict:
        """Leader: each follower's replication lag in entries (last lsn minus its acknowledged lsn)."""
        if self.role != LEADER:
            return {}
        # None until a follower has answered this leader: its position is not known yet.
        return {p: (self.last_lsn - self._match[p] if p in self._match else None)
                for p in self._targets() if p != self.node_id}

    def status(self) -> dict:
        """Role, epoch, positions, lag, lost writes and counters, as plain data."""
        lag_s = (self.ticks - self._caught_up_at) * self.tick_s if self._caught_up_at >= 0 else None
        return {**super().status(), "group": self.group, "role": self.role, "leader": self.leader,
                "epoch": self.epoch, "mode": self.mode, "members": self.members,
                "membership_change": self._change_status(), "uncounted_removals": self.uncounted_removals(),
                "last_lsn": self.last_lsn, "last_epoch": self.last_epoch,
                "applied": self.state.applied, **self.state.describe(), "lag_entries": self.lag(),
                "staleness_s": 0.0 if self._leading() else lag_s, "lost_writes": self.lost_writes,
                "lost": tuple(self.lost), "incarnation": self.incarnation, **self.counters,
                "needs_checkpoint": self._needs_checkpoint, "last_checkpoint_error": self.last_checkpoint_error,
                "coordination_calls": self.coord.calls, "coordination_retries": self.coord.retries,
                "partitions": self.partition_load.figures(), "ownership": self.state.get(OWNERSHIP_KEY),
                **self.indexer.figures()}


def open_state(node_id: str, engine: str, data_url: str, engine_options: dict | None, sync: bool,
               session_ttl_s: float = 0.0) -> ReplicaState:
    """The state a replica's factory opens: a dict (``"map"``), or ``engine`` (``"lsm"``, ``"btree"``)
    under ``data_url``/``node_id`` with checkpoints under ``data_url``/checkpoints; client sessions
    idle for ``session_ttl_s`` of cluster time expire (0: never). Opened in the shell's factory, so
    the core itself does no I/O."""
    ttl_ms = session_ttl_ms(session_ttl_s)
    if engine == "map":
        return MapState(ttl_ms)
    if not data_url:
        raise ConfigError(f"a replica on the {engine!r} engine needs a data_url (the group's root)")
    from .engine_state import EngineState

    base = data_url.rstrip("/")
    return EngineState(f"{base}/{node_id}", engine=engine, options=engine_options,
                       checkpoints_url=f"{base}/checkpoints", sync=sync, session_ttl_ms=ttl_ms)


def build(node_id: str, *, recovered=(), tick_s: float = 0.01, engine: str = "map", data_url: str = "",
          engine_options: dict | None = None, sync: bool = False, session_ttl_s: float = 0.0,
          procedures: tuple = (), **options) -> LeaderFollowerReplica:
    """The :class:`~ddia_ray.runtime.core.CoreSpec` factory of a leader-follower replica (the state as
    :func:`open_state` opens it)."""
    from .procedures import load

    load(procedures)  # before the state: a replica that could not run its log's procedures must not start
    state = open_state(node_id, engine, data_url, engine_options, sync, session_ttl_s)
    try:
        return LeaderFollowerReplica(node_id, recovered=recovered, tick_s=tick_s, state=state, **options)
    except BaseException:
        state.close()
        raise
