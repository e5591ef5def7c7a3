"""Vector clocks: a logical clock that characterises causality exactly.

Theory of operation
-------------------
Each node keeps one counter per node (Fidge 1988, Mattern 1989; DDIA ch. 5,
"Detecting Concurrent Writes"). A local or send event increments the node's
own entry (:meth:`VectorClock.increment`); a receive takes the pointwise
maximum with the message's clock (:meth:`VectorClock.merge`) and then
increments. For events ``a`` and ``b`` with clocks ``V(a)`` and ``V(b)``::

    a -> b  (a happened before b)  iff  V(a) <= V(b) pointwise and V(a) != V(b)

and two events are concurrent iff neither clock dominates the other, which
:meth:`VectorClock.compare` reports as :attr:`Ordering.CONCURRENT`.

A missing entry means 0, and zero entries are never stored, so two clocks
that agree on every node are equal (and hash equally) however they were
built. Clocks are immutable values: every operation returns a new clock.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Iterator, Mapping

from ..codec import record
from ..errors import InvalidArgumentError
from .lamport import _counter, _node_id

__all__ = ["Ordering", "VectorClock"]


class Ordering(enum.Enum):
    """How two vector clocks (and so the events they stamp) relate."""

    BEFORE = "before"  # self happened before other
    AFTER = "after"  # other happened before self
    EQUAL = "equal"  # the same causal history
    CONCURRENT = "concurrent"  # neither knows of the other


class _FrozenCounts(dict):
    """A read-only, hashable ``dict`` of node -> positive counter.

    It subclasses ``dict`` (rather than using ``MappingProxyType``) so that
    msgpack encodes it as a plain map and ``==`` with ordinary dicts works.
    """

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise TypeError("VectorClock entries are immutable; use increment() or merge()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self):
        # pickle (Ray's transport) would otherwise refill the dict through the
        # refused __setitem__.
        return (_FrozenCounts, (dict(self),))


_EMPTY = _FrozenCounts()


@record("clock.vector", version=1)
class VectorClock:
    """An immutable vector clock: ``entries`` maps node id -> number of events seen from it.

    ``VectorClock()`` is the clock before any event; ``VectorClock({"a": 2})``
    has seen two events of node ``a``. Counters must be non-negative ints and
    node ids non-empty strings; zero counters are dropped.
    """

    entries: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        entries = self.entries
        if not isinstance(entries, Mapping):
            raise InvalidArgumentError(
                f"VectorClock entries must be a mapping of node -> int, got {type(entries).__name__}"
            )
        clean = {}
        for node, count in entries.items():
            _node_id("vector clock node id", node)
            _counter(f"vector clock counter of {node!r}", count)
            if count:
                clean[node] = count
        # Sorted so that equal clocks also encode to identical bytes.
        object.__setattr__(self, "entries", _FrozenCounts(sorted(clean.items())))

    def __hash__(self) -> int:
        return hash(self.entries)

    def get(self, node: str) -> int:
        """The counter of ``node`` (0 if this clock has never seen an event of it)."""
        _node_id("node", node)
        return self.entries.get(node, 0)

    def nodes(self) -> Iterator[str]:
        """The nodes with a non-zero counter, in sorted order."""
        return iter(self.entries)

    def increment(self, node: str) -> VectorClock:
        """A new clock with ``node``'s counter one higher (a local or send event on ``node``)."""
        _node_id("node", node)
        entries = dict(self.entries)
        entries[node] = entries.get(node, 0) + 1
        return VectorClock(entries)

    def merge(self, other: VectorClock) -> VectorClock:
        """The pointwise maximum of both clocks (the causal history of both).

        Merge is commutative, associative and idempotent, so replicas can
        combine clocks in any order (a join-semilattice).
        """
        _check_clock(other)
        entries = dict(self.entries)
        for node, count in other.entries.items():
            if count > entries.get(node, 0):
                entries[node] = count
        return VectorClock(entries)

    def compare(self, other: VectorClock) -> Ordering:
        """How ``self`` relates to ``other``: BEFORE, AFTER, EQUAL or CONCURRENT."""
        _check_clock(other)
        some_less = some_greater = False
        for node in self.entries.keys() | other.entries.keys():
            mine, theirs = self.entries.get(node, 0), other.entries.get(node, 0)
            if mine < theirs:
                some_less = True
            elif mine > theirs:
                some_greater = True
        if some_less and some_greater:
            return Ordering.CONCURRENT
        if some_less:
            return Ordering.BEFORE
        if some_greater:
            return Ordering.AFTER
        return Ordering.EQUAL

    def happened_before(self, other: VectorClock) -> bool:
        """``True`` iff the event stamped ``self`` causally precedes the one stamped ``other``."""
        return self.compare(other) is Ordering.BEFORE

    def concurrent_with(self, other: VectorClock) -> bool:
        """``True`` iff neither clock happened before the other and they differ."""
        return self.compare(other) is Ordering.CONCURRENT


def _check_clock(other) -> None:
    if not isinstance(other, VectorClock):
        raise InvalidArgumentError(f"expected a VectorClock, got {type(other).__name__}")
