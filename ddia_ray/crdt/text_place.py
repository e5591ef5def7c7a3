"""Placing a text that arrives in document order: RGA's order checked by arcs, the blocks built in bulk.

Theory of operation
-------------------
Canonical bytes (:mod:`.text_format`) list a document's runs in order, so a replica that decodes
them need not integrate each run (:class:`~ddia_ray.crdt.text.Text`): it may adopt the order once
it has checked it is the one RGA defines, the preorder of the origin tree with siblings in
descending id order. A correct replica wrote it; a corrupt or hostile one must not make this
replica diverge, so the order is checked, not trusted, and only the leading blocks that pass are
placed this way (the rest are integrated one by one, as before).

The check sees each character's link to its origin as an *arc* from the origin's position to its
own. A sequence is a preorder of its origin tree exactly when every origin comes first and no two
arcs cross (``l1 < l2 < r1 < r2``); with siblings in descending id order it is RGA's order. The
arc of a character whose origin is the character just before it (every character of a run but
the first, and the first of most runs: a run cut by a deletion, or typing on) spans no position,
so it can cross nothing and its character has no earlier sibling: such runs (*linked*, three in
four of a typing trace's) are recognised by C-level passes over the columns and never visited.
Only the other runs' arcs go through the classic stack check for crossing intervals, in one
linear pass; the arcs it pops that share the new arc's origin are the new run's earlier
siblings, so the sibling order is checked there too. The first run that fails (an origin not
there or not before it, a crossing, a sibling out of order) ends the prefix; as every check of a
run looks only at the runs before it, the prefix is the longest one in RGA's order. Ids are
checked distinct over all the columns first, as sorted intervals.

Building the blocks (their objects, chunks of ``CHUNK_MAX // 2`` blocks, the id index) takes the
columns whole, with no Python step per block but the ``_Block`` constructor, yet that constructor
is most of a whole document's decoding. So a document that is in order throughout, with no
deleted range waiting, is *deferred* (:func:`defer`): the state keeps the checked columns and
builds its blocks the first time anything changes or reads them (:func:`materialize`, called by
:func:`.runs.unshare` and ``Text._built``), as a state merged into an empty one shares its structures until the first
change (:func:`.runs.share`). A replica that only reads the text never builds them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from itertools import accumulate, compress, repeat
from operator import add, and_, eq, gt, lshift, mul, not_, or_, sub
from typing import TYPE_CHECKING, cast

from . import runs
from .._validate import invariant
from .base import corrupt
from .dots import _ix
from .runs import _Block, _Chunk

if TYPE_CHECKING:
    from .text import Text

__all__ = ["Plan", "plan", "build", "place_in_order", "defer", "materialize", "deferred_value", "adopt"]


class Plan:
    """What :func:`plan` found in the columns: how many leading blocks are in RGA's order, and what
    placing them sets (visible characters, greatest counter) or reuses (the derived columns)."""

    __slots__ = ("placed", "length", "clock", "lens", "stops", "roots")

    def __init__(self, placed: int, length: int, clock: int, lens, stops, roots: list) -> None:
        self.placed = placed
        self.length = length  # visible characters of the placed blocks
        self.clock = clock  # their greatest counter
        self.lens = lens  # characters per block
        self.stops = stops  # one past each block's last counter
        self.roots = roots  # the blocks at the start (no origin), ascending


def place_in_order(doc: Text, rows: list) -> int:
    """Place the leading ``rows`` ``(start, node, text, origin, deleted)`` (checked values) that are in
    RGA's order into the empty ``doc``, without searching; returns how many.

    Raises CorruptRecordError if two rows share an id (see :func:`plan`)."""
    index: dict[str, int] = {}
    nis = [_ix(index, r[1]) for r in rows]
    ois = [-1 if r[3] is None else _ix(index, r[3][1]) for r in rows]
    starts, texts = [r[0] for r in rows], [r[2] for r in rows]
    lens = list(map(len, texts))
    columns = (nis, starts, texts, ois, [0 if r[3] is None else r[3][0] for r in rows], [r[4] for r in rows],
               lens, list(map(add, starts, lens)))
    nodes = tuple(index)
    found = plan(doc.kind, nodes, *columns)
    build(doc, nodes, nis, starts, texts, ois, columns[4], columns[5], found)
    doc._len += found.length
    doc._clock = max(doc._clock, found.clock)
    return found.placed


def plan(kind: str, nodes: tuple, nis, starts, texts, ois, ocs, dels, lens, stops) -> Plan:
    """Check the columns (node index, start, text, origin node index, origin counter, deleted, and
    each text's length and start + length; every value of the right type and bounds, as
    :func:`.text_format._columns` checks them) and find their prefix in RGA's order.

    Raises CorruptRecordError if two blocks share an id, or an origin counter is 0 but for a block
    at the start, or the reverse (whether or not the block is in the prefix).
    """
    n = len(starts)
    roots = []  # found by C-level scans: a document has few
    j = -1
    try:
        while True:
            j = ois.index(-1, j + 1)
            roots.append(j)
    except ValueError:
        pass
    if ocs.count(0) != len(roots) or any(ocs[j] for j in roots):  # exactly the roots have counter 0
        j = next(j for j in range(n) if (ois[j] == -1) != (ocs[j] == 0))
        raise corrupt(kind, "a block at the start has origin counter 0" if ois[j] < 0 else
                      "a block's origin counter must be below its start")
    if len(nodes) == 1:
        start_keys, stop_keys = starts, stops
    else:  # one line for all nodes: a node's ids above every id of the nodes before it
        start_keys = list(map(or_, map(lshift, nis, repeat(64)), starts))
        stop_keys = list(map(or_, map(lshift, nis, repeat(64)), stops))
    # Ids are the intervals [start, stop) of each node: none overlap exactly when, both sorted,
    # every interval but the last stops at or before the next one starts.
    if any(map(gt, sorted(stop_keys)[:-1], sorted(start_keys)[1:])):
        raise corrupt(kind, "two blocks share an id")
    cum = list(accumulate(lens, initial=0))  # each block's first character's position
    placed = _in_order(nodes, nis, starts, ois, ocs, cum, stops, start_keys, stop_keys)
    if placed < n:
        deleted, clock = sum(compress(lens[:placed], dels[:placed])), max(stops[:placed], default=1) - 1
    else:
        deleted, clock = sum(compress(lens, dels)), max(stops) - 1
    return Plan(placed, cum[placed] - deleted, clock, lens, stops, roots)


def _in_order(nodes, nis, starts, ois, ocs, cum, stops, start_keys, stop_keys) -> int:
    """How many leading blocks are in RGA's order (see the module doc); the ids are distinct."""
    n = len(starts)
    if ois[0] != -1:
        return 0  # the first block's origin would come after it
    one = len(nodes) == 1
    # Linked: the origin is the last character of the block before (its counter stop - 1, its node).
    if one:
        odd = list(compress(range(1, n), map((-1).__ne__, map(sub, ocs[1:], stops))))
    else:
        linked = map(and_, map(eq, map(sub, ocs[1:], stops), repeat(-1)), map(eq, ois[1:], nis))
        odd = list(compress(range(1, n), map(not_, linked)))
    ids = starts if one else list(zip(starts, [nodes[i] for i in nis]))  # compared as RGA orders siblings
    # Each odd block's origin as the run it ends (-1: none does; a block at the start, or an origin
    # inside a run or not here) and the origin's position.
    o_ocs = list(map(ocs.__getitem__, odd))
    keys = map(add, o_ocs, repeat(1)) if one else \
        map(or_, map(lshift, map(ois.__getitem__, odd), repeat(64)), map(add, o_ocs, repeat(1)))
    ends = list(map(dict(zip(stop_keys, range(n))).get, keys, repeat(-1)))
    after = list(map(add, ends, repeat(1)))
    arcs = map(sub, map(cum.__getitem__, after), repeat(1))  # -1 for a block at the start
    by_start: tuple | None = None  # (sorted start keys, their blocks), for an origin inside a run
    # The arcs not nested in a later one yet, left to right and disjoint: their origin position,
    # their end, their block's id; at the bottom a sentinel no arc pops or crosses, then block 0's.
    open_l, open_r, open_id = [-2, -1], [-1, 0], [None, ids[0]]
    pop_l, pop_r, pop_id = open_l.pop, open_r.pop, open_id.pop
    push_l, push_r, push_id = open_l.append, open_r.append, open_id.append
    for j, k, arc_l, r, idj in zip(odd, ends, arcs, map(cum.__getitem__, odd), map(ids.__getitem__, odd)):
        if k >= j:
            return j  # the origin comes after this block
        # the origin's first child: the block after the run it ends (for a block at the start, the
        # first block; a sibling popped below takes its place)
        first = ids[k + 1]
        if k < 0 and ois[j] >= 0:  # the origin is inside a run (or not here): its next character is its first child
            oi, oc = ois[j], ocs[j]
            if by_start is None:
                order = sorted(range(n), key=start_keys.__getitem__)
                by_start = (list(map(start_keys.__getitem__, order)), order)
            p = bisect_right(by_start[0], oc if one else (oi << 64 | oc)) - 1
            k = by_start[1][p] if p >= 0 else n
            if k >= j or nis[k] != oi or oc >= stops[k]:
                return j  # the origin is not here, or comes after this block
            arc_l = cum[k] + oc - starts[k]
            first = oc + 1 if one else (oc + 1, nodes[oi])
        if open_l[-1] >= arc_l:  # pop the arcs nested in this one; the latest with its origin is its previous sibling
            sib = None
            while open_l[-1] >= arc_l:
                if sib is None and open_l[-1] == arc_l:
                    sib = open_id[-1]
                pop_l()
                pop_r()
                pop_id()
            if sib is not None:
                first = sib
        if open_r[-1] > arc_l:
            return j  # the arc left of this one ends after its origin: they cross
        if not idj < first:
            return j  # siblings not in descending id order
        push_l(arc_l)
        push_r(r)
        push_id(idj)
    return n


def build(doc: Text, nodes: tuple, nis, starts, texts, ois, ocs, dels, found: Plan) -> None:
    """Put the blocks ``found`` in order into the empty ``doc``, as they come: its document and its
    id index (the caller counts ``found.length`` and ``found.clock``)."""
    count = found.placed
    if not count:
        return
    lens = found.lens
    if count < len(starts):
        nis, starts, texts, ois, ocs, dels, lens = (x[:count] for x in (nis, starts, texts, ois, ocs, dels, lens))
    one = len(nodes) == 1
    names = [nodes[0]] * count if one else [nodes[i] for i in nis]
    origins: list = list(zip(ocs, [nodes[0]] * count if one else [nodes[i] for i in ois]))
    for j in found.roots:
        if j >= count:
            break
        origins[j] = None
    blocks = list(map(_Block, starts, names, texts, origins, dels))
    deque(map(setattr, blocks, repeat("indexed"), repeat(True)), maxlen=0)
    half = max(1, runs.CHUNK_MAX // 2)  # as the per-block walk of earlier versions cut them
    vis = list(map(mul, lens, map(not_, dels)))
    chunks = []
    for i in range(0, count, half):
        ch = _Chunk()  # filled here, its visible length summed from the column, not block by block
        ch += blocks[i:i + half]
        ch.vis = sum(vis[i:i + half])
        chunks.append(ch)
        deque(map(setattr, ch, repeat("chunk"), repeat(ch)), maxlen=0)
    doc._chunks += chunks
    # The id index: each node's blocks by start.
    order = sorted(range(count), key=starts.__getitem__)
    if one:
        doc._index[nodes[0]] = (list(map(starts.__getitem__, order)), list(map(blocks.__getitem__, order)))
        return
    order.sort(key=nis.__getitem__)  # stable: by node, then by start
    by_node = list(map(nis.__getitem__, order))
    for ni in set(nis):
        mine = order[bisect_left(by_node, ni):bisect_right(by_node, ni)]
        doc._index[nodes[ni]] = (list(map(starts.__getitem__, mine)), list(map(blocks.__getitem__, mine)))


def defer(doc: Text, nodes: tuple, columns: tuple, found: Plan) -> None:
    """Make the empty ``doc`` the document of ``columns`` (node index, start, text, origin node index,
    origin counter, deleted), all of it in order as ``found``, with its blocks not built yet.

    REQUIRES: ``found.placed`` is every block, and nothing else is to join ``doc`` (its readers call
    ``Text._built`` first, its mutators :func:`.runs.unshare`: both build the blocks)."""
    doc._len, doc._clock = found.length, found.clock
    del doc._chunks, doc._index  # unset: a read that did not build them first fails loudly
    doc._deferred = (nodes, columns, found)
    doc._shared = True  # so that every mutator builds them first (runs.unshare)


def materialize(doc: Text) -> None:
    """Build the blocks of a deferred ``doc`` (see :func:`defer`)."""
    deferred = doc._deferred
    invariant(deferred is not None, "materialize needs a deferred text")
    nodes, (nis, starts, texts, ois, ocs, dels), found = cast(tuple, deferred)
    doc._deferred = None
    doc._chunks, doc._index = [], {}
    doc._shared = False  # its own blocks: the columns are never changed
    build(doc, nodes, nis, starts, texts, ois, ocs, dels, found)  # length and clock: set by defer (and since)


def deferred_value(doc: Text) -> str:
    """The visible text of a deferred ``doc``, read from its columns (its blocks stay unbuilt)."""
    columns = cast(tuple, doc._deferred)[1]
    return "".join(compress(columns[2], map(not_, columns[5])))


def adopt(dst: Text, src: Text) -> None:
    """Make the empty ``dst`` a deferred copy of the deferred ``src``: the checked columns are
    never changed, so both may hold them, and each builds blocks of its own when first read."""
    dst._len, dst._clock = src._len, src._clock
    del dst._chunks, dst._index
    dst._deferred = src._deferred
    dst._cci, dst._coff, dst._shared = 0, 0, True  # see defer
