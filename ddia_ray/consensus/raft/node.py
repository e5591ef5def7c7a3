"""A Raft member as a pure state machine: ``step``, ``tick``, ``ready``, ``advance`` (etcd raft's RawNode).

Theory of operation
-------------------
:class:`RaftNode` never does I/O and never reads a clock. Its driver feeds it

* ``step(message)`` for every :class:`~.messages.Message` received,
* ``tick()`` once per tick of time,
* ``propose(data)`` / ``propose_many``, ``propose_conf_change``, ``read_index(ctx)``,
  ``transfer_leadership(target)`` on behalf of clients,

and then takes a :class:`RaftReady`, which it MUST handle in this order:
persist ``snapshot``, ``entries`` (truncating the durable log from
``entries[0].index`` first) and ``hard_state``; then send ``messages``; then
apply ``committed`` entries (and install ``snapshot`` into the state machine);
then call ``advance(ready)``. Persisting first is what keeps a vote or an
acknowledgement valid across a crash (Raft §5.2, Figure 2 "persistent state").

Roles and their transitions (one table, as the style guide asks):
:data:`ROLE_TRANSITIONS`. Elections use pre-vote (§9.6 of Ongaro's thesis: a
partitioned member does not bump its term and disrupt the cluster when it
comes back) and check-quorum (a leader that has not heard from a quorum for
an election timeout steps down; a follower that heard from a leader within
the timeout refuses votes, which is the leader's lease). Replication is
batched (``max_entries_per_msg``) and pipelined per follower with an in-flight
window (see :mod:`.progress`). A leader only counts replicas to commit entries
of its *current* term (§5.4.2); older entries commit with them.

Membership changes go one member at a time (thesis §4.1): a configuration
takes effect as soon as its entry is in a member's log (see :mod:`.log`), and
a leader refuses a new change until the previous one is committed and it has
committed an entry of its own term (the fix to the single-server change bug
Ongaro posted in 2015). A removed leader keeps leading until its removal is
committed, then steps down. New members should join as learners (they
replicate but neither vote nor count for quorums) and be promoted once caught
up. Leadership transfer (thesis §3.10) stops proposals, brings the target up
to date and tells it to campaign at once (``timeout_now``). ReadIndex (thesis
§6.4) serves linearizable reads without writing to the log: the leader notes
its commit index, confirms it is still leader with a heartbeat round acknowledged
by a quorum, and the read waits until that index is applied. Lease reads are
not offered.

Files: this one holds roles, elections, the inputs and the ready/advance cycle;
:mod:`.replication` the append, commit, ReadIndex and configuration-tracking
machinery; :mod:`.roles` the role table; :mod:`.log` and :mod:`.progress` the
log and the per-follower progress.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from ..._validate import integer, invariant, positive
from ...errors import ConfigError, InvalidArgumentError, NotLeaderError, ProposalDroppedError, UnknownNodeError
from .log import RaftLog
from .messages import CONF_CHANGE, NOOP, NORMAL, ConfChange, ConfState, Entry, HardState, Message, ReadState, \
    RaftSnapshot, SnapshotMeta
from .progress import SNAPSHOT, Progress
from .replication import _ReadRound, _Replication
from .roles import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, ROLE_TRANSITIONS

__all__ = ["RaftNode", "RaftConfig", "RaftReady", "FOLLOWER", "PRE_CANDIDATE", "CANDIDATE", "LEADER",
           "ROLE_TRANSITIONS"]

_TRANSFER = 1  # context of a vote request made because of timeout_now: it overrides the leader lease


@dataclass(frozen=True)
class RaftConfig:
    """Tuning of one member; ticks are the driver's unit of time."""

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 256
    max_inflight_msgs: int = 64
    max_apply_per_ready: int = 4096

    def __post_init__(self):
        for name in ("election_ticks", "heartbeat_ticks", "max_entries_per_msg", "max_inflight_msgs",
                     "max_apply_per_ready"):
            positive(name, integer(name, getattr(self, name)))
        if self.heartbeat_ticks >= self.election_ticks:
            raise ConfigError("heartbeat_ticks must be below election_ticks (followers would time out "
                              "between heartbeats)")


_CONFIG_FIELDS = tuple(f.name for f in fields(RaftConfig))


@dataclass(frozen=True, slots=True)
class RaftReady:
    """What the driver must do now (order: persist, send, apply, then ``advance``)."""

    hard_state: HardState | None
    entries: tuple
    snapshot: RaftSnapshot | None
    messages: tuple
    committed: tuple
    read_states: tuple
    dropped_reads: tuple
    leader: str
    role: str

    def __bool__(self) -> bool:
        return bool(self.hard_state or self.entries or self.snapshot or self.messages or self.committed
                    or self.read_states or self.dropped_reads)


class RaftNode(_Replication):
    """One Raft member (see the module docstring)."""

    def __init__(self, node_id: str, *, voters=(), learners=(), config: RaftConfig | None = None,
                 rng: random.Random | None = None, hard_state: HardState | None = None,
                 snapshot: RaftSnapshot | None = None, entries=()):
        if not isinstance(node_id, str) or not node_id:
            raise InvalidArgumentError("node_id must be a non-empty str")
        self.id = node_id
        self.config = config or RaftConfig()
        self.rng = rng or random.Random(node_id)
        hs = hard_state or HardState()
        entries = tuple(entries)
        bootstrap = hs == HardState() and snapshot is None and not entries and bool(voters or learners)
        if bootstrap:
            # Bootstrap (as etcd does): the founding configuration is written as the first entries of
            # every founding member's log, identical everywhere, so members that join later learn it
            # by replication like any other change.
            changes = [ConfChange("add_voter", v) for v in sorted(voters)] + \
                [ConfChange("add_learner", n) for n in sorted(learners)]
            entries = tuple(Entry(1, i + 1, CONF_CHANGE, c) for i, c in enumerate(changes))
            hs = HardState(1, "", len(entries))
        self.term, self.vote = hs.term, hs.vote
        self.snapshot = snapshot  # the newest snapshot this member holds (sent to lagging followers)
        self.log = RaftLog(snapshot.meta if snapshot is not None else SnapshotMeta(), entries, hs.commit)
        if bootstrap:
            self.log.unstable = 1  # the founding entries are not on disk yet: the first ready persists them
        self.role = FOLLOWER
        self.lead = ""
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.transferee = ""
        self.pending_conf_index = 0
        self.pending_reads: list[int] = []  # read_index calls waiting for the first commit of this term
        self.read_rounds: list[_ReadRound] = []
        self._last_read_context = 0  # an ack confirms every round up to its context: contexts must increase
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[int] = []
        self._prev_hard = HardState() if bootstrap else hs  # a bootstrap's hard state must be persisted too
        self._pending_snapshot: RaftSnapshot | None = None
        self.stats = {"elections": 0, "leader_changes": 0, "snapshots_sent": 0, "snapshots_installed": 0}
        self._reset_timeout()

    # --- inspection ---------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        """The current persistent state."""
        return HardState(self.term, self.vote, self.log.committed)

    @property
    def conf(self) -> ConfState:
        """The configuration in force (the newest in the log)."""
        return self.log.conf

    @property
    def promotable(self) -> bool:
        """Whether this member is a voter (only voters campaign)."""
        return self.id in self.conf.voters

    def status(self) -> dict:
        """Plain data: role, term, leader, log marks, membership, settings and, on a leader, follower progress."""
        cfg = self.config
        out = {"id": self.id, "role": self.role, "term": self.term, "leader": self.lead, "vote": self.vote,
               "commit": self.log.committed, "applied": self.log.applied, "last_index": self.log.last_index(),
               "first_index": self.log.first_index(), "voters": self.conf.voters, "learners": self.conf.learners,
               "settings": {f: getattr(cfg, f) for f in _CONFIG_FIELDS}, **self.stats}
        if self.role == LEADER:
            out["progress"] = {n: {"match": p.match, "next": p.next, "state": p.state}
                               for n, p in self.progress.items()}
        return out

    # --- inputs -------------------------------------------------------------

    def tick(self) -> None:
        """One tick of time: election timeout for followers and candidates, heartbeats for a leader."""
        self.election_elapsed += 1
        if self.role != LEADER:
            if self.promotable and self.election_elapsed >= self.randomized_timeout:
                self._campaign("pre" if self.config.pre_vote else "vote")
            return
        self.heartbeat_elapsed += 1
        for p in self.progress.values():
            if p.state == SNAPSHOT:
                p.snapshot_ticks += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                active = {n for n, p in self.progress.items() if p.recent_active} | {self.id}
                for p in self.progress.values():
                    p.recent_active = False
                if not self._is_quorum(active):
                    self._become_follower(self.term, "")
                    return
            self.transferee = ""  # a transfer that did not finish within an election timeout is abandoned
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_rounds[-1].context if self.read_rounds else 0)

    def propose(self, data) -> int:
        """Append a command to the log (leader only); returns its index. It is committed later, or lost."""
        return self.propose_many((data,))[-1]

    def propose_many(self, datas) -> list[int]:
        """Append several commands with one replication round; returns their indexes."""
        self._check_proposals()
        first = self.log.last_index() + 1
        ents = [Entry(self.term, first + i, NORMAL, d) for i, d in enumerate(datas)]
        self._append(ents)
        return [e.index for e in ents]

    def propose_conf_change(self, change: ConfChange) -> int:
        """Propose a one-member membership change; refused while the previous one is not applied."""
        if not isinstance(change, ConfChange):
            raise InvalidArgumentError("propose_conf_change takes a ConfChange")
        self._check_proposals()
        if self.pending_conf_index > self.log.committed:
            raise ProposalDroppedError("a membership change (or a new leader's first entry) is still being "
                                       "committed; retry after it is")
        members = self.conf.members
        if change.op == "remove" and change.node not in members:
            raise UnknownNodeError(change.node, members)
        if change.op != "add_voter" and self.conf.voters == (change.node,):
            raise ConfigError("cannot remove (or demote) the last voter: the group could never make progress again")
        if change.op == "add_voter" and change.node in self.conf.voters:
            raise ConfigError(f"{change.node!r} is already a voter")
        if change.op == "add_learner" and change.node in self.conf.learners:
            raise ConfigError(f"{change.node!r} is already a learner")
        index = self.log.last_index() + 1
        self.pending_conf_index = index
        self._append([Entry(self.term, index, CONF_CHANGE, change)])
        return index

    def read_index(self, context: int) -> None:
        """Start a linearizable read tagged ``context`` (a positive int, increasing per call).

        A :class:`~.messages.ReadState` with that context comes out of a later ready once a
        quorum confirmed this member still leads; the read may be served once ``applied``
        reaches its index. If leadership is lost first, the context comes out in
        ``dropped_reads`` instead.
        """
        if self.role != LEADER:
            raise NotLeaderError(f"{self.id} is not the leader", self.lead or None)
        if type(context) is not int or context <= 0:
            raise InvalidArgumentError("a read context is a positive int")
        if context <= self._last_read_context:
            raise InvalidArgumentError(f"read contexts must increase (the last one was {self._last_read_context})")
        self._last_read_context = context
        if self.log.term(self.log.committed) != self.term:
            self.pending_reads.append(context)  # the commit index is not known to be current yet (§6.4 step 1)
            return
        self._start_read(context)

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to the voter ``target`` (leader only); proposals are refused meanwhile."""
        if self.role != LEADER:
            raise NotLeaderError(f"{self.id} is not the leader", self.lead or None)
        if target not in self.conf.voters:
            raise UnknownNodeError(target, self.conf.voters)
        if target == self.id:
            return
        self.transferee = target
        self.election_elapsed = 0
        if self.progress[target].match == self.log.last_index():
            self._send(Message("timeout_now", self.id, target, self.term))
        else:
            self._send_append(target)

    def compact(self, data: bytes, keep_entries: int = 0) -> RaftSnapshot:
        """Take a snapshot of the state machine at ``applied`` (its encoded state is ``data``) and drop the
        log up to there, less the last ``keep_entries`` entries (for followers that catch up from the
        log after installing it); the driver persists the returned snapshot before anything else."""
        index = self.log.applied
        snap = RaftSnapshot(SnapshotMeta(index, self.log.known_term(index), self.log.conf_at(index)), bytes(data))
        self.log.compact(max(self.log.snap_index, index - keep_entries))
        self.snapshot = snap
        return snap

    def step(self, m: Message) -> None:
        """Handle one message from another member."""
        if not isinstance(m, Message):
            raise InvalidArgumentError(f"step takes a raft Message, got {type(m).__name__}")
        if m.dst != self.id:
            raise ConfigError(f"{self.id}: got a message addressed to {m.dst!r}")
        if m.term > self.term:
            if m.type in ("prevote", "vote"):
                in_lease = self.config.check_quorum and self.lead != "" and \
                    self.election_elapsed < self.config.election_ticks
                if in_lease and m.context != _TRANSFER:
                    return  # a leader was heard recently: this candidate cannot be needed (leader lease)
            if m.type == "prevote" or (m.type == "prevote_resp" and not m.reject):
                pass  # pre-votes never change terms
            else:
                lead = m.src if m.type in ("app", "heartbeat", "snap") else ""
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            if m.type in ("app", "heartbeat") and (self.config.check_quorum or self.config.pre_vote):
                # A stale leader (e.g. just healed from a partition) learns our term and steps down.
                self._send(Message("app_resp", self.id, m.src, self.term))
            elif m.type == "prevote":
                self._send(Message("prevote_resp", self.id, m.src, self.term, reject=True))
            return
        if m.type in ("prevote", "vote"):
            self._on_vote_request(m)
        elif self.role == LEADER:
            self._step_leader(m)
        elif self.role in (CANDIDATE, PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    # --- output -------------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether :meth:`ready` has anything to do."""
        return bool(self._msgs or self._read_states or self._dropped_reads or self._pending_snapshot
                    or self.log.unstable <= self.log.last_index() or self.log.committed > self.log.applied
                    or self.hard_state != self._prev_hard)

    def ready(self) -> RaftReady:
        """Everything to persist, send and apply now (see the module docstring for the order)."""
        hs = self.hard_state
        return RaftReady(hs if hs != self._prev_hard else None, self.log.unstable_entries(), self._pending_snapshot,
                         tuple(self._msgs), self.log.to_apply(self.config.max_apply_per_ready),
                         tuple(self._read_states), tuple(self._dropped_reads), self.lead, self.role)

    def advance(self, rd: RaftReady) -> None:
        """The driver did everything ``rd`` asked; applies configuration changes it committed."""
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            if self._pending_snapshot is rd.snapshot:
                self._pending_snapshot = None
            self.stats["snapshots_installed"] += 1
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        del self._msgs[:len(rd.messages)]
        del self._read_states[:len(rd.read_states)]
        del self._dropped_reads[:len(rd.dropped_reads)]
        for e in rd.committed:
            if e.index <= self.log.applied:
                continue  # a snapshot installed meanwhile covers it
            self.log.applied_to(e.index)
            if e.kind == CONF_CHANGE and self.role == LEADER and self.id not in self.conf.voters \
                    and self.log.last_conf_index() <= e.index:
                self._become_follower(self.term, "")  # our own removal is committed: step down

    # --- roles --------------------------------------------------------------

    def _reset_timeout(self) -> None:
        n = self.config.election_ticks
        self.randomized_timeout = n + self.rng.randrange(n)  # [n, 2n): split votes resolve (§5.2)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term, self.vote = term, ""
        self.lead = ""
        self.election_elapsed = self.heartbeat_elapsed = 0
        self._reset_timeout()
        self.votes = {}
        self.transferee = ""
        self.progress = {}
        self._drop_reads()

    def _drop_reads(self) -> None:
        self._dropped_reads += self.pending_reads + [r.context for r in self.read_rounds]
        self.pending_reads, self.read_rounds = [], []

    def _set_role(self, role: str) -> None:
        """Change role; every change must be one of :data:`ROLE_TRANSITIONS` (a bug otherwise)."""
        invariant((self.role, role) in ROLE_TRANSITIONS, f"no role change {self.role} -> {role} in ROLE_TRANSITIONS")
        self.role = role

    def _become_follower(self, term: int, lead: str) -> None:
        self._reset(term)
        self._set_role(FOLLOWER)
        self._set_lead(lead)

    def _set_lead(self, lead: str) -> None:
        if lead and lead != self.lead:
            self.stats["leader_changes"] += 1
        self.lead = lead

    def _campaign(self, kind: str) -> None:
        """Start a pre-vote round (``"pre"``), an election (``"vote"``) or a transfer election (``"transfer"``)."""
        transfer = kind == "transfer"
        if kind == "pre":
            self._reset(self.term)  # pre-vote keeps term and vote
            self._set_role(PRE_CANDIDATE)
            kind, term = "prevote", self.term + 1
        else:
            self._reset(self.term + 1)
            self._set_role(CANDIDATE)
            self.vote = self.id
            kind, term = "vote", self.term
            self.stats["elections"] += 1
        self.votes = {self.id: True}
        if self._poll() == "won":
            return
        for v in self.conf.voters:
            if v != self.id:
                self._send(Message(kind, self.id, v, term, log_term=self.log.last_term(),
                                   index=self.log.last_index(), context=_TRANSFER if transfer else 0))

    def _poll(self) -> str:
        granted = {n for n, ok in self.votes.items() if ok}
        rejected = {n for n, ok in self.votes.items() if not ok}
        if self._is_quorum(granted):
            if self.role == PRE_CANDIDATE:
                self._campaign("vote")  # the pre-vote round is won: now the real election
            else:
                self._become_leader()
            return "won"
        if len(rejected) >= len(self.conf.voters) - len(self.conf.voters) // 2:
            self._become_follower(self.term, "")
            return "lost"
        return "pending"

    def _become_leader(self) -> None:
        invariant(self.role == CANDIDATE, "only a candidate becomes leader")
        self._reset(self.term)
        self._set_role(LEADER)
        self._set_lead(self.id)
        last = self.log.last_index()
        for n in self.conf.members:
            if n != self.id:
                self.progress[n] = Progress(last + 1, self.config.max_inflight_msgs)
        # No membership change until this term's first entry (the noop below) is committed: a leader
        # must commit an entry of its own term before it changes the configuration (Ongaro, raft-dev 2015).
        self.pending_conf_index = last + 1
        # An empty entry of the new term: committing it commits everything before it (§5.4.2, §8).
        self._append([Entry(self.term, last + 1, NOOP, None)])

    # --- message handling ---------------------------------------------------

    def _on_vote_request(self, m: Message) -> None:
        resp = "prevote_resp" if m.type == "prevote" else "vote_resp"
        can_vote = self.vote == m.src or (self.vote == "" and self.lead == "") or \
            (m.type == "prevote" and m.term > self.term)
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp, self.id, m.src, m.term))
            if m.type == "vote":
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(Message(resp, self.id, m.src, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        mine = "prevote_resp" if self.role == PRE_CANDIDATE else "vote_resp"
        if m.type in ("app", "heartbeat", "snap"):
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif m.type == mine:
            if m.src in self.conf.voters:
                self.votes.setdefault(m.src, not m.reject)
                self._poll()

    def _step_follower(self, m: Message) -> None:
        if m.type in ("app", "heartbeat", "snap"):
            self.election_elapsed = 0
            self._set_lead(m.src)
        if m.type == "app":
            self._handle_append(m)
        elif m.type == "heartbeat":
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(Message("heartbeat_resp", self.id, m.src, self.term, context=m.context))
        elif m.type == "snap":
            self._handle_snapshot(m)
        elif m.type == "timeout_now" and self.promotable:
            self._campaign("transfer")

    def _send(self, m: Message) -> None:
        self._msgs.append(m)
