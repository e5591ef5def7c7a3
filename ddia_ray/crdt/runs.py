"""The parts the text CRDT is built of: runs of characters, document chunks, and id-range sets.

Theory of operation
-------------------
:mod:`.text` (an RGA, Roh et al. 2011) keeps characters in *runs*: a :class:`_Block` holds
characters of one node with consecutive counters, each the origin of the next, as Yjs items do
(Nicolaescu et al. 2016, "Near real-time peer-to-peer shared editing on extensible data types"),
and is split when an edit lands inside it. Placed blocks live in :class:`_Chunk` s, slices of the
document that know their visible length, so a position is found by walking chunks. Deleted ids
that are not placed yet are kept as sorted, disjoint id ranges per node (:func:`_ranges_add`,
:func:`_ranges_take`). Nothing here knows the RGA rules; :mod:`.text` applies them.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["CHUNK_MAX"]  # and the private parts of ddia_ray.crdt.text

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
