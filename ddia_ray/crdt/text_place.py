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
four of a typing trace's) are recognised by whole-column passes and never visited. The other
runs' arcs are checked all at once (:func:`_nested`: no two cross exactly when their ends nest
like brackets; :func:`_siblings_descend`: each run's id is below its previous sibling's, the
latest earlier arc from the same origin, or else the origin's first child). Only when that finds
a fault does the classic stack check for crossing intervals run, in one linear pass over those
arcs, to find the first run that fails; the arcs it pops that share the new arc's origin are the
new run's earlier siblings, so the sibling order is checked there too. The first run that fails
(an origin not there or not before it, a crossing, a sibling out of order) ends the prefix; as
every check of a run looks only at the runs before it, the prefix is the longest one in RGA's
order. Ids are checked distinct over all the columns first, as sorted intervals.

Everything but that stack pass is done on whole columns: :class:`Columns` holds the numbers as
int64 arrays (numpy), so the bounds, the linked-run mask, the sorts for distinct ids, the search
for each other run's origin and the checks above are each a few vectorised steps, not a Python
step per block (a typing trace's document is thousands of runs, and those steps were most of its
decoding). Numpy does arithmetic here and nothing else: no I/O, no clock, no randomness, and
every sort is stable or of distinct keys, so the result is a function of the bytes alone.
Counters reach ``COUNTER_MAX`` (``2**63 - 1``), so no step forms ``start + length`` (which could
be ``2**63``): a block's id range is held as its first and last counter.

Building the blocks (their objects, chunks of ``CHUNK_MAX // 2`` blocks, the id index) takes the
columns whole, with no Python step per block but the ``_Block`` constructor, yet that constructor
is most of a whole document's decoding. So a document that is in order throughout, with no
deleted range waiting, is *deferred* (:func:`defer`): the state keeps the checked columns and
builds its blocks the first time anything changes or reads them (:func:`materialize`, called by
:func:`.runs.unshare` and ``Text._built``), as a state merged into an empty one shares its structures until the first
change (:func:`.runs.share`). A replica that only reads the text never builds them.
"""

from __future__ import annotations

from collections import deque
from itertools import compress, repeat
from operator import not_
from typing import TYPE_CHECKING, cast

import numpy as np

from . import runs
from .._validate import invariant
from .base import COUNTER_MAX, corrupt
from .dots import _ix
from .runs import _Block, _Chunk

if TYPE_CHECKING:
    from .text import Text

__all__ = ["Columns", "columns", "Plan", "plan", "build", "place_in_order", "defer", "materialize", "deferred_value",
           "adopt"]

_I64 = np.int64


class Columns:
    """Blocks as checked columns: the payload's own values (node index, start, text, origin node
    index, origin counter, deleted), which blocks are built from, and the numbers again as arrays
    (``v_`` names, int64; ``v_dels`` bool; ``v_lens`` each text's length) that :func:`plan` checks
    at once. Made by :func:`columns`; never changed after."""

    __slots__ = ("nis", "starts", "texts", "ois", "ocs", "dels", "v_nis", "v_starts", "v_ois", "v_ocs", "v_lens",
                 "v_dels")

    def __init__(self, values: tuple, arrays: tuple) -> None:
        self.nis, self.starts, self.texts, self.ois, self.ocs, self.dels = values
        self.v_nis, self.v_starts, self.v_ois, self.v_ocs, self.v_lens, self.v_dels = arrays


def columns(nis, starts, texts, ois, ocs, dels, top: int) -> Columns | None:
    """The blocks of these columns, if every value is in bounds: node indexes in ``0..top``, origin
    node indexes in ``-1..top``, texts non-empty, ids within ``1..COUNTER_MAX``, origin counters
    ``>= 0`` and below their block's start; None if one is not (the caller reads the rows one at a
    time for the error naming the block).

    REQUIRES: the values' types are checked (ints for the numbers, not bools; strs; bools), as
    :func:`.text_format._columns` does: an array would take a bool for 1 and a float for an int."""
    n = len(starts)
    try:
        v_nis, v_starts, v_ois, v_ocs = (np.fromiter(c, _I64, n) for c in (nis, starts, ois, ocs))
    except OverflowError:  # beyond int64, so beyond every bound
        return None
    v_lens = np.fromiter(map(len, texts), _I64, n)
    # each test's operands are in range once the tests before it pass (``COUNTER_MAX - len`` needs len >= 0)
    if (n == 0 or v_nis.min() < 0 or v_nis.max() > top or v_ois.min() < -1 or v_ois.max() > top
            or v_lens.min() < 1 or v_starts.min() < 1 or v_ocs.min() < 0
            or bool((v_starts - 1 > COUNTER_MAX - v_lens).any())  # its last counter beyond COUNTER_MAX
            or bool((v_ocs >= v_starts).any())):  # an origin precedes its block
        return None
    v_dels = np.frombuffer(bytes(dels), bool)  # bools are the ints 0 and 1: one byte each
    return Columns((nis, starts, texts, ois, ocs, dels), (v_nis, v_starts, v_ois, v_ocs, v_lens, v_dels))


class Plan:
    """What :func:`plan` found in the columns: how many leading blocks are in RGA's order, and what
    placing them sets (visible characters, greatest counter)."""

    __slots__ = ("placed", "length", "clock", "roots")

    def __init__(self, placed: int, length: int, clock: int, roots: list) -> None:
        self.placed = placed
        self.length = length  # visible characters of the placed blocks
        self.clock = clock  # their greatest counter
        self.roots = roots  # the blocks at the start (no origin), ascending


def place_in_order(doc: Text, rows: list) -> int:
    """Place the leading ``rows`` ``(start, node, text, origin, deleted)`` (checked values) that are in
    RGA's order into the empty ``doc``, without searching; returns how many.

    Raises CorruptRecordError if two rows share an id (see :func:`plan`)."""
    index: dict[str, int] = {}
    nis = [_ix(index, r[1]) for r in rows]
    ois = [-1 if r[3] is None else _ix(index, r[3][1]) for r in rows]
    nodes = tuple(index)
    cols = columns(nis, [r[0] for r in rows], [r[2] for r in rows], ois,
                   [0 if r[3] is None else r[3][0] for r in rows], [r[4] for r in rows], len(nodes) - 1)
    invariant(cols is not None, "rows checked one at a time are in bounds as columns")
    found = plan(doc.kind, nodes, cast(Columns, cols))
    build(doc, nodes, cast(Columns, cols), found)
    doc._len += found.length
    doc._clock = max(doc._clock, found.clock)
    return found.placed


def plan(kind: str, nodes: tuple, cols: Columns) -> Plan:
    """Check the columns (every value of the right type and bounds: :func:`columns`) and find their
    prefix in RGA's order.

    Raises CorruptRecordError if two blocks share an id, or an origin counter is 0 but for a block
    at the start, or the reverse (whether or not the block is in the prefix).
    """
    nis, starts, ois, ocs, lens, dels = cols.v_nis, cols.v_starts, cols.v_ois, cols.v_ocs, cols.v_lens, cols.v_dels
    n = len(starts)
    at_start = ois == -1
    wrong = at_start != (ocs == 0)  # exactly the blocks at the start have counter 0
    if wrong.any():
        j = int(wrong.argmax())
        raise corrupt(kind, "a block at the start has origin counter 0" if at_start[j] else
                      "a block's origin counter must be below its start")
    last = starts + (lens - 1)  # each block's last counter (start + length may be 2**63)
    # One sorted line of ids for all nodes: a node's ids after every id of the nodes before it. For
    # one node that is the starts; for more, each counter is replaced by its rank among every start
    # and origin counter (so origins can be looked up on the same line) and the ranks of node i
    # lie after those of the nodes before it (nodes times ranks: both below the payload's length,
    # so far below 2**63).
    if len(nodes) == 1:
        keys, okeys = starts, ocs
    else:
        counters = np.unique(np.concatenate((starts, ocs)))
        width = len(counters)
        keys = nis * width + np.searchsorted(counters, starts)
        okeys = ois * width + np.searchsorted(counters, ocs)  # negative for a block at the start
    order = np.argsort(keys, kind="stable")  # mostly ascending already: a merge sort finds the runs
    # Ids are the intervals [start, last] of each node: none overlap exactly when, sorted by start,
    # every interval ends before the next one of its node starts.
    overlap = last[order[:-1]] >= starts[order[1:]]
    if len(nodes) > 1:
        overlap &= nis[order[:-1]] == nis[order[1:]]
    if overlap.any():
        raise corrupt(kind, "two blocks share an id")
    cum = np.zeros(n + 1, _I64)  # each block's first character's position
    np.cumsum(lens, out=cum[1:])
    placed = _in_order(nodes, cols, last, cum, order, keys[order], okeys)
    clock = int(last[:placed].max()) if placed else 0
    length = int(cum[placed]) - int(lens[:placed][dels[:placed]].sum())
    return Plan(placed, length, clock, np.flatnonzero(at_start).tolist())


def _in_order(nodes: tuple, cols: Columns, last, cum, order, sorted_keys, okeys) -> int:
    """How many leading blocks are in RGA's order (see the module doc); the ids are distinct.
    ``sorted_keys`` are the blocks' ids on one line in ascending order (``order`` their blocks),
    ``okeys`` each block's origin on the same line."""
    nis, starts, ois, ocs = cols.v_nis, cols.v_starts, cols.v_ois, cols.v_ocs
    n = len(starts)
    if ois[0] != -1:
        return 0  # the first block's origin would come after it
    # Linked: the origin is the last character of the block before (its counter and node).
    linked = (ocs[1:] == last[:-1]) & (ois[1:] == nis[:-1])
    odd = np.flatnonzero(~linked) + 1
    if not len(odd):
        return n
    # Each odd block's origin: the block holding it (the last one starting at or before it on the
    # line, if it is of the origin's node and reaches it), which must come before the odd block.
    oi, oc = ois[odd], ocs[odd]
    root = oi == -1
    p = np.searchsorted(sorted_keys, okeys[odd], side="right") - 1
    k = order[p]  # p = -1 (none): masked below
    missing = ~root & ((p < 0) | (nis[k] != oi) | (oc > last[k]) | (k >= odd))
    limit = n
    if missing.any():  # the prefix ends at the first block whose origin is not here or after it
        cut = int(missing.argmax())
        limit = int(odd[cut])
        odd, oi, oc, root, k = odd[:cut], oi[:cut], oc[:cut], root[:cut], k[:cut]
    k = np.where(root, -1, k)
    arcs = np.where(root, -1, cum[k] + (oc - starts[k]))  # the origin's position; -1 for the start
    # The origin's first child: the block after the run it ends (for a block at the start, the first
    # block), or if the origin is inside its run, the run's next character (a sibling popped below
    # takes its place).
    at_end = root | (oc == last[k])
    first_c = np.where(at_end, starts[k + 1], oc + 1)
    first_n = np.where(at_end, nis[k + 1], nis[k])
    ends = cum[odd]
    if _nested(arcs, ends) and _siblings_descend(nodes, arcs, starts[odd], nis[odd], first_c, first_n):
        return limit  # the common case, a document in order: checked on whole columns
    # Else the first block that fails, found by the stack pass.
    if len(nodes) == 1:  # ids compared as RGA orders siblings: by counter, then node
        ids: list = starts[odd].tolist()
        firsts: list = first_c.tolist()
        id0: object = int(starts[0])
    else:
        name = nodes.__getitem__
        ids = list(zip(starts[odd].tolist(), map(name, nis[odd].tolist())))
        firsts = list(zip(first_c.tolist(), map(name, first_n.tolist())))
        id0 = (int(starts[0]), nodes[nis[0]])
    # The arcs not nested in a later one yet, left to right and disjoint: their origin position,
    # their end, their block's id; at the bottom a sentinel no arc pops or crosses, then block 0's.
    open_l, open_r, open_id = [-2, -1], [-1, 0], [None, id0]
    pop_l, pop_r, pop_id = open_l.pop, open_r.pop, open_id.pop
    push_l, push_r, push_id = open_l.append, open_r.append, open_id.append
    for j, arc_l, r, idj, first in zip(odd.tolist(), arcs.tolist(), ends.tolist(), ids, firsts):
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
    return limit


def _nested(lefts, rights) -> bool:
    """Whether no two arcs (``lefts[i]``, ``rights[i]``; ``lefts[i] < rights[i] - 1``, ``rights``
    ascending) cross, ``l1 < l2 < r1 < r2``: the stack pass's crossing test, on all arcs at once.

    Each arc opens just after its left end and closes just before its right one; arcs sharing a
    left end open outermost first, and an arc that opens where another closes opens first (they
    cross: ``l2 = r1 - 1``). No two cross exactly when these events nest like brackets, that is
    when every close's bracket partner is its own open: the latest event before it at the same
    depth (an open's depth counted before it, a close's after it). Listed by depth, stably, that
    is the event just before the close (were it at another depth, an open at the close's depth
    would lie between the two)."""
    m = len(lefts)
    if m < 2:
        return True
    where = np.concatenate((4 * lefts + 2, 4 * rights - 1))
    outer_first = np.concatenate((-rights, np.zeros(m, _I64)))
    events = np.lexsort((outer_first, where))  # i < m: arc i opens; m + i: it closes
    opens = events < m
    after = np.cumsum(np.where(opens, 1, -1))
    depth = np.where(opens, after - 1, after)
    by_depth = np.argsort(depth, kind="stable")  # each depth's events in order
    ev = events[by_depth]
    closes = np.flatnonzero(ev >= m)
    return bool(closes[0] > 0 and (ev[closes - 1] == ev[closes] - m).all())


def _siblings_descend(nodes: tuple, lefts, counters, nis, first_c, first_n) -> bool:
    """Whether each arc's block has a smaller id (``counters``, ``nis``) than its origin's child
    before it: the latest earlier arc from the same origin position (``lefts``), else the given
    first child (``first_c``, ``first_n``). Arcs in document order, none crossing (:func:`_nested`)."""
    by_left = np.argsort(lefts, kind="stable")
    same = np.flatnonzero(lefts[by_left[1:]] == lefts[by_left[:-1]])
    later, earlier = by_left[same + 1], by_left[same]
    sib_c = first_c.copy()
    sib_c[later] = counters[earlier]
    if len(nodes) == 1:
        return bool((counters < sib_c).all())
    rank = np.empty(len(nodes), _I64)  # ids order ties of counters by node name, not node index
    rank[sorted(range(len(nodes)), key=nodes.__getitem__)] = np.arange(len(nodes))
    mine, sib_n = rank[nis], rank[first_n]
    sib_n[later] = mine[earlier]
    return bool(((counters < sib_c) | ((counters == sib_c) & (mine < sib_n))).all())


def build(doc: Text, nodes: tuple, cols: Columns, found: Plan) -> None:
    """Put the blocks ``found`` in order into the empty ``doc``, as they come: its document and its
    id index (the caller counts ``found.length`` and ``found.clock``)."""
    count = found.placed
    if not count:
        return
    nis, starts, texts, ois, ocs, dels = cols.nis, cols.starts, cols.texts, cols.ois, cols.ocs, cols.dels
    if count < len(starts):
        nis, starts, texts, ois, ocs, dels = (x[:count] for x in (nis, starts, texts, ois, ocs, dels))
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
    cuts = range(0, count, half)
    vis = np.add.reduceat(np.where(cols.v_dels[:count], 0, cols.v_lens[:count]), cuts).tolist()
    chunks = []
    for i, v in zip(cuts, vis):
        ch = _Chunk()  # filled here, its visible length summed from the columns, not block by block
        ch += blocks[i:i + half]
        ch.vis = v
        chunks.append(ch)
        deque(map(setattr, ch, repeat("chunk"), repeat(ch)), maxlen=0)
    doc._chunks += chunks
    # The id index: each node's blocks by start.
    v_starts = cols.v_starts[:count]
    if one:
        order = np.argsort(v_starts, kind="stable").tolist()
        doc._index[nodes[0]] = (list(map(starts.__getitem__, order)), list(map(blocks.__getitem__, order)))
        return
    v_nis = cols.v_nis[:count]
    by_node_start = np.lexsort((v_starts, v_nis))
    by_node = v_nis[by_node_start]
    order = by_node_start.tolist()
    for ni in np.unique(v_nis).tolist():
        mine = order[int(np.searchsorted(by_node, ni)):int(np.searchsorted(by_node, ni, "right"))]
        doc._index[nodes[ni]] = (list(map(starts.__getitem__, mine)), list(map(blocks.__getitem__, mine)))


def defer(doc: Text, nodes: tuple, cols: Columns, found: Plan) -> None:
    """Make the empty ``doc`` the document of ``cols``, all of it in order as ``found``, with its
    blocks not built yet.

    REQUIRES: ``found.placed`` is every block, and nothing else is to join ``doc`` (its readers call
    ``Text._built`` first, its mutators :func:`.runs.unshare`: both build the blocks)."""
    _hold(doc, (nodes, cols, found))


def _hold(doc: Text, deferred: tuple) -> None:
    """Make the empty ``doc`` the deferred document ``deferred`` ``(nodes, columns, plan)``."""
    found = deferred[2]
    doc._len, doc._clock = found.length, found.clock
    del doc._chunks, doc._index  # unset: a read that did not build them first fails loudly
    doc._deferred = deferred
    doc._shared = True  # so that every mutator builds them first (runs.unshare)


def materialize(doc: Text) -> None:
    """Build the blocks of a deferred ``doc`` (see :func:`defer`)."""
    deferred = doc._deferred
    invariant(deferred is not None, "materialize needs a deferred text")
    nodes, cols, found = cast(tuple, deferred)
    doc._deferred = None
    doc._chunks, doc._index = [], {}
    doc._shared = False  # its own blocks: the columns are never changed
    build(doc, nodes, cols, found)  # length and clock: set by defer (and since)


def deferred_value(doc: Text) -> str:
    """The visible text of a deferred ``doc``, read from its columns (its blocks stay unbuilt)."""
    cols = cast(tuple, doc._deferred)[1]
    return "".join(compress(cols.texts, map(not_, cols.dels)))


def adopt(dst: Text, src: Text) -> None:
    """Make the empty ``dst`` a deferred copy of the deferred ``src``: the checked columns are
    never changed, so both may hold them, and each builds blocks of its own when first read."""
    _hold(dst, cast(tuple, src._deferred))  # src is unchanged since deferred: its length and clock are the plan's
    dst._cci, dst._coff = 0, 0
