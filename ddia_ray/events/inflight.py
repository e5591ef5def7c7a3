"""A consumer group's events in flight, kept as runs of consecutive positions.

Theory of operation
-------------------
A pull hands one consumer a run of consecutive positions with one attempt number
and one deadline, and the consumer acks the run it was handed. So a group keeps
its events in flight as runs ``(first, last, consumer, attempts, deadline)``,
ascending and disjoint, and its usual operations touch a run rather than each of
its positions: a batch handed out adds one run, its ack removes that run, a
timeout takes whole runs (a run shares one deadline). Only an operation on part
of a run (a nack of one event, an ack of some of a batch) splits it, and a run
added next to an equal one merges with it, so the group's row (which stores the
runs) stays as small as the state allows.

Before, a group expanded its runs into a dict with an entry per position on every
call and sorted the entries back into runs to write its row. With three batches
of 1,000 in flight (a consumer pulling ahead), that was a sixth of the leader's
busy time while a consumer went through ``$all`` (py-spy, docs/events.md).

Positions are looked up by bisection over the runs' first positions, so a lookup
is O(log runs); adding or removing a run is a list insertion, O(runs), and a
group has as many runs as it has batches and retries in flight.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from typing import Any

__all__ = ["InFlight"]


class InFlight:
    """The runs of a group's events in flight (see the module docstring). ``len`` is the number
    of events, not of runs; ``pos in inflight`` says whether one is in flight."""

    __slots__ = ("_firsts", "_runs", "_count")

    def __init__(self) -> None:
        self._firsts: list[int] = []  # each run's first position, for bisection
        self._runs: list[tuple] = []  # (first, last, consumer, attempts, deadline), ascending, disjoint
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __contains__(self, position: Any) -> bool:
        return self._find(position) >= 0

    def copy(self) -> "InFlight":
        """An independent copy (the runs are immutable tuples, so copying the lists suffices)."""
        other = InFlight()
        other._firsts, other._runs, other._count = list(self._firsts), list(self._runs), self._count
        return other

    def runs(self) -> tuple:
        """The runs, ascending: what the group's row stores."""
        return tuple(self._runs)

    def lowest(self) -> int | None:
        """The lowest position in flight (None: none)."""
        return self._firsts[0] if self._firsts else None

    def items(self) -> Iterator[tuple[int, tuple]]:
        """``(position, (consumer, attempts, deadline))`` for every event in flight, ascending."""
        for first, last, *held in self._runs:
            value = tuple(held)
            for p in range(first, last + 1):
                yield p, value

    def get(self, position: int) -> tuple | None:
        """``(consumer, attempts, deadline)`` of ``position`` (None: not in flight)."""
        i = self._find(position)
        return None if i < 0 else self._runs[i][2:]

    def _find(self, position: Any) -> int:
        """The index of the run holding ``position``, or -1."""
        if type(position) is not int:
            return -1
        i = bisect_right(self._firsts, position) - 1
        return i if i >= 0 and self._runs[i][1] >= position else -1

    def add(self, first: int, last: int, consumer: str, attempts: int, deadline: int) -> None:
        """Put positions ``first..last`` in flight with one consumer, attempt count and deadline;
        merged with a neighbouring run that holds the same. Raises ValueError if any of them is
        in flight already, or the span is empty or not of ints (a damaged row)."""
        if type(first) is not int or type(last) is not int or first > last or first < 0:
            raise ValueError(f"a run in flight spans ints first <= last, got {first!r}..{last!r}")
        firsts, runs = self._firsts, self._runs
        i = bisect_right(firsts, first)
        if (i > 0 and runs[i - 1][1] >= first) or (i < len(runs) and runs[i][0] <= last):
            raise ValueError(f"positions {first}..{last} overlap a run in flight")
        self._count += last - first + 1
        value = (consumer, attempts, deadline)
        if i > 0 and runs[i - 1][1] == first - 1 and runs[i - 1][2:] == value:
            i -= 1
            first = runs[i][0]
            del runs[i], firsts[i]
        if i < len(runs) and runs[i][0] == last + 1 and runs[i][2:] == value:
            last = runs[i][1]
            del runs[i], firsts[i]
        runs.insert(i, (first, last, *value))
        firsts.insert(i, first)

    def take_span(self, first: int, last: int) -> int | None:
        """Remove ``first..last`` if one run holds all of it (splitting the run around it) and
        return its attempts; None, and nothing removed, if no run does (the caller then settles the
        positions one by one)."""
        i = self._find(first)
        if i < 0 or self._runs[i][1] < last:
            return None
        lo, hi, *held = self._runs[i]
        del self._runs[i], self._firsts[i]
        self._count -= last - first + 1
        for a, b in ((last + 1, hi), (lo, first - 1)):  # inserted at i: the upper part first
            if a <= b:
                self._runs.insert(i, (a, b, *held))
                self._firsts.insert(i, a)
        return held[1]

    def pop(self, position: int) -> tuple:
        """Take ``position`` out of flight (splitting its run); its ``(consumer, attempts,
        deadline)``. KeyError if it is not in flight."""
        i = self._find(position)
        if i < 0:
            raise KeyError(position)
        held = self._runs[i][2:]
        self.take_span(position, position)
        return held

    def take_expired(self, now_ms: int) -> list[tuple]:
        """Remove and return the runs whose deadline is at or before ``now_ms``."""
        gone = [r for r in self._runs if r[4] <= now_ms]
        if gone:
            self._runs = [r for r in self._runs if r[4] > now_ms]
            self._firsts = [r[0] for r in self._runs]
            self._count -= sum(r[1] - r[0] + 1 for r in gone)
        return gone
