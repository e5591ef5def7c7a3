"""The LSM-tree: WAL + memtable in front of leveled or tiered Parquet SSTables.

Theory of operation
-------------------
Writes (DDIA ch. 3, "SSTables and LSM-Trees"): a writer joins a queue; the
writer at its head is the *leader*: it makes room (switching to a fresh
memtable and WAL when the memtable is full, stalling if flushes are behind),
assigns consecutive sequence numbers to every batch queued behind it,
appends all of them to the WAL in one write (group commit), applies them to
the memtable and publishes the new ``last_seq``. Only then are those writers
acknowledged; a batch is one WAL frame, so it survives a crash whole or not
at all. Full memtables are flushed and files compacted by background threads
(:mod:`.jobs`).

Reads (:mod:`.reads`): a reader takes ``seq`` (its snapshot's, or
``last_seq``), looks in the active then the immutable memtables, then asks
level 0 newest first, then one file per deeper level. Scans merge memtables
and SSTables lazily, or stream one clean sorted run when nothing needs merging.

Threads: every public method may be called from any thread. One mutex guards
the in-memory state; WAL appends, SSTable reads and writes, manifest writes
and deletions all happen outside it (a ``get`` answered from cached row
groups runs under it: that is memory access only).

Lock order
----------
A thread takes locks only in increasing rank, never waits for a lower rank
while holding a higher one, and waits on a condition only while holding
nothing above it but the condition's own mutex (checked at run time when
``DDIA_LSM_LOCK_CHECK=1``, see :mod:`.locks`):

==== ============================ ==================================================
rank lock                         guards
==== ============================ ==================================================
1    write-queue head (leader)    the WAL writer's appends and memtable switches; an
                                  ingest and a checkpoint's cut run as head, so
                                  writers wait for them
2    ``_comp_lock``               one compaction or ingest at a time (job inputs)
3    ``_flush_lock``              one flush at a time (``_imms[0]`` is being written)
4    ``_commit_lock``             manifests written in number order
5    ``_mutex`` and its conditions every field listed below
     ``_writers_cv``, ``_bg_cv``,
     ``_work_cv``
6    ``_stats_lock``              ``_counters``
7    each LRU cache's own lock    that cache's entries (a leaf: calls nothing)
==== ============================ ==================================================

One owner per piece of state:

* ``_mutex``: ``_version``, ``_mem``, ``_imms``, ``_last_seq``, ``_log_number``,
  ``_next_file``, ``_wal`` (which writer is current), ``_wal_files``,
  ``_tables``, ``_pinned``, ``_pending_delete``, ``_snapshot_seqs``,
  ``_writers``, ``_closed``/``_stopping``/``_released``, ``_bg_error``, the
  counters and tallies of the hot path, ``_live_scans``; ``_manifest_number``
  is written under ``_commit_lock`` *and* the mutex: either suffices to read it.
* the write-queue head: appends to ``_wal`` (the one-op fast path appends
  under the mutex with the queue empty: it is the head for that instant).
* ``_deferred``: appended lock-free by finalisers (``deque.append`` is
  atomic), drained under the mutex.

``close()`` marks the tree closed under the mutex (new writes are refused
with :class:`DatabaseClosedError`), waits until the write queue is empty (an
in-flight group commit finishes, with the writers it carries; writers queued
behind it are refused), joins the background threads, then takes ranks 2 and
3 to wait for jobs that callers run inline, and only then closes the WAL. So
every write either completes before ``close()`` returns (and is replayed on
open) or raises :class:`DatabaseClosedError`; nothing touches the mapped WAL
after it is unmapped. A second ``close()`` waits for the first to finish.

``close()`` flushes nothing unless ``close(flush=True)``: unflushed writes
are in the WAL and replayed by the next open.
"""

from __future__ import annotations

import collections
import threading
import types
import weakref
from typing import Any, Mapping, cast

import fsspec
import pyarrow as pa

from ...errors import DatabaseClosedError, InvalidArgumentError, StorageError
from ..engine import OpColumns, WriteBatch, check_batch, check_range, to_key, to_value
from .cache import ChargedLRU
from .checkpoint import checkpoint_tree
from .compaction import make_policy
from .jobs import _check_ingest_table, _Jobs
from .locks import make_locks
from .manifest import ManifestStore, Version
from .memtable import DELETE, PUT, RANGE_DELETE, PutColumns
from .options import LSMOptions, arrow_pool, bulk_l0_limit, parse_options
from .recovery import recover
from .snapshot import LSMSnapshot
from .reads import _ReadPath
from .writes import _WritePath

__all__ = ["LSMTree", "LSMSnapshot"]

_KINDS = {"put": PUT, "delete": DELETE, "delete_range": RANGE_DELETE}


_arrow_warm = False


def _warm_arrow() -> None:
    """Make pyarrow's first ``pa.array`` call now, once per process.

    That call imports pandas (pyarrow checks its input against pandas types): 0.18 s of CPU here,
    held under the GIL and the import lock. Made by the first flush, it stalled every writer of
    the process for that long, in the middle of a write stream (py-spy of a replica, 2026-12-05:
    the largest single item of its first seconds under load); an open pays it instead.
    """
    global _arrow_warm
    if not _arrow_warm:
        pa.array([0], pa.uint8())
        _arrow_warm = True


class LSMTree(_WritePath, _ReadPath, _Jobs):
    """A log-structured merge-tree storage engine (implements ``StorageEngine``)."""

    @classmethod
    def open(cls, url: str, **options) -> "LSMTree":
        """Open (creating if allowed) the database at the fsspec ``url``; see :class:`LSMOptions`."""
        return cls(url, parse_options(**options))

    def __init__(self, url: str, opts: LSMOptions):
        if not isinstance(opts, LSMOptions):
            raise InvalidArgumentError("use LSMTree.open(url, **options)")
        if not isinstance(url, str) or not url:
            raise InvalidArgumentError("url must be a non-empty string")
        _warm_arrow()
        self._opts = opts
        self._pool = arrow_pool(opts.memory_pool)  # background jobs' Arrow buffers (see options)
        if opts.filesystem is not None:
            self._fs, path = opts.filesystem, opts.filesystem._strip_protocol(url)
        else:
            self._fs, path = fsspec.core.url_to_fs(url, **(opts.storage_options or {}))
        self._dir = path.rstrip("/") or "/"
        self.url = url
        self._policy = make_policy(opts.compaction, l0_compaction_trigger=opts.l0_compaction_trigger,
                                   level_base_bytes=opts.level_base_bytes, level_fanout=opts.level_fanout,
                                   num_levels=opts.num_levels, target_file_bytes=opts.target_file_bytes,
                                   size_ratio=opts.tiered_size_ratio, max_runs=opts.l0_slowdown_trigger)
        # Ranked wrappers under DDIA_LSM_LOCK_CHECK=1 (the lock order above), plain locks otherwise.
        self._lock_check, locks = make_locks()
        self._mutex = mutex = locks["mutex"]
        self._writers_cv = threading.Condition(mutex)
        self._bg_cv = threading.Condition(mutex)
        self._work_cv = threading.Condition(mutex)
        self._commit_lock = locks["commit"]
        self._comp_lock = locks["compaction"]
        self._flush_lock = locks["flush"]
        self._stats_lock = locks["stats"]
        self._close_done = threading.Event()
        self._writers = collections.deque()
        self._deferred = collections.deque()
        self._pinned = {}
        self._pending_delete = set()
        self._snapshot_seqs = collections.Counter()
        # A Counter (a name never counted reads 0) whose tallies may be floats (stall_time_s); typeshed's
        # Counter holds ints only, so the type checker is told what it is: a dict of numbers.
        self._counters = cast("dict[str, float]", collections.Counter())
        self._read_tally = [0, 0, 0]  # gets, sst_probes, bloom_negatives (under the mutex: hot path)
        self._write_tally = [0, 0, 0]  # user_bytes, batches, group_commits (under the mutex: hot path)
        self._live_scans = weakref.WeakSet()  # fast scans to stop at close()
        self._file_cache = ChargedLRU(opts.max_open_files)
        self._row_cache = ChargedLRU(opts.row_cache_bytes)
        self._manifests = ManifestStore(self._fs, self._dir)
        self._closed = self._stopping = False  # set together by close(), under the mutex
        self._released = False  # set by close() once no flush or compaction runs or will start
        self._bg_error = None
        self._compaction_wanted = True
        self._bulk_until = 0.0  # end of the bulk-load window on opts.clock (0: none; see jobs, "Bulk loads")
        self._bulk_l0 = bulk_l0_limit(opts)
        self._switch_count = self._flushed_count = 0
        self._flushed_seq = 0  # newest seq flushed to SSTables (recovery sets it; see durable_seq)
        self._imms = []
        self._calm_key = None  # (version, immutable count, no backpressure?): see _WritePath._calm
        self._threads: list[threading.Thread] = []
        recover(self)  # sets version, tables, memtable, WAL, sequence and file counters
        if opts.background:
            for name, target in (("flush", self._flush_loop), ("compaction", self._compaction_loop)):
                t = threading.Thread(target=target, name=f"lsm-{name}", daemon=True)
                t.start()
                self._threads.append(t)
        else:
            self._run_pending_work()

    # --- helpers -----------------------------------------------------------

    def _count(self, name: str, amount: float = 1) -> None:
        with self._stats_lock:
            self._counters[name] += amount

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseClosedError("the database is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._bg_error is not None:
            raise StorageError(f"a background flush or compaction failed: {self._bg_error!r}") \
                from self._bg_error

    def _read_seq(self, snapshot: LSMSnapshot | None) -> int:
        if snapshot is None:
            return self._last_seq
        if not isinstance(snapshot, LSMSnapshot) or snapshot._tree is not self:
            raise InvalidArgumentError("snapshot must come from this database's snapshot()")
        if snapshot.released:
            raise DatabaseClosedError("the snapshot was released")
        return snapshot.seq

    def _pin_locked(self) -> Version:
        v = self._version
        v.refs += 1
        self._pinned[id(v)] = v
        return v

    def _unpin(self, version: Version, deferred: bool = False) -> None:
        if deferred:
            self._deferred.append((version, None))  # finalisers may run while the mutex is held
            return
        with self._mutex:
            self._unref_locked(version)
            doomed = self._collect_obsolete() if version is not self._version else []
        if doomed:
            self._delete_tables(doomed)

    # --- writes ------------------------------------------------------------

    def put(self, key, value) -> None:
        """Set ``key`` to ``value``."""
        self._commit_one(PUT, key if type(key) is bytes else to_key(key),
                         value if type(value) is bytes else to_value(value))

    def delete(self, key) -> None:
        """Delete ``key``."""
        self._commit_one(DELETE, key if type(key) is bytes else to_key(key), b"")

    def delete_range(self, start, end) -> None:
        """Delete every key in ``[start, end)``."""
        s, e = check_range(start, end)
        if s is None or e is None:
            raise InvalidArgumentError("delete_range needs both ends")
        self._commit(((RANGE_DELETE, s, e),))

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically (one WAL frame, consecutive sequence numbers)."""
        ops = [(_KINDS[op.kind], op.key, op.end if op.kind == "delete_range" else op.value)
               for op in check_batch(batch)]
        if ops:
            self._commit(tuple(ops))

    def write_columns(self, columns: OpColumns) -> None:
        """:meth:`write` of a batch given as columns, as it crosses an actor boundary.

        No :class:`~ddia_ray.storage.engine.Op` record per operation: a storage node's
        ``put_many`` of 1,000 keys spent three quarters of its time building them.
        """
        if not isinstance(columns, OpColumns):
            raise InvalidArgumentError(f"write_columns() takes OpColumns, got {type(columns).__name__}")
        ops = columns.checked_ops()
        if ops:
            self._commit(ops)

    def write_checked(self, ops: tuple, tail: tuple = ()) -> None:
        """:meth:`write` of operations their owner has already checked, as they are.

        ``ops`` is a tuple of ``(code, key, tail)`` tuples: code 0 a put (tail: the value), 1 a
        delete (tail: ``b""``), 2 a range delete (tail: its end, not below the key); keys and tails
        bytes. Nothing here checks them again. It is the path of an owner that validates once at
        its own edge: a replica checks each log entry as it arrives (``replication.records.
        check_ops``) and its entries already hold these tuples, which the memtable keeps as
        they come. Through :meth:`write_columns` the same batch was transposed into columns, checked
        again and zipped back, a third of a replica's apply (docs/replication.md).

        ``tail`` holds more ops of the same atomic batch, after ``ops`` (a replica's bookkeeping
        rows): passed apart, a large ``ops`` is kept by the memtable as the tuple it is (a pending
        run, see :mod:`.memtable`) and reads of the bookkeeping rows do not index it.
        """
        if ops or tail:
            self._commit(ops, tail=tail)

    def write_puts(self, keys: pa.Array, values: pa.Array, tail: tuple = ()) -> None:
        """:meth:`write_checked` of puts given as columns: ``keys[i] -> values[i]``, two ``binary``
        Arrow arrays of equal length (no nulls) that their owner has checked, then ``tail``.

        The memtable keeps the arrays as one pending run and the flush sorts them as they are, so
        no Python object is made per row unless a read needs the memtable's index: a replica
        applying a log entry of a thousand puts this way does a few C-level passes where op tuples
        cost a step per row (docs/replication.md, "Puts as columns"). Without ``wal=False`` the
        WAL record still holds one op per row.
        """
        if len(keys) != len(values):
            raise InvalidArgumentError(f"write_puts() got {len(keys)} keys and {len(values)} values")
        if len(keys) or tail:
            self._commit(PutColumns(keys, values), tail=tail)

    # --- snapshots ---------------------------------------------------------

    def snapshot(self) -> LSMSnapshot:
        """A read view at the current sequence number (pins the current version until released)."""
        with self._mutex:
            self._check_open()
            snap = LSMSnapshot(self, self._last_seq, self._pin_locked())
            self._snapshot_seqs[snap.seq] += 1
            return snap

    def _release_snapshot(self, snap: LSMSnapshot, deferred: bool) -> None:
        if deferred:
            self._deferred.append((snap._version, snap.seq))
            return
        with self._mutex:
            self._drop_snapshot_seq(snap.seq)
        self._unpin(snap._version)

    # --- maintenance -------------------------------------------------------

    def flush(self) -> None:
        """Write the memtable to an SSTable and wait until every immutable memtable is flushed."""
        self._commit((), force=True)
        with self._mutex:
            target = self._switch_count
            while self._flushed_count < target:
                self._check_writable()
                if not self._opts.background:
                    break
                self._bg_cv.wait()
        if not self._opts.background:
            self._run_pending_work()

    def compact(self) -> None:
        """Flush, then merge every SSTable into one bottommost sorted run; waits until done."""
        self.flush()
        self._check_writable()
        with self._mutex:
            job = self._policy.full(self._version)
        if job is not None:
            with self._comp_lock:
                with self._mutex:  # re-pick under the lock: a background job may have changed the files
                    self._check_open()  # close() waits only for the jobs that hold the lock already
                    job = self._policy.full(self._version)
                    self._drain_deferred()
                    snapshots = sorted(self._snapshot_seqs)
                if job is not None:
                    self._run_job(job, snapshots)

    def ingest(self, table: pa.Table) -> None:
        """Bulk-load ``table`` (``key``, ``value`` binary columns) straight into SSTables.

        Bypasses WAL and memtable: the memtable is flushed, the rows get fresh sequence numbers in
        table order (a key repeated in the table keeps its last value), are sorted by pyarrow and
        written as SSTables that one manifest commit adds: after a crash either every row is there
        or none is. Writers wait while it runs; readers do not.
        """
        table = _check_ingest_table(table)
        if table.num_rows:
            self._commit((), exclusive=lambda: self._ingest_locked(table))

    def checkpoint(self, dst_url: str, *, storage_options: dict | None = None) -> dict:
        """A consistent point-in-time copy of the tree in ``dst_url`` (an empty or absent directory).

        Flushes the memtable, pins the current version (so no compaction deletes its files while
        they are copied), copies its SSTables and sidecars through fsspec (hard links when both
        sides are the local disk) and writes a manifest naming exactly them, then a ``CHECKPOINT``
        descriptor. Writes go on during the copy; the checkpoint holds every write acknowledged
        before the call and none after ``seq`` (see :mod:`.checkpoint`). ``LSMTree.open(dst_url)``
        (with this tree's ``compaction`` option) opens it. Returns ``{"engine": "lsm", "url",
        "seq", "files", "bytes", "linked"}``; a non-empty ``dst_url`` raises ConfigError.
        ``storage_options`` are fsspec's for ``dst_url`` (the tree's own apply to its own URL only).
        """
        self._check_writable()
        return checkpoint_tree(self, dst_url, storage_options)

    def close(self, *, flush: bool = False) -> None:
        """Stop background work and release files; unflushed writes stay in the WAL (replayed on open).

        Writes racing ``close()`` either complete (and are replayed by the next open) or raise
        :class:`DatabaseClosedError`; see "Lock order" in the module docstring for how. A tree
        without a WAL (``wal=False``) flushes first, as ``flush=True`` does: its memtable is
        in memory only (RocksDB flushes at close when the WAL is disabled, for the same reason).
        """
        if (flush or not self._opts.wal) and not self._closed:
            try:
                self.flush()
            except BaseException:
                self._release()  # the files are released even so
                raise
        self._release()

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest write."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """The newest sequence number a crash of this process keeps: every write with a WAL; without
        one (``wal=False``), the writes of the memtables flushed to SSTables."""
        return self._last_seq if self._opts.wal else self._flushed_seq

    def request_flush(self) -> None:
        """Start flushing the memtable in the background and return (:meth:`flush` waits)."""
        if self._opts.background:
            self._commit((), force=True)
        else:
            self.flush()

    def _release(self) -> None:
        with self._mutex:
            first = not self._closed
            if first:
                self._closed = self._stopping = True
                for it in list(self._live_scans):
                    it.abort()
                self._work_cv.notify_all()
                self._bg_cv.notify_all()
                self._writers_cv.notify_all()
                # The head of the write queue may be appending to the WAL outside the mutex: wait
                # for it (and for each queued writer, which now refuses itself) before unmapping it.
                while self._writers:
                    self._writers_cv.wait()
        if not first:
            self._close_done.wait()  # idempotent, and returns only once the files are released
            return
        try:
            for t in self._threads:
                t.join()
            # Ranks 2 then 3 (the lock order): flushes and compactions that callers run inline
            # finish first; later ones see _stopping (compactions) or _released (flushes).
            with self._comp_lock, self._flush_lock:
                with self._mutex:
                    self._released = True
                wal = self._wal
                wal.close(sync=self._opts.sync == "flush")
                if wal.bytes_written == 0:  # nothing to replay: do not leave empty logs behind
                    self._delete_paths(wal.objects())
            self._file_cache.clear()
            self._row_cache.clear()
        finally:
            self._close_done.set()  # even if the WAL failed to close: a second close() must not hang

    def __enter__(self) -> "LSMTree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> Mapping[str, Any]:
        """Counters, amplification figures and the shape of the tree (an immutable mapping)."""
        from .stats import build_stats

        return types.MappingProxyType(build_stats(self))
