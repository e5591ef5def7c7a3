"""What a leader knows of each follower: how far its log matches and how to send it more.

Theory of operation (etcd raft's ``tracker.Progress``)
------------------------------------------------------
Each follower is in one of three states:

==========  ===========================================================  =====================
state       sending                                                      leaves when
==========  ===========================================================  =====================
probe       one append at a time, then waits for its answer (or the next  an append is accepted
            heartbeat); used after a rejection, to find where logs match  (-> replicate)
replicate   pipelined: ``next`` advances as soon as an append is sent,    a rejection (-> probe)
            up to ``max_inflight_msgs`` unacknowledged appends
snapshot    nothing: a snapshot is on its way                             an ack at or past the
                                                                         snapshot (-> probe)
==========  ===========================================================  =====================

The in-flight window is flow control: a slow follower is not flooded, and a
fast one is kept busy without waiting one round trip per batch.
"""

from __future__ import annotations

import collections

from ..._validate import invariant

__all__ = ["Progress", "PROBE", "REPLICATE", "SNAPSHOT", "TRANSITIONS"]

PROBE, REPLICATE, SNAPSHOT = "probe", "replicate", "snapshot"
#: Every state change a Progress can make, and what causes it.
TRANSITIONS = {
    (PROBE, REPLICATE): "an append was accepted",
    (REPLICATE, PROBE): "an append was rejected",
    (PROBE, SNAPSHOT): "the entries it needs were compacted away",
    (REPLICATE, SNAPSHOT): "the entries it needs were compacted away",
    (SNAPSHOT, PROBE): "it acknowledged the snapshot's index (or the snapshot was lost)",
}


class Progress:
    """Replication progress of one follower, tracked by the leader."""

    __slots__ = ("match", "next", "state", "probe_sent", "pending_snapshot", "snapshot_ticks", "recent_active",
                 "inflights", "max_inflight")

    def __init__(self, next_index: int, max_inflight: int):
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0  # leader ticks since the pending snapshot was sent
        self.recent_active = False
        self.inflights: collections.deque = collections.deque()
        self.max_inflight = max_inflight

    def _become(self, state: str) -> None:
        invariant((self.state, state) in TRANSITIONS or self.state == state, f"progress {self.state} -> {state}")
        self.state = state
        self.probe_sent = False
        self.inflights.clear()

    def become_probe(self) -> None:
        """Back to probing from just past what is known to match."""
        if self.state == SNAPSHOT:
            self._become(PROBE)
            self.next = max(self.match + 1, self.pending_snapshot + 1)
            self.pending_snapshot = 0
        else:
            self._become(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        """Pipeline appends from ``match + 1``."""
        self._become(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        """A snapshot at ``index`` is being sent; nothing else until it is acknowledged."""
        self._become(SNAPSHOT)
        self.pending_snapshot = index
        self.snapshot_ticks = 0

    def is_paused(self) -> bool:
        """Whether the leader must not send another append now."""
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def sent(self, last_index: int, count: int) -> None:
        """An append ending at ``last_index`` (holding ``count`` entries) went out."""
        if self.state == REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.append(last_index)
        else:
            self.probe_sent = True

    def free_first(self) -> None:
        """Forget the oldest append in flight (its answer is presumed lost)."""
        if self.inflights:
            self.inflights.popleft()

    def maybe_update(self, index: int) -> bool:
        """The follower matches up to ``index``; returns whether that is news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflights and self.inflights[0] <= index:
            self.inflights.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """An append at ``rejected`` was refused (follower hint: ``hint``); False if the refusal is stale."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True
