"""What the replicas of a leader-follower group send each other: the replication stream and its
acknowledgements, the position probes of a failover, and checkpoints for a follower too far behind.

Theory of operation
-------------------
The entries these messages carry, and the positions ``(epoch, lsn)`` they name, are defined in
:mod:`.records`; :mod:`.leader_follower` and its parts send and handle the messages. Each is a
versioned codec record checked on arrival by its ``__post_init__``; a message written by an older
replica is upgraded by its record's steps (rolling restarts: docs/replication.md).
"""

from __future__ import annotations

from ..codec import record
from ..errors import InvalidArgumentError
from .records import _stamp_origins, check_entries, int_field

__all__ = ["Append", "AppendAck", "PositionProbe", "PositionReport", "CheckpointRequest", "Checkpoint"]


# Append, LogEntries and ReplWrite carry every op of the replication stream, and their
# ``__post_init__`` checks each field down to its leaves (check_entries, check_ops): they are
# ``fields_checked``, so the codec does not walk the same ops again to bound their nesting (that
# walk cost more than packing or unpacking them, at 1,000 ops an entry).


@record("repl.append", version=2, upgrades={1: _stamp_origins}, fields_checked=True)
class Append:
    """The leader's replication stream (and heartbeat, when ``entries`` is empty).

    ``prev`` is the position just before ``entries`` (the log-matching check, as in Raft);
    ``leader_last`` the leader's last lsn, from which a follower knows it is caught up.
    """

    epoch: int
    prev_lsn: int
    prev_epoch: int
    entries: tuple
    leader_last: int

    def __post_init__(self):
        int_field("epoch", self.epoch, 1)
        int_field("prev_lsn", self.prev_lsn)
        int_field("prev_epoch", self.prev_epoch)
        int_field("leader_last", self.leader_last)
        check_entries(self.entries)


@record("repl.ack", version=1)
class AppendAck:
    """A follower's answer: ``ok`` with its last position, or a refusal (a newer ``epoch``, or a gap)."""

    epoch: int
    ok: bool
    last_lsn: int
    last_epoch: int

    def __post_init__(self):
        int_field("epoch", self.epoch)
        int_field("last_lsn", self.last_lsn)
        int_field("last_epoch", self.last_epoch)


def _probe_v1_to_v2(fields: dict) -> dict:
    """Version 1 carried no epoch: 0, which claims nothing (the peer adopts no epoch from it)."""
    return {**fields, "epoch": 0}


def _probe_v2_to_v3(fields: dict) -> dict:
    """Version 2 asked for no entries (a candidate of that version never catches up from a peer)."""
    return {**fields, "catch_up": False, "last_lsn": 0, "last_epoch": 0}


@record("repl.probe", version=3, upgrades={1: _probe_v1_to_v2, 2: _probe_v2_to_v3})
class PositionProbe:
    """A candidate asks its peers how far their logs reach, before it takes the lease.

    ``epoch`` is the epoch the candidate will claim (0: none). A peer adopts it, persisted, before
    it answers, as a Raft voter adopts a vote's term: from then on it refuses appends of any older
    epoch, so a deposed leader can no longer gather the acknowledgements of a write that the new
    leader's history, taken from these answers, would not hold.

    ``catch_up``: the candidate has waited ``defer_s`` for a peer further ahead to take the lease,
    and asks for the entries after its own last entry, ``last_lsn`` of epoch ``last_epoch``; a
    peer whose log holds that entry answers with the entries after it (:class:`PositionReport`).
    (False, 0, 0 otherwise.)
    """

    seq: int
    epoch: int
    catch_up: bool = False
    last_lsn: int = 0
    last_epoch: int = 0

    def __post_init__(self):
        int_field("seq", self.seq)
        int_field("epoch", self.epoch)
        if type(self.catch_up) is not bool:
            raise InvalidArgumentError(f"catch_up is a bool, got {self.catch_up!r}")
        int_field("last_lsn", self.last_lsn)
        int_field("last_epoch", self.last_epoch)


def _position_v1_to_v2(fields: dict) -> dict:
    """Version 1 carried no entries (a peer of that version gives a candidate none)."""
    return {**fields, "entries": ()}


@record("repl.position", version=2, upgrades={1: _position_v1_to_v2})
class PositionReport:
    """The answer to a :class:`PositionProbe`: the peer's last entry and the newest epoch it knows.

    ``entries``: when the probe asked to catch up and this peer's log holds the candidate's last
    entry, the entries after it (at most ``max_append_entries``; they continue the candidate's log);
    otherwise ``()``.
    """

    seq: int
    epoch: int
    last_lsn: int
    last_epoch: int
    entries: tuple = ()

    def __post_init__(self):
        int_field("seq", self.seq)
        int_field("epoch", self.epoch)
        int_field("last_lsn", self.last_lsn)
        int_field("last_epoch", self.last_epoch)
        check_entries(self.entries)


@record("repl.checkpoint_request", version=1)
class CheckpointRequest:
    """A follower that cannot continue from its log asks the leader for a checkpoint."""

    epoch: int


@record("repl.checkpoint", version=1)
class Checkpoint:
    """A copy of the leader's state at ``lsn`` (its entry of epoch ``lsn_epoch``) and its epoch history.

    The follower replaces its state and log with it and continues from ``lsn + 1``.
    """

    epoch: int
    lsn: int
    lsn_epoch: int
    epochs: tuple
    data: bytes
