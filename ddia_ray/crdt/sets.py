"""Sets: the grow-only G-Set, the two-phase 2P-Set and the add-wins observed-remove OR-Set.

Theory of operation
-------------------
* **G-Set** (Shapiro et al. 2011, 3.3.1): add only; the join is the union.
* **2P-Set** (3.3.2): a G-Set of adds and a G-Set of removes (tombstones); an item is in the set
  if added and never removed. A removed item can never come back: a later add is absorbed by the
  tombstone. Removing an item that is not in the set is refused (InvalidArgumentError), since a
  tombstone for it would silently forbid a future add.
* **OR-Set**, add-wins (3.3.5, in the optimized delta form of Almeida et al. 2018, 7.2): each add
  tags the item with a fresh dot; a remove deletes the dots it has observed. A concurrent add
  carries a dot the remover never saw, so it survives the join: *add wins over a concurrent
  remove*, and a remove only undoes the adds that happened before it (DDIA 5.4, the shopping cart
  that keeps an item added on one replica while another removed it). An add also replaces the
  item's older dots, so an item held by one replica has one dot per concurrent adder, not one
  per add.

Items are immutable scalars or tuples of them (see :mod:`.base`); the sets key them by their
msgpack bytes.

Payload grammar (format 1)::

    gset  := array(item*)                                   # sorted by item bytes
    2pset := array(added: array(item*), removed: array(item*))
    orset := map{"n": array(node: str*), "c": context, "e": array((item, array((node-index, counter)*))*)}
    context := array(vv: array((node-index, counter)*), cloud: array((node-index, counter)*))

An OR-Set's entry dots must all be in its context, and an entry has at least one dot.
"""

from __future__ import annotations

from typing import Any

from .base import CRDT, check_node, corrupt, item_key, p_int, p_item, p_map, p_nodes, p_row, p_seq
from .dots import CausalContext, _ix, join_dots
from ..errors import InvalidArgumentError

__all__ = ["GSet", "TwoPSet", "ORSet"]


def _items_payload(items: dict[bytes, Any]) -> tuple:
    return tuple(items[k] for k in sorted(items))


def _items_from(kind: str, x: Any) -> dict[bytes, Any]:
    items: dict[bytes, Any] = {}
    for raw in p_seq(kind, x, "items"):
        key, item = p_item(kind, raw)
        if key in items:
            raise corrupt(kind, "an item appears twice")
        items[key] = item
    return items


class GSet(CRDT):
    """A grow-only set; value() is a frozenset."""

    kind = "gset"
    mutators = frozenset({"add"})
    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[bytes, Any] = {}

    def add(self, node: str, item: Any) -> GSet:
        """Add ``item``; returns the delta (a G-Set of that item)."""
        check_node(node)
        key = item_key(item)
        self._items.setdefault(key, item)
        delta = GSet()
        delta._items[key] = item
        return delta

    def merge(self, other: GSet) -> GSet:
        """Union with ``other``; returns self."""
        self._check_same(other)
        for k, v in other._items.items():
            self._items.setdefault(k, v)
        return self

    def value(self) -> frozenset:
        """The items."""
        return frozenset(self._items.values())

    def __contains__(self, item: Any) -> bool:
        return item_key(item) in self._items

    def copy(self) -> GSet:
        """An independent copy."""
        c = GSet()
        c._items = dict(self._items)
        return c

    def __eq__(self, other: object) -> bool:
        return type(other) is GSet and self._items.keys() == other._items.keys()

    def _payload(self) -> Any:
        return _items_payload(self._items)

    @classmethod
    def _from_payload(cls, payload: Any) -> GSet:
        c = cls()
        c._items = _items_from(cls.kind, payload)
        return c


class TwoPSet(CRDT):
    """A set whose removes are final (adds and tombstones); value() is a frozenset."""

    kind = "2pset"
    mutators = frozenset({"add", "remove"})
    __slots__ = ("_added", "_removed")

    def __init__(self) -> None:
        self._added: dict[bytes, Any] = {}
        self._removed: dict[bytes, Any] = {}

    def add(self, node: str, item: Any) -> TwoPSet:
        """Add ``item`` (absorbed if it was ever removed); returns the delta."""
        check_node(node)
        key = item_key(item)
        self._added.setdefault(key, item)
        delta = TwoPSet()
        delta._added[key] = item
        return delta

    def remove(self, node: str, item: Any) -> TwoPSet:
        """Remove ``item`` for good; InvalidArgumentError if it is not in the set. Returns the delta."""
        check_node(node)
        key = item_key(item)
        if key not in self._added or key in self._removed:
            raise InvalidArgumentError(f"cannot remove {item!r:.80} from a 2P-Set that does not hold it")
        self._removed[key] = item
        delta = TwoPSet()
        delta._removed[key] = item
        return delta

    def merge(self, other: TwoPSet) -> TwoPSet:
        """Union of both adds and both tombstones; returns self."""
        self._check_same(other)
        for k, v in other._added.items():
            self._added.setdefault(k, v)
        for k, v in other._removed.items():
            self._removed.setdefault(k, v)
        return self

    def value(self) -> frozenset:
        """The items added and never removed."""
        removed = self._removed
        return frozenset(v for k, v in self._added.items() if k not in removed)

    def copy(self) -> TwoPSet:
        """An independent copy."""
        c = TwoPSet()
        c._added, c._removed = dict(self._added), dict(self._removed)
        return c

    def __eq__(self, other: object) -> bool:
        return (type(other) is TwoPSet and self._added.keys() == other._added.keys()
                and self._removed.keys() == other._removed.keys())

    def _payload(self) -> Any:
        return (_items_payload(self._added), _items_payload(self._removed))

    @classmethod
    def _from_payload(cls, payload: Any) -> TwoPSet:
        added, removed = p_row(cls.kind, payload, 2, "payload")
        c = cls()
        c._added, c._removed = _items_from(cls.kind, added), _items_from(cls.kind, removed)
        return c


class ORSet(CRDT):
    """The add-wins observed-remove set; value() is a frozenset.

    ``remove`` of an item the replica does not hold is a no-op (its delta is empty): there is no
    observed add to undo.
    """

    kind = "orset"
    mutators = frozenset({"add", "remove"})
    __slots__ = ("_entries", "_ctx", "_owner")

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[Any, frozenset]] = {}  # item bytes -> (item, its live dots)
        self._ctx = CausalContext()
        self._owner: dict[tuple, bytes] = {}  # live dot -> item bytes: a delta's merge visits only what it names

    def _set(self, key: bytes, item: Any, dots: frozenset) -> None:
        old = self._entries.get(key)
        if old is not None:
            for d in old[1]:
                del self._owner[d]
        if dots:
            self._entries[key] = (item, dots)
            for d in dots:
                self._owner[d] = key
        elif old is not None:
            del self._entries[key]

    def add(self, node: str, item: Any) -> ORSet:
        """Add ``item`` with a fresh dot of ``node`` (replacing its observed dots); returns the delta."""
        check_node(node)
        key = item_key(item)
        dot = self._ctx.next_dot(node)
        old = self._entries.get(key)
        delta = ORSet()
        delta._ctx = CausalContext.of(((dot,) + tuple(old[1])) if old else (dot,))
        delta._entries[key] = (item, frozenset((dot,)))
        delta._owner[dot] = key
        self._ctx.add(*dot)
        self._set(key, item, frozenset((dot,)))
        return delta

    def remove(self, node: str, item: Any) -> ORSet:
        """Remove the adds of ``item`` this replica has observed; returns the delta (their dots)."""
        check_node(node)
        key = item_key(item)
        delta = ORSet()
        old = self._entries.get(key)
        if old is not None:
            delta._ctx = CausalContext.of(old[1])
            self._set(key, item, frozenset())
        return delta

    def merge(self, other: ORSet) -> ORSet:
        """Join with ``other``: adds it has that this replica never saw arrive, removes it saw apply."""
        self._check_same(other)
        ctx, octx = self._ctx, other._ctx
        # Keys whose dots may change: every key of other, and every key holding a dot other has seen.
        # A small context (a delta's) names its dots; a large one is cheaper to test key by key.
        touched = set(other._entries)
        covered = sum(octx.vv.values()) + len(octx.cloud)
        if covered <= len(self._owner):
            owner = self._owner
            for node, top in octx.vv.items():
                touched.update(owner[(node, c)] for c in range(1, top + 1) if (node, c) in owner)
            touched.update(owner[d] for d in octx.cloud if d in owner)
        else:
            touched.update(self._entries)
        for key in touched:
            mine = self._entries.get(key)
            theirs = other._entries.get(key)
            dots = join_dots(mine[1] if mine else (), ctx, theirs[1] if theirs else (), octx)
            if mine is None or dots != mine[1]:
                entry = mine if mine is not None else theirs
                assert entry is not None  # the key came from one side or the other
                self._set(key, entry[0], frozenset(dots))
        ctx.merge(octx)
        return self

    def value(self) -> frozenset:
        """The items with at least one live add."""
        return frozenset(item for item, _ in self._entries.values())

    def __contains__(self, item: Any) -> bool:
        return item_key(item) in self._entries

    def copy(self) -> ORSet:
        """An independent copy."""
        c = ORSet()
        c._entries = dict(self._entries)
        c._ctx = self._ctx.copy()
        c._owner = dict(self._owner)
        return c

    def __eq__(self, other: object) -> bool:
        return (type(other) is ORSet and self._ctx == other._ctx
                and {k: d for k, (_, d) in self._entries.items()} == {k: d for k, (_, d) in other._entries.items()})

    def _payload(self) -> Any:
        index: dict[str, int] = {}
        entries = tuple((self._entries[k][0], tuple((_ix(index, n), c) for n, c in sorted(self._entries[k][1])))
                        for k in sorted(self._entries))
        ctx = self._ctx.payload(index)
        return {"n": tuple(index), "c": ctx, "e": entries}

    @classmethod
    def _from_payload(cls, payload: Any) -> ORSet:
        kind = cls.kind
        p = p_map(kind, payload, frozenset({"n", "c", "e"}))
        nodes = p_nodes(kind, p["n"])
        c = cls()
        c._ctx = CausalContext.from_payload(kind, p["c"], nodes)
        for row in p_seq(kind, p["e"], "entries"):
            raw, dot_rows = p_row(kind, row, 2, "entry")
            key, item = p_item(kind, raw)
            if key in c._entries:
                raise corrupt(kind, "an item appears twice")
            dots = set()
            for d in p_seq(kind, dot_rows, "entry dots"):
                i, n = p_row(kind, d, 2, "dot")
                dot = (nodes[p_int(kind, i, 0, len(nodes) - 1, "node index")], p_int(kind, n, 1, 2**63 - 1, "counter"))
                if not c._ctx.contains(*dot) or dot in c._owner or dot in dots:
                    raise corrupt(kind, "an entry's dot is outside the context or held twice")
                dots.add(dot)
            if not dots:
                raise corrupt(kind, "an entry has no dots")
            c._set(key, item, frozenset(dots))
        return c
