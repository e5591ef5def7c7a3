"""The memtable: recent writes in memory, every version kept, sorted on demand.

Theory of operation
-------------------
Writes land here after the WAL (DDIA ch. 3, "Constructing and maintaining
SSTables"). A dict maps each key to its versions ``(seq, op, value)`` in
ascending ``seq`` order, so a point read is one hash lookup plus a short walk
back to the newest version visible at the reader's snapshot. A key's first
version is stored as the bare tuple and only a second one turns it into a
list: a tuple of an int and bytes leaves the cyclic garbage collector's care
after its first pass, while a list per key would keep every memtable entry
in each full collection (measured at a fifth of a put's cost). Sorted order is
only needed by scans and by the flush, so it is built lazily: new keys are
remembered in arrival order and merged into the cached sorted key list when
someone asks (Timsort merges the two runs in linear time). A sorted key list
handed out is never mutated afterwards, so an iterator can walk it while
writers keep inserting (their sequence numbers are above its snapshot anyway).

A large batch of point writes (the usual replicated write: a thousand puts in
one log entry) is not put in the dict as it arrives. It is kept as it came, a
*pending run* ``(first_seq, ops)``, where ``ops`` is a tuple of op tuples or a
:class:`PutColumns` (puts as two Arrow binary arrays, which a replica gets
straight from the message that carried them: no Python object per row). It is
moved into the dict only when a read needs the index (:meth:`get`,
:meth:`key_slice`) or a smaller write of a key in its range must go after it.
A write-only stream never builds the dict at all: the flush turns the runs
straight into Arrow columns. The dict's inserts were a third of a replica's
time on that stream (docs/storage-engines.md, "Pending runs"); a reader pays
the same inserts later. A run costs a few C-level passes of its own (its key
range and size), so once a read has had to index runs in a memtable, later
batches go straight into its dict: reads follow writes there (an event store
reads each appended event's id key before the next append), and the next
memtable starts over. Runs are immutable (tuples of tuples, Arrow arrays),
which is why only those are kept as given. Moving runs into the dict happens
under the memtable's own lock, which :meth:`to_table` also takes to gather its
rows, because a flush thread reads an immutable memtable while a reader under
the tree's mutex may still index it.

Range tombstones are kept as a list plus a lazily rebuilt
:class:`TombstoneIndex`. Once the tree makes a memtable immutable nothing
mutates it again; it is flushed to an SSTable with :meth:`Memtable.to_table`.

Only the tree's write leader mutates a memtable, under the tree's mutex, and it applies
sequence numbers in ascending order (group commit assigns them in queue order; recovery
replays the WAL in order), which :meth:`Memtable.to_table` relies on.
"""

from __future__ import annotations

import bisect
import threading
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .tombstones import TombstoneIndex

__all__ = ["PUT", "DELETE", "RANGE_DELETE", "Memtable", "PutColumns", "SCHEMA", "ascend_strictly", "sort_rows"]

PUT, DELETE, RANGE_DELETE = 0, 1, 2
#: Row layout of SSTables (and of :meth:`Memtable.to_table`).
SCHEMA = pa.schema([("key", pa.binary()), ("seq", pa.uint64()), ("op", pa.uint8()), ("value", pa.binary())])
_SEQ, _OP, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)  # fields of a version tuple
_MAX_BINARY_BYTES = (1 << 31) - 1  # the data one ``binary`` array (32-bit offsets) can hold
_ENTRY_OVERHEAD_BYTES = 48  # rough per-version cost of the dict slot, tuple and list
_KIND, _KEY, _TAIL = itemgetter(0), itemgetter(1), itemgetter(2)  # fields of an op
_TUPLE = frozenset({tuple})
#: Batches of at least this many point ops are kept as pending runs (smaller ones go in the
#: dict at once: a run saves per-op work, and a few ops have little to save).
PENDING_MIN_OPS = 64


class PutColumns:
    """Puts as two binary Arrow arrays of equal length, ``keys[i] -> values[i]`` in order.

    What :meth:`~.tree.LSMTree.write_puts` takes: the columns their owner checked (a replica
    reads them from a log entry without copying). They become a pending run of the memtable
    as they are; only a read that needs the memtable's index turns them into op tuples.
    """

    __slots__ = ("keys", "values", "nbytes")

    def __init__(self, keys: pa.Array, values: pa.Array):
        self.keys, self.values = keys, values
        self.nbytes = _data_bytes(keys) + _data_bytes(values)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        return iter(self.as_ops())

    def as_ops(self) -> tuple:
        """The puts as ``(PUT, key, value)`` tuples."""
        return tuple(zip(repeat(PUT, len(self.keys)), self.keys.to_pylist(), self.values.to_pylist()))


def _data_bytes(arr: pa.Array) -> int:
    """The bytes of a binary array's values (it may be a slice of a larger one)."""
    if not len(arr):
        return 0
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + len(arr) + 1)
    return int(offsets[-1]) - int(offsets[arr.offset])


class Memtable:
    """Sorted-on-demand multi-version map of the most recent writes."""

    def __init__(self, wal_number: int = 0):
        self.wal_number = wal_number  # first WAL whose records may live here
        self.next_wal = 0  # set when made immutable: the WAL that took over (log_number after the flush)
        self.sealed_seq = 0  # set when made immutable: the newest seq it (or an older memtable) holds
        self._data: dict[bytes, Any] = {}  # a key's version tuple, or a list of them once it has two
        self._sorted: list[bytes] = []
        self._new: list[bytes] = []
        self._tombstones: list[tuple] = []
        self._index: TombstoneIndex | None = TombstoneIndex()
        self._pending: list[tuple] = []  # runs (first_seq, ops, op codes) not yet in _data, oldest first
        self._lock = threading.Lock()  # moving runs into _data vs. to_table() gathering rows
        self._pending_low: bytes | None = None  # the smallest and largest key in any pending run
        self._pending_high = b""
        # Set once a read needed the runs indexed: reads follow writes here, so every later batch goes
        # straight into the dict (a run would be indexed anyway, after its passes were paid for).
        self._reads_index = False
        self.approx_bytes = 0
        self.entries = 0
        self.user_bytes = 0  # key and value bytes :meth:`apply` took (the tree's write statistics)

    def __len__(self) -> int:
        return self.entries

    def apply(self, first_seq: int, ops) -> int:
        """Apply ``ops`` ``(kind, key, value_or_end)`` with consecutive seqs from ``first_seq``; returns the last."""
        if type(ops) is PutColumns and not self._reads_index:
            if not len(ops):
                return first_seq - 1
            bounds = pc.min_max(ops.keys)
            self._add_run(first_seq, ops, None, bounds["min"].as_py(), bounds["max"].as_py(), ops.nbytes)
            return first_seq + len(ops) - 1
        if len(ops) >= PENDING_MIN_OPS and not self._reads_index and type(ops) is tuple \
                and _TUPLE.issuperset(map(type, ops)):
            codes = bytes(map(_KIND, ops))
            if RANGE_DELETE not in codes:  # point ops only: keep the run as it is (module docstring)
                size = sum(map(len, map(_KEY, ops))) + sum(map(len, map(_TAIL, ops)))
                self._add_run(first_seq, ops, codes, min(map(_KEY, ops)), max(map(_KEY, ops)), size)
                return first_seq + len(ops) - 1
        if self._in_pending_range(ops):
            self._index_pending()  # a key's version list stays in seq order: its older runs go first
        size = self._insert(first_seq, ops)
        self._count(len(ops), size)
        return first_seq + len(ops) - 1

    def _add_run(self, first_seq: int, ops, codes: bytes | None, low: bytes, high: bytes, size: int) -> None:
        """Keep ``ops`` (op tuples with their ``codes``, or :class:`PutColumns`) as a pending run."""
        with self._lock:
            self._pending.append((first_seq, ops, codes))
            if self._pending_low is None or low < self._pending_low:
                self._pending_low = low
            if high > self._pending_high:
                self._pending_high = high
        self._count(len(ops), size)

    def _count(self, n: int, size: int) -> None:
        self.entries += n
        self.approx_bytes += size + _ENTRY_OVERHEAD_BYTES * n
        self.user_bytes += size

    def _insert(self, first_seq: int, ops) -> int:
        """Put ``ops`` in the dict (and range deletes in the tombstone list); returns their bytes."""
        seq = first_seq - 1
        data = self._data
        size = 0
        for kind, key, value in ops:
            seq += 1
            if kind == RANGE_DELETE:
                self._tombstones.append((key, value, seq))
                self._index = None
            else:
                versions = data.get(key)
                if versions is None:
                    data[key] = (seq, kind, value)
                    self._new.append(key)
                elif type(versions) is tuple:
                    data[key] = [versions, (seq, kind, value)]
                else:
                    versions.append((seq, kind, value))
            size += len(key) + len(value)
        return size

    def _in_pending_range(self, ops) -> bool:
        """Whether a point op of ``ops`` has a key in the pending runs' key range.

        Only such a key can have a version in a run, so only it must wait for the runs to be
        indexed before its new version goes in the dict: every other key's versions stay in seq
        order without that. A replica's bookkeeping rows, written after each large batch and
        below every user key, so never wait (range deletes keep their own list, ordered by seq).
        """
        return self._pending_low is not None and any(
            kind != RANGE_DELETE and self._in_runs(key) for kind, key, _tail in ops)

    def _in_runs(self, key: bytes) -> bool:
        """Whether ``key`` is in the pending runs' key range (False when none is pending)."""
        low = self._pending_low
        return low is not None and low <= key <= self._pending_high

    def _index_pending(self) -> None:
        """Move every pending run into the dict, oldest first (a reader needs the index)."""
        with self._lock:
            runs, self._pending = self._pending, []
            self._pending_low, self._pending_high = None, b""
            for first_seq, ops, _codes in runs:
                self._insert(first_seq, ops)

    def apply_one(self, seq: int, kind: int, key: bytes, value: bytes) -> None:
        """:meth:`apply` of one point op (``PUT`` or ``DELETE``) at ``seq``."""
        if self._in_runs(key):
            self._index_pending()
        data = self._data
        versions = data.get(key)
        if versions is None:
            data[key] = (seq, kind, value)
            self._new.append(key)
        elif type(versions) is tuple:
            data[key] = [versions, (seq, kind, value)]
        else:
            versions.append((seq, kind, value))
        self.entries += 1
        self.approx_bytes += len(key) + len(value) + _ENTRY_OVERHEAD_BYTES

    def get(self, key: bytes, snapshot_seq: int):
        """The newest ``(seq, op, value)`` of ``key`` with ``seq <= snapshot_seq``, or None.

        A key outside the pending runs' key range reads the dict alone: a replica reads its own
        reserved rows (ownership, sessions), which sort below every user key, on each write."""
        low = self._pending_low  # _in_runs(key), inlined: the engine's point-read path
        if low is not None and low <= key <= self._pending_high:
            self._reads_index = True
            self._index_pending()
        versions = self._data.get(key)
        if versions is None:
            return None
        if type(versions) is tuple:
            return versions if versions[0] <= snapshot_seq else None
        for i in range(len(versions) - 1, -1, -1):
            v = versions[i]
            if v[0] <= snapshot_seq:
                return v
        return None

    def versions_of(self, key: bytes):
        """The versions of ``key`` (ascending seq) as a sequence, or None; callers must not mutate it.

        Pending runs are not consulted: this serves a scan walking keys that :meth:`key_slice`
        listed (which indexed every run older than the scan's snapshot), often outside the
        tree's mutex, where indexing must not happen."""
        versions = self._data.get(key)
        return (versions,) if type(versions) is tuple else versions

    @property
    def has_tombstones(self) -> bool:
        """Whether any range tombstone was written here."""
        return bool(self._tombstones)

    def tombstone_index(self) -> TombstoneIndex:
        """The fragmented index of this memtable's range tombstones (rebuilt after new ones)."""
        index = self._index
        if index is None:
            index = self._index = TombstoneIndex(list(self._tombstones))
        return index

    def range_tombstones(self) -> list:
        """Every range tombstone ``(start, end, seq)`` written here."""
        return list(self._tombstones)

    def sorted_keys(self) -> list[bytes]:
        """Every key with a point version, ascending; the returned list is never mutated later."""
        if self._pending:
            self._reads_index = True
            self._index_pending()
        if self._new:
            new, self._new = self._new, []
            new.sort()
            merged = self._sorted + new
            merged.sort()
            self._sorted = merged
        return self._sorted

    def key_slice(self, start: bytes | None, end: bytes | None) -> tuple[list[bytes], int, int]:
        """``(keys, lo, hi)``: ``keys[lo:hi]`` are the point keys in ``[start, end)``."""
        keys = self.sorted_keys()
        lo = 0 if start is None else bisect.bisect_left(keys, start)
        hi = len(keys) if end is None else bisect.bisect_left(keys, end)
        return keys, lo, hi

    def to_table(self, pool: pa.MemoryPool | None = None) -> pa.Table:
        """All versions as an SSTable-ordered table: key ascending, then newest first.

        ``pool`` is the Arrow memory pool of the sorted columns (None: pyarrow's default); the
        unsorted key and value data it starts from is one Python bytes object per column (see
        :func:`_binary_column`), freed once the table is sorted.

        Columns are gathered in arrival order (C-speed passes over the dict and the pending
        runs) and sorted by Arrow, which was measured at half the cost of sorting in Python and
        building the columns from the sorted keys, and does the sorting without the GIL while
        writers run.
        """
        with self._lock:  # a reader may be moving runs into the dict (module docstring)
            runs = list(self._pending)
            data = self._data
            in_runs = sum(len(ops) for _first, ops, _codes in runs)
            if len(data) == self.entries - len(self._tombstones) - in_runs:  # one version per key: common
                keys = list(data)
                rows = list(data.values())
            else:
                keys, rows = [], []
                for k, versions in data.items():
                    if type(versions) is tuple:
                        keys.append(k)
                        rows.append(versions)
                    else:
                        keys.extend([k] * len(versions))
                        rows.extend(versions)
            unique = len(keys) == len(data)
            tombstones = list(self._tombstones)
        dict_table = runs_table = None
        if rows or not runs:
            n = len(rows)
            if n and unique and not tombstones and rows[-1][0] - rows[0][0] == n - 1:
                # One version per key, in arrival order, so seqs ascend; first to last spanning n means
                # they are consecutive (an ingest between two writes leaves a gap, and this does not hold).
                seqs = pa.array(np.arange(rows[0][0], rows[0][0] + n, dtype=np.uint64))
            else:
                seqs = pa.array(list(map(_SEQ, rows)), pa.uint64(), memory_pool=pool)
            dict_table = pa.table([_binary_column(keys, pool), seqs,
                                   pa.array(list(map(_OP, rows)), pa.uint8(), memory_pool=pool),
                                   _binary_column(list(map(_VALUE, rows)), pool)], schema=SCHEMA)
        if runs:
            runs_table = _runs_table(runs, pool)
        if tombstones:
            s, e, q = zip(*tombstones)
            extra = pa.table([pa.array(s, pa.binary()), pa.array(q, pa.uint64()),
                              pa.array([RANGE_DELETE] * len(s), pa.uint8()), pa.array(e, pa.binary())], schema=SCHEMA)
            parts = [t for t in (dict_table, runs_table, extra) if t is not None]
            return sort_rows(pa.concat_tables(parts, memory_pool=pool).combine_chunks(memory_pool=pool), pool)
        if runs_table is None:
            assert dict_table is not None
            if unique:  # unique keys: the key decides
                return _sorted_by_key(dict_table, pool)
            return sort_rows(dict_table, pool)
        runs_sorted = _sorted_by_key(runs_table, pool, check_repeats=True)
        if runs_sorted is None:
            runs_sorted = sort_rows(runs_table, pool)
        if dict_table is None:
            return runs_sorted
        # A replica's memtable: the runs hold its clients' keys, the dict a few hundred versions of
        # its own position and session rows, which sort below them. Sorted apart, two parts whose key
        # ranges do not overlap are the whole table in order, without sorting the runs by key and seq.
        # The parts stay chunks: the SSTable writer takes a chunked table as it is.
        dict_sorted = sort_rows(dict_table, pool)
        dk, rk = dict_sorted.column("key"), runs_sorted.column("key")
        if dk[len(dk) - 1].as_py() < rk[0].as_py():
            return pa.concat_tables([dict_sorted, runs_sorted], memory_pool=pool)
        if rk[len(rk) - 1].as_py() < dk[0].as_py():
            return pa.concat_tables([runs_sorted, dict_sorted], memory_pool=pool)
        return sort_rows(pa.concat_tables([dict_table, runs_table], memory_pool=pool).combine_chunks(memory_pool=pool),
                         pool)


def _sorted_by_key(table: pa.Table, pool: pa.MemoryPool | None, *, check_repeats: bool = False) -> pa.Table | None:
    """``table`` sorted by key alone; with ``check_repeats``, None if a key repeats (its versions
    would then be oldest first, as Arrow's sort is stable: the caller sorts by key and seq).

    Keys that already ascend strictly (time-ordered or sequential keys, a client's batches in
    order) are returned as they are: one comparison pass instead of a sort and a copy of every
    value into fresh memory, whose page faults cost the flush more than the copy itself.
    """
    keys = table.column("key")
    if ascend_strictly(keys):
        return table
    out = pc.take(table, pc.sort_indices(keys, memory_pool=pool), memory_pool=pool)
    if check_repeats and out.num_rows > 1:
        keys = out.column("key")
        if pc.any(pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1))).as_py():
            return None
    return out


def ascend_strictly(keys) -> bool:
    """Whether the binary column ``keys`` (an array or chunked array) is in key order with no key
    twice: a table of such keys is already in SSTable order, one comparison pass instead of a sort."""
    n = len(keys)
    return n < 2 or bool(pc.all(pc.greater(keys.slice(1), keys.slice(0, n - 1))).as_py())


def _runs_table(runs: list, pool: pa.MemoryPool | None) -> pa.Table:
    """The pending runs ``(first_seq, ops, codes)`` as an unsorted table in arrival order: op tuples
    gathered into columns, :class:`PutColumns` taken as the arrays they are."""
    keys: list = []
    values: list = []
    codes: list = []
    tuples: list = []  # consecutive runs of op tuples, gathered into one column chunk

    def gather() -> None:
        if tuples:
            keys.append(_binary_column(list(chain.from_iterable([map(_KEY, ops) for ops in tuples])), pool))
            values.append(_binary_column(list(chain.from_iterable([map(_TAIL, ops) for ops in tuples])), pool))
            tuples.clear()

    for _first, ops, run_codes in runs:
        if type(ops) is PutColumns:
            gather()
            keys.append(ops.keys)
            values.append(ops.values)
            codes.append(bytes(len(ops)))
        else:
            tuples.append(ops)
            codes.append(run_codes)
    gather()
    seqs = np.concatenate([np.arange(first, first + len(ops), dtype=np.uint64) for first, ops, _codes in runs])
    # The values stay the runs' own chunks (for PutColumns, views of the log entries' bytes): the
    # SSTable writer reads them in place when no sort has to move them.
    return pa.table([pa.concat_arrays(keys, memory_pool=pool), pa.array(seqs),
                     pa.array(np.frombuffer(b"".join(codes), dtype=np.uint8)),
                     pa.chunked_array(values, pa.binary())], schema=SCHEMA)


def _binary_column(items: list, pool: pa.MemoryPool | None) -> pa.Array:
    """``pa.array(items, pa.binary())`` built from one join and the lengths' running sum.

    ``pa.array`` grows its data buffer by doubling, each growth a copy into fresh memory, all
    under the GIL that the writers need; this sizes the data once (``b"".join``) and computes
    the offsets in NumPy. Offsets are 32-bit, as ``binary`` requires: a memtable stays far
    below 2 GiB (larger falls back to ``pa.array``, which chunks).
    """
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _MAX_BINARY_BYTES:
        return pa.array(items, pa.binary(), memory_pool=pool)
    return pa.Array.from_buffers(pa.binary(), len(items),
                                 [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(items))])


def sort_rows(table: pa.Table, pool: pa.MemoryPool | None = None) -> pa.Table:
    """``table`` in SSTable order: key ascending, then newest first (new buffers from ``pool``)."""
    if table.num_rows <= 1:
        return table
    order = pc.sort_indices(table, sort_keys=[("key", "ascending"), ("seq", "descending")], memory_pool=pool)
    return pc.take(table, order, memory_pool=pool)
