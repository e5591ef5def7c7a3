"""Lamport clocks: a logical clock consistent with causality.

Theory of operation
-------------------
Lamport (1978, "Time, Clocks, and the Ordering of Events in a Distributed
System") gives each process a counter. Every local event and every send
increments it (:meth:`LamportClock.tick`); a receive sets it to
``max(local, remote) + 1`` (:meth:`LamportClock.observe`). Hence if event
``a`` happened before ``b`` then ``L(a) < L(b)``; the converse does not hold,
so a Lamport time cannot tell concurrent events apart (use a vector clock for
that). Breaking ties by node id turns the partial order into the total order
of :class:`LamportTimestamp`, which is what DDIA (ch. 9, "Lamport timestamps")
uses to order operations, e.g. for last-write-wins.
"""

from __future__ import annotations

from .._validate import integer, non_negative
from ..codec import record
from ..errors import ConfigError, InvalidArgumentError

__all__ = ["LamportClock", "LamportTimestamp"]


def _node_id(name: str, value) -> str:
    """A node id must be a non-empty ``str``."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ConfigError(f"{name} must be a non-empty string")
    return value


def _counter(name: str, value) -> int:
    """A counter is a non-negative ``int``."""
    return non_negative(name, integer(name, value))


@record("clock.lamport", version=1)
class LamportTimestamp:
    """A Lamport time tagged with the node that produced it, totally ordered by ``(time, node)``.

    Ties on ``time`` are broken by ``node`` so that timestamps from different
    nodes are never equal; the order extends happens-before but says nothing
    about which of two concurrent events "really" came first.
    """

    time: int
    node: str

    def __post_init__(self) -> None:
        _counter("time", self.time)
        _node_id("node", self.node)

    def _key(self) -> tuple[int, str]:
        return (self.time, self.node)

    # Explicit comparisons: the codec builds the dataclass itself (no order=True),
    # and functools.total_ordering would add nothing but an indirection.
    def __lt__(self, other: object) -> bool:
        """``True`` if ``self`` orders before ``other`` by ``(time, node)``."""
        if not isinstance(other, LamportTimestamp):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        """``True`` if ``self`` orders before or equals ``other``."""
        if not isinstance(other, LamportTimestamp):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        """``True`` if ``self`` orders after ``other`` by ``(time, node)``."""
        if not isinstance(other, LamportTimestamp):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        """``True`` if ``self`` orders after or equals ``other``."""
        if not isinstance(other, LamportTimestamp):
            return NotImplemented
        return self._key() >= other._key()


class LamportClock:
    """The mutable Lamport counter of one node.

    ``node`` only labels the timestamps produced by :meth:`stamp`; the counter
    starts at ``time`` (0 by default, meaning "no event yet").
    """

    __slots__ = ("_node", "_time")

    def __init__(self, node: str = "local", time: int = 0) -> None:
        self._node = _node_id("node", node)
        self._time = _counter("time", time)

    @property
    def node(self) -> str:
        """The node this clock belongs to."""
        return self._node

    @property
    def time(self) -> int:
        """The time of the latest event on this node (0 before any event)."""
        return self._time

    def tick(self) -> int:
        """Record a local or send event and return its time (the old time + 1)."""
        self._time += 1
        return self._time

    def observe(self, remote_time: int | LamportTimestamp) -> int:
        """Record the receipt of a message stamped ``remote_time``; return the receive event's time.

        The new time is ``max(local, remote) + 1``, so the receive orders
        after both the send and every earlier local event.
        """
        if isinstance(remote_time, LamportTimestamp):
            remote_time = remote_time.time
        _counter("remote_time", remote_time)
        self._time = max(self._time, remote_time) + 1
        return self._time

    def stamp(self) -> LamportTimestamp:
        """The current time as a :class:`LamportTimestamp` (does not tick)."""
        return LamportTimestamp(self._time, self._node)

    def __repr__(self) -> str:
        return f"LamportClock(node={self._node!r}, time={self._time})"
