"""Bulk loads through the replication log: a batch of rows as one operation that every replica ingests.

Theory of operation
-------------------
A client's write is a tuple of operations ``(code, key, tail)``; the leader checks each, the log
carries each and every replica applies each, a Python step per row. For a bulk load of Arrow data
that per-row cost was most of the load's time (docs/partitioning.md: 50,000-60,000 rows/s through
puts against Ray Data's 340,000 rows/s Parquet write). An *ingest* operation ``(INGEST, lo, blob)``
carries a whole batch of rows as the Arrow buffers of its two binary columns, so that

* checking it is a few NumPy passes (offsets ascending and inside the data, no reserved key), not a
  step per row;
* the log and the messages carry it as one bytes value;
* a replica on the LSM engine applies it with the engine's ``ingest`` (Arrow sorts the rows, one
  SSTable is written and one manifest commit adds it: RocksDB's ``IngestExternalFile``), the entry's
  position and session rows included as rows of the same table, so the entry still applies
  atomically with its position (:mod:`.engine_state`); other states apply its rows as puts.

``lo`` is the batch's smallest key, so the ownership fence (:mod:`.ownership`) checks the batch as
the range ``[lo, hi]`` of one partition. An ingest is the only operation of its write. A key
repeated in one batch keeps its last value (the LSM ingest's rule). A group with local secondary
indexes turns the rows into puts where the write is decided (:mod:`.indexing`), since every row's
index terms must be computed anyway.

Blob format, version 1 (all integers little-endian)::

    magic "DRIG" | version u8 = 1 | count u32
    key offsets   (count + 1) x u32, from 0, not decreasing
    value offsets (count + 1) x u32, from 0, not decreasing
    key bytes     (the last key offset of them)
    value bytes   (the last value offset of them)

The blob is read without copying (NumPy and Arrow views of it), and nothing in it is trusted before
it is checked: a count, an offset or a length that does not fit exactly refuses the operation with
:class:`~ddia_ray.errors.InvalidArgumentError`, as any malformed operation is.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InvalidArgumentError
from .records import AFTER_RESERVED, INGEST, PUT, RESERVED_PREFIX

__all__ = ["IngestRows", "MAX_INGEST_ROWS", "PUTS_AS_INGEST_MIN", "puts_op", "columns_op", "ingest_op",
           "decode_ingest", "ingest_puts", "has_ingest", "binary_column"]

_MAGIC = b"DRIG"
_VERSION = 1
_HEAD = struct.Struct("<4sBI")
#: Rows one ingest operation may carry (a message of a million rows is already tens of MB).
MAX_INGEST_ROWS = 1 << 20
#: Offsets are Arrow ``binary`` offsets (int32): a column's bytes stay below 2 GiB.
_MAX_COLUMN_BYTES = (1 << 31) - 1
_CODE = operator.itemgetter(0)


@dataclass(frozen=True)
class IngestRows:
    """A checked ingest batch: ``keys`` and ``values`` are Arrow binary arrays (views of the blob),
    ``lo``/``hi`` its smallest and largest key."""

    keys: pa.Array
    values: pa.Array
    lo: bytes
    hi: bytes

    @property
    def count(self) -> int:
        """Rows in the batch."""
        return len(self.keys)

    def table(self) -> pa.Table:
        """The rows as a ``key``, ``value`` table (the LSM engine's ``ingest`` input)."""
        return pa.table({"key": self.keys, "value": self.values})


def binary_column(column: Any, what: str) -> pa.Array:
    """``column`` (an Arrow array, chunked array, or a list of bytes) as one ``binary`` array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not isinstance(column, pa.Array):
        if not isinstance(column, (list, tuple)) or not all(type(v) is bytes for v in column):
            raise InvalidArgumentError(f"ingest {what} are a binary Arrow column or a list of bytes")
        return pa.array(column, pa.binary())
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise InvalidArgumentError(f"ingest {what} are a binary column, got {column.type}; cast it to binary first")
    if column.null_count:
        raise InvalidArgumentError(f"ingest {what} may not be null ({column.null_count} are)")
    return column.cast(pa.binary()) if pa.types.is_large_binary(column.type) else column


def _buffers(arr: pa.Array) -> tuple[np.ndarray, memoryview]:
    """Offsets (rebased to 0, as u32) and the data bytes of a binary array, which may be a slice."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + n + 1)[arr.offset:]
    start, end = int(offsets[0]), int(offsets[-1])
    data = arr.buffers()[2]
    view = memoryview(data)[start:end] if data is not None else memoryview(b"")
    return (offsets - start).astype("<u4"), view


def ingest_op(keys: Any, values: Any) -> tuple:
    """The operation ``(INGEST, lo, blob)`` that loads ``keys[i] -> values[i]`` for every row (binary
    Arrow arrays, chunked arrays or lists of bytes, of equal length, at least one row)."""
    k, v = binary_column(keys, "keys"), binary_column(values, "values")
    if len(k) != len(v):
        raise InvalidArgumentError(f"ingest has {len(k)} keys and {len(v)} values")
    if not 1 <= len(k) <= MAX_INGEST_ROWS:
        raise InvalidArgumentError(f"an ingest carries 1 to {MAX_INGEST_ROWS} rows, got {len(k)}")
    ko, kd = _buffers(k)
    vo, vd = _buffers(v)
    if len(kd) > _MAX_COLUMN_BYTES or len(vd) > _MAX_COLUMN_BYTES:
        raise InvalidArgumentError("an ingest's keys and values hold under 2 GiB each; cut it into batches")
    blob = _pack(len(k), ko, vo, kd, vd)
    rows = decode_ingest(blob)  # the same check every replica makes: a bad batch fails here, alone
    return (INGEST, rows.lo, blob)


#: A client sends a write of at least this many puts, and nothing else, as an ingest (:func:`puts_op`).
PUTS_AS_INGEST_MIN = 64
_KEY, _TAIL = operator.itemgetter(1), operator.itemgetter(2)
_BYTES = frozenset({bytes})


def puts_op(ops: tuple | list) -> tuple | None:
    """``ops`` as one ingest operation when they are at least :data:`PUTS_AS_INGEST_MIN` puts and
    nothing else (None otherwise): the columns a replica hands its engine as they are.

    A client's write of a thousand puts travels, as op tuples, as three thousand msgpack values that
    the leader and every follower unpack into Python objects and each memtable inserts one by one;
    as an ingest it is one bytes value, checked with a few NumPy and Arrow passes, that the LSM
    memtable keeps as two Arrow arrays (:meth:`.engine_state.EngineState._ingest`). The puts were
    checked as op tuples (``records.check_ops``); the blob is checked again as every replica
    checks it, and one that fails stays op tuples, which the leader refuses with the reason.
    """
    n = len(ops)
    if n < PUTS_AS_INGEST_MIN or n > MAX_INGEST_ROWS or bytes(map(_CODE, ops)) != bytes(n):
        return None
    return columns_op(list(map(_KEY, ops)), list(map(_TAIL, ops)))


def columns_op(keys: list, values: list) -> tuple | None:
    """Puts ``keys[i] -> values[i]`` (lists of exact ``bytes``, as many of each) as one ingest
    operation (:func:`puts_op`), or None where they must stay puts: fewer than
    :data:`PUTS_AS_INGEST_MIN`, a key or value that is not exactly ``bytes``, a reserved key, or
    columns too large for one blob. A :class:`~ddia_ray.storage.WriteBatch` of puts comes here
    from its two lists without an op tuple per put (``ReplicatedClient.write_nowait``)."""
    n = len(keys)
    if n < PUTS_AS_INGEST_MIN or n > MAX_INGEST_ROWS or len(values) != n \
            or not _BYTES.issuperset(map(type, keys)) or not _BYTES.issuperset(map(type, values)):
        return None
    ko, vo = _offsets(keys), _offsets(values)
    if ko[-1] > _MAX_COLUMN_BYTES or vo[-1] > _MAX_COLUMN_BYTES:
        return None
    blob = _pack(n, ko, vo, b"".join(keys), b"".join(values))
    try:
        return (INGEST, decode_ingest(blob).lo, blob)
    except InvalidArgumentError:  # a reserved key, say: sent as op tuples, the leader refuses it by name
        return None


def _pack(count: int, key_offsets: np.ndarray, value_offsets: np.ndarray, key_data, value_data) -> bytes:
    """The blob of ``count`` rows (the format in the module docstring; offsets as u32 from 0)."""
    return b"".join((_HEAD.pack(_MAGIC, _VERSION, count), key_offsets.tobytes(), value_offsets.tobytes(),
                     key_data, value_data))


def _offsets(items: list) -> np.ndarray:
    """The u32 offsets (from 0) of ``items`` laid end to end (past 4 GiB: a value above the limit)."""
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=len(items)), out=offsets[1:])
    if offsets[-1] > _MAX_COLUMN_BYTES:
        return offsets
    return offsets.astype("<u4")


#: The last blob decoded and its rows: a replica checks an entry's batch when it arrives and
#: decodes it again to apply it, a few microseconds later (bytes are immutable, so the same
#: object holds the same rows).
_last: tuple = (None, None)


def decode_ingest(blob: Any, lo: bytes | None = None) -> IngestRows:
    """The checked rows of an ingest blob (``lo``: the operation's claimed smallest key, checked too);
    :class:`~ddia_ray.errors.InvalidArgumentError` for anything that is not a well-formed batch."""
    global _last
    last_blob, last_rows = _last
    if blob is last_blob:  # checked whole when it was decoded; only the claimed smallest key is new
        _check_lo(lo, last_rows.lo)
        return last_rows
    rows = _decode_ingest(blob, lo)
    _last = (blob, rows)
    return rows


def _decode_ingest(blob: Any, lo: bytes | None) -> IngestRows:
    if type(blob) is not bytes or len(blob) < _HEAD.size:
        raise InvalidArgumentError("an ingest operation's tail is a batch blob (bytes)")
    magic, version, count = _HEAD.unpack_from(blob)
    if magic != _MAGIC:
        raise InvalidArgumentError("an ingest operation's tail is not an ingest batch (bad magic)")
    if version != _VERSION:
        raise InvalidArgumentError(f"an ingest batch of format {version}; this version reads format {_VERSION} "
                                   f"(upgrade every replica before clients send newer batches)")
    if not 1 <= count <= MAX_INGEST_ROWS:
        raise InvalidArgumentError(f"an ingest batch carries 1 to {MAX_INGEST_ROWS} rows, got {count}")
    head, width = _HEAD.size, 4 * (count + 1)
    if len(blob) < head + 2 * width:
        raise InvalidArgumentError("an ingest batch is shorter than its offsets")
    ko = np.frombuffer(blob, dtype="<u4", count=count + 1, offset=head)
    vo = np.frombuffer(blob, dtype="<u4", count=count + 1, offset=head + width)
    for offsets, what in ((ko, "key"), (vo, "value")):
        if offsets[0] != 0 or offsets[-1] > _MAX_COLUMN_BYTES or (count and bool((offsets[1:] < offsets[:-1]).any())):
            raise InvalidArgumentError(f"an ingest batch's {what} offsets do not ascend from 0")
    key_bytes, value_bytes = int(ko[-1]), int(vo[-1])
    data = head + 2 * width
    if len(blob) != data + key_bytes + value_bytes:
        raise InvalidArgumentError(f"an ingest batch of {len(blob)} bytes, but its offsets describe "
                                   f"{data + key_bytes + value_bytes}")
    buf = pa.py_buffer(blob)
    keys = pa.Array.from_buffers(pa.binary(), count, [None, pa.py_buffer(ko.astype(np.int32, copy=False)),
                                                      buf.slice(data, key_bytes)])
    values = pa.Array.from_buffers(pa.binary(), count, [None, pa.py_buffer(vo.astype(np.int32, copy=False)),
                                                        buf.slice(data + key_bytes, value_bytes)])
    bounds = pc.min_max(keys)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    _check_lo(lo, low)
    # A replica's own rows are never a client's to write (records.check_ops refuses single keys alike).
    if low < AFTER_RESERVED \
            and pc.any(pc.starts_with(keys, pattern=RESERVED_PREFIX)).as_py():
        raise InvalidArgumentError(f"keys starting with {RESERVED_PREFIX!r} are reserved for the replicas")
    return IngestRows(keys, values, low, high)


def _check_lo(lo: bytes | None, low: bytes) -> None:
    """Refuse an operation whose claimed smallest key ``lo`` is not its batch's, ``low``."""
    if lo is not None and lo != low:
        raise InvalidArgumentError(f"an ingest operation names {lo[:64]!r} as its smallest key; it is {low[:64]!r}")


def has_ingest(ops: tuple) -> bool:
    """Whether ``ops`` is an ingest (which is always alone in its write)."""
    return len(ops) == 1 and ops[0][0] == INGEST


def ingest_puts(ops: tuple) -> tuple:
    """``ops`` with an ingest turned into its rows as puts, in order (a later put of a key wins, as
    the ingest's own rule says); other ops unchanged."""
    if not has_ingest(ops):
        return ops
    rows = decode_ingest(ops[0][2])
    return tuple(zip([PUT] * rows.count, rows.keys.to_pylist(), rows.values.to_pylist()))
