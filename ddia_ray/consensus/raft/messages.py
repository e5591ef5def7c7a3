"""Raft's data: log entries, hard state, configurations, snapshots and the one message type.

Theory of operation
-------------------
Everything a Raft member persists or sends is a codec record, so it is
versioned msgpack on disk and on the wire (a record from an unknown newer
version is refused with :class:`~ddia_ray.errors.UnknownVersionError` by the
codec before the core sees it: every record here is registered with
``accepts_newer=False``, because a field this reader would silently drop could
change what a message or a persisted entry means).

As in etcd's raft, there is a single :class:`Message` record whose ``type``
says what it is; the fields a type does not use keep their defaults::

    type            sender     meaning
    prevote         candidate  "would you vote for me at term+1?" (log_term, index: its last entry)
    prevote_resp    voter      reject=False grants; term echoes the asked term when granted
    vote            candidate  a real vote request at ``term``
    vote_resp       voter
    app             leader     entries after (log_term, index); commit: leader's commit index
    app_resp        follower   index: last index now matching (or, rejected, reject_hint: its last index)
    heartbeat       leader     commit: min(leader commit, follower match); context: read-index round
    heartbeat_resp  follower   context echoed
    snap            leader     snapshot: the state to install
    timeout_now     leader     "campaign now" (leadership transfer)

``term`` is the sender's term, except for ``prevote`` (the term the candidate
would move to) and a granted ``prevote_resp`` (that same term).
"""

from __future__ import annotations

from typing import Any

from ...codec import record
from ...errors import ConfigError, InvalidArgumentError

__all__ = ["Entry", "NORMAL", "CONF_CHANGE", "NOOP", "ConfState", "ConfChange", "HardState", "SnapshotMeta",
           "RaftSnapshot", "Message", "MESSAGE_TYPES", "ReadState", "CONF_OPS", "LogAppend", "recover"]

NORMAL, CONF_CHANGE, NOOP = 0, 1, 2
MESSAGE_TYPES = frozenset({"prevote", "prevote_resp", "vote", "vote_resp", "app", "app_resp", "heartbeat",
                           "heartbeat_resp", "snap", "timeout_now"})
CONF_OPS = frozenset({"add_voter", "add_learner", "remove"})


def _nonneg_ints(obj, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if type(v) is not int or v < 0:
            raise InvalidArgumentError(f"{type(obj).__name__}.{name} must be a non-negative int, got {v!r}")


@record("raft.entry", version=1, accepts_newer=False)
class Entry:
    """One log entry: its term and index, its kind and the command (opaque to Raft; RaftKV stores encoded bytes)."""

    term: int
    index: int
    kind: int = NORMAL
    data: Any = None

    def __post_init__(self):
        _nonneg_ints(self, "term", "index")
        if self.kind not in (NORMAL, CONF_CHANGE, NOOP):
            raise InvalidArgumentError(f"unknown entry kind {self.kind!r}")
        if self.kind == CONF_CHANGE and not isinstance(self.data, ConfChange):
            raise InvalidArgumentError("a configuration-change entry must carry a ConfChange")


@record("raft.conf_state", version=1, accepts_newer=False)
class ConfState:
    """A configuration: the voters (who elect and form quorums) and the learners (who only replicate)."""

    voters: tuple = ()
    learners: tuple = ()

    def __post_init__(self):
        for ids in (self.voters, self.learners):
            if not isinstance(ids, tuple) or not all(isinstance(n, str) and n for n in ids):
                raise InvalidArgumentError("voters and learners must be tuples of non-empty str ids")
        if set(self.voters) & set(self.learners):
            raise ConfigError(f"a member cannot be both voter and learner: {set(self.voters) & set(self.learners)}")

    @property
    def members(self) -> tuple:
        """Voters then learners."""
        return self.voters + self.learners

    def apply(self, change: "ConfChange") -> "ConfState":
        """The configuration after ``change`` (membership changes one member at a time)."""
        voters = [v for v in self.voters if v != change.node]
        learners = [n for n in self.learners if n != change.node]
        if change.op == "add_voter":
            voters.append(change.node)
        elif change.op == "add_learner":
            learners.append(change.node)
        return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


@record("raft.conf_change", version=1, accepts_newer=False)
class ConfChange:
    """Add a voter, add a learner (or demote a voter to one), or remove a member."""

    op: str
    node: str

    def __post_init__(self):
        if self.op not in CONF_OPS:
            raise ConfigError(f"unknown membership change {self.op!r}; use one of {sorted(CONF_OPS)}")
        if not isinstance(self.node, str) or not self.node:
            raise InvalidArgumentError("a membership change names a non-empty str node id")


@record("raft.hard_state", version=1, accepts_newer=False)
class HardState:
    """What must be durable before any message that depends on it: term, vote and commit index."""

    term: int = 0
    vote: str = ""
    commit: int = 0

    def __post_init__(self):
        _nonneg_ints(self, "term", "commit")
        if not isinstance(self.vote, str):
            raise InvalidArgumentError("vote must be a str node id ('' for none)")


@record("raft.snapshot_meta", version=1, accepts_newer=False)
class SnapshotMeta:
    """Where a snapshot stands in the log: last included index and term, and the configuration then."""

    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()

    def __post_init__(self):
        _nonneg_ints(self, "index", "term")


@record("raft.snapshot", version=1, accepts_newer=False)
class RaftSnapshot:
    """A state-machine snapshot: its metadata and the application's encoded state."""

    meta: SnapshotMeta
    data: bytes = b""


@record("raft.read_state", version=1, accepts_newer=False)
class ReadState:
    """A confirmed ReadIndex: reads tagged ``context`` may be served once ``index`` is applied."""

    context: int
    index: int


@record("raft.message", version=1, accepts_newer=False)
class Message:
    """A Raft message between members (see the module table for what each type uses)."""

    type: str
    src: str
    dst: str
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: int = 0
    snapshot: Any = None

    def __post_init__(self):
        if self.type not in MESSAGE_TYPES:
            raise InvalidArgumentError(f"unknown raft message type {self.type!r}")
        if not isinstance(self.src, str) or not isinstance(self.dst, str):
            raise InvalidArgumentError("message src and dst must be str node ids")
        _nonneg_ints(self, "term", "log_term", "index", "commit", "reject_hint", "context")
        if not isinstance(self.entries, tuple) or not all(isinstance(e, Entry) for e in self.entries):
            raise InvalidArgumentError("message entries must be a tuple of Entry")
        if self.snapshot is not None and not isinstance(self.snapshot, RaftSnapshot):
            raise InvalidArgumentError("message snapshot must be a RaftSnapshot")


@record("raft.log_append", version=1, accepts_newer=False)
class LogAppend:
    """Persist record: the durable log is truncated from ``entries[0].index`` and then extended by them."""

    entries: tuple

    def __post_init__(self):
        if not self.entries or not all(isinstance(e, Entry) for e in self.entries):
            raise InvalidArgumentError("LogAppend needs a non-empty tuple of Entry")


def recover(records) -> tuple:
    """``(hard_state, snapshot, entries)`` from a member's persisted records, in the order written.

    A :class:`RaftSnapshot` record replaces the log (a follower installing the leader's state, or the
    start of a compacted log); a :class:`LogAppend` truncates from its first index and extends.
    """
    hs, snap = HardState(), None
    entries: list[Entry] = []
    for rec in records:
        if isinstance(rec, HardState):
            hs = rec
        elif isinstance(rec, RaftSnapshot):
            snap, entries = rec, []
        elif isinstance(rec, LogAppend):
            first = rec.entries[0].index
            base = snap.meta.index if snap is not None else 0
            del entries[max(0, first - base - 1):]
            if first != base + len(entries) + 1:
                raise ConfigError(f"persisted log has a gap before index {first}")
            entries += rec.entries
    return hs, snap, entries
