"""Background work of the LSM-tree: flushes, compactions, bulk ingest, commits and file deletion.

Theory of operation
-------------------
Two daemon threads run next to the writers: the *flusher* turns the oldest
immutable memtable into a level-0 SSTable, the *compactor* runs whatever the
policy picks. Both finish the same way, through :meth:`_Jobs._commit_version`:

1. build the next :class:`Version` from the current one plus the edit, under
   the tree mutex;
2. write it as ``MANIFEST-<n+1>`` (outside the mutex, under the commit lock,
   so manifests are written in number order) — the crash-consistency point;
3. install it under the mutex, atomically with its side effects (drop the
   flushed memtable, advance ``last_seq`` for an ingest), so a reader never
   sees data twice or not at all;
4. delete what became obsolete: the previous manifest, WALs below the new
   ``log_number``, and SSTables no live version names. A version stays live
   while a snapshot, an iterator or an in-flight read pins it. Files are
   deleted by name, never found by listing the directory: a listing races the
   other jobs' creations and deletions (and is stale on S3).

New SSTables are written before the manifest that names them, obsolete ones
deleted after the manifest that drops them: a crash at any point leaves the
newest complete manifest pointing at files that exist, plus garbage that the
next open deletes. One compaction runs at a time (``_comp_lock``), one flush
at a time (``_flush_lock``); see the lock order in :mod:`.tree`. An ingest
takes the compaction lock when it is free and otherwise writes to level 0
beside the running job (:meth:`_Jobs._ingest_locked`).
Neither starts once ``close()`` has begun.

An ingest's caller waits for its files, so it writes them on
:data:`INGEST_WRITERS` threads (Parquet encoding, compression and file writes
release the GIL); background flushes and compactions write one file at a
time, leaving the other core to the writers.

Bulk loads
----------
An ingest whose keys overlap what is already there (hashed or random keys
overlap everything) lands in level 0, and the leveled policy merges level 0
into level 1 every ``l0_compaction_trigger`` files: during a long load each
merge rewrites all of level 1 again, a cost that grows with the square of
the load (measured: half a replica's CPU in a partitioned store's bulk load).
RocksDB's answer is ``PrepareForBulkLoad``, which turns automatic compaction
off until the load ends. A tree cannot be told when a load ends, so with
``bulk_window_s > 0`` (off by default, as RocksDB's is) each ingest opens, or
extends, a *bulk-load window* of that many seconds: while it
is open, no compaction is picked and level 0 does not slow writers down,
until it holds :func:`~.options.bulk_l0_limit` files (at most the stop
trigger, so writers never stall on a window). When the window closes the
compaction thread wakes by itself and merges what accumulated, once.
``compactions_deferred`` counts the ingests after which a compaction was due
and waited. Reads meanwhile probe more level-0 files (one Bloom filter each
for a point read, a merge of every file for a scan), and the deferred merge
competes with whatever runs after the load: measured in
docs/storage-engines.md ("Bulk-load window"), which is why it is an option.
"""

from __future__ import annotations

import collections
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..._validate import invariant
from ...errors import InvalidArgumentError
from .manifest import ENGINE_NAME, ManifestRecord, Version, manifest_name
from .memtable import SCHEMA, Memtable, ascend_strictly
from .merge import merge_runs, sort_rows, split_outputs
from .sstable import FileMeta, SSTable, load_table_meta, meta_name, sst_name, write_sstable

if TYPE_CHECKING:
    from .cache import ChargedLRU
    from .compaction import CompactionPolicy
    from .locks import TreeLock
    from .manifest import ManifestStore
    from .options import LSMOptions

#: Threads that write an ingest's SSTables side by side.
INGEST_WRITERS = max(1, min(4, os.cpu_count() or 1))

__all__: list[str] = []


class _Jobs:
    """Mixin of :class:`~.tree.LSMTree` holding everything that changes the set of files."""

    # --- state owned by LSMTree (set in its __init__ and by recover()), shared with this mixin ---
    _opts: LSMOptions
    _pool: pa.MemoryPool
    _fs: Any  # the fsspec filesystem
    _dir: str
    _policy: CompactionPolicy
    _manifests: ManifestStore
    _file_cache: ChargedLRU
    _row_cache: ChargedLRU
    _mutex: TreeLock
    _commit_lock: TreeLock
    _comp_lock: TreeLock
    _flush_lock: TreeLock
    _writers_cv: threading.Condition
    _bg_cv: threading.Condition
    _work_cv: threading.Condition
    _stopping: bool
    _released: bool
    _bg_error: BaseException | None
    _compaction_wanted: bool
    _bulk_until: float
    _bulk_l0: int
    _version: Version
    _manifest_number: int
    _log_number: int
    _last_seq: int
    _next_file: int
    _flushed_count: int
    _flushed_seq: int
    _mem: Memtable
    _imms: list[Memtable]
    _tables: dict[int, SSTable]
    _wal_files: dict[int, tuple[str, ...]]
    _pinned: dict[int, Version]
    _pending_delete: set[int]
    _snapshot_seqs: collections.Counter[int]
    _deferred: collections.deque[tuple[Version, int | None]]
    if TYPE_CHECKING:  # a method of LSMTree
        def _count(self, name: str, amount: float = 1) -> None: ...

    # --- commits ---------------------------------------------------------

    def _record(self, version: Version, log_number: int, last_seq: int) -> ManifestRecord:
        return ManifestRecord(ENGINE_NAME, self._manifest_number + 1, last_seq, log_number, self._next_file,
                              self._opts.compaction, version.levels)

    def _commit_version(self, deleted=(), added=(), *, flushed: Memtable | None = None,
                        last_seq: int | None = None) -> None:
        """Write and install the version current + edit (steps 1-4 of the module docstring)."""
        with self._commit_lock:
            with self._mutex:
                version = self._version.apply(deleted, added)
                log_number = flushed.next_wal if flushed is not None else self._log_number
                seq = max(self._last_seq, last_seq or 0)
                rec = self._record(version, log_number, seq)
            self._count("manifest_bytes", self._manifests.write(rec))
            old_manifest = self._manifest_number
            with self._mutex:
                self._manifest_number = rec.number
                self._version = version
                self._pending_delete.update(n for n in deleted if n not in version.numbers)  # moves stay
                if last_seq is not None:
                    self._last_seq = max(self._last_seq, last_seq)
                if flushed is not None:
                    invariant(bool(self._imms) and self._imms[0] is flushed, "flushes complete in order")
                    self._imms.pop(0)
                    self._flushed_count += 1
                    self._flushed_seq = max(self._flushed_seq, flushed.sealed_seq)
                    self._log_number = log_number
                # Deleted by name: the tree knows every object of its WALs (see _delete_paths).
                doomed_wals = [p for n in sorted(self._wal_files) if n < self._log_number
                               for p in self._wal_files.pop(n)]
                self._compaction_wanted = True
                doomed = self._collect_obsolete()
                self._bg_cv.notify_all()
                self._work_cv.notify_all()
        self._delete_paths([f"{self._dir}/{manifest_name(old_manifest)}"])
        self._delete_paths(doomed_wals)
        self._delete_tables(doomed)

    def _drain_deferred(self) -> None:
        """Under the mutex: apply releases queued by finalisers (garbage-collected snapshots, iterators)."""
        while self._deferred:
            version, seq = self._deferred.popleft()
            self._unref_locked(version)
            if seq is not None:
                self._drop_snapshot_seq(seq)

    def _drop_snapshot_seq(self, seq: int) -> None:
        self._snapshot_seqs[seq] -= 1
        if self._snapshot_seqs[seq] <= 0:
            del self._snapshot_seqs[seq]

    def _collect_obsolete(self) -> list[int]:
        """Under the mutex: table numbers no live version names any more (removed from the pending set)."""
        self._drain_deferred()
        if not self._pending_delete:
            return []
        live = set(self._version.numbers)
        for v in self._pinned.values():
            live |= v.numbers
        doomed = sorted(self._pending_delete - live)
        self._pending_delete.difference_update(doomed)
        for n in doomed:
            self._tables.pop(n, None)
        return doomed

    def _unref_locked(self, version: Version) -> None:
        version.refs -= 1
        if version.refs == 0:
            self._pinned.pop(id(version), None)

    def _delete_paths(self, paths) -> None:
        """Delete files by name, never by listing the directory.

        A listing races every other job that creates or deletes files (``memory://`` raises
        ``KeyError`` when a file vanishes mid-listing; S3 listings can be stale), so the tree
        keeps the names of everything it may delete. A file already gone is what we wanted.
        """
        for path in paths:
            try:
                self._fs.rm_file(path)
            except FileNotFoundError:
                pass

    def _delete_tables(self, numbers) -> None:
        """Delete the files of tables :meth:`_collect_obsolete` handed out (and their cache entries)."""
        for n in numbers:
            self._delete_table(n)

    def _delete_table(self, n: int) -> None:
        self._delete_paths([f"{self._dir}/{sst_name(n)}", f"{self._dir}/{meta_name(n)}"])
        self._row_cache.discard_if(lambda key: key[0] == n)
        self._file_cache.discard_if(lambda key: key == n)
        self._count("files_deleted", 1)

    def _new_file_number(self) -> int:
        """Under the mutex: a fresh file number."""
        n = self._next_file
        self._next_file += 1
        return n

    def _write_table(self, table: pa.Table, number: int | None = None) -> FileMeta:
        if number is None:
            with self._mutex:
                number = self._new_file_number()
        opts = self._opts
        fmeta, tmeta = write_sstable(self._fs, self._dir, number, table, row_group_rows=opts.row_group_rows,
                                     bloom_bits_per_key=opts.bloom_bits_per_key, compression=opts.compression,
                                     pool=self._pool)
        table = SSTable(self._fs, self._dir, fmeta, tmeta, files=self._file_cache, row_groups=self._row_cache)
        with self._mutex:  # published before the version that names it is installed
            self._tables[number] = table
        return fmeta

    def _open_table(self, meta) -> SSTable:
        return SSTable(self._fs, self._dir, meta, load_table_meta(self._fs, self._dir, meta.number),
                       files=self._file_cache, row_groups=self._row_cache)

    # --- flush -----------------------------------------------------------

    def _flush_oldest(self) -> bool:
        """Flush the oldest immutable memtable, if any; returns whether one was flushed."""
        with self._flush_lock:
            with self._mutex:
                # Not _stopping: an ingest that close() waits for must still flush before it loads.
                if self._released or not self._imms:  # closed: the WAL keeps what is not flushed
                    return False
                imm = self._imms[0]
            added = []
            if len(imm):
                fmeta = self._write_table(imm.to_table(self._pool))
                self._count("flush_bytes", fmeta.size + fmeta.meta_size)
                added.append((0, fmeta))
            self._commit_version((), added, flushed=imm)
            self._count("flushes", 1)
            return True

    def _flush_loop(self) -> None:
        self._background_loop(lambda: bool(self._imms), self._flush_oldest)

    def _compaction_loop(self) -> None:
        def wanted():
            return self._compaction_wanted and not self._bulk_left()

        def work():
            with self._mutex:
                self._compaction_wanted = False
            while not self._stopping and self._compact_once():
                pass
        self._background_loop(wanted, work, self._bulk_left)

    def _background_loop(self, wanted, work, wait_s=None) -> None:
        """Run ``work`` whenever ``wanted()``; ``wait_s()`` (under the mutex): seconds after which
        to look again without a notification (0: wait for one), as when a bulk-load window ends."""
        while True:
            with self._mutex:
                while not self._stopping and not wanted():
                    self._work_cv.wait((wait_s() or None) if wait_s is not None else None)
                if self._stopping:
                    return
            try:
                work()
            except BaseException as e:  # noqa: BLE001 -- kept and re-raised to every later writer
                with self._mutex:
                    self._bg_error = e
                    self._bg_cv.notify_all()
                    self._writers_cv.notify_all()
                return

    def _run_pending_work(self) -> None:
        """Inline mode (``background=False``): flush every immutable memtable, then compact until idle."""
        while self._flush_oldest():
            pass
        while self._compact_once():
            pass

    # --- compaction ------------------------------------------------------

    def _compact_once(self, job=None) -> bool:
        """Pick (or take) one job and run it; returns whether anything ran."""
        with self._comp_lock:
            with self._mutex:
                if self._stopping:  # closing: no new compaction (close() waits for a running one)
                    return False
                if job is None:
                    job = self._policy.pick(self._version)
                    if job is not None and self._bulk_left():
                        # A bulk load is under way: the job waits for the window's end (the
                        # compaction thread looks again then) or for level 0 to fill up.
                        self._compaction_wanted = True
                        job = None
                self._drain_deferred()
                snapshots = sorted(self._snapshot_seqs)
            if job is None:
                return False
            self._run_job(job, snapshots)
            return True

    def _run_job(self, job, snapshots: list[int]) -> None:
        inputs = [f.number for _, f in job.inputs]
        if job.trivial_move:
            (_, f), = job.inputs
            self._commit_version(inputs, [(job.output_level, f)])
            self._count("trivial_moves", 1)
            return
        tables = []
        for _, f in job.inputs:
            tables.append(self._tables[f.number].read_all())
            self._count("compaction_bytes_read", f.size)
        merged = merge_runs(tables, snapshots, job.bottommost, self._pool)
        added = []
        for piece in split_outputs(merged, job.target_file_bytes):
            fmeta = self._write_table(piece)
            self._count("compaction_bytes_written", fmeta.size + fmeta.meta_size)
            added.append((job.output_level, fmeta))
        self._commit_version(inputs, added)
        self._count("compactions", 1)

    # --- ingest ----------------------------------------------------------

    def _bulk_left(self) -> float:
        """Under the mutex: seconds left of the bulk-load window, or 0 when none is open or level 0
        already holds ``bulk_l0_files`` files (module docstring, "Bulk loads")."""
        until = self._bulk_until
        if not until:
            return 0.0
        left = until - self._opts.clock()
        if left <= 0:
            self._bulk_until = 0.0
            return 0.0
        return left if self._policy.pressure_files(self._version) < self._bulk_l0 else 0.0

    def _ingest_locked(self, table: pa.Table) -> None:
        """Bulk load (the caller holds the head of the write queue; memtables are flushed).

        A running compaction does not hold the load up: when it has the compaction lock, the rows
        go to level 0 instead of waiting for it to finish (measured: waits of 0.28-0.57 s per
        ingest during a partitioned store's bulk load, the caller's whole write queue stalled). Level
        0 is safe beside any job: a level-0 file may overlap anything, the rows' sequence numbers
        are newer than every input of the job, and the job's commit removes only its own inputs.
        A deeper level is not: the job's outputs could land across the new file's key range in the
        level it writes (RocksDB's ``IngestExternalFile`` likewise checks running compactions'
        output ranges before it places a file).
        """
        placed = self._comp_lock.acquire(blocking=False)  # held: nothing else places files meanwhile
        try:
            self._ingest_rows(table, placed)
        finally:
            if placed:
                self._comp_lock.release()

    def _ingest_rows(self, table: pa.Table, placed: bool) -> None:
        """:meth:`_ingest_locked`'s work; ``placed``: the caller holds the compaction lock."""
        with self._mutex:
            invariant(not self._imms and not len(self._mem), "ingest needs flushed memtables")
            base = self._last_seq + 1
        n = table.num_rows
        rows = pa.table([table.column("key"), pa.array(np.arange(base, base + n, dtype=np.uint64)),
                         pa.array(np.zeros(n, np.uint8)), table.column("value")], schema=SCHEMA)
        rows = _sort_ingest_rows(rows.combine_chunks(), self._pool)
        target = self._opts.target_file_bytes if self._opts.compaction == "leveled" else None
        pieces = split_outputs(rows, target)
        with self._mutex:
            numbers = [self._new_file_number() for _ in pieces]  # in key order, whoever finishes first
        if len(pieces) > 1 and INGEST_WRITERS > 1:
            with ThreadPoolExecutor(INGEST_WRITERS, thread_name_prefix="lsm-ingest") as pool:
                metas = list(pool.map(self._write_table, pieces, numbers))
        else:
            metas = [self._write_table(p, n) for p, n in zip(pieces, numbers)]
        keys = rows.column("key")
        lo, hi = keys[0].as_py(), keys[len(keys) - 1].as_py()
        with self._mutex:
            level = self._policy.ingest_level(self._version, lo, hi) if placed else 0
            if self._opts.bulk_window_s:  # opened before the commit wakes the compaction thread
                self._bulk_until = self._opts.clock() + self._opts.bulk_window_s
        self._commit_version((), [(level, m) for m in metas], last_seq=base + n - 1)
        with self._mutex:  # counted per ingest after which a compaction was due and waits
            if self._bulk_left() and self._policy.pick(self._version) is not None:
                self._count("compactions_deferred", 1)
        self._count("ingest_bytes", sum(m.size + m.meta_size for m in metas))
        self._count("user_bytes", sum(m.logical_bytes for m in metas))


def _check_ingest_table(table) -> pa.Table:
    """A ``key``/``value`` table of binary columns without nulls, as plain ``binary``."""
    if not isinstance(table, pa.Table):
        raise InvalidArgumentError(f"ingest takes a pyarrow.Table, got {type(table).__name__}")
    cols = []
    for name in ("key", "value"):
        if name not in table.column_names:
            raise InvalidArgumentError(f"ingest needs a {name!r} column; got {table.column_names}")
        col = table.column(name)
        if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)
                or pa.types.is_fixed_size_binary(col.type)):
            raise InvalidArgumentError(f"column {name!r} must be binary, got {col.type}")
        if col.null_count:
            raise InvalidArgumentError(f"column {name!r} has {col.null_count} nulls")
        cols.append(pc.cast(col, pa.binary()))
    return pa.table(cols, names=["key", "value"])


def _sort_ingest_rows(rows: pa.Table, pool: pa.MemoryPool | None = None) -> pa.Table:
    """:func:`sort_rows` for ingest, whose seqs ascend in row order (new buffers from ``pool``).

    Keys that already ascend strictly are the order as they are. When every key has the same
    width, NumPy's stable sort of the keys as fixed-width
    byte strings (compared bytewise, like ``bytes``) is about twice Arrow's binary sort;
    sorting the *reversed* rows stably puts a repeated key's newest version first.
    Keys of 8 bytes or more are first sorted by their leading 8 bytes as big-endian
    integers (the same order, half the string sort's time); that order is kept only
    when no two keys share those 8 bytes (random or hashed keys), else the string
    sort decides.
    """
    keys = rows.column("key").chunk(0) if rows.column("key").num_chunks == 1 else None
    if keys is None or len(keys) < 2:
        return sort_rows(rows, pool)
    # Rows already in key order, each key once (a partitioned store's bulk load sorts its rows by
    # stored key before it cuts them by partition): nothing to sort and nothing to copy.
    if ascend_strictly(keys):
        return rows
    lengths = pc.binary_length(keys)
    width = pc.min(lengths).as_py()
    if width == 0 or width != pc.max(lengths).as_py():
        return sort_rows(rows, pool)
    offsets = np.frombuffer(keys.buffers()[1], np.int32, len(keys) + 1, keys.offset * 4)
    data = np.frombuffer(keys.buffers()[2], f"S{width}", len(keys), offsets[0])
    order = None
    if width >= 8:
        lead = np.ascontiguousarray(data.view(np.uint8).reshape(-1, width)[::-1, :8]).view(">u8").ravel()
        order = np.argsort(lead, kind="stable")
        ordered = lead[order]
        if (ordered[1:] == ordered[:-1]).any():  # a shared prefix: the remaining bytes must decide
            order = None
    if order is None:
        order = np.argsort(data[::-1], kind="stable")
    return pc.take(rows, pa.array(len(keys) - 1 - order), memory_pool=pool)
