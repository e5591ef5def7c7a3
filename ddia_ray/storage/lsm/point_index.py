"""Point lookups in a cached row group of fixed-width keys, without a NumPy call per lookup.

Theory of operation
-------------------
A random ``get`` that hits the row-group cache spends most of its time finding the key's
row. NumPy's ``searchsorted`` costs about a microsecond of call overhead per lookup at this
size, so a row group whose keys all have one width gets a :class:`PointIndex`: every
16th key as a Python ``bytes`` (a C-level ``bisect`` picks a block of rows) and
memoryviews over the row group's own Arrow buffers (``bytes.find`` over the block's raw
key bytes finds the row). The index shares the row group's buffers; what it adds (the
sparse keys and a fixed overhead, :attr:`PointIndex.nbytes`) is charged to the row-group
cache next to the row group (see :mod:`.sstable`).
"""

from __future__ import annotations

import bisect

import pyarrow as pa
import pyarrow.compute as pc

from .memtable import RANGE_DELETE

__all__ = ["PointIndex"]

_SPARSE_STRIDE = 16  # rows per block of a PointIndex: one bytes.find over 16 keys
_BYTES_OBJECT_BYTES = 33 + 8  # CPython bytes header + the list's pointer to it
_POINT_INDEX_OVERHEAD_BYTES = 1024  # the index object, its memoryviews and its list, measured roughly


class PointIndex:
    """Point lookups in one cached row group of fixed-width keys, with no NumPy call.

    ``sparse`` holds every :data:`_SPARSE_STRIDE`-th key as ``bytes``: one C-level bisection
    picks a block of rows, and ``bytes.find`` over that block's slice of the raw key bytes
    (compared bytewise, a match accepted only at a row boundary) finds the key's first row,
    which is its newest version (rows are sorted by key, then ``seq`` descending). Measured
    at about half the cost of a NumPy ``searchsorted`` (whose per-call overhead dominates at
    this size), for ~3.5 bytes per row of extra memory, charged to the row-group cache.
    Row groups with keys of several widths (range tombstones, or variable-width keys)
    have no index and use :meth:`RowGroup.find`.
    """

    __slots__ = ("width", "rows", "sparse", "kdata", "seqs", "ops", "voff", "vdata", "nbytes")

    # Set by build() (there is no __init__): the slots' types.
    width: int  # bytes per key
    rows: int
    sparse: list[bytes]  # every _SPARSE_STRIDE-th key
    kdata: memoryview  # every key's bytes back to back, "B" items
    seqs: memoryview  # "Q" items
    ops: memoryview
    voff: memoryview  # value offsets, "i" items
    vdata: memoryview  # value bytes
    nbytes: int  # what the index adds to the row group's memory

    @classmethod
    def build(cls, table: pa.Table) -> "PointIndex | None":
        """The index of a decoded row group, or None when its keys are not all one width."""
        table = table.combine_chunks()
        n = table.num_rows
        if n == 0:
            return None
        key = table.column("key").chunk(0)  # one chunk: combined above
        lengths = pc.binary_length(key)
        width = pc.min(lengths).as_py()
        if not width or pc.max(lengths).as_py() != width:
            return None
        self = cls()
        self.width, self.rows = width, n
        kbuf = key.buffers()
        start = memoryview(kbuf[1]).cast("i")[key.offset]
        self.kdata = memoryview(kbuf[2]).cast("B")[start:start + n * width]  # "B": compares equal to bytes
        self.sparse = key.take(pa.array(range(0, n, _SPARSE_STRIDE), pa.int64())).to_pylist()
        seq, op, value = (table.column(c).chunk(0) for c in ("seq", "op", "value"))
        self.seqs = memoryview(seq.buffers()[1]).cast("Q")[seq.offset:seq.offset + n]
        self.ops = memoryview(op.buffers()[1])[op.offset:op.offset + n]
        self.voff = memoryview(value.buffers()[1]).cast("i")[value.offset:value.offset + n + 1]
        self.vdata = memoryview(value.buffers()[2]) if value.buffers()[2] is not None else memoryview(b"")
        self.nbytes = _POINT_INDEX_OVERHEAD_BYTES + len(self.sparse) * (width + _BYTES_OBJECT_BYTES)
        return self

    def find(self, key: bytes, snapshot_seq: int):
        """The newest point version ``(seq, op, value)`` of ``key`` at ``snapshot_seq``, or None."""
        w = self.width
        if len(key) != w:
            return None
        # Block b holds the first row of ``key``: sparse[b] < key <= sparse[b + 1] (bisect_left,
        # so a key whose versions straddle a stride boundary is found at its first, newest row).
        b = bisect.bisect_left(self.sparse, key) - 1
        lo = (b * _SPARSE_STRIDE if b > 0 else 0) * w
        hi = min(self.rows, (b + 1) * _SPARSE_STRIDE + 1) * w
        block = self.kdata[lo:hi].tobytes()
        p = block.find(key)
        while p >= 0 and p % w:  # a match across two keys: keep looking from the next byte
            p = block.find(key, p + 1)
        if p < 0:
            return None
        j = (lo + p) // w
        seqs, ops, kdata = self.seqs, self.ops, self.kdata
        while True:
            if seqs[j] <= snapshot_seq and ops[j] != RANGE_DELETE:  # a range tombstone's row is keyed by its start
                return seqs[j], ops[j], self.vdata[self.voff[j]:self.voff[j + 1]].tobytes()
            j += 1
            if j >= self.rows or kdata[j * w:(j + 1) * w] != key:
                return None
