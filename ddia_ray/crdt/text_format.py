"""The text CRDT's bytes: its flat payload, written in document order and read back validated.

Theory of operation
-------------------
:class:`~ddia_ray.crdt.text.Text` (our RGA, Roh et al. 2011) travels as one flat array (grammar
in :mod:`.text`), so the codec checks it in one C-level pass. Writing lists the document's runs
in order, maximal runs coalesced, so equal states give equal bytes. Reading checks every value,
then places the leading runs that are in RGA's order (the tree's preorder with siblings in
descending id order, checked as it goes) in one pass without searching, and integrates any rest
in id order, in which every origin precedes its children. Reading checks the blocks a column at a
time (each column's types listed and counted by C-level builtins, then its bounds on int64
arrays, :mod:`.text_place`) and reads a failing payload again a row at a time for an error naming
the block. The two shapes a single edit's delta has, one block or one deleted range, are read by
a shortcut that checks the same things for that shape and leaves anything else to the general
path; such a delta's record frame is compared with the codec's own bytes for it, so only its
payload is unpacked (:func:`edit_payload`). Hostile bytes raise
:class:`~ddia_ray.errors.CorruptRecordError` in time linear in their length: ids may not repeat,
an origin's counter is below its run's, deleted ranges come sorted and apart, and a payload whose
placements would skip far (which no replica writes) is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from . import text_place
from .. import codec
from .base import COUNTER_MAX, CRDTState, corrupt
from .dots import _ix
from .runs import _Block, _Chunk, _ranges_add

if TYPE_CHECKING:
    from .text import Text

__all__ = ["payload", "from_payload", "rows", "edit_block", "edit_range", "edit_payload"]


def _record_head() -> bytes | None:
    """The bytes that start every small encoded text state after its 3-byte ext header: the
    ``CRDTState`` record's frame up to its payload, as the codec writes it (taken from the codec
    itself, so the two cannot drift); None if the codec writes that record some other way."""
    empty = codec.encode(CRDTState("text", 1, ()))
    if len(empty) < 5 or empty[0] != 0xC7 or empty[1] != len(empty) - 3 or empty[-1] != 0x90:
        return None  # (0xc7: ext 8, its length, then the format; 0x90: the empty payload array)
    return empty[2:-1]


_HEAD = _record_head()


def edit_payload(data: bytes) -> Any:
    """The payload of ``data`` if it is a text state of format 1 encoded whole in a small record
    (under 256 bytes: one edit's delta) exactly as :func:`~ddia_ray.codec.encode` writes it; None
    for anything else (the general path reads it).

    The record's frame is compared with the codec's own bytes for it (:data:`_HEAD`), so only the
    payload is unpacked: no frame maps, no field walk. What this returns is what
    :func:`~ddia_ray.codec.record_fields` would give as the payload, values **unchecked**: a
    caller reads it only through :func:`edit_block` or :func:`edit_range`, which refuse every other
    shape. A typing trace ships one such delta per edit, so this is the receiver's fixed cost."""
    head = _HEAD
    if head is None or type(data) is not bytes or len(data) < 4 or data[0] != 0xC7 or data[1] != len(data) - 3 \
            or not data.startswith(head, 2):
        return None
    try:  # lengths are bounded by the input's size (msgpack's default for unpackb)
        return msgpack.unpackb(data[2 + len(head):], raw=False, use_list=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - not one whole value: decode() reads it and says what is wrong
        return None


def _coalesce(blocks) -> list:
    """Rows of ``blocks``, each maximal run of them (same node, next counter, origin the previous
    character, same flag) as one row."""
    rows: list = []
    last = None
    for b in blocks:
        if (last is not None and last[1] == b.node and last[5] == b.start and last[4] == b.deleted
                and b.origin == (b.start - 1, b.node)):
            last[2].append(b.text)
            last[5] += len(b.text)
        else:
            last = [b.start, b.node, [b.text], b.origin, b.deleted, b.start + len(b.text)]
            rows.append(last)
    return [(r[0], r[1], "".join(r[2]), r[3], r[4]) for r in rows]


def rows(doc: Text) -> list:
    """Canonical rows ``(start, node, text, origin, deleted)`` of ``doc``: the document's in order,
    then the waiting ones by node and counter, maximal runs coalesced."""
    doc._built()
    waiting = sorted((w for _, ws in doc._pending.values() for w in ws), key=lambda x: (x.node, x.start))
    return _coalesce(b for ch in doc._chunks for b in ch) + _coalesce(waiting)


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


#: The element types of the two payload shapes of one edit's delta (see :func:`edit_block`,
#: :func:`edit_range`), compared at once: a tuple of types against a constant, in C.
_BLOCK_SAME_NODE = (int, str, int, int, int, str, int, int, bool, int)  # origin in the block's node, or none
_BLOCK_TWO_NODES = (int, str, str, int, int, int, str, int, int, bool, int)  # origin in another node
_RANGE = (int, str, int, int, int, int, int)


def edit_block(p: tuple) -> tuple | None:
    """The block ``(start, node, text, origin, deleted)`` of a one-block payload with no orphan
    (what an insert's delta is), checked; None if ``p`` has another shape or a value the general
    path must judge (it then refuses it).

    Same checks as :func:`from_payload`, written for the one shape: a typing trace ships one of
    these per edit, so their fixed cost is the receiver's rate.
    """
    types = tuple(map(type, p))
    if types == _BLOCK_SAME_NODE:
        nn, node, nb, ni, s, text, oi, oc, deleted, nd = p
        onode = node
        if oi != 0 and oi != -1:
            return None
    elif types == _BLOCK_TWO_NODES:
        nn, node, onode, nb, ni, s, text, oi, oc, deleted, nd = p
        # as written: the block's node first, its origin's second
        if not onode or onode == node or oi != 1:
            return None
        oi = 0
    else:
        return None
    if (nn != len(p) - 9 or nb != 1 or nd != 0 or ni != 0 or not node or not text
            or not 1 <= s <= COUNTER_MAX - len(text) + 1):
        return None
    if oi == -1:
        return (s, node, text, None, deleted) if oc == 0 else None
    return (s, node, text, (oc, onode), deleted) if 1 <= oc < s else None


def edit_range(p: tuple) -> tuple | None:
    """The deleted range ``(node, first, last)`` of a payload holding one orphan range and nothing
    else (what a delete's delta most often is), checked; None if ``p`` has another shape or a
    value to judge."""
    if tuple(map(type, p)) != _RANGE:
        return None
    nn, node, nb, nd, ni, s, e = p
    if nn != 1 or nb != 0 or nd != 1 or ni != 0 or not node or not 1 <= s <= e <= COUNTER_MAX:
        return None
    return node, s, e


def _one_block(cls: type[Text], p: tuple) -> Text | None:
    """The state of a one-block payload (:func:`edit_block`), built directly; None: another shape."""
    block = edit_block(p)
    if block is None:
        return None
    s, node, text, origin, deleted = block
    n = len(text)
    e = s + n - 1
    t = cls()
    t._clock = e
    if origin is None:
        b = _Block(s, node, text, None, deleted)
        ch = _Chunk()
        ch.append(b)
        b.chunk = ch
        if not deleted:
            ch.vis = t._len = n
        t._chunks.append(ch)
    else:
        b = _Block(s, node, text, origin, False)
        t._pending[origin[1]] = ([origin[0]], [b])
        if deleted:  # a waiting block is never flagged: its deleted ids wait as orphans
            t._orphans[node] = ([s], [e])
    b.indexed = True
    t._index[node] = ([s], [b])
    return t


def _deletion(cls: type[Text], p: tuple) -> Text | None:
    """The state of a one-range payload (:func:`edit_range`), built directly; None: another shape."""
    r = edit_range(p)
    if r is None:
        return None
    t = cls()
    t._orphans[r[0]] = ([r[1]], [r[2]])
    return t


def _columns(p: tuple, a: int, nb: int, top: int) -> text_place.Columns | None:
    """The ``nb`` blocks of payload ``p`` from position ``a`` as columns (:class:`.text_place.Columns`),
    if every column's types and bounds are right, checked a column at a time in C (a whole document
    is thousands of blocks); None: read the rows one at a time (:func:`_rows`) for the error naming
    the block. Left to the caller: an origin counter is 0 exactly when the origin node index is -1."""
    b = a + 6 * nb
    nis, starts, texts, ois, ocs, dels = p[a:b:6], p[a + 1:b:6], p[a + 2:b:6], p[a + 3:b:6], p[a + 4:b:6], p[a + 5:b:6]
    # The types first, exactly (an array would take a bool for 1 and a float for an int): each column's
    # types listed and counted in C, the bounds then checked on arrays.
    if not (nb and list(map(type, nis)).count(int) == list(map(type, starts)).count(int) == nb
            and list(map(type, ois)).count(int) == list(map(type, ocs)).count(int) == nb
            and list(map(type, texts)).count(str) == list(map(type, dels)).count(bool) == nb):
        return None
    return text_place.columns(nis, starts, texts, ois, ocs, dels, top)


def _rows(kind: str, p: tuple, a: int, b: int, nodes: tuple) -> list:
    """The blocks of payload ``p`` from position ``a`` to ``b`` as rows ``(start, node, text, origin,
    deleted)``, checked one at a time."""
    top = len(nodes) - 1
    rows = []
    for r in range(a, b, 6):
        ni, s, text, oi, oc, deleted = p[r:r + 6]
        if type(ni) is not int or not 0 <= ni <= top or type(text) is not str or not text \
                or type(s) is not int or not 1 <= s <= COUNTER_MAX - len(text) + 1 or type(deleted) is not bool:
            raise corrupt(kind, f"block {(r - a) // 6} is malformed")
        if type(oi) is not int or type(oc) is not int or not -1 <= oi <= top:
            raise corrupt(kind, f"block {(r - a) // 6} has a malformed origin")
        if oi == -1:
            if oc != 0:
                raise corrupt(kind, "a block at the start has origin counter 0")
            origin = None
        elif not 1 <= oc < s:
            raise corrupt(kind, "a block's origin counter must be below its start")
        else:
            origin = (oc, nodes[oi])
        rows.append((s, nodes[ni], text, origin, deleted))
    return rows


def from_payload(cls: type[Text], payload: Any) -> Text:
    """A validated state from a flat payload (see the grammar in :mod:`.text`)."""
    kind = cls.kind
    p = payload
    if type(p) is tuple:  # the deltas of single edits, the common case, skip the general walk
        if len(p) == 10 or len(p) == 11:
            t = _one_block(cls, p)
            if t is not None:
                return t
        elif len(p) == 7:
            t = _deletion(cls, p)
            if t is not None:
                return t
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
    top = nn - 1
    a, b = pos + 1, pos + 1 + 6 * nb
    pos = b
    nd = p[pos]
    if type(nd) is not int or nd < 0 or pos + 1 + 3 * nd != len(p):
        raise corrupt(kind, "the orphan count does not match the payload's length")
    t = cls()
    cols = _columns(p, a, nb, top) if nb > 1 else None
    if cols is not None:
        found = text_place.plan(kind, nodes, cols)
        if found.placed == nb and nd == 0:  # a whole document in order: its blocks are built when read
            text_place.defer(t, nodes, cols, found)
            return t
        text_place.build(t, nodes, cols, found)
        t._len, t._clock = found.length, found.clock
        placed = found.placed
        rows = _rows(kind, p, a + 6 * placed, b, nodes)
    else:
        rows = _rows(kind, p, a, b, nodes)
        placed = text_place.place_in_order(t, rows) if len(rows) > 1 else 0
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
