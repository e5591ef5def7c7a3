"""The text CRDT's bytes: its flat payload, written in document order and read back validated.

Theory of operation
-------------------
:class:`~ddia_ray.crdt.text.Text` (our RGA, Roh et al. 2011) travels as one flat array (grammar
in :mod:`.text`), so the codec checks it in one C-level pass. Writing lists the document's runs
in order, maximal runs coalesced, so equal states give equal bytes. Reading checks every value,
then places the leading runs that are in RGA's order (the tree's preorder with siblings in
descending id order, checked as it goes) in one pass without searching, and integrates any rest
in id order, in which every origin precedes its children. Hostile bytes raise
:class:`~ddia_ray.errors.CorruptRecordError` in time linear in their length: ids may not repeat,
an origin's counter is below its run's, deleted ranges come sorted and apart, and a payload whose
placements would skip far (which no replica writes) is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import runs
from .base import COUNTER_MAX, corrupt
from .dots import _ix
from .runs import _Block, _Chunk, _ranges_add

if TYPE_CHECKING:
    from .text import Text

__all__ = ["payload", "from_payload", "place_in_order"]


def payload(doc: Text) -> Any:
    """The flat payload of ``doc`` (see the grammar in :mod:`.text`)."""
    index: dict[str, int] = {}
    flat: list = []
    rows = doc._rows()
    for s, node, text, o, deleted in rows:
        if o is None:
            flat += (_ix(index, node), s, text, -1, 0, deleted)
        else:
            flat += (_ix(index, node), s, text, _ix(index, o[1]), o[0], deleted)
    orphans: list = []
    for node in sorted(doc._orphans):
        ni = _ix(index, node)
        for s, e in zip(*doc._orphans[node]):
            orphans += (ni, s, e)
    return (len(index), *index, len(rows), *flat, len(orphans) // 3, *orphans)


def place_in_order(doc: Text, rows: list) -> int:
    """Place the leading ``rows`` that are already in RGA's order, without searching; returns how many.

    Canonical bytes list the document in order, so decoding need not search for each block's
    place; it only checks that the order is the tree's preorder with siblings in descending id
    order (then it is exactly what integration would build). ``path`` holds the runs from the
    root to the last character placed, each ``[node, start, last counter on the path, id of the
    last child of that character]``. A row whose origin is not on the path, or that would not be
    the smallest sibling so far, ends the prefix: the rest is integrated the general way.
    """
    path: list[list] = []
    root_last: tuple | None = None
    chunks, half = doc._chunks, max(1, runs.CHUNK_MAX // 2)
    ch: _Chunk | None = None
    by_node: dict[str, list[_Block]] = {}
    count = 0
    for s, node, text, origin, deleted in rows:
        rid = (s, node)
        if origin is None:
            if root_last is not None and not rid < root_last:
                break
            path.clear()
            root_last = rid
        else:
            oc, on = origin
            while path and not (path[-1][0] == on and path[-1][1] <= oc <= path[-1][2]):
                path.pop()
            if not path:
                break
            seg = path[-1]
            if oc < seg[2]:  # the run goes on after the origin: its next character is a child of it
                last, seg[2] = (oc + 1, on), oc
            else:
                last = seg[3]
            if last is not None and not rid < last:
                break
            seg[3] = rid
        n = len(text)
        path.append([node, s, s + n - 1, None])
        b = _Block(s, node, text, origin, deleted)
        if ch is None or len(ch) >= half:
            ch = _Chunk()
            chunks.append(ch)
        ch.append(b)
        b.chunk, b.indexed = ch, True
        if not deleted:
            ch.vis += n
            doc._len += n
        if s + n - 1 > doc._clock:
            doc._clock = s + n - 1
        by_node.setdefault(node, []).append(b)
        count += 1
    for node, blocks in by_node.items():
        blocks.sort(key=lambda x: x.start)
        doc._index[node] = ([x.start for x in blocks], blocks)
    return count


def from_payload(cls: type[Text], payload: Any) -> Text:
    """A validated state from a flat payload (see the grammar in :mod:`.text`)."""
    kind = cls.kind
    p = payload
    if type(p) is not tuple or not p or type(p[0]) is not int or not 0 <= p[0] < len(p):
        raise corrupt(kind, "payload must be an array that starts with the node count")
    nn = p[0]
    nodes = p[1:1 + nn]
    for x in nodes:
        if type(x) is not str or not x:
            raise corrupt(kind, "the node table must hold non-empty strs")
    if nn > 1 and len(set(nodes)) != nn:
        raise corrupt(kind, "the node table repeats a node")
    pos = 1 + nn
    nb = p[pos] if pos < len(p) else None
    if type(nb) is not int or not 0 <= nb or pos + 1 + 6 * nb >= len(p):
        raise corrupt(kind, "the block count is missing or beyond the payload")
    rows = []
    top = nn - 1
    for r in range(pos + 1, pos + 1 + 6 * nb, 6):
        ni, s, text, oi, oc, deleted = p[r:r + 6]
        if type(ni) is not int or not 0 <= ni <= top or type(text) is not str or not text \
                or type(s) is not int or not 1 <= s <= COUNTER_MAX - len(text) + 1 or type(deleted) is not bool:
            raise corrupt(kind, f"block {(r - pos - 1) // 6} is malformed")
        if type(oi) is not int or type(oc) is not int or not -1 <= oi <= top:
            raise corrupt(kind, f"block {(r - pos - 1) // 6} has a malformed origin")
        if oi == -1:
            if oc != 0:
                raise corrupt(kind, "a block at the start has origin counter 0")
            origin = None
        elif not 1 <= oc < s:
            raise corrupt(kind, "a block's origin counter must be below its start")
        else:
            origin = (oc, nodes[oi])
        rows.append((s, nodes[ni], text, origin, deleted))
    pos += 1 + 6 * nb
    nd = p[pos]
    if type(nd) is not int or nd < 0 or pos + 1 + 3 * nd != len(p):
        raise corrupt(kind, "the orphan count does not match the payload's length")
    t = cls()
    placed = place_in_order(t, rows) if len(rows) > 1 else 0
    if placed:
        for starts, blocks in t._index.values():
            for x, nxt in zip(blocks, starts[1:]):
                if x.start + len(x.text) > nxt:
                    raise corrupt(kind, "two blocks share an id")
    rows = rows[placed:]
    if len(rows) > 1:
        rows.sort(key=lambda r: (r[0], r[1]))
    # In id order a block is placed right after its origin but for ties of counters, so skips
    # are rare; a payload crafted to make every placement walk far is refused instead.
    skips_max = 16 * len(rows) + 1024
    for s, node, text, origin, deleted in rows:
        if t._index:
            e = s + len(text) - 1
            if t._find(node, s) is not None or (t._next_known(node, s) or e + 1) <= e:
                raise corrupt(kind, "two blocks share an id")
        t._integrate(_Block(s, node, text, origin, deleted))
        if t._skips > skips_max:
            raise corrupt(kind, "its blocks are not in an order any replica could have written")
    last_end: dict[int, int] = {}
    for r in range(pos + 1, len(p), 3):
        ni, s, e = p[r:r + 3]
        if type(ni) is not int or not 0 <= ni <= top or type(s) is not int or type(e) is not int \
                or not last_end.get(ni, -1) + 1 < s <= e <= COUNTER_MAX:
            # ascending and apart per node, as written: each id is then visited once (no
            # overlapping ranges that would each walk the same blocks again)
            raise corrupt(kind, f"orphan range {(r - pos - 1) // 3} is malformed or out of order")
        last_end[ni] = e
        if t._index:
            t._delete_range(nodes[ni], s, e)
        else:  # a deletion delta: nothing here to flag
            _ranges_add(t._orphans, nodes[ni], s, e)
    return t
