"""The write-behind queue: bounded, coalescing per key, with one batch in flight.

Theory of operation
-------------------
Writes wait here between their acknowledgement and their flush to the store.
The queue holds at most one operation per key in ``pending``: a newer put or
delete of a key replaces the older one in place (last writer wins, and the
key keeps its place in line, so a hot key cannot starve the others). That
is the whole point of write-behind: N writes to one key cost one store write.

A flush :meth:`~CoalescingQueue.take`\\ s up to ``max_ops`` of the oldest
pending operations into ``in_flight``; exactly one batch may be in flight
(the single flusher keeps each key's writes in order). While it flies, new
writes of the same keys go to ``pending`` again, and reads
(:meth:`~CoalescingQueue.lookup`) prefer ``pending`` over ``in_flight``, so
they always see the newest acknowledged value. :meth:`~CoalescingQueue.ack`
forgets the batch once the store applied it; :meth:`~CoalescingQueue.requeue`
puts a failed batch back at the head of the line, unless a newer write of a
key arrived meanwhile (then the old one is coalesced away): nothing
acknowledged is ever dropped.

Capacity counts distinct keys in ``pending`` and ``in_flight`` together, so
memory is bounded even while the store is down. Writes that need room wait
(the actor blocks them: backpressure) instead of being dropped.

Invariant: ``occupied == |keys(pending) | keys(in_flight)| <= capacity_keys``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from .._validate import integer, invariant, positive
from ..errors import ConfigError, InvalidArgumentError
from ..storage.engine import Op

__all__ = ["CoalescingQueue"]


class CoalescingQueue:
    """Pending writes of a write-behind cache (pure; the actor adds locking and waiting)."""

    def __init__(self, capacity_keys: int):
        self.capacity_keys = positive("capacity_keys", integer("capacity_keys", capacity_keys))
        self._pending: OrderedDict[bytes, tuple[Op, float]] = OrderedDict()  # key -> (op, first enqueue time)
        self._in_flight: dict[bytes, tuple[Op, float]] = {}
        self._occupied = 0
        self.coalesced = 0  #: writes replaced by a newer write of the same key before reaching the store

    @staticmethod
    def _check(ops: Iterable[Op]) -> list[Op]:
        ops = list(ops)
        for op in ops:
            if not isinstance(op, Op):
                raise InvalidArgumentError(f"the write-behind queue takes storage Op records, got {type(op).__name__}")
            if op.kind not in ("put", "delete"):
                raise InvalidArgumentError(
                    f"write-behind cannot queue {op.kind!r} (no per-key coalescing is possible); "
                    "flush() and write the range to the store directly")
        return ops

    def room_needed(self, ops: Iterable[Op]) -> int:
        """How many free slots ``ops`` would take (keys not already queued, counted once)."""
        new = {op.key for op in self._check(ops)}
        return sum(1 for k in new if k not in self._pending and k not in self._in_flight)

    @property
    def room(self) -> int:
        """Free slots."""
        return self.capacity_keys - self._occupied

    def offer(self, ops: Iterable[Op], now_s: float) -> int:
        """Queue ``ops`` in order (all of them: check :meth:`room_needed` first); returns how many coalesced."""
        ops = self._check(ops)
        needed = self.room_needed(ops)
        if needed > self.capacity_keys:
            raise ConfigError(f"a batch of {needed} new keys can never fit a queue of {self.capacity_keys}; "
                              "split it or raise queue_capacity_keys")
        invariant(needed <= self.room, "offer() without room: the caller must wait for room first")
        coalesced = 0
        for op in ops:
            old = self._pending.get(op.key)
            if old is not None:
                self._pending[op.key] = (op, old[1])  # newest op, original place in line
                coalesced += 1
            else:
                if op.key not in self._in_flight:
                    self._occupied += 1
                self._pending[op.key] = (op, now_s)
        self.coalesced += coalesced
        return coalesced

    def lookup(self, key: bytes) -> Op | None:
        """The newest queued operation of ``key`` (pending first, then in flight), or None."""
        item = self._pending.get(key)
        if item is not None:
            return item[0]
        item = self._in_flight.get(key)
        return None if item is None else item[0]

    def take(self, max_ops: int) -> tuple[Op, ...]:
        """Move up to ``max_ops`` of the oldest pending operations in flight and return them."""
        invariant(not self._in_flight, "take() while a batch is in flight: ack() or requeue() it first")
        batch: list[Op] = []
        while self._pending and len(batch) < max_ops:
            key, item = self._pending.popitem(last=False)
            self._in_flight[key] = item
            batch.append(item[0])
        return tuple(batch)

    def ack(self) -> int:
        """The in-flight batch reached the store: forget it; returns its length."""
        n = len(self._in_flight)
        for key in self._in_flight:
            if key not in self._pending:
                self._occupied -= 1
        self._in_flight.clear()
        invariant(0 <= self._occupied <= self.capacity_keys, "queue occupancy out of range")
        return n

    def requeue(self) -> int:
        """The in-flight batch failed: put it back at the head of the line; returns how many went back."""
        back = 0
        for key, item in reversed(list(self._in_flight.items())):
            if key in self._pending:
                self.coalesced += 1  # a newer write of the key supersedes the failed one
                continue
            self._pending[key] = item  # with its original enqueue time
            self._pending.move_to_end(key, last=False)
            back += 1
        self._in_flight.clear()
        return back

    def oldest_s(self) -> float | None:
        """First-enqueue time of the oldest pending operation, or None when nothing is pending."""
        if not self._pending:
            return None
        return next(iter(self._pending.values()))[1]

    @property
    def pending(self) -> int:
        """Operations waiting for a flush."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Operations of the batch being flushed."""
        return len(self._in_flight)

    def __len__(self) -> int:
        """Distinct keys queued (pending or in flight): the depth that counts against capacity."""
        return self._occupied
