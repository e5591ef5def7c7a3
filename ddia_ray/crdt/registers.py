"""Registers: the last-writer-wins LWW-Register and the multi-value MV-Register.

Theory of operation
-------------------
* **LWW-Register** (Shapiro et al. 2011, 3.2.1): every assignment carries a timestamp given by
  the caller (a hybrid or Lamport clock reading; this core reads no clock) and the assigning
  node; the highest ``(timestamp, node)`` wins, and an exact tie (one node assigning two values
  with one timestamp) is broken by the value's bytes, so every replica picks the same one. The
  losers are gone: DDIA 5.4, "Last write wins (discarding concurrent writes)".
* **MV-Register** (3.2.2, in the delta form of Almeida et al. 2018, 7.3): an assignment takes a
  fresh dot and supersedes every value the replica has seen (their dots go into the delta's
  context); concurrent assignments hold dots the others never saw, so all of them stay, as
  Dynamo's siblings do (DDIA 5.4, "Detecting concurrent writes"). The next assignment, having seen
  them, replaces them all. value() is the tuple of concurrent values, each once, sorted by bytes.

Payload grammar (format 1)::

    lww        := nil | array(timestamp: int, node: str, value)
    mvregister := map{"n": array(node: str*), "c": context, "e": array((node-index, counter, value)*)}

Every MV-Register entry's dot lies in its context.
"""

from __future__ import annotations

from typing import Any

from .base import (
    COUNTER_MAX,
    CRDT,
    check_count,
    check_node,
    corrupt,
    item_key,
    p_int,
    p_item,
    p_map,
    p_node,
    p_nodes,
    p_row,
    p_seq,
)
from .dots import CausalContext, _ix, join_dots

__all__ = ["LWWRegister", "MVRegister"]


class LWWRegister(CRDT):
    """A register where the highest ``(timestamp, node)`` assignment wins; value() is it (None: unset)."""

    kind = "lww"
    mutators = frozenset({"assign"})
    __slots__ = ("_stamp", "_value")

    def __init__(self) -> None:
        self._stamp: tuple[int, str, bytes] | None = None  # (timestamp, node, value bytes): the total order
        self._value: Any = None

    def assign(self, node: str, value: Any, timestamp: int) -> LWWRegister:
        """Assign ``value`` at ``timestamp`` (an int >= 0) from ``node``; returns the delta (that assignment).

        An assignment older than the register's keeps the register as it is.
        """
        check_node(node)
        check_count("timestamp", timestamp)
        delta = LWWRegister()
        delta._stamp, delta._value = (timestamp, node, item_key(value, "register value")), value
        self.merge(delta)
        return delta

    def merge(self, other: LWWRegister) -> LWWRegister:
        """Keep the later of both assignments; returns self."""
        self._check_same(other)
        if other._stamp is not None and (self._stamp is None or other._stamp > self._stamp):
            self._stamp, self._value = other._stamp, other._value
        return self

    def value(self) -> Any:
        """The winning value, or None if never assigned."""
        return self._value

    def timestamp(self) -> tuple[int, str] | None:
        """``(timestamp, node)`` of the winning assignment, or None."""
        return None if self._stamp is None else self._stamp[:2]

    def copy(self) -> LWWRegister:
        """An independent copy (values are immutable)."""
        c = LWWRegister()
        c._stamp, c._value = self._stamp, self._value
        return c

    def __eq__(self, other: object) -> bool:
        return type(other) is LWWRegister and self._stamp == other._stamp

    def _payload(self) -> Any:
        return None if self._stamp is None else (self._stamp[0], self._stamp[1], self._value)

    @classmethod
    def _from_payload(cls, payload: Any) -> LWWRegister:
        c = cls()
        if payload is not None:
            ts, node, raw = p_row(cls.kind, payload, 3, "assignment")
            key, value = p_item(cls.kind, raw, "register value")
            c._stamp = (p_int(cls.kind, ts, 0, COUNTER_MAX, "timestamp"), p_node(cls.kind, node), key)
            c._value = value
        return c


class MVRegister(CRDT):
    """A register that keeps every concurrent assignment; value() is a sorted tuple of the values."""

    kind = "mvregister"
    mutators = frozenset({"assign"})
    __slots__ = ("_entries", "_ctx")

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[bytes, Any]] = {}  # dot -> (value bytes, value)
        self._ctx = CausalContext()

    def assign(self, node: str, value: Any) -> MVRegister:
        """Assign ``value`` at ``node``, superseding every value seen here; returns the delta."""
        check_node(node)
        entry = (item_key(value, "register value"), value)
        dot = self._ctx.next_dot(node)
        delta = MVRegister()
        delta._ctx = CausalContext.of((dot,) + tuple(self._entries))
        delta._entries[dot] = entry
        self._ctx.add(*dot)
        self._entries = {dot: entry}
        return delta

    def merge(self, other: MVRegister) -> MVRegister:
        """Keep the assignments neither side has superseded; returns self."""
        self._check_same(other)
        keep = join_dots(self._entries, self._ctx, other._entries, other._ctx)
        mine, theirs = self._entries, other._entries
        self._entries = {d: mine[d] if d in mine else theirs[d] for d in keep}
        self._ctx.merge(other._ctx)
        return self

    def value(self) -> tuple:
        """The concurrent values, each once, sorted by their bytes (empty: never assigned)."""
        distinct = {k: v for k, v in self._entries.values()}
        return tuple(distinct[k] for k in sorted(distinct))

    def copy(self) -> MVRegister:
        """An independent copy."""
        c = MVRegister()
        c._entries = dict(self._entries)
        c._ctx = self._ctx.copy()
        return c

    def __eq__(self, other: object) -> bool:
        return (type(other) is MVRegister and self._ctx == other._ctx
                and {d: k for d, (k, _) in self._entries.items()} == {d: k for d, (k, _) in other._entries.items()})

    def _payload(self) -> Any:
        index: dict[str, int] = {}
        entries = tuple((_ix(index, n), c, self._entries[(n, c)][1]) for n, c in sorted(self._entries))
        ctx = self._ctx.payload(index)  # before the node table is read: it may add nodes
        return {"n": tuple(index), "c": ctx, "e": entries}

    @classmethod
    def _from_payload(cls, payload: Any) -> MVRegister:
        kind = cls.kind
        p = p_map(kind, payload, frozenset({"n", "c", "e"}))
        nodes = p_nodes(kind, p["n"])
        c = cls()
        c._ctx = CausalContext.from_payload(kind, p["c"], nodes)
        for row in p_seq(kind, p["e"], "entries"):
            i, n, raw = p_row(kind, row, 3, "entry")
            dot = (nodes[p_int(kind, i, 0, len(nodes) - 1, "node index")], p_int(kind, n, 1, COUNTER_MAX, "counter"))
            if dot in c._entries or not c._ctx.contains(*dot):
                raise corrupt(kind, "an entry's dot is outside the context or repeated")
            c._entries[dot] = p_item(kind, raw, "register value")
        return c

