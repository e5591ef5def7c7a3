"""Decide once: a Raft leader decides a write batch against the end of its log.

Theory of operation
-------------------
A write batch's cas and procedure calls (:func:`~.state.decide`) used to be decided by every Raft
member when it applied the entry: the state at an index is the same on every member, so every
member decided alike, and every member paid for it (an event store's append: its id lookups,
checks and rows, about half of a member's time in a batched-append profile, docs/events.md).
Instead the leader decides the batch when it proposes it: the entry carries the decided puts and
deletes and the answers, and the members, the leader included, only apply them. This is
CockroachDB's proposer-evaluated KV and Redis's effects replication of scripts; the
leader-follower protocol (:mod:`.leader_follower`) has always decided so.

Deciding at proposal needs the state *as of the entry's place in the log*: the leader's applied
state plus the effects of every entry after it, which commit later. :class:`Speculation` is that
view. It accounts for the leader's log entry by entry and stops at the first one whose effects
it cannot know before it is applied (below). Invariant: the view accounts for every entry in
``(applied, last]``, and ``last`` is the log's last index, or writes are not decided early.

Why a decision made on it is the one apply would make. Log matching (Raft §5.3): an entry of
the leader's term commits only with the prefix the leader had, so the entries the view accounted
for before it are exactly the ones every member applies before it; and each accounted entry's
effects are what apply makes of it:

* a *repeat* (its ``(client, seq)`` was answered, or is below the client's floor, by the state
  or by an accounted entry) has none: apply answers it from the session table. The session
  must not expire first (``Sessions`` forgets a client idle for its TTL, and the entry would
  then apply anew): it is a repeat only if every stamp that keeps the session alive is within
  the TTL of the entry's own, which is the newest (stamps rise along the log);
* any other entry of a client (*fresh*) has the effects its batch decides to: the ops a leader
  decided and put in the entry, or, for an entry proposed undecided, :func:`~.state.decide` of
  its ops against the view, as apply will decide them.

The view stops at a fenced write (apply checks it against the ownership record), an ownership
change, an ingest of files, and a repeat whose session may expire first. Until the leader has
applied that entry, new writes are proposed undecided and apply decides them, as before; then
the view passes it (deciding the undecided entries after it in the view) and decided proposals
resume. No write ever waits for the view. A store whose writes are all fenced (a partition
group) therefore decides at apply, as before.

Reads never see the view: it holds effects not yet committed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any, Callable

from .records import DELETE, DELETE_RANGE, INGEST, PUT
from .state import UNKNOWN, decide, needs_deciding, read_through

__all__ = ["Speculation", "FRESH", "REPEAT", "stops_view"]

FRESH = "fresh"    # the entry applies: its effects are its decided ops
REPEAT = "repeat"  # apply answers it from the session table: no effects


class _Pending:
    """One client's accounted fresh entries that have not been applied: their seqs, their floors
    (a monotonic queue of ``(index, acked_below)`` whose front is the largest), and their stamps."""

    __slots__ = ("entries", "seqs", "floors")

    def __init__(self) -> None:
        self.entries: deque[tuple[int, int, int]] = deque()  # (index, seq, stamp) in log order
        self.seqs: dict[int, int] = {}
        self.floors: deque[tuple[int, int]] = deque()

    def add(self, index: int, seq: int, acked_below: int, stamp: int) -> None:
        self.entries.append((index, seq, stamp))
        self.seqs[seq] = self.seqs.get(seq, 0) + 1
        while self.floors and self.floors[-1][1] <= acked_below:
            self.floors.pop()
        self.floors.append((index, acked_below))

    def drop_through(self, index: int) -> None:
        while self.entries and self.entries[0][0] <= index:
            _, seq, _ = self.entries.popleft()
            n = self.seqs[seq] - 1
            if n:
                self.seqs[seq] = n
            else:
                del self.seqs[seq]
        while self.floors and self.floors[0][0] <= index:
            self.floors.popleft()

    def floor(self) -> int:
        return self.floors[0][1] if self.floors else 0

    def first_stamp(self) -> int | None:
        return self.entries[0][2] if self.entries else None


class Speculation:
    """A leader's state as of the end of its log: its applied state (``get``/``scan``, the
    state's) plus the effects of the entries accounted for after it (see the module docstring).

    ``account`` moves the view over one more entry; ``forget(applied)`` drops what the state now
    holds; ``reset`` starts over (a new term). Pure: no clock, no I/O."""

    def __init__(self) -> None:
        self.term = -1
        self.last = -1  # the last log index the view accounts for
        self._values: dict[bytes, tuple[bytes | None, int]] = {}  # key -> (value or None: deleted, index)
        self._written: deque[tuple[int, tuple]] = deque()  # (index, keys it wrote), in log order
        self._ranges: list[tuple[bytes, bytes, int]] = []  # ranges deleted, with their entry's index
        self._ordered: list[bytes] = []  # _values' keys in order (stale and repeated ones skipped)
        self._fresh: list[bytes] = []  # keys added since _ordered was last sorted
        self._clients: dict[str, _Pending] = {}
        self._client_entries: deque[tuple[int, str]] = deque()  # (index, client) of accounted fresh entries
        self.decided = 0  # writes decided at proposal
        self.undecided = 0  # writes proposed undecided (the view had stopped, or could not take them)

    # --- moving the view ---------------------------------------------------------------------

    def reset(self, term: int, applied: int) -> None:
        """Start over in ``term`` with nothing accounted after ``applied``."""
        self.term, self.last = term, applied
        self._values.clear()
        self._written.clear()
        self._ranges.clear()
        self._ordered.clear()
        self._fresh.clear()
        self._clients.clear()
        self._client_entries.clear()

    def forget(self, applied: int) -> None:
        """Entries up to ``applied`` are in the state: drop their effects from the view."""
        values = self._values
        while self._written and self._written[0][0] <= applied:
            index, keys = self._written.popleft()
            for k in keys:
                held = values.get(k)
                if held is not None and held[1] == index:
                    del values[k]
        if self._ranges and self._ranges[0][2] <= applied:
            self._ranges = [r for r in self._ranges if r[2] > applied]
        while self._client_entries and self._client_entries[0][0] <= applied:
            _, client = self._client_entries.popleft()
            p = self._clients.get(client)
            if p is not None:
                p.drop_through(applied)
                if not p.entries:
                    del self._clients[client]
        if len(self._ordered) > 2 * len(values) + 64:
            self._ordered, self._fresh = sorted(values), []
        if self.last < applied:
            self.last = applied

    def outcome(self, sessions: Any, client: str, seq: int, stamp: int) -> str | None:
        """What apply will make of a write of ``(client, seq)`` stamped ``stamp`` placed after the
        view's end: :data:`FRESH`, :data:`REPEAT`, or None when that is not known (a repeat whose
        session may expire before it applies)."""
        if not client:
            return FRESH  # unsessioned: always applied
        floor, seen = sessions.table.get(client, (0, {}))
        p = self._clients.get(client)
        if not (seq < floor or seq in seen or (p is not None and (seq < p.floor() or seq in p.seqs))):
            return FRESH
        ttl = sessions.ttl_ms
        if not ttl:
            return REPEAT
        if stamp < 0:
            return None
        # Every stamp the repeat's answer depends on must be within the TTL of this entry's stamp,
        # which is the newest: then no entry before it can expire the session (Sessions.expire).
        alive = [t for t in (sessions.active.get(client) if client in sessions.table else None,
                             p.first_stamp() if p is not None else None) if t is not None]
        return REPEAT if alive and min(alive) >= stamp - ttl else None

    def account(self, index: int, client: str, seq: int, acked_below: int, stamp: int, ops: tuple,
                outcome: str) -> None:
        """Move the view over entry ``index`` (the one after its end) whose decided ``ops`` apply
        as ``outcome`` says."""
        if index != self.last + 1:
            raise ValueError(f"the view is at {self.last}; entry {index} is not the next one")
        self.last = index
        if outcome != FRESH:
            return
        if client:
            p = self._clients.get(client)
            if p is None:
                p = self._clients[client] = _Pending()
            p.add(index, seq, acked_below, stamp)
            self._client_entries.append((index, client))
        if not ops:
            return
        values, fresh = self._values, self._fresh
        keys = []
        for op in ops:
            code = op[0]
            if code == PUT or code == DELETE:
                key = op[1]
                if key not in values:
                    fresh.append(key)
                values[key] = (op[2] if code == PUT else None, index)
                keys.append(key)
            elif code == DELETE_RANGE:
                start, end = op[1], op[2]
                for k in [k for k in values if start <= k < end]:
                    values[k] = (None, index)
                    keys.append(k)
                self._ranges.append((start, end, index))
            else:
                raise ValueError(f"an accounted entry holds decided ops only, not code {code!r}")
        self._written.append((index, tuple(keys)))

    def skip(self, index: int) -> None:
        """Move the view over entry ``index``, which changes no state (a no-op, a configuration change)."""
        if index != self.last + 1:
            raise ValueError(f"the view is at {self.last}; entry {index} is not the next one")
        self.last = index

    # --- reading through the view ----------------------------------------------------------------

    def reader(self, get: Callable[[bytes], bytes | None],
               scan: Callable[[bytes, bytes | None, int], tuple[tuple, tuple]],
               get_many: Callable[[tuple], Any] | None = None) -> tuple[Callable, Callable, Callable]:
        """``(get, scan, get_many)`` of the state as of the view's end, over the state's own
        ``get``, ``scan`` and ``get_many`` (what :func:`~.state.decide` takes)."""
        values, ranges = self._values, self._ranges

        def known(key: bytes) -> Any:
            held = values.get(key)
            if held is not None:
                return held[0]
            return None if ranges and any(s <= key < e for s, e, _ in ranges) else UNKNOWN

        def view_get(key: bytes) -> bytes | None:
            value = known(key)
            return get(key) if value is UNKNOWN else value

        def view_scan(start: bytes, end: bytes | None, limit: int) -> tuple[tuple, tuple]:
            return self._scan(scan, start, end, limit)

        def view_many(keys: tuple) -> list:
            return read_through(keys, known, get, get_many)

        return view_get, view_scan, view_many

    def decide(self, ops: tuple, get: Callable, scan: Callable,
               get_many: Callable | None = None) -> tuple[tuple, tuple]:
        """:func:`~.state.decide` of ``ops`` against the view over the state's ``get``, ``scan``
        and ``get_many``."""
        if not needs_deciding(ops):  # a batch of puts and deletes: no view to build
            return ops, (None,) * len(ops)
        return decide(ops, *self.reader(get, scan, get_many))

    def _sorted_keys(self) -> list[bytes]:
        if self._fresh:
            self._fresh.sort()
            self._ordered = sorted(self._ordered + self._fresh)  # two sorted runs: one merge
            self._fresh = []
        return self._ordered

    def _scan(self, scan: Callable, start: bytes, end: bytes | None, limit: int) -> tuple[tuple, tuple]:
        """Up to ``limit`` live keys of ``[start, end)`` and their values, as of the view's end: the
        state's page, less the keys the view deleted or replaced, merged with the view's own."""
        if not self._values and not self._ranges:
            return scan(start, end, limit)
        values, ranges = self._values, self._ranges
        ordered = self._sorted_keys()
        out_k: list[bytes] = []
        out_v: list[bytes] = []
        at = start
        while len(out_k) < limit:
            sk, sv = scan(at, end, limit)
            full = len(sk) == limit
            # The state's keys are complete up to its page's last one (all of [at, end) if short).
            rows = [(k, v) for k, v in zip(sk, sv)
                    if k not in values and not (ranges and any(s <= k < e for s, e, _ in ranges))]
            i = bisect_left(ordered, at)
            previous = None
            while i < len(ordered):
                k = ordered[i]
                i += 1
                if (end is not None and k >= end) or (full and k > sk[-1]):
                    break
                if k == previous:
                    continue
                previous = k
                held = values.get(k)
                if held is not None and held[0] is not None:
                    rows.append((k, held[0]))
            rows.sort(key=lambda kv: kv[0])
            for k, v in rows[:limit - len(out_k)]:
                out_k.append(k)
                out_v.append(v)
            if not full:
                break
            at = sk[-1] + b"\x00"
        return tuple(out_k), tuple(out_v)

    def figures(self) -> dict:
        """For status: writes decided at proposal and proposed undecided, and the view's size."""
        return {"decided_at_proposal": self.decided, "proposed_undecided": self.undecided,
                "speculated_keys": len(self._values)}


def stops_view(ops: tuple, fence: int) -> bool:
    """Whether an entry of ``ops`` with ``fence`` is one the view cannot account for before it is
    applied (a fenced write, an ownership change, an ingest of files)."""
    return fence != 0 or any(op[0] == INGEST for op in ops)
