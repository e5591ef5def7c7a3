"""Hybrid logical clocks (HLC): causality-respecting timestamps close to wall time.

Theory of operation
-------------------
Kulkarni, Demirbas et al., "Logical Physical Clocks and Consistent Snapshots
in Globally Distributed Databases" (2014), keep two numbers per node: ``l``,
the largest physical time the node has heard of, and ``c``, a logical
counter that orders events sharing the same ``l``. With ``pt`` the local
physical clock (Fig. 5 of the paper):

* local or send event (:meth:`HybridClock.now`)::

      l' = l;  l = max(l', pt)
      c  = c + 1 if l == l' else 0

* receive of a message stamped ``(l_m, c_m)`` (:meth:`HybridClock.update`)::

      l' = l;  l = max(l', l_m, pt)
      c  = max(c, c_m) + 1   if l == l' == l_m
           c + 1             if l == l'
           c_m + 1           if l == l_m
           0                 otherwise

Then ``e -> f`` implies ``(l, c)(e) < (l, c)(f)``, and ``l - pt`` never exceeds
the skew between the physical clocks, so an HLC timestamp is a wall-clock
time (in ns) that is also safe for causal ordering and snapshots.

Why the drift bound
-------------------
``l`` only ever moves forward and spreads with every message. One node whose
clock is wrong by a day would, after a single message exchange, drag every
node's ``l`` a day into the future *permanently*: their physical clocks can
never catch up, ``c`` then counts all events for a day and timestamps stop
meaning wall time. :meth:`HybridClock.update` therefore refuses (with
:class:`~ddia_ray.errors.ClockDriftError`) a remote timestamp more than
``max_drift_ns`` ahead of the local physical clock, leaving the clock
unchanged, as CockroachDB does with its maximum clock offset. The logical
counter is likewise bounded (``logical_limit``, 2**16 by default so it fits a
16-bit field as in the paper's 64-bit encoding): overflowing it means ``pt``
has stalled far behind ``l``, which is a clock fault worth surfacing too.
"""

from __future__ import annotations

import time
from typing import Callable

from .._validate import integer, positive
from ..codec import record
from ..errors import ClockDriftError, InvalidArgumentError
from .lamport import _counter, _node_id

__all__ = ["HLCTimestamp", "HybridClock", "DEFAULT_MAX_DRIFT_NS", "DEFAULT_LOGICAL_LIMIT"]

#: 500 ms, CockroachDB's default maximum clock offset: generous for NTP-synced hosts.
DEFAULT_MAX_DRIFT_NS = 500_000_000
#: The logical counter must stay below this (it fits 16 bits, as in the paper).
DEFAULT_LOGICAL_LIMIT = 2**16


@record("clock.hlc", version=1)
class HLCTimestamp:
    """A hybrid logical timestamp, totally ordered by ``(wall_ns, logical, node)``.

    ``wall_ns`` is the HLC's ``l`` (nanoseconds since the epoch of the
    physical clock), ``logical`` its ``c``; ``node`` breaks ties between
    concurrent events so that distinct nodes never produce equal timestamps.
    """

    wall_ns: int
    logical: int
    node: str

    def __post_init__(self) -> None:
        _counter("wall_ns", self.wall_ns)
        _counter("logical", self.logical)
        _node_id("node", self.node)

    def _key(self) -> tuple[int, int, str]:
        return (self.wall_ns, self.logical, self.node)

    def __lt__(self, other: object) -> bool:
        """``True`` if ``self`` orders before ``other``."""
        if not isinstance(other, HLCTimestamp):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        """``True`` if ``self`` orders before or equals ``other``."""
        if not isinstance(other, HLCTimestamp):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        """``True`` if ``self`` orders after ``other``."""
        if not isinstance(other, HLCTimestamp):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        """``True`` if ``self`` orders after or equals ``other``."""
        if not isinstance(other, HLCTimestamp):
            return NotImplemented
        return self._key() >= other._key()


class HybridClock:
    """The hybrid logical clock of one node.

    ``physical_clock`` returns the local wall time in integer nanoseconds
    (``time.time_ns`` by default; inject a fake in tests and simulations).
    ``max_drift_ns`` bounds how far ahead of it a received timestamp may be;
    ``logical_limit`` bounds the logical counter. Both violations raise
    :class:`~ddia_ray.errors.ClockDriftError` and leave the clock unchanged.
    """

    __slots__ = ("_node", "_physical_clock", "_max_drift_ns", "_logical_limit", "_wall_ns", "_logical")

    def __init__(
        self,
        node: str,
        physical_clock: Callable[[], int] = time.time_ns,
        max_drift_ns: int = DEFAULT_MAX_DRIFT_NS,
        *,
        logical_limit: int = DEFAULT_LOGICAL_LIMIT,
    ) -> None:
        self._node = _node_id("node", node)
        if not callable(physical_clock):
            raise InvalidArgumentError(
                f"physical_clock must be a callable returning int ns, got {type(physical_clock).__name__}"
            )
        self._physical_clock = physical_clock
        self._max_drift_ns = _counter("max_drift_ns", max_drift_ns)
        self._logical_limit = positive("logical_limit", integer("logical_limit", logical_limit))
        # (l, c) of the latest event; (0, 0) means "no event yet".
        self._wall_ns = 0
        self._logical = 0

    @property
    def node(self) -> str:
        """The node this clock belongs to."""
        return self._node

    @property
    def max_drift_ns(self) -> int:
        """How far ahead of the local physical clock a remote timestamp may be."""
        return self._max_drift_ns

    @property
    def logical_limit(self) -> int:
        """The logical counter must stay strictly below this."""
        return self._logical_limit

    @property
    def last(self) -> HLCTimestamp:
        """The timestamp of the latest event (``(0, 0)`` before any); reading it changes nothing."""
        return HLCTimestamp(self._wall_ns, self._logical, self._node)

    def now(self) -> HLCTimestamp:
        """Timestamp a local or send event (paper Fig. 5, "send or local event")."""
        pt = self._read_physical()
        wall_ns = max(self._wall_ns, pt)
        logical = self._logical + 1 if wall_ns == self._wall_ns else 0
        self._check_logical(logical, wall_ns, pt, remote=None)
        return self._commit(wall_ns, logical)

    def now_pair(self) -> tuple[int, int]:
        """:meth:`now` as ``(wall_ns, logical)``, without building the timestamp: for a node that stamps
        every write of a batch (the node is its own, known to the caller)."""
        return self._reserve(1)

    def now_pairs(self, n: int) -> tuple[int, int]:
        """``n`` readings at once, ``(wall_ns, logical + i)`` for ``i < n``: what ``n`` calls of
        :meth:`now_pair` give within one instant of the physical clock (a batch of writes stamped
        together). Returns ``(wall_ns, logical)`` of the first; the clock ends at the last."""
        if type(n) is not int or n < 1:
            raise InvalidArgumentError(f"now_pairs needs an int n >= 1, got {n!r}")
        return self._reserve(n)

    def _reserve(self, n: int) -> tuple[int, int]:
        """The first of ``n`` readings (``n`` >= 1, unchecked); the clock ends at the last."""
        pt = self._read_physical()
        last = self._wall_ns
        wall_ns = last if last > pt else pt
        logical = self._logical + 1 if wall_ns == last else 0
        if logical + n - 1 >= self._logical_limit:
            self._check_logical(logical + n - 1, wall_ns, pt, remote=None)
        self._wall_ns, self._logical = wall_ns, logical + n - 1
        return wall_ns, logical

    def update(self, remote: HLCTimestamp) -> HLCTimestamp:
        """Timestamp the receipt of a message stamped ``remote`` (paper Fig. 5, "receive event").

        Raises :class:`~ddia_ray.errors.ClockDriftError`, without changing the
        clock, when ``remote.wall_ns`` is more than ``max_drift_ns`` ahead of
        the local physical clock or the logical counter would overflow.
        """
        if not isinstance(remote, HLCTimestamp):
            raise InvalidArgumentError(f"update needs an HLCTimestamp, got {type(remote).__name__}")
        pt = self._read_physical()
        ahead_ns = remote.wall_ns - pt
        if ahead_ns > self._max_drift_ns:
            err = ClockDriftError(
                f"HLC timestamp from node {remote.node!r} is {ahead_ns} ns ahead of the physical clock "
                f"of node {self._node!r}, beyond the drift bound max_drift_ns={self._max_drift_ns}; "
                "the message was rejected and the clock left unchanged: fix time sync on the remote "
                "node (or raise max_drift_ns if the skew is expected)"
            )
            err.remote_node, err.ahead_ns, err.max_drift_ns = remote.node, ahead_ns, self._max_drift_ns
            raise err
        old_wall, old_logical = self._wall_ns, self._logical
        wall_ns = max(old_wall, remote.wall_ns, pt)
        if wall_ns == old_wall == remote.wall_ns:
            logical = max(old_logical, remote.logical) + 1
        elif wall_ns == old_wall:
            logical = old_logical + 1
        elif wall_ns == remote.wall_ns:
            logical = remote.logical + 1
        else:
            logical = 0
        self._check_logical(logical, wall_ns, pt, remote=remote)
        return self._commit(wall_ns, logical)

    def _read_physical(self) -> int:
        pt = self._physical_clock()
        if isinstance(pt, bool) or not isinstance(pt, int):
            raise InvalidArgumentError(
                f"physical_clock of node {self._node!r} must return int nanoseconds, got {type(pt).__name__}"
            )
        return _counter("physical clock reading", pt)

    def _check_logical(self, logical: int, wall_ns: int, pt: int, remote: HLCTimestamp | None) -> None:
        if logical < self._logical_limit:
            return
        source = f" after a message from node {remote.node!r}" if remote is not None else ""
        err = ClockDriftError(
            f"HLC logical counter of node {self._node!r} would reach {logical}{source}, beyond "
            f"logical_limit={self._logical_limit}: the HLC wall time is {wall_ns - pt} ns ahead of the "
            "physical clock, which is stuck or far behind; the clock was left unchanged"
        )
        err.remote_node = remote.node if remote is not None else None
        err.ahead_ns, err.logical_limit = wall_ns - pt, self._logical_limit
        raise err

    def _commit(self, wall_ns: int, logical: int) -> HLCTimestamp:
        self._wall_ns, self._logical = wall_ns, logical
        return HLCTimestamp(wall_ns, logical, self._node)

    def __repr__(self) -> str:
        return f"HybridClock(node={self._node!r}, wall_ns={self._wall_ns}, logical={self._logical})"
