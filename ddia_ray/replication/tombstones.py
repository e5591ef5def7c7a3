"""Collecting the tombstones of deleted keys once every replica must have them: a grace period.

Theory of operation
-------------------
Under multi-leader and leaderless replication a delete is a tombstone: a sibling whose
value is None (:mod:`.versions`). It has to stay for a while, or a replica that missed
the delete would hand the old value back through anti-entropy, read repair or hinted
handoff, and the deleted key would come back (DDIA 5.5, "Detecting Concurrent Writes";
Riak calls it resurrection). Kept for ever, the tombstones of a store that deletes keys
grow every replica's versions, Merkle trees and anti-entropy without bound.

The rule is Cassandra's ``gc_grace_seconds``: a key whose every sibling is a tombstone,
the newest stamped more than ``grace_s`` before this replica's clock, is removed. By
then every replica is taken to have the tombstone: the writes went to all of them, and
anti-entropy (every ``anti_entropy_s``), hinted handoff and the multi-leader peers'
retransmissions repair what one missed long before. The assumption fails for a replica
cut off, or down, for longer than the grace period: it may still hold a value the
tombstone superseded and give it back. Hence the operator's rule, as Cassandra's: a
replica away for longer than ``grace_s`` rejoins empty (its data wiped) and is filled by
anti-entropy, or the grace is set longer than any outage. The default is Cassandra's,
10 days. Clocks matter only against the grace: a replica whose clock runs ahead by ``s``
collects ``s`` early, so the grace must dwarf the clock skew.

Two replicas do not collect a tombstone at the same moment. Between their moments, the
one that still has it would give it back to the other (anti-entropy sees a difference).
A replica therefore does not take in a tombstone-only state that is already past the
grace for a key it does not hold (:func:`expired_tombstone`, counted as
``tombstones_ignored``); the replicas agree again once the other's sweep reaches the key.

The sweep: there is no index of tombstones (a store deleting 100 keys a second would hold
86 million entries over a 10-day grace). A cursor walks the keys in order,
``keys_per_round`` at a time, one round every few ticks; after a full pass it rests until
``pass_s`` has passed since the pass began (Cassandra purges during compaction; Riak's
active anti-entropy sweeps the same way). A tombstone is collected within
``grace_s + max(pass_s, one pass)``.

Pure: no Ray, no clock (the replica passes its clock reading), no I/O.
"""

from __future__ import annotations

from typing import Any, Callable

from ..clocks.dotted import DVVSet
from ..errors import ConfigError

__all__ = ["expired_tombstone", "TombstoneSweep", "DEFAULT_GRACE_S"]

#: Cassandra's default ``gc_grace_seconds``: 10 days.
DEFAULT_GRACE_S = 864_000.0


def expired_tombstone(state: Any, horizon_ns: int) -> bool:
    """Whether ``state`` is a DVVSet of tombstones only, the newest stamped before ``horizon_ns``.

    CRDT states are never collected here (a CRDT's removals are its own business), nor a state with
    a live value, nor a tombstone without a timestamp (0: a clock that did not stamp it)."""
    if not isinstance(state, DVVSet):
        return False
    newest = 0
    for sibling in state.values():
        if sibling.value is not None:
            return False
        newest = max(newest, sibling.timestamp)
    return 0 < newest < horizon_ns


class TombstoneSweep:
    """The sweep's cursor and pacing (see the module docstring). ``grace_s`` <= 0 turns collection off."""

    def __init__(self, *, grace_s: float = DEFAULT_GRACE_S, keys_per_round: int = 256, pass_s: float = 60.0):
        for name, value in (("tombstone_grace_s", grace_s), ("tombstone_pass_s", pass_s)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                raise ConfigError(f"{name} is a number of seconds, got {value!r}")
        if type(keys_per_round) is not int or keys_per_round < 1:
            raise ConfigError(f"tombstone_sweep_keys is an int >= 1, got {keys_per_round!r}")
        self.grace_ns = int(grace_s * 1e9)
        self.keys_per_round = keys_per_round
        self.pass_ns = int(max(0.0, pass_s) * 1e9)
        self.cursor: bytes | None = None  # the last key looked at in this pass; None: no pass under way
        self._snapshot: list[bytes] | None = None  # a dict's keys, sorted at the start of a pass
        self._at = 0  # index into the snapshot
        self._pass_started_ns: int | None = None
        self.passes = 0

    @property
    def enabled(self) -> bool:
        """Whether tombstones are collected at all."""
        return self.grace_ns > 0

    def horizon(self, now_ns: int) -> int:
        """Tombstones stamped before this are past the grace period (0 when collection is off)."""
        return now_ns - self.grace_ns if self.enabled else 0

    def next_keys(self, data: Any, now_ns: int) -> list[bytes]:
        """The keys to look at in this round ([] while resting between passes).

        ``data`` is the replica's mapping: one in memory is walked through a sorted copy of its keys
        taken when the pass starts; a storage engine's mapping (``keys_after``) through its ordered scan."""
        if not self.enabled:
            return []
        if self.cursor is None and self._snapshot is None:
            if self._pass_started_ns is not None and now_ns - self._pass_started_ns < self.pass_ns:
                return []
            self._pass_started_ns = now_ns
            if not hasattr(data, "keys_after"):
                self._snapshot, self._at = sorted(data), 0
        if self._snapshot is not None:
            keys = self._snapshot[self._at:self._at + self.keys_per_round]
            self._at += len(keys)
            if self._at >= len(self._snapshot):
                self._end_pass()
            return keys
        keys_after: Callable[[bytes | None, int], list[bytes]] = data.keys_after
        keys = keys_after(self.cursor, self.keys_per_round)
        if len(keys) < self.keys_per_round:
            self._end_pass()
        else:
            self.cursor = keys[-1]
        return keys

    def _end_pass(self) -> None:
        self.cursor, self._snapshot, self._at = None, None, 0
        self.passes += 1
