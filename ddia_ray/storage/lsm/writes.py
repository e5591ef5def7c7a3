"""The write path: group commit into the WAL, memtable switches and write backpressure.

Theory of operation
-------------------
A writer joins a FIFO queue; the writer at its head is the *leader* (LevelDB's
``DBImpl::Write``). The leader makes room (:meth:`_WritePath._make_room`),
assigns consecutive sequence numbers to every batch queued behind it, then,
outside the mutex, appends all their WAL frames with one write (and one fsync
under ``sync="batch"``) — *group commit*. Back under the mutex it applies the
batches to the memtable, publishes ``last_seq`` and wakes the writers it
carried. Writers behind it stay queued meanwhile, so the WAL order is the
sequence order. ``close()`` waits until the queue is empty before it closes
the WAL, so a leader's append is never cut off; a writer that reaches the head
after ``close()`` began leaves with :class:`DatabaseClosedError` (see the lock
order in :mod:`.tree`, where the head of the queue is rank 1).

Backpressure (RocksDB's write stalls): while level 0 holds
``l0_slowdown_trigger`` files or the immutable memtables are at their limit,
each write first sleeps ``slowdown_sleep_s`` (``slowdowns``). A leader that
needs a fresh memtable while ``max_immutable_memtables`` are still waiting
for the flusher, or that finds ``l0_stop_trigger`` files in level 0, waits
for background progress (``stalls``, ``stall_time_s``) and gives up with
:class:`WriteStallError` after ``stall_timeout_s``.

GIL handoff: the flusher and the compactor are Python threads. A single-key
writer holds the GIL between its calls and never blocks, so every time a
background job gives the GIL up (each Arrow, NumPy or file call does) it waits
up to the interpreter's switch interval (5 ms) to get it back: a 64 MiB flush
took two seconds beside a writer instead of under one alone, two immutable
memtables piled up and the writers slept. While a flush is pending, the fast
path therefore releases the GIL once every :data:`HANDOFF_WRITES` writes
(``time.sleep(0)``, counted in ``gil_handoffs``), which lets a waiting
background thread run at once. Measured in docs/storage-engines.md ("GIL handoff").
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any

from ...errors import WriteStallError
from .locks import RANK_LEADER
from .memtable import Memtable, PutColumns
from .wal import NullWal, WalWriter, open_wal

if TYPE_CHECKING:
    from .compaction import CompactionPolicy
    from .locks import LockOrderChecker, TreeLock
    from .manifest import Version
    from .options import LSMOptions

__all__: list[str] = []

_MAX_GROUP_BATCHES = 1024
#: While a flush is pending, the single-key fast path hands the GIL over once per this many writes.
HANDOFF_WRITES = 256


class _Writer:
    __slots__ = ("ops", "tail", "force", "first_seq", "done", "error")

    def __init__(self, ops, force: bool = False, tail: tuple = ()):
        self.ops = ops
        self.tail = tail
        self.force = force
        self.first_seq = 0
        self.done = False
        self.error: BaseException | None = None


def _wal_ops(w: _Writer) -> tuple:
    """The op tuples of ``w``'s batch as its WAL record holds them (columns turned into tuples)."""
    ops = w.ops if type(w.ops) is not PutColumns else w.ops.as_ops()
    return ops + w.tail if w.tail else ops


class _WritePath:
    """Mixin of :class:`~.tree.LSMTree`: the write path (see the module docstring)."""

    # --- state owned by LSMTree (set in its __init__ and by recover()), shared with this mixin ---
    _opts: LSMOptions
    _fs: Any  # the fsspec filesystem
    _dir: str
    _policy: CompactionPolicy
    _lock_check: LockOrderChecker | None
    _mutex: TreeLock
    _stats_lock: TreeLock
    _writers_cv: threading.Condition
    _bg_cv: threading.Condition
    _work_cv: threading.Condition
    _writers: collections.deque[_Writer]
    _closed: bool
    _bg_error: BaseException | None
    _version: Version
    _mem: Memtable
    _imms: list[Memtable]
    _wal: WalWriter | NullWal
    _wal_files: dict[int, tuple[str, ...]]
    _last_seq: int
    _switch_count: int
    _flushed_count: int
    _calm_key: tuple[Version, int, bool] | None
    _bulk_until: float
    _counters: dict[str, float]
    _write_tally: list[int]
    if TYPE_CHECKING:  # methods of LSMTree and _Jobs
        def _count(self, name: str, amount: float = 1) -> None: ...
        def _check_writable(self) -> None: ...
        def _new_file_number(self) -> int: ...
        def _run_pending_work(self) -> None: ...
        def _bulk_left(self) -> float: ...

    def _slowdown(self) -> None:
        """LevelDB's gentle brake: one short sleep per write while level 0 is getting crowded."""
        opts = self._opts
        if opts.background and ((self._policy.pressure_files(self._version) >= opts.l0_slowdown_trigger
                                 and not self._bulk_left())  # a bulk load's files: no brake (jobs)
                                or len(self._imms) >= opts.max_immutable_memtables):
            self._count("slowdowns")
            opts.sleep(opts.slowdown_sleep_s)

    def _calm(self) -> bool:
        """Under the mutex: whether a write may skip the backpressure checks (no slowdown, no stall).

        The answer depends only on the current version and the number of immutable
        memtables, so it is cached against both and recomputed when either changes.
        """
        version, imms = self._version, len(self._imms)
        if self._calm_key is not None and self._calm_key[0] is version and self._calm_key[1] == imms:
            return self._calm_key[2]
        opts = self._opts
        pressure = self._policy.pressure_files(version)
        bulk = self._bulk_left() > 0  # no slowdown in a bulk-load window
        calm = opts.background and (bulk or pressure < opts.l0_slowdown_trigger) \
            and pressure < opts.l0_stop_trigger and imms < opts.max_immutable_memtables
        # An answer that a bulk-load window decided ends with the window, not with a new version:
        # not cached (asked again per write while the window lasts).
        self._calm_key = None if bulk else (version, imms, calm)
        return calm

    def _commit_one(self, kind: int, key: bytes, value: bytes) -> None:
        """One-op commit: the group-commit protocol in one step when nothing stands in the way.

        When no other writer is queued, the WAL's appends never wait for I/O
        (:attr:`~.wal.WalWriter.cheap`), the memtable has room and no backpressure
        applies, the writer appends and applies under the mutex in one go: an append
        is then a copy into memory, shorter than the two extra mutex round trips it
        would take to do it outside. Any other case takes :meth:`_commit`.
        """
        with self._mutex:
            mem, wal, calm = self._mem, self._wal, self._calm_key
            if not (self._writers or self._closed or self._bg_error is not None) and wal.cheap \
                    and mem.approx_bytes < self._opts.memtable_bytes \
                    and (calm[2] if calm is not None and calm[0] is self._version and calm[1] == len(self._imms)
                         else self._calm()):  # _calm()'s cache, read here: a call less per write
                seq = self._last_seq + 1
                try:
                    wal.append_one_mapped(seq, kind, key, value)
                except BaseException as e:  # the WAL may hold a partial append: refuse further writes
                    self._bg_error = e
                    raise
                mem.apply_one(seq, kind, key, value)
                self._last_seq = seq
                t = self._write_tally
                t[0] += len(key) + len(value)
                t[1] += 1
                t[2] += 1
                if not self._imms or t[2] % HANDOFF_WRITES:
                    return
                handoff = True  # outside the mutex, which the flusher also takes
            else:
                handoff = False
        if handoff:
            time.sleep(0)  # releases the GIL (see "GIL handoff" in the module docstring)
            self._count("gil_handoffs")
            return
        self._commit(((kind, key, value),))

    def _commit(self, ops, *, force: bool = False, exclusive=None, tail: tuple = ()) -> None:
        """Group commit (see the module docstring); ``exclusive`` runs alone after a forced switch.

        ``ops`` are checked ``(code, key, tail)`` tuples; their bytes are counted as the memtable
        applies them, so no caller walks a batch only to size it. ``tail`` holds more such ops of
        the same atomic batch (one WAL frame, the seqs after ``ops``'), applied to the memtable
        apart so that a large ``ops`` stays one pending run (see :mod:`.memtable`)."""
        w = _Writer(ops, force or exclusive is not None, tail)
        if not w.force:
            self._slowdown()
        with self._mutex:
            self._check_writable()
            self._writers.append(w)
            while not w.done and self._writers[0] is not w:
                self._writers_cv.wait()
            if w.done:
                if w.error is not None:
                    raise w.error
                return
            led = False
            try:
                self._lead(True)
                led = True
                self._make_room(w.force)
                if exclusive is not None:
                    target = self._switch_count
                    while self._flushed_count < target and self._opts.background:
                        self._check_writable()
                        self._bg_cv.wait()
            except BaseException:
                self._writers.popleft()
                if led:
                    self._lead(False)
                self._writers_cv.notify_all()  # the next writer leads; close() may be waiting too
                raise
            if w.force:
                group = [w]
            else:
                group = [w]
                for other in self._writers:
                    if other is w:
                        continue
                    if other.force or len(group) >= _MAX_GROUP_BATCHES:
                        break
                    group.append(other)
                seq = self._last_seq
                for g in group:
                    g.first_seq = seq + 1
                    seq += len(g.ops) + len(g.tail)
            wal, mem = self._wal, self._mem
        # Outside the mutex, as head of the queue: close() waits for the queue to empty before it
        # closes the WAL, so the WAL stays open (and mapped) until this append is done.
        error: BaseException | None = None
        try:
            if exclusive is not None:
                if not self._opts.background:
                    self._run_pending_work()
                exclusive()
            elif not w.force and wal.logs:  # no WAL: nothing to encode (columns stay columns)
                wal.append(b"".join([wal.encode(g.first_seq, _wal_ops(g)) for g in group]))
        except BaseException as e:  # noqa: BLE001 -- handed to every writer of the group
            error = e
        applied_bytes = 0
        with self._mutex:
            if error is None and not w.force:
                before = mem.user_bytes
                for g in group:
                    mem.apply(g.first_seq, g.ops)
                    if g.tail:
                        mem.apply(g.first_seq + len(g.ops), g.tail)
                applied_bytes = mem.user_bytes - before
                self._last_seq = seq
            elif error is not None and not w.force:
                self._bg_error = error  # the WAL may hold a partial append: refuse further writes
            for g in group:
                self._writers.popleft()
                g.done, g.error = True, error
            self._lead(False)
            self._writers_cv.notify_all()
        if not w.force:
            with self._stats_lock:
                c = self._counters
                c["user_bytes"] += applied_bytes
                c["batches"] += len(group)
                c["group_commits"] += 1
        if error is not None:
            raise error
        if not self._opts.background:
            self._run_pending_work()

    def _lead(self, taking: bool) -> None:
        """Under the mutex: report taking or leaving the head of the write queue to the lock checker."""
        check = self._lock_check
        if check is not None:
            if taking:
                check.acquiring(RANK_LEADER, "write-queue head", beneath="mutex")
            else:
                check.released(RANK_LEADER, "write-queue head")

    def _make_room(self, force: bool) -> None:
        """Under the mutex, as leader: switch memtables when full; stall while flushes are behind."""
        opts = self._opts
        started = None
        try:
            while True:
                self._check_writable()
                mem_full = len(self._mem) > 0 if force else self._mem.approx_bytes >= opts.memtable_bytes
                imm_full = len(self._imms) >= opts.max_immutable_memtables
                l0_full = self._policy.pressure_files(self._version) >= opts.l0_stop_trigger
                if not opts.background or not (l0_full or (mem_full and imm_full)):
                    if mem_full:
                        self._switch_memtable()
                    return
                now = opts.clock()
                if started is None:
                    started = now
                    self._count("stalls")
                remaining = opts.stall_timeout_s - (now - started)
                if remaining <= 0:
                    raise WriteStallError(f"writes stalled for {now - started:.3f}s: flushes/compactions are "
                                          "behind (raise stall_timeout_s or slow the writers down)")
                self._bg_cv.wait(remaining)
        finally:
            if started is not None:
                self._count("stall_time_s", opts.clock() - started)

    def _switch_memtable(self) -> None:
        number = self._new_file_number()
        old = self._wal
        old.close(sync=self._opts.sync == "flush")  # "batch" synced every append
        self._count("wal_bytes", old.bytes_written)
        self._wal_files[old.number] = old.objects()  # deleted by these names once flushed
        self._wal = open_wal(self._fs, self._dir, number, self._opts)
        self._mem.next_wal = number
        self._mem.sealed_seq = self._last_seq  # every write up to here is in this memtable or an older one
        self._imms.append(self._mem)
        self._mem = Memtable(number)
        self._switch_count += 1
        self._work_cv.notify_all()
