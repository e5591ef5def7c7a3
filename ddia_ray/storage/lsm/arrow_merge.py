"""Merged range scans as Arrow: overlapping SSTables read as columns and merged a window at a time.

Theory of operation
-------------------
A scan whose files overlap (level 0 after a bulk load, say: hashed keys overlap every file) must
merge them: the newest version per key at the scan's snapshot, unless it is a tombstone or a
range tombstone covers it. :class:`~.iterator.ScanIterator` does that row by row with a heap,
about two microseconds a row in Python. Compaction does the same merge with one Arrow sort
(:mod:`.merge`), several times faster, but over whole files; a scan must stream in bounded memory.

:func:`merged_chunks` merges *windows*. Each source (a level-0 file, or a deeper level's files in
key order) is read as Arrow row groups (``key``, ``seq``, ``op``, ``value``), and a buffer per
source holds at least :data:`MERGE_ROWS` rows when the source has them. The window ends just
below the smallest last buffered key among the sources not yet exhausted: every version of every
key below it is buffered by then, in whatever source it sits, while a key equal to that bound
may continue in the next row group of its source (the SSTable writer never splits a key's
versions between row groups or files, but the merge does not lean on it). The window's rows from every buffer are
concatenated, those newer than the snapshot dropped, sorted by key ascending and sequence
descending (Arrow's sort), reduced to the first row per key, and point and range tombstones
applied; what is left is live, in key order, and goes out as a ``key``/``value`` table. A window
that would be empty (a source whose whole buffer is one key repeated) makes that source read
further, so each round either emits rows or reads one more row group: the scan always finishes.

Used for forward scans whose range no memtable entry or memtable tombstone touches (after a
bulk load, which flushes the memtables first, every scan); others merge rows
(:mod:`.reads`).
"""

from __future__ import annotations

from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from .memtable import PUT, RANGE_DELETE, sort_rows

__all__ = ["MERGE_ROWS", "merged_chunks", "live_rows"]

#: Rows a source's buffer holds before a window is cut (row groups are 4,096 rows by default):
#: the per-window Arrow calls cost the same whatever the window's size, so windows are not small.
MERGE_ROWS = 16_384


def _below(keys: pa.Array, bound: bytes) -> int:
    """How many of the sorted ``keys`` are below ``bound``."""
    return int(pc.sum(pc.less(keys, pa.scalar(bound, pa.binary()))).as_py() or 0)


def live_rows(table: pa.Table, seq: int, tombstones: list, *, presorted: bool = False) -> pa.Table:
    """The live ``key``/``value`` rows of ``table`` (rows of one key range, any order) at snapshot
    ``seq``: the newest version per key at or below ``seq`` that is a put and that no range
    tombstone ``(start, end, tseq)`` with ``version seq < tseq <= seq`` covers; in key order.
    ``presorted``: the rows are in SSTable order already (one run's), so the sort is skipped."""
    rows = table.filter(pc.and_(pc.less_equal(table.column("seq"), pa.scalar(seq, pa.uint64())),
                                pc.not_equal(table.column("op"), pa.scalar(RANGE_DELETE, pa.uint8()))))
    if rows.num_rows == 0:
        return rows.select(["key", "value"])
    rows = rows.combine_chunks() if presorted else sort_rows(rows.combine_chunks())
    keys = rows.column("key").chunk(0) if rows.column("key").num_chunks == 1 else rows.column("key").combine_chunks()
    n = len(keys)
    if n > 1:
        first = pc.not_equal(keys.slice(1), keys.slice(0, n - 1))
        rows = rows.filter(pa.concat_arrays([pa.array([True]), first]))  # newest version per key
    keep = pc.equal(rows.column("op"), pa.scalar(PUT, pa.uint8()))
    for start, end, tseq in tombstones:
        if tseq > seq:
            continue
        covered = pc.and_(pc.and_(pc.greater_equal(rows.column("key"), pa.scalar(start, pa.binary())),
                                  pc.less(rows.column("key"), pa.scalar(end, pa.binary()))),
                          pc.less(rows.column("seq"), pa.scalar(tseq, pa.uint64())))
        keep = pc.and_(keep, pc.invert(covered))
    return rows.filter(keep).select(["key", "value"])


class _Source:
    """One sorted run read row group by row group, with the rows not yet merged buffered."""

    __slots__ = ("_chunks", "buffer", "done")

    def __init__(self, chunks: Iterator[pa.Table]):
        self._chunks = chunks
        self.buffer: pa.Table | None = None
        self.done = False  # no row group left to read (the buffer may still hold rows)

    @property
    def held(self) -> int:
        """Rows buffered."""
        return 0 if self.buffer is None else self.buffer.num_rows

    def fill(self, rows: int) -> None:
        """Read row groups until the buffer holds at least ``rows`` rows or the run ends."""
        parts = [] if self.buffer is None else [self.buffer]
        held = self.held
        while held < rows and not self.done:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.done = True
            elif chunk.num_rows:
                parts.append(chunk)
                held += chunk.num_rows
        self.buffer = pa.concat_tables(parts) if len(parts) > 1 else (parts[0] if parts else None)

    def last_key(self) -> bytes | None:
        b = self.buffer
        return None if b is None or b.num_rows == 0 else b.column("key")[b.num_rows - 1].as_py()

    def take_below(self, bound: bytes | None) -> pa.Table | None:
        """Remove and return the buffered rows with keys below ``bound`` (all of them if None)."""
        b = self.buffer
        if b is None or b.num_rows == 0:
            return None
        n = b.num_rows if bound is None else _below(b.column("key"), bound)
        if n == 0:
            return None
        self.buffer = b.slice(n) if n < b.num_rows else None
        return b.slice(0, n)


def merged_chunks(sources: list[Iterator[pa.Table]], seq: int, tombstones: list,
                  check: Callable[[], None], limit: int | None = None) -> Iterator[pa.Table]:
    """Live ``key``/``value`` tables, in key order, of the sorted runs ``sources`` (each an iterator
    of ``key``/``seq``/``op``/``value`` tables in key order) at snapshot ``seq`` with range
    ``tombstones`` applied (see the module docstring); ``check()`` runs before each window.

    ``limit``: the caller takes at most that many rows, so no source buffers more than that (a
    page of a paged scan otherwise read :data:`MERGE_ROWS` rows of every source, most of them
    dropped, and read them again for the next page)."""
    runs = [_Source(chunks) for chunks in sources]
    left = limit
    while True:
        check()
        if left is not None and left <= 0:
            return
        want = MERGE_ROWS if left is None else max(1, min(MERGE_ROWS, left))
        for r in runs:
            r.fill(want)
        runs = [r for r in runs if not (r.done and r.held == 0)]
        if not runs:
            return
        open_ends = [k for r in runs if not r.done and (k := r.last_key()) is not None]
        bound = min(open_ends) if open_ends else None  # every run read to its end: take all
        parts = [p for r in runs if (p := r.take_below(bound)) is not None]
        if not parts:  # the bounding run's buffer is one key repeated: read past it
            for r in runs:
                if not r.done and r.last_key() == bound:
                    r.fill(r.held + 1)
            continue
        out = live_rows(pa.concat_tables(parts) if len(parts) > 1 else parts[0], seq, tombstones,
                        presorted=len(parts) == 1)
        if out.num_rows:
            if left is not None:
                left -= out.num_rows
            yield out
