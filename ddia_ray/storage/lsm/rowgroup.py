"""Decoded SSTable row groups: verified byte spans in, Python-friendly columns out.

Theory of operation
-------------------
The Parquet reader sees an SSTable through :class:`Spans`, a file object that
serves only byte spans already read *and verified* (CRC-32 from the sidecar),
so damage surfaces as an error on the first read instead of a wrong answer.

A decoded :class:`RowGroup` keeps its columns compact (the row cache is a
memory bound, and a Python object per key would make it hold a third fewer
rows: at 1M keys that turned most point reads into misses). Keys stay one
bytes blob plus offsets; when they all have one width, a point lookup is one
NumPy ``searchsorted`` over that blob viewed as fixed-width strings (compared
bytewise, as ``bytes`` are; a key of another width cannot be there), else a
binary search through a Python sequence view. Sequence numbers and ops are
zero-copy ``memoryview`` s; values stay in their Arrow buffer, sliced per
point read. Scans ask for key and value *lists* (built per call, not cached)
and ``zip`` them at C speed.

:attr:`RowGroup.nbytes` is what keeping the row group in the row-group cache
costs, and the cache's byte bound is only as good as that figure. It is the
Arrow allocations the row group holds (each padded as the memory pool pads
it) plus a measured constant for everything else an entry keeps alive: the
Python wrappers, memoryviews, the NumPy view, Arrow's C++ bookkeeping and
the cache's own entry (see :data:`ENTRY_OVERHEAD_BYTES`).
"""

from __future__ import annotations

import bisect
import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .memtable import RANGE_DELETE, SCHEMA

__all__ = ["Spans", "RowGroup", "visible_rows", "ENTRY_OVERHEAD_BYTES"]

#: Memory one cached row group holds besides its Arrow buffers, whatever its row count.
#: Measured (CPython 3.11, pyarrow 26, glibc; one-row groups read through the LSM, the
#: cache filled then cleared, per entry): 3.4 KB of Python objects under tracemalloc (the
#: two Array and six Buffer wrappers, six memoryviews with their managed buffers, the
#: NumPy key view, this object, and the cache's key tuple, value tuple and OrderedDict
#: node) plus 1.5 KB of C++ objects behind them (ArrayData, Buffer and shared_ptr control
#: blocks: the glibc heap, mallinfo2, without tracemalloc running) = 4.9 KB, rounded up.
#: Charging 64 B instead let a cache of one-row groups hold ~50x its bound.
ENTRY_OVERHEAD_BYTES = 5 * 1024

_ARROW_ALLOC_PAD = 64  # Arrow's pools round every allocation up to a multiple of 64 bytes


class Spans(io.RawIOBase):
    """A read-only file object of ``size`` bytes that can only serve the spans it was given."""

    def __init__(self, size: int, spans: list):
        super().__init__()
        self._size = size
        self._spans = spans
        self._pos = 0

    def readable(self) -> bool:
        """Always True (file protocol)."""
        return True

    def seekable(self) -> bool:
        """Always True (file protocol)."""
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move the read position (file protocol)."""
        base = (0, self._pos, self._size)[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        """The read position (file protocol)."""
        return self._pos

    def size(self) -> int:
        """Total bytes of the verified spans."""
        return self._size

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all with -1) from the position."""
        if n is None or n < 0:
            n = self._size - self._pos
        for start, data in self._spans:
            if start <= self._pos and self._pos + n <= start + len(data):
                out = data[self._pos - start:self._pos - start + n]
                self._pos += n
                return out
        raise OSError(f"read of {n} bytes at {self._pos} outside the verified spans")

    def readinto(self, b) -> int:
        """Read into the buffer ``b``; returns the bytes read."""
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


#: ``RowGroup._ksorted`` of a row group whose keys differ in width (never searched).
_NO_SORTED_KEYS = np.empty(0, "S1")


class RowGroup:
    """One decoded row group: keys, seqs, ops and values addressable by row index.

    ``nbytes`` is the memory it holds while cached (its row-group cache charge).
    """

    __slots__ = ("seqs", "ops", "_keys", "_kdata", "_koff", "_kwidth", "_ksorted", "_values", "_voff",
                 "_vdata", "nbytes")

    def __init__(self, table: pa.Table):
        table = table.combine_chunks()
        cols = [table.column(i).chunk(0) if table.column(i).num_chunks else pa.array([], f.type)
                for i, f in enumerate(SCHEMA)]
        key, seq, op, value = cols
        self.seqs = memoryview(seq.buffers()[1]).cast("Q")[seq.offset:seq.offset + len(seq)]
        self.ops = memoryview(op.buffers()[1])[op.offset:op.offset + len(op)]
        self._keys = key
        n = len(key)
        kbufs = key.buffers()
        self._koff = memoryview(kbufs[1]).cast("i")[key.offset:key.offset + n + 1]
        self._kdata = memoryview(kbufs[2]).cast("B") if kbufs[2] is not None else memoryview(b"")  # no copy
        # Keys of one width (the common case) are searched by NumPy over the raw bytes, no copy.
        self._kwidth = 0
        self._ksorted = _NO_SORTED_KEYS  # searched only when _kwidth is set
        if n and self._koff[0] == 0:
            width = (self._koff[n] - self._koff[0]) // n
            if width and all(self._koff[i] == i * width for i in (1, n // 2, n)) and \
                    pc.all(pc.equal(pc.binary_length(key), width)).as_py():
                self._kwidth = width
                self._ksorted = np.frombuffer(self._kdata, f"S{width}", n)
        vbufs = value.buffers()
        self._values = value
        self._voff = memoryview(vbufs[1]).cast("i")[value.offset:value.offset + len(value) + 1]
        self._vdata = memoryview(vbufs[2]) if vbufs[2] is not None else memoryview(b"")
        # Charge the allocations actually held, not ``Array.nbytes`` (the bytes the rows use): the
        # key and value arrays keep all their buffers, seqs and ops only their data buffers.
        self.nbytes = ENTRY_OVERHEAD_BYTES + _held_bytes(kbufs + vbufs + [seq.buffers()[1], op.buffers()[1]])

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def keys(self) -> list:
        """Every key as a list of ``bytes`` (built per call: the cache keeps only the raw bytes)."""
        return self._keys.to_pylist()

    def value(self, i: int) -> bytes:
        """The value of row ``i``."""
        return bytes(self._vdata[self._voff[i]:self._voff[i + 1]])

    def values_list(self) -> list:
        """Every value as a list of ``bytes`` (built per call: scans do not keep it)."""
        return self._values.to_pylist()

    def _key(self, i: int) -> bytes:
        return self._kdata[self._koff[i]:self._koff[i + 1]].tobytes()

    def find(self, key: bytes, snapshot_seq: int):
        """The newest point version ``(seq, op, value)`` of ``key`` at ``snapshot_seq``, or None."""
        n = len(self.seqs)
        w = self._kwidth
        if w:
            if len(key) != w:
                return None
            j = int(self._ksorted.searchsorted(key))
        else:
            j = bisect.bisect_left(_KeyView(self), key)
        seqs, ops = self.seqs, self.ops
        kdata, koff = self._kdata, self._koff
        while j < n and kdata[koff[j]:koff[j + 1]] == key:
            if seqs[j] <= snapshot_seq and ops[j] != RANGE_DELETE:
                return seqs[j], ops[j], self.value(j)
            j += 1
        return None


def _held_bytes(buffers: list) -> int:
    """Bytes of the distinct allocations behind ``buffers`` (a slice keeps its whole parent alive)."""
    held = {}
    for buf in buffers:
        if buf is None:
            continue
        while buf.parent is not None:
            buf = buf.parent
        held[buf.address] = -(-buf.size // _ARROW_ALLOC_PAD) * _ARROW_ALLOC_PAD
    return sum(held.values())


class _KeyView:
    """Sequence view of a row group's keys for :mod:`bisect` (variable-width keys)."""

    __slots__ = ("_rg",)

    def __init__(self, rg: RowGroup):
        self._rg = rg

    def __len__(self) -> int:
        return len(self._rg.seqs)

    def __getitem__(self, i: int) -> bytes:
        return self._rg._key(i)


def visible_rows(rg: RowGroup, start, end, snapshot_seq: int, reverse: bool):
    """The newest visible point version ``(key, seq, op, value)`` per key of ``rg`` in ``[start, end)``."""
    keys, seqs, ops = rg.keys, rg.seqs, rg.ops
    n = len(seqs)
    lo = 0 if start is None else bisect.bisect_left(keys, start)
    hi = n if end is None else bisect.bisect_left(keys, end)
    if not reverse:
        prev = None
        for j in range(lo, hi):
            if ops[j] == RANGE_DELETE or seqs[j] > snapshot_seq:
                continue
            k = keys[j]
            if k == prev:
                continue
            prev = k
            yield k, seqs[j], ops[j], rg.value(j)
        return
    # Backwards, each key's versions come oldest first: the last visible one wins.
    cand = None
    for j in range(hi - 1, lo - 1, -1):
        k = keys[j]
        if cand is not None and cand[0] != k:
            yield cand[0], cand[1], cand[2], rg.value(cand[3])
            cand = None
        if ops[j] == RANGE_DELETE or seqs[j] > snapshot_seq:
            continue
        cand = (k, seqs[j], ops[j], j)
    if cand is not None:
        yield cand[0], cand[1], cand[2], rg.value(cand[3])
