"""Where an event store keeps its rows in the replicated store's key space.

Theory of operation
-------------------
Every row starts with one tag byte, so the kinds of row never interleave::

    g                                  -> next $all position (the global sequence)
    h <stream>                         -> the stream's head: last version, deletion, metadata
    s <stream> 00 <version: u64 BE>    -> the event (position, id, type, data, metadata, created)
    a <position: u64 BE>               -> (stream, version): $all, in commit order
    i <event id>                       -> (stream, version, position): idempotent appends
    c <category> 00 <position: u64 BE> -> b"": the category index ($ce-<category>)
    t <type> 00 <position: u64 BE>     -> b"": the event-type index ($et-<type>)
    x <stream>                         -> (version, state): the latest snapshot of an aggregate
    k <projection>                     -> (checkpoint,): where a projection's read model is up to
    r <projection> 00 <key>            -> value: a projection's read model
    zh                                 -> (archived_upto, dropped_upto, url): the archive's head
    zf <last position: u64 BE>         -> an archive file's record (:mod:`.archive`)
    zv <stream> 00 <last version: u64 BE> -> (first version, file, min, max position): a stream's
                                          archived versions in one archive file

Big-endian fixed-width numbers sort as the numbers do, so one range scan reads a
stream from a version, ``$all`` from a position, or an index from a position.
Stream names and types contain no NUL (checked on append), so ``00`` ends them and
no stream's rows fall inside another's range (``user`` before ``user-1``).

A stream's *category* is its name up to the first ``-`` (EventStoreDB's
``$by_category`` projection with its default separator): ``order-42`` is in
``order``; a name without ``-`` is its own category.

Values are versioned msgpack (:mod:`ddia_ray.codec`) tuples that start with
their format number, so a row written by another version either decodes or fails
with a clear error.
"""

from __future__ import annotations

import struct

from ..replication.row_format import RowFormat

__all__ = ["GLOBAL", "head_key", "event_key", "stream_range", "all_key", "all_range", "id_key", "category_key",
           "type_key", "snapshot_key", "checkpoint_key", "model_key", "model_range", "index_range", "category_of",
           "position_of", "version_of", "pack", "unpack", "u64"]

_U64 = struct.Struct(">Q")
u64 = _U64.pack
GLOBAL = b"g"
#: The rows' value format (:class:`~ddia_ray.replication.row_format.RowFormat`): ``pack`` writes it,
#: ``unpack`` reads it back or refuses a row of another format.
_ROWS = RowFormat(1, "an event store")
pack = _ROWS.pack
unpack = _ROWS.unpack
_END = b"\x01"  # sorts after a name's 00 terminator: the end of the name's range


def head_key(stream: str) -> bytes:
    """The row of ``stream``'s head."""
    return b"h" + stream.encode()


def event_key(stream: str, version: int) -> bytes:
    """The row of ``stream``'s event ``version``."""
    return b"s" + stream.encode() + b"\x00" + _U64.pack(version)


def stream_range(stream: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of every event row of ``stream``."""
    prefix = b"s" + stream.encode() + b"\x00"
    return prefix, b"s" + stream.encode() + _END


def version_of(key: bytes) -> int:
    """The version an event row's key names."""
    return _U64.unpack_from(key, len(key) - 8)[0]


def all_key(position: int) -> bytes:
    """The ``$all`` row of ``position``."""
    return b"a" + _U64.pack(position)


def all_range() -> tuple[bytes, bytes]:
    """``[start, end)`` of ``$all``."""
    return b"a", b"b"


def position_of(key: bytes) -> int:
    """The position an ``$all`` or index row's key ends with."""
    return _U64.unpack_from(key, len(key) - 8)[0]


def id_key(event_id: str) -> bytes:
    """The idempotency row of an event id."""
    return b"i" + event_id.encode()


def category_of(stream: str) -> str:
    """The category of ``stream``: its name up to the first ``-``."""
    return stream.split("-", 1)[0]


def category_key(category: str, position: int) -> bytes:
    """The category index row of the event at ``position``."""
    return b"c" + category.encode() + b"\x00" + _U64.pack(position)


def type_key(event_type: str, position: int) -> bytes:
    """The event-type index row of the event at ``position``."""
    return b"t" + event_type.encode() + b"\x00" + _U64.pack(position)


def index_range(kind: str, name: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of index ``kind`` (``"category"`` or ``"type"``) for ``name``."""
    tag = b"c" if kind == "category" else b"t"
    return tag + name.encode() + b"\x00", tag + name.encode() + _END


def snapshot_key(stream: str) -> bytes:
    """The row of ``stream``'s latest snapshot (not an event: it is in no stream and not in ``$all``)."""
    return b"x" + stream.encode()


def checkpoint_key(projection: str) -> bytes:
    """The row of a projection's checkpoint."""
    return b"k" + projection.encode()


def model_key(projection: str, key: bytes) -> bytes:
    """The row of ``key`` in a projection's read model."""
    return b"r" + projection.encode() + b"\x00" + key


def model_range(projection: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of a projection's read model."""
    return b"r" + projection.encode() + b"\x00", b"r" + projection.encode() + _END
