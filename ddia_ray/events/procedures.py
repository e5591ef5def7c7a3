"""The event store's decisions and reads, as procedures the replicated store runs in its log.

Theory of operation
-------------------
An append is decided where the replicated store decides a compare-and-set
(:mod:`ddia_ray.replication.procedures`): once per log entry, against the state
as of that entry, by the leader (leader-follower) or by every member at apply
time (Raft). So the expected-version check, the idempotency check and the
numbering of positions happen in log order with no lock and no retry loop, and
the log keeps only the rows they wrote. This is how EventStoreDB's single writer
assigns positions, with the replicated log as the writer. Everything here is a
pure function of ``get`` (or of the state's ``get_many``/``scan``) and its
arguments; the appender's clock arrives as an argument.

``events.append`` (``stream, expected, events, created_ms``):

1. A tombstoned stream refuses every append (:class:`~ddia_ray.errors.StreamDeletedError`).
2. If the batch repeats an append the stream holds, the append is a retry: the
   answer is the first one's and nothing is written. What is compared is the
   place the retry names, as EventStoreDB does it (its idempotency by expected
   version): with an exact expected version ``E`` (or ``no_stream``, -1), the
   stored append that starts at version ``E + 1``; with ``any`` or
   ``stream_exists`` (and ``no_stream``, whose stream may have been recreated
   after a soft delete, past version 0), the stream's last
   :data:`RECENT_APPENDS` appends, which the head row lists by first id
   (EventStoreDB keeps an in-memory cache of recent ids for this; ours is in
   the replicated head, so it survives a failover). A batch whose first id
   names one of those places but that is not the same ids in the same order is
   :class:`~ddia_ray.errors.DuplicateEventIdError`. Ids are not unique across
   the store: keeping a row per event id forever cost a row write and a lookup
   per event on every member, over half of an append's work (docs/events.md,
   "Idempotency by place").
3. The expected version is checked against the stream's last version (-1 when
   it has no event or was soft-deleted); a mismatch writes nothing and answers
   :class:`~ddia_ray.errors.WrongExpectedVersionError` with the actual version.
4. The events get the next versions and the next ``$all`` positions, and their
   rows (:mod:`.keys`) are written in the same entry as the new head and the
   global sequence: atomically, all or nothing.

Reads (queries) apply a stream's retention as they go: versions before
``truncate_before`` (a soft delete sets it past the last event), beyond the last
``max_count``, or older than ``max_age`` at the reader's clock are not returned.
``$all`` and the indexes return every event still stored, as EventStoreDB's do
until a scavenge removes them.
"""

from __future__ import annotations

from typing import Any

from ..errors import (CorruptRecordError, DuplicateEventIdError, InvalidArgumentError, ProjectionConflictError,
                      StreamDeletedError, WrongExpectedVersionError)
from ..replication.procedures import procedure, query
from ..replication.records import DELETE, DELETE_RANGE, PUT
from . import keys
from .keys import pack, unpack
from .records import ANY, MAX_BATCH_EVENTS, NO_STREAM, STREAM_EXISTS, check_expected, check_stream

__all__ = ["append", "set_metadata", "delete", "save_snapshot", "project", "reset_projection", "read_stream",
           "stream_page", "read_all", "read_all_packed", "packed_flag", "read_index", "load_snapshot", "read_model",
           "scan_model", "stream_info", "Head", "MAX_PAGE_ROWS", "MAX_SCAN_ROWS"]

#: Events one read answers at most (a page); a client reads on from where the page ended.
MAX_PAGE_ROWS = 4096
#: Rows a filtered read looks at before it answers (with where to go on), so a filter that matches
#: nothing never makes one call read the whole log.
MAX_SCAN_ROWS = 16_384
#: Appends per stream a retry under ``any`` or ``stream_exists`` is recognised among: the head row
#: lists their first ids (a retry with an exact expected version is checked at its place instead).
RECENT_APPENDS = 8


class Head:
    """A stream's head row: its last version and its deletion and retention settings."""

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
            if type(self.recent) is not tuple or not all(type(r) is tuple and len(r) == 2 for r in self.recent):
                raise CorruptRecordError("an event store stream head lists its recent appends as pairs")

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


def _check_expected(stream: str, expected: int | str, head: Head) -> None:
    actual = head.actual
    ok = (expected == ANY or (expected == NO_STREAM and actual == -1)
          or (expected == STREAM_EXISTS and actual >= 0) or expected == actual)
    if not ok:
        raise WrongExpectedVersionError(f"stream {stream!r}: expected version {expected!r}, actual {actual}",
                                        stream=stream, expected=expected, actual=actual)


_EVENT_SHAPE = "an appended event is (id, type, data, metadata): a non-empty id, a non-empty type without NUL, bytes"


def _check_events(events: Any) -> tuple[tuple, tuple, tuple, tuple]:
    """The columns ``(ids, types, datas, metadatas)`` of an append's events, checked column by
    column in C-level passes (the leader checks every event of every append)."""
    if not isinstance(events, tuple) or len(events) > MAX_BATCH_EVENTS:
        raise InvalidArgumentError(f"an append carries a tuple of at most {MAX_BATCH_EVENTS} events")
    if not events:
        return (), (), (), ()
    if set(map(type, events)) != {tuple} or set(map(len, events)) != {4}:
        raise InvalidArgumentError(_EVENT_SHAPE)
    ids, types, datas, metas = zip(*events)
    if (set(map(type, ids)) != {str} or set(map(type, types)) != {str} or set(map(type, datas)) != {bytes}
            or set(map(type, metas)) != {bytes} or not all(ids) or not all(types)
            or any("\x00" in t for t in set(types))):
        raise InvalidArgumentError(_EVENT_SHAPE)
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError("an append names one event id twice")
    return ids, types, datas, metas


@procedure("events.append")
def append(get, args: Any) -> tuple[tuple, tuple]:
    """Append ``events`` to ``stream`` if ``expected`` holds (see the module docstring); the result is
    ``(stream, first version, last version, first position, last position)``."""
    stream, expected, events, created_ms = args
    check_stream(stream)
    check_expected(expected)
    ids, types, datas, metas = _check_events(events)
    if type(created_ms) is not int:
        raise InvalidArgumentError(f"an append's created time is an int of milliseconds, got {created_ms!r:.40}")
    head = Head(get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    if ids and head.last >= 0:
        first = _retried(get, stream, expected, ids, head)
        if first is not None:
            return (), first
    _check_expected(stream, expected, head)
    if not events:
        return (), (stream, -1, head.actual, -1, -1)
    n = len(events)
    first_version, first_position = head.last + 1, keys.next_position(get)
    last_version, last_position = first_version + n - 1, first_position + n - 1
    # One chunk row holds the events (keys.py: why chunks).
    chunk = keys.Chunk(first_version, first_position, created_ms, ids, types, datas, metas)
    ops = [(PUT, keys.chunk_key(stream, last_version), chunk.row())]
    chunk_pointer = pack(first_position, stream, last_version)
    ops.append((PUT, keys.page_key(last_position), chunk_pointer))
    ops.append((PUT, keys.category_key(keys.category_of(stream), last_position), chunk_pointer))
    for event_type, positions in chunk.type_positions().items():
        ops.append((PUT, keys.type_key(event_type, positions[-1]),
                    pack(tuple(positions), stream, last_version, last_position)))
    head.last = last_version
    head.deleted = False  # an append brings a soft-deleted stream back, after its old events
    head.remember(ids[0], last_version)
    ops.append((PUT, keys.head_key(stream), head.row()))
    ops.append((PUT, keys.GLOBAL, pack(last_position + 1)))
    return tuple(ops), (stream, first_version, last_version, first_position, last_position)


def _retried(get, stream: str, expected: Any, ids: tuple, head: Head) -> tuple | None:
    """The first answer of the append that ``ids`` repeat at the place ``expected`` names (see the
    module docstring), or None if they repeat none there."""
    if type(expected) is int or expected == NO_STREAM:
        version = (-1 if expected == NO_STREAM else expected) + 1
        if version <= head.last:  # else nothing is stored at that place yet: not a retry
            found = get.seek(keys.chunk_key(stream, version), keys.stream_range(stream)[1])
            chunk = keys.Chunk.of(found[1]) if found is not None else None
            if chunk is not None and chunk.first_version == version:
                if chunk.ids == ids:
                    return _answer(stream, chunk)
                if chunk.ids[0] == ids[0]:
                    raise _not_that_append(stream, chunk, ids)
        if expected != NO_STREAM:
            return None  # the place holds other events: the expected version is what is wrong
        # A stream recreated after a soft delete starts past version 0: its first append is
        # recognised among the recent ones, as an ``any`` append is.
    last = next((v for first_id, v in reversed(head.recent) if first_id == ids[0]), None)
    row = get(keys.chunk_key(stream, last)) if last is not None else None
    if row is None:
        return None  # not a recent append (or dropped by an archive since): not recognised
    chunk = keys.Chunk.of(row)
    if chunk.ids != ids:
        raise _not_that_append(stream, chunk, ids)
    return _answer(stream, chunk)


def _answer(stream: str, chunk: keys.Chunk) -> tuple:
    return (stream, chunk.first_version, chunk.last_version, chunk.first_position, chunk.last_position)


def _not_that_append(stream: str, chunk: keys.Chunk, ids: tuple) -> DuplicateEventIdError:
    return DuplicateEventIdError(f"event id {ids[0]!r} starts the append at {stream!r} version {chunk.first_version}, "
                                 f"which holds other ids: a retry repeats its whole batch", event_id=ids[0])


@procedure("events.set_metadata")
def set_metadata(get, args: Any) -> tuple[tuple, int]:
    """Replace ``stream``'s retention and custom metadata if its metadata version is
    ``expected_meta`` (-2: any); the result is the new metadata version."""
    stream, (max_count, max_age_ms, truncate_before, custom), expected_meta = args
    check_stream(stream)
    head = Head(get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    if expected_meta != -2 and expected_meta != head.meta_version:
        raise WrongExpectedVersionError(f"stream {stream!r}'s metadata: expected version {expected_meta}, actual "
                                        f"{head.meta_version}", stream=stream, expected=expected_meta,
                                        actual=head.meta_version)
    head.max_count, head.max_age_ms, head.custom = max_count, max_age_ms, custom
    # A soft delete's truncation stays: new metadata can move it forward, never back over deleted events.
    floor = head.last + 1 if head.deleted else 0
    head.truncate_before = max(truncate_before or 0, floor) or None
    head.meta_version += 1
    return ((PUT, keys.head_key(stream), head.row()),), head.meta_version


@procedure("events.delete")
def delete(get, args: Any) -> tuple[tuple, int]:
    """Delete ``stream`` if ``expected`` holds: soft (its events disappear from reads, and a later
    append starts after them) or, with ``hard``, a tombstone (it can never be used again). The result
    is the stream's last version."""
    stream, expected, hard = args
    check_stream(stream)
    check_expected(expected)
    head = Head(get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    _check_expected(stream, expected, head)
    if hard:
        head.tombstoned = True
    elif head.last >= 0:
        head.deleted = True
        head.truncate_before = head.last + 1
    # The snapshot folds events that are gone now: a stream recreated after a soft delete must not
    # start from it (its versions continue, so the repository could not tell).
    return ((PUT, keys.head_key(stream), head.row()), (DELETE, keys.snapshot_key(stream), b"")), head.last


@procedure("events.save_snapshot")
def save_snapshot(get, args: Any) -> tuple[tuple, bool]:
    """Keep ``state`` as ``stream``'s snapshot at ``version`` unless a newer one is kept already (two
    writers racing never move it back); the result says whether it was kept. A snapshot is a cache
    of the events up to ``version``: it must be one the stream has."""
    stream, version, state = args
    check_stream(stream)
    if type(version) is not int or version < 0 or type(state) is not bytes:
        raise InvalidArgumentError("a snapshot is a version >= 0 and bytes")
    head = Head(get(keys.head_key(stream)))
    if head.tombstoned:
        raise StreamDeletedError(f"stream {stream!r} is deleted for good (tombstoned)", stream=stream)
    if version > head.last:
        raise InvalidArgumentError(f"stream {stream!r} has no version {version} to snapshot (its last is "
                                   f"{head.last})")
    old = get(keys.snapshot_key(stream))
    if old is not None and unpack(old, 2, "snapshot")[0] >= version:
        return (), False
    return ((PUT, keys.snapshot_key(stream), pack(version, state)),), True


def _check_projection(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 256 or "\x00" in name:
        raise InvalidArgumentError(f"a projection's name is a non-empty str without NUL, got {name!r:.80}")
    return name


def _checkpoint(get, name: str) -> int:
    row = get(keys.checkpoint_key(name))
    return 0 if row is None else unpack(row, 1, "projection checkpoint")[0]


@procedure("events.project")
def project(get, args: Any) -> tuple[tuple, int]:
    """Apply a projection's read-model ``changes`` (``(key, value or None)``) and move its checkpoint
    from ``expected`` to ``checkpoint`` in one entry, or refuse both if the checkpoint is not
    ``expected`` (another runner of the projection got there first): the read model and its
    checkpoint never disagree, so each event changes the model once (effectively once)."""
    name, expected, checkpoint, changes = args
    _check_projection(name)
    if type(expected) is not int or type(checkpoint) is not int or not 0 <= expected <= checkpoint:
        raise InvalidArgumentError(f"a projection moves its checkpoint forward, got {expected!r} -> {checkpoint!r}")
    current = _checkpoint(get, name)
    if current != expected:
        raise ProjectionConflictError(f"projection {name!r} is at checkpoint {current}, not {expected}: another "
                                      f"runner wrote it (or it was reset); reload and go on from there",
                                      projection=name, checkpoint=current)
    ops = []
    for change in changes:
        if not (isinstance(change, tuple) and len(change) == 2 and type(change[0]) is bytes
                and (change[1] is None or type(change[1]) is bytes)):
            raise InvalidArgumentError("a read-model change is (bytes key, bytes value or None)")
        key = keys.model_key(name, change[0])
        ops.append((PUT, key, change[1]) if change[1] is not None else (DELETE, key, b""))
    ops.append((PUT, keys.checkpoint_key(name), pack(checkpoint)))
    return tuple(ops), checkpoint


@procedure("events.reset_projection")
def reset_projection(get, args: Any) -> tuple[tuple, int]:
    """Delete a projection's read model and checkpoint (to rebuild it from zero); the result is the
    checkpoint it had."""
    (name,) = args
    _check_projection(name)
    start, end = keys.model_range(name)
    return ((DELETE_RANGE, start, end), (DELETE, keys.checkpoint_key(name), b"")), _checkpoint(get, name)


# --- reads -------------------------------------------------------------------------------------------


def _limit(limit: Any) -> int:
    if type(limit) is not int or limit < 1:
        raise InvalidArgumentError(f"a read's limit is an int >= 1, got {limit!r}")
    return min(limit, MAX_PAGE_ROWS)


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
    return stream_page(state, stream, from_version, backward, _limit(limit), now_ms, packed)


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
    limit = _limit(limit)
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
    limit = _limit(limit)
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
    _check_projection(name)
    if not isinstance(wanted, tuple) or len(wanted) > MAX_PAGE_ROWS or not all(type(k) is bytes for k in wanted):
        raise InvalidArgumentError(f"read-model keys are a tuple of at most {MAX_PAGE_ROWS} bytes")
    values = state.get_many(tuple(keys.model_key(name, k) for k in wanted))
    return _checkpoint(state.get, name), values


@query("events.scan_model")
def scan_model(state, args: Any) -> tuple:
    """Up to ``limit`` ``(keys, values)`` of a projection's read model from ``start`` (inclusive) to
    ``end`` (exclusive; None: the end)."""
    name, start, end, limit = args
    _check_projection(name)
    limit = _limit(limit)
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


# The consumer groups' procedures register with these: the store is launched with this one module.
from . import consumer_groups  # noqa: E402, F401
from . import archive  # noqa: E402, F401
from . import stream_batch  # noqa: E402, F401
