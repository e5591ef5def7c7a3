"""Decoded SSTable row groups: verified byte spans in, Python-friendly columns out.

Theory of operation
-------------------
The Parquet reader sees an SSTable through :class:`Spans`, a file object that
serves only byte spans already read *and verified* (CRC-32 from the sidecar),
so damage surfaces as an error on the first read instead of a wrong answer.

A decoded :class:`RowGroup` keeps its keys as a Python ``list`` of ``bytes``:
a point lookup is then one C-level :func:`bisect.bisect_left` (a Python-level
sequence view costs a Python call per probe, several microseconds per get),
and a scan can ``zip`` the key list with the value list at C speed. Sequence
numbers and ops stay zero-copy ``memoryview`` s over the Arrow buffers; values
stay in their Arrow buffer (sliced per point read) and are materialised as a
list only for scans (:meth:`RowGroup.values_list`). The cache charge counts the
Python key objects, so the row cache remains a real memory bound.
"""

from __future__ import annotations

import bisect
import io

import pyarrow as pa

from .memtable import RANGE_DELETE, SCHEMA

__all__ = ["Spans", "RowGroup", "visible_rows"]

_BYTES_OBJECT_OVERHEAD = 33 + 8  # CPython bytes header + the list's pointer to it


class Spans(io.RawIOBase):
    """A read-only file object of ``size`` bytes that can only serve the spans it was given."""

    def __init__(self, size: int, spans: list):
        super().__init__()
        self._size = size
        self._spans = spans
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, self._size)[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._pos
        for start, data in self._spans:
            if start <= self._pos and self._pos + n <= start + len(data):
                out = data[self._pos - start:self._pos - start + n]
                self._pos += n
                return out
        raise OSError(f"read of {n} bytes at {self._pos} outside the verified spans")

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class RowGroup:
    """One decoded row group: keys (a list), seqs, ops and values addressable by row index."""

    __slots__ = ("keys", "seqs", "ops", "_values", "_voff", "_vdata", "nbytes")

    def __init__(self, table: pa.Table):
        table = table.combine_chunks()
        cols = [table.column(i).chunk(0) if table.column(i).num_chunks else pa.array([], f.type)
                for i, f in enumerate(SCHEMA)]
        key, seq, op, value = cols
        self.keys = key.to_pylist()
        self.seqs = memoryview(seq.buffers()[1]).cast("Q")[seq.offset:seq.offset + len(seq)]
        self.ops = memoryview(op.buffers()[1])[op.offset:op.offset + len(op)]
        vbufs = value.buffers()
        self._values = value
        self._voff = memoryview(vbufs[1]).cast("i")[value.offset:value.offset + len(value) + 1]
        self._vdata = memoryview(vbufs[2]) if vbufs[2] is not None else memoryview(b"")
        n = len(self.keys)
        key_bytes = self._key_data_bytes(key)
        self.nbytes = seq.nbytes + op.nbytes + value.nbytes + key_bytes + n * _BYTES_OBJECT_OVERHEAD + 64

    @staticmethod
    def _key_data_bytes(key: pa.Array) -> int:
        if not len(key):
            return 0
        offsets = memoryview(key.buffers()[1]).cast("i")
        return offsets[key.offset + len(key)] - offsets[key.offset]

    def __len__(self) -> int:
        return len(self.seqs)

    def value(self, i: int) -> bytes:
        """The value of row ``i``."""
        return bytes(self._vdata[self._voff[i]:self._voff[i + 1]])

    def values_list(self) -> list:
        """Every value as a list of ``bytes`` (built per call: scans do not keep it)."""
        return self._values.to_pylist()

    def find(self, key: bytes, snapshot_seq: int):
        """The newest point version ``(seq, op, value)`` of ``key`` at ``snapshot_seq``, or None."""
        keys = self.keys
        j = bisect.bisect_left(keys, key)
        n = len(keys)
        seqs, ops = self.seqs, self.ops
        while j < n and keys[j] == key:
            if seqs[j] <= snapshot_seq and ops[j] != RANGE_DELETE:
                return seqs[j], ops[j], self.value(j)
            j += 1
        return None


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
