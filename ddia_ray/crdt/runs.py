"""The parts the text CRDT is built of: runs of characters, document chunks, and id-range sets.

Theory of operation
-------------------
:mod:`.text` (an RGA, Roh et al. 2011) keeps characters in *runs*: a :class:`_Block` holds
characters of one node with consecutive counters, each the origin of the next, as Yjs items do
(Nicolaescu et al. 2016, "Near real-time peer-to-peer shared editing on extensible data types"),
and is split when an edit lands inside it. Placed blocks live in :class:`_Chunk` s, slices of the
document that know their visible length, so a position is found by walking chunks. Deleted ids
that are not placed yet are kept as sorted, disjoint id ranges per node (:func:`_ranges_add`,
:func:`_ranges_take`); :func:`copy_blocks` copies a document with fresh objects (what a copy,
and the first write to a state that shares its structures, costs: :func:`share`). Nothing here knows the RGA
rules; :mod:`.text` applies them.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING
from operator import attrgetter

__all__ = ["CHUNK_MAX", "RUN_MAX", "copy_blocks", "share", "unshare"]  # and the private parts of ddia_ray.crdt.text

if TYPE_CHECKING:
    from .text import Text

_start = attrgetter("start")

#: Blocks per chunk of the document list before the chunk is cut in two.
CHUNK_MAX = 64


class _Block:
    """A run of characters of one node with consecutive counters, each the origin of the next."""

    __slots__ = ("start", "node", "text", "origin", "deleted", "chunk", "indexed")

    def __init__(self, start: int, node: str, text: str, origin: tuple | None, deleted: bool = False) -> None:
        self.start = start
        self.node = node
        self.text = text
        self.origin = origin  # (counter, node) of the character left of the first one; None: the start
        self.deleted = deleted
        self.chunk: _Chunk | None = None  # the chunk holding it; None: waiting for its origin
        self.indexed = False  # in Text._index


#: Characters a run grows to by typing on before the next ones start a run of their own: a str
#: cannot grow in place, so extending a run copies it, and an unbounded run made typing a long
#: document quadratic (2.3 us a character at 10,000 characters typed in one run, 25.6 us at 320,000).
#: Runs of one node that continue each other are written as one run all the same (text_format).
RUN_MAX = 1 << 10


def _grow(b: _Block, text: str) -> None:
    """Append ``text`` to ``b``'s run, letting the str grow where it is when it can (CPython extends
    a str in place only when nothing else refers to it, and the attribute does)."""
    run = b.text
    b.text = ""
    run += text
    b.text = run


class _Chunk(list):
    """A slice of the document: blocks in order, and ``vis``, how many visible characters they hold."""

    __slots__ = ("vis",)

    def __init__(self, blocks=()) -> None:
        super().__init__(blocks)
        self.vis = sum(len(b.text) for b in self if not b.deleted)

    def __hash__(self) -> int:  # type: ignore[override]  # identity: chunks are found with list.index
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def _ranges_add(ranges: dict, node: str, s: int, e: int) -> None:
    """Union ``s..e`` into the sorted, disjoint, non-adjacent ranges of ``node``."""
    ix = ranges.get(node)
    if ix is None:
        ranges[node] = ([s], [e])
        return
    starts, ends = ix
    i = j = bisect_left(ends, s - 1)
    lo, hi = s, e
    while j < len(starts) and starts[j] <= e + 1:
        lo, hi = min(lo, starts[j]), max(hi, ends[j])
        j += 1
    starts[i:j] = [lo]
    ends[i:j] = [hi]


def _ranges_take(ranges: dict, node: str, s: int, e: int) -> list[tuple[int, int]]:
    """Remove ``s..e`` from the ranges of ``node``; returns the parts that were there."""
    ix = ranges.get(node)
    if ix is None:
        return []
    starts, ends = ix
    i = j = bisect_left(ends, s)
    taken, keep_s, keep_e = [], [], []
    while j < len(starts) and starts[j] <= e:
        a, b = starts[j], ends[j]
        taken.append((max(a, s), min(b, e)))
        if a < s:
            keep_s.append(a)
            keep_e.append(s - 1)
        if b > e:
            keep_s.append(e + 1)
            keep_e.append(b)
        j += 1
    if taken:
        starts[i:j] = keep_s
        ends[i:j] = keep_e
        if not starts:
            del ranges[node]
    return taken


def copy_blocks(chunks: list[_Chunk], pending: dict) -> tuple[list[_Chunk], dict, dict]:
    """Fresh copies of a text's document ``chunks`` and its waiting blocks ``pending`` (origin node ->
    origin counters, blocks), with the index of both (node -> block starts, blocks, sorted)."""
    by_node: dict[str, list[_Block]] = {}
    new_chunks = []
    for och in chunks:
        ch = _Chunk()
        for b in och:
            nb = _Block(b.start, b.node, b.text, b.origin, b.deleted)
            nb.chunk, nb.indexed = ch, True
            ch.append(nb)
            blocks = by_node.get(nb.node)
            if blocks is None:
                by_node[nb.node] = [nb]
            else:
                blocks.append(nb)
        ch.vis = och.vis
        new_chunks.append(ch)
    new_pending = {}
    for node, (counters, waiting) in pending.items():
        copies = []
        for w in waiting:
            nw = _Block(w.start, w.node, w.text, w.origin, w.deleted)
            nw.indexed = True
            copies.append(nw)
            by_node.setdefault(nw.node, []).append(nw)
        new_pending[node] = (list(counters), copies)
    index = {}
    for node, blocks in by_node.items():
        blocks.sort(key=_start)
        index[node] = ([x.start for x in blocks], blocks)
    return new_chunks, index, new_pending


def share(dst: Text, src: Text) -> None:
    """Make the empty ``dst`` equal to ``src`` by sharing its structures, copy on write: merging a
    whole document into an empty replica costs O(1), and the first change to either state copies
    them (:func:`unshare`). Blocks and chunks change only in the mutators and ``merge``, which each
    unshare first when their state is flagged ``_shared``."""
    dst._chunks, dst._index, dst._pending, dst._orphans = src._chunks, src._index, src._pending, src._orphans
    dst._clock, dst._len = src._clock, src._len
    dst._cci, dst._coff = 0, 0
    dst._shared = src._shared = True


def unshare(doc: Text) -> None:
    """Give ``doc`` its own copy of the structures it may share with other states (see :func:`share`),
    or build the blocks of a deferred document (:func:`.text_place.defer`)."""
    if doc._deferred is not None:
        from .text_place import materialize  # here: text_place is built on this module

        materialize(doc)
        return
    doc._chunks, doc._index, doc._pending = copy_blocks(doc._chunks, doc._pending)
    doc._orphans = {node: (list(s), list(e)) for node, (s, e) in doc._orphans.items()}
    doc._shared = False  # same chunks in the same order: the cursor still holds
