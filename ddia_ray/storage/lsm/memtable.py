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

Range tombstones are kept as a list plus a lazily rebuilt
:class:`TombstoneIndex`. Once the tree makes a memtable immutable nothing
mutates it again; it is flushed to an SSTable with :meth:`Memtable.to_table`.

Only the tree's write leader mutates a memtable, under the tree's mutex, and it applies
sequence numbers in ascending order (group commit assigns them in queue order; recovery
replays the WAL in order), which :meth:`Memtable.to_table` relies on.
"""

from __future__ import annotations

import bisect
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .tombstones import TombstoneIndex

__all__ = ["PUT", "DELETE", "RANGE_DELETE", "Memtable", "SCHEMA", "sort_rows"]

PUT, DELETE, RANGE_DELETE = 0, 1, 2
#: Row layout of SSTables (and of :meth:`Memtable.to_table`).
SCHEMA = pa.schema([("key", pa.binary()), ("seq", pa.uint64()), ("op", pa.uint8()), ("value", pa.binary())])
_SEQ, _OP, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)  # fields of a version tuple
_MAX_BINARY_BYTES = (1 << 31) - 1  # the data one ``binary`` array (32-bit offsets) can hold
_ENTRY_OVERHEAD_BYTES = 48  # rough per-version cost of the dict slot, tuple and list


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
        self.approx_bytes = 0
        self.entries = 0
        self.user_bytes = 0  # key and value bytes :meth:`apply` took (the tree's write statistics)

    def __len__(self) -> int:
        return self.entries

    def apply(self, first_seq: int, ops) -> int:
        """Apply ``ops`` ``(kind, key, value_or_end)`` with consecutive seqs from ``first_seq``; returns the last."""
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
        self.entries += len(ops)
        self.approx_bytes += size + _ENTRY_OVERHEAD_BYTES * len(ops)
        self.user_bytes += size
        return seq

    def apply_one(self, seq: int, kind: int, key: bytes, value: bytes) -> None:
        """:meth:`apply` of one point op (``PUT`` or ``DELETE``) at ``seq``."""
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
        """The newest ``(seq, op, value)`` of ``key`` with ``seq <= snapshot_seq``, or None."""
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
        """The versions of ``key`` (ascending seq) as a sequence, or None; callers must not mutate it."""
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

        Columns are gathered in arrival order (C-speed passes over the dict) and sorted by
        Arrow, which was measured at half the cost of sorting in Python and building the
        columns from the sorted keys, and does the sorting without the GIL while writers run.
        """
        data = self._data
        if len(data) == self.entries - len(self._tombstones):  # one version (a bare tuple) per key: common
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
        n = len(rows)
        if n and not self._tombstones and len(keys) == len(data) and rows[-1][0] - rows[0][0] == n - 1:
            # One version per key, in arrival order, so seqs ascend; first to last spanning n means
            # they are consecutive (an ingest between two writes leaves a gap, and this does not hold).
            seqs = pa.array(np.arange(rows[0][0], rows[0][0] + n, dtype=np.uint64))
        else:
            seqs = pa.array(list(map(_SEQ, rows)), pa.uint64(), memory_pool=pool)
        table = pa.table([_binary_column(keys, pool), seqs,
                          pa.array(list(map(_OP, rows)), pa.uint8(), memory_pool=pool),
                          _binary_column(list(map(_VALUE, rows)), pool)], schema=SCHEMA)
        if self._tombstones:
            s, e, q = zip(*self._tombstones)
            extra = pa.table([pa.array(s, pa.binary()), pa.array(q, pa.uint64()),
                              pa.array([RANGE_DELETE] * len(s), pa.uint8()), pa.array(e, pa.binary())],
                             schema=SCHEMA)
            table = pa.concat_tables([table, extra], memory_pool=pool).combine_chunks(memory_pool=pool)
        if len(keys) == len(data) and not self._tombstones:  # unique keys: the key decides
            return pc.take(table, pc.sort_indices(table.column("key"), memory_pool=pool), memory_pool=pool)
        return sort_rows(table, pool)


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
