"""Where an event store keeps its rows in the replicated store's key space.

Theory of operation
-------------------
Every row starts with one tag byte, so the kinds of row never interleave::

    g                                  -> next $all position (the global sequence)
    h <stream>                         -> the stream's head: last version, deletion, metadata, and
                                          its recent appends (a retry under ``any`` is checked there)
    s <stream> 00 <last version: u64 BE> -> a chunk: the events of one append (:class:`Chunk`)
    b <last position: u64 BE>          -> (first position, stream, chunk's last version): $all, in
                                          commit order, one row per chunk
    c <category> 00 <last position: u64 BE> -> (first position, stream, chunk's last version): the
                                          category index ($ce-<category>), one row per chunk
    t <type> 00 <last position: u64 BE> -> (positions, stream, chunk's last version, chunk's last
                                          position): the event-type index ($et-<type>), one row
                                          per type per chunk
    x <stream>                         -> (version, state): the latest snapshot of an aggregate
    k <projection>                     -> (checkpoint,): where a projection's read model is up to
    p <group>, q <group> 00 <position> -> a consumer group's state and its parked events
                                          (:mod:`.consumer_groups`)
    r <projection> 00 <key>            -> value: a projection's read model
    zh                                 -> (archived_upto, dropped_upto, url): the archive's head
    zf <last position: u64 BE>         -> an archive file's record (:mod:`.archive`)
    zv <stream> 00 <last version: u64 BE> -> (first version, file, min, max position): a stream's
                                          archived versions in one archive file

Big-endian fixed-width numbers sort as the numbers do, so one range scan reads a
stream from a version, ``$all`` from a position, or an index from a position.

Why chunks: an append's events arrive together, are read together (a stream is read
in version order, ``$all`` in position order) and never change, so one row holds
them all, as columns. A row costs the same to write whatever its size (the
memtable insert, the flush to an SSTable, the entry it travels in: measured as
over half of a member's time with one row per event, docs/events.md), so an
append of 100 events writes a handful of rows, whatever its size, where it wrote
5 per event at first and then 1 (an event id's row, gone since idempotency is
checked by place: :mod:`.procedures`). ``$all``
is a ``b`` row per chunk: a page of 1,000 events appended 100 at a time is 10
rows to scan and unpack, and a position is found with one seek (the first ``b``
row at or after it: :func:`chunk_holding`), by a query's scan or a procedure's
``get.seek``. Keyed by the chunk's *last* version, the first chunk
at or after ``s <stream> 00 <v>`` is the one that holds version ``v``; and an
archive that drops a chunk's first events rewrites it under the same key. The
index rows are keyed by the chunk's last position (of that type) for the same
reason.
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
from itertools import compress
from typing import Any

import msgpack

from ..errors import CorruptRecordError
from ..replication.row_format import RowFormat
from ..replication.state import state_reader

__all__ = ["GLOBAL", "Chunk", "head_key", "chunk_key", "stream_range", "chunk_holding", "ChunkFinder",
           "scan_seek",
           "category_key", "type_key", "snapshot_key", "checkpoint_key", "model_key", "model_range", "index_range",
           "category_of", "position_of", "page_key", "page_range", "version_of", "pack", "unpack",
           "u64", "next_position", "part_rows", "Head", "RECENT_APPENDS", "checkpoint_of"]

_U64 = struct.Struct(">Q")
u64 = _U64.pack
GLOBAL = b"g"
#: The rows' value format (:class:`~ddia_ray.replication.row_format.RowFormat`): ``pack`` writes it,
#: ``unpack`` reads it back or refuses a row of another format.
# Format 5: the chunked layout above, $all a row per chunk (``b``), no row per event id, a head
# that lists its recent appends; format 4 had an ``i`` row per event id and a head without them,
# format 3 an ``a`` row per event besides, format 2 no ``b`` rows, format 1 a row per event and
# per index entry.
_ROWS = RowFormat(5, "an event store")
pack = _ROWS.pack
unpack = _ROWS.unpack
_END = b"\x01"  # sorts after a name's 00 terminator: the end of the name's range


def next_position(get) -> int:
    """The next ``$all`` position to be written (the global sequence's row; 0 before the first
    append), read with ``get``."""
    row = get(GLOBAL)
    return unpack(row, 1, "global sequence")[0] if row is not None else 0


def head_key(stream: str) -> bytes:
    """The row of ``stream``'s head."""
    return b"h" + stream.encode()


def chunk_key(stream: str, last_version: int) -> bytes:
    """The row of ``stream``'s chunk whose last version is ``last_version`` (the first chunk at or
    after ``chunk_key(stream, v)`` holds version ``v``, if any does)."""
    return b"s" + stream.encode() + b"\x00" + _U64.pack(last_version)


def stream_range(stream: str) -> tuple[bytes, bytes]:
    """``[start, end)`` of every chunk row of ``stream``."""
    prefix = b"s" + stream.encode() + b"\x00"
    return prefix, b"s" + stream.encode() + _END


def version_of(key: bytes) -> int:
    """The (last) version a chunk row's key names."""
    return _U64.unpack_from(key, len(key) - 8)[0]


def page_key(last_position: int) -> bytes:
    """The ``$all`` chunk row of the chunk whose last position is ``last_position`` (the first row at or
    after ``page_key(p)`` is the chunk holding position ``p``, if any still does)."""
    return b"b" + _U64.pack(last_position)


def page_range() -> tuple[bytes, bytes]:
    """``[start, end)`` of ``$all``'s chunk rows."""
    return b"b", _PAGE_END


_PAGE_END = b"c"


def chunk_holding(seek, position: int) -> tuple[int, int, str, int] | None:
    """``(first position, last position, stream, chunk's last version)`` of the chunk holding
    ``$all`` position ``position``, found with ``seek(start, end)`` (the first live ``(key,
    value)`` of a range: a procedure's ``get.seek``, or :func:`scan_seek` of a query's state);
    None if no chunk does (not written yet, or archived and dropped)."""
    found = seek(page_key(position), _PAGE_END)
    if found is None:
        return None
    key, value = found
    first, stream, last = unpack(value, 3, "$all chunk")
    return (first, position_of(key), stream, last) if first <= position else None


class ChunkFinder:
    """The event at each of many ``$all`` positions, as ``(stream, version, chunk's last version)``:
    one :func:`chunk_holding` seek per chunk, the last chunk found answering the positions it
    holds (a consumer group's pull and its reads go up ``$all`` a position at a time)."""

    __slots__ = ("seek", "span")

    def __init__(self, seek) -> None:
        self.seek = seek
        self.span: tuple[int, int, str, int] | None = None

    def pointer(self, position: int) -> tuple[str, int, int] | None:
        """``(stream, version, chunk's last version)`` of the event at ``position``; None if no
        chunk holds it (not written yet, or archived and dropped)."""
        span = self.span
        if span is None or not span[0] <= position <= span[1]:
            span = chunk_holding(self.seek, position)
            if span is None:
                return None
            self.span = span
        _, top, stream, last = span
        # A chunk's last version and last position name the same event.
        return stream, last - (top - position), last


def scan_seek(state):
    """``seek`` of :func:`chunk_holding` over a query's ``state`` (its ``scan``)."""
    return state_reader(state).seek


def position_of(key: bytes) -> int:
    """The position an ``$all`` or index row's key ends with."""
    return _U64.unpack_from(key, len(key) - 8)[0]


def category_of(stream: str) -> str:
    """The category of ``stream``: its name up to the first ``-``."""
    return stream.split("-", 1)[0]


def category_key(category: str, position: int) -> bytes:
    """The category index row of the chunk whose last position is ``position``."""
    return b"c" + category.encode() + b"\x00" + _U64.pack(position)


def type_key(event_type: str, position: int) -> bytes:
    """The event-type index row of the chunk whose last event of ``event_type`` is at ``position``."""
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


#: Appends per stream a retry under ``any`` or ``stream_exists`` is recognised among: the head row
#: lists their first ids (a retry with an exact expected version is checked at its place instead).
RECENT_APPENDS = 8


class Head:
    """A stream's head row: its last version, its deletion and retention settings, and its last
    :data:`RECENT_APPENDS` appends (first id, last version)."""

    __slots__ = ("last", "deleted", "tombstoned", "truncate_before", "max_count", "max_age_ms", "custom",
                 "meta_version", "recent")

    def __init__(self, row: bytes | None):
        if row is None:
            self.last, self.deleted, self.tombstoned = -1, False, False
            self.truncate_before = self.max_count = self.max_age_ms = self.custom = None
            self.meta_version = -1
            self.recent: tuple = ()
        else:
            (self.last, self.deleted, self.tombstoned, self.truncate_before, self.max_count, self.max_age_ms,
             self.custom, self.meta_version, self.recent) = unpack(row, 9, "stream head")
            if type(self.recent) is not tuple or not all(type(r) is tuple and len(r) == 2 and type(r[0]) is str
                                                         and type(r[1]) is int for r in self.recent):
                raise CorruptRecordError("an event store stream head lists its recent appends as (first id, last "
                                         "version) pairs")

    def row(self) -> bytes:
        """This head as its row value."""
        return pack(self.last, self.deleted, self.tombstoned, self.truncate_before, self.max_count,
                    self.max_age_ms, self.custom, self.meta_version, self.recent)

    def remember(self, first_id: str, last_version: int) -> None:
        """Record an append (its first event's id and its last version) among the stream's
        :data:`RECENT_APPENDS` latest, which a retry under ``any`` is recognised among."""
        self.recent = (*self.recent[1 - RECENT_APPENDS:], (first_id, last_version))

    @property
    def actual(self) -> int:
        """The version an expected version is checked against (-1: no event, or soft-deleted)."""
        return -1 if self.deleted else self.last

    def first_visible(self) -> int:
        """The first version reads may return (``truncate_before`` and ``max_count``)."""
        first = self.truncate_before or 0
        if self.max_count is not None:
            first = max(first, self.last - self.max_count + 1)
        return first


def checkpoint_of(get, name: str) -> int:
    """Where projection ``name`` is up to (0 before its first fold), read with ``get``."""
    row = get(checkpoint_key(name))
    return 0 if row is None else unpack(row, 1, "projection checkpoint")[0]


_TYPE_PASSES = 8  # distinct types up to which type_positions makes a pass per type


class Chunk:
    """The events of one append, as the columns of one row: versions ``first_version`` on and
    positions ``first_position`` on, all with one ``created_ms``. Pure: no clock, no I/O."""

    __slots__ = ("first_version", "first_position", "created_ms", "ids", "types", "datas", "metas")

    def __init__(self, first_version: int, first_position: int, created_ms: int, ids: tuple, types: tuple,
                 datas: tuple, metas: tuple) -> None:
        self.first_version, self.first_position, self.created_ms = first_version, first_position, created_ms
        self.ids, self.types, self.datas, self.metas = ids, types, datas, metas

    @classmethod
    def of(cls, value: bytes) -> "Chunk":
        """The chunk a row holds; :class:`~ddia_ray.errors.CorruptRecordError` for anything else
        (columns of different lengths included: a reader must not pair one event's id with
        another's data)."""
        fv, fp, created, ids, types, datas, metas = unpack(value, 7, "event chunk")
        n = len(ids) if isinstance(ids, tuple) else -1
        if (type(fv) is not int or type(fp) is not int or type(created) is not int or n < 1
                or not all(isinstance(c, tuple) and len(c) == n for c in (types, datas, metas))):
            raise CorruptRecordError("an event store event chunk row has columns of different lengths or types")
        try:
            # Each column holds one type (ids and types str, payloads bytes): a join refuses any other
            # element in one C-level pass (2 us at 100 events, against 6 for a set of the types), so a
            # damaged row never reaches a reader as an event with an int for its data (found by fuzzing).
            "".join(ids), "".join(types), b"".join(datas), b"".join(metas)
        except TypeError:
            raise CorruptRecordError("an event store event chunk row has a column holding another type") from None
        return cls(fv, fp, created, ids, types, datas, metas)

    @staticmethod
    def header(value: bytes) -> tuple[int, int, int, int]:
        """``(first_version, first_position, created_ms, count)`` of a chunk row, read without
        decoding its columns (about 2 us against 16 for :meth:`of` at 100 events of 100 bytes): what
        a stream read needs to find and ship a chunk whole, whose reader decodes and checks it
        (:func:`part_rows`). :class:`~ddia_ray.errors.CorruptRecordError` for a row that does not
        start as a chunk does."""
        u = msgpack.Unpacker(raw=False, max_buffer_size=len(value) or 1)
        u.feed(value)
        try:
            fields = u.read_array_header()
            number = u.unpack() if fields else None
            if number != _ROWS.number:
                raise CorruptRecordError(f"an event store event chunk row has format {number!r:.40}; this version "
                                         f"reads format {_ROWS.number}")
            fv, fp, created = u.unpack(), u.unpack(), u.unpack()
            count = u.read_array_header()
        except (ValueError, msgpack.ExtraData, msgpack.OutOfData, msgpack.FormatError, msgpack.StackError) as e:
            raise CorruptRecordError(f"an event store event chunk row does not start as one: {e}") from e
        if fields != 8 or type(fv) is not int or type(fp) is not int or type(created) is not int or count < 1:
            raise CorruptRecordError("an event store event chunk row does not start as one")
        return fv, fp, created, count

    def row(self) -> bytes:
        """This chunk as its row value."""
        return pack(self.first_version, self.first_position, self.created_ms, self.ids, self.types, self.datas,
                    self.metas)

    @property
    def last_version(self) -> int:
        """The version of the chunk's last event (its key's)."""
        return self.first_version + len(self.ids) - 1

    @property
    def last_position(self) -> int:
        """The ``$all`` position of the chunk's last event."""
        return self.first_position + len(self.ids) - 1

    def event(self, version: int) -> tuple | None:
        """``(position, id, type, data, metadata, created_ms)`` of ``version``, or None if the chunk
        does not hold it (any more: an archive drop trims a chunk's first events)."""
        j = version - self.first_version
        if not 0 <= j < len(self.ids):
            return None
        return (self.first_position + j, self.ids[j], self.types[j], self.datas[j], self.metas[j], self.created_ms)

    def type_positions(self) -> dict:
        """The positions of each event type in the chunk, in position order (the ``t`` index rows),
        the types in the order they first appear."""
        types, first = self.types, self.first_position
        kinds = dict.fromkeys(types)
        positions = range(first, first + len(types))
        if len(kinds) == 1:  # the usual append: one type (an aggregate's command, a bulk load)
            return {types[0]: list(positions)}
        if len(kinds) <= _TYPE_PASSES:  # a C-level pass per type beats a Python step per event
            return {t: list(compress(positions, map(t.__eq__, types))) for t in kinds}
        out: dict = {}
        for p, t in zip(positions, types):
            out.setdefault(t, []).append(p)
        return out

    def slice(self, lo: int, hi: int) -> "Chunk":
        """The chunk's events at positions ``lo..hi`` (within its own; at least one): a page's part
        of a big chunk, or what an archive drop keeps of one."""
        a, b = max(lo, self.first_position) - self.first_position, min(hi, self.last_position) - self.first_position
        if b < a:
            raise ValueError(f"positions {lo}..{hi} are not in chunk {self.first_position}..{self.last_position}")
        return Chunk(self.first_version + a, self.first_position + a, self.created_ms, self.ids[a:b + 1],
                     self.types[a:b + 1], self.datas[a:b + 1], self.metas[a:b + 1])



def part_rows(parts, type_prefix: str = "", make: Any = None) -> list:
    """The read rows ``(stream, version, position, id, type, data, metadata, created_ms)`` of a page
    sent as chunk parts ``(stream, lo, hi, chunk row)``: each part's events at positions ``lo..hi``
    (those the chunk holds), in order, less those whose type does not start with ``type_prefix``.

    A page of ``$all`` travels so (``events.archive_read_all`` with ``packed``): the store sends
    the chunks' stored bytes, and the reader decodes them (in C, msgpack) and builds the rows,
    where the store would otherwise decode every chunk, build a row per event, check and encode
    them all for one reader. A part that is not a ``(str, int, int, bytes)`` tuple, or holds no
    valid chunk, raises :class:`~ddia_ray.errors.CorruptRecordError`. ``make``: a function of the
    eight fields to build each row with instead of a tuple (a consumer builds its events so, without
    a tuple per event in between)."""
    rows: list = []
    append = rows.append
    for part in parts:
        if not (type(part) is tuple and len(part) == 4 and type(part[0]) is str and type(part[1]) is int
                and type(part[2]) is int and type(part[3]) is bytes):
            raise CorruptRecordError(f"a page part is (stream, first position, last position, chunk), got "
                                     f"{type(part).__name__}")
        stream, lo, hi, body = part
        c = Chunk.of(body)
        fv, fp, created = c.first_version, c.first_position, c.created_ms
        ids, types, datas, metas = c.ids, c.types, c.datas, c.metas
        span = range(max(lo, fp) - fp, min(hi, fp + len(ids) - 1) - fp + 1)
        if make is not None and not type_prefix:
            for j in span:
                append(make(stream, fv + j, fp + j, ids[j], types[j], datas[j], metas[j], created))
            continue
        for j in span:
            if type_prefix and not types[j].startswith(type_prefix):
                continue
            row = (stream, fv + j, fp + j, ids[j], types[j], datas[j], metas[j], created)
            append(row if make is None else make(*row))
    return rows
