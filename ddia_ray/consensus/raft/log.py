"""The replicated log as one member holds it: a snapshot point, the entries after it, and marks.

Theory of operation
-------------------
Entries live in memory after the last snapshot (``snap_index``)::

    snap_index < first_index() .. applied <= committed <= last_index()
                                  stable  <  unstable .. last_index()

``unstable`` is the first index not yet handed to the driver to persist; a
conflicting append from a new leader may move it back (the driver then
truncates its durable log from there, Raft §5.3). Invariants (Raft Figure 3):

* Log Matching: if two logs hold an entry with the same index and term, the
  logs are identical up to it; :meth:`maybe_append` keeps it by refusing an
  append whose previous entry does not match, and truncating only from the
  first conflicting entry (never an entry that matches).
* ``applied <= committed``, and nothing at or below ``committed`` is ever
  truncated (a conflict there is a safety violation: it raises).

The log also knows the configuration: the newest configuration-change entry
*in the log* is in force, committed or not, and a truncation that removes it
reverts to the previous one (thesis §4.1). Taking effect only when applied
is not safe for one-member-at-a-time changes: a member two changes behind
could then form a majority that does not overlap the newest one (the
simulator found two leaders in one term that way).
"""

from __future__ import annotations

from ..._validate import InvariantViolation, invariant
from .messages import CONF_CHANGE, ConfState, Entry, SnapshotMeta

__all__ = ["RaftLog"]


class RaftLog:
    """Entries after a snapshot point, with commit, apply and persistence marks (see the module docstring)."""

    def __init__(self, snapshot: SnapshotMeta | None = None, entries=(), committed: int = 0):
        snap = snapshot or SnapshotMeta()
        self.snap_index, self.snap_term = snap.index, snap.term
        self.entries: list[Entry] = []
        self.base_conf: ConfState = snap.conf
        self.conf_points: list[tuple[int, ConfState]] = []  # (index, configuration from that entry on)
        for e in entries:
            if e.index > self.snap_index:
                invariant(e.index == self.snap_index + 1 + len(self.entries), "recovered entries are contiguous")
                self._push(e)
        self.committed = max(min(committed, self.last_index()), self.snap_index)
        self.applied = self.snap_index
        self.unstable = self.last_index() + 1

    # --- reading ----------------------------------------------------------

    @property
    def conf(self) -> ConfState:
        """The configuration in force: the newest one in the log (see the module docstring)."""
        return self.conf_points[-1][1] if self.conf_points else self.base_conf

    def conf_at(self, index: int) -> ConfState:
        """The configuration in force at ``index``."""
        conf = self.base_conf
        for at, c in self.conf_points:
            if at > index:
                break
            conf = c
        return conf

    def last_conf_index(self) -> int:
        """The index of the newest configuration-change entry (0 if none since the snapshot)."""
        return self.conf_points[-1][0] if self.conf_points else 0

    def first_index(self) -> int:
        """The first index still in memory (one past the snapshot)."""
        return self.snap_index + 1

    def last_index(self) -> int:
        """The index of the last entry (the snapshot's index when empty)."""
        return self.snap_index + len(self.entries)

    def last_term(self) -> int:
        """The term of the last entry."""
        return self.entries[-1].term if self.entries else self.snap_term

    def term(self, index: int) -> int | None:
        """The term at ``index``; None when compacted away or beyond the end."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index():
            return None
        return self.entries[index - self.snap_index - 1].term

    def known_term(self, index: int) -> int:
        """The term at ``index``, which must be in the log (from the snapshot point to the end)."""
        term = self.term(index)
        if term is None:
            raise InvariantViolation(f"index {index} is outside the log ({self.snap_index}..{self.last_index()})")
        return term

    def match_term(self, index: int, term: int) -> bool:
        """Whether the entry at ``index`` has ``term``."""
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at ``(last_index, last_term)`` is at least as up to date as this one (§5.4.1)."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_entries: int) -> tuple:
        """Entries ``[lo, min(hi, lo + max_entries))``; ``lo`` must be in memory."""
        invariant(lo >= self.first_index(), "slice below the snapshot")
        start = lo - self.snap_index - 1
        return tuple(self.entries[start:start + max(0, min(hi - lo, max_entries))])

    def conflict_hint(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (lets a leader skip a whole term)."""
        index = min(index, self.last_index())
        while index > self.snap_index and (self.term(index) or 0) > term:
            index -= 1
        return index

    # --- writing ----------------------------------------------------------

    def append(self, entries) -> int:
        """Append ``entries`` at the end (the leader's own proposals); returns the last index."""
        for e in entries:
            invariant(e.index == self.last_index() + 1, "appends are contiguous")
            self._push(e)
        return self.last_index()

    def _push(self, e: Entry) -> None:
        self.entries.append(e)
        if e.kind == CONF_CHANGE:
            self.conf_points.append((e.index, self.conf.apply(e.data)))

    def maybe_append(self, prev_index: int, prev_term: int, committed: int, entries) -> int | None:
        """A follower's append: None if ``(prev_index, prev_term)`` does not match, else the last new index."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for e in entries:
            if e.index <= self.snap_index:
                continue
            t = self.term(e.index)
            if t == e.term:
                continue
            if t is not None:  # conflict: drop this entry and everything after it
                invariant(e.index > self.committed, "a committed entry is never overwritten")
                del self.entries[e.index - self.snap_index - 1:]
                while self.conf_points and self.conf_points[-1][0] >= e.index:
                    self.conf_points.pop()  # the configuration reverts with the entries that set it
                self.unstable = min(self.unstable, e.index)
            self._push(e)
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        """Raise the commit index (never lowers it); returns whether it moved."""
        if index > self.committed:
            invariant(index <= self.last_index(), "commit beyond the end of the log")
            self.committed = index
            return True
        return False

    def unstable_entries(self) -> tuple:
        """Entries the driver has not persisted yet."""
        return tuple(self.entries[self.unstable - self.snap_index - 1:]) if self.unstable <= self.last_index() else ()

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted everything up to ``index`` (ignored if the log changed under it)."""
        if self.term(index) == term and index >= self.unstable:
            self.unstable = index + 1

    def to_apply(self, max_entries: int) -> tuple:
        """Committed entries not yet applied (at most ``max_entries``)."""
        if self.committed <= self.applied:
            return ()
        return self.slice(self.applied + 1, self.committed + 1, max_entries)

    def applied_to(self, index: int) -> None:
        """The application applied everything up to ``index``."""
        invariant(self.applied <= index <= self.committed, "applied moves forward, up to the commit index")
        self.applied = index

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot point (a follower installing the leader's snapshot)."""
        self.snap_index, self.snap_term = meta.index, meta.term
        self.entries = []
        self.base_conf, self.conf_points = meta.conf, []
        self.committed = self.applied = meta.index
        self.unstable = meta.index + 1

    def compact(self, index: int) -> None:
        """Forget entries up to ``index`` (covered by a snapshot the driver has persisted)."""
        invariant(self.snap_index <= index <= self.applied, "compaction only covers applied entries")
        term = self.known_term(index)
        self.base_conf = self.conf_at(index)
        self.conf_points = [(i, c) for i, c in self.conf_points if i > index]
        del self.entries[:index - self.snap_index]
        self.snap_index, self.snap_term = index, term
