"""Sliding windows of call outcomes with O(1) updates and O(1) snapshots.

Theory of operation
-------------------
A circuit breaker decides from *recent* outcomes only, so it needs a window
that forgets. Both windows here keep **running totals** (calls, failures,
slow calls, total duration) next to a ring of partial aggregates, and apply
"subtract on evict": when a slot leaves the window its counts are subtracted
from the totals and the slot is reused. A snapshot therefore never scans the
ring; it is built from the totals in constant time.

* :class:`CountWindow` remembers the last ``size_calls`` outcomes, one slot
  per call. Recording the ``size_calls + 1``-th call evicts the oldest.
* :class:`TimeWindow` remembers the last ``size_s`` seconds, one bucket per
  whole second of the injected clock (``floor(now)`` is the bucket key). When
  time advances by ``k`` seconds, the ``min(k, size_s)`` buckets that fell out
  are subtracted and cleared: amortised O(1) per elapsed second, O(size_s) at
  worst after a long idle period.

Both can be *resized* (:meth:`CountWindow.resized`, :meth:`TimeWindow.resized`)
when a breaker is reconfigured while it runs: the new window starts with the
newest outcomes the old one holds that still fit, so a live change of the
window size neither forgets recent history nor invents any.

Durations are stored as integer nanoseconds so that adding and subtracting
them forever never accumulates floating-point drift. Time only moves forward
here: a ``now`` older than the newest bucket is recorded into the newest
bucket (a monotonic clock never does this; a wall clock might).
"""

from __future__ import annotations

import dataclasses
import math

from .._validate import at_least, integer, invariant, non_negative, number

__all__ = ["WindowSnapshot", "CountWindow", "TimeWindow"]

_NS_PER_S = 1_000_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """Aggregated outcomes currently inside a window (immutable)."""

    total_calls: int
    failed_calls: int
    slow_calls: int
    total_duration_ns: int

    @property
    def successful_calls(self) -> int:
        """Calls that did not fail (slow successes included)."""
        return self.total_calls - self.failed_calls

    @property
    def failure_rate_pct(self) -> float:
        """Failed calls as a percentage of all calls (0.0 for an empty window)."""
        return 100.0 * self.failed_calls / self.total_calls if self.total_calls else 0.0

    @property
    def slow_call_rate_pct(self) -> float:
        """Slow calls as a percentage of all calls (0.0 for an empty window)."""
        return 100.0 * self.slow_calls / self.total_calls if self.total_calls else 0.0

    @property
    def avg_duration_s(self) -> float:
        """Mean call duration in seconds (0.0 for an empty window)."""
        return self.total_duration_ns / self.total_calls / _NS_PER_S if self.total_calls else 0.0


def _duration_ns(duration_s) -> int:
    return round(non_negative("duration_s", duration_s) * _NS_PER_S)


class CountWindow:
    """The last ``size_calls`` outcomes in a ring buffer, with running totals."""

    __slots__ = ("size_calls", "_failed", "_slow", "_dur_ns", "_next", "_filled",
                 "_calls", "_failures", "_slows", "_total_ns")

    def __init__(self, size_calls: int):
        self.size_calls = at_least("size_calls", integer("size_calls", size_calls), 1)
        self._failed = [False] * size_calls
        self._slow = [False] * size_calls
        self._dur_ns = [0] * size_calls
        self._next = 0        # slot the next outcome goes to
        self._filled = 0      # slots holding an outcome (<= size_calls)
        self._calls = self._failures = self._slows = self._total_ns = 0

    def record(self, now: float, duration_s: float, *, failed: bool, slow: bool) -> WindowSnapshot:
        """Add one outcome (``now`` is accepted for symmetry and ignored); return the new snapshot."""
        self._push(bool(failed), bool(slow), _duration_ns(duration_s))
        return self.snapshot(now)

    def resized(self, size_calls: int) -> "CountWindow":
        """A new window of ``size_calls`` holding the newest outcomes of this one that fit, in order."""
        window = CountWindow(size_calls)
        n = self.size_calls
        oldest = self._next if self._filled == n else 0
        keep = min(self._filled, window.size_calls)
        for k in range(self._filled - keep, self._filled):
            i = (oldest + k) % n
            window._push(self._failed[i], self._slow[i], self._dur_ns[i])
        return window

    def _push(self, failed: bool, slow: bool, dur_ns: int) -> None:
        i = self._next
        if self._filled == self.size_calls:  # evict the oldest outcome, which sits in slot i
            self._calls -= 1
            self._failures -= self._failed[i]
            self._slows -= self._slow[i]
            self._total_ns -= self._dur_ns[i]
        else:
            self._filled += 1
        self._failed[i], self._slow[i], self._dur_ns[i] = failed, slow, dur_ns
        self._calls += 1
        self._failures += failed
        self._slows += slow
        self._total_ns += dur_ns
        self._next = (i + 1) % self.size_calls
        invariant(self._calls == self._filled, "count window totals disagree with its ring")

    def snapshot(self, now: float = 0.0) -> WindowSnapshot:
        """The totals as an immutable :class:`WindowSnapshot` (O(1))."""
        return WindowSnapshot(self._calls, self._failures, self._slows, self._total_ns)


class TimeWindow:
    """Outcomes of the last ``size_s`` whole seconds: one bucket per second, running totals."""

    __slots__ = ("size_s", "_sec", "_calls_b", "_fail_b", "_slow_b", "_ns_b", "_head",
                 "_calls", "_failures", "_slows", "_total_ns")

    def __init__(self, size_s: int):
        self.size_s = at_least("size_s", integer("size_s", size_s), 1)
        self._sec: list[int | None] = [None] * size_s  # epoch second each bucket aggregates
        self._calls_b = [0] * size_s
        self._fail_b = [0] * size_s
        self._slow_b = [0] * size_s
        self._ns_b = [0] * size_s
        self._head: int | None = None    # newest second seen
        self._calls = self._failures = self._slows = self._total_ns = 0

    def _advance(self, now: float) -> int:
        """Move the head to ``floor(now)``, evicting expired buckets; return the head bucket index."""
        sec = math.floor(number("now", now))
        if self._head is None:
            self._head = sec
        elif sec > self._head:
            steps = sec - self._head
            if steps >= self.size_s:
                # Everything expired: clearing wholesale keeps a long idle gap O(size_s), not O(gap).
                for i in range(self.size_s):
                    self._clear(i)
                self._calls = self._failures = self._slows = self._total_ns = 0
            else:
                for s in range(self._head + 1, sec + 1):
                    i = s % self.size_s
                    # The bucket about to hold second s held second s - size_s: it just left the window.
                    self._calls -= self._calls_b[i]
                    self._failures -= self._fail_b[i]
                    self._slows -= self._slow_b[i]
                    self._total_ns -= self._ns_b[i]
                    self._clear(i)
            self._head = sec
        i = self._head % self.size_s
        if self._sec[i] != self._head:
            self._sec[i] = self._head
        return i

    def _clear(self, i: int) -> None:
        self._sec[i] = None
        self._calls_b[i] = self._fail_b[i] = self._slow_b[i] = self._ns_b[i] = 0

    def record(self, now: float, duration_s: float, *, failed: bool, slow: bool) -> WindowSnapshot:
        """Add one outcome that completed at ``now`` (seconds); return the new snapshot."""
        dur_ns = _duration_ns(duration_s)
        i = self._advance(now)
        self._calls_b[i] += 1
        self._fail_b[i] += bool(failed)
        self._slow_b[i] += bool(slow)
        self._ns_b[i] += dur_ns
        self._calls += 1
        self._failures += bool(failed)
        self._slows += bool(slow)
        self._total_ns += dur_ns
        return WindowSnapshot(self._calls, self._failures, self._slows, self._total_ns)

    def resized(self, size_s: int) -> "TimeWindow":
        """A new window of ``size_s`` seconds holding this one's buckets of its newest ``size_s`` seconds."""
        window = TimeWindow(size_s)
        if self._head is None:
            return window
        window._head = self._head
        for sec in range(self._head - min(self.size_s, window.size_s) + 1, self._head + 1):
            i = sec % self.size_s
            if self._sec[i] != sec:
                continue  # no outcome in that second
            j = sec % window.size_s
            window._sec[j] = sec
            window._calls_b[j], window._fail_b[j] = self._calls_b[i], self._fail_b[i]
            window._slow_b[j], window._ns_b[j] = self._slow_b[i], self._ns_b[i]
            window._calls += self._calls_b[i]
            window._failures += self._fail_b[i]
            window._slows += self._slow_b[i]
            window._total_ns += self._ns_b[i]
        return window

    def snapshot(self, now: float) -> WindowSnapshot:
        """Expire buckets older than ``size_s`` seconds before ``now``; return the totals."""
        self._advance(now)
        invariant(self._calls >= 0 and self._failures >= 0, "time window totals went negative")
        return WindowSnapshot(self._calls, self._failures, self._slows, self._total_ns)
