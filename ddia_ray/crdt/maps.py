"""The OR-Map: a map from keys to nested CRDTs, with observed-remove keys (Riak-maps style).

Theory of operation
-------------------
Each key holds a nested CRDT of some kind. The map itself is a dot store over a causal context
(Almeida et al. 2018, 7.4's ORMap; Riak DT's map): every ``update`` of a key takes a fresh dot of
the map and stores, against that dot, the key's nested state *after* the update (the join of every
nested state this replica held for the key, with the operation applied). It replaces the dots it
observed, so a key written by one replica at a time has one dot. ``remove`` drops the dots it
observed. The join keeps the dots that no side has removed (:func:`.dots.join_dots`), and the
key's value is the join of the nested states under its surviving dots.

What a concurrent update and remove give (DDIA 5.4, "Automatic Conflict Resolution"): the update
wins, and the key survives holding the updater's whole view of it, that is the nested state the
updating replica had seen plus its operation; what the remover had seen is not subtracted (it
is not subtracted because nested counters, G-Sets or registers have no dots to remove by). An
update that causally follows a remove starts from an empty nested CRDT.

Nested ids. A nested CRDT names its replicas too (an OR-Set's dots, a counter's entries, text's
character ids), and they must never repeat. After a remove this replica starts the key afresh
while an old nested state may still be alive at a replica that updated concurrently, so nested
operations run under ``"<node>@<counter>"``, the map dot that began the node's current run of
updates on that key; a node keeps that id while its latest update of the key is alive here.

Keys of different kinds: concurrent first updates of one key with two kinds are kept as two
fields (Riak's name-and-type fields); ``value()`` shows the kind whose name sorts first, and
:meth:`ORMap.get` reads either. An update with a kind the key does not hold (while it holds
another) raises CRDTTypeError. Maps nest at most :data:`MAP_DEPTH_MAX` deep, so every state fits
the codec's record nesting bound.

Each update's delta carries the key's whole nested state: cheap for counters, registers and
small sets; keep a large text as a top-level CRDT.

Payload grammar (format 1)::

    ormap := map{"n": array(node: str*), "c": context,
                 "f": array((key, kind: str, array((node-index, counter, nested-id: str, crdt.state)+))*)}
"""

from __future__ import annotations

from typing import Any

from .base import (
    COUNTER_MAX,
    CRDT,
    KINDS,
    CRDTState,
    _kind_class,
    apply,
    check_node,
    corrupt,
    from_state,
    item_key,
    p_int,
    p_item,
    p_map,
    p_node,
    p_nodes,
    p_row,
    p_seq,
    to_state,
)
from .dots import CausalContext, _ix, join_dots
from ..errors import CRDTTypeError, InvalidArgumentError

__all__ = ["ORMap", "MAP_DEPTH_MAX"]

#: How deep maps may nest in maps (a map of counters is depth 1).
MAP_DEPTH_MAX = 8

Contribs = dict  # dot -> (nested id, nested CRDT); nested CRDTs stored here are never mutated


def _joined(kind: str, contribs: Contribs) -> CRDT:
    """A new nested state: the join of every surviving contribution (a fresh CRDT if none)."""
    states = iter(contribs.values())
    first = next(states, None)
    if first is None:
        return _kind_class(kind)()
    out = first[1].copy()
    for _, c in states:
        out.merge(c)
    return out


class ORMap(CRDT):
    """A map of key -> nested CRDT with add-wins keys; value() is ``{key: nested value()}``."""

    kind = "ormap"
    mutators = frozenset({"update", "remove"})
    __slots__ = ("_fields", "_ctx", "_owner")

    def __init__(self) -> None:
        # key bytes -> (key, kind -> contributions)
        self._fields: dict[bytes, tuple[Any, dict[str, Contribs]]] = {}
        self._ctx = CausalContext()
        self._owner: dict[tuple, bytes] = {}  # live dot -> key bytes: a delta's merge visits only what it names

    def update(self, node: str, key: Any, kind: str, op: str, *args: Any) -> ORMap:
        """Apply mutator ``op(*args)`` to the nested CRDT of ``kind`` at ``key`` (created if absent).

        Returns the delta: the key's new nested state under a fresh dot, and the dots it replaced.
        An unknown ``kind``, an ``op`` it lacks, or a key holding another kind raise CRDTTypeError;
        bad arguments raise InvalidArgumentError, and then the map is unchanged.
        """
        check_node(node)
        kb = item_key(key, "map key")
        cls = _kind_class(kind)
        if op not in cls.mutators:
            raise CRDTTypeError(f"a {kind!r} has no operation {op!r:.40}; its operations are {sorted(cls.mutators)}",
                                expected=kind, got=str(op)[:40])
        depth, k, o, a = 1, kind, op, args
        while k == "ormap" and o == "update" and len(a) >= 3:
            depth, k, o, a = depth + 1, a[1], a[2], a[3:]
        if depth > MAP_DEPTH_MAX:
            raise InvalidArgumentError(f"maps nest at most MAP_DEPTH_MAX={MAP_DEPTH_MAX} deep, this update {depth}")
        field = self._fields.get(kb)
        kinds = field[1] if field else {}
        if kinds and kind not in kinds:
            raise CRDTTypeError(f"key {key!r:.80} holds a {sorted(kinds)[0]!r}, not a {kind!r}",
                                expected=sorted(kinds)[0], got=kind)
        contribs = kinds.get(kind, {})
        dot = self._ctx.next_dot(node)
        own = [d for d in contribs if d[0] == node]
        nid = contribs[max(own)][0] if own else f"{node}@{dot[1]}"
        nested, _ = apply(_joined(kind, contribs), kind, nid, op, args)  # raises before anything changed
        delta = ORMap()
        delta._ctx = CausalContext.of((dot,) + tuple(contribs))
        delta._fields[kb] = (key, {kind: {dot: (nid, nested)}})
        delta._owner[dot] = kb
        self._ctx.add(*dot)
        self._fields[kb] = (key, {**kinds, kind: {dot: (nid, nested)}})
        for d in contribs:
            del self._owner[d]
        self._owner[dot] = kb
        return delta

    def remove(self, node: str, key: Any) -> ORMap:
        """Remove ``key`` as this replica has seen it (every kind); returns the delta (the removed dots).

        Observed-remove, Riak-maps style: an update concurrent with the remove wins, and the key then
        holds the updater's whole view of its nested CRDT (what the updater had seen, plus its update),
        not only the concurrent update; an update that follows the remove starts from an empty nested
        CRDT. Removing an absent key is a no-op.
        """
        check_node(node)
        field = self._fields.pop(item_key(key, "map key"), None)
        delta = ORMap()
        if field is not None:
            for contribs in field[1].values():
                for d in contribs:
                    del self._owner[d]
            delta._ctx = CausalContext.of(d for contribs in field[1].values() for d in contribs)
        return delta

    def merge(self, other: ORMap) -> ORMap:
        """Join with ``other``: per key and kind, the contributions neither side removed; returns self."""
        self._check_same(other)
        ctx, octx = self._ctx, other._ctx
        fields, ofields, owner = self._fields, other._fields, self._owner
        # Keys that may change: every key of other, and every key holding a dot other has seen. A
        # small context (a delta's) names its dots; a large one is cheaper to test key by key.
        touched = set(ofields)
        if sum(octx.vv.values()) + len(octx.cloud) <= len(owner):
            for node, top in octx.vv.items():
                touched.update(owner[(node, c)] for c in range(1, top + 1) if (node, c) in owner)
            touched.update(owner[d] for d in octx.cloud if d in owner)
        else:
            touched.update(fields)
        for kb in touched:
            mine, theirs = fields.get(kb), ofields.get(kb)
            mk, tk = (mine[1] if mine else {}), (theirs[1] if theirs else {})
            kinds = {}
            for kind in mk.keys() | tk.keys():
                m, t = mk.get(kind, {}), tk.get(kind, {})
                keep = join_dots(m, ctx, t, octx)
                if keep:
                    kinds[kind] = {d: m[d] if d in m else t[d] for d in keep}
            for contribs in mk.values():
                for d in contribs:
                    del owner[d]
            if kinds:
                entry = mine if mine is not None else theirs
                assert entry is not None  # the key came from one side or the other
                fields[kb] = (entry[0], kinds)
                for contribs in kinds.values():
                    for d in contribs:
                        owner[d] = kb
            elif mine is not None:
                del fields[kb]
        ctx.merge(octx)
        return self

    def get(self, key: Any, kind: str | None = None) -> CRDT | None:
        """A copy of the nested CRDT at ``key`` (of ``kind``, or of the kind that sorts first); None if absent."""
        field = self._fields.get(item_key(key, "map key"))
        if field is None:
            return None
        if kind is None:
            kind = min(field[1])
        contribs = field[1].get(kind)
        return None if contribs is None else _joined(kind, contribs)

    def kinds(self, key: Any) -> tuple[str, ...]:
        """The kinds ``key`` holds (usually one; two after concurrent first updates with two kinds)."""
        field = self._fields.get(item_key(key, "map key"))
        return () if field is None else tuple(sorted(field[1]))

    def value(self) -> dict:
        """``{key: value() of its nested CRDT}`` (the kind that sorts first where a key holds two)."""
        out = {}
        for key, kinds in self._fields.values():
            kind = min(kinds)
            out[key] = _joined(kind, kinds[kind]).value()
        return out

    def copy(self) -> ORMap:
        """An independent copy (nested states are shared: they are never changed in place)."""
        c = ORMap()
        c._fields = {kb: (key, {k: dict(v) for k, v in kinds.items()}) for kb, (key, kinds) in self._fields.items()}
        c._ctx = self._ctx.copy()
        c._owner = dict(self._owner)
        return c

    def __eq__(self, other: object) -> bool:
        return (type(other) is ORMap and self._ctx == other._ctx
                and {kb: kinds for kb, (_, kinds) in self._fields.items()}
                == {kb: kinds for kb, (_, kinds) in other._fields.items()})

    def _payload(self) -> Any:
        index: dict[str, int] = {}
        rows = []
        for kb in sorted(self._fields):
            key, kinds = self._fields[kb]
            for kind in sorted(kinds):
                contribs = kinds[kind]
                rows.append((key, kind, tuple((_ix(index, d[0]), d[1], contribs[d][0], to_state(contribs[d][1]))
                                              for d in sorted(contribs))))
        ctx = self._ctx.payload(index)
        return {"n": tuple(index), "c": ctx, "f": tuple(rows)}

    @classmethod
    def _from_payload(cls, payload: Any) -> ORMap:
        kind_ = cls.kind
        p = p_map(kind_, payload, frozenset({"n", "c", "f"}))
        nodes = p_nodes(kind_, p["n"])
        m = cls()
        m._ctx = ctx = CausalContext.from_payload(kind_, p["c"], nodes)
        seen: set = set()
        for row in p_seq(kind_, p["f"], "fields"):
            raw, kind, contrib_rows = p_row(kind_, row, 3, "field")
            kb, key = p_item(kind_, raw, "map key")
            if type(kind) is not str or kind not in KINDS:
                raise corrupt(kind_, f"field kind {kind!r:.40} is unknown")
            field = m._fields.setdefault(kb, (key, {}))
            if kind in field[1]:
                raise corrupt(kind_, "a field appears twice")
            contribs: Contribs = {}
            for c in p_seq(kind_, contrib_rows, "contributions"):
                i, n, nid, state = p_row(kind_, c, 4, "contribution")
                dot = (nodes[p_int(kind_, i, 0, len(nodes) - 1, "node index")],
                       p_int(kind_, n, 1, COUNTER_MAX, "counter"))
                if dot in seen or not ctx.contains(*dot):
                    raise corrupt(kind_, "a contribution's dot is outside the context or held twice")
                seen.add(dot)
                m._owner[dot] = kb
                if not isinstance(state, CRDTState) or state.kind != kind:
                    raise corrupt(kind_, f"a {kind!r} field holds something else")
                contribs[dot] = (p_node(kind_, nid, "nested id"), from_state(state, kind))
            if not contribs:
                raise corrupt(kind_, "a field has no contributions")
            field[1][kind] = contribs
        return m

