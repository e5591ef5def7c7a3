"""Where a configuration store keeps its rows in the replicated store's key space.

Theory of operation
-------------------
Every row starts with one tag byte, so the kinds of row never interleave::

    m                                 -> (revision, compacted, next lease id): the store's counters
    c <key>                           -> (create rev, mod rev, version, lease): the live keys
    k <key> 00 <~revision: u64 BE>    -> (kind, value, create rev, version, lease, prev rev): history
    r <revision: u64 BE>              -> (keys changed at that revision, in write order): the revision log
    l <lease id: u64 BE>              -> (ttl_ms, keys attached, sorted): the live leases

``k`` rows are etcd's MVCC store (its ``key_index`` plus the revision-keyed
bucket, folded into one ordered key space): one row per change of a key,
keyed by the key and its revision *inverted* (``~revision``, that is
``2**64 - 1 - revision``), so one forward scan from ``k <key> 00 ~R`` finds
the newest row at or below revision ``R`` first: a read at a past revision
is one row, however long the key's history. ``kind`` is :data:`PUT` or
:data:`DELETE` (a tombstone: the key ends there, and its version with it).
``prev rev`` is the revision of the put this row replaced (0 when the key did
not exist just before: never a tombstone's), which gives a watch event its
previous value and a rollback the state before a change, each in one read.

``c`` rows are the current state of the live keys, so the procedures (which
can only ``get``) find a key's revisions in one read, and a read of the
current values of a prefix scans only live keys. ``r`` rows are the log of
revisions: a watch reads them in order from the revision it is at, and a
prefix delete checks them for changes to its range since its read.

Keys are str without NUL (checked on every request), so the ``00`` after a
key ends it and no key's rows fall inside another's range (``a`` before
``a/b``); a prefix's rows are every row that starts with ``k <prefix>``.
Values are versioned msgpack (:mod:`ddia_ray.codec`) tuples that start with
their format number, so a row written by another version either decodes or
fails with a clear error.
"""

from __future__ import annotations

import struct

from ..replication.row_format import RowFormat

__all__ = ["META", "PUT", "DELETE", "current_key", "current_range", "row_key", "rows_range", "key_of_row",
           "revision_of_row", "rev_key", "rev_range", "revision_of", "lease_key", "lease_range", "lease_of",
           "prefix_range", "pack", "unpack"]

_U64 = struct.Struct(">Q")
_MAX = (1 << 64) - 1
#: The rows' value format (:class:`~ddia_ray.replication.row_format.RowFormat`): ``pack`` writes it,
#: ``unpack`` reads it back or refuses a row of another format.
_ROWS = RowFormat(1, "a configuration store")
pack = _ROWS.pack
unpack = _ROWS.unpack
META = b"m"
#: The kinds of history row.
PUT, DELETE = 0, 1


def _end_of(prefix: bytes) -> bytes:
    """The smallest key after every key that starts with ``prefix`` (``prefix`` is non-empty: a tag)."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def prefix_range(tag: bytes, prefix: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of the rows of tag ``tag`` whose key starts with ``prefix``."""
    start = tag + prefix.encode()
    return start, _end_of(start)


def current_key(key: str) -> bytes:
    """The row of ``key``'s current state (present while the key is live)."""
    return b"c" + key.encode()


def current_range(prefix: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of the current rows of every key starting with ``prefix``."""
    return prefix_range(b"c", prefix)


def row_key(key: str, revision: int) -> bytes:
    """The history row of ``key`` at ``revision`` (and where a scan for the newest row at or below
    ``revision`` starts)."""
    return b"k" + key.encode() + b"\x00" + _U64.pack(_MAX - revision)


def rows_range(key: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of every history row of ``key``, newest first."""
    head = b"k" + key.encode()
    return head + b"\x00", head + b"\x01"


def key_of_row(row: bytes) -> str:
    """The key a history row's key names."""
    return row[1:-9].decode()


def revision_of_row(row: bytes) -> int:
    """The revision a history row's key names."""
    return _MAX - _U64.unpack_from(row, len(row) - 8)[0]


def rev_key(revision: int) -> bytes:
    """The revision log's row of ``revision``."""
    return b"r" + _U64.pack(revision)


def rev_range(first: int, end: int) -> tuple[bytes, bytes]:
    """``[start, end)`` of the revision log's rows of revisions ``first..end-1``."""
    return rev_key(first), rev_key(end)


def revision_of(row: bytes) -> int:
    """The revision a revision log row's key names."""
    return _U64.unpack_from(row, 1)[0]


def lease_key(lease: int) -> bytes:
    """The row of lease ``lease``."""
    return b"l" + _U64.pack(lease)


def lease_range(after: int) -> tuple[bytes, bytes]:
    """``[start, end)`` of the rows of the leases with ids above ``after``."""
    return lease_key(after + 1), b"m"


def lease_of(row: bytes) -> int:
    """The lease id a lease row's key names."""
    return _U64.unpack_from(row, 1)[0]
