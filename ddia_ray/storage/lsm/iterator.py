"""Range scans: a lazy merge of memtables and SSTables that honours tombstones and snapshots.

Theory of operation
-------------------
Every source (a memtable, a level-0 file, a whole deeper level read file by
file) yields at most one entry per key, ``(key, seq, op, value)``: its newest
version visible at the scan's sequence number, in key order (descending when
``reverse``). :func:`heapq.merge` interleaves the sources by key; among the
entries of one key the highest ``seq`` wins; the result is emitted if it is a
put newer than every range tombstone covering the key (one fragmented
:class:`TombstoneIndex` over all sources, built when the scan starts).

The scan pins the version it reads (its files are not deleted under it) and
holds references to the memtables, so flushes and compactions proceed while
it runs; writers keep inserting into the active memtable, but only above the
scan's sequence number, so it still sees one consistent snapshot. The pin is
released when the iterator is exhausted, closed, or garbage collected.

:class:`FastScanIterator` serves ranges with nothing to merge (see
:mod:`.reads`): it *is* an :class:`itertools.chain` over ``zip(keys, values)``
of each row group, so ``next()`` runs in C; Python code runs once per row
group, where it checks that the database is still open. To keep "no row after
``close()``" exact mid-row-group, the tree's ``close()`` calls
:meth:`FastScanIterator.abort`, which moves the row group's list iterator to
its end (``__setstate__``, the list iterator's own pickling hook).

Arrow scans (``scan_batches``) hand out :data:`KV_SCHEMA` record batches.
:func:`arrow_batches` slices a clean run's row-group tables (already Arrow:
no row is copied, into Python or otherwise) into batches of at most
``batch_rows``; the merged pairs of a :class:`ScanIterator` are packed by
:func:`ddia_ray.storage.engine.pair_batches`. Both release the pinned version
when exhausted, on an error, or (deferred, like the iterators above) when
closed or dropped.
"""

from __future__ import annotations

import heapq
import itertools
import sys
from operator import itemgetter
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from ..engine import KV_SCHEMA
from .memtable import PUT, Memtable
from .tombstones import TombstoneIndex

__all__ = ["ScanIterator", "FastScanIterator", "memtable_entries", "chain_entries", "arrow_batches"]



def memtable_entries(mem: Memtable, keys: list, lo: int, hi: int, snapshot_seq: int,
                     reverse: bool) -> Iterator[tuple]:
    """The newest visible version per key of ``keys[lo:hi]`` (a sorted list taken under the tree lock)."""
    order = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
    for i in order:
        key = keys[i]
        versions = mem.versions_of(key)
        for j in range(len(versions) - 1, -1, -1):
            seq, op, value = versions[j]
            if seq <= snapshot_seq:
                yield key, seq, op, value
                break


def chain_entries(tables: list, start, end, snapshot_seq: int, reverse: bool) -> Iterator[tuple]:
    """Entries of non-overlapping SSTables (one level) in key order."""
    for sst in (reversed(tables) if reverse else tables):
        yield from sst.entries(start, end, snapshot_seq, reverse)


class ScanIterator:
    """Iterator of live ``(key, value)`` pairs; also a context manager (``close()`` releases its pin)."""

    def __init__(self, sources: Iterable[Iterator[tuple]], tombstones: TombstoneIndex, snapshot_seq: int,
                 reverse: bool, release: Callable[[bool], None], check: Callable[[], None]):
        self._merged: Iterator[tuple] = heapq.merge(*sources, key=itemgetter(0), reverse=reverse)
        self._tombstones = tombstones
        self._seq = snapshot_seq
        self._release = release
        self._check = check
        self._pending: tuple | None = None
        self._done = False

    def __iter__(self) -> "ScanIterator":
        return self

    def __next__(self) -> tuple[bytes, bytes]:
        if self._done:
            raise StopIteration
        self._check()
        try:
            return self._advance()
        except StopIteration:
            self.close()
            raise
        except BaseException:
            self.close()
            raise

    def _advance(self) -> tuple[bytes, bytes]:
        merged, cover = self._merged, self._tombstones
        best = self._pending if self._pending is not None else next(merged)
        self._pending = None
        while True:
            for entry in merged:
                if entry[0] != best[0]:
                    self._pending = entry
                    break
                if entry[1] > best[1]:
                    best = entry
            if best[2] == PUT and (not cover or best[1] > cover.cover(best[0], self._seq)):
                return best[0], best[3]
            if self._pending is None:
                raise StopIteration
            best, self._pending = self._pending, None

    def close(self) -> None:
        """Release the pinned version; later ``next()`` calls stop the iteration."""
        if not self._done:
            self._done = True
            self._merged = iter(())
            self._release(False)

    def __enter__(self) -> "ScanIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "_done", True):
            self._done = True
            self._release(True)  # deferred: finalisers may run while the tree lock is held


class _FastState:
    __slots__ = ("done", "current", "reverse", "release", "check")

    def __init__(self, reverse: bool, release: Callable[[bool], None], check: Callable[[], None]):
        self.done = False
        self.current = None
        self.reverse = reverse
        self.release = release
        self.check = check

    def finish(self, deferred: bool) -> None:
        if not self.done:
            self.done = True
            self.release(deferred)

    def abort(self) -> None:
        cur = self.current
        if cur is not None:
            cur.__setstate__(-1 if self.reverse else sys.maxsize)  # exhausted: next() reaches a check


def _fast_rows(state: _FastState, chunks: Iterator[tuple]) -> Iterator:
    try:
        while True:
            if state.done:
                return
            state.check()
            chunk = next(chunks, None)
            if chunk is None:
                break
            keys, values = chunk
            if state.reverse:
                it, vals = reversed(keys), reversed(values)
            else:
                it, vals = iter(keys), values
            state.current = it
            yield zip(it, vals)
    except GeneratorExit:  # the iterator was dropped: its finaliser releases (deferred)
        raise
    except BaseException:
        state.finish(False)
        raise
    state.finish(False)


class FastScanIterator(itertools.chain):
    """A scan iterator over rows that need no merge; same interface as :class:`ScanIterator`."""

    __slots__ = ("_state", "__weakref__")

    _state: _FastState

    @classmethod
    def create(cls, chunks: Iterator[tuple], reverse: bool, release: Callable[[bool], None],
               check: Callable[[], None]) -> "FastScanIterator":
        """An iterator over ``chunks`` of ``(keys, values)`` lists, in order (each list reversed if ``reverse``)."""
        state = _FastState(reverse, release, check)
        # typeshed declares chain.from_iterable as returning a chain; called on a subclass it builds the subclass.
        it: FastScanIterator = cls.from_iterable(_fast_rows(state, chunks))  # type: ignore[assignment]
        it._state = state
        return it

    def abort(self) -> None:
        """Stop at the current row: the next ``next()`` re-checks the database (called by its ``close()``)."""
        self._state.abort()

    def close(self) -> None:
        """Release the pinned version; later ``next()`` calls stop the iteration."""
        state = self._state
        if not state.done:
            state.abort()
            state.finish(False)

    def __enter__(self) -> "FastScanIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        state = getattr(self, "_state", None)
        if state is not None and not state.done:
            state.done = True
            state.release(True)  # deferred: finalisers may run while the tree lock is held


def arrow_batches(chunks: Iterator[pa.Table], release: Callable[[bool], None], batch_rows: int,
                  limit: int | None) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``batch_rows`` rows sliced from ``chunks`` of live rows (no copy).

    A batch never spans two chunks (row groups): gluing them would copy every row, and the
    storage node groups batches per object store transfer anyway.
    """
    return _released(_recut(chunks, batch_rows, limit), release)


def _recut(chunks: Iterator[pa.Table], batch_rows: int, limit: int | None) -> Iterator[pa.RecordBatch]:
    remaining = limit
    for table in chunks:
        if remaining is not None:
            if remaining <= 0:
                return
            if table.num_rows > remaining:
                table = table.slice(0, remaining)
            remaining -= table.num_rows
        for batch in table.to_batches(max_chunksize=batch_rows):  # zero-copy slices
            if batch.num_rows:
                yield pa.RecordBatch.from_arrays(batch.columns, schema=KV_SCHEMA)


def _released(batches: Iterator[pa.RecordBatch], release: Callable[[bool], None]) -> Iterator[pa.RecordBatch]:
    """``batches``, then ``release(False)`` once they are exhausted (or failed); deferred if dropped."""
    try:
        yield from batches
    except GeneratorExit:  # dropped or closed: finalisers may run under the tree lock, so defer
        release(True)
        raise
    except BaseException:
        release(False)
        raise
    release(False)
