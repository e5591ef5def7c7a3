"""The event store's reads, as queries a replica runs against its state in one call.

Theory of operation
-------------------
A read is a read-only procedure (:func:`~ddia_ray.replication.procedures.query`)
that the replica serving it runs against one state, so a stream's head and its
events agree, and a page of ``$all`` is cut at one log position. Reads apply a
stream's retention as they go: versions before ``truncate_before`` (a soft
delete sets it past the last event), beyond the last ``max_count``, or older
than ``max_age`` at the reader's clock are not returned. ``$all`` and the
indexes return every event still stored, as EventStoreDB's do until a scavenge
removes them. Pages are bounded (:data:`MAX_PAGE_ROWS` events,
:data:`MAX_SCAN_ROWS` rows looked at by a filtered read), so no call reads the
whole log. The writes are procedures, in :mod:`.procedures`.
"""

from __future__ import annotations

from typing import Any

from .._validate import page_limit
from ..errors import InvalidArgumentError, StreamDeletedError
from ..replication.procedures import query
from . import keys
from .keys import Head, checkpoint_of, unpack
from .records import check_projection, check_stream

__all__ = ["read_stream", "stream_page", "read_all", "read_all_packed", "packed_flag", "read_index", "load_snapshot",
           "read_model", "scan_model", "stream_info", "MAX_PAGE_ROWS", "MAX_SCAN_ROWS"]

#: Events one read answers at most (a page); a client reads on from where the page ended.
MAX_PAGE_ROWS = 4096
#: Rows a filtered read looks at before it answers (with where to go on), so a filter that matches
#: nothing never makes one call read the whole log.
MAX_SCAN_ROWS = 16_384


def _visible(head: Head, created_ms: int, now_ms: int) -> bool:
    return head.max_age_ms is None or created_ms >= now_ms - head.max_age_ms


@query("events.read_stream")
def read_stream(state, args: Any) -> tuple:
    """One page of ``stream`` from ``from_version`` (-1 backward: from the end): ``(found, last
    version, rows)``, rows ``(version, position, id, type, data, metadata, created_ms)`` in read order.
    With a sixth argument ``packed`` True, the page's events come as chunk parts in version order
    (:func:`~.keys.part_rows`, whose rows lead with the stream; the reader reverses a backward page):
    a chunk's stored bytes rather than a row per event to build, check and encode."""
    args, packed = packed_flag(args, "a stream page is asked with (stream, version, backward, page, now_ms[, packed])")
    stream, from_version, backward, limit, now_ms = args
    return stream_page(state, stream, from_version, backward, page_limit(limit, MAX_PAGE_ROWS), now_ms, packed)


def stream_page(state, stream: Any, from_version: Any, backward: bool, limit: int, now_ms: int,
                packed: bool) -> tuple:
    """:func:`read_stream`'s answer for checked ``backward``, ``limit`` and ``packed`` (it checks the
    stream and the version): ``events.read_streams`` answers each of its streams with it."""
    check_stream(stream)
    if type(from_version) is not int or from_version < -1:
        raise InvalidArgumentError(f"a read starts at a version >= 0 (or -1: the end, backward), got {from_version!r}")
    head = Head(state.get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    first = head.first_visible()
    if head.last < first:
        return (head.last >= 0 and not head.deleted, head.actual, ())
    if backward:
        hi = head.last if from_version == -1 else min(from_version, head.last)
        lo = max(first, hi - limit + 1)
        if hi < lo:
            return (True, head.last, ())
    else:
        lo, hi = max(first, from_version), head.last
        if hi < lo:
            return (True, head.last, ())
    rows = _stream_rows(state, stream, lo, hi, limit, head, now_ms, packed)
    if backward and not packed:
        rows.reverse()
    return (True, head.last, tuple(rows))


def packed_flag(args: Any, shape: str) -> tuple[tuple, bool]:
    """A page read's five arguments and its optional sixth, ``packed`` (a bool: send the page as
    chunk parts); :class:`~ddia_ray.errors.InvalidArgumentError` naming ``shape`` for anything else."""
    if not isinstance(args, tuple) or len(args) not in (5, 6) or (len(args) == 6 and type(args[5]) is not bool):
        raise InvalidArgumentError(shape)
    return args[:5], len(args) == 6 and args[5]


_CHUNKS_PER_SCAN = 64  # chunk rows one scan of a stream read takes (a chunk holds 1 to 10,000 events)


def _stream_rows(state, stream: str, lo: int, hi: int, limit: int, head: Head, now_ms: int,
                 packed: bool = False) -> list:
    """Read rows of ``stream``'s stored versions ``lo..hi`` in version order: the first ``limit``
    stored ones, less those ``max_age`` hides (``packed``: as chunk parts, :func:`_part`)."""
    at, end = keys.chunk_key(stream, lo), keys.stream_range(stream)[1]
    rows: list = []
    stored = 0
    while stored < limit:
        found, values = state.scan(at, end, _CHUNKS_PER_SCAN)
        for value in values:
            if packed:  # the chunk goes whole (or cut) to the reader, who decodes it: its header will do
                fv, fp, created, size = keys.Chunk.header(value)
            else:
                c = keys.Chunk.of(value)
                fv, fp, created, size = c.first_version, c.first_position, c.created_ms, len(c.ids)
            a, b = max(lo, fv), min(hi, fv + size - 1, max(lo, fv) + limit - stored - 1)
            if b < a:
                return rows
            stored += b - a + 1
            if not _visible(head, created, now_ms):
                pass
            elif packed:
                rows.append(_part(stream, value, a + fp - fv, b + fp - fv, size))
            else:
                ids, types, datas, metas = c.ids, c.types, c.datas, c.metas
                for j in range(a - fv, b - fv + 1):
                    rows.append((fv + j, fp + j, ids[j], types[j], datas[j], metas[j], created))
            if b >= hi or stored >= limit:
                return rows
        if len(found) < _CHUNKS_PER_SCAN:
            return rows
        at = found[-1] + b"\x00"
    return rows


def _bodies(state, pointers: list) -> list:
    """The events of ``(stream, version, position, chunk's last version)`` pointers, as read rows
    (gone ones skipped); each chunk is read and decoded once."""
    wanted = list(dict.fromkeys((s, last) for s, _, _, last in pointers))
    chunks = {}
    for (stream, last), body in zip(wanted, state.get_many(tuple(keys.chunk_key(s, v) for s, v in wanted))):
        if body is not None:  # removed (scavenged or archived) since the pointer was read
            chunks[stream, last] = keys.Chunk.of(body)
    rows = []
    for stream, version, _, last in pointers:
        c = chunks.get((stream, last))
        event = c.event(version) if c is not None else None
        if event is not None:
            rows.append((stream, version, *event))
    return rows


@query("events.read_all")
def read_all(state, args: Any) -> tuple:
    """One page of ``$all`` from ``from_position`` (-1 backward: from the end), optionally filtered
    by a stream-name or event-type prefix: ``(rows, next position, at end)``; rows ``(stream,
    version, position, id, type, data, metadata, created_ms)``. It looks at no more than
    :data:`MAX_SCAN_ROWS` rows, so a page may be short (even empty) with ``at end`` False."""
    from_position, backward, limit, kind, prefix = _all_args(args)
    if not backward:
        parts, pos, at_end = read_all_packed(state, args)
        return (tuple(keys.part_rows(parts, prefix if kind == "type" else "")), pos, at_end)
    end = keys.next_position(state.get)  # the next position to be written
    rows: list = []
    scanned = 0
    pos = end - 1 if from_position == -1 else min(from_position, end - 1)
    while len(rows) < limit and scanned < MAX_SCAN_ROWS and pos >= 0:
        # A window below ``pos`` read forward (chunk rows are keyed by their last position, so
        # they are found from the bottom of a range up), then taken from its top down.
        n = min(MAX_PAGE_ROWS, MAX_SCAN_ROWS - scanned) if kind else limit - len(rows)
        lo = max(0, pos - n + 1)
        parts, _ = _all_forward(state, lo, pos + 1, pos - lo + 1, kind, prefix)
        scanned += pos - lo + 1
        nxt = lo - 1
        for row in reversed(keys.part_rows(parts, prefix if kind == "type" else "")):
            if len(rows) == limit:
                nxt = row[2]
                break
            rows.append(row)
        pos = nxt
    return (tuple(rows), pos, pos < 0)


def read_all_packed(state, args: Any) -> tuple:
    """A forward page of :func:`read_all` as ``(parts, next position, at end)``: its events as chunk
    parts that the reader expands with :func:`~.keys.part_rows` (with the type prefix, if the
    page filters by type). What a subscription reads (``events.archive_read_all`` with ``packed``)."""
    from_position, backward, limit, kind, prefix = _all_args(args)
    if backward:
        raise InvalidArgumentError("a packed page of $all reads forward")
    end = keys.next_position(state.get)  # the next position to be written
    pos = from_position if from_position >= 0 else end
    parts, pos = _all_forward(state, pos, end, limit, kind, prefix)
    return (tuple(parts), pos, pos >= end)


def _all_args(args: Any) -> tuple:
    """``(from position, backward, limit, kind, prefix)`` of a read of ``$all``, checked."""
    from_position, backward, limit, kind, prefix = args
    limit = page_limit(limit, MAX_PAGE_ROWS)
    if type(from_position) is not int or from_position < -1:
        raise InvalidArgumentError(f"a read starts at a position >= 0 (or -1: the end, backward), "
                                   f"got {from_position!r}")
    if kind not in (None, "stream", "type") or not isinstance(prefix, str):
        raise InvalidArgumentError(f"an $all filter is None, 'stream' or 'type' with a str prefix, got {kind!r}")
    return from_position, backward, limit, kind, prefix


def _all_forward(state, pos: int, end: int, limit: int, kind: str | None, prefix: str) -> tuple[list, int]:
    """Up to ``limit`` events of ``$all`` from ``pos`` (below ``end``) that pass the filter, as chunk
    parts (:func:`~.keys.part_rows`), and the position the next page starts at.

    It reads a chunk at a time through the ``b`` rows (:mod:`.keys`) and looks at no more than
    :data:`MAX_SCAN_ROWS` events. A chunk's events have consecutive positions, so a page that stops
    inside a chunk resumes there; positions no chunk holds any more (archived and dropped) are not
    in the scan at all. A chunk is decoded here only to count a type filter's matches, or to cut
    out the few events a page takes of a big chunk; otherwise its stored bytes are the part's."""
    parts: list = []
    taken = scanned = 0
    page_end = keys.page_range()[1]
    while taken < limit and scanned < MAX_SCAN_ROWS and pos < end:
        # Each chunk gives an unfiltered page one event at least: it needs no more rows than it has room.
        n = _CHUNKS_PER_SCAN if kind else min(_CHUNKS_PER_SCAN, limit - taken)
        # The chunk holding ``end - 1`` may go on past it (a read of part of $all): scan past ``end``.
        found, values = state.scan(keys.page_key(pos), page_end, n)
        reached_end = len(found) < n  # no chunk row beyond these
        wanted = []  # (stream, chunk's last version, first position to take, last one to take, chunk's size)
        planned = 0
        for i, (k, v) in enumerate(zip(found, values)):
            first, stream, last = unpack(v, 3, "$all chunk")
            chunk_top = keys.position_of(k)
            lo, top = max(pos, first), min(chunk_top, end - 1)
            if lo > top:  # the chunk starts at or after ``end``
                reached_end = True
                break
            if kind != "stream" or stream.startswith(prefix):  # filtered before the chunk is read
                wanted.append((stream, last, lo, top, chunk_top - first + 1))
                planned += top - lo + 1
            scanned += top - lo + 1
            pos = top + 1
            if scanned >= MAX_SCAN_ROWS or (kind is None and taken + planned >= limit):
                reached_end = reached_end and i == len(found) - 1
                break
        bodies = state.get_many(tuple(keys.chunk_key(s, last) for s, last, _, _, _ in wanted))
        for (stream, _, lo, top, size), body in zip(wanted, bodies):
            if body is None:  # removed by an archive drop the pointer predates
                continue
            c = None
            takes: Any = range(lo, top + 1)  # the positions of this chunk the page takes
            if kind == "type":
                c = keys.Chunk.of(body)
                fp = c.first_position
                takes = [p for p in range(max(lo, fp), min(top, c.last_position) + 1)
                         if c.types[p - fp].startswith(prefix)]
                if not takes:
                    continue
            if taken + len(takes) >= limit:  # the page fills here: it ends after the last one it takes
                top = takes[limit - taken - 1]
                parts.append(_part(stream, body, lo, top, size, c))
                return parts, top + 1
            taken += len(takes)
            parts.append(_part(stream, body, lo, top, size, c))
        if reached_end:
            pos = end
    return parts, pos


def _part(stream: str, body: bytes, lo: int, hi: int, size: int, chunk: keys.Chunk | None = None) -> tuple:
    """The part ``(stream, lo, hi, chunk row)`` of a page that takes positions ``lo..hi`` of a chunk
    of ``size`` events: its stored bytes when the page takes more than half of it, else the chunk
    cut to ``lo..hi`` (ten pages through a chunk of 10,000 events do not ship it ten times)."""
    if (hi - lo + 1) * 2 > size:
        return (stream, lo, hi, body)
    c = chunk if chunk is not None else keys.Chunk.of(body)
    return (stream, lo, hi, c.slice(lo, hi).row())


@query("events.read_index")
def read_index(state, args: Any) -> tuple:
    """One page of the ``"category"`` or ``"type"`` index for ``name`` from ``from_position``
    forward: ``(rows, next position, at end)`` as :func:`read_all`."""
    kind, name, from_position, limit = args
    limit = page_limit(limit, MAX_PAGE_ROWS)
    if kind not in ("category", "type") or not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidArgumentError(f"an index read names 'category' or 'type' and a name without NUL, got {kind!r}")
    if type(from_position) is not int or from_position < 0:
        raise InvalidArgumentError(f"an index read starts at a position >= 0, got {from_position!r}")
    start, end = keys.index_range(kind, name)
    pointers: list = []  # (stream, version, position, chunk's last version)
    at, at_end = start + keys.u64(from_position), False
    while len(pointers) < limit and not at_end:
        found, values = state.scan(at, end, min(limit, _CHUNKS_PER_SCAN))
        at_end = len(found) < min(limit, _CHUNKS_PER_SCAN)
        for k, v in zip(found, values):
            if kind == "category":
                first, stream, last = unpack(v, 3, "category index")
                positions: Any = range(first, keys.position_of(k) + 1)
                top = keys.position_of(k)
            else:
                positions, stream, last, top = unpack(v, 4, "type index")
            # A chunk's last version and last position name the same event, so each position's
            # version follows from its distance to the chunk's last position.
            for p in positions:
                if p >= from_position:
                    pointers.append((stream, last - (top - p), p, last))
        if found:
            at = found[-1] + b"\x00"
    if len(pointers) > limit:
        pointers, at_end = pointers[:limit], False
    nxt = pointers[-1][2] + 1 if pointers else from_position
    return (tuple(_bodies(state, pointers)), nxt, at_end)


@query("events.load_snapshot")
def load_snapshot(state, args: Any) -> tuple | None:
    """``stream``'s latest snapshot ``(version, state)``, or None."""
    (stream,) = args
    check_stream(stream)
    row = state.get(keys.snapshot_key(stream))
    return None if row is None else unpack(row, 2, "snapshot")


@query("events.read_model")
def read_model(state, args: Any) -> tuple:
    """A projection's checkpoint and the values of ``keys`` in its read model: ``(checkpoint, values)``
    read at one position of the log, so the values reflect exactly the events before the checkpoint."""
    name, wanted = args
    check_projection(name)
    if not isinstance(wanted, tuple) or len(wanted) > MAX_PAGE_ROWS or not all(type(k) is bytes for k in wanted):
        raise InvalidArgumentError(f"read-model keys are a tuple of at most {MAX_PAGE_ROWS} bytes")
    values = state.get_many(tuple(keys.model_key(name, k) for k in wanted))
    return checkpoint_of(state.get, name), values


@query("events.scan_model")
def scan_model(state, args: Any) -> tuple:
    """Up to ``limit`` ``(keys, values)`` of a projection's read model from ``start`` (inclusive) to
    ``end`` (exclusive; None: the end)."""
    name, start, end, limit = args
    check_projection(name)
    limit = page_limit(limit, MAX_PAGE_ROWS)
    if type(start) is not bytes or not (end is None or type(end) is bytes):
        raise InvalidArgumentError("a read-model scan's start is bytes and its end bytes or None")
    lo, hi = keys.model_range(name)
    found, values = state.scan(keys.model_key(name, start), hi if end is None else keys.model_key(name, end), limit)
    return tuple(k[len(lo):] for k in found), values


@query("events.stream_info")
def stream_info(state, args: Any) -> tuple:
    """``stream``'s head: ``(last version, deleted, tombstoned, truncate_before, max_count, max_age_ms,
    custom, metadata version)`` (last version -1 and metadata version -1 for a stream never written)."""
    (stream,) = args
    check_stream(stream)
    head = Head(state.get(keys.head_key(stream)))
    return (head.last, head.deleted, head.tombstoned, head.truncate_before, head.max_count, head.max_age_ms,
            head.custom, head.meta_version)
