"""The log entries of the replicated store's Raft protocol: client write batches, ownership changes.

Grammar (versioned msgpack, :mod:`ddia_ray.codec`)::

    entry   = ("repl", 4, client, seq, acked_below, ops, stamp, fence, results)
    client  = str                    the writer's session ("" for none)
    seq, acked_below = int           its sequence number and the floor of its unanswered ones
    ops     = tuple of ops           undecided (results None: cas and procedure calls, decided
                                     when applied) or decided (puts, deletes, range deletes only)
    stamp   = int                    the leader's cluster time (-1: none)
    fence   = int                    the partition-map version the write was routed with
                                     (0: none; -1: an ownership change)
    results = None | tuple           the leader's answers when it decided the batch
                                     (:mod:`.speculation`); a decided entry has no fence

Formats 1 to 3 (no stamp, no fence, no decision) are still read; a format this version does
not know is :class:`~ddia_ray.errors.CorruptRecordError`.
"""

from __future__ import annotations

from .. import codec
from ..errors import CorruptRecordError, MapVersionError, PartitionError, StaleMapError, WrongPartitionError
from .ownership import OWNERSHIP_KEY, Ownership
from .records import DELETE, DELETE_RANGE, PUT, ReplWrite

__all__ = ["encode_write", "encode_ownership", "decode_write", "refusal", "refused_error", "OWNERSHIP_FENCE",
           "REFUSED"]

#: The fence of an entry that replaces the group's ownership record (checked as a successor at apply).
OWNERSHIP_FENCE = -1
#: The first element of a write's results when the ownership check refused it at apply time.
REFUSED = "!refused"

# 4 added the leader's decision (results, and decided ops), 3 the partition-map fence, 2 the leader's
# cluster-time stamp; 1 to 3 are still read.
_WRITE_FORMAT = 4
_FORMATS = (("repl", 1), ("repl", 2), ("repl", 3), ("repl", 4))
_APPLIED = frozenset({PUT, DELETE, DELETE_RANGE})  # the codes a decided entry may hold


def encode_write(req: ReplWrite, stamp: int, decided: tuple | None = None, results: tuple | None = None) -> bytes:
    """The log entry of a client write batch ordered at cluster time ``stamp``:
    ``("repl", format, client, seq, acked_below, ops, stamp, fence, results)``. With ``decided``
    and ``results`` (the leader decided the batch, :mod:`.speculation`), the entry's ops are the
    decided ones and ``results`` their answers; without, results is None and apply decides."""
    ops = req.ops if results is None else decided
    return codec.encode(("repl", _WRITE_FORMAT, req.client, req.seq, req.acked_below, ops, stamp, req.fence, results))


def encode_ownership(own: Ownership) -> bytes:
    """The log entry that makes ``own`` the group's ownership record."""
    return codec.encode(("repl", _WRITE_FORMAT, "", 0, 0, ((PUT, OWNERSHIP_KEY, codec.encode(own)),), -1,
                         OWNERSHIP_FENCE, None))


def decode_write(data: bytes) -> tuple:
    """``(client, seq, acked_below, ops, stamp, fence, results)`` of an entry made by
    :func:`encode_write` (format 1 has no stamp: -1, unknown; formats 1 and 2 have no fence: 0;
    formats 1 to 3 were decided at apply: results None)."""
    fields = codec.decode(data)
    if isinstance(fields, tuple) and len(fields) == 6 and fields[:2] == ("repl", 1):
        fields = (*fields, -1, 0, None)
    elif isinstance(fields, tuple) and len(fields) == 7 and fields[:2] == ("repl", 2):
        fields = (*fields, 0, None)
    elif isinstance(fields, tuple) and len(fields) == 8 and fields[:2] == ("repl", 3):
        fields = (*fields, None)
    if not (isinstance(fields, tuple) and len(fields) == 9 and fields[:2] in _FORMATS
            and isinstance(fields[2], str) and type(fields[3]) is int and type(fields[4]) is int
            and isinstance(fields[5], tuple) and type(fields[6]) is int and type(fields[7]) is int
            and fields[7] >= OWNERSHIP_FENCE and (fields[8] is None or isinstance(fields[8], tuple))):
        raise CorruptRecordError("a replicated-store log entry is not a write batch of a known format")
    if fields[8] is not None and (fields[7] != 0 or not all(isinstance(op, tuple) and op and op[0] in _APPLIED
                                                            for op in fields[5])):
        raise CorruptRecordError("a decided log entry holds ops other than puts and deletes, or a fence")
    return fields[2:]


def refusal(e: PartitionError) -> tuple:
    """A write's results when the ownership check refused it: plain data a session can keep."""
    return (REFUSED, type(e).__name__, str(e), getattr(e, "version", 0), getattr(e, "current", 0),
            getattr(e, "partition", -1))


def refused_error(results: tuple) -> PartitionError | None:
    """The error a :func:`refusal` stands for (None for the results of an applied write)."""
    if not (results and results[0] == REFUSED):
        return None
    _, kind, message, version, current, partition = results
    if kind == "WrongPartitionError":
        return WrongPartitionError(message, partition=partition, version=version)
    cls = StaleMapError if kind == "StaleMapError" else MapVersionError
    return cls(message, version=version, current=current)
