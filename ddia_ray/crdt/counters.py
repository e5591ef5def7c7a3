"""Counters: the grow-only G-Counter and the increment/decrement PN-Counter.

Theory of operation
-------------------
A G-Counter (Shapiro et al. 2011, section 3.1.1) keeps one non-negative count per replica; a
replica only ever raises its own entry, the join is the pointwise maximum, and the value is the
sum. An increment's delta is the one entry it raised (Almeida et al. 2018, section 4), so merging
deltas in any order, twice, or grouped gives the same counter. A PN-Counter is two G-Counters,
one for increments and one for decrements; its value is their difference.

Payload grammar (format 1)::

    gcounter  := array((node: str, count: int >= 1)*)        # sorted by node, no zero entries
    pncounter := array(gcounter-increments, gcounter-decrements)
"""

from __future__ import annotations

from typing import Any

from .base import COUNTER_MAX, CRDT, check_count, check_node, corrupt, p_int, p_node, p_row, p_seq
from ..errors import InvalidArgumentError

__all__ = ["GCounter", "PNCounter"]


def _raise(counts: dict[str, int], node: str, n: int) -> int:
    total = counts.get(node, 0) + n
    if total > COUNTER_MAX:
        raise InvalidArgumentError(f"the count of {node!r} would exceed 2**63-1")
    counts[node] = total
    return total


def _join(mine: dict[str, int], theirs: dict[str, int]) -> None:
    for node, c in theirs.items():
        if c > mine.get(node, 0):
            mine[node] = c


def _counts_payload(counts: dict[str, int]) -> tuple:
    return tuple(sorted(counts.items()))


def _counts_from(kind: str, x: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in p_seq(kind, x, "counts"):
        node, c = p_row(kind, row, 2, "count entry")
        node = p_node(kind, node)
        if node in counts:
            raise corrupt(kind, f"node {node!r:.40} appears twice")
        counts[node] = p_int(kind, c, 1, COUNTER_MAX, "count")
    return counts


class GCounter(CRDT):
    """A grow-only counter: one count per replica, joined by maximum; value() is their sum (an int)."""

    kind = "gcounter"
    mutators = frozenset({"increment"})
    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def increment(self, node: str, n: int = 1) -> GCounter:
        """Add ``n`` (an int >= 0) at replica ``node``; returns the delta (this replica's new count)."""
        check_node(node)
        check_count("n", n)
        delta = GCounter()
        if n:
            delta._counts[node] = _raise(self._counts, node, n)
        return delta

    def merge(self, other: GCounter) -> GCounter:
        """Pointwise maximum with ``other``; returns self."""
        self._check_same(other)
        _join(self._counts, other._counts)
        return self

    def value(self) -> int:
        """The sum of every replica's count."""
        return sum(self._counts.values())

    def counts(self) -> dict[str, int]:
        """A copy of the per-replica counts."""
        return dict(self._counts)

    def copy(self) -> GCounter:
        """An independent copy."""
        c = GCounter()
        c._counts = dict(self._counts)
        return c

    def __eq__(self, other: object) -> bool:
        return type(other) is GCounter and self._counts == other._counts

    def _payload(self) -> Any:
        return _counts_payload(self._counts)

    @classmethod
    def _from_payload(cls, payload: Any) -> GCounter:
        c = cls()
        c._counts = _counts_from(cls.kind, payload)
        return c


class PNCounter(CRDT):
    """A counter that goes up and down: two G-Counters; value() is increments minus decrements (an int)."""

    kind = "pncounter"
    mutators = frozenset({"increment", "decrement"})
    __slots__ = ("_p", "_n")

    def __init__(self) -> None:
        self._p: dict[str, int] = {}
        self._n: dict[str, int] = {}

    def increment(self, node: str, n: int = 1) -> PNCounter:
        """Add ``n`` (an int >= 0) at replica ``node``; returns the delta."""
        check_node(node)
        check_count("n", n)
        delta = PNCounter()
        if n:
            delta._p[node] = _raise(self._p, node, n)
        return delta

    def decrement(self, node: str, n: int = 1) -> PNCounter:
        """Subtract ``n`` (an int >= 0) at replica ``node``; returns the delta."""
        check_node(node)
        check_count("n", n)
        delta = PNCounter()
        if n:
            delta._n[node] = _raise(self._n, node, n)
        return delta

    def merge(self, other: PNCounter) -> PNCounter:
        """Pointwise maximum of both halves; returns self."""
        self._check_same(other)
        _join(self._p, other._p)
        _join(self._n, other._n)
        return self

    def value(self) -> int:
        """Increments minus decrements."""
        return sum(self._p.values()) - sum(self._n.values())

    def copy(self) -> PNCounter:
        """An independent copy."""
        c = PNCounter()
        c._p, c._n = dict(self._p), dict(self._n)
        return c

    def __eq__(self, other: object) -> bool:
        return type(other) is PNCounter and self._p == other._p and self._n == other._n

    def _payload(self) -> Any:
        return (_counts_payload(self._p), _counts_payload(self._n))

    @classmethod
    def _from_payload(cls, payload: Any) -> PNCounter:
        p, n = p_row(cls.kind, payload, 2, "payload")
        c = cls()
        c._p, c._n = _counts_from(cls.kind, p), _counts_from(cls.kind, n)
        return c
