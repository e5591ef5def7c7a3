"""The read path of the LSM-tree: point reads and range scans, each with a fast path.

Theory of operation
-------------------
Point reads (DDIA ch. 3): take ``seq`` (the snapshot's, or ``last_seq``), look
in the active then the immutable memtables, then ask level 0 newest first and
one file per deeper level (binary search on the files' smallest keys). The
key range is checked first; then a row group already in the row cache is
searched directly (a NumPy binary search costs about what a Python Bloom
probe does, and the filter exists to spare reads), and only for a row group
that would have to be read is the Bloom filter asked (hash computed once per
key, probed in every filter). The first version found wins unless a range
tombstone seen so far is newer.

A ``get`` whose row groups are all in the row cache is answered entirely
under the tree mutex, without pinning the version (nothing can be deleted
while the mutex is held, and no I/O happens); only when a row group must be
read does it pin the version, drop the mutex and retry the lookup with reads.
That cached path is the engine's hottest code, so it is flat: a
:class:`_ReadPlan` per version lists the files a lookup may probe (level 0
newest first, then per deeper level parallel tuples for one bisection),
built under the mutex when a ``get`` first meets a new version; inside a row
group of fixed-width keys the lookup is a :class:`~.point_index.PointIndex`
(bisection of every 16th key, then ``bytes.find``), no NumPy call.

Scans merge every source (see :mod:`.iterator`). When one sorted run serves
the whole range — no memtable entry and no range tombstone anywhere, the
files of the range (in any levels) with pairwise disjoint key ranges, each
*clean* (only puts, every key once; recorded in its :class:`~.sstable.FileMeta`
when written) and no newer than the scan's snapshot — every row is live and
there is nothing to merge: :class:`~.iterator.FastScanIterator` yields straight from
``zip(keys, values)`` of each row group, at C speed.

:meth:`_ReadPath.scan_batches` is the same scan as Arrow record batches
(``key``, ``value``): a clean run is served as zero-copy slices of its row
groups' Arrow columns (read a window of row groups at a time with one ranged
read, see :meth:`~.sstable.SSTable.arrow_chunks`), anything else as the
merged pairs packed into batches.
"""

from __future__ import annotations

import bisect
import weakref
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa

from ..._validate import integer, non_negative, positive
from ...errors import DatabaseClosedError
from ..engine import check_range, pair_batches, to_key
from .bloom import key_hash
from .arrow_merge import merged_chunks
from .iterator import FastScanIterator, ScanIterator, arrow_batches, chain_entries, memtable_entries
from .manifest import Version
from .memtable import PUT, SCHEMA
from .snapshot import LSMSnapshot
from .sstable import NOT_CACHED
from .tombstones import TombstoneIndex

if TYPE_CHECKING:
    from .locks import TreeLock
    from .memtable import Memtable
    from .sstable import SSTable

__all__: list[str] = []


def _resolve(found, cover: int) -> bytes | None:
    if found is None:
        return None
    seq, op, value = found
    return value if op == PUT and seq > cover else None


class _ReadPlan:
    """The files a point read may probe in one :class:`Version`, flattened for :meth:`lookup`.

    Built under the tree mutex the first time a ``get`` meets a new version (flushes and
    compactions are rare next to reads) and immutable after: level 0 as
    ``(smallest, largest, min_seq, sstable)`` newest first, then each non-empty deeper level as
    parallel tuples of smallest keys, largest keys, ``min_seq`` and tables.
    """

    __slots__ = ("version", "level0", "levels")

    version: Version | None
    level0: tuple[tuple[bytes, bytes, int, SSTable], ...]
    levels: tuple[tuple[list[bytes], tuple[bytes, ...], tuple[int, ...], tuple[SSTable, ...]], ...]

    def __init__(self, version: Version | None, tables: dict[int, SSTable]):
        self.version = version
        if version is None:
            self.level0, self.levels = (), ()
            return
        self.level0 = tuple((f.smallest, f.largest, f.min_seq, tables[f.number]) for f in version.levels[0])
        self.levels = tuple((list(version.smallest[i]), tuple(f.largest for f in files),
                             tuple(f.min_seq for f in files), tuple(tables[f.number] for f in files))
                            for i, files in enumerate(version.levels) if i and files)

    def lookup(self, key: bytes, seq: int, cover: int, tally: list, cached_only: bool):
        """``(found, cover)`` from the SSTables of this version, ``found`` a ``(seq, op, value)`` or None;
        with ``cached_only``, ``found`` is NOT_CACHED when a row group would have to be read."""
        h = None
        for smallest, largest, min_seq, sst in self.level0:
            if key < smallest or key > largest or min_seq > seq:
                continue
            if sst.has_tombstones:
                cover = max(cover, sst.tombstones.cover(key, seq))
            tally[1] += 1
            # The filter first, even when the row group is cached: a cached probe of a key of
            # variable width is a bisection in Python (about 5 us a table), the filter's "no"
            # under 1 us, and a key absent from most of the tables it falls in is the common
            # case (an event id checked for a retry is in none of them). Asking the filter only
            # on a cache miss made a member's id checks over half of its time once level 0
            # held several tables (docs/storage.md, "The filter before the row group").
            if h is None:
                h = key_hash(key)
            if not sst.bloom.may_contain_hash(h):
                tally[2] += 1
                continue
            found = sst.get_cached(key, seq)
            if found is NOT_CACHED:
                if cached_only:
                    return NOT_CACHED, cover
                found = sst.get(key, seq)
            if found is not None:
                return found, cover
        # Deeper levels: at most one candidate file each, probed exactly as a level-0 file above (the
        # probe is repeated rather than called: this is the hot path of every cached get).
        for smallests, largests, min_seqs, ssts in self.levels:
            i = bisect.bisect_right(smallests, key) - 1
            if i < 0 or key > largests[i] or min_seqs[i] > seq:
                continue
            sst = ssts[i]
            if sst.has_tombstones:
                cover = max(cover, sst.tombstones.cover(key, seq))
            tally[1] += 1
            if h is None:
                h = key_hash(key)
            if not sst.bloom.may_contain_hash(h):
                tally[2] += 1
                continue
            found = sst.get_cached(key, seq)
            if found is NOT_CACHED:
                if cached_only:
                    return NOT_CACHED, cover
                found = sst.get(key, seq)
            if found is not None:
                return found, cover
        return None, cover


#: The plan of no version: what ``get_many`` holds when every key was answered by the memtables.
_NO_PLAN = _ReadPlan(None, {})


class _ReadPath:
    """Mixin of :class:`~.tree.LSMTree`: ``get``, ``get_many`` and ``scan`` (see the module docstring)."""

    # --- state owned by LSMTree (set in its __init__ and by recover()), shared with this mixin ---
    _mutex: TreeLock
    _closed: bool
    _version: Version
    _tables: dict[int, SSTable]
    _mem: Memtable
    _imms: list[Memtable]
    _last_seq: int
    _read_tally: list[int]
    _live_scans: weakref.WeakSet[FastScanIterator]
    if TYPE_CHECKING:  # methods of LSMTree and _Jobs
        def _check_open(self) -> None: ...
        def _count(self, name: str, amount: float = 1) -> None: ...
        def _read_seq(self, snapshot: LSMSnapshot | None) -> int: ...
        def _pin_locked(self) -> Version: ...
        def _unpin(self, version: Version, deferred: bool = False) -> None: ...
        def _unref_locked(self, version: Version) -> None: ...
        def _collect_obsolete(self) -> list[int]: ...
        def _delete_tables(self, numbers) -> None: ...

    #: The point-read plan of the current version (owned here; rebuilt under the mutex when stale).
    _read_plan: _ReadPlan = _NO_PLAN

    def _plan_locked(self) -> _ReadPlan:
        """Under the mutex: the point-read plan of the current version (built when it changed)."""
        plan = self._read_plan
        if plan.version is not self._version:
            plan = self._read_plan = _ReadPlan(self._version, self._tables)
        return plan

    def _get_memtables(self, key: bytes, seq: int):
        mem = self._mem
        if not self._imms and not mem.has_tombstones:
            return mem.get(key, seq), 0
        cover = 0
        for m in [mem] + self._imms[::-1]:
            if m.has_tombstones:
                cover = max(cover, m.tombstone_index().cover(key, seq))
            found = m.get(key, seq)
            if found is not None:
                return found, cover
        return None, cover

    def get(self, key, *, snapshot: LSMSnapshot | None = None) -> bytes | None:
        """The value of ``key`` (at ``snapshot``), or None."""
        if snapshot is not None or type(key) is not bytes:
            return self.get_many((key,), snapshot=snapshot)[0]
        # The hot path of the engine (a few microseconds): everything below is inlined on purpose,
        # each Python call level costs about 0.1 us. Semantics are those of get_many().
        with self._mutex:
            if self._closed:
                raise DatabaseClosedError("the database is closed")
            seq = self._last_seq
            tally = self._read_tally
            tally[0] += 1
            mem = self._mem
            if not self._imms and not mem.has_tombstones:
                found, cover = mem.get(key, seq), 0
            else:
                found, cover = self._get_memtables(key, seq)
            if found is not None:
                return _resolve(found, cover)
            plan = self._read_plan  # _plan_locked(), inlined
            if plan.version is not self._version:
                plan = self._read_plan = _ReadPlan(self._version, self._tables)
            found, cover = plan.lookup(key, seq, cover, tally, True)
            if found is not NOT_CACHED:
                return _resolve(found, cover)
            tally[0] -= 1  # counted again by get_many
        return self.get_many((key,))[0]  # a row group must be read: pin and read outside the mutex

    def get_many(self, keys, snapshot: LSMSnapshot | None = None) -> list:
        """Values (or None) of ``keys``, in order, all read at one sequence number."""
        ks = [to_key(k) for k in keys]
        out: list = [None] * len(ks)
        todo = []
        with self._mutex:
            self._check_open()
            seq = self._read_seq(snapshot)
            for i, k in enumerate(ks):
                found, cover = self._get_memtables(k, seq)
                if found is not None:
                    out[i] = _resolve(found, cover)
                else:
                    todo.append((i, cover))
            version = self._pin_locked() if todo else None
            plan = self._plan_locked() if todo else _NO_PLAN  # the plan of the version just pinned
        tally = [len(ks), 0, 0]
        try:
            for i, cover in todo:
                found, cover = plan.lookup(ks[i], seq, cover, tally, False)
                out[i] = _resolve(found, cover)
        finally:
            doomed = []
            with self._mutex:
                t = self._read_tally
                t[0] += tally[0]
                t[1] += tally[1]
                t[2] += tally[2]
                if version is not None:
                    self._unref_locked(version)
                    if version is not self._version:
                        doomed = self._collect_obsolete()
            if doomed:
                self._delete_tables(doomed)
        return out

    def scan(self, start=None, end=None, *, reverse: bool = False,
             snapshot: LSMSnapshot | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Lazy iterator of live ``(key, value)`` in ``[start, end)``; pins the files it reads."""
        s, e = check_range(start, end)
        tables, release, merged = self._open_scan(s, e, reverse, snapshot)
        if merged is not None:
            return merged
        it = FastScanIterator.create(_clean_chunks(tables, s, e, reverse), reverse, release, self._check_open)
        with self._mutex:
            self._live_scans.add(it)
        return it

    def scan_batches(self, start=None, end=None, *, reverse: bool = False, snapshot: LSMSnapshot | None = None,
                     limit: int | None = None, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """Live pairs of ``[start, end)`` as Arrow record batches (columns ``key``, ``value``).

        Same rows, order and snapshot as :meth:`scan` (at most ``limit`` of them), in batches of
        up to ``batch_rows`` rows. A range with nothing to merge is served from the SSTables'
        Arrow columns directly, no Python object per row; otherwise the merged rows are packed.
        Checks that the database is open once per row group (or batch), and releases its pin
        when exhausted or closed.
        """
        positive("batch_rows", integer("batch_rows", batch_rows))
        if limit is not None:
            non_negative("limit", integer("limit", limit))
        s, e = check_range(start, end)
        chunks, release, merged = self._open_scan(s, e, reverse, snapshot, arrow=True, limit=limit)
        if merged is not None:
            return pair_batches(merged, batch_rows, limit, close=merged.close)
        return arrow_batches(chunks, release, batch_rows, limit)

    def _open_scan(self, s: bytes | None, e: bytes | None, reverse: bool, snapshot: LSMSnapshot | None,
                   arrow: bool = False, limit: int | None = None) -> tuple:
        """Pin what a scan of ``[s, e)`` reads: ``(tables, release, None)`` when one clean run serves
        it (the caller streams it), else ``(None, None, merging ScanIterator)`` (which owns the pin).

        ``arrow``: the caller wants Arrow; the first element is then an iterator of live
        ``key``/``value`` tables, of the clean run or, for a forward scan that no memtable entry or
        tombstone touches, merged from the files a window at a time (:mod:`.arrow_merge`), reading
        no more than ``limit`` rows ahead from each file."""
        with self._mutex:
            self._check_open()
            seq = self._read_seq(snapshot)
            sources, tombstones = [], []
            quiet = True  # no memtable entry or range tombstone can touch the range
            for mem in [self._mem] + self._imms[::-1]:
                keys, lo, hi = mem.key_slice(s, e)
                quiet = quiet and lo >= hi and not mem.has_tombstones
                sources.append(memtable_entries(mem, keys, lo, hi, seq, reverse))  # lazy: runs on next()
                tombstones += mem.range_tombstones()
            version = self._pin_locked()
        runs = []
        for level, files in enumerate(version.levels):
            hit = [f for f in files
                   if (s is None or f.largest >= s) and (e is None or f.smallest < e) and f.min_seq <= seq]
            if hit:
                runs.append((level, hit))
        self._count("scans")
        release = lambda deferred: self._unpin(version, deferred)  # noqa: E731
        clean = self._clean_run(runs, seq) if quiet else None
        if clean is not None:
            tables = [self._tables[f.number] for f in clean]
            return (_arrow_chunks(tables, s, e, reverse, self._check_open) if arrow else tables), release, None
        if arrow and quiet and not reverse:
            sources = []
            for level, hit in runs:
                ssts = [self._tables[f.number] for f in hit]
                tombstones += [t for sst in ssts for t in sst.tmeta.range_tombstones]
                sources += ([_merge_chunks([sst], s, e) for sst in ssts] if level == 0
                            else [_merge_chunks(ssts, s, e)])
            self._count("arrow_merged_scans")
            return merged_chunks(sources, seq, tombstones, self._check_open, limit), release, None
        for level, hit in runs:
            ssts = [self._tables[f.number] for f in hit]
            for sst in ssts:
                tombstones += sst.tmeta.range_tombstones
            if level == 0:
                sources += [sst.entries(s, e, seq, reverse) for sst in ssts]
            else:
                sources.append(chain_entries(ssts, s, e, seq, reverse))
        index = TombstoneIndex(t for t in tombstones if t[2] <= seq)
        return None, None, ScanIterator(sources, index, seq, reverse, release, self._check_open)

    @staticmethod
    def _clean_run(runs: list, seq: int) -> list | None:
        """The files of ``runs`` in key order if they form one sorted run of clean files, else None.

        Clean files (only puts, every key once), none newer than ``seq``, without range tombstones
        and with pairwise disjoint key ranges hold every key at most once across all of them, so
        every row is live and nothing needs merging, whichever levels they sit in. Levels need not
        be single: after a full compaction the leveled policy moves whole files down (trivial
        moves) while L1 is over its target, which spreads one sorted run over two levels.
        """
        files = [f for _, hit in runs for f in hit]
        if not all(f.clean and f.max_seq <= seq and not f.range_tombstones for f in files):
            return None
        files.sort(key=lambda f: f.smallest)
        if any(a.largest >= b.smallest for a, b in zip(files, files[1:])):
            return None
        return files


def _clean_chunks(tables: list, start, end, reverse: bool):
    for sst in (reversed(tables) if reverse else tables):
        yield from sst.clean_chunks(start, end, reverse)


def _merge_chunks(tables: list, start, end) -> Iterator[pa.Table]:
    """Every column of the rows of ``[start, end)`` in ``tables`` (one sorted run), row group by row group."""
    for sst in tables:
        yield from sst.arrow_chunks(start, end, columns=SCHEMA.names)


def _arrow_chunks(tables: list, start, end, reverse: bool, check):
    for sst in (reversed(tables) if reverse else tables):
        for chunk in sst.arrow_chunks(start, end, reverse):
            check()  # no row group is served after close()
            yield chunk
